//! Unwinding user stacks through code built without frame pointers: the row builder
//! ([`rows`]) compiles each object's call-frame information into the compact rules the kernel
//! programs follow, and [`tables`] keeps those rows and each traced process's executable
//! mappings in the kernel maps.
//!
//! May use `watch::procfs` and the shared types of `monitor-common`; used by the tracer.

pub mod rows;
pub mod tables;
