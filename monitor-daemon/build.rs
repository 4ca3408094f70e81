//! Builds the kernel programs of `monitor-ebpf` for the BPF target with the stable toolchain and
//! leaves the object in `OUT_DIR`, where `src/trace/tracer.rs` embeds it into the `leakmon`
//! binary.
//!
//! It runs the nested cargo itself rather than through aya-build, which echoes every line of
//! cargo's progress as a build-script warning: here a successful build shows only the compiler's
//! real warnings about the kernel programs, and a failed one its errors.
use std::io::{BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context as _, anyhow, bail};
use cargo_metadata::{Artifact, Message};

/// The kernel programs' package and the binary it builds.
const PACKAGE: &str = "monitor-ebpf";
const BINARY: &str = "monitor";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading the workspace metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|package| package.name.as_str() == PACKAGE)
        .ok_or_else(|| anyhow!("{PACKAGE} is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", ebpf.manifest_path))?;
    let common_dir = root_dir
        .parent()
        .ok_or_else(|| anyhow!("{root_dir} has no parent directory"))?
        .join("monitor-common");
    println!("cargo:rerun-if-changed={root_dir}");
    println!("cargo:rerun-if-changed={common_dir}");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR is not set")?);
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let endian = std::env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    let target = if endian == "big" {
        "bpfeb-unknown-none"
    } else {
        "bpfel-unknown-none"
    };

    // `rustup run stable` pins the toolchain (the build script may run under another one's
    // cargo); RUSTC_BOOTSTRAP lets stable accept `-Z build-std=core`, which the BPF target
    // needs as it ships no precompiled core.
    let mut command = Command::new("rustup");
    command
        .args(["run", "stable", "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--message-format=json"])
        .args(["--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(out_dir.join("ebpf-target"))
        .current_dir(root_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                &format!("--cfg=bpf_target_arch=\"{arch}\""),
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = BufReader::new(child.stdout.take().context("no stdout pipe")?);
    let mut executable = None;
    let mut diagnostics = Vec::new();
    for message in Message::parse_stream(stdout) {
        match message.context("the nested cargo's output is not JSON")? {
            Message::CompilerArtifact(Artifact {
                executable: Some(path),
                target,
                ..
            }) if target.name == BINARY => executable = Some(path),
            Message::CompilerMessage(message) => {
                diagnostics.push(message.message.rendered.unwrap_or_default());
            }
            _ => {}
        }
    }
    let status = child.wait().context("waiting for the nested cargo")?;
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        for diagnostic in &diagnostics {
            eprintln!("{diagnostic}");
        }
        eprintln!("{stderr}");
        bail!("building the kernel programs ({PACKAGE}) failed: {status}");
    }
    for line in diagnostics.iter().flat_map(|diagnostic| diagnostic.lines()) {
        println!("cargo:warning={line}");
    }
    let executable =
        executable.ok_or_else(|| anyhow!("the nested cargo built no `{BINARY}` binary"))?;
    std::fs::copy(&executable, out_dir.join(BINARY))
        .with_context(|| format!("copying {executable} into OUT_DIR"))?;
    Ok(())
}
