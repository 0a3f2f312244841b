//! A Kafka topic partition as a source: one partition of the topic is one partition
//! in the sense of the join contract (its own clock, lateness and idleness), its rows
//! in offset order as a file's are in line order.
//!
//! Each source owns one librdkafka consumer `assign`ed to its one partition (never
//! `subscribe`d: which instance reads which partition is decided by
//! `engine.instance`, not by the group protocol). The position a checkpoint records
//! is the offset of the next record; a restart assigns at it. With `bounded = true`
//! the source reads up to the partition's end offset found when the job first
//! started (kept in the checkpoint, so a restarted backfill ends where it would have)
//! and then ends as a file does.
//!
//! Offsets lost to retention (a checkpoint's offset below the partition's start) are
//! an error, never a silent jump (`auto.offset.reset = error`). A broker outage is
//! retried by librdkafka; weft logs it (at most every [`WARN_EVERY`]) and keeps
//! polling. Unknown topics and authorization failures end the job with their cause.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::{PollStatus, Source, SourceError, SourceItem, SourcePos};
use crate::config::{Format, InputSource, Job, KafkaInput};
use crate::event::{RowBuilder, Side};
use crate::schema::Schema;

/// How long metadata and end-offset requests at start may take.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// A transient consumer error (brokers down) is logged at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(5);
/// How soon an empty partition is polled again.
const RETRY_NS: u64 = 1_000_000;

pub use crate::log::KafkaLog as LogContext;

type Client = BaseConsumer<LogContext>;

/// A consumer for `input` (not yet assigned), with weft's own properties.
fn consumer(input: &KafkaInput, what: String) -> Result<Client, SourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &input.brokers)
        .set("group.id", input.group.clone().unwrap_or_else(|| format!("weft-{}", input.topic)))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true");
    for (k, v) in &input.options {
        c.set(k, v);
    }
    c.create_with_context(LogContext { what: what.clone() })
        .map_err(|e| SourceError::Kafka(format!("kafka {what}: cannot create a consumer: {e}")))
}

/// Reads each Kafka input's partition count from its brokers (into
/// `KafkaInput::partitions`) and checks that two Kafka inputs are co-partitioned (the
/// same count). Errors name the brokers and topics: unreachable brokers, a missing
/// topic, an authorization failure.
pub fn resolve(job: &mut Job) -> Result<(), SourceError> {
    if [&job.left, &job.right].iter().any(|i| matches!(i.source, InputSource::Kafka(_))) {
        crate::sys::keep_freed_heap();
    }
    for side in [Side::Left, Side::Right] {
        let name = job.input(side).schema.name.clone();
        let input = match side {
            Side::Left => &mut job.left,
            Side::Right => &mut job.right,
        };
        let InputSource::Kafka(k) = &mut input.source else { continue };
        k.partitions = partition_count(k, &name)?;
    }
    if let (InputSource::Kafka(l), InputSource::Kafka(r)) = (&job.left.source, &job.right.source) {
        if l.partitions != r.partitions {
            return Err(SourceError::Kafka(format!(
                "topics are not co-partitioned: `{}` (input `{}`) has {} partitions and `{}` (input `{}`) has {}; \
                 a join over Kafka needs both topics with the same partition count, rows of one key in the same \
                 partition number of both (the same partitioner on both producers)",
                l.topic, job.left.schema.name, l.partitions, r.topic, job.right.schema.name, r.partitions
            )));
        }
    }
    Ok(())
}

fn partition_count(k: &KafkaInput, input: &str) -> Result<u32, SourceError> {
    let what = format!("topic `{}` (input `{input}`, brokers {})", k.topic, k.brokers);
    let c = consumer(k, what.clone())?;
    let md = c.fetch_metadata(Some(&k.topic), METADATA_TIMEOUT).map_err(|e| {
        SourceError::Kafka(format!(
            "kafka {what}: cannot read the topic's metadata within {} s: {e} (are the brokers reachable?)",
            METADATA_TIMEOUT.as_secs()
        ))
    })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == k.topic) else {
        return Err(SourceError::Kafka(format!("kafka {what}: the brokers do not know the topic")));
    };
    match t.error() {
        None => {}
        Some(e) => {
            let code: RDKafkaErrorCode = e.into();
            let why = match code {
                RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
                    "the topic does not exist".to_string()
                }
                RDKafkaErrorCode::TopicAuthorizationFailed => "not authorized to read the topic".to_string(),
                other => format!("{other}"),
            };
            return Err(SourceError::Kafka(format!("kafka {what}: {why}")));
        }
    }
    if t.partitions().is_empty() {
        return Err(SourceError::Kafka(format!("kafka {what}: the topic has no partitions")));
    }
    Ok(t.partitions().len() as u32)
}

