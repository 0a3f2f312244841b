//! Kafka inputs (src/source/kafka.rs) against librdkafka's mock cluster, which listens
//! on loopback in this test process (nothing to install). Each partition of a topic is
//! one partition of the join: a bounded read of two 4-partition topics gives the
//! answer of the batch join over the same rows as files (file i = partition i), also
//! when killed (-9) and resumed, and split over two instances. Topics that are not
//! co-partitioned are refused before anything runs.

mod common;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::path::Path;
use std::time::Duration;

const PARTITIONS: i32 = 4;

/// The rows of one partition, in offset order: disorder, late rows, an event-time jump.
fn partition_rows(seed: u64, n: usize) -> Vec<String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let mut ts = (i as i64) * 10 + rng.gen_range(0..200);
            if rng.gen_range(0..25) == 0 {
                ts -= rng.gen_range(200..3000);
            }
            if i == n / 2 {
                ts += 20_000;
            }
            // The key decides the partition on both topics (co-partitioned).
            let k = rng.gen_range(0..40) * PARTITIONS as i64 + (seed % PARTITIONS as u64) as i64;
            format!("{k},{ts},v{i}")
        })
        .collect()
}

/// Topics `l` and `r` with `partitions` partitions each, and the same rows as files
/// `l<p>.csv` / `r<p>.csv` in `dir`.
fn produce(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>, dir: &Path, n: usize) {
    produce_part(cluster, dir, n, 0..n)
}

/// [`produce`], with only the rows `sent` of each partition sent (the files hold all
/// `n`); the topics are created with the first part.
fn produce_part(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    dir: &Path,
    n: usize,
    sent: std::ops::Range<usize>,
) {
    if sent.start == 0 {
        for topic in ["l", "r"] {
            cluster.create_topic(topic, PARTITIONS, 1).unwrap();
        }
    }
    send_rows(&cluster.bootstrap_servers(), dir, n, sent)
}

