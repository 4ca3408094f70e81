//! Finds what to probe in a target: the allocator entry points (libc's `malloc` family and
//! libstdc++'s `operator new` family) defined by an ELF object, the objects mapped by a running
//! process that define any, and the objects a command will load before it runs. Each entry point
//! gets a probe placement from [`crate::trace::placement`] and the file offset to attach it at.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use monitor_common::{AllocFn, FreedSize};
use object::elf;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, Object, ObjectSection, ObjectSymbol, ReadCache, SymbolKind};
use thiserror::Error;

use crate::trace::placement::choose_probe_offset;
use crate::watch::procfs::{self, MapEntry, ProcError};

/// The entry points leakmon probes, by symbol name. Where several share an address the first one
/// listed names the site. The C++ `operator new` variants all take the size first, like `malloc`
/// (their `delete` counterparts call `free`, so they need no probe); probing them keeps the C++
/// caller in the stack, which a frame-pointer walk from `malloc` would skip since libstdc++ has
/// no frame pointers.
pub const ALLOCATOR_SYMBOLS: [(&str, AllocFn); 18] = [
    ("malloc", AllocFn::Malloc),
    ("calloc", AllocFn::Calloc),
    ("realloc", AllocFn::Realloc),
    ("reallocarray", AllocFn::Reallocarray),
    ("free", AllocFn::Free),
    ("posix_memalign", AllocFn::PosixMemalign),
    ("aligned_alloc", AllocFn::AlignedAlloc),
    ("memalign", AllocFn::Memalign),
    ("valloc", AllocFn::Valloc),
    ("pvalloc", AllocFn::Pvalloc),
    ("_Znwm", AllocFn::Malloc),
    ("_Znam", AllocFn::Malloc),
    ("_ZnwmRKSt9nothrow_t", AllocFn::Malloc),
    ("_ZnamRKSt9nothrow_t", AllocFn::Malloc),
    ("_ZnwmSt11align_val_t", AllocFn::Malloc),
    ("_ZnamSt11align_val_t", AllocFn::Malloc),
    ("_ZnwmSt11align_val_tRKSt9nothrow_t", AllocFn::Malloc),
    ("_ZnamSt11align_val_tRKSt9nothrow_t", AllocFn::Malloc),
];

/// A symbol only glibc's libc defines: its `free` is glibc's malloc, whose chunk header tells a
/// freed block's size (see [`FreedSize::GlibcChunk`]).
const GLIBC_MARKER: &str = "gnu_get_libc_version";

/// Most bytes of a function read to place its probe; the bytes past the entry block are only
/// decoded to find branches back into it.
const MAX_FUNCTION_BYTES: u64 = 64 * 1024;

/// Bytes read for a function whose symbol has no size.
const UNSIZED_FUNCTION_BYTES: u64 = 64;

/// Why the allocator entry points could not be found.
#[derive(Debug, Error)]
pub enum AllocatorError {
    /// The process exited (or never existed); a zombie has exited too.
    #[error("process {pid} is gone")]
    ProcessGone {
        /// The process.
        pid: u32,
    },
    /// The process is a kernel thread: it has no user-space memory.
    #[error("process {pid} is a kernel thread: it has no user-space allocator")]
    KernelThread {
        /// The process.
        pid: u32,
    },
    /// None of the process's mapped objects defines an allocator symbol.
    #[error("found no allocator symbol to probe in process {pid}; is it statically linked?")]
    NoAllocator {
        /// The process.
        pid: u32,
    },
    /// A command to be traced links no allocator: a static program without libc.
    #[error("{} is statically linked and has no malloc/free to probe", .path.display())]
    StaticWithoutAllocator {
        /// The executable.
        path: PathBuf,
    },
    /// `/proc/PID/maps` could not be read.
    #[error("cannot read the memory map of process {pid}: {source}")]
    Maps {
        /// The process.
        pid: u32,
        /// What went wrong.
        source: ProcError,
    },
    /// A file could not be opened.
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A file is not a well-formed 64-bit ELF object.
    #[error("{} is not a readable 64-bit ELF object: {source}", .path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the parser found wrong.
        source: object::Error,
    },
    /// The dynamic loader could not be started to list a program's libraries.
    #[error("cannot run the dynamic loader {} for {}: {source}", .interpreter.display(), .exe.display())]
    LoaderSpawn {
        /// The program's `PT_INTERP`.
        interpreter: PathBuf,
        /// The program.
        exe: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The dynamic loader failed to list a program's libraries.
    #[error("the dynamic loader {} cannot list the libraries of {}: {message}", .interpreter.display(), .exe.display())]
    LoaderFailed {
        /// The program's `PT_INTERP`.
        interpreter: PathBuf,
        /// The program.
        exe: PathBuf,
        /// The first line the loader wrote to stderr, or its exit status.
        message: String,
    },
}

