//! The output directory's layout: the one place that knows the name of every file
//! weft writes there, which of them are committed, and how a directory is prepared,
//! committed, synced, reset and cleaned. The streaming sinks, the checkpoint
//! coordinator, `weft batch` and `weft validate` all take their names from here.
//!
//! ```text
//!   <dir>/part-<shard>.<ext>[.inprogress]         streaming output (no checkpointing)
//!   <dir>/part-<shard>-<epoch>.<ext>[.inprogress] streaming output, per epoch
//!   <dir>/part-<thread>.<ext>[.inprogress]        batch output (in progress until complete)
//!   <dir>/late/<input>-<shard>[-<epoch>].<ext>[.inprogress]   streaming late rows
//!   <dir>/late/<input>-<partition>.<ext>          batch late rows
//!   <dir>/dead/part-<shard>[-<epoch>].jsonl[.inprogress]      streaming dead letters
//!   <dir>/dead/<input>-<partition>.jsonl          batch dead letters
//! ```
//! `<ext>` is `csv` or `jsonl` (late rows: their input's format). A name ending in
//! [`INPROGRESS_SUFFIX`] is not committed; every other file is: a reader may glob
//! `*.csv` at any time. Late files are named by shard when streaming and by
//! partition in batch; `weft validate` compares them as multisets per input (see
//! [`late_input_name`]), so the split does not matter.
//!
//! Without checkpointing a run writes its files in progress too and [`commit_all`]
//! renames them when it ends successfully, so an interrupted or failed run leaves no
//! partial file under a final name. Files are created with `O_EXCL|O_NOFOLLOW`
//! (`sys::create_new_nofollow`), and only regular files are listed, renamed or
//! removed: a symlink planted in the directory is never followed. The directory's
//! lock file (`sys::LOCK_FILE_NAME`) is hidden and matches no name here.
//!
//! Never touches a file that is not weft's: [`prepare_output_dir`] removes only the
//! files it claims (never a directory, never an input of the job). Not on the hot
//! path: every function here lists or renames files, once per run or per checkpoint.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::SinkError;
use crate::codec::Format;
use crate::config::{InputSource, Job};
use crate::event::Side;

/// Suffix of output files not yet committed.
pub const INPROGRESS_SUFFIX: &str = ".inprogress";
/// Subdirectory of late rows.
pub const LATE_DIR: &str = "late";
/// Subdirectory of dead letters.
pub const DEAD_DIR: &str = "dead";
/// Dead letters are always JSON lines.
pub const DEAD_FORMAT: Format = Format::Jsonl;
/// Prefix of part files (and of streaming dead-letter files).
const PART_PREFIX: &str = "part-";

pub(crate) fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> SinkError {
    let path = path.to_path_buf();
    move |source| SinkError { path, op, source }
}

// ---------------------------------------------------------------------------------
// Names: streaming. A shard's file is a *base* (no extension) that the sink turns
// into a path per epoch with [`file_path`].

/// `<dir>/part-<shard>`: a shard's joined output.
pub fn part_base(dir: &Path, shard: u32) -> PathBuf {
    dir.join(format!("{PART_PREFIX}{shard}"))
}

/// `<dir>/late/<input>-<shard>`: a shard's late rows of one input.
pub fn late_base(dir: &Path, input: &str, shard: u32) -> PathBuf {
    dir.join(LATE_DIR).join(format!("{input}-{shard}"))
}

/// `<dir>/dead/part-<shard>`: a shard's dead letters.
pub fn dead_base(dir: &Path, shard: u32) -> PathBuf {
    dir.join(DEAD_DIR).join(format!("{PART_PREFIX}{shard}"))
}

/// The file a shard writes for `base`: `<base>.<ext>.inprogress` without
/// checkpointing (`epoch` None; [`commit_all`] renames it when the run succeeds), else
/// `<base>-<epoch>.<ext>.inprogress` until its checkpoint commits it.
/// Without an epoch the extension is set with `Path::with_extension`; input names
/// have no `.` (the config refuses them), so nothing of the base is replaced.
pub fn file_path(base: &Path, ext: &str, epoch: Option<u64>) -> PathBuf {
    match epoch {
        None => inprogress_path(&base.with_extension(ext)),
        Some(e) => inprogress_path(&epoch_file_name(base, e, ext)),
    }
}

