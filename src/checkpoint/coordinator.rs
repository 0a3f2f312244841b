//! The engine side of checkpointing: where a job starts ([`plan`]), and the
//! [`Coordinator`] that asks for checkpoints and completes them while the job runs.
//!
//! Start rules: newest manifest first; a manifest that does not parse, or whose files are
//! missing, short or fail their checksum, is reported as a warning and the previous
//! one is tried. If manifests exist but none is valid, the job does not start (it
//! would otherwise begin again over output that was already committed). A checkpoint
//! of a different job shape (join kind, bounds, partitions, output format) is an error, as
//! is a schema change that `evolve` finds incompatible; another shard count or routing
//! re-distributes the state, a compatible schema change migrates it.
//!
//! The coordinator runs on the engine's calling thread, never on a shard: it asks for
//! checkpoint n+1 every `engine.checkpoint_interval_ms` when none is under way, asks
//! for a last one (and a stop at it) on SIGINT/SIGTERM, and when every shard's snapshot
//! n is durable writes manifest n, then commits output epochs <= n. A failed checkpoint
//! is only a warning: the previous one stays the one to restore.
//! It never blocks on a shard: it polls its channel (`try_recv`) once per watch tick.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::barrier::CheckpointCtx;
use crate::checkpoint::barrier::RestoreFrom;
use crate::checkpoint::{self, CheckpointError, CoordMsg, JobShape, Manifest, SchemaChange, ShardSnapshot};
use crate::config::{CheckpointSettings, Job, OutputTarget};
use crate::metrics::live::CheckpointLive;
use crate::sink::kafka::Publisher;
use crate::sink::layout;

pub enum Start {
    /// No checkpoint: a new run.
    Fresh,
    /// Resume from this checkpoint, its stored rows carried into the job's schemas as
    /// `change` says.
    Resume(Box<Manifest>, Box<SchemaChange>),
    /// The job already ran to the end (its final checkpoint says so).
    Finished(u64),
}

/// Decides how the job starts; `warn` receives one line per unusable checkpoint.
pub fn plan(job: &Job, dir: &Path, mut warn: impl FnMut(String)) -> Result<Start, CheckpointError> {
    let all = checkpoint::list(dir)?;
    if all.is_empty() {
        return Ok(Start::Fresh);
    }
    let shape = JobShape::of(job);
    for n in &all {
        match checkpoint::verify(dir, *n) {
            Ok(m) => {
                let path = checkpoint::manifest_path(dir, *n);
                if let Some(why) = m.job.mismatch(&shape) {
                    return Err(CheckpointError::Mismatch { path, reason: why });
                }
                if m.finished {
                    return Ok(Start::Finished(*n));
                }
                let change = m
                    .job
                    .schema_change(job)
                    .map_err(|error| CheckpointError::Schema { path, error: Box::new(error) })?;
                return Ok(Start::Resume(Box::new(m), Box::new(change)));
            }
            Err(e) => warn(format!("checkpoint {n} is unusable, trying an older one: {e}")),
        }
    }
    Err(CheckpointError::Invalid {
        path: dir.to_path_buf(),
        reason: format!(
            "none of the {} checkpoints is valid (see the warnings); refusing to start afresh over their output. \
             Remove the directory (and the output) to run the job from the beginning",
            all.len()
        ),
    })
}

/// Prepares the output for resuming from checkpoint `n`: later epochs are discarded,
/// epochs up to `n` committed.
pub fn reset_output(job: &Job, n: u64) -> Result<(), CheckpointError> {
    if let Some(d) = job.output.files_dir() {
        layout::reset_output(d, n)?;
    }
    Ok(())
}

/// A fresh start under checkpointing: bucket copies left by a run that never
/// completed a checkpoint are not state of this run.
pub fn clear_orphans(dir: &Path) -> Result<(), CheckpointError> {
    let state = dir.join("state");
    match std::fs::remove_dir_all(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(checkpoint::io(&state, "remove orphaned state")(e)),
    }
}

