//! Compiles an ELF object's call-frame information (`.eh_frame`, and `.debug_frame` for code it
//! does not cover) into the sorted [`UnwindRow`]s the kernel programs' stack walk follows.
//!
//! Every row gives, from its address to the next row's, the caller's frame as a CFA of
//! `rsp + k` or `rbp + k` and where rbp was saved ([`UnwindRule`]); that covers all but a few
//! hundredths of a percent of the call sites of real libraries and programs (glibc, libstdc++,
//! jemalloc, redis). What it does not cover becomes [`UnwindRule::Invalid`], where a walk stops:
//! a return address not at `CFA - 8` (longjmp, vfork), a CFA computed by an expression (PLT
//! stubs, stack-realigning hand-written assembly), a signal trampoline. Code between functions
//! that no FDE covers gets an `Invalid` row too. An object with no call-frame information at
//! all (some Go binaries, stripped of `.debug_frame`) gets one frame-pointer row over its code.
//!
//! Uses gimli and object only; knows nothing of processes or maps.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, UnwindTableRow, X86_64,
};
use monitor_common::{UnwindRow, UnwindRule};
use object::{Object as _, ObjectSection as _, ObjectSegment as _, SegmentFlags};

/// The rule of frame-pointer code: the caller's rbp at the CFA - 16, the CFA at rbp + 16.
pub const FRAME_POINTER_RULE: UnwindRule = UnwindRule::Rbp {
    cfa_offset: 16,
    rbp_slot: 2,
};

/// Why an object's rows could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    /// Not an ELF object the `object` crate reads.
    #[error("not a readable ELF object: {0}")]
    Parse(#[from] object::Error),
    /// Not x86-64 code.
    #[error("not x86-64 code ({0:?})")]
    Architecture(object::Architecture),
    /// Addresses past 4 GiB, which the rows' 32-bit addresses cannot hold.
    #[error("code at {0:#x}, past the 4 GiB the unwind rows address")]
    TooLarge(u64),
}

/// Where an object's rows came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `.eh_frame` (and possibly `.debug_frame`).
    CallFrameInformation,
    /// No call-frame information: one frame-pointer row.
    FramePointers,
    /// No executable code.
    NoCode,
}

/// An object's unwind rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows {
    /// Sorted by address, consecutive rows with equal rules merged.
    pub rows: Vec<UnwindRow>,
    /// Where they came from.
    pub source: Source,
    /// Rows of the call-frame information the kernel programs cannot follow (now `Invalid`).
    pub unsupported: usize,
}

/// One row before merging: `[start, end)` and its rule.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    rule: UnwindRule,
}

/// Builds the rows of the ELF object in `data`.
pub fn build(data: &[u8]) -> Result<Rows, RowsError> {
    let file = object::File::parse(data)?;
    if file.architecture() != object::Architecture::X86_64 {
        return Err(RowsError::Architecture(file.architecture()));
    }
    let mut unsupported = 0;
    let mut spans = Vec::new();
    if let Some(section) = file.section_by_name(".eh_frame")
        && let Ok(bytes) = section.uncompressed_data()
    {
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let eh_frame = EhFrame::new(&bytes, LittleEndian);
        collect(&eh_frame, &bases, &mut spans, &mut unsupported);
    }
    if let Some(section) = file.section_by_name(".debug_frame")
        && let Ok(bytes) = section.uncompressed_data()
    {
        let mut debug_spans = Vec::new();
        let mut debug_unsupported = 0;
        let debug_frame = DebugFrame::new(&bytes, LittleEndian);
        collect(
            &debug_frame,
            &BaseAddresses::default(),
            &mut debug_spans,
            &mut debug_unsupported,
        );
        // `.eh_frame` wins where both describe the code.
        spans.sort_by_key(|span| span.start);
        let covered = |span: &Span| {
            let index = spans.partition_point(|eh| eh.end <= span.start);
            spans.get(index).is_some_and(|eh| eh.start < span.end)
        };
        let extra: Vec<Span> = debug_spans.into_iter().filter(|s| !covered(s)).collect();
        unsupported += extra
            .iter()
            .filter(|span| span.rule == UnwindRule::Invalid)
            .count();
        spans.extend(extra);
    }
    let code = executable_range(&file);
    let source = if !spans.is_empty() {
        Source::CallFrameInformation
    } else if let Some((start, end)) = code {
        spans.push(Span {
            start,
            end,
            rule: FRAME_POINTER_RULE,
        });
        Source::FramePointers
    } else {
        Source::NoCode
    };
    spans.sort_by_key(|span| span.start);
    Ok(Rows {
        rows: merge(&spans)?,
        source,
        unsupported,
    })
}

/// The lowest and highest addresses of the object's executable segments.
fn executable_range(file: &object::File<'_>) -> Option<(u64, u64)> {
    file.segments()
        .filter(|segment| {
            matches!(segment.flags(), SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0)
        })
        .map(|segment| (segment.address(), segment.address() + segment.size()))
        .reduce(|(start, end), (s, e)| (start.min(s), end.max(e)))
}