/// The committed name of an epoch's file: `<base>-<epoch>.<ext>`.
pub fn epoch_file_name(base: &Path, epoch: u64, ext: &str) -> PathBuf {
    let mut name = base.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-{epoch}.{ext}"));
    base.with_file_name(name)
}

/// `path` + [`INPROGRESS_SUFFIX`].
pub fn inprogress_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_os_string();
    p.push(INPROGRESS_SUFFIX);
    PathBuf::from(p)
}

/// The committed name of an in-progress file; None when `path` is not in progress.
pub fn committed_path(path: &Path) -> Option<PathBuf> {
    let s = path.to_str()?;
    s.strip_suffix(INPROGRESS_SUFFIX).map(PathBuf::from)
}

// ---------------------------------------------------------------------------------
// Names: batch.

/// `<dir>/part-<thread>.<ext>`, or its in-progress name while being written.
pub fn batch_part_path(dir: &Path, thread: usize, ext: &str, inprogress: bool) -> PathBuf {
    let p = dir.join(format!("{PART_PREFIX}{thread}.{ext}"));
    if inprogress {
        inprogress_path(&p)
    } else {
        p
    }
}

/// `<dir>/late/<input>-<partition>.<ext>`: late rows of one input partition.
pub fn batch_late_path(dir: &Path, input: &str, partition: u32, ext: &str) -> PathBuf {
    dir.join(LATE_DIR).join(format!("{input}-{partition}.{ext}"))
}

/// `<dir>/dead/<input>-<partition>.jsonl`: dead letters of one input partition.
pub fn batch_dead_path(dir: &Path, input: &str, partition: u32) -> PathBuf {
    dir.join(DEAD_DIR).join(format!("{input}-{partition}.{}", DEAD_FORMAT.ext()))
}

// ---------------------------------------------------------------------------------
// Parsing names.

/// The epoch of `<base>-<epoch>.<ext>[.inprogress]` and whether it is in progress.
/// The last `-<digits>` before the extension is the epoch; a name without one is
/// no epoch's file.
pub fn parse_epoch(name: &str) -> Option<(u64, bool)> {
    let (stem, inprogress) = match name.strip_suffix(INPROGRESS_SUFFIX) {
        Some(s) => (s, true),
        None => (name, false),
    };
    let (before_ext, _ext) = stem.rsplit_once('.')?;
    let (_, epoch) = before_ext.rsplit_once('-')?;
    epoch.parse::<u64>().ok().map(|e| (e, inprogress))
}

/// The input a late file belongs to: `<input>-<n>.<ext>` or, with checkpoints,
/// `<input>-<shard>-<epoch>.<ext>`; every trailing `-<digits>` is dropped.
pub fn late_input_name(file_name: &str, format: Format) -> &str {
    let mut stem = file_name.strip_suffix(format.ext()).and_then(|s| s.strip_suffix('.')).unwrap_or(file_name);
    while let Some((name, n)) = stem.rsplit_once('-') {
        if name.is_empty() || n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
            break;
        }
        stem = name;
    }
    stem
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

/// `<stem>.<csv|jsonl>` with an optional [`INPROGRESS_SUFFIX`]: the stem.
fn text_stem(name: &str) -> Option<&str> {
    let base = name.strip_suffix(INPROGRESS_SUFFIX).unwrap_or(name);
    [Format::Csv, Format::Jsonl].iter().find_map(|f| base.strip_suffix(f.ext())?.strip_suffix('.'))
}

/// `<stem>-<digits>[-<digits>]`: the stem. The numbers are a shard, partition or
/// thread, then maybe an epoch.
fn numbered_stem(stem: &str) -> Option<&str> {
    let (rest, n) = stem.rsplit_once('-')?;
    if !all_digits(n) {
        return None;
    }
    match rest.rsplit_once('-') {
        Some((s, m)) if all_digits(m) && !s.is_empty() => Some(s),
        _ if !rest.is_empty() => Some(rest),
        _ => None,
    }
}

