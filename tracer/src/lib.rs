//! tracer: eBPF tracing for Linux memory and I/O latency forensics.
//!
//! `main` only wires things: [`cli`] parses, [`commands`] dispatches,
//! [`session`] runs the kernel side through the [`families`] (one
//! [`families::REGISTRY`]), which fill one [`model::Report`], which the
//! [`render`]ers print and the [`capture`] writer records; [`replay`]
//! renders a recorded capture anywhere; [`probes`] says what each family
//! can use on this kernel.

pub mod build_info;
pub mod capture;
pub mod cli;
pub mod commands;
pub mod export;
pub mod families;
pub mod kernel;
pub mod merge;
pub mod model;
pub mod probes;
pub mod render;
pub mod replay;
pub mod report_output;
pub mod session;
pub mod symbolize;
pub mod units;
pub mod unwind;
pub mod watch;

/// The kernel programs, built by build.rs and embedded so the binary runs on
/// hosts without a toolchain.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));
