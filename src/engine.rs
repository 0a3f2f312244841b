//! Runs a job: plans partitions, wires one ring per ordered pair of shards, starts one
//! pinned glommio executor per shard, shows progress, and merges the shard reports.
//!
//! The calling thread only watches and coordinates: progress, and with checkpointing
//! the checkpoint coordinator (asks for barriers every interval, writes a manifest
//! when every shard's snapshot is durable, then commits that epoch's output). All
//! joining happens on the shard executors.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

use crate::checkpoint::coordinator::{self as recovery, Start};
use crate::checkpoint::{self, CheckpointError, CoordMsg, JobShape, Manifest, ShardSnapshot};
use crate::config::{Job, OutputTarget};
use crate::event::Side;
use crate::exchange::Batch;
use crate::metrics::{new_histogram, InputReport, LatencyReport, Progress, Report, ShardCounters};
use crate::shard::{self, ShardCtx, ShardError};
use crate::sink::layout::{self, prepare_output_dir, Claim};
use crate::sink::SinkError;
use crate::source;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The first malformed row is fatal.
    pub strict: bool,
    /// Replace the output of an earlier run in the output directory.
    pub force: bool,
    /// Print a live progress line to stderr (only when stderr is a terminal).
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Shard(#[from] ShardError),
    #[error(transparent)]
    Output(#[from] SinkError),
    #[error("cannot start shard {shard}: {message}")]
    Executor { shard: u32, message: String },
    #[error("shard {shard} panicked: {message}")]
    Panic { shard: u32, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the job already ran to the end (checkpoint {checkpoint} in {dir}); its output is committed. Remove the checkpoint directory to run it again")]
    AlreadyFinished { checkpoint: u64, dir: String },
}

/// How often a busy shard yields to reap io_uring completions (µs); see the builder.
const PREEMPT_US_DEFAULT: u64 = 10_000;

/// Runs `job` to the end of its inputs and returns the report.
pub fn run(job: &Job, opts: &RunOptions) -> Result<Report, EngineError> {
    let start = Instant::now();
    let cpu0 = crate::sys::process_cpu_s();
    let shards = job.shards as usize;
    let job = Arc::new(job.clone());

    // Where do we start?
    let mut resume: Option<Box<Manifest>> = None;
    if let Some(ck) = &job.checkpoint {
        std::fs::create_dir_all(&ck.dir).map_err(checkpoint::io(&ck.dir, "create directory"))?;
        match recovery::plan(&job, &ck.dir, |w| eprintln!("warning: {w}"))? {
            Start::Fresh => {
                recovery::clear_orphans(&ck.dir)?;
                if let OutputTarget::Dir(d) = &job.output {
                    layout::remove_uncommitted(d)?;
                }
            }
            Start::Finished(n) => {
                return Err(EngineError::AlreadyFinished { checkpoint: n, dir: ck.dir.display().to_string() })
            }
            Start::Resume(m) => {
                eprintln!("resuming from checkpoint {} in {}", m.checkpoint, ck.dir.display());
                recovery::reset_output(&job, m.checkpoint)?;
                resume = Some(m);
            }
        }
    }

    match &job.output {
        OutputTarget::Dir(_) if resume.is_some() => {}
        OutputTarget::Dir(d) => prepare_output_dir(&job, d, opts.force, Claim::PartFiles).map_err(SinkError::from)?,
        OutputTarget::Stdout => {
            let h = crate::codec::format::OutputFormatter::new(job.output_format, &job.left.schema, &job.right.schema)
                .header();
            let mut so = std::io::stdout().lock();
            so.write_all(&h).and_then(|_| so.flush()).map_err(|e| SinkError {
                path: "<stdout>".into(),
                op: "write",
                source: e,
            })?;
        }
        OutputTarget::None => {}
    }

    // Partition i is read by shard i % shards.
    let mut specs: Vec<Vec<(u32, source::PartitionSpec)>> = vec![Vec::new(); shards];
    for (i, s) in source::plan(&job).into_iter().enumerate() {
        specs[i % shards].push((i as u32, s));
    }

    let restored = resume.as_ref().map_or(0, |m| m.checkpoint);
    let requested = Arc::new(AtomicU64::new(restored));
    let stop_at = Arc::new(AtomicU64::new(u64::MAX));
    let (coord_tx, coord_rx) = std::sync::mpsc::channel::<CoordMsg>();
    let mut restore: Vec<Option<ShardSnapshot>> = vec![None; shards];
    if let Some(m) = &resume {
        for snap in &m.shards {
            restore[snap.shard as usize] = Some(snap.clone());
        }
    }

    // senders[s][d] / receivers[d]: the ring s -> d.
    let mut senders: Vec<Vec<Option<shared_channel::SharedSender<Batch>>>> =
        (0..shards).map(|_| (0..shards).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<(usize, shared_channel::SharedReceiver<Batch>)>> =
        (0..shards).map(|_| Vec::new()).collect();
    for (s, row) in senders.iter_mut().enumerate() {
        for (d, slot) in row.iter_mut().enumerate() {
            if s != d {
                let (tx, rx) = shared_channel::new_bounded(job.ring_slots as usize);
                *slot = Some(tx);
                receivers[d].push((s, rx));
            }
        }
    }

    let progress = Arc::new(Progress::new(shards));
    let preempt = Duration::from_micros(
        std::env::var("WEFT_PREEMPT_US").ok().and_then(|v| v.parse().ok()).unwrap_or(PREEMPT_US_DEFAULT),
    );
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::with_capacity(shards);
    for (id, ((tx, rx), sp)) in senders.into_iter().zip(receivers).zip(specs).enumerate() {
        let ctx = ShardCtx {
            id: id as u32,
            job: job.clone(),
            specs: sp,
            senders: tx,
            receivers: rx,
            progress: progress.clone(),
            start,
            strict: opts.strict,
            checkpoint: job.checkpoint.as_ref().map(|ck| shard::CheckpointCtx {
                dir: ck.dir.clone(),
                requested: requested.clone(),
                stop_at: stop_at.clone(),
                to_coordinator: coord_tx.clone(),
                restore: restore[id].take(),
                restored,
            }),
        };
        let pin = if job.pin_cores && !cores.is_empty() { Some(cores[id % cores.len()]) } else { None };
        let progress2 = progress.clone();
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("weft-shard-{id}"))
            .io_memory(job.io_memory_kib as usize * 1024)
            // How often a busy shard stops to reap io_uring completions (checkpoint writes,
            // ring wake-ups). glommio's default (100 ms) stalled checkpoints that long; 1 ms
            // made glommio lose timer wake-ups (rate-limited runs hung, 1 in ~3); 10 ms did not
            // hang in 30 tries. WEFT_PREEMPT_US overrides it for experiments.
            .preempt_timer(preempt);
        let handle = builder
            .spawn(move || async move {
                if let Some(core) = pin {
                    core_affinity::set_for_current(core);
                }
                let r = shard::run(ctx).await;
                if r.is_err() {
                    progress2.abort.store(true, Ordering::Relaxed);
                }
                progress2.finished.fetch_add(1, Ordering::Relaxed);
                r
            })
            .map_err(|e| EngineError::Executor { shard: id as u32, message: e.to_string() })?;
        handles.push(handle);
    }

    drop(coord_tx);
    let show = opts.progress && std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    let mut last_rows = 0u64;
    let mut coord = job.checkpoint.as_ref().map(|ck| Coordinator {
        dir: ck.dir.clone(),
        interval: Duration::from_millis(ck.interval_ms),
        retained: ck.retained,
        shape: JobShape::of(&job),
        output: job.output.clone(),
        shards,
        last_request: Instant::now(),
        pending: std::collections::BTreeMap::new(),
        failed: std::collections::BTreeSet::new(),
        completed: restored,
        finished: 0,
        error: None,
    });
    let mut stop_sent = false;
    while progress.finished.load(Ordering::Relaxed) < shards as u64 {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(c) = coord.as_mut() {
            while let Ok(msg) = coord_rx.try_recv() {
                c.on_message(msg);
            }
            if c.error.is_some() {
                progress.abort.store(true, Ordering::Relaxed);
            }
            let req = requested.load(Ordering::Relaxed);
            if crate::sys::STOP_REQUESTED.load(Ordering::Relaxed) && !stop_sent {
                stop_sent = true;
                stop_at.store(req + 1, Ordering::Release);
                requested.store(req + 1, Ordering::Release);
            } else if !stop_sent && c.last_request.elapsed() >= c.interval && c.idle(req) {
                requested.store(req + 1, Ordering::Release);
                c.last_request = Instant::now();
            }
        } else if crate::sys::STOP_REQUESTED.load(Ordering::Relaxed) {
            progress.abort.store(true, Ordering::Relaxed);
        }
        if show && last_print.elapsed() >= Duration::from_secs(1) {
            let t = progress.totals();
            let rows = t.rows_in;
            let dt = last_print.elapsed().as_secs_f64();
            let wm_s = if t.watermark == i64::MIN {
                "-".to_string()
            } else if t.watermark == i64::MAX {
                "end".to_string()
            } else {
                t.watermark.to_string()
            };
            let mib = |b: u64| b as f64 / 1048576.0;
            eprint!(
                "\r{:>7.1}s  {:>12} events  {:>10.0} ev/s  {:>12} out  state {} + {} rows, {:.0} MiB + {:.0} MiB index  W {}   ",
                start.elapsed().as_secs_f64(),
                rows,
                (rows - last_rows) as f64 / dt,
                t.output_rows,
                t.state_rows[0],
                t.state_rows[1],
                mib(t.state_bytes),
                mib(t.index_bytes),
                wm_s
            );
            last_rows = rows;
            last_print = Instant::now();
        }
    }
    if show {
        eprintln!();
    }

    let mut counters = ShardCounters::default();
    let mut latency = new_histogram();
    let mut first_err: Option<EngineError> = None;
    let mut stopped_at = None;
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => {
                counters.merge(&r.counters);
                let _ = latency.add(&r.latency);
                stopped_at = stopped_at.or(r.stopped_at);
            }
            Ok(Err(e)) => {
                // Prefer the root cause over the "stopped because another failed" echoes.
                let aborted = matches!(e, ShardError::Aborted(_));
                if first_err.is_none()
                    || (!aborted && matches!(first_err, Some(EngineError::Shard(ShardError::Aborted(_)))))
                {
                    first_err = Some(e.into());
                }
            }
            Err(e) => {
                first_err.get_or_insert(EngineError::Panic { shard: id as u32, message: e.to_string() });
            }
        }
    }
    let mut outcome = "completed".to_string();
    if let Some(c) = coord.as_mut() {
        // Snapshots that became durable while the shards were ending.
        while let Ok(msg) = coord_rx.try_recv() {
            c.on_message(msg);
        }
        if let Some(e) = c.error.take() {
            first_err.get_or_insert(e.into());
        }
        if first_err.is_none() {
            match stopped_at {
                Some(n) if c.completed >= n => outcome = format!("stopped at checkpoint {n}; run again to resume"),
                Some(n) => {
                    first_err = Some(EngineError::Checkpoint(CheckpointError::Invalid {
                        path: c.dir.clone(),
                        reason: format!(
                            "stopping: the final checkpoint {n} did not complete; a restart resumes from {}",
                            c.completed
                        ),
                    }))
                }
                None => {
                    c.finish()?;
                    outcome = format!("completed; output committed (checkpoint {})", c.completed);
                }
            }
        }
    } else if crate::sys::STOP_REQUESTED.load(Ordering::Relaxed) && first_err.is_some() {
        outcome = "interrupted".into();
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = crate::sys::process_cpu_s() - cpu0;
    let events = counters.rows_in[0] + counters.rows_in[1];
    let input = |side: Side| {
        let i = side.idx();
        InputReport {
            name: job.input(side).schema.name.clone(),
            rows_in: counters.rows_in[i],
            late: counters.late[i],
            dead_letters: counters.dead[i],
            unmatched: counters.unmatched[i],
            unmatched_emitted: counters.unmatched_emitted[i],
            state_rows_peak: counters.state_rows_peak[i],
            state_bytes_peak: counters.state_bytes_peak_side[i],
        }
    };
    Ok(Report {
        left: input(Side::Left),
        right: input(Side::Right),
        matched_pairs: counters.pairs,
        output_rows: counters.output_rows,
        events,
        wall_s,
        events_per_s: events as f64 / wall_s.max(1e-9),
        cpu_s,
        events_per_cpu_s: events as f64 / cpu_s.max(1e-9),
        shards: job.shards,
        latency: LatencyReport::from_histogram(&latency),
        state_bytes_peak: counters.state_bytes_peak,
        keys_peak: counters.keys_peak,
        index_bytes_peak: counters.index_bytes_peak,
        bytes_reclaimed: counters.bytes_reclaimed,
        state_cold_reads: counters.cold_reads,
        state_resident_peak_bytes: counters.resident_file_peak,
        arena_files_peak: counters.arena_files_peak,
        outcome,
        peak_rss_bytes: crate::sys::peak_rss_bytes(),
        output: match &job.output {
            OutputTarget::Dir(d) => d.display().to_string(),
            OutputTarget::Stdout => "-".into(),
            OutputTarget::None => "none".into(),
        },
    })
}

/// The checkpoint coordinator: runs on the engine's calling thread.
struct Coordinator {
    dir: std::path::PathBuf,
    interval: Duration,
    retained: u32,
    shape: JobShape,
    output: OutputTarget,
    shards: usize,
    last_request: Instant,
    /// Snapshots received per checkpoint, until every shard's is in.
    pending: std::collections::BTreeMap<u64, Vec<ShardSnapshot>>,
    failed: std::collections::BTreeSet<u64>,
    /// Newest complete checkpoint.
    completed: u64,
    finished: usize,
    error: Option<CheckpointError>,
}

impl Coordinator {
    /// No checkpoint is under way (the next may be asked for).
    fn idle(&self, requested: u64) -> bool {
        requested <= self.completed || self.failed.contains(&requested)
    }

    fn on_message(&mut self, msg: CoordMsg) {
        match msg {
            CoordMsg::Snapshot { n, snap } => {
                if self.failed.contains(&n) {
                    return;
                }
                let v = self.pending.entry(n).or_default();
                v.push(*snap);
                if v.len() == self.shards {
                    let mut snaps = self.pending.remove(&n).unwrap();
                    snaps.sort_by_key(|s| s.shard);
                    if let Err(e) = self.complete(n, snaps) {
                        // The previous checkpoint stays the one to restore; the job goes on.
                        eprintln!("warning: checkpoint {n} failed: {e}");
                        self.failed.insert(n);
                    }
                }
            }
            CoordMsg::Failed { n, shard, error } => {
                eprintln!("warning: checkpoint {n} failed on shard {shard}: {error}");
                self.pending.remove(&n);
                self.failed.insert(n);
            }
            CoordMsg::Finished { .. } => self.finished += 1,
        }
    }

    /// Every shard's snapshot n is durable: make the manifest durable, then commit.
    fn complete(&mut self, n: u64, shards: Vec<ShardSnapshot>) -> Result<(), CheckpointError> {
        if let OutputTarget::Dir(d) = &self.output {
            layout::sync_output(d, n).map_err(ckpt_io)?;
        }
        let m = Manifest {
            format: checkpoint::MANIFEST_FORMAT,
            checkpoint: n,
            finished: false,
            created_unix_ms: unix_ms(),
            job: self.shape.clone(),
            shards,
        };
        checkpoint::write_manifest(&self.dir, &m)?;
        if std::env::var_os("WEFT_DEBUG_CHECKPOINTS").is_some() {
            let files: usize = m.shards.iter().map(|s| s.buckets.len()).sum();
            let bytes: u64 = m.shards.iter().flat_map(|s| &s.buckets).map(|b| b.bytes).sum();
            eprintln!("checkpoint {n} complete at {:?}: {files} files, {bytes} bytes", self.last_request.elapsed());
        }
        self.completed = self.completed.max(n);
        if let OutputTarget::Dir(d) = &self.output {
            layout::commit_output(d, n).map_err(ckpt_io)?;
        }
        checkpoint::collect_garbage(&self.dir, self.retained)?;
        Ok(())
    }

    /// The job ran to the end: commit every epoch and record that it finished.
    fn finish(&mut self) -> Result<(), CheckpointError> {
        let n = self.completed.max(self.failed.iter().copied().max().unwrap_or(0)) + 1;
        if let OutputTarget::Dir(d) = &self.output {
            layout::sync_output(d, u64::MAX).map_err(ckpt_io)?;
        }
        let m = Manifest {
            format: checkpoint::MANIFEST_FORMAT,
            checkpoint: n,
            finished: true,
            created_unix_ms: unix_ms(),
            job: self.shape.clone(),
            shards: Vec::new(),
        };
        checkpoint::write_manifest(&self.dir, &m)?;
        self.completed = n;
        if let OutputTarget::Dir(d) = &self.output {
            layout::commit_output(d, u64::MAX).map_err(ckpt_io)?;
        }
        checkpoint::collect_garbage(&self.dir, self.retained)?;
        Ok(())
    }
}

/// An output-directory I/O error met while checkpointing (same text as before).
fn ckpt_io(e: SinkError) -> CheckpointError {
    CheckpointError::Io { path: e.path, op: e.op, source: e.source }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
