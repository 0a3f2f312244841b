//! The shard side of a checkpoint: barrier alignment, capture, the pack copy, restore.
//!
//! Protocol on one shard (steps 1-2 of the protocol in `checkpoint/mod.rs`):
//! - the source task sees checkpoint n requested ([`on_round`]), records its partitions'
//!   positions, sends barrier n on every ring after the rows it routed before, and waits
//!   until snapshot n is captured;
//! - a receiver that gets barrier n from its peer ([`align`]) reads nothing more from
//!   that ring until snapshot n is captured;
//! - snapshot n is captured as soon as barrier n came from every sender, a closed ring
//!   counting as aligned ([`Barriers`]). Capture is synchronous and short: the
//!   watermark marks, source positions, counters and the bucket list, and the output
//!   epoch is rotated. The bucket copies are then written by a separate task through
//!   io_uring ([`super::writer`]) while the join goes on.
//!
//! This file owns [`Barriers`] (a pure state machine) and the functions that drive it
//! over the shard's state. It never imports `crate::shard` (a higher layer): the shard's
//! core lends its parts through [`Host`], its open partitions through [`Partition`].
//! It adds nothing to the per-row path: one call per source round, one per barrier.
//!
//! Invariants: at most one snapshot's copies are in flight per shard; a snapshot is
//! captured at most once (`taken` only grows); the copy task borrows the live state
//! only for one chunk's memcpy at a time, never across an `.await`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::redistribute::Redistributing;
use super::{writer, CheckpointError, ClockState, CoordMsg, ShardSnapshot, SourceState};
use crate::exchange::Outbox;
use crate::join::Join;
use crate::metrics::ShardCounters;
use crate::sink::ShardSinks;
use crate::source::{Source, SourceError, SourcePos};
use crate::state::arena::StateError;
use crate::state::copy::{self, CopyJob, SnapshotPlan};
use crate::sys::DirectRing;
use crate::watermark::{Mark, PartitionClock, ShardWatermark};

/// How often the source task re-checks that its barrier's snapshot is captured.
const CAPTURE_POLL_US: u64 = 20;
/// How often a finishing shard re-checks that its last copy is written.
const COPY_POLL_US: u64 = 200;

/// Checkpointing as the engine hands it to one shard.
pub struct CheckpointCtx {
    pub dir: PathBuf,
    /// The coordinator raises it to ask for checkpoint n.
    pub requested: Arc<AtomicU64>,
    /// Stop (graceful shutdown) once this checkpoint is captured; u64::MAX = never.
    pub stop_at: Arc<AtomicU64>,
    pub to_coordinator: Sender<CoordMsg>,
    /// Restore from checkpoint `restored` (0 = fresh start): how.
    pub restore: Option<RestoreFrom>,
    pub restored: u64,
    /// Print barrier and copy timings (`WEFT_DEBUG_CHECKPOINTS`, read once at start).
    pub debug: bool,
}

/// What a shard restores from.
#[derive(Debug)]
pub enum RestoreFrom {
    /// Its own snapshot, taken under the same shard count and routing: restored as it
    /// is (bucket copies become its buckets, marks and counters are its own).
    Own(Box<ShardSnapshot>),
    /// Every shard's snapshot of a checkpoint taken under another shard count or
    /// another routing function, or whose rows must be migrated to a new schema: this
    /// shard keeps the rows whose keys route to it now (see [`super::redistribute`]).
    Redistribute(Box<Redistributing>),
}

/// Barrier bookkeeping of one shard: which checkpoint can be captured when.
#[derive(Debug)]
pub struct Barriers {
    /// Highest barrier received from each sender (this shard's own source included).
    seen: Vec<u64>,
    /// Senders whose ring closed: aligned for every later barrier.
    closed: Vec<bool>,
    /// Last snapshot captured.
    taken: u64,
    /// A snapshot's copies are being written.
    in_flight: bool,
    /// Source positions recorded when this shard injected barrier n.
    positions: Option<(u64, Vec<SourceState>)>,
    /// The source task has left its loop: this shard injects no more barriers, so no
    /// later snapshot will be captured and receivers must not wait for one.
    finishing: bool,
}