/// Sends the rows `sent` of each partition of `l` and `r` and writes all `n` rows of
/// each as the files `l<p>.csv` / `r<p>.csv` in `dir`.
fn send_rows(brokers: &str, dir: &Path, n: usize, sent: std::ops::Range<usize>) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("producer");
    for (topic, salt) in [("l", 0u64), ("r", 100)] {
        for p in 0..PARTITIONS {
            let rows = partition_rows(salt + p as u64, n);
            let mut file = String::from("k,ts,v\n");
            for (i, row) in rows.iter().enumerate() {
                file.push_str(row);
                file.push('\n');
                if !sent.contains(&i) {
                    continue;
                }
                let rec = BaseRecord::<(), str>::to(topic).partition(p).payload(row.as_str());
                let mut rec = Some(rec);
                while let Some(r) = rec.take() {
                    if let Err((e, r)) = producer.send(r) {
                        assert!(
                            matches!(e.rdkafka_error_code(), Some(rdkafka::error::RDKafkaErrorCode::QueueFull)),
                            "{e}"
                        );
                        producer.poll(Duration::from_millis(10));
                        rec = Some(r);
                    }
                }
            }
            common::write(dir, &format!("{topic}{p}.csv"), file);
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

const FIELDS: &str =
    r#"fields = [{ name = "k", type = "i64" }, { name = "ts", type = "i64" }, { name = "v", type = "string" }]"#;

fn join_and_engine(out: &str, engine: &str) -> String {
    format!(
        "[join]\nkind = \"full\"\nlower_ms = -300\nupper_ms = 500\nmax_out_of_orderness_ms = 300\n\
         allowed_lateness_ms = 100\n\n[output]\npath = \"{out}\"\n\n[engine]\nshards = 2\npin_cores = false\n\
         batch_events = 64\nstate_bucket_ms = 500\n{engine}\n"
    )
}

/// The job over topics `l` and `r` (bounded reads).
fn kafka_job(brokers: &str, out: &str, engine: &str) -> String {
    kafka_job_with(brokers, true, out, engine)
}

fn kafka_job_with(brokers: &str, bounded: bool, out: &str, engine: &str) -> String {
    let input = |side: &str, topic: &str| {
        format!(
            "[{side}]\nname = \"{topic}\"\nformat = \"csv\"\nkafka = {{ brokers = \"{brokers}\", topic = \"{topic}\", \
             bounded = {bounded}, group = \"weft-test\" }}\nkey = [\"k\"]\ntime = \"ts\"\n{FIELDS}\n\n"
        )
    };
    format!("{}{}{}", input("left", "l"), input("right", "r"), join_and_engine(out, engine))
}

/// The same job over the files `l<p>.csv` / `r<p>.csv`.
fn file_job(out: &str) -> String {
    let input = |side: &str, topic: &str| {
        let paths: Vec<String> = (0..PARTITIONS).map(|p| format!("\"{topic}{p}.csv\"")).collect();
        format!(
            "[{side}]\nname = \"{topic}\"\nformat = \"csv\"\npaths = [{}]\nkey = [\"k\"]\ntime = \"ts\"\n{FIELDS}\n\n",
            paths.join(", ")
        )
    };
    format!("{}{}{}", input("left", "l"), input("right", "r"), join_and_engine(out, "file_split_kib = 0"))
}

/// The batch join of the files against the streaming output in `dir/out`.
fn assert_equals_batch(dir: &Path, out: &str) {
    let job = common::job_from_toml(&file_job(out), dir).unwrap();
    let v = weft::oracle::diff::validate_job(&job, &dir.join(out), 10).unwrap();
    assert!(v.is_equal(), "Kafka read differs from the batch answer:\n{}", serde_json::to_string_pretty(&v).unwrap());
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster")
}

#[test]
fn a_bounded_read_of_two_topics_equals_the_batch_join_of_the_same_rows_as_files() {
    let t = tempfile::tempdir().unwrap();
    let c = cluster();
    produce(&c, t.path(), 3000);
    let report = common::run(&kafka_job(&c.bootstrap_servers(), "out", ""), t.path());
    assert_eq!(report.left.rows_in, 4 * 3000, "every record read once");
    assert!(report.left.late > 0 && report.right.late > 0, "the data must have late rows");
    assert_equals_batch(t.path(), "out");
}

#[test]
fn two_instances_split_the_partitions_and_their_union_equals_the_batch_answer() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let c = cluster();
    produce(&c, dir, 2000);
    let brokers = c.bootstrap_servers();
    let mut rows = 0;
    for i in 0..2 {
        let r = common::run(&kafka_job(&brokers, &format!("out{i}"), &format!("instance = {i}\ninstances = 2")), dir);
        rows += r.left.rows_in;
        assert_eq!(r.left.rows_in, 2 * 2000, "instance {i} reads partitions p % 2 == {i}");
    }
    assert_eq!(rows, 4 * 2000);
    // The union: every file of both output directories in one.
    std::fs::create_dir(dir.join("out")).unwrap();
    for i in 0..2 {
        for sub in ["", "late"] {
            let from = dir.join(format!("out{i}")).join(sub);
            let Ok(rd) = std::fs::read_dir(&from) else { continue };
            std::fs::create_dir_all(dir.join("out").join(sub)).unwrap();
            for e in rd {
                let p = e.unwrap().path();
                if p.is_file() {
                    // part-<shard>.csv and late/<input>-<shard>.csv: the instance goes
                    // before the shard number, so that no two names collide.
                    let name = p.file_name().unwrap().to_string_lossy().replacen('-', &format!("-{i}"), 1);
                    std::fs::copy(&p, dir.join("out").join(sub).join(name)).unwrap();
                }
            }
        }
    }
    assert_equals_batch(dir, "out");
}

#[test]
fn a_bounded_kafka_job_killed_and_resumed_equals_the_batch_answer() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let c = cluster();
    produce(&c, dir, 40_000);
    let ck = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 20\ncheckpoints_retained = 3";
    let cfg = common::write(dir, "job.toml", kafka_job(&c.bootstrap_servers(), "out", ck));
    let mut killed = 0;
    for _ in 0..2 {
        if common::crash::run_killed_at_checkpoint(&cfg, 2) {
            killed += 1;
        }
    }
    let out = common::weft_run(&cfg, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!("killed {killed} times");
    assert_equals_batch(dir, "out");
    // The offsets of completed checkpoints were committed to the group (for lag tools),
    // and at the end the ends of the partitions.
    let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_servers())
        .set("group.id", "weft-test")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for topic in ["l", "r"] {
        for p in 0..PARTITIONS {
            tpl.add_partition(topic, p);
        }
    }
    let committed = rdkafka::consumer::Consumer::committed_offsets(&c, tpl, Duration::from_secs(10)).unwrap();
    let offsets: Vec<i64> = committed.elements().iter().filter_map(|e| e.offset().to_raw()).collect();
    println!("committed offsets: {offsets:?}");
    assert_eq!(offsets, vec![40_000; 2 * PARTITIONS as usize], "the group's offsets at the end");
}

