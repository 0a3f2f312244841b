//! Fuzzes the readers of untrusted text: the CSV reader, the JSON-lines reader and the
//! config parser (`JobConfig::parse` + `resolve`), over arbitrary bytes, bytes drawn
//! from the characters that matter (quotes, commas, CR, LF, a BOM) and mutations of
//! valid inputs. Each must never panic; the file readers must keep their memory bound
//! (buffers checked after the run, with limits shrunk so that small inputs cross
//! them) and account for every line: rows + dead letters + blank lines + header and
//! continuation lines of multi-line records = the lines of the file, with strictly
//! increasing line numbers.
//!
//! The default case count keeps this under a few seconds; `PROPTEST_CASES=100000`
//! runs more.

mod common;

use std::path::Path;

use proptest::prelude::*;
use weft::config::JobConfig;
use weft::event::Side;
use weft::schema::{Field, FieldType, Schema};
use weft::source::csv::CsvSource;
use weft::source::jsonl::JsonlSource;
use weft::source::{PollStatus, ReadLimits, Source, SourceItem, RAW_BYTES_MAX};

use common::job::{InputToml, JobToml};

fn schema() -> Schema {
    let fields = vec![
        Field::new("k", FieldType::I64),
        Field::new("ts", FieldType::I64),
        Field::new("v", FieldType::F64),
        Field::new("name", FieldType::String),
    ];
    Schema::new("l", fields, &["k".into()], "ts").unwrap()
}

/// Limits small enough that a few hundred bytes cross each of them.
const SMALL: ReadLimits = ReadLimits { line_bytes_max: 40, record_lines_max: 3, read_bytes: 7 };

fn physical_lines(bytes: &[u8]) -> u64 {
    let nl = bytes.iter().filter(|&&c| c == b'\n').count() as u64;
    nl + (!bytes.is_empty() && !bytes.ends_with(b"\n")) as u64
}

/// Reads `src` to the end: (rows, dead letters), checking line numbers increase.
fn drain(src: &mut dyn Source, limits: &ReadLimits) -> (u64, u64) {
    let (mut rows, mut dead, mut last_line) = (0u64, 0u64, 0u64);
    loop {
        let st = src
            .poll(5, 0, &mut |it| match it {
                SourceItem::Row { row, .. } => {
                    assert!(row.len() <= weft::event::ROW_BYTES_MAX);
                    rows += 1;
                }
                SourceItem::Dead { line, raw, reason, .. } => {
                    assert!(line > last_line, "dead letter line {line} after {last_line}");
                    assert!(raw.len() <= limits.line_bytes_max.max(RAW_BYTES_MAX), "raw of {} bytes", raw.len());
                    assert!(reason.len() < 400, "reason of {} bytes: {reason}", reason.len());
                    last_line = line;
                    dead += 1;
                }
                SourceItem::Resume { .. } => panic!("a file reader never resumes"),
            })
            .expect("a readable file never fails after its header");
        if st == PollStatus::Done {
            return (rows, dead);
        }
    }
}

fn check_csv(dir: &Path, bytes: &[u8], limits: ReadLimits) {
    let path = dir.join("f.csv");
    std::fs::write(&path, bytes).unwrap();
    let Ok(mut src) = CsvSource::open_with(&path, Side::Left, 0, schema(), limits) else {
        return; // a refused header is an error message, which is fine
    };
    let (rows, dead) = drain(&mut src, &limits);
    let c = src.line_counts();
    assert_eq!(
        rows + dead + c.blank + c.header + c.continuation,
        physical_lines(bytes),
        "rows {rows} dead {dead} {c:?} for {:?}",
        String::from_utf8_lossy(bytes)
    );
    let bound = 3 * limits.buffer_bytes_max() + RAW_BYTES_MAX;
    assert!(src.buffer_bytes() <= bound, "buffers {} > {bound}", src.buffer_bytes());
}

fn check_jsonl(dir: &Path, bytes: &[u8], limits: ReadLimits) {
    let path = dir.join("f.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let mut src = JsonlSource::open_with(&path, Side::Left, 0, schema(), limits).unwrap();
    let (rows, dead) = drain(&mut src, &limits);
    assert_eq!(rows + dead + src.blank_lines(), physical_lines(bytes), "for {:?}", String::from_utf8_lossy(bytes));
    let bound = limits.buffer_bytes_max() + RAW_BYTES_MAX;
    assert!(src.buffer_bytes() <= bound, "buffers {} > {bound}", src.buffer_bytes());
}

/// Bytes made mostly of the characters the readers treat specially.
fn tricky_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let alphabet: &[u8] = b"\",,\n\n\r 1x-e.{}[]:\\\xef\xbb\xbf\xff";
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(alphabet.to_vec()),
            1 => any::<u8>(),
        ],
        0..max,
    )
}

