//! The operating-system calls weft makes outside the state arena's mappings: signals,
//! CPU time, `/proc/self/status`, space reservation, free space (`statvfs`), the
//! io_uring start-up check, the job-directory lock ([`lock_dir`], `flock`), the
//! no-follow exclusive create and the writable-directory probe built on it. Each is a small safe wrapper; the
//! `unsafe` blocks here only pass pointers and descriptors we own to libc.
//!
//! Never panics: a missing `/proc` reads as "unknown" (`None` or 0), a failed call is
//! an `io::Error` for the caller to name its file.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

/// Set by SIGINT/SIGTERM: take a final checkpoint and stop.
pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
/// The signal that set [`STOP_REQUESTED`] (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// SIGINT/SIGTERM received so far; the second asks for a stop at once ([`stop_now_requested`]).
static STOP_SIGNALS: AtomicU32 = AtomicU32::new(0);

/// Keeps freed heap memory in the process instead of returning it to the kernel at
/// every free: librdkafka's broker threads allocate a fetch response's buffers in their
/// own malloc arenas, and with glibc's defaults each arena shrinks after the free and
/// grows again at the next fetch, faulting in (zeroed) fresh pages every time: 41% of a
/// Kafka job's CPU samples were `clear_page` under `sysmalloc`
/// (perf/kafka-2026-12-07.md). Called before any Kafka client starts; a no-op if glibc
/// refuses a value. The cost: up to `TOP_PAD` more resident memory per malloc arena.
pub fn keep_freed_heap() {
    const TRIM_THRESHOLD: libc::c_int = 256 << 20;
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TOP_PAD: libc::c_int = 64 << 20;
    for (param, value) in
        [(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD), (libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD), (libc::M_TOP_PAD, TOP_PAD)]
    {
        // SAFETY: mallopt only sets a malloc tunable; no pointers are passed.
        unsafe { libc::mallopt(param, value) };
    }
}

/// Only atomic stores and one `fetch_add` on lock-free atomics: async-signal-safe.
/// Everything a stop does is done by the engine's watching thread, which polls these.
extern "C" fn on_stop_signal(sig: libc::c_int) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    STOP_SIGNALS.fetch_add(1, Ordering::SeqCst);
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// A second SIGINT/SIGTERM came: stop at once, without the final checkpoint.
pub fn stop_now_requested() -> bool {
    STOP_SIGNALS.load(Ordering::SeqCst) >= 2
}

/// The name of the signal that requested the stop (`"SIGINT"`, `"SIGTERM"`), if one did.
pub fn stop_signal_name() -> Option<&'static str> {
    match STOP_SIGNAL.load(Ordering::SeqCst) {
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ if STOP_REQUESTED.load(Ordering::SeqCst) => Some("a stop signal"),
        _ => None,
    }
}

/// SIGINT and SIGTERM request a graceful stop ([`STOP_REQUESTED`]); a second one a stop
/// at once ([`stop_now_requested`]). SIGHUP is ignored: weft has no log or config file
/// to re-open, and a hang-up of the terminal should not kill a run that may be between
/// checkpoints (stop it with SIGINT/SIGTERM).
pub fn install_stop_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t);
        }
    }
    // SAFETY: SIG_IGN installs no code of ours; a plain call.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
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

/// CPU seconds (user + system) the calling thread has used (0 if the clock fails).
pub fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the struct we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
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

/// The name [`probe_writable`] creates and removes in a directory.
const PROBE_FILE_PREFIX: &str = ".weft-probe-";

/// Whether this process can create (and remove) a file in `dir`: creates
/// `.weft-probe-<pid>` with [`create_new_nofollow`] and unlinks it. A name left by a
/// killed run of the same pid is unlinked first (never opened, so a link there is
/// removed, not followed). The error is the create's or the unlink's, as the OS gave it.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!("{PROBE_FILE_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    drop(create_new_nofollow(&path)?);
    std::fs::remove_file(&path)
}

