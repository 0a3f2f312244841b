//! Where the key index's tables live: the heap, or mapped files in the state directory.
//!
//! With arenas (`engine.state_dir`), every table allocation of at least
//! [`MAPPED_BYTES_MIN`] is a shared mapping of its own file, created in the shard's
//! arena directory, sized with `posix_fallocate` (so a full disk is an allocation error,
//! never a SIGBUS on a write) and unlinked at once: nothing is left behind after a crash,
//! and the space goes back when the table is freed. The kernel can then write index
//! pages out and evict them like any page-cache page under memory pressure instead of
//! holding them as anonymous memory (which, without swap, cannot leave RAM).
//! Smaller tables stay on the heap (a mapping per small table would cost more than it
//! saves).
//!
//! Invariant: a pointer handed out by `allocate` from a mapping is the start of exactly
//! one entry in `maps`, which owns the mapping until `deallocate` removes it.
//!
//! Unsafe here: the `mmap` of each table file (sound because the file is this shard's,
//! unlinked at once, so nothing else can change it), the `unsafe impl Allocator`
//! (its contract: memory stays valid, aligned and at least the layout's size until
//! freed with the same layout, which the size rule in `uses_map` routes to the same
//! place), and the forward of heap frees to `Global`. Each block says so beside it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::rc::Rc;

use allocator_api2::alloc::{AllocError, Allocator, Global, Layout};
use memmap2::MmapMut;

/// Table allocations below this size stay on the heap.
pub const MAPPED_BYTES_MIN: usize = 256 << 10;
const PAGE: usize = 4096;

/// Allocator of one shard's index tables (cheap to clone; shard-local).
#[derive(Clone)]
pub struct IndexAlloc(Option<Rc<Mapped>>);

pub struct Mapped {
    dir: PathBuf,
    maps: RefCell<HashMap<usize, MmapMut>>,
    seq: Cell<u64>,
    bytes: Cell<u64>,
    /// The last failure to map, for the error that the index reports.
    last_error: RefCell<Option<String>>,
}

impl IndexAlloc {
    pub fn heap() -> IndexAlloc {
        IndexAlloc(None)
    }

    /// Large tables in files under `dir` (which must exist).
    pub fn mapped(dir: &Path) -> IndexAlloc {
        IndexAlloc(Some(Rc::new(Mapped {
            dir: dir.to_path_buf(),
            maps: RefCell::new(HashMap::new()),
            seq: Cell::new(0),
            bytes: Cell::new(0),
            last_error: RefCell::new(None),
        })))
    }

    /// Bytes of tables held in mapped files.
    pub fn mapped_bytes(&self) -> u64 {
        self.0.as_ref().map_or(0, |m| m.bytes.get())
    }

    /// Why the last mapping failed, naming the directory (if one did).
    pub fn last_error(&self) -> Option<String> {
        self.0.as_ref().and_then(|m| m.last_error.borrow().clone())
    }

    fn uses_map(&self, layout: &Layout) -> Option<&Mapped> {
        self.0.as_deref().filter(|_| layout.size() >= MAPPED_BYTES_MIN && layout.align() <= PAGE)
    }
}

impl Mapped {
    fn map(&self, len: usize) -> Result<NonNull<[u8]>, String> {
        let len = len.next_multiple_of(PAGE);
        let n = self.seq.get();
        self.seq.set(n + 1);
        let path = self.dir.join(format!("index-{n}.map"));
        let file = crate::sys::create_new_nofollow(&path).map_err(|e| format!("{}: create: {e}", path.display()))?;
        let unlink = |e: String| {
            let _ = std::fs::remove_file(&path);
            e
        };
        if let Err(e) = crate::sys::reserve(&file, len as u64) {
            return Err(unlink(format!("{}: reserve {len} bytes: {e}", path.display())));
        }
        // SAFETY: the file was created above, is private to this shard and is unlinked
        // right after: nothing else can change it while it is mapped.
        let mut map =
            unsafe { MmapMut::map_mut(&file) }.map_err(|e| unlink(format!("{}: mmap: {e}", path.display())))?;
        std::fs::remove_file(&path).map_err(|e| format!("{}: unlink: {e}", path.display()))?;
        // Hash probes jump around: readahead would only pull in pages nobody asked for.
        let _ = map.advise(memmap2::Advice::Random);
        let ptr = NonNull::new(map.as_mut_ptr()).expect("mmap never returns null");
        self.maps.borrow_mut().insert(ptr.as_ptr() as usize, map);
        self.bytes.set(self.bytes.get() + len as u64);
        Ok(NonNull::slice_from_raw_parts(ptr, len))
    }
}

// SAFETY: heap allocations are forwarded to `Global` with the same layout, and mapped
// ones are page aligned (at least the layout's alignment, checked in `uses_map`), at
// least `layout.size()` long, and live until `deallocate` with the same layout, which
// routes them back here by the same size rule. Clones share one `Mapped`, so memory from
// one clone may be freed through another.
unsafe impl Allocator for IndexAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self.uses_map(&layout) {
            Some(m) => m.map(layout.size()).map_err(|e| {
                *m.last_error.borrow_mut() = Some(e);
                AllocError
            }),
            None => Global.allocate(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match self.uses_map(&layout) {
            Some(m) => {
                let map = m.maps.borrow_mut().remove(&(ptr.as_ptr() as usize));
                if let Some(map) = map {
                    m.bytes.set(m.bytes.get() - map.len() as u64);
                }
            }
            // SAFETY: the caller passes what `allocate` returned for this layout, which
            // came from `Global` by the same size rule.
            None => unsafe { Global.deallocate(ptr, layout) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "mmap and files")]
    fn large_tables_are_mapped_and_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let a = IndexAlloc::mapped(dir.path());
        let mut t = hashbrown::HashTable::<u64, IndexAlloc>::new_in(a.clone());
        for k in 0..100_000u64 {
            let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            t.insert_unique(h, h, |x| *x);
        }
        assert!(a.mapped_bytes() >= 800_000, "{}", a.mapped_bytes());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "mapped files are unlinked");
        for k in 0..100_000u64 {
            let h = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert!(t.find(h, |x| *x == h).is_some(), "key {k}");
        }
        drop(t);
        assert_eq!(a.mapped_bytes(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "mmap and files")]
    fn a_missing_directory_is_an_error_not_an_abort() {
        let a = IndexAlloc::mapped(Path::new("/nonexistent/weft-index"));
        let mut t = hashbrown::HashTable::<u64, IndexAlloc>::new_in(a.clone());
        let err = t.try_reserve(100_000, |x| *x).unwrap_err();
        assert!(matches!(err, hashbrown::TryReserveError::AllocError { .. }));
        assert!(a.last_error().unwrap().contains("/nonexistent/weft-index/index-0.map"), "{:?}", a.last_error());
    }

    #[test]
    fn small_tables_use_the_heap() {
        let a = IndexAlloc::mapped(Path::new("/nonexistent"));
        let mut t = hashbrown::HashTable::<u64, IndexAlloc>::new_in(a.clone());
        for k in 0..100u64 {
            t.insert_unique(k, k, |x| *x);
        }
        assert_eq!(a.mapped_bytes(), 0);
    }
}