/// One probe site: an allocator entry point and where its probe goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SitePlan {
    /// Which entry point (the probe cookie).
    pub function: AllocFn,
    /// The symbol that named it.
    pub symbol: String,
    /// Offset of the probed instruction from the start of the function.
    pub symbol_offset: u64,
    /// Offset of the probed instruction in the file: what the probe attaches at.
    pub file_offset: u64,
    /// The probed instruction, e.g. `push r12`.
    pub instruction: String,
    /// Whether the kernel emulates the probed instruction rather than single-stepping it.
    pub emulated: bool,
    /// For `free`: how its probe learns the size of a block it never saw allocated (glibc's
    /// chunk header, or not at all); [`FreedSize::Unknown`] for the other entry points.
    pub freed_size: FreedSize,
}

impl SitePlan {
    /// The attach cookie of the site's probes in a process traced with `sample_rate`.
    pub fn cookie(&self, sample_rate: u64) -> u64 {
        match self.function {
            AllocFn::Free => AllocFn::free_cookie(self.freed_size),
            function => function.cookie(sample_rate),
        }
    }
}

/// An object mapped by a process that defines allocator entry points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocatorObject {
    /// The path to attach to, reaching the file through the process's root (or its mapping when
    /// the file was deleted).
    pub path: PathBuf,
    /// The path as `/proc/PID/maps` shows it.
    pub display_path: String,
    /// The probe sites.
    pub sites: Vec<SitePlan>,
}

/// A 64-bit ELF object read lazily from its file.
type Elf<'a> = ElfFile64<'a, Endianness, &'a ReadCache<File>>;

/// A candidate function: the symbol naming it and its size.
struct Function {
    rank: usize,
    symbol: String,
    size: u64,
}

fn open_elf(path: &Path) -> Result<ReadCache<File>, AllocatorError> {
    File::open(path)
        .map(ReadCache::new)
        .map_err(|source| AllocatorError::Open {
            path: path.to_path_buf(),
            source,
        })
}

fn parse_elf<'a>(path: &Path, cache: &'a ReadCache<File>) -> Result<Elf<'a>, AllocatorError> {
    ElfFile64::parse(cache).map_err(|source| AllocatorError::NotElf {
        path: path.to_path_buf(),
        source,
    })
}

