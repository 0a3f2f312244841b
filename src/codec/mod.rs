//! Text <-> row: the one place that knows how a cell of text becomes a field of a
//! row record ([`csv::parse_cell`]) and how a field, a row or a dead letter becomes
//! text again ([`csv::write_csv_cell`], [`json`], [`format`]). Sources, sinks, the
//! batch join and `weft gen` all go through here, so every path that writes a row
//! writes the same bytes, and every path that reads a cell reads it the same way.
//!
//! Never does I/O, never allocates per cell once the caller's buffers have grown
//! (except a control character in a JSON string, which is rare); never panics on
//! any byte input. Layer 3: uses only `schema` and `event` of this crate.
//!
//! Invariants: an empty CSV cell is NULL and an empty string is written quoted
//! (`""`) so that a written row reads back the same; JSON output is always valid
//! JSON (non-finite floats become strings).

pub mod csv;
pub mod format;
pub mod json;

use serde::{Deserialize, Serialize};

/// The text format of an input, an output, a late file: `csv` or `jsonl` in the
/// config (`format = "csv"`) and the file extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Jsonl,
}

impl Format {
    /// The file extension, without the dot.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }
}
