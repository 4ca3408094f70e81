//! Where in an allocator function to put its entry probe.
//!
//! A uprobe costs about 0.6 µs per hit on an instruction the kernel emulates and about 10 µs on
//! one it must single-step out of line, so each probe goes at the first instruction of the
//! function's entry basic block that Linux (6.18, `arch/x86/kernel/uprobes.c`) emulates, as long
//! as the argument registers the probe reads are still intact there and `[rsp]` still holds the
//! return address (a return probe needs it, and `free`'s probe reads it as its caller). When there
//! is no such instruction the probe stays at the entry.
//!
//! What the kernel emulates (everything else is single-stepped, and some instructions cannot be
//! probed at all):
//! - `branch_setup_xol_ops`: `jmp rel8`/`jmp rel32`, `call rel32`, every `jcc rel8`/`jcc rel32`,
//!   none of them with a `0x66` prefix (the kernel refuses to probe those), and NOPs: an
//!   instruction byte for byte equal to one of the kernel's `x86_nops[1..=8]` (longer ones carry a
//!   CS prefix, which makes the instruction unprobeable) or with opcode `0x90`;
//! - `push_setup_xol_ops`: `push` of a general register encoded as `50+r` alone or as `41 50+r`.
//!
//! Instructions carrying an ES/CS/SS/DS segment or LOCK prefix are rejected by
//! `uprobe_init_insn`, so they are never chosen. `endbr64` is single-stepped; it neither writes a
//! register nor branches, so the scan simply goes past it. Indirect calls and jumps are
//! single-stepped.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter, Instruction, InstructionInfo,
    InstructionInfoFactory, IntelFormatter, OpAccess, OpKind, Register,
};

/// Most instructions examined from the entry before giving up.
pub const MAX_SCAN_INSTRUCTIONS: usize = 16;

/// System V x86-64 integer argument registers, in argument order.
const ARG_REGISTERS: [Register; 6] = [
    Register::RDI,
    Register::RSI,
    Register::RDX,
    Register::RCX,
    Register::R8,
    Register::R9,
];

/// The kernel's `x86_nops[1..=8]` for 64-bit (`arch/x86/include/asm/nops.h`); 9 to 11 bytes carry
/// a CS prefix and cannot be probed.
const KERNEL_NOPS: [&[u8]; 8] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Legacy prefix bytes of the x86 encoding.
const LEGACY_PREFIXES: [u8; 11] = [
    0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3,
];

/// Prefixes that make the kernel refuse to probe an instruction (`is_prefix_bad`).
const UNPROBEABLE_PREFIXES: [u8; 5] = [0x26, 0x2e, 0x36, 0x3e, 0xf0];

/// The operand-size prefix, which the kernel refuses on branches.
const OPERAND_SIZE_PREFIX: u8 = 0x66;

/// REX prefix selecting r8-r15 as the register of a one-byte `push`, the only REX the kernel's
/// push emulation accepts.
const REX_B: u8 = 0x41;

/// Where to put the entry probe of one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Offset of the probed instruction from the start of the function.
    pub offset: u64,
    /// The probed instruction in Intel syntax, e.g. `push r12`.
    pub instruction: String,
    /// Whether the kernel emulates the probed instruction (the cheap case).
    pub emulated: bool,
}

/// Chooses the probe offset in a function whose code (from its entry) is `code`, loaded at `ip`.
///
/// Pass the whole function when its size is known: besides the entry block, the rest is decoded
/// to find branches that land inside the entry block, which end it. The probe reads the first
/// `arg_count` integer argument registers, and fires while `[rsp]` is still the return address.
pub fn choose_probe_offset(code: &[u8], ip: u64, arg_count: usize) -> Placement {
    let targets = branch_targets(code, ip);
    let args = &ARG_REGISTERS[..arg_count.min(ARG_REGISTERS.len())];
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut factory = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    for _ in 0..MAX_SCAN_INSTRUCTIONS {
        if !decoder.can_decode() {
            break;
        }
        let offset = decoder.position();
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() || (offset > 0 && targets.contains(&offset)) {
            break;
        }
        let raw = &code[offset..offset + instruction.len()];
        if kernel_emulates(&instruction, raw) {
            return Placement {
                offset: offset as u64,
                instruction: format_instruction(&instruction),
                emulated: true,
            };
        }
        if instruction.flow_control() != FlowControl::Next {
            break;
        }
        let info = factory.info(&instruction);
        if writes_register(info, args) || moves_stack(info) {
            break;
        }
    }
    entry_placement(code, ip)
}

