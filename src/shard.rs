//! The per-core shard: one glommio executor pinned to one CPU, owning a disjoint set
//! of keys (by [`crate::router::shard_of`]) and a share of the source partitions.
//!
//! Tasks on the shard's executor (single-threaded, cooperative; no locks):
//! - the *source task* polls this shard's partitions, decides lateness per partition,
//!   and routes each row into a batch per destination shard ([`Outbox::route`]);
//!   batches for itself are joined in place, the others go over the rings;
//! - one *receiver task* per peer ring joins the batches that peer sends.
//!
//! Both share the [`Core`] (join operator, sinks, watermark) through a `RefCell` that is
//! never held across an `.await`. Every task yields after each batch, so a busy peer
//! cannot starve the local source, and a waiting `send` (full ring) lets the
//! receivers drain: two shards can never deadlock on each other's full rings.
//!
//! Checkpoints (when `engine.checkpoint_dir` is set) are driven by
//! `checkpoint/barrier.rs`: the source task makes one call per round
//! ([`barrier::on_round`]), a receiver one per barrier it gets ([`barrier::align`]);
//! the core lends its parts through [`barrier::Host`].
//!
//! `run` in steps: open the partitions and build the core (restoring a snapshot),
//! spawn the receivers, connect the outbox, run the source loop, finish.
//!
//! Invariant: a shard only ever joins rows whose key it owns (`debug_assert`ed on
//! receipt; rows with a NULL key never match and stay on the shard that read them).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel::SharedReceiver;
use hdrhistogram::Histogram;

use crate::checkpoint::barrier::{
    self, CheckpointCtx, Host, Partition, Parts, RestoreError, RestoreFrom, ShardCheckpoint,
};
use crate::checkpoint::{self, redistribute, SourceState};
use crate::config::Job;
use crate::event::RowView;
use crate::exchange::{self, connect_guarded, Batch, Outbox, Rings};
use crate::join::{Join, JoinParams};
use crate::metrics::live::{Live, PartitionLive, ShardLive, PUBLISH_EVERY};
use crate::metrics::{Progress, ShardCounters};
use crate::router::shard_of;
use crate::schema::Schema;
use crate::sink::{ShardSinks, SinkError};
use crate::source::{self, PartitionSpec, PollStatus, Source, SourceError, SourceItem};
use crate::state::arena::StateError;
use crate::watermark::{sender_mark, Mark, PartitionClock, ShardWatermark};

/// Longest a shard sleeps when none of its sources has rows.
const IDLE_SLEEP_NS_MAX: u64 = 1_000_000;
/// Shortest such sleep: a rate-limited source that is a few microseconds early waits
/// this long, so that rows go out in batches instead of one wake-up per row (a full
/// core of polling at 100k events/s otherwise; perf/bench-notes.md). Adds at most this
/// much latency.
const IDLE_SLEEP_NS_MIN: u64 = 100_000;
/// How long a shard whose sources are all done sleeps between checks that every
/// sender is done too (it stays to carry barriers meanwhile).
const DRAIN_SLEEP_US: u64 = 500;
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
    State(#[from] StateError),
    #[error("shard {0} stopped because another shard failed")]
    Aborted(u32),
    /// A re-distributing restore stopped because another shard's restore failed.
    #[error("{0}")]
    PeerRestore(String),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
}

impl From<RestoreError> for ShardError {
    fn from(e: RestoreError) -> ShardError {
        match e {
            RestoreError::Checkpoint(e) => e.into(),
            RestoreError::State(e) => e.into(),
            RestoreError::Source(e) => e.into(),
            RestoreError::Peer(why) => ShardError::PeerRestore(why),
        }
    }
}

/// Everything a shard needs, moved into its executor.
pub struct ShardCtx {
    pub id: u32,
    pub job: Arc<Job>,
    /// (index in the job's partition plan, partition).
    pub specs: Vec<(u32, PartitionSpec)>,
    /// This shard's ends of the rings.
    pub rings: Rings,
    pub progress: Arc<Progress>,
    pub start: Instant,
    pub strict: bool,
    pub checkpoint: Option<CheckpointCtx>,
    /// Where the metrics endpoint reads this shard's figures (`None`: no endpoint).
    pub live: Option<Arc<Live>>,
}

