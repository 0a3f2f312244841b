//! `weft gen`: writes the generator's two streams as files (one file per generator
//! partition and input, so replaying them gives the same partitions and therefore the
//! same late rows) plus a `job.toml` that runs the join over them. The schema is the
//! generator's (`config::generator_schema`); rows are formatted by `codec`, as the
//! late-data sink formats them, so the files read back as the rows generated.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::codec::format::InputFormatter;
use crate::config::{generator_schema, Format, GenParams, JobConfig, GENERATOR_KEY, GENERATOR_TIME};
use crate::event::Side;
use crate::source::generator::Generator;
use crate::source::{PollStatus, Source, SourceItem};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {op}: {source}")]
pub struct GenError {
    pub path: PathBuf,
    pub op: &'static str,
    pub source: std::io::Error,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> GenError {
    let path = path.to_path_buf();
    move |e| GenError { path, op, source: e }
}

/// Data file prefixes of the left and right input: `left-<p>.<ext>`, `right-<p>.<ext>`.
const FILE_PREFIXES: [&str; 2] = ["left", "right"];

/// Writes the files and the job config; returns the config's path and rows per input.
pub fn write(dir: &Path, params: &GenParams, format: Format, job: JobConfig) -> Result<(PathBuf, [u64; 2]), GenError> {
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let results: Vec<Result<[u64; 2], GenError>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..params.partitions).map(|p| s.spawn(move || write_partition(dir, params, format, p))).collect();
        handles.into_iter().map(|h| h.join().expect("generator thread")).collect()
    });
    let mut counts = [0u64; 2];
    for r in results {
        let c = r?;
        counts[0] += c[0];
        counts[1] += c[1];
    }
    let text = replay_config(job, params, format, counts);
    let cfg = dir.join("job.toml");
    std::fs::write(&cfg, text).map_err(io("write", &cfg))?;
    Ok((cfg, counts))
}

/// Writes generator partition `p` of both inputs; returns rows per input.
fn write_partition(dir: &Path, params: &GenParams, format: Format, p: u32) -> Result<[u64; 2], GenError> {
    let ext = format.ext();
    let mut files = Vec::new();
    for side in [Side::Left, Side::Right] {
        let path = dir.join(format!("{}-{p}.{ext}", FILE_PREFIXES[side.idx()]));
        let f = File::create(&path).map_err(io("create", &path))?;
        let fmt = InputFormatter::new(format, &generator_schema(side));
        let mut w = BufWriter::with_capacity(1 << 20, f);
        w.write_all(&fmt.header()).map_err(io("write", &path))?;
        files.push((path, w, fmt));
    }
    // Files are written as fast as possible whatever the live rate limit.
    let mut params = params.clone();
    params.rate_limit = 0.0;
    let mut g = Generator::new(params, p);
    let mut buf = [Vec::new(), Vec::new()];
    let mut counts = [0u64; 2];
    loop {
        let st = g
            .poll(4096, 0, &mut |it| {
                if let SourceItem::Row { side, row, .. } = it {
                    files[side.idx()].2.write(&mut buf[side.idx()], crate::event::RowView(row));
                    counts[side.idx()] += 1;
                }
            })
            .expect("the generator does not fail");
        for i in 0..2 {
            files[i].1.write_all(&buf[i]).map_err(io("write", &files[i].0))?;
            buf[i].clear();
        }
        if st == PollStatus::Done {
            break;
        }
    }
    for (path, mut w, _) in files {
        w.flush().map_err(io("write", &path))?;
    }
    Ok(counts)
}

/// The text of `job.toml`: `job` with both inputs reading the written files.
fn replay_config(mut job: JobConfig, params: &GenParams, format: Format, counts: [u64; 2]) -> String {
    let ext = format.ext();
    for (side, input) in [(Side::Left, &mut job.left), (Side::Right, &mut job.right)] {
        let name = FILE_PREFIXES[side.idx()];
        let s = generator_schema(side);
        input.name = s.name.clone();
        input.generator = None;
        input.format = format;
        input.paths = (0..params.partitions).map(|p| format!("{name}-{p}.{ext}")).collect();
        input.key = GENERATOR_KEY.iter().map(|k| k.to_string()).collect();
        input.time = Some(GENERATOR_TIME.into());
        input.fields = s.fields.clone();
    }
    job.output.path = "out".into();
    format!(
        "# Written by `weft gen` ({} + {} rows, seed {}). Paths are relative to this file.\n{}",
        counts[0],
        counts[1],
        params.seed,
        toml::to_string(&job).expect("config serialises")
    )
}
