//! Tests of the systemd unit, `deploy/leakmon.service`: `systemd-analyze verify` accepts it,
//! `systemd-analyze security --offline=yes` rates its exposure 4.0 or lower (and as its header
//! comment says), every capability it keeps has a comment saying why, and the daemon traces a
//! leaking program with what the unit grants it.
//!
//! That last test starts the unit under a real systemd: when systemd is PID 1, a copy in
//! /run/systemd/system that listens on a free port and keeps its reports in a state directory of
//! its own; elsewhere (a container, a sandbox: PID 1 here is not systemd) systemd booted by
//! `systemd-nspawn` in a container sharing this host's /usr, with the unit enabled. Either way
//! systemd applies everything the unit says (capabilities, namespaces, system call filter), the
//! daemon must trace a leaking program another user runs, log to the journal, and stop cleanly
//! leaving no program loaded. It needs root, like every eBPF test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use leakmon_tests::{
    BackgroundProcess, Report, WITHOUT_TRACEFS, assert_released, bpf_ids_held_by, describe_report,
    find_descendant, free_local_addr, has_frame, http_request, leakmon_bin, scenario_path, serial,
};

/// The highest overall exposure `systemd-analyze security` may give the unit.
const MAX_EXPOSURE: f64 = 4.0;

/// The scenario traced through the API, and the function that leaks in it.
const SCENARIO: &str = "rss_leak";
const LEAK_FUNCTION: &str = "leak_rss_chunk";

/// Seconds of the on-demand trace.
const TRACE_SECONDS: u64 = 6;

/// How long the report may take past the end of the trace window.
const REPORT_SLACK: Duration = Duration::from_secs(30);

/// How long the daemon may take to watch a new process (it samples every 2 s by default).
const WATCH_LIMIT: Duration = Duration::from_secs(15);

/// How long the daemon may take to answer `/healthz`.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The unit under test.
fn unit_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package is inside the workspace")
        .join("deploy/leakmon.service")
}

fn unit_text() -> String {
    let path = unit_path();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// Runs a command to the end; panics when it cannot start (a missing tool is a failure, not a
/// skip).
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    eprintln!(
        "{command:?} -> {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The value of every `KEY=` line of the unit, in order (comments skipped).
fn settings<'u>(unit: &'u str, key: &str) -> Vec<&'u str> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

/// The unit's capability bounding set: every `CapabilityBoundingSet=` line, merged.
fn capabilities(unit: &str) -> BTreeSet<String> {
    let lines = settings(unit, "CapabilityBoundingSet");
    assert!(
        !lines.is_empty(),
        "the unit sets no CapabilityBoundingSet=, so it keeps every capability"
    );
    lines
        .iter()
        .flat_map(|line| {
            assert!(
                !line.starts_with('~') && !line.is_empty(),
                "CapabilityBoundingSet={line} is not an allow list"
            );
            line.split_whitespace().map(str::to_owned)
        })
        .collect()
}

/// The unit, with `ExecStart=` running `exec_start` instead.
fn with_exec_start(unit: &str, exec_start: &str) -> String {
    let mut replaced = 0;
    let text: Vec<String> = unit
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                replaced += 1;
                format!("ExecStart={exec_start}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(
        replaced, 1,
        "the unit must have exactly one ExecStart= line"
    );
    text.join("\n") + "\n"
}

/// Where the packaged unit runs leakmon from.
const INSTALLED_BINARY: &str = "/usr/bin/leakmon";

/// systemd's mount unit of tracefs, which the sandboxed daemon may not mount itself.
const TRACEFS_MOUNT: &str = "sys-kernel-tracing.mount";

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let unit = unit_text();
    let exec_start = settings(&unit, "ExecStart");
    assert_eq!(
        exec_start
            .first()
            .and_then(|line| line.split_whitespace().next()),
        Some(INSTALLED_BINARY),
        "the unit runs the installed binary"
    );
    for key in ["Wants", "After"] {
        assert!(
            settings(&unit, key)
                .iter()
                .any(|units| units.split_whitespace().any(|unit| unit == TRACEFS_MOUNT)),
            "the unit does not pull in {TRACEFS_MOUNT} with {key}="
        );
    }
    // verify checks that the commands exist: run the built binary in a copy instead.
    let dir = tempfile::Builder::new()
        .prefix("leakmon-deploy-")
        .tempdir()
        .expect("creating a temporary directory");
    let copy = dir.path().join("leakmon.service");
    let exec = format!(
        "{} run --config /etc/leakmon/config.toml",
        leakmon_bin().display()
    );
    std::fs::write(&copy, with_exec_start(&unit, &exec)).expect("writing the unit's copy");
    let output = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    // verify exits 0 on unknown keys and unparsable values: it only warns, naming the file.
    let warnings: Vec<String> = [&output.stdout, &output.stderr]
        .iter()
        .flat_map(|text| {
            String::from_utf8_lossy(text)
                .into_owned()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|line| line.contains("leakmon.service"))
        .collect();
    assert!(
        output.status.success() && warnings.is_empty(),
        "systemd-analyze verify rejects the unit ({}):\n{}",
        output.status,
        warnings.join("\n")
    );
}

/// The number in `Overall exposure level for leakmon.service: 2.7 OK`.
fn parse_exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|line| line.contains("Overall exposure level"))?;
    let (_, rest) = line.split_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The systemd version of `systemctl --version`'s first line (`systemd 252 (252.38-1~deb12u1)`).
