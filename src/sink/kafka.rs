//! The Kafka sink: publishes the committed epochs of the staging directory
//! ([`super::staging`]) to the output, late and dead-letter topics, exactly once.
//!
//! How exactly once holds. The shards write each epoch's rows to staged files, and a
//! checkpoint commits its epochs there as it does in an output directory. After each
//! checkpoint completes, the publisher thread takes every committed staged file, and
//! per shard sends the rows of its pending epochs in one Kafka transaction with the
//! producer of transactional id `<prefix>-<instance>-<shard>` (stable across restarts),
//! together with a marker in the progress topic (key: the transactional id; value:
//! this job's run id and the next epoch to publish). Only when the transaction has
//! committed are the files removed. So:
//! - a kill before the commit: a restart's `init_transactions` fences the old producer
//!   and aborts its open transaction (nothing of it is visible to a `read_committed`
//!   reader), and the files, still there, are sent again;
//! - a kill after the commit but before the files are removed: the restart reads the
//!   markers (read_committed) and removes, unsent, the files of epochs the marker
//!   says are published;
//! - epochs not yet committed by a checkpoint are never sent; a restart resets them
//!   with the checkpoint and the shards produce them again.
//!
//! Records: one per row, the row in the output's format without its line end, no key
//! (librdkafka's partitioner spreads them). Late rows carry a header `weft.input`
//! naming their input. Transaction errors that need an abort are aborted and the
//! epochs retried with backoff (shown in the log); a fatal error (a fenced producer,
//! no authorization) stops the job, whose checkpoints and staged files stay for the
//! same command to resume and publish.
//!
//! Limitation of the tests: librdkafka's mock cluster acknowledges transactions but
//! does not abort them (no control records), so the abort of a transaction cut by a
//! kill is the brokers' part and is not exercised here.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::staging::{self, Stream};
use crate::config::KafkaOutput;
use crate::log::KafkaLog;

/// How long metadata requests, `init_transactions` and a commit may take per try.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Retry backoff after a failed transaction: doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// The late rows' header naming their input.
pub const INPUT_HEADER: &str = "weft.input";

/// A publish that failed for good.
#[derive(Debug, thiserror::Error)]
#[error("kafka output: {0}")]
pub struct PublishError(pub String);

impl From<super::SinkError> for PublishError {
    fn from(e: super::SinkError) -> Self {
        PublishError(e.to_string())
    }
}

/// A publish attempt's failure: try again (after an abort), or stop.
enum Failure {
    Retry(String),
    Fatal(String),
}

fn classify(what: &str, e: KafkaError) -> Failure {
    let fatal = match &e {
        KafkaError::Transaction(t) => t.is_fatal() || !(t.is_retriable() || t.txn_requires_abort()),
        KafkaError::MessageProduction(c) => matches!(
            c,
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                | RDKafkaErrorCode::Fatal
        ),
        _ => false,
    };
    let m = format!("{what}: {e}");
    if fatal {
        Failure::Fatal(m)
    } else {
        Failure::Retry(m)
    }
}

fn client_config(k: &KafkaOutput) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    for (key, v) in &k.options {
        c.set(key, v);
    }
    c
}

/// Every topic the sink writes exists and can be described; otherwise an error naming
/// the topic, its role and the brokers.
fn check_topics(k: &KafkaOutput) -> Result<(), PublishError> {
    let what = format!("brokers {}", k.brokers);
    let c: BaseConsumer<KafkaLog> = client_config(k)
        .set("allow.auto.create.topics", "false")
        .create_with_context(KafkaLog { what: format!("output metadata ({what})") })
        .map_err(|e| PublishError(format!("cannot create a client for {what}: {e}")))?;
    let roles = [
        ("output.kafka.topic", &k.topic, "the output rows"),
        ("output.kafka.late_topic", &k.late_topic, "late rows"),
        ("output.kafka.dead_topic", &k.dead_topic, "dead letters"),
        ("output.kafka.progress_topic", &k.progress_topic, "weft's publish markers"),
    ];
    for (key, topic, role) in roles {
        let md = c.fetch_metadata(Some(topic), TIMEOUT).map_err(|e| {
            PublishError(format!(
                "topic `{topic}` ({key}, {role}): cannot read its metadata from {what} within {} s: {e} (are the \
                 brokers reachable?)",
                TIMEOUT.as_secs()
            ))
        })?;
        let missing = || {
            let create = if key == "output.kafka.progress_topic" {
                "create it with one partition and cleanup.policy=compact"
            } else {
                "create it"
            };
            PublishError(format!(
                "topic `{topic}` ({key}, {role}) does not exist on {what}: {create}, or name another with `{}`",
                key.rsplit('.').next().unwrap_or(key)
            ))
        };
        let Some(t) = md.topics().iter().find(|t| t.name() == topic.as_str()) else { return Err(missing()) };
        match t.error().map(RDKafkaErrorCode::from) {
            None if !t.partitions().is_empty() => {}
            None | Some(RDKafkaErrorCode::UnknownTopicOrPartition) | Some(RDKafkaErrorCode::UnknownTopic) => {
                return Err(missing())
            }
            Some(RDKafkaErrorCode::TopicAuthorizationFailed) => {
                return Err(PublishError(format!("topic `{topic}` ({key}): not authorized on {what}")))
            }
            Some(e) => return Err(PublishError(format!("topic `{topic}` ({key}) on {what}: {e}"))),
        }
    }
    Ok(())
}