/// Plans the probes of the allocator entry points an ELF object defines (in its dynamic symbols
/// and, when present, its symbol table), one site per address.
pub fn plan_object(path: &Path) -> Result<Vec<SitePlan>, AllocatorError> {
    let cache = open_elf(path)?;
    let elf = parse_elf(path, &cache)?;

    let mut functions: HashMap<u64, Function> = HashMap::new();
    let mut glibc = false;
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        glibc |= symbol.is_definition() && symbol.name() == Ok(GLIBC_MARKER);
        if symbol.kind() != SymbolKind::Text
            || !symbol.is_definition()
            || symbol.is_local()
            || symbol.elf_symbol().st_type() == elf::STT_GNU_IFUNC
        {
            continue;
        }
        let Ok(name) = symbol.name() else {
            continue;
        };
        let bare = name.split('@').next().unwrap_or(name);
        let Some(rank) = ALLOCATOR_SYMBOLS.iter().position(|(n, _)| *n == bare) else {
            continue;
        };
        let candidate = Function {
            rank,
            symbol: bare.to_owned(),
            size: symbol.size(),
        };
        match functions.entry(symbol.address()) {
            Entry::Vacant(slot) => {
                slot.insert(candidate);
            }
            Entry::Occupied(mut slot) => {
                let size = slot.get().size.max(candidate.size);
                if candidate.rank < slot.get().rank {
                    slot.insert(candidate);
                }
                slot.get_mut().size = size;
            }
        }
    }

    let mut functions: Vec<(u64, Function)> = functions.into_iter().collect();
    functions.sort_by_key(|(address, f)| (f.rank, *address));
    let freed_size = if glibc {
        FreedSize::GlibcChunk
    } else {
        FreedSize::Unknown
    };
    let mut sites = Vec::with_capacity(functions.len());
    for (address, function) in functions {
        match plan_function(&elf, address, &function, freed_size) {
            Some(site) => sites.push(site),
            None => log::debug!(
                "{}: no code for {} at {address:#x}",
                path.display(),
                function.symbol
            ),
        }
    }
    Ok(sites)
}

fn plan_function(
    elf: &Elf<'_>,
    address: u64,
    function: &Function,
    freed_size: FreedSize,
) -> Option<SitePlan> {
    let section = elf.sections().find(|s| {
        s.file_range().is_some() && s.address() <= address && address - s.address() < s.size()
    })?;
    let (section_offset, _) = section.file_range()?;
    let wanted = match function.size {
        0 => UNSIZED_FUNCTION_BYTES,
        size => size.min(MAX_FUNCTION_BYTES),
    };
    let len = wanted.min(section.address() + section.size() - address);
    let code = section.data_range(address, len).ok().flatten()?;
    let kind = ALLOCATOR_SYMBOLS[function.rank].1;
    let placement = choose_probe_offset(code, address, kind.arg_count());
    let probe_address = address + placement.offset;
    Some(SitePlan {
        function: kind,
        symbol: function.symbol.clone(),
        symbol_offset: placement.offset,
        file_offset: probe_address - section.address() + section_offset,
        instruction: placement.instruction,
        emulated: placement.emulated,
        freed_size: if kind == AllocFn::Free {
            freed_size
        } else {
            FreedSize::Unknown
        },
    })
}

/// Why process `pid` offers no allocator: it exited (a zombie has: its memory is gone), it is a
/// kernel thread, or none of its objects defines one.
fn no_allocator(pid: u32) -> AllocatorError {
    match procfs::read_stat(pid) {
        Err(ProcError::Gone { .. }) => AllocatorError::ProcessGone { pid },
        Ok(stat) if matches!(stat.state, 'Z' | 'X') => AllocatorError::ProcessGone { pid },
        Ok(stat) if stat.vsize_bytes == 0 => AllocatorError::KernelThread { pid },
        _ => AllocatorError::NoAllocator { pid },
    }
}

/// The path that reaches a mapped file from our mount namespace.
fn attach_path(pid: u32, mapping: &MapEntry, path: &str) -> PathBuf {
    if mapping.deleted {
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        ))
    } else {
        PathBuf::from(format!("/proc/{pid}/root{path}"))
    }
}

