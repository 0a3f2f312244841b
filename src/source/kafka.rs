//! A Kafka topic partition as a source: one partition of the topic is one partition
//! in the sense of the join contract (its own clock, lateness and idleness), its rows
//! in offset order as a file's are in line order.
//!
//! Each source owns one librdkafka consumer `assign`ed to its one partition (never
//! `subscribe`d: which instance reads which partition is decided by
//! `engine.instance`, not by the group protocol). The partition's records are read
//! from its own librdkafka queue, split off the consumer's queue before the assign,
//! in batches through `rd_kafka_consume_batch_queue` (module `native`, the only
//! unsafe code here): no allocation and no clock read per record. The consumer's
//! queue (logs, client errors) is still served once per poll through rust-rdkafka.
//! The position a checkpoint records is the offset of the next record; a restart assigns at it. With `bounded = true`
//! the source reads up to the partition's end offset found when the job first
//! started (kept in the checkpoint, so a restarted backfill ends where it would have)
//! and then ends as a file does.
//!
//! Offsets lost to retention (a checkpoint's offset below the partition's start) are
//! an error, never a silent jump (`auto.offset.reset = error`). A broker outage is
//! retried by librdkafka; weft logs it (at most every [`WARN_EVERY`]) and keeps
//! polling. Unknown topics and authorization failures end the job with their cause.

use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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

/// librdkafka settings weft chooses differently from librdkafka's defaults (an input's
/// `options` may still set them). librdkafka fetches ahead until 100,000 records
/// per partition are buffered and then looks again only after a second: a backfill
/// over many partitions buffered whole topics (250 MB resident for 720,000 small
/// records, each in fresh memory: a page fault every 13 records) while the shard
/// could not keep up, and a partition whose buffer ran dry waited out the second.
/// 10,000 records per partition is a few milliseconds of work for a shard; looking
/// again after 10 ms keeps the buffer from running dry (perf/kafka-2026-12-07.md).
const FETCH_DEFAULTS: &[(&str, &str)] = &[("queued.min.messages", "10000"), ("fetch.queue.backoff.ms", "10")];

/// A consumer for `input` (not yet assigned), with weft's own properties.
fn consumer(input: &KafkaInput, what: String) -> Result<Client, SourceError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &input.brokers)
        .set("group.id", input.group.clone().unwrap_or_else(|| format!("weft-{}", input.topic)))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "true");
    for (k, v) in FETCH_DEFAULTS {
        c.set(*k, *v);
    }
    for (k, v) in &input.options {
        c.set(k, v);
    }
    c.create_with_context(LogContext { what: what.clone() })
        .map_err(|e| SourceError::Kafka(format!("kafka {what}: cannot create a consumer: {e}")))
}

/// Clients being destroyed off the thread that dropped them, until [`wait_closed`].
static CLOSING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Drops `client` (the last handle of a librdkafka client) on a thread of its own.
/// librdkafka's destroy takes ~100 ms per client (a broker thread sleeps once while
/// terminating), so closing a job's consumers one after another on the shard made a
/// job over 8 partitions end 0.8 s after its last row, and one over 64 take 6.4 s to
/// stop. If no thread can be started, the client is dropped here.
fn close_in_background<T: Send + 'static>(client: T) {
    let spawned = std::thread::Builder::new().name("weft-kafka-close".into()).spawn(move || drop(client));
    if let Ok(h) = spawned {
        CLOSING.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }
}

/// Waits until every client handed to [`close_in_background`] so far is destroyed.
pub fn wait_closed() {
    let handles = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|e| e.into_inner()));
    for h in handles {
        let _ = h.join();
    }
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
    let n = t.partitions().len() as u32;
    close_in_background(c);
    Ok(n)
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
    /// The partition's records and errors, split off its consumer's queue at open;
    /// it owns the consumer.
    queue: native::PartitionQueue,
    /// Assigned at `next` (done at the first poll, after any seek).
    assigned: bool,
    /// Offset of the next record to hand out; `None`: the partition's start.
    next: Option<i64>,
    /// Bounded reads: records at or past this offset are not read (found at the first
    /// poll of a job's first run, then kept in its checkpoints).
    end: Option<i64>,
    done: bool,
    b: RowBuilder,
    cells: super::csv::LineEncoder,
    last_warn: Option<Instant>,
}

