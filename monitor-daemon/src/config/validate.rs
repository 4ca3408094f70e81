//! Validation of a parsed configuration: every value checked against what the daemon accepts
//! (see `deploy/config.toml`), in file order, the first failure naming its key and reason.

use std::fmt::Display;

use super::{Config, ConfigError, MAX_SAMPLE_RATE, TargetSelector};

/// The origin errors of [`Config::validate`] name before [`ConfigError::with_origin`].
const UNNAMED_ORIGIN: &str = "configuration";
/// `watch.window_seconds` must hold at least this many samples.
const MIN_WINDOW_SAMPLES: f64 = 6.0;
/// Smallest capacity of a kernel map.
const MIN_MAP_ENTRIES: u32 = 1024;
/// Smallest `reports.max_bytes` (1 MiB).
const MIN_REPORT_BYTES: u64 = 1 << 20;

/// A `Result` of one validation rule: the dotted key and the reason when it fails.
type Rule = Result<(), (String, String)>;

/// Fails with `key` and the reason `reason()` unless `ok`.
fn ensure(ok: bool, key: &str, reason: impl FnOnce() -> String) -> Rule {
    if ok {
        Ok(())
    } else {
        Err((key.to_owned(), reason()))
    }
}

/// A duration setting: finite and greater than zero.
fn positive_seconds(key: &str, value: f64) -> Rule {
    positive(key, value, "seconds")
}

/// A setting that must be finite and above zero, in `unit`.
fn positive(key: &str, value: f64, unit: &str) -> Rule {
    ensure(value.is_finite() && value > 0.0, key, || {
        format!("must be a positive number of {unit} (got {value})")
    })
}

/// A threshold setting: finite and not negative.
fn not_negative(key: &str, value: f64, unit: &str) -> Rule {
    ensure(value.is_finite() && value >= 0.0, key, || {
        format!("must be zero or a positive number of {unit} (got {value})")
    })
}

/// An integer setting with a lower bound.
fn at_least<T: PartialOrd + Display>(key: &str, value: T, min: T) -> Rule {
    ensure(value >= min, key, || {
        format!("must be at least {min} (got {value})")
    })
}