/// Finds the objects mapped executable by a process that define allocator entry points, with
/// their probe plans. Objects that cannot be read or are not ELF are skipped.
pub fn allocator_objects(pid: u32) -> Result<Vec<AllocatorObject>, AllocatorError> {
    let maps = procfs::read_maps(pid).map_err(|source| match source {
        ProcError::Gone { .. } => AllocatorError::ProcessGone { pid },
        source => AllocatorError::Maps { pid, source },
    })?;

    let mut seen: Vec<String> = Vec::new();
    let mut objects = Vec::new();
    for mapping in maps.iter().filter(|m| m.executable && m.is_file()) {
        let Some(path) = mapping.path.as_deref() else {
            continue;
        };
        let display_path = if mapping.deleted {
            format!("{path} (deleted)")
        } else {
            path.to_owned()
        };
        if seen.contains(&display_path) {
            continue;
        }
        seen.push(display_path.clone());
        let attach = attach_path(pid, mapping, path);
        match plan_object(&attach) {
            Ok(sites) if sites.is_empty() => {}
            Ok(sites) => objects.push(AllocatorObject {
                path: attach,
                display_path,
                sites,
            }),
            Err(err) => match no_allocator(pid) {
                gone @ AllocatorError::ProcessGone { .. } => return Err(gone),
                _ => log::debug!("process {pid}: skipping {display_path}: {err}"),
            },
        }
    }
    if objects.is_empty() {
        return Err(no_allocator(pid));
    }
    Ok(objects)
}

