//! CPython frames: the layouts of the interpreter versions leakmon knows (a table row each:
//! adding a version is a row, not code), and the decoding of a frame the kernel programs
//! recorded (a code object address and an instruction index) into the function's qualified
//! name, file and line, read from the process's memory (`/proc/PID/mem`) while it runs.
//!
//! The offsets come from the versions' DWARF (gdb on Debian's python3.11-dbg and on the pyenv
//! builds), were checked on running interpreters by walking their frames from outside, and for
//! 3.13 equal the interpreter's own `_Py_DebugOffsets`. The line table is PEP 626's location
//! table (the same format in 3.11 to 3.13); its decoder agrees with CPython's `co_positions()`
//! on every instruction of the standard library.
//!
//! Uses the report's frame type and nothing else of the crate.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt as _;

use crate::report::{Frame, Language};

/// Where the fields leakmon reads are in one interpreter version (x86-64, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// (major, minor).
    pub version: (u8, u8),
    /// `_PyRuntimeState.interpreters.head`.
    pub runtime_interpreters_head: u32,
    /// `PyInterpreterState.threads.head`.
    pub interpreter_threads_head: u32,
    /// `PyThreadState.next`.
    pub thread_next: u32,
    /// `PyThreadState.native_thread_id`.
    pub thread_native_id: u32,
    /// `PyThreadState.cframe` (3.11, 3.12) or `.current_frame` (3.13).
    pub thread_frame: u32,
    /// `_PyCFrame.current_frame`, `None` when `thread_frame` is the frame itself.
    pub cframe_frame: Option<u32>,
    /// `_PyInterpreterFrame.f_code` (`f_executable` in 3.13).
    pub frame_code: u32,
    /// `_PyInterpreterFrame.previous`.
    pub frame_previous: u32,
    /// `_PyInterpreterFrame.prev_instr` (`instr_ptr` in 3.13).
    pub frame_instr: u32,
    /// The byte that ends an activation's run of frames: `is_entry` (3.11) or `owner`.
    pub frame_marker: u32,
    /// Its value there: 1 (`is_entry`) or 3 (`FRAME_OWNED_BY_CSTACK`).
    pub marker_value: u8,
    /// Whether the marked frame is a C-stack shim, not reported (3.12+), rather than the run's
    /// outermost Python frame (3.11).
    pub marker_is_shim: bool,
    /// `PyCodeObject.co_filename`, `co_qualname`, `co_linetable`, `co_firstlineno`.
    pub code_filename: u32,
    /// See `code_filename`.
    pub code_qualname: u32,
    /// See `code_filename`.
    pub code_linetable: u32,
    /// See `code_filename`.
    pub code_firstlineno: u32,
    /// `co_code_adaptive`: where the bytecode starts in a code object.
    pub code_adaptive: u32,
    /// Where a compact ASCII string's characters start (`sizeof(PyASCIIObject)`).
    pub ascii_data: u32,
    /// Where another compact string's characters start (`sizeof(PyCompactUnicodeObject)`).
    pub compact_data: u32,
}

/// The versions leakmon walks (verified on Debian's 3.11.2 and pyenv's 3.11.7, 3.12.1, 3.13.0).
pub const LAYOUTS: [Layout; 3] = [
    Layout {
        version: (3, 11),
        runtime_interpreters_head: 40,
        interpreter_threads_head: 16,
        thread_next: 8,
        thread_native_id: 160,
        thread_frame: 56,
        cframe_frame: Some(8),
        frame_code: 32,
        frame_previous: 48,
        frame_instr: 56,
        frame_marker: 68,
        marker_value: 1,
        marker_is_shim: false,
        code_filename: 112,
        code_qualname: 128,
        code_linetable: 136,
        code_firstlineno: 72,
        code_adaptive: 184,
        ascii_data: 48,
        compact_data: 72,
    },
    Layout {
        version: (3, 12),
        runtime_interpreters_head: 40,
        interpreter_threads_head: 72,
        thread_next: 8,
        thread_native_id: 144,
        thread_frame: 56,
        cframe_frame: Some(0),
        frame_code: 0,
        frame_previous: 8,
        frame_instr: 56,
        frame_marker: 70,
        marker_value: 3,
        marker_is_shim: true,
        code_filename: 112,
        code_qualname: 128,
        code_linetable: 136,
        code_firstlineno: 68,
        code_adaptive: 192,
        ascii_data: 40,
        compact_data: 56,
    },
    Layout {
        version: (3, 13),
        runtime_interpreters_head: 632,
        interpreter_threads_head: 7344,
        thread_next: 8,
        thread_native_id: 160,
        thread_frame: 72,
        cframe_frame: None,
        frame_code: 0,
        frame_previous: 8,
        frame_instr: 56,
        frame_marker: 70,
        marker_value: 3,
        marker_is_shim: true,
        code_filename: 112,
        code_qualname: 128,
        code_linetable: 136,
        code_firstlineno: 68,
        code_adaptive: 200,
        ascii_data: 40,
        compact_data: 56,
    },
];

