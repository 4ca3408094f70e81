//! Reading `/proc`: memory maps (and their resident figures, `smaps`), command name, memory
//! status, open descriptors, start time, systemd unit (from a cgroup path), open-files and
//! process limits, real user and the threads' stack pointers of a process, a few words of its memory, the one-read summary of
//! `/proc/PID/stat`, the list of processes, the host's uptime, and the system's page size and
//! clock tick. The cgroups and limits are read by [`crate::watch::limits`].
//!
//! Every reader has a pure parser taking the file's text (`parse_*`), so the formats are tested
//! on literal samples. A process that exits while it is being read gives [`ProcError::Gone`].

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// A process id as the kernel of our PID namespace numbers it.
pub type Pid = u32;

/// Why something could not be read from `/proc`.
#[derive(Debug, Error)]
pub enum ProcError {
    /// The process does not exist (any more).
    #[error("process {pid} is gone")]
    Gone {
        /// The process.
        pid: Pid,
    },
    /// We may not read the file.
    #[error("permission denied reading {}", .path.display())]
    PermissionDenied {
        /// The file.
        path: PathBuf,
    },
    /// The file's contents are not what the kernel documents.
    #[error("cannot parse {} line {line}: {reason}", .path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line, counted from 1.
        line: usize,
        /// What was wrong with it.
        reason: String,
    },
    /// Any other I/O error.
    #[error("reading {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A malformed line in the text given to a `parse_*` function.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    /// The line, counted from 1.
    pub line: usize,
    /// What was wrong with it.
    pub reason: String,
}

impl ParseError {
    fn new(line: usize, reason: impl Into<String>) -> Self {
        ParseError {
            line,
            reason: reason.into(),
        }
    }

    fn at(self, path: &Path) -> ProcError {
        ProcError::Parse {
            path: path.to_path_buf(),
            line: self.line,
            reason: self.reason,
        }
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address of the mapping.
    pub start: u64,
    /// Address just past the mapping.
    pub end: u64,
    /// Mapped readable.
    pub readable: bool,
    /// Mapped writable.
    pub writable: bool,
    /// Mapped executable.
    pub executable: bool,
    /// Mapped shared (`s`) rather than private copy-on-write (`p`).
    pub shared: bool,
    /// Offset of `start` in the mapped file.
    pub offset: u64,
    /// Major number of the device holding the file.
    pub dev_major: u32,
    /// Minor number of the device holding the file.
    pub dev_minor: u32,
    /// Inode of the file; 0 for anonymous and pseudo mappings.
    pub inode: u64,
    /// The file's path as the process sees it (without a ` (deleted)` suffix), or a pseudo path
    /// such as `[heap]` or `[vdso]`; `None` for an anonymous mapping.
    pub path: Option<String>,
    /// The file was deleted (or replaced) since it was mapped.
    pub deleted: bool,
}

impl MapEntry {
    /// Whether the mapping is backed by a file (rather than anonymous or a pseudo path).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }
}

/// Memory figures and thread count from `/proc/PID/status`. The memory figures are 0 when the
/// process has no address space (a kernel thread or a zombie).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// Resident set size, bytes (`VmRSS`).
    pub vm_rss: u64,
    /// Virtual size, bytes (`VmSize`).
    pub vm_size: u64,
    /// Resident anonymous memory, bytes (`RssAnon`).
    pub rss_anon: u64,
    /// Resident file-backed memory, bytes (`RssFile`).
    pub rss_file: u64,
    /// Swapped-out anonymous memory, bytes (`VmSwap`).
    pub vm_swap: u64,
    /// Number of threads (`Threads`).
    pub threads: u64,
}

/// The figures of `/proc/PID/stat` the process watcher samples, all from one cheap read. The
/// memory figures are 0 when the process has no address space (a kernel thread or a zombie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Command name (field 2, without the parentheses).
    pub comm: String,
    /// State (field 3): `R`, `S`, `D`, ..., `Z` for a zombie, `X` for dead.
    pub state: char,
    /// Number of threads (field 20).
    pub num_threads: u64,
    /// Start time in clock ticks since boot (field 22).
    pub start_time_ticks: u64,
    /// Virtual size, bytes (field 23).
    pub vsize_bytes: u64,
    /// Resident set size, pages (field 24).
    pub rss_pages: u64,
}

const DELETED_SUFFIX: &str = " (deleted)";

fn proc_path(pid: Pid, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

fn classify(pid: Pid, path: &Path, err: io::Error) -> ProcError {
    match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone { pid },
        Some(libc::EACCES) | Some(libc::EPERM) => ProcError::PermissionDenied {
            path: path.to_path_buf(),
        },
        _ => ProcError::Io {
            path: path.to_path_buf(),
            source: err,
        },
    }
}

fn read_text(pid: Pid, name: &str) -> Result<(PathBuf, String), ProcError> {
    let path = proc_path(pid, name);
    match fs::read(&path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            Ok((path, text))
        }
        Err(err) => Err(classify(pid, &path, err)),
    }
}

