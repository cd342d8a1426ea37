//! Direct and memcg reclaim, direct compaction and kswapd (kernel side:
//! `tracer-ebpf/src/stall.rs`).

use std::{
    collections::BTreeMap,
    rc::Rc,
    task::{Context, Poll},
};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{PerCpuArray, PerCpuValues},
};
use tracer_common::{
    hist::LatencyHist,
    maps,
    stall::{
        COMPACT_ATTEMPTS, COMPACT_RESULT_BASE, COMPACT_RESULTS, KSWAPD_AWAKE_NS, KSWAPD_SLEEPS, KSWAPD_WAKES,
        KSWAPD_WAKEUPS_REQUESTED, STALL_ABANDONED, STALL_COMPACTION, STALL_COUNT_SLOTS, STALL_DIRECT_RECLAIM,
        STALL_KINDS, STALL_MEMCG_RECLAIM, STALL_UNMATCHED_END, StallConfig, StallEvent, StallKey,
        StallStackKey, StallStackStats, StallStart, StallStats, StallTask,
    },
    ustack::UserStackConfig,
};

use super::{
    EventRing, Family, Hook, KernelEnv, ProgramFlavor, Scope, Tracepoints, comm_string, drain_ring,
    event_log::EventLog, load_and_attach, per_cpu_rows, present_tracepoints, stacks::Stacks,
    take_stack_samples, tracepoint_hooks, watch_ring,
};
use crate::{
    kernel::cgroups::Cgroups,
    model::{
        Compaction, Kswapd, NamedCount, Percentiles, Report, Stall, StallBreakdown, StallRow, StallStack,
        buckets_of,
    },
    symbolize, unwind,
};

pub mod report;

/// The family in the registry.
pub const FAMILY: super::FamilySpec = super::family_spec!(
    "reclaim",
    "Direct and memcg reclaim, compaction, kswapd",
    hooks: |env, _options| probe_hooks(env),
    build: build,
);

fn build(setup: &super::Setup<'_>) -> Result<Box<dyn Family>> {
    Ok(Box::new(ReclaimFamily::new(setup.env, setup.stacks.clone(), setup.options)?))
}

/// (tracepoint, required, what for).
const TRACEPOINTS: &Tracepoints = &[
    ("mm_vmscan_direct_reclaim_begin", true, "direct reclaim: the allocating task reclaims itself"),
    ("mm_vmscan_direct_reclaim_end", true, "end of direct reclaim, pages reclaimed"),
    ("mm_vmscan_memcg_reclaim_begin", false, "reclaim forced by a memory cgroup limit"),
    ("mm_vmscan_memcg_reclaim_end", false, "end of memcg reclaim"),
    ("mm_compaction_begin", false, "direct compaction of one zone (kcompactd skipped)"),
    ("mm_compaction_end", false, "end of compaction, its result"),
    ("mm_compaction_try_to_compact_pages", false, "direct compaction attempts"),
    ("mm_vmscan_kswapd_wake", false, "kswapd wakes (context)"),
    ("mm_vmscan_kswapd_sleep", false, "kswapd sleeps (context)"),
    ("mm_vmscan_wakeup_kswapd", false, "kswapd wake requests (counted)"),
];

fn category(tp: &str) -> &'static str {
    if tp.starts_with("mm_compaction") { "compaction" } else { "vmscan" }
}

/// Individual stalls kept for time lines.
pub const STALLS_KEPT_MAX: usize = 20_000;
/// Stacks kept per stall row (those that stalled longest).
pub const STACKS_KEPT: usize = 20;

#[derive(Default, Clone)]
struct Snapshot {
    rows: BTreeMap<StallKey, StallStats>,
    stacks: BTreeMap<StallStackKey, StallStackStats>,
    counts: Vec<u64>,
    /// Stalls in progress when sampled, by kind: a state, not a count to
    /// difference.
    in_flight: [InFlightNow; STALL_KINDS as usize],
    /// The user stack ids of stalls in progress (their rows are made at
    /// the end).
    begin_user_stacks: Vec<i32>,
}

