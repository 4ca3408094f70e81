//! Finding the CPython interpreter in a traced process: the object (the executable, or an
//! embedded `libpython3.X.so`) that defines `_PyRuntime`, its version (`Py_Version`, or the
//! object's name for versions before 3.11), and where its runtime state and its interpreter loop
//! (`_PyEval_EvalFrameDefault`) are in the process, which the kernel programs need to walk its
//! Python frames (see `monitor_common::PythonProcess`).
//!
//! Uses procfs and the layouts of `symbolize::python`; knows nothing of the kernel maps.

use std::path::Path;

use monitor_common::{NO_CFRAME, PythonProcess};
use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};

use crate::symbolize::python::{Layout, layout};
use crate::watch::procfs::MapEntry;

/// What a process's interpreter is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interpreter {
    /// A CPython whose layout leakmon knows.
    Known {
        /// Its layout.
        layout: &'static Layout,
        /// What the kernel programs need.
        process: PythonProcess,
        /// The object that holds it.
        object: String,
    },
    /// A CPython leakmon has no layout for: its stacks show native frames only.
    Unknown {
        /// (major, minor), when found.
        version: Option<(u8, u8)>,
        /// The object that holds it.
        object: String,
    },
}

impl Interpreter {
    /// The one line a report says of an interpreter leakmon cannot walk.
    pub fn note(&self) -> Option<String> {
        match self {
            Self::Known { .. } => None,
            Self::Unknown { version, object } => Some(format!(
                "CPython {} ({object}) is not among the interpreter versions leakmon knows \
                 (3.11-3.13): its stacks show native frames only",
                version.map_or(
                    "of an unknown version".to_owned(),
                    |(major, minor)| format!("{major}.{minor}")
                )
            )),
        }
    }
}

/// The CPython interpreter of `pid`, whose `/proc/PID/maps` is `maps`, if it runs one.
pub fn detect(pid: u32, maps: &[MapEntry]) -> Option<Interpreter> {
    let mut seen = Vec::new();
    for entry in maps
        .iter()
        .filter(|entry| entry.executable && entry.is_file())
    {
        let key = (entry.dev_major, entry.dev_minor, entry.inode);
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let path = entry.path.clone().unwrap_or_default();
        let file = format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end);
        let Ok(data) = std::fs::File::open(&file).and_then(|file| {
            // SAFETY: a read-only private mapping of a file no one should be writing.
            unsafe { memmap2::Mmap::map(&file) }
        }) else {
            continue;
        };
        let Ok(elf) = object::File::parse(&*data) else {
            continue;
        };
        // Defined here, not only referenced (extension modules reference `_PyRuntime`).
        let symbol = |name: &str| {
            elf.dynamic_symbols()
                .find(|symbol| symbol.is_definition() && symbol.name() == Ok(name))
                .map(|symbol| (symbol.address(), symbol.size()))
        };
        let Some((runtime, _)) = symbol("_PyRuntime") else {
            continue;
        };
        let bias = load_bias(&elf, entry.start, entry.offset);
        let version = symbol("Py_Version")
            .and_then(|(address, _)| read_u32(pid, address.wrapping_add(bias)))
            .map(|version| ((version >> 24) as u8, (version >> 16) as u8))
            .or_else(|| version_from_name(&path));
        let known = version.and_then(|(major, minor)| layout(major, minor));
        let eval = symbol("_PyEval_EvalFrameDefault");
        return Some(match (known, eval) {
            (Some(layout), Some((eval, size))) if size > 0 => Interpreter::Known {
                layout,
                process: kernel_view(
                    layout,
                    runtime.wrapping_add(bias),
                    eval.wrapping_add(bias),
                    size,
                ),
                object: path,
            },
            _ => Interpreter::Unknown {
                version,
                object: path,
            },
        });
    }
    None
}

/// What the kernel programs need of an interpreter with `layout` whose `_PyRuntime` and loop are
/// at `runtime` and `eval` (`size` bytes) in the process.
fn kernel_view(layout: &Layout, runtime: u64, eval: u64, size: u64) -> PythonProcess {
    PythonProcess {
        interpreters_head: runtime + u64::from(layout.runtime_interpreters_head),
        eval_start: eval,
        eval_end: eval + size,
        threads_head: layout.interpreter_threads_head,
        thread_next: layout.thread_next,
        thread_native_id: layout.thread_native_id,
        thread_frame: layout.thread_frame,
        cframe_frame: layout.cframe_frame.unwrap_or(NO_CFRAME),
        frame_code: layout.frame_code,
        frame_previous: layout.frame_previous,
        frame_instr: layout.frame_instr,
        frame_marker: layout.frame_marker,
        marker_value: u32::from(layout.marker_value),
        marker_is_shim: u32::from(layout.marker_is_shim),
        code_adaptive: layout.code_adaptive,
    }
}

/// What to add to an address of the object to get its address in the process, from one of its
/// mappings (at `start`, from file offset `offset`).
fn load_bias(elf: &object::File<'_>, start: u64, offset: u64) -> u64 {
    let page = |value: u64| value & !0xfff;
    elf.segments()
        .find(|segment| {
            let (file_offset, file_size) = segment.file_range();
            page(file_offset) <= offset && offset < file_offset + file_size.max(1)
        })
        .map_or(start.wrapping_sub(offset), |segment| {
            let (file_offset, _) = segment.file_range();
            start.wrapping_sub(
                segment
                    .address()
                    .wrapping_add(offset)
                    .wrapping_sub(file_offset),
            )
        })
}

/// `pythonX.Y` or `libpythonX.Y.so...` in a file name.
fn version_from_name(path: &str) -> Option<(u8, u8)> {
    let name = Path::new(path).file_name()?.to_str()?;
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn read_u32(pid: u32, address: u64) -> Option<u32> {
    use std::os::unix::fs::FileExt as _;
    let memory = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = [0; 4];
    memory.read_exact_at(&mut bytes, address).ok()?;
    Some(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(
            version_from_name("/opt/lib/libpython3.10.so.1.0"),
            Some((3, 10))
        );
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/lib/libc.so.6"), None);
    }

    #[test]
    fn an_unknown_version_says_so_in_one_line() {
        let unknown = Interpreter::Unknown {
            version: Some((3, 10)),
            object: "/usr/bin/python3.10".to_owned(),
        };
        let note = unknown.note().expect("a note");
        assert!(note.contains("CPython 3.10") && note.contains("native frames only"));
        assert!(!note.contains('\n'));
    }
}
