//! The impressions/plays workload generator: one partition of impressions (left)
//! and one of plays (right) per generator partition, deterministic from the seed.
//!
//! Model (simulated event time, the impressions/plays model of the peer engines' data
//! generator, but streaming):
//! - Impression j of a partition happens at `T0 + j * partitions * 1000 / event_time_rate`
//!   ms; it is *sent* then, with event time `ts = clock - delay`: on-time rows have
//!   `delay` in `[0, disorder_ms)`, a fraction `late_fraction` get
//!   `2 * disorder_ms + U[0, late_max_ms]` (late data).
//! - `profile_id` = `((rank + 1) * 0x9E3779B97F4A7C15) mod 2^62` with `rank` zipf over
//!   `keys`; `title_id` uniform in `1..=titles`; `row` in 0..40, `col` in 0..10.
//! - With probability `match_rate` an impression gets one play with the same key at
//!   `ts + U[0, play_window_ms]`, sent at that time plus its own delay. Plays wait in
//!   a calendar queue of 1-second slots and leave it in arrival order.
//! - A partition emits `share / (1 + match_rate)` impressions (`share` = its part of
//!   `events`), then the plays still pending, and stops after `share` events or when
//!   no play is pending, whichever comes first.
//!
//! Rows follow `config::generator_schema` (the one owner of the generator's names,
//! fields and defaults): impressions set slots profile_id, title_id, ts, row, col;
//! plays profile_id, title_id, ts, duration_ms; a test checks this against it.
//!
//! Consequence: with `max_out_of_orderness_ms >= disorder_ms` only the delayed rows
//! are late. Per event the generator does O(1) work and allocates nothing once the
//! calendar has grown to the play window.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use super::{wrong_pos, PollStatus, Source, SourceError, SourceItem, SourcePos};
use crate::config::{GenParams, GENERATOR_LEFT_FIELDS, GENERATOR_RIGHT_FIELDS};
use crate::event::RowBuilder;
use crate::event::Side;

/// Simulated start of event time: 2023-11-14T22:13:20Z.
pub const T0_MS: i64 = 1_700_000_000_000;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const MASK62: u64 = (1 << 62) - 1;
/// Width of a calendar slot for pending plays.
const SLOT_MS: i64 = 1000;

#[derive(Clone, Copy)]
struct Play {
    arrival: i64,
    seq: u64,
    ts: i64,
    profile: u64,
    title: u32,
    duration: u32,
}

pub struct Generator {
    p: GenParams,
    index: u32,
    rng: SmallRng,
    zipf: Option<Zipf<f64>>,
    /// Events this partition emits in all, and how many of them are impressions.
    quota: u64,
    left_quota: u64,
    /// Plays waiting in the calendar.
    pending: u64,
    emitted: u64,
    next_impression: u64,
    step_ms: f64,
    /// Pending plays: `slots[i]` holds arrivals in slot `base_slot + i`.
    slots: VecDeque<Vec<Play>>,
    base_slot: i64,
    ready: Vec<Play>,
    ready_pos: usize,
    play_seq: u64,
    builder: RowBuilder,
    ns_per_event: f64,
    /// Events emitted before the rate clock started (after a seek).
    rate_origin: u64,
}

impl Generator {
    pub fn new(p: GenParams, index: u32) -> Generator {
        let parts = p.partitions as u64;
        let quota = p.events / parts + u64::from((index as u64) < p.events % parts);
        let seed = p.seed ^ (index as u64 + 1).wrapping_mul(GOLDEN);
        let zipf = if p.zipf > 0.0 && p.keys > 1 { Zipf::new(p.keys, p.zipf).ok() } else { None };
        let step_ms = 1000.0 * p.partitions as f64 / p.event_time_rate;
        let ns_per_event = if p.rate_limit > 0.0 { 1e9 * p.partitions as f64 / p.rate_limit } else { 0.0 };
        Generator {
            rng: SmallRng::seed_from_u64(seed),
            zipf,
            quota,
            left_quota: ((quota as f64) / (1.0 + p.match_rate)).round() as u64,
            pending: 0,
            emitted: 0,
            next_impression: 0,
            step_ms,
            slots: VecDeque::new(),
            base_slot: T0_MS.div_euclid(SLOT_MS),
            ready: Vec::new(),
            ready_pos: 0,
            play_seq: 0,
            builder: RowBuilder::new(),
            ns_per_event,
            rate_origin: 0,
            index,
            p,
        }
    }

    fn clock(&self) -> i64 {
        T0_MS + (self.next_impression as f64 * self.step_ms) as i64
    }

