# Sourced by the bench scripts: sets WEFT to a release weft binary, building one
# unless WEFT is already set, and makes sure python3 is there. Needs ROOT.
command -v python3 >/dev/null || { apt-get update -qq && apt-get install -y -qq python3; }
if [ -z "${WEFT:-}" ]; then
  cargo build --release --quiet --bin weft
  WEFT="${CARGO_TARGET_DIR:-$ROOT/target}/release/weft"
fi
