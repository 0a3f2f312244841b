//! Routing cost per event: `key_hash` of a 16-byte encoded key (profile_id u64 +
//! title_id u32, the generator's key) and `shard_of` over 2 and 64 shards.
//! Throughput is in keys; 4096 distinct keys per iteration so the loop is not one
//! constant folded away. `ahash_16B` is the routing hash before issue #13 (ahash with
//! fixed seeds, `hash_one` of the same bytes), kept here so the cost of the portable
//! hash (XXH3-64) is measured against it in one run.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft::router::{key_hash, shard_of};

#[path = "common/mod.rs"]
mod common;

const KEYS: usize = 4096;

fn keys() -> Vec<[u8; 16]> {
    (0..KEYS as u64)
        .map(|i| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&common::profile_id(i).to_le_bytes());
            k[8..].copy_from_slice(&((i % 20_000) + 1).to_le_bytes());
            k
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let ks = keys();
    let hashes: Vec<u64> = ks.iter().map(|k| key_hash(k)).collect();
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(KEYS as u64));
    g.bench_function("key_hash_16B", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in black_box(&ks) {
                acc ^= key_hash(k);
            }
            acc
        })
    });
    let old = ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    );
    g.bench_function("ahash_16B", |b| {
        b.iter(|| {
            let mut acc = 0u64;
            for k in black_box(&ks) {
                acc ^= old.hash_one(k.as_slice());
            }
            acc
        })
    });
    for shards in [2u32, 64] {
        g.bench_function(format!("shard_of_{shards}"), |b| {
            b.iter(|| {
                let mut acc = 0u32;
                for &h in black_box(&hashes) {
                    acc = acc.wrapping_add(shard_of(h, black_box(shards)));
                }
                acc
            })
        });
    }
    g.bench_function("key_hash_and_shard_of_2", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for k in black_box(&ks) {
                acc = acc.wrapping_add(shard_of(key_hash(k), 2));
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
