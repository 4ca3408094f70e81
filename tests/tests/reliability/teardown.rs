//! No probe outlives the daemon: stopped with SIGTERM or killed with SIGKILL while it traces a
//! process, none of its BPF programs stays loaded (the kernel's own list), no uprobe event is
//! left in tracefs, and the traced process, which keeps running, has no breakpoint left in its
//! code (its executable mappings, read through `/proc/PID/mem`, match their files again).

use std::collections::BTreeSet;
use std::time::Duration;

use leakmon_tests::{
    BackgroundProcess, Daemon, assert_released, bpf_ids_held_by, breakpoints_in,
    leakmon_uprobe_events, loaded_leakmon_programs, serial, wait_for,
};

use crate::{WATCH_LIMIT, config};

/// A daemon tracing a running `steady_leak`, and the BPF programs it holds.
struct Tracing {
    daemon: Daemon,
    traced: BackgroundProcess,
    programs: BTreeSet<u32>,
    breakpoints: usize,
}

/// Starts a daemon (on `state_dir`, when given) and has it trace a new `steady_leak`.
fn tracing(state_dir: Option<&std::path::Path>) -> Tracing {
    let config = config("", "auto = false");
    let daemon = match state_dir {
        Some(dir) => Daemon::start_with_state_dir(&config, dir),
        None => Daemon::start(&config),
    };
    let traced = BackgroundProcess::scenario("steady_leak", &["120"]);
    let pid = traced.pid();
    daemon.wait_watched(pid, WATCH_LIMIT);
    daemon.request_trace(pid, 600.0, Duration::from_secs(5));
    wait_for(WATCH_LIMIT, "the trace to show in the status", || {
        daemon
            .status()
            .probes
            .traced_pids
            .contains(&pid)
            .then_some(())
    });
    let breakpoints = breakpoints_in(pid);
    assert!(
        breakpoints > 0,
        "pid {pid} is traced, yet no breakpoint shows in its code: the check cannot work"
    );
    let (programs, _) = bpf_ids_held_by(daemon.pid());
    let ours = loaded_leakmon_programs();
    assert!(
        programs.len() >= 5 && !ours.is_empty(),
        "the daemon holds programs {programs:?}; the kernel lists leakmon's {ours:?}"
    );
    eprintln!(
        "pid {pid} traced: {breakpoints} breakpoints; the daemon holds programs {programs:?}"
    );
    Tracing {
        daemon,
        traced,
        programs,
        breakpoints,
    }
}

/// Asserts that the programs the daemon held are gone and `traced` runs on without probes.
fn assert_nothing_left(
    mut traced: BackgroundProcess,
    programs: &BTreeSet<u32>,
    breakpoints: usize,
) {
    assert_released(programs, "the daemon");
    traced.assert_running();
    let pid = traced.pid();
    let remaining = breakpoints_in(pid);
    assert_eq!(
        remaining, 0,
        "pid {pid} still has {remaining} of its {breakpoints} breakpoints after the daemon is gone"
    );
    let events = leakmon_uprobe_events();
    assert!(
        events.is_empty(),
        "uprobe events left in tracefs: {events:?}"
    );
}

#[test]
fn sigterm_detaches_every_probe() {
    let _serial = serial();
    // A state directory that outlives the daemon, to look for the report it stored on its way
    // out.
    let state = tempfile::tempdir().expect("a temporary state directory");
    let Tracing {
        daemon,
        traced,
        programs,
        breakpoints,
    } = tracing(Some(state.path()));
    let pid = traced.pid();
    daemon.terminate();
    assert!(
        std::fs::read_dir(state.path().join("reports")).is_ok_and(|mut dir| dir.next().is_some()),
        "the trace of pid {pid} cut short by SIGTERM left no report"
    );
    assert_nothing_left(traced, &programs, breakpoints);
}

#[test]
fn sigkill_leaves_no_probe_behind() {
    let _serial = serial();
    let Tracing {
        daemon,
        traced,
        programs,
        breakpoints,
    } = tracing(None);
    let run = daemon.kill();
    assert!(
        !run.status.success(),
        "leakmon run survived SIGKILL? {}",
        run.status
    );
    assert_nothing_left(traced, &programs, breakpoints);
}