pub struct ShardResult {
    pub counters: ShardCounters,
    pub latency: Histogram<u64>,
    /// Stopped at a checkpoint (graceful shutdown) instead of running to the end.
    pub stopped_at: Option<u64>,
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
    ckpt: Option<ShardCheckpoint>,
    /// Of `counters.late`: rows that arrived here behind the watermark.
    late_behind_watermark: [u64; 2],
    /// Events joined here (routed to this shard), and the executor's task time, since start.
    events: u64,
    busy_ns: u64,
    /// When the next publish to the metrics endpoint is due (ns since start).
    next_publish_ns: u64,
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
                self.late_behind_watermark[e.side.idx()] += 1;
                self.sinks.late(e.side, RowView(row));
                continue;
            }
            if let Err(err) = self.join.on_row(e.side, e.ts, e.hash, key, row, e.arrival_ns, &mut self.sinks) {
                self.error.get_or_insert(err.into());
                return;
            }
        }
        self.events += b.events.len() as u64;
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
                tracing::warn!(budget_bytes = self.budget_bytes, index_bytes = index, "{w}");
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

impl Core {
    /// Opens the shard's state and sinks (resuming output at the epoch after `restored`).
    fn new(ctx: &ShardCtx) -> Result<Core, ShardError> {
        let job = &ctx.job;
        let state_dir = job.state_dir.as_ref().map(|d| d.join(format!("shard-{}", ctx.id)));
        if let Some(d) = &state_dir {
            crate::state::prepare_dir(d)?;
        }
        let budget_bytes = if state_dir.is_some() { job.state_memory_mb.saturating_mul(1 << 20) } else { 0 };
        let params = JoinParams {
            kind: job.kind,
            lower_ms: job.lower_ms,
            upper_ms: job.upper_ms,
            allowed_lateness_ms: job.allowed_lateness_ms,
            bucket_ms: job.state_bucket_ms,
        };
        Ok(Core {
            id: ctx.id,
            shards: job.shards,
            lateness_ms: job.allowed_lateness_ms,
            join: Join::with_state(params, state_dir.as_deref()),
            sinks: ShardSinks::new(job, ctx.id, ctx.checkpoint.as_ref().map(|c| c.restored + 1)),
            wm: ShardWatermark::new(job.shards as usize),
            counters: ShardCounters::default(),
            progress: ctx.progress.clone(),
            batches: 0,
            budget_bytes,
            budget_warned: false,
            error: None,
            ckpt: ctx.checkpoint.as_ref().map(|c| ShardCheckpoint::new(c, job.shards as usize)),
            late_behind_watermark: [0; 2],
            events: 0,
            busy_ns: 0,
            next_publish_ns: 0,
        })
    }

    /// The counters as reported (and as a snapshot records them).
    fn counters_now(&self) -> ShardCounters {
        let stats = self.join.stats;
        let mut counters = self.counters.clone();
        counters.pairs = stats.pairs;
        counters.unmatched = stats.unmatched;
        counters.unmatched_emitted = self.sinks.unmatched_emitted;
        counters.output_rows = self.sinks.output_rows;
        counters.bytes_reclaimed = self.join.bytes_reclaimed();
        counters.cold_reads = self.join.cold_reads();
        counters
    }

    fn publish_rows_in(&self) {
        let p = &self.progress.shards[self.id as usize];
        p.rows_in.store(self.counters.rows_in[0] + self.counters.rows_in[1], Ordering::Relaxed);
    }
}

impl Core {
    /// Publishes this shard's figures to the metrics endpoint every
    /// `live::PUBLISH_EVERY`, unless a scrape is reading them (then next round).
    fn publish_if_due(&mut self, live: &Live, partitions: &[OpenPartition], blocked_ns: u64, now_ns: u64) {
        if now_ns < self.next_publish_ns {
            return;
        }
        self.busy_ns += glommio::executor().executor_stats().executor_runtime().as_nanos() as u64;
        if live.try_publish(self.id as usize, |s| self.fill_live(s, partitions, blocked_ns)) {
            self.next_publish_ns = now_ns + PUBLISH_EVERY.as_nanos() as u64;
        }
    }

