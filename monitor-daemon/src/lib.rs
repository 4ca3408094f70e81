//! leakmon: an eBPF-based memory-leak monitor for Linux hosts.
//!
//! The library holds everything the `leakmon` binary does; `main.rs` only parses the command
//! line and reports errors.
pub mod allocators;
pub mod api;
pub mod client;
pub mod config;
pub mod daemon;
pub mod launch;
pub mod metrics;
pub mod model;
pub mod oncall;
pub mod placement;
pub mod procfs;
pub mod regions;
pub mod report;
pub mod session;
pub mod store;
pub mod symbolize;
#[cfg(test)]
mod testing;
pub mod top;
pub mod trace;
pub mod tracefs;
pub mod tracer;
pub mod trend;
pub mod unwind;
pub mod watch;
