//! Per-event cost of the interval join on the built-in workload's stream (generator
//! partition 0: 1M keys, zipf 1, match rate 0.3, 5 s disorder, 0.1% late rows, one
//! hour window, left outer join), single-threaded, no glommio, no sink.
//!
//! - `join/operator`: the pre-generated, pre-routed stream through `Join::on_row`,
//!   with `advance` after every 1024 events (the default batch) to the watermark the
//!   shard would have then, and `finish` at the end. Late rows are filtered before
//!   the timing, as the source task does.
//! - `join/pipeline`: what one shard does per event, minus the rings: generator
//!   `poll`, partition clocks (lateness, watermark), `encode_key`, `key_hash`,
//!   `Batch::push`, then the operator as above.
//! - `join/generator`: the generator alone (rows/s it can produce).
//!
//! Knobs: `WEFT_BENCH_JOIN_EVENTS` (default 2,000,000), `WEFT_BENCH_KEYS` (1,000,000).
//! Throughput is in events (rows of both inputs).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use weft::config::JoinKind;
use weft::event::Side;
use weft::event::{encode_key, RowView};
use weft::exchange::Batch;
use weft::join::{Join, JoinParams};
use weft::router::key_hash;
use weft::source::generator::Generator;
use weft::source::{PollStatus, Source, SourceItem};
use weft::watermark::{sender_mark, Mark, PartitionClock};

#[path = "common/mod.rs"]
mod common;

const BATCH_EVENTS: usize = 1024;
const DISORDER_MS: i64 = 5_000;

fn join_params() -> JoinParams {
    // The built-in job: bucket = (upper - lower) / 32.
    JoinParams {
        kind: JoinKind::Left,
        lower_ms: 0,
        upper_ms: 3_600_000,
        allowed_lateness_ms: 0,
        bucket_ms: 3_600_000 / 32,
    }
}

fn mark_ts(m: Mark) -> i64 {
    match m {
        Mark::At(w) => w,
        Mark::Idle | Mark::Done => i64::MAX,
    }
}

/// The stream without its late rows, and the watermark after each 1024-event chunk.
fn operator_input(events: u64, keys: u64) -> (Batch, Vec<i64>, u64) {
    let all = common::generated_stream(&common::gen_params(events, keys));
    let mut clocks = [PartitionClock::new(DISORDER_MS, 0), PartitionClock::new(DISORDER_MS, 0)];
    let mut kept = Batch::with_capacity(all.len());
    let mut marks = Vec::new();
    let mut late = 0;
    for (i, e) in all.events.iter().enumerate() {
        if clocks[e.side.idx()].observe(e.ts) {
            late += 1;
        } else {
            let (row, key) = all.get(e);
            kept.push(e.side, e.ts, e.hash, 0, row, key);
        }
        if (i + 1) % BATCH_EVENTS == 0 {
            marks.push((kept.len(), mark_ts(sender_mark(clocks.iter()))));
        }
    }
    // The watermark per kept-event chunk boundary.
    let mut per_chunk = vec![i64::MIN; kept.len().div_ceil(BATCH_EVENTS)];
    for (n, w) in marks {
        if n > 0 {
            let c = (n - 1) / BATCH_EVENTS;
            per_chunk[c] = per_chunk[c].max(w);
        }
    }
    (kept, per_chunk, late)
}

fn bench(c: &mut Criterion) {
    let events = common::env_u64("WEFT_BENCH_JOIN_EVENTS", 2_000_000);
    let keys = common::env_u64("WEFT_BENCH_KEYS", 1_000_000);
    let (stream, marks, late) = operator_input(events, keys);
    eprintln!("join: {} events ({} late filtered), {} keys", stream.len(), late, keys);

    let mut g = c.benchmark_group("join");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(15));

    g.throughput(Throughput::Elements(stream.len() as u64));
    g.bench_function("operator", |b| {
        b.iter_batched(
            || Join::new(join_params()),
            |mut j| {
                let mut emit = common::CountEmit::default();
                let mut w = i64::MIN;
                for (chunk, &m) in stream.events.chunks(BATCH_EVENTS).zip(&marks) {
                    for e in chunk {
                        let (row, key) = stream.get(e);
                        j.on_row(e.side, e.ts, e.hash, key, row, 0, &mut emit).expect("heap state");
                    }
                    if m > w {
                        w = m;
                        j.advance(w, &mut emit).expect("heap state");
                    }
                }
                j.finish(&mut emit).expect("heap state");
                (j, emit.acc)
            },
            BatchSize::PerIteration,
        )
    });

    let p = common::gen_params(events, keys);
    let schemas = [common::schema(Side::Left), common::schema(Side::Right)];
    g.throughput(Throughput::Elements(events));
    g.bench_function("pipeline", |b| {
        b.iter_batched(
            || (Join::new(join_params()), Generator::new(p.clone(), 0), Batch::with_capacity(BATCH_EVENTS)),
            |(mut j, mut gen, mut batch)| {
                let mut emit = common::CountEmit::default();
                let mut clocks = [PartitionClock::new(DISORDER_MS, 0), PartitionClock::new(DISORDER_MS, 0)];
                let mut key = Vec::with_capacity(32);
                let mut w = i64::MIN;
                loop {
                    batch.clear();
                    let st = gen
                        .poll(BATCH_EVENTS, 0, &mut |it| {
                            if let SourceItem::Row { side, ts, row, .. } = it {
                                if clocks[side.idx()].observe(ts) {
                                    return;
                                }
                                if encode_key(RowView(row), &schemas[side.idx()], &mut key) {
                                    batch.push(side, ts, key_hash(&key), 0, row, Some(&key));
                                } else {
                                    batch.push(side, ts, 0, 0, row, None);
                                }
                            }
                        })
                        .expect("generator");
                    for e in &batch.events {
                        let (row, key) = batch.get(e);
                        j.on_row(e.side, e.ts, e.hash, key, row, 0, &mut emit).expect("heap state");
                    }
                    let m = mark_ts(sender_mark(clocks.iter()));
                    if m > w && m != i64::MAX {
                        w = m;
                        j.advance(w, &mut emit).expect("heap state");
                    }
                    if st == PollStatus::Done {
                        break;
                    }
                }
                j.finish(&mut emit).expect("heap state");
                (j, emit.acc)
            },
            BatchSize::PerIteration,
        )
    });

    g.bench_function("generator", |b| {
        b.iter_batched(
            || Generator::new(p.clone(), 0),
            |mut gen| {
                let mut acc = 0u64;
                while gen
                    .poll(BATCH_EVENTS, 0, &mut |it| {
                        if let SourceItem::Row { ts, row, .. } = it {
                            acc = acc.wrapping_add(ts as u64 ^ row.len() as u64);
                        }
                    })
                    .expect("generator")
                    != PollStatus::Done
                {}
                black_box(acc)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
