//! Guards `weft inspect`: on the checkpoint directory of a real job it reports what
//! the manifests hold (checkpoint numbers, watermarks, file positions, state per side)
//! in text and in `--json`, equal to what `weft::checkpoint` reads; a corrupted pack
//! makes its checkpoint not verify (exit 1) and a damaged manifest is named; a state
//! directory's arena files are listed by shard and side; a missing directory exits 2
//! naming it. `weft checkpoints list|verify` keep their behaviour.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::job::JobToml;
use serde_json::Value;

fn inspect(dir: &Path, json: bool) -> Output {
    let mut args = vec!["inspect", dir.to_str().unwrap()];
    if json {
        args.push("--json");
    }
    common::weft_out(&args)
}

fn inspect_json(dir: &Path) -> (Option<i32>, Value) {
    let out = inspect(dir, true);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json output does not parse: {e}\n{}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), v)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The report of checkpoint `n` in an inspection's JSON.
fn checkpoint_of(v: &Value, n: u64) -> &Value {
    v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["checkpoint"].as_u64() == Some(n))
        .unwrap_or_else(|| panic!("checkpoint {n} missing from {v:#}"))
}

#[test]
fn file_positions_watermarks_and_state_match_the_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = ["--events", "200000", "--keys", "20000", "--partitions", "2", "--seed", "3"];
    common::crash::weft_gen(dir, &args);
    let engine = "checkpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 20\ncheckpoints_retained = 1000\n";
    let cfg = common::write(dir, "job-ck.toml", common::crash::gen_config_text(dir, "out", engine));
    let run = common::weft_run(&cfg, &[]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let ck = dir.join("ckpt");
    let ns = weft::checkpoint::list(&ck).unwrap();
    let manifests: Vec<_> = ns.iter().map(|&n| weft::checkpoint::read_manifest(&ck, n).unwrap()).collect();
    assert!(manifests[0].finished, "the newest manifest of a finished run says so");
    assert!(manifests.iter().any(|m| !m.finished), "no checkpoint before the end: {ns:?}");

    let (code, v) = inspect_json(&ck);
    assert_eq!(code, Some(0), "{v:#}");
    assert_eq!(v["ok"], Value::Bool(true));
    let listed: Vec<u64> =
        v["checkpoints"].as_array().unwrap().iter().map(|c| c["checkpoint"].as_u64().unwrap()).collect();
    assert_eq!(listed, ns, "every checkpoint number, newest first");
    let out = inspect(&ck, false);
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out);
    let mut file_positions = 0;
    let mut rows_in_state = 0;
    for m in &manifests {
        let c = checkpoint_of(&v, m.checkpoint);
        assert_eq!(c["verified"], Value::Bool(true), "{c:#}");
        assert_eq!(c["finished"], Value::Bool(m.finished));
        assert_eq!(c["job"]["partitions"], serde_json::to_value(&m.job.partitions).unwrap());
        assert_eq!(c["job"]["left_fields"], serde_json::to_value(&m.job.left_fields).unwrap());
        assert_eq!(c["shards"].as_array().unwrap().len(), m.shards.len());
        assert!(
            t.contains(&format!(
                "checkpoint {}  {}  verified",
                m.checkpoint,
                if m.finished { "finished" } else { "running" }
            )),
            "{t}"
        );
        let mut bytes_total = 0;
        let (mut state_rows, mut rows_read) = ([0u64; 2], [0u64; 2]);
        for (s, js) in m.shards.iter().zip(c["shards"].as_array().unwrap()) {
            assert_eq!(js["shard"].as_u64(), Some(s.shard as u64));
            assert_eq!(js["watermark"].as_i64(), Some(s.watermark), "watermark of shard {}", s.shard);
            assert!(t.contains(&format!("shard {}: watermark {}", s.shard, s.watermark)), "{t}");
            for (src, jsrc) in s.sources.iter().zip(js["sources"].as_array().unwrap()) {
                assert_eq!(jsrc["name"].as_str(), Some(src.name.as_str()));
                assert_eq!(jsrc["position"], serde_json::to_value(&src.position).unwrap());
                if let weft::source::SourcePos::Csv { byte, line, record } = src.position {
                    assert!(src.name.ends_with(".csv") && Path::new(&src.name).is_file(), "{}", src.name);
                    assert_eq!(jsrc["position"]["byte"].as_u64(), Some(byte));
                    assert_eq!(jsrc["position"]["line"].as_u64(), Some(line));
                    let line = format!("{}: byte {byte} line {line} record {record}", src.name);
                    assert!(t.contains(&line), "text lacks `{line}`:\n{t}");
                    if byte > 0 {
                        file_positions += 1;
                    }
                }
            }
            for (i, side) in ["left", "right"].iter().enumerate() {
                let js = &js["sides"][i];
                assert_eq!(js["side"].as_str(), Some(*side));
                let mine: Vec<_> = s.buckets.iter().filter(|b| b.side as usize == i).collect();
                assert_eq!(js["buckets"].as_u64(), Some(mine.len() as u64));
                let bytes: u64 = mine.iter().map(|b| b.bytes).sum();
                assert_eq!(js["bytes"].as_u64(), Some(bytes));
                bytes_total += bytes + mine.iter().map(|b| b.flips.as_ref().map_or(0, |f| f.bytes)).sum::<u64>();
                assert_eq!(js["rows_read"].as_u64(), Some(s.counters.rows_in[i]));
                let rows = js["rows"].as_u64().unwrap();
                if bytes == 0 {
                    assert_eq!(rows, 0);
                }
                // Rows are stored by the shard owning their key, read by the shard
                // owning their partition: only the totals compare.
                state_rows[i] += rows;
                rows_read[i] += s.counters.rows_in[i];
            }
        }
        assert_eq!(c["state_bytes"].as_u64(), Some(bytes_total));
        for i in 0..2 {
            assert!(state_rows[i] <= rows_read[i], "side {i}: {} rows in state, {} read", state_rows[i], rows_read[i]);
        }
        rows_in_state += state_rows[0] + state_rows[1];
    }
    assert!(file_positions > 0, "no checkpoint recorded a file position past byte 0");
    assert!(rows_in_state > 0, "no checkpoint held state rows");
}

