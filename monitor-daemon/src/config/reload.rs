//! The comparison of two configurations that the daemon reports when it reloads on SIGHUP:
//! every setting with its value as people write it, in file order, and the settings that take
//! effect only after a restart.

use std::{net::SocketAddr, path::PathBuf};

use super::{
    Config, DaemonConfig, MetricsConfig, ReportsConfig, TargetSelector, TraceConfig, TraceMethod,
    WatchConfig,
};

/// Settings the daemon applies only when it starts (sockets, directories and kernel map sizes).
const RESTART_ONLY: [&str; 8] = [
    "daemon.listen",
    "daemon.state_dir",
    "daemon.token_file",
    "daemon.allow_unauthenticated",
    "daemon.max_requests_per_second",
    "trace.max_allocations",
    "trace.max_stacks",
    "trace.max_unwind_rows",
];

impl Config {
    /// What differs from this configuration in `new`, one line per setting in file order, e.g.
    /// `watch.interval_seconds 2 -> 5`. Empty when nothing changed.
    pub fn reload_changes(&self, new: &Config) -> Vec<String> {
        self.changed(new)
            .map(|(old, new)| format!("{} {} -> {}", old.key(), old.value, new.value))
            .collect()
    }

    /// The changed settings that take effect only after a restart (every `daemon` key and the
    /// kernel map capacities `trace.max_*`), named and separated by commas, e.g.
    /// `daemon.listen, trace.max_stacks`; `None` when a reload can apply `new`.
    pub fn requires_restart(&self, new: &Config) -> Option<String> {
        let keys: Vec<String> = self
            .changed(new)
            .map(|(old, _)| old.key())
            .filter(|key| RESTART_ONLY.contains(&key.as_str()))
            .collect();
        (!keys.is_empty()).then(|| keys.join(", "))
    }

    /// The settings whose value differs in `new`, as (old, new) pairs.
    fn changed(&self, new: &Config) -> impl Iterator<Item = (Setting, Setting)> {
        self.settings()
            .into_iter()
            .zip(new.settings())
            .filter(|(old, new)| old.value != new.value)
    }

    /// Every setting with its value rendered for people, in file order. The destructuring is
    /// exhaustive, so a new field fails to compile until it is listed here.
    pub(super) fn settings(&self) -> Vec<Setting> {
        let mut list = Vec::new();
        let Self {
            daemon,
            watch,
            trace,
            reports,
            metrics,
        } = self;
        {
            let DaemonConfig {
                listen,
                state_dir,
                token_file,
                allow_unauthenticated,
                max_requests_per_second,
            } = daemon;
            push_settings!(list, "daemon": listen, state_dir, token_file, allow_unauthenticated,
                max_requests_per_second);
        }
        {
            let WatchConfig {
                interval_seconds,
                window_seconds,
                min_trend_seconds,
                min_process_age_seconds,
                persistence,
                min_rss_growth_bytes_per_second,
                min_vsz_growth_bytes_per_second,
                min_fd_growth_per_second,
                min_thread_growth_per_second,
                min_relative_growth,
                imminent_seconds,
                imminent_min_fraction,
            } = watch;
            push_settings!(list, "watch": interval_seconds, window_seconds, min_trend_seconds,
                min_process_age_seconds, persistence, min_rss_growth_bytes_per_second,
                min_vsz_growth_bytes_per_second, min_fd_growth_per_second, min_relative_growth,
                min_thread_growth_per_second, imminent_seconds, imminent_min_fraction);
        }
        {
            let TraceConfig {
                auto,
                method,
                follow_with_allocations,
                window_seconds,
                interval_seconds,
                max_concurrent,
                cooldown_seconds,
                max_events_per_second,
                max_faults_per_second,
                sample_rate,
                all_processes,
                targets,
                max_allocations,
                max_stacks,
                max_unwind_rows,
                report_refresh_seconds,
            } = trace;
            push_settings!(list, "trace": auto, method, follow_with_allocations, window_seconds,
                interval_seconds, max_concurrent, cooldown_seconds, max_events_per_second,
                max_faults_per_second, sample_rate, all_processes, targets,
                max_allocations, max_stacks, max_unwind_rows, report_refresh_seconds);
        }
        {
            let ReportsConfig {
                max_count,
                max_bytes,
            } = reports;
            push_settings!(list, "reports": max_count, max_bytes);
        }
        {
            let MetricsConfig { max_process_series } = metrics;
            push_settings!(list, "metrics": max_process_series);
        }
        list
    }
}

/// One setting of [`Config::settings`].
#[derive(Debug)]
pub(super) struct Setting {
    /// The table, e.g. `watch`.
    pub(super) section: &'static str,
    /// The key in the table, e.g. `interval_seconds`.
    pub(super) name: &'static str,
    /// The value as people write it.
    value: String,
}

