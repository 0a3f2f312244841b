//! Software prefetch: start loading a cache line that will be read soon.
//!
//! Unsafe here: the `_mm_prefetch` intrinsic (x86_64), which relies on nothing: a
//! prefetch never faults and changes no program state, whatever the address. Never
//! reads or writes memory; costs one instruction per line.

/// Hints the CPU to bring the cache lines of `*x` (its first and its last byte: both
/// lines when `*x` straddles two, as a quarter of the 20-byte index slots do) into all
/// cache levels. No effect on program behaviour; a no-op on targets without a prefetch
/// instruction here.
#[inline(always)]
pub fn read<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = (x as *const T).cast::<i8>();
        let last = first.wrapping_add(std::mem::size_of::<T>().max(1) - 1);
        // SAFETY: prefetch never faults and has no architectural effect; both addresses
        // lie within `*x` anyway.
        unsafe {
            _mm_prefetch::<{ _MM_HINT_T0 }>(first);
            _mm_prefetch::<{ _MM_HINT_T0 }>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