#[test]
fn topics_with_different_partition_counts_are_refused_naming_both() {
    let t = tempfile::tempdir().unwrap();
    let c = cluster();
    c.create_topic("l", 4, 1).unwrap();
    c.create_topic("r", 3, 1).unwrap();
    let cfg = common::write(t.path(), "job.toml", kafka_job(&c.bootstrap_servers(), "out", ""));
    let out = common::weft_run(&cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not co-partitioned") && err.contains("`l`") && err.contains("4 partitions"), "{err}");
    assert!(err.contains("`r`") && err.contains("has 3"), "{err}");
    assert!(!t.path().join("out").exists(), "nothing written");
}

#[test]
fn a_missing_topic_and_unreachable_brokers_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let c = cluster();
    c.create_topic("l", 2, 1).unwrap();
    let cfg = common::write(t.path(), "job.toml", kafka_job(&c.bootstrap_servers(), "out", ""));
    let out = common::weft_run(&cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("topic `r`") && err.contains("does not exist"), "{err}");
    drop(c);
    // A port nothing listens on.
    let cfg = common::write(t.path(), "job2.toml", kafka_job("127.0.0.1:1", "out", ""));
    let out = common::weft_run(&cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("brokers 127.0.0.1:1") && err.contains("reachable"), "{err}");
}

#[test]
fn an_unbounded_job_stops_on_sigterm_with_a_checkpoint_and_resumes_exactly_once() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let c = cluster();
    let n = 6000;
    produce_part(&c, dir, n, 0..n / 2);
    let ck = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 50";
    let cfg = common::write(dir, "job.toml", kafka_job_with(&c.bootstrap_servers(), false, "out", ck));
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", "--quiet", "--log-level", "debug", "--config", cfg.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        let mut completes = 0;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("complete at") {
                completes += 1;
                if completes == 4 {
                    let _ = tx.send(());
                }
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    // Unbounded: it never ends by itself; after a few checkpoints, stop it.
    rx.recv_timeout(common::timeout()).expect("checkpoints complete while the job runs");
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let mut report = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut report).unwrap();
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(report.contains("stopped at checkpoint"), "{report}\n{log}");
    // The rest of the rows arrive; the job resumes, now to the topics' ends.
    produce_part(&c, dir, n, n / 2..n);
    let cfg = common::write(dir, "job.toml", kafka_job_with(&c.bootstrap_servers(), true, "out", ck));
    let out = common::weft_run(&cfg, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_equals_batch(dir, "out");
}

