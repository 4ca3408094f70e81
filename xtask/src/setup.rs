//! `cargo xtask setup`: installs what building and testing leakmon needs and a fresh machine lacks
//! (the `rust-src` component, bpf-linker, Debian packages). Each item is checked first and only
//! installed when missing or broken, with one line printed per item, so a second run is quick.
use std::ffi::OsStr;
use std::fs;
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::process::{self, command, output, run};

/// Debian packages installed with apt-get, each with who needs it.
const DEBIAN_PACKAGES: &[&str] = &[
    // The end-to-end tests compile the C and C++ programs they trace.
    "g++",
    // The end-to-end tests scrape the daemon's metrics with the Prometheus server and check them
    // with promtool.
    "prometheus",
    // The end-to-end tests use valgrind's memcheck as the reference leak checker.
    "valgrind",
    // perf: the end-to-end tests measure the overhead leakmon adds to a traced program.
    "linux-perf",
    // The reliability tests read the kernel's own view of leakmon's BPF maps with bpftool.
    "bpftool",
    // The deploy tests check the systemd unit with systemd-analyze, and start it under systemd
    // booted with systemd-nspawn where systemd is not PID 1; the reliability tests use
    // util-linux's unshare and setpriv.
    "systemd",
    "systemd-container",
    "util-linux",
    // A program nobody on the team wrote, as a distribution builds it (-O2, no frame pointers,
    // linked with jemalloc): the end-to-end tests trace Debian's redis-server as a client grows
    // its data, and the benchmark measures its throughput under redis-benchmark.
    "redis-server",
    "redis-tools",
    // Go has no malloc to probe: the end-to-end tests build a Go program that leaks and find it
    // by its page faults.
    "golang-go",
];

/// Checks and installs everything; fails first thing when not running as root.
pub fn setup() -> Result<()> {
    require_root()?;
    rust_src()?;
    bpf_linker()?;
    debian_packages()
}

/// The kernel programs are loaded (tests) and packages installed (apt-get) as root only.
fn require_root() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective_uid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .context("/proc/self/status has no effective uid")?;
    if effective_uid != "0" {
        bail!("must run as root: apt-get installs packages and the tests load eBPF programs");
    }
    Ok(())
}

/// `-Z build-std=core` for the BPF target compiles core from the toolchain's sources.
fn rust_src() -> Result<()> {
    let installed = output(command("rustup")?.args(["component", "list", "--installed"]))?;
    if installed.lines().any(|line| line.trim() == "rust-src") {
        println!("setup: rust-src component: installed");
        return Ok(());
    }
    println!("setup: rust-src component: missing, installing");
    run(command("rustup")?.args(["component", "add", "rust-src"]))
}

/// bpf-linker links the kernel programs. It is built against the toolchain's own libLLVM (there
/// is no system LLVM) through a prefix directory of links to it, which its RUNPATH keeps
/// pointing at; when that library goes away (toolchain update) it stops starting and is rebuilt.
fn bpf_linker() -> Result<()> {
    match bpf_linker_version()? {
        Ok(version) => {
            println!("setup: bpf-linker: installed ({version})");
            return Ok(());
        }
        Err(problem) => println!("setup: bpf-linker: {problem}, installing"),
    }
    let toolchain = Toolchain::query()?;
    let prefix = llvm_prefix(&toolchain)?;
    run(process::cargo()?
        .env("LLVM_PREFIX", &prefix)
        .args(["install", "bpf-linker", "--locked", "--force"])
        .args(["--no-default-features", "--features"])
        .arg(format!("llvm-{}", toolchain.llvm_major)))?;
    match bpf_linker_version()? {
        Ok(version) => {
            println!("setup: bpf-linker: installed ({version})");
            Ok(())
        }
        Err(problem) => bail!("bpf-linker was just installed but {problem}"),
    }
}

