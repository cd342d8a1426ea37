//! Probe families. Each is one directory with the same shape, mirroring
//! its kernel module in `tracer-ebpf` and its types in `tracer-common`, and
//! registered once in [`REGISTRY`] by its [`FamilySpec`]:
//!
//! - `probe_hooks` (used before the family exists): which hooks this
//!   kernel offers and which the family uses;
//! - `configure`: read-only globals and map sizes, before the object loads;
//! - `attach`: load and attach its programs;
//! - `sample`: read the kernel's cumulative aggregation (the thin edge);
//! - `fill`: turn what was sampled into rows of the [`Report`] (pure);
//! - `report.rs`: its text section and how its rows merge (pure).

pub mod alloc;
pub mod block;
pub mod dirty;
pub mod event_log;
pub mod oom;
pub mod reclaim;
pub mod stack_samples;
pub mod stacks;
pub mod thp;

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
    /// False skips BTF tracepoints (`--force-raw-tp`).
    pub allow_tp_btf: bool,
    /// CLOCK_MONOTONIC (the clock of `bpf_ktime_get_ns`) when tracing
    /// started, to turn kernel timestamps into seconds since the start.
    pub started_mono_ns: u64,
    /// The same BTF parsed by aya, for BTF tracepoints: parsed on first
    /// use, after the loader (which parses its own) is gone.
    pub aya_btf: std::cell::OnceCell<Option<aya::Btf>>,
}

impl KernelEnv {
    pub fn new(tracefs: Tracefs, btf: std::result::Result<KernelBtf, String>, allow_tp_btf: bool) -> Self {
        Self {
            tracefs,
            btf,
            allow_tp_btf,
            started_mono_ns: monotonic_ns(),
            aya_btf: std::cell::OnceCell::new(),
        }
    }

    /// aya's view of kernel BTF, if BTF tracepoints are allowed and it parses.
    pub fn aya_btf(&self) -> Option<&aya::Btf> {
        self.aya_btf
            .get_or_init(|| if self.allow_tp_btf { aya::Btf::from_sys_fs().ok() } else { None })
            .as_ref()
    }
}

/// One hook a family can use, and whether this kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// e.g. "raw_tp block:block_rq_issue".
    pub name: String,
    pub available: bool,
    /// Whether the family will use it, given the options.
    pub used: bool,
    /// Whether the family cannot run without it, given the options.
    pub required: bool,
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
    /// One line naming the hook in use, for the report.
    fn hook_summary(&self) -> String;
    /// Better hooks the kernel refused at attach time, and its answer
    /// (empty when none was): `probes` and the report's header say it.
    fn refused(&self) -> String {
        String::new()
    }
    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>);
    fn attach(&mut self, ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()>;
    /// Handles rare events streamed by the kernel side, if the family has
    /// any; `Ready` when it handled some.
    fn poll_events(&mut self, _cx: &mut std::task::Context<'_>, _ebpf: &Ebpf) -> std::task::Poll<()> {
        std::task::Poll::Pending
    }
    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()>;
    fn fill(&mut self, report: &mut Report, scope: Scope, ebpf: &Ebpf);
    /// Processes this family keeps rows of (in its kernel maps and its
    /// snapshots), for [`Family::forget_processes`].
    fn row_processes(&self, _into: &mut ProcessSet) {}
    /// `watch`: forgets every row of the processes in `gone`, in the kernel
    /// maps and in the snapshots. They exited before the previous
    /// interval's sample, so their rows have been reported in full. A
    /// watch sees processes come and go for days: its maps must not fill
    /// with the dead, nor its per-interval work grow with them.
    fn forget_processes(&mut self, _ebpf: &mut Ebpf, _gone: &ProcessSet) -> Result<()> {
        Ok(())
    }
    /// User stack ids (in the shared `STACKS` map) that this family's rows
    /// and stalls in progress refer to, as last sampled: a user stack id
    /// none refers to after [`Family::forget_processes`] can go.
    fn user_stack_ids(&self, _into: &mut StackIdSet) {}
}