#[test]
fn a_record_that_does_not_parse_is_a_dead_letter_naming_topic_partition_and_offset() {
    let t = tempfile::tempdir().unwrap();
    let c = cluster();
    produce(&c, t.path(), 10);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", c.bootstrap_servers()).create().unwrap();
    producer.send(BaseRecord::<(), str>::to("l").partition(2).payload("7,not-a-time,x")).unwrap();
    producer.send(BaseRecord::<(), str>::to("l").partition(2).payload("7,5,x,extra")).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let report = common::run(&kafka_job(&c.bootstrap_servers(), "out", ""), t.path());
    assert_eq!(report.left.dead_letters, 2);
    let dead = std::fs::read_to_string(t.path().join("out/dead/part-0.jsonl"))
        .or_else(|_| std::fs::read_to_string(t.path().join("out/dead/part-1.jsonl")))
        .unwrap();
    let lines: Vec<serde_json::Value> = dead.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{dead}");
    assert_eq!(lines[0]["file"], "kafka:l/2", "{dead}");
    assert_eq!((lines[0]["line"].as_u64(), lines[1]["line"].as_u64()), (Some(10), Some(11)), "offsets: {dead}");
    assert!(lines[0]["reason"].as_str().unwrap().contains("ts"), "{dead}");
    assert!(lines[1]["reason"].as_str().unwrap().contains("expected 3 columns, found 4"), "{dead}");
    assert_eq!(lines[1]["raw"], "7,5,x,extra");
}

// ---------------------------------------------------------------------------------
// The Kafka sink (src/sink/kafka.rs). Output, late and dead-letter topics, and the
// progress topic of weft's markers. The mock cluster acknowledges transactions
// without aborting any (no control records), so a kill in the middle of a
// transaction would leave its records visible here, unlike on a real cluster: the
// kill tests below kill right after a publish round, when no transaction is open.

const OUT_TOPIC: &str = "joined";

/// The output topics, with `partitions` partitions for the output and late rows.
fn create_output_topics(c: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>, partitions: i32) {
    for (t, p) in [("joined", partitions), ("joined.late", partitions), ("joined.dead", 1), ("joined.weft-progress", 1)]
    {
        c.create_topic(t, p, 1).unwrap();
    }
}

/// A job config over topics `l`/`r` whose output goes to the topic `joined`.
fn kafka_to_kafka_job(brokers: &str, bounded: bool, engine: &str) -> String {
    kafka_job_with(brokers, bounded, "KOUT", engine)
        .replace("path = \"KOUT\"", &format!("kafka = {{ brokers = \"{brokers}\", topic = \"{OUT_TOPIC}\" }}"))
}

/// Every record of `topic` (read_committed, all partitions, to their ends), with its
/// `weft.input` header if any.
fn read_topic(brokers: &str, topic: &str) -> Vec<(Option<String>, String)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts = md.topics()[0].partitions().len();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, rdkafka::Offset::Beginning).unwrap();
    }
    c.assign(&tpl).unwrap();
    let (mut ended, mut out) = (std::collections::BTreeSet::new(), Vec::new());
    let deadline = std::time::Instant::now() + common::timeout();
    while ended.len() < parts {
        assert!(std::time::Instant::now() < deadline, "reading {topic} did not end");
        match c.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => panic!("{topic}: {e}"),
            Some(Ok(m)) => {
                let input = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == weft::sink::kafka::INPUT_HEADER)
                        .map(|h| String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap())
                });
                out.push((input, String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap()));
            }
        }
    }
    out
}

