//! The process allocator: the system allocator, plus a transparent-huge-page hint on
//! large blocks (join state's index and buckets, batches). Those blocks are probed at
//! random, and with 4 KiB pages nearly every probe also misses the TLB; on hosts whose
//! THP mode is `madvise` (the common default) only an explicit hint gets 2 MiB pages.
//!
//! Never fails differently from the system allocator: the hint is best effort.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks at least this large get the hint (one huge page).
const HUGE_HINT_BYTES_MIN: usize = 4 << 20;
const HUGE_PAGE_BYTES: usize = 2 << 20;

pub struct HugeHintAlloc;

fn hint(ptr: *mut u8, size: usize) {
    if size < HUGE_HINT_BYTES_MIN || ptr.is_null() {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE_BYTES);
    let end = (ptr as usize + size) & !(HUGE_PAGE_BYTES - 1);
    if end > start {
        // SAFETY: [start, end) lies inside the block the allocator just handed out, which
        // we own; MADV_HUGEPAGE changes only how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// only addition is an madvise hint on memory the caller now owns.
unsafe impl GlobalAlloc for HugeHintAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc(layout) };
        hint(p, layout.size());
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.alloc_zeroed(layout) };
        hint(p, layout.size());
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        hint(p, new_size);
        p
    }
}