/// Stack ids of the shared `STACKS` map.
pub type StackIdSet = std::collections::HashSet<i32>;

/// Process ids (tgids).
pub type ProcessSet = std::collections::HashSet<u32>;

/// Deletes the rows of per-CPU hash map `name` whose process is in
/// `gone`, out of `keys` (those user space knows); returns them.
pub fn forget_rows<K: aya::Pod + Ord, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    keys: impl IntoIterator<Item = K>,
    process: impl Fn(&K) -> u32,
    gone: &ProcessSet,
) -> Result<Vec<K>> {
    use anyhow::Context as _;
    let mut map: aya::maps::PerCpuHashMap<_, K, V> =
        aya::maps::PerCpuHashMap::try_from(ebpf.map_mut(name).with_context(|| format!("{name} map"))?)?;
    let doomed: Vec<K> = keys.into_iter().filter(|k| gone.contains(&process(k))).collect();
    for key in &doomed {
        // Already gone is as good.
        let _ = map.remove(key);
    }
    Ok(doomed)
}

/// Whether process or thread `id` exists (a thread's id works too, though
/// /proc lists only processes).
pub fn process_exists(id: u32) -> bool {
    std::path::Path::new(&format!("/proc/{id}")).exists()
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Every probe family, in report order: the one list that `trace`,
/// `record`, `report`, `probes`, the command line and the renderers
/// iterate. A family is added here and nowhere else.
pub const REGISTRY: &[FamilySpec] =
    &[block::FAMILY, alloc::FAMILY, oom::FAMILY, reclaim::FAMILY, thp::FAMILY, dirty::FAMILY];

/// A probe family as the rest of tracer sees it.
pub struct FamilySpec {
    /// Its name on the command line and in reports.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The hooks this kernel offers it, and which it would use with these
    /// options (`probes`, and the check before a run).
    pub hooks: fn(&KernelEnv, &Options) -> Vec<Hook>,
    /// The family, set up for a run (before the object loads).
    pub build: fn(&Setup<'_>) -> Result<Box<dyn Family>>,
    /// One line for the report's summary: what happened, and the section
    /// that says more.
    pub summary: fn(&Report) -> String,
    /// Its sections of the text report, when it was traced.
    pub render_text: fn(&mut String, &Report),
    /// Adds one interval's rows into the whole run's (replaying a capture
    /// whose final report is missing).
    pub merge: fn(&mut Report, &Report),
    /// Orders and trims the merged rows as a live run does.
    pub finish_merge: fn(&mut Report),
}

/// The run's options that families read (from the command line).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--queued`: block latency from insert.
    pub queued: bool,
    /// `--slow-io`.
    pub slow_io: Option<std::time::Duration>,
    /// `--min-order`.
    pub min_order: u32,
    /// `--user-stack`: bytes of user stack copied for CFI unwinding.
    pub user_stack_bytes: u32,
    /// The whole run's report lists streamed events (not `watch`, which
    /// reports intervals only and must not grow with time).
    pub whole_run_events: bool,
}

/// A family's [`FamilySpec`]: its name, help line, hooks and constructor;
/// the summary, text section and merging come from its `report` module.
macro_rules! family_spec {
    ($name:literal, $about:literal, hooks: $hooks:expr, build: $build:expr $(,)?) => {
        $crate::families::FamilySpec {
            name: $name,
            about: $about,
            hooks: $hooks,
            build: $build,
            summary: report::summary,
            render_text: report::render_text,
            merge: report::merge,
            finish_merge: report::finish_merge,
        }
    };
}
pub(crate) use family_spec;

/// What a family is built from.
pub struct Setup<'a> {
    pub options: &'a Options,
    /// `--disk`, resolved: (name, dev_t).
    pub disks: &'a [(String, u32)],
    pub env: &'a KernelEnv,
    pub stacks: &'a std::rc::Rc<stacks::Stacks>,
}

