//! The per-core shard: one glommio executor pinned to one CPU, owning a disjoint set
//! of keys (by [`crate::router::shard_of`]) and a share of the source partitions.
//!
//! Tasks on the shard's executor (single-threaded, cooperative; no locks):
//! - the *source task* polls this shard's partitions, decides lateness per partition,
//!   encodes and hashes keys, and routes each row into a batch per destination shard;
//!   batches for itself are joined in place, the others go over the rings;
//! - one *receiver task* per peer ring joins the batches that peer sends.
//! Both share the [`Core`] (join operator, sinks, watermark) through a `RefCell` that is
//! never held across an `.await`. Every task yields after each batch, so a busy peer
//! cannot starve the local source, and a waiting `send` (full ring) lets the
//! receivers drain: two shards can never deadlock on each other's full rings.
//!
//! Checkpoints (when `engine.checkpoint_dir` is set; see `checkpoint/mod.rs`): the
//! source task injects barrier n after the rows it routed before it; a receiver that
//! gets barrier n from its peer reads nothing more from that ring until this shard's
//! snapshot n is captured, which happens as soon as barrier n came from every sender
//! (a finished sender counts as aligned). Capture is synchronous and short (lists the
//! buckets, closes the epoch's output files); the bucket copies are written by a
//! separate task through io_uring while the join goes on.
//!
//! Invariant: a shard only ever joins rows whose key it owns (`debug_assert`ed on
//! receipt; rows with a NULL key never match and stay on the shard that read them).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};
use hdrhistogram::Histogram;

use crate::checkpoint::{self, ClockState, CoordMsg, MarkState, ShardSnapshot, SourceState};
use crate::config::Job;
use crate::event::{encode_key, RowView};
use crate::exchange::Batch;
use crate::join::{Join, JoinParams};
use crate::metrics::{Progress, ShardCounters};
use crate::router::{key_hash, shard_of};
use crate::schema::Schema;
use crate::sink::{ShardSinks, SinkError};
use crate::source::{self, PartitionSpec, PollStatus, Source, SourceError, SourceItem};
use crate::state::copy::{self, CopyJob};
use crate::watermark::{sender_mark, Mark, PartitionClock, ShardWatermark};

