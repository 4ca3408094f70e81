//! Compiles the scenario programs of `scenarios/` with gcc and g++ into `$OUT_DIR/scenarios/`
//! and exports that directory to the crate as `SCENARIO_DIR`.
use std::env;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which compiler a scenario needs.
#[derive(Clone, Copy)]
enum Language {
    C,
    Cxx,
}

impl Language {
    fn compiler(self) -> &'static str {
        match self {
            Language::C => "gcc",
            Language::Cxx => "g++",
        }
    }
}

/// One program to build.
struct Program {
    /// File name of the output in the scenario directory.
    output: &'static str,
    /// Source file in `scenarios/`.
    source: &'static str,
    language: Language,
    /// Optimisation level.
    optimisation: &'static str,
    /// Built as [`FLAGS`] say (frame pointers, no inlining) or, when false, as distributions
    /// build their packages ([`DISTRIBUTION_FLAGS`]).
    frame_pointers: bool,
    /// Flags after the source file (libraries, link mode).
    extra: &'static [&'static str],
}

/// Keep frame pointers everywhere, and keep every function a real call with its own frame, so
/// a frame-pointer walk would see each scenario function.
const FLAGS: &[&str] = &[
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-fno-inline",
    "-pthread",
    "-Wall",
    "-Wextra",
];

/// As Debian (and most distributions) build packages: optimised, no frame pointers (GCC's
/// default at -O2 on x86-64), call-frame information only in `.eh_frame`. Only the functions
/// the scenarios mark `noinline` keep frames of their own.
const DISTRIBUTION_FLAGS: &[&str] = &[
    "-O2",
    "-g",
    "-fomit-frame-pointer",
    "-pthread",
    "-Wall",
    "-Wextra",
];

const fn scenario(output: &'static str, source: &'static str, language: Language) -> Program {
    Program {
        output,
        source,
        language,
        optimisation: "-O1",
        frame_pointers: true,
        extra: &[],
    }
}

/// A scenario built as a distribution would build it ([`DISTRIBUTION_FLAGS`]).
const fn distribution(output: &'static str, source: &'static str, language: Language) -> Program {
    Program {
        frame_pointers: false,
        ..scenario(output, source, language)
    }
}