impl KafkaSource {
    pub fn open(input: &KafkaInput, side: Side, partition: u32, schema: Schema) -> Result<KafkaSource, SourceError> {
        let name = format!("kafka:{}/{partition}", input.topic);
        let consumer = consumer(input, name.clone())?;
        // Before the assign, so that no record of the partition ever reaches the
        // consumer's queue.
        let queue = native::PartitionQueue::split(consumer, &input.topic, partition as i32).ok_or_else(|| {
            SourceError::Kafka(format!("{name} (brokers {}): cannot open the partition's queue", input.brokers))
        })?;
        let cells = super::csv::LineEncoder::new(&schema);
        Ok(KafkaSource {
            input: input.clone(),
            side,
            partition: partition as i32,
            schema,
            name,
            queue,
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
                .queue
                .client()
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
        self.queue.client().assign(&tpl).map_err(|e| self.fail(format!("cannot assign the partition: {e}")))?;
        self.assigned = true;
        Ok(())
    }

    /// Serves the consumer's own queue (librdkafka's logs and client errors, into
    /// weft's log; fatal errors end the job). Records never arrive there: the
    /// partition's queue was split off before the assign.
    fn serve_events(&mut self) -> Result<(), SourceError> {
        match self.queue.client().poll(Duration::ZERO) {
            None => Ok(()),
            Some(Err(KafkaError::PartitionEOF(_)) | Ok(_)) => Err(self.fail(
                "a record or the partition's end arrived on the consumer's queue, not on the partition's own".into(),
            )),
            Some(Err(e)) => self.on_error(e, None),
        }
    }

    /// An error from a poll: fatal ones end the job, others are logged and retried.
    /// `detail`: librdkafka's text for it, when it has one.
    fn on_error(&mut self, err: KafkaError, detail: Option<&str>) -> Result<(), SourceError> {
        let e = match detail {
            Some(d) if !d.is_empty() => format!("{err}: {d}"),
            _ => format!("{err}"),
        };
        let fatal = match err.rdkafka_error_code() {
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
            Some(RDKafkaErrorCode::Fatal) => Some(e.clone()),
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
    cells: &mut super::csv::LineEncoder,
    b: &mut RowBuilder,
) -> Result<(i64, u32), String> {
    let value = value.strip_suffix(b"\n").unwrap_or(value);
    let value = value.strip_suffix(b"\r").unwrap_or(value);
    match format {
        Format::Csv => cells.encode(value, schema, b).map(|ts| (ts, 0)),
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
        self.serve_events()?;
        let mut handed = 0;
        let mut error = None;
        let KafkaSource { queue, next, end, done, side, input, schema, cells, b, .. } = self;
        let (side, format, end) = (*side, input.format, *end);
        queue.serve(max_rows, &mut |r| {
            if r.err != native::NO_ERROR {
                if r.err == native::PARTITION_EOF {
                    // The log's end, at or past the end found at start.
                    if end.is_some() {
                        *done = true;
                        return false;
                    }
                    return true;
                }
                error = Some((
                    KafkaError::MessageConsumption(r.err.into()),
                    r.payload.map(String::from_utf8_lossy).map(|s| s.into_owned()),
                ));
                return false;
            }
            let offset = r.offset;
            if end.is_some_and(|end| offset >= end) {
                *done = true;
                return false;
            }
            handed += 1;
            *next = Some(offset + 1);
            let line = offset as u64;
            match r.payload {
                None => out(SourceItem::Dead { side, line, reason: "the record has no value".into(), raw: b"" }),
                Some(v) => match encode(format, v, schema, cells, b) {
                    Ok((ts, extra)) => out(SourceItem::Row { side, ts, row: b.bytes(), intended_ns: None, extra }),
                    Err(reason) => out(SourceItem::Dead { side, line, reason, raw: super::truncate_raw(v) }),
                },
            }
            if end.is_some_and(|end| offset + 1 >= end) {
                *done = true;
                return false;
            }
            true
        });
        if let Some((e, detail)) = error {
            self.on_error(e, detail.as_deref())?;
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

/// A partition's own librdkafka queue, read in batches through
/// `rd_kafka_consume_batch_queue`: the only unsafe code of the Kafka source.
///
/// Why the batch call and not `rd_kafka_consume_callback_queue`: the callback call
/// moves every queued op off the queue before serving them (`rd_kafka_q_serve0`), so
/// while weft works through them the fetcher sees an empty queue and fetches more:
/// `queued.min.messages` stops bounding what is buffered, and a backfill buffered
/// the whole topic (250 MB resident and a fresh page fault every 13 records in the
/// benchmark, perf/kafka-2026-12-07.md). The batch call takes ops off one at a time,
/// so the fetcher's view stays right. Records and consumer errors (the partition's
/// end, fetch errors: offset out of range, not authorized) come back as messages
/// with `err` set and are judged by `KafkaSource::on_error`; topic-level errors
/// (`rd_kafka_toppar_enq_error`: the topic deleted) are logged by librdkafka through
/// weft's log, as `BaseConsumer::poll` did with them. Logs and client errors go to
/// the main queue, which rust-rdkafka redirects to the consumer queue
/// (`rd_kafka_poll_set_consumer`); that queue is still served through
/// `BaseConsumer::poll`, so nothing rust-rdkafka expects to receive is lost.
mod native {
    use std::ptr::NonNull;

    use rdkafka::bindings as rdsys;
    use rdkafka::consumer::Consumer;

    use super::Client;

    pub const NO_ERROR: rdsys::rd_kafka_resp_err_t = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
    pub const PARTITION_EOF: rdsys::rd_kafka_resp_err_t = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF;

    /// Records taken off the queue per librdkafka call, at most.
    const BATCH: usize = 256;

    /// One record, or an error (`err` set; `payload` then holds librdkafka's text for
    /// it and `offset` the partition's end for `PARTITION_EOF`), borrowed for one
    /// call of the serve function.
    pub struct Record<'a> {
        pub err: rdsys::rd_kafka_resp_err_t,
        pub offset: i64,
        pub payload: Option<&'a [u8]>,
    }

    /// The fetch queue of one partition of `consumer`, forwarded nowhere.
    ///
    /// Invariant: `batch[at..len]` are messages taken off the queue and not yet
    /// handed out, owned here (destroyed once, after they are handed or on drop);
    /// they are handed before anything else, in order.
    pub struct PartitionQueue {
        queue: NonNull<rdsys::rd_kafka_queue_t>,
        batch: Box<[*mut rdsys::rd_kafka_message_t; BATCH]>,
        at: usize,
        len: usize,
        /// The consumer the queue belongs to; `None` only in `drop`, after which it
        /// is closed in the background (`close_in_background`).
        client: Option<Client>,
    }

    // SAFETY: librdkafka's queue handles and messages may be used from any thread
    // (queue ops are under the queue's lock; a message is owned by whoever holds it);
    // the whole is used by one thread at a time (`&mut`).
    unsafe impl Send for PartitionQueue {}

    impl PartitionQueue {
        /// Splits the partition's records off the consumer's queue. Before the
        /// assign: the queue is detached with `rd_kafka_queue_forward`, which marks
        /// it as forwarded by the application, so the fetch start of the assign
        /// leaves it detached and every record of the partition arrives here.
        pub fn split(consumer: Client, topic: &str, partition: i32) -> Option<PartitionQueue> {
            let topic = std::ffi::CString::new(topic).ok()?;
            let rk = consumer.client().native_ptr();
            // SAFETY: `rk` is the live client `consumer` owns; `topic` is a C string
            // that outlives the call. The result is a new handle (or null), ours.
            let queue = NonNull::new(unsafe { rdsys::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition) })?;
            // SAFETY: `queue` is the handle just returned; a null destination detaches it.
            unsafe { rdsys::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
            let batch = Box::new([std::ptr::null_mut(); BATCH]);
            Some(PartitionQueue { queue, batch, at: 0, len: 0, client: Some(consumer) })
        }

        pub fn client(&self) -> &Client {
            self.client.as_ref().expect("the client is taken only in drop")
        }

        /// Hands at most `limit` queued records and errors to `f` in order, without
        /// waiting, until `f` returns false (the rest are kept for the next call) or
        /// the queue is empty.
        pub fn serve(&mut self, limit: usize, f: &mut dyn FnMut(Record<'_>) -> bool) {
            let mut handed = 0;
            while handed < limit {
                if self.at == self.len {
                    let want = (limit - handed).min(BATCH);
                    // SAFETY: the queue handle is ours and alive (its client too: `self.client`
                    // is taken only in drop); timeout 0 never waits; librdkafka writes at most
                    // `want` message pointers into `batch`, which has room for BATCH.
                    let n = unsafe {
                        rdsys::rd_kafka_consume_batch_queue(self.queue.as_ptr(), 0, self.batch.as_mut_ptr(), want)
                    };
                    if n <= 0 {
                        break; // empty (librdkafka returns -1 only for a bad queue)
                    }
                    (self.at, self.len) = (0, n as usize);
                }
                let m = self.batch[self.at];
                self.at += 1;
                handed += 1;
                // SAFETY: `m` is a message librdkafka handed to us and nobody has
                // destroyed (the invariant); `payload` is null or `len` readable bytes,
                // alive until the destroy below.
                let more = unsafe {
                    let r = &*m;
                    let payload = (!r.payload.is_null())
                        .then(|| std::slice::from_raw_parts(r.payload.cast::<u8>().cast_const(), r.len));
                    let more = f(Record { err: r.err, offset: r.offset, payload });
                    rdsys::rd_kafka_message_destroy(m);
                    more
                };
                if !more {
                    break;
                }
            }
        }
    }

    impl Drop for PartitionQueue {
        fn drop(&mut self) {
            for &m in &self.batch[self.at..self.len] {
                // SAFETY: messages not handed out, still ours (the invariant), destroyed once.
                unsafe { rdsys::rd_kafka_message_destroy(m) };
            }
            // SAFETY: the handle from `rd_kafka_queue_get_partition`, destroyed once,
            // after its messages and before its client (still in `self.client`).
            unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
            if let Some(client) = self.client.take() {
                super::close_in_background(client);
            }
        }
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

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        for (_, c) in self.consumers.drain(..) {
            close_in_background(c);
        }
    }
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