/// Stalls of one kind in progress.
#[derive(Default, Clone, Copy, Debug, PartialEq)]
struct InFlightNow {
    count: u64,
    /// How long the oldest has lasted so far.
    longest_ns: u64,
}

/// Stalls in progress, by kind, from the kernel's map of begins. A thread
/// that exited inside a stall leaves its begin there until the LRU evicts
/// it: only threads still alive count.
fn in_flight_now(
    starts: impl Iterator<Item = (StallTask, StallStart)>,
    now_ns: u64,
    alive: impl Fn(u32) -> bool,
) -> [InFlightNow; STALL_KINDS as usize] {
    let mut by_kind = [InFlightNow::default(); STALL_KINDS as usize];
    for (task, start) in starts {
        let Some(kind) = by_kind.get_mut(task.kind as usize) else { continue };
        if alive(task.pid) {
            kind.count += 1;
            kind.longest_ns = kind.longest_ns.max(now_ns.saturating_sub(start.ts_ns));
        }
    }
    by_kind
}

pub struct ReclaimFamily {
    config: StallConfig,
    started_mono_ns: u64,
    compact_names: BTreeMap<u32, String>,
    flavor: Option<ProgramFlavor>,
    attached: Vec<&'static str>,
    events: Option<EventRing>,
    /// User stack samples at stall begins (`--user-stack`).
    samples: Option<EventRing>,
    user_stack_config: UserStackConfig,
    stalls: EventLog<StallEvent>,
    latest: Snapshot,
    reported: Snapshot,
    cgroups: Option<Cgroups>,
    stacks: Rc<Stacks>,
    warnings: Vec<String>,
}

impl ReclaimFamily {
    /// `options.user_stack_bytes`: `--user-stack`, the stack copied per
    /// sample.
    pub fn new(env: &KernelEnv, stacks: Rc<Stacks>, options: &super::Options) -> Result<Self> {
        let user_stack_bytes = options.user_stack_bytes;
        let btf = env.btf.as_ref().ok();
        let cc_direct = btf.and_then(|b| b.member_offset("compact_control", "direct_compaction").ok());
        let mut warnings = Vec::new();
        if cc_direct.is_none() {
            warnings
                .push("compact_control.direct_compaction unknown: kcompactd runs count as stalls too".into());
        }
        let compact_names = btf
            .and_then(|b| b.enum_members("compact_result").ok())
            .unwrap_or_default()
            .into_iter()
            .map(|(name, v)| (v as u32, name.trim_start_matches("COMPACT_").to_lowercase()))
            .collect();
        let (user_stack_config, warning) = unwind::config_or_off(&env.btf, user_stack_bytes);
        warnings.extend(warning);
        Ok(Self {
            config: StallConfig { cc_direct: cc_direct.unwrap_or(u32::MAX), _pad: 0 },
            started_mono_ns: env.started_mono_ns,
            compact_names,
            flavor: None,
            attached: Vec::new(),
            events: None,
            samples: None,
            user_stack_config,
            stalls: EventLog::new(STALLS_KEPT_MAX, options.whole_run_events),
            latest: Snapshot::default(),
            reported: Snapshot::default(),
            cgroups: Cgroups::find(),
            stacks,
            warnings,
        })
    }

    fn cgroup_path(&mut self, id: u64) -> String {
        self.cgroups.as_mut().and_then(|c| c.path_of(id)).unwrap_or_default()
    }