/// The output and late topics as an output directory `dir/<out>` (CSV with headers),
/// for `weft validate`'s comparison with the batch answer.
fn topics_to_dir(brokers: &str, dir: &Path, out: &str) -> usize {
    let job = common::job_from_toml(&file_job("x"), dir).unwrap();
    let (l, r) = (&job.left.schema, &job.right.schema);
    let header = weft::codec::format::OutputFormatter::new(job.output_format, l, r).header();
    std::fs::create_dir_all(dir.join(out).join("late")).unwrap();
    let mut part = String::from_utf8(header).unwrap();
    let rows = read_topic(brokers, OUT_TOPIC);
    for (_, row) in &rows {
        part.push_str(row);
        part.push('\n');
    }
    common::write(&dir.join(out), "part-0.csv", part);
    for schema in [l, r] {
        let h = weft::codec::format::InputFormatter::new(weft::config::Format::Csv, schema).header();
        common::write(&dir.join(out).join("late"), &format!("{}-0.csv", schema.name), String::from_utf8(h).unwrap());
    }
    for (input, row) in read_topic(brokers, &format!("{OUT_TOPIC}.late")) {
        let input = input.expect("a late row names its input");
        let p = dir.join(out).join("late").join(format!("{input}-0.csv"));
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str(&row);
        text.push('\n');
        std::fs::write(&p, text).unwrap();
    }
    rows.len()
}

/// No staged record is left once a run has published everything.
fn assert_nothing_staged(dir: &Path) {
    let staged = weft::sink::staging::committed(&dir.join("ckpt").join(weft::config::KAFKA_STAGING_DIR)).unwrap();
    assert!(staged.is_empty(), "left unpublished: {staged:?}");
}

#[test]
fn a_bounded_job_from_kafka_to_kafka_publishes_the_batch_answer_read_committed() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let c = cluster();
    produce(&c, dir, 3000);
    create_output_topics(&c, 4);
    let brokers = c.bootstrap_servers();
    let ck = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 30";
    let report = common::run(&kafka_to_kafka_job(&brokers, true, ck), dir);
    let rows = topics_to_dir(&brokers, dir, "kout");
    assert_eq!(report.output_rows, rows as u64, "every output row is one record, once");
    assert!(rows > 0 && !read_topic(&brokers, "joined.late").is_empty(), "output and late rows were published");
    assert_equals_batch(dir, "kout");
    assert_nothing_staged(dir);
    assert!(!read_topic(&brokers, "joined.weft-progress").is_empty(), "markers were written");
}

#[test]
fn a_kafka_to_kafka_job_killed_and_resumed_publishes_each_row_once() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let c = cluster();
    let (n, slices) = (8000, 16);
    produce_part(&c, dir, n, 0..n / slices);
    create_output_topics(&c, 4);
    let brokers = c.bootstrap_servers();
    let ck = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 150";
    let cfg = common::write(dir, "job.toml", kafka_to_kafka_job(&brokers, false, ck));
    // The rows arrive in slices while the job runs (unbounded); it is killed (-9)
    // right after its 6th publish round, with rows of epochs not yet checkpointed
    // staged (and more arriving), and earlier epochs published.
    let feeder = {
        let (brokers, dir) = (brokers.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            for k in 1..slices {
                std::thread::sleep(Duration::from_millis(100));
                send_rows(&brokers, &dir, n, k * n / slices..(k + 1) * n / slices);
            }
        })
    };
    let mut cmd = common::weft();
    cmd.args(["run", "--quiet", "--log-level", "debug", "--config", cfg.to_str().unwrap()]);
    let kill =
        common::crash::KillAt { line: Some(("every committed epoch is published".into(), 8)), delay: Duration::ZERO };
    let a = common::crash::attempt(cmd, Some(&kill), common::timeout());
    assert!(a.killed, "an unbounded job runs until killed: {}", a.stderr);
    assert!(a.stderr.contains("kafka output: published"), "some epochs were published: {}", a.stderr);
    let before = read_topic(&brokers, OUT_TOPIC).len();
    // The rest arrives; the same job resumes, now bounded, to the topics' ends.
    feeder.join().unwrap();
    let cfg = common::write(dir, "job.toml", kafka_to_kafka_job(&brokers, true, ck));
    let out = common::weft_run(&cfg, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows = topics_to_dir(&brokers, dir, "kout");
    println!("{before} records before the kill, {rows} in all");
    assert!(before > 0 && rows > before);
    assert_equals_batch(dir, "kout");
    assert_nothing_staged(dir);
}