/// Lists the objects a program will map when it runs, the program first, without running it: the
/// program's dynamic loader (`PT_INTERP`) resolves its libraries with `--list`, as `ldd` does. A
/// program without `PT_INTERP` is statically linked and gives just itself.
pub fn resolve_command_libraries(exe: &Path) -> Result<Vec<PathBuf>, AllocatorError> {
    let cache = open_elf(exe)?;
    let elf = parse_elf(exe, &cache)?;
    let endian = elf.endian();
    let interpreter = elf
        .elf_program_headers()
        .iter()
        .find_map(|header| header.interpreter(endian, elf.data()).transpose())
        .transpose()
        .map_err(|source| AllocatorError::NotElf {
            path: exe.to_path_buf(),
            source,
        })?
        .map(|found| PathBuf::from(OsStr::from_bytes(found)));
    let Some(interpreter) = interpreter else {
        return Ok(vec![exe.to_path_buf()]);
    };

    let output = Command::new(&interpreter)
        .arg("--list")
        .arg(exe)
        .output()
        .map_err(|source| AllocatorError::LoaderSpawn {
            interpreter: interpreter.clone(),
            exe: exe.to_path_buf(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map_or_else(|| output.status.to_string(), str::to_owned);
        return Err(AllocatorError::LoaderFailed {
            interpreter,
            exe: exe.to_path_buf(),
            message,
        });
    }

    let mut paths = vec![exe.to_path_buf()];
    for path in parse_loader_list(&String::from_utf8_lossy(&output.stdout)) {
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    Ok(paths)
}

/// Parses the output of `ld.so --list`: `name => /path (0x...)` lines and the loader's own
/// `/path (0x...)` line. The vDSO and libraries the loader did not find are left out.
fn parse_loader_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let target = match line.split_once("=>") {
                Some((_, target)) => target.trim(),
                None => line,
            };
            let path = match target.rsplit_once(" (0x") {
                Some((path, _)) => path.trim(),
                None => target,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn mapped_object(suffix: &str) -> String {
        procfs::read_maps(std::process::id())
            .unwrap()
            .into_iter()
            .filter_map(|m| m.path)
            .find(|p| p.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} mapped"))
    }

    fn site<'a>(sites: &'a [SitePlan], symbol: &str) -> &'a SitePlan {
        sites
            .iter()
            .find(|s| s.symbol == symbol)
            .unwrap_or_else(|| panic!("no site for {symbol}: {sites:#?}"))
    }

    fn file_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
        let data = fs::read(path).unwrap();
        let start = usize::try_from(offset).unwrap();
        data[start..start + len].to_vec()
    }

    #[test]
    fn plans_this_machines_libc() {
        let libc = PathBuf::from(mapped_object("/libc.so.6"));
        let sites = plan_object(&libc).unwrap();

        let malloc = site(&sites, "malloc");
        assert_eq!(malloc.function, AllocFn::Malloc);
        assert_eq!(malloc.symbol_offset, 0);
        assert!(malloc.instruction.starts_with("push "), "{malloc:?}");
        assert!(malloc.emulated);
        assert_eq!(file_bytes(&libc, malloc.file_offset, 2), [0x41, 0x54]); // push r12

        let free = site(&sites, "free");
        assert_eq!(free.function, AllocFn::Free);
        assert_eq!(free.symbol_offset, 3);
        assert!(free.instruction.starts_with("je "), "{free:?}");
        assert!(free.emulated);
        assert_eq!(file_bytes(&libc, free.file_offset, 2), [0x0f, 0x84]); // je rel32
        // glibc's free reads the chunk header of blocks it never saw allocated.
        assert_eq!(free.freed_size, FreedSize::GlibcChunk);
        assert_eq!(
            free.cookie(4096),
            AllocFn::free_cookie(FreedSize::GlibcChunk)
        );
        assert_eq!(malloc.freed_size, FreedSize::Unknown);
        assert_eq!(malloc.cookie(4096), AllocFn::Malloc.cookie(4096));

        // memalign and aligned_alloc share their code: one site, named by the first in the table.
        let aligned = site(&sites, "aligned_alloc");
        assert_eq!(aligned.function, AllocFn::AlignedAlloc);
        assert!(sites.iter().all(|s| s.symbol != "memalign"), "{sites:#?}");

        for s in &sites {
            assert!(
                ALLOCATOR_SYMBOLS
                    .iter()
                    .any(|(n, f)| *n == s.symbol && *f == s.function)
            );
            if s.function.allocates() {
                assert!(s.emulated || s.symbol_offset == 0, "{s:?}");
            }
        }
        for name in ["calloc", "realloc", "posix_memalign", "valloc", "pvalloc"] {
            site(&sites, name);
        }
        let mut offsets: Vec<u64> = sites.iter().map(|s| s.file_offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), sites.len());
        for s in &sites {
            eprintln!(
                "libc {:<16} +{:<3} {:<40} emulated={}",
                s.symbol, s.symbol_offset, s.instruction, s.emulated
            );
        }
    }

    #[test]
    fn plans_operator_new_in_libstdcxx() {
        let path = Path::new("/usr/lib/x86_64-linux-gnu/libstdc++.so.6");
        let sites = plan_object(path).unwrap();
        let new = site(&sites, "_Znwm");
        assert_eq!(new.function, AllocFn::Malloc);
        assert!(new.emulated || new.symbol_offset == 0, "{new:?}");
        site(&sites, "_ZnamSt11align_val_t");
        assert!(
            sites
                .iter()
                .all(|s| s.function == AllocFn::Malloc && s.freed_size == FreedSize::Unknown),
            "{sites:#?}"
        );
        for s in &sites {
            eprintln!(
                "libstdc++ {:<36} +{:<3} {:<40} emulated={}",
                s.symbol, s.symbol_offset, s.instruction, s.emulated
            );
        }
    }

    #[test]
    fn finds_libc_in_this_process() {
        let objects = allocator_objects(std::process::id()).unwrap();
        let libc = objects
            .iter()
            .find(|o| o.display_path.ends_with("/libc.so.6"))
            .unwrap_or_else(|| panic!("{objects:#?}"));
        assert_eq!(
            libc.path,
            PathBuf::from(format!(
                "/proc/{}/root{}",
                std::process::id(),
                libc.display_path
            ))
        );
        site(&libc.sites, "malloc");
        site(&libc.sites, "free");
    }

    #[test]
    fn a_zombie_is_gone_and_a_kernel_thread_says_so() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while procfs::read_stat(pid).unwrap().state != 'Z' {
            assert!(std::time::Instant::now() < deadline, "`true` did not exit");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let zombie = allocator_objects(pid);
        child.wait().unwrap();
        match zombie {
            Err(AllocatorError::ProcessGone { pid: p }) => assert_eq!(p, pid),
            other => panic!("expected ProcessGone for a zombie, got {other:?}"),
        }
        let kthreadd = 2;
        assert_eq!(procfs::read_comm(kthreadd).unwrap(), "kthreadd");
        match allocator_objects(kthreadd) {
            Err(error @ AllocatorError::KernelThread { pid: 2 }) => assert_eq!(
                error.to_string(),
                "process 2 is a kernel thread: it has no user-space allocator"
            ),
            other => panic!("expected KernelThread for kthreadd, got {other:?}"),
        }
    }

    #[test]
    fn a_missing_process_is_gone() {
        let pid = (1 << 22) + 17; // above the largest pid_max
        match allocator_objects(pid) {
            Err(AllocatorError::ProcessGone { pid: p }) => assert_eq!(p, pid),
            other => panic!("expected ProcessGone, got {other:?}"),
        }
        assert_eq!(
            AllocatorError::NoAllocator { pid: 7 }.to_string(),
            "found no allocator symbol to probe in process 7; is it statically linked?"
        );
    }

    #[test]
    fn resolves_the_libraries_of_ls() {
        let libs = resolve_command_libraries(Path::new("/bin/ls")).unwrap();
        assert_eq!(libs[0], Path::new("/bin/ls"));
        assert!(libs.iter().any(|p| p.ends_with("libc.so.6")), "{libs:?}");
        assert!(libs.iter().skip(1).all(|p| p.is_absolute()));
    }

    #[test]
    fn rejects_what_is_not_an_elf_program() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert!(matches!(
            resolve_command_libraries(&manifest),
            Err(AllocatorError::NotElf { .. })
        ));
        assert!(matches!(
            plan_object(&manifest),
            Err(AllocatorError::NotElf { .. })
        ));
        let missing = Path::new("/nonexistent/leakmon-test-program");
        assert!(matches!(
            resolve_command_libraries(missing),
            Err(AllocatorError::Open { .. })
        ));
    }

    #[test]
    fn a_static_program_is_its_own_only_object() {
        let dir = std::env::temp_dir().join(format!("leakmon-allocators-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let source = dir.join("prog.c");
        fs::write(
            &source,
            "#include <stdlib.h>\nint main(void) { char *p = malloc(10); free(p); return p == 0; }\n",
        )
        .unwrap();
        let exe = dir.join("prog");
        let status = Command::new("gcc")
            .arg("-static")
            .arg("-o")
            .arg(&exe)
            .arg(&source)
            .status()
            .unwrap();
        assert!(status.success());

        let libs = resolve_command_libraries(&exe).unwrap();
        let sites = plan_object(&exe).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(libs, vec![exe]);
        assert_eq!(site(&sites, "malloc").function, AllocFn::Malloc);
        site(&sites, "free");
    }

    #[test]
    fn parses_the_loader_listing() {
        let text = "\
\tlinux-vdso.so.1 (0x00007ffc8a5f3000)
\tlibselinux.so.1 => /lib/x86_64-linux-gnu/libselinux.so.1 (0x00007f0e2c5a1000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e2c3c0000)
\tlibmissing.so.2 => not found
\tlibodd.so => /opt/my libs/libodd.so (0x00007f0e2c300000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0e2c61b000)
";
        assert_eq!(
            parse_loader_list(text),
            [
                "/lib/x86_64-linux-gnu/libselinux.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/opt/my libs/libodd.so",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn deleted_files_are_reached_through_map_files() {
        let mut mapping = procfs::parse_maps(
            "7f1e2b000000-7f1e2b100000 r-xp 00010000 103:0a 99 /opt/libx.so (deleted)\n",
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            attach_path(42, &mapping, "/opt/libx.so"),
            Path::new("/proc/42/map_files/7f1e2b000000-7f1e2b100000")
        );
        mapping.deleted = false;
        assert_eq!(
            attach_path(42, &mapping, "/opt/libx.so"),
            Path::new("/proc/42/root/opt/libx.so")
        );
    }
}
