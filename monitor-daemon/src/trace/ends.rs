//! How processes end, from the kernel programs' `End` events: the OOM killer's victims
//! (`oom:mark_victim`), deaths by signal and the exit codes of traced processes.
//!
//! The programs read two fields of the kernel's `struct task_struct` (`tgid`, `exit_code`) at
//! offsets found here in the kernel's BTF (`/sys/kernel/btf/vmlinux`), through a small reader
//! of the BTF format (types and strings; the offsets of a struct's members, anonymous members
//! included), since aya does not expose member offsets. The tracer sets them before loading.
//!
//! It may use `monitor_common` and std, nothing else of the crate.

use std::path::Path;

use monitor_common::{END_OOM_VICTIM, Event, EventKind};
use thiserror::Error;

/// Where the kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why a field's offset could not be found.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The data is not BTF, or is cut short.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No struct of that name has a member of that name.
    #[error("no member {member} in struct {name}")]
    NoMember {
        /// The struct.
        name: String,
        /// The member.
        member: String,
    },
}

/// BTF kinds this reader needs to tell apart.
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

/// One type of a BTF blob: its kind, name, the type it refers to and, for a struct or union,
/// its members as (name offset, type, bit offset).
#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: u32,
    referred: u32,
    members: Vec<(u32, u32, u32)>,
}

/// The types and strings of a BTF blob.
#[derive(Debug)]
pub struct Btf {
    /// Types by id (id 0 is `void`).
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("cut short"))
}

impl Btf {
    /// Reads and parses the BTF at `path`.
    pub fn read(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|err| BtfError::Read {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        Self::parse(&data)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic"));
        }
        let header_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            data.get(header_len + off..header_len + off + len)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let types_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?.to_vec();
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            referred: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < types_data.len() {
            let name = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let referred = u32_at(types_data, at + 8)?;
            at += 12;
            let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31);
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen as usize {
                        let member = at + 12 * i;
                        let offset = u32_at(types_data, member + 8)?;
                        let bits = if kind_flag == 1 {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        members.push((
                            u32_at(types_data, member)?,
                            u32_at(types_data, member + 4)?,
                            bits,
                        ));
                    }
                    12 * vlen as usize
                }
                6 | 13 => 8 * vlen as usize,
                15 | 19 => 12 * vlen as usize,
                2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown kind")),
            };
            at += extra;
            types.push(Type {
                kind,
                name,
                referred,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, offset: u32) -> &[u8] {
        let rest = self.strings.get(offset as usize..).unwrap_or(&[]);
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// The type `id` with typedefs and qualifiers looked through.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.referred;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    /// The byte offset of `member` in the struct `name`, looking into anonymous struct and
    /// union members.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u64, BtfError> {
        let missing = || BtfError::NoMember {
            name: name.to_owned(),
            member: member.to_owned(),
        };
        let owner = self
            .types
            .iter()
            .find(|ty| ty.kind == KIND_STRUCT && self.name(ty.name) == name.as_bytes())
            .ok_or_else(missing)?;
        self.find_member(owner, member.as_bytes(), 0)
            .map(|bits| bits / 8)
            .ok_or_else(missing)
    }

    fn find_member(&self, owner: &Type, member: &[u8], depth: u32) -> Option<u64> {
        if depth > 8 {
            return None;
        }
        for &(name, ty, bits) in &owner.members {
            let bits = u64::from(bits);
            if self.name(name) == member {
                return Some(bits);
            }
            if name == 0
                && let Some(inner) = self.resolve(ty)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(found) = self.find_member(inner, member, depth + 1)
            {
                return Some(bits + found);
            }
        }
        None
    }
}

/// The offsets of `task_struct.tgid` and `task_struct.exit_code` in the running kernel.
pub fn task_offsets() -> Result<(u64, u64), BtfError> {
    let btf = Btf::read(Path::new(VMLINUX_BTF))?;
    Ok((
        btf.member_offset("task_struct", "tgid")?,
        btf.member_offset("task_struct", "exit_code")?,
    ))
}

/// How a process ended, as the kernel told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    /// The process.
    pub pid: u32,
    /// The OOM killer chose it.
    pub oom_victim: bool,
    /// The signal that killed it, if one did.
    pub signal: Option<u32>,
    /// Its exit status, if it exited.
    pub exit_code: Option<u32>,
}

