//! Where a job starts: fresh, or from the latest complete and valid checkpoint.
//!
//! Rules: newest manifest first; a manifest that does not parse, or whose files are
//! missing, short or fail their checksum, is reported as a warning and the previous
//! one is tried. If manifests exist but none is valid, the job does not start (it
//! would otherwise begin again over output that was already committed). A checkpoint
//! of a different job shape (shards, schemas, bounds, partitions) is an error.

use std::path::Path;

use crate::checkpoint::{self, CheckpointError, JobShape, Manifest};
use crate::config::{Job, OutputTarget};

pub enum Start {
    /// No checkpoint: a new run.
    Fresh,
    /// Resume from this checkpoint.
    Resume(Box<Manifest>),
    /// The job already ran to the end (its final checkpoint says so).
    Finished(u64),
}

/// Decides how the job starts; `warn` receives one line per unusable checkpoint.
pub fn plan(job: &Job, dir: &Path, mut warn: impl FnMut(String)) -> Result<Start, CheckpointError> {
    let all = checkpoint::list(dir)?;
    if all.is_empty() {
        return Ok(Start::Fresh);
    }
    let shape = JobShape::of(job);
    for n in &all {
        match checkpoint::verify(dir, *n) {
            Ok(m) => {
                if let Some(why) = m.job.mismatch(&shape) {
                    return Err(CheckpointError::Mismatch { path: checkpoint::manifest_path(dir, *n), reason: why });
                }
                if m.finished {
                    return Ok(Start::Finished(*n));
                }
                return Ok(Start::Resume(Box::new(m)));
            }
            Err(e) => warn(format!("checkpoint {n} is unusable, trying an older one: {e}")),
        }
    }
    Err(CheckpointError::Invalid {
        path: dir.to_path_buf(),
        reason: format!(
            "none of the {} checkpoints is valid (see the warnings); refusing to start afresh over their output. \
             Remove the directory (and the output) to run the job from the beginning",
            all.len()
        ),
    })
}

/// Prepares the output for resuming from checkpoint `n`: later epochs are discarded,
/// epochs up to `n` committed.
pub fn reset_output(job: &Job, n: u64) -> Result<(), CheckpointError> {
    if let OutputTarget::Dir(d) = &job.output {
        crate::sink::layout::reset_output(d, n).map_err(|e| CheckpointError::Io {
            path: e.path,
            op: e.op,
            source: e.source,
        })?;
    }
    Ok(())
}

/// A fresh start under checkpointing: bucket copies left by a run that never
/// completed a checkpoint are not state of this run.
pub fn clear_orphans(dir: &Path) -> Result<(), CheckpointError> {
    let state = dir.join("state");
    match std::fs::remove_dir_all(&state) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(checkpoint::io(&state, "remove orphaned state")(e)),
    }
}