fn systemd_version() -> String {
    let output = run(Command::new("systemctl").arg("--version"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no version in systemctl --version: {text}"))
        .to_owned()
}

#[test]
fn security_exposure_is_at_most_4() {
    let output = run(Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path()));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let exposure = parse_exposure(&text).unwrap_or_else(|| {
        panic!(
            "no overall exposure in the output of systemd-analyze security ({}):\n{text}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        exposure <= MAX_EXPOSURE,
        "the unit's exposure is {exposure}, above {MAX_EXPOSURE}:\n{text}"
    );

    // The header comment says the measured exposure, for the systemd version it names.
    let unit = unit_text();
    let header = unit
        .lines()
        .skip_while(|line| !line.starts_with("# Exposure:"))
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let claimed_version = header
        .split_once("(systemd ")
        .and_then(|(_, rest)| rest.split(')').next())
        .unwrap_or_else(|| panic!("the header comment names no systemd version: {header}"));
    let claimed: f64 = header
        .split_once("rates this unit")
        .and_then(|(_, rest)| {
            rest.trim_start_matches(['#', ' '])
                .split_whitespace()
                .next()
        })
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("the header comment gives no exposure: {header}"));
    let version = systemd_version();
    if version == claimed_version {
        assert!(
            (claimed - exposure).abs() < 0.05,
            "the header comment says exposure {claimed} with systemd {version}, but \
             systemd-analyze says {exposure}: update the comment"
        );
    } else {
        eprintln!(
            "note: the header comment's exposure {claimed} is for systemd {claimed_version}; this \
             is systemd {version}, which says {exposure} (only the limit is checked)"
        );
    }
}

#[test]
fn every_capability_has_a_comment() {
    let unit = unit_text();
    let lines: Vec<&str> = unit.lines().collect();
    let caps = capabilities(&unit);
    for cap in &caps {
        assert!(
            cap.starts_with("CAP_") && cap[4..].chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{cap} is not a capability name"
        );
        // The comment block right above its CapabilityBoundingSet= line says why, starting
        // `# CAP_NAME: ...`.
        let index = lines
            .iter()
            .position(|line| {
                line.strip_prefix("CapabilityBoundingSet=")
                    .is_some_and(|set| set.split_whitespace().any(|name| name == cap))
            })
            .expect("the capability comes from a line");
        let comment: Vec<&str> = lines[..index]
            .iter()
            .rev()
            .take_while(|line| line.starts_with('#'))
            .copied()
            .collect();
        let reason = comment
            .iter()
            .find_map(|line| line.strip_prefix(&format!("# {cap}:")))
            .map(str::trim);
        assert!(
            reason.is_some_and(|reason| reason.len() >= 20),
            "{cap} has no `# {cap}: why` comment right above its CapabilityBoundingSet= line"
        );
    }
    // The daemon runs as root: the bounding set is all it may use, so ambient capabilities
    // would only add to it.
    for ambient in settings(&unit, "AmbientCapabilities") {
        for cap in ambient.split_whitespace() {
            assert!(
                caps.contains(cap),
                "ambient {cap} is not in the bounding set"
            );
        }
    }
    assert!(
        settings(&unit, "User").is_empty() && settings(&unit, "DynamicUser").is_empty(),
        "the daemon refuses to run as another user than root"
    );
}

/// Whether systemd is PID 1 here (not a container or a sandbox without it).
fn systemd_is_pid1() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|comm| comm.trim() == "systemd")
}

