//! The metrics endpoint (`engine.metrics_addr`): it answers on loopback while a job
//! runs, its families are `weft_...`, and once the run is over its counters are the
//! final report's. Bad addresses and taken ports are refused before the job starts.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::job::JobToml;
use weft::engine::RunOptions;
use weft::metrics::live::Live;

/// One HTTP GET on loopback: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    (head.to_string(), body.to_string())
}

/// `name{labels}` -> value, for every sample line of an exposition page.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {l}"));
            (k.to_string(), v.parse::<f64>().unwrap_or_else(|_| panic!("a number: {l}")))
        })
        .collect()
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> u64 {
    *s.get(key).unwrap_or_else(|| panic!("no sample {key}; have: {:?}", s.keys().collect::<Vec<_>>())) as u64
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn rate_limited_job(dir: &std::path::Path) -> JobToml {
    JobToml::generated("events = 300000, rate_limit = 150000, keys = 20000, seed = 7")
        .kind("left")
        .window(0, 60_000)
        .max_out_of_orderness_ms(2_000)
        .shards(2)
        .output(&dir.join("out").display().to_string())
        .engine(&format!(
            "checkpoint_dir = {}\ncheckpoint_interval_ms = 300",
            common::toml_str(&dir.join("ck").display().to_string())
        ))
}

#[test]
fn the_endpoint_answers_during_a_run_and_agrees_with_the_report_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let job = rate_limited_job(dir.path()).render();
    let resolved = common::job_from_toml(&job, dir.path()).unwrap();
    let live = Arc::new(Live::new(["impressions".into(), "plays".into()], 2, 0, resolved.ring_slots as u64));
    let addr = weft::metrics::server::start("127.0.0.1:0".parse().unwrap(), live.clone()).unwrap();
    let opts = RunOptions { live: Some(live), ..RunOptions::default() };
    let base = dir.path().to_path_buf();
    let run = std::thread::spawn(move || common::try_run(&job, &base, &opts));

    // During the run: answered, and counters only grow.
    let mut scrapes = Vec::new();
    let t0 = Instant::now();
    while !run.is_finished() && t0.elapsed() < common::timeout() {
        let (head, body) = get(addr, "/metrics");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("application/openmetrics-text"), "{head}");
        scrapes.push(samples(&body));
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = run.join().unwrap().expect("the job runs");
    let rows = |s: &BTreeMap<String, f64>| value(s, "weft_input_rows_total{input=\"impressions\"}");
    let mid: Vec<u64> =
        scrapes.iter().filter(|s| s.contains_key("weft_input_rows_total{input=\"impressions\"}")).map(rows).collect();
    assert!(mid.len() >= 3, "the endpoint answered only {} times during a ~2 s run", mid.len());
    assert!(mid.windows(2).all(|w| w[0] <= w[1]), "rows in went down between scrapes: {mid:?}");
    assert!(mid.iter().any(|&r| r > 0 && r < report.left.rows_in), "no scrape saw the run under way: {mid:?}");
    for name in [
        "weft_shard_events_total{shard=\"1\"}",
        "weft_state_rows{shard=\"0\",input=\"impressions\"}",
        "weft_ring_capacity_batches",
    ] {
        assert!(scrapes.iter().any(|s| s.contains_key(name)), "no {name} during the run");
    }

    // After it: the report's figures.
    let (_, body) = get(addr, "/metrics");
    let s = samples(&body);
    for (i, input) in [(&report.left, "impressions"), (&report.right, "plays")] {
        assert_eq!(value(&s, &format!("weft_input_rows_total{{input=\"{input}\"}}")), i.rows_in, "{input} rows");
        assert_eq!(value(&s, &format!("weft_input_late_rows_total{{input=\"{input}\"}}")), i.late, "{input} late");
        assert_eq!(value(&s, &format!("weft_input_dead_letters_total{{input=\"{input}\"}}")), i.dead_letters);
        let unmatched = value(&s, &format!("weft_output_rows_total{{kind=\"unmatched\",input=\"{input}\"}}"));
        assert_eq!(unmatched, i.unmatched_emitted, "{input} unmatched emitted");
        let per_partition: u64 = s
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("weft_partition_rows_total{{input=\"{input}\",")))
            .map(|(_, v)| *v as u64)
            .sum();
        assert_eq!(per_partition, i.rows_in, "{input}: the partitions' rows add up to the input's");
        let late_parts: u64 = s
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("weft_partition_late_rows_total{{input=\"{input}\",")))
            .map(|(_, v)| *v as u64)
            .sum();
        let behind = value(&s, &format!("weft_late_behind_watermark_rows_total{{input=\"{input}\"}}"));
        assert_eq!(late_parts + behind, i.late, "{input}: late by partition plus behind the watermark");
    }
    assert!(
        report.left.rows_in > 0 && report.matched_pairs > 0 && report.left.late > 0,
        "a workload with pairs and late rows"
    );
    assert_eq!(value(&s, "weft_output_rows_total{kind=\"pair\"}"), report.matched_pairs);
    let out = value(&s, "weft_output_rows_total{kind=\"pair\"}")
        + value(&s, "weft_output_rows_total{kind=\"unmatched\",input=\"impressions\"}")
        + value(&s, "weft_output_rows_total{kind=\"unmatched\",input=\"plays\"}");
    assert_eq!(out, report.output_rows, "output rows by kind add up to the report's");
    assert_eq!(value(&s, "weft_latency_seconds_count"), report.latency.count, "latency histogram count");
    assert_eq!(value(&s, "weft_latency_seconds_bucket{le=\"+Inf\"}"), report.latency.count);
    let buckets: Vec<u64> = weft::metrics::exposition::LATENCY_BUCKETS_S
        .iter()
        .map(|b| value(&s, &format!("weft_latency_seconds_bucket{{le=\"{b:?}\"}}")))
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "cumulative buckets: {buckets:?}");
    let events: u64 = (0..2).map(|i| value(&s, &format!("weft_shard_events_total{{shard=\"{i}\"}}"))).sum();
    assert_eq!(
        events,
        report.left.rows_in + report.right.rows_in - report.left.late - report.right.late
            + value(&s, "weft_late_behind_watermark_rows_total{input=\"impressions\"}")
            + value(&s, "weft_late_behind_watermark_rows_total{input=\"plays\"}"),
        "every row not late at its source was joined by a shard"
    );
    assert!(
        value(&s, "weft_checkpoints_completed_total") >= 2,
        "checkpoints every 300 ms in a ~2 s run, and the final one"
    );
    assert_eq!(value(&s, "weft_checkpoints_failed_total"), 0);
    assert!(s["weft_checkpoint_last_success_timestamp_seconds"] > 1.6e9);
    for from in 0..2 {
        assert_eq!(
            value(&s, &format!("weft_ring_occupancy_batches{{from=\"{from}\",to=\"{}\"}}", 1 - from)),
            0,
            "rings drained"
        );
    }

    let (head, _) = get(addr, "/nothing");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn weft_run_serves_metrics_on_loopback_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = rate_limited_job(dir.path())
        .engine(&format!("metrics_addr = \"127.0.0.1:{port}\""))
        .write(dir.path(), "job.toml");
    let child = common::weft()
        .args(["run", "--quiet", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    let page = loop {
        assert!(t0.elapsed() < common::timeout(), "the endpoint never answered");
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            let (head, body) = get(addr, "/metrics");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            if body.contains("weft_input_rows_total") {
                break body;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = samples(&page);
    assert!(
        s.keys().all(|k| k.starts_with("weft_")),
        "a family not named weft_...: {:?}",
        s.keys().find(|k| !k.starts_with("weft_"))
    );
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("metrics at http://127.0.0.1:{port}/metrics")), "{err}");
}

#[test]
fn a_bad_or_taken_metrics_addr_is_refused_before_the_job_starts() {
    let dir = tempfile::tempdir().unwrap();
    let bad = rate_limited_job(dir.path()).engine("metrics_addr = \"localhost\"").write(dir.path(), "bad.toml");
    let out = common::weft().args(["run", "--quiet", "--config"]).arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("engine.metrics_addr") && err.contains("host:port"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = rate_limited_job(dir.path())
        .engine(&format!("metrics_addr = \"127.0.0.1:{port}\""))
        .write(dir.path(), "taken.toml");
    let out = common::weft().args(["run", "--quiet", "--config"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("engine.metrics_addr 127.0.0.1:{port}: cannot listen there")), "{err}");
    assert!(!dir.path().join("out").exists() && !dir.path().join("ck").exists(), "nothing was touched");
}