/// A family's place in reports (unknown names last).
pub fn report_order(name: &str) -> usize {
    REGISTRY.iter().position(|f| f.name == name).unwrap_or(REGISTRY.len())
}

/// Which entry points of a family's kernel programs are attached: every
/// tracepoint program exists as `<tracepoint>_btf` (BTF tracepoint, direct
/// struct loads) and `<tracepoint>_raw` (raw tracepoint, probe reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramFlavor {
    TpBtf,
    RawTp,
}

impl ProgramFlavor {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramFlavor::TpBtf => "tp_btf",
            ProgramFlavor::RawTp => "raw_tp",
        }
    }
}

/// Loads and attaches `<tp>_btf` for every tracepoint, or, if any of them
/// will not load (kernel without tp_btf or its BTF), `<tp>_raw` for all:
/// never a mix.
pub fn load_and_attach(ebpf: &mut Ebpf, tracepoints: &[&str], env: &KernelEnv) -> Result<ProgramFlavor> {
    use anyhow::Context as _;
    use aya::programs::{BtfTracePoint, RawTracePoint};

    let btf = env.aya_btf().context("no kernel BTF for tp_btf, or --force-raw-tp");
    let btf_loaded = btf.and_then(|btf| {
        for tp in tracepoints {
            let name = format!("{tp}_btf");
            let prog: &mut BtfTracePoint =
                ebpf.program_mut(&name).with_context(|| format!("no program {name}"))?.try_into()?;
            prog.load(tp, btf).with_context(|| format!("loading {name}"))?;
        }
        Ok(())
    });
    match btf_loaded {
        Ok(()) => {
            for tp in tracepoints {
                let prog: &mut BtfTracePoint =
                    ebpf.program_mut(&format!("{tp}_btf")).expect("loaded").try_into()?;
                prog.attach().with_context(|| format!("attaching tp_btf {tp}"))?;
            }
            Ok(ProgramFlavor::TpBtf)
        }
        Err(e) => {
            log::info!("tp_btf unavailable ({e:#}); using raw tracepoints");
            for tp in tracepoints {
                let name = format!("{tp}_raw");
                let prog: &mut RawTracePoint =
                    ebpf.program_mut(&name).with_context(|| format!("no program {name}"))?.try_into()?;
                prog.load().with_context(|| format!("loading {name}"))?;
                prog.attach(tp).with_context(|| format!("attaching raw tracepoint {tp}"))?;
            }
            Ok(ProgramFlavor::RawTp)
        }
    }
}

/// Loads and attaches program `<name>_btf` or `<name>_raw`, as `flavor`
/// says, to tracepoint `tp`: for a program whose name is not its
/// tracepoint's (a second program on a tracepoint another family uses).
pub fn load_and_attach_as(
    ebpf: &mut Ebpf,
    flavor: ProgramFlavor,
    name: &str,
    tp: &str,
    env: &KernelEnv,
) -> Result<()> {
    use anyhow::Context as _;
    use aya::programs::{BtfTracePoint, RawTracePoint};

    match flavor {
        ProgramFlavor::TpBtf => {
            let btf = env.aya_btf().context("no kernel BTF for tp_btf")?;
            let name = format!("{name}_btf");
            let prog: &mut BtfTracePoint =
                ebpf.program_mut(&name).with_context(|| format!("no program {name}"))?.try_into()?;
            prog.load(tp, btf).with_context(|| format!("loading {name}"))?;
            prog.attach().with_context(|| format!("attaching tp_btf {tp}"))?;
        }
        ProgramFlavor::RawTp => {
            let name = format!("{name}_raw");
            let prog: &mut RawTracePoint =
                ebpf.program_mut(&name).with_context(|| format!("no program {name}"))?.try_into()?;
            prog.load().with_context(|| format!("loading {name}"))?;
            prog.attach(tp).with_context(|| format!("attaching raw tracepoint {tp}"))?;
        }
    }
    Ok(())
}