/// Appends the rows of every FDE of `section`, counting those the kernel cannot follow.
fn collect<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    spans: &mut Vec<Span>,
    unsupported: &mut usize,
) where
    S: UnwindSection<EndianSlice<'data, LittleEndian>>,
{
    let mut context = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    // A malformed entry ends the section: what came before it is still good.
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        if fde.len() == 0 {
            continue;
        }
        let signal = fde.is_signal_trampoline();
        let Ok(mut table) = fde.rows(section, bases, &mut context) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            if row.end_address() <= row.start_address() {
                continue;
            }
            let rule = if signal {
                UnwindRule::Invalid
            } else {
                classify(row)
            };
            if rule == UnwindRule::Invalid {
                *unsupported += 1;
            }
            spans.push(Span {
                start: row.start_address(),
                end: row.end_address(),
                rule,
            });
        }
    }
}

/// The rule of one CFI row, or `Invalid` when the kernel programs cannot follow it.
fn classify(row: &UnwindTableRow<usize>) -> UnwindRule {
    match row.register(X86_64::RA) {
        Some(RegisterRule::Offset(-8)) => {}
        Some(RegisterRule::Undefined) => return UnwindRule::Stop,
        _ => return UnwindRule::Invalid,
    }
    let rbp_slot = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::Undefined | RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(offset)) if offset < 0 && offset % 8 == 0 => {
            match u8::try_from(-offset / 8) {
                Ok(slot) => slot,
                Err(_) => return UnwindRule::Invalid,
            }
        }
        _ => return UnwindRule::Invalid,
    };
    let CfaRule::RegisterAndOffset { register, offset } = row.cfa() else {
        return UnwindRule::Invalid;
    };
    let Ok(cfa_offset) = u32::try_from(*offset) else {
        return UnwindRule::Invalid;
    };
    let rule = if *register == X86_64::RSP {
        UnwindRule::Rsp {
            cfa_offset,
            rbp_slot,
        }
    } else if *register == X86_64::RBP {
        UnwindRule::Rbp {
            cfa_offset,
            rbp_slot,
        }
    } else {
        return UnwindRule::Invalid;
    };
    match rule.pack() {
        Some(_) => rule,
        None => UnwindRule::Invalid,
    }
}

/// Sorted spans to rows: a gap between spans gets an `Invalid` row, and a row equal to the one
/// before it is dropped.
fn merge(spans: &[Span]) -> Result<Vec<UnwindRow>, RowsError> {
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(spans.len());
    let mut push = |address: u64, rule: UnwindRule| -> Result<(), RowsError> {
        let addr = u32::try_from(address).map_err(|_| RowsError::TooLarge(address))?;
        let packed = rule.pack().unwrap_or(0);
        if rows.last().is_some_and(|last| last.rule == packed) {
            return Ok(());
        }
        // Two rows at one address (overlapping FDEs): the later one wins.
        if rows.last().is_some_and(|last| last.addr == addr) {
            rows.pop();
        }
        rows.push(UnwindRow { addr, rule: packed });
        Ok(())
    };
    let mut covered_to = 0;
    for span in spans {
        if span.start > covered_to && covered_to != 0 {
            push(covered_to, UnwindRule::Invalid)?;
        }
        push(span.start, span.rule)?;
        covered_to = covered_to.max(span.end);
    }
    if covered_to != 0 {
        push(covered_to, UnwindRule::Invalid)?;
    }
    Ok(rows)
}

