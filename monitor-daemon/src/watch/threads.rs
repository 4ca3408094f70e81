//! How many more threads a process may start, for the forecast of a thread leak: the tightest of
//!
//! * its cgroup's `pids.max` less `pids.current`, over the cgroup and its ancestors, in the
//!   cgroup v1 `pids` hierarchy or, without one, in the unified (v2) hierarchy where the `pids`
//!   controller is enabled (both found in `/proc/self/mountinfo`);
//! * the host's `kernel.threads-max` less the threads running on the host (`/proc/loadavg`);
//! * its RLIMIT_NPROC less its own threads, unless its real user is root (the kernel does not
//!   enforce the limit for root). The limit counts every thread of the user, so this is an upper
//!   bound when the user runs other processes.

use std::path::{Path, PathBuf};

use crate::watch::procfs::{self, Pid, ProcError};

/// Where the cgroup hierarchies that may hold a `pids.max` are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsHierarchies {
    /// The cgroup v1 hierarchy with the `pids` controller: its mount point and the cgroup path
    /// at that mount point (`/` unless the mount shows a subtree, as in a container).
    pub v1: Option<(PathBuf, String)>,
    /// The unified (v2) hierarchy, likewise.
    pub unified: Option<(PathBuf, String)>,
}

impl PidsHierarchies {
    /// The hierarchies mounted in leakmon's mount namespace.
    pub fn mounted() -> Self {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| parse_mountinfo(&text))
            .unwrap_or_default()
    }

    /// The directory of the pids cgroup a process is in, from the text of its
    /// `/proc/PID/cgroup`: in the v1 `pids` hierarchy when there is one, else in the unified one.
    pub fn cgroup_dir(&self, proc_cgroup: &str) -> Option<PathBuf> {
        let (mount, root, path) = match &self.v1 {
            Some((mount, root)) => {
                let path = proc_cgroup.lines().find_map(|line| {
                    let (_, rest) = line.split_once(':')?;
                    let (controllers, path) = rest.split_once(':')?;
                    controllers.split(',').any(|c| c == "pids").then_some(path)
                })?;
                (mount, root, path)
            }
            None => {
                let (mount, root) = self.unified.as_ref()?;
                let path = proc_cgroup
                    .lines()
                    .find_map(|line| line.strip_prefix("0::"))?;
                (mount, root, path)
            }
        };
        let relative = path.strip_prefix(root.as_str()).unwrap_or(path);
        Some(mount.join(relative.trim_matches('/')))
    }
}

