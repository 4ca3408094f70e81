//! Turning the addresses of a stack into [`Frame`]s, even after the code is gone.
//!
//! A library may be `dlclose`d during the window, or the process may exit before the report is
//! written, so what symbolization needs is captured while the mappings are alive:
//! [`ModuleHistory`] records every executable file mapping of a process (and a way to open its
//! file later) and never forgets one during a trace. [`Symbolizer`] resolves addresses against
//! that history with blazesym, reading symbols and DWARF from the recorded files, and bounds
//! what it keeps of them between reports.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{self as bz, Input, Symbolized};

use crate::report::Frame;
use crate::watch::procfs::{MapEntry, Pid};

/// How to open a mapped file later.
#[derive(Debug)]
enum Opener {
    /// By its path, which names the same file for us as for the process.
    Path(PathBuf),
    /// Through a descriptor we hold open (deleted files, other mount namespaces).
    Fd(File),
}

impl Opener {
    fn open_path(&self) -> PathBuf {
        match self {
            Opener::Path(path) => path.clone(),
            Opener::Fd(file) => PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        }
    }
}

/// One executable mapping as recorded.
#[derive(Debug)]
struct Module {
    start: u64,
    end: u64,
    file_offset: u64,
    /// The file's path as the process saw it, or a pseudo path such as `[vdso]`.
    path: String,
    dev: (u32, u32),
    inode: u64,
    /// `None` for pseudo paths, and for files we could not keep a way to.
    opener: Option<Opener>,
}

impl Module {
    fn same_mapping(&self, m: &MapEntry) -> bool {
        self.start == m.start
            && self.end == m.end
            && self.file_offset == m.offset
            && self.dev == (m.dev_major, m.dev_minor)
            && self.inode == m.inode
            && m.path.as_deref() == Some(self.path.as_str())
    }
}

/// An address located in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The file's path as the process saw it.
    pub module: String,
    /// Where we can open the file (possibly `/proc/self/fd/N`).
    pub open_path: PathBuf,
    /// Offset of the address in the file.
    pub file_offset: u64,
}

/// Every executable mapping a traced process had at any [`refresh`](Self::refresh), newest
/// last. Nothing is dropped during a trace, so the code of a `dlclose`d library stays
/// resolvable; where mappings overlap, the newest one wins.
#[derive(Debug, Default)]
pub struct ModuleHistory {
    modules: Vec<Module>,
}

impl ModuleHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the executable mappings of `pid` in `maps` (its `/proc/PID/maps`) not recorded
    /// yet: file mappings with a way to open the file later, and pseudo mappings such as
    /// `[vdso]` by name.
    pub fn record(&mut self, pid: Pid, maps: &[MapEntry]) {
        let same_namespace = same_root(pid);
        for entry in maps.iter().filter(|m| m.executable) {
            let Some(path) = entry.path.as_deref() else {
                continue;
            };
            if self
                .lookup(entry.start)
                .is_some_and(|m| m.same_mapping(entry))
            {
                continue;
            }
            let opener = if entry.is_file() {
                opener_for(pid, entry, path, same_namespace)
            } else if path.starts_with('[') {
                None
            } else {
                continue;
            };
            self.modules.push(Module {
                start: entry.start,
                end: entry.end,
                file_offset: entry.offset,
                path: path.to_owned(),
                dev: (entry.dev_major, entry.dev_minor),
                inode: entry.inode,
                opener,
            });
        }
    }

    /// Locates `addr` in a recorded file mapping; `None` for addresses outside any, in pseudo
    /// mappings, or in files that cannot be opened.
    pub fn normalize(&self, addr: u64) -> Option<Normalized> {
        let module = self.lookup(addr)?;
        let opener = module.opener.as_ref()?;
        Some(Normalized {
            module: module.path.clone(),
            open_path: opener.open_path(),
            file_offset: addr - module.start + module.file_offset,
        })
    }

    /// The newest recorded mapping containing `addr`.
    fn lookup(&self, addr: u64) -> Option<&Module> {
        self.modules
            .iter()
            .rev()
            .find(|m| m.start <= addr && addr < m.end)
    }

    /// The descriptor-based paths handed out, which name other files once closed.
    fn fd_paths(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.modules
            .iter()
            .filter_map(|m| m.opener.as_ref())
            .filter(|o| matches!(o, Opener::Fd(_)))
            .map(Opener::open_path)
    }
}