#[test]
fn the_unit_traces_under_systemd() {
    let _serial = serial();
    let unit = unit_text();
    let caps = capabilities(&unit);
    let private = PrivateProgram::new();
    let programs = if systemd_is_pid1() {
        eprintln!("systemd is PID 1: starting a copy of the unit");
        let service = InstalledUnit::start(&unit);
        let diagnostics = || service.diagnostics();
        let daemon = service.main_pid();
        assert_hardened(daemon, &caps, &diagnostics);
        let mut scenario = private.spawn(None);
        let pid = scenario.pid();
        trace_through_api(service.addr, pid, &mut scenario, &diagnostics);
        let (programs, _) = bpf_ids_held_by(daemon);
        service.stop();
        programs
    } else {
        let comm = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
        eprintln!(
            "systemd is not PID 1 (PID 1 is {:?}): booting systemd in a container that shares \
             this host's /usr, and starting the unit there",
            comm.trim()
        );
        let container = BootedUnit::start(&unit, &private);
        let diagnostics = || container.diagnostics();
        let daemon = container.daemon_pid();
        assert_hardened(daemon, &caps, &diagnostics);
        let mut scenario = private.spawn(Some(container.init));
        let pid = pid_in_container(find_descendant(scenario.pid(), SCENARIO, WATCH_LIMIT));
        trace_through_api(container.addr, pid, &mut scenario, &diagnostics);
        let (mut programs, _) = bpf_ids_held_by(daemon);
        // The same on a host where nothing mounted tracefs before the unit started: the unit's
        // ExecStartPre= must mount it, as the daemon's sandbox may not.
        container.restart_without_tracefs();
        let daemon = container.daemon_pid();
        assert_hardened(daemon, &caps, &diagnostics);
        trace_through_api(container.addr, pid, &mut scenario, &diagnostics);
        programs.extend(bpf_ids_held_by(daemon).0);
        container.stop_unit();
        programs
    };
    assert!(!programs.is_empty(), "the daemon held no BPF program");
    assert_released(&programs, "the daemon under systemd");
}

/// Checks what systemd did to the daemon `pid`: exactly the unit's capabilities
/// (`CapabilityBoundingSet=`), no new privileges, a system call filter.
fn assert_hardened(pid: u32, caps: &BTreeSet<String>, diagnostics: &dyn Fn() -> String) {
    let status_path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&status_path)
        .unwrap_or_else(|error| panic!("reading {status_path}: {error}\n{}", diagnostics()));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {status_path}"))
    };
    let effective = u64::from_str_radix(field("CapEff"), 16).expect("CapEff is hexadecimal");
    let expected = caps
        .iter()
        .map(|cap| 1u64 << capability_number(cap))
        .fold(0, |mask, bit| mask | bit);
    assert_eq!(
        effective, expected,
        "the daemon's effective capabilities are {effective:#x}, not the unit's {caps:?} \
         ({expected:#x})"
    );
    assert_eq!(field("NoNewPrivs"), "1", "NoNewPrivileges= is not applied");
    assert_eq!(field("Seccomp"), "2", "SystemCallFilter= is not applied");
}

