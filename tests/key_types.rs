//! Guards key equality for every field type: i32, i64, u32, u64, f64, bool and
//! string keys, and a composite key, match exactly when their values are equal
//! (the text form may differ: `+0` and `0`, `1e3` and `1000`, `1` and `true`);
//! strings compare byte for byte (case, spaces, commas, quotes, non-ASCII); extreme
//! values work; keys are routed to the same shard from both inputs.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::job::{InputToml, JobToml};

/// Runs an inner join on equal `k` (all rows at time 0, 2 shards) over the given key
/// cells (CSV text) and returns the matched (left index, right index) pairs.
fn pairs(ty: &str, left: &[&str], right: &[&str]) -> BTreeSet<(i64, i64)> {
    let tmp = tempfile::tempdir().unwrap();
    let file = |name: &str, cells: &[&str]| {
        let mut s = String::from("id,ts,k\n");
        for (i, c) in cells.iter().enumerate() {
            s += &format!("{i},0,{c}\n");
        }
        common::write(tmp.path(), name, s)
    };
    let (l, r) = (file("l.csv", left), file("r.csv", right));
    let text = job(ty, &l, &r);
    let rep = common::run(&text, tmp.path());
    assert_eq!(rep.left.dead_letters + rep.right.dead_letters, 0, "{ty}: every key cell parses\n{text}");
    read_pairs(&tmp.path().join("out"))
}

fn job(ty: &str, l: &Path, r: &Path) -> String {
    let fields = [("id", "i64"), ("ts", "i64"), ("k", ty)];
    JobToml::new(InputToml::files("l", &[l], &fields), InputToml::files("r", &[r], &fields)).shards(2).render()
}

/// (l.id, r.id) of every output row (the first column of each side).
fn read_pairs(out: &Path) -> BTreeSet<(i64, i64)> {
    let mut set = BTreeSet::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with("part-") {
            continue;
        }
        let mut rd = csv::Reader::from_path(&p).unwrap();
        let width = rd.headers().unwrap().len();
        for rec in rd.records() {
            let rec = rec.unwrap();
            let id = |i: usize| rec[i].parse::<i64>().unwrap();
            assert!(set.insert((id(0), id(width / 2))), "duplicate pair in {}", p.display());
        }
    }
    set
}

fn set(v: &[(i64, i64)]) -> BTreeSet<(i64, i64)> {
    v.iter().copied().collect()
}

#[test]
fn integer_keys() {
    let i32s = ["-5", "2147483647", "-2147483648", "+0", "7"];
    let got = pairs("i32", &i32s, &["-2147483648", "0", "2147483647", "-5", "8"]);
    assert_eq!(got, set(&[(0, 3), (1, 2), (2, 0), (3, 1)]), "i32");
    let i64s = ["-9223372036854775808", "9223372036854775807", "-1", "1"];
    let got = pairs("i64", &i64s, &["9223372036854775807", "-9223372036854775808", "1"]);
    assert_eq!(got, set(&[(0, 1), (1, 0), (3, 2)]), "i64");
    let got = pairs("u32", &["4294967295", "0", "12"], &["12", "4294967295", "00"]);
    assert_eq!(got, set(&[(0, 1), (1, 2), (2, 0)]), "u32");
    let u64s = ["18446744073709551615", "9223372036854775808", "0"];
    let got = pairs("u64", &u64s, &["9223372036854775808", "0", "18446744073709551615", "9223372036854775807"]);
    assert_eq!(got, set(&[(0, 2), (1, 0), (2, 1)]), "u64");
}

#[test]
fn string_keys_compare_byte_for_byte() {
    let left = ["a", "A", "\"a,b\"", "\"x\"\"y\"", "ü", " a", "é"];
    let right = ["\"a\"", "\"a,b\"", "a ", "\"x\"\"y\"", "ü", "e\u{301}"];
    let got = pairs("string", &left, &right);
    // "é" precomposed and decomposed are different bytes: no match (no normalisation).
    assert_eq!(got, set(&[(0, 0), (2, 1), (3, 3), (4, 4)]), "string");
}

#[test]
fn bool_and_f64_keys() {
    let got = pairs("bool", &["true", "0", "TRUE"], &["1", "false", "True"]);
    assert_eq!(got, set(&[(0, 0), (0, 2), (1, 1), (2, 0), (2, 2)]), "bool");
    let got = pairs("f64", &["0.5", "1e3", "-2.25", "3"], &["0.50", "1000", "-2.25", "3.0000000000000001"]);
    // 3.0000000000000001 rounds to 3.0 in f64.
    assert_eq!(got, set(&[(0, 0), (1, 1), (2, 2), (3, 3)]), "f64");
}

/// -0.0 == 0.0 in IEEE 754 and in SQL (DuckDB, Postgres, Flink's DOUBLE compare):
/// a key compared for equality must match them.
#[test]
fn f64_negative_zero_equals_zero() {
    let got = pairs("f64", &["0.0", "-0.0"], &["-0", "0"]);
    assert_eq!(got, set(&[(0, 0), (0, 1), (1, 0), (1, 1)]), "f64 zeros");
}

#[test]
fn composite_keys_in_different_column_orders() {
    let tmp = tempfile::tempdir().unwrap();
    common::write(tmp.path(), "l.csv", "name,ts,id,n\na,0,0,1\na,0,1,2\nb,0,2,1\n,0,3,1\n");
    common::write(tmp.path(), "r.jsonl", "{\"id\":0,\"ts\":0,\"n\":1,\"name\":\"a\"}\n{\"id\":1,\"ts\":0,\"n\":1,\"name\":\"b\"}\n{\"id\":2,\"ts\":0,\"n\":2}\n{\"id\":3,\"ts\":0,\"n\":2,\"name\":\"a\"}\n");
    let key = ["name", "n"];
    let left = InputToml::files("l", &["l.csv"], &[("id", "i64"), ("ts", "i64"), ("name", "string"), ("n", "u32")]);
    let right = InputToml::files("r", &["r.jsonl"], &[("id", "i64"), ("ts", "i64"), ("n", "u32"), ("name", "string")]);
    let text = JobToml::new(left.key(&key), right.format("jsonl").key(&key)).shards(3).render();
    common::run(&text, tmp.path());
    assert_eq!(read_pairs(&tmp.path().join("out")), set(&[(0, 0), (1, 3), (2, 1)]));
}