/// One shard's transactional producer and the next epoch it has to publish.
struct ShardProducer {
    id: String,
    producer: BaseProducer<KafkaLog>,
    /// Epochs below this are published (from the marker read at start, then ours).
    next: u64,
}

/// What the publishing thread knows.
struct Publishing {
    out: KafkaOutput,
    instance: u32,
    run: String,
    /// Published epochs per transactional id, from the progress topic at start.
    markers: Option<BTreeMap<String, u64>>,
    producers: BTreeMap<u32, ShardProducer>,
}

/// The publisher of one run: a thread woken after each completed checkpoint.
pub struct Publisher {
    tx: Option<Sender<()>>,
    handle: Option<std::thread::JoinHandle<Result<(), PublishError>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Publisher {
    /// Checks the topics, then starts the thread, which first publishes what an
    /// earlier run left committed in the staging directory.
    pub fn start(out: &KafkaOutput, instance: u32, run: String) -> Result<Publisher, PublishError> {
        check_topics(out)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let p = Publishing { out: out.clone(), instance, run, markers: None, producers: BTreeMap::new() };
        let f = failed.clone();
        let handle = std::thread::Builder::new()
            .name("weft-kafka-out".into())
            .spawn(move || {
                let r = p.run(rx);
                if let Err(e) = &r {
                    *f.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                }
                r
            })
            .map_err(|e| PublishError(format!("cannot start the publishing thread: {e}")))?;
        Ok(Publisher { tx: Some(tx), handle: Some(handle), failed })
    }

    /// A checkpoint completed: its epochs are committed in the staging directory.
    pub fn wake(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Why publishing stopped for good, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publishes everything committed, then ends the thread.
    pub fn finish(mut self) -> Result<(), PublishError> {
        self.tx = None;
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(PublishError("the publishing thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Publishing {
    fn run(mut self, rx: Receiver<()>) -> Result<(), PublishError> {
        loop {
            self.round()?;
            match rx.recv() {
                Ok(()) => while rx.try_recv().is_ok() {},
                Err(_) => return self.round(),
            }
        }
    }

    /// Publishes what is committed, and says so (a test kills the process right after
    /// this line, when no transaction is open).
    fn round(&mut self) -> Result<(), PublishError> {
        let (records, txns) = self.publish_committed()?;
        if txns > 0 {
            tracing::info!(records, "kafka output: published {records} records in {txns} transactions");
        }
        tracing::debug!("kafka output: every committed epoch is published");
        Ok(())
    }

    fn dir(&self) -> &Path {
        &self.out.staging
    }

    /// Sends every committed staged file, shard by shard, then removes them. Returns
    /// the records and transactions.
    fn publish_committed(&mut self) -> Result<(u64, u64), PublishError> {
        let files = staging::committed(self.dir())?;
        let (mut total, mut txns) = (0, 0);
        if files.is_empty() {
            return Ok((total, txns));
        }
        let mut by_shard: BTreeMap<u32, Vec<staging::Staged>> = BTreeMap::new();
        for f in files {
            by_shard.entry(f.shard).or_default().push(f);
        }
        // Producers first (fencing any earlier one and ending its transaction), then
        // the markers, which are then final for these ids.
        for shard in by_shard.keys() {
            self.producer(*shard)?;
        }
        if self.markers.is_none() {
            self.markers = Some(self.read_markers()?);
        }
        let markers = self.markers.as_ref().expect("read above");
        for (shard, files) in by_shard {
            let p = self.producers.get_mut(&shard).expect("created above");
            if let Some(m) = markers.get(&p.id) {
                p.next = p.next.max(*m);
            }
            let (done, todo): (Vec<_>, Vec<_>) = files.into_iter().partition(|f| f.epoch < p.next);
            for f in &done {
                staging::remove(&f.path)?;
            }
            if !todo.is_empty() {
                let mut backoff = BACKOFF_MIN;
                loop {
                    match transaction(&self.out, &self.run, p, &todo) {
                        Ok(records) => {
                            let (a, b) = (todo[0].epoch, todo[todo.len() - 1].epoch);
                            total += records;
                            txns += 1;
                            tracing::debug!(
                                shard,
                                records,
                                "kafka output: published epochs {a}..={b} of shard {shard} ({records} records, \
                                 transactional id {})",
                                p.id
                            );
                            break;
                        }
                        Err(Failure::Fatal(m)) => return Err(PublishError(m)),
                        Err(Failure::Retry(m)) => {
                            tracing::warn!(
                                shard,
                                "kafka output: publishing shard {shard}'s epochs failed: {m}; the transaction is \
                                 aborted and sent again in {backoff:?}"
                            );
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                p.next = todo[todo.len() - 1].epoch + 1;
                for f in &todo {
                    staging::remove(&f.path)?;
                }
            }
            staging::sync_dirs(&self.out.staging)?;
        }
        Ok((total, txns))
    }

    /// The shard's producer, created and `init_transactions`ed on first use.
    fn producer(&mut self, shard: u32) -> Result<&mut ShardProducer, PublishError> {
        if !self.producers.contains_key(&shard) {
            let id = format!("{}-{}-{shard}", self.out.transactional_id, self.instance);
            let producer: BaseProducer<KafkaLog> = client_config(&self.out)
                .set("transactional.id", &id)
                .create_with_context(KafkaLog { what: format!("output (transactional id {id})") })
                .map_err(|e| PublishError(format!("cannot create the producer {id}: {e}")))?;
            let mut backoff = BACKOFF_MIN;
            loop {
                match producer.init_transactions(TIMEOUT) {
                    Ok(()) => break,
                    Err(e) => match classify(&format!("init_transactions of {id}"), e) {
                        Failure::Fatal(m) => return Err(PublishError(m)),
                        Failure::Retry(m) => {
                            tracing::warn!("kafka output: {m}; retrying in {backoff:?}");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    },
                }
            }
            self.producers.insert(shard, ShardProducer { id, producer, next: 0 });
        }
        Ok(self.producers.get_mut(&shard).expect("inserted above"))
    }

    /// This run's markers in the progress topic (read_committed, to its end): the next
    /// epoch to publish per transactional id. Markers of another run id are ignored.
    fn read_markers(&self) -> Result<BTreeMap<String, u64>, PublishError> {
        let topic = &self.out.progress_topic;
        let fail = |e: KafkaError| PublishError(format!("reading the progress topic `{topic}`: {e}"));
        let c: BaseConsumer<KafkaLog> = client_config(&self.out)
            .set("group.id", format!("{}-progress-reader", self.out.transactional_id))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .create_with_context(KafkaLog { what: format!("progress topic `{topic}`") })
            .map_err(fail)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning).map_err(fail)?;
        c.assign(&tpl).map_err(fail)?;
        let mut markers = BTreeMap::new();
        let deadline = Instant::now() + TIMEOUT * 4;
        loop {
            if Instant::now() > deadline {
                return Err(PublishError(format!(
                    "reading the progress topic `{topic}` did not reach its end within {} s (an open transaction \
                     of another producer holds it back?)",
                    (TIMEOUT * 4).as_secs()
                )));
            }
            match c.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => match classify("progress topic", e) {
                    Failure::Fatal(m) => return Err(PublishError(m)),
                    Failure::Retry(m) => tracing::debug!("kafka output: {m} (retrying)"),
                },
                Some(Ok(m)) => {
                    let (Some(key), Some(value)) = (m.key(), m.payload()) else { continue };
                    let Ok(key) = std::str::from_utf8(key) else { continue };
                    match Marker::parse(value) {
                        Some(mk) if mk.run == self.run => {
                            let e = markers.entry(key.to_string()).or_insert(0);
                            *e = (*e).max(mk.next_epoch);
                        }
                        Some(_) => {}
                        None => tracing::warn!(
                            "kafka output: progress topic `{topic}` offset {}: not a weft marker, skipped",
                            m.offset()
                        ),
                    }
                }
            }
        }
        Ok(markers)
    }
}

/// The progress topic's record value.
#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    run: String,
    next_epoch: u64,
}

impl Marker {
    fn parse(value: &[u8]) -> Option<Marker> {
        serde_json::from_slice(value).ok()
    }
}

/// Sends `todo` (one shard's committed files, in epoch order) and the marker in one
/// transaction. Returns the records sent; on failure the transaction is aborted.
fn transaction(out: &KafkaOutput, run: &str, p: &ShardProducer, todo: &[staging::Staged]) -> Result<u64, Failure> {
    let r = send_all(out, run, p, todo);
    if r.is_err() {
        if let Err(e) = p.producer.abort_transaction(TIMEOUT) {
            let m = format!("abort_transaction of {}", p.id);
            if let Failure::Fatal(m) = classify(&m, e) {
                return Err(Failure::Fatal(m));
            }
        }
    }
    r
}

fn send_all(out: &KafkaOutput, run: &str, p: &ShardProducer, todo: &[staging::Staged]) -> Result<u64, Failure> {
    let id = &p.id;
    p.producer.begin_transaction().map_err(|e| classify(&format!("begin_transaction of {id}"), e))?;
    let mut sent = 0u64;
    for f in todo {
        let bytes = std::fs::read(&f.path)
            .map_err(|e| Failure::Fatal(format!("{}: read staged records: {e}", f.path.display())))?;
        let records = staging::records(&f.path, &bytes).map_err(|e| Failure::Fatal(e.to_string()))?;
        let (topic, input) = match &f.stream {
            Stream::Output => (&out.topic, None),
            Stream::Late(name) => (&out.late_topic, Some(name.as_str())),
            Stream::DeadLetters => (&out.dead_topic, None),
        };
        for (i, rec) in records.iter().enumerate() {
            let mut r = BaseRecord::<(), [u8]>::to(topic).payload(rec);
            if let Some(name) = input {
                r = r.headers(OwnedHeaders::new().insert(Header { key: INPUT_HEADER, value: Some(name) }));
            }
            send(&p.producer, r).map_err(|e| match classify(&format!("topic `{topic}`"), e) {
                Failure::Fatal(m) => Failure::Fatal(format!("{m} (record {i} of {})", f.path.display())),
                retry => retry,
            })?;
            sent += 1;
        }
    }
    // Every record is written before the marker, so no reader sees the marker without
    // them, even on a cluster that shows transactions before they end (the mock).
    p.producer.flush(TIMEOUT).map_err(|e| classify(&format!("flush of {id}"), e))?;
    let next_epoch = todo[todo.len() - 1].epoch + 1;
    let marker = serde_json::to_vec(&Marker { run: run.to_string(), next_epoch }).expect("a marker serializes");
    send(&p.producer, BaseRecord::<str, [u8]>::to(&out.progress_topic).key(id.as_str()).payload(&marker).partition(0))
        .map_err(|e| classify(&format!("progress topic `{}`", out.progress_topic), e))?;
    let mut tries = 0;
    loop {
        match p.producer.commit_transaction(TIMEOUT) {
            Ok(()) => return Ok(sent),
            // Retriable: the same commit may be tried again (librdkafka's contract).
            Err(KafkaError::Transaction(t)) if t.is_retriable() && !t.txn_requires_abort() && tries < 5 => {
                tracing::warn!("kafka output: commit_transaction of {id}: {t}; trying again");
                tries += 1;
            }
            Err(e) => return Err(classify(&format!("commit_transaction of {id}"), e)),
        }
    }
}

/// Sends one record, waiting while librdkafka's queue is full.
fn send<K: rdkafka::message::ToBytes + ?Sized>(
    producer: &BaseProducer<KafkaLog>,
    mut r: BaseRecord<'_, K, [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(r) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(10));
                r = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
