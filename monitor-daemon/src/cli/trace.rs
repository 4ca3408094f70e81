//! `leakmon trace`: one tracing session from the command line. Attaches to a running process,
//! or starts a command held before its first instruction so the tracer sees its first
//! allocation, runs the window until its duration, Ctrl-C or the process's exit, and returns
//! the [`Report`]. Also the probe-cost run behind `leakmon probe-cost`.

use std::{
    future::Future,
    num::NonZeroU32,
    path::{Path, PathBuf},
    time::Duration,
};

use log::info;
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    report::{Method, Report},
    symbolize::symbolizer::Symbolizer,
    trace::{
        allocators::{self, AllocatorError, AllocatorObject},
        launch::{self, ExitStatus, HeldChild, LaunchError, RunningChild},
        session::{Session, SessionParams},
        tracer::{
            self, EmptyPlacement, MapLimits, SWEEP_INTERVAL, SWEEP_MIN_AGE, Tracer, TracerError,
        },
    },
    watch::procfs::{self, ProcError},
};

/// How long a command gets to exit after SIGTERM at the end of the window.
const TERMINATE_GRACE: Duration = Duration::from_secs(2);

/// What to trace.
#[derive(Debug, Clone)]
pub enum Target {
    /// A running process.
    Pid(NonZeroU32),
    /// A command to start (program and arguments).
    Command(Vec<String>),
}

/// The parameters of a session.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    /// What to trace.
    pub target: Target,
    /// Longest window.
    pub duration: Duration,
    /// What shapes the report.
    pub params: SessionParams,
    /// Kernel map capacities.
    pub limits: MapLimits,
}

