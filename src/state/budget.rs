//! The resident-memory budget of mapped state (`engine.state_memory_mb`).
//!
//! What counts is measured, not estimated: the process's resident file-backed pages
//! (`RssFile` and `RssShmem` in /proc/self/status), which are the mapped arena and index pages
//! plus the binary's own text (a few MiB of slack). Reads fault old rows back in as
//! much as appends add new ones, so an estimate from appended bytes alone undercounts.
//!
//! The index is presumed wholly resident (probes touch it at random; releasing it only
//! makes every probe fault it back), so rows get what it leaves of the budget, but at
//! least 1/8 of it. When the rows' share is exceeded, each shard releases its share of
//! the excess (and a margin), oldest buckets first (see `Join::release_resident`).
//! Released rows come back from the page cache (or the files) when read.
//!
//! What this achieves depends on the reads: when the rows that new rows still match fit
//! in the rows' share, the file-backed resident set stays near the budget (measured at
//! 512 MiB, perf/state-2026-11-29.md); when they do not, released pages fault straight
//! back in (the kernel maps up to 16 pages around each read fault) and the resident set
//! stays well above the budget. A budget smaller than the index bounds the rows only.

/// How many bytes of mapped rows are resident beyond their share of `budget_bytes`
/// (0 when within it), given the process's resident file-backed bytes and all shards'
/// mapped index bytes.
pub fn rows_over_budget(budget_bytes: u64, resident_file_bytes: u64, index_mapped_bytes: u64) -> u64 {
    let rows = resident_file_bytes.saturating_sub(index_mapped_bytes);
    let rows_max = budget_bytes.saturating_sub(index_mapped_bytes).max(budget_bytes / 8);
    rows.saturating_sub(rows_max)
}

/// Resident file-backed bytes of this process (`RssFile` + `RssShmem` of
/// /proc/self/status), or `None` where that file is missing or unreadable.
pub fn resident_file_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(field))?;
        line[field.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((kib("RssFile:")? + kib("RssShmem:").unwrap_or(0)) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn rows_get_what_the_index_leaves_but_at_least_an_eighth() {
        // Index 16 MiB of a 64 MiB budget: rows may use 48 MiB.
        assert_eq!(rows_over_budget(64 * MIB, 16 * MIB + 48 * MIB, 16 * MIB), 0);
        assert_eq!(rows_over_budget(64 * MIB, 16 * MIB + 49 * MIB, 16 * MIB), MIB);
        // Index larger than the budget: rows still get 8 MiB, not zero (no release storm).
        assert_eq!(rows_over_budget(64 * MIB, 200 * MIB + 8 * MIB, 200 * MIB), 0);
        assert_eq!(rows_over_budget(64 * MIB, 200 * MIB + 9 * MIB, 200 * MIB), MIB);
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc")]
    fn reads_this_process() {
        let b = resident_file_bytes().expect("/proc/self/status on Linux");
        assert!(b > 0, "the binary's text is file-backed and resident");
    }
}