/// The checkpoint coordinator of one run.
pub struct Coordinator {
    dir: PathBuf,
    interval: Duration,
    retained: u32,
    shape: JobShape,
    output: OutputTarget,
    shards: usize,
    debug: bool,
    last_request: Instant,
    /// Raised to ask the shards for checkpoint n.
    requested: Arc<AtomicU64>,
    /// The checkpoint to stop at (u64::MAX = none).
    stop_at: Arc<AtomicU64>,
    stop_sent: bool,
    rx: Receiver<CoordMsg>,
    /// Cloned into each shard's context; dropped once every shard has its clone.
    tx: Option<Sender<CoordMsg>>,
    /// Snapshots received per checkpoint, until every shard's is in.
    pending: BTreeMap<u64, Vec<ShardSnapshot>>,
    /// Checkpoints that failed, with the first cause (said again if it was the last).
    failed: BTreeMap<u64, String>,
    /// Newest complete checkpoint.
    completed: u64,
    finished: usize,
    /// This process's checkpoints, for the metrics endpoint.
    stats: CheckpointLive,
    /// Commits the Kafka offsets of each completed checkpoint to the inputs' groups.
    groups: Option<crate::source::kafka::GroupCommitter>,
    /// The Kafka sink: woken after each commit to publish the committed epochs.
    publisher: Option<Publisher>,
    /// Where the shards' sources ended (a run to the end), by plan index.
    final_positions: Vec<(u32, crate::source::SourcePos)>,
}

impl Coordinator {
    /// For a run of `job` that starts after checkpoint `restored` (0: fresh), whose
    /// inputs' schemas have `schema_versions` (see [`SchemaChange::versions`]).
    pub fn new(
        job: &Job,
        ck: &CheckpointSettings,
        restored: u64,
        schema_versions: [u32; 2],
        debug: bool,
        publisher: Option<Publisher>,
    ) -> Coordinator {
        let (tx, rx) = std::sync::mpsc::channel::<CoordMsg>();
        let mut shape = JobShape::of(job);
        shape.schema_versions = schema_versions;
        Coordinator {
            dir: ck.dir.clone(),
            interval: Duration::from_millis(ck.interval_ms),
            retained: ck.retained,
            shape,
            output: job.output.clone(),
            shards: job.shards as usize,
            debug,
            last_request: Instant::now(),
            requested: Arc::new(AtomicU64::new(restored)),
            stop_at: Arc::new(AtomicU64::new(u64::MAX)),
            stop_sent: false,
            rx,
            tx: Some(tx),
            pending: BTreeMap::new(),
            failed: BTreeMap::new(),
            completed: restored,
            finished: 0,
            stats: CheckpointLive { enabled: true, last: restored, ..CheckpointLive::default() },
            groups: crate::source::kafka::GroupCommitter::new(job),
            publisher,
            final_positions: Vec::new(),
        }
    }

    /// What a shard needs to take part; `restore` is its snapshot to resume from.
    pub fn shard_ctx(&self, restore: Option<RestoreFrom>) -> CheckpointCtx {
        CheckpointCtx {
            dir: self.dir.clone(),
            requested: self.requested.clone(),
            stop_at: self.stop_at.clone(),
            to_coordinator: self.tx.clone().expect("shard contexts are made before the shards start"),
            restore,
            restored: self.completed,
            debug: self.debug,
        }
    }

    /// Every shard has its context: only the shards hold senders from now on.
    pub fn shards_started(&mut self) {
        self.tx = None;
        self.last_request = Instant::now();
    }

    /// One tick of the engine's watch loop: takes the shards' messages, then asks for
    /// the next checkpoint when one is due, or for a last one when a stop was asked.
    pub fn tick(&mut self, stop_requested: bool) {
        self.drain();
        let req = self.requested.load(Ordering::Relaxed);
        if stop_requested && !self.stop_sent {
            self.stop_sent = true;
            self.stop_at.store(req + 1, Ordering::Release);
            self.requested.store(req + 1, Ordering::Release);
            tracing::info!(
                checkpoint = req + 1,
                "{}: stopping at a final checkpoint ({}); a second signal stops at once, without it",
                crate::sys::stop_signal_name().unwrap_or("a stop signal"),
                req + 1
            );
        } else if !self.stop_sent && self.last_request.elapsed() >= self.interval && self.idle(req) {
            self.requested.store(req + 1, Ordering::Release);
            self.last_request = Instant::now();
        }
    }

