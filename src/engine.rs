//! Runs a job, in named steps ([`run`]): refuse inputs inside the job's directories
//! and lock those directories (`sys::lock_dirs`, held for the whole run), run the
//! start-up guards ([`check_job_dirs`]: writable directories, free space), plan the
//! start (fresh, resume, or already finished), prepare the output, wire the rings and spawn one pinned glommio executor
//! per shard, watch (progress line, checkpoint coordinator, signals), collect the
//! shards' results, and build the report.
//!
//! The calling thread only watches and coordinates; all joining happens on the shard
//! executors. The coordinator itself is `checkpoint/coordinator.rs`. A second stop
//! signal ends the process from here at once ([`stop_at_once`], the one `process::exit`
//! outside `main`). This file never
//! reads environment variables: the CLI passes its knobs in [`RunOptions`].

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

use crate::checkpoint::barrier::RestoreFrom;
use crate::checkpoint::coordinator::{self as recovery, Coordinator, Start};
use crate::checkpoint::redistribute::{self, Redistribution};
use crate::checkpoint::{self, CheckpointError, Manifest, SchemaChange};
use crate::config::{Job, OutputTarget, PREEMPT_US_DEFAULT};
use crate::event::Side;
use crate::exchange;
use crate::metrics::live::Live;
use crate::metrics::{new_histogram, InputReport, LatencyReport, Progress, Report, ShardCounters};
use crate::shard::{self, ShardCtx, ShardError, ShardResult};
use crate::sink::kafka::Publisher;
use crate::sink::layout::{self, prepare_output_dir, Claim};
use crate::sink::staging;
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
    /// Print checkpoint timings to stderr (the CLI sets it from `WEFT_DEBUG_CHECKPOINTS`).
    pub debug_checkpoints: bool,
    /// How often a busy shard yields to reap io_uring completions, in µs; `None`:
    /// [`PREEMPT_US_DEFAULT`] (the CLI sets it from `WEFT_PREEMPT_US`, for experiments).
    pub preempt_us: Option<u64>,
    /// Figures for the metrics endpoint (the CLI starts it when `engine.metrics_addr` is
    /// set; `metrics::server`): the shards and the checkpoint coordinator publish here.
    pub live: Option<Arc<Live>>,
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
    #[error(transparent)]
    Publish(#[from] crate::sink::kafka::PublishError),
    #[error("the job already ran to the end (checkpoint {checkpoint} in {dir}); its output is committed. Remove the checkpoint directory to run it again")]
    AlreadyFinished { checkpoint: u64, dir: String },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Locked(#[from] crate::sys::LockError),
    /// A stop signal without checkpointing: nothing of the run is kept.
    #[error(
        "interrupted by {signal} before the end of the input; without checkpointing nothing of this run is kept \
         ({output}). The same command runs the job again from the start"
    )]
    Interrupted { signal: &'static str, output: &'static str },
    /// A second stop signal: the process exits at once ([`stop_at_once`]); this is its message.
    #[error("stopped at once by a second {signal}{rest}")]
    StoppedAtOnce { signal: &'static str, rest: String },
    /// A start-up guard: a job directory this run must write cannot be written.
    #[error("{what} {dir} is not writable ({source}): {hint}")]
    NotWritable { what: &'static str, dir: String, source: std::io::Error, hint: String },
    /// A start-up guard: the state directory's disk has less room than the state budget.
    #[error(
        "the disk of engine.state_dir {dir} has {free_mb} MiB free, less than the state budget \
         engine.state_memory_mb = {budget_mb} MiB: free space there, lower engine.state_memory_mb \
         (--state-memory-mb), or choose another engine.state_dir (--state-dir)"
    )]
    DiskSpace { dir: String, free_mb: u64, budget_mb: u64 },
    #[error("{dir}: cannot read its free space (statvfs): {source}")]
    FreeSpace { dir: String, source: std::io::Error },
}

/// How often the watching thread looks at progress, the coordinator and signals.
const WATCH_TICK_MS: u64 = 20;
/// How often the live progress line is redrawn.
const PROGRESS_LINE_EVERY_S: u64 = 1;