/// Whether `name` is a part file weft writes at the top of an output directory:
/// `part-<n>[-<epoch>].<csv|jsonl>[.inprogress]`, streaming or batch.
pub fn is_part_file_name(name: &str) -> bool {
    text_stem(name).and_then(numbered_stem) == Some("part")
}

/// Whether `name` is a file `weft validate` reads as output rows at the top of a
/// directory, in any format: not hidden, `*.csv` or `*.jsonl` (maybe in progress).
/// Broader than [`is_part_file_name`]: validate also compares directories weft did
/// not write (the DuckDB oracle writes `out.csv`).
pub fn is_text_output_name(name: &str) -> bool {
    !name.starts_with('.') && text_stem(name).is_some()
}

/// Whether `name` is a side-output file weft writes in `late/` or `dead/`:
/// `<input or part>-<n>[-<epoch>].<csv|jsonl>[.inprogress]`.
pub fn is_side_file_name(name: &str) -> bool {
    !name.starts_with('.') && text_stem(name).and_then(numbered_stem).is_some()
}

// ---------------------------------------------------------------------------------
// Listing.

/// The non-hidden `*.<ext>` files directly in `dir` with their sizes, sorted by
/// name: what `weft validate` reads from an output, `late/` or `dead/` directory.
pub fn list_text_files(dir: &Path, format: Format) -> Result<Vec<(PathBuf, u64)>, SinkError> {
    let suffix = format!(".{}", format.ext());
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir, "list"))? {
        let entry = entry.map_err(io(dir, "list"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(&suffix) {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(io(&path, "stat"))?;
        if meta.is_file() {
            out.push((path, meta.len()));
        }
    }
    out.sort();
    Ok(out)
}

/// One output file of a checkpointed run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochFile {
    pub path: PathBuf,
    pub epoch: u64,
    pub inprogress: bool,
}

/// Output files (top level, `late/`, `dead/`) with their epoch, committed or not.
pub fn output_files(out: &Path) -> Result<Vec<EpochFile>, SinkError> {
    let mut v = Vec::new();
    for d in [out.to_path_buf(), out.join(LATE_DIR), out.join(DEAD_DIR)] {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d, "read directory")(e)),
        };
        for e in rd {
            let e = e.map_err(io(&d, "read directory"))?;
            let path = e.path();
            // Regular files only: a symlink is never renamed into output or followed.
            if !e.file_type().map_err(io(&path, "stat"))?.is_file() {
                continue;
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if let Some((epoch, inprogress)) = parse_epoch(&name) {
                v.push(EpochFile { path, epoch, inprogress });
            }
        }
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------
// Commit, sync, reset (checkpointed runs).

fn fsync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir, "fsync directory"))
}

fn fdatasync(path: &Path) -> Result<(), SinkError> {
    File::open(path).and_then(|f| f.sync_data()).map_err(io(path, "fdatasync"))
}

/// Makes the output of epochs `<= n` visible: fsyncs and renames their in-progress
/// files, then fsyncs the directories that changed. Returns how many it committed.
pub fn commit_output(out: &Path, n: u64) -> Result<u64, SinkError> {
    let mut committed = 0;
    let mut dirs = std::collections::BTreeSet::new();
    for f in output_files(out)? {
        if f.inprogress && f.epoch <= n {
            fdatasync(&f.path)?;
            let final_path = committed_path(&f.path).expect("an in-progress file has the suffix");
            std::fs::rename(&f.path, &final_path).map_err(io(&f.path, "commit (rename)"))?;
            dirs.insert(f.path.parent().unwrap_or(out).to_path_buf());
            committed += 1;
        }
    }
    for d in dirs {
        fsync_dir(&d)?;
    }
    Ok(committed)
}

/// fsyncs the in-progress files of epochs `<= n` (before their manifest is written).
pub fn sync_output(out: &Path, n: u64) -> Result<(), SinkError> {
    for f in output_files(out)? {
        if f.inprogress && f.epoch <= n {
            fdatasync(&f.path)?;
        }
    }
    Ok(())
}

