//! Batch building and reading, and a glommio `shared_channel` carrying batches between
//! two executors: what the shards pay per event to route rows to each other.
//!
//! - `batch/push_get_1024`: push 1024 generator-shaped events (48-byte row, 16-byte
//!   key), read each back with `get`, clear; throughput in events.
//! - `shared_channel/round_trip`: one 1024-event batch ping-ponged between two
//!   executors (latency of one hop is half the time per iteration).
//! - `shared_channel/stream`: one-way stream of 1024-event batches, the receiver
//!   hands emptied batches back on a second ring so no batch is allocated in the loop.
//!
//! The executors are started once per measurement (outside the timed part).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};
use weft::event::RowBuilder;
use weft::event::Side;
use weft::exchange::Batch;

#[path = "common/mod.rs"]
mod common;

const BATCH_EVENTS: usize = 1024;
/// Ring depth the engine uses by default (`RING_SLOTS_DEFAULT`).
const RING_SLOTS: usize = 64;
/// glommio's registered io memory per executor; small, these executors do no I/O.
const IO_MEMORY_BYTES: usize = 1 << 20;

fn fill(b: &mut Batch, rb: &mut RowBuilder, key: &mut Vec<u8>) {
    b.clear();
    for i in 0..BATCH_EVENTS as u64 {
        common::row_and_key(rb, common::profile_id(i), (i % 20_000) as u32 + 1, 1_700_000_000_000 + i as i64, key);
        b.push(
            Side::Left,
            1_700_000_000_000 + i as i64,
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            i,
            rb.bytes(),
            Some(key),
        );
    }
}

fn bench_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(BATCH_EVENTS as u64));
    // Rows built once; the loop measures push + get only.
    let mut rb = RowBuilder::new();
    let mut key = Vec::new();
    let mut rows = Vec::with_capacity(BATCH_EVENTS);
    for i in 0..BATCH_EVENTS as u64 {
        common::row_and_key(&mut rb, common::profile_id(i), (i % 20_000) as u32 + 1, i as i64, &mut key);
        rows.push((rb.bytes().to_vec(), key.clone()));
    }
    let mut b = Batch::with_capacity(BATCH_EVENTS);
    g.bench_function("push_get_1024", |bench| {
        bench.iter(|| {
            b.clear();
            for (i, (row, key)) in rows.iter().enumerate() {
                b.push(Side::Left, i as i64, i as u64, 0, row, Some(key));
            }
            let mut acc = 0u64;
            for e in &b.events {
                let (row, key) = b.get(e);
                acc = acc.wrapping_add(row.len() as u64 + key.map_or(0, |k| k[0] as u64));
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn executor(name: &str) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound).name(name).io_memory(IO_MEMORY_BYTES)
}

/// `iters` round trips of one batch between two executors.
fn round_trip(iters: u64) -> Duration {
    let (tx_ab, rx_ab) = shared_channel::new_bounded::<Batch>(RING_SLOTS);
    let (tx_ba, rx_ba) = shared_channel::new_bounded::<Batch>(RING_SLOTS);
    let echo = executor("bench-echo")
        .spawn(move || async move {
            let rx = rx_ab.connect().await;
            let tx = tx_ba.connect().await;
            while let Some(b) = rx.recv().await {
                if tx.send(b).await.is_err() {
                    break;
                }
            }
        })
        .expect("start echo executor");
    let main = executor("bench-main")
        .spawn(move || async move {
            let tx = tx_ab.connect().await;
            let rx = rx_ba.connect().await;
            let mut b = Batch::with_capacity(BATCH_EVENTS);
            fill(&mut b, &mut RowBuilder::new(), &mut Vec::new());
            let t0 = Instant::now();
            for _ in 0..iters {
                tx.send(b).await.expect("echo alive");
                b = rx.recv().await.expect("echo alive");
            }
            let el = t0.elapsed();
            black_box(b.len());
            el
        })
        .expect("start main executor");
    let el = main.join().expect("main executor");
    echo.join().expect("echo executor");
    el
}

/// `iters` batches streamed one way; emptied batches come back on a return ring.
fn stream(iters: u64) -> Duration {
    let (tx_data, rx_data) = shared_channel::new_bounded::<Batch>(RING_SLOTS);
    let (tx_free, rx_free) = shared_channel::new_bounded::<Batch>(RING_SLOTS + 2);
    let consumer = executor("bench-consumer")
        .spawn(move || async move {
            let rx = rx_data.connect().await;
            let tx = tx_free.connect().await;
            let mut acc = 0u64;
            while let Some(mut b) = rx.recv().await {
                for e in &b.events {
                    let (row, _) = b.get(e);
                    acc = acc.wrapping_add(row.len() as u64 ^ e.hash);
                }
                b.clear();
                let _ = tx.send(b).await; // the producer may have stopped listening
            }
            black_box(acc);
        })
        .expect("start consumer executor");
    let producer = executor("bench-producer")
        .spawn(move || async move {
            let tx = tx_data.connect().await;
            let rx = rx_free.connect().await;
            let mut rb = RowBuilder::new();
            let mut key = Vec::new();
            let mut spare: Vec<Batch> = (0..RING_SLOTS + 2).map(|_| Batch::with_capacity(BATCH_EVENTS)).collect();
            let t0 = Instant::now();
            for _ in 0..iters {
                let mut b = match spare.pop() {
                    Some(b) => b,
                    None => rx.recv().await.expect("consumer alive"),
                };
                fill(&mut b, &mut rb, &mut key);
                tx.send(b).await.expect("consumer alive");
            }
            drop(tx);
            // Wait until the consumer has seen every batch: it closes the return ring.
            while rx.recv().await.is_some() {}
            t0.elapsed()
        })
        .expect("start producer executor");
    let el = producer.join().expect("producer executor");
    consumer.join().expect("consumer executor");
    el
}

fn bench_channel(c: &mut Criterion) {
    let mut g = c.benchmark_group("shared_channel");
    g.throughput(Throughput::Elements(BATCH_EVENTS as u64));
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("round_trip", |b| b.iter_custom(round_trip));
    g.bench_function("stream", |b| b.iter_custom(stream));
    g.finish();
}

criterion_group!(benches, bench_batch, bench_channel);
criterion_main!(benches);