/// Reads `/proc/PID/maps`.
pub fn read_maps(pid: Pid) -> Result<Vec<MapEntry>, ProcError> {
    let (path, text) = read_text(pid, "maps")?;
    parse_maps(&text).map_err(|e| e.at(&path))
}

/// Reads `/proc/PID/comm`, without the trailing newline.
pub fn read_comm(pid: Pid) -> Result<String, ProcError> {
    let (_, text) = read_text(pid, "comm")?;
    Ok(parse_comm(&text))
}

/// Reads `/proc/PID/status`.
pub fn read_status(pid: Pid) -> Result<Status, ProcError> {
    let (path, text) = read_text(pid, "status")?;
    parse_status(&text).map_err(|e| e.at(&path))
}

/// Counts the open file descriptors of the process (entries of `/proc/PID/fd`).
pub fn count_fds(pid: Pid) -> Result<usize, ProcError> {
    let path = proc_path(pid, "fd");
    let dir = fs::read_dir(&path).map_err(|e| classify(pid, &path, e))?;
    let mut count = 0;
    for entry in dir {
        entry.map_err(|e| classify(pid, &path, e))?;
        count += 1;
    }
    Ok(count)
}

/// Reads the start time of the process, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`). With the pid, it identifies a process across pid reuse.
pub fn start_time_ticks(pid: Pid) -> Result<u64, ProcError> {
    let (path, text) = read_text(pid, "stat")?;
    parse_stat_start_time(&text).map_err(|e| e.at(&path))
}

/// The seccomp mode of the process (`Seccomp:` of `/proc/PID/status`): 0 none, 1 strict,
/// 2 filter.
pub fn seccomp_mode(pid: Pid) -> Result<u32, ProcError> {
    let (path, text) = read_text(pid, "status")?;
    parse_seccomp_mode(&text).map_err(|e| e.at(&path))
}

/// Parses the `Seccomp:` line of a `/proc/PID/status` text.
pub fn parse_seccomp_mode(text: &str) -> Result<u32, ParseError> {
    text.lines()
        .enumerate()
        .find_map(|(index, line)| line.strip_prefix("Seccomp:").map(|value| (index, value)))
        .ok_or_else(|| ParseError {
            line: 0,
            reason: "no Seccomp line".to_owned(),
        })
        .and_then(|(index, value)| {
            value.trim().parse().map_err(|_| ParseError {
                line: index + 1,
                reason: format!("bad Seccomp value `{}`", value.trim()),
            })
        })
}

/// Reads `/proc/PID/stat`: command name, threads, start time, virtual and resident size in
/// one read, cheaper than [`read_status`].
pub fn read_stat(pid: Pid) -> Result<Stat, ProcError> {
    let (path, text) = read_text(pid, "stat")?;
    parse_stat(&text).map_err(|e| e.at(&path))
}

/// Reads `/proc/PID/stat` of many processes again and again, keeping each file open and reading
/// it with `pread`: the path walk of an `open` per process and sample is most of what sampling
/// every process of a host costs. A file of a process that exited reads as [`ProcError::Gone`]
/// (even if its pid was reused: the open file belongs to the old process) and is closed.
#[derive(Debug, Default)]
pub struct StatReader {
    files: HashMap<Pid, fs::File>,
    buffer: Vec<u8>,
}

impl StatReader {
    /// Reads the stat of `pid`, opening its file on first use. When no more files can be kept
    /// open, it reads without keeping one.
    pub fn read(&mut self, pid: Pid) -> Result<Stat, ProcError> {
        use std::os::unix::fs::FileExt as _;
        let path = proc_path(pid, "stat");
        let file = match self.files.entry(pid) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => match fs::File::open(&path) {
                Ok(file) => entry.insert(file),
                Err(err) if err.raw_os_error() == Some(libc::EMFILE) => return read_stat(pid),
                Err(err) => return Err(classify(pid, &path, err)),
            },
        };
        self.buffer.resize(4096, 0);
        let mut filled = 0;
        loop {
            if filled == self.buffer.len() {
                self.buffer.resize(filled * 2, 0);
            }
            match file.read_at(&mut self.buffer[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) => {
                    self.files.remove(&pid);
                    return Err(classify(pid, &path, err));
                }
            }
        }
        let text = String::from_utf8_lossy(&self.buffer[..filled]);
        parse_stat(&text).map_err(|e| e.at(&path))
    }

    /// Closes the files of processes for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(Pid) -> bool) {
        self.files.retain(|pid, _| keep(*pid));
    }

    /// Number of files kept open.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }
}

/// Counts the open file descriptors of the process. The kernel reports the count as the size
/// of `/proc/PID/fd` since Linux 6.2, one `stat` instead of reading the directory; older kernels
/// report 0, and then (or when the process really has none) the directory is counted.
pub fn open_fds(pid: Pid) -> Result<u64, ProcError> {
    let path = proc_path(pid, "fd");
    let size = fs::metadata(&path)
        .map_err(|e| classify(pid, &path, e))?
        .len();
    if size > 0 {
        Ok(size)
    } else {
        count_fds(pid).map(|n| n as u64)
    }
}