/// Whether `pid` sees the same root directory (mount namespace and chroot) as we do.
fn same_root(pid: Pid) -> bool {
    let same_file = |theirs: String, ours: &str| match (fs::metadata(theirs), fs::metadata(ours)) {
        (Ok(theirs), Ok(ours)) => theirs.dev() == ours.dev() && theirs.ino() == ours.ino(),
        _ => false,
    };
    // The same root directory is not enough: another mount namespace (PrivateTmp, a container)
    // can mount other files under the same paths.
    same_file(format!("/proc/{pid}/root"), "/")
        && same_file(format!("/proc/{pid}/ns/mnt"), "/proc/self/ns/mnt")
}

/// A way to open the file of `entry` later: its path when it names the same file for us,
/// otherwise a descriptor held open through `/proc/PID/map_files`.
fn opener_for(pid: Pid, entry: &MapEntry, path: &str, same_namespace: bool) -> Option<Opener> {
    if same_namespace && !entry.deleted {
        return Some(Opener::Path(PathBuf::from(path)));
    }
    let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", entry.start, entry.end);
    match File::open(&map_file) {
        Ok(file) => Some(Opener::Fd(file)),
        Err(err) => {
            log::debug!("cannot open {map_file} for {path}: {err}");
            // Still alive in the process's view of the file system, maybe.
            (!entry.deleted).then(|| {
                let relative = path.trim_start_matches('/');
                Opener::Path(Path::new(&format!("/proc/{pid}/root")).join(relative))
            })
        }
    }
}

/// How long a file's parsed ELF and DWARF stay cached after their last use.
pub const CACHE_IDLE: Duration = Duration::from_secs(300);
/// Most files whose parsed data stay cached; the least recently used go first.
const MAX_CACHED_FILES: usize = 32;

/// Symbolizes addresses against a [`ModuleHistory`], caching the parsed ELF and DWARF of each
/// file (and its mapping) across calls, so that a library every traced process shares, such as
/// libc, is read once. What is cached is bounded: [`trim`](Self::trim) drops files unused for
/// [`CACHE_IDLE`], deleted or replaced files, and the least recently used beyond a count.
#[derive(Debug)]
pub struct Symbolizer {
    inner: bz::Symbolizer,
    /// The files blazesym caches (by the path it opened), each with its last use.
    cached: HashMap<PathBuf, Cached>,
}

/// A file blazesym caches.
#[derive(Debug)]
struct Cached {
    last_used: Instant,
    /// The file's (device, inode) when it was cached; `None` for a descriptor path.
    identity: Option<(u64, u64)>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Where one input address is looked up.
enum Place<'h> {
    /// In a file: the index of its group, and the index in that group.
    File { group: usize, index: usize },
    /// Outside any file we can read: a frame with this module, if any.
    Unknown(Option<&'h str>),
}

/// The addresses looked up in one file.
struct Group<'h> {
    open_path: PathBuf,
    module: &'h str,
    offsets: Vec<u64>,
}

impl Symbolizer {
    /// A symbolizer with source locations, inlined functions and demangling (C++ and Rust).
    pub fn new() -> Self {
        let inner = bz::Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Symbolizer {
            inner,
            cached: HashMap::new(),
        }
    }