/// A family's tracepoints: (name, required, what it is for).
pub type Tracepoints = [(&'static str, bool, &'static str)];

/// `probes` rows for a family's tracepoints, each used where this kernel
/// has it; `category` names a tracepoint's tracefs category.
pub fn tracepoint_hooks(
    env: &KernelEnv,
    tracepoints: &Tracepoints,
    category: fn(&str) -> &'static str,
) -> Vec<Hook> {
    tracepoints
        .iter()
        .map(|(tp, required, what)| {
            let exists = env.tracefs.has_event(category(tp), tp);
            Hook {
                name: format!("{}:{tp}", category(tp)),
                available: exists,
                used: exists,
                required: *required,
                note: if exists { (*what).to_string() } else { "not on this kernel".into() },
            }
        })
        .collect()
}

/// The tracepoints to attach (the required ones, and the optional ones this
/// kernel has), and the optional ones it lacks, with what they are for.
pub fn present_tracepoints(
    env: &KernelEnv,
    tracepoints: &Tracepoints,
    category: fn(&str) -> &'static str,
) -> (Vec<&'static str>, Vec<(&'static str, &'static str)>) {
    let mut present = Vec::new();
    let mut missing = Vec::new();
    for &(tp, required, what) in tracepoints {
        if required || env.tracefs.has_event(category(tp), tp) {
            present.push(tp);
        } else {
            missing.push((tp, what));
        }
    }
    (present, missing)
}

/// Whether BTF tracepoints are possible for `tracepoints` (kernel BTF has
/// their `btf_trace_*` types); raw tracepoints are the fallback.
pub fn tp_btf_hook(env: &KernelEnv, tracepoints: &[&str]) -> Hook {
    let missing: Vec<&str> = match &env.btf {
        _ if !env.allow_tp_btf => tracepoints.to_vec(),
        Ok(btf) => {
            tracepoints.iter().copied().filter(|tp| !btf.has_type(&format!("btf_trace_{tp}"))).collect()
        }
        Err(_) => tracepoints.to_vec(),
    };
    Hook {
        name: "tp_btf (direct struct loads)".into(),
        available: missing.is_empty(),
        used: missing.is_empty(),
        required: false,
        note: if missing.is_empty() {
            "preferred; raw_tp with probe reads is the fallback".into()
        } else {
            format!("no BTF for {}; raw_tp with probe reads is used", missing.join(", "))
        },
    }
}

/// A family's event ring buffer, watched for readability by the runtime.
pub type EventRing = tokio::io::unix::AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>;

/// Takes the ring buffer map `name` out of the object and watches it.
pub fn watch_ring(ebpf: &mut Ebpf, name: &str) -> Result<EventRing> {
    use anyhow::Context as _;
    let ring = aya::maps::RingBuf::try_from(ebpf.take_map(name).with_context(|| format!("{name} map"))?)?;
    // Safety: the ring buffer owns its map's file descriptor, which stays
    // open and unchanged until the AsyncFd (owning the ring) is dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching {name}: {e}"))
}

