//! Guards `weft validate`'s comparison: known differences between two hand-written
//! output directories (a dropped row, a duplicated row, a changed value) are found
//! with the right kind and count; the same rows in another order or another split
//! into part files compare equal; a tiny memory budget forces spilling to many
//! buckets and gives the same answer; files weft does not own are ignored.

use std::fs;
use std::path::Path;

use weft::config::Format;
use weft::oracle::diff::{compare_dirs, RowKind, ValidateError, ValidateReport};

const HEADER: &str = "imp.pid,imp.ts,imp.note,plays.pid,plays.ts\n";

/// Two pairs, one left-unmatched, one right-unmatched, one pair repeated, one
/// quoted string with a comma and a line break.
fn rows() -> Vec<&'static str> {
    vec![
        "1,100,a,1,150",
        "1,100,a,1,160",
        "2,200,,,",
        ",,,3,300",
        "4,400,\"x,\ny\",4,450",
        "5,500,b,5,500",
        "5,500,b,5,500",
        "6,600,\"\",,",
    ]
}

fn write_dir(dir: &Path, parts: &[Vec<&str>]) {
    fs::create_dir_all(dir).unwrap();
    for (i, p) in parts.iter().enumerate() {
        let mut text = String::from(HEADER);
        for r in p {
            text.push_str(r);
            text.push('\n');
        }
        fs::write(dir.join(format!("part-{i}.csv")), text).unwrap();
    }
}

fn part(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn compare(a: &Path, b: &Path) -> ValidateReport {
    compare_dirs(a, b, Format::Csv, 10, 0).unwrap()
}

#[test]
fn same_rows_in_other_order_and_split_are_equal() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write_dir(&a, &[rows()]);
    let mut r = rows();
    r.reverse();
    write_dir(&b, &[r[..3].to_vec(), vec![], r[3..].to_vec()]);
    // Files weft does not own are ignored.
    fs::write(b.join("part-9.csv.inprogress"), "garbage\n").unwrap();
    fs::write(b.join(".hidden.csv"), "garbage\n").unwrap();
    fs::write(b.join("notes.txt"), "garbage\n").unwrap();
    fs::create_dir_all(b.join("sub")).unwrap();
    fs::write(b.join("sub/x.csv"), "garbage\n").unwrap();
    let rep = compare(&a, &b);
    assert!(rep.is_equal(), "{rep:?}");
    assert_eq!(rep.expected.rows, 8);
    assert_eq!(rep.actual.rows, 8);
    assert_eq!(rep.actual.files, 3);
    assert_eq!(rep.expected.kinds.pair, 5);
    assert_eq!(rep.expected.kinds.left_unmatched, 2);
    assert_eq!(rep.expected.kinds.right_unmatched, 1);
}

#[test]
fn dropped_duplicated_and_changed_rows_are_reported_by_kind() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write_dir(&a, &[rows()]);
    let mut r = rows();
    r.retain(|x| *x != "2,200,,,"); // drop a left-unmatched row
    r.push(",,,3,300"); // duplicate a right-unmatched row
    r.push(",,,3,300");
    let i = r.iter().position(|x| *x == "1,100,a,1,160").unwrap();
    r[i] = "1,100,a,1,161"; // change a value in a pair
    r.retain(|x| *x != "5,500,b,5,500"); // drop both copies of a repeated pair
    write_dir(&b, &[r]);
    let rep = compare(&a, &b);
    assert!(!rep.is_equal());
    let m = &rep.missing.counts;
    let e = &rep.extra.counts;
    assert_eq!((m.pair, m.left_unmatched, m.right_unmatched), (3, 1, 0), "{rep:?}");
    assert_eq!((e.pair, e.left_unmatched, e.right_unmatched), (1, 0, 2), "{rep:?}");
    assert_eq!(rep.missing.samples(RowKind::LeftUnmatched), ["2,200,,,"]);
    assert_eq!(rep.extra.samples(RowKind::Pair), ["1,100,a,1,161"]);
    assert_eq!(rep.extra.samples(RowKind::RightUnmatched), [",,,3,300   (x2)"]);
    assert!(rep.missing.samples(RowKind::Pair).contains(&"5,500,b,5,500   (x2)".to_string()));
    assert_eq!(rep.expected.rows, 8);
    assert_eq!(rep.actual.rows, 8 - 1 + 2 - 2);
}

#[test]
fn show_limits_the_samples_not_the_counts() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let many: Vec<String> = (0..50).map(|i| format!("{i},{i},n,{i},{i}")).collect();
    write_dir(&a, &[many.iter().map(|s| s.as_str()).collect()]);
    write_dir(&b, &[vec![]]);
    let rep = compare_dirs(&a, &b, Format::Csv, 3, 0).unwrap();
    assert_eq!(rep.missing.counts.pair, 50);
    assert_eq!(rep.missing.samples(RowKind::Pair).len(), 3);
}

