//! `cargo xtask build` and `cargo xtask run`: the release build of the `leakmon` binary (whose
//! build script builds and embeds the kernel programs) and running it in the foreground.
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::process::{cargo, command, display, run, target_dir, workspace_root};

/// Arguments `cargo xtask run` gives the daemon when it is given none.
const DEFAULT_RUN_ARGS: [&str; 2] = ["run", "--config"];
/// The configuration the default run uses, relative to the workspace root.
const DEFAULT_CONFIG: &str = "deploy/config.toml";

/// Builds `target/release/leakmon` and returns its absolute path.
pub fn build_release() -> Result<PathBuf> {
    run(cargo()?.args(["build", "--release", "-p", "monitor-daemon"]))?;
    let leakmon = target_dir().join("release").join("leakmon");
    if !leakmon.is_file() {
        bail!("the build succeeded but left no {}", leakmon.display());
    }
    Ok(leakmon)
}

/// Replaces this process with the daemon, so signals (Ctrl-C) reach it directly. Without `args`
/// it runs `leakmon run --config deploy/config.toml`.
pub fn exec(leakmon: &Path, args: &[String]) -> Result<()> {
    let mut daemon = command(leakmon)?;
    // The daemon keeps the caller's working directory, so relative paths in `args` mean what
    // they meant where `cargo xtask run` was typed.
    daemon.current_dir(std::env::current_dir()?);
    if args.is_empty() {
        daemon
            .args(DEFAULT_RUN_ARGS)
            .arg(workspace_root().join(DEFAULT_CONFIG));
    } else {
        daemon.args(args);
    }
    println!("$ {}", display(&daemon));
    let error = daemon.exec();
    bail!("cannot start {}: {error}", leakmon.display())
}
