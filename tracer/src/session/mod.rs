//! The run loop of `trace` and `record`: checks the host, loads the
//! embedded kernel programs, attaches the requested families, samples them
//! until the end of the run (handing interval reports to its [`sinks`] on
//! the way), and hands them the final report. `trace` prints; `record` adds
//! the capture writer.

pub mod sinks;

use std::{
    path::Path,
    process::ExitCode,
    rc::Rc,
    task::Poll,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, EbpfLoader, maps::PerCpuArray};
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::{
    counters::Counter,
    maps,
    task::{TaskFilter, TaskOffsets},
};

use self::sinks::{CaptureSink, MetricsSink, Printer, ReportSink, StatusLine};
use crate::{
    capture::{CaptureEnd, CaptureHeader},
    cli::{FamilyName, RunOptions},
    families::{
        Family, FamilySpec, KernelEnv, ProcessSet, Scope, Setup, StackIdSet, report_order, stacks::Stacks,
    },
    kernel::{
        btf::{KernelBtf, task_offsets},
        caps,
        cgroups::Cgroups,
        devices, sysinfo,
        tracefs::Tracefs,
    },
    model::{FamilyStatus, Host, LostCount, Report, SystemContext, TimelinePoint, Window},
};

/// Hands memory freed so far back to the system. The static binary's
/// allocator (mimalloc) keeps freed pages for reuse and returns them
/// lazily: the ~30 MB of BTF parsed to attach stayed resident for the
/// whole run in about half of the runs measured.
pub fn return_freed_memory() {
    #[cfg(target_env = "musl")]
    // SAFETY: mi_collect only walks the allocator's own free lists.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

pub fn kernel_env(notices: &mut Vec<String>, allow_tp_btf: bool) -> Result<KernelEnv> {
    let (tracefs, notice) = Tracefs::find_or_mount()?;
    notices.extend(notice);
    let btf = KernelBtf::load().map_err(|e| e.to_string());
    Ok(KernelEnv::new(tracefs, btf, allow_tp_btf))
}

pub fn host() -> Host {
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    Host { hostname: read("/proc/sys/kernel/hostname"), kernel_release: read("/proc/sys/kernel/osrelease") }
}

/// A family that could be set up, or why it could not.
enum Planned {
    Ready(Box<dyn Family>),
    Unavailable { family: &'static str, hook: String, why: String },
}

fn plan(family: &FamilySpec, setup: &Setup<'_>) -> Planned {
    let unavailable = |hook: String, why: String| Planned::Unavailable { family: family.name, hook, why };
    let hooks = (family.hooks)(setup.env, setup.options);
    if let Some(missing) = hooks.iter().find(|h| h.required && !h.available) {
        return unavailable(
            missing.name.clone(),
            format!("{} is unavailable: {}", missing.name, missing.note),
        );
    }
    match (family.build)(setup) {
        Ok(family) => Planned::Ready(family),
        Err(e) => unavailable(hooks.first().map(|h| h.name.clone()).unwrap_or_default(), format!("{e:#}")),
    }
}

/// What attaching gave: the object, the families attached, and every
/// requested family's status (traced, unavailable, failed) in report order.
pub struct Attached {
    /// None when nothing could be planned (`probes` only).
    pub ebpf: Option<Ebpf>,
    pub traced: Vec<Box<dyn Family>>,
    pub statuses: Vec<FamilyStatus>,
}

/// Plans, loads and attaches the requested families: the one path both
/// `trace` and `probes` take, so they always agree on the hook each
/// family uses. `trace` says why a family is not traced and fails when
/// none is; `probes` (`quiet`) only collects the statuses.
pub fn attach_families(
    args: &RunOptions,
    disks: &[(String, u32)],
    env: &KernelEnv,
    shared: &SharedGlobals,
    stacks: &Rc<Stacks>,
    quiet: bool,
) -> Result<Attached> {
    let requested: Vec<FamilyName> = if args.families.is_empty() {
        FamilyName::all().collect()
    } else {
        let mut f = args.families.clone();
        f.sort();
        f.dedup();
        f
    };
    let mut statuses = Vec::new();
    let mut families: Vec<Box<dyn Family>> = Vec::new();
    let options = args.family_options();
    let setup = Setup { options: &options, disks, env, stacks };
    for name in requested {
        match plan(name.spec(), &setup) {
            Planned::Ready(family) => families.push(family),
            Planned::Unavailable { family, hook, why } => {
                if !quiet {
                    eprintln!("tracer: {family}: not traced: {why}");
                }
                statuses.push(FamilyStatus {
                    family: family.into(),
                    state: "unavailable".into(),
                    hook,
                    detail: why,
                });
            }
        }
    }
    if families.is_empty() {
        if quiet {
            return Ok(Attached { ebpf: None, traced: Vec::new(), statuses });
        }
        bail!(
            "nothing could be traced (see the reasons above); `tracer probes` lists what this kernel offers"
        );
    }

    raise_memlock_limit();
    let mut ebpf = {
        let mut loader = EbpfLoader::new();
        loader.override_global(maps::TASK_OFFSETS, &shared.offsets, true);
        loader.override_global(maps::TASK_FILTER, &shared.filter, true);
        for family in &families {
            family.configure(&mut loader);
        }
        loader.load(crate::EBPF_OBJECT).context("loading the embedded eBPF object")?
    };
    let mut traced: Vec<Box<dyn Family>> = Vec::new();
    for mut family in families {
        match family.attach(&mut ebpf, env) {
            Ok(()) => {
                statuses.push(FamilyStatus {
                    family: family.name().into(),
                    state: "traced".into(),
                    hook: family.hook_summary(),
                    detail: family.refused(),
                });
                traced.push(family);
            }
            Err(e) => {
                if !quiet {
                    eprintln!("tracer: {}: not traced: {e:#}", family.name());
                }
                statuses.push(FamilyStatus {
                    family: family.name().into(),
                    state: "failed".into(),
                    hook: family.hook_summary(),
                    detail: format!("{e:#}"),
                });
            }
        }
    }
    if traced.is_empty() && !quiet {
        bail!("no family could be attached (see the reasons above)");
    }
    statuses.sort_by_key(|s| report_order(&s.family));
    Ok(Attached { ebpf: Some(ebpf), traced, statuses })
}

/// Read-only globals every memory family reads: task layout and the
/// `--pid` / `--cgroup` filter.
pub struct SharedGlobals {
    offsets: TaskOffsets,
    filter: TaskFilter,
}

impl SharedGlobals {
    /// Validates `--pid`, `--comm` and `--cgroup` (before anything is
    /// attached).
    pub fn new(args: &RunOptions, env: &KernelEnv, warnings: &mut Vec<String>) -> Result<Self> {
        let offsets = match &env.btf {
            Ok(btf) => {
                let (offsets, warning) = task_offsets(btf);
                warnings.extend(warning);
                offsets
            }
            Err(_) => TaskOffsets::default(),
        };
        let mut filter = TaskFilter::default();
        if let Some(pid) = args.pid {
            if pid == 0 || !crate::families::process_exists(pid) {
                bail!("no process with pid {pid}");
            }
            filter.tgid = pid;
        }
        if let Some(comm) = &args.comm {
            filter.comm = comm_filter(comm)?;
            filter.comm_len = comm.len() as u32;
        }
        if let Some(path) = &args.cgroup {
            let cgroups =
                Cgroups::find().context("--cgroup: no memory cgroup hierarchy is mounted on this host")?;
            if offsets.memcg_enabled == 0 {
                bail!(
                    "--cgroup: this kernel's BTF does not describe memory cgroups; cannot filter by cgroup"
                );
            }
            filter.memcg_id = cgroups.id_of(path).context("--cgroup")?;
        }
        Ok(Self { offsets, filter })
    }
}

/// The task filter as typed, e.g. ["--pid 42", "--cgroup /db"].
fn filter_in_force(args: &RunOptions) -> Vec<String> {
    let mut filter = Vec::new();
    if let Some(pid) = args.pid {
        filter.push(format!("--pid {pid}"));
    }
    if let Some(comm) = &args.comm {
        filter.push(format!("--comm {comm}"));
    }
    if let Some(cgroup) = &args.cgroup {
        filter.push(format!("--cgroup {cgroup}"));
    }
    filter
}

/// `--comm` as the kernel holds task names: NUL-padded, 15 bytes at most.
fn comm_filter(comm: &str) -> Result<[u8; 16]> {
    if comm.is_empty() || comm.len() > 15 || comm.contains('\0') {
        bail!("--comm `{comm}`: task names are 1 to 15 bytes (the kernel keeps no more; see /proc/PID/comm)");
    }
    let mut out = [0u8; 16];
    out[..comm.len()].copy_from_slice(comm.as_bytes());
    Ok(out)
}

/// Where a run's reports go besides standard output.
pub struct Outputs<'a> {
    /// `trace -o`: the report, instead of standard output.
    pub report: Option<&'a Path>,
    /// `record -o`: the capture.
    pub capture: Option<&'a Path>,
    /// `watch`: its sink instead of the printer, and where its captures
    /// go (for the first message).
    pub watch: Option<(Box<dyn ReportSink>, &'a Path)>,
}

pub fn trace(args: &RunOptions, outputs: Outputs<'_>) -> Result<ExitCode> {
    let started_wall = SystemTime::now();
    caps::require_tracing()?;
    // Bad input is reported before anything is attached.
    let disks = devices::resolve_disks(&args.disks, &devices::list())?;
    let (watch_sink, watch_dir) = match outputs.watch {
        Some((sink, dir)) => (Some(sink), Some(dir)),
        None => (None, None),
    };
    // `watch` runs until stopped, unless told otherwise.
    let duration = match watch_dir {
        Some(_) => args.duration,
        None => Some(args.duration()),
    };
    let mut sinks: Vec<Box<dyn ReportSink>> = Vec::new();
    if let Some(sink) = watch_sink {
        sinks.push(sink);
    } else {
        // The status line first: it is cleared before the report is printed.
        let rows = Printer::compact_rows(args, outputs.report);
        sinks.push(Box::new(StatusLine::new(args.duration(), !rows)));
        sinks.push(Box::new(Printer::open(args, outputs.report)?));
    }
    if let Some(path) = outputs.capture {
        sinks.push(Box::new(CaptureSink::create(path)?));
    }
    // The machine as it was before tracing touched it.
    let system = sysinfo::collect(args.cgroup.as_deref());
    let started = Instant::now();
    let mut notices = Vec::new();
    let env = kernel_env(&mut notices, !args.force_raw_tp)?;
    for notice in &notices {
        eprintln!("tracer: {notice}");
    }
    let mut warnings = Vec::new();
    let shared = SharedGlobals::new(args, &env, &mut warnings)?;
    // Ring buffers register with the runtime's reactor when attached.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let _runtime_context = runtime.enter();
    if args.metrics.is_some() || args.otlp.is_some() {
        let endpoint = match args.metrics {
            Some(addr) => Some(runtime.block_on(crate::export::server::MetricsEndpoint::bind(addr))?),
            None => None,
        };
        if let Some(endpoint) = &endpoint {
            eprintln!("tracer: serving Prometheus metrics at http://{}/metrics", endpoint.local_addr);
        }
        let pusher = args.otlp.clone().map(crate::export::otlp::Pusher::new);
        sinks.push(Box::new(MetricsSink::new(endpoint, pusher)));
    }

    let stacks = Stacks::new(args.vmlinux.clone());
    for warning in stacks.check_vmlinux() {
        eprintln!("tracer: warning: {warning}");
    }
    let Attached { ebpf, traced, statuses } = attach_families(args, &disks, &env, &shared, &stacks, false)?;
    let ebpf = ebpf.expect("attached families have an object");
    // Both parses of kernel BTF (ours for offsets, aya's for BTF
    // tracepoints) are needed only to attach: let them go, a tool that
    // runs while memory is short should not hold them for the whole run.
    drop(env);
    return_freed_memory();
    let names: Vec<&str> = traced.iter().map(|f| f.name()).collect();
    // Attached: from now on Ctrl-C and SIGTERM end the run with a report.
    let mut stop = StopSignals::new(watch_dir.is_some())?;
    match (watch_dir, duration) {
        (Some(dir), _) => eprintln!(
            "tracer: attached {} in {} ms; watching {}, captures to {} (Ctrl-C or SIGTERM to stop, SIGUSR1 \
             for a capture now)",
            names.join(", "),
            started.elapsed().as_millis(),
            duration.map_or_else(|| "until stopped".to_string(), |d| format!("for {}", humantime(d))),
            dir.display()
        ),
        (None, _) => eprintln!(
            "tracer: attached {} in {} ms; tracing for {} (Ctrl-C to stop early)",
            names.join(", "),
            started.elapsed().as_millis(),
            humantime(args.duration())
        ),
    }

    let start_unix_s = started_wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let header = CaptureHeader {
        tool: "tracer".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        command_line: std::env::args().collect(),
        start_unix_s,
        host: host(),
        families: statuses.clone(),
        duration_s: duration.map_or(0.0, |d| d.as_secs_f64()),
        interval_s: args.interval.map(|i| i.as_secs_f64()),
        sample_period_s: args.interval.unwrap_or(TIMELINE_STEP).as_secs_f64(),
        json: args.json,
    };
    for sink in &mut sinks {
        sink.begin(&header, &system)?;
    }

    let mut run = Run {
        ebpf,
        families: traced,
        statuses,
        host: header.host.clone(),
        start_unix_s,
        traced_since: Instant::now(),
        lost_reported: [0; Counter::ALL.len()],
        warnings,
        filter: filter_in_force(args),
        timeline: Vec::new(),
        // A watch runs for days: its time line lives in its captures.
        keep_timeline: watch_dir.is_none(),
        forget_exited: watch_dir
            .is_some()
            .then(|| ForgetExited { stacks: stacks.clone(), gone_before: ProcessSet::new() }),
        intervals: 0,
        interval_start: Instant::now(),
    };
    let ended_by = runtime.block_on(run.wait(args.interval, duration, &mut sinks, &mut stop))?;
    // A stop is handled ahead of events still waiting in the rings: take
    // them, so the last interval and the whole run have them.
    run.take_waiting_events();
    match (ended_by, watch_dir) {
        (Some("done"), _) => {}
        (Some(signal), None) => eprintln!("tracer: {signal}: stopping and printing the report"),
        (Some(signal), Some(_)) => eprintln!("tracer: {signal}: watch stopped"),
        (None, _) => {}
    }
    // The last, partial interval: intervals always add up to the run.
    run.interval(&mut sinks)?;
    let mut report = run.report(Scope::Whole, None);
    report.timeline = std::mem::take(&mut run.timeline);
    let end = CaptureEnd { ended_by: ended_by.unwrap_or("duration").into(), intervals: run.intervals };
    drop(run); // detaches everything before the report is written
    report.system =
        Some(SystemContext { end: Some(sysinfo::memory_state(args.cgroup.as_deref())), ..system });
    for sink in &mut sinks {
        sink.whole(&report, &end)?;
    }
    Ok(ExitCode::SUCCESS)
}

struct Run {
    ebpf: Ebpf,
    families: Vec<Box<dyn Family>>,
    statuses: Vec<FamilyStatus>,
    host: Host,
    start_unix_s: f64,
    traced_since: Instant,
    lost_reported: [u64; Counter::ALL.len()],
    warnings: Vec<String>,
    /// `--pid`, `--comm`, `--cgroup` as given: every report states them.
    filter: Vec<String>,
    timeline: Vec<TimelinePoint>,
    keep_timeline: bool,
    forget_exited: Option<ForgetExited>,
    intervals: u64,
    interval_start: Instant,
}

/// `watch`, after each interval report: what is kept of processes that
/// have exited goes (rows in the kernel's maps and in the snapshots, stack
/// samples), once they were gone at two interval ends in a row: the sample
/// in between saw all they did, and their last interval has been reported.
struct ForgetExited {
    stacks: Rc<Stacks>,
    /// Processes with rows that were gone at the previous interval's end.
    gone_before: ProcessSet,
}

impl ForgetExited {
    fn after_interval(&mut self, ebpf: &mut Ebpf, families: &mut [Box<dyn Family>]) {
        self.stacks.forget_exited();
        let mut kept = ProcessSet::new();
        for family in families.iter() {
            family.row_processes(&mut kept);
        }
        let (gone, gone_now) = gone_twice(kept, &self.gone_before, crate::families::process_exists);
        if !gone.is_empty() {
            let user_stacks = |families: &[Box<dyn Family>]| {
                let mut ids = StackIdSet::new();
                families.iter().for_each(|f| f.user_stack_ids(&mut ids));
                ids
            };
            let before = user_stacks(families);
            for family in families.iter_mut() {
                if let Err(e) = family.forget_processes(ebpf, &gone) {
                    eprintln!("tracer: {}: warning: forgetting exited processes: {e:#}", family.name());
                }
            }
            // Sampled afresh: a live process's row made since the interval's
            // sample may share a stack id with the dead (same addresses).
            for family in families.iter_mut() {
                if let Err(e) = family.sample(ebpf) {
                    eprintln!("tracer: {}: warning: reading its maps: {e:#}", family.name());
                }
            }
            let after = user_stacks(families);
            if let Err(e) = self.stacks.forget_user_stacks(ebpf, before.difference(&after).copied()) {
                eprintln!("tracer: warning: forgetting the user stacks of exited processes: {e:#}");
            }
        }
        self.gone_before = gone_now;
    }
}

/// Of the processes `kept`, those gone now and also gone before (to
/// forget), and those gone now (to remember for next time). 0, interrupt
/// context, is never gone.
fn gone_twice(
    kept: ProcessSet,
    gone_before: &ProcessSet,
    alive: impl Fn(u32) -> bool,
) -> (ProcessSet, ProcessSet) {
    let gone_now: ProcessSet = kept.into_iter().filter(|&p| p != 0 && !alive(p)).collect();
    (gone_now.intersection(gone_before).copied().collect(), gone_now)
}

/// Time line resolution without `--interval`.
const TIMELINE_STEP: Duration = Duration::from_secs(1);

impl Run {
    /// Closes an interval: a point on the time line, and its report to
    /// every sink.
    fn interval(&mut self, sinks: &mut [Box<dyn ReportSink>]) -> Result<()> {
        // The next window starts where the kernel's counters are read for
        // this one, not after the sinks (symbolizing can take 100 ms): the
        // windows tile the run without gaps.
        let boundary = Instant::now();
        let report = self.report(Scope::Interval, Some((self.intervals, self.interval_start)));
        if self.keep_timeline {
            self.timeline.push(TimelinePoint::of(&report));
        }
        for sink in sinks {
            sink.interval(&report)?;
        }
        if let Some(forget) = &mut self.forget_exited {
            forget.after_interval(&mut self.ebpf, &mut self.families);
        }
        self.intervals += 1;
        self.interval_start = boundary;
        Ok(())
    }

    /// Every family's events waiting in its ring, taken without waiting for
    /// a wakeup (needs the runtime entered).
    fn take_waiting_events(&mut self) {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for family in &mut self.families {
            let _ = family.poll_events(&mut cx, &self.ebpf);
        }
    }

    /// Waits for the end of the run, handling streamed events and printing
    /// interval reports. Returns the signal that ended it early, if any.
    async fn wait(
        &mut self,
        interval: Option<Duration>,
        duration: Option<Duration>,
        sinks: &mut [Box<dyn ReportSink>],
        stop: &mut StopSignals,
    ) -> Result<Option<&'static str>> {
        // Without a duration (watch): a deadline that never comes.
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let period = interval.unwrap_or(TIMELINE_STEP);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A slow report (the first stack symbolized loads kallsyms and
        // DWARF) delays the next interval instead of bunching empty ones.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.interval_start = Instant::now();
        loop {
            let events = std::future::poll_fn(|cx| {
                let mut handled = false;
                for family in &mut self.families {
                    handled |= family.poll_events(cx, &self.ebpf).is_ready();
                }
                if handled { Poll::Ready(()) } else { Poll::Pending }
            });
            let on_demand = async {
                match &mut stop.user1 {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.interrupt.recv() => return Ok(Some("interrupted")),
                _ = stop.terminate.recv() => return Ok(Some("terminated")),
                _ = on_demand => sinks.iter_mut().for_each(|s| s.on_demand()),
                _ = events => {}
                _ = &mut deadline => return Ok(None),
                _ = ticker.tick() => {
                    self.interval(sinks)?;
                    if sinks.iter().any(|s| s.finished()) {
                        return Ok(Some("done"));
                    }
                }
            }
        }
    }

    /// Samples every family and builds a report for `scope`.
    fn report(&mut self, scope: Scope, interval: Option<(u64, Instant)>) -> Report {
        let now = Instant::now();
        let (offset_s, duration_s, index) = match interval {
            Some((index, since)) => (
                since.duration_since(self.traced_since).as_secs_f64(),
                now.duration_since(since).as_secs_f64(),
                Some(index),
            ),
            None => (0.0, now.duration_since(self.traced_since).as_secs_f64(), None),
        };
        let mut report = Report {
            tool: "tracer".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            host: self.host.clone(),
            window: Window {
                start_unix_s: self.start_unix_s + offset_s,
                offset_s,
                duration_s,
                interval: index,
            },
            families: self.statuses.clone(),
            warnings: self.warnings.clone(),
            filter: self.filter.clone(),
            ..Report::default()
        };
        for family in &mut self.families {
            if let Err(e) = family.sample(&mut self.ebpf) {
                let warning = format!("{}: reading kernel data failed: {e:#}", family.name());
                if !report.warnings.contains(&warning) {
                    report.warnings.push(warning);
                }
            }
            family.fill(&mut report, scope, &self.ebpf);
        }
        let lost = read_counters(&self.ebpf);
        let base = if scope == Scope::Interval {
            std::mem::replace(&mut self.lost_reported, lost)
        } else {
            [0; Counter::ALL.len()]
        };
        report.lost = Counter::ALL
            .iter()
            .enumerate()
            .map(|(i, c)| LostCount { reason: c.name().into(), count: lost[i].saturating_sub(base[i]) })
            .collect();
        report.lost_events = report.lost.iter().map(|l| l.count).sum();
        report
    }
}

/// SIGINT and SIGTERM, caught (and kept until the run loop looks) from
/// their creation on.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    /// SIGUSR1, caught only by `watch` (a capture on demand).
    user1: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    /// Needs the runtime entered.
    fn new(user1: bool) -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            user1: if user1 { Some(signal(SignalKind::user_defined1())?) } else { None },
        })
    }
}