    /// Symbolizes return addresses: one `Vec` of frames per address, in input order, each
    /// innermost first (inlined functions, then the function they were inlined into). Addresses
    /// outside any file give one frame without a symbol, and a module only for pseudo mappings
    /// (`[vdso]`). A file that cannot be read gives frames without symbols for its addresses.
    pub fn symbolize(&mut self, history: &ModuleHistory, addrs: &[u64]) -> Vec<Vec<Frame>> {
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut group_of: HashMap<PathBuf, usize> = HashMap::new();
        let places: Vec<Place<'_>> = addrs
            .iter()
            .map(|&addr| {
                // A return address follows the call: step back into the call instruction.
                let lookup = addr.saturating_sub(1);
                let Some(module) = history.lookup(lookup) else {
                    return Place::Unknown(None);
                };
                let Some(opener) = &module.opener else {
                    return Place::Unknown(Some(&module.path));
                };
                let open_path = opener.open_path();
                let group = *group_of.entry(open_path.clone()).or_insert_with(|| {
                    groups.push(Group {
                        open_path,
                        module: &module.path,
                        offsets: Vec::new(),
                    });
                    groups.len() - 1
                });
                let offsets = &mut groups[group].offsets;
                offsets.push(lookup - module.start + module.file_offset);
                Place::File {
                    group,
                    index: offsets.len() - 1,
                }
            })
            .collect();

        let now = Instant::now();
        for group in &groups {
            self.cached
                .entry(group.open_path.clone())
                .and_modify(|cached| cached.last_used = now)
                .or_insert_with(|| Cached {
                    last_used: now,
                    identity: (!is_fd_path(&group.open_path))
                        .then(|| file_identity(&group.open_path))
                        .flatten(),
                });
        }
        let resolved: Vec<Vec<Option<bz::Sym<'_>>>> =
            groups.iter().map(|group| self.resolve(group)).collect();

        places
            .into_iter()
            .zip(addrs)
            .map(|(place, &address)| match place {
                Place::Unknown(module) => vec![unknown_frame(address, module)],
                Place::File { group, index } => {
                    let module = groups[group].module;
                    match resolved[group].get(index).and_then(Option::as_ref) {
                        Some(sym) => frames_of(address, module, sym),
                        None => vec![unknown_frame(address, Some(module))],
                    }
                }
            })
            .collect()
    }

    /// Forgets the cached data of the files `history` handed out as `/proc/self/fd/N`, then
    /// [`trim`](Self::trim)s; call it before dropping the history, whose descriptors are then
    /// closed and their numbers reused.
    pub fn forget(&mut self, history: &ModuleHistory) {
        for path in history.fd_paths() {
            self.evict(&path);
        }
        self.trim(Instant::now());
    }

    /// Drops the cached data of files unused since `now - CACHE_IDLE`, of files deleted or
    /// replaced since they were cached (their mapping would pin the old file), and of the least
    /// recently used beyond the most kept; then returns the freed heap to the system.
    pub fn trim(&mut self, now: Instant) {
        let mut stale: Vec<PathBuf> = self
            .cached
            .iter()
            .filter(|(path, cached)| {
                now.saturating_duration_since(cached.last_used) > CACHE_IDLE
                    || cached
                        .identity
                        .is_some_and(|identity| file_identity(path) != Some(identity))
            })
            .map(|(path, _)| path.clone())
            .collect();
        let kept = self.cached.len() - stale.len();
        if kept > MAX_CACHED_FILES {
            let mut by_age: Vec<(&PathBuf, Instant)> = self
                .cached
                .iter()
                .filter(|(path, _)| !stale.contains(path))
                .map(|(path, cached)| (path, cached.last_used))
                .collect();
            by_age.sort_by_key(|&(_, last_used)| last_used);
            let oldest = by_age.into_iter().take(kept - MAX_CACHED_FILES);
            let oldest: Vec<PathBuf> = oldest.map(|(path, _)| path.clone()).collect();
            stale.extend(oldest);
        }
        if stale.is_empty() {
            return;
        }
        for path in stale {
            self.evict(&path);
        }
        // A large program's DWARF index is tens of MiB of small allocations; once freed, give
        // the pages back rather than keep them in the allocator's free lists.
        // SAFETY: malloc_trim has no preconditions.
        unsafe { libc::malloc_trim(0) };
    }

