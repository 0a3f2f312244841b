//! `weft schema check`: what a restart of a (changed) job would do with the newest
//! usable checkpoint, decided exactly as the restart decides it
//! ([`coordinator::plan`](super::coordinator::plan)) and without writing anything:
//! per input and field, compatible as is, migrated how, or incompatible why; and
//! whether the state is re-distributed (another shard count or routing) or rewritten
//! (a migration that changes stored rows).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::coordinator::{self, Start};
use super::{CheckpointError, Manifest, SchemaChange};
use crate::config::Job;

/// The verdict on one checkpoint directory for one job.
#[derive(Debug)]
pub enum Verdict {
    /// A restart resumes from `checkpoint`, its state carried over as `lines` say.
    Compatible { checkpoint: u64, lines: Vec<String> },
    /// A restart is refused (exit 2, nothing touched), for `reason`.
    Incompatible { manifest: PathBuf, reason: String },
    /// The newest checkpoint is final: a restart does nothing.
    Finished { checkpoint: u64 },
}

impl Verdict {
    /// True unless a restart would be refused.
    pub fn compatible(&self) -> bool {
        !matches!(self, Verdict::Incompatible { .. })
    }

    /// The verdict as text, one line per input and field.
    pub fn render(&self, dir: &Path) -> String {
        let mut s = String::new();
        match self {
            Verdict::Compatible { checkpoint, lines } => {
                let _ = writeln!(s, "compatible: a restart resumes from checkpoint {checkpoint} in {}", dir.display());
                for l in lines {
                    let _ = writeln!(s, "{l}");
                }
            }
            Verdict::Incompatible { manifest, reason } => {
                let _ = writeln!(s, "incompatible with checkpoint {}: {reason}", manifest.display());
                let _ = writeln!(s, "a restart would be refused (exit 2) and change nothing");
            }
            Verdict::Finished { checkpoint } => {
                let _ = writeln!(
                    s,
                    "checkpoint {checkpoint} in {} is final: the job ran to its end, a restart does nothing",
                    dir.display()
                );
            }
        }
        s
    }
}

/// Judges `job` against the newest usable checkpoint of `dir`; `warn` receives one
/// line per unusable (skipped) checkpoint. An error when `dir` holds no checkpoint.
pub fn check(job: &Job, dir: &Path, warn: impl FnMut(String)) -> Result<Verdict, CheckpointError> {
    if !dir.is_dir() {
        return Err(CheckpointError::Invalid {
            path: dir.to_path_buf(),
            reason: "no such checkpoint directory".into(),
        });
    }
    match coordinator::plan(job, dir, warn) {
        Ok(Start::Fresh) => Err(CheckpointError::Invalid {
            path: dir.to_path_buf(),
            reason: "holds no checkpoint: there is nothing to check against (a run starts from the beginning)".into(),
        }),
        Ok(Start::Finished(checkpoint)) => Ok(Verdict::Finished { checkpoint }),
        Ok(Start::Resume(m, change)) => {
            Ok(Verdict::Compatible { checkpoint: m.checkpoint, lines: lines(job, &m, &change) })
        }
        Err(CheckpointError::Mismatch { path, reason }) => Ok(Verdict::Incompatible { manifest: path, reason }),
        Err(CheckpointError::Schema { path, error }) => {
            Ok(Verdict::Incompatible { manifest: path, reason: error.to_string() })
        }
        Err(e) => Err(e),
    }
}

/// Per input its schema version and one line per field, then what the restore does.
fn lines(job: &Job, m: &Manifest, change: &SchemaChange) -> Vec<String> {
    let mut out = Vec::new();
    for (i, input) in [&job.left, &job.right].into_iter().enumerate() {
        let was = m.job.schema_versions[i];
        let version = if change.changed[i] {
            format!("schema version {was} -> {}", change.versions[i])
        } else {
            format!("schema version {was}, unchanged")
        };
        out.push(format!("input `{}` ({version}):", input.schema.name));
        let width = change.migrations[i].verdicts.iter().map(|v| v.field.len()).max().unwrap_or(0);
        for v in &change.migrations[i].verdicts {
            out.push(format!("  {:<width$}  {}", v.field, v.verdict));
        }
    }
    let redistribute = m.needs_redistribution(job.shards);
    let rewrite = change.rewrites_rows(&m.job);
    out.push(match (&redistribute, rewrite) {
        (None, false) => "restore: each shard reads its own state as it is".to_string(),
        (Some(why), false) => format!("restore: the state is re-distributed by key ({why}): one read of it"),
        (None, true) => "restore: every stored row is rewritten into the new schema: one read of the state".to_string(),
        (Some(why), true) => format!(
            "restore: the state is re-distributed by key ({why}) and every stored row rewritten: one read of it"
        ),
    });
    out
}
