#!/usr/bin/env bash
# Builds the mobile library and generates its Kotlin, Swift and Python bindings with the
# workspace's own uniffi-bindgen (same uniffi version as the library).
#
#   mobile-bindings/generate.sh [OUT_DIR]      (default: $CARGO_TARGET_DIR/mobile-bindings)
#
# OUT_DIR/python  sparkwatch_mobile.py + the library: `import sparkwatch_mobile` with it on sys.path
# OUT_DIR/kotlin  com/sparkwatch/mobile/sparkwatch_mobile.kt + the library (JNA loads it from
#                 jna.library.path)
# OUT_DIR/swift   SparkwatchMobile.swift, sparkwatch_mobileFFI.h, sparkwatch_mobileFFI.modulemap;
#                 the header is compiled here with the system C compiler (no Swift toolchain
#                 on Linux CI; see docs/MOBILE.md for the XCFramework).
# Debug builds: the bindings do not depend on the profile; release builds are for the apps'
# pipelines (docs/MOBILE.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
out=${1:-$target/mobile-bindings}

case "$(uname -s)" in
  Darwin) lib_name=libsparkwatch_mobile.dylib ;;
  *) lib_name=libsparkwatch_mobile.so ;;
esac

# The generator first, then the library: building the generator (feature `cli`) also
# builds the library with that feature, and the library the apps load is the plain one.
cargo build --quiet -p sparkwatch-mobile --features cli --bin uniffi-bindgen
cargo build --quiet -p sparkwatch-mobile --lib
lib="$target/debug/$lib_name"
bindgen="$target/debug/uniffi-bindgen"

rm -rf "$out"
for lang in python kotlin swift; do
  "$bindgen" generate "$lib" --language "$lang" --out-dir "$out/$lang" --no-format >/dev/null
  cp "$lib" "$out/$lang/"
done

# The C header Swift imports must at least compile. Its nullability qualifiers are Clang's
# (Apple's toolchain); GCC gets them defined away.
printf '#include "sparkwatch_mobileFFI.h"\n' |
  cc -fsyntax-only -Wall -Werror -D_Nonnull= -D_Nullable= -D_Null_unspecified= -I "$out/swift" -x c -

echo "bindings in $out (kotlin, swift, python); header checked with $(cc --version | head -1)"