/// A process's pid in the innermost PID namespace it is in (the last of `NSpid:`).
fn pid_in_container(host_pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{host_pid}/status"))
        .unwrap_or_else(|error| panic!("reading the status of pid {host_pid}: {error}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .and_then(|pids| pids.split_whitespace().last()?.parse().ok())
        .unwrap_or_else(|| panic!("no NSpid in the status of pid {host_pid}"))
}

/// A copy of the scenario program in a directory only its owner, `nobody`, may enter (like a
/// program in a home directory): tracing it needs CAP_SYS_PTRACE (another user's process) and
/// CAP_DAC_READ_SEARCH (its file, to symbolize it). The directory is under /var/lib, which the
/// unit's ProtectSystem=strict leaves readable and PrivateTmp= does not hide.
struct PrivateProgram {
    dir: PathBuf,
    program: PathBuf,
}

impl PrivateProgram {
    const NOBODY: u32 = 65534;

    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = PathBuf::from(format!(
            "/var/lib/leakmon-deploy-test-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        let private = PrivateProgram {
            program: dir.join(SCENARIO),
            dir,
        };
        std::fs::copy(scenario_path(SCENARIO), &private.program)
            .unwrap_or_else(|error| panic!("copying {SCENARIO}: {error}"));
        for path in [&private.program, &private.dir] {
            std::os::unix::fs::chown(path, Some(Self::NOBODY), Some(Self::NOBODY))
                .unwrap_or_else(|error| panic!("chown {}: {error}", path.display()));
        }
        std::fs::set_permissions(&private.dir, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|error| panic!("chmod {}: {error}", private.dir.display()));
        private
    }

    /// Starts the program as `nobody` for two minutes, here or (through `nsenter`) in the
    /// container whose PID 1 is `container_init`.
    fn spawn(&self, container_init: Option<u32>) -> BackgroundProcess {
        let mut command = match container_init {
            Some(init) => {
                let mut nsenter = Command::new("nsenter");
                nsenter.args(["-t", &init.to_string(), "-a", "setpriv"]);
                nsenter
            }
            None => Command::new("setpriv"),
        };
        command
            .arg(format!("--reuid={}", Self::NOBODY))
            .arg(format!("--regid={}", Self::NOBODY))
            .arg("--clear-groups")
            .arg(&self.program)
            .arg("120");
        BackgroundProcess::spawn(command, SCENARIO)
    }
}

impl Drop for PrivateProgram {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Asks the daemon at `addr` to trace `scenario` (`pid` as the daemon numbers it), and waits for
/// the report, which must name the leaking function (the daemon could attach its probes and
/// read the program).
fn trace_through_api(
    addr: std::net::SocketAddr,
    pid: u32,
    scenario: &mut BackgroundProcess,
    diagnostics: &dyn Fn() -> String,
) {
    // The daemon can trace a process once it has sampled it (every watch.interval_seconds).
    let target = format!("/api/v1/processes/{pid}/trace?duration={TRACE_SECONDS}");
    let deadline = Instant::now() + WATCH_LIMIT;
    loop {
        scenario.assert_running();
        let response = http_request(addr, "POST", &target)
            .unwrap_or_else(|error| panic!("POST {target}: {error}\n{}", diagnostics()));
        if response.status == 202 {
            break;
        }
        assert!(
            response.status == 404 && Instant::now() < deadline,
            "POST {target} answered {}: {}\n{}",
            response.status,
            response.text(),
            diagnostics()
        );
        thread::sleep(Duration::from_millis(500));
    }
    let report_target = format!("/api/v1/processes/{pid}/report?format=json");
    let deadline = Instant::now() + Duration::from_secs(TRACE_SECONDS) + REPORT_SLACK;
    let report: Report = loop {
        scenario.assert_running();
        let last = match http_request(addr, "GET", &report_target) {
            Ok(response) if response.status == 200 => break response.json(),
            Ok(response) => format!("HTTP {}: {}", response.status, response.text()),
            Err(error) => error,
        };
        assert!(
            Instant::now() < deadline,
            "no report on pid {pid} within {} s of the trace; last: {last}\n{}",
            (Duration::from_secs(TRACE_SECONDS) + REPORT_SLACK).as_secs(),
            diagnostics()
        );
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(report.pid, pid, "the report is about another process");
    assert!(
        report.totals.outstanding_allocations > 0,
        "the report counts no allocation: the probes recorded nothing\n{}\n{}",
        describe_report(&report),
        diagnostics()
    );
    assert!(
        report
            .stacks
            .iter()
            .any(|stack| has_frame(stack, LEAK_FUNCTION)),
        "no stack of the report goes through {LEAK_FUNCTION}: the program was not symbolized\n{}\n{}",
        describe_report(&report),
        diagnostics()
    );
    // The program's malloc moves the program break: the system-call tracepoints saw it.
    assert!(
        report.events.get("map_events").copied().unwrap_or(0) > 0,
        "the report counts no memory-mapping event: the system-call tracepoints are not \
         attached\n{}\n{}",
        describe_report(&report),
        diagnostics()
    );
}

/// Waits until `GET /healthz` at `addr` answers 200, or panics after [`START_LIMIT`].
fn wait_healthy(
    addr: std::net::SocketAddr,
    alive: &mut dyn FnMut() -> bool,
    diagnostics: &dyn Fn() -> String,
) {
    let started = Instant::now();
    loop {
        let last = match http_request(addr, "GET", "/healthz") {
            Ok(response) if response.status == 200 => return,
            Ok(response) => format!("HTTP {}: {}", response.status, response.text()),
            Err(error) => error,
        };
        assert!(
            alive(),
            "the daemon exited at start; last: {last}\n{}",
            diagnostics()
        );
        assert!(
            started.elapsed() < START_LIMIT,
            "the daemon did not answer GET /healthz within {} s; last: {last}\n{}",
            START_LIMIT.as_secs(),
            diagnostics()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// The output of a command, as text, or why it could not run.
fn output_text(command: &mut Command) -> String {
    match command.output() {
        Ok(output) => format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => format!("{command:?}: {error}"),
    }
}

/// The unit started by a real systemd booted in a container (`systemd-nspawn --boot`, its
/// root a tmpfs with this host's /usr, sharing the host's network), for hosts where systemd
/// is not PID 1. The unit file is the one under test with `ExecStart=` pointing at the built
/// binary (bound into the container) on a free loopback port, enabled through
/// `multi-user.target.wants`; the private program's directory is bound in as well. The daemon
/// runs in the container's PID namespace and sees only its processes. Dropping this halts the
/// container.
struct BootedUnit {
    nspawn: Option<BackgroundProcess>,
    /// The container's PID 1, in this host's numbering.
    init: u32,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl BootedUnit {
    const UNIT: &str = "leakmon.service";
    /// How long the container may take to boot and to halt.
    const BOOT_LIMIT: Duration = Duration::from_secs(60);

    fn start(unit: &str, private: &PrivateProgram) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("leakmon-deploy-")
            .tempdir()
            .expect("creating a temporary directory");
        let addr = free_local_addr();
        let unit_copy = dir.path().join(Self::UNIT);
        let exec = format!("/opt/leakmon run --config /etc/leakmon/config.toml --listen {addr}");
        std::fs::write(&unit_copy, with_exec_start(unit, &exec)).expect("writing the unit");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "# the defaults\n").expect("writing the configuration");
        let wants = dir.path().join("multi-user.target.wants");
        std::fs::create_dir(&wants).expect("creating the wants directory");
        std::os::unix::fs::symlink(
            format!("/etc/systemd/system/{}", Self::UNIT),
            wants.join(Self::UNIT),
        )
        .expect("enabling the unit");
        let bind = |from: &Path, to: &str| format!("--bind-ro={}:{to}", from.display());
        let mut command = Command::new("systemd-nspawn");
        command
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--volatile=yes",
                "--directory=/",
                "--console=pipe",
            ])
            // nspawn's own system call filter refuses these; the unit's filter is what is tested.
            .arg("--system-call-filter=bpf perf_event_open")
            // The container's systemd mounts tracefs, as a host's does, only with this
            // (sys-kernel-tracing.mount: ConditionCapability=CAP_SYS_RAWIO).
            .arg("--capability=CAP_SYS_RAWIO")
            .arg(format!("--machine=leakmon-test-{}", std::process::id()))
            .arg(bind(&leakmon_bin(), "/opt/leakmon"))
            .arg(bind(
                &unit_copy,
                &format!("/etc/systemd/system/{}", Self::UNIT),
            ))
            .arg(bind(&wants, "/etc/systemd/system/multi-user.target.wants"))
            .arg(bind(&config, "/etc/leakmon/config.toml"))
            .arg(bind(&private.dir, &private.dir.display().to_string()))
            .arg("--boot");
        eprintln!("starting {command:?}");
        let mut nspawn = BackgroundProcess::spawn(command, "systemd-nspawn");
        let init = find_descendant(nspawn.pid(), "systemd", Self::BOOT_LIMIT);
        nspawn.assert_running();
        let booted = BootedUnit {
            nspawn: Some(nspawn),
            init,
            addr,
            _dir: dir,
        };
        wait_healthy(addr, &mut || booted.unit_state() != "failed", &|| {
            booted.diagnostics()
        });
        booted
    }

    /// A command run inside the container, in all its namespaces.
    fn enter(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.init.to_string(), "-a", program]);
        command
    }

    /// `systemctl is-active` of the unit: `active`, `failed`, ...
    fn unit_state(&self) -> String {
        output_text(self.enter("systemctl").args(["is-active", Self::UNIT]))
            .trim()
            .to_owned()
    }

    /// The daemon's pid, in this host's numbering.
    fn daemon_pid(&self) -> u32 {
        find_descendant(self.init, "leakmon", WATCH_LIMIT)
    }

    fn diagnostics(&self) -> String {
        let status = output_text(self.enter("systemctl").args([
            "status",
            "--no-pager",
            "--full",
            Self::UNIT,
        ]));
        let journal = output_text(self.enter("journalctl").args([
            "--no-pager",
            "-n",
            "100",
            "-u",
            Self::UNIT,
        ]));
        format!("{status}\njournal:\n{journal}")
    }

    /// Stops the unit, unmounts tracefs and debugfs in the container (mounted by its systemd at
    /// boot) and starts the unit again: its dependencies must mount tracefs again before the
    /// daemon starts.
    fn restart_without_tracefs(&self) {
        let stopped = run(self.enter("systemctl").args(["stop", Self::UNIT]));
        assert!(stopped.status.success(), "systemctl stop failed");
        let unmounted = run(self.enter("sh").args(["-c", WITHOUT_TRACEFS, "sh", "true"]));
        assert!(unmounted.status.success(), "unmounting tracefs failed");
        let started = run(self.enter("systemctl").args(["start", Self::UNIT]));
        assert!(
            started.status.success(),
            "systemctl start failed without tracefs\n{}",
            self.diagnostics()
        );
        wait_healthy(self.addr, &mut || self.unit_state() != "failed", &|| {
            self.diagnostics()
        });
        let mounts = output_text(self.enter("cat").arg("/proc/self/mounts"));
        assert!(
            mounts
                .lines()
                .any(|line| line.starts_with("tracefs /sys/kernel/tracing ")),
            "starting the unit did not mount tracefs:\n{mounts}"
        );
    }

    /// `systemctl stop`: the unit must end in success, and its log must have reached the
    /// journal.
    fn stop_unit(&self) {
        let stopped = run(self.enter("systemctl").args(["stop", Self::UNIT]));
        assert!(stopped.status.success(), "systemctl stop failed");
        let result = output_text(self.enter("systemctl").args([
            "show",
            "--property=Result",
            "--value",
            Self::UNIT,
        ]));
        assert_eq!(
            result.trim(),
            "success",
            "the unit did not stop cleanly\n{}",
            self.diagnostics()
        );
        let journal = output_text(
            self.enter("journalctl")
                .args(["--no-pager", "-u", Self::UNIT]),
        );
        assert!(
            journal.contains(&format!("listening on http://{}", self.addr)),
            "the daemon's log is not in the journal:\n{journal}"
        );
    }
}

impl Drop for BootedUnit {
    /// SIGTERM to systemd-nspawn halts the container; it is killed if that takes too long.
    fn drop(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        let pid = nspawn.pid();
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Self::BOOT_LIMIT;
        while !nspawn.has_exited() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The number of a capability, as in `<linux/capability.h>`.
fn capability_number(name: &str) -> u32 {
    const NAMES: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    let index = NAMES
        .iter()
        .position(|known| *known == name)
        .unwrap_or_else(|| panic!("unknown capability {name}"));
    u32::try_from(index).expect("a small index")
}

/// A copy of the unit installed in /run/systemd/system under a name of its own, started with
/// `systemctl`, listening on a free loopback port; stopped and removed when dropped.
struct InstalledUnit {
    name: String,
    path: PathBuf,
    config_dir: PathBuf,
    addr: std::net::SocketAddr,
}

impl InstalledUnit {
    fn start(unit: &str) -> Self {
        let base = format!("leakmon-deploy-test-{}", std::process::id());
        let name = format!("{base}.service");
        let addr = free_local_addr();
        // The configuration in /run: readable under ProtectSystem=strict and PrivateTmp=.
        let config_dir = PathBuf::from(format!("/run/{base}"));
        std::fs::create_dir_all(&config_dir).expect("creating the configuration directory");
        let config = config_dir.join("config.toml");
        std::fs::write(&config, "# the defaults\n").expect("writing the configuration");
        let exec = format!(
            "{} run --config {} --listen {addr} --state-dir /var/lib/{base}",
            leakmon_bin().display(),
            config.display()
        );
        let text = with_exec_start(unit, &exec).replace(
            "StateDirectory=leakmon\n",
            &format!("StateDirectory={base}\n"),
        );
        assert!(text.contains(&format!("StateDirectory={base}\n")));
        let path = PathBuf::from("/run/systemd/system").join(&name);
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        let service = InstalledUnit {
            name,
            path,
            config_dir,
            addr,
        };
        assert!(
            run(Command::new("systemctl").arg("daemon-reload"))
                .status
                .success()
        );
        let started = run(Command::new("systemctl").arg("start").arg(&service.name));
        assert!(
            started.status.success(),
            "systemctl start {} failed\n{}",
            service.name,
            service.diagnostics()
        );
        let name = service.name.clone();
        wait_healthy(
            addr,
            &mut || {
                Command::new("systemctl")
                    .args(["is-active", "--quiet"])
                    .arg(&name)
                    .status()
                    .is_ok_and(|status| status.success())
            },
            &|| service.diagnostics(),
        );
        service
    }

    /// The daemon's pid (`MainPID`).
    fn main_pid(&self) -> u32 {
        let output = run(Command::new("systemctl")
            .args(["show", "--property=MainPID", "--value"])
            .arg(&self.name));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("no MainPID for {}: {text}", self.name))
    }

    fn diagnostics(&self) -> String {
        let status = Command::new("systemctl")
            .args(["status", "--no-pager", "--full"])
            .arg(&self.name)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_else(|error| format!("systemctl status: {error}"));
        let journal = Command::new("journalctl")
            .args(["--no-pager", "-n", "100", "-u"])
            .arg(&self.name)
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_else(|error| format!("journalctl: {error}"));
        format!("{status}\njournal:\n{journal}")
    }

    /// `systemctl stop`, which must leave the unit inactive (not failed).
    fn stop(self) {
        let stopped = run(Command::new("systemctl").arg("stop").arg(&self.name));
        assert!(
            stopped.status.success(),
            "systemctl stop {} failed",
            self.name
        );
        let state = run(Command::new("systemctl").arg("is-failed").arg(&self.name));
        assert_ne!(
            String::from_utf8_lossy(&state.stdout).trim(),
            "failed",
            "{} failed on stop\n{}",
            self.name,
            self.diagnostics()
        );
    }
}

impl Drop for InstalledUnit {
    fn drop(&mut self) {
        let _ = Command::new("systemctl")
            .arg("stop")
            .arg(&self.name)
            .status();
        let _ = std::fs::remove_file(&self.path);
        let _ = Command::new("systemctl").arg("daemon-reload").status();
        let _ = Command::new("systemctl")
            .arg("reset-failed")
            .arg(&self.name)
            .status();
        let _ = std::fs::remove_dir_all(&self.config_dir);
        let state = format!("/var/lib/{}", self.name.trim_end_matches(".service"));
        let _ = std::fs::remove_dir_all(state);
    }
}

#[test]
fn exposure_and_capabilities_parse() {
    let output = "  NAME DESCRIPTION EXPOSURE\n✗ PrivateNetwork= ... 0.5\n\n\
                  → Overall exposure level for leakmon.service: 2.7 OK 🙂\n";
    assert_eq!(parse_exposure(output), Some(2.7));
    assert_eq!(parse_exposure("nothing"), None);
    let unit = "[Service]\n# CAP_A: why\nCapabilityBoundingSet=CAP_SYS_ADMIN\n\
                CapabilityBoundingSet=CAP_BPF CAP_PERFMON\n";
    assert_eq!(
        capabilities(unit).into_iter().collect::<Vec<_>>(),
        ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]
    );
    assert_eq!(capability_number("CAP_SYS_ADMIN"), 21);
    assert_eq!(capability_number("CAP_CHECKPOINT_RESTORE"), 40);
}