type ShardHandle = ExecutorJoinHandle<Result<ShardResult, ShardError>>;

/// Runs `job` to the end of its inputs (or to a stop at a checkpoint) and returns the report.
pub fn run(job: &Job, opts: &RunOptions) -> Result<Report, EngineError> {
    let start = Instant::now();
    let cpu0 = crate::sys::process_cpu_s();
    let mut job = job.clone();
    // Kafka inputs: their partition counts, from the brokers (refused when the topics
    // are not co-partitioned or cannot be read).
    crate::source::kafka::resolve(&mut job).map_err(ShardError::from)?;
    let job = Arc::new(job);
    // Before anything in the job's directories is read or changed: no input may lie
    // in them (recovery and --force remove files there), and this run must be the
    // only one using them (held until this function returns).
    let dirs = job.job_dirs();
    job.check_inputs_outside(&dirs)?;
    refuse_early(&job)?;
    let _locks =
        crate::sys::lock_dirs(&dirs.iter().map(|(_, d)| *d).collect::<Vec<_>>()).map_err(|e| lock_error(e, &dirs))?;
    check_job_dirs(&job, &dirs)?;
    let resume = plan_start(&job)?;
    prepare_output(&job, resume.is_some(), opts.force)?;
    let restored = resume.as_ref().map_or(0, |(m, _)| m.checkpoint);
    let versions = resume.as_ref().map_or([1, 1], |(_, c)| c.versions);
    // The Kafka sink starts by publishing what an earlier run left committed.
    let mut publisher = start_publisher(&job)?;
    let mut coord = job
        .checkpoint
        .as_ref()
        .map(|ck| Coordinator::new(&job, ck, restored, versions, opts.debug_checkpoints, publisher.take()));
    let progress = Arc::new(Progress::new(job.shards as usize));
    let handles = spawn_shards(&job, opts, start, &progress, coord.as_ref(), resume)?;
    if let Some(c) = coord.as_mut() {
        c.shards_started();
    }
    let show = opts.progress && std::io::stderr().is_terminal();
    let live = opts.live.as_deref();
    if !watch(&progress, coord.as_mut(), show, start, job.shards, live) {
        stop_at_once(&job, coord.as_ref());
    }
    let (merged, first_err) = collect(handles);
    let outcome = match coord.as_mut() {
        Some(c) => {
            // The shards are done, but the final checkpoint may still be in the channel.
            if second_signal_counts(Some(c)) {
                stop_at_once(&job, Some(c));
            }
            let outcome = conclude(c, merged.stopped_at, first_err);
            if let Some(l) = live {
                l.set_checkpoints(c.stats());
            }
            outcome?
        }
        None => conclude_unchecked(&job, first_err)?,
    };
    // The job's Kafka clients (sources, the group committer) close in parallel.
    drop(coord);
    crate::source::kafka::wait_closed();
    Ok(report(&job, &merged, outcome, start, cpu0))
}

/// The configuration key that names each of [`Job::job_dirs`], for messages that say
/// what to change.
fn dir_key(what: &str) -> &'static str {
    match what {
        "checkpoint directory" => "engine.checkpoint_dir",
        "state directory" => "engine.state_dir",
        _ => "output.path",
    }
}

/// What to change when creating a file in a job directory failed with `e`.
fn not_writable(what: &'static str, dir: &std::path::Path, e: std::io::Error) -> EngineError {
    let key = dir_key(what);
    let hint = match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!("permission denied: chmod it or choose another {key}"),
        Some(libc::EROFS) => format!("a read-only file system: remount it read-write or choose another {key}"),
        Some(libc::ENOTDIR) => format!("a part of the path is not a directory: choose another {key}"),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
            format!("the disk is full: free space there or choose another {key}")
        }
        _ => format!("fix the directory or choose another {key}"),
    };
    EngineError::NotWritable { what, dir: dir.display().to_string(), source: e, hint }
}