/// Reads the soft limit on open files of the process (`Max open files` in
/// `/proc/PID/limits`); `None` when unlimited.
pub fn read_open_files_limit(pid: Pid) -> Result<Option<u64>, ProcError> {
    let (path, text) = read_text(pid, "limits")?;
    parse_open_files_limit(&text).map_err(|e| e.at(&path))
}

/// Reads the soft limit on processes of the process's user (`Max processes` in
/// `/proc/PID/limits`, RLIMIT_NPROC, which counts threads); `None` when unlimited.
pub fn read_process_limit(pid: Pid) -> Result<Option<u64>, ProcError> {
    let (path, text) = read_text(pid, "limits")?;
    parse_process_limit(&text).map_err(|e| e.at(&path))
}

/// Reads the real user id of the process (the first number of `Uid:` in `/proc/PID/status`).
pub fn read_real_uid(pid: Pid) -> Result<u32, ProcError> {
    let (path, text) = read_text(pid, "status")?;
    parse_real_uid(&text).map_err(|e| e.at(&path))
}

/// Parses the real user id of the text of `/proc/PID/status`.
pub fn parse_real_uid(text: &str) -> Result<u32, ParseError> {
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            return rest
                .split_whitespace()
                .next()
                .and_then(|uid| uid.parse().ok())
                .ok_or_else(|| ParseError::new(i + 1, format!("bad Uid {rest:?}")));
        }
    }
    Err(ParseError::new(text.lines().count(), "no Uid line"))
}

/// Reads the seconds since boot from `/proc/uptime` (the clock of process start times).
pub fn read_uptime() -> Result<f64, ProcError> {
    let (path, text) = read_host_text("uptime")?;
    parse_uptime(&text).map_err(|e| e.at(&path))
}

/// The size of a memory page, bytes (the unit of [`Stat::rss_pages`]).
pub fn page_size() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// Clock ticks per second (the unit of [`Stat::start_time_ticks`]).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

fn read_host_text(name: &str) -> Result<(PathBuf, String), ProcError> {
    let path = PathBuf::from(format!("/proc/{name}"));
    match fs::read(&path) {
        Ok(bytes) => Ok((path, String::from_utf8_lossy(&bytes).into_owned())),
        Err(source) => Err(ProcError::Io { path, source }),
    }
}

/// Lists the processes (the numeric entries of `/proc`), in increasing order.
pub fn list_pids() -> Result<Vec<Pid>, ProcError> {
    let path = Path::new("/proc");
    let io_err = |source| ProcError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut pids = Vec::new();
    for entry in fs::read_dir(path).map_err(io_err)? {
        let entry = entry.map_err(io_err)?;
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The systemd unit a cgroup belongs to: the last component of the path naming a unit that can
/// hold processes (`.service`, `.scope`, `.socket`, `.mount`, `.swap`). Slices are not units
/// processes run in, so `/user.slice` gives `None`.
pub fn systemd_unit(cgroup: &str) -> Option<String> {
    const SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];
    cgroup
        .rsplit('/')
        .find(|c| SUFFIXES.iter().any(|s| c.len() > s.len() && c.ends_with(s)))
        .map(str::to_owned)
}

/// Parses the text of `/proc/PID/maps`.
pub fn parse_maps(text: &str) -> Result<Vec<MapEntry>, ParseError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_maps_line(l).map_err(|reason| ParseError::new(i + 1, reason)))
        .collect()
}

/// Splits off the next space-separated field, skipping leading spaces.
fn next_field(rest: &mut &str) -> Option<String> {
    let s = rest.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    let (field, tail) = s.split_once(' ').unwrap_or((s, ""));
    *rest = tail;
    Some(field.to_owned())
}

fn parse_maps_line(line: &str) -> Result<MapEntry, String> {
    let mut rest = line;
    let mut field = |what: &str| next_field(&mut rest).ok_or_else(|| format!("missing {what}"));
    let range = field("address range")?;
    let perms = field("permissions")?;
    let offset = field("offset")?;
    let dev = field("device")?;
    let inode = field("inode")?;

    let (start, end) = range
        .split_once('-')
        .ok_or_else(|| format!("bad address range {range:?}"))?;
    let hex =
        |s: &str, what: &str| u64::from_str_radix(s, 16).map_err(|_| format!("bad {what} {s:?}"));
    let start = hex(start, "start address")?;
    let end = hex(end, "end address")?;
    if end < start {
        return Err(format!("address range {range:?} ends before it starts"));
    }

    let p = perms.as_bytes();
    if p.len() != 4 {
        return Err(format!("bad permissions {perms:?}"));
    }
    let offset = hex(&offset, "offset")?;
    let (major, minor) = dev
        .split_once(':')
        .ok_or_else(|| format!("bad device {dev:?}"))?;
    let dev_num = |s: &str| u32::from_str_radix(s, 16).map_err(|_| format!("bad device {dev:?}"));
    let dev_major = dev_num(major)?;
    let dev_minor = dev_num(minor)?;
    let inode = inode.parse().map_err(|_| format!("bad inode {inode:?}"))?;

    let raw_path = rest.trim_start_matches(' ');
    let (path, deleted) = match raw_path.strip_suffix(DELETED_SUFFIX) {
        Some(p) if raw_path.starts_with('/') => (Some(p.to_owned()), true),
        _ if raw_path.is_empty() => (None, false),
        _ => (Some(raw_path.to_owned()), false),
    };

    Ok(MapEntry {
        start,
        end,
        readable: p[0] == b'r',
        writable: p[1] == b'w',
        executable: p[2] == b'x',
        shared: p[3] == b's',
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
        deleted,
    })
}