    fn evict(&mut self, path: &Path) {
        self.cached.remove(path);
        let evict = bz::evict::Evict::Elf(bz::evict::Elf::new(path));
        if let Err(err) = self.inner.evict(&evict) {
            log::debug!("cannot evict {}: {err}", path.display());
        }
    }

    /// Looks up the offsets of one group; `None` for each one blazesym could not resolve.
    fn resolve(&self, group: &Group<'_>) -> Vec<Option<bz::Sym<'_>>> {
        let source = Source::Elf(Elf::new(&group.open_path));
        match self
            .inner
            .symbolize(&source, Input::FileOffset(&group.offsets))
        {
            Ok(symbols) => symbols.into_iter().map(Symbolized::into_sym).collect(),
            Err(err) => {
                log::debug!(
                    "cannot symbolize in {} ({}): {err}",
                    group.module,
                    group.open_path.display()
                );
                Vec::new()
            }
        }
    }
}

/// Whether `path` is a `/proc/self/fd/N` path of a descriptor a [`ModuleHistory`] holds.
fn is_fd_path(path: &Path) -> bool {
    path.starts_with("/proc/self/fd")
}

/// The (device, inode) of the file at `path`, if there is one.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

fn unknown_frame(address: u64, module: Option<&str>) -> Frame {
    Frame {
        address,
        symbol: None,
        module: module.map(str::to_owned),
        file: None,
        line: None,
        inlined: false,
        ..Default::default()
    }
}

/// The frames of one resolved address: the inlined functions innermost first, then the
/// function they are in. Each frame's location is the one inside its own function.
fn frames_of(address: u64, module: &str, sym: &bz::Sym<'_>) -> Vec<Frame> {
    let frame = |name: &str, code_info: Option<&bz::CodeInfo<'_>>, inlined: bool| Frame {
        address,
        symbol: Some(name.to_owned()),
        module: Some(module.to_owned()),
        file: code_info.map(|c| c.to_path().to_string_lossy().into_owned()),
        line: code_info.and_then(|c| c.line),
        inlined,
        ..Default::default()
    };
    sym.inlined
        .iter()
        .rev()
        .map(|f| frame(&f.name, f.code_info.as_ref(), true))
        .chain(std::iter::once(frame(
            &sym.name,
            sym.code_info.as_deref(),
            false,
        )))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::procfs;

    use std::ffi::{CStr, CString};
    use std::process::Command;

    #[inline(never)]
    fn marker_function(x: u64) -> u64 {
        std::hint::black_box(x).wrapping_mul(3)
    }
    const MARKER_LINE: u32 = line!() - 3;

    fn refreshed() -> ModuleHistory {
        let mut history = ModuleHistory::new();
        history.record(
            std::process::id(),
            &procfs::read_maps(std::process::id()).unwrap(),
        );
        history
    }

    /// The address of a function, plus one, as if it were a return address into it.
    fn return_address_into(addr: usize) -> u64 {
        addr as u64 + 1
    }

    #[test]
    fn symbolizes_a_rust_function_with_its_source_line() {
        assert_eq!(marker_function(2), 6);
        let history = refreshed();
        let addr = return_address_into(marker_function as fn(u64) -> u64 as usize);
        let frames = Symbolizer::new().symbolize(&history, &[addr]);
        assert_eq!(frames.len(), 1);
        let frame = frames[0].last().unwrap();
        assert_eq!(frame.address, addr);
        assert_eq!(
            frame.symbol.as_deref(),
            Some("monitor_daemon::symbolize::symbolizer::tests::marker_function")
        );
        let exe = std::env::current_exe().unwrap();
        assert_eq!(frame.module.as_deref(), exe.to_str());
        let file = frame.file.as_deref().unwrap();
        assert!(
            file.starts_with('/') && file.ends_with("src/symbolize/symbolizer.rs"),
            "{file}"
        );
        assert_eq!(frame.line, Some(MARKER_LINE));
        assert!(!frame.inlined);

        let normalized = history.normalize(addr - 1).unwrap();
        assert_eq!(Some(normalized.module.as_str()), exe.to_str());
        assert_eq!(normalized.open_path, exe);
    }

