//! The kernel's tracing file system (tracefs), where the ids of the memory-mapping system-call
//! tracepoints are read: finding it wherever it is mounted, mounting it at `/sys/kernel/tracing`
//! when it is nowhere, and attaching a loaded tracepoint program to an event by its id through
//! `perf_event_open` (aya's own attach looks only at two fixed paths).
//!
//! Uses only the C library; knows nothing of the programs it attaches.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

/// Where leakmon mounts tracefs when it is mounted nowhere (where the kernel documents it).
pub const DEFAULT_MOUNT_POINT: &str = "/sys/kernel/tracing";

/// Why no tracefs could be had, or an event not attached.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is mounted nowhere and mounting it failed.
    #[error(
        "tracefs is not mounted and mounting it at {DEFAULT_MOUNT_POINT} failed: {source}; mount \
         it before starting leakmon (`mount -t tracefs nodev {DEFAULT_MOUNT_POINT}`; in a \
         container, bind-mount the host's {DEFAULT_MOUNT_POINT})"
    )]
    Mount {
        /// What mount(2) said.
        source: std::io::Error,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading /proc/self/mountinfo: {0}")]
    Mountinfo(std::io::Error),
    /// The event's id could not be read.
    #[error("reading the id of tracepoint {event} from {path}: {source}")]
    EventId {
        /// `category:name`.
        event: String,
        /// The id file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `perf_event_open` or an ioctl on the event failed.
    #[error("attaching to tracepoint {event}: {call} failed: {source}")]
    Attach {
        /// `category:name`.
        event: String,
        /// The system call.
        call: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// A tracefs mount usable for event ids: found, or mounted by leakmon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracefs {
    /// Its mount point.
    pub path: PathBuf,
    /// Whether leakmon mounted it (the mount stays, as `mount -t tracefs` would leave it).
    pub mounted_by_us: bool,
}

/// Finds tracefs in this process's mount namespace, or mounts it at [`DEFAULT_MOUNT_POINT`].
pub fn find_or_mount() -> Result<Tracefs, TracefsError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(TracefsError::Mountinfo)?;
    if let Some(path) = candidates(&mountinfo)
        .into_iter()
        .find(|path| path.join("events").is_dir())
    {
        return Ok(Tracefs {
            path,
            mounted_by_us: false,
        });
    }
    mount(Path::new(DEFAULT_MOUNT_POINT)).map_err(|source| TracefsError::Mount { source })?;
    // A warning, so that `leakmon trace` (which logs warnings only) says it too: leakmon
    // changed the host's mounts.
    log::warn!("tracefs was not mounted: leakmon mounted it at {DEFAULT_MOUNT_POINT}");
    Ok(Tracefs {
        path: PathBuf::from(DEFAULT_MOUNT_POINT),
        mounted_by_us: true,
    })
}

/// The directories that may hold tracefs's `events/`, best first: every tracefs mount point
/// (the documented one first), then `tracing/` under every debugfs mount (where the kernel
/// mounts tracefs automatically on first access).
fn candidates(mountinfo: &str) -> Vec<PathBuf> {
    let mut tracefs = Vec::new();
    let mut debugfs = Vec::new();
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point options [optional...] - fstype source options
        let mut fields = line.split(' ');
        let Some(mount_point) = fields.nth(4) else {
            continue;
        };
        let Some(fs_type) = fields.skip_while(|&field| field != "-").nth(1) else {
            continue;
        };
        let mount_point = PathBuf::from(unescape(mount_point));
        match fs_type {
            "tracefs" => tracefs.push(mount_point),
            "debugfs" => debugfs.push(mount_point.join("tracing")),
            _ => {}
        }
    }
    tracefs.sort_by_key(|path| path != Path::new(DEFAULT_MOUNT_POINT));
    tracefs.extend(debugfs);
    tracefs
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[index], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                index += 4;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount(at: &Path) -> std::io::Result<()> {
    let target = CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let result = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (the kernel zero-extends it).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

const PERF_TYPE_TRACEPOINT: u32 = 2;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
/// `_IOW('$', 8, __u32)`.
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;

impl Tracefs {
    /// The id of tracepoint `category:name`.
    pub fn event_id(&self, category: &str, name: &str) -> Result<u64, TracefsError> {
        let path = self
            .path
            .join("events")
            .join(category)
            .join(name)
            .join("id");
        std::fs::read_to_string(&path)
            .and_then(|text| {
                text.trim()
                    .parse::<u64>()
                    .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
            })
            .map_err(|source| TracefsError::EventId {
                event: format!("{category}:{name}"),
                path,
                source,
            })
    }
}

/// Attaches the loaded tracepoint program `program` to the tracepoint of id `id` (named `event`
/// in errors); the program stays attached while the returned descriptor is open.
pub fn attach(id: u64, event: &str, program: BorrowedFd<'_>) -> Result<OwnedFd, TracefsError> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_TRACEPOINT,
        size: size_of::<PerfEventAttr>() as u32,
        config: id,
        sample_period: 1,
        sample_type: PERF_SAMPLE_RAW,
        wakeup_events: 1,
        ..PerfEventAttr::default()
    };
    let failed = |call, source| TracefsError::Attach {
        event: event.to_owned(),
        call,
        source,
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it states; pid -1 with cpu 0 is a
    // system-wide event (a tracepoint's program runs on every CPU).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &raw const attr,
            -1,
            0,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(failed("perf_event_open", std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    let event_fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: ioctls on the descriptor we own, with the argument types the kernel expects.
    if unsafe {
        libc::ioctl(
            event_fd.as_raw_fd(),
            PERF_EVENT_IOC_SET_BPF,
            program.as_raw_fd(),
        )
    } != 0
    {
        return Err(failed(
            "PERF_EVENT_IOC_SET_BPF",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(event_fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE, 0) } != 0 {
        return Err(failed(
            "PERF_EVENT_IOC_ENABLE",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(event_fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_put_the_documented_tracefs_first_then_debugfs() {
        let mountinfo = "\
22 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
40 22 0:13 / /mnt/my\\040trace rw,relatime - tracefs nodev rw
41 22 0:7 / /sys/kernel/debug rw,relatime shared:12 - debugfs debugfs rw
42 22 0:13 / /sys/kernel/tracing rw,relatime shared:13 - tracefs tracefs rw
";
        assert_eq!(
            candidates(mountinfo),
            [
                PathBuf::from("/sys/kernel/tracing"),
                PathBuf::from("/mnt/my trace"),
                PathBuf::from("/sys/kernel/debug/tracing"),
            ]
        );
        assert!(candidates("22 1 0:21 / /sys rw - sysfs sysfs rw\nbroken line\n").is_empty());
    }

    #[test]
    fn unescape_decodes_octal_escapes_only() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/plain\\x"), "/plain\\x");
        assert_eq!(unescape("\\04"), "\\04");
    }
}