    /// Takes every message the shards have sent so far.
    pub fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.on_message(msg);
        }
    }

    /// Every shard ended without error: how the run ends. Stopped at checkpoint n: n
    /// must be complete. Ran to the end: writes the final manifest, commits all output.
    /// With a Kafka output, the outcome waits until every committed epoch is published.
    pub fn conclude(&mut self, stopped_at: Option<u64>) -> Result<String, CheckpointError> {
        let outcome = self.conclude_files(stopped_at)?;
        if let Some(p) = self.publisher.take() {
            p.finish()?;
        }
        Ok(outcome)
    }

    /// Why the Kafka sink stopped publishing for good, if it did (the job must stop).
    pub fn publish_failure(&self) -> Option<String> {
        self.publisher.as_ref().and_then(Publisher::failure)
    }

    fn conclude_files(&mut self, stopped_at: Option<u64>) -> Result<String, CheckpointError> {
        match stopped_at {
            Some(n) if self.completed >= n => Ok(format!("stopped at checkpoint {n}; run again to resume")),
            Some(n) => Err(CheckpointError::Invalid {
                path: self.dir.clone(),
                reason: format!(
                    "stopping: the final checkpoint {n} did not complete ({}); a restart resumes from {}",
                    self.why_incomplete(n),
                    self.completed
                ),
            }),
            None => {
                self.finish()?;
                Ok(format!("completed; output committed (checkpoint {})", self.completed))
            }
        }
    }

    /// This process's checkpoint figures (count, failures, the newest one's timing).
    pub fn stats(&self) -> CheckpointLive {
        self.stats.clone()
    }

    /// The newest complete checkpoint (the one a restart resumes from; 0: none yet).
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// A stop was asked for and its final checkpoint is complete (nothing is left to
    /// lose by stopping now).
    pub fn stop_checkpoint_complete(&self) -> bool {
        let n = self.stop_at.load(Ordering::Acquire);
        n != u64::MAX && self.completed >= n
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// No checkpoint is under way (the next may be asked for).
    fn idle(&self, requested: u64) -> bool {
        requested <= self.completed || self.failed.contains_key(&requested)
    }

    /// Why checkpoint `n` is not complete: its failure, or the shards whose snapshot
    /// never came.
    fn why_incomplete(&self, n: u64) -> String {
        if let Some(why) = self.failed.get(&n) {
            return why.clone();
        }
        let got: Vec<u32> = self.pending.get(&n).map(|v| v.iter().map(|s| s.shard).collect()).unwrap_or_default();
        let missing: Vec<String> =
            (0..self.shards as u32).filter(|s| !got.contains(s)).map(|s| s.to_string()).collect();
        format!("no snapshot {n} came from shard(s) {}", missing.join(", "))
    }

    fn on_message(&mut self, msg: CoordMsg) {
        match msg {
            CoordMsg::Snapshot { n, snap } => {
                if self.failed.contains_key(&n) {
                    return;
                }
                let v = self.pending.entry(n).or_default();
                v.push(*snap);
                if v.len() == self.shards {
                    let mut snaps = self.pending.remove(&n).unwrap();
                    snaps.sort_by_key(|s| s.shard);
                    if let Err(e) = self.complete(n, snaps) {
                        // The previous checkpoint stays the one to restore; the job goes on.
                        tracing::warn!(
                            checkpoint = n,
                            error = %e,
                            "checkpoint {n} failed: {e}; the previous checkpoint ({}) stays the one a restart \
                             resumes from, the job goes on and tries again at the next interval",
                            self.completed
                        );
                        self.stats.failed += 1;
                        self.failed.insert(n, e.to_string());
                    }
                }
            }
            CoordMsg::Failed { n, shard, error } => {
                tracing::warn!(
                    checkpoint = n,
                    shard,
                    error = %error,
                    "checkpoint {n} failed on shard {shard}: {error}; the previous checkpoint ({}) stays the one \
                     a restart resumes from, the job goes on and tries again at the next interval",
                    self.completed
                );
                if !self.failed.contains_key(&n) {
                    self.stats.failed += 1;
                }
                self.pending.remove(&n);
                self.failed.entry(n).or_insert_with(|| format!("shard {shard}: {error}"));
            }
            CoordMsg::Finished { positions, .. } => {
                self.finished += 1;
                self.final_positions.extend(positions);
            }
        }
    }

    /// Every shard's snapshot n is durable: make the manifest durable, then commit.
    fn complete(&mut self, n: u64, shards: Vec<ShardSnapshot>) -> Result<(), CheckpointError> {
        if let Some(d) = self.output.files_dir() {
            layout::sync_output(d, n)?;
        }
        let m = self.manifest(n, false, shards);
        checkpoint::write_manifest(&self.dir, &m)?;
        let files: usize = m.shards.iter().map(|s| s.buckets.len()).sum();
        let bytes: u64 = m.shards.iter().flat_map(|s| &s.buckets).map(|b| b.bytes).sum();
        let took = self.last_request.elapsed();
        if self.debug {
            tracing::info!(
                checkpoint = n,
                files,
                bytes,
                "checkpoint {n} complete at {took:?}: {files} files, {bytes} bytes"
            );
        } else {
            tracing::debug!(
                checkpoint = n,
                files,
                bytes,
                "checkpoint {n} complete at {took:?}: {files} files, {bytes} bytes"
            );
        }
        self.stats.completed += 1;
        self.stats.last = n;
        self.stats.last_duration_s = took.as_secs_f64();
        self.stats.last_state_bytes = bytes;
        self.stats.last_success_unix_s = unix_ms() as f64 / 1000.0;
        self.completed = self.completed.max(n);
        if let Some(d) = self.output.files_dir() {
            layout::commit_output(d, n)?;
        }
        if let Some(p) = &self.publisher {
            p.wake();
        }
        if let Some(g) = &self.groups {
            let positions = m.shards.iter().flat_map(|s| &s.sources).map(|st| (st.plan_index, &st.position));
            g.commit(positions, false);
        }
        checkpoint::collect_garbage(&self.dir, self.retained)?;
        Ok(())
    }

    /// The job ran to the end: commit every epoch and record that it finished.
    fn finish(&mut self) -> Result<(), CheckpointError> {
        let n = self.completed.max(self.failed.keys().copied().max().unwrap_or(0)) + 1;
        if let Some(d) = self.output.files_dir() {
            layout::sync_output(d, u64::MAX)?;
        }
        let m = self.manifest(n, true, Vec::new());
        checkpoint::write_manifest(&self.dir, &m)?;
        self.completed = n;
        self.stats.completed += 1;
        self.stats.last = n;
        self.stats.last_success_unix_s = unix_ms() as f64 / 1000.0;
        if let Some(d) = self.output.files_dir() {
            layout::commit_output(d, u64::MAX)?;
        }
        // The groups get the end positions of the finished job (waited for: the
        // process ends right after).
        if let Some(g) = &self.groups {
            g.commit(self.final_positions.iter().map(|(i, p)| (*i, p)), true);
        }
        checkpoint::collect_garbage(&self.dir, self.retained)?;
        Ok(())
    }

    fn manifest(&self, n: u64, finished: bool, shards: Vec<ShardSnapshot>) -> Manifest {
        Manifest {
            format: checkpoint::MANIFEST_FORMAT,
            checkpoint: n,
            finished,
            created_unix_ms: unix_ms(),
            job: self.shape.clone(),
            routing: Some(crate::router::ROUTING.to_string()),
            shards,
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