    /// Everything the endpoint shows of this shard, from counters it keeps anyway.
    fn fill_live(&self, s: &mut ShardLive, partitions: &[OpenPartition], blocked_ns: u64) {
        s.counters = self.counters_now();
        s.late_behind_watermark = self.late_behind_watermark;
        s.events = self.events;
        s.busy_ns = self.busy_ns;
        s.blocked_ns = blocked_ns;
        s.watermark_ms = self.wm.current();
        s.state_rows = self.join.state_rows();
        s.state_bytes = self.join.state_bytes();
        s.keys = self.join.keys() as u64;
        s.index_bytes = self.join.index_bytes();
        s.partitions.clear();
        for p in partitions {
            for (side, clock) in p.clocks.iter().enumerate() {
                let Some(clock) = clock else { continue };
                s.partitions.push(PartitionLive {
                    side,
                    name: p.name.clone(),
                    rows: p.rows[side],
                    late: p.late[side],
                    dead: p.dead[side],
                    watermark_ms: clock.max_ts().map(|_| clock.watermark()),
                    idle: clock.idle,
                    done: clock.done,
                });
            }
        }
        match s.latency.as_mut() {
            Some(h) => h.clone_from(&self.sinks.latency),
            None => s.latency = Some(self.sinks.latency.clone()),
        }
    }
}

impl Host for Core {
    fn parts(&mut self) -> Option<Parts<'_>> {
        Some(Parts {
            shard: self.id,
            ckpt: self.ckpt.as_mut()?,
            join: &mut self.join,
            wm: &mut self.wm,
            sinks: &mut self.sinks,
            counters: &mut self.counters,
        })
    }

    fn checkpoint(&self) -> Option<&ShardCheckpoint> {
        self.ckpt.as_ref()
    }

    fn join(&self) -> &Join {
        &self.join
    }

    fn counters(&self) -> ShardCounters {
        self.counters_now()
    }

    fn failing(&self) -> bool {
        self.error.is_some() || self.progress.abort.load(Ordering::Relaxed)
    }

    fn fail(&mut self, e: StateError) {
        self.error.get_or_insert(e.into());
    }
}

/// One opened partition group (a file, or a generator partition's two streams).
struct OpenPartition {
    plan_index: u32,
    src: Box<dyn Source>,
    name: String,
    /// Clock of each side this source produces (`None` if it produces no such side).
    clocks: [Option<PartitionClock>; 2],
    done: bool,
    /// Rows read, late and dead per side, since start (for the metrics endpoint).
    rows: [u64; 2],
    late: [u64; 2],
    dead: [u64; 2],
}

impl OpenPartition {
    fn open(plan_index: u32, spec: &PartitionSpec, job: &Job, shard: u32) -> Result<OpenPartition, SourceError> {
        let src = source::open_on(spec, job, shard, job.shards)?;
        let mut clocks = [None, None];
        for (side, _) in src.partitions() {
            clocks[side.idx()] = Some(PartitionClock::new(job.max_out_of_orderness_ms, job.allowed_lateness_ms));
        }
        Ok(OpenPartition {
            plan_index,
            name: src.describe(),
            src,
            clocks,
            done: false,
            rows: [0; 2],
            late: [0; 2],
            dead: [0; 2],
        })
    }

    /// Updates the clocks (and what the round found) after a poll.
    fn after_poll(&mut self, status: PollStatus, now: u64, idle_timeout_ns: u64, round: &mut Round) {
        match status {
            PollStatus::Rows => {
                round.any_rows = true;
                round.all_done = false;
                for cl in self.clocks.iter_mut().flatten() {
                    cl.idle = false;
                }
            }
            PollStatus::Idle { retry_ns } => {
                round.all_done = false;
                round.retry_ns = round.retry_ns.min(retry_ns);
                for cl in self.clocks.iter_mut().flatten() {
                    cl.idle = now.saturating_sub(cl.last_row_ns) >= idle_timeout_ns;
                }
            }
            PollStatus::Waiting { retry_ns } => {
                // Waiting on another shard in the same file: never idle for it.
                round.all_done = false;
                round.retry_ns = round.retry_ns.min(retry_ns);
            }
            PollStatus::Done => {
                self.done = true;
                for cl in self.clocks.iter_mut().flatten() {
                    cl.done = true;
                }
            }
        }
    }
}

