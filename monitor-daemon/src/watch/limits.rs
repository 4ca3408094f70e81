//! The limits a process's memory and threads run into, and the room left below each: the
//! cgroups of the process in either hierarchy, cgroup v2 (`memory.max`, `memory.high`,
//! `memory.swap.max`, `pids.max`) and cgroup v1 (`memory.limit_in_bytes`,
//! `memory.memsw.limit_in_bytes`, `pids.max`), each read up the tree to the root, and the host's
//! own (MemAvailable and free swap; `kernel.threads-max`), and the process's own RLIMIT_NPROC
//! for its threads. Hybrid hosts, with v1 controllers beside a v2 hierarchy, are read through
//! both.
//!
//! Where memory runs out: the room below a memory limit is the limit less the cgroup's working
//! set (its usage less its inactive file pages, which the kernel reclaims first, as the kubelet
//! counts it), plus the free swap the cgroup may still use (`memory.swap.max` on v2; on v1 the
//! host's free swap, bounded by `memory.memsw.limit_in_bytes` when swap is accounted). The host's
//! room is MemAvailable plus free swap. The tightest room wins.
//!
//! The cgroup mounts come from `/proc/self/mountinfo`. Every reader takes the text of its file
//! (`parse_*`) or a directory tree, so the formats are tested on recorded files. It may use
//! [`crate::model`] and [`crate::watch::procfs`], nothing else of the crate.

use std::fs;
use std::path::{Path, PathBuf};

use crate::model::{Limit, LimitKind};
use crate::watch::procfs::{self, Pid, ProcError};

/// A v1 counter at or above this is "no limit" (the kernel writes `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// Where the cgroup hierarchies this process sees are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupMounts {
    /// The cgroup2 (unified) hierarchy.
    pub unified: Option<PathBuf>,
    /// The v1 hierarchy holding the `memory` controller.
    pub memory_v1: Option<PathBuf>,
    /// The v1 hierarchy holding the `pids` controller.
    pub pids_v1: Option<PathBuf>,
}

impl CgroupMounts {
    /// The mounts of this process's mount namespace; none when they cannot be read.
    pub fn read() -> Self {
        match fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => parse_mountinfo(&text),
            Err(err) => {
                log::warn!("cannot read /proc/self/mountinfo: {err}; cgroup limits are not read");
                Self::default()
            }
        }
    }
}

/// Finds the cgroup mounts in the text of `/proc/self/mountinfo` (the first mount of each
/// hierarchy whose root is the hierarchy's root).
pub fn parse_mountinfo(text: &str) -> CgroupMounts {
    let mut mounts = CgroupMounts::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(point)) = (fields.get(3), fields.get(4)) else {
            continue;
        };
        if *root != "/" {
            continue;
        }
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let options = right.nth(1).unwrap_or("");
        let point = PathBuf::from(unescape_mount_path(point));
        match fstype {
            "cgroup2" => {
                mounts.unified.get_or_insert(point);
            }
            "cgroup" => {
                let has = |name: &str| options.split(',').any(|option| option == name);
                if has("memory") {
                    mounts.memory_v1.get_or_insert(point.clone());
                }
                if has("pids") {
                    mounts.pids_v1.get_or_insert(point);
                }
            }
            _ => {}
        }
    }
    mounts
}

/// A mount point as mountinfo escapes it (`\040` for a space, octal).
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match octal {
            Some(digits) => {
                out.push(
                    digits
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8) + (d - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups of one process (`/proc/PID/cgroup`), as paths from each hierarchy's root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cgroups {
    /// In the unified (v2) hierarchy, e.g. `/system.slice/nginx.service`.
    pub unified: Option<String>,
    /// In the v1 hierarchy of the `memory` controller.
    pub memory_v1: Option<String>,
    /// In the v1 hierarchy of the `pids` controller.
    pub pids_v1: Option<String>,
}

/// Reads `/proc/PID/cgroup`.
pub fn read_cgroups(pid: Pid) -> Result<Cgroups, ProcError> {
    let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_cgroups(&text)),
        Err(err) => Err(match err.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => ProcError::Gone { pid },
            Some(libc::EACCES) | Some(libc::EPERM) => ProcError::PermissionDenied { path },
            _ => ProcError::Io { path, source: err },
        }),
    }
}