impl Barriers {
    /// `senders` shards (this one included), resumed from checkpoint `restored`.
    pub fn new(senders: usize, restored: u64) -> Barriers {
        Barriers {
            seen: vec![restored; senders],
            closed: vec![false; senders],
            taken: restored,
            in_flight: false,
            positions: None,
            finishing: false,
        }
    }

    /// This shard (sender `own`) injected barrier `n` with its sources at `positions`.
    pub fn injected(&mut self, own: usize, n: u64, positions: Vec<SourceState>) {
        self.positions = Some((n, positions));
        self.seen[own] = n;
    }

    pub fn received(&mut self, from: usize, n: u64) {
        self.seen[from] = n;
    }

    pub fn closed(&mut self, from: usize) {
        self.closed[from] = true;
    }

    pub fn finishing(&mut self) {
        self.finishing = true;
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Waiting for snapshot `n` is over: it is captured, or none will be.
    pub fn captured(&self, n: u64) -> bool {
        self.taken >= n || self.finishing
    }

    /// The checkpoint that can be captured now: this shard injected it, it is not taken,
    /// no copy is in flight, and every sender sent its barrier or closed its ring.
    pub fn ready(&self) -> Option<u64> {
        let n = self.positions.as_ref()?.0;
        if self.taken >= n || self.in_flight {
            return None;
        }
        (0..self.seen.len()).all(|s| self.seen[s] >= n || self.closed[s]).then_some(n)
    }

    /// Starts capturing the ready checkpoint: marks it taken, its copy in flight, and
    /// hands back its number and source positions.
    pub fn begin_capture(&mut self) -> Option<(u64, Vec<SourceState>)> {
        let n = self.ready()?;
        let (_, sources) = self.positions.take().expect("ready means positions recorded");
        self.taken = n;
        self.in_flight = true;
        Some((n, sources))
    }

    /// The copies of the snapshot in flight are written (or failed).
    pub fn end_copy(&mut self) {
        debug_assert!(self.in_flight);
        self.in_flight = false;
    }
}

/// The checkpoint side of one shard, kept in the shard's core.
pub struct ShardCheckpoint {
    dir: PathBuf,
    to_coordinator: Sender<CoordMsg>,
    requested: Arc<AtomicU64>,
    stop_at: Arc<AtomicU64>,
    /// Last barrier this shard's source injected.
    injected: u64,
    debug: bool,
    pub barriers: Barriers,
    /// The ring and buffers packs are written through, made at the first checkpoint and
    /// kept; the copy task holds it while it writes (`None` then, and before).
    ring: Option<DirectRing>,
}

impl ShardCheckpoint {
    pub fn new(ctx: &CheckpointCtx, senders: usize) -> ShardCheckpoint {
        ShardCheckpoint {
            dir: ctx.dir.clone(),
            to_coordinator: ctx.to_coordinator.clone(),
            requested: ctx.requested.clone(),
            stop_at: ctx.stop_at.clone(),
            injected: ctx.restored,
            debug: ctx.debug,
            barriers: Barriers::new(senders, ctx.restored),
            ring: None,
        }
    }

    /// Tells the coordinator this shard ran to the end of its input.
    pub fn finished(&self, shard: u32, positions: Vec<(u32, crate::source::SourcePos)>) {
        let _ = self.to_coordinator.send(CoordMsg::Finished { shard, positions });
    }
}

/// The shard state a checkpoint reads and writes, borrowed together.
pub struct Parts<'a> {
    pub shard: u32,
    pub ckpt: &'a mut ShardCheckpoint,
    pub join: &'a mut Join,
    pub wm: &'a mut ShardWatermark,
    pub sinks: &'a mut ShardSinks,
    pub counters: &'a mut ShardCounters,
}