#[test]
fn tiny_memory_budget_spills_and_agrees() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let mut exp: Vec<String> = (0..5000).map(|i| format!("{},{i},n{},{},{}", i % 97, i % 13, i % 97, i + 5)).collect();
    exp.extend((0..300).map(|i| format!("{i},{i},,,")));
    exp.extend((0..300).map(|i| format!(",,,{i},{i}")));
    let mut act = exp.clone();
    act.reverse();
    let dropped = act.remove(10); // a right-unmatched row (reversed order)
    act.push(exp[7].clone()); // duplicate a pair
    act[3000] = format!("{}x", act[3000]); // change a value of a pair
    write_dir(&a, &[part(&exp[..2000]), part(&exp[2000..])]);
    write_dir(&b, &[part(&act[..100]), part(&act[100..4000]), part(&act[4000..])]);

    let in_memory = compare_dirs(&a, &b, Format::Csv, 5, 0).unwrap();
    let spilled = compare_dirs(&a, &b, Format::Csv, 5, 4096).unwrap();
    assert_eq!(in_memory.buckets, 1);
    assert!(spilled.buckets > 16, "buckets {}", spilled.buckets);
    for rep in [&in_memory, &spilled] {
        let (m, e) = (&rep.missing.counts, &rep.extra.counts);
        assert_eq!((m.pair, m.left_unmatched, m.right_unmatched), (1, 0, 1), "{rep:?}");
        assert_eq!((e.pair, e.left_unmatched, e.right_unmatched), (2, 0, 0), "{rep:?}");
        assert_eq!(rep.missing.samples(RowKind::RightUnmatched), std::slice::from_ref(&dropped));
    }
    assert_eq!(in_memory.expected.kinds, spilled.expected.kinds);
    // Spill files are cleaned up.
    let leftovers: Vec<_> = fs::read_dir(t.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".weft-validate"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn late_rows_are_counted_per_input_and_compared() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write_dir(&a, &[rows()]);
    write_dir(&b, &[rows()]);
    for d in [&a, &b] {
        fs::create_dir_all(d.join("late")).unwrap();
        fs::write(d.join("late/imp-0.csv"), "pid,ts,note\n1,5,a\n2,6,b\n").unwrap();
        fs::write(d.join("late/my-plays-3.csv"), "pid,ts\n1,5\n").unwrap();
    }
    fs::write(b.join("late/my-plays-1.csv"), "pid,ts\n9,9\n").unwrap();
    let rep = compare(&a, &b);
    assert_eq!(rep.expected.late.as_ref().unwrap().get("imp"), Some(&2));
    assert_eq!(rep.actual.late.as_ref().unwrap().get("my-plays"), Some(&2));
    assert!(!rep.is_equal());
    assert_eq!(rep.late_differences.len(), 1);
    assert_eq!(rep.late_differences[0].input, "my-plays");
    assert_eq!(rep.missing.counts.total() + rep.extra.counts.total(), 0);
}

#[test]
fn jsonl_kinds_and_equality() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let rows = [
        r#"{"imp.pid":1,"imp.ts":100,"plays.pid":1,"plays.ts":150}"#,
        r#"{"imp.pid":2,"imp.ts":200,"plays.pid":null,"plays.ts":null}"#,
        r#"{"imp.pid":null,"imp.ts":null,"plays.pid":3,"plays.ts":"x,}"}"#,
    ];
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(a.join("part-0.jsonl"), rows.join("\n") + "\n").unwrap();
    fs::write(b.join("part-0.jsonl"), format!("{}\n", rows[2])).unwrap();
    fs::write(b.join("part-1.jsonl"), format!("{}\n{}\n", rows[1], rows[0])).unwrap();
    let rep = compare_dirs(&a, &b, Format::Jsonl, 10, 0).unwrap();
    assert!(rep.is_equal(), "{rep:?}");
    let k = rep.expected.kinds;
    assert_eq!((k.pair, k.left_unmatched, k.right_unmatched), (1, 1, 1));
    fs::remove_file(b.join("part-1.jsonl")).unwrap();
    let rep = compare_dirs(&a, &b, Format::Jsonl, 10, 0).unwrap();
    assert_eq!(rep.missing.counts.pair, 1);
    assert_eq!(rep.missing.counts.left_unmatched, 1);
}

#[test]
fn different_headers_are_an_error_not_a_difference() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    write_dir(&a, &[rows()]);
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("part-0.csv"), "x.a,y.b\n1,2\n").unwrap();
    match compare_dirs(&a, &b, Format::Csv, 10, 0) {
        Err(ValidateError::HeaderMismatch { path, .. }) => assert!(path.ends_with("part-0.csv")),
        other => panic!("expected a header mismatch, got {other:?}"),
    }
    assert!(matches!(
        compare_dirs(&a, &t.path().join("missing"), Format::Csv, 10, 0),
        Err(ValidateError::NotADir { .. })
    ));
}

#[test]
fn partitioned_in_memory_and_spilled_comparisons_agree() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    // About 1.5 MB per side: above the single-partition threshold.
    let exp: Vec<String> =
        (0..40_000).map(|i| format!("{},{i},name-{},{},{}", i % 977, i % 31, i % 977, i + 17)).collect();
    let mut act = exp.clone();
    act.swap_remove(123);
    act.swap_remove(30_000);
    act.push(exp[5].clone());
    act.push(",,,1,1".to_string());
    write_dir(&a, &[part(&exp[..25_000]), part(&exp[25_000..])]);
    write_dir(&b, &[part(&act)]);
    let mem = compare_dirs(&a, &b, Format::Csv, 10, 0).unwrap();
    let disk = compare_dirs(&a, &b, Format::Csv, 10, 64 << 10).unwrap();
    assert!(mem.buckets > 1, "in-memory partitions: {}", mem.buckets);
    assert!(disk.buckets > mem.buckets, "spill buckets: {}", disk.buckets);
    for rep in [&mem, &disk] {
        assert_eq!(rep.missing.counts.pair, 2, "{rep:?}");
        assert_eq!(rep.extra.counts.pair, 1, "{rep:?}");
        assert_eq!(rep.extra.counts.right_unmatched, 1, "{rep:?}");
        assert_eq!(rep.actual.rows, 40_000);
    }
    let mut m1 = mem.missing.samples(RowKind::Pair).to_vec();
    let mut m2 = disk.missing.samples(RowKind::Pair).to_vec();
    m1.sort();
    m2.sort();
    assert_eq!(m1, m2);
    assert_eq!(
        m1,
        vec![exp[123].clone(), exp[30_000].clone()]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );
}