/// Parses the text of `/proc/PID/cgroup`: `0::PATH` for the unified hierarchy,
/// `N:CONTROLLERS:PATH` for each v1 hierarchy.
pub fn parse_cgroups(text: &str) -> Cgroups {
    let mut cgroups = Cgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            cgroups.unified = Some(path.to_owned());
            continue;
        }
        for controller in controllers.split(',') {
            match controller {
                "memory" => cgroups.memory_v1 = Some(path.to_owned()),
                "pids" => cgroups.pids_v1 = Some(path.to_owned()),
                _ => {}
            }
        }
    }
    cgroups
}

/// The host's memory, bytes, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostMemory {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`: memory for new allocations without swapping.
    pub available: u64,
    /// `SwapTotal`.
    pub swap_total: u64,
    /// `SwapFree`.
    pub swap_free: u64,
}

/// Reads `/proc/meminfo`.
pub fn read_host_memory() -> Result<HostMemory, ProcError> {
    let path = PathBuf::from("/proc/meminfo");
    let text = fs::read_to_string(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    parse_meminfo(&text).map_err(|reason| ProcError::Parse {
        path,
        line: 0,
        reason,
    })
}

/// Parses the text of `/proc/meminfo`; `MemTotal` and `MemAvailable` are required, the swap
/// lines default to 0 (a kernel without swap support has none).
pub fn parse_meminfo(text: &str) -> Result<HostMemory, String> {
    let field = |name: &str| -> Result<Option<u64>, String> {
        let Some(line) = text.lines().find(|l| l.starts_with(name)) else {
            return Ok(None);
        };
        let rest = line[name.len()..].trim_start_matches(':');
        let mut words = rest.split_whitespace();
        match (
            words.next().and_then(|n| n.parse::<u64>().ok()),
            words.next(),
        ) {
            (Some(kib), Some("kB")) => Ok(Some(kib.saturating_mul(1024))),
            _ => Err(format!("bad {name} line {line:?}")),
        }
    };
    let required = |name: &str| field(name)?.ok_or_else(|| format!("no {name} line"));
    Ok(HostMemory {
        total: required("MemTotal")?,
        available: required("MemAvailable")?,
        swap_total: field("SwapTotal")?.unwrap_or(0),
        swap_free: field("SwapFree")?.unwrap_or(0),
    })
}

/// The host's threads: (threads now, `kernel.threads-max`), from `/proc/loadavg` and
/// `/proc/sys/kernel/threads-max`.
pub fn read_host_threads() -> Option<(u64, u64)> {
    let loadavg = fs::read_to_string("/proc/loadavg").ok()?;
    let max = fs::read_to_string("/proc/sys/kernel/threads-max").ok()?;
    Some((parse_loadavg_threads(&loadavg)?, max.trim().parse().ok()?))
}

/// The number of threads on the host: the denominator of the fourth field of `/proc/loadavg`.
pub fn parse_loadavg_threads(text: &str) -> Option<u64> {
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Parses a cgroup counter or limit: bytes (or a count), `None` for `max` or a v1 "unlimited".
pub fn parse_cgroup_value(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        value => value
            .parse::<u64>()
            .map(|v| (v < V1_UNLIMITED).then_some(v))
            .map_err(|_| format!("bad cgroup value {value:?}")),
    }
}

/// A number from a `memory.stat` text (`name value` lines).
pub fn parse_memory_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// Reads a cgroup file as a value: `Err(())` when the file is absent or unreadable (the
/// controller is not there), `Ok(None)` for no limit.
fn read_value(dir: &Path, name: &str) -> Result<Option<u64>, ()> {
    let path = dir.join(name);
    let text = fs::read_to_string(&path).map_err(drop)?;
    parse_cgroup_value(&text).map_err(|reason| log::debug!("{}: {reason}", path.display()))
}

/// `dir` and each of its ancestors below `root`, deepest first (`cgroup` is a path from the
/// root such as `/a/b`; the root itself is left out: limits are set below it).
fn levels(root: &Path, cgroup: &str) -> Vec<(PathBuf, String)> {
    let mut relative = cgroup.trim_matches('/');
    let mut levels = Vec::new();
    while !relative.is_empty() {
        levels.push((root.join(relative), format!("/{relative}")));
        relative = relative.rsplit_once('/').map_or("", |(parent, _)| parent);
    }
    levels
}

/// The tighter of two rooms (the one with less left).
pub fn tighter(a: Option<Limit>, b: Option<Limit>) -> Option<Limit> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.remaining < a.remaining { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The tightest memory room of the process in cgroups `cgroups` (mounted at `mounts`) and on a
/// host with `host` memory: see the module documentation.
pub fn memory_room(
    mounts: &CgroupMounts,
    cgroups: &Cgroups,
    host: Option<HostMemory>,
) -> Option<Limit> {
    let swap_free = host.map_or(0, |h| h.swap_free);
    let mut tightest = host.map(|h| Limit {
        kind: LimitKind::HostMemory,
        cgroup: None,
        limit: h.total + h.swap_total,
        remaining: h.available + h.swap_free,
    });
    if let (Some(root), Some(cgroup)) = (&mounts.unified, &cgroups.unified) {
        for (dir, path) in levels(root, cgroup) {
            tightest = tighter(tightest, unified_memory_room(&dir, &path, swap_free));
        }
    }
    if let (Some(root), Some(cgroup)) = (&mounts.memory_v1, &cgroups.memory_v1) {
        for (dir, path) in levels(root, cgroup) {
            tightest = tighter(tightest, v1_memory_room(&dir, &path, swap_free));
        }
    }
    tightest
}

/// The working set of a cgroup: `usage` less its inactive file pages (`stat_key` of
/// `memory.stat`).
fn working_set(dir: &Path, usage: u64, stat_key: &str) -> u64 {
    let inactive = fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|text| parse_memory_stat(&text, stat_key))
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// The room below `memory.max` and `memory.high` of one v2 cgroup.
fn unified_memory_room(dir: &Path, path: &str, swap_free: u64) -> Option<Limit> {
    let max = read_value(dir, "memory.max").ok().flatten();
    let high = read_value(dir, "memory.high").ok().flatten();
    if max.is_none() && high.is_none() {
        return None;
    }
    let current = read_value(dir, "memory.current")
        .ok()
        .flatten()
        .unwrap_or(0);
    let used = working_set(dir, current, "inactive_file");
    let swap_room = match read_value(dir, "memory.swap.max") {
        Ok(Some(swap_max)) => {
            let swap_used = read_value(dir, "memory.swap.current")
                .ok()
                .flatten()
                .unwrap_or(0);
            swap_max.saturating_sub(swap_used).min(swap_free)
        }
        Ok(None) | Err(()) => swap_free,
    };
    let room = |kind, limit: Option<u64>| {
        limit.map(|limit| Limit {
            kind,
            cgroup: Some(path.to_owned()),
            limit,
            remaining: limit.saturating_sub(used).saturating_add(swap_room),
        })
    };
    tighter(
        room(LimitKind::CgroupV2Max, max),
        room(LimitKind::CgroupV2High, high),
    )
}

/// The room below `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`) of one v1 cgroup.
fn v1_memory_room(dir: &Path, path: &str, swap_free: u64) -> Option<Limit> {
    let limit = read_value(dir, "memory.limit_in_bytes").ok().flatten();
    let memsw = read_value(dir, "memory.memsw.limit_in_bytes")
        .ok()
        .flatten();
    if limit.is_none() && memsw.is_none() {
        return None;
    }
    let usage = read_value(dir, "memory.usage_in_bytes")
        .ok()
        .flatten()
        .unwrap_or(0);
    let inactive_file = usage.saturating_sub(working_set(dir, usage, "total_inactive_file"));
    let memory = limit.map(|limit| Limit {
        kind: LimitKind::CgroupV1,
        cgroup: Some(path.to_owned()),
        limit,
        remaining: limit
            .saturating_sub(usage - inactive_file)
            .saturating_add(swap_free),
    });
    let with_swap = memsw.map(|limit| {
        let used = read_value(dir, "memory.memsw.usage_in_bytes")
            .ok()
            .flatten()
            .unwrap_or(usage);
        Limit {
            kind: LimitKind::CgroupV1Memsw,
            cgroup: Some(path.to_owned()),
            limit,
            remaining: limit.saturating_sub(used.saturating_sub(inactive_file)),
        }
    });
    tighter(memory, with_swap)
}

/// The tightest room for new threads of the process: `pids.max` of its pids cgroup and every
/// ancestor (v2 or v1), and the host's `kernel.threads-max` given `host` (threads now, maximum).
/// The room RLIMIT_NPROC leaves a process `pid` that has `threads` threads; `None` when it is
/// unlimited, cannot be read, or the process's real user is root (the kernel does not hold root
/// to it). The limit counts every thread of the user, so the room is an upper bound.
pub fn nproc_room(pid: Pid, threads: u64) -> Option<Limit> {
    if procfs::read_real_uid(pid).ok()? == 0 {
        return None;
    }
    let limit = procfs::read_process_limit(pid).ok()??;
    Some(Limit {
        kind: LimitKind::Nproc,
        cgroup: None,
        limit,
        remaining: limit.saturating_sub(threads),
    })
}

pub fn thread_room(
    mounts: &CgroupMounts,
    cgroups: &Cgroups,
    host: Option<(u64, u64)>,
) -> Option<Limit> {
    let mut tightest = host.map(|(threads, max)| Limit {
        kind: LimitKind::HostThreads,
        cgroup: None,
        limit: max,
        remaining: max.saturating_sub(threads),
    });
    let hierarchies = [
        (&mounts.unified, &cgroups.unified, LimitKind::CgroupV2Pids),
        (&mounts.pids_v1, &cgroups.pids_v1, LimitKind::CgroupV1Pids),
    ];
    for (root, cgroup, kind) in hierarchies {
        let (Some(root), Some(cgroup)) = (root, cgroup) else {
            continue;
        };
        for (dir, path) in levels(root, cgroup) {
            let Ok(Some(max)) = read_value(&dir, "pids.max") else {
                continue;
            };
            let current = read_value(&dir, "pids.current").ok().flatten().unwrap_or(0);
            tightest = tighter(
                tightest,
                Some(Limit {
                    kind,
                    cgroup: Some(path),
                    limit: max,
                    remaining: max.saturating_sub(current),
                }),
            );
        }
    }
    tightest
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This VM's hierarchy (hybrid: v1 controllers, cgroup2 without memory at `unified`).
    const HYBRID_MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A unified host (systemd's default since 2021), plus a container's bind mount of a
    /// subtree, which is not the hierarchy's root.
    const UNIFIED_MOUNTINFO: &str = "\
25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
90 25 0:22 /system.slice /srv/my\\040cgroups rw - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_mounts_of_both_hierarchies() {
        assert_eq!(
            parse_mountinfo(HYBRID_MOUNTINFO),
            CgroupMounts {
                unified: Some("/sys/fs/cgroup/unified".into()),
                memory_v1: Some("/sys/fs/cgroup/memory".into()),
                pids_v1: Some("/sys/fs/cgroup/pids".into()),
            }
        );
        assert_eq!(
            parse_mountinfo(UNIFIED_MOUNTINFO),
            CgroupMounts {
                unified: Some("/sys/fs/cgroup".into()),
                ..CgroupMounts::default()
            }
        );
        assert_eq!(parse_mountinfo("garbage\n"), CgroupMounts::default());
        assert_eq!(
            unescape_mount_path("/srv/my\\040cgroups"),
            "/srv/my cgroups"
        );
        assert_eq!(unescape_mount_path("/a\\b"), "/a\\b");
    }

    #[test]
    fn parses_the_cgroups_of_a_process() {
        let hybrid = "9:name=systemd:/\n8:pids:/user.slice\n4:memory:/leakmon-e2e\n\
                      2:cpu,cpuacct:/\n0::/user.slice/session-3.scope\n";
        assert_eq!(
            parse_cgroups(hybrid),
            Cgroups {
                unified: Some("/user.slice/session-3.scope".into()),
                memory_v1: Some("/leakmon-e2e".into()),
                pids_v1: Some("/user.slice".into()),
            }
        );
        assert_eq!(
            parse_cgroups("0::/system.slice/nginx.service\n").unified,
            Some("/system.slice/nginx.service".into())
        );
        assert_eq!(parse_cgroups("4:cpu:/\nnonsense\n"), Cgroups::default());
        let own = read_cgroups(std::process::id()).unwrap();
        assert!(own.unified.is_some() || own.memory_v1.is_some(), "{own:?}");
    }

    #[test]
    fn parses_host_files() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\n\
                       MemAvailable:   20000000 kB\nSwapTotal:       2000000 kB\n\
                       SwapFree:        1500000 kB\n";
        assert_eq!(
            parse_meminfo(meminfo),
            Ok(HostMemory {
                total: 24_000_000 * 1024,
                available: 20_000_000 * 1024,
                swap_total: 2_000_000 * 1024,
                swap_free: 1_500_000 * 1024,
            })
        );
        let no_swap = "MemTotal: 100 kB\nMemAvailable: 50 kB\n";
        assert_eq!(parse_meminfo(no_swap).unwrap().swap_free, 0);
        assert!(parse_meminfo("MemTotal: 100 kB\n").is_err());
        assert!(parse_meminfo("MemTotal: 100 kB\nMemAvailable: lots kB\n").is_err());
        assert!(read_host_memory().unwrap().available > 0);

        assert_eq!(
            parse_loadavg_threads("0.00 0.01 0.05 3/102 19753\n"),
            Some(102)
        );
        assert_eq!(parse_loadavg_threads("0.00 0.01\n"), None);
        let (threads, max) = read_host_threads().unwrap();
        assert!(threads > 0 && max > threads);

        assert_eq!(parse_cgroup_value("max\n"), Ok(None));
        assert_eq!(parse_cgroup_value("1073741824\n"), Ok(Some(1 << 30)));
        assert_eq!(parse_cgroup_value("9223372036854771712\n"), Ok(None));
        assert!(parse_cgroup_value("lots").is_err());
        let stat = "cache 100\ntotal_inactive_file 4096\ninactive_file 8192\n";
        assert_eq!(parse_memory_stat(stat, "total_inactive_file"), Some(4096));
        assert_eq!(parse_memory_stat(stat, "inactive_file"), Some(8192));
        assert_eq!(parse_memory_stat(stat, "active_file"), None);
    }

    /// A cgroup tree recorded as files.
    struct Tree(tempfile::TempDir);

    impl Tree {
        fn new() -> Self {
            Tree(tempfile::tempdir().unwrap())
        }

        fn write(&self, cgroup: &str, files: &[(&str, &str)]) {
            let dir = self.0.path().join(cgroup.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            for (name, text) in files {
                fs::write(dir.join(name), format!("{text}\n")).unwrap();
            }
        }

        fn root(&self, hierarchy: &str) -> PathBuf {
            self.0.path().join(hierarchy)
        }
    }

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn host(available: u64, swap_free: u64) -> HostMemory {
        HostMemory {
            total: 24 * GIB,
            available,
            swap_total: swap_free,
            swap_free,
        }
    }

    #[test]
    fn v2_limits_up_the_tree_with_high_swap_and_reclaimable_cache() {
        let tree = Tree::new();
        let mounts = CgroupMounts {
            unified: Some(tree.root("unified")),
            ..CgroupMounts::default()
        };
        // As the kernel writes them for a service in a slice limited to 4 GiB.
        tree.write(
            "unified/app.slice",
            &[
                ("memory.max", "4294967296"),
                ("memory.high", "max"),
                ("memory.current", "3221225472"),
                ("memory.stat", "anon 3000000000\ninactive_file 0"),
            ],
        );
        tree.write(
            "unified/app.slice/app.service",
            &[
                ("memory.max", "1073741824"),
                ("memory.high", "max"),
                ("memory.current", "629145600"),
                (
                    "memory.stat",
                    "anon 500000000\nfile 100000000\ninactive_file 104857600",
                ),
                ("memory.swap.max", "max"),
                ("memory.swap.current", "0"),
            ],
        );
        let cgroups = Cgroups {
            unified: Some("/app.slice/app.service".into()),
            ..Cgroups::default()
        };
        let room = memory_room(&mounts, &cgroups, Some(host(20 * GIB, 0))).unwrap();
        // 1 GiB less 600 MiB used, of which 100 MiB is inactive cache.
        assert_eq!(
            room,
            Limit {
                kind: LimitKind::CgroupV2Max,
                cgroup: Some("/app.slice/app.service".into()),
                limit: GIB,
                remaining: GIB - 500 * MIB,
            }
        );

        // memory.high below memory.max is the tighter; free swap adds to the room, within
        // memory.swap.max.
        tree.write(
            "unified/app.slice/app.service",
            &[
                ("memory.high", "805306368"),
                ("memory.swap.max", "67108864"),
                ("memory.swap.current", "16777216"),
            ],
        );
        let room = memory_room(&mounts, &cgroups, Some(host(20 * GIB, GIB))).unwrap();
        assert_eq!(room.kind, LimitKind::CgroupV2High);
        assert_eq!(room.remaining, 768 * MIB - 500 * MIB + 48 * MIB);

        // An ancestor with less room wins.
        tree.write("unified/app.slice", &[("memory.current", "4244635648")]);
        let room = memory_room(&mounts, &cgroups, Some(host(20 * GIB, 0))).unwrap();
        assert_eq!(
            (room.kind, room.cgroup.as_deref(), room.remaining),
            (LimitKind::CgroupV2Max, Some("/app.slice"), 48 * MIB)
        );

        // The host, when it has less room than any cgroup.
        let room = memory_room(&mounts, &cgroups, Some(host(10 * MIB, 5 * MIB))).unwrap();
        assert_eq!(
            room,
            Limit {
                kind: LimitKind::HostMemory,
                cgroup: None,
                limit: 24 * GIB + 5 * MIB,
                remaining: 15 * MIB,
            }
        );
        // A v2 hierarchy without the memory controller (this VM's) has no memory limit.
        let bare = Cgroups {
            unified: Some("/user.slice".into()),
            ..Cgroups::default()
        };
        tree.write("unified/user.slice", &[("cgroup.procs", "1")]);
        assert_eq!(
            memory_room(&mounts, &bare, Some(host(GIB, 0)))
                .unwrap()
                .kind,
            LimitKind::HostMemory
        );
        assert_eq!(memory_room(&mounts, &bare, None), None);
    }

    #[test]
    fn v1_limits_up_the_tree_with_memsw() {
        let tree = Tree::new();
        let mounts = CgroupMounts {
            unified: Some(tree.root("unified")),
            memory_v1: Some(tree.root("memory")),
            pids_v1: None,
        };
        // As this VM's kernel writes them: the root unlimited, a test cgroup limited to 1 GiB.
        tree.write(
            "memory",
            &[("memory.limit_in_bytes", "9223372036854771712")],
        );
        tree.write(
            "memory/leakmon-e2e",
            &[
                ("memory.limit_in_bytes", "1073741824"),
                ("memory.usage_in_bytes", "536870912"),
                ("memory.memsw.limit_in_bytes", "9223372036854771712"),
                ("memory.memsw.usage_in_bytes", "536870912"),
                (
                    "memory.stat",
                    "cache 0\nrss 536870912\ntotal_inactive_file 0",
                ),
            ],
        );
        let cgroups = Cgroups {
            unified: Some("/".into()),
            memory_v1: Some("/leakmon-e2e".into()),
            pids_v1: Some("/".into()),
        };
        let room = memory_room(&mounts, &cgroups, Some(host(20 * GIB, 0))).unwrap();
        assert_eq!(
            room,
            Limit {
                kind: LimitKind::CgroupV1,
                cgroup: Some("/leakmon-e2e".into()),
                limit: GIB,
                remaining: GIB / 2,
            }
        );
        // With free swap the memory limit alone leaves more room; memsw bounds it.
        let room = memory_room(&mounts, &cgroups, Some(host(20 * GIB, 4 * GIB))).unwrap();
        assert_eq!(room.remaining, GIB / 2 + 4 * GIB);
        tree.write(
            "memory/leakmon-e2e",
            &[
                ("memory.memsw.limit_in_bytes", "2147483648"),
                ("memory.memsw.usage_in_bytes", "805306368"),
            ],
        );
        let room = memory_room(&mounts, &cgroups, Some(host(20 * GIB, 4 * GIB))).unwrap();
        assert_eq!(
            (room.kind, room.limit, room.remaining),
            (LimitKind::CgroupV1Memsw, 2 * GIB, 2 * GIB - 768 * MIB)
        );
        // A v1 cgroup nested in a limited parent.
        tree.write(
            "memory/parent",
            &[
                ("memory.limit_in_bytes", "268435456"),
                ("memory.usage_in_bytes", "201326592"),
            ],
        );
        tree.write(
            "memory/parent/child",
            &[("memory.limit_in_bytes", "9223372036854771712")],
        );
        let nested = Cgroups {
            memory_v1: Some("/parent/child".into()),
            ..Cgroups::default()
        };
        let room = memory_room(&mounts, &nested, None).unwrap();
        assert_eq!(
            (room.cgroup.as_deref(), room.remaining),
            (Some("/parent"), 64 * MIB)
        );
        // A cgroup the tree does not have (it was removed) has no limit.
        let gone = Cgroups {
            memory_v1: Some("/gone".into()),
            ..Cgroups::default()
        };
        assert_eq!(memory_room(&mounts, &gone, None), None);
    }

    #[test]
    fn rlimit_nproc_holds_other_users_not_root() {
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            assert_eq!(nproc_room(std::process::id(), 1), None);
        }
        let mut child = std::process::Command::new("prlimit")
            .args([
                "--nproc=700:700",
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
            ])
            .args(["--clear-groups", "sleep", "5"])
            .spawn()
            .expect("prlimit and setpriv (util-linux)");
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let room = loop {
            let room = nproc_room(pid, 1);
            if room.is_some() || std::time::Instant::now() > deadline {
                break room;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            room,
            Some(Limit {
                kind: LimitKind::Nproc,
                cgroup: None,
                limit: 700,
                remaining: 699,
            })
        );
    }

    #[test]
    fn thread_limits_of_both_hierarchies_and_the_host() {
        let tree = Tree::new();
        let mounts = CgroupMounts {
            unified: Some(tree.root("unified")),
            memory_v1: None,
            pids_v1: Some(tree.root("pids")),
        };
        tree.write(
            "unified/a.service",
            &[("pids.max", "max"), ("pids.current", "40")],
        );
        tree.write("pids/batch", &[("pids.max", "100"), ("pids.current", "70")]);
        let cgroups = Cgroups {
            unified: Some("/a.service".into()),
            memory_v1: None,
            pids_v1: Some("/batch".into()),
        };
        assert_eq!(
            thread_room(&mounts, &cgroups, Some((500, 192_730))),
            Some(Limit {
                kind: LimitKind::CgroupV1Pids,
                cgroup: Some("/batch".into()),
                limit: 100,
                remaining: 30,
            })
        );
        tree.write("unified/a.service", &[("pids.max", "50")]);
        assert_eq!(
            thread_room(&mounts, &cgroups, Some((500, 192_730)))
                .map(|room| (room.kind, room.remaining)),
            Some((LimitKind::CgroupV2Pids, 10))
        );
        assert_eq!(
            thread_room(&CgroupMounts::default(), &cgroups, Some((500, 600))),
            Some(Limit {
                kind: LimitKind::HostThreads,
                cgroup: None,
                limit: 600,
                remaining: 100,
            })
        );
    }
}
