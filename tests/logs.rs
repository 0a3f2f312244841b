//! Logs: `--log-format json` writes one JSON object per line (errors too), the level
//! comes from `--log-level` or `RUST_LOG`, and a bad level is refused naming it.

mod common;

use common::job::JobToml;

fn job(dir: &std::path::Path) -> std::path::PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    JobToml::generated("events = 20000, seed = 3")
        .kind("left")
        .window(0, 60_000)
        .output("none")
        .engine(&format!("metrics_addr = \"127.0.0.1:{port}\""))
        .write(dir, "job.toml")
}

fn stderr_of(args: &[&str], cfg: &std::path::Path, rust_log: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = common::weft();
    cmd.args(args).arg(cfg).env_remove("RUST_LOG");
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn json_logs_are_one_object_per_line_with_level_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let (code, err) = stderr_of(&["--log-format", "json", "run", "--quiet", "--config"], &cfg, None);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<serde_json::Value> = err
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}")))
        .collect();
    let info = lines.iter().find(|v| v["message"].as_str().is_some_and(|m| m.starts_with("metrics at http://")));
    let info = info.unwrap_or_else(|| panic!("no 'metrics at' line: {err}"));
    assert_eq!(info["level"], "INFO");
    assert!(info["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{info}");
    assert!(info["timestamp"].is_string(), "{info}");

    // An error, too, is a JSON line.
    let missing = dir.path().join("missing.toml");
    let (code, err) = stderr_of(&["run", "--log-format", "json", "--config"], &missing, None);
    assert_eq!(code, Some(2), "{err}");
    let v: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).expect("a JSON error line");
    assert_eq!(v["level"], "ERROR");
    assert!(v["message"].as_str().unwrap().contains("missing.toml"), "{v}");
}

#[test]
fn the_level_comes_from_log_level_or_rust_log() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = job(dir.path());
    let (code, err) = stderr_of(&["run", "--quiet", "--config"], &cfg, None);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("metrics at http://"), "info is on by default: {err}");
    let (_, err) = stderr_of(&["run", "--quiet", "--log-level", "warn", "--config"], &cfg, None);
    assert!(!err.contains("metrics at"), "--log-level warn hides info: {err}");
    let (_, err) = stderr_of(&["run", "--quiet", "--config"], &cfg, Some("warn"));
    assert!(!err.contains("metrics at"), "RUST_LOG=warn hides info: {err}");
    let (_, err) = stderr_of(&["run", "--quiet", "--log-level", "info", "--config"], &cfg, Some("warn"));
    assert!(err.contains("metrics at"), "--log-level wins over RUST_LOG: {err}");
    let (code, err) = stderr_of(&["run", "--quiet", "--log-level", "loud[", "--config"], &cfg, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--log-level \"loud[\""), "{err}");
}
