#!/usr/bin/env bash
# Builds the binary a host gets: `cargo build --profile dist` (fat LTO, one codegen
# unit), debug info split off into dist/weft.debug (the binary keeps a debuglink to it),
# and a check with ldd that it needs nothing beyond the C library. Prints its size and
# the build time; writes dist/weft and dist/weft.debug.
#
# Usage: scripts/release.sh        (from anywhere in the repository)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
command -v objcopy >/dev/null || { apt-get update -qq && apt-get install -y -qq binutils; }

start=$(date +%s)
cargo build --locked --profile dist --bin weft
built=$(( $(date +%s) - start ))
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/dist/weft"

mkdir -p dist
rm -f dist/weft dist/weft.debug
objcopy --only-keep-debug "$BIN" dist/weft.debug
objcopy --strip-debug --add-gnu-debuglink=dist/weft.debug "$BIN" dist/weft
chmod 755 dist/weft

# Only the C library's parts are allowed: a host needs nothing else installed.
bad=$(ldd dist/weft | awk '{print $1}' | grep -Ev '^(linux-vdso\.so|/?lib64/ld-linux-x86-64\.so|/lib/ld-linux|ld-linux|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so)' || true)
if [ -n "$bad" ]; then
  echo "release.sh: dist/weft needs libraries beyond the C library:" >&2
  echo "$bad" >&2
  exit 1
fi
echo "needs: $(ldd dist/weft | awk '{print $1}' | tr '\n' ' ')"
echo "dist/weft: $(stat -c %s dist/weft) bytes; dist/weft.debug: $(stat -c %s dist/weft.debug) bytes; cargo build ${built} s"
