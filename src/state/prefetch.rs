//! Software prefetch: start loading a cache line that will be read soon.

/// Hints the CPU to bring `*x`'s cache line into all cache levels. No effect on
/// program behaviour; a no-op on targets without a prefetch instruction here.
#[inline(always)]
pub fn read<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch never faults and has no architectural effect; `x` is a valid
    // reference anyway.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}
