//! Guards the late-data side output: late rows are written in their input's own
//! columns and format, so they can be re-fed. For CSV input written the way weft
//! writes CSV (quoted commas, quotes and newlines, shortest round-trip floats, NULL
//! as an empty cell), each late row is byte-identical to its input line; for JSONL
//! input it is the same JSON object (a missing key written as `null`). Values of
//! every type survive: extreme integers, floats, bools, non-ASCII strings.

mod common;

use std::path::Path;

use common::job::{InputToml, JobToml};

const FIELDS: &[(&str, &str)] =
    &[("k", "i32"), ("ts", "i64"), ("s", "string"), ("f", "f64"), ("b", "bool"), ("u", "u64"), ("w", "u32")];

fn config(format: &str, left: &str) -> String {
    let left = InputToml::files("l", &[left], FIELDS).format(format);
    let right = InputToml::files("r", &["r.csv"], &[("k", "i32"), ("ts", "i64")]);
    JobToml::new(left, right).kind("left").max_out_of_orderness_ms(0).shards(2).render()
}

/// The first row sets the watermark far ahead; every other row is late.
const CSV_ROWS: &[&str] = &[
    "1,1000000,a,1.5,true,0,0",
    "-2147483648,-9223372036854775808,\"a,b\",-1e-6,false,18446744073709551615,4294967295",
    "2147483647,0,\"x\"\"y\",1e300,true,1,1",
    "3,1,\"line1\nline2\",NaN,,,",
    "4,2,üñí ✓,-inf,false,2,",
    "5,3,,0.1,true,,7",
    "5,3,,0.1,true,,7",
];

fn late_text(out: &Path, ext: &str) -> String {
    let mut s = String::new();
    let mut files: Vec<_> = std::fs::read_dir(out.join("late"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("l-"))
        .collect();
    files.sort();
    for f in files {
        assert!(f.extension().unwrap() == ext, "late file {} should be .{ext}", f.display());
        s += &std::fs::read_to_string(&f).unwrap();
    }
    s
}

#[test]
fn csv_late_rows_are_byte_identical_to_their_input_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let header = "k,ts,s,f,b,u,w";
    let mut input = String::from(header) + "\n";
    for r in CSV_ROWS {
        input += r;
        input += "\n";
    }
    common::write(tmp.path(), "l.csv", &input);
    common::write(tmp.path(), "r.csv", "k,ts\n");
    let text = config("csv", "l.csv");
    let rep = common::run(&text, tmp.path());
    assert_eq!((rep.left.rows_in, rep.left.late, rep.left.dead_letters), (7, 6, 0), "{text}");
    let late = late_text(&tmp.path().join("out"), "csv");
    // Reassemble the late files' records as raw text: every late file starts with the
    // header, then its rows exactly as written.
    let mut got: Vec<String> = Vec::new();
    for chunk in late.split(&format!("{header}\n")).filter(|c| !c.is_empty()) {
        got.extend(split_csv_records(chunk));
    }
    got.sort();
    let mut want: Vec<String> = CSV_ROWS[1..].iter().map(|s| s.to_string()).collect();
    want.sort();
    common::assert_same_rows("late rows", &got, &want, &text);
}

/// Splits CSV text into records at newlines outside quotes (no trailing newline).
fn split_csv_records(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == '\n' && !quoted {
            v.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    assert!(cur.is_empty() && !quoted, "late file does not end with a complete record: {cur:?}");
    v
}

#[test]
fn jsonl_late_rows_are_the_same_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = [
        r#"{"k":1,"ts":1000000,"s":"a","f":1.5,"b":true,"u":0,"w":0}"#,
        r#"{"k":-2147483648,"ts":-9223372036854775808,"s":"a,b\"c\\d\n\t","f":-1e-6,"b":false,"u":18446744073709551615,"w":4294967295}"#,
        r#"{"k":2,"ts":5,"s":"üñí ✓","f":1e300,"b":null,"w":3}"#,
        r#"{"ts":6,"extra":"ignored","k":3}"#,
    ];
    common::write(tmp.path(), "l.jsonl", rows.join("\n") + "\n");
    common::write(tmp.path(), "r.csv", "k,ts\n");
    let text = config("jsonl", "l.jsonl");
    let rep = common::run(&text, tmp.path());
    assert_eq!((rep.left.late, rep.left.dead_letters), (3, 0), "{text}");
    let fields = ["k", "ts", "s", "f", "b", "u", "w"];
    let normalise = |line: &str| -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        let o = v.as_object().unwrap();
        let mut m = serde_json::Map::new();
        for f in fields {
            m.insert(f.to_string(), o.get(f).cloned().unwrap_or(serde_json::Value::Null));
        }
        serde_json::Value::Object(m)
    };
    let late = late_text(&tmp.path().join("out"), "jsonl");
    let mut got: Vec<String> = late.lines().map(|l| normalise(l).to_string()).collect();
    let mut want: Vec<String> = rows[1..].iter().map(|l| normalise(l).to_string()).collect();
    got.sort();
    want.sort();
    common::assert_same_rows("late rows", &got, &want, &text);
    for line in late.lines() {
        let keys: Vec<String> =
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).unwrap().keys().cloned().collect();
        let mut want_keys: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
        want_keys.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, want_keys, "late row {line} has exactly the input's fields");
    }
}