    fn dlsym(handle: *mut libc::c_void, name: &CStr) -> usize {
        // SAFETY: `handle` is RTLD_DEFAULT or a live handle from dlopen, `name` a C string.
        let addr = unsafe { libc::dlsym(handle, name.as_ptr()) };
        assert!(!addr.is_null(), "no {name:?}");
        addr as usize
    }

    #[test]
    fn symbolizes_malloc_in_libc() {
        let history = refreshed();
        let malloc = dlsym(libc::RTLD_DEFAULT, c"malloc");
        let maps = procfs::read_maps(std::process::id()).unwrap();
        let libc_path = maps
            .iter()
            .find(|m| m.start <= malloc as u64 && (malloc as u64) < m.end)
            .and_then(|m| m.path.clone())
            .unwrap();
        assert!(libc_path.contains("libc"), "{libc_path}");

        let frames = Symbolizer::new().symbolize(&history, &[return_address_into(malloc)]);
        let frame = frames[0].last().unwrap();
        let symbol = frame.symbol.as_deref().unwrap();
        assert!(
            symbol == "malloc" || symbol.ends_with("_malloc"),
            "{frames:?}"
        );
        assert_eq!(frame.module.as_deref(), Some(libc_path.as_str()));
    }

    #[test]
    fn addresses_outside_files_have_no_symbol() {
        let history = refreshed();
        let heap = Box::new(0u64);
        let heap_addr = &*heap as *const u64 as u64;
        let vdso_text = procfs::read_maps(std::process::id())
            .unwrap()
            .into_iter()
            .find(|m| m.path.as_deref() == Some("[vdso]"))
            .map(|m| m.start + 16);
        let rust = return_address_into(marker_function as fn(u64) -> u64 as usize);
        let mut addrs = vec![heap_addr, rust, 0];
        addrs.extend(vdso_text);

        let frames = Symbolizer::new().symbolize(&history, &addrs);
        assert_eq!(frames.len(), addrs.len());
        assert_eq!(frames[0], vec![unknown_frame(heap_addr, None)]);
        assert!(frames[1].last().unwrap().symbol.is_some());
        assert_eq!(frames[2], vec![unknown_frame(0, None)]);
        if let Some(&vdso_addr) = addrs.get(3) {
            assert_eq!(frames[3], vec![unknown_frame(vdso_addr, Some("[vdso]"))]);
        }
        assert!(history.normalize(heap_addr).is_none());
    }