/// The rule covering `address` in sorted `rows`, as the kernel programs look it up.
pub fn rule_at(rows: &[UnwindRow], address: u64) -> Option<UnwindRule> {
    let address = u32::try_from(address).ok()?;
    let index = rows.partition_point(|row| row.addr <= address);
    let row = rows.get(index.checked_sub(1)?)?;
    Some(UnwindRule::unpack(row.rule))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
    use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
    use iced_x86::{Decoder, DecoderOptions, FlowControl};

    use super::*;

    /// Real objects of this machine: the C library and the C++ library every distribution
    /// program links, and this test binary (Rust, built with optimisations off).
    fn objects() -> Vec<(String, Vec<u8>)> {
        let mut paths = vec![
            "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            "/lib/x86_64-linux-gnu/libstdc++.so.6".to_owned(),
        ];
        paths.push(
            std::env::current_exe()
                .expect("the test binary")
                .display()
                .to_string(),
        );
        paths
            .into_iter()
            .map(|path| {
                let data = std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
                (path, data)
            })
            .collect()
    }

    /// Every return address of the object: the address after each call instruction of its
    /// executable segments.
    fn return_addresses(data: &[u8]) -> Vec<u64> {
        let file = object::File::parse(data).unwrap();
        let mut addresses = Vec::new();
        for section in file.sections() {
            if section.kind() != object::SectionKind::Text {
                continue;
            }
            let bytes = section.data().unwrap();
            let mut decoder = Decoder::with_ip(64, bytes, section.address(), DecoderOptions::NONE);
            for instruction in &mut decoder {
                if matches!(
                    instruction.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                ) {
                    addresses.push(instruction.next_ip());
                }
            }
        }
        addresses
    }

    /// A stack whose every word is a function of its address.
    fn word(address: u64) -> u64 {
        address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 8
    }

    const SP: u64 = 0x7ff0_0000_0000;
    const BP: u64 = 0x7ff0_0001_0000;

    /// One frame as the kernel programs unwind it: (return address, caller's sp, caller's bp).
    fn ours(rule: UnwindRule) -> Option<(u64, u64, u64)> {
        let (base, cfa_offset, rbp_slot) = match rule {
            UnwindRule::Rsp {
                cfa_offset,
                rbp_slot,
            } => (SP, cfa_offset, rbp_slot),
            UnwindRule::Rbp {
                cfa_offset,
                rbp_slot,
            } => (BP, cfa_offset, rbp_slot),
            UnwindRule::Invalid | UnwindRule::Stop => return None,
        };
        let cfa = base + u64::from(cfa_offset);
        let bp = if rbp_slot == 0 {
            BP
        } else {
            word(cfa - 8 * u64::from(rbp_slot))
        };
        Some((word(cfa - 8), cfa, bp))
    }

    fn framehop_module(path: &str, data: &[u8]) -> Module<Vec<u8>> {
        let file = object::File::parse(data).unwrap();
        let section = |name: &str| file.section_by_name(name);
        let range = |name: &str| section(name).map(|s| s.address()..s.address() + s.size());
        let bytes = |name: &str| {
            section(name)
                .and_then(|s| s.data().ok())
                .map(<[u8]>::to_vec)
        };
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: range(".text"),
            text: bytes(".text"),
            got_svma: range(".got"),
            eh_frame_svma: range(".eh_frame"),
            eh_frame: bytes(".eh_frame"),
            eh_frame_hdr_svma: range(".eh_frame_hdr"),
            eh_frame_hdr: bytes(".eh_frame_hdr"),
            debug_frame: bytes(".debug_frame"),
            ..Default::default()
        };
        Module::new(path.to_owned(), 0..u64::MAX / 2, 0, info)
    }

    /// For a sample of every object's call sites, the frame our rows unwind must be the frame
    /// framehop (samply's unwinder, which evaluates the call-frame information itself) unwinds,
    /// and nearly every call site must have a rule we can follow.
    #[test]
    fn rows_unwind_real_objects_as_framehop_does() {
        for (path, data) in objects() {
            let built = build(&data).unwrap_or_else(|err| panic!("{path}: {err}"));
            assert_eq!(built.source, Source::CallFrameInformation, "{path}");
            assert!(
                built
                    .rows
                    .windows(2)
                    .all(|pair| pair[0].addr < pair[1].addr),
                "{path}: rows not sorted"
            );
            let mut unwinder = UnwinderX86_64::new();
            unwinder.add_module(framehop_module(&path, &data));
            let mut cache = CacheX86_64::new();
            let sites = return_addresses(&data);
            assert!(sites.len() > 1000, "{path}: {} call sites", sites.len());
            let step = (sites.len() / 3000).max(1);
            let (mut checked, mut unfollowable) = (0, 0);
            let mut disagreements = Vec::new();
            let mut rules: HashMap<UnwindRule, usize> = HashMap::new();
            for &site in sites.iter().step_by(step) {
                let rule = rule_at(&built.rows, site - 1).unwrap_or(UnwindRule::Invalid);
                *rules.entry(rule).or_default() += 1;
                let Some(expected) = ours(rule) else {
                    unfollowable += 1;
                    continue;
                };
                let mut regs = UnwindRegsX86_64::new(site, SP, BP);
                let mut read = |address: u64| Ok(word(address));
                let address = FrameAddress::from_return_address(site).unwrap();
                match unwinder.unwind_frame(address, &mut regs, &mut cache, &mut read) {
                    Ok(Some(return_address)) => {
                        let theirs = (return_address, regs.sp(), regs.bp());
                        if theirs != expected {
                            disagreements.push((site, rule, expected, theirs));
                        }
                    }
                    // framehop found no frame where we do.
                    Ok(None) | Err(_) => disagreements.push((site, rule, expected, (0, 0, 0))),
                }
                checked += 1;
            }
            eprintln!(
                "{path}: {} rows, {checked} call sites checked, {unfollowable} without a rule \
                 to follow, {} disagreements, {} distinct rules",
                built.rows.len(),
                disagreements.len(),
                rules.len()
            );
            assert!(checked > 500, "{path}: only {checked} call sites checked");
            assert!(
                disagreements.is_empty(),
                "{path}: our rows and framehop disagree at {} call sites, e.g. {:x?}",
                disagreements.len(),
                &disagreements[..disagreements.len().min(5)]
            );
            assert!(
                unfollowable * 1000 <= checked,
                "{path}: {unfollowable} of {checked} call sites have no rule to follow"
            );
        }
    }
}
