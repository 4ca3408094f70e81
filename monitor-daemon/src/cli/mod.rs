//! The command-line layer: what `leakmon` does from a terminal besides running the daemon.
//!
//! It owns `leakmon trace` and `probe-cost` ([`trace`]), the on-call commands `status`, `report`
//! and the trace request ([`oncall`]), the live view `leakmon top` ([`top`]), and the HTTP client
//! of the daemon's API they share ([`client`]).
//!
//! It may use every layer below it: [`crate::config`], [`crate::model`], [`crate::report`],
//! [`crate::watch`], [`crate::symbolize`], [`crate::trace`] and [`crate::serve`] (the API's token
//! and bodies). Nothing in the library imports it, not even the daemon; only `main.rs` does.
pub mod client;
pub mod oncall;
pub mod top;
pub mod trace;
