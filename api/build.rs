//! Build script: brings the GraphQL explorer's third-party browser assets into `OUT_DIR`.
//!
//! GraphiQL, React and ReactDOM are npm packages pinned by `explorer/package-lock.json`
//! (see `docs/EXPLORER.md`). They are never vendored into the repository; this script runs
//! `npm ci` when `explorer/node_modules` is missing or out of date, then copies the four UMD
//! files into `OUT_DIR`, where `src/explorer.rs` embeds them with `include_bytes!`.
//!
//! Standard library only, on purpose: no build-dependencies.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `(file name in OUT_DIR, path under explorer/node_modules)`.
const ASSETS: [(&str, &str); 4] = [
    ("graphiql.min.js", "graphiql/graphiql.min.js"),
    ("graphiql.min.css", "graphiql/graphiql.min.css"),
    ("react.production.min.js", "react/umd/react.production.min.js"),
    ("react-dom.production.min.js", "react-dom/umd/react-dom.production.min.js"),
];

/// The npm packages whose installed version must match the lock file.
const PACKAGES: [&str; 3] = ["graphiql", "react", "react-dom"];

fn main() {
    if let Err(message) = run() {
        // Cargo shows a failed build script's stderr; a panic would add a useless backtrace.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR is not set")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    let explorer = manifest_dir.join("..").join("explorer");
    // Nicer paths in messages; fine to keep the `..` form if the directory does not exist.
    let explorer = fs::canonicalize(&explorer).unwrap_or(explorer);
    let lock_file = explorer.join("package-lock.json");
    let node_modules = explorer.join("node_modules");

    // Only the manifests decide what gets installed; watching node_modules would be slow and
    // pointless (it is derived from the lock file).
    println!("cargo:rerun-if-changed={}", explorer.join("package.json").display());
    println!("cargo:rerun-if-changed={}", lock_file.display());

    if let Some(reason) = needs_install(&node_modules, &lock_file) {
        npm_ci(&explorer, &reason)?;
    }

    let mut tag = Fnv64::new();
    for (name, relative) in ASSETS {
        let from = node_modules.join(relative);
        let bytes = fs::read(&from).map_err(|e| {
            format!(
                "cannot read {} ({e}). explorer/node_modules looks incomplete: run `npm ci` in {}.",
                from.display(),
                explorer.display()
            )
        })?;
        tag.write(name.as_bytes());
        tag.write(&bytes);
        let to = out_dir.join(name);
        fs::write(&to, &bytes).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    // Content hash of the assets: the page puts it in the asset URLs (`?v=...`), so browsers
    // may cache them forever and still pick up new versions after an upgrade.
    println!("cargo:rustc-env=SPARKWATCH_EXPLORER_ASSET_VERSION={:016x}", tag.finish());
    Ok(())
}

/// Why `npm ci` must run, or `None` when `node_modules` already matches the lock file.
fn needs_install(node_modules: &Path, lock_file: &Path) -> Option<String> {
    let (_, first) = ASSETS[0];
    if !node_modules.join(first).is_file() {
        return Some(format!("{} is missing", node_modules.join(first).display()));
    }
    // If the lock file cannot be read or parsed we keep what is installed; `npm ci` would
    // fail on such a lock file anyway.
    let lock = fs::read_to_string(lock_file).ok()?;
    PACKAGES.iter().find_map(|package| {
        let locked = locked_version(&lock, package)?;
        let installed = fs::read_to_string(node_modules.join(package).join("package.json"))
            .ok()
            .and_then(|manifest| string_after(&manifest, "\"version\""));
        (installed.as_deref() != Some(locked.as_str())).then(|| {
            format!("{package} {locked} is locked but {} is installed", installed.as_deref().unwrap_or("nothing"))
        })
    })
}

/// The version of `package` recorded in an npm v2/v3 lock file.
fn locked_version(lock: &str, package: &str) -> Option<String> {
    let entry = lock.find(&format!("\"node_modules/{package}\""))?;
    string_after(&lock[entry..], "\"version\"")
}

/// The JSON string value of the first `key` in `text`. Deliberately naive (no escapes):
/// good enough for version numbers in npm's own files, and keeps this script dependency-free.
fn string_after(text: &str, key: &str) -> Option<String> {
    let rest = &text[text.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

fn npm_ci(explorer: &Path, reason: &str) -> Result<(), String> {
    let help = format!(
        "The GraphQL explorer's assets (GraphiQL, React) come from npm, and {reason}. \
         Install Node.js/npm and rebuild, or run `npm ci` in {} yourself (needs access to the npm registry once).",
        explorer.display()
    );
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    println!("cargo:warning=running `npm ci` in {} because {reason}", explorer.display());
    let status = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(explorer)
        // Cargo parses a build script's stdout for `cargo:` directives; keep npm's chatter off it.
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("could not run `{npm}` ({e}). {help}"))?;
    if status.success() { Ok(()) } else { Err(format!("`{npm} ci` failed ({status}); its output is above. {help}")) }
}

/// 64-bit FNV-1a: a tiny, stable, std-only hash, used only for cache busting.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