    /// One kind's row for `delta`.
    fn stall_row(
        &mut self,
        kind: u32,
        delta: &Snapshot,
        untimed: u64,
        abandoned: u64,
        ebpf: &Ebpf,
    ) -> StallRow {
        let mut total = LatencyHist::zeroed();
        let mut reclaimed = 0;
        let mut by_process: BTreeMap<u32, (String, LatencyHist, u64, u64)> = BTreeMap::new();
        let mut by_cgroup: BTreeMap<u64, (LatencyHist, u64)> = BTreeMap::new();
        for (key, stats) in delta.rows.iter().filter(|(k, s)| k.kind == kind && s.latency.samples > 0) {
            total.merge(&stats.latency);
            reclaimed += stats.reclaimed;
            let p = by_process
                .entry(key.tgid)
                .or_insert_with(|| (String::new(), LatencyHist::zeroed(), 0, key.memcg_id));
            p.0 = comm_string(&stats.comm);
            p.1.merge(&stats.latency);
            p.2 += stats.reclaimed;
            let c = by_cgroup.entry(key.memcg_id).or_insert_with(|| (LatencyHist::zeroed(), 0));
            c.0.merge(&stats.latency);
            c.1 += stats.reclaimed;
        }
        let mut processes: Vec<StallBreakdown> = by_process
            .into_iter()
            .map(|(pid, (comm, hist, reclaimed, memcg))| {
                breakdown(pid, comm, self.cgroup_path(memcg), &hist, reclaimed)
            })
            .collect();
        processes.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        let mut cgroups: Vec<StallBreakdown> = by_cgroup
            .into_iter()
            .map(|(memcg, (hist, reclaimed))| {
                breakdown(0, String::new(), self.cgroup_path(memcg), &hist, reclaimed)
            })
            .collect();
        cgroups.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        let mut top: Vec<(&StallStackKey, &StallStackStats)> =
            delta.stacks.iter().filter(|(k, s)| k.kind == kind && s.count > 0).collect();
        top.sort_by_key(|(_, s)| std::cmp::Reverse(s.total_ns));
        let top: Vec<(StallStackKey, StallStackStats)> =
            top.into_iter().take(STACKS_KEPT).map(|(k, s)| (*k, *s)).collect();
        let stacks = top
            .into_iter()
            .map(|(key, stats)| {
                let mut user = self.stacks.row_user_stack(key.tgid, key.user_stack, ebpf);
                symbolize::resolve_user_frames(&mut user.frames);
                StallStack {
                    count: stats.count,
                    total_ms: stats.total_ns as f64 / 1e6,
                    pid: key.tgid,
                    kernel_stack: self.stacks.kernel(key.kernel_stack, ebpf),
                    user_stack: user.frames,
                    user_stack_unwind: user.unwind,
                }
            })
            .collect();
        StallRow {
            kind: kind_name(kind).into(),
            count: total.samples,
            total_ms: total.sum_ns as f64 / 1e6,
            latency_us: Percentiles::of(&total),
            histogram: buckets_of(&total),
            nr_reclaimed: reclaimed,
            untimed,
            abandoned,
            // A state, set by `fill` from the sample.
            in_flight: 0,
            in_flight_longest_ms: 0.0,
            processes,
            cgroups,
            stacks,
        }
    }
}

fn breakdown(
    pid: u32,
    comm: String,
    cgroup: String,
    hist: &LatencyHist,
    nr_reclaimed: u64,
) -> StallBreakdown {
    StallBreakdown {
        pid,
        comm,
        cgroup,
        count: hist.samples,
        total_ms: hist.sum_ns as f64 / 1e6,
        latency_us: Percentiles::of(hist),
        nr_reclaimed,
    }
}

fn set_in_flight(row: &mut StallRow, now: InFlightNow) {
    row.in_flight = now.count;
    row.in_flight_longest_ms = now.longest_ns as f64 / 1e6;
}

pub fn kind_name(kind: u32) -> &'static str {
    match kind {
        STALL_DIRECT_RECLAIM => "direct",
        STALL_MEMCG_RECLAIM => "memcg",
        _ => "compaction",
    }
}

