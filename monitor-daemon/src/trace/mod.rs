//! The trace layer: the kernel programs seen from user space, and what user space makes of their
//! data.
//!
//! It owns loading the embedded eBPF object, attaching its programs and reading its maps
//! ([`tracer`]), the tracing file system ([`tracefs`]), finding the allocator entry points to probe
//! ([`allocators`]) and the instruction each probe goes on ([`placement`]), the bookkeeping of a
//! process's memory mappings ([`regions`]) and of the pages it holds by the page-fault method
//! ([`pages`]), starting a command held until its probes are attached
//! ([`launch`]), the unwind tables the kernel programs walk stacks through ([`unwind`]), and one
//! traced process's window, from the kernel's events and maps to its
//! [`Report`](crate::report::Report) ([`session`]).
//!
//! It may use [`crate::report`], [`crate::watch`] (`/proc` and the leak rule) and
//! [`crate::symbolize`]. It never imports `serve`, `cli` or the daemon: the tracer knows nothing of
//! the API or the command line; the command line and the daemon drive it.
pub mod allocators;
pub mod launch;
pub mod pages;
pub mod placement;
pub mod python;
pub mod regions;
pub mod session;
pub mod tracefs;
pub mod tracer;
pub mod unwind;