/// Bytes an unprivileged process may still write on the file system of `dir`
/// (`statvfs`: `f_bavail * f_frsize`).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a NUL-terminated string that outlives the call; statvfs writes one
    // whole `statvfs` into the memory we own and reads nothing else of ours.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the struct (zeroed before, in any case).
    let st = unsafe { st.assume_init() };
    // Both are u64 on 64-bit Linux, narrower elsewhere: the casts are for those targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The lock file [`lock_dir`] keeps in each job directory. Hidden (a leading `.`), so
/// no listing of output, state or checkpoints takes it for one of its files.
pub const LOCK_FILE_NAME: &str = ".weft.lock";
/// How long [`lock_dir`] waits for a holder that just took the lock to write its pid.
const LOCK_HOLDER_WAIT_MS: u64 = 200;

/// An exclusive `flock` on `<dir>/.weft.lock`, held until dropped (or the process
/// dies: the kernel releases it, so a lock file left by a killed run never blocks).
/// Dropping it removes the file it made (one a killed run left stays, so the
/// directory is left as it was found) while still holding the lock; a process that opened
/// the old file meanwhile sees, once it gets the lock, that the path no longer names
/// what it locked and starts over ([`lock_dir`]), so two holders never coexist.
#[derive(Debug)]
pub struct DirLock {
    file: File,
    path: PathBuf,
    /// This lock made the file (else a killed run left it): only then is it removed.
    created: bool,
    pub dir: PathBuf,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Only our own file: if someone removed it by hand and another run made a new
        // one, that one is not ours to remove.
        if self.created && same_file(&self.file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether `path` (not followed) is the file open as `file`.
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Attempts [`lock_dir`] makes when the lock file is replaced under it.
const LOCK_ATTEMPTS_MAX: u32 = 16;

/// Why a job directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is in use by another weft process ({holder}); two runs on one directory would corrupt it. \
         Wait for that process to end, or use another directory"
    )]
    Held { dir: PathBuf, holder: String },
    #[error("{path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
}

/// This process's command line, space separated (empty when `/proc` is missing).
fn command_line() -> String {
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(String::from_utf8_lossy).collect::<Vec<_>>().join(" ")
}

/// What the holder of a lock wrote into its file: `pid <n>` and its command line.
fn lock_holder(file: &File) -> String {
    use std::os::unix::fs::FileExt;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(LOCK_HOLDER_WAIT_MS);
    loop {
        let mut buf = vec![0u8; 4096];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]).trim().replace('\n', ": ");
        if !text.is_empty() {
            return text;
        }
        if std::time::Instant::now() >= deadline {
            return "pid unknown".into();
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Takes the exclusive lock of job directory `dir` (created if missing), or says who
/// holds it. Non-blocking: a second run fails at once. The lock file is opened without
/// following a symlink and records `pid <n>` and the command line for that message.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let ioe = |path: &Path, op| {
        let path = path.to_path_buf();
        move |source| LockError::Io { path, op, source }
    };
    std::fs::create_dir_all(dir).map_err(ioe(dir, "create directory"))?;
    let path = dir.join(LOCK_FILE_NAME);
    for _ in 0..LOCK_ATTEMPTS_MAX {
        // Made here, or left by a run that was killed (then it stays after us too).
        let (file, created) = match create_new_nofollow(&path) {
            Ok(f) => (f, true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path)
                {
                    Ok(f) => (f, false),
                    // Its holder just removed it: try again.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ioe(&path, "open lock file")(e)),
                }
            }
            Err(e) => return Err(ioe(&path, "create lock file")(e)),
        };
        // SAFETY: plain syscall on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held { dir: dir.to_path_buf(), holder: lock_holder(&file) });
            }
            return Err(ioe(&path, "flock")(e));
        }
        if !same_file(&file, &path) {
            // The holder removed it as it ended: lock the file the path names now.
            continue;
        }
        use std::os::unix::fs::FileExt;
        let who = format!("pid {}\n{}\n", std::process::id(), command_line());
        file.set_len(0).and_then(|_| file.write_all_at(who.as_bytes(), 0)).map_err(ioe(&path, "write lock file"))?;
        return Ok(DirLock { file, path, created, dir: dir.to_path_buf() });
    }
    Err(LockError::Held { dir: dir.to_path_buf(), holder: "a process that keeps replacing the lock file".into() })
}