/// One mapping of `/proc/PID/smaps`: its `maps` line and the figures leakmon reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmapsEntry {
    /// The mapping.
    pub map: MapEntry,
    /// Resident bytes (`Rss`).
    pub rss: u64,
    /// Resident anonymous bytes (`Anonymous`: private pages, including the written pages of a
    /// private file mapping).
    pub anonymous: u64,
    /// Swapped-out bytes (`Swap`).
    pub swap: u64,
}

/// Reads `/proc/PID/smaps`.
pub fn read_smaps(pid: Pid) -> Result<Vec<SmapsEntry>, ProcError> {
    let (path, text) = read_text(pid, "smaps")?;
    parse_smaps(&text).map_err(|e| e.at(&path))
}

/// Parses the text of `/proc/PID/smaps`: a `maps` line per mapping, then `Field: N kB` lines.
pub fn parse_smaps(text: &str) -> Result<Vec<SmapsEntry>, ParseError> {
    let mut entries: Vec<SmapsEntry> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split(' ').next().unwrap_or("");
        if !first.ends_with(':') {
            if line.is_empty() {
                continue;
            }
            let map = parse_maps_line(line).map_err(|reason| ParseError::new(i + 1, reason))?;
            entries.push(SmapsEntry {
                map,
                rss: 0,
                anonymous: 0,
                swap: 0,
            });
            continue;
        }
        let Some(entry) = entries.last_mut() else {
            return Err(ParseError::new(i + 1, "a field before the first mapping"));
        };
        let slot = match first {
            "Rss:" => &mut entry.rss,
            "Anonymous:" => &mut entry.anonymous,
            "Swap:" => &mut entry.swap,
            _ => continue,
        };
        let mut words = line[first.len()..].split_whitespace();
        *slot = match (
            words.next().and_then(|n| n.parse::<u64>().ok()),
            words.next(),
        ) {
            (Some(kib), Some("kB")) => kib.saturating_mul(1024),
            _ => return Err(ParseError::new(i + 1, format!("bad {first} value"))),
        };
    }
    Ok(entries)
}

/// The stack pointers of the process's threads that are blocked (in a system call or not), from
/// `/proc/PID/task/TID/syscall`; a running thread has none to read. (The stack pointer of
/// `/proc/PID/task/TID/stat` is zeroed by the kernel unless the thread is dumping core.) At
/// most `max_threads` threads are read.
pub fn read_thread_stack_pointers(pid: Pid, max_threads: usize) -> Result<Vec<u64>, ProcError> {
    let dir = proc_path(pid, "task");
    let mut pointers = Vec::new();
    let entries = fs::read_dir(&dir).map_err(|e| classify(pid, &dir, e))?;
    for entry in entries.take(max_threads) {
        let entry = entry.map_err(|e| classify(pid, &dir, e))?;
        let Ok(text) = fs::read_to_string(entry.path().join("syscall")) else {
            continue;
        };
        pointers.extend(parse_syscall_stack_pointer(&text));
    }
    Ok(pointers)
}

/// The stack pointer of the text of `/proc/PID/task/TID/syscall`: `NR ARGS... SP PC` in a
/// system call, `-1 SP PC` blocked outside one, `running` otherwise (no pointer).
pub fn parse_syscall_stack_pointer(text: &str) -> Option<u64> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() < 3 {
        return None;
    }
    let sp = fields[fields.len() - 2];
    u64::from_str_radix(sp.strip_prefix("0x")?, 16).ok()
}

/// Reads 16 bytes of the process's memory at each of `addresses` (`process_vm_readv`), as two
/// words each; `None` where the memory could not be read.
pub fn read_remote_pairs(pid: Pid, addresses: &[u64]) -> Vec<Option<[u64; 2]>> {
    let mut out = vec![None; addresses.len()];
    let mut buffer = vec![[0u64; 2]; addresses.len()];
    let mut next = 0;
    while next < addresses.len() {
        let batch = (addresses.len() - next).min(1024);
        let local = libc::iovec {
            iov_base: buffer[next..].as_mut_ptr().cast(),
            iov_len: batch * 16,
        };
        let remote: Vec<libc::iovec> = addresses[next..next + batch]
            .iter()
            .map(|&address| libc::iovec {
                iov_base: address as *mut libc::c_void,
                iov_len: 16,
            })
            .collect();
        // SAFETY: `local` covers `batch` writable pairs of `buffer`; the remote addresses are
        // only read by the kernel, in the other process.
        let read = unsafe {
            libc::process_vm_readv(
                pid as libc::pid_t,
                &local,
                1,
                remote.as_ptr(),
                remote.len() as libc::c_ulong,
                0,
            )
        };
        // The kernel stops at the first remote range it cannot read: the pairs before it are
        // whole, that one is skipped, and the rest are tried again. Any other failure (the
        // process is gone, no permission) ends the reading.
        let whole = match usize::try_from(read) {
            Ok(bytes) => (bytes / 16).min(batch),
            Err(_) if io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT) => 0,
            Err(_) => break,
        };
        for index in next..next + whole {
            out[index] = Some(buffer[index]);
        }
        next += whole;
        if whole < batch {
            next += 1;
        }
    }
    out
}