/// What the shard's core lends a checkpoint (implemented by `shard::Core`).
pub trait Host: 'static {
    /// `None` when checkpointing is off.
    fn parts(&mut self) -> Option<Parts<'_>>;
    fn checkpoint(&self) -> Option<&ShardCheckpoint>;
    fn join(&self) -> &Join;
    /// The counters as a snapshot records them.
    fn counters(&self) -> ShardCounters;
    /// The shard or the job is failing: stop waiting for barriers.
    fn failing(&self) -> bool;
    /// Records an error that ends the shard.
    fn fail(&mut self, e: StateError);
}

/// A source partition as a checkpoint sees it (implemented by the shard's partitions).
pub trait Partition {
    fn plan_index(&self) -> u32;
    fn name(&self) -> &str;
    /// Where the partition is now.
    fn record(&self) -> SourceState;
    /// Puts the partition back where `st` says.
    fn seek_to(&mut self, st: &SourceState) -> Result<(), SourceError>;
    /// Puts a split file's reader back where the records of several shards say (a
    /// re-distributing restore; `source/split.rs`).
    fn seek_merged(&mut self, sts: &[&SourceState]) -> Result<(), SourceError>;
}

impl SourceState {
    /// The state of a partition with source `src` and one clock per side it reads.
    pub fn of(plan_index: u32, name: &str, src: &dyn Source, done: bool, clocks: &[Option<PartitionClock>; 2]) -> Self {
        SourceState {
            plan_index,
            name: name.to_string(),
            position: src.position(),
            done,
            clocks: [0, 1].map(|i| clocks[i].as_ref().map(|c| ClockState { max_ts: c.max_ts(), done: c.done })),
        }
    }

    /// Seeks `src` and restores `done` and the clocks to this state.
    pub fn apply(
        &self,
        src: &mut dyn Source,
        done: &mut bool,
        clocks: &mut [Option<PartitionClock>; 2],
    ) -> Result<(), SourceError> {
        if let SourcePos::Split(_) = self.position {
            return SourceState::apply_merged(&[self], src, done, clocks);
        }
        src.seek(&self.position)?;
        *done = self.done;
        for (cl, saved) in clocks.iter_mut().zip(&self.clocks) {
            if let (Some(cl), Some(saved)) = (cl.as_mut(), saved.as_ref()) {
                cl.restore(saved.max_ts, saved.done);
            }
        }
        Ok(())
    }
}

impl SourceState {
    /// A split file from the records of every shard that read it: the reader derives
    /// its chunks; its clocks start fresh (the reader's `Resume` items raise them: a
    /// recorded clock is another shard's place in the file, no bound for this one's).
    pub fn apply_merged(
        sts: &[&SourceState],
        src: &mut dyn Source,
        done: &mut bool,
        clocks: &mut [Option<PartitionClock>; 2],
    ) -> Result<(), SourceError> {
        let positions: Vec<&SourcePos> = sts.iter().map(|s| &s.position).collect();
        match positions.as_slice() {
            [one] if !matches!(one, SourcePos::Split(_)) => return sts[0].apply(src, done, clocks),
            _ => src.seek_merged(&positions)?,
        }
        *done = false;
        for cl in clocks.iter_mut().flatten() {
            cl.restore(None, false);
        }
        Ok(())
    }
}