impl Setting {
    /// The dotted key, e.g. `watch.interval_seconds`.
    fn key(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

/// Pushes a [`Setting`] for each named binding, using the binding's name as the key.
macro_rules! push_settings {
    ($list:ident, $section:literal: $($field:ident),+ $(,)?) => {
        $($list.push(Setting {
            section: $section,
            name: stringify!($field),
            value: Render::render($field),
        });)+
    };
}
use push_settings;

/// How a setting's value reads in reload messages.
trait Render {
    /// The value as people write it.
    fn render(&self) -> String;
}

/// [`Render`] through [`Display`](std::fmt::Display).
macro_rules! render_by_display {
    ($($type:ty),+) => {
        $(impl Render for $type {
            fn render(&self) -> String {
                self.to_string()
            }
        })+
    };
}
render_by_display!(bool, u32, u64, usize, f64, SocketAddr, TraceMethod);

impl Render for PathBuf {
    fn render(&self) -> String {
        self.display().to_string()
    }
}

impl Render for Option<PathBuf> {
    fn render(&self) -> String {
        self.as_ref()
            .map_or_else(|| "none".to_owned(), |path| path.display().to_string())
    }
}

impl Render for Vec<TargetSelector> {
    fn render(&self) -> String {
        let targets: Vec<String> = self
            .iter()
            .map(|target| {
                let fields: Vec<String> = TargetSelector::FIELDS
                    .iter()
                    .zip(target.fields())
                    .filter_map(|(name, value)| value.map(|value| format!("{name}={value}")))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            })
            .collect();
        format!("[{}]", targets.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::dotted_keys;

    #[test]
    fn settings_name_every_serialized_key() {
        let listed: Vec<String> = Config::default()
            .settings()
            .iter()
            .map(Setting::key)
            .collect();
        // Keys without a default value are serialized once set.
        let mut with_every_key = Config::default();
        with_every_key.daemon.token_file = Some(PathBuf::from("/etc/leakmon/token"));
        let mut serialized = Vec::new();
        dotted_keys(
            &toml::Value::try_from(with_every_key).unwrap(),
            "",
            &mut serialized,
        );
        let mut sorted = listed.clone();
        sorted.sort();
        serialized.sort();
        assert_eq!(sorted, serialized);
        for key in RESTART_ONLY {
            assert!(listed.iter().any(|listed| listed == key), "{key}");
        }
        let target = TargetSelector {
            unit: Some("a".into()),
            comm: Some("b".into()),
            cgroup: Some("c".into()),
        };
        let mut target_keys = Vec::new();
        dotted_keys(
            &toml::Value::try_from(target).unwrap(),
            "",
            &mut target_keys,
        );
        target_keys.sort();
        let mut fields = TargetSelector::FIELDS.to_vec();
        fields.sort();
        assert_eq!(target_keys, fields);
    }

    #[test]
    fn reload_changes_lists_each_change() {
        let old = Config::default();
        assert!(old.reload_changes(&old).is_empty());
        assert_eq!(old.requires_restart(&old), None);

        let mut new = old.clone();
        new.watch.interval_seconds = 5.0;
        new.watch.min_relative_growth = 0.1;
        new.trace.targets.push(TargetSelector {
            unit: Some("nginx.service".into()),
            comm: Some("nginx".into()),
            cgroup: None,
        });
        assert_eq!(
            old.reload_changes(&new),
            [
                "watch.interval_seconds 2 -> 5",
                "watch.min_relative_growth 0.05 -> 0.1",
                "trace.targets [] -> [{unit=nginx.service, comm=nginx}]",
            ]
        );
        assert_eq!(old.requires_restart(&new), None);

        new.daemon.listen = SocketAddr::from(([0, 0, 0, 0], 9464));
        new.trace.max_stacks = 65_536;
        let changes = old.reload_changes(&new);
        assert!(changes.contains(&"daemon.listen 127.0.0.1:9464 -> 0.0.0.0:9464".to_owned()));
        assert!(changes.contains(&"trace.max_stacks 32768 -> 65536".to_owned()));
        assert_eq!(
            old.requires_restart(&new).as_deref(),
            Some("daemon.listen, trace.max_stacks")
        );

        let mut secured = old.clone();
        secured.daemon.token_file = Some(PathBuf::from("/etc/leakmon/token"));
        secured.daemon.max_requests_per_second = 10;
        assert_eq!(
            old.reload_changes(&secured),
            [
                "daemon.token_file none -> /etc/leakmon/token",
                "daemon.max_requests_per_second 50 -> 10",
            ]
        );
        assert_eq!(
            old.requires_restart(&secured).as_deref(),
            Some("daemon.token_file, daemon.max_requests_per_second")
        );

        let mut moved = old.clone();
        moved.daemon.state_dir = PathBuf::from("/srv/leakmon");
        moved.trace.max_allocations = 1024;
        assert_eq!(
            old.requires_restart(&moved).as_deref(),
            Some("daemon.state_dir, trace.max_allocations")
        );
    }
}