/// Recovery from checkpoint `n`: output of later epochs is discarded (it will be
/// produced again), output of epochs `<= n` is committed.
pub fn reset_output(out: &Path, n: u64) -> Result<(), SinkError> {
    for f in output_files(out)? {
        if f.epoch > n {
            std::fs::remove_file(&f.path).map_err(io(&f.path, "remove uncommitted output"))?;
        }
    }
    commit_output(out, n)?;
    Ok(())
}

/// Removes output files that were never committed (`*.inprogress`): a checkpointed
/// job starting afresh (no checkpoint completed) owns nothing else.
pub fn remove_uncommitted(dir: &Path) -> Result<(), SinkError> {
    for d in [dir.to_path_buf(), dir.join(LATE_DIR), dir.join(DEAD_DIR)] {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let regular = e.file_type().is_ok_and(|t| t.is_file());
            if regular && p.to_string_lossy().ends_with(INPROGRESS_SUFFIX) {
                std::fs::remove_file(&p).map_err(io(&p, "remove uncommitted output"))?;
            }
        }
    }
    Ok(())
}

/// A run without checkpointing ended successfully: every in-progress file weft wrote
/// (part files at the top, side files in `late/` and `dead/`) gets its final name, then
/// the directories are fsynced. The shards fsynced the files when they closed them.
/// Returns how many it committed.
pub fn commit_all(out: &Path) -> Result<u64, SinkError> {
    let mut committed = 0;
    for (d, top) in [(out.to_path_buf(), true), (out.join(LATE_DIR), false), (out.join(DEAD_DIR), false)] {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d, "read directory")(e)),
        };
        let mut renamed = false;
        for e in rd {
            let e = e.map_err(io(&d, "read directory"))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = if top { is_part_file_name(name) } else { is_side_file_name(name) };
            if !ours || !name.ends_with(INPROGRESS_SUFFIX) || !e.file_type().map_err(io(&e.path(), "stat"))?.is_file() {
                continue;
            }
            let path = e.path();
            let final_path = committed_path(&path).expect("an in-progress file has the suffix");
            std::fs::rename(&path, &final_path).map_err(io(&path, "commit (rename)"))?;
            renamed = true;
            committed += 1;
        }
        if renamed {
            fsync_dir(&d)?;
        }
    }
    Ok(committed)
}

// ---------------------------------------------------------------------------------
// Preparing a directory.

/// Which top-level files a run claims as earlier output (refused without `force`,
/// removed with it). In `late/` and `dead/` both claim weft's side-output names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// `weft run`: weft's part files only ([`is_part_file_name`]).
    PartFiles,
    /// `weft batch`: every file validate would read as rows ([`is_text_output_name`]),
    /// so that a later `weft validate` of the directory sees only this run's rows.
    TextFiles,
}

impl Claim {
    fn top_level(self, name: &str) -> bool {
        match self {
            Claim::PartFiles => is_part_file_name(name),
            Claim::TextFiles => is_text_output_name(name),
        }
    }
}

/// Why an output directory cannot be prepared.
#[derive(Debug)]
pub enum PrepareError {
    Io(SinkError),
    /// The directory holds earlier output (and no `force`): every claimed file.
    Exists {
        dir: PathBuf,
        found: Vec<PathBuf>,
    },
    /// An input of the job lies where the output goes.
    InputInOutput {
        input: PathBuf,
        dir: PathBuf,
    },
}

impl From<SinkError> for PrepareError {
    fn from(e: SinkError) -> Self {
        PrepareError::Io(e)
    }
}

/// The streaming run's wording (`weft run` has always said this).
impl From<PrepareError> for SinkError {
    fn from(e: PrepareError) -> Self {
        let (path, kind, message) = match e {
            PrepareError::Io(e) => return e,
            PrepareError::Exists { dir, found } => (
                dir,
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "holds output of an earlier run ({} entries, e.g. {}); pass --force to replace it",
                    found.len(),
                    found[0].display()
                ),
            ),
            PrepareError::InputInOutput { input, dir } => (
                dir,
                std::io::ErrorKind::InvalidInput,
                format!("input file {} lies where the output goes; choose another output directory", input.display()),
            ),
        };
        SinkError { path, op: "prepare output", source: std::io::Error::new(kind, message) }
    }
}

