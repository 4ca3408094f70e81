//! Where things are (workspace root, target directory, cargo's bin directory) and how xtask runs
//! the programs it drives: every child gets cargo's bin directory on its `PATH` and the workspace
//! root as its working directory, and its command line is echoed before it starts.
use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// The workspace root: the parent of this package's directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace root.
pub fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| workspace_root().join(dir))
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The user's home directory.
pub fn home_dir() -> Result<PathBuf> {
    env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, by default `~/.cargo/bin`.
fn cargo_bin_dir() -> Result<PathBuf> {
    let cargo_home = match env::var_os("CARGO_HOME").filter(|dir| !dir.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => home_dir()?.join(".cargo"),
    };
    Ok(cargo_home.join("bin"))
}

/// `PATH` with cargo's bin directory in front unless it is already on it, so tools installed by
/// `cargo install` (bpf-linker) are found by this process's children.
fn search_path() -> Result<OsString> {
    let bin = cargo_bin_dir()?;
    let current = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&current).any(|dir| dir == bin) {
        return Ok(current);
    }
    env::join_paths(std::iter::once(bin).chain(env::split_paths(&current)))
        .context("cargo's bin directory cannot be put on PATH")
}

/// A command for `program`, run in the workspace root with cargo's bin directory on `PATH`.
pub fn command(program: impl AsRef<OsStr>) -> Result<Command> {
    let mut command = Command::new(program);
    command
        .current_dir(workspace_root())
        .env("PATH", search_path()?);
    Ok(command)
}

/// A command for the cargo that runs xtask (`CARGO`), or the one on `PATH`.
pub fn cargo() -> Result<Command> {
    command(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The command line as a shell would show it, with the environment variables it sets.
pub fn display(command: &Command) -> String {
    let envs = command.get_envs().filter_map(|(key, value)| {
        let value = value?;
        (key != "PATH").then(|| format!("{}={}", key.display(), value.display()))
    });
    let program = Path::new(command.get_program());
    let program = program.file_name().unwrap_or(program.as_os_str());
    let args = command.get_args().map(|arg| arg.display().to_string());
    envs.chain(std::iter::once(program.display().to_string()))
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Echoes `command`, runs it with inherited stdio and fails unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let line = display(command);
    println!("$ {line}");
    let status = command
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns its standard output; fails unless it exits successfully.
pub fn output(command: &mut Command) -> Result<String> {
    let line = display(command);
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !output.status.success() {
        bail!("`{line}` failed ({})", output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}