/// Once per source round: if checkpoint n is requested (and this shard has a live
/// input and no copy in flight), injects barrier n and waits until snapshot n is
/// captured. Returns `Some(n)` when the job is to stop at n (graceful shutdown).
pub async fn on_round<C: Host, P: Partition>(
    core: &Rc<RefCell<C>>,
    outbox: &mut Outbox,
    partitions: &[P],
    mark: impl FnOnce() -> Mark,
) -> Option<u64> {
    let (id, n, debug, stop_at) = {
        let mut c = core.borrow_mut();
        let p = c.parts()?;
        let ck = &mut *p.ckpt;
        if ck.requested.load(Ordering::Acquire) <= ck.injected || ck.barriers.in_flight() || p.wm.all_done() {
            return None;
        }
        ck.injected += 1;
        (p.shard, ck.injected, ck.debug, ck.stop_at.clone())
    };
    let t_inject = Instant::now();
    inject(core, outbox, partitions, id, n, mark()).await;
    wait_captured(core, n).await;
    if debug {
        tracing::info!(
            shard = id,
            checkpoint = n,
            "shard {id}: barrier {n} aligned and captured {:?} after injection",
            t_inject.elapsed()
        );
    }
    (stop_at.load(Ordering::Acquire) <= n).then_some(n)
}

/// Records the source positions for checkpoint `n` and sends barrier n to every peer,
/// after everything routed so far (the round's batches are flushed).
async fn inject<C: Host, P: Partition>(
    core: &Rc<RefCell<C>>,
    outbox: &mut Outbox,
    partitions: &[P],
    id: u32,
    n: u64,
    mark: Mark,
) {
    let positions = partitions.iter().map(P::record).collect();
    if let Some(p) = core.borrow_mut().parts() {
        p.ckpt.barriers.injected(id as usize, n, positions);
    }
    outbox.broadcast_barrier(n, mark).await;
    try_capture(core);
}

/// A receiver got barrier `n` from `from`: nothing after it from that ring joins
/// before snapshot n is captured (aligned barriers).
pub async fn align<C: Host>(core: &Rc<RefCell<C>>, from: usize, n: u64) {
    if let Some(p) = core.borrow_mut().parts() {
        p.ckpt.barriers.received(from, n);
    }
    try_capture(core);
    wait_captured(core, n).await;
}

/// The ring from `from` closed: it counts as aligned for every later barrier.
pub fn on_closed<C: Host>(core: &Rc<RefCell<C>>, from: usize) {
    if let Some(p) = core.borrow_mut().parts() {
        p.ckpt.barriers.closed(from);
    }
    try_capture(core);
}

/// The source task left its loop: no later snapshot will be captured.
pub fn finishing<C: Host>(core: &mut C) {
    if let Some(p) = core.parts() {
        p.ckpt.barriers.finishing();
    }
}

/// Waits for a snapshot copy still running: it holds the core.
pub async fn wait_copies<C: Host>(core: &Rc<RefCell<C>>) {
    while core.borrow().checkpoint().is_some_and(|c| c.barriers.in_flight()) {
        glommio::timer::sleep(Duration::from_micros(COPY_POLL_US)).await;
    }
}

/// Waits until snapshot `n` is captured (or the job is failing / finishing).
async fn wait_captured<C: Host>(core: &Rc<RefCell<C>>, n: u64) {
    loop {
        {
            let c = core.borrow();
            let Some(ck) = c.checkpoint() else { return };
            if ck.barriers.captured(n) || c.failing() {
                return;
            }
        }
        glommio::timer::sleep(Duration::from_micros(CAPTURE_POLL_US)).await;
    }
}

/// A captured snapshot whose copies are still to be written.
struct Capture {
    n: u64,
    snap: ShardSnapshot,
    jobs: Vec<CopyJob>,
    /// The pack, relative to `dir`.
    pack: String,
    dir: PathBuf,
    /// When the capture ended, if timings are printed.
    t0: Option<Instant>,
}

/// Captures snapshot n if barrier n came from every sender, and starts its copies.
fn try_capture<C: Host>(core: &Rc<RefCell<C>>) {
    let cap = {
        let mut c = core.borrow_mut();
        if c.checkpoint().and_then(|ck| ck.barriers.ready()).is_none() {
            return;
        }
        let counters = c.counters();
        let Some(p) = c.parts() else { return };
        capture(p, counters)
    };
    glommio::spawn_local(copy(core.clone(), cap)).detach();
}

