//! CSV onboarding of devices and detectors (`sparkwatch import devices FILE.csv`).
//!
//! This is only the command-line side: read the file, show progress bars on standard error
//! and print the outcome. Parsing, checking and the all-or-nothing insert live in
//! [`crate::service::import`]; the file format is described in `docs/IMPORT.md`.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use sparkwatch_domain::site::DeviceTransport;

use crate::auth::Principal;
use crate::service::Services;
use crate::service::import::{ImportProgress, ImportStage, ImportSummary, parse_csv};

/// Loads a manufacturer's claim list (`serial,claim_code` CSV) into the serial claim pool;
/// returns how many claims were loaded. Nothing is loaded when any line is bad.
pub async fn load_claims_file(services: &Services, who: &Principal, path: &Path) -> anyhow::Result<usize> {
    let data = tokio::fs::read(path).await.with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(data.as_slice());
    let headers = reader.headers().with_context(|| path.display().to_string())?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let (Some(serial), Some(code)) = (column("serial"), column("claim_code")) else {
        anyhow::bail!("{}: the header must name the columns serial and claim_code", path.display());
    };
    let mut claims = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", path.display(), i + 2))?;
        let cell = |c: usize| record.get(c).unwrap_or_default().to_owned();
        claims.push(crate::service::registration::SerialClaim { serial: cell(serial), code: cell(code) });
    }
    anyhow::ensure!(!claims.is_empty(), "{}: there are no claims to load", path.display());
    services.load_serial_claims(who, claims).await.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Imports a CSV file of devices and detectors into the principal's tenant: all rows or none.
///
/// On success prints a summary such as `imported 12 devices and 31 detectors into tenant Demo`
/// to standard output. If any row has a problem nothing is stored and the error lists every
/// problem as `row N, column C: reason` (the header is row 1).
///
/// With `credentials_out`, MQTT credentials are then issued for the imported MQTT devices and
/// written to that file ([`write_credentials`]).
pub async fn import_devices_file(
    services: &Services,
    who: &Principal,
    path: &Path,
    credentials_out: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(out) = credentials_out
        && out.exists()
    {
        anyhow::bail!("{} exists already; --credentials-out must name a new file", out.display());
    }
    let data = tokio::fs::read(path).await.with_context(|| format!("cannot read {}", path.display()))?;
    let rows = parse_csv(&data).with_context(|| path.display().to_string())?;
    let bars = Bars::default();
    let source = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let result = services.import_devices(who, &source, &rows, &bars).await;
    bars.clear();
    let summary = result.with_context(|| path.display().to_string())?;
    let tenant = services
        .tenant(who.tenant()?)
        .await?
        .map_or_else(|| who.tenant().map(|t| t.to_string()).unwrap_or_default(), |t| t.name);
    println!("{}", summary_line(&summary, &tenant));
    if let Some(out) = credentials_out {
        let mut serials: Vec<String> = Vec::new();
        for row in &rows {
            let mqtt = row.get("transport").and_then(|t| DeviceTransport::parse("transport", t).ok())
                == Some(DeviceTransport::Mqtt);
            if let Some(serial) = row.get("serial").filter(|s| mqtt && !serials.iter().any(|x| x == s)) {
                serials.push(serial.to_owned());
            }
        }
        let issued = services.issue_credentials_for_serials(who, &serials).await?;
        write_credentials(out, &issued)?;
        println!("issued MQTT credentials for {} devices into {}", issued.len(), out.display());
    }
    Ok(())
}

/// `imported 12 devices and 31 detectors into tenant Demo`.
fn summary_line(s: &ImportSummary, tenant: &str) -> String {
    let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "imported {} and {} into tenant {tenant}",
        plural(s.devices, "device", "devices"),
        plural(s.detectors, "detector", "detectors")
    )
}

/// One progress bar per stage, drawn on standard error (hidden when that is not a terminal).
#[derive(Default)]
struct Bars {
    current: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }

    /// Removes a bar left over after a failure.
    fn clear(&self) {
        self.with_bar(|bar| {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
        });
    }
}

impl ImportProgress for Bars {
    fn begin(&self, stage: ImportStage, total: u64) {
        let style = ProgressStyle::with_template("{msg:<17} [{bar:40.cyan/blue}] {pos}/{len} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let unit = match stage {
            ImportStage::Validating => "rows",
            ImportStage::Inserting => "devices",
        };
        let new = ProgressBar::new(total).with_style(style).with_message(format!("{} {unit}", stage.label()));
        self.with_bar(|bar| {
            if let Some(old) = bar.replace(new) {
                old.finish_and_clear();
            }
        });
    }

    fn advance(&self, _stage: ImportStage) {
        self.with_bar(|bar| {
            if let Some(b) = bar.as_ref() {
                b.inc(1);
            }
        });
    }

    fn end(&self, _stage: ImportStage) {
        self.clear();
    }
}

/// Writes issued device credentials to a new CSV file readable by its owner only
/// (`serial,username,password,issued_at`). An existing file is never overwritten: it may
/// hold the only copy of earlier secrets.
pub fn write_credentials(path: &Path, issued: &[crate::service::identity::DeviceCredentials]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).with_context(|| {
        format!("cannot create {} (it must not exist yet: it would hold the only copy of secrets)", path.display())
    })?;
    let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
    out.write_record(["serial", "username", "password", "issued_at"])?;
    for c in issued {
        let at = c.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        out.write_record([c.username.as_str(), &c.username, &c.password, &at])?;
    }
    out.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_well() {
        let s = ImportSummary { devices: 12, detectors: 1, projects: 2 };
        assert_eq!(summary_line(&s, "Demo"), "imported 12 devices and 1 detector into tenant Demo");
    }
}
