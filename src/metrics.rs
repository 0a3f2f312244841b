//! Counters, latency histograms and the job report.
//!
//! Each shard owns its counters and its HdrHistogram (no sharing on the hot path);
//! the engine merges them at the end. Live progress goes through [`Progress`], a few
//! relaxed atomics per shard that the shard stores once per round. The metrics
//! endpoint is in `metrics/`: what shards publish for it (`live.rs`), the Prometheus
//! families (`exposition.rs`), and the HTTP thread (`server.rs`).

pub mod exposition;
pub mod live;
pub mod server;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::event::Side;

/// Latency histogram range: 1 ns .. 1 hour, 3 significant digits.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// What one shard counted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardCounters {
    pub rows_in: [u64; 2],
    pub late: [u64; 2],
    pub dead: [u64; 2],
    pub pairs: u64,
    pub unmatched: [u64; 2],
    pub unmatched_emitted: [u64; 2],
    pub output_rows: u64,
    pub state_rows_peak: [u64; 2],
    pub state_bytes_peak: u64,
    /// Per side (the sum above is the peak of both together).
    #[serde(default)]
    pub state_bytes_peak_side: [u64; 2],
    pub keys_peak: u64,
    pub index_bytes_peak: u64,
    pub buckets_peak: u64,
    pub arena_files_peak: u64,
    pub bytes_reclaimed: u64,
    /// Rows read from cold buckets (with `pread`), since the start.
    #[serde(default)]
    pub cold_reads: u64,
    /// Highest resident file-backed bytes of the process seen by a memory-budget check
    /// (before it released anything); process-wide, so shards merge it by max.
    #[serde(default)]
    pub resident_file_peak: u64,
    /// Values of rows read that no field answers to (extra CSV columns, unknown JSON
    /// keys), per side: ignored, counted.
    #[serde(default)]
    pub extra_fields: [u64; 2],
}