/// Snapshot of the state as it is now; ends output epoch n (the coordinator commits it
/// with checkpoint n). Synchronous: no row joins between the alignment and this.
fn capture(p: Parts, counters: ShardCounters) -> Capture {
    let (n, sources) = p.ckpt.barriers.begin_capture().expect("checked ready");
    let pack = writer::pack_path(p.shard, n);
    let SnapshotPlan { copies: buckets, jobs } = p.join.plan_snapshot(&pack);
    let snap = ShardSnapshot {
        shard: p.shard,
        watermark: p.wm.current(),
        marks: p.wm.marks().iter().map(|&m| m.into()).collect(),
        sources,
        buckets,
        base_buckets: p.join.state_bases(),
        counters,
    };
    p.sinks.rotate(n + 1);
    Capture { n, snap, jobs, pack, dir: p.ckpt.dir.clone(), t0: p.ckpt.debug.then(Instant::now) }
}

/// Writes a captured snapshot's copies into its pack, then reports it.
async fn copy<C: Host>(core: Rc<RefCell<C>>, cap: Capture) {
    let lens: Vec<usize> = cap.jobs.iter().map(|j| j.len()).collect();
    let path = cap.dir.join(&cap.pack);
    let mut ring = core.borrow_mut().parts().and_then(|p| p.ckpt.ring.take());
    let r = if cap.jobs.is_empty() {
        Ok(Vec::new())
    } else {
        match ring.take().map_or_else(writer::new_ring, Ok) {
            Err(e) => Err(super::io(&path, "create io_uring ring")(e)),
            Ok(mut made) => {
                let jobs = &cap.jobs;
                let r = writer::write_pack(&mut made, &path, &lens, |i, off, dst| match &jobs[i] {
                    // One chunk's memcpy under the borrow; none is held across an await.
                    CopyJob::Full { side, bucket, .. } => core.borrow().join().copy_out(*side, *bucket, off, dst),
                    CopyJob::Flips { data, .. } => {
                        dst.copy_from_slice(&data[off..off + dst.len()]);
                        true
                    }
                })
                .await;
                // A ring the kernel could not be waited on is dropped (its buffers leak).
                ring = Some(made).filter(DirectRing::healthy);
                r
            }
        }
    };
    if let (Some(ring), Some(p)) = (ring, core.borrow_mut().parts()) {
        p.ckpt.ring = Some(ring);
    }
    if let Some(t0) = cap.t0 {
        tracing::info!(
            shard = cap.snap.shard,
            checkpoint = cap.n,
            "shard {}: snapshot {}: {} segments ({} bytes) written in {:?}",
            cap.snap.shard,
            cap.n,
            cap.jobs.len(),
            lens.iter().sum::<usize>(),
            t0.elapsed()
        );
    }
    copied(&mut *core.borrow_mut(), cap, r);
}