impl Ended {
    /// Decodes an `End` event; `None` for any other.
    pub fn from_event(event: &Event) -> Option<Self> {
        if EventKind::from_raw(event.kind) != Some(EventKind::End) {
            return None;
        }
        let code = event.flags as u32;
        let signal = code & 0x7f;
        Some(Self {
            pid: event.tgid,
            oom_victim: event.addr == END_OOM_VICTIM,
            signal: (signal != 0).then_some(signal),
            exit_code: (signal == 0).then_some((code >> 8) & 0xff),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob: `struct inner { int a; int b; }` and `struct task_struct { long x; union {
    /// int y; struct inner; }; int exit_code; }` with `int` and a typedef.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0task_struct\0x\0y\0exit_code\0pid_t\0".to_vec();
        let off = |s: &str| {
            let needle = format!("\0{s}\0");
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&[off("int"), 1 << 24, 4, 32]);
        // 2: typedef pid_t -> int
        push(&[off("pid_t"), KIND_TYPEDEF << 24, 1]);
        // 3: struct inner { pid_t a; int b; }
        push(&[off("inner"), KIND_STRUCT << 24 | 2, 8]);
        push(&[off("a"), 2, 0, off("b"), 1, 32]);
        // 4: anonymous union { int y; struct inner; }
        push(&[0, KIND_UNION << 24 | 2, 8]);
        push(&[off("y"), 1, 0, 0, 3, 0]);
        // 5: struct task_struct { long x; union; int exit_code; } with kind_flag set
        push(&[off("task_struct"), 1 << 31 | KIND_STRUCT << 24 | 3, 24]);
        push(&[off("x"), 1, 0, 0, 4, 64, off("exit_code"), 1, 128]);
        let mut data = vec![0x9f, 0xeb, 1, 0];
        for word in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            data.extend_from_slice(&word.to_le_bytes());
        }
        data.extend_from_slice(&types);
        data.extend_from_slice(&strings);
        data
    }

    #[test]
    fn finds_member_offsets_through_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("task_struct", "x"), Ok(0));
        assert_eq!(btf.member_offset("task_struct", "y"), Ok(8));
        assert_eq!(btf.member_offset("task_struct", "b"), Ok(12));
        assert_eq!(btf.member_offset("task_struct", "exit_code"), Ok(16));
        assert_eq!(btf.member_offset("inner", "b"), Ok(4));
        assert!(matches!(
            btf.member_offset("task_struct", "nothing"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(btf.member_offset("nothing", "x").is_err());
        assert_eq!(
            Btf::parse(b"not btf").unwrap_err(),
            BtfError::Malformed("bad magic")
        );
        let mut cut = blob();
        cut.truncate(40);
        assert!(Btf::parse(&cut).is_err());
    }

    #[test]
    fn reads_the_running_kernels_task_struct() {
        let (tgid, exit_code) = task_offsets().expect("the kernel has BTF");
        assert!(tgid > 0 && exit_code > 0 && tgid != exit_code);
    }

    #[test]
    fn decodes_end_events() {
        let event = |addr, flags| Event {
            kind: EventKind::End as u32,
            tgid: 42,
            addr,
            flags,
            ..Event::default()
        };
        assert_eq!(
            Ended::from_event(&event(END_OOM_VICTIM, 9)),
            Some(Ended {
                pid: 42,
                oom_victim: true,
                signal: Some(9),
                exit_code: None,
            })
        );
        assert_eq!(
            Ended::from_event(&event(0, 3 << 8)),
            Some(Ended {
                pid: 42,
                oom_victim: false,
                signal: None,
                exit_code: Some(3),
            })
        );
        // A core dump sets bit 7: the signal is still the low 7 bits.
        assert_eq!(
            Ended::from_event(&event(0, 0x80 | 11)).unwrap().signal,
            Some(11)
        );
        let exit = Event {
            kind: EventKind::Exit as u32,
            ..event(0, 0)
        };
        assert_eq!(Ended::from_event(&exit), None);
    }
}
