//! The resident-memory budget of join state (`engine.state_memory_mb`).
//!
//! What counts for rows is measured, not estimated: the process's resident file-backed
//! pages (`RssFile` and `RssShmem` in /proc/self/status), which are the mapped arena and
//! index pages plus the binary's own text (a few MiB of slack).
//!
//! The index is kept wholly resident (probes touch it at random; releasing it only makes
//! every probe fault it back), and all of it counts against the budget: its tables in
//! mapped files and what it holds on the heap (spill lists, small tables). Rows get what
//! it leaves, but at least 1/8 of the budget. When the rows' share is exceeded, each
//! shard releases its share of the excess (and a margin), oldest buckets first (see
//! `Join::release_resident`). A released bucket is *cold*: its records are read with
//! `pread` from then on, so probes do not fault its pages back into the process; the
//! rows stay in the files and the page cache.
//!
//! So the resident state stays near `max(budget, index + budget/8)` plus what appends
//! and checkpoint copies add between two checks (every 16 batches). A budget smaller
//! than the index bounds the rows only.

/// How many bytes of mapped rows are resident beyond their share of `budget_bytes`
/// (0 when within it), given the process's resident file-backed bytes and all shards'
/// index bytes: `index_mapped_bytes` of them in mapped files (part of the resident
/// file-backed bytes), `index_bytes` in all.
pub fn rows_over_budget(budget_bytes: u64, resident_file_bytes: u64, index_mapped_bytes: u64, index_bytes: u64) -> u64 {
    let rows = resident_file_bytes.saturating_sub(index_mapped_bytes);
    let index = index_bytes.max(index_mapped_bytes);
    let rows_max = budget_bytes.saturating_sub(index).max(budget_bytes / 8);
    rows.saturating_sub(rows_max)
}

/// A warning when the index leaves the rows only their minimum share (1/8 of the
/// budget): the job then reads most stored rows from the files, and a user should know
/// that the budget, not the machine, is what makes it slow. `None` otherwise.
pub fn index_over_budget_warning(budget_bytes: u64, index_bytes: u64) -> Option<String> {
    let rows_min = budget_bytes / 8;
    (index_bytes + rows_min > budget_bytes).then(|| {
        let mib = |b: u64| b.div_ceil(1 << 20);
        format!(
            "the key index and its bookkeeping ({} MiB) take most of engine.state_memory_mb ({} MiB): \
             stored rows get {} MiB and are mostly read from the state files; raise \
             engine.state_memory_mb for speed",
            mib(index_bytes),
            mib(budget_bytes),
            mib(rows_min)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn rows_get_what_the_index_leaves_but_at_least_an_eighth() {
        // Index 16 MiB (all mapped) of a 64 MiB budget: rows may use 48 MiB.
        assert_eq!(rows_over_budget(64 * MIB, 16 * MIB + 48 * MIB, 16 * MIB, 16 * MIB), 0);
        assert_eq!(rows_over_budget(64 * MIB, 16 * MIB + 49 * MIB, 16 * MIB, 16 * MIB), MIB);
        // Index larger than the budget: rows still get 8 MiB, not zero (no release storm).
        assert_eq!(rows_over_budget(64 * MIB, 200 * MIB + 8 * MIB, 200 * MIB, 200 * MIB), 0);
        assert_eq!(rows_over_budget(64 * MIB, 200 * MIB + 9 * MIB, 200 * MIB, 200 * MIB), MIB);
    }

    #[test]
    fn the_index_on_the_heap_counts_too() {
        // 16 MiB of tables mapped, 8 MiB of spill lists on the heap: rows get 40 MiB.
        assert_eq!(rows_over_budget(64 * MIB, 16 * MIB + 40 * MIB, 16 * MIB, 24 * MIB), 0);
        assert_eq!(rows_over_budget(64 * MIB, 16 * MIB + 41 * MIB, 16 * MIB, 24 * MIB), MIB);
        // All on the heap (no table large enough to map): nothing of the file-backed
        // bytes is index.
        assert_eq!(rows_over_budget(64 * MIB, 41 * MIB, 0, 24 * MIB), MIB);
    }

    #[test]
    fn warns_when_the_index_crowds_out_the_rows() {
        assert_eq!(index_over_budget_warning(64 * MIB, 56 * MIB), None);
        let w = index_over_budget_warning(64 * MIB, 57 * MIB).expect("index + 8 MiB > 64 MiB");
        assert!(w.contains("(57 MiB)") && w.contains("(64 MiB)") && w.contains("get 8 MiB"), "{w}");
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc")]
    fn reads_this_process() {
        let b = crate::sys::resident_file_bytes().expect("/proc/self/status on Linux");
        assert!(b > 0, "the binary's text is file-backed and resident");
    }
}
