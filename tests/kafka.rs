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
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().expect("producer");
    for (topic, salt) in [("l", 0u64), ("r", 100)] {
        if sent.start == 0 {
            cluster.create_topic(topic, PARTITIONS, 1).unwrap();
        }
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
    // The offsets of completed checkpoints were committed to the group (for lag tools).
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
    assert!(offsets.iter().any(|&o| o > 0) && offsets.iter().all(|&o| o <= 40_000), "{offsets:?}");
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