/// `latest - base`, row by row (histograms differenced).
fn delta(latest: &Snapshot, base: &Snapshot) -> Snapshot {
    let rows = latest
        .rows
        .iter()
        .map(|(k, s)| {
            let mut d = *s;
            if let Some(b) = base.rows.get(k) {
                d.latency = s.latency.delta_since(&b.latency);
                d.reclaimed = s.reclaimed.saturating_sub(b.reclaimed);
            }
            (*k, d)
        })
        .collect();
    let stacks = latest
        .stacks
        .iter()
        .map(|(k, s)| {
            let b = base.stacks.get(k).copied().unwrap_or_default();
            (
                *k,
                StallStackStats {
                    count: s.count - b.count.min(s.count),
                    total_ns: s.total_ns.saturating_sub(b.total_ns),
                },
            )
        })
        .collect();
    let counts = latest
        .counts
        .iter()
        .enumerate()
        .map(|(i, v)| v.saturating_sub(*base.counts.get(i).unwrap_or(&0)))
        .collect();
    Snapshot { rows, stacks, counts, in_flight: latest.in_flight, begin_user_stacks: Vec::new() }
}

impl Family for ReclaimFamily {
    fn name(&self) -> &'static str {
        "reclaim"
    }

    fn hook_summary(&self) -> String {
        let flavor = self.flavor.map_or("tp_btf or raw_tp", ProgramFlavor::as_str);
        format!("{flavor} {} tracepoints (vmscan, compaction)", self.attached.len())
    }

    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(maps::STALL_CONFIG, &self.config, true);
        loader.override_global(maps::USER_STACK_CONFIG, &self.user_stack_config, true);
    }

    fn attach(&mut self, ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()> {
        self.events = Some(watch_ring(ebpf, maps::STALL_EVENTS)?);
        self.samples = Some(watch_ring(ebpf, maps::STALL_STACK_SAMPLES)?);
        let (present, missing) = present_tracepoints(env, TRACEPOINTS, category);
        for (tp, what) in missing {
            self.warnings.push(format!("{}:{tp} is not on this kernel: {what} not reported", category(tp)));
        }
        self.flavor = Some(load_and_attach(ebpf, &present, env)?);
        self.attached = present;
        Ok(())
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, ebpf: &Ebpf) -> Poll<()> {
        let samples = take_stack_samples(self.samples.as_mut(), cx, &self.stacks, ebpf);
        let Poll::Ready(batch) = drain_ring::<StallEvent>(self.events.as_mut(), cx) else {
            return samples;
        };
        self.stalls.extend(batch, |s| s.duration_ns, |s| s.start_ns);
        Poll::Ready(())
    }

    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let rows = per_cpu_rows(ebpf, maps::STALL_ROWS, |cpus: &PerCpuValues<StallStats>| {
            let mut total = StallStats::zeroed();
            for s in cpus.iter() {
                total.latency.merge(&s.latency);
                total.reclaimed += s.reclaimed;
                if s.comm[0] != 0 {
                    total.comm = s.comm;
                }
            }
            Some(total)
        })?;
        let stacks = per_cpu_rows(ebpf, maps::STALL_STACKS, |cpus: &PerCpuValues<StallStackStats>| {
            Some(cpus.iter().fold(StallStackStats::default(), |a, s| StallStackStats {
                count: a.count + s.count,
                total_ns: a.total_ns + s.total_ns,
            }))
        })?;
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(ebpf.map(maps::STALL_COUNTS).context(maps::STALL_COUNTS)?)?;
        let counts =
            (0..STALL_COUNT_SLOTS).map(|i| counts.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0)).collect();
        let mut starts: aya::maps::HashMap<_, StallTask, StallStart> =
            aya::maps::HashMap::try_from(ebpf.map_mut(maps::STALL_START).context(maps::STALL_START)?)?;
        let begins: Vec<(StallTask, StallStart)> = starts.iter().flatten().collect();
        let alive = super::process_exists;
        let in_flight = in_flight_now(begins.iter().copied(), super::monotonic_ns(), alive);
        // A thread that exited inside a stall never ends it: its begin goes
        // (else each interval would look it up again, until the LRU evicts
        // it).
        for (task, _) in begins.iter().filter(|(task, _)| !alive(task.pid)) {
            let _ = starts.remove(task);
        }
        let begin_user_stacks = begins.iter().map(|(_, start)| start.user_stack).collect();
        self.latest = Snapshot { rows, stacks, counts, in_flight, begin_user_stacks };
        Ok(())
    }

    fn fill(&mut self, report: &mut Report, scope: Scope, ebpf: &Ebpf) {
        let base = match scope {
            Scope::Interval => std::mem::replace(&mut self.reported, self.latest.clone()),
            Scope::Whole => Snapshot::default(),
        };
        let d = delta(&self.latest, &base);
        let count = |slot: u32| d.counts.get(slot as usize).copied().unwrap_or(0);
        report.reclaim = [STALL_DIRECT_RECLAIM, STALL_MEMCG_RECLAIM]
            .into_iter()
            .map(|kind| {
                let (untimed, abandoned) = (count(STALL_UNMATCHED_END + kind), count(STALL_ABANDONED + kind));
                self.stall_row(kind, &d, untimed, abandoned, ebpf)
            })
            .collect();
        for row in &mut report.reclaim {
            let kind = if row.kind == "direct" { STALL_DIRECT_RECLAIM } else { STALL_MEMCG_RECLAIM };
            set_in_flight(row, d.in_flight[kind as usize]);
        }
        let results = (0..COMPACT_RESULTS)
            .filter(|&r| count(COMPACT_RESULT_BASE + r) > 0)
            .map(|r| NamedCount {
                name: self.compact_names.get(&r).cloned().unwrap_or_else(|| r.to_string()),
                count: count(COMPACT_RESULT_BASE + r),
            })
            .collect();
        let mut compaction = self.stall_row(
            STALL_COMPACTION,
            &d,
            count(STALL_UNMATCHED_END + STALL_COMPACTION),
            count(STALL_ABANDONED + STALL_COMPACTION),
            ebpf,
        );
        set_in_flight(&mut compaction, d.in_flight[STALL_COMPACTION as usize]);
        report.compaction =
            Some(Compaction { stalls: compaction, attempts: count(COMPACT_ATTEMPTS), results });
        report.kswapd = Some(Kswapd {
            wakes: count(KSWAPD_WAKES),
            sleeps: count(KSWAPD_SLEEPS),
            awake_ms: count(KSWAPD_AWAKE_NS) as f64 / 1e6,
            wakeups_requested: count(KSWAPD_WAKEUPS_REQUESTED),
        });
        let events: Vec<StallEvent> = self.stalls.for_report(scope).to_vec();
        let mut stalls = Vec::with_capacity(events.len());
        for e in events {
            stalls.push(Stall {
                kind: kind_name(e.kind).into(),
                start_s: e.start_ns.saturating_sub(self.started_mono_ns) as f64 / 1e9,
                duration_ms: e.duration_ns as f64 / 1e6,
                pid: e.pid,
                tgid: e.tgid,
                comm: comm_string(&e.comm),
                cgroup: self.cgroup_path(e.memcg_id),
                order: e.order,
                result: if e.kind == STALL_COMPACTION {
                    self.compact_names
                        .get(&(e.result as u32))
                        .cloned()
                        .unwrap_or_else(|| e.result.to_string())
                } else {
                    format!("{} pages reclaimed", e.result)
                },
            });
        }
        report.stalls = stalls;
        report.stalls_dropped = self.stalls.dropped(scope);
        report.warn_all(self.warnings.iter().chain(self.stacks.warnings().iter()));
    }

    fn user_stack_ids(&self, into: &mut super::StackIdSet) {
        into.extend(self.latest.stacks.keys().map(|k| k.user_stack));
        into.extend(self.latest.begin_user_stacks.iter().copied());
    }

    fn row_processes(&self, into: &mut super::ProcessSet) {
        into.extend(self.latest.rows.keys().map(|k| k.tgid));
        into.extend(self.latest.stacks.keys().map(|k| k.tgid));
    }

    fn forget_processes(&mut self, ebpf: &mut Ebpf, gone: &super::ProcessSet) -> Result<()> {
        let keys = self.latest.rows.keys().copied().collect::<Vec<_>>();
        for key in super::forget_rows::<StallKey, StallStats>(ebpf, maps::STALL_ROWS, keys, |k| k.tgid, gone)?
        {
            self.latest.rows.remove(&key);
            self.reported.rows.remove(&key);
        }
        let keys = self.latest.stacks.keys().copied().collect::<Vec<_>>();
        let forgotten = super::forget_rows::<StallStackKey, StallStackStats>(
            ebpf,
            maps::STALL_STACKS,
            keys,
            |k| k.tgid,
            gone,
        )?;
        for key in forgotten {
            self.latest.stacks.remove(&key);
            self.reported.stacks.remove(&key);
        }
        Ok(())
    }
}