/// Locks each of `dirs` in order, skipping one that names a directory already locked
/// here (two `flock`s of one file conflict even within a process). All or nothing.
pub fn lock_dirs(dirs: &[&Path]) -> Result<Vec<DirLock>, LockError> {
    let mut locks: Vec<(PathBuf, DirLock)> = Vec::new();
    for d in dirs {
        std::fs::create_dir_all(d).map_err(|source| LockError::Io {
            path: d.to_path_buf(),
            op: "create directory",
            source,
        })?;
        let canon = std::fs::canonicalize(d).unwrap_or_else(|_| d.to_path_buf());
        if locks.iter().any(|(c, _)| *c == canon) {
            continue;
        }
        let l = lock_dir(d)?;
        locks.push((canon, l));
    }
    Ok(locks.into_iter().map(|(_, l)| l).collect())
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

/// Asks the kernel to start reading `[offset, offset + len)` of `file` into the page
/// cache and return at once (`POSIX_FADV_WILLNEED`). Linux reads at most the device's
/// optimal I/O size per call, so a caller that wants a whole range in flight calls it
/// per piece of that size. A hint: its error is the caller's to ignore.
pub fn advise_willneed(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    // SAFETY: posix_fadvise takes a descriptor we own and plain integers; no memory.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Alignment of every buffer, file offset and write length of a [`DirectRing`]: a
/// multiple of the logical block size O_DIRECT needs on any Linux disk (512 or 4096).
pub const DIRECT_ALIGN_BYTES: usize = 4096;
/// `user_data` of the fdatasync a [`DirectFile`] submits (buffer writes carry their
/// buffer's index, below this).
const SYNC_TAG: u64 = u64::MAX;

/// One aligned, zeroed heap block, freed on drop.
struct AlignedBlock {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

impl AlignedBlock {
    fn new(len: usize) -> std::io::Result<AlignedBlock> {
        let layout = std::alloc::Layout::from_size_align(len, DIRECT_ALIGN_BYTES)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        assert!(len > 0, "an empty block is never asked for");
        // SAFETY: the layout has a non-zero size (asserted above).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(ptr).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        Ok(AlignedBlock { ptr, len })
    }

    fn layout(&self) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(self.len, DIRECT_ALIGN_BYTES).expect("checked in new")
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout()) };
    }
}

/// A shard's checkpoint writer: an io_uring ring of its own (not glommio's, whose
/// submissions and completions wait for the executor's next I/O poll, every preempt
/// period of 10 ms while the shard is busy) and a fixed set of aligned buffers
/// registered with it, made once and reused for every pack: no allocation, no page
/// fault and no page pinning per write, and a write reaches the kernel the moment it
/// is queued. Completions are read from the ring's shared memory, without a syscall.
///
/// Invariant: a buffer is in `free` or in flight, never both; a buffer in flight is
/// never handed out, and neither the buffers nor the ring are freed while a write is
/// in flight (the drops wait; if the kernel cannot be waited for, the buffers leak).
pub struct DirectRing {
    ring: io_uring::IoUring,
    blocks: Vec<AlignedBlock>,
    /// Indices of the buffers not in flight.
    free: Vec<u16>,
    /// Bytes each buffer's write in flight must write.
    expect: Vec<u32>,
    /// Writes and syncs submitted and not yet reaped.
    in_flight: usize,
    /// The buffers are registered with the ring (`WRITE_FIXED`); false where the kernel
    /// refused (locked-memory limit): plain writes then.
    registered: bool,
    /// A wait for the kernel failed: the buffers may still be written from, never freed.
    poisoned: bool,
}

