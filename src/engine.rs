//! Runs a job: plans partitions, wires one ring per ordered pair of shards, starts one
//! pinned glommio executor per shard, shows progress, and merges the shard reports.
//!
//! The calling thread only watches (progress, then join); all work happens on the
//! shard executors.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::channels::shared_channel;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Job, OutputTarget, Side};
use crate::metrics::{
    new_histogram, process_cpu_s, InputReport, LatencyReport, Progress, Report, ShardCounters,
};
use crate::ring::Batch;
use crate::shard::{self, ShardCtx, ShardError};
use crate::sink::{prepare_output_dir, SinkError};
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
}

/// Runs `job` to the end of its inputs and returns the report.
pub fn run(job: &Job, opts: &RunOptions) -> Result<Report, EngineError> {
    let start = Instant::now();
    let cpu0 = process_cpu_s();
    let shards = job.shards as usize;
    let job = Arc::new(job.clone());

    match &job.output {
        OutputTarget::Dir(d) => prepare_output_dir(d, job.output_format.ext(), opts.force)?,
        OutputTarget::Stdout => {
            let h = crate::sink::format::OutputFormatter::new(
                job.output_format,
                &job.left.schema,
                &job.right.schema,
            )
            .header();
            let mut so = std::io::stdout().lock();
            so.write_all(&h)
                .and_then(|_| so.flush())
                .map_err(|e| SinkError {
                    path: "<stdout>".into(),
                    op: "write",
                    source: e,
                })?;
        }
        OutputTarget::None => {}
    }

    // Partition i is read by shard i % shards.
    let mut specs: Vec<Vec<source::PartitionSpec>> = vec![Vec::new(); shards];
    for (i, s) in source::plan(&job).into_iter().enumerate() {
        specs[i % shards].push(s);
    }

    // senders[s][d] / receivers[d]: the ring s -> d.
    let mut senders: Vec<Vec<Option<shared_channel::SharedSender<Batch>>>> = (0..shards)
        .map(|_| (0..shards).map(|_| None).collect())
        .collect();
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
        };
        let pin = if job.pin_cores && !cores.is_empty() {
            Some(cores[id % cores.len()])
        } else {
            None
        };
        let progress2 = progress.clone();
        let builder = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("weft-shard-{id}"))
            .io_memory(job.io_memory_kib as usize * 1024);
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
            .map_err(|e| EngineError::Executor {
                shard: id as u32,
                message: e.to_string(),
            })?;
        handles.push(handle);
    }

    let show = opts.progress && std::io::stderr().is_terminal();
    let mut last_print = Instant::now();
    let mut last_rows = 0u64;
    while progress.finished.load(Ordering::Relaxed) < shards as u64 {
        std::thread::sleep(Duration::from_millis(50));
        if show && last_print.elapsed() >= Duration::from_secs(1) {
            let (rows, out, state, wm) = progress.totals();
            let dt = last_print.elapsed().as_secs_f64();
            let wm_s = if wm == i64::MIN {
                "-".to_string()
            } else if wm == i64::MAX {
                "end".to_string()
            } else {
                wm.to_string()
            };
            eprint!(
                "\r{:>7.1}s  {:>12} events  {:>10.0} ev/s  {:>12} out  {:>10} in state  W {}   ",
                start.elapsed().as_secs_f64(),
                rows,
                (rows - last_rows) as f64 / dt,
                out,
                state,
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
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => {
                counters.merge(&r.counters);
                let _ = latency.add(&r.latency);
            }
            Ok(Err(e)) => {
                // Prefer the root cause over the "stopped because another failed" echoes.
                let aborted = matches!(e, ShardError::Aborted(_));
                if first_err.is_none()
                    || (!aborted
                        && matches!(first_err, Some(EngineError::Shard(ShardError::Aborted(_)))))
                {
                    first_err = Some(e.into());
                }
            }
            Err(e) => {
                first_err.get_or_insert(EngineError::Panic {
                    shard: id as u32,
                    message: e.to_string(),
                });
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }

    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = process_cpu_s() - cpu0;
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
        arena_files_peak: counters.arena_files_peak,
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        output: match &job.output {
            OutputTarget::Dir(d) => d.display().to_string(),
            OutputTarget::Stdout => "-".into(),
            OutputTarget::None => "none".into(),
        },
    })
}
