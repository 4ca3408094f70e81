//! leakmon: an eBPF-based memory-leak monitor for Linux hosts.
//!
//! The library holds everything the `leakmon` binary does; `main.rs` only parses the command
//! line and reports errors.
//!
//! # Layers
//!
//! The modules are grouped by layer, listed here from the bottom up. A layer uses only the
//! layers listed before it, never one after it, and each folder's doc says what it owns and may
//! use:
//!
//! 1. [`config`] and [`model`]: the configuration file and the daemon's view of the host, shared
//!    by every layer; they use nothing else of the crate.
//! 2. [`report`]: the leak report and its encoders (text, folded stacks, pprof).
//! 3. [`watch`]: `/proc`, the growth statistics and the always-on process watcher (no eBPF).
//! 4. [`symbolize`]: a stack's addresses turned into frames.
//! 5. [`trace`]: the kernel programs seen from user space, and the tracing session that turns
//!    what they record into a report.
//! 6. [`serve`]: what the daemon serves: the HTTP API, the Prometheus metrics, the report store.
//! 7. [`cli`]: the commands run from a terminal: `leakmon trace`, the on-call commands, `top`,
//!    and the API client they share.
//! 8. [`daemon`]: `leakmon run`, which drives the watcher, the tracer and the server.
//!
//! `report` and `watch` do not use each other, nor do `trace` and `serve`, nor `cli` and
//! `daemon`; the order between them is only a convention. The unit tests' fixtures (`testing`)
//! build reports and watched processes for the tests of every layer.
pub mod cli;
pub mod config;
pub mod daemon;
pub mod model;
pub mod report;
pub mod serve;
pub mod symbolize;
#[cfg(test)]
mod testing;
pub mod trace;
pub mod watch;