impl DirectRing {
    /// `buffers` buffers of `buffer_bytes` each (a multiple of [`DIRECT_ALIGN_BYTES`],
    /// below 4 GiB).
    pub fn new(buffers: usize, buffer_bytes: usize) -> std::io::Result<DirectRing> {
        assert!(buffers > 0 && buffers < usize::from(u16::MAX));
        assert!(buffer_bytes % DIRECT_ALIGN_BYTES == 0 && buffer_bytes <= u32::MAX as usize);
        let ring = io_uring::IoUring::new((buffers + 1).next_power_of_two() as u32)?;
        let blocks = (0..buffers).map(|_| AlignedBlock::new(buffer_bytes)).collect::<std::io::Result<Vec<_>>>()?;
        let iovecs: Vec<libc::iovec> =
            blocks.iter().map(|b| libc::iovec { iov_base: b.ptr.as_ptr().cast(), iov_len: b.len }).collect();
        // SAFETY: each iovec names a live block this ring owns; the blocks are freed only
        // after the ring (field order, and Drop waits for writes in flight).
        let registered = unsafe { ring.submitter().register_buffers(&iovecs) }.is_ok();
        Ok(DirectRing {
            ring,
            blocks,
            free: (0..buffers as u16).rev().collect(),
            expect: vec![0; buffers],
            in_flight: 0,
            registered,
            poisoned: false,
        })
    }

    pub fn buffer_bytes(&self) -> usize {
        self.blocks[0].len
    }

    /// False once a wait for the kernel failed: the ring must not be used again.
    pub fn healthy(&self) -> bool {
        !self.poisoned
    }

    /// Whether the kernel took the buffers as registered ones.
    pub fn registered(&self) -> bool {
        self.registered
    }

    /// Creates `path` (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0644, O_DIRECT where the file
    /// system has it) to be written through this ring.
    pub fn create(&mut self, path: &Path) -> std::io::Result<DirectFile<'_>> {
        let open = |direct: libc::c_int| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | direct)
                .mode(0o644)
                .open(path)
        };
        let file = match open(libc::O_DIRECT) {
            // A file system without O_DIRECT (tmpfs before Linux 6.6): buffered writes;
            // the fdatasync at the end makes the pack durable all the same. The name
            // O_EXCL may have created is ours to remove.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(path);
                open(0)?
            }
            r => r?,
        };
        Ok(DirectFile { r: self, file, error: None, synced: false })
    }

    /// Reaps every completion the kernel posted; the first failure (or short write) is
    /// kept in `error`.
    fn reap(&mut self, error: &mut Option<std::io::Error>, synced: &mut bool) {
        for cqe in self.ring.completion() {
            self.in_flight -= 1;
            let res = cqe.result();
            let e = if cqe.user_data() == SYNC_TAG {
                *synced = res >= 0;
                (res < 0).then(|| std::io::Error::from_raw_os_error(-res))
            } else {
                let i = cqe.user_data() as usize;
                self.free.push(i as u16);
                let want = self.expect[i];
                match res {
                    r if r < 0 => Some(std::io::Error::from_raw_os_error(-r)),
                    r if r as u32 != want => Some(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        format!("short write: {r} of {want} bytes"),
                    )),
                    _ => None,
                }
            };
            if error.is_none() {
                *error = e;
            }
        }
    }

    /// Blocks until every write in flight is done (drop paths only).
    fn drain(&mut self) {
        let (mut error, mut synced) = (None, false);
        while self.in_flight > 0 {
            match self.ring.submit_and_wait(1) {
                Ok(_) => self.reap(&mut error, &mut synced),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.poisoned = true;
                    return;
                }
            }
        }
    }
}

impl Drop for DirectRing {
    fn drop(&mut self) {
        self.drain();
        if self.poisoned {
            // The kernel may still write from these buffers: leak them rather than free.
            std::mem::forget(std::mem::take(&mut self.blocks));
        }
    }
}

/// A file being written through a [`DirectRing`]. Writes are queued with
/// [`DirectFile::write_with`], reaped with [`DirectFile::poll`]; nothing here blocks
/// except a drop with writes still in flight, which waits for them.
pub struct DirectFile<'r> {
    r: &'r mut DirectRing,
    file: File,
    error: Option<std::io::Error>,
    synced: bool,
}