/// The version bpf-linker prints, or why it is unusable. It runs without the `LD_LIBRARY_PATH`
/// cargo gives xtask (which holds the toolchain's libLLVM), as it would from a shell.
fn bpf_linker_version() -> Result<Result<String, String>> {
    let result = command("bpf-linker")?
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .output();
    Ok(match result {
        Err(error) if error.kind() == ErrorKind::NotFound => Err("not found".to_owned()),
        Err(error) => Err(format!("does not start ({error})")),
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        Ok(output) => Err(format!(
            "does not run ({}: {})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
    })
}

/// What bpf-linker is built against, from `rustc --print sysroot` and `rustc -vV`.
#[derive(Debug)]
struct Toolchain {
    sysroot: PathBuf,
    /// `release:`, e.g. `1.95.0`.
    release: String,
    /// The major version of `LLVM version:`, e.g. `22` of `22.1.2`.
    llvm_major: String,
}

impl Toolchain {
    fn query() -> Result<Self> {
        let sysroot = output(command("rustc")?.args(["--print", "sysroot"]))?;
        let version = output(command("rustc")?.arg("-vV"))?;
        let field = |name: &str| {
            version
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .with_context(|| format!("`rustc -vV` prints no `{name}` line"))
        };
        let llvm_version = field("LLVM version:")?;
        let llvm_major = llvm_version
            .split('.')
            .next()
            .filter(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
            .with_context(|| format!("cannot read LLVM version `{llvm_version}`"))?
            .to_owned();
        Ok(Self {
            sysroot: PathBuf::from(sysroot.trim()),
            release: field("release:")?,
            llvm_major,
        })
    }

    /// The toolchain's libLLVM shared object: the ELF file in the sysroot's `lib/` named
    /// `libLLVM…` (next to it, `libLLVM-<major>-….so` is a linker script naming it).
    fn libllvm(&self) -> Result<PathBuf> {
        let lib = self.sysroot.join("lib");
        let mut candidates = Vec::new();
        for entry in fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
            let path = entry?.path();
            let is_libllvm = path
                .file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|name| name.starts_with("libLLVM"));
            if is_libllvm && is_elf(&path)? {
                candidates.push(path);
            }
        }
        let release = format!("rust-{}", self.release);
        if candidates.len() > 1 {
            candidates.retain(|path| path.to_string_lossy().contains(&release));
        }
        match <[PathBuf; 1]>::try_from(candidates) {
            Ok([path]) => Ok(path),
            Err(candidates) => bail!(
                "expected one libLLVM shared object for {release} in {}, found {candidates:?}",
                lib.display()
            ),
        }
    }
}

/// Whether `path` is a regular file (not a link) starting with the ELF magic.
fn is_elf(path: &Path) -> Result<bool> {
    if !fs::symlink_metadata(path)?.is_file() {
        return Ok(false);
    }
    let mut magic = [0; 4];
    let mut file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(file.read_exact(&mut magic).is_ok() && magic == *b"\x7fELF")
}

/// Makes `<cache>/leakmon/llvm-prefix/lib` hold `libLLVM.so` and a link under the library's own
/// name (its soname, which the linked bpf-linker asks for), both to the toolchain's libLLVM.
fn llvm_prefix(toolchain: &Toolchain) -> Result<PathBuf> {
    let libllvm = toolchain.libllvm()?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    let prefix = cache_dir()?.join("leakmon").join("llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    for entry in fs::read_dir(&lib).with_context(|| format!("listing {}", lib.display()))? {
        let path = entry?.path();
        if fs::symlink_metadata(&path)?.is_symlink() {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    for name in [OsStr::new("libLLVM.so"), soname] {
        let link = lib.join(name);
        symlink(&libllvm, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "setup: LLVM prefix {} -> {}",
        prefix.display(),
        libllvm.display()
    );
    Ok(prefix)
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
fn cache_dir() -> Result<PathBuf> {
    match std::env::var_os("XDG_CACHE_HOME").filter(|dir| Path::new(dir).is_absolute()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(process::home_dir()?.join(".cache")),
    }
}

/// Installs the missing ones of [`DEBIAN_PACKAGES`], refreshing the package index first.
fn debian_packages() -> Result<()> {
    let mut missing = Vec::new();
    for &package in DEBIAN_PACKAGES {
        let status = command("dpkg-query")?
            .args(["-W", "-f=${Status}", package])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("cannot start dpkg-query")?;
        let installed = status.status.success() && status.stdout == b"install ok installed";
        println!(
            "setup: Debian package {package}: {}",
            if installed { "installed" } else { "missing" }
        );
        if !installed {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    run(command("apt-get")?.arg("update"))?;
    run(command("apt-get")?
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
}

/// Installs the cargo subcommand `cargo SUBCOMMAND` from the crate `krate` unless
/// `cargo SUBCOMMAND --version` already works; `task` prefixes the lines it prints.
pub fn ensure_cargo_tool(task: &str, subcommand: &str, krate: &str) -> Result<()> {
    match cargo_tool_version(subcommand)? {
        Ok(version) => {
            println!("{task}: {krate}: installed ({version})");
            return Ok(());
        }
        Err(problem) => println!("{task}: {krate}: {problem}, installing"),
    }
    run(process::cargo()?.args(["install", krate, "--locked"]))?;
    match cargo_tool_version(subcommand)? {
        Ok(version) => {
            println!("{task}: {krate}: installed ({version})");
            Ok(())
        }
        Err(problem) => bail!("{krate} was just installed but {problem}"),
    }
}

/// The version `cargo SUBCOMMAND --version` prints, or why it does not run.
fn cargo_tool_version(subcommand: &str) -> Result<std::result::Result<String, String>> {
    let result = process::cargo()?
        .args([subcommand, "--version"])
        .stdin(Stdio::null())
        .output();
    Ok(match result {
        Err(error) if error.kind() == ErrorKind::NotFound => Err("cargo not found".to_owned()),
        Err(error) => Err(format!("does not start ({error})")),
        Ok(output) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        }
        Ok(_) => Err("not found".to_owned()),
    })
}
