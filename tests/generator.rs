//! Guards the generator and `weft gen`: the same seed writes byte-identical files,
//! another seed writes different ones, and replaying the written files with
//! `weft run --config DIR/job.toml` gives the same output multiset, late rows and
//! counts as running the generator in process with the same parameters and
//! partitions (a generator partition and the file it was written to are the same
//! partition, so lateness is the same).

mod common;

use std::path::{Path, PathBuf};

use common::job::JobToml;

fn gen(out: &Path, seed: u64, extra: &[&str]) {
    let seed = seed.to_string();
    let mut args = vec!["gen", "--out", out.to_str().unwrap(), "--seed", &seed];
    args.extend_from_slice(extra);
    let o = common::weft_out(&args);
    assert!(o.status.success(), "weft {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// (file name, bytes) of every file in `dir`, sorted by name.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

const SMALL: [&str; 6] = ["--events", "6000", "--partitions", "3", "--keys", "300"];

#[test]
fn same_seed_writes_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    gen(&a, 9, &SMALL);
    gen(&b, 9, &SMALL);
    let (fa, fb) = (files(&a), files(&b));
    let names: Vec<&str> = fa.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(
        names,
        ["job.toml", "left-0.csv", "left-1.csv", "left-2.csv", "right-0.csv", "right-1.csv", "right-2.csv"],
        "seed 9"
    );
    for (x, y) in fa.iter().zip(&fb) {
        assert_eq!(x.0, y.0);
        assert!(x.1 == y.1, "seed 9: {} differs between two runs", x.0);
    }
    let rows: usize =
        fa.iter().filter(|f| f.0.ends_with(".csv")).map(|f| f.1.iter().filter(|&&c| c == b'\n').count() - 1).sum();
    // A partition stops early when no play is pending (src/source/generator.rs).
    assert!((5000..=6000).contains(&rows), "seed 9: {rows} rows for --events 6000");
}

#[test]
fn different_seeds_write_different_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    gen(&a, 9, &SMALL);
    gen(&b, 10, &SMALL);
    for name in ["left-0.csv", "right-0.csv", "left-2.csv"] {
        let (x, y) = (std::fs::read(a.join(name)).unwrap(), std::fs::read(b.join(name)).unwrap());
        assert!(x != y, "seeds 9 and 10 wrote the same {name}");
    }
}

/// A copy of `dir/job.toml` that does not pin cores (tests run side by side).
fn unpinned_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(dir.join("job.toml")).unwrap();
    let mut doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("job.toml does not parse: {e}\n{text}"));
    let engine = doc.entry("engine").or_insert(toml::Value::Table(Default::default()));
    engine.as_table_mut().unwrap().insert("pin_cores".into(), toml::Value::Boolean(false));
    let p = dir.join("job-unpinned.toml");
    std::fs::write(&p, toml::to_string(&doc).unwrap()).unwrap();
    p
}

#[test]
fn replaying_written_files_equals_the_generator_in_process() {
    let seed = 11;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gen");
    gen(
        &dir,
        seed,
        &[
            "--events",
            "20000",
            "--partitions",
            "2",
            "--keys",
            "400",
            "--titles",
            "5",
            "--kind",
            "full",
            "--disorder-ms",
            "2000",
            "--late-fraction",
            "0.01",
            "--late-max-ms",
            "60000",
        ],
    );
    let cfg = unpinned_config(&dir);
    let report_path = tmp.path().join("report.json");
    let o = common::weft_out(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--shards",
        "2",
        "--quiet",
        "--report",
        report_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "seed {seed}: replay failed: {}", String::from_utf8_lossy(&o.stderr));
    let replay: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();

    // The same parameters as `weft gen` used (its defaults where not given above).
    let text = JobToml::generated(&format!(
        "seed = {seed}, events = 20000, keys = 400, titles = 5, zipf = 1.0, match_rate = 0.3, disorder_ms = 2000, \
         late_fraction = 0.01, late_max_ms = 60000, event_time_rate = 200.0, partitions = 2"
    ))
    .kind("full")
    .window(0, 3600000)
    .max_out_of_orderness_ms(2000)
    .allowed_lateness_ms(0)
    .output("inproc")
    .shards(2)
    .render();
    let rep = common::run(&text, tmp.path());
    let header = "impressions.profile_id,impressions.title_id,impressions.ts,impressions.row,impressions.col,\
                  plays.profile_id,plays.title_id,plays.ts,plays.duration_ms";
    let (a, b) = (dir.join("out"), tmp.path().join("inproc"));
    let what = format!("seed {seed}: replay vs generator");
    common::assert_same_rows(
        &format!("{what}: output"),
        &common::output_rows(&a, header),
        &common::output_rows(&b, header),
        "",
    );
    for (name, h) in
        [("impressions", "profile_id,title_id,ts,row,col"), ("plays", "profile_id,title_id,ts,duration_ms")]
    {
        common::assert_same_rows(
            &format!("{what}: late {name}"),
            &common::late_rows(&a, name, h),
            &common::late_rows(&b, name, h),
            "",
        );
    }
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    for (side, r) in [("left", &rep.left), ("right", &rep.right)] {
        let j = &replay[side];
        assert_eq!(
            (n(&j["rows_in"]), n(&j["late"]), n(&j["dead_letters"]), n(&j["unmatched"]), n(&j["unmatched_emitted"])),
            (r.rows_in, r.late, r.dead_letters, r.unmatched, r.unmatched_emitted),
            "{what}: {side} counts (rows_in, late, dead, unmatched, emitted)"
        );
    }
    assert_eq!(
        (n(&replay["matched_pairs"]), n(&replay["output_rows"])),
        (rep.matched_pairs, rep.output_rows),
        "{what}"
    );
    assert!(rep.left.late > 0 && rep.matched_pairs > 0, "{what}: workload too tame: {rep:?}");
}

/// `gen::write` polls the generator with `now_ns = 0`; with a rate limit every row
/// after the first is "not due yet" and the poll loop never ends. Writing files
/// must ignore the pacing (it does not change the rows).
#[test]
fn gen_write_finishes_with_a_rate_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let text = r#"[left]
name = "impressions"
generator = { seed = 1, events = 200, keys = 10, rate_limit = 1000.0, partitions = 1 }
[right]
name = "plays"
generator = {}
[join]
kind = "inner"
lower_ms = 0
upper_ms = 10
[engine]
shards = 1
pin_cores = false
"#;
    let params = common::job_from_toml(text, tmp.path()).unwrap().generator.unwrap();
    let dir = tmp.path().join("gen");
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    // Detached: if it spins forever, the test fails on the timeout below and the
    // thread dies with the test process.
    std::thread::spawn(move || {
        let r = weft::loadgen::write(&d, &params, weft::config::Format::Csv, weft::config::JobConfig::builtin());
        let _ = tx.send(r.map(|(_, counts)| counts).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(5)) {
        Ok(r) => {
            let counts = r.expect("gen::write failed");
            assert!(counts[0] + counts[1] > 150, "{counts:?}");
        }
        Err(_) => panic!("gen::write with rate_limit = 1000 did not finish within 5 s (200 events)"),
    }
}