/// A generator job slowed by `rate_limit`, with checkpoints and arena files, killed
/// (-9) once 3 checkpoints exist, so both directories are left as a crash leaves them.
fn killed_job(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = JobToml::generated(
        "events = 60000, keys = 3000, titles = 50, event_time_rate = 100.0, play_window_ms = 300000, partitions = 2, \
         seed = 11, rate_limit = 20000.0",
    )
    .kind("left")
    .window(0, 300000)
    .max_out_of_orderness_ms(5000)
    .shards(2)
    .engine("state_dir = \"state\"\ncheckpoint_dir = \"ckpt\"\ncheckpoint_interval_ms = 100\ncheckpoints_retained = 3")
    .write(dir, "job.toml");
    let (ck, state) = (dir.join("ckpt"), dir.join("state"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["run", "--config", cfg.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while weft::checkpoint::list(&ck).map(|v| v.len()).unwrap_or(0) < 3 {
        assert!(child.try_wait().unwrap().is_none(), "the job ended before 3 checkpoints existed");
        assert!(t0.elapsed() < Duration::from_secs(60), "no 3 checkpoints after a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    (ck, state)
}

#[test]
fn a_corrupted_pack_does_not_verify_and_arena_files_are_listed() {
    let tmp = tempfile::tempdir().unwrap();
    let (ck, state) = killed_job(tmp.path());

    // The state directory: every arena file on disk, by shard and side.
    let mut on_disk = Vec::new();
    for s in 0..2u64 {
        for e in std::fs::read_dir(state.join(format!("shard-{s}"))).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".arena") {
                on_disk.push((s, name, e.metadata().unwrap().len()));
            }
        }
    }
    assert!(!on_disk.is_empty(), "a killed run leaves arena files");
    let (code, v) = inspect_json(&state);
    assert_eq!(code, Some(0), "{v:#}");
    let arenas = v["arenas"].as_array().unwrap();
    assert_eq!(arenas.len(), on_disk.len(), "{v:#}");
    assert!(v["checkpoints"].as_array().unwrap().is_empty());
    let t = text(&inspect(&state, false));
    for (s, name, len) in &on_disk {
        let a = arenas.iter().find(|a| a["path"].as_str().unwrap().ends_with(&format!("shard-{s}/{name}"))).unwrap();
        let (side, bucket) = name.trim_end_matches(".arena").split_once('-').unwrap();
        assert_eq!(a["shard"].as_u64(), Some(*s));
        assert_eq!(a["side"].as_str(), Some(side));
        assert_eq!(a["bucket"].as_i64(), Some(bucket.parse().unwrap()));
        assert_eq!(a["bytes"].as_u64(), Some(*len));
        assert!(a["problem"].is_null(), "{a:#}");
        assert!(t.contains(&format!("{len} bytes")) && t.contains(&format!("shard {s} {side} bucket {bucket}")), "{t}");
    }

    // The checkpoint directory, whole: everything verifies.
    let ns = weft::checkpoint::list(&ck).unwrap();
    let (code, v) = inspect_json(&ck);
    assert_eq!(code, Some(0), "{v:#}");
    for &n in &ns {
        let m = weft::checkpoint::verify(&ck, n).unwrap();
        let c = checkpoint_of(&v, n);
        assert_eq!(c["verified"], Value::Bool(true));
        for (s, js) in m.shards.iter().zip(c["shards"].as_array().unwrap()) {
            assert_eq!(js["watermark"].as_i64(), Some(s.watermark));
            assert_eq!(js["marks"], serde_json::to_value(&s.marks).unwrap());
            for (src, jsrc) in s.sources.iter().zip(js["sources"].as_array().unwrap()) {
                assert_eq!(jsrc["position"], serde_json::to_value(&src.position).unwrap());
            }
        }
    }

    // A byte inside a bucket copy that the newest checkpoint wrote itself.
    let n = ns[0];
    let b = common::corrupt_own_pack(&ck, n);
    // And the oldest manifest cut in half.
    let oldest = *ns.last().unwrap();
    let mp = weft::checkpoint::manifest_path(&ck, oldest);
    let len = std::fs::metadata(&mp).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&mp).unwrap().set_len(len / 2).unwrap();

    let (code, v) = inspect_json(&ck);
    assert_eq!(code, Some(1), "{v:#}");
    assert_eq!(v["ok"], Value::Bool(false));
    let c = checkpoint_of(&v, n);
    assert_eq!(c["verified"], Value::Bool(false));
    let problems = c["problems"].to_string();
    assert!(problems.contains(&b.file) && problems.contains("checksum"), "{problems}");
    let c = checkpoint_of(&v, oldest);
    assert_eq!(c["verified"], Value::Bool(false));
    assert!(c["problems"].to_string().contains(&format!("chk-{oldest:012}.json")), "{c:#}");
    for &k in &ns[1..ns.len() - 1] {
        let refs_bad = weft::checkpoint::read_manifest(&ck, k)
            .unwrap()
            .shards
            .iter()
            .flat_map(|s| &s.buckets)
            .any(|x| x.file == b.file && x.offset == b.offset);
        assert_eq!(checkpoint_of(&v, k)["verified"], Value::Bool(!refs_bad), "checkpoint {k}");
    }
    let out = inspect(&ck, false);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains(&format!("checkpoint {n}  running  NOT VERIFIED")) && t.contains(&b.file), "{t}");

    // The older verbs are unchanged: list reads manifests only, verify checks packs.
    let list = common::weft_out(&["checkpoints", "list", ck.to_str().unwrap()]);
    assert_eq!(list.status.code(), Some(1), "the cut manifest is invalid");
    assert!(text(&list).contains(&format!("checkpoint {n:>6}  running ")), "{}", text(&list));
    let verify = common::weft_out(&["checkpoints", "verify", ck.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(text(&verify).contains(&format!("checkpoint {n:>6}  INVALID")), "{}", text(&verify));
}

#[test]
fn missing_or_empty_directories_exit_2_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-ckpt");
    let out = inspect(&missing, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-ckpt") && err.contains("does not exist"), "{err}");
    let file = common::write(tmp.path(), "plain-file", "x");
    let out = inspect(&file, true);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain-file"), "not a directory");
    assert!(out.stdout.is_empty(), "no JSON on an error");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = inspect(&empty, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds neither checkpoint manifests"));
}