/// The pack is written (or failed): record the segments, end the snapshot in the
/// state, and tell the coordinator.
fn copied<C: Host>(c: &mut C, cap: Capture, r: Result<Vec<(u64, u32)>, CheckpointError>) {
    let Capture { n, mut snap, jobs, pack, .. } = cap;
    let (done, failed) = match r {
        Ok(v) => (jobs.iter().zip(v).map(|(j, (off, crc))| j.written(off, crc)).collect::<Vec<_>>(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    copy::fill_in_all(&mut snap.buckets, &pack, &done);
    let p = c.parts().expect("a copy runs only with checkpointing on");
    let ended = p.join.end_snapshot(&pack, &done, failed.is_some());
    p.ckpt.barriers.end_copy();
    let msg = match failed {
        // A failed copy fails this checkpoint only; the previous one stays valid.
        Some(e) => CoordMsg::Failed { n, shard: snap.shard, error: e.to_string() },
        None => CoordMsg::Snapshot { n, snap: Box::new(snap) },
    };
    let _ = p.ckpt.to_coordinator.send(msg);
    if let Err(e) = ended {
        c.fail(e);
    }
}

/// Why a shard could not restore its snapshot.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Another shard of a re-distributing restore stopped before it sent its rows.
    #[error("restoring by re-distribution: {0}")]
    Peer(String),
}

/// Restores join state, watermarks, counters and source positions from a snapshot.
pub fn restore<C: Host, P: Partition>(
    core: &mut C,
    partitions: &mut [P],
    snap: &ShardSnapshot,
    dir: &Path,
) -> Result<(), RestoreError> {
    let p = core.parts().expect("restore runs only with checkpointing on");
    p.join.restore_bases(snap.base_buckets);
    super::prefetch_segments(dir, &snap.buckets);
    for b in &snap.buckets {
        let (bytes, flips) = super::read_bucket(dir, b)?;
        p.join.restore_bucket(b, bytes, &flips, &dir.join(&b.file))?;
    }
    let marks: Vec<Mark> = snap.marks.iter().map(Mark::from).collect();
    p.wm.restore(&marks, snap.watermark);
    let k = &snap.counters;
    *p.counters = k.clone();
    p.join.stats.pairs = k.pairs;
    p.join.stats.unmatched = k.unmatched;
    p.sinks.output_rows = k.output_rows;
    p.sinks.unmatched_emitted = k.unmatched_emitted;
    for part in partitions.iter_mut() {
        let Some(st) = snap.sources.iter().find(|s| s.plan_index == part.plan_index()) else {
            return Err(CheckpointError::Invalid {
                path: dir.to_path_buf(),
                reason: format!("shard {} has no position for partition {}", snap.shard, part.name()),
            }
            .into());
        };
        part.seek_to(st)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourcePos;

    fn pos(i: u32) -> SourceState {
        SourceState {
            plan_index: i,
            name: format!("p{i}"),
            position: SourcePos::Generator { emitted: 0 },
            done: false,
            clocks: [None, None],
        }
    }

    #[test]
    fn captures_when_every_sender_aligned() {
        let mut b = Barriers::new(3, 0);
        assert_eq!(b.ready(), None, "nothing injected");
        b.injected(0, 1, vec![pos(0)]);
        assert_eq!(b.ready(), None);
        b.received(1, 1);
        assert_eq!(b.ready(), None, "sender 2 has not sent barrier 1");
        b.received(2, 1);
        assert_eq!(b.ready(), Some(1));
        assert!(!b.captured(1));
        let (n, sources) = b.begin_capture().unwrap();
        assert_eq!((n, sources), (1, vec![pos(0)]));
        assert!(b.captured(1) && b.in_flight());
        assert_eq!(b.ready(), None, "taken once");
        assert!(b.begin_capture().is_none());
    }

    #[test]
    fn a_closed_sender_is_aligned() {
        let mut b = Barriers::new(2, 0);
        b.closed(1);
        b.injected(0, 1, Vec::new());
        assert_eq!(b.ready(), Some(1));
    }

    #[test]
    fn no_capture_while_a_copy_is_in_flight() {
        let mut b = Barriers::new(2, 0);
        b.injected(0, 1, Vec::new());
        b.received(1, 1);
        b.begin_capture().unwrap();
        b.injected(0, 2, Vec::new());
        b.received(1, 2);
        assert_eq!(b.ready(), None, "copy of 1 in flight");
        b.end_copy();
        assert_eq!(b.ready(), Some(2));
    }

    #[test]
    fn finishing_releases_waiters_without_capture() {
        let mut b = Barriers::new(2, 4);
        assert!(b.captured(4), "the restored checkpoint counts as captured");
        assert!(!b.captured(5));
        b.finishing();
        assert!(b.captured(5));
        assert_eq!(b.ready(), None);
    }

    #[test]
    fn resumed_barriers_count_from_the_restored_checkpoint() {
        let mut b = Barriers::new(2, 7);
        b.injected(0, 8, Vec::new());
        assert_eq!(b.ready(), None, "peer still at 7");
        b.received(1, 8);
        assert_eq!(b.ready(), Some(8));
    }
}
