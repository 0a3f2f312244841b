//! Guards `weft validate` on dead letters: a streaming run's output validates EQUAL
//! against the batch answer including its dead letters (named by shard on one side,
//! by partition on the other); removing one dead-letter line makes it DIFFERENT
//! (exit 1) naming the missing letter; an expected directory without `dead/` (as the
//! DuckDB oracle writes) still validates, saying dead letters were not compared.

mod common;

use common::job::JobToml;

fn setup() -> (tempfile::TempDir, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let mut left = String::from("k,ts\n");
    let mut right = String::from("k,ts\n");
    for i in 0..400 {
        left.push_str(&format!("{},{}\n", i % 37, i * 10));
        right.push_str(&format!("{},{}\n", i % 41, i * 10 + 3));
        if i % 50 == 7 {
            left.push_str(&format!("{i},not-a-time\n"));
            right.push_str("1,2,3\n");
        }
    }
    common::write(d, "l.csv", left);
    common::write(d, "r.csv", right);
    let cfg = JobToml::k_ts(&["l.csv"], &["r.csv"]).window(0, 100).output("out").shards(2).write(d, "job.toml");
    let out = common::weft_out(&["run", "--config", cfg.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (t, cfg)
}

fn validate(args: &[&str]) -> (i32, String) {
    let out = common::weft_out(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The dead-letter files of `out`, and all their lines.
fn dead_lines(out: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(out.join("dead")).unwrap() {
        let p = e.unwrap().path();
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            v.push((p.clone(), l.to_string()));
        }
    }
    v.sort();
    v
}

#[test]
fn a_removed_dead_letter_makes_validate_fail() {
    let (t, cfg) = setup();
    let out = t.path().join("out");
    let dead = dead_lines(&out);
    assert_eq!(dead.len(), 16, "8 bad rows per input: {dead:?}");
    let args = ["validate", "--config", cfg.to_str().unwrap(), "--output", out.to_str().unwrap()];
    let (code, text) = validate(&args);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("validate: EQUAL") && text.contains("dead letters: 16"), "{text}");

    // Drop one dead letter (the 3rd line of its file).
    let (file, gone) = dead[2].clone();
    let kept: Vec<String> =
        std::fs::read_to_string(&file).unwrap().lines().filter(|l| *l != gone).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, kept.concat()).unwrap();
    let (code, text) = validate(&args);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("validate: DIFFERENT"), "{text}");
    assert!(text.contains("dead letters missing (in expected, not in actual): 1"), "{text}");
    let v: serde_json::Value = serde_json::from_str(&gone).unwrap();
    let sample = format!("{} {}:{}", v["input"].as_str().unwrap(), v["file"].as_str().unwrap(), v["line"]);
    assert!(text.contains(&sample), "the missing letter {sample} is named:\n{text}");
}

#[test]
fn an_expected_directory_without_dead_letters_is_not_compared() {
    let (t, _cfg) = setup();
    let out = t.path().join("out");
    let oracle = t.path().join("oracle");
    std::fs::create_dir(&oracle).unwrap();
    for e in std::fs::read_dir(&out).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, oracle.join(p.file_name().unwrap())).unwrap();
        }
    }
    let (code, text) =
        validate(&["validate", "--expected", oracle.to_str().unwrap(), "--actual", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("dead letters: not compared"), "{text}");
}