impl Config {
    /// Checks every value against what the daemon accepts (see `deploy/config.toml`).
    /// [`parse`](super::parse) calls it; the daemon calls it again after applying command-line
    /// overrides. The error's origin is `configuration`; name the real one with
    /// [`ConfigError::with_origin`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|(key, reason)| ConfigError::Invalid {
            origin: UNNAMED_ORIGIN.to_owned(),
            key,
            reason,
        })
    }

    /// The validation rules, in file order; the first failure wins.
    fn check(&self) -> Rule {
        let Self {
            daemon,
            watch,
            trace,
            reports,
            metrics,
        } = self;

        ensure(
            daemon.listen.ip().to_canonical().is_loopback()
                || daemon.token_file.is_some()
                || daemon.allow_unauthenticated,
            "daemon.listen",
            || {
                format!(
                    "{} is not a loopback address: set daemon.token_file to serve stack reports \
                     off-host, or daemon.allow_unauthenticated = true to serve them to anyone",
                    daemon.listen
                )
            },
        )?;
        ensure(daemon.state_dir.is_absolute(), "daemon.state_dir", || {
            format!(
                "must be an absolute path (got {})",
                daemon.state_dir.display()
            )
        })?;
        if let Some(token_file) = &daemon.token_file {
            ensure(token_file.is_absolute(), "daemon.token_file", || {
                format!("must be an absolute path (got {})", token_file.display())
            })?;
        }
        at_least(
            "daemon.max_requests_per_second",
            daemon.max_requests_per_second,
            1,
        )?;

        positive_seconds("watch.interval_seconds", watch.interval_seconds)?;
        positive_seconds("watch.window_seconds", watch.window_seconds)?;
        let min_window = watch.interval_seconds * MIN_WINDOW_SAMPLES;
        ensure(
            watch.window_seconds >= min_window,
            "watch.window_seconds",
            || {
                format!(
                    "must be at least {MIN_WINDOW_SAMPLES} times watch.interval_seconds, \
                 {min_window} (got {})",
                    watch.window_seconds
                )
            },
        )?;
        positive_seconds("watch.min_trend_seconds", watch.min_trend_seconds)?;
        ensure(
            watch.window_seconds >= watch.min_trend_seconds,
            "watch.window_seconds",
            || {
                format!(
                    "must be at least watch.min_trend_seconds, {} (got {})",
                    watch.min_trend_seconds, watch.window_seconds
                )
            },
        )?;
        not_negative(
            "watch.min_process_age_seconds",
            watch.min_process_age_seconds,
            "seconds",
        )?;
        at_least("watch.persistence", watch.persistence, 1)?;
        not_negative(
            "watch.min_rss_growth_bytes_per_second",
            watch.min_rss_growth_bytes_per_second,
            "bytes per second",
        )?;
        not_negative(
            "watch.min_vsz_growth_bytes_per_second",
            watch.min_vsz_growth_bytes_per_second,
            "bytes per second",
        )?;
        not_negative(
            "watch.min_fd_growth_per_second",
            watch.min_fd_growth_per_second,
            "descriptors per second",
        )?;
        not_negative(
            "watch.min_thread_growth_per_second",
            watch.min_thread_growth_per_second,
            "threads per second",
        )?;
        ensure(
            (0.0..=1.0).contains(&watch.min_relative_growth),
            "watch.min_relative_growth",
            || {
                format!(
                    "must be a fraction from 0 to 1 (got {})",
                    watch.min_relative_growth
                )
            },
        )?;
        not_negative("watch.imminent_seconds", watch.imminent_seconds, "seconds")?;
        ensure(
            (0.0..=1.0).contains(&watch.imminent_min_fraction),
            "watch.imminent_min_fraction",
            || {
                format!(
                    "must be a fraction from 0 to 1 (got {})",
                    watch.imminent_min_fraction
                )
            },
        )?;

        positive_seconds("trace.window_seconds", trace.window_seconds)?;
        positive_seconds("trace.interval_seconds", trace.interval_seconds)?;
        ensure(
            trace.window_seconds >= trace.interval_seconds,
            "trace.window_seconds",
            || {
                format!(
                    "must be at least trace.interval_seconds, {} (got {})",
                    trace.interval_seconds, trace.window_seconds
                )
            },
        )?;
        at_least("trace.max_concurrent", trace.max_concurrent, 1)?;
        positive_seconds("trace.cooldown_seconds", trace.cooldown_seconds)?;
        positive_seconds("trace.report_refresh_seconds", trace.report_refresh_seconds)?;
        positive(
            "trace.max_events_per_second",
            trace.max_events_per_second,
            "events per second",
        )?;
        positive(
            "trace.max_faults_per_second",
            trace.max_faults_per_second,
            "faults per second",
        )?;
        ensure(
            trace.sample_rate <= MAX_SAMPLE_RATE,
            "trace.sample_rate",
            || {
                format!(
                    "must be at most {MAX_SAMPLE_RATE} bytes (got {})",
                    trace.sample_rate
                )
            },
        )?;
        for (index, target) in trace.targets.iter().enumerate() {
            ensure(target.selects(), &format!("trace.targets[{index}]"), || {
                format!(
                    "must select on at least one of {} with a non-empty value",
                    TargetSelector::FIELDS.join(", ")
                )
            })?;
        }
        at_least(
            "trace.max_allocations",
            trace.max_allocations,
            MIN_MAP_ENTRIES,
        )?;
        at_least("trace.max_stacks", trace.max_stacks, MIN_MAP_ENTRIES)?;
        at_least(
            "trace.max_unwind_rows",
            trace.max_unwind_rows,
            MIN_MAP_ENTRIES,
        )?;

        at_least("reports.max_count", reports.max_count, 1)?;
        at_least("reports.max_bytes", reports.max_bytes, MIN_REPORT_BYTES)?;

        at_least("metrics.max_process_series", metrics.max_process_series, 1)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::parse;
    use crate::config::tests::{ORIGIN, invalid, parse_error};

    #[test]
    fn each_validation_rule_rejects_with_key_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "[daemon]\nlisten = \"0.0.0.0:9464\"",
                "daemon.listen",
                "0.0.0.0:9464 is not a loopback address: set daemon.token_file",
            ),
            (
                "[daemon]\nlisten = \"[::]:9464\"\nallow_unauthenticated = false",
                "daemon.listen",
                "daemon.allow_unauthenticated = true",
            ),
            (
                "[daemon]\nlisten = \"[::ffff:10.0.0.1]:9464\"",
                "daemon.listen",
                "not a loopback address",
            ),
            (
                "[daemon]\nstate_dir = \"var/lib\"",
                "daemon.state_dir",
                "absolute path",
            ),
            (
                "[daemon]\ntoken_file = \"token\"",
                "daemon.token_file",
                "absolute path (got token)",
            ),
            (
                "[daemon]\nmax_requests_per_second = 0",
                "daemon.max_requests_per_second",
                "at least 1",
            ),
            (
                "[watch]\ninterval_seconds = -1",
                "watch.interval_seconds",
                "(got -1)",
            ),
            (
                "[watch]\ninterval_seconds = 0",
                "watch.interval_seconds",
                "positive",
            ),
            (
                "[watch]\ninterval_seconds = nan",
                "watch.interval_seconds",
                "(got NaN)",
            ),
            (
                "[watch]\nwindow_seconds = inf",
                "watch.window_seconds",
                "(got inf)",
            ),
            (
                "[watch]\nwindow_seconds = 11",
                "watch.window_seconds",
                "6 times",
            ),
            (
                "[watch]\nwindow_seconds = 50",
                "watch.window_seconds",
                "min_trend_seconds",
            ),
            (
                "[watch]\nmin_trend_seconds = 0",
                "watch.min_trend_seconds",
                "positive",
            ),
            (
                "[watch]\nmin_process_age_seconds = -0.5",
                "watch.min_process_age_seconds",
                "zero",
            ),
            (
                "[watch]\npersistence = 0",
                "watch.persistence",
                "at least 1",
            ),
            (
                "[watch]\nmin_rss_growth_bytes_per_second = -1",
                "watch.min_rss_growth_bytes_per_second",
                "bytes per second",
            ),
            (
                "[watch]\nmin_vsz_growth_bytes_per_second = -inf",
                "watch.min_vsz_growth_bytes_per_second",
                "bytes per second",
            ),
            (
                "[watch]\nmin_fd_growth_per_second = -1",
                "watch.min_fd_growth_per_second",
                "zero",
            ),
            (
                "[watch]\nmin_thread_growth_per_second = -0.5",
                "watch.min_thread_growth_per_second",
                "threads per second",
            ),
            (
                "[watch]\nmin_relative_growth = 1.5",
                "watch.min_relative_growth",
                "0 to 1",
            ),
            (
                "[watch]\nmin_relative_growth = -0.1",
                "watch.min_relative_growth",
                "0 to 1",
            ),
            (
                "[trace]\nwindow_seconds = 0",
                "trace.window_seconds",
                "positive",
            ),
            (
                "[trace]\ninterval_seconds = -2",
                "trace.interval_seconds",
                "positive",
            ),
            (
                "[trace]\nwindow_seconds = 1",
                "trace.window_seconds",
                "trace.interval_seconds",
            ),
            (
                "[trace]\nmax_concurrent = 0",
                "trace.max_concurrent",
                "at least 1",
            ),
            (
                "[trace]\ncooldown_seconds = 0",
                "trace.cooldown_seconds",
                "positive",
            ),
            (
                "[trace]\nmax_events_per_second = 0",
                "trace.max_events_per_second",
                "positive",
            ),
            (
                "[trace]\nmax_faults_per_second = -1",
                "trace.max_faults_per_second",
                "positive",
            ),
            (
                "[trace]\nsample_rate = 1099511627777",
                "trace.sample_rate",
                "at most 1099511627776",
            ),
            (
                "[[trace.targets]]\nunit = \"a\"\n[[trace.targets]]",
                "trace.targets[1]",
                "at least one",
            ),
            (
                "[[trace.targets]]\ncomm = \"\"",
                "trace.targets[0]",
                "non-empty",
            ),
            (
                "[trace]\nmax_allocations = 1023",
                "trace.max_allocations",
                "at least 1024",
            ),
            (
                "[trace]\nmax_stacks = 100",
                "trace.max_stacks",
                "at least 1024",
            ),
            (
                "[trace]\nmax_unwind_rows = 10",
                "trace.max_unwind_rows",
                "at least 1024",
            ),
            (
                "[reports]\nmax_count = 0",
                "reports.max_count",
                "at least 1",
            ),
            (
                "[reports]\nmax_bytes = 1048575",
                "reports.max_bytes",
                "at least 1048576",
            ),
            (
                "[metrics]\nmax_process_series = 0",
                "metrics.max_process_series",
                "at least 1",
            ),
        ];
        for (text, key, reason) in cases {
            let (got_key, got_reason) = invalid(text);
            assert_eq!(got_key, *key, "{text}");
            assert!(got_reason.contains(reason), "{text}: {got_reason}");
        }
    }

    #[test]
    fn off_host_listen_needs_a_token_file_or_the_opt_out() {
        let token = parse(
            "[daemon]\nlisten = \"0.0.0.0:9464\"\ntoken_file = \"/etc/leakmon/token\"\n",
            ORIGIN,
        )
        .unwrap();
        assert_eq!(
            token.daemon.token_file.as_deref(),
            Some(Path::new("/etc/leakmon/token"))
        );
        assert!(!token.daemon.allow_unauthenticated);
        let open = parse(
            "[daemon]\nlisten = \"[::]:9464\"\nallow_unauthenticated = true\n",
            ORIGIN,
        )
        .unwrap();
        assert!(open.daemon.allow_unauthenticated && open.daemon.token_file.is_none());
        for loopback in [
            "127.0.0.1:1",
            "127.1.2.3:9464",
            "[::1]:9464",
            "[::ffff:127.0.0.1]:80",
        ] {
            parse(&format!("[daemon]\nlisten = \"{loopback}\"\n"), ORIGIN).unwrap();
        }
        let message = parse_error("[daemon]\nlisten = \"192.168.1.5:9464\"\n").to_string();
        assert_eq!(
            message,
            "/etc/leakmon/config.toml: daemon.listen: 192.168.1.5:9464 is not a loopback \
             address: set daemon.token_file to serve stack reports off-host, or \
             daemon.allow_unauthenticated = true to serve them to anyone"
        );
    }

    #[test]
    fn limits_themselves_are_accepted() {
        parse(
            "[watch]\ninterval_seconds = 10\nwindow_seconds = 60\nmin_trend_seconds = 60\n\
             min_process_age_seconds = 0\npersistence = 1\nmin_rss_growth_bytes_per_second = 0\n\
             min_relative_growth = 1\n[trace]\nwindow_seconds = 2\nsample_rate = 1099511627776\n\
             max_allocations = 1024\nmax_stacks = 1024\n[reports]\nmax_bytes = 1048576\n",
            ORIGIN,
        )
        .unwrap();
    }

    #[test]
    fn validate_checks_overrides_and_takes_an_origin() {
        let mut config = Config::default();
        config.watch.interval_seconds = -1.0;
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "configuration: watch.interval_seconds: must be a positive number of seconds (got -1)"
        );
        assert_eq!(
            error.with_origin(ORIGIN).to_string(),
            "/etc/leakmon/config.toml: watch.interval_seconds: must be a positive number of \
             seconds (got -1)"
        );
    }
}
