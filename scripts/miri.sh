#!/usr/bin/env bash
# The unit tests of weft's unsafe code under Miri: state::arena (heap buffers),
# state::record, alloc, and join (which drives heap-backed state). Manual, not CI:
# Miri needs the nightly toolchain, which a fresh CI machine cannot fetch.
#
# usage: scripts/miri.sh [TEST FILTER...]   (default filters: state:: alloc:: join::)
# knobs: MODEL=tree (default) or stacked; MIRIFLAGS (added to the model's flag);
#        CARGO_TARGET_DIR as usual. Exit 2: no Miri on this machine.
#
# Tree Borrows is the default because rkyv's relative pointers are outside what
# Stacked Borrows allows (rkyv/rkyv#436): under MODEL=stacked every test that reads a
# record's key or row stops at rkyv's ArchivedBox::get. See perf/miri-2026-11-29.md.
# Tests needing mmap, files, madvise or io_uring carry #[cfg_attr(miri, ignore = ...)].
# First run: a few minutes to build the crate and its dependencies for Miri; then ~20 s.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: no 'cargo +nightly miri'; trying: rustup component add miri rust-src --toolchain nightly" >&2
    rustup component add miri rust-src --toolchain nightly >&2 || true
fi
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    echo "miri.sh: Miri is not available. Install it with" >&2
    echo "  rustup toolchain install nightly --component miri rust-src" >&2
    exit 2
fi
cargo +nightly miri --version
cargo +nightly miri setup >/dev/null

case "${MODEL:-tree}" in
    tree) model_flags="-Zmiri-tree-borrows" ;;
    stacked) model_flags="" ;;
    *) echo "miri.sh: MODEL is 'tree' or 'stacked', not '$MODEL'" >&2; exit 64 ;;
esac
export MIRIFLAGS="$model_flags ${MIRIFLAGS:-}"
[ "$#" -gt 0 ] || set -- state:: alloc:: join::

echo "MIRIFLAGS='$MIRIFLAGS' cargo +nightly miri test --lib -- $*"
start_s=$(date +%s)
cargo +nightly miri test --lib -- "$@"
echo "miri.sh: passed in $(( $(date +%s) - start_s )) s (including the build)"
