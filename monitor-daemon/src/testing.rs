//! Helpers shared by the unit tests: a small deterministic random generator for synthetic
//! series (no random crate, so a failing seed reproduces exactly), reports and their frames,
//! watched processes, and API token files.

use std::path::{Path, PathBuf};

/// SplitMix64 with a Box-Muller normal: deterministic synthetic noise.
#[derive(Debug)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 pseudo-random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A report on `pid` (`comm`): a 10 s window sampled every second, every allocation recorded,
/// nothing dropped, no note; tests set the rest with struct update syntax.
pub(crate) fn report(
    pid: u32,
    comm: &str,
    stacks: Vec<crate::report::StackReport>,
) -> crate::report::Report {
    crate::report::Report {
        pid,
        start_time_ticks: None,
        comm: comm.to_owned(),
        duration_seconds: 10.0,
        interval_seconds: 1.0,
        sample_rate: 0,
        min_age_seconds: 0.0,
        partial: false,
        notes: Vec::new(),
        probes: Vec::new(),
        totals: crate::report::Totals::default(),
        dropped: std::collections::BTreeMap::new(),
        events: std::collections::BTreeMap::new(),
        stacks,
        ..Default::default()
    }
}

/// A frame with no source location.
pub(crate) fn frame(
    address: u64,
    symbol: Option<&str>,
    module: Option<&str>,
) -> crate::report::Frame {
    crate::report::Frame {
        address,
        symbol: symbol.map(str::to_owned),
        module: module.map(str::to_owned),
        file: None,
        line: None,
        inlined: false,
        ..Default::default()
    }
}

/// The current user's euid, which [`token_file`]'s files have.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// A file in `dir` holding `contents` with permission bits `mode`.
pub(crate) fn token_file(dir: &Path, contents: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(format!("token-{mode:o}-{}", contents.len()));
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A watched process that is not growing: 1 MiB resident, 4 MiB virtual, 3 descriptors, one
/// thread; tests set what they look at with struct update syntax.
pub(crate) fn process_view(pid: u32, comm: &str) -> crate::model::ProcessView {
    crate::model::ProcessView {
        pid,
        start_time_ticks: 1,
        comm: comm.to_owned(),
        unit: None,
        cgroup: None,
        rss_bytes: 1 << 20,
        vsz_bytes: 1 << 22,
        anon_bytes: 0,
        swap_bytes: 0,
        threads: 1,
        open_fds: 3,
        rss_growth_bytes_per_second: 0.0,
        vsz_growth_bytes_per_second: 0.0,
        fd_growth_per_second: 0.0,
        thread_growth_per_second: 0.0,
        suspected: false,
        reasons: Vec::new(),
        seconds_until_exhaustion: None,
        memory_limit: None,
        traced: false,
        trace_method: None,
        outstanding_bytes: None,
        latest_report: None,
        memory: None,
    }
}