/// Sums the per-CPU health counters.
fn read_counters(ebpf: &Ebpf) -> [u64; Counter::ALL.len()] {
    let mut out = [0; Counter::ALL.len()];
    let Some(counters) = ebpf.map(maps::COUNTERS).and_then(|m| PerCpuArray::<_, u64>::try_from(m).ok())
    else {
        return out;
    };
    for (i, counter) in Counter::ALL.iter().enumerate() {
        if let Ok(values) = counters.get(&(*counter as u32), 0) {
            out[i] = values.iter().sum();
        }
    }
    out
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("could not raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 60.0 && s % 60.0 == 0.0 { format!("{}m", s as u64 / 60) } else { format!("{s}s") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_forgotten_once_gone_at_two_interval_ends() {
        let set = |p: &[u32]| p.iter().copied().collect::<ProcessSet>();
        let alive_only = |live: &'static [u32]| move |p: u32| live.contains(&p);
        // 7 exits: gone at this end, not before: kept one more interval,
        // whose sample still may see what it did last.
        let (gone, gone_now) = gone_twice(set(&[0, 5, 7]), &set(&[]), alive_only(&[5]));
        assert_eq!((gone, gone_now.clone()), (set(&[]), set(&[7])));
        let (gone, gone_now) = gone_twice(set(&[0, 5, 7]), &gone_now, alive_only(&[5]));
        assert_eq!((gone, gone_now), (set(&[7]), set(&[7])));
        // Its pid reused by a live process: not gone.
        let (gone, _) = gone_twice(set(&[7]), &set(&[7]), alive_only(&[7]));
        assert!(gone.is_empty());
    }
}