/// The fallback: the function's first instruction.
fn entry_placement(code: &[u8], ip: u64) -> Placement {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let instruction = decoder.decode();
    let raw = &code[..instruction.len().min(code.len())];
    Placement {
        offset: 0,
        instruction: format_instruction(&instruction),
        emulated: !instruction.is_invalid() && kernel_emulates(&instruction, raw),
    }
}

/// Offsets (from the start of `code`) of the instructions that direct branches in `code` jump to.
fn branch_targets(code: &[u8], ip: u64) -> Vec<usize> {
    let end = ip.saturating_add(code.len() as u64);
    let mut targets: Vec<usize> = Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| !i.is_invalid() && i.op_count() > 0 && i.op0_kind() == OpKind::NearBranch64)
        .map(|i| i.near_branch_target())
        .filter(|&target| ip <= target && target < end)
        .filter_map(|target| usize::try_from(target - ip).ok())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    targets
}

/// Whether Linux emulates `instruction` (encoded as `raw`) instead of single-stepping it.
fn kernel_emulates(instruction: &Instruction, raw: &[u8]) -> bool {
    let prefix_len = raw
        .iter()
        .take_while(|b| LEGACY_PREFIXES.contains(b))
        .count();
    let prefixes = &raw[..prefix_len];
    if prefixes.iter().any(|p| UNPROBEABLE_PREFIXES.contains(p)) {
        return false;
    }
    if KERNEL_NOPS.contains(&raw) {
        return true;
    }
    match instruction.code() {
        // Opcode 0x90 with operand-size or REX.W prefixes; iced decodes REX.B 90 as xchg and
        // F3 90 as pause, neither of which is chosen.
        Code::Nopw | Code::Nopd | Code::Nopq => true,
        Code::Jmp_rel8_64 | Code::Jmp_rel32_64 | Code::Call_rel32_64 => {
            !prefixes.contains(&OPERAND_SIZE_PREFIX)
        }
        Code::Push_r64 => raw.len() == 1 || (raw.len() == 2 && raw[0] == REX_B),
        _ => instruction.is_jcc_short_or_near() && !prefixes.contains(&OPERAND_SIZE_PREFIX),
    }
}