/// The layout of CPython `major.minor`, if leakmon knows it.
pub fn layout(major: u8, minor: u8) -> Option<&'static Layout> {
    LAYOUTS
        .iter()
        .find(|layout| layout.version == (major, minor))
}

/// What a code object says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Code {
    qualname: String,
    filename: String,
    firstlineno: i32,
    linetable: Vec<u8>,
}

/// The Python frames of one process: its memory, its layout, and the code objects read so far.
#[derive(Debug)]
pub struct PythonFrames {
    memory: File,
    layout: &'static Layout,
    codes: HashMap<u64, Option<Code>>,
}

/// Longest string or line table read from a code object.
const MAX_READ: usize = 64 * 1024;

impl PythonFrames {
    /// Opens the memory of `pid`, whose interpreter has `layout`.
    pub fn open(pid: u32, layout: &'static Layout) -> std::io::Result<Self> {
        Ok(Self {
            memory: File::open(format!("/proc/{pid}/mem"))?,
            layout,
            codes: HashMap::new(),
        })
    }

    /// Reads the code object at `code` unless it was read before; done while the process runs,
    /// so that its frames can be decoded after it exits.
    pub fn learn(&mut self, code: u64) {
        if !self.codes.contains_key(&code) {
            let read = self.read_code(code);
            self.codes.insert(code, read);
        }
    }

    /// The frame of code object `code` at instruction `lasti`.
    pub fn frame(&mut self, code: u64, lasti: u64) -> Frame {
        self.learn(code);
        let mut frame = Frame {
            address: code,
            language: Language::Python,
            ..Frame::default()
        };
        if let Some(Some(info)) = self.codes.get(&code) {
            frame.symbol = Some(info.qualname.clone());
            frame.file = Some(info.filename.clone());
            frame.line = line(&info.linetable, info.firstlineno, lasti)
                .and_then(|line| u32::try_from(line).ok());
        }
        frame
    }

    fn read_code(&self, code: u64) -> Option<Code> {
        let layout = self.layout;
        let field = |offset: u32| self.read_u64(code.checked_add(u64::from(offset))?);
        let qualname = self.read_string(field(layout.code_qualname)?)?;
        let filename = self.read_string(field(layout.code_filename)?)?;
        let firstlineno = self.read_u64(code + u64::from(layout.code_firstlineno))? as u32 as i32;
        let linetable = self.read_bytes_object(field(layout.code_linetable)?)?;
        Some(Code {
            qualname,
            filename,
            firstlineno,
            linetable,
        })
    }

    fn read(&self, address: u64, len: usize) -> Option<Vec<u8>> {
        let mut buffer = vec![0; len];
        self.memory.read_exact_at(&mut buffer, address).ok()?;
        Some(buffer)
    }