/// Parses `/proc/self/mountinfo` for the v1 `pids` hierarchy and the unified one.
pub fn parse_mountinfo(text: &str) -> PidsHierarchies {
    let mut found = PidsHierarchies::default();
    for line in text.lines() {
        let Some((mount, tail)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = mount.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        let (Some(root), Some(point), Some(kind)) = (fields.get(3), fields.get(4), tail.first())
        else {
            continue;
        };
        let entry = (PathBuf::from(unescape(point)), unescape(root));
        match *kind {
            "cgroup"
                if tail
                    .get(2)
                    .is_some_and(|options| options.split(',').any(|o| o == "pids")) =>
            {
                found.v1.get_or_insert(entry);
            }
            "cgroup2" => {
                found.unified.get_or_insert(entry);
            }
            _ => {}
        }
    }
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|digits| u8::from_str_radix(digits, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The smallest `pids.max - pids.current` of the cgroup directory `dir` and its ancestors up to
/// `root` (the hierarchy's mount point); `None` when none is limited.
pub fn pids_headroom(root: &Path, dir: &Path) -> Option<u64> {
    let mut tightest: Option<u64> = None;
    let mut current = Some(dir);
    while let Some(dir) = current.filter(|dir| dir.starts_with(root)) {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
        if let Some(max) = read("pids.max").and_then(|text| text.trim().parse::<u64>().ok()) {
            let used = read("pids.current")
                .and_then(|text| text.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let headroom = max.saturating_sub(used);
            tightest = Some(tightest.map_or(headroom, |t| t.min(headroom)));
        }
        current = dir.parent();
    }
    tightest
}

/// The host's thread limits: the pids hierarchies, found once.
#[derive(Debug, Default)]
pub struct ThreadLimits {
    hierarchies: Option<PidsHierarchies>,
}

impl ThreadLimits {
    /// How many more threads process `pid`, which has `threads`, may start; `None` when no
    /// limit can be read.
    pub fn headroom(&mut self, pid: Pid, threads: u64) -> Result<Option<u64>, ProcError> {
        let hierarchies = self
            .hierarchies
            .get_or_insert_with(PidsHierarchies::mounted);
        let mut limits = Vec::new();
        let cgroup = procfs::read_cgroups(pid)?;
        if let Some(dir) = hierarchies.cgroup_dir(&cgroup) {
            let root = match (&hierarchies.v1, &hierarchies.unified) {
                (Some((mount, _)), _) | (None, Some((mount, _))) => mount.as_path(),
                (None, None) => Path::new("/"),
            };
            limits.extend(pids_headroom(root, &dir));
        }
        if let (Ok(max), Ok(running)) = (procfs::read_threads_max(), procfs::read_host_threads()) {
            limits.push(max.saturating_sub(running));
        }
        if procfs::read_real_uid(pid)? != 0
            && let Some(limit) = procfs::read_process_limit(pid)?
        {
            limits.push(limit.saturating_sub(threads));
        }
        Ok(limits.into_iter().min())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 27 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
31 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
35 25 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
";

    const UNIFIED: &str = "\
30 23 0:26 /container /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
41 30 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_pids_hierarchies() {
        let hybrid = parse_mountinfo(HYBRID);
        assert_eq!(
            hybrid.v1,
            Some((PathBuf::from("/sys/fs/cgroup/pids"), "/".to_owned()))
        );
        assert_eq!(
            hybrid.unified,
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_owned()))
        );
        let cgroup = "9:name=systemd:/system.slice/x.service\n8:pids:/system.slice/x.service\n\
                      4:memory:/system.slice/x.service\n0::/system.slice/x.service\n";
        assert_eq!(
            hybrid.cgroup_dir(cgroup),
            Some(PathBuf::from("/sys/fs/cgroup/pids/system.slice/x.service"))
        );
        assert_eq!(
            hybrid.cgroup_dir("8:pids:/\n0::/\n"),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );

        let unified = parse_mountinfo(UNIFIED);
        assert_eq!(unified.v1, None);
        assert_eq!(
            unified.cgroup_dir("0::/container/app.scope\n"),
            Some(PathBuf::from("/sys/fs/cgroup/app.scope"))
        );
        assert_eq!(unified.cgroup_dir("1:name=systemd:/x\n"), None);
        assert_eq!(parse_mountinfo("garbage\n"), PidsHierarchies::default());
        assert_eq!(unescape("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape("/odd\\9"), "/odd\\9");
    }

    #[test]
    fn walks_up_the_pids_cgroups_for_the_tightest_limit() {
        let root = tempfile::tempdir().unwrap();
        let write = |dir: &str, max: &str, current: &str| {
            let dir = root.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("pids.max"), max).unwrap();
            std::fs::write(dir.join("pids.current"), current).unwrap();
        };
        write("a.slice", "1000\n", "900\n");
        write("a.slice/b.service", "max\n", "10\n");
        write("c.slice/d.service", "500\n", "20\n");
        let headroom = |dir: &str| pids_headroom(root.path(), &root.path().join(dir));
        assert_eq!(headroom("a.slice/b.service"), Some(100));
        assert_eq!(headroom("c.slice/d.service"), Some(480));
        assert_eq!(headroom("c.slice"), None);
        // Nothing above the hierarchy's root is read.
        assert_eq!(
            pids_headroom(&root.path().join("c.slice"), root.path()),
            None
        );
    }

    #[test]
    fn this_process_has_a_thread_limit() {
        let mut limits = ThreadLimits::default();
        let headroom = limits.headroom(std::process::id(), 1).unwrap();
        // kernel.threads-max is always there.
        assert!(headroom.is_some_and(|h| h > 0), "{headroom:?}");
        assert!(limits.headroom(u32::MAX, 1).is_err());
    }
}