fn is_write(access: OpAccess) -> bool {
    matches!(
        access,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// Whether the instruction writes any of `registers` (or a part of one).
fn writes_register(info: &InstructionInfo, registers: &[Register]) -> bool {
    info.used_registers()
        .iter()
        .any(|u| is_write(u.access()) && registers.contains(&u.register().full_register()))
}

/// Whether the instruction changes `rsp` or stores through it (possibly over the return address).
fn moves_stack(info: &InstructionInfo) -> bool {
    writes_register(info, &[Register::RSP])
        || info
            .used_memory()
            .iter()
            .any(|m| is_write(m.access()) && m.base().full_register() == Register::RSP)
}

fn format_instruction(instruction: &Instruction) -> String {
    let mut formatter = IntelFormatter::new();
    let options = formatter.options_mut();
    options.set_show_branch_size(false);
    options.set_rip_relative_addresses(true);
    options.set_uppercase_hex(false);
    options.set_hex_prefix("0x");
    options.set_hex_suffix("");
    options.set_branch_leading_zeros(false);
    let mut text = String::new();
    formatter.format(instruction, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: u64 = 0x98ef0;

    fn place(code: &[u8], args: usize) -> Placement {
        choose_probe_offset(code, IP, args)
    }

    #[test]
    fn free_probes_the_jcc_after_the_test() {
        let code = [
            0x48, 0x85, 0xff, // test rdi,rdi
            0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, // je +0xbf
            0x55, // push rbp
            0x48, 0x8d, 0x77, 0xf0, // lea rsi,[rdi-0x10]
        ];
        let p = place(&code, 1);
        assert_eq!(p.offset, 3);
        assert!(p.emulated);
        assert_eq!(p.instruction, "je 0x98fb8");
    }

    #[test]
    fn malloc_probes_its_first_push() {
        let code = [
            0x41, 0x54, // push r12
            0x55, // push rbp
            0x53, // push rbx
            0x48, 0x89, 0xfb, // mov rbx,rdi
        ];
        assert_eq!(
            place(&code, 1),
            Placement {
                offset: 0,
                instruction: "push r12".into(),
                emulated: true,
            }
        );
    }

    #[test]
    fn memalign_probes_the_je_after_a_rip_relative_cmp() {
        let code = [
            0x80, 0x3d, 0x71, 0x0e, 0x14, 0x00, 0x00, // cmp byte [rip+0x140e71],0
            0x74, 0x07, // je +7
            0xe9, 0x32, 0xf6, 0xff, 0xff, // jmp malloc internals
            0x66, 0x90, // xchg ax,ax
            0x48, 0x83, 0xec, 0x18, // sub rsp,0x18
        ];
        let p = place(&code, 2);
        assert_eq!((p.offset, p.emulated), (7, true));
        assert!(p.instruction.starts_with("je "), "{}", p.instruction);
        // The cmp alone is single-stepped.
        assert_eq!(place(&code[..7], 2), entry(&code[..7], false));
    }

    #[test]
    fn posix_memalign_probes_the_push_after_the_cmp() {
        let code = [
            0x80, 0x3d, 0x01, 0x02, 0x14, 0x00, 0x00, // cmp byte [rip+x],0
            0x41, 0x54, // push r12
            0x49, 0x89, 0xd4, // mov r12,rdx
        ];
        let p = place(&code, 3);
        assert_eq!(
            (p.offset, p.instruction.as_str(), p.emulated),
            (7, "push r12", true)
        );
    }

    fn entry(code: &[u8], emulated: bool) -> Placement {
        Placement {
            offset: 0,
            instruction: format_instruction(&Decoder::with_ip(64, code, IP, 0).decode()),
            emulated,
        }
    }

    #[test]
    fn an_argument_clobbered_first_keeps_the_entry() {
        let code = [
            0x48, 0x8b, 0x3d, 0x10, 0x00, 0x00, 0x00, // mov rdi,[rip+0x10]
            0x53, // push rbx
        ];
        let p = place(&code, 1);
        assert_eq!(p, entry(&code, false));
        assert_eq!(p.instruction, "mov rdi,[rip+0x10]");
        // Sub-registers count: xor edi,edi clobbers rdi.
        assert_eq!(place(&[0x31, 0xff, 0x53], 1).offset, 0);
        // A register past the ones read does not matter: rcx is the fourth argument.
        assert_eq!(place(&[0x31, 0xc9, 0x53], 3).offset, 2);
        assert_eq!(place(&[0x31, 0xc9, 0x53], 4).offset, 0);
    }

    #[test]
    fn every_probe_needs_the_return_address_on_top() {
        let code = [
            0x48, 0x83, 0xec, 0x08, // sub rsp,8
            0x53, // push rbx
        ];
        assert_eq!(place(&code, 1), entry(&code, false));
        // A store through rsp may overwrite the return address.
        let store = [
            0x48, 0x89, 0x3c, 0x24, // mov [rsp],rdi
            0x53, // push rbx
        ];
        assert_eq!(place(&store, 1).offset, 0);
        // Neither moves the stack: the push after them is chosen.
        let quiet = [
            0x48, 0x85, 0xff, // test rdi,rdi
            0x48, 0x8b, 0x44, 0x24, 0x08, // mov rax,[rsp+8]
            0x53, // push rbx
        ];
        assert_eq!(place(&quiet, 1).offset, 8);
    }

    #[test]
    fn endbr64_is_single_stepped_but_skipped() {
        let push = [
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0x55, // push rbp
            0x48, 0x89, 0xfd, // mov rbp,rdi
        ];
        let p = place(&push, 1);
        assert_eq!(
            (p.offset, p.instruction.as_str(), p.emulated),
            (4, "push rbp", true)
        );
        let tail_call = [
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0xe9, 0xf7, 0x02, 0xff, 0xff, // jmp _Znwm@plt
        ];
        let p = place(&tail_call, 1);
        assert_eq!((p.offset, p.emulated), (4, true));
        assert!(p.instruction.starts_with("jmp "), "{}", p.instruction);
        let nothrow = [
            0xf3, 0x0f, 0x1e, 0xfa, // endbr64
            0x48, 0x83, 0xec, 0x08, // sub rsp,8
            0xe8, 0x13, 0x03, 0xff, 0xff, // call _Znwm@plt
        ];
        let p = place(&nothrow, 1);
        assert_eq!(p, entry(&nothrow, false));
        assert_eq!(p.instruction, "endbr64");
    }

    #[test]
    fn scanning_stops_after_control_flow() {
        let code = [
            0x48, 0x85, 0xff, // test rdi,rdi
            0xff, 0xe0, // jmp rax (indirect: single-stepped)
            0x53, // push rbx, not reached on every path
        ];
        assert_eq!(place(&code, 1), entry(&code, false));
        let ret = [0x31, 0xc0, 0xc3, 0x53]; // xor eax,eax; ret; push rbx
        assert_eq!(place(&ret, 1).offset, 0);
    }

    #[test]
    fn a_branch_into_the_entry_block_ends_it() {
        // xor eax,eax; push rbx; pop rbx; jmp back to the push.
        let looping = [0x31, 0xc0, 0x53, 0x5b, 0xeb, 0xfc];
        assert_eq!(place(&looping, 1), entry(&looping, false));
        let straight = [0x31, 0xc0, 0x53, 0x5b, 0xc3];
        assert_eq!(place(&straight, 1).offset, 2);
    }

    #[test]
    fn gives_up_after_the_scan_limit() {
        let mut code = [0x31, 0xc0].repeat(MAX_SCAN_INSTRUCTIONS); // xor eax,eax
        code.push(0x53);
        assert_eq!(place(&code, 1).offset, 0);
        code.drain(..2);
        assert_eq!(
            place(&code, 1).offset,
            2 * (MAX_SCAN_INSTRUCTIONS as u64 - 1)
        );
    }

    #[test]
    fn only_what_the_kernel_emulates_is_chosen() {
        let emulated = |code: &[u8]| place(code, 1).emulated;
        for nop in KERNEL_NOPS {
            assert!(emulated(nop), "{nop:x?}");
        }
        assert!(emulated(&[0x48, 0x90])); // REX.W nop
        assert!(emulated(&[0x41, 0x57])); // push r15
        assert!(emulated(&[0x54])); // push rsp
        assert!(emulated(&[0xe8, 0, 0, 0, 0])); // call rel32
        assert!(emulated(&[0x7f, 0x00])); // jg rel8
        assert!(emulated(&[0x0f, 0x8a, 0, 0, 0, 0])); // jp rel32
        assert!(!emulated(&[0x0f, 0x1f, 0x40, 0x08])); // nop [rax+8]: not a kernel nop
        assert!(!emulated(&[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0])); // CS prefix
        assert!(!emulated(&[0x41, 0x90])); // xchg r8d,eax
        assert!(!emulated(&[0xf3, 0x90])); // pause
        assert!(!emulated(&[0x48, 0x55])); // push rbp with REX.W
        assert!(!emulated(&[0x66, 0x55])); // push bp
        assert!(!emulated(&[0x66, 0xe8, 0, 0, 0, 0])); // call with 0x66
        assert!(!emulated(&[0x3e, 0x74, 0x00])); // je with a DS hint
        assert!(!emulated(&[0xff, 0xd0])); // call rax
        assert!(!emulated(&[0xe3, 0x00])); // jrcxz
        assert!(!emulated(&[0xf3, 0x0f, 0x1e, 0xfa])); // endbr64
    }

    #[test]
    fn empty_or_invalid_code_keeps_the_entry() {
        let p = place(&[], 1);
        assert_eq!((p.offset, p.emulated), (0, false));
        let p = place(&[0x0f, 0x0b, 0x53], 1); // ud2; push rbx
        assert_eq!((p.offset, p.emulated), (0, false));
        let p = place(&[0x06, 0x53], 1); // invalid in 64-bit mode
        assert_eq!((p.offset, p.emulated), (0, false));
    }
}
