//! What a running job shows its metrics endpoint: one slot per shard that the shard
//! fills now and then, ring counters, and the checkpoint figures.
//!
//! The shards never wait for the endpoint. A shard publishes by `try_lock` on its own
//! slot at most every [`PUBLISH_EVERY`] (skipping a turn when a scrape holds the slot,
//! which copies it and lets go at once), from counters it keeps anyway; its last
//! publish, when its input ends, takes the lock, so the endpoint's figures after the
//! run are the report's. Ring occupancy is two relaxed counters per ring, each written
//! by one thread. The endpoint's thread (`metrics/server.rs`) reads all this and
//! formats it (`metrics/exposition.rs`); nothing here knows the format.
//! Invariant: every figure is a copy taken by the thread that owns it; no lock is held
//! across anything but a copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::metrics::ShardCounters;

/// How often a busy shard publishes its figures.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// One partition (a file, or a generator stream) as its reading shard sees it, since
/// this process started.
#[derive(Clone, Debug, Default)]
pub struct PartitionLive {
    /// 0 left, 1 right.
    pub side: usize,
    pub name: String,
    pub rows: u64,
    pub late: u64,
    pub dead: u64,
    /// Event-time watermark of the partition (ms); `None` before its first row.
    pub watermark_ms: Option<i64>,
    pub idle: bool,
    pub done: bool,
}

/// What one shard last published.
#[derive(Clone, Debug, Default)]
pub struct ShardLive {
    pub published: bool,
    /// The job's totals as the final report counts them (restored at a resume).
    pub counters: ShardCounters,
    /// Of `counters.late`: rows that reached this shard behind its watermark (possible
    /// only once an idle partition let the watermark pass them).
    pub late_behind_watermark: [u64; 2],
    /// Events this shard joined (routed to it), since this process started.
    pub events: u64,
    /// Time its executor ran tasks, since this process started.
    pub busy_ns: u64,
    /// Time its source waited for room in a full ring.
    pub blocked_ns: u64,
    /// The shard's event-time watermark (ms); i64::MIN before every sender has one.
    pub watermark_ms: i64,
    pub state_rows: [u64; 2],
    pub state_bytes: [u64; 2],
    pub keys: u64,
    pub index_bytes: u64,
    pub partitions: Vec<PartitionLive>,
    pub latency: Option<Histogram<u64>>,
}

/// Batches sent into and taken out of one ring.
#[derive(Debug, Default)]
pub struct RingCount {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

/// Checkpoints of this process, for the endpoint.
#[derive(Clone, Debug, Default)]
pub struct CheckpointLive {
    pub enabled: bool,
    pub completed: u64,
    pub failed: u64,
    /// The newest checkpoint that completed.
    pub last: u64,
    pub last_duration_s: f64,
    /// Bytes of the state files the newest checkpoint references.
    pub last_state_bytes: u64,
    /// When the newest checkpoint completed (Unix seconds; 0: none yet).
    pub last_success_unix_s: f64,
}

/// Everything the endpoint shows, shared by the shards, the engine and the endpoint.
#[derive(Debug)]
pub struct Live {
    pub inputs: [String; 2],
    pub shards: usize,
    /// `engine.state_memory_mb` in bytes when state is in arenas, else 0 (no budget).
    pub budget_bytes: u64,
    /// `engine.ring_slots`.
    pub ring_slots: u64,
    slots: Vec<Mutex<ShardLive>>,
    /// `rings[from * shards + to]`.
    rings: Vec<RingCount>,
    checkpoints: Mutex<CheckpointLive>,
}

impl Live {
    pub fn new(inputs: [String; 2], shards: usize, budget_bytes: u64, ring_slots: u64) -> Live {
        Live {
            inputs,
            shards,
            budget_bytes,
            ring_slots,
            slots: (0..shards).map(|_| Mutex::new(ShardLive::default())).collect(),
            rings: (0..shards * shards).map(|_| RingCount::default()).collect(),
            checkpoints: Mutex::new(CheckpointLive::default()),
        }
    }

    /// Shard `shard` replaces its figures unless a scrape is copying them right now
    /// (then it keeps them for its next turn): never waits. False when skipped.
    pub fn try_publish(&self, shard: usize, fill: impl FnOnce(&mut ShardLive)) -> bool {
        match self.slots[shard].try_lock() {
            Ok(mut s) => {
                fill(&mut s);
                s.published = true;
                true
            }
            Err(_) => false,
        }
    }

    /// The last publish of a shard (its input ended): waits for a scrape's copy.
    pub fn publish_final(&self, shard: usize, fill: impl FnOnce(&mut ShardLive)) {
        let mut s = self.slots[shard].lock().unwrap_or_else(|e| e.into_inner());
        fill(&mut s);
        s.published = true;
    }

    pub fn ring(&self, from: usize, to: usize) -> &RingCount {
        &self.rings[from * self.shards + to]
    }

    /// Batches in the ring from `from` to `to` right now (sent, not yet taken).
    pub fn ring_occupancy(&self, from: usize, to: usize) -> u64 {
        let r = self.ring(from, to);
        let received = r.received.load(Ordering::Relaxed);
        r.sent.load(Ordering::Relaxed).saturating_sub(received)
    }

    pub fn set_checkpoints(&self, c: CheckpointLive) {
        *self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }

    /// A copy of every shard's figures and the checkpoints', for one scrape.
    pub fn snapshot(&self) -> (Vec<ShardLive>, CheckpointLive) {
        let shards = self.slots.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
        (shards, self.checkpoints.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_while_a_scrape_holds_the_slot_is_skipped_not_waited_for() {
        let live = Live::new(["l".into(), "r".into()], 2, 0, 4);
        assert!(live.try_publish(1, |s| s.events = 5));
        let held = live.slots[1].lock().unwrap();
        assert!(!live.try_publish(1, |s| s.events = 6), "skipped while held");
        drop(held);
        let (shards, _) = live.snapshot();
        assert_eq!(shards[1].events, 5);
        assert!(!shards[0].published && shards[1].published);
    }

    #[test]
    fn ring_occupancy_is_sent_minus_received() {
        let live = Live::new(["l".into(), "r".into()], 2, 0, 4);
        live.ring(0, 1).sent.store(7, Ordering::Relaxed);
        live.ring(0, 1).received.store(4, Ordering::Relaxed);
        assert_eq!(live.ring_occupancy(0, 1), 3);
        assert_eq!(live.ring_occupancy(1, 0), 0);
    }
}
