//! Guards issue 12 item 2: an unterminated quote in the middle of a CSV file makes
//! only its own line a dead letter ("unterminated quote"); reading resumes at the
//! next line, so every row after it is still joined. A quoted cell may span lines
//! (RFC 4180) up to `source::csv::RECORD_LINES_MAX` lines; past that, or at the end
//! of the file with the quote still open, the record's first line is the dead letter
//! and reading resynchronises at the line after it.

mod common;

use common::job::{InputToml, JobToml};

const HEADER: &str = "l.k,l.ts,l.v,l.name,r.k,r.ts,r.w";

/// Left CSV (k, ts, v u32, name string) from `left`; right JSONL with one row per
/// key 0..keys at ts = key * 10.
fn run(left: &[u8], keys: u64) -> (weft::metrics::Report, Vec<String>, Vec<serde_json::Value>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    common::write(dir, "l.csv", left);
    let right: String = (0..keys).map(|k| format!("{{\"k\":{k},\"ts\":{},\"w\":1}}\n", k * 10)).collect();
    common::write(dir, "r.jsonl", right);
    let l = InputToml::files("l", &["l.csv"], &[("k", "i64"), ("ts", "i64"), ("v", "u32"), ("name", "string")]);
    let r = InputToml::files("r", &["r.jsonl"], &[("k", "i64"), ("ts", "i64"), ("w", "i64")]).format("jsonl");
    let cfg = JobToml::new(l, r).window(-5, 5).write(dir, "job.toml");
    let rep = common::run(&std::fs::read_to_string(&cfg).unwrap(), dir);
    let out = dir.join("out");
    (rep, common::output_rows(&out, HEADER), common::dead_letters(&out))
}

fn rows(range: std::ops::Range<u64>) -> String {
    range.map(|k| format!("{k},{},1,n{k}\n", k * 10)).collect()
}

fn check_one_dead(dead: &[serde_json::Value], line: u64, raw: &str) {
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["line"], line, "{dead:#?}");
    assert!(dead[0]["reason"].as_str().unwrap().contains("unterminated quote"), "{dead:#?}");
    assert_eq!(dead[0]["raw"], raw, "{dead:#?}");
}

#[test]
fn an_unterminated_quote_dead_letters_its_line_and_the_rest_is_joined() {
    let mut left = b"k,ts,v,name\n".to_vec();
    left.extend_from_slice(rows(0..50).as_bytes());
    left.extend_from_slice(b"2,2000,\"7\n");
    left.extend_from_slice(rows(50..1000).as_bytes());
    let (rep, out, dead) = run(&left, 1000);
    check_one_dead(&dead, 52, "2,2000,\"7");
    assert_eq!(rep.left.rows_in, 1000);
    assert_eq!(out.len(), 1000, "every row but the broken one is joined");
    assert!(out.contains(&"999,9990,1,n999,999,9990,1".to_string()));
}

#[test]
fn a_quote_closed_too_many_lines_later_resynchronises_after_the_first_line() {
    // The quote opened on line 3 is closed by the quote of line 3 + 200: further than
    // a record may span, so line 3 alone is the dead letter.
    let mut left = b"k,ts,v,name\n0,0,1,n0\n1,10,1,\"x\n".to_vec();
    left.extend_from_slice(rows(2..200).as_bytes());
    left.extend_from_slice(b"200,2000,1,\"q\"\n");
    let (rep, out, dead) = run(&left, 201);
    check_one_dead(&dead, 3, "1,10,1,\"x");
    assert_eq!(rep.left.rows_in, 200);
    assert_eq!(out.len(), 200);
    assert!(out.contains(&"200,2000,1,q,200,2000,1".to_string()));
}

#[test]
fn a_quote_open_at_the_end_of_the_file_dead_letters_its_first_line() {
    let mut left = b"k,ts,v,name\n".to_vec();
    left.extend_from_slice(rows(0..10).as_bytes());
    left.extend_from_slice(b"10,100,1,\"open\n");
    left.extend_from_slice(rows(11..20).as_bytes());
    let (rep, out, dead) = run(&left, 20);
    check_one_dead(&dead, 12, "10,100,1,\"open");
    assert_eq!((rep.left.rows_in, out.len()), (19, 19));
}

#[test]
fn a_quoted_cell_may_still_span_lines() {
    let left = b"k,ts,v,name\n0,0,1,\"a\nb \"\"c\"\"\r\nd\"\n1,10,1,x\n";
    let (rep, _, dead) = run(left, 2);
    assert!(dead.is_empty(), "{dead:#?}");
    assert_eq!(rep.matched_pairs, 2);
}