/// Parses the text of `/proc/PID/comm`.
pub fn parse_comm(text: &str) -> String {
    text.strip_suffix('\n').unwrap_or(text).to_owned()
}

/// Parses the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Result<Status, ParseError> {
    let mut status = Status::default();
    let mut saw_threads = false;
    for (i, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "VmRSS" => &mut status.vm_rss,
            "VmSize" => &mut status.vm_size,
            "RssAnon" => &mut status.rss_anon,
            "RssFile" => &mut status.rss_file,
            "VmSwap" => &mut status.vm_swap,
            "Threads" => {
                saw_threads = true;
                &mut status.threads
            }
            _ => continue,
        };
        let mut words = value.split_whitespace();
        let number = words
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| ParseError::new(i + 1, format!("bad {key} value {value:?}")))?;
        *slot = match words.next() {
            None => number,
            Some("kB") => number.saturating_mul(1024),
            Some(unit) => return Err(ParseError::new(i + 1, format!("unknown unit {unit:?}"))),
        };
    }
    if saw_threads {
        Ok(status)
    } else {
        Err(ParseError::new(text.lines().count(), "no Threads line"))
    }
}

/// Parses field 22 (start time, in clock ticks since boot) of `/proc/PID/stat`. The command
/// name (field 2) may hold spaces and parentheses, so the fields are counted from the last `)`.
pub fn parse_stat_start_time(text: &str) -> Result<u64, ParseError> {
    let close = text
        .rfind(')')
        .ok_or_else(|| ParseError::new(1, "no ')' closing the command name"))?;
    // After the command name come fields 3 (state) onwards; field 22 is the 20th of them.
    let field = text[close + 1..]
        .split_whitespace()
        .nth(22 - 3)
        .ok_or_else(|| ParseError::new(1, "fewer than 22 fields"))?;
    field
        .parse()
        .map_err(|_| ParseError::new(1, format!("bad start time {field:?}")))
}

/// Parses the text of `/proc/PID/stat` into the figures of [`Stat`]. The command name may hold
/// spaces and parentheses: it runs from the first `(` to the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, ParseError> {
    let open = text
        .find('(')
        .ok_or_else(|| ParseError::new(1, "no '(' opening the command name"))?;
    let close = text
        .rfind(')')
        .filter(|&c| c > open)
        .ok_or_else(|| ParseError::new(1, "no ')' closing the command name"))?;
    // Fields 3 (state) onwards; field N is at index N - 3.
    let fields: Vec<&str> = text[close + 1..].split_whitespace().take(24 - 2).collect();
    let number = |field: usize, what: &str| -> Result<u64, ParseError> {
        let raw = fields
            .get(field - 3)
            .ok_or_else(|| ParseError::new(1, format!("fewer than {field} fields")))?;
        raw.parse()
            .map_err(|_| ParseError::new(1, format!("bad {what} {raw:?}")))
    };
    let state = fields
        .first()
        .and_then(|field| field.chars().next())
        .ok_or_else(|| ParseError::new(1, "no state"))?;
    Ok(Stat {
        comm: text[open + 1..close].to_owned(),
        state,
        num_threads: number(20, "thread count")?,
        start_time_ticks: number(22, "start time")?,
        vsize_bytes: number(23, "virtual size")?,
        rss_pages: number(24, "resident size")?,
    })
}

/// Parses the soft `Max open files` limit of the text of `/proc/PID/limits`; `None` when
/// unlimited.
pub fn parse_open_files_limit(text: &str) -> Result<Option<u64>, ParseError> {
    parse_soft_limit(text, "Max open files")
}

/// Parses the soft `Max processes` limit (RLIMIT_NPROC, which counts threads) of the text of
/// `/proc/PID/limits`; `None` when unlimited.
pub fn parse_process_limit(text: &str) -> Result<Option<u64>, ParseError> {
    parse_soft_limit(text, "Max processes")
}

/// Parses the soft limit of the line `name` of the text of `/proc/PID/limits`.
fn parse_soft_limit(text: &str, name: &str) -> Result<Option<u64>, ParseError> {
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        return match rest.split_whitespace().next() {
            Some("unlimited") => Ok(None),
            Some(soft) => soft
                .parse()
                .map(Some)
                .map_err(|_| ParseError::new(i + 1, format!("bad soft limit {soft:?}"))),
            None => Err(ParseError::new(i + 1, "no soft limit")),
        };
    }
    Err(ParseError::new(
        text.lines().count(),
        format!("no {name} line"),
    ))
}

