//! Probe families. Each is one module with the same shape, mirroring its
//! kernel module in `tracer-ebpf`:
//!
//! - `probe`: which hooks this kernel offers and which one the family uses;
//! - `configure`: read-only globals and map sizes, before the object loads;
//! - `attach`: load and attach its programs;
//! - `sample`: read the kernel's cumulative aggregation (the thin edge);
//! - `fill`: turn what was sampled into rows of the [`Report`] (pure).

pub mod block;

use anyhow::Result;
use aya::{Ebpf, EbpfLoader};

use crate::{
    kernel::{btf::KernelBtf, tracefs::Tracefs},
    model::Report,
};

/// What families need to know about the running kernel.
pub struct KernelEnv {
    pub tracefs: Tracefs,
    /// Kernel BTF, or why it is unavailable.
    pub btf: std::result::Result<KernelBtf, String>,
}

/// One hook a family can use, and whether this kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// e.g. "raw_tp block:block_rq_issue".
    pub name: String,
    pub available: bool,
    /// Whether the family will use it, given the options.
    pub used: bool,
    /// Why it is unavailable, or what it is for.
    pub note: String,
}

/// Which part of the run a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Since the previous `fill` with this scope (one `--interval`).
    Interval,
    /// Since tracing started.
    Whole,
}

pub trait Family {
    fn name(&self) -> &'static str;
    /// Hooks on this kernel; `Err` says why the family cannot run at all.
    fn probe(&self, env: &KernelEnv) -> Vec<Hook>;
    /// One line naming the hook in use, for the report.
    fn hook_summary(&self) -> String;
    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>);
    fn attach(&mut self, ebpf: &mut Ebpf) -> Result<()>;
    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()>;
    fn fill(&mut self, report: &mut Report, scope: Scope);
}

/// Names of all families, in report order.
pub const ALL: [&str; 5] = ["block", "alloc", "oom", "reclaim", "thp"];

/// Attaches a raw tracepoint program by its function name.
pub fn attach_raw_tracepoint(ebpf: &mut Ebpf, program: &str, tracepoint: &str) -> Result<()> {
    use anyhow::Context as _;
    let prog: &mut aya::programs::RawTracePoint = ebpf
        .program_mut(program)
        .with_context(|| format!("program {program} missing from the embedded object"))?
        .try_into()?;
    prog.load().with_context(|| format!("loading {program}"))?;
    prog.attach(tracepoint).with_context(|| format!("attaching raw tracepoint {tracepoint}"))?;
    Ok(())
}