const PROGRAMS: &[Program] = &[
    scenario("steady_leak", "steady_leak.c", Language::C),
    scenario("error_path_leak", "error_path_leak.c", Language::C),
    scenario("flood_leak", "flood_leak.c", Language::C),
    scenario("exception_leak", "exception_leak.cpp", Language::Cxx),
    scenario("realloc_chain", "realloc_chain.c", Language::C),
    scenario("mmap_leak", "mmap_leak.c", Language::C),
    Program {
        extra: &["-ldl"],
        ..scenario("dlopen_plugin", "dlopen_plugin.c", Language::C)
    },
    Program {
        extra: &["-shared", "-fPIC"],
        ..scenario("libleak_plugin.so", "leak_plugin.c", Language::C)
    },
    scenario("thread_leak", "thread_leak.c", Language::C),
    scenario("aligned_leak", "aligned_leak.c", Language::C),
    scenario("realloc_semantics", "realloc_semantics.c", Language::C),
    scenario("cache_plateau", "cache_plateau.c", Language::C),
    scenario("cache_turnover", "cache_turnover.c", Language::C),
    scenario("index_retained", "index_retained.c", Language::C),
    scenario("stuck_workers", "stuck_workers.c", Language::C),
    scenario("thread_pool", "thread_pool.c", Language::C),
    scenario("sawtooth", "sawtooth.c", Language::C),
    scenario("churn", "churn.c", Language::C),
    scenario("rss_leak", "rss_leak.c", Language::C),
    scenario("vsz_leak", "vsz_leak.c", Language::C),
    scenario("fd_leak", "fd_leak.c", Language::C),
    scenario(
        "startup_then_plateau",
        "startup_then_plateau.c",
        Language::C,
    ),
    Program {
        extra: &["-static", "-nostdlib", "-fno-stack-protector"],
        ..scenario("static_prog", "static_prog.c", Language::C)
    },
    Program {
        optimisation: "-O2",
        ..scenario("bench_loop", "bench_loop.c", Language::C)
    },
    scenario("churn_spawner", "churn_spawner.c", Language::C),
    scenario("churn_child", "churn_child.c", Language::C),
    scenario("many_blocks", "many_blocks.c", Language::C),
    scenario("exec_into", "exec_into.c", Language::C),
    scenario("deny_mount", "deny_mount.c", Language::C),
    // The same leaks built as distribution packages are, without frame pointers.
    distribution("steady_leak_nofp", "steady_leak.c", Language::C),
    distribution("error_path_leak_nofp", "error_path_leak.c", Language::C),
    distribution("exception_leak_nofp", "exception_leak.cpp", Language::Cxx),
    distribution("realloc_chain_nofp", "realloc_chain.c", Language::C),
    distribution("mmap_leak_nofp", "mmap_leak.c", Language::C),
    distribution("thread_leak_nofp", "thread_leak.c", Language::C),
    Program {
        extra: &["-shared", "-fPIC"],
        ..distribution("libleak_helper.so", "leak_helper.c", Language::C)
    },
    Program {
        // The helper library sits beside the program; the tests run it from there.
        extra: &["-L", "$OUT", "-lleak_helper", "-Wl,-rpath,$ORIGIN"],
        ..distribution("wrapper_leak", "wrapper_leak.c", Language::C)
    },
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let source_dir = manifest_dir.join("scenarios");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("scenarios");
    std::fs::create_dir_all(&out_dir)
        .unwrap_or_else(|error| panic!("creating {}: {error}", out_dir.display()));

    println!("cargo:rerun-if-changed=build.rs");
    for header in ["scenario.h", "leak_helper.h"] {
        println!(
            "cargo:rerun-if-changed={}",
            source_dir.join(header).display()
        );
    }
    for program in PROGRAMS {
        let source = source_dir.join(program.source);
        println!("cargo:rerun-if-changed={}", source.display());
        compile(program, &source, &source_dir, &out_dir.join(program.output));
    }
    compile_go(&source_dir.join("go_leak"), &out_dir.join("go_leak"));
    println!("cargo:rustc-env=SCENARIO_DIR={}", out_dir.display());
}

/// Builds the Go scenario in `package_dir` as `go build` builds any Go program: statically,
/// without cgo (so it has no C allocator at all), with the toolchain's caches in `OUT_DIR`.
fn compile_go(package_dir: &Path, output: &Path) {
    let main = package_dir.join("main.go");
    println!("cargo:rerun-if-changed={}", main.display());
    let cache = output.with_extension("go-cache");
    let result = match Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(output)
        .arg(&main)
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("path"))
        .env("GOFLAGS", "")
        .output()
    {
        Ok(result) => result,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!(
            "`go` was not found: the leakmon test scenarios need Go (Debian: apt-get install \
             golang-go; cargo xtask setup installs it)"
        ),
        Err(error) => panic!("running `go build`: {error}"),
    };
    if !result.status.success() {
        panic!(
            "go build of {} failed ({}):\n{}",
            main.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

fn compile(program: &Program, source: &Path, include_dir: &Path, output: &Path) {
    let compiler = program.language.compiler();
    let mut command = Command::new(compiler);
    if program.frame_pointers {
        command.arg(program.optimisation).args(FLAGS);
    } else {
        command.args(DISTRIBUTION_FLAGS);
    }
    command
        .arg("-I")
        .arg(include_dir)
        .arg("-o")
        .arg(output)
        .arg(source)
        .args(program.extra.iter().map(|arg| {
            arg.replace(
                "$OUT",
                &output.parent().unwrap_or(output).display().to_string(),
            )
        }));
    let result = match command.output() {
        Ok(result) => result,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!(
            "`{compiler}` was not found: the leakmon test scenarios need gcc and g++ \
             (Debian: apt-get install gcc g++)"
        ),
        Err(error) => panic!("running `{compiler}`: {error}"),
    };
    if !result.status.success() {
        panic!(
            "{compiler} failed to build {} ({}):\n{}",
            output.display(),
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
    }
    for line in String::from_utf8_lossy(&result.stderr).lines() {
        println!("cargo:warning={}: {line}", program.source);
    }
}