pub fn probe_hooks(env: &KernelEnv) -> Vec<Hook> {
    let mut hooks = tracepoint_hooks(env, TRACEPOINTS, category);
    hooks.push(super::tp_btf_hook(env, &["mm_vmscan_direct_reclaim_begin", "mm_compaction_begin"]));
    hooks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(samples: &[u64], reclaimed: u64) -> StallStats {
        let mut s = StallStats::zeroed();
        for &ns in samples {
            s.latency.record(ns);
        }
        s.reclaimed = reclaimed;
        s
    }

    #[test]
    fn interval_deltas_subtract_row_by_row() {
        let key = StallKey { kind: STALL_DIRECT_RECLAIM, tgid: 42, memcg_id: 0 };
        let base = Snapshot {
            rows: [(key, stats(&[1_000_000], 10))].into(),
            stacks: BTreeMap::new(),
            counts: vec![1, 0, 0],
            ..Snapshot::default()
        };
        let latest = Snapshot {
            rows: [(key, stats(&[1_000_000, 3_000_000, 5_000_000], 40))].into(),
            stacks: BTreeMap::new(),
            counts: vec![4, 0, 0],
            ..Snapshot::default()
        };
        let d = delta(&latest, &base);
        let row = d.rows[&key];
        assert_eq!(row.latency.samples, 2);
        assert_eq!(row.latency.sum_ns, 8_000_000);
        assert_eq!(row.reclaimed, 30);
        assert_eq!(d.counts, vec![3, 0, 0]);
    }

    #[test]
    fn stalls_in_flight_count_live_threads_by_kind() {
        let begin = |pid, kind, ts_ns| {
            (
                StallTask { pid, kind },
                StallStart { ts_ns, order: 0, gfp_flags: 0, kernel_stack: -1, user_stack: -1 },
            )
        };
        let starts = [
            begin(10, STALL_DIRECT_RECLAIM, 1_000),
            begin(11, STALL_DIRECT_RECLAIM, 4_000),
            // Exited inside the stall: its begin stays in the LRU map.
            begin(12, STALL_DIRECT_RECLAIM, 10),
            begin(10, STALL_COMPACTION, 9_000),
        ];
        let now = in_flight_now(starts.into_iter(), 10_000, |tid| tid != 12);
        assert_eq!(now[STALL_DIRECT_RECLAIM as usize], InFlightNow { count: 2, longest_ns: 9_000 });
        assert_eq!(now[STALL_MEMCG_RECLAIM as usize], InFlightNow::default());
        assert_eq!(now[STALL_COMPACTION as usize], InFlightNow { count: 1, longest_ns: 1_000 });
        // A state, not a count: an interval's delta keeps the latest.
        let latest = Snapshot { in_flight: now, ..Snapshot::default() };
        assert_eq!(delta(&latest, &Snapshot::default()).in_flight, now);
    }
}
