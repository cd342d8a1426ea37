//! Runs a command: checks the host, loads the embedded kernel programs,
//! attaches the requested families, samples them until the end of the run
//! (printing interval reports on the way), and prints the final report.

use std::{
    fs::File,
    io::Write as _,
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, EbpfLoader, maps::PerCpuArray};
use tokio::signal::unix::{SignalKind, signal};
use tracer_common::counters::Counter;

use crate::{
    cli::{Cli, Command, FamilyName, ProbesArgs, TraceArgs},
    families::{
        Family, Hook, KernelEnv, Scope,
        block::{self, BlockFamily, BlockOptions},
    },
    kernel::{btf::KernelBtf, caps, devices, tracefs::Tracefs},
    model::{FamilyStatus, Host, LostCount, Report, Window},
    render,
};

/// Families this version implements, in report order.
pub const IMPLEMENTED: [FamilyName; 1] = [FamilyName::Block];

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Trace(args) => trace(args),
        Command::Probes(args) => probes(args),
    }
}

fn kernel_env(notices: &mut Vec<String>, allow_tp_btf: bool) -> Result<KernelEnv> {
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

fn plan(name: FamilyName, args: &TraceArgs, disks: &[(String, u32)], env: &KernelEnv) -> Planned {
    match name {
        FamilyName::Block => {
            let options = BlockOptions { from_insert: args.queued, disks: disks.to_vec() };
            let hooks = block::probe_hooks(env, args.queued);
            if let Some(missing) = hooks.iter().find(|h| h.required && !h.available) {
                return Planned::Unavailable {
                    family: "block",
                    hook: missing.name.clone(),
                    why: format!("{} is unavailable: {}", missing.name, missing.note),
                };
            }
            match BlockFamily::new(options, env) {
                Ok(family) => Planned::Ready(Box::new(family)),
                Err(e) => Planned::Unavailable {
                    family: "block",
                    hook: "block:block_rq_*".into(),
                    why: e.to_string(),
                },
            }
        }
        other => Planned::Unavailable {
            family: other.as_str(),
            hook: String::new(),
            why: "not implemented in this version".into(),
        },
    }
}

fn trace(args: TraceArgs) -> Result<ExitCode> {
    let started_wall = SystemTime::now();
    let started = Instant::now();
    caps::require_tracing()?;
    // Bad input is reported before anything is attached.
    let disks = devices::resolve_disks(&args.disks, &devices::list())?;
    let mut sink = Sink::open(&args)?;
    let mut notices = Vec::new();
    let env = kernel_env(&mut notices, !args.force_raw_tp)?;
    for notice in &notices {
        eprintln!("tracer: {notice}");
    }

    let requested: Vec<FamilyName> = if args.families.is_empty() {
        IMPLEMENTED.to_vec()
    } else {
        let mut f = args.families.clone();
        f.sort();
        f.dedup();
        f
    };
    let mut statuses = Vec::new();
    let mut families: Vec<Box<dyn Family>> = Vec::new();
    for name in requested {
        match plan(name, &args, &disks, &env) {
            Planned::Ready(family) => families.push(family),
            Planned::Unavailable { family, hook, why } => {
                eprintln!("tracer: {family}: not traced: {why}");
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
        bail!(
            "nothing could be traced (see the reasons above); `tracer probes` lists what this kernel offers"
        );
    }

    raise_memlock_limit();
    let mut ebpf = {
        let mut loader = EbpfLoader::new();
        for family in &families {
            family.configure(&mut loader);
        }
        loader.load(crate::EBPF_OBJECT).context("loading the embedded eBPF object")?
    };
    let mut traced: Vec<Box<dyn Family>> = Vec::new();
    for mut family in families {
        match family.attach(&mut ebpf, &env) {
            Ok(()) => {
                statuses.push(FamilyStatus {
                    family: family.name().into(),
                    state: "traced".into(),
                    hook: family.hook_summary(),
                    detail: String::new(),
                });
                traced.push(family);
            }
            Err(e) => {
                eprintln!("tracer: {}: not traced: {e:#}", family.name());
                statuses.push(FamilyStatus {
                    family: family.name().into(),
                    state: "failed".into(),
                    hook: family.hook_summary(),
                    detail: format!("{e:#}"),
                });
            }
        }
    }
    if traced.is_empty() {
        bail!("no family could be attached (see the reasons above)");
    }
    statuses.sort_by_key(|s| crate::families::ALL.iter().position(|f| *f == s.family));
    let names: Vec<&str> = traced.iter().map(|f| f.name()).collect();
    eprintln!(
        "tracer: attached {} in {} ms; tracing for {} (Ctrl-C to stop early)",
        names.join(", "),
        started.elapsed().as_millis(),
        humantime(args.duration)
    );

    let mut run = Run {
        ebpf,
        families: traced,
        statuses,
        host: host(),
        start_unix_s: started_wall.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
        traced_since: Instant::now(),
        lost_reported: [0; Counter::ALL.len()],
        warnings: Vec::new(),
    };
    let ended_by = run.wait(&args, &mut sink)?;
    if let Some(signal) = ended_by {
        eprintln!("tracer: {signal}: stopping and printing the report");
    }
    let report = run.report(Scope::Whole, None);
    drop(run); // detaches everything before the report is written
    // With intervals, JSON is one object per line throughout.
    sink.write_report(&report, args.json, args.interval.is_some())?;
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
}

impl Run {
    /// Waits for the end of the run, printing interval reports. Returns the
    /// signal that ended it early, if any.
    fn wait(&mut self, args: &TraceArgs, sink: &mut Sink) -> Result<Option<&'static str>> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            let mut sigint = signal(SignalKind::interrupt())?;
            let mut sigterm = signal(SignalKind::terminate())?;
            let deadline = tokio::time::sleep(args.duration);
            tokio::pin!(deadline);
            let period = args.interval.unwrap_or(Duration::from_secs(3600 * 24 * 365));
            let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            let mut index = 0;
            let mut interval_start = Instant::now();
            loop {
                tokio::select! {
                    _ = &mut deadline => return Ok(None),
                    _ = sigint.recv() => return Ok(Some("interrupted")),
                    _ = sigterm.recv() => return Ok(Some("terminated")),
                    _ = ticker.tick(), if args.interval.is_some() => {
                        let report = self.report(Scope::Interval, Some((index, interval_start)));
                        sink.write_report(&report, args.json, true)?;
                        index += 1;
                        interval_start = Instant::now();
                    }
                }
            }
        })
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
            ..Report::default()
        };
        for family in &mut self.families {
            if let Err(e) = family.sample(&mut self.ebpf) {
                let warning = format!("{}: reading kernel data failed: {e:#}", family.name());
                if !self.warnings.contains(&warning) {
                    self.warnings.push(warning);
                }
            }
            family.fill(&mut report, scope);
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
        report.warnings = self.warnings.clone();
        report
    }
}