impl ShardCounters {
    pub fn merge(&mut self, o: &ShardCounters) {
        for i in 0..2 {
            self.rows_in[i] += o.rows_in[i];
            self.late[i] += o.late[i];
            self.dead[i] += o.dead[i];
            self.extra_fields[i] += o.extra_fields[i];
            self.unmatched[i] += o.unmatched[i];
            self.unmatched_emitted[i] += o.unmatched_emitted[i];
            self.state_rows_peak[i] += o.state_rows_peak[i];
            self.state_bytes_peak_side[i] += o.state_bytes_peak_side[i];
        }
        self.pairs += o.pairs;
        self.output_rows += o.output_rows;
        self.state_bytes_peak += o.state_bytes_peak;
        self.keys_peak += o.keys_peak;
        self.index_bytes_peak += o.index_bytes_peak;
        self.buckets_peak += o.buckets_peak;
        self.arena_files_peak += o.arena_files_peak;
        self.bytes_reclaimed += o.bytes_reclaimed;
        self.cold_reads += o.cold_reads;
        self.resident_file_peak = self.resident_file_peak.max(o.resident_file_peak);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InputReport {
    pub name: String,
    pub rows_in: u64,
    pub late: u64,
    pub dead_letters: u64,
    /// Values of rows read that no field answers to: extra CSV columns (counted once
    /// per row) and unknown JSON keys. Ignored, as a file of an older or newer schema
    /// version carries them.
    pub extra_fields: u64,
    pub unmatched: u64,
    pub unmatched_emitted: u64,
    pub state_rows_peak: u64,
    /// Bytes of this side's state buffers at their peak (heap capacity or arena files).
    pub state_bytes_peak: u64,
}

#[derive(Clone, Debug, Serialize, Default)]
pub struct LatencyReport {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencyReport {
    pub fn from_histogram(h: &Histogram<u64>) -> LatencyReport {
        let us = |v: u64| v as f64 / 1000.0;
        LatencyReport {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        }
    }
}

/// The final report of a run (`--report FILE` writes it as JSON).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub left: InputReport,
    pub right: InputReport,
    pub matched_pairs: u64,
    pub output_rows: u64,
    pub events: u64,
    pub wall_s: f64,
    pub events_per_s: f64,
    /// User + system CPU seconds of the whole process (from the OS).
    pub cpu_s: f64,
    pub events_per_cpu_s: f64,
    pub shards: u32,
    /// End-to-end latency of matched pairs: emit time minus the arrival of the later row.
    pub latency: LatencyReport,
    pub state_bytes_peak: u64,
    pub keys_peak: u64,
    pub index_bytes_peak: u64,
    pub bytes_reclaimed: u64,
    /// Stored rows read from buckets whose pages the memory budget released (`pread`).
    pub state_cold_reads: u64,
    /// With a memory budget: the highest resident file-backed bytes (mapped arenas and
    /// index tables, plus the binary's text) seen at a budget check, before releasing.
    pub state_resident_peak_bytes: u64,
    pub arena_files_peak: u64,
    /// Peak resident set of the process (VmHWM), from the OS.
    pub peak_rss_bytes: u64,
    /// "completed", or how the run ended otherwise (stopped at a checkpoint).
    pub outcome: String,
    pub output: String,
}

impl Report {
    pub fn input(&self, side: Side) -> &InputReport {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    /// A short human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        if self.outcome != "completed" {
            s += &format!("{:<24}{}\n", "outcome", self.outcome);
        }
        let l = &self.left;
        let r = &self.right;
        s += &format!("{:<24}{:>16}{:>16}\n", "", l.name, r.name);
        s += &format!("{:<24}{:>16}{:>16}\n", "rows in", l.rows_in, r.rows_in);
        s += &format!("{:<24}{:>16}{:>16}\n", "late", l.late, r.late);
        s += &format!("{:<24}{:>16}{:>16}\n", "dead letters", l.dead_letters, r.dead_letters);
        if l.extra_fields + r.extra_fields > 0 {
            s += &format!("{:<24}{:>16}{:>16}\n", "extra fields ignored", l.extra_fields, r.extra_fields);
        }
        s += &format!("{:<24}{:>16}{:>16}\n", "unmatched", l.unmatched, r.unmatched);
        s += &format!("{:<24}{:>16}{:>16}\n", "unmatched emitted", l.unmatched_emitted, r.unmatched_emitted);
        s += &format!("{:<24}{:>16}{:>16}\n", "state rows (peak)", l.state_rows_peak, r.state_rows_peak);
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        s += &format!("{:<24}{:>16}{:>16}\n", "state bytes (peak)", mib(l.state_bytes_peak), mib(r.state_bytes_peak));
        s += &format!("{:<24}{:>16}\n", "matched pairs", self.matched_pairs);
        s += &format!("{:<24}{:>16}\n", "output rows", self.output_rows);
        s += &format!("{:<24}{:>16.3}\n", "wall s", self.wall_s);
        s += &format!("{:<24}{:>16.0}\n", "events/s", self.events_per_s);
        s += &format!(
            "{:<24}{:>16.0}   ({:.2} CPU s, {} shards)\n",
            "events/CPU-s", self.events_per_cpu_s, self.cpu_s, self.shards
        );
        let t = &self.latency;
        s += &format!(
            "{:<24}p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({} pairs)\n",
            "latency", t.p50_us, t.p90_us, t.p99_us, t.p999_us, t.max_us, t.count
        );
        s += &format!(
            "{:<24}{} keys, {:.1} MiB rows, {:.1} MiB index, {} arena files, {:.1} MiB reclaimed, {} cold reads\n",
            "state peak (sum)",
            self.keys_peak,
            self.state_bytes_peak as f64 / 1048576.0,
            self.index_bytes_peak as f64 / 1048576.0,
            self.arena_files_peak,
            self.bytes_reclaimed as f64 / 1048576.0,
            self.state_cold_reads
        );
        s += &format!("{:<24}{:.1} MiB\n", "peak RSS", self.peak_rss_bytes as f64 / 1048576.0);
        if self.state_resident_peak_bytes > 0 {
            s += &format!(
                "{:<24}{:.1} MiB (file-backed, at budget checks)\n",
                "state resident (peak)",
                self.state_resident_peak_bytes as f64 / 1048576.0
            );
        }
        s
    }
}

/// Live figures of one shard, for the progress line.
#[derive(Default)]
pub struct ShardProgress {
    pub rows_in: AtomicU64,
    pub output_rows: AtomicU64,
    /// Rows in state per side.
    pub state_rows: [AtomicU64; 2],
    /// Bytes of state buffers (both sides) and of the index.
    pub state_bytes: AtomicU64,
    pub index_bytes: AtomicU64,
    pub watermark: AtomicI64,
    /// For the memory budget: bytes of this shard's index tables in mapped files, and
    /// all it keeps resident for its state but the rows (index, cold flags).
    pub index_mapped: AtomicU64,
    pub budget_fixed: AtomicU64,
}

pub struct Progress {
    pub shards: Vec<ShardProgress>,
    /// Set when any shard fails: the others stop reading.
    pub abort: AtomicBool,
    pub finished: AtomicU64,
}

impl Progress {
    pub fn new(shards: usize) -> Progress {
        Progress {
            shards: (0..shards)
                .map(|_| ShardProgress { watermark: AtomicI64::new(i64::MIN), ..Default::default() })
                .collect(),
            abort: AtomicBool::new(false),
            finished: AtomicU64::new(0),
        }
    }

    /// Sums over the shards: rows in, output rows, rows in state per side, state and
    /// index bytes, and the lowest watermark.
    pub fn totals(&self) -> Totals {
        let mut t = Totals { watermark: i64::MAX, ..Totals::default() };
        for s in &self.shards {
            t.rows_in += s.rows_in.load(Ordering::Relaxed);
            t.output_rows += s.output_rows.load(Ordering::Relaxed);
            for i in 0..2 {
                t.state_rows[i] += s.state_rows[i].load(Ordering::Relaxed);
            }
            t.state_bytes += s.state_bytes.load(Ordering::Relaxed);
            t.index_bytes += s.index_bytes.load(Ordering::Relaxed);
            t.watermark = t.watermark.min(s.watermark.load(Ordering::Relaxed));
        }
        t
    }
}

/// What [`Progress::totals`] returns.
#[derive(Debug, Default)]
pub struct Totals {
    pub rows_in: u64,
    pub output_rows: u64,
    pub state_rows: [u64; 2],
    pub state_bytes: u64,
    pub index_bytes: u64,
    pub watermark: i64,
}
