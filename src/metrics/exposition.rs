//! The Prometheus families of a running job (`GET /metrics`), in the OpenMetrics text
//! format written by the `prometheus-client` crate: each scrape copies [`Live`] and
//! encodes the copy through a [`Collector`], so values are the shards' own counters,
//! not a second set kept in step with them. Every family is named `weft_...`;
//! `docs/METRICS.md` lists them. Counters get the format's `_total` suffix.

use std::fmt::Error;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::live::{CheckpointLive, Live, ShardLive};
use crate::metrics::ShardCounters;

/// Upper bounds of the latency histogram's buckets, seconds.
pub const LATENCY_BUCKETS_S: [f64; 16] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The endpoint's page: every family, from a copy of `live` taken now.
pub fn render(live: &Live, now_unix_s: f64, resident_bytes: Option<u64>) -> String {
    let (shards, checkpoints) = live.snapshot();
    let occupancy = (0..live.shards)
        .flat_map(|f| (0..live.shards).filter(move |&t| t != f).map(move |t| (f, t)))
        .map(|(f, t)| (f, t, live.ring_occupancy(f, t)))
        .collect();
    let scrape = Scrape {
        inputs: live.inputs.clone(),
        budget_bytes: live.budget_bytes,
        ring_slots: live.ring_slots,
        shards,
        checkpoints,
        occupancy,
        now_unix_s,
        resident_bytes,
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

/// One scrape's copy of everything.
#[derive(Debug)]
struct Scrape {
    inputs: [String; 2],
    budget_bytes: u64,
    ring_slots: u64,
    shards: Vec<ShardLive>,
    checkpoints: CheckpointLive,
    /// (from, to, batches in the ring).
    occupancy: Vec<(usize, usize, u64)>,
    now_unix_s: f64,
    resident_bytes: Option<u64>,
}

/// Label pairs of one series: names are literals, values are computed.
type Labels = Vec<(&'static str, String)>;

/// Writes one family: `values` are (labels, value) pairs.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in values {
        if labels.is_empty() {
            // One series without labels: `name 1`, not `name{} 1`.
            v.encode(m)?;
            return Ok(());
        }
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn counter_s(ns: u64) -> ConstCounter<f64> {
    ConstCounter::new(ns as f64 / 1e9)
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(v.min(i64::MAX as u64) as i64)
}

impl Scrape {
    fn total(&self) -> ShardCounters {
        let mut t = ShardCounters::default();
        for s in &self.shards {
            t.merge(&s.counters);
        }
        t
    }

    fn per_input<'a>(
        &'a self,
        f: impl Fn(usize) -> u64 + 'a,
    ) -> impl Iterator<Item = (Labels, ConstCounter<u64>)> + 'a {
        (0..2).map(move |i| (vec![("input", self.inputs[i].clone())], counter(f(i))))
    }

    fn per_shard<'a, M: 'a>(&'a self, f: impl Fn(&ShardLive) -> M + 'a) -> impl Iterator<Item = (Labels, M)> + 'a {
        self.shards.iter().enumerate().map(move |(i, s)| (vec![("shard", i.to_string())], f(s)))
    }

    fn per_shard_input(&self, f: impl Fn(&ShardLive, usize) -> u64) -> Vec<(Labels, ConstGauge<i64>)> {
        let mut out = Vec::new();
        for (i, s) in self.shards.iter().enumerate() {
            for side in 0..2 {
                out.push((vec![("shard", i.to_string()), ("input", self.inputs[side].clone())], gauge(f(s, side))));
            }
        }
        out
    }

    fn per_partition<'a, M: 'a>(
        &'a self,
        f: impl Fn(&crate::metrics::live::PartitionLive) -> Option<M> + 'a,
    ) -> impl Iterator<Item = (Labels, M)> + 'a {
        merged_partitions(&self.shards).into_iter().filter_map(move |p| {
            let v = f(&p)?;
            Some((vec![("input", self.inputs[p.side].clone()), ("partition", p.name.clone())], v))
        })
    }

    fn inputs_and_output(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let t = self.total();
        let c = MetricType::Counter;
        family(
            enc,
            "weft_input_rows",
            "Rows read per input (the job's total, as the report counts it)",
            c,
            self.per_input(|i| t.rows_in[i]),
        )?;
        family(
            enc,
            "weft_input_late_rows",
            "Late rows per input, written to the late side output",
            c,
            self.per_input(|i| t.late[i]),
        )?;
        family(
            enc,
            "weft_input_dead_letters",
            "Rows per input that did not parse, written to the dead letters",
            c,
            self.per_input(|i| t.dead[i]),
        )?;
        family(
            enc,
            "weft_input_extra_fields",
            "Values of rows read that no field answers to (extra CSV columns, unknown JSON keys): ignored",
            c,
            self.per_input(|i| t.extra_fields[i]),
        )?;
        let behind = |i: usize| self.shards.iter().map(|s| s.late_behind_watermark[i]).sum::<u64>();
        family(enc, "weft_late_behind_watermark_rows", "Of the late rows: those that reached their shard behind its watermark (after an idle partition), since start", c, self.per_input(behind))?;
        family(
            enc,
            "weft_partition_rows",
            "Rows read per partition, since this process started",
            c,
            self.per_partition(|p| Some(counter(p.rows))),
        )?;
        family(
            enc,
            "weft_partition_late_rows",
            "Rows late against their partition's clock, since this process started",
            c,
            self.per_partition(|p| Some(counter(p.late))),
        )?;
        family(
            enc,
            "weft_partition_dead_letters",
            "Rows per partition that did not parse, since this process started",
            c,
            self.per_partition(|p| Some(counter(p.dead))),
        )?;
        let g = MetricType::Gauge;
        family(
            enc,
            "weft_partition_watermark_ms",
            "Event-time watermark of a partition (ms; absent before its first row)",
            g,
            self.per_partition(|p| p.watermark_ms.map(ConstGauge::new)),
        )?;
        family(
            enc,
            "weft_partition_idle",
            "1 while a partition is idle (engine.idle_timeout_ms without a row)",
            g,
            self.per_partition(|p| Some(ConstGauge::new(p.idle as i64))),
        )?;
        let mut out = vec![(vec![("kind", "pair".to_string())], counter(t.pairs))];
        for i in 0..2 {
            out.push((
                vec![("kind", "unmatched".to_string()), ("input", self.inputs[i].clone())],
                counter(t.unmatched_emitted[i]),
            ));
        }
        family(
            enc,
            "weft_output_rows",
            "Join output rows by kind: matched pairs, and unmatched rows emitted per side",
            c,
            out,
        )
    }

    fn shards_and_rings(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let c = MetricType::Counter;
        let g = MetricType::Gauge;
        family(
            enc,
            "weft_shard_events",
            "Events a shard joined (routed to it), since start; rate() is its events/s",
            c,
            self.per_shard(|s| counter(s.events)),
        )?;
        family(
            enc,
            "weft_shard_busy_seconds",
            "Time a shard's executor ran tasks (not parked), since start",
            c,
            self.per_shard(|s| counter_s(s.busy_ns)),
        )?;
        family(
            enc,
            "weft_shard_ring_blocked_seconds",
            "Time a shard's source waited for room in a full ring, since start",
            c,
            self.per_shard(|s| counter_s(s.blocked_ns)),
        )?;
        let wm =
            self.per_shard(|s| s.watermark_ms).filter(|(_, w)| *w != i64::MIN).map(|(l, w)| (l, ConstGauge::new(w)));
        family(
            enc,
            "weft_shard_watermark_ms",
            "A shard's event-time watermark (ms), the least of its senders' marks",
            g,
            wm,
        )?;
        let marks: Vec<i64> = self.shards.iter().map(|s| s.watermark_ms).collect();
        if !marks.is_empty() && marks.iter().all(|&w| w != i64::MIN && w != i64::MAX) {
            let engine = *marks.iter().min().unwrap();
            let lag = self.now_unix_s - engine as f64 / 1000.0;
            family(
                enc,
                "weft_watermark_lag_seconds",
                "Wall clock minus the engine's watermark (the least over shards), for event times in Unix ms",
                g,
                [(vec![], ConstGauge::new(lag))],
            )?;
        }
        let occ =
            self.occupancy.iter().map(|&(f, t, n)| (vec![("from", f.to_string()), ("to", t.to_string())], gauge(n)));
        family(
            enc,
            "weft_ring_occupancy_batches",
            "Batches in the ring from one shard to another, sent and not yet taken",
            g,
            occ,
        )?;
        family(
            enc,
            "weft_ring_capacity_batches",
            "Slots of each ring (engine.ring_slots)",
            g,
            [(vec![], gauge(self.ring_slots))],
        )
    }

    fn state(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let g = MetricType::Gauge;
        family(enc, "weft_state_rows", "Rows in join state", g, self.per_shard_input(|s, i| s.state_rows[i]))?;
        family(
            enc,
            "weft_state_bytes",
            "Bytes of state row buffers (heap or arena files)",
            g,
            self.per_shard_input(|s, i| s.state_bytes[i]),
        )?;
        family(enc, "weft_state_keys", "Keys in join state", g, self.per_shard(|s| gauge(s.keys)))?;
        family(enc, "weft_state_index_bytes", "Bytes of the state index", g, self.per_shard(|s| gauge(s.index_bytes)))?;
        family(
            enc,
            "weft_state_cold_reads",
            "Stored rows read back from released (cold) buckets",
            MetricType::Counter,
            self.per_shard(|s| counter(s.counters.cold_reads)),
        )?;
        if self.budget_bytes > 0 {
            family(
                enc,
                "weft_state_budget_bytes",
                "engine.state_memory_mb, in bytes",
                g,
                [(vec![], gauge(self.budget_bytes))],
            )?;
            if let Some(r) = self.resident_bytes {
                family(enc, "weft_state_resident_bytes", "Resident file-backed bytes of the process (mapped arenas and index, plus the binary), against the budget", g, [(vec![], gauge(r))])?;
            }
        }
        Ok(())
    }

    fn checkpoints(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let k = &self.checkpoints;
        if !k.enabled {
            return Ok(());
        }
        let one = |v| [(Vec::<(&str, String)>::new(), v)];
        let c = MetricType::Counter;
        let g = MetricType::Gauge;
        family(
            enc,
            "weft_checkpoints_completed",
            "Checkpoints completed by this process",
            c,
            one(counter(k.completed)),
        )?;
        family(
            enc,
            "weft_checkpoints_failed",
            "Checkpoints that failed in this process (the previous one stays the one to restore)",
            c,
            one(counter(k.failed)),
        )?;
        family(
            enc,
            "weft_checkpoint_last",
            "Number of the newest complete checkpoint (what a restart resumes from)",
            g,
            [(vec![], gauge(k.last))],
        )?;
        family(
            enc,
            "weft_checkpoint_last_duration_seconds",
            "Time from asking for the newest complete checkpoint to its manifest",
            g,
            [(vec![], ConstGauge::new(k.last_duration_s))],
        )?;
        family(
            enc,
            "weft_checkpoint_last_state_bytes",
            "Bytes of the state files the newest complete checkpoint references",
            g,
            [(vec![], gauge(k.last_state_bytes))],
        )?;
        family(
            enc,
            "weft_checkpoint_last_success_timestamp_seconds",
            "When the newest checkpoint completed (Unix seconds; 0: none yet)",
            g,
            [(vec![], ConstGauge::new(k.last_success_unix_s))],
        )
    }

    fn latency(&self, enc: &mut DescriptorEncoder) -> Result<(), Error> {
        let mut merged: Option<hdrhistogram::Histogram<u64>> = None;
        for h in self.shards.iter().filter_map(|s| s.latency.as_ref()) {
            match merged.as_mut() {
                Some(m) => {
                    let _ = m.add(h);
                }
                None => merged = Some(h.clone()),
            }
        }
        let h = merged.unwrap_or_else(crate::metrics::new_histogram);
        // The encoder sums the buckets' counts itself, and takes f64::MAX for +Inf.
        let mut below = 0;
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(LATENCY_BUCKETS_S.len() + 1);
        for &b in &LATENCY_BUCKETS_S {
            let upto = h.count_between(0, (b * 1e9) as u64);
            buckets.push((b, upto - below));
            below = upto;
        }
        buckets.push((f64::MAX, h.len() - below));
        // HdrHistogram keeps no exact sum: its mean (to 3 digits) times the count.
        let sum_s = h.mean() * h.len() as f64 / 1e9;
        let mut m = enc.encode_descriptor(
            "weft_latency_seconds",
            "End-to-end latency of matched pairs: emit time minus the arrival of the later row",
            None,
            MetricType::Histogram,
        )?;
        m.encode_histogram::<()>(sum_s, h.len(), &buckets, None)
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        family(
            &mut enc,
            "weft_info",
            "The running weft (value 1)",
            MetricType::Gauge,
            [(
                vec![("version", env!("CARGO_PKG_VERSION").to_string()), ("shards", self.shards.len().to_string())],
                ConstGauge::new(1i64),
            )],
        )?;
        self.inputs_and_output(&mut enc)?;
        self.shards_and_rings(&mut enc)?;
        self.state(&mut enc)?;
        self.checkpoints(&mut enc)?;
        self.latency(&mut enc)
    }
}