impl Partition for OpenPartition {
    fn plan_index(&self) -> u32 {
        self.plan_index
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn record(&self) -> SourceState {
        SourceState::of(self.plan_index, &self.name, &*self.src, self.done, &self.clocks)
    }

    fn seek_to(&mut self, st: &SourceState) -> Result<(), SourceError> {
        st.apply(&mut *self.src, &mut self.done, &mut self.clocks)
    }

    fn seek_merged(&mut self, sts: &[&SourceState]) -> Result<(), SourceError> {
        SourceState::apply_merged(sts, &mut *self.src, &mut self.done, &mut self.clocks)
    }
}

/// The mark this shard sends: the minimum over its partitions' clocks.
fn mark_of(partitions: &[OpenPartition]) -> Mark {
    sender_mark(partitions.iter().flat_map(|p| p.clocks.iter().flatten()))
}

/// Runs one shard to completion.
pub async fn run(mut ctx: ShardCtx) -> Result<ShardResult, ShardError> {
    let (core, mut partitions) = match open(&mut ctx) {
        Ok(v) => v,
        Err(e) => {
            ctx.progress.abort.store(true, Ordering::Relaxed);
            return Err(e);
        }
    };
    let receivers = spawn_receivers(&core, std::mem::take(&mut ctx.rings.receivers), ctx.start, &ctx.live);
    let senders = std::mem::take(&mut ctx.rings.senders);
    let mut outbox = Outbox::connect(ctx.id, senders, ctx.job.batch_events as usize, ctx.live.clone()).await;
    let end = source_loop(&ctx, &core, &mut partitions, &mut outbox).await;
    core.borrow().publish_rows_in();
    let blocked_ns = outbox.blocked_ns;
    if end.fatal.is_some() {
        ctx.progress.abort.store(true, Ordering::Relaxed);
    }
    barrier::finishing(&mut *core.borrow_mut());
    // Closing the rings tells every peer this shard has no more rows (after Done).
    drop(outbox);
    let mut peers_complete = true;
    for r in receivers {
        peers_complete &= r.await;
    }
    barrier::wait_copies(&core).await;
    let core = match Rc::try_unwrap(core) {
        Ok(c) => c.into_inner(),
        Err(_) => unreachable!("every task holding the core has finished"),
    };
    let live = ctx.live.clone();
    if let Some(l) = &live {
        l.publish_final(ctx.id as usize, |s| core.fill_live(s, &partitions, blocked_ns));
    }
    let res = finish(&ctx, core, end, peers_complete, &partitions);
    if let (Some(l), Ok(r)) = (&live, &res) {
        // The report's figures, from the same counters: the endpoint agrees with it.
        l.publish_final(ctx.id as usize, |s| {
            s.counters = r.counters.clone();
            s.latency = Some(r.latency.clone());
        });
    }
    res
}

/// Opens the partitions and the core, and restores the snapshot to resume from.
fn open(ctx: &mut ShardCtx) -> Result<(Rc<RefCell<Core>>, Vec<OpenPartition>), ShardError> {
    let mut partitions = Vec::with_capacity(ctx.specs.len());
    for (plan_index, spec) in &ctx.specs {
        partitions.push(OpenPartition::open(*plan_index, spec, &ctx.job, ctx.id)?);
    }
    let mut core = Core::new(ctx)?;
    if let Some(ck) = ctx.checkpoint.as_mut() {
        let (t0, cpu0) = (Instant::now(), crate::sys::thread_cpu_s());
        let how = match ck.restore.take() {
            None => None,
            Some(RestoreFrom::Own(snap)) => {
                barrier::restore(&mut core, &mut partitions, &snap, &ck.dir)?;
                Some("own")
            }
            Some(RestoreFrom::Redistribute(from)) => {
                redistribute::restore_redistributed(
                    &mut core,
                    &mut partitions,
                    *from,
                    &ck.dir,
                    ctx.job.shards,
                    ctx.job.max_out_of_orderness_ms,
                )?;
                Some("redistributed")
            }
        };
        if let Some(how) = how {
            let (ms, at_ms) = (t0.elapsed().as_secs_f64() * 1e3, ctx.start.elapsed().as_secs_f64() * 1e3);
            let cpu_ms = (crate::sys::thread_cpu_s() - cpu0) * 1e3;
            tracing::info!(
                shard = ctx.id,
                how,
                elapsed_ms = ms,
                cpu_ms,
                at_ms,
                "shard {} restored ({how}) in {ms:.1} ms ({cpu_ms:.1} ms of its thread's CPU)",
                ctx.id
            );
        }
    }
    Ok((Rc::new(RefCell::new(core)), partitions))
}

/// One receiver task per peer ring; each returns whether its peer sent `Mark::Done`.
fn spawn_receivers(
    core: &Rc<RefCell<Core>>,
    receivers: Vec<(usize, SharedReceiver<Batch>)>,
    start: Instant,
    live: &Option<Arc<Live>>,
) -> Vec<glommio::Task<bool>> {
    receivers
        .into_iter()
        .map(|(from, rx)| glommio::spawn_local(receive(core.clone(), from, rx, start, live.clone())))
        .collect()
}

/// Joins what peer `from` sends until its ring closes.
async fn receive(
    core: Rc<RefCell<Core>>,
    from: usize,
    rx: SharedReceiver<Batch>,
    start: Instant,
    live: Option<Arc<Live>>,
) -> bool {
    let rx = connect_guarded(rx.connect()).await;
    let me = core.borrow().id as usize;
    let mut got_done = false;
    let mut received = 0u64;
    while let Some(batch) = exchange::recv(&rx).await {
        received += 1;
        if let Some(l) = &live {
            l.ring(from, me).received.store(received, Ordering::Relaxed);
        }
        got_done = batch.mark == Mark::Done;
        core.borrow_mut().on_batch(from, &batch, start.elapsed().as_nanos() as u64);
        if let Some(n) = batch.barrier {
            barrier::align(&core, from, n).await;
        }
        futures_lite::future::yield_now().await;
    }
    barrier::on_closed(&core, from);
    got_done
}

/// How the source loop ended.
struct SourceEnd {
    fatal: Option<ShardError>,
    /// Stopped at this checkpoint (graceful shutdown).
    stopped_at: Option<u64>,
}

/// What one round of polls found.
struct Round {
    any_rows: bool,
    all_done: bool,
    /// Soonest a rate-limited source has rows again.
    retry_ns: u64,
}

/// What the row path reads, fixed for the run.
struct Reader {
    batch_events: usize,
    schemas: [Schema; 2],
    idle_timeout_ns: u64,
    strict: bool,
}

/// The source task, inline in the shard's main task: polls the partitions round after
/// round until they and every sender are done, a checkpoint stops the job, or it fails.
async fn source_loop(
    ctx: &ShardCtx,
    core: &Rc<RefCell<Core>>,
    partitions: &mut [OpenPartition],
    outbox: &mut Outbox,
) -> SourceEnd {
    let job = &ctx.job;
    let rd = Reader {
        batch_events: job.batch_events as usize,
        schemas: [job.left.schema.clone(), job.right.schema.clone()],
        idle_timeout_ns: (job.idle_timeout_ms as u64).saturating_mul(1_000_000),
        strict: ctx.strict,
    };
    let now_ns = || ctx.start.elapsed().as_nanos() as u64;
    let end = |fatal, stopped_at| SourceEnd { fatal, stopped_at };
    loop {
        if let Some(l) = &ctx.live {
            core.borrow_mut().publish_if_due(l, partitions, outbox.blocked_ns, now_ns());
        }
        if ctx.progress.abort.load(Ordering::Relaxed) {
            return end(Some(ShardError::Aborted(ctx.id)), None);
        }
        if let Some(e) = core.borrow_mut().error.take() {
            return end(Some(e), None);
        }
        if let Some(n) = barrier::on_round(core, outbox, partitions, || mark_of(partitions)).await {
            // Stop at n, unless all input was in at barrier n (every sender's mark before
            // it was Done). Every shard decides alike, since each sender sends the same
            // marks and barrier on all rings: either all stop at n, or all run to the
            // end. (Stopping here then would mix with shards that already finished
            // without snapshot n: checkpoint n could never complete.)
            if !core.borrow().wm.all_done() {
                return end(None, Some(n));
            }
        }
        if partitions.iter().all(|p| p.done) {
            if !outbox.told_done() {
                // A shard with no partition at all has not told anyone yet.
                flush(core, outbox, Mark::Done, now_ns()).await;
            }
            // Our sources are finished (Done was sent); stay to carry barriers until
            // every sender is finished too.
            if core.borrow().wm.all_done() {
                return end(None, None);
            }
            glommio::timer::sleep(Duration::from_micros(DRAIN_SLEEP_US)).await;
            continue;
        }
        let round = match poll_partitions(core, partitions, outbox, &rd, now_ns()) {
            Ok(r) => r,
            Err(e) => return end(Some(e), None),
        };
        let mark = mark_of(partitions);
        debug_assert!(!round.all_done || mark == Mark::Done);
        flush(core, outbox, mark, now_ns()).await;
        if round.all_done {
            continue;
        }
        if round.any_rows {
            futures_lite::future::yield_now().await;
        } else {
            let sleep_ns = round.retry_ns.clamp(IDLE_SLEEP_NS_MIN, IDLE_SLEEP_NS_MAX);
            glommio::timer::sleep(Duration::from_nanos(sleep_ns)).await;
        }
    }
}

/// Polls every live partition once, routing its rows into the outbox.
fn poll_partitions(
    core: &RefCell<Core>,
    partitions: &mut [OpenPartition],
    outbox: &mut Outbox,
    rd: &Reader,
    now: u64,
) -> Result<Round, ShardError> {
    let mut round = Round { any_rows: false, all_done: true, retry_ns: IDLE_SLEEP_NS_MAX };
    for part in partitions.iter_mut().filter(|p| !p.done) {
        let status = poll_one(&mut core.borrow_mut(), part, outbox, rd, now)?;
        part.after_poll(status, now, rd.idle_timeout_ns, &mut round);
    }
    Ok(round)
}

/// One poll of one partition: per row, lateness against the partition's clock, then
/// routing. The per-event path: no allocation, no borrow taken per row.
fn poll_one(
    c: &mut Core,
    part: &mut OpenPartition,
    outbox: &mut Outbox,
    rd: &Reader,
    now: u64,
) -> Result<PollStatus, ShardError> {
    let OpenPartition { src, name, clocks, rows, late, dead, .. } = part;
    let mut strict_err = None;
    let status = src.poll(rd.batch_events, now, &mut |item| match item {
        SourceItem::Row { side, ts, row, intended_ns, extra } => {
            let s = side.idx();
            c.counters.rows_in[s] += 1;
            c.counters.extra_fields[s] += u64::from(extra);
            rows[s] += 1;
            let clock = clocks[s].as_mut().expect("source emits only its own sides");
            clock.last_row_ns = now;
            if clock.observe(ts) {
                c.counters.late[s] += 1;
                late[s] += 1;
                c.sinks.late(side, RowView(row));
                return;
            }
            outbox.route(side, ts, intended_ns.unwrap_or(now), row, &rd.schemas[s]);
        }
        SourceItem::Resume { side, max_ts } => {
            if let Some(clock) = clocks[side.idx()].as_mut() {
                clock.raise(max_ts);
            }
        }
        SourceItem::Dead { side, line, reason, raw } => {
            c.counters.dead[side.idx()] += 1;
            dead[side.idx()] += 1;
            c.sinks.dead(&rd.schemas[side.idx()].name, name, line, &reason, raw);
            if rd.strict && strict_err.is_none() {
                strict_err = Some(SourceError::Strict { path: name.clone(), line, reason });
            }
        }
    });
    if let Some(e) = strict_err {
        return Err(e.into());
    }
    Ok(status?)
}

/// Sends every destination its batch (and the new mark), joining our own in place.
async fn flush(core: &Rc<RefCell<Core>>, outbox: &mut Outbox, mark: Mark, now_ns: u64) {
    outbox.flush(mark, |d, b| core.borrow_mut().on_batch(d, b, now_ns)).await;
    core.borrow().publish_rows_in();
}

/// The shard's end: the first error, a graceful stop at a checkpoint, or the end of
/// the input (unmatched rows emitted, sinks closed, the coordinator told).
fn finish(
    ctx: &ShardCtx,
    mut c: Core,
    end: SourceEnd,
    peers_complete: bool,
    partitions: &[OpenPartition],
) -> Result<ShardResult, ShardError> {
    if let Some(e) = end.fatal.or(c.error.take()) {
        return Err(e);
    }
    if ctx.progress.abort.load(Ordering::Relaxed) {
        return Err(ShardError::Aborted(ctx.id));
    }
    if let Some(n) = end.stopped_at {
        // Graceful stop: nothing after barrier n was read; the state is in checkpoint n.
        c.sinks.close()?;
        return Ok(ShardResult { counters: c.counters_now(), latency: c.sinks.latency, stopped_at: Some(n) });
    }
    if !peers_complete {
        return Err(ShardError::Aborted(ctx.id));
    }
    c.join.finish(&mut c.sinks)?;
    c.sinks.close()?;
    if let Some(ck) = &c.ckpt {
        ck.finished(ctx.id, partitions.iter().map(|p| (p.plan_index, p.src.position())).collect());
    }
    let counters = c.counters_now();
    Ok(ShardResult { counters, latency: c.sinks.latency, stopped_at: None })
}