/// Edits of `base`: (position, byte, kind) = replace, insert or delete.
fn mutate(base: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(at, b, kind) in edits {
        let at = if v.is_empty() { 0 } else { at % (v.len() + 1) };
        match kind % 3 {
            0 if at < v.len() => v[at] = b,
            1 => v.insert(at, b),
            _ if at < v.len() => {
                v.remove(at);
            }
            _ => v.push(b),
        }
    }
    v
}

fn edits() -> impl Strategy<Value = Vec<(usize, u8, u8)>> {
    proptest::collection::vec(
        (any::<usize>(), prop_oneof![Just(b'"'), Just(b','), Just(b'\n'), any::<u8>()], any::<u8>()),
        0..10,
    )
}

const VALID_CSV: &[u8] =
    b"\xef\xbb\xbfname,ts,k,v\r\n\"a,\"\"b\"\"\",100,1,1.5\r\n,101,2,\r\n\r\n\"multi\nline\",102,3,1e3\nplain,103,4,-0.5\n";
const VALID_JSONL: &[u8] =
    b"\xef\xbb\xbf{\"k\":1,\"ts\":100,\"v\":1.5,\"name\":\"a\\\"b\"}\r\n\n{\"k\":2,\"ts\":101,\"v\":null}\n{\"ts\":102,\"k\":3,\"x\":[1,{\"y\":2}]}\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn csv_reader_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), header in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let mut input = if header { b"k,ts,v,name\n".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        check_csv(dir.path(), &input, SMALL);
        check_csv(dir.path(), &input, ReadLimits::default());
    }

    #[test]
    fn csv_reader_on_tricky_bytes(bytes in tricky_bytes(400)) {
        let dir = tempfile::tempdir().unwrap();
        let mut input = b"k,ts,v,name\n".to_vec();
        input.extend_from_slice(&bytes);
        check_csv(dir.path(), &input, SMALL);
        check_csv(dir.path(), &input, ReadLimits { line_bytes_max: 1 << 10, record_lines_max: 64, read_bytes: 1 });
    }

    #[test]
    fn csv_reader_on_mutated_valid_csv(e in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let input = mutate(VALID_CSV, &e);
        check_csv(dir.path(), &input, SMALL);
        check_csv(dir.path(), &input, ReadLimits::default());
    }

    #[test]
    fn jsonl_reader_on_arbitrary_and_tricky_bytes(a in proptest::collection::vec(any::<u8>(), 0..300), t in tricky_bytes(300)) {
        let dir = tempfile::tempdir().unwrap();
        for input in [&a, &t] {
            check_jsonl(dir.path(), input, SMALL);
            check_jsonl(dir.path(), input, ReadLimits::default());
        }
    }

    #[test]
    fn jsonl_reader_on_mutated_valid_jsonl(e in edits()) {
        let dir = tempfile::tempdir().unwrap();
        let input = mutate(VALID_JSONL, &e);
        check_jsonl(dir.path(), &input, SMALL);
        check_jsonl(dir.path(), &input, ReadLimits::default());
    }

    #[test]
    fn config_parser_on_arbitrary_text(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        check_config(dir.path(), &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_parser_on_mutated_valid_configs(e in edits(), which in 0..2usize) {
        let dir = tempfile::tempdir().unwrap();
        let base = valid_configs(dir.path())[which].clone();
        check_config(dir.path(), &String::from_utf8_lossy(&mutate(base.as_bytes(), &e)));
    }
}

fn valid_configs(dir: &Path) -> [String; 2] {
    let files = JobToml::new(
        InputToml::files("l", &["l.csv"], &[("k", "i64"), ("ts", "i64"), ("v", "f64")]),
        InputToml::files("r", &["r.jsonl"], &[("k", "i64"), ("ts", "i64")]).format("jsonl"),
    )
    .window(-10, 10)
    .engine("checkpoint_interval_ms = 100")
    .render();
    let _ = dir;
    [files, JobToml::generated("events = 100, keys = 10").render()]
}

/// Parsing and resolving never panic; the result is a config or an error message.
fn check_config(dir: &Path, text: &str) {
    let path = dir.join("job.toml");
    if let Ok(cfg) = JobConfig::parse(text, &path) {
        if let Err(e) = cfg.resolve(&path, dir) {
            assert!(!e.to_string().is_empty());
        }
    }
}