/// The partitions of a Kafka input this instance reads: `p % instances == instance`.
pub fn own_partitions(k: &KafkaInput, instance: u32, instances: u32) -> impl Iterator<Item = u32> {
    (0..k.partitions).filter(move |p| p % instances == instance)
}

/// One partition of a topic.
pub struct KafkaSource {
    input: KafkaInput,
    side: Side,
    partition: i32,
    schema: Schema,
    name: String,
    consumer: Client,
    /// Assigned at `next` (done at the first poll, after any seek).
    assigned: bool,
    /// Offset of the next record to hand out; `None`: the partition's start.
    next: Option<i64>,
    /// Bounded reads: records at or past this offset are not read (found at the first
    /// poll of a job's first run, then kept in its checkpoints).
    end: Option<i64>,
    done: bool,
    b: RowBuilder,
    cells: super::csv::Cells,
    last_warn: Option<Instant>,
}

impl KafkaSource {
    pub fn open(input: &KafkaInput, side: Side, partition: u32, schema: Schema) -> Result<KafkaSource, SourceError> {
        let name = format!("kafka:{}/{partition}", input.topic);
        let consumer = consumer(input, name.clone())?;
        let cells = super::csv::Cells::new(schema.fields.len() + 1);
        Ok(KafkaSource {
            input: input.clone(),
            side,
            partition: partition as i32,
            schema,
            name,
            consumer,
            assigned: false,
            next: None,
            end: None,
            done: false,
            b: RowBuilder::new(),
            cells,
            last_warn: None,
        })
    }

    fn fail(&self, message: String) -> SourceError {
        SourceError::Kafka(format!("{} (brokers {}): {message}", self.name, self.input.brokers))
    }

    /// Assigns the partition at `next`; for a bounded read, finds its end first.
    fn assign(&mut self) -> Result<(), SourceError> {
        if self.input.bounded && self.end.is_none() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.input.topic, self.partition, METADATA_TIMEOUT)
                .map_err(|e| self.fail(format!("cannot read the partition's end offset: {e}")))?;
            tracing::info!(partition = %self.name, low, high, "bounded read: up to offset {high}");
            self.end = Some(high);
        }
        if let (Some(end), next) = (self.end, self.next.unwrap_or(0)) {
            if next >= end {
                self.done = true;
                return Ok(());
            }
        }
        let mut tpl = TopicPartitionList::new();
        let at = self.next.map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(&self.input.topic, self.partition, at)
            .map_err(|e| self.fail(format!("cannot assign offset {at:?}: {e}")))?;
        self.consumer.assign(&tpl).map_err(|e| self.fail(format!("cannot assign the partition: {e}")))?;
        self.assigned = true;
        Ok(())
    }

    /// An error from a poll: fatal ones end the job, others are logged and retried.
    fn on_error(&mut self, e: KafkaError) -> Result<(), SourceError> {
        let code = e.rdkafka_error_code();
        let fatal = match code {
            Some(RDKafkaErrorCode::OffsetOutOfRange) => Some(format!(
                "offset {} is not in the partition any more (deleted by retention?): the rows of the checkpoint's \
                 position cannot be read again ({e})",
                self.next.map_or("start".to_string(), |o| o.to_string())
            )),
            Some(
                RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition,
            ) => Some(format!("the topic or partition does not exist ({e})")),
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::SaslAuthenticationFailed,
            ) => Some(format!("not authorized ({e})")),
            Some(RDKafkaErrorCode::Fatal) => Some(format!("{e}")),
            _ => None,
        };
        if let Some(m) = fatal {
            return Err(self.fail(m));
        }
        if self.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.last_warn = Some(Instant::now());
            tracing::warn!(partition = %self.name, "kafka {}: {e} (retrying)", self.name);
        }
        Ok(())
    }
}

/// Encodes one record's value (one CSV line in field order, or one JSON object) into
/// `b`: its event time and the values no field answers to. Err: the dead-letter reason.
fn encode(
    format: Format,
    value: &[u8],
    schema: &Schema,
    cells: &mut super::csv::Cells,
    b: &mut RowBuilder,
) -> Result<(i64, u32), String> {
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    match format {
        Format::Csv => super::csv::encode_line(value, schema, cells, b).map(|ts| (ts, 0)),
        Format::Jsonl => super::jsonl::encode_json_line(value, schema, b),
    }
}