    fn read_u64(&self, address: u64) -> Option<u64> {
        let bytes = self.read(address, 8)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// A `str` object's text (compact strings: every name and file name is one).
    fn read_string(&self, object: u64) -> Option<String> {
        let length = usize::try_from(self.read_u64(object + 16)?).ok()?;
        let state = self.read_u64(object + 32)? as u32;
        let kind = (state >> 2) & 7;
        let compact = state & (1 << 5) != 0;
        let ascii = state & (1 << 6) != 0;
        if !compact || length > MAX_READ {
            return None;
        }
        if ascii {
            let bytes = self.read(object + u64::from(self.layout.ascii_data), length)?;
            return String::from_utf8(bytes).ok();
        }
        let data = object + u64::from(self.layout.compact_data);
        let width = match kind {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return None,
        };
        let bytes = self.read(data, length * width)?;
        Some(
            bytes
                .chunks(width)
                .filter_map(|unit| {
                    let mut value = [0u8; 4];
                    value[..width].copy_from_slice(unit);
                    char::from_u32(u32::from_le_bytes(value))
                })
                .collect(),
        )
    }

    /// A `bytes` object's contents.
    fn read_bytes_object(&self, object: u64) -> Option<Vec<u8>> {
        let size = usize::try_from(self.read_u64(object + 16)?).ok()?;
        if size > MAX_READ {
            return None;
        }
        self.read(object + 32, size)
    }
}

/// The line of instruction `lasti` (in 2-byte code units) of a code object whose location table
/// is `table` and whose first line is `firstlineno`; `None` for an instruction without a line.
///
/// Each entry starts with a byte `1 CCCC LLL`: code C, covering L + 1 code units; later bytes of
/// the entry have bit 7 clear. Codes 0-9 keep the line (short forms), 10-12 add C - 10, 13 and 14
/// add a signed varint, 15 is "no location" for that entry alone (the running line stays).
pub fn line(table: &[u8], firstlineno: i32, lasti: u64) -> Option<i32> {
    let lasti = i64::try_from(lasti).ok()?;
    let mut line = firstlineno;
    let mut address = 0i64;
    let mut index = 0;
    while index < table.len() {
        let first = table[index];
        index += 1;
        let code = (first >> 3) & 15;
        let len = i64::from(first & 7) + 1;
        match code {
            13 | 14 => line += signed_varint(table, &mut index)?,
            10..=12 => line += i32::from(code) - 10,
            _ => {}
        }
        while index < table.len() && table[index] & 0x80 == 0 {
            index += 1;
        }
        if lasti < address + len {
            return (code != 15).then_some(line);
        }
        address += len;
    }
    None
}

/// A varint of 6-bit chunks, least significant first, 0x40 meaning "more follow", as a
/// signed number (`value >> 1`, negated when `value & 1`).
fn signed_varint(table: &[u8], index: &mut usize) -> Option<i32> {
    let mut value: u32 = 0;
    let mut shift = 0;
    loop {
        let byte = *table.get(*index)?;
        *index += 1;
        value |= u32::from(byte & 63) << shift;
        if byte & 64 == 0 {
            break;
        }
        shift += 6;
        if shift > 30 {
            return None;
        }
    }
    let magnitude = (value >> 1) as i32;
    Some(if value & 1 != 0 {
        -magnitude
    } else {
        magnitude
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoder against CPython itself: every code object of a few standard-library modules,
    /// compiled by the `python3` on this machine, its location table and the line of each of its
    /// instructions as the interpreter's own `co_positions()` gives it.
    #[test]
    fn location_tables_decode_as_the_interpreter_does() {
        let script = r#"
import json, types, dis, argparse, email.message, tarfile, typing, inspect
out = []
def walk(code):
    lines = [p[0] for p in code.co_positions()]
    out.append([code.co_linetable.hex(), code.co_firstlineno, lines])
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            walk(c)
for module in (dis, argparse, email.message, tarfile, typing, inspect):
    walk(compile(open(module.__file__).read(), module.__file__, "exec"))
print(json.dumps(out))
"#;
        let output = std::process::Command::new("python3")
            .args(["-c", script])
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let codes: Vec<(String, i32, Vec<Option<i32>>)> =
            serde_json::from_slice(&output.stdout).expect("the script's JSON");
        assert!(codes.len() > 300, "only {} code objects", codes.len());
        let mut checked = 0;
        for (hex, firstlineno, lines) in codes {
            let table: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            for (lasti, expected) in lines.iter().enumerate() {
                assert_eq!(
                    line(&table, firstlineno, lasti as u64),
                    *expected,
                    "code unit {lasti} of a code object with table {hex}"
                );
                checked += 1;
            }
        }
        assert!(checked > 50_000, "only {checked} instructions checked");
    }

    #[test]
    fn no_location_keeps_the_running_line() {
        // code 13 (+2 lines via svarint 4), len 1; code 15 (no location), len 1; code 0, len 1.
        let table = [0x80 | 13 << 3, 4, 0x80 | 15 << 3, 0x80];
        assert_eq!(line(&table, 10, 0), Some(12));
        assert_eq!(line(&table, 10, 1), None);
        assert_eq!(
            line(&table, 10, 2),
            Some(12),
            "no-location entries keep the line"
        );
    }

    #[test]
    fn signed_varints() {
        let mut index = 0;
        assert_eq!(signed_varint(&[5], &mut index), Some(-2));
        let mut index = 0;
        // 0x41 = 1 | more; 0x01 = 1 << 6: value 65, i.e. -32.
        assert_eq!(signed_varint(&[0x41, 0x01], &mut index), Some(-32));
        assert_eq!(index, 2);
    }

    #[test]
    fn every_layout_version_is_unique() {
        for row in &LAYOUTS {
            assert_eq!(
                layout(row.version.0, row.version.1).map(|found| found.version),
                Some(row.version)
            );
        }
        assert!(layout(3, 10).is_none());
    }
}