    #[test]
    fn frames_are_innermost_first() {
        let inlined = bz::InlinedFn {
            name: "inner".into(),
            code_info: Some(bz::CodeInfo {
                dir: Some(Path::new("/src").into()),
                file: std::ffi::OsStr::new("inner.rs").into(),
                line: Some(3),
                column: None,
                _non_exhaustive: (),
            }),
            _non_exhaustive: (),
        };
        let middle = bz::InlinedFn {
            name: "middle".into(),
            code_info: None,
            _non_exhaustive: (),
        };
        let sym = bz::Sym {
            name: "outer".into(),
            module: None,
            addr: 0x1000,
            offset: 4,
            size: None,
            code_info: Some(Box::new(bz::CodeInfo {
                dir: None,
                file: std::ffi::OsStr::new("outer.rs").into(),
                line: Some(9),
                column: None,
                _non_exhaustive: (),
            })),
            inlined: vec![middle, inlined].into_boxed_slice(),
            _non_exhaustive: (),
        };
        let frames = frames_of(0x1005, "/lib/x.so", &sym);
        let names: Vec<_> = frames.iter().map(|f| f.symbol.as_deref()).collect();
        assert_eq!(names, [Some("inner"), Some("middle"), Some("outer")]);
        assert_eq!(
            frames.iter().map(|f| f.inlined).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(frames[0].file.as_deref(), Some("/src/inner.rs"));
        assert_eq!(frames[0].line, Some(3));
        assert_eq!(frames[1].file, None);
        assert_eq!(frames[2].file.as_deref(), Some("outer.rs"));
        assert!(frames.iter().all(|f| f.address == 0x1005));
        assert!(
            frames
                .iter()
                .all(|f| f.module.as_deref() == Some("/lib/x.so"))
        );
    }

    /// A shared library built for one test, with one exported function, removed on drop.
    struct TestLibrary {
        dir: PathBuf,
        path: PathBuf,
    }

    impl TestLibrary {
        fn build(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("leakmon-symbolize-{name}-{}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            let source = dir.join("lib.c");
            fs::write(
                &source,
                "int leakmon_test_function(int x) { return x * 7 + 1; }\n",
            )
            .unwrap();
            let path = dir.join(format!("lib{name}.so"));
            let status = Command::new("cc")
                .args(["-shared", "-fPIC", "-O1", "-o"])
                .arg(&path)
                .arg(&source)
                .status()
                .unwrap();
            assert!(status.success());
            TestLibrary { dir, path }
        }
    }

    impl Drop for TestLibrary {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    /// Loads `library`, lets `before_refresh` act on it, records the modules, takes the address
    /// of its function and unloads it; checks it is gone from the maps and still resolves.
    /// Returns where the history opens the library.
    fn check_unloaded_library(library: &TestLibrary, before_refresh: impl FnOnce()) -> PathBuf {
        let c_path = CString::new(library.path.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; the library has no constructors.
        let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!handle.is_null());
        before_refresh();
        let history = refreshed();
        let function = dlsym(handle, c"leakmon_test_function");
        // SAFETY: the handle came from dlopen and is closed once.
        assert_eq!(unsafe { libc::dlclose(handle) }, 0);
        let maps = procfs::read_maps(std::process::id()).unwrap();
        assert!(
            !maps
                .iter()
                .any(|m| m.start <= function as u64 && (function as u64) < m.end),
            "still mapped after dlclose"
        );

        let addr = return_address_into(function);
        let mut symbolizer = Symbolizer::new();
        let frames = symbolizer.symbolize(&history, &[addr]);
        let frame = frames[0].last().unwrap();
        assert_eq!(frame.symbol.as_deref(), Some("leakmon_test_function"));
        assert_eq!(frame.module.as_deref(), library.path.to_str());
        symbolizer.forget(&history);
        let frames = symbolizer.symbolize(&history, &[addr]);
        assert_eq!(
            frames[0].last().unwrap().symbol.as_deref(),
            Some("leakmon_test_function")
        );
        let normalized = history.normalize(addr - 1).unwrap();
        assert_eq!(Some(normalized.module.as_str()), library.path.to_str());
        normalized.open_path
    }

    /// Whether this process maps `path`.
    fn maps_file(path: &Path) -> bool {
        procfs::read_maps(std::process::id())
            .unwrap()
            .iter()
            .any(|m| m.path.as_deref() == path.to_str())
    }

    /// A history holding `library` mapped at 0x10000, and the return address of a call into
    /// its function.
    fn history_of(library: &TestLibrary) -> (ModuleHistory, u64) {
        let history = ModuleHistory {
            modules: vec![Module {
                start: 0x10000,
                end: 0x20000,
                file_offset: 0,
                path: library.path.display().to_string(),
                dev: (0, 0),
                inode: 0,
                opener: Some(Opener::Path(library.path.clone())),
            }],
        };
        (history, 0x10000 + 0x1100)
    }

    #[test]
    fn trim_releases_idle_deleted_and_surplus_files() {
        let idle = TestLibrary::build("idle");
        let deleted = TestLibrary::build("removed");
        let mut symbolizer = Symbolizer::new();
        for library in [&idle, &deleted] {
            let (history, addr) = history_of(library);
            symbolizer.symbolize(&history, &[addr]);
            assert!(maps_file(&library.path), "blazesym maps what it reads");
        }
        let now = Instant::now();
        symbolizer.trim(now);
        assert!(maps_file(&idle.path) && maps_file(&deleted.path));

        fs::remove_file(&deleted.path).unwrap();
        symbolizer.trim(now);
        assert!(!symbolizer.cached.contains_key(&deleted.path));
        assert!(symbolizer.cached.contains_key(&idle.path));
        let deleted_mapped = procfs::read_maps(std::process::id())
            .unwrap()
            .iter()
            .any(|m| m.deleted && m.path.as_deref() == deleted.path.to_str());
        assert!(!deleted_mapped, "a deleted file stays mapped");

        symbolizer.trim(now + CACHE_IDLE + Duration::from_secs(1));
        assert!(symbolizer.cached.is_empty());
        assert!(!maps_file(&idle.path), "an idle file stays mapped");

        for index in 0..MAX_CACHED_FILES + 3 {
            symbolizer.cached.insert(
                PathBuf::from(format!("/nonexistent/{index}")),
                Cached {
                    last_used: now + Duration::from_millis(index as u64),
                    identity: None,
                },
            );
        }
        symbolizer.trim(now);
        assert_eq!(symbolizer.cached.len(), MAX_CACHED_FILES);
        assert!(!symbolizer.cached.contains_key(Path::new("/nonexistent/2")));
        assert!(symbolizer.cached.contains_key(Path::new("/nonexistent/3")));
    }

    #[test]
    fn resolves_a_dlclosed_library() {
        let library = TestLibrary::build("closed");
        let open_path = check_unloaded_library(&library, || ());
        assert_eq!(open_path, library.path);
    }

    #[test]
    fn resolves_a_deleted_and_dlclosed_library() {
        let library = TestLibrary::build("deleted");
        let open_path =
            check_unloaded_library(&library, || fs::remove_file(&library.path).unwrap());
        assert!(!library.path.exists());
        assert!(open_path.starts_with("/proc/self/fd/"), "{open_path:?}");
    }

    #[test]
    fn refresh_records_each_mapping_once_and_newest_wins() {
        // Other tests load libraries concurrently: count only the test binary's mappings.
        let exe = std::env::current_exe().unwrap();
        let exe_modules = |h: &ModuleHistory| {
            h.modules
                .iter()
                .filter(|m| Some(m.path.as_str()) == exe.to_str())
                .count()
        };
        let mut history = refreshed();
        let count = exe_modules(&history);
        assert!(count > 0);
        history.record(
            std::process::id(),
            &procfs::read_maps(std::process::id()).unwrap(),
        );
        assert_eq!(exe_modules(&history), count);

        let rust = marker_function as fn(u64) -> u64 as usize as u64;
        let current = history.lookup(rust).unwrap();
        let (start, end) = (current.start, current.end);
        history.modules.push(Module {
            start,
            end,
            file_offset: 0,
            path: "[newer]".into(),
            dev: (0, 0),
            inode: 0,
            opener: None,
        });
        assert_eq!(history.lookup(rust).unwrap().path, "[newer]");
        assert!(history.normalize(rust).is_none());
        history.record(
            std::process::id(),
            &procfs::read_maps(std::process::id()).unwrap(),
        );
        assert_eq!(exe_modules(&history), count + 1);
        assert!(history.normalize(rust).is_some());
    }

    #[test]
    fn a_missing_process_is_gone() {
        let err = procfs::read_maps((1 << 22) + 17).unwrap_err();
        assert!(matches!(err, procfs::ProcError::Gone { .. }), "{err}");
    }
}
