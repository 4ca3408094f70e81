//! The tracer's attach and detach against a live `steady_leak`, through the library: a process
//! that exits before its probes attach is "gone", and nothing of a process stays in the kernel
//! maps after a failed attach, or after a purge while its probes await their (slow) detach.

use std::num::NonZeroU32;
use std::sync::MutexGuard;
use std::time::Duration;

use leakmon_tests::{BackgroundProcess, serial, wait_for};
use monitor_daemon::trace::{
    allocators::{self, AllocatorObject},
    tracer::{MapLimits, Tracer, TracerError},
};

/// `steady_leak` running (killed when dropped), its allocator objects, and the programs loaded.
struct Traceable {
    child: BackgroundProcess,
    pid: NonZeroU32,
    objects: Vec<AllocatorObject>,
    tracer: Tracer,
    _serial: MutexGuard<'static, ()>,
}

impl Traceable {
    fn start() -> Self {
        let serial = serial();
        let child = BackgroundProcess::scenario("steady_leak", &["30"]);
        let pid = child.pid();
        let objects = wait_for(Duration::from_secs(10), "the scenario to map libc", || {
            allocators::allocator_objects(pid).ok()
        });
        Traceable {
            child,
            pid: NonZeroU32::new(pid).expect("a pid is not 0"),
            objects,
            tracer: Tracer::load(MapLimits::default()).expect("loading the eBPF programs"),
            _serial: serial,
        }
    }

    /// The allocations of the process in the kernel's map.
    fn recorded(&self) -> usize {
        self.tracer
            .allocations(self.pid)
            .expect("reading the maps")
            .len()
    }
}

#[test]
fn a_process_that_exits_before_its_probes_attach_is_gone() {
    let Traceable {
        child,
        pid,
        objects,
        mut tracer,
        ..
    } = Traceable::start();
    drop(child);
    match tracer.attach(pid, &objects, 0) {
        Err(error @ TracerError::ProcessGone { .. }) => {
            assert_eq!(error.to_string(), format!("process {pid} is gone"));
        }
        other => panic!("expected ProcessGone, got {other:?}"),
    }
}

#[test]
fn a_failed_attach_leaves_nothing_in_the_maps() {
    let mut traceable = Traceable::start();
    let (pid, libc_only) = (traceable.pid, traceable.objects.clone());
    // A first trace, detached without purging: its allocations stay in the maps.
    let attached = traceable.tracer.attach(pid, &libc_only, 0);
    assert!(attached.is_ok(), "attaching libc: {attached:?}");
    std::thread::sleep(Duration::from_millis(500));
    traceable.tracer.detach(pid);
    let recorded = traceable.recorded();
    assert!(
        recorded > 0,
        "libc's probes recorded nothing in 0.5 s of steady_leak"
    );
    // Then an attach that fails at an object whose probes cannot attach, after the real ones.
    let mut objects = libc_only;
    let mut broken = objects[0].clone();
    broken.path = "/nonexistent/libc.so.6".into();
    broken.display_path = broken.path.display().to_string();
    objects.push(broken);
    let failed = traceable.tracer.attach(pid, &objects, 0);
    assert!(failed.is_err(), "attaching to a missing file succeeded");
    assert_eq!(
        traceable.recorded(),
        0,
        "allocations of pid {pid} left in the maps after a failed attach ({recorded} before it)"
    );
}

#[test]
fn probes_awaiting_detach_record_nothing_after_a_purge() {
    let mut traceable = Traceable::start();
    let pid = traceable.pid;
    let objects = traceable.objects.clone();
    traceable
        .tracer
        .attach(pid, &objects, 0)
        .expect("attaching");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        traceable.recorded() > 0,
        "the probes recorded nothing in 0.3 s of steady_leak"
    );
    // As the daemon ends a window: unregister, purge, and detach the probes later.
    let detached = traceable.tracer.detach_later(pid);
    traceable.tracer.purge(pid).expect("purging");
    std::thread::sleep(Duration::from_millis(500));
    let left = traceable.recorded();
    detached.detach_in_parallel();
    assert_eq!(
        left, 0,
        "probes awaiting their detach recorded allocations of a purged process, which no purge \
         would ever release"
    );
}