/// Every event of type `E` waiting in a ring; `Pending` when the ring
/// has not signalled and holds nothing (or the family has no ring yet).
pub fn drain_ring<E: Copy>(
    ring: Option<&mut EventRing>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Vec<E>> {
    drain_ring_with_tail::<E>(ring, cx).map(|events| events.into_iter().map(|(event, _)| event).collect())
}

/// Every record waiting in a ring as its event `E` and the bytes after it
/// (a user stack copy). Records are read whether or not the ring's wakeup
/// came: the run loop takes what is waiting before each report and before
/// the last one after a stop, which it handles ahead of pending events.
/// `Pending` when it had not signalled and held nothing.
pub fn drain_ring_with_tail<E: Copy>(
    ring: Option<&mut EventRing>,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<Vec<(E, Vec<u8>)>> {
    let Some(ring) = ring else {
        return std::task::Poll::Pending;
    };
    match ring.poll_read_ready_mut(cx) {
        std::task::Poll::Ready(Ok(mut guard)) => {
            let events = records(guard.get_inner_mut());
            guard.clear_ready();
            std::task::Poll::Ready(events)
        }
        _ => {
            let events = records(ring.get_mut());
            if events.is_empty() { std::task::Poll::Pending } else { std::task::Poll::Ready(events) }
        }
    }
}

/// Takes the user stack samples waiting in `ring` into `stacks`, each
/// unwound now (see [`stacks::Stacks::take_sample`]).
pub fn take_stack_samples(
    ring: Option<&mut EventRing>,
    cx: &mut std::task::Context<'_>,
    stacks: &stacks::Stacks,
    ebpf: &Ebpf,
) -> std::task::Poll<()> {
    drain_ring_with_tail::<tracer_common::ustack::StackSampleEvent>(ring, cx).map(|batch| {
        for (event, tail) in &batch {
            stacks.take_sample(event, tail, ebpf);
        }
    })
}

/// The records in `ring`, each as `E` and the bytes after it.
fn records<E: Copy>(ring: &mut aya::maps::RingBuf<aya::maps::MapData>) -> Vec<(E, Vec<u8>)> {
    let size = std::mem::size_of::<E>();
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= size {
            // Safety: the kernel side writes `E` (a #[repr(C)] plain struct
            // shared through tracer-common) at the start of each record.
            let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<E>()) };
            events.push((event, item[size..].to_vec()));
        }
    }
    events
}

/// Every row of the per-CPU hash map `name`, summed over CPUs by `fold`
/// (`None` leaves the row out).
pub fn per_cpu_rows<K: aya::Pod + Ord, V: aya::Pod>(
    ebpf: &Ebpf,
    name: &str,
    fold: impl Fn(&aya::maps::PerCpuValues<V>) -> Option<V>,
) -> Result<std::collections::BTreeMap<K, V>> {
    use anyhow::Context as _;
    let map: aya::maps::PerCpuHashMap<_, K, V> =
        aya::maps::PerCpuHashMap::try_from(ebpf.map(name).with_context(|| format!("{name} map"))?)?;
    let mut rows = std::collections::BTreeMap::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        if let Some(row) = fold(&per_cpu) {
            rows.insert(key, row);
        }
    }
    Ok(rows)
}

/// A kernel task name (NUL-padded) as text.
pub fn comm_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map or global renamed on one side only would fail at load time on
    /// a user's host; here it fails the build's tests.
    #[test]
    fn every_shared_name_is_in_the_kernel_object() {
        use object::{Object as _, ObjectSymbol as _};
        let file = object::File::parse(crate::EBPF_OBJECT).unwrap();
        let symbols: Vec<&str> = file.symbols().filter_map(|s| s.name().ok()).collect();
        for name in tracer_common::maps::ALL {
            assert!(symbols.contains(name), "{name} is not in the kernel object: {symbols:?}");
        }
    }

    #[test]
    fn family_names_are_unique_and_ordered_as_reports() {
        for (i, family) in REGISTRY.iter().enumerate() {
            assert_eq!(report_order(family.name), i, "{} registered twice", family.name);
        }
        assert_eq!(report_order("no such family"), REGISTRY.len());
    }

    /// A family's directory without its registry entry would compile and
    /// never run.
    #[test]
    fn every_family_directory_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/families");
        let mut found = 0;
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                let name = entry.file_name().into_string().unwrap();
                assert!(REGISTRY.iter().any(|f| f.name == name), "families/{name} is not in REGISTRY");
                found += 1;
            }
        }
        assert_eq!(found, REGISTRY.len(), "a registered family without its directory");
    }
}