/// A lock that failed because its directory or lock file could not be made is the
/// not-writable guard's case (the lock is the first write): said the same way.
fn lock_error(e: crate::sys::LockError, dirs: &[(&'static str, &std::path::Path)]) -> EngineError {
    match e {
        crate::sys::LockError::Io { path, op: op @ ("create directory" | "create lock file"), source } => {
            let dir = if op == "create directory" { path.as_path() } else { path.parent().unwrap_or(&path) };
            match dirs.iter().find(|(_, d)| *d == dir) {
                Some((what, d)) => not_writable(what, d, source),
                None => crate::sys::LockError::Io { path, op, source }.into(),
            }
        }
        e => e.into(),
    }
}

/// The start-up guards, run once the directories are locked and before anything is
/// read or joined, so a run that could not write its results or state refuses at once
/// with what to change, not minutes later: every job directory takes a probe file
/// (`sys::probe_writable`), and the disk of `engine.state_dir` has at least
/// `engine.state_memory_mb` free (a lower bound only: cold buckets may use more disk
/// than the budget). The io_uring and `ulimit -l` guard is `sys::check_io_uring`, which
/// the CLI runs before this.
fn check_job_dirs(job: &Job, dirs: &[(&'static str, &std::path::Path)]) -> Result<(), EngineError> {
    for (what, d) in dirs {
        crate::sys::probe_writable(d).map_err(|e| not_writable(what, d, e))?;
    }
    if let Some(d) = &job.state_dir {
        let free = crate::sys::free_bytes(d)
            .map_err(|source| EngineError::FreeSpace { dir: d.display().to_string(), source })?;
        let budget_mb = job.state_memory_mb;
        if free < budget_mb.saturating_mul(1 << 20) {
            return Err(EngineError::DiskSpace { dir: d.display().to_string(), free_mb: free >> 20, budget_mb });
        }
    }
    Ok(())
}

/// A second SIGINT/SIGTERM came and stopping now loses something: the final
/// checkpoint is not complete yet (with checkpointing), or the abort is not done.
fn second_signal_counts(coord: Option<&Coordinator>) -> bool {
    crate::sys::stop_now_requested() && !coord.is_some_and(|c| c.stop_checkpoint_complete())
}

/// Exits the process with status 2 at once, on the watching thread, without waiting
/// for the shards or running any destructor (the directory locks stay until the exit,
/// when the kernel releases them, so no other run can start while a shard still writes).
///
/// Why stopping at any point is safe (the same as a `kill -9`): a manifest is written to
/// `chk-<n>.json.tmp`, fdatasynced and only then renamed into place
/// (`checkpoint::write_manifest`), so an exit before the rename leaves only a temp file
/// (removed by GC or the next write of that name) and the previous manifest is the
/// newest; a pack that was being written belongs to no manifest and is replaced by the
/// next attempt (`writer::write_pack`). Output of epochs after the newest manifest is
/// still `.inprogress`, which a restart deletes; epochs up to it that an exit left
/// uncommitted are committed by the restart (`reset_output`), so committed output is
/// never touched and the restart is still exactly once. Without checkpointing the
/// output is all `.inprogress`, which the next run removes.
fn stop_at_once(job: &Job, coord: Option<&Coordinator>) -> ! {
    let signal = crate::sys::stop_signal_name().unwrap_or("stop signal");
    let rest = match coord {
        Some(c) if c.completed() > 0 => format!(
            ", without a final checkpoint; the previous checkpoint {} in {} stays valid and committed output is \
             untouched; the same command resumes from it",
            c.completed(),
            c.dir().display()
        ),
        Some(_) => ", without a final checkpoint; no checkpoint had completed yet, so the same command runs the \
                    job again from the start (its uncommitted output is removed then)"
            .to_string(),
        None => match job.output {
            OutputTarget::Dir(_) | OutputTarget::Kafka(_) => {
                "; without checkpointing nothing of this run is kept: its partial output is \
                                     left as .inprogress files, which the next run removes"
                    .to_string()
            }
            OutputTarget::Stdout => "; without checkpointing nothing of this run is kept: what it wrote to \
                                     standard output is partial"
                .to_string(),
            OutputTarget::None => "; without checkpointing nothing of this run is kept".to_string(),
        },
    };
    tracing::error!("{}", EngineError::StoppedAtOnce { signal, rest });
    std::process::exit(2)
}

/// A restart that [`plan_start`] would refuse for the checkpoint's job shape or schemas,
/// found before the job's directories are locked or created: such a refusal leaves the
/// checkpoint and output directories byte-identical (the lock file included). Read-only;
/// any other problem is left to `plan_start`, under the lock.
fn refuse_early(job: &Job) -> Result<(), EngineError> {
    let Some(ck) = &job.checkpoint else { return Ok(()) };
    match recovery::plan(job, &ck.dir, |_| {}) {
        Err(e @ (CheckpointError::Mismatch { .. } | CheckpointError::Schema { .. })) => Err(e.into()),
        _ => Ok(()),
    }
}

/// A checkpoint to resume from and how its schemas change.
type Resume = (Box<Manifest>, Box<SchemaChange>);

/// Where the job starts: `None` fresh (orphaned state and uncommitted output removed),
/// or the manifest to resume from (output reset to its epoch) and how its schemas change.
fn plan_start(job: &Job) -> Result<Option<Resume>, EngineError> {
    let Some(ck) = &job.checkpoint else { return Ok(None) };
    std::fs::create_dir_all(&ck.dir).map_err(checkpoint::io(&ck.dir, "create directory"))?;
    match recovery::plan(job, &ck.dir, |w| tracing::warn!(dir = %ck.dir.display(), "{w}"))? {
        Start::Fresh => {
            recovery::clear_orphans(&ck.dir)?;
            match &job.output {
                OutputTarget::Dir(d) => layout::remove_uncommitted(d)?,
                // Staged epochs of an earlier run are not this run's; a new run id.
                OutputTarget::Kafka(k) => drop(staging::start_fresh(&k.staging)?),
                OutputTarget::Stdout | OutputTarget::None => {}
            }
            Ok(None)
        }
        Start::Finished(n) => {
            // A kill between the finished manifest and the final commit leaves the last
            // epochs in progress: the manifest says they are the answer, so commit them
            // (and publish them, with a Kafka output).
            recovery::reset_output(job, u64::MAX)?;
            if let Some(p) = start_publisher(job)? {
                p.finish()?;
            }
            Err(EngineError::AlreadyFinished { checkpoint: n, dir: ck.dir.display().to_string() })
        }
        Start::Resume(m, change) => {
            tracing::info!(
                checkpoint = m.checkpoint,
                dir = %ck.dir.display(),
                "resuming from checkpoint {} in {}",
                m.checkpoint,
                ck.dir.display()
            );
            for (side, schema) in [&job.left.schema, &job.right.schema].into_iter().enumerate() {
                if !change.changed[side] {
                    continue;
                }
                let verdicts: Vec<String> = change.migrations[side]
                    .verdicts
                    .iter()
                    .filter(|v| v.verdict != "unchanged")
                    .map(|v| format!("`{}` {}", v.field, v.verdict))
                    .collect();
                tracing::info!(
                    input = %schema.name,
                    version = change.versions[side],
                    "input {} has a new schema (version {}): {}",
                    schema.name,
                    change.versions[side],
                    verdicts.join("; ")
                );
            }
            recovery::reset_output(job, m.checkpoint)?;
            Ok(Some((m, change)))
        }
    }
}

/// The Kafka sink's publisher (its topics checked, this run's id read), or None.
fn start_publisher(job: &Job) -> Result<Option<Publisher>, EngineError> {
    let OutputTarget::Kafka(k) = &job.output else { return Ok(None) };
    let run = staging::run_id(&k.staging)?;
    Ok(Some(Publisher::start(k, job.instance, run)?))
}

/// A fresh output directory (or the CSV header on stdout); a resumed run keeps its own.
/// Without checkpointing, in-progress files left by a run that was killed are not
/// output (this run holds the directory's lock, so no one is writing them): removed.
fn prepare_output(job: &Job, resuming: bool, force: bool) -> Result<(), EngineError> {
    match &job.output {
        OutputTarget::Dir(_) if resuming => {}
        OutputTarget::Dir(d) => {
            if job.checkpoint.is_none() && d.is_dir() {
                layout::remove_uncommitted(d)?;
            }
            prepare_output_dir(job, d, force, Claim::PartFiles).map_err(SinkError::from)?
        }
        OutputTarget::Stdout => {
            let h = crate::codec::format::OutputFormatter::new(job.output_format, &job.left.schema, &job.right.schema)
                .header();
            let mut so = std::io::stdout().lock();
            so.write_all(&h).and_then(|_| so.flush()).map_err(crate::sink::stdout_error)?;
        }
        OutputTarget::None | OutputTarget::Kafka(_) => {}
    }
    Ok(())
}

/// Wires the rings and starts one executor per shard, each with its partitions (plan
/// index i goes to shard i % shards, a split file to every shard) and, when resuming, its snapshot.
fn spawn_shards(
    job: &Arc<Job>,
    opts: &RunOptions,
    start: Instant,
    progress: &Arc<Progress>,
    coord: Option<&Coordinator>,
    resume: Option<(Box<Manifest>, Box<SchemaChange>)>,
) -> Result<Vec<ShardHandle>, EngineError> {
    let shards = job.shards as usize;
    // What each partition was in the checkpoint (split or not), by plan index.
    let recorded: Option<Vec<&source::SourcePos>> = resume.as_ref().map(|(m, _)| {
        let n = m.shards.iter().flat_map(|s| &s.sources).map(|st| st.plan_index as usize + 1).max().unwrap_or(0);
        let mut v: Vec<&source::SourcePos> = vec![&source::SourcePos::Generator { emitted: 0 }; n];
        for st in m.shards.iter().flat_map(|s| &s.sources) {
            v[st.plan_index as usize] = &st.position;
        }
        v
    });
    let mut specs: Vec<Vec<(u32, source::PartitionSpec)>> = vec![Vec::new(); shards];
    let plan = source::split_large(source::plan(job), job, recorded.as_deref());
    drop(recorded);
    for (i, s) in plan.into_iter().enumerate() {
        match s {
            // A split file is read by every shard, chunk by chunk (source/split.rs).
            source::PartitionSpec::Split { .. } => {
                for each in specs.iter_mut() {
                    each.push((i as u32, s.clone()));
                }
            }
            _ => specs[i % shards].push((i as u32, s)),
        }
    }
    let mut restore: Vec<Option<RestoreFrom>> = (0..shards).map(|_| None).collect();
    if let Some((m, change)) = resume {
        let why = m
            .needs_redistribution(job.shards)
            .or_else(|| change.rewrites_rows(&m.job).then(|| "its rows are migrated to the new schema".to_string()));
        match why {
            None => {
                for snap in m.shards {
                    let s = snap.shard as usize;
                    restore[s] = Some(RestoreFrom::Own(Box::new(snap)));
                }
            }
            Some(why) => {
                tracing::info!(
                    checkpoint = m.checkpoint,
                    from_shards = m.shards.len(),
                    to_shards = shards,
                    "re-distributing the state of checkpoint {} by key to {shards} shards: {why}",
                    m.checkpoint
                );
                let stored = [m.job.left_fields.len(), m.job.right_fields.len()];
                let [left, right] = change.migrations;
                let migrations = [(left, &job.left.schema), (right, &job.right.schema)]
                    .into_iter()
                    .zip(stored)
                    .map(|((mig, schema), n)| {
                        (!mig.is_identity(n)).then(|| (mig, schema.fields.iter().map(|f| f.ty).collect()))
                    })
                    .collect::<Vec<_>>();
                let [left, right]: [_; 2] = migrations.try_into().expect("two inputs");
                let from = Redistribution::new(m.shards, [left, right], job.shards);
                tracing::info!("bytes of bucket copies each new shard reads: {:?}", from.read_bytes(job.shards));
                for (r, each) in restore.iter_mut().zip(redistribute::plan(from, job.shards)) {
                    *r = Some(RestoreFrom::Redistribute(Box::new(each)));
                }
            }
        }
    }
    let rings = exchange::wire(shards, job.ring_slots as usize);
    let preempt = Duration::from_micros(opts.preempt_us.unwrap_or(PREEMPT_US_DEFAULT));
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut handles = Vec::with_capacity(shards);
    for (id, (rings, sp)) in rings.into_iter().zip(specs).enumerate() {
        let ctx = ShardCtx {
            id: id as u32,
            job: job.clone(),
            specs: sp,
            rings,
            progress: progress.clone(),
            start,
            strict: opts.strict,
            checkpoint: coord.map(|c| c.shard_ctx(restore[id].take())),
            live: opts.live.clone(),
        };
        let pin = if job.pin_cores && !cores.is_empty() { Some(cores[id % cores.len()]) } else { None };
        handles.push(spawn_shard(ctx, pin, job.io_memory_kib, preempt)?);
    }
    Ok(handles)
}

/// One pinned executor running `shard::run`; a failure raises the abort flag.
fn spawn_shard(
    ctx: ShardCtx,
    pin: Option<core_affinity::CoreId>,
    io_memory_kib: u32,
    preempt: Duration,
) -> Result<ShardHandle, EngineError> {
    let id = ctx.id;
    let progress = ctx.progress.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("weft-shard-{id}"))
        .io_memory(io_memory_kib as usize * 1024)
        // See PREEMPT_US_DEFAULT for why this value.
        .preempt_timer(preempt)
        .spawn(move || async move {
            if let Some(core) = pin {
                core_affinity::set_for_current(core);
            }
            let r = shard::run(ctx).await;
            if r.is_err() {
                progress.abort.store(true, Ordering::Relaxed);
            }
            progress.finished.fetch_add(1, Ordering::Relaxed);
            r
        })
        .map_err(|e| EngineError::Executor { shard: id, message: e.to_string() })
}

/// Until every shard has finished: drives the coordinator (or, without checkpoints,
/// turns a stop signal into an abort) and redraws the progress line. False when a
/// second stop signal asks to stop at once (seen within a tick, [`WATCH_TICK_MS`]).
fn watch(
    progress: &Progress,
    mut coord: Option<&mut Coordinator>,
    show: bool,
    start: Instant,
    shards: u32,
    live: Option<&Live>,
) -> bool {
    let mut line = ProgressLine { start, last_print: Instant::now(), last_rows: 0 };
    while progress.finished.load(Ordering::Relaxed) < shards as u64 {
        std::thread::sleep(Duration::from_millis(WATCH_TICK_MS));
        if second_signal_counts(coord.as_deref()) {
            if show {
                let _ = writeln!(std::io::stderr());
            }
            return false;
        }
        let stop = crate::sys::STOP_REQUESTED.load(Ordering::Relaxed);
        match coord.as_deref_mut() {
            Some(c) => {
                if let Some(why) = c.publish_failure() {
                    // As at a second signal: the checkpoints and the staged epochs stay,
                    // and the same command resumes and publishes them.
                    tracing::error!(
                        "{why}; the job stops: its checkpoints and unpublished epochs are kept, and the same                          command resumes and publishes them"
                    );
                    std::process::exit(2);
                }
                c.tick(stop);
                if let Some(l) = live {
                    l.set_checkpoints(c.stats());
                }
            }
            None if stop => progress.abort.store(true, Ordering::Relaxed),
            None => {}
        }
        if show && line.last_print.elapsed() >= Duration::from_secs(PROGRESS_LINE_EVERY_S) {
            line.print(progress);
        }
    }
    if show {
        let _ = writeln!(std::io::stderr());
    }
    true
}

/// The live progress line on stderr.
struct ProgressLine {
    start: Instant,
    last_print: Instant,
    last_rows: u64,
}

impl ProgressLine {
    fn print(&mut self, progress: &Progress) {
        let t = progress.totals();
        let rows = t.rows_in;
        let dt = self.last_print.elapsed().as_secs_f64();
        let wm_s = if t.watermark == i64::MIN {
            "-".to_string()
        } else if t.watermark == i64::MAX {
            "end".to_string()
        } else {
            t.watermark.to_string()
        };
        let mib = |b: u64| b as f64 / 1048576.0;
        let _ = write!(
            std::io::stderr(),
            "\r{:>7.1}s  {:>12} events  {:>10.0} ev/s  {:>12} out  state {} + {} rows, {:.0} MiB + {:.0} MiB index  W {}   ",
            self.start.elapsed().as_secs_f64(),
            rows,
            (rows - self.last_rows) as f64 / dt,
            t.output_rows,
            t.state_rows[0],
            t.state_rows[1],
            mib(t.state_bytes),
            mib(t.index_bytes),
            wm_s
        );
        self.last_rows = rows;
        self.last_print = Instant::now();
    }
}

/// What the shards that succeeded report, merged.
struct Merged {
    counters: ShardCounters,
    latency: Histogram<u64>,
    stopped_at: Option<u64>,
}

/// Joins every shard; merges the results and keeps the error that explains the failure.
fn collect(handles: Vec<ShardHandle>) -> (Merged, Option<EngineError>) {
    let mut merged = Merged { counters: ShardCounters::default(), latency: new_histogram(), stopped_at: None };
    let mut first_err: Option<EngineError> = None;
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => {
                merged.counters.merge(&r.counters);
                let _ = merged.latency.add(&r.latency);
                merged.stopped_at = merged.stopped_at.or(r.stopped_at);
            }
            Ok(Err(e)) => rank_error(&mut first_err, e),
            Err(e) => {
                first_err.get_or_insert(EngineError::Panic { shard: id as u32, message: e.to_string() });
            }
        }
    }
    (merged, first_err)
}

/// Keeps the first error, except that a root cause replaces a "stopped because another
/// shard failed" echo.
fn rank_error(first_err: &mut Option<EngineError>, e: ShardError) {
    // Another shard's failure is the cause of these: report the cause.
    let secondary = |e: &ShardError| matches!(e, ShardError::Aborted(_) | ShardError::PeerRestore(_));
    let aborted = secondary(&e);
    if first_err.is_none() || (!aborted && matches!(&first_err, Some(EngineError::Shard(f)) if secondary(f))) {
        *first_err = Some(e.into());
    }
}

/// How a checkpointed run ends: the shards' error, or the coordinator's last word:
/// snapshots that became durable while the shards were ending, then the final
/// manifest and commit, or the check that the stop checkpoint completed.
fn conclude(
    c: &mut Coordinator,
    stopped_at: Option<u64>,
    first_err: Option<EngineError>,
) -> Result<String, EngineError> {
    c.drain();
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(c.conclude(stopped_at)?)
}

/// How a run without checkpointing ends. Its output files were written in progress:
/// a success commits them all; a stop signal (the shards ended as "aborted" and
/// nothing else failed) removes them and says so; another error leaves them in
/// progress (never under a final name) for the next run to remove.
fn conclude_unchecked(job: &Job, first_err: Option<EngineError>) -> Result<String, EngineError> {
    let dir = match &job.output {
        OutputTarget::Dir(d) => Some(d.as_path()),
        _ => None,
    };
    match first_err {
        None => {
            if let Some(d) = dir {
                layout::commit_all(d)?;
            }
            Ok("completed".to_string())
        }
        Some(EngineError::Shard(ShardError::Aborted(_))) if crate::sys::STOP_REQUESTED.load(Ordering::SeqCst) => {
            let output = match dir {
                Some(d) => {
                    layout::remove_uncommitted(d)?;
                    "its partial output files were removed"
                }
                None if job.output == OutputTarget::Stdout => "what it wrote to standard output is partial",
                None => "it had no output",
            };
            Err(EngineError::Interrupted { signal: crate::sys::stop_signal_name().unwrap_or("a signal"), output })
        }
        Some(e) => Err(e),
    }
}

fn report(job: &Job, merged: &Merged, outcome: String, start: Instant, cpu0: f64) -> Report {
    let counters = &merged.counters;
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
            extra_fields: counters.extra_fields[i],
            unmatched: counters.unmatched[i],
            unmatched_emitted: counters.unmatched_emitted[i],
            state_rows_peak: counters.state_rows_peak[i],
            state_bytes_peak: counters.state_bytes_peak_side[i],
        }
    };
    Report {
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
        latency: LatencyReport::from_histogram(&merged.latency),
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
            OutputTarget::Kafka(k) => format!("kafka:{}", k.topic),
        },
    }
}