impl DirectFile<'_> {
    /// Whether a buffer is free for [`DirectFile::write_with`].
    pub fn has_free(&self) -> bool {
        !self.r.free.is_empty()
    }

    /// Writes and syncs in flight.
    pub fn in_flight(&self) -> usize {
        self.r.in_flight
    }

    /// Fills a free buffer with `fill` (which returns how many bytes it wrote, or `None`
    /// to give the buffer back unwritten), pads it with zeros to [`DIRECT_ALIGN_BYTES`]
    /// and submits its write at `offset` (aligned). Ok(None) when `fill` declined;
    /// Ok(Some(padded length)) once the write is submitted. Panics without a free
    /// buffer (check [`DirectFile::has_free`]).
    pub fn write_with(
        &mut self,
        offset: u64,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> std::io::Result<Option<usize>> {
        assert!(offset % DIRECT_ALIGN_BYTES as u64 == 0, "unaligned offset {offset}");
        let i = *self.r.free.last().expect("a free buffer (has_free)");
        let block = &self.r.blocks[i as usize];
        // SAFETY: block i is not in flight (it is in `free`), so neither the kernel nor
        // anyone else reads or writes it; the slice lives only for this call.
        let buf = unsafe { std::slice::from_raw_parts_mut(block.ptr.as_ptr(), block.len) };
        let Some(len) = fill(buf) else { return Ok(None) };
        assert!(len <= buf.len());
        let padded = len.next_multiple_of(DIRECT_ALIGN_BYTES);
        buf[len..padded].fill(0);
        let fd = io_uring::types::Fd(self.file.as_raw_fd());
        let ptr = block.ptr.as_ptr();
        let entry = if self.r.registered {
            io_uring::opcode::WriteFixed::new(fd, ptr, padded as u32, i).offset(offset).build()
        } else {
            io_uring::opcode::Write::new(fd, ptr, padded as u32).offset(offset).build()
        };
        self.r.free.pop();
        self.r.expect[i as usize] = padded as u32;
        self.push(entry.user_data(u64::from(i)))?;
        Ok(Some(padded))
    }

    /// Submits an fdatasync of the file; [`DirectFile::synced`] tells when it is done.
    /// Call once every write is reaped (the ring does not order the two).
    pub fn start_sync(&mut self) -> std::io::Result<()> {
        assert_eq!(self.r.in_flight, 0, "writes still in flight");
        let fd = io_uring::types::Fd(self.file.as_raw_fd());
        let entry = io_uring::opcode::Fsync::new(fd).flags(io_uring::types::FsyncFlags::DATASYNC).build();
        self.push(entry.user_data(SYNC_TAG))
    }

    /// Queues `entry` and submits it. On a failed submit the entry stays queued (the
    /// next submit, or the drop's wait, sends it) and counts as in flight.
    fn push(&mut self, entry: io_uring::squeue::Entry) -> std::io::Result<()> {
        // SAFETY: the entry points into a block the ring owns and that stays out of
        // `free` until its completion is reaped; the fd is `self.file`, which a drop
        // closes only after waiting for every write in flight.
        let pushed = unsafe { self.r.ring.submission().push(&entry) };
        // The ring has an entry for every buffer and the sync, and at most that many
        // operations are ever queued or in flight at once.
        pushed.expect("a submission slot per buffer and one for the sync");
        self.r.in_flight += 1;
        loop {
            match self.r.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reaps finished writes without blocking. Err on the first failed or short one.
    pub fn poll(&mut self) -> std::io::Result<()> {
        let r = &mut *self.r;
        r.reap(&mut self.error, &mut self.synced);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The fdatasync submitted by [`DirectFile::start_sync`] succeeded.
    pub fn synced(&self) -> bool {
        self.synced
    }
}

impl Drop for DirectFile<'_> {
    fn drop(&mut self) {
        // The file closes after this (fields drop after the body): no write in flight
        // may still name its descriptor.
        self.r.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `chunks` through `ring` into a new file, chunk i at i * buffer size,
    /// polling (spinning: no executor here) until every write and the sync are done.
    fn write_direct(ring: &mut DirectRing, path: &Path, chunks: &[Vec<u8>]) -> std::io::Result<()> {
        let step = ring.buffer_bytes() as u64;
        let mut f = ring.create(path)?;
        for (i, c) in chunks.iter().enumerate() {
            while !f.has_free() {
                f.poll()?;
            }
            let padded = f.write_with(i as u64 * step, |buf| {
                buf[..c.len()].copy_from_slice(c);
                Some(c.len())
            })?;
            assert_eq!(padded, Some(c.len().next_multiple_of(DIRECT_ALIGN_BYTES)));
        }
        while f.in_flight() > 0 {
            f.poll()?;
        }
        f.start_sync()?;
        while !f.synced() {
            f.poll()?;
        }
        Ok(())
    }

    #[test]
    fn direct_writes_land_where_asked_and_buffers_are_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = DirectRing::new(2, 2 * DIRECT_ALIGN_BYTES).unwrap();
        // More chunks than buffers: each buffer is written from twice or more.
        let chunks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i + 1; 2 * DIRECT_ALIGN_BYTES - 100 * i as usize]).collect();
        let path = dir.path().join("a.pack");
        write_direct(&mut ring, &path, &chunks).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 5 * 2 * DIRECT_ALIGN_BYTES);
        for (i, c) in chunks.iter().enumerate() {
            let at = i * 2 * DIRECT_ALIGN_BYTES;
            assert_eq!(&got[at..at + c.len()], &c[..], "chunk {i}");
            assert!(got[at + c.len()..at + 2 * DIRECT_ALIGN_BYTES].iter().all(|&b| b == 0), "padding of {i}");
        }
        // The same ring writes the next file; a name already there is refused.
        write_direct(&mut ring, &dir.path().join("b.pack"), &chunks[..1]).unwrap();
        assert_eq!(ring.create(&path).err().map(|e| e.kind()), Some(std::io::ErrorKind::AlreadyExists));
        assert!(ring.healthy());
    }

    #[test]
    fn a_declined_fill_keeps_its_buffer_and_a_drop_waits_for_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = DirectRing::new(2, DIRECT_ALIGN_BYTES).unwrap();
        {
            let mut f = ring.create(&dir.path().join("c.pack")).unwrap();
            assert_eq!(f.write_with(0, |_| None).unwrap(), None);
            assert!(f.has_free());
            f.write_with(0, |b| {
                b.fill(7);
                Some(b.len())
            })
            .unwrap();
            f.write_with(DIRECT_ALIGN_BYTES as u64, |b| {
                b.fill(8);
                Some(1)
            })
            .unwrap();
            assert!(!f.has_free(), "both buffers in flight");
            // Dropped with writes in flight: the drop waits for them.
        }
        assert_eq!(ring.in_flight, 0);
        assert_eq!(ring.free.len(), 2);
        let got = std::fs::read(dir.path().join("c.pack")).unwrap();
        assert_eq!(got.len(), 2 * DIRECT_ALIGN_BYTES);
        assert!(got[..DIRECT_ALIGN_BYTES].iter().all(|&b| b == 7));
        assert_eq!(got[DIRECT_ALIGN_BYTES], 8);
        assert!(got[DIRECT_ALIGN_BYTES + 1..].iter().all(|&b| b == 0));
    }

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
    fn a_directory_is_locked_once() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_dir(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE_NAME)).unwrap();
        assert!(text.starts_with(&format!("pid {}\n", std::process::id())), "{text}");
        match lock_dir(dir.path()) {
            Err(LockError::Held { holder, .. }) => assert!(holder.contains(&std::process::id().to_string())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        assert!(!dir.path().join(LOCK_FILE_NAME).exists(), "a released lock removes its file");
        let again = lock_dirs(&[dir.path(), dir.path()]).unwrap();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn a_temp_directory_is_writable_and_has_free_space() {
        let dir = tempfile::tempdir().unwrap();
        probe_writable(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the probe file is removed");
        assert!(free_bytes(dir.path()).unwrap() > 0);
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(probe_writable(&file.join("sub")).is_err());
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn io_uring_works_on_the_test_machine() {
        // weft's own tests run glommio executors: a host where this fails fails them too.
        assert_eq!(check_io_uring(), Ok(()));
    }
}
