//! CSV ingestion: `CsvSource` reading a generated impressions file and a plays file
//! (`weft gen` output, one partition) to the end; throughput in rows, the file size
//! is printed once for MB/s. The files are written once to a temp dir before timing
//! and stay in the page cache, so this is parse + encode cost, not disk.
//!
//! `csv_crate/...` is the baseline: the `csv` crate reader weft used before its own
//! (`read_byte_record` + the same cell parsing and row encoding), kept here so the
//! two are measured side by side on the same files in the same run.
//!
//! Knob: `WEFT_BENCH_CSV_EVENTS` (default 1,000,000 events, both files together).

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft::codec::csv::parse_cell;
use weft::config::{Format, JobConfig};
use weft::event::Side;
use weft::event::{event_time, RowBuilder, RowView};
use weft::source::csv::CsvSource;
use weft::source::{PollStatus, Source, SourceItem};

#[path = "common/mod.rs"]
mod common;

fn read_all(path: &Path, side: Side) -> u64 {
    let mut src = CsvSource::open(path, side, 0, common::schema(side)).expect("open csv");
    let mut rows = 0u64;
    let mut acc = 0u64;
    loop {
        let st = src
            .poll(1024, 0, &mut |it| match it {
                SourceItem::Row { ts, row, .. } => {
                    rows += 1;
                    acc = acc.wrapping_add(ts as u64 ^ row.len() as u64);
                }
                SourceItem::Dead { reason, .. } => {
                    panic!("dead letter in generated file: {reason}")
                }
                SourceItem::Resume { .. } => panic!("a CSV reader never resumes"),
            })
            .expect("read csv");
        if st == PollStatus::Done {
            std::hint::black_box(acc);
            return rows;
        }
    }
}

/// The old reader: the `csv` crate, then the same parse and encode per record.
fn read_all_csv_crate(path: &Path, side: Side) -> u64 {
    let schema = common::schema(side);
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(1 << 20)
        .from_path(path)
        .expect("open csv");
    let header = rd.byte_headers().expect("header").clone();
    let cols: Vec<usize> =
        schema.fields.iter().map(|f| header.iter().position(|h| h == f.name.as_bytes()).expect("column")).collect();
    let mut rec = csv::ByteRecord::new();
    let mut b = RowBuilder::new();
    let (mut rows, mut acc) = (0u64, 0u64);
    while rd.read_byte_record(&mut rec).expect("read") {
        assert_eq!(rec.len(), header.len());
        b.begin(schema.fields.len());
        for (i, f) in schema.fields.iter().enumerate() {
            parse_cell(&mut b, i, f.ty, &rec[cols[i]]).expect("cell");
        }
        let ts = event_time(RowView(b.bytes()), &schema).expect("time");
        rows += 1;
        acc = acc.wrapping_add(ts as u64 ^ b.bytes().len() as u64);
    }
    std::hint::black_box(acc);
    rows
}

fn bench(c: &mut Criterion) {
    let events = common::env_u64("WEFT_BENCH_CSV_EVENTS", 1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let p = common::gen_params(events, 100_000);
    weft::loadgen::write(dir.path(), &p, Format::Csv, JobConfig::builtin()).expect("generate csv");

    let mut g = c.benchmark_group("csv_parse");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    for (side, file) in [(Side::Left, "left-0.csv"), (Side::Right, "right-0.csv")] {
        let path = dir.path().join(file);
        let rows = read_all(&path, side);
        let bytes = std::fs::metadata(&path).expect("stat").len();
        eprintln!("csv_parse/{file}: {rows} rows, {:.1} MB", bytes as f64 / 1e6);
        g.throughput(Throughput::Elements(rows));
        assert_eq!(read_all_csv_crate(&path, side), rows, "both readers read every row");
        g.bench_function(file, |b| b.iter(|| read_all(&path, side)));
        g.bench_function(format!("csv_crate/{file}"), |b| b.iter(|| read_all_csv_crate(&path, side)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
