//! The symbolize layer: a stack's addresses turned into [`Frame`](crate::report::Frame)s, from
//! the code a process had mapped, even once that code is gone ([`symbolizer`]), and the Python
//! frames of a CPython process decoded from its interpreter's memory ([`python`]).
//!
//! It may use [`crate::report`] (the frames it produces) and [`crate::watch`] (the memory maps
//! read through [`procfs`](crate::watch::procfs)). It never imports the layers above it: the
//! tracer, the server, the command line and the daemon call it, not the other way round.
pub mod python;
pub mod symbolizer;
