//! The operating-system calls weft makes outside the state arena's mappings: signals,
//! CPU time, `/proc/self/status`, space reservation, the io_uring start-up check. Each is a small safe wrapper; the
//! `unsafe` blocks here only pass pointers and descriptors we own to libc.
//!
//! Never panics: a missing `/proc` reads as "unknown" (`None` or 0), a failed call is
//! an `io::Error` for the caller to name its file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by SIGINT/SIGTERM: take a final checkpoint and stop.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM request a graceful stop ([`STOP_REQUESTED`]).
pub fn install_stop_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t);
        }
    }
}

/// User + system CPU seconds this process has used (0 if `getrusage` fails).
pub fn process_cpu_s() -> f64 {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a full rusage into the pointer we own; RUSAGE_SELF is valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage returned 0, so the struct is initialised.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One `kB` field of `/proc/self/status` (e.g. `"VmHWM:"`), in bytes.
fn status_field_bytes(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line[field.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

fn status() -> Option<String> {
    std::fs::read_to_string("/proc/self/status").ok()
}

/// Peak resident set size of this process (VmHWM), in bytes; 0 when unknown.
pub fn peak_rss_bytes() -> u64 {
    status().and_then(|s| status_field_bytes(&s, "VmHWM:")).unwrap_or(0)
}

/// Resident file-backed and shared-memory bytes of this process (RssFile + RssShmem),
/// or `None` where `/proc/self/status` is missing or unreadable. About 10 us.
pub fn resident_file_bytes() -> Option<u64> {
    let s = status()?;
    Some(status_field_bytes(&s, "RssFile:")? + status_field_bytes(&s, "RssShmem:").unwrap_or(0))
}

/// Reserves `len` bytes of `file` on disk (`posix_fallocate`), so that a full disk is
/// this error now rather than a SIGBUS when a mapping of the file is written later.
pub fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Creates `path` for writing, failing if anything (a file, a directory, a symlink, even a
/// dangling one) already has that name: `O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644 before the
/// umask. Every file weft creates in its output, state and checkpoint directories is made
/// with this, so a link planted at a temp or pack path is an `AlreadyExists` error, never
/// followed to overwrite its target.
pub fn create_new_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o644)
        .open(path)
}

/// glommio refuses to start its executors below this `ulimit -l` (RLIMIT_MEMLOCK).
pub const MEMLOCK_BYTES_MIN: u64 = 512 * 1024;

/// Checks, before any executor starts, that this host can give weft the io_uring rings
/// that glommio (the shards' I/O and checkpoint writes) needs: a ring can be created, and
/// `ulimit -l` is at least [`MEMLOCK_BYTES_MIN`]. Without this check the failure surfaces
/// later, inside glommio, as a bare OS error. The error says what to change.
pub fn check_io_uring() -> Result<(), String> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY && lim.rlim_cur < MEMLOCK_BYTES_MIN {
        return Err(format!(
            "`ulimit -l` (locked memory) is {} KiB; weft's io_uring rings need at least {} KiB. \
             Raise it (e.g. `ulimit -l 8192`, or LimitMEMLOCK= in a systemd unit)",
            lim.rlim_cur / 1024,
            MEMLOCK_BYTES_MIN / 1024
        ));
    }
    match io_uring::IoUring::new(8) {
        Ok(_ring) => Ok(()),
        Err(e) => Err(format!(
            "io_uring is not available on this host ({e}); weft's shards and checkpoints run on it. \
             It needs Linux 5.8 or later, and io_uring not disabled (sysctl kernel.io_uring_disabled, \
             or a seccomp filter of the container)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_bytes() {
        let s = "Name:\tweft\nVmHWM:\t  2048 kB\nRssFile:\t 10 kB\n";
        assert_eq!(status_field_bytes(s, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(status_field_bytes(s, "RssFile:"), Some(10 * 1024));
        assert_eq!(status_field_bytes(s, "RssShmem:"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        assert!(peak_rss_bytes() > 0);
        assert!(resident_file_bytes().is_some());
        assert!(process_cpu_s() >= 0.0);
    }

    #[test]
    fn create_new_nofollow_never_follows_or_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = create_new_nofollow(&link).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert_eq!(create_new_nofollow(&dangling).unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        assert!(!dir.path().join("nowhere").exists());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(create_new_nofollow(&target).is_err());
        let fresh = dir.path().join("fresh");
        use std::io::Write;
        create_new_nofollow(&fresh).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&fresh).unwrap(), b"new");
    }

    #[test]
    fn io_uring_works_on_the_test_machine() {
        // weft's own tests run glommio executors: a host where this fails fails them too.
        assert_eq!(check_io_uring(), Ok(()));
    }
}
