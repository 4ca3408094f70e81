//! The watch layer: the host's processes as `/proc` shows them, without eBPF.
//!
//! It owns the `/proc` readers ([`procfs`]), the limits a process's resources run into and the
//! cgroup readers they come from ([`limits`]), the growth statistics, the leak rule and the
//! turnover rule ([`trend`]), what a process's memory is made of ([`memory`]), and the
//! always-on process watcher that applies them to every process each interval ([`watcher`]).
//!
//! It may use [`crate::config`] and [`crate::model`], nothing else of the crate. The layers
//! above read `/proc` through [`procfs`] and judge a stack's growth with [`trend`], but nothing
//! here imports them: the watcher knows nothing of the tracer, the symbolizer, the API or the
//! command line.
pub mod limits;
pub mod memory;
pub mod procfs;
pub mod trend;
pub mod watcher;
