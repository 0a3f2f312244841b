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

/// The whole huge pages inside the block `[ptr, ptr + size)`, as a pointer derived
/// from `ptr` (so it keeps the block's provenance) and a length; `None` when the block
/// is below the hint size or holds no whole huge page.
fn huge_pages_within(ptr: *mut u8, size: usize) -> Option<(*mut u8, usize)> {
    if size < HUGE_HINT_BYTES_MIN || ptr.is_null() {
        return None;
    }
    let start = ptr.addr().next_multiple_of(HUGE_PAGE_BYTES);
    let end = (ptr.addr() + size) & !(HUGE_PAGE_BYTES - 1);
    (end > start).then(|| (ptr.wrapping_add(start - ptr.addr()), end - start))
}

fn hint(ptr: *mut u8, size: usize) {
    if let Some((start, len)) = huge_pages_within(ptr, size) {
        // SAFETY: [start, start + len) lies inside the block the allocator just handed out,
        // which we own; MADV_HUGEPAGE changes only how the kernel backs it, never its contents.
        unsafe {
            libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, writes, grows and frees through the wrapper; under Miri this checks
    /// the forwarding and (for blocks at or above the hint size) the hint's bounds.
    fn exercise(size: usize) {
        let a = HugeHintAlloc;
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: `layout` has a non-zero size; every pointer is checked for null and
        // used only within the size it was allocated or reallocated with.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write(1);
            p.add(size - 1).write(2);
            let p = a.realloc(p, layout, size * 2);
            assert!(!p.is_null());
            assert_eq!((p.read(), p.add(size - 1).read()), (1, 2));
            p.add(size * 2 - 1).write(3);
            a.dealloc(p, Layout::from_size_align(size * 2, 16).unwrap());

            let z = a.alloc_zeroed(layout);
            assert!(!z.is_null());
            assert_eq!((z.read(), z.add(size / 2).read(), z.add(size - 1).read()), (0, 0, 0));
            a.dealloc(z, layout);
        }
    }

    #[test]
    fn small_blocks_forward_to_the_system_allocator() {
        exercise(24);
        exercise(4096);
    }

    #[test]
    fn huge_page_range_stays_inside_the_block() {
        for size in [HUGE_HINT_BYTES_MIN, HUGE_HINT_BYTES_MIN + HUGE_PAGE_BYTES + 1] {
            let layout = Layout::from_size_align(size, 4096).unwrap();
            // SAFETY: non-zero size; the block is freed with the same layout below.
            let p = unsafe { System.alloc(layout) };
            assert!(!p.is_null());
            let (start, len) = huge_pages_within(p, size).expect("a block this large holds a whole huge page");
            assert!(start.addr() % HUGE_PAGE_BYTES == 0 && len % HUGE_PAGE_BYTES == 0 && len > 0);
            assert!(start.addr() >= p.addr() && start.addr() + len <= p.addr() + size);
            // SAFETY: the range is inside the block (asserted above); under Miri these
            // writes also check that `start` carries the block's provenance.
            unsafe {
                start.write(1);
                start.add(len - 1).write(1);
                System.dealloc(p, layout);
            }
        }
        assert_eq!(huge_pages_within(std::ptr::null_mut(), HUGE_HINT_BYTES_MIN), None);
        assert_eq!(huge_pages_within(std::ptr::dangling_mut(), HUGE_HINT_BYTES_MIN - 1), None);
    }

    #[test]
    #[cfg_attr(miri, ignore = "madvise(MADV_HUGEPAGE) is a foreign function Miri does not implement")]
    fn huge_blocks_get_the_hint() {
        exercise(HUGE_HINT_BYTES_MIN);
        exercise(HUGE_HINT_BYTES_MIN + HUGE_PAGE_BYTES + 1);
    }
}
