#!/usr/bin/env bash
# Events per CPU-second of a bounded job reading two 4-partition Kafka topics (librdkafka's
# mock cluster on loopback, in the bench process) against the same job over files
# (benches/kafka.rs). Installs nothing beyond the crates; takes ~3-5 min on 2 cores
# (release build of weft and of the bench, then 3 rounds of each run).
# Usage: scripts/kafka_bench.sh [ROWS_PER_PARTITION] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin weft
KAFKA_BENCH_ROWS="${1:-90000}" KAFKA_BENCH_ROUNDS="${2:-3}" WEFT_BIN="$PWD/target/release/weft" \
  cargo bench --locked --bench kafka