/// Longest a shard sleeps when none of its sources has rows.
const IDLE_SLEEP_NS_MAX: u64 = 1_000_000;
/// Shortest such sleep: a rate-limited source that is a few microseconds early waits
/// this long, so that rows go out in batches instead of one wake-up per row (a full
/// core of polling at 100k events/s otherwise; perf/bench-notes.md). Adds at most this
/// much latency.
const IDLE_SLEEP_NS_MIN: u64 = 100_000;
/// Batches between two recomputations of the state-size peaks.
const PEAK_EVERY_BATCHES: u64 = 64;
/// How far ahead of the row being joined its index slot is prefetched: enough rows to
/// cover a cache miss (~100 ns) at ~50-100 ns of work per row, few enough that the
/// lines are still cached when used.
const PREFETCH_ROWS_AHEAD: usize = 8;
/// Batches between two checks of the memory budget (a read of /proc/self/status, ~10 us).
const BUDGET_EVERY_BATCHES: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    State(#[from] crate::state::arena::StateError),
    #[error("shard {0} stopped because another shard failed")]
    Aborted(u32),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

/// Checkpointing as seen by one shard.
pub struct CheckpointCtx {
    pub dir: std::path::PathBuf,
    /// The coordinator raises it to ask for checkpoint n.
    pub requested: Arc<std::sync::atomic::AtomicU64>,
    /// Stop (graceful shutdown) once this checkpoint is captured; u64::MAX = never.
    pub stop_at: Arc<std::sync::atomic::AtomicU64>,
    pub to_coordinator: std::sync::mpsc::Sender<CoordMsg>,
    /// Restore from this snapshot of checkpoint `restored` (0 = fresh start).
    pub restore: Option<ShardSnapshot>,
    pub restored: u64,
}

/// Everything a shard needs, moved into its executor.
pub struct ShardCtx {
    pub id: u32,
    pub job: Arc<Job>,
    /// (index in the job's partition plan, partition).
    pub specs: Vec<(u32, PartitionSpec)>,
    /// `senders[d]`: the ring to shard `d` (`None` for itself).
    pub senders: Vec<Option<SharedSender<Batch>>>,
    /// (peer id, ring from that peer).
    pub receivers: Vec<(usize, SharedReceiver<Batch>)>,
    pub progress: Arc<Progress>,
    pub start: Instant,
    pub strict: bool,
    pub checkpoint: Option<CheckpointCtx>,
}

pub struct ShardResult {
    pub counters: ShardCounters,
    pub latency: Histogram<u64>,
    /// Stopped at a checkpoint (graceful shutdown) instead of running to the end.
    pub stopped_at: Option<u64>,
}

/// Barrier bookkeeping of one shard.
struct Ckpt {
    dir: std::path::PathBuf,
    to_coordinator: std::sync::mpsc::Sender<CoordMsg>,
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

/// The state every task of the shard shares.
struct Core {
    id: u32,
    shards: u32,
    lateness_ms: i64,
    join: Join,
    sinks: ShardSinks,
    wm: ShardWatermark,
    counters: ShardCounters,
    progress: Arc<Progress>,
    batches: u64,
    /// `engine.state_memory_mb` in bytes when state is in arenas, else 0 (no budget).
    budget_bytes: u64,
    /// The index-over-budget warning was printed (shard 0 prints it, once per run).
    budget_warned: bool,
    error: Option<ShardError>,
    ckpt: Option<Ckpt>,
}

impl Core {
    /// Joins a batch from `from` (which may be this shard), then applies its mark.
    fn on_batch(&mut self, from: usize, b: &Batch, now_ns: u64) {
        self.sinks.now_ns = now_ns;
        // Only with idle partitions can a row arrive behind W - A (SEMANTICS.md).
        let cut = self.wm.current() as i128 - self.lateness_ms as i128;
        for (i, e) in b.events.iter().enumerate() {
            if let Some(ahead) = b.events.get(i + PREFETCH_ROWS_AHEAD) {
                self.join.prefetch(ahead.hash);
            }
            let (row, key) = b.get(e);
            debug_assert!(key.is_none() || shard_of(e.hash, self.shards) == self.id, "row routed to the wrong shard");
            if (e.ts as i128) < cut {
                self.counters.late[e.side.idx()] += 1;
                self.sinks.late(e.side, RowView(row));
                continue;
            }
            if let Err(err) = self.join.on_row(e.side, e.ts, e.hash, key, row, e.arrival_ns, &mut self.sinks) {
                self.error.get_or_insert(err.into());
                return;
            }
        }
        let before = self.wm.current();
        let w = self.wm.update(from, b.mark);
        if w > before {
            if let Err(err) = self.join.advance(w, &mut self.sinks) {
                self.error.get_or_insert(err.into());
                return;
            }
        }
        self.batches += 1;
        self.observe();
        if let Some(e) = self.sinks.take_error() {
            self.error.get_or_insert(ShardError::Sink(e));
        }
    }

    /// Releases this shard's mapped row pages when the process's mapped state is over
    /// `engine.state_memory_mb` (crate::state::budget).
    fn enforce_memory_budget(&mut self) {
        if self.budget_bytes == 0 {
            return;
        }
        let own = &self.progress.shards[self.id as usize];
        own.index_mapped.store(self.join.index_mapped_bytes(), Ordering::Relaxed);
        own.budget_fixed.store(self.join.index_bytes() + self.join.cold_flips_bytes(), Ordering::Relaxed);
        let shards = &self.progress.shards;
        let mapped: u64 = shards.iter().map(|s| s.index_mapped.load(Ordering::Relaxed)).sum();
        let index: u64 = shards.iter().map(|s| s.budget_fixed.load(Ordering::Relaxed)).sum();
        if self.id == 0 && !self.budget_warned {
            if let Some(w) = crate::state::budget::index_over_budget_warning(self.budget_bytes, index) {
                eprintln!("warning: {w}");
                self.budget_warned = true;
            }
        }
        if let Some(resident) = crate::sys::resident_file_bytes() {
            self.counters.resident_file_peak = self.counters.resident_file_peak.max(resident);
            let over = crate::state::budget::rows_over_budget(self.budget_bytes, resident, mapped, index);
            if over > 0 {
                // This shard's share of the excess, plus a margin (1/16 of the budget) so
                // that the next few batches do not cross the line again at once.
                let want = over / self.shards as u64 + self.budget_bytes / 16;
                self.join.release_resident(want);
            }
        }
    }

    fn observe(&mut self) {
        let rows = self.join.state_rows();
        let c = &mut self.counters;
        c.state_rows_peak[0] = c.state_rows_peak[0].max(rows[0]);
        c.state_rows_peak[1] = c.state_rows_peak[1].max(rows[1]);
        c.keys_peak = c.keys_peak.max(self.join.keys() as u64);
        if self.batches % BUDGET_EVERY_BATCHES == 0 {
            self.enforce_memory_budget();
        }
        if self.batches % PEAK_EVERY_BATCHES == 0 {
            let c = &mut self.counters;
            c.arena_files_peak = c.arena_files_peak.max(self.join.arena_files() as u64);
            let b = self.join.state_bytes();
            c.state_bytes_peak = c.state_bytes_peak.max(b[0] + b[1]);
            for (peak, now) in c.state_bytes_peak_side.iter_mut().zip(b) {
                *peak = (*peak).max(now);
            }
            let index_bytes = self.join.index_bytes();
            c.index_bytes_peak = c.index_bytes_peak.max(index_bytes);
            let p = &self.progress.shards[self.id as usize];
            p.state_bytes.store(b[0] + b[1], Ordering::Relaxed);
            p.index_bytes.store(index_bytes, Ordering::Relaxed);
            c.buckets_peak = c.buckets_peak.max(self.join.buckets() as u64);
        }
        let p = &self.progress.shards[self.id as usize];
        p.output_rows.store(self.sinks.output_rows, Ordering::Relaxed);
        p.state_rows[0].store(rows[0], Ordering::Relaxed);
        p.state_rows[1].store(rows[1], Ordering::Relaxed);
        p.watermark.store(self.wm.current(), Ordering::Relaxed);
    }
}

/// One opened partition group (a file, or a generator partition's two streams).
struct Slot {
    plan_index: u32,
    src: Box<dyn Source>,
    name: String,
    /// Clock of each side this source produces (`None` if it produces no such side).
    clocks: [Option<PartitionClock>; 2],
    done: bool,
}

/// Runs one shard to completion.
pub async fn run(ctx: ShardCtx) -> Result<ShardResult, ShardError> {
    let job = ctx.job.clone();
    let id = ctx.id;
    let shards = job.shards;
    let now_ns = {
        let start = ctx.start;
        move || start.elapsed().as_nanos() as u64
    };
    let mut slots = Vec::new();
    for (plan_index, spec) in &ctx.specs {
        let src = match source::open(spec, &job) {
            Ok(s) => s,
            Err(e) => {
                ctx.progress.abort.store(true, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        let mut clocks = [None, None];
        for (side, _) in src.partitions() {
            clocks[side.idx()] = Some(PartitionClock::new(job.max_out_of_orderness_ms, job.allowed_lateness_ms));
        }
        slots.push(Slot { plan_index: *plan_index, name: src.describe(), src, clocks, done: false });
    }

    let state_dir = job.state_dir.as_ref().map(|d| d.join(format!("shard-{id}")));
    if let Some(d) = &state_dir {
        if let Err(e) = crate::state::prepare_dir(d) {
            ctx.progress.abort.store(true, Ordering::Relaxed);
            return Err(e.into());
        }
    }
    let budget_bytes = if state_dir.is_some() { job.state_memory_mb.saturating_mul(1 << 20) } else { 0 };
    let core = Rc::new(RefCell::new(Core {
        id,
        shards,
        lateness_ms: job.allowed_lateness_ms,
        join: Join::with_state(
            JoinParams {
                kind: job.kind,
                lower_ms: job.lower_ms,
                upper_ms: job.upper_ms,
                allowed_lateness_ms: job.allowed_lateness_ms,
                bucket_ms: job.state_bucket_ms,
            },
            state_dir.as_deref(),
        ),
        sinks: ShardSinks::new(&job, id, ctx.checkpoint.as_ref().map(|c| c.restored + 1)),
        wm: ShardWatermark::new(shards as usize),
        counters: ShardCounters::default(),
        progress: ctx.progress.clone(),
        batches: 0,
        budget_bytes,
        budget_warned: false,
        error: None,
        ckpt: ctx.checkpoint.as_ref().map(|c| Ckpt {
            dir: c.dir.clone(),
            to_coordinator: c.to_coordinator.clone(),
            seen: vec![c.restored; shards as usize],
            closed: vec![false; shards as usize],
            taken: c.restored,
            in_flight: false,
            positions: None,
            finishing: false,
        }),
    }));

    if let Some(snap) = ctx.checkpoint.as_ref().and_then(|c| c.restore.as_ref()) {
        let dir = ctx.checkpoint.as_ref().unwrap().dir.clone();
        if let Err(e) = restore(&core, &mut slots, snap, &dir) {
            ctx.progress.abort.store(true, Ordering::Relaxed);
            return Err(e);
        }
    }

    // Receivers: one task per peer ring.
    let mut receivers = Vec::new();
    for (from, rx) in ctx.receivers {
        let core = core.clone();
        receivers.push(glommio::spawn_local(async move {
            let rx = repoll(rx.connect()).await;
            let mut got_done = false;
            while let Some(batch) = repoll(rx.recv()).await {
                got_done = batch.mark == Mark::Done;
                core.borrow_mut().on_batch(from, &batch, now_ns());
                if let Some(n) = batch.barrier {
                    if let Some(ck) = core.borrow_mut().ckpt.as_mut() {
                        ck.seen[from] = n;
                    }
                    try_capture(&core);
                    // Aligned barriers: nothing after barrier n from this peer joins before
                    // snapshot n is taken.
                    wait_captured(&core, n).await;
                }
                futures_lite::future::yield_now().await;
            }
            if let Some(ck) = core.borrow_mut().ckpt.as_mut() {
                ck.closed[from] = true;
            }
            try_capture(&core);
            got_done
        }));
    }
    let mut senders: Vec<Option<ConnectedSender<Batch>>> = Vec::with_capacity(ctx.senders.len());
    for s in ctx.senders {
        senders.push(match s {
            Some(s) => Some(repoll(s.connect()).await),
            None => None,
        });
    }

    let batch_events = job.batch_events as usize;
    let schemas: [Schema; 2] = [job.left.schema.clone(), job.right.schema.clone()];
    let mut out: Vec<Batch> = (0..shards).map(|_| Batch::with_capacity(batch_events)).collect();
    let mut last_mark: Vec<Option<Mark>> = vec![None; shards as usize];
    let mut key = Vec::with_capacity(64);
    let mut fatal: Option<ShardError> = None;
    let idle_timeout_ns = (job.idle_timeout_ms as u64).saturating_mul(1_000_000);
    let mut injected = ctx.checkpoint.as_ref().map_or(0, |c| c.restored);
    let mut stopped_at = None;

    // The source task runs inline in this (the shard's main) task.
    loop {
        if ctx.progress.abort.load(Ordering::Relaxed) {
            fatal.get_or_insert(ShardError::Aborted(id));
            break;
        }
        if let Some(e) = core.borrow_mut().error.take() {
            fatal = Some(e);
            break;
        }
        if let Some(ck) = &ctx.checkpoint {
            let in_flight = core.borrow().ckpt.as_ref().is_some_and(|c| c.in_flight);
            if ck.requested.load(Ordering::Acquire) > injected && !in_flight && !core.borrow().wm.all_done() {
                let n = injected + 1;
                injected = n;
                let t_inject = Instant::now();
                let mark = sender_mark(slots.iter().flat_map(|s| s.clocks.iter().flatten()));
                inject_barrier(id, n, &slots, mark, &mut senders, &core).await;
                wait_captured(&core, n).await;
                if std::env::var_os("WEFT_DEBUG_CHECKPOINTS").is_some() {
                    eprintln!("shard {id}: barrier {n} aligned and captured {:?} after injection", t_inject.elapsed());
                }
                if ck.stop_at.load(Ordering::Acquire) <= n {
                    stopped_at = Some(n);
                    break;
                }
            }
        }
        if slots.iter().all(|s| s.done) {
            if last_mark.iter().any(|m| *m != Some(Mark::Done)) {
                // A shard with no partition at all has not told anyone yet.
                flush(id, &mut out, &mut last_mark, Mark::Done, &mut senders, &core, now_ns()).await;
            }
            // Our sources are finished (Done was sent); stay to carry barriers until
            // every sender is finished too.
            if core.borrow().wm.all_done() {
                break;
            }
            glommio::timer::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let now = now_ns();
        let mut any_rows = false;
        let mut retry_ns = IDLE_SLEEP_NS_MAX;
        let mut all_done = true;
        for slot in slots.iter_mut().filter(|s| !s.done) {
            let mut c = core.borrow_mut();
            let c = &mut *c;
            let Slot { src, name, clocks, done, .. } = slot;
            let mut strict_err = None;
            let status = src.poll(batch_events, now, &mut |item| match item {
                SourceItem::Row { side, ts, row, intended_ns } => {
                    let s = side.idx();
                    c.counters.rows_in[s] += 1;
                    let clock = clocks[s].as_mut().expect("source emits only its own sides");
                    clock.last_row_ns = now;
                    if clock.observe(ts) {
                        c.counters.late[s] += 1;
                        c.sinks.late(side, RowView(row));
                        return;
                    }
                    let arrival = intended_ns.unwrap_or(now);
                    if encode_key(RowView(row), &schemas[s], &mut key) {
                        let hash = key_hash(&key);
                        out[shard_of(hash, shards) as usize].push(side, ts, hash, arrival, row, Some(&key));
                    } else {
                        out[id as usize].push(side, ts, 0, arrival, row, None);
                    }
                }
                SourceItem::Dead { side, line, reason, raw } => {
                    c.counters.dead[side.idx()] += 1;
                    c.sinks.dead(&schemas[side.idx()].name, name, line, &reason, raw);
                    if ctx.strict && strict_err.is_none() {
                        strict_err = Some(SourceError::Strict { path: name.clone(), line, reason });
                    }
                }
            });
            if let Some(e) = strict_err {
                fatal = Some(e.into());
                break;
            }
            match status {
                Err(e) => {
                    fatal = Some(e.into());
                    break;
                }
                Ok(PollStatus::Rows) => {
                    any_rows = true;
                    all_done = false;
                    for cl in clocks.iter_mut().flatten() {
                        cl.idle = false;
                    }
                }
                Ok(PollStatus::Idle { retry_ns: r }) => {
                    all_done = false;
                    retry_ns = retry_ns.min(r);
                    for cl in clocks.iter_mut().flatten() {
                        cl.idle = now.saturating_sub(cl.last_row_ns) >= idle_timeout_ns;
                    }
                }
                Ok(PollStatus::Done) => {
                    *done = true;
                    for cl in clocks.iter_mut().flatten() {
                        cl.done = true;
                    }
                }
            }
        }
        if fatal.is_some() {
            break;
        }
        let mark = sender_mark(slots.iter().flat_map(|s| s.clocks.iter().flatten()));
        debug_assert!(!all_done || mark == Mark::Done);
        flush(id, &mut out, &mut last_mark, mark, &mut senders, &core, now_ns()).await;
        if all_done {
            continue;
        }
        if any_rows {
            futures_lite::future::yield_now().await;
        } else {
            glommio::timer::sleep(Duration::from_nanos(retry_ns.clamp(IDLE_SLEEP_NS_MIN, IDLE_SLEEP_NS_MAX))).await;
        }
    }
    {
        let c = core.borrow();
        let p = &ctx.progress.shards[id as usize];
        p.rows_in.store(c.counters.rows_in[0] + c.counters.rows_in[1], Ordering::Relaxed);
    }
    if fatal.is_some() {
        ctx.progress.abort.store(true, Ordering::Relaxed);
    }
    if let Some(ck) = core.borrow_mut().ckpt.as_mut() {
        ck.finishing = true;
    }
    // Closing the rings tells every peer this shard has no more rows (after Done).
    drop(senders);

    let mut peers_complete = true;
    for r in receivers {
        peers_complete &= r.await;
    }
    // A snapshot copy may still be running: it holds the core.
    while core.borrow().ckpt.as_ref().is_some_and(|c| c.in_flight) {
        glommio::timer::sleep(Duration::from_micros(200)).await;
    }
    let mut c = match Rc::try_unwrap(core) {
        Ok(c) => c.into_inner(),
        Err(_) => unreachable!("every task holding the core has finished"),
    };
    if let Some(e) = fatal.or(c.error.take()) {
        return Err(e);
    }
    if ctx.progress.abort.load(Ordering::Relaxed) {
        return Err(ShardError::Aborted(id));
    }
    if let Some(n) = stopped_at {
        // Graceful stop: nothing after barrier n was read; the state is in checkpoint n.
        c.sinks.close()?;
        return Ok(ShardResult { counters: counters_now(&c), latency: c.sinks.latency, stopped_at: Some(n) });
    }
    if !peers_complete {
        return Err(ShardError::Aborted(id));
    }
    c.join.finish(&mut c.sinks)?;
    c.sinks.close()?;
    if let Some(ck) = &c.ckpt {
        let _ = ck.to_coordinator.send(CoordMsg::Finished { shard: id });
    }
    let counters = counters_now(&c);
    Ok(ShardResult { counters, latency: c.sinks.latency, stopped_at: None })
}

fn counters_now(c: &Core) -> ShardCounters {
    let stats = c.join.stats;
    let mut counters = c.counters.clone();
    counters.pairs = stats.pairs;
    counters.unmatched = stats.unmatched;
    counters.unmatched_emitted = c.sinks.unmatched_emitted;
    counters.output_rows = c.sinks.output_rows;
    counters.bytes_reclaimed = c.join.bytes_reclaimed();
    counters.cold_reads = c.join.cold_reads();
    counters
}

/// Records this shard's source positions for checkpoint `n` and sends barrier n to
/// every peer, after everything routed so far (the round's batches are flushed).
async fn inject_barrier(
    id: u32,
    n: u64,
    slots: &[Slot],
    mark: Mark,
    senders: &mut [Option<ConnectedSender<Batch>>],
    core: &Rc<RefCell<Core>>,
) {
    let positions = slots
        .iter()
        .map(|s| SourceState {
            plan_index: s.plan_index,
            name: s.name.clone(),
            position: s.src.position(),
            done: s.done,
            clocks: [0, 1].map(|i| s.clocks[i].as_ref().map(|c| ClockState { max_ts: c.max_ts(), done: c.done })),
        })
        .collect();
    if let Some(ck) = core.borrow_mut().ckpt.as_mut() {
        ck.positions = Some((n, positions));
        ck.seen[id as usize] = n;
    }
    for tx in senders.iter().flatten() {
        let mut b = Batch::with_capacity(0);
        b.mark = mark;
        b.barrier = Some(n);
        let _ = repoll(tx.send(b)).await;
    }
    try_capture(core);
}

/// Waits until snapshot `n` is captured (or the job is failing / finishing).
async fn wait_captured(core: &Rc<RefCell<Core>>, n: u64) {
    loop {
        {
            let c = core.borrow();
            let Some(ck) = &c.ckpt else { return };
            if ck.taken >= n || ck.finishing || c.error.is_some() || c.progress.abort.load(Ordering::Relaxed) {
                return;
            }
        }
        glommio::timer::sleep(Duration::from_micros(20)).await;
    }
}

/// Captures snapshot n if barrier n came from every sender, and starts its copies.
fn try_capture(core: &Rc<RefCell<Core>>) {
    let (snap, jobs, dir, n, pack) = {
        let mut guard = core.borrow_mut();
        let c = &mut *guard;
        let Some(ck) = c.ckpt.as_mut() else { return };
        let Some((n, _)) = &ck.positions else { return };
        let n = *n;
        if ck.taken >= n || ck.in_flight {
            return;
        }
        if !(0..ck.seen.len()).all(|s| ck.seen[s] >= n || ck.closed[s]) {
            return;
        }
        let (_, sources) = ck.positions.take().unwrap();
        let pack = format!("state/shard-{}/c{n}.pack", c.id);
        let copy::SnapshotPlan { copies: buckets, jobs } = c.join.plan_snapshot(&pack);
        let marks =
            c.wm.marks()
                .iter()
                .map(|m| match *m {
                    Mark::At(ts) => MarkState::At { ts },
                    Mark::Idle => MarkState::Idle,
                    Mark::Done => MarkState::Done,
                })
                .collect();
        let snap = ShardSnapshot {
            shard: c.id,
            watermark: c.wm.current(),
            marks,
            sources,
            buckets,
            base_buckets: c.join.state_bases(),
            counters: counters_now(c),
        };
        // Output of epoch n ends here; the coordinator commits it with checkpoint n.
        c.sinks.rotate(n + 1);
        let ck = c.ckpt.as_mut().unwrap();
        ck.taken = n;
        ck.in_flight = true;
        (snap, jobs, ck.dir.clone(), n, pack)
    };
    let core2 = core.clone();
    let debug_t0 = std::env::var_os("WEFT_DEBUG_CHECKPOINTS").map(|_| Instant::now());
    glommio::spawn_local(async move {
        let lens: Vec<usize> = jobs.iter().map(|j| j.len()).collect();
        let r = if jobs.is_empty() {
            Ok(Vec::new())
        } else {
            checkpoint::writer::write_pack(&dir.join(&pack), &lens, |i, off, dst| match &jobs[i] {
                CopyJob::Full { side, bucket, .. } => core2.borrow().join.copy_out(*side, *bucket, off, dst),
                CopyJob::Flips { data, .. } => {
                    dst.copy_from_slice(&data[off..off + dst.len()]);
                    true
                }
            })
            .await
        };
        if let Some(t0) = debug_t0 {
            eprintln!(
                "shard {}: snapshot {n}: {} segments ({} bytes) written in {:?}",
                snap.shard,
                jobs.len(),
                lens.iter().sum::<usize>(),
                t0.elapsed()
            );
        }
        let mut c = core2.borrow_mut();
        let mut snap = snap;
        let (done, failed) = match r {
            Ok(v) => (jobs.iter().zip(v).map(|(j, (off, crc))| j.written(off, crc)).collect::<Vec<_>>(), None),
            Err(e) => (Vec::new(), Some(e)),
        };
        copy::fill_in_all(&mut snap.buckets, &pack, &done);
        if let Err(e) = c.join.end_snapshot(&pack, &done, failed.is_some()) {
            c.error.get_or_insert(e.into());
        }
        let ck = c.ckpt.as_mut().unwrap();
        ck.in_flight = false;
        let msg = match failed {
            // A failed copy fails this checkpoint only; the previous one stays valid.
            Some(e) => CoordMsg::Failed { n, shard: snap.shard, error: e.to_string() },
            None => CoordMsg::Snapshot { n, snap: Box::new(snap) },
        };
        let _ = ck.to_coordinator.send(msg);
    })
    .detach();
}

/// Restores join state, watermarks, counters and source positions from a snapshot.
fn restore(
    core: &Rc<RefCell<Core>>,
    slots: &mut [Slot],
    snap: &ShardSnapshot,
    dir: &std::path::Path,
) -> Result<(), ShardError> {
    let mut c = core.borrow_mut();
    c.join.restore_bases(snap.base_buckets);
    for b in &snap.buckets {
        let (bytes, flips) = checkpoint::read_bucket(dir, b)?;
        c.join.restore_bucket(b, &bytes, &flips, &dir.join(&b.file))?;
    }
    let marks: Vec<Mark> = snap
        .marks
        .iter()
        .map(|m| match *m {
            MarkState::At { ts } => Mark::At(ts),
            MarkState::Idle => Mark::Idle,
            MarkState::Done => Mark::Done,
        })
        .collect();
    c.wm.restore(&marks, snap.watermark);
    let k = &snap.counters;
    c.counters = k.clone();
    c.join.stats.pairs = k.pairs;
    c.join.stats.unmatched = k.unmatched;
    c.sinks.output_rows = k.output_rows;
    c.sinks.unmatched_emitted = k.unmatched_emitted;
    drop(c);
    for slot in slots.iter_mut() {
        let Some(st) = snap.sources.iter().find(|s| s.plan_index == slot.plan_index) else {
            return Err(checkpoint::CheckpointError::Invalid {
                path: dir.to_path_buf(),
                reason: format!("shard {} has no position for partition {}", snap.shard, slot.name),
            }
            .into());
        };
        slot.src.seek(&st.position)?;
        slot.done = st.done;
        for i in 0..2 {
            if let (Some(cl), Some(saved)) = (slot.clocks[i].as_mut(), st.clocks[i].as_ref()) {
                cl.restore(saved.max_ts, saved.done);
            }
        }
    }
    Ok(())
}

/// Sends every destination its batch (and the new mark), joining our own in place.
async fn flush(
    id: u32,
    out: &mut [Batch],
    last_mark: &mut [Option<Mark>],
    mark: Mark,
    senders: &mut [Option<ConnectedSender<Batch>>],
    core: &Rc<RefCell<Core>>,
    now_ns: u64,
) {
    for d in 0..out.len() {
        if out[d].is_empty() && last_mark[d] == Some(mark) {
            continue;
        }
        last_mark[d] = Some(mark);
        out[d].mark = mark;
        if d == id as usize {
            core.borrow_mut().on_batch(d, &out[d], now_ns);
            out[d].clear();
        } else if let Some(tx) = &senders[d] {
            let cap = out[d].events.capacity();
            let batch = std::mem::replace(&mut out[d], Batch::with_capacity(cap));
            // Waits while the ring is full; our receiver tasks keep draining meanwhile.
            if repoll(tx.send(batch)).await.is_err() {
                // The peer is gone (it failed); the abort flag stops us next round.
            }
        }
    }
    let c = core.borrow();
    let p = &c.progress.shards[id as usize];
    p.rows_in.store(c.counters.rows_in[0] + c.counters.rows_in[1], Ordering::Relaxed);
}

/// Awaits `f`, polling it again every millisecond even without a wake-up: glommio's
/// shared-channel `connect` sometimes loses the wake-up from the peer's connect (about
/// 7% of 2-shard starts hung), so every wait on a ring goes through this as a guard.
async fn repoll<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    // The common case (data there, room in the ring) costs no timer.
    if let Some(v) = futures_lite::future::poll_once(&mut f).await {
        return v;
    }
    loop {
        let tick = async {
            glommio::timer::sleep(Duration::from_millis(1)).await;
            None
        };
        if let Some(v) = futures_lite::future::or(async { Some((&mut f).await) }, tick).await {
            return v;
        }
    }
}
