//! leakmon: an eBPF-based memory-leak monitor for Linux hosts.
//!
//! The library holds everything the `leakmon` binary does; `main.rs` only parses the command
//! line and reports errors.
pub mod allocators;
pub mod launch;
pub mod placement;
pub mod procfs;
pub mod regions;
pub mod report;
pub mod symbolize;
pub mod trace;
pub mod tracer;
pub mod trend;
pub mod config;
pub mod model;
