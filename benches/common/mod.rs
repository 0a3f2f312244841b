//! Helpers shared by the benches: the generator workload as a flat, pre-routed event
//! stream, and an [`Emit`] that does nothing but count (so a bench measures the
//! operator, not a sink).
//!
//! Everything here runs outside the timed sections; it may allocate freely.
#![allow(dead_code)]

use weft::config::{
    generator_schema, GenParams, GEN_DISORDER_MS_DEFAULT, GEN_EVENT_TIME_RATE_DEFAULT, GEN_LATE_FRACTION_DEFAULT,
    GEN_LATE_MAX_MS_DEFAULT, GEN_MATCH_RATE_DEFAULT, GEN_PLAY_WINDOW_MS_DEFAULT, GEN_RATE_LIMIT_DEFAULT,
    GEN_SEED_DEFAULT, GEN_TITLES_DEFAULT, GEN_ZIPF_DEFAULT,
};
use weft::event::Emit;
use weft::event::Side;
use weft::event::{encode_key, RowView};
use weft::exchange::Batch;
use weft::router::key_hash;
use weft::schema::Schema;
use weft::source::generator::Generator;
use weft::source::{PollStatus, Source, SourceItem};

/// The schema the generator writes for `side`, keyed on (profile_id, title_id).
pub fn schema(side: Side) -> Schema {
    generator_schema(side)
}

/// The built-in workload's generator parameters (see `JobConfig::builtin`), one partition.
pub fn gen_params(events: u64, keys: u64) -> GenParams {
    GenParams {
        seed: GEN_SEED_DEFAULT,
        events,
        keys,
        titles: GEN_TITLES_DEFAULT,
        zipf: GEN_ZIPF_DEFAULT,
        match_rate: GEN_MATCH_RATE_DEFAULT,
        disorder_ms: GEN_DISORDER_MS_DEFAULT,
        late_fraction: GEN_LATE_FRACTION_DEFAULT,
        late_max_ms: GEN_LATE_MAX_MS_DEFAULT,
        play_window_ms: GEN_PLAY_WINDOW_MS_DEFAULT,
        event_time_rate: GEN_EVENT_TIME_RATE_DEFAULT,
        rate_limit: GEN_RATE_LIMIT_DEFAULT,
        partitions: 1,
    }
}

/// Reads `n` from the environment variable `name`, else `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.replace('_', "").parse().ok()).unwrap_or(default)
}

/// Runs generator partition 0 to the end and returns its rows as one big [`Batch`]
/// (key encoded, hash computed), in arrival order: what a single shard's source task
/// would route to itself.
pub fn generated_stream(p: &GenParams) -> Batch {
    let schemas = [schema(Side::Left), schema(Side::Right)];
    let mut g = Generator::new(p.clone(), 0);
    let mut all = Batch::with_capacity(p.events as usize);
    let mut key = Vec::with_capacity(32);
    loop {
        let st = g
            .poll(4096, 0, &mut |it| {
                if let SourceItem::Row { side, ts, row, .. } = it {
                    if encode_key(RowView(row), &schemas[side.idx()], &mut key) {
                        all.push(side, ts, key_hash(&key), 0, row, Some(&key));
                    } else {
                        all.push(side, ts, 0, 0, row, None);
                    }
                }
            })
            .expect("the generator does not fail");
        if st == PollStatus::Done {
            return all;
        }
    }
}

/// Counts what the join emits and folds a little of it into `acc`, so the optimiser
/// cannot drop the work; never looks at row contents beyond their length.
#[derive(Default)]
pub struct CountEmit {
    pub pairs: u64,
    pub unmatched: u64,
    pub acc: u64,
}

impl Emit for CountEmit {
    #[inline]
    fn pair(&mut self, l: RowView, r: RowView, arrival_ns: u64) {
        self.pairs += 1;
        self.acc = self.acc.wrapping_add(l.0.len() as u64 ^ r.0.len() as u64 ^ arrival_ns);
    }
    #[inline]
    fn unmatched(&mut self, _side: Side, row: RowView) {
        self.unmatched += 1;
        self.acc = self.acc.wrapping_add(row.0.len() as u64);
    }
}

/// A generator-shaped row: (profile_id u64, title_id u32, ts i64, a u32, b u32) and
/// its encoded key, for benches that need many distinct keys quickly.
pub fn row_and_key(builder: &mut weft::event::RowBuilder, profile: u64, title: u32, ts: i64, key: &mut Vec<u8>) {
    builder.begin(5);
    builder.set_u64(0, profile);
    builder.set_u64(1, title as u64);
    builder.set_i64(2, ts);
    builder.set_u64(3, 7);
    builder.set_u64(4, 3);
    key.clear();
    key.extend_from_slice(&profile.to_le_bytes());
    key.extend_from_slice(&(title as u64).to_le_bytes());
}

/// The i-th of `n` distinct profile ids, spread like the generator's (golden-ratio
/// multiply, 62 bits).
#[inline]
pub fn profile_id(i: u64) -> u64 {
    (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) & ((1 << 62) - 1)
}

/// A fixed pseudo-random visiting order over `0..n` (an LCG walk is enough to defeat
/// the prefetcher; the bench wants cache misses like a real key stream).
pub fn scrambled(n: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}
