//! Guards issue 12 item 3: reading a line has a memory bound. A CSV or JSONL line
//! longer than the row limit (`event::ROW_BYTES_MAX`, 16 MiB) is skipped while it is
//! read, so the weft process stays far below the line's size (peak RSS from the
//! report's `peak_rss_bytes`, i.e. VmHWM); it becomes a dead letter whose `raw` holds
//! only its first `source::RAW_BYTES_MAX` bytes and whose reason gives its true
//! length, and the rows around it are joined. A CSV header line over the limit (or a
//! header that never ends, like `/dev/zero`) fails the run naming the file.

mod common;

use std::io::Write;
use std::path::Path;

use common::job::{InputToml, JobToml};

/// Bytes of each over-long line: well past the row limit and past any RSS the job
/// needs otherwise.
const LONG_BYTES: usize = 120 << 20;

fn write_with_long_line(path: &Path, head: &[u8], prefix: &[u8], tail: &[u8]) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(head).unwrap();
    f.write_all(prefix).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut left = LONG_BYTES - prefix.len();
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    f.write_all(tail).unwrap();
    f.flush().unwrap();
}

fn config(dir: &Path) -> std::path::PathBuf {
    let l = InputToml::files("l", &["l.csv"], &[("k", "i64"), ("ts", "i64"), ("name", "string")]);
    let r = InputToml::files("r", &["r.jsonl"], &[("k", "i64"), ("ts", "i64")]).format("jsonl");
    JobToml::new(l, r).window(-5, 5).write(dir, "job.toml")
}

#[test]
fn a_line_over_the_row_limit_is_skipped_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_with_long_line(&dir.join("l.csv"), b"k,ts,name\n1,10,a\n", b"2,20,", b"\n3,30,c\n");
    write_with_long_line(
        &dir.join("r.jsonl"),
        b"{\"k\":1,\"ts\":10}\n",
        b"{\"k\":2,\"ts\":20,\"s\":\"",
        b"\"}\n{\"k\":3,\"ts\":30}\n",
    );
    let cfg = config(dir);
    let report = dir.join("report.json");
    let o = common::weft_run(&cfg, &["--report", report.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rep: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let rss = rep["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    eprintln!("peak RSS {rss} bytes");
    assert!(rss > 0 && rss < (LONG_BYTES as u64) * 3 / 4, "peak RSS {rss} bytes for a {LONG_BYTES}-byte line");

    let out = dir.join("out");
    assert_eq!(
        common::output_rows(&out, "l.k,l.ts,l.name,r.k,r.ts"),
        ["1,10,a,1,10", "3,30,c,3,30"],
        "the rows around the long lines are joined"
    );
    let mut dead = common::dead_letters(&out);
    dead.sort_by_key(|d| d["input"].as_str().unwrap().to_string());
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (d, input, line, len, prefix) in [
        (&dead[0], "l", 3, LONG_BYTES, "2,20,xxx"),
        (&dead[1], "r", 2, LONG_BYTES + 2, "{\"k\":2,\"ts\":20,\"s\":\"xxx"),
    ] {
        assert_eq!((d["input"].as_str().unwrap(), d["line"].as_u64().unwrap()), (input, line));
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.contains(&len.to_string()), "reason `{reason}` should give the line's length");
        assert!(reason.len() < 200, "reason of {} bytes", reason.len());
        let raw = d["raw"].as_str().unwrap();
        assert_eq!(raw.len(), weft::source::RAW_BYTES_MAX, "raw is truncated");
        assert!(raw.starts_with(prefix), "raw starts `{}`", &raw[..40]);
    }
}

#[test]
fn a_csv_header_over_the_row_limit_fails_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_with_long_line(&dir.join("l.csv"), b"", b"k,ts,name,", b"\n1,10,a\n");
    common::write(dir, "r.jsonl", "{\"k\":1,\"ts\":10}\n");
    let o = common::weft_run(&config(dir), &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", &stderr[..stderr.len().min(400)]);
    assert!(stderr.len() < 1000, "a short message, not the header: {} bytes", stderr.len());
    assert!(stderr.contains("l.csv") && stderr.contains("header"), "stderr: {stderr}");
    assert!(stderr.contains("16777216"), "stderr `{stderr}` should give the limit");
}

#[test]
fn dev_zero_as_a_csv_input_fails_without_growing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write(dir, "r.jsonl", "{\"k\":1,\"ts\":10}\n");
    let l = InputToml::files("l", &["/dev/zero"], &[("k", "i64"), ("ts", "i64")]);
    let r = InputToml::files("r", &["r.jsonl"], &[("k", "i64"), ("ts", "i64")]).format("jsonl");
    let cfg = JobToml::new(l, r).write(dir, "job.toml");
    let o = common::weft_run(&cfg, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {}", &stderr[..stderr.len().min(400)]);
    assert!(stderr.contains("/dev/zero") && stderr.contains("header"), "stderr: {stderr}");
}