/// Every partition once: a file split across shards (source/split.rs) is read by
/// every shard, each reporting its part; one series per partition sums their counts
/// and shows the lowest watermark of the parts still reading (the one that holds the
/// engine watermark), idle or done only when every part is.
fn merged_partitions(shards: &[ShardLive]) -> Vec<crate::metrics::live::PartitionLive> {
    let mut out: Vec<crate::metrics::live::PartitionLive> = Vec::new();
    for p in shards.iter().flat_map(|s| &s.partitions) {
        let Some(m) = out.iter_mut().find(|m| m.side == p.side && m.name == p.name) else {
            out.push(p.clone());
            continue;
        };
        m.rows += p.rows;
        m.late += p.late;
        m.dead += p.dead;
        m.watermark_ms = match (m.done, p.done) {
            (true, false) => p.watermark_ms,
            (false, true) => m.watermark_ms,
            (false, false) => match (m.watermark_ms, p.watermark_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            (true, true) => m.watermark_ms.max(p.watermark_ms),
        };
        m.idle &= p.idle;
        m.done &= p.done;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::live::PartitionLive;

    fn part(name: &str, rows: u64, wm: Option<i64>, done: bool) -> PartitionLive {
        PartitionLive { side: 0, name: name.into(), rows, late: 1, dead: 0, watermark_ms: wm, idle: false, done }
    }

    #[test]
    fn a_split_file_is_one_series_with_summed_counts_and_the_lowest_live_watermark() {
        let shard = |partitions| ShardLive { partitions, ..Default::default() };
        let a = shard(vec![part("big.csv", 10, Some(500), false), part("small.csv", 3, Some(7), false)]);
        let b = shard(vec![part("big.csv", 20, Some(300), false)]);
        let c = shard(vec![part("big.csv", 5, Some(900), true)]);
        let m = merged_partitions(&[a, b, c]);
        assert_eq!(m.len(), 2, "one series per partition");
        assert_eq!((m[0].name.as_str(), m[0].rows, m[0].late), ("big.csv", 35, 3));
        assert_eq!(m[0].watermark_ms, Some(300), "the lowest of the parts still reading");
        assert!(!m[0].done, "done only when every part is");
        assert_eq!((m[1].name.as_str(), m[1].rows), ("small.csv", 3));
    }
}