/// Parses the text of `/proc/uptime`: the first number, seconds since boot.
pub fn parse_uptime(text: &str) -> Result<f64, ParseError> {
    let first = text.split_whitespace().next().unwrap_or("");
    first
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| ParseError::new(1, format!("bad uptime {first:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d5c8a4d000-55d5c8a4f000 r--p 00000000 fd:01 1835   /usr/bin/cat
55d5c8a4f000-55d5c8a54000 r-xp 00002000 fd:01 1835   /usr/bin/cat
55d5c9f3e000-55d5c9f5f000 rw-p 00000000 00:00 0      [heap]
7f1e2a000000-7f1e2a021000 rw-s 00000000 00:05 4242   /memfd:shm (deleted)
7f1e2b000000-7f1e2b100000 r-xp 00010000 103:0a 99    /opt/my lib/libx.so (deleted)
7f1e2c000000-7f1e2c001000 ---p 00000000 00:00 0 
7ffd1b9f0000-7ffd1b9f2000 r-xp 00000000 00:00 0      [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_maps() {
        let maps = parse_maps(MAPS).unwrap();
        assert_eq!(maps.len(), 8);
        assert_eq!(
            maps[1],
            MapEntry {
                start: 0x55d5c8a4f000,
                end: 0x55d5c8a54000,
                readable: true,
                writable: false,
                executable: true,
                shared: false,
                offset: 0x2000,
                dev_major: 0xfd,
                dev_minor: 1,
                inode: 1835,
                path: Some("/usr/bin/cat".into()),
                deleted: false,
            }
        );
        assert!(maps[1].is_file());
        assert_eq!(maps[2].path.as_deref(), Some("[heap]"));
        assert!(!maps[2].is_file());
        assert!(maps[3].shared && maps[3].deleted);
        assert_eq!(maps[3].path.as_deref(), Some("/memfd:shm"));
        assert_eq!(maps[4].path.as_deref(), Some("/opt/my lib/libx.so"));
        assert!(maps[4].deleted);
        assert_eq!((maps[4].dev_major, maps[4].dev_minor), (0x103, 0xa));
        assert_eq!(maps[5].path, None);
        assert!(!maps[5].readable && !maps[5].executable);
        assert_eq!(maps[6].path.as_deref(), Some("[vdso]"));
        assert_eq!(maps[7].start, 0xffffffffff600000);
    }

    #[test]
    fn maps_errors_name_the_line() {
        let text = "1000-2000 r-xp 00000000 00:00 0\nzzzz-2000 r-xp 00000000 00:00 0\n";
        let err = parse_maps(text).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.reason.contains("start address"), "{err}");
        assert_eq!(parse_maps("1000-2000 r-xp").unwrap_err().line, 1);
        assert!(parse_maps("2000-1000 r-xp 0 00:00 0").is_err());
        assert!(parse_maps("1000-2000 rx 0 00:00 0").is_err());
        let err = ParseError::new(3, "bad").at(Path::new("/proc/1/maps"));
        assert_eq!(err.to_string(), "cannot parse /proc/1/maps line 3: bad");
    }

    const STAT: &str = "4242 (my (odd) ) (prog) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                        10 5 0 0 20 0 3 0 987654 123456789 456 18446744073709551615 1 1 0 0 0 \
                        0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn parses_start_time_after_odd_comm() {
        assert_eq!(parse_stat_start_time(STAT), Ok(987654));
        let plain = "1 (systemd) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 42 1 1";
        assert_eq!(parse_stat_start_time(plain), Ok(42));
        assert!(parse_stat_start_time("1 (short) S 0 1").is_err());
        assert!(parse_stat_start_time("no parenthesis").is_err());
    }

    #[test]
    fn parses_stat_summary() {
        assert_eq!(
            parse_stat(STAT),
            Ok(Stat {
                comm: "my (odd) ) (prog".into(),
                state: 'S',
                num_threads: 3,
                start_time_ticks: 987654,
                vsize_bytes: 123456789,
                rss_pages: 456,
            })
        );
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0 \
                       18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 17 0 0 0 0 0 0\n";
        let stat = parse_stat(kthread).unwrap();
        assert_eq!(
            (stat.comm.as_str(), stat.vsize_bytes, stat.rss_pages),
            ("kthreadd", 0, 0)
        );
        assert_eq!((stat.num_threads, stat.start_time_ticks), (1, 3));
        assert_eq!(
            parse_stat("1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 42 4096")
                .unwrap_err()
                .reason,
            "fewer than 24 fields"
        );
        assert!(parse_stat("1 (x) S 0 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 one 0 42 4096 1").is_err());
        assert!(parse_stat("1 )x( S").is_err());
        assert!(parse_stat("no parenthesis").is_err());
    }

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max processes             96365                96365                processes 
Max open files            1024                 524288               files     
Max locked memory         8388608              8388608              bytes     
";

    #[test]
    fn parses_open_files_limit() {
        assert_eq!(parse_open_files_limit(LIMITS), Ok(Some(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_files_limit(unlimited), Ok(None));
        assert!(parse_open_files_limit("Max open files            many   x\n").is_err());
        assert!(parse_open_files_limit("Max open files\n").is_err());
        assert!(parse_open_files_limit("Max processes 1 1 processes\n").is_err());
        assert_eq!(parse_process_limit(LIMITS), Ok(Some(96365)));
        assert_eq!(
            parse_process_limit("Max processes unlimited unlimited processes\n"),
            Ok(None)
        );
        assert!(parse_process_limit("Max open files 1 1 files\n").is_err());
        assert!(read_process_limit(std::process::id()).is_ok());
    }

    #[test]
    fn parses_the_real_uid() {
        let status = "Name:\tx\nUid:\t1000\t0\t1000\t1000\nGid:\t5\t5\t5\t5\n";
        assert_eq!(parse_real_uid(status), Ok(1000));
        assert!(parse_real_uid("Uid:\tbad\n").is_err());
        assert!(parse_real_uid("Name:\tx\n").is_err());
        assert_eq!(
            read_real_uid(std::process::id()).unwrap(),
            // SAFETY: getuid has no preconditions.
            unsafe { libc::getuid() }
        );
    }

    #[test]
    fn parses_smaps() {
        let text = "\
55d5c9f3e000-55d5c9f5f000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
Rss:                 100 kB
Pss:                 100 kB
Anonymous:           100 kB
Swap:                 12 kB
VmFlags: rd wr mr mw me ac sd
7f1e2e000000-7f1e2e021000 rw-s 00000000 00:05 4242   /memfd:shm (deleted)
Rss:                   8 kB
Anonymous:             0 kB
Swap:                  0 kB
";
        let entries = parse_smaps(text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].map.path.as_deref(), Some("[heap]"));
        assert_eq!(
            (entries[0].rss, entries[0].anonymous, entries[0].swap),
            (100 << 10, 100 << 10, 12 << 10)
        );
        assert!(entries[1].map.shared && entries[1].map.deleted);
        assert_eq!(entries[1].rss, 8 << 10);
        assert_eq!(parse_smaps("Rss: 4 kB\n").unwrap_err().line, 1);
        let bad = "1000-2000 rw-p 00000000 00:00 0\nRss: many kB\n";
        assert_eq!(parse_smaps(bad).unwrap_err().line, 2);
        let me = read_smaps(std::process::id()).unwrap();
        assert!(me.iter().any(|entry| entry.rss > 0));
    }

    #[test]
    fn reads_stack_pointers_and_remote_words() {
        assert_eq!(
            parse_syscall_stack_pointer(
                "230 0x1 0x0 0x7ffd5a9e3f40 0x0 0x0 0x0 0x7ffd5a9e3f18 0x7f0a4bcd6fda\n"
            ),
            Some(0x7ffd_5a9e_3f18)
        );
        assert_eq!(
            parse_syscall_stack_pointer("-1 0x7f0a4b3fe000 0x55d5c8a4f123\n"),
            Some(0x7f0a_4b3f_e000)
        );
        assert_eq!(parse_syscall_stack_pointer("running\n"), None);
        // A thread of ours blocked in a system call has a stack pointer in a mapping.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let blocked = std::thread::spawn(move || rx.recv());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let pointers = read_thread_stack_pointers(std::process::id(), 4096).unwrap();
        tx.send(()).unwrap();
        blocked.join().unwrap().unwrap();
        assert!(!pointers.is_empty());
        // Words of our own memory, and an address mapped nowhere between two that are.
        let words: [u64; 4] = [1, 2, 0xfeed, 0xbeef];
        let base = words.as_ptr() as u64;
        let pairs = read_remote_pairs(std::process::id(), &[base, 8, base + 16]);
        assert_eq!(pairs, [Some([1, 2]), None, Some([0xfeed, 0xbeef])]);
        assert_eq!(read_remote_pairs(u32::MAX, &[base]), [None]);
    }

    #[test]
    fn parses_uptime() {
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Ok(350735.47));
        assert!(parse_uptime("").is_err());
        assert!(parse_uptime("-1 2\n").is_err());
        assert!(parse_uptime("nan 2\n").is_err());
    }

    #[test]
    fn parses_comm_with_spaces() {
        assert_eq!(parse_comm("my (odd) ) (prog\n"), "my (odd) ) (prog");
        assert_eq!(parse_comm("x"), "x");
    }

    const STATUS: &str = "\
Name:\tcat
Umask:\t0022
State:\tR (running)
VmPeak:\t    8604 kB
VmSize:\t    8604 kB
VmRSS:\t    1024 kB
RssAnon:\t     100 kB
RssFile:\t     924 kB
RssShmem:\t       0 kB
VmSwap:\t       2 kB
Threads:\t3
SigQ:\t0/63422
";

    #[test]
    fn parses_status() {
        let status = parse_status(STATUS).unwrap();
        assert_eq!(
            status,
            Status {
                vm_rss: 1024 * 1024,
                vm_size: 8604 * 1024,
                rss_anon: 100 * 1024,
                rss_file: 924 * 1024,
                vm_swap: 2 * 1024,
                threads: 3,
            }
        );
        let kthread = "Name:\tkthreadd\nState:\tS (sleeping)\nThreads:\t1\n";
        assert_eq!(
            parse_status(kthread).unwrap(),
            Status {
                threads: 1,
                ..Status::default()
            }
        );
        assert!(parse_status("Name:\tx\n").is_err());
        assert_eq!(
            parse_status("VmRSS:\tlots\nThreads:\t1\n")
                .unwrap_err()
                .line,
            1
        );
        assert!(parse_status("VmRSS:\t1 MB\nThreads:\t1\n").is_err());
    }

    #[test]
    fn parses_systemd_units() {
        assert_eq!(
            systemd_unit("/system.slice/nginx.service").as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            systemd_unit("/system.slice/docker-abc.scope/init").as_deref(),
            Some("docker-abc.scope")
        );
        assert_eq!(
            systemd_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope")
                .as_deref(),
            Some("app-x.scope")
        );
        assert_eq!(systemd_unit("/user.slice"), None);
        assert_eq!(systemd_unit("/"), None);
        assert_eq!(systemd_unit("/.service"), None);
    }

    #[test]
    fn reads_the_live_test_process() {
        let pid = std::process::id();
        let maps = read_maps(pid).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert!(
            maps.iter()
                .any(|m| m.executable && m.path.as_deref() == exe.to_str()),
            "{exe:?} not mapped executable"
        );
        let here = parses_maps as fn() as usize as u64;
        assert!(maps.iter().any(|m| m.start <= here && here < m.end));

        let comm = read_comm(pid).unwrap();
        assert!(!comm.is_empty() && !comm.ends_with('\n'));

        let status = read_status(pid).unwrap();
        assert!(status.vm_rss > 0 && status.vm_size >= status.vm_rss);
        assert!(status.threads >= 1);

        let file = fs::File::open("/proc/self/status").unwrap();
        let fds = count_fds(pid).unwrap();
        drop(file);
        assert!(fds >= 4, "{fds}");

        let start = start_time_ticks(pid).unwrap();
        assert!(start > 0);
        assert_eq!(start_time_ticks(pid).unwrap(), start);

        let stat = read_stat(pid).unwrap();
        assert_eq!(stat.start_time_ticks, start);
        assert_eq!(stat.comm, comm);
        assert!(stat.num_threads >= 1 && stat.rss_pages > 0);
        assert!(stat.vsize_bytes >= stat.rss_pages * page_size());
        let file = fs::File::open("/proc/self/status").unwrap();
        let fast = open_fds(pid).unwrap();
        drop(file);
        assert!(fast >= 4, "{fast}");
        assert!(
            read_open_files_limit(pid)
                .unwrap()
                .is_none_or(|l| l >= fast)
        );
        let uptime = read_uptime().unwrap();
        assert!(uptime >= start as f64 / clock_ticks_per_second() as f64);
        assert!(page_size().is_power_of_two());

        let pids = list_pids().unwrap();
        assert!(pids.contains(&pid) && pids.contains(&1));
        assert!(pids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_missing_process_is_gone() {
        // Above the largest pid_max the kernel allows (2^22).
        let pid = (1 << 22) + 17;
        for result in [
            read_maps(pid).map(drop),
            read_comm(pid).map(drop),
            read_status(pid).map(drop),
            count_fds(pid).map(drop),
            start_time_ticks(pid).map(drop),
            read_stat(pid).map(drop),
            open_fds(pid).map(drop),
            read_open_files_limit(pid).map(drop),
        ] {
            match result {
                Err(ProcError::Gone { pid: p }) => assert_eq!(p, pid),
                other => panic!("expected Gone, got {other:?}"),
            }
        }
        assert_eq!(
            ProcError::Gone { pid }.to_string(),
            format!("process {pid} is gone")
        );
    }

    #[test]
    fn stat_reader_rereads_open_files_and_drops_gone_processes() {
        let mut reader = StatReader::default();
        let own = std::process::id();
        let first = reader.read(own).expect("own stat");
        let second = reader.read(own).expect("own stat again");
        assert_eq!(first.start_time_ticks, second.start_time_ticks);
        assert_eq!(reader.open_files(), 1);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id();
        assert_eq!(reader.read(pid).expect("child stat").comm, "sleep");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(matches!(reader.read(pid), Err(ProcError::Gone { .. })));
        assert_eq!(reader.open_files(), 1, "the gone process's file is closed");
        reader.retain(|_| false);
        assert_eq!(reader.open_files(), 0);
    }

    #[test]
    fn seccomp_mode_is_read_from_status() {
        let text = "Name:\tx\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        assert_eq!(parse_seccomp_mode(text).expect("parses"), 2);
        assert!(parse_seccomp_mode("Name:\tx\n").is_err());
        assert!(parse_seccomp_mode("Seccomp:\tlots\n").is_err());
        assert_eq!(seccomp_mode(std::process::id()).expect("own status"), 0);
    }
}