/// Sums the per-CPU health counters; zeros if they cannot be read (which
/// is itself reported as a warning by the caller's sampling).
fn read_counters(ebpf: &Ebpf) -> [u64; Counter::ALL.len()] {
    let mut out = [0; Counter::ALL.len()];
    let Some(map) = ebpf.map("COUNTERS") else {
        return out;
    };
    let Ok(counters) = PerCpuArray::<_, u64>::try_from(map) else {
        return out;
    };
    for (i, counter) in Counter::ALL.iter().enumerate() {
        if let Ok(values) = counters.get(&(*counter as u32), 0) {
            out[i] = values.iter().sum();
        }
    }
    out
}

/// Where reports go: standard output or `-o FILE`.
struct Sink {
    file: Option<File>,
}

impl Sink {
    fn open(args: &TraceArgs) -> Result<Self> {
        let file = match &args.output {
            Some(path) => Some(
                File::create(path)
                    .with_context(|| format!("cannot write the report to {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Self { file })
    }

    fn write_report(&mut self, report: &Report, json: bool, interval: bool) -> Result<()> {
        let text = match (json, interval) {
            (true, true) => render::json::render_line(report)?,
            (true, false) => render::json::render(report)?,
            (false, _) => render::text::render(report),
        };
        match &mut self.file {
            Some(file) => file.write_all(text.as_bytes())?,
            None => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
        }
        Ok(())
    }
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

fn probes(args: ProbesArgs) -> Result<ExitCode> {
    let mut notices = Vec::new();
    let env = kernel_env(&mut notices, true)?;
    for notice in &notices {
        eprintln!("tracer: {notice}");
    }
    let mut table: Vec<(&str, Vec<Hook>, String)> = Vec::new();
    for name in crate::families::ALL {
        let (hooks, verdict) = match name {
            "block" => {
                let hooks = block::probe_hooks(&env, false);
                let ok = hooks.iter().filter(|h| h.required).all(|h| h.available);
                let flavor = if hooks.iter().any(|h| h.name.starts_with("tp_btf") && h.available) {
                    "tp_btf"
                } else {
                    "raw_tp"
                };
                let verdict = if ok {
                    format!("traced with {flavor} block_rq_issue -> block_rq_complete (insert with --queued)")
                } else {
                    "unavailable: a required hook is missing".to_string()
                };
                (hooks, verdict)
            }
            _ => (Vec::new(), "not implemented in this version".to_string()),
        };
        table.push((name, hooks, verdict));
    }
    if args.json {
        let value: Vec<serde_json::Value> = table
            .iter()
            .map(|(family, hooks, verdict)| {
                serde_json::json!({
                    "family": family,
                    "verdict": verdict,
                    "hooks": hooks.iter().map(|h| serde_json::json!({
                        "hook": h.name, "available": h.available, "used": h.used, "note": h.note,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        for (family, hooks, verdict) in &table {
            println!("{family}: {verdict}");
            for h in hooks {
                let mark = if h.used {
                    "use"
                } else if h.available {
                    "ok "
                } else {
                    "-- "
                };
                println!("  [{mark}] {:<36} {}", h.name, h.note);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
