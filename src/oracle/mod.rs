//! The validation oracle: `weft batch` ([`batch`]), the same join computed over whole
//! inputs by a different algorithm, and `weft validate` ([`diff`]), which compares two
//! output directories as multisets of rows.

pub mod batch;
pub mod diff;