/// The input files of `job` (none for the generator).
fn input_files(job: &Job) -> Vec<&Path> {
    let mut v = Vec::new();
    for side in [Side::Left, Side::Right] {
        if let InputSource::Files { paths, .. } = &job.input(side).source {
            v.extend(paths.iter().map(PathBuf::as_path));
        }
    }
    v
}

/// The files of `dir` (top level, `late/`, `dead/`) that `claim` says are earlier
/// output. An unreadable `late/` or `dead/` is an error, never "empty".
fn claimed_files(dir: &Path, claim: Claim) -> Result<Vec<PathBuf>, SinkError> {
    let mut found = Vec::new();
    for (d, top) in [(dir.to_path_buf(), true), (dir.join(LATE_DIR), false), (dir.join(DEAD_DIR), false)] {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if !top && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d, "read directory")(e)),
        };
        for entry in rd {
            let entry = entry.map_err(io(&d, "read directory"))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let claimed = if top { claim.top_level(name) } else { is_side_file_name(name) };
            if claimed && entry.file_type().map_err(io(&entry.path(), "stat"))?.is_file() {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// An input that lies where the output goes: at the top of `dir` under a name the
/// run claims, or anywhere in `late/` or `dead/`. Inputs that do not exist are
/// skipped (the source reports them).
fn input_in_output(job: &Job, dir: &Path, claim: Claim) -> Result<Option<PathBuf>, SinkError> {
    let canon_dir = std::fs::canonicalize(dir).map_err(io(dir, "resolve output directory"))?;
    for p in input_files(job) {
        let Ok(cp) = std::fs::canonicalize(p) else { continue };
        let top_level = cp.parent() == Some(canon_dir.as_path())
            && cp.file_name().and_then(|n| n.to_str()).is_some_and(|n| claim.top_level(n));
        if top_level || cp.starts_with(canon_dir.join(LATE_DIR)) || cp.starts_with(canon_dir.join(DEAD_DIR)) {
            return Ok(Some(p.to_path_buf()));
        }
    }
    Ok(None)
}

/// Prepares an output directory for a run of `job`: creates it with `late/` and
/// `dead/`; refuses an input of the job lying where the output goes; refuses a
/// directory holding earlier output ([`Claim`]) unless `force`, and then removes
/// exactly those files. Never removes a directory, a file weft does not write, or
/// an input.
pub fn prepare_output_dir(job: &Job, dir: &Path, force: bool, claim: Claim) -> Result<(), PrepareError> {
    std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
    if let Some(input) = input_in_output(job, dir, claim)? {
        return Err(PrepareError::InputInOutput { input, dir: dir.to_path_buf() });
    }
    let found = claimed_files(dir, claim)?;
    if !found.is_empty() && !force {
        return Err(PrepareError::Exists { dir: dir.to_path_buf(), found });
    }
    for p in found {
        std::fs::remove_file(&p).map_err(io(&p, "remove"))?;
    }
    for sub in [LATE_DIR, DEAD_DIR] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p, "create directory"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_names_round_trip() {
        let dir = Path::new("/o");
        let base = part_base(dir, 3);
        assert_eq!(file_path(&base, "csv", None), Path::new("/o/part-3.csv.inprogress"));
        let p = file_path(&base, "csv", Some(12));
        assert_eq!(p, Path::new("/o/part-3-12.csv.inprogress"));
        assert_eq!(parse_epoch(p.file_name().unwrap().to_str().unwrap()), Some((12, true)));
        let c = committed_path(&p).unwrap();
        assert_eq!(c, Path::new("/o/part-3-12.csv"));
        assert_eq!(parse_epoch("part-3-12.csv"), Some((12, false)));
        assert_eq!(committed_path(&c), None);
        let late = file_path(&late_base(dir, "my-plays", 1), "jsonl", Some(4));
        assert_eq!(late, Path::new("/o/late/my-plays-1-4.jsonl.inprogress"));
        assert_eq!(late_input_name("my-plays-1-4.jsonl", Format::Jsonl), "my-plays");
        assert_eq!(file_path(&dead_base(dir, 0), "jsonl", None), Path::new("/o/dead/part-0.jsonl.inprogress"));
        for p in [&base.with_extension("csv"), &late, &c] {
            let name = p.file_name().unwrap().to_str().unwrap();
            assert!(is_part_file_name(name) || is_side_file_name(name), "{name}");
        }
        assert_eq!(parse_epoch("notes.txt"), None);
    }

    #[test]
    fn batch_names_round_trip() {
        let dir = Path::new("/o");
        assert_eq!(batch_part_path(dir, 2, "csv", true), Path::new("/o/part-2.csv.inprogress"));
        assert_eq!(
            committed_path(&batch_part_path(dir, 2, "csv", true)).unwrap(),
            batch_part_path(dir, 2, "csv", false)
        );
        let late = batch_late_path(dir, "impressions", 7, "csv");
        assert_eq!(late, Path::new("/o/late/impressions-7.csv"));
        assert_eq!(late_input_name("impressions-7.csv", Format::Csv), "impressions");
        assert_eq!(batch_dead_path(dir, "plays", 1), Path::new("/o/dead/plays-1.jsonl"));
        assert!(is_side_file_name("plays-1.jsonl") && is_side_file_name("impressions-7.csv"));
    }

    #[test]
    fn name_classes() {
        assert!(is_part_file_name("part-0.csv"));
        assert!(is_part_file_name("part-0-5.jsonl.inprogress"));
        assert!(!is_part_file_name("part-x.csv") && !is_part_file_name("part-0.txt"));
        assert!(!is_part_file_name("out.csv") && !is_part_file_name("-0.csv"));
        assert!(is_text_output_name("part-0.csv"));
        assert!(is_text_output_name("part-0.jsonl.inprogress"));
        assert!(is_text_output_name("out.csv"));
        assert!(!is_text_output_name(".part-0.csv"));
        assert!(!is_text_output_name("job.toml"));
        assert!(!is_side_file_name("notes.csv") && !is_side_file_name(".x-0.csv"));
    }

    fn job_reading(inputs: &[&Path]) -> Job {
        let fields = |n: &str| {
            format!("name = \"{n}\"\nkey = [\"k\"]\ntime = \"t\"\nfields = [{{ name = \"k\", type = \"u64\" }}, {{ name = \"t\", type = \"i64\" }}]\n")
        };
        let text = format!(
            "[left]\n{}paths = [{:?}]\n[right]\n{}paths = [{:?}]\n[join]\nkind = \"inner\"\nlower_ms = 0\nupper_ms = 0\n",
            fields("l"),
            inputs[0],
            fields("r"),
            inputs[1],
        );
        let cfg = crate::config::JobConfig::parse(&text, Path::new("t.toml")).unwrap();
        cfg.resolve(Path::new("t.toml"), Path::new("/")).unwrap()
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "x").unwrap();
    }

    #[test]
    fn prepare_removes_only_weft_files() {
        let t = tempfile::tempdir().unwrap();
        let (l, r) = (t.path().join("in/l.csv"), t.path().join("in/r.csv"));
        touch(&l);
        touch(&r);
        let job = job_reading(&[&l, &r]);
        let out = t.path().join("out");
        prepare_output_dir(&job, &out, false, Claim::PartFiles).unwrap();
        assert!(out.join(LATE_DIR).is_dir() && out.join(DEAD_DIR).is_dir());
        let ours = ["part-0.csv", "part-1-3.jsonl.inprogress", "late/l-0.csv", "dead/part-1-2.jsonl"];
        let theirs = ["NOTES.txt", "out.csv", ".part-0.csv", "late/notes.txt", "dead/sub/part-0.jsonl"];
        for n in ours.iter().chain(&theirs) {
            touch(&out.join(n));
        }
        match prepare_output_dir(&job, &out, false, Claim::PartFiles) {
            Err(PrepareError::Exists { found, .. }) => assert_eq!(found.len(), ours.len(), "{found:?}"),
            other => panic!("expected Exists, got {other:?}"),
        }
        prepare_output_dir(&job, &out, true, Claim::PartFiles).unwrap();
        for n in ours {
            assert!(!out.join(n).exists(), "{n} should be removed");
        }
        for n in theirs {
            assert!(out.join(n).exists(), "{n} should stay");
        }
        // Batch also claims every top-level text file (what validate would read).
        prepare_output_dir(&job, &out, true, Claim::TextFiles).unwrap();
        assert!(!out.join("out.csv").exists() && out.join(".part-0.csv").exists());
        assert!(l.exists() && r.exists());
    }

    #[test]
    fn prepare_refuses_inputs_where_the_output_goes() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let (l, r) = (out.join("part-0.csv"), out.join("late/r-0.csv"));
        touch(&l);
        touch(&r);
        for claim in [Claim::PartFiles, Claim::TextFiles] {
            let job = job_reading(&[&l, &t.path().join("missing.csv")]);
            let e = prepare_output_dir(&job, &out, true, claim);
            assert!(matches!(e, Err(PrepareError::InputInOutput { .. })), "{e:?}");
            let job = job_reading(&[&t.path().join("missing.csv"), &r]);
            let e = prepare_output_dir(&job, &out, true, claim);
            assert!(matches!(e, Err(PrepareError::InputInOutput { .. })), "{e:?}");
        }
        assert!(l.exists() && r.exists());
        let msg = SinkError::from(PrepareError::Exists { dir: out.clone(), found: vec![l.clone()] }).to_string();
        assert!(msg.contains("--force") && msg.contains("1 entries"), "{msg}");
    }

    #[test]
    fn commit_and_reset_by_epoch() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        let names = [
            "part-0-1.csv.inprogress",
            "part-0-2.csv.inprogress",
            "late/l-0-1.csv.inprogress",
            "dead/part-0-3.jsonl.inprogress",
        ];
        for n in names {
            touch(&out.join(n));
        }
        touch(&out.join("NOTES.txt"));
        sync_output(out, 2).unwrap();
        assert_eq!(commit_output(out, 1).unwrap(), 2);
        assert!(out.join("part-0-1.csv").exists() && out.join("late/l-0-1.csv").exists());
        assert!(out.join("part-0-2.csv.inprogress").exists());
        reset_output(out, 2).unwrap();
        assert!(out.join("part-0-2.csv").exists(), "epoch 2 is committed");
        assert!(!out.join("dead/part-0-3.jsonl.inprogress").exists(), "epoch 3 is discarded");
        assert!(out.join("NOTES.txt").exists());
        let mut epochs: Vec<(u64, bool)> =
            output_files(out).unwrap().into_iter().map(|f| (f.epoch, f.inprogress)).collect();
        epochs.sort();
        assert_eq!(epochs, [(1, false), (1, false), (2, false)]);
        touch(&out.join("part-1-4.csv.inprogress"));
        remove_uncommitted(out).unwrap();
        assert!(!out.join("part-1-4.csv.inprogress").exists() && out.join("part-0-2.csv").exists());
    }

    #[test]
    fn commit_all_renames_only_weft_regular_files() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        for n in ["part-0.csv.inprogress", "late/l-1.csv.inprogress", "dead/part-0.jsonl.inprogress", "x.inprogress"] {
            touch(&out.join(n));
        }
        let target = t.path().join("target.csv");
        std::os::unix::fs::symlink(&target, out.join("part-1.csv.inprogress")).unwrap();
        std::fs::write(out.join(crate::sys::LOCK_FILE_NAME), "pid 1\n").unwrap();
        assert_eq!(commit_all(out).unwrap(), 3);
        assert!(out.join("part-0.csv").exists() && out.join("late/l-1.csv").exists());
        assert!(out.join("dead/part-0.jsonl").exists() && out.join("x.inprogress").exists());
        assert!(out.join("part-1.csv.inprogress").symlink_metadata().is_ok(), "a link is not committed");
        assert!(!target.exists());
        let found = claimed_files(out, Claim::TextFiles).unwrap();
        assert!(found.iter().all(|p| !p.ends_with(crate::sys::LOCK_FILE_NAME)), "{found:?}");
    }
}