impl Source for KafkaSource {
    fn poll(
        &mut self,
        max_rows: usize,
        _now_ns: u64,
        out: &mut dyn FnMut(SourceItem<'_>),
    ) -> Result<PollStatus, SourceError> {
        if self.done {
            return Ok(PollStatus::Done);
        }
        if !self.assigned {
            self.assign()?;
            if self.done {
                return Ok(PollStatus::Done);
            }
        }
        let mut handed = 0;
        while handed < max_rows {
            let m = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // The log's end, at or past the end found at start.
                    if self.end.is_some() {
                        self.done = true;
                        break;
                    }
                    continue;
                }
                Some(Err(e)) => {
                    self.on_error(e)?;
                    break;
                }
                Some(Ok(m)) => m,
            };
            let offset = m.offset();
            if self.end.is_some_and(|end| offset >= end) {
                self.done = true;
                break;
            }
            handed += 1;
            self.next = Some(offset + 1);
            let line = offset as u64;
            let side = self.side;
            match m.payload() {
                None => out(SourceItem::Dead { side, line, reason: "the record has no value".into(), raw: b"" }),
                Some(v) => match encode(self.input.format, v, &self.schema, &mut self.cells, &mut self.b) {
                    Ok((ts, extra)) => out(SourceItem::Row { side, ts, row: self.b.bytes(), intended_ns: None, extra }),
                    Err(reason) => out(SourceItem::Dead { side, line, reason, raw: super::truncate_raw(v) }),
                },
            }
            if self.end.is_some_and(|end| offset + 1 >= end) {
                self.done = true;
                break;
            }
        }
        Ok(if handed > 0 {
            PollStatus::Rows
        } else if self.done {
            PollStatus::Done
        } else {
            PollStatus::Idle { retry_ns: RETRY_NS }
        })
    }

    fn partitions(&self) -> Vec<(Side, u32)> {
        vec![(self.side, self.partition as u32)]
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn position(&self) -> SourcePos {
        SourcePos::Kafka { offset: self.next, end: self.end }
    }

    fn seek(&mut self, pos: &SourcePos) -> Result<(), SourceError> {
        let SourcePos::Kafka { offset, end } = pos else { return Err(super::wrong_pos(&self.name, pos)) };
        if self.assigned {
            return Err(self.fail("seek after the first poll".into()));
        }
        self.next = *offset;
        // A bounded read keeps the end its job found first; a job that read unbounded
        // and now reads bounded ends at the end found now (at the first poll); one that
        // now reads unbounded has no end.
        self.end = if self.input.bounded { *end } else { None };
        Ok(())
    }
}

/// Commits the offsets of a completed checkpoint to each Kafka input's `group`, for
/// monitoring and lag tools only: weft resumes from its checkpoint, never from the
/// group. A failed commit is logged, never fatal (the next checkpoint commits again).
pub struct GroupCommitter {
    /// Per plan index: the input's consumer (by input) and the partition, for Kafka
    /// partitions of an input with a group.
    parts: Vec<Option<(usize, i32)>>,
    /// (topic, consumer with the input's group.id).
    consumers: Vec<(String, Client)>,
}

impl GroupCommitter {
    /// `None` when no Kafka input names a group.
    pub fn new(job: &Job) -> Option<GroupCommitter> {
        let mut consumers = Vec::new();
        let mut of_side = [None, None];
        for side in [Side::Left, Side::Right] {
            if let InputSource::Kafka(k) = &job.input(side).source {
                if k.group.is_some() {
                    let what = format!("topic `{}` (offsets to group `{}`)", k.topic, k.group.as_deref().unwrap_or(""));
                    match consumer(k, what) {
                        Ok(c) => {
                            of_side[side.idx()] = Some(consumers.len());
                            consumers.push((k.topic.clone(), c));
                        }
                        Err(e) => tracing::warn!("{e}: checkpointed offsets are not committed to the group"),
                    }
                }
            }
        }
        if consumers.is_empty() {
            return None;
        }
        let parts = super::plan(job)
            .iter()
            .map(|spec| match spec {
                super::PartitionSpec::Kafka { side, index, .. } => of_side[side.idx()].map(|c| (c, *index as i32)),
                _ => None,
            })
            .collect();
        Some(GroupCommitter { parts, consumers })
    }

    /// Commits `(plan index, position)` of a completed checkpoint (asynchronously,
    /// unless `wait`).
    pub fn commit<'a>(&self, positions: impl Iterator<Item = (u32, &'a SourcePos)>, wait: bool) {
        let mut lists: Vec<TopicPartitionList> = self.consumers.iter().map(|_| TopicPartitionList::new()).collect();
        for (i, pos) in positions {
            let (Some(Some((c, p))), SourcePos::Kafka { offset: Some(o), .. }) = (self.parts.get(i as usize), pos)
            else {
                continue;
            };
            let _ = lists[*c].add_partition_offset(&self.consumers[*c].0, *p, Offset::Offset(*o));
        }
        for ((topic, c), tpl) in self.consumers.iter().zip(lists) {
            if tpl.count() == 0 {
                continue;
            }
            let mode = if wait { rdkafka::consumer::CommitMode::Sync } else { rdkafka::consumer::CommitMode::Async };
            if let Err(e) = c.commit(&tpl, mode) {
                tracing::warn!("kafka topic `{topic}`: committing the checkpoint's offsets to the group failed: {e}");
            }
            // Serves the commit's callback queue (nothing waits on it).
            let _ = c.poll(Duration::ZERO);
        }
    }
}
