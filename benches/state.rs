//! Join state at scale: `Join::on_row` with 1M (and, with `WEFT_BENCH_10M=1`, 10M)
//! distinct keys, where the key index no longer fits any cache.
//!
//! - `state/insert/N`: N left rows with N distinct keys into an empty `Join` (index
//!   growth included; the filled state is dropped outside the timing). One iteration
//!   is N rows; throughput in rows.
//! - `state/probe/N`: a `Join` pre-filled with one left row for each of N keys; each
//!   event is a right row of a random existing key that matches it (index lookup,
//!   scan of the key's left refs, bucket lookup, match bit, emit, insert of the right
//!   row). After each measured run the right rows are expired (untimed), so the state
//!   stays at N keys however many iterations criterion picks.
//!
//! The emitter only counts. Building the rows happens before the timing.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use weft::config::JoinKind;
use weft::event::RowBuilder;
use weft::event::Side;
use weft::exchange::Batch;
use weft::join::{Join, JoinParams};
use weft::router::key_hash;

#[path = "common/mod.rs"]
mod common;

const T0_MS: i64 = 1_700_000_000_000;
/// Right rows of measured run k get event time `RIGHT_T0_MS + k * BUCKET_MS`.
const RIGHT_T0_MS: i64 = T0_MS + 200_000;
const BUCKET_MS: i64 = 1000;

fn sizes() -> Vec<u64> {
    // `WEFT_BENCH_STATE_KEYS` replaces the 1M size (e.g. 10000 for a quick `-- --test` run).
    let mut v = vec![common::env_u64("WEFT_BENCH_STATE_KEYS", 1_000_000)];
    if std::env::var("WEFT_BENCH_10M").is_ok_and(|s| s == "1") {
        v.push(10_000_000);
    }
    v
}

/// One row per key `0..n` of `side`: left rows spread over 100 s of event time.
fn rows(n: u64, side: Side) -> Batch {
    let mut b = Batch::with_capacity(n as usize);
    let mut rb = RowBuilder::new();
    let mut key = Vec::with_capacity(16);
    for i in 0..n {
        let ts = T0_MS + (i % 100_000) as i64;
        common::row_and_key(&mut rb, common::profile_id(i), (i % 20_000) as u32 + 1, ts, &mut key);
        b.push(side, ts, key_hash(&key), 0, rb.bytes(), Some(&key));
    }
    b
}

fn params(upper_ms: i64) -> JoinParams {
    JoinParams { kind: JoinKind::Left, lower_ms: 0, upper_ms, allowed_lateness_ms: 0, bucket_ms: BUCKET_MS }
}

fn fill(j: &mut Join, b: &Batch, emit: &mut common::CountEmit) {
    for e in &b.events {
        let (row, key) = b.get(e);
        j.on_row(e.side, e.ts, e.hash, key, row, 0, emit).expect("heap state");
    }
}

fn bench_insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("state/insert");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    for n in sizes() {
        let left = rows(n, Side::Left);
        g.throughput(Throughput::Elements(n));
        g.bench_with_input(BenchmarkId::from_parameter(n), &left, |b, left| {
            b.iter_batched(
                || Join::new(params(3_600_000)),
                |mut j| {
                    let mut emit = common::CountEmit::default();
                    fill(&mut j, left, &mut emit);
                    (j, emit.acc)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn bench_probe(c: &mut Criterion) {
    let mut g = c.benchmark_group("state/probe");
    g.throughput(Throughput::Elements(1));
    for n in sizes() {
        let t = Instant::now();
        // Left rows never expire here (upper = 2^40 ms), right rows do after each run.
        let mut j = Join::new(params(1 << 40));
        let mut emit = common::CountEmit::default();
        fill(&mut j, &rows(n, Side::Left), &mut emit);
        // Right rows: the same keys, visited in a scrambled order.
        let right = rows(n, Side::Right);
        let order = common::scrambled(n);
        eprintln!("state/probe/{n}: setup {:.1} s, {} keys", t.elapsed().as_secs_f64(), j.keys());
        let st = RefCell::new((j, emit, 0usize, 0i64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_custom(|iters| {
                let (j, emit, cursor, run) = &mut *st.borrow_mut();
                let ts = RIGHT_T0_MS + *run * BUCKET_MS;
                let t0 = Instant::now();
                for _ in 0..iters {
                    let e = &right.events[order[*cursor] as usize];
                    *cursor = if *cursor + 1 == order.len() { 0 } else { *cursor + 1 };
                    let (row, key) = right.get(e);
                    j.on_row(Side::Right, ts, e.hash, key, row, 0, emit).expect("heap state");
                }
                let el = t0.elapsed();
                // Expire this run's right rows (bucket `ts / BUCKET_MS`), untimed.
                j.advance(ts - ts.rem_euclid(BUCKET_MS) + BUCKET_MS, emit).expect("heap state");
                *run += 1;
                el
            })
        });
        let (j, emit, _, _) = st.into_inner();
        assert_eq!(j.state_rows()[1], 0, "right rows expire after every run");
        assert_eq!(j.keys() as u64, n);
        std::hint::black_box(emit.acc);
        // Dropping a 10M-key state takes a while; it is outside every measurement.
        drop(j);
    }
    g.finish();
}

criterion_group!(benches, bench_insert, bench_probe);
criterion_main!(benches);
