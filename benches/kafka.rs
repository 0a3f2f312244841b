//! Events per CPU-second of a bounded job reading two 4-partition topics from
//! librdkafka's mock cluster (in this process, on loopback) against the same job over
//! the same rows as files (file i = partition i). Run by `scripts/kafka_bench.sh`,
//! which builds the release binary first; the weft processes are children, so their
//! CPU time (the report's `cpu_s`) excludes the mock broker's. It then runs each job's
//! sources alone (read and parse, no join) and a bare rust-rdkafka poll loop, also as
//! children, to show where the difference lies (perf/kafka-2026-12-08.md).
//!
//! `WEFT_BIN` (default `target/release/weft`), `KAFKA_BENCH_ROWS` (rows per partition
//! and topic, default 90,000: the mock keeps only about the last 100,000 records of a
//! partition), `KAFKA_BENCH_ROUNDS` (default 3, files and Kafka alternated),
//! `KAFKA_BENCH_OPTIONS` (librdkafka options for the Kafka run, default none).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weft::config::JobConfig;
use weft::source::{PollStatus, SourceItem};

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

/// CPU seconds (user + system) this process has used so far.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given; nothing else is touched.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// The floor under any Kafka source: librdkafka alone reading both topics to their
/// ends, one consumer per partition as weft has it, each record's value summed and
/// dropped (no parsing, no join). Run in a child process (`--floor BROKERS`) so that
/// its CPU time excludes the mock broker's; prints "events cpu_s".
fn floor(brokers: &str) {
    let options = std::env::var("KAFKA_BENCH_OPTIONS").unwrap_or_default();
    let options: toml::Table = toml::from_str(&format!("o = {{ {options} }}")).expect("KAFKA_BENCH_OPTIONS");
    let mut consumers = Vec::new();
    for topic in ["l", "r"] {
        for parts in (0..PARTITIONS).map(|p| vec![p]) {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", brokers)
                .set("group.id", "floor")
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true");
            for (k, v) in options["o"].as_table().unwrap() {
                config.set(k, v.as_str().expect("option values are strings"));
            }
            let c: BaseConsumer = config.create().unwrap();
            let mut tpl = TopicPartitionList::new();
            for &p in &parts {
                tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
            }
            c.assign(&tpl).unwrap();
            consumers.push((c, parts.len()));
        }
    }
    let (mut events, mut sum) = (0u64, 0u64);
    while consumers.iter().any(|c| c.1 > 0) {
        let mut idle = true;
        for (c, open) in &mut consumers {
            while *open > 0 {
                match c.poll(Duration::ZERO) {
                    Some(Ok(m)) => {
                        idle = false;
                        events += 1;
                        sum += m.payload().map_or(0, |v| v.iter().map(|&b| b as u64).sum());
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => *open -= 1,
                    Some(Err(e)) => panic!("{e}"),
                    None => break,
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    // SAFETY: as in process_cpu_s.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    eprintln!("floor: max RSS {} KiB, minor faults {}", u.ru_maxrss, u.ru_minflt);
    println!("{events} {:.3} {sum}", process_cpu_s());
}

/// The sources of the job in `cfg` alone, polled round-robin as a shard polls them
/// until every one has ended, rows counted (no routing, join, state or output): what
/// reading and parsing costs, from files or from Kafka. Run in a child process
/// (`--sources CONFIG`); prints "events cpu_s".
fn sources_only(cfg: &Path) {
    let mut job = JobConfig::load(cfg).unwrap().resolve(cfg, cfg.parent().unwrap()).unwrap();
    weft::source::kafka::resolve(&mut job).unwrap();
    let mut open: Vec<_> = weft::source::plan(&job).iter().map(|s| weft::source::open(s, &job).unwrap()).collect();
    let (mut rows, mut acc) = (0u64, 0u64);
    while !open.is_empty() {
        let mut idle = true;
        open.retain_mut(|src| {
            let st = src
                .poll(4096, 0, &mut |it| match it {
                    SourceItem::Row { ts, row, .. } => {
                        rows += 1;
                        acc = acc.wrapping_add(ts as u64 ^ row.len() as u64);
                    }
                    SourceItem::Dead { reason, .. } => panic!("dead letter: {reason}"),
                    SourceItem::Resume { .. } => {}
                })
                .unwrap();
            idle &= !matches!(st, PollStatus::Rows);
            st != PollStatus::Done
        });
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    drop(open);
    weft::source::kafka::wait_closed();
    std::hint::black_box(acc);
    println!("{rows} {:.3}", process_cpu_s());
}

/// Runs this bench's binary with `args` (a child mode); returns the first two numbers
/// it prints (events, cpu_s).
fn child(args: &[&str]) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().unwrap()).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace().map(|v| v.parse::<f64>().unwrap());
    (f.next().unwrap(), f.next().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `cargo bench -- --list`: nothing to list
    }
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        return floor(&args[i + 1]);
    }
    if let Some(i) = args.iter().position(|a| a == "--sources") {
        return sources_only(Path::new(&args[i + 1]));
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
    // Extra librdkafka options for the Kafka run, as the body of a TOML inline table
    // (`"queued.min.messages" = "10000"`), to try settings without a rebuild.
    let options = std::env::var("KAFKA_BENCH_OPTIONS").unwrap_or_default();
    let kafka = config(dir.path(), "kafka", &|t| {
        format!("kafka = {{ brokers = \"{brokers}\", topic = \"{t}\", bounded = true, options = {{ {options} }} }}")
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
    // Where the difference lies: each job's sources alone (reading and parsing, no
    // join), alternated like the jobs.
    let mut alone = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, cfg) in [&files, &kafka].into_iter().enumerate() {
            alone[i].push(child(&["--sources", cfg.to_str().unwrap()]).1);
        }
    }
    let least = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (sf, sk) = (least(&alone[0]), least(&alone[1]));
    println!(
        "sources alone (read and parse, no join), least cpu_s of {rounds}: files {sf:.3}, kafka {sk:.3}; \
         kafka's extra per event: {:.0} ns",
        (sk - sf) / (n * 2 * PARTITIONS as u64) as f64 * 1e9
    );
    let (events, cpu) = child(&["--floor", &brokers]);
    println!("a bare rust-rdkafka BaseConsumer::poll loop (one consumer per partition, values summed, no parsing or join): {events} events, {cpu:.3} cpu_s, {:.0} events/cpu_s", events / cpu);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, k) = (median(&mut per[0]), median(&mut per[1]));
    println!("median events/cpu_s: files {f:.0}, kafka {k:.0}; kafka/files = {:.2} (goal >= 0.5)", k / f);
    // On a shared machine noise only ever adds CPU time: the best round of each is
    // the steadier figure (both printed, neither chosen after the fact).
    let (f, k) = (per[0].last().copied().unwrap_or(f64::NAN), per[1].last().copied().unwrap_or(f64::NAN));
    println!("best events/cpu_s: files {f:.0}, kafka {k:.0}; kafka/files = {:.2} (goal >= 0.5)", k / f);
}