    fn delay(&mut self) -> i64 {
        let d = self.p.disorder_ms;
        if self.p.late_fraction > 0.0 && self.rng.gen_bool(self.p.late_fraction) {
            2 * d + self.rng.gen_range(0..=self.p.late_max_ms)
        } else if d > 0 {
            self.rng.gen_range(0..d)
        } else {
            0
        }
    }

    fn profile(&mut self) -> u64 {
        let rank = match &self.zipf {
            Some(z) => (z.sample(&mut self.rng) as u64).saturating_sub(1).min(self.p.keys - 1),
            None => self.rng.gen_range(0..self.p.keys),
        };
        (rank + 1).wrapping_mul(GOLDEN) & MASK62
    }

    fn schedule(&mut self, p: Play) {
        let slot = p.arrival.div_euclid(SLOT_MS).max(self.base_slot);
        let i = (slot - self.base_slot) as usize;
        while self.slots.len() <= i {
            self.slots.push_back(Vec::new());
        }
        self.slots[i].push(p);
        self.pending += 1;
    }

    /// Moves the plays of every slot that ended by `clock` into `ready`, sorted.
    fn collect_due(&mut self, clock: i64) {
        self.ready.clear();
        self.ready_pos = 0;
        while (self.base_slot + 1) * SLOT_MS <= clock {
            if let Some(mut v) = self.slots.pop_front() {
                self.ready.append(&mut v);
                self.slots.push_back(v); // keep the emptied allocation for reuse
            }
            self.base_slot += 1;
            if self.pending == self.ready.len() as u64 {
                // Nothing pending: jump ahead instead of walking empty slots.
                self.base_slot = self.base_slot.max(clock.div_euclid(SLOT_MS));
            }
        }
        self.pending -= self.ready.len() as u64;
        self.ready.sort_unstable_by_key(|p| (p.arrival, p.seq));
    }
}

impl Source for Generator {
    fn poll(
        &mut self,
        max_rows: usize,
        now_ns: u64,
        out: &mut dyn FnMut(SourceItem<'_>),
    ) -> Result<PollStatus, SourceError> {
        let mut n = 0;
        while n < max_rows {
            if self.emitted >= self.quota {
                return Ok(PollStatus::Done);
            }
            let intended_ns = if self.ns_per_event > 0.0 {
                let due = ((self.emitted - self.rate_origin) as f64 * self.ns_per_event) as u64;
                if due > now_ns {
                    return Ok(if n > 0 { PollStatus::Rows } else { PollStatus::Idle { retry_ns: due - now_ns } });
                }
                Some(due)
            } else {
                None
            };
            if self.ready_pos < self.ready.len() {
                let p = self.ready[self.ready_pos];
                self.ready_pos += 1;
                let b = &mut self.builder;
                b.begin(GENERATOR_RIGHT_FIELDS.len());
                b.set_u64(0, p.profile);
                b.set_u64(1, p.title as u64);
                b.set_i64(2, p.ts);
                b.set_u64(3, p.duration as u64);
                out(SourceItem::Row { side: Side::Right, ts: p.ts, row: b.bytes(), intended_ns, extra: 0 });
                self.emitted += 1;
                n += 1;
                continue;
            }
            if self.next_impression >= self.left_quota {
                // All impressions are out: release the pending plays slot by slot.
                if self.pending == 0 {
                    self.quota = self.emitted;
                    return Ok(PollStatus::Done);
                }
                self.collect_due((self.base_slot + 1) * SLOT_MS);
                continue;
            }
            let clock = self.clock();
            if self.pending > 0 && (self.base_slot + 1) * SLOT_MS <= clock {
                self.collect_due(clock);
                if !self.ready.is_empty() {
                    continue;
                }
            }
            // The impression of this step.
            let ts = clock - self.delay();
            let profile = self.profile();
            let title = self.rng.gen_range(1..=self.p.titles);
            let row = self.rng.gen_range(0..40u32);
            let col = self.rng.gen_range(0..10u32);
            if self.p.match_rate > 0.0 && self.rng.gen_bool(self.p.match_rate) {
                let play_ts = ts + self.rng.gen_range(0..=self.p.play_window_ms);
                let arrival = play_ts + self.delay();
                let duration = self.rng.gen_range(1000..=10_800_000u32);
                self.play_seq += 1;
                let seq = self.play_seq;
                self.schedule(Play { arrival, seq, ts: play_ts, profile, title, duration });
            }
            self.next_impression += 1;
            let b = &mut self.builder;
            b.begin(GENERATOR_LEFT_FIELDS.len());
            b.set_u64(0, profile);
            b.set_u64(1, title as u64);
            b.set_i64(2, ts);
            b.set_u64(3, row as u64);
            b.set_u64(4, col as u64);
            out(SourceItem::Row { side: Side::Left, ts, row: b.bytes(), intended_ns, extra: 0 });
            self.emitted += 1;
            n += 1;
        }
        Ok(PollStatus::Rows)
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(Side::Left, self.index), (Side::Right, self.index)]
    }

