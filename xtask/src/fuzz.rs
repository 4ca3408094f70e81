//! `cargo xtask fuzz [--seconds N] [TARGET...]`: runs the cargo-fuzz targets of `fuzz/` (its own
//! workspace) for a bounded time each. It installs cargo-fuzz when `cargo fuzz --version` fails,
//! and lets cargo-fuzz's `-Z` flags through the stable toolchain with `RUSTC_BOOTSTRAP=1`. Each
//! target starts from the seed corpus committed under `fuzz/corpus/TARGET/` and keeps what it
//! finds in `target/fuzz/corpus/TARGET/` (the seeds stay as they are); crashes are left in
//! `fuzz/artifacts/TARGET/` by cargo-fuzz.
use std::fs;
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::process::{self, run, target_dir, workspace_root};

/// The fuzz targets (`fuzz/fuzz_targets/TARGET.rs`).
pub const TARGETS: [&str; 3] = ["config", "api_query", "report_json"];
/// Seconds each target runs for without `--seconds`.
const DEFAULT_SECONDS: u64 = 60;
/// Seconds one input may take before libFuzzer reports it as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;

/// What `cargo xtask fuzz` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzArgs {
    /// Seconds per target.
    pub seconds: u64,
    /// The targets to run, in order.
    pub targets: Vec<&'static str>,
}

/// Reads `[--seconds N] [TARGET...]`; no target means every target.
pub fn parse_args(args: &[String]) -> Result<FuzzArgs> {
    let mut seconds = DEFAULT_SECONDS;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let value = args.next().context("--seconds needs a number of seconds")?;
            seconds = match value.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => bail!("--seconds must be a positive whole number, got `{value}`"),
            };
        } else if let Some(target) = TARGETS.iter().find(|target| *target == arg) {
            if !targets.contains(target) {
                targets.push(*target);
            }
        } else {
            bail!(
                "unknown argument `{arg}` (expected --seconds N or a target: {})",
                TARGETS.join(", ")
            );
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    Ok(FuzzArgs { seconds, targets })
}

/// Installs cargo-fuzz if needed, builds every target, then runs each for `args.seconds`.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    crate::setup::ensure_cargo_tool("fuzz", "fuzz", "cargo-fuzz")?;
    run(&mut cargo_fuzz_command("build")?)?;
    for target in &args.targets {
        let seeds = workspace_root().join("fuzz").join("corpus").join(target);
        let found = target_dir().join("fuzz").join("corpus").join(target);
        fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
        let mut command = cargo_fuzz_command("run")?;
        command
            .arg(target)
            .arg(&found)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .arg("-print_final_stats=1");
        run(&mut command).with_context(|| {
            format!(
                "fuzz target {target} failed: the input is in fuzz/artifacts/{target}/; \
                 `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} FILE` reproduces it (add it as a \
                 regression test)"
            )
        })?;
        println!("fuzz: {target}: no crash in {} s", args.seconds);
    }
    Ok(())
}

/// `cargo fuzz SUBCOMMAND` on the stable toolchain, which takes cargo-fuzz's `-Z` flags with
/// `RUSTC_BOOTSTRAP=1`.
fn cargo_fuzz_command(subcommand: &str) -> Result<Command> {
    let mut command = process::cargo()?;
    command
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", subcommand]);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<FuzzArgs> {
        parse_args(&args.iter().map(|arg| (*arg).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn defaults_run_every_target_for_a_minute() {
        assert_eq!(
            parse(&[]).unwrap(),
            FuzzArgs {
                seconds: 60,
                targets: TARGETS.to_vec()
            }
        );
    }

    #[test]
    fn seconds_and_targets() {
        assert_eq!(
            parse(&["--seconds", "5", "config", "api_query", "config"]).unwrap(),
            FuzzArgs {
                seconds: 5,
                targets: vec!["config", "api_query"]
            }
        );
        for bad in [
            &["--seconds"][..],
            &["--seconds", "0"],
            &["--seconds", "-1"],
            &["--seconds", "1.5"],
            &["nope"],
            &["--time", "5"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_target_has_a_source_and_seeds() {
        let fuzz = workspace_root().join("fuzz");
        let manifest = fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        for target in TARGETS {
            assert!(
                fuzz.join("fuzz_targets")
                    .join(format!("{target}.rs"))
                    .is_file(),
                "{target}"
            );
            assert!(
                manifest.contains(&format!("name = \"{target}\"")),
                "{target}"
            );
            let seeds = fs::read_dir(fuzz.join("corpus").join(target)).unwrap();
            assert!(seeds.count() > 0, "{target} has no seed");
        }
    }
}
