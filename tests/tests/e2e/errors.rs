//! Bad input: leakmon must exit non-zero with a one-line error that names the problem.

use std::ffi::OsStr;

use leakmon_tests::{LeakmonRun, run_leakmon, scenario_path, trace_output};

/// Asserts a failed run whose stderr is one line mentioning `needle` (case-insensitively).
fn assert_one_line_error(run: &LeakmonRun, needle: &str) {
    assert!(
        !run.status.success(),
        "leakmon succeeded; stderr:\n{}",
        run.stderr
    );
    let message = run.stderr.trim();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "expected a one-line error, got:\n{}",
        run.stderr
    );
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "the error does not mention {needle:?}: {message}"
    );
}

#[test]
fn missing_pid() {
    let run = run_leakmon(["trace", "--pid", "999999999", "--duration", "1"]);
    assert_one_line_error(&run, "999999999");
}

#[test]
fn unwritable_output() {
    let scenario = scenario_path("steady_leak");
    let run = run_leakmon([
        OsStr::new("trace"),
        OsStr::new("--output"),
        OsStr::new("/proc/nonexistent/x"),
        OsStr::new("--"),
        scenario.as_os_str(),
        OsStr::new("1"),
    ]);
    assert!(
        !run.status.success(),
        "leakmon succeeded; stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/proc/nonexistent/x"),
        "the error does not name the output file:\n{}",
        run.stderr
    );
}

#[test]
fn static_binary() {
    let traced = trace_output("json", &[], "static_prog", &["1"]);
    assert_one_line_error(&traced.run, "static");
    assert!(
        traced.output.is_empty(),
        "a report was written for a program that cannot be traced"
    );
}

#[test]
fn zombie_pid_is_gone() {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("starting true");
    let pid = child.id();
    leakmon_tests::wait_for(std::time::Duration::from_secs(10), "true to exit", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
            .then_some(())
    });
    let run = run_leakmon(["trace", "--pid", &pid.to_string(), "--duration", "1"]);
    child.wait().expect("reaping true");
    assert_one_line_error(&run, &format!("process {pid} is gone"));
}

#[test]
fn a_process_that_exits_before_its_probes_attach_is_gone() {
    use monitor_daemon::{
        allocators,
        tracer::{MapLimits, Tracer, TracerError},
    };
    let _serial = leakmon_tests::serial();
    let child = leakmon_tests::BackgroundProcess::scenario("steady_leak", &["30"]);
    let pid = child.pid();
    let objects = leakmon_tests::wait_for(
        std::time::Duration::from_secs(10),
        "the scenario to map libc",
        || allocators::allocator_objects(pid).ok(),
    );
    let mut tracer = Tracer::load(MapLimits::default()).expect("loading the eBPF programs");
    drop(child);
    let pid = std::num::NonZeroU32::new(pid).expect("a pid is not 0");
    match tracer.attach(pid, &objects, 0) {
        Err(error @ TracerError::ProcessGone { .. }) => {
            assert_eq!(error.to_string(), format!("process {pid} is gone"));
        }
        other => panic!("expected ProcessGone, got {other:?}"),
    }
}

#[test]
fn a_failed_attach_leaves_nothing_in_the_maps() {
    use monitor_daemon::{
        allocators::{self, AllocatorObject},
        tracer::{MapLimits, Tracer},
    };
    let _serial = leakmon_tests::serial();
    let child = leakmon_tests::BackgroundProcess::scenario("steady_leak", &["30"]);
    let pid = child.pid();
    let mut objects = leakmon_tests::wait_for(
        std::time::Duration::from_secs(10),
        "the scenario to map libc",
        || allocators::allocator_objects(pid).ok(),
    );
    // An object whose probes cannot attach, after the real ones.
    let mut broken: AllocatorObject = objects[0].clone();
    broken.path = "/nonexistent/libc.so.6".into();
    broken.display_path = broken.path.display().to_string();
    objects.push(broken);
    let mut tracer = Tracer::load(MapLimits::default()).expect("loading the eBPF programs");
    let nonzero = std::num::NonZeroU32::new(pid).expect("a pid is not 0");
    // A first trace, detached without purging: its allocations stay in the maps.
    let attached = tracer.attach(nonzero, &objects[..objects.len() - 1], 0);
    assert!(attached.is_ok(), "attaching libc: {attached:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    tracer.detach(nonzero);
    let recorded_meanwhile = tracer.allocations(nonzero).expect("reading the maps").len();
    let failed = tracer.attach(nonzero, &objects, 0);
    assert!(failed.is_err(), "attaching to a missing file succeeded");
    assert!(
        recorded_meanwhile > 0,
        "libc's probes recorded nothing in 0.5 s of steady_leak"
    );
    // The failed attach releases whatever the process has in the maps.
    let left = tracer.allocations(nonzero).expect("reading the maps");
    assert!(
        left.is_empty(),
        "{} allocations of pid {pid} left in the maps after a failed attach",
        left.len()
    );
    drop(child);
}

#[test]
fn probes_awaiting_detach_record_nothing_after_a_purge() {
    use monitor_daemon::{
        allocators,
        tracer::{MapLimits, Tracer},
    };
    let _serial = leakmon_tests::serial();
    let child = leakmon_tests::BackgroundProcess::scenario("steady_leak", &["30"]);
    let pid = child.pid();
    let objects = leakmon_tests::wait_for(
        std::time::Duration::from_secs(10),
        "the scenario to map libc",
        || allocators::allocator_objects(pid).ok(),
    );
    let mut tracer = Tracer::load(MapLimits::default()).expect("loading the eBPF programs");
    let nonzero = std::num::NonZeroU32::new(pid).expect("a pid is not 0");
    tracer.attach(nonzero, &objects, 0).expect("attaching");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !tracer
            .allocations(nonzero)
            .expect("reading the maps")
            .is_empty(),
        "the probes recorded nothing in 0.3 s of steady_leak"
    );
    // As the daemon ends a window: unregister, purge, and detach the probes later.
    let detached = tracer.detach_later(nonzero);
    tracer.purge(nonzero).expect("purging");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let left = tracer.allocations(nonzero).expect("reading the maps");
    detached.detach_in_parallel();
    assert!(
        left.is_empty(),
        "probes awaiting their detach recorded {} allocations of a purged process, which no \
         purge would ever release",
        left.len()
    );
    drop(child);
}