    fn position(&self) -> SourcePos {
        SourcePos::Generator { emitted: self.emitted }
    }

    /// Replays the partition from the start, discarding `emitted` events: the
    /// generator is deterministic, so this lands exactly where the checkpoint was.
    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        let SourcePos::Generator { emitted } = *pos else {
            return Err(wrong_pos(&self.describe(), pos));
        };
        *self = Generator::new(self.p.clone(), self.index);
        let saved_rate = self.ns_per_event;
        self.ns_per_event = 0.0;
        while self.emitted < emitted {
            let want = (emitted - self.emitted).min(4096) as usize;
            if self.poll(want, 0, &mut |_| {})? == PollStatus::Done {
                break;
            }
        }
        self.ns_per_event = saved_rate;
        // A rate-limited generator resumes at its own pace from now on.
        self.rate_origin = self.emitted;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("generator/{}", self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(events: u64) -> GenParams {
        GenParams {
            seed: 7,
            events,
            keys: 1000,
            titles: 50,
            zipf: 1.0,
            match_rate: 0.5,
            disorder_ms: 2000,
            late_fraction: 0.01,
            late_max_ms: 60_000,
            play_window_ms: 600_000,
            event_time_rate: 50.0,
            rate_limit: 0.0,
            partitions: 2,
        }
    }

    fn drain(g: &mut Generator) -> Vec<(Side, i64, Vec<u8>)> {
        let mut v = Vec::new();
        loop {
            let st = g
                .poll(100, 0, &mut |it| {
                    if let SourceItem::Row { side, ts, row, .. } = it {
                        v.push((side, ts, row.to_vec()))
                    }
                })
                .unwrap();
            if st == PollStatus::Done {
                return v;
            }
        }
    }

    #[test]
    fn deterministic_and_exact_count() {
        let a = drain(&mut Generator::new(params(10_001), 0));
        let b = drain(&mut Generator::new(params(10_001), 0));
        let c = drain(&mut Generator::new(params(10_001), 1));
        assert!(a.len() <= 5001 && a.len() > 4800, "{}", a.len());
        assert!(c.len() <= 5000 && c.len() > 4800, "{}", c.len());
        assert!(a == b);
        let plays = a.iter().filter(|r| r.0 == Side::Right).count();
        assert!(plays > 1400 && plays < 1800, "plays {plays}");
    }

    #[test]
    fn on_time_rows_respect_disorder() {
        let mut p = params(20_000);
        p.late_fraction = 0.0;
        let rows = drain(&mut Generator::new(p, 0));
        for side in [Side::Left, Side::Right] {
            let mut max = i64::MIN;
            for r in rows.iter().filter(|r| r.0 == side) {
                assert!(r.1 > max.saturating_sub(2000), "{side:?} row {} behind max {max} by >= disorder", r.1);
                max = max.max(r.1);
            }
        }
    }

    /// Every row has exactly the generator schema's fields, all set, with values of
    /// the field's type, and the event time in the schema's time field.
    #[test]
    fn rows_follow_the_generator_schema() {
        use crate::config::generator_schema;
        use crate::event::{event_time, RowView};
        use crate::schema::FieldType;
        let rows = drain(&mut Generator::new(params(2_000), 0));
        for side in [Side::Left, Side::Right] {
            let schema = generator_schema(side);
            let n = schema.fields.len();
            for (_, ts, row) in rows.iter().filter(|r| r.0 == side) {
                assert_eq!(row.len(), 8 + 8 * n, "{side:?}: one 8-byte slot per field, no strings");
                let view = RowView(row);
                assert_eq!(event_time(view, &schema), Ok(*ts));
                for (i, f) in schema.fields.iter().enumerate() {
                    assert!(!view.is_null(i), "{side:?} {}", f.name);
                    if f.ty == FieldType::U32 {
                        assert!(view.slot(i) <= u32::MAX as u64, "{side:?} {}", f.name);
                    }
                }
            }
        }
    }
}