/// Why a session failed before it could produce a report.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The kernel side failed.
    #[error(transparent)]
    Tracer(#[from] TracerError),
    /// The allocator could not be found or planned.
    #[error(transparent)]
    Allocators(#[from] AllocatorError),
    /// The command could not be started.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The target process could not be read.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// There is no such process.
    #[error("no process with pid {0}")]
    NoSuchProcess(NonZeroU32),
    /// The events ring buffer could not be polled.
    #[error("polling the events ring buffer: {0}")]
    Events(std::io::Error),
}

/// How the window ended.
enum End {
    Duration,
    Cancelled,
    Exited(Option<ExitStatus>),
}

/// Plans the allocator objects of a command before it runs.
pub fn plan_command(exe: &Path) -> Result<Vec<AllocatorObject>, AllocatorError> {
    let mut objects = Vec::new();
    for path in allocators::resolve_command_libraries(exe)? {
        let sites = allocators::plan_object(&path)?;
        if !sites.is_empty() {
            objects.push(AllocatorObject {
                display_path: path.display().to_string(),
                path,
                sites,
            });
        }
    }
    if objects.is_empty() {
        return Err(AllocatorError::StaticWithoutAllocator {
            path: exe.to_path_buf(),
        });
    }
    Ok(objects)
}

/// Runs a session until its window ends, `cancel` completes or the process exits.
pub async fn trace(
    options: TraceOptions,
    cancel: impl Future<Output = ()>,
) -> Result<Report, TraceError> {
    let mut tracer = Tracer::load(options.limits)?;
    // The page-fault method needs no allocator: it traces programs without one to probe.
    let plan = options.params.method == Method::Allocations;
    let (pid, objects, held, mut comm) = match &options.target {
        Target::Pid(pid) => {
            let comm = procfs::read_comm(pid.get()).map_err(|err| match err {
                ProcError::Gone { .. } => TraceError::NoSuchProcess(*pid),
                other => other.into(),
            })?;
            let objects = if plan {
                allocators::allocator_objects(pid.get())?
            } else {
                Vec::new()
            };
            (*pid, objects, None, comm)
        }
        Target::Command(argv) => {
            let (exe, objects, held) = spawn_held(argv, plan)?;
            let comm = exe
                .file_name()
                .map(|name| name.to_string_lossy().chars().take(15).collect())
                .unwrap_or_default();
            (held.pid(), objects, Some(held), comm)
        }
    };
    let mut session = Session::start(&mut tracer, pid, &objects, options.params, held.is_some())?;
    let ring = tracer
        .take_events()
        .ok_or_else(|| TraceError::Events(std::io::Error::other("ring buffer taken")))?;
    // SAFETY: the ring buffer owns its map's descriptor and keeps it open until it is dropped.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| TraceError::Events(err.into()))?;
    let mut child: Option<RunningChild> = held.map(HeldChild::release).transpose()?;
    info!(
        "tracing pid {pid} for up to {:.1} s",
        options.duration.as_secs_f64()
    );

    let mut ticker = tokio::time::interval(options.params.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sweeper = tokio::time::interval(SWEEP_INTERVAL);
    sweeper.tick().await;
    // Page faults come without a wakeup (one each would cost more than the fault): drained here.
    let mut drainer = tokio::time::interval(tracer::QUIET_EVENTS_DRAIN);
    let deadline = tokio::time::sleep(options.duration);
    tokio::pin!(deadline);
    tokio::pin!(cancel);
    let end = loop {
        tokio::select! {
            _ = ticker.tick() => {
                session.sample(&tracer.stack_totals(pid)?, &tracer.releases(pid)?);
                session.refresh_modules(&mut tracer);
                tracer.maintain_unwind();
                if session.exited() && child.is_none() {
                    break End::Exited(None);
                }
            }
            _ = drainer.tick() => {
                let mut failed = Ok(());
                tracer::drain_events(ring.get_mut(), |event| {
                    if event.tgid == pid.get() && failed.is_ok() {
                        failed = session.handle(&mut tracer, &event);
                    }
                });
                failed?;
            }
            _ = sweeper.tick() => {
                let before = crate::trace::session::monotonic_ns()
                    .saturating_sub(SWEEP_MIN_AGE.as_nanos() as u64);
                tracer.sweep_tombstones(before, |tgid| tgid == pid.get())?;
            }
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(TraceError::Events)?;
                let mut failed = Ok(());
                tracer::drain_events(guard.get_inner_mut(), |event| {
                    if event.tgid == pid.get() && failed.is_ok() {
                        failed = session.handle(&mut tracer, &event);
                    }
                });
                failed?;
                guard.clear_ready();
                if session.exited() && child.is_none() {
                    break End::Exited(None);
                }
            }
            status = async { match child.as_mut() { Some(child) => child.wait().await, None => std::future::pending().await } } => {
                break End::Exited(Some(status));
            }
            () = &mut deadline => break End::Duration,
            () = &mut cancel => break End::Cancelled,
        }
    };
    let elapsed = session.elapsed().as_secs_f64();
    if let Ok(name) = procfs::read_comm(pid.get()) {
        comm = name;
    }
    let mut failed = Ok(());
    tracer::drain_events(ring.get_mut(), |event| {
        if event.tgid == pid.get() && failed.is_ok() {
            failed = session.handle(&mut tracer, &event);
        }
    });
    failed?;
    match end {
        End::Duration => {}
        End::Cancelled => session.note(format!("interrupted after {elapsed:.1} s")),
        End::Exited(Some(status)) => {
            session.note(format!(
                "the command exited after {elapsed:.1} s ({status})"
            ));
        }
        End::Exited(None) => session.note(format!("the process exited after {elapsed:.1} s")),
    }
    let (report, detached) = session.finish(&mut tracer, &mut Symbolizer::new(), &comm);
    // The probes come off (a grace period each, overlapping) while a command is stopped.
    let detaching = std::thread::spawn(move || detached.detach_in_parallel());
    let stopped = match (child.as_mut(), &end) {
        (Some(child), End::Duration | End::Cancelled) => {
            Some(child.terminate(TERMINATE_GRACE).await)
        }
        _ => None,
    };
    if detaching.join().is_err() {
        log::warn!("detaching the probes of pid {pid} panicked");
    }
    let mut report = report?;
    if let Some(status) = stopped {
        report.notes.push(format!(
            "the command was stopped at the end of the window ({status})"
        ));
    }
    Ok(report)
}

/// Resolves the program of `argv`, plans the probes of the objects it will map (with `plan`),
/// and starts it held before its `execve` until the probes are attached.
fn spawn_held(
    argv: &[String],
    plan: bool,
) -> Result<(PathBuf, Vec<AllocatorObject>, HeldChild), TraceError> {
    let program = argv
        .first()
        .ok_or_else(|| LaunchError::NotFound(String::new()))?;
    let exe = launch::resolve_program(program)?;
    let objects = if plan {
        plan_command(&exe)?
    } else {
        Vec::new()
    };
    let held = HeldChild::spawn(&exe, argv)?;
    Ok((exe, objects, held))
}

/// Runs a command with programs that do nothing attached where the allocator probes would go,
/// and returns how it exited: the probe-cost benchmark compares this with the command untraced
/// and traced.
pub async fn run_with_empty_probes(
    argv: &[String],
    placement: EmptyPlacement,
) -> Result<ExitStatus, TraceError> {
    let mut tracer = Tracer::load(MapLimits::default())?;
    let (_, objects, held) = spawn_held(argv, true)?;
    let pid = held.pid();
    tracer.attach_empty(pid, &objects, placement)?;
    let mut child = held.release()?;
    let status = child.wait().await;
    tracer.detach(pid);
    Ok(status)
}
