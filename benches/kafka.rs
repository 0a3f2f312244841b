//! Events per CPU-second of a bounded job reading two 4-partition topics from
//! librdkafka's mock cluster (in this process, on loopback) against the same job over
//! the same rows as files (file i = partition i). Run by `scripts/kafka_bench.sh`,
//! which builds the release binary first; the weft processes are children, so their
//! CPU time (the report's `cpu_s`) excludes the mock broker's.
//!
//! `WEFT_BIN` (default `target/release/weft`), `KAFKA_BENCH_ROWS` (rows per partition
//! and topic, default 90,000: the mock keeps only about the last 100,000 records of a
//! partition), `KAFKA_BENCH_ROUNDS` (default 3, files and Kafka alternated).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: i32 = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The rows of partition `p` of one topic: keys with `k % 4 == p`, event time rising
/// with a little disorder (a xorshift, so the run is the same every time).
fn rows(seed: u64, p: i32, n: u64) -> Vec<String> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let k = (next() % 50_000) * PARTITIONS as u64 + p as u64;
            let ts = i as i64 * 4 + (next() % 200) as i64;
            format!("{k},{ts},v{}", next() % 1000)
        })
        .collect()
}

fn config(dir: &Path, name: &str, input: &dyn Fn(&str) -> String) -> PathBuf {
    let fields =
        r#"fields = [{ name = "k", type = "i64" }, { name = "ts", type = "i64" }, { name = "v", type = "string" }]"#;
    let mut t = String::new();
    for (side, topic) in [("left", "l"), ("right", "r")] {
        let _ = write!(
            t,
            "[{side}]\nname = \"{topic}\"\nformat = \"csv\"\n{}\nkey = [\"k\"]\ntime = \"ts\"\n{fields}\n\n",
            input(topic)
        );
    }
    t.push_str(
        "[join]\nkind = \"left\"\nlower_ms = 0\nupper_ms = 2000\nmax_out_of_orderness_ms = 300\n\n\
         [output]\npath = \"none\"\n\n[engine]\nshards = 1\npin_cores = false\nfile_split_kib = 0\n",
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, t).unwrap();
    p
}

/// Runs `weft run` on `cfg`; returns (events, cpu_s, wall_s) from its report.
fn run(bin: &Path, cfg: &Path, dir: &Path) -> (f64, f64, f64) {
    let report = dir.join("report.json");
    let out = Command::new(bin)
        .args(["run", "--quiet", "--config", cfg.to_str().unwrap(), "--report", report.to_str().unwrap()])
        .output()
        .expect("run weft");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let events = r["left"]["rows_in"].as_f64().unwrap() + r["right"]["rows_in"].as_f64().unwrap();
    (events, r["cpu_s"].as_f64().unwrap(), r["wall_s"].as_f64().unwrap_or(f64::NAN))
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `cargo bench -- --list`: nothing to list
    }
    let bin = PathBuf::from(std::env::var("WEFT_BIN").unwrap_or_else(|_| "target/release/weft".into()));
    assert!(bin.is_file(), "{} not found: build it (cargo build --release) or set WEFT_BIN", bin.display());
    let n = env_or("KAFKA_BENCH_ROWS", 90_000);
    let rounds = env_or("KAFKA_BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "5").create().unwrap();
    for (topic, seed) in [("l", 1u64), ("r", 1000)] {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
        for p in 0..PARTITIONS {
            let rows = rows(seed + p as u64, p, n);
            let mut file = String::from("k,ts,v\n");
            for row in &rows {
                file.push_str(row);
                file.push('\n');
                let mut rec = Some(BaseRecord::<(), str>::to(topic).partition(p).payload(row.as_str()));
                while let Some(r) = rec.take() {
                    if let Err((e, r)) = producer.send(r) {
                        assert_eq!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::QueueFull), "{e}");
                        producer.poll(Duration::from_millis(5));
                        rec = Some(r);
                    }
                }
            }
            std::fs::write(dir.path().join(format!("{topic}{p}.csv")), file).unwrap();
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let files = config(dir.path(), "files", &|t| {
        let paths: Vec<String> = (0..PARTITIONS).map(|p| format!("\"{t}{p}.csv\"")).collect();
        format!("paths = [{}]", paths.join(", "))
    });
    let kafka = config(dir.path(), "kafka", &|t| {
        format!("kafka = {{ brokers = \"{brokers}\", topic = \"{t}\", bounded = true }}")
    });
    println!("rows per partition and topic: {n}; partitions: {PARTITIONS}; 1 shard; output counted");
    println!("{:>6} {:>6} {:>10} {:>8} {:>8} {:>14}", "round", "source", "events", "cpu_s", "wall_s", "events/cpu_s");
    let mut per = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, (name, cfg)) in [("files", &files), ("kafka", &kafka)].into_iter().enumerate() {
            let (events, cpu, wall) = run(&bin, cfg, dir.path());
            per[i].push(events / cpu);
            println!("{round:>6} {name:>6} {events:>10} {cpu:>8.3} {wall:>8.3} {:>14.0}", events / cpu);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, k) = (median(&mut per[0]), median(&mut per[1]));
    println!("median events/cpu_s: files {f:.0}, kafka {k:.0}; kafka/files = {:.2} (goal >= 0.5)", k / f);
}