/// Staged files as the shards write them: one framed record per row.
fn stage(dir: &Path, name: &str, rows: &[&str]) {
    let mut buf = Vec::new();
    for r in rows {
        let at = buf.len();
        weft::sink::staging::begin_frame(&mut buf);
        buf.extend_from_slice(r.as_bytes());
        buf.push(b'\n');
        weft::sink::staging::end_frame(&mut buf, at);
    }
    std::fs::write(dir.join(name), buf).unwrap();
}

#[test]
fn epochs_already_published_are_not_sent_again_and_another_run_starts_anew() {
    use weft::sink::kafka::Publisher;
    use weft::sink::staging;
    let t = tempfile::tempdir().unwrap();
    let c = cluster();
    create_output_topics(&c, 2);
    let brokers = c.bootstrap_servers();
    // The inputs are not read here: only the output's resolved settings are used.
    let job =
        common::job_from_toml(&kafka_to_kafka_job(&brokers, true, "checkpoint_dir = \"ckpt\""), t.path()).unwrap();
    let weft::config::OutputTarget::Kafka(k) = &job.output else { panic!() };
    let s = &k.staging;
    let run = staging::start_fresh(s).unwrap();
    stage(s, "part-0-1.rec", &["a1", "a2"]);
    stage(s, "part-1-1.rec", &["b1"]);
    stage(s, "late/l-0-1.rec", &["1,5,late"]);
    stage(s, "dead/part-1-2.rec", &["{\"input\":\"l\"}"]);
    Publisher::start(k, 0, run.clone()).unwrap().finish().unwrap();
    assert!(staging::committed(s).unwrap().is_empty(), "published files are removed");
    let rows = |t: &str| {
        let mut v: Vec<String> = read_topic(&brokers, t).into_iter().map(|(_, r)| r).collect();
        v.sort();
        v
    };
    assert_eq!(rows("joined"), ["a1", "a2", "b1"]);
    assert_eq!(read_topic(&brokers, "joined.late"), [(Some("l".to_string()), "1,5,late".to_string())]);
    assert_eq!(rows("joined.dead"), ["{\"input\":\"l\"}"]);
    // A crash after the transaction of epoch 1 committed but before its files were
    // removed: a new process sends epoch 2 only.
    stage(s, "part-0-1.rec", &["a1", "a2"]);
    stage(s, "part-0-2.rec", &["a3"]);
    Publisher::start(k, 0, run.clone()).unwrap().finish().unwrap();
    assert_eq!(rows("joined"), ["a1", "a2", "a3", "b1"], "epoch 1 of shard 0 was sent once");
    assert!(staging::committed(s).unwrap().is_empty());
    // The job started again from the beginning (its checkpoints removed): a new run id,
    // whose epoch 1 is this run's, not the one published before.
    let run2 = staging::start_fresh(s).unwrap();
    assert_ne!(run, run2);
    stage(s, "part-0-1.rec", &["c1"]);
    Publisher::start(k, 0, run2).unwrap().finish().unwrap();
    assert_eq!(rows("joined"), ["a1", "a2", "a3", "b1", "c1"]);
}

#[test]
fn a_missing_output_topic_is_refused_before_anything_runs() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let c = cluster();
    produce(&c, dir, 10);
    for topic in ["joined", "joined.late", "joined.dead"] {
        c.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = c.bootstrap_servers();
    let cfg = common::write(dir, "job.toml", kafka_to_kafka_job(&brokers, true, "checkpoint_dir = \"ckpt\""));
    let out = common::weft_run(&cfg, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("topic `joined.weft-progress`") && err.contains("does not exist") && err.contains("compact"),
        "{err}"
    );
    assert!(!dir.join("ckpt").join("chk-1.json").exists(), "no checkpoint was taken");
}
