//! The serve layer: what the daemon gives the outside world.
//!
//! It owns the HTTP API with its authentication and limits ([`api`]), the Prometheus text
//! exposition ([`metrics`]) and the on-disk store of reports ([`store`]).
//!
//! It may use [`crate::config`], [`crate::model`], [`crate::report`] and [`crate::watch`] (the
//! daemon's own process metrics come from `/proc`). It never imports `trace`, `cli` or the daemon:
//! it serves the [`Snapshot`](crate::model::Snapshot) and the reports the daemon publishes, and
//! hands trace requests to the daemon's main loop as [`api::Command`]s.
pub mod api;
pub mod metrics;
pub mod store;
