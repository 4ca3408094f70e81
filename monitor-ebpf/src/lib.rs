//! Host-side library target of the kernel-programs crate. It is empty: it exists so that
//! `monitor-daemon` can declare a build dependency on this crate and be rebuilt when it changes.
#![no_std]
