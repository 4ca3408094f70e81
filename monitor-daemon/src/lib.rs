//! leakmon: an eBPF-based memory-leak monitor for Linux hosts.
//!
//! The library holds everything the `leakmon` binary does; `main.rs` only parses the command
//! line and reports errors.
pub mod report;
