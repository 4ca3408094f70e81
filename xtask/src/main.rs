//! leakmon's developer tasks (`cargo xtask <task>`): reads the command line and dispatches to the
//! task. Every task that builds first sets up what a fresh machine lacks (see `setup`).
mod bench;
mod bench_daemon;
mod bench_faults;
mod bench_python;
mod daemon;
mod deb;
mod fuzz;
mod process;
mod setup;
mod soak;
mod suite;

use std::process::ExitCode;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  setup               install what is missing: the rust-src component, bpf-linker, and the
                      Debian packages the daemon and the tests need (run as root)
  build               setup, then build target/release/leakmon
  run [-- ARGS...]    setup, build, then run leakmon ARGS in the foreground
                      (default: run --config deploy/config.toml)
  test [--no-e2e | --only-e2e]
                      setup, rustfmt, clippy (host and BPF target), unit tests, release build,
                      end-to-end tests; --no-e2e stops after the unit tests, --only-e2e runs
                      only the release build and the end-to-end tests
  bench [PART...]     build, then measure (every part, or those named): allocations, what
                      tracing costs two allocation-heavy loops (ns per malloc+free untraced,
                      with empty probes, under leakmon trace; kernel run time per program);
                      page-faults, what the page-fault method costs (ns per fault for the
                      traced process and for others; redis-server's throughput untraced and
                      under both methods); python, ns per allocation of a Python loop
                      untraced and traced; daemon, what the daemon costs (CPU and memory
                      watching 1000 idle processes, always-on overhead on the loop)
  deb                 setup, build, then build the Debian package target/debian/leakmon_*.deb
                      with cargo-deb (installed when missing): the binary, the systemd unit
                      (neither enabled nor started), /etc/leakmon/config.toml, man pages,
                      shell completions
  fuzz [--seconds N] [TARGET...]
                      setup, install cargo-fuzz when missing, then fuzz each target (config,
                      api_query, report_json; default all) for N seconds (default 60) from the
                      seeds in fuzz/corpus/TARGET/; crashes land in fuzz/artifacts/TARGET/
  soak --minutes N    build, then run the daemon N minutes under process churn, leaking and
                      non-leaking programs (automatic tracing on), sampling its RSS and CPU
                      every 10 s; fails if RSS grows more than max(4 MiB, 10%)
  help                print this";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cargo xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((task, rest)) = args.split_first() else {
        println!("{USAGE}");
        bail!("no task given");
    };
    match task.as_str() {
        "setup" => {
            no_arguments(task, rest)?;
            setup::setup()
        }
        "build" => {
            no_arguments(task, rest)?;
            setup::setup()?;
            let leakmon = daemon::build_release()?;
            println!("built {}", leakmon.display());
            Ok(())
        }
        "run" => {
            let daemon_args = rest.strip_prefix(&["--".to_owned()]).unwrap_or(rest);
            setup::setup()?;
            let leakmon = daemon::build_release()?;
            daemon::exec(&leakmon, daemon_args)
        }
        "test" => suite::test(suite::parse_parts(rest)?),
        "bench" => {
            let parts = bench::parse_parts(rest)?;
            setup::setup()?;
            bench::bench(&parts)
        }
        "deb" => {
            no_arguments(task, rest)?;
            setup::setup()?;
            deb::deb()
        }
        "fuzz" => {
            let args = fuzz::parse_args(rest)?;
            setup::setup()?;
            fuzz::fuzz(&args)
        }
        "soak" => {
            let minutes = soak::parse_minutes(rest)?;
            setup::setup()?;
            soak::soak(minutes)
        }
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            println!("{USAGE}");
            bail!("unknown task `{other}`")
        }
    }
}

fn no_arguments(task: &str, rest: &[String]) -> Result<()> {
    match rest.first() {
        Some(arg) => bail!("`cargo xtask {task}` takes no arguments, got `{arg}`"),
        None => Ok(()),
    }
}
