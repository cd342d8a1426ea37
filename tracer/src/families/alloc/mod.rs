//! Page allocation failures with their stacks (kernel side:
//! `tracer-ebpf/src/alloc.rs`).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    rc::Rc,
    task::{Context, Poll},
};

use anyhow::{Result, bail};
use aya::{Ebpf, EbpfLoader};
use tracer_common::alloc::{AllocConfig, AllocEvent, AllocKey, AllocStats};
use tracer_common::{maps, ustack::UserStackConfig};

use super::{
    EventRing, Family, Hook, KernelEnv, ProgramFlavor, Scope, comm_string, drain_ring_with_tail,
    load_and_attach, per_cpu_rows,
    stacks::{Stacks, UserStack},
    watch_ring,
};
use crate::{
    kernel::{
        cgroups::Cgroups,
        gfp::{GfpTable, migratetype_name, migratetype_names},
        zones,
    },
    model::{AllocFailure, Report, ZoneSnapshot},
    symbolize,
    unwind::{self, UserStackSample},
};

pub mod report;

/// The family in the registry.
pub const FAMILY: super::FamilySpec = super::family_spec!(
    "alloc",
    "Page allocation failures with stacks",
    hooks: |env, _options| probe_hooks(env),
    build: build,
);

fn build(setup: &super::Setup<'_>) -> Result<Box<dyn Family>> {
    let options =
        AllocOptions { min_order: setup.options.min_order, user_stack_bytes: setup.options.user_stack_bytes };
    Ok(Box::new(AllocFamily::new(options, setup.env, setup.stacks.clone())?))
}

#[derive(Debug, Clone, Default)]
pub struct AllocOptions {
    /// `--min-order`.
    pub min_order: u32,
    /// `--user-stack`.
    pub user_stack_bytes: u32,
}

pub struct AllocFamily {
    config: AllocConfig,
    gfp: GfpTable,
    migratetypes: Vec<String>,
    started_mono_ns: u64,
    flavor: Option<ProgramFlavor>,
    events: Option<EventRing>,
    user_stack_config: UserStackConfig,
    /// User stacks normalized while their process was alive.
    user_stacks: HashMap<AllocKey, UserStack>,
    stacks: Rc<Stacks>,
    cgroups: Option<Cgroups>,
    snapshot_orders: BTreeSet<u32>,
    zone_snapshots: Vec<ZoneSnapshot>,
    latest: BTreeMap<AllocKey, AllocStats>,
    reported: BTreeMap<AllocKey, u64>,
    warnings: Vec<String>,
}

pub const TRACEPOINT: (&str, &str) = ("kmem", "mm_page_alloc");

impl AllocFamily {
    pub fn new(options: AllocOptions, env: &KernelEnv, stacks: Rc<Stacks>) -> Result<Self> {
        if !env.tracefs.has_event(TRACEPOINT.0, TRACEPOINT.1) {
            bail!("kmem:mm_page_alloc is not a tracepoint on this kernel");
        }
        let mut warnings = Vec::new();
        let gfp = GfpTable::from_tracefs(&env.tracefs).unwrap_or_else(|e| {
            warnings.push(format!(
                "gfp flag names from the kernel's format file unavailable ({e:#}); using built-in names"
            ));
            GfpTable::builtin()
        });
        let migratetypes = env.btf.as_ref().map(migratetype_names).unwrap_or_default();
        let (user_stack_config, warning) = unwind::config_or_off(&env.btf, options.user_stack_bytes);
        warnings.extend(warning);
        Ok(Self {
            config: AllocConfig { min_order: options.min_order, _pad: 0 },
            gfp,
            migratetypes,
            started_mono_ns: env.started_mono_ns,
            flavor: None,
            events: None,
            user_stack_config,
            user_stacks: HashMap::new(),
            stacks,
            cgroups: Cgroups::find(),
            snapshot_orders: BTreeSet::new(),
            zone_snapshots: Vec::new(),
            latest: BTreeMap::new(),
            reported: BTreeMap::new(),
            warnings,
        })
    }

    fn seconds_since_start(&self, mono_ns: u64) -> f64 {
        mono_ns.saturating_sub(self.started_mono_ns) as f64 / 1e9
    }

    /// A new failure row: capture what only exists now. `tail` is what
    /// follows the event in its record: the user stack copy.
    fn on_event(&mut self, event: &AllocEvent, tail: &[u8], ebpf: &Ebpf) {
        let sample = UserStackSample::from_record_tail(tail);
        if (event.key.user_stack >= 0 || sample.is_some()) && !self.user_stacks.contains_key(&event.key) {
            let stack =
                self.stacks.user_stack(event.key.tgid, None, event.key.user_stack, sample.as_ref(), ebpf);
            self.user_stacks.insert(event.key, stack);
        }
        if self.snapshot_orders.insert(event.key.order) {
            let at = self.seconds_since_start(event.ts_ns);
            self.zone_snapshots
                .push(zones::snapshot(at, &format!("first order-{} failure", event.key.order)));
        }
    }
}

impl Family for AllocFamily {
    fn name(&self) -> &'static str {
        "alloc"
    }

    fn hook_summary(&self) -> String {
        let flavor = self.flavor.map_or("tp_btf or raw_tp", ProgramFlavor::as_str);
        format!("{flavor} kmem:mm_page_alloc, failures (no page) only")
    }

    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(maps::ALLOC_CONFIG, &self.config, true);
        loader.override_global(maps::USER_STACK_CONFIG, &self.user_stack_config, true);
    }

    fn attach(&mut self, ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()> {
        self.events = Some(watch_ring(ebpf, maps::ALLOC_EVENTS)?);
        self.flavor = Some(load_and_attach(ebpf, &["mm_page_alloc"], env)?);
        Ok(())
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, ebpf: &Ebpf) -> Poll<()> {
        let Poll::Ready(batch) = drain_ring_with_tail::<AllocEvent>(self.events.as_mut(), cx) else {
            return Poll::Pending;
        };
        for (event, tail) in &batch {
            self.on_event(event, tail, ebpf);
        }
        Poll::Ready(())
    }

    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        self.latest = per_cpu_rows(ebpf, maps::ALLOC_ROWS, |cpus| merge_cpus(cpus.iter()))?;
        Ok(())
    }

    fn fill(&mut self, report: &mut Report, scope: Scope, ebpf: &Ebpf) {
        let mut rows = Vec::new();
        let latest = self.latest.clone();
        for (key, stats) in &latest {
            let count = match scope {
                Scope::Interval => stats.count - self.reported.get(key).copied().unwrap_or(0),
                Scope::Whole => stats.count,
            };
            if count == 0 {
                continue;
            }
            let kernel_stack = self.stacks.kernel(key.kernel_stack, ebpf);
            if key.user_stack >= 0 && !self.user_stacks.contains_key(key) {
                // The event was lost or not handled yet: normalize now if
                // the process still exists (else addresses only).
                self.user_stacks
                    .insert(*key, self.stacks.user_stack(key.tgid, None, key.user_stack, None, ebpf));
            }
            let UserStack { frames: mut user_stack, unwind: user_stack_unwind } =
                self.user_stacks.get(key).cloned().unwrap_or_default();
            symbolize::resolve_user_frames(&mut user_stack);
            let cgroup = self.cgroups.as_mut().and_then(|c| c.path_of(stats.memcg_id)).unwrap_or_default();
            rows.push(AllocFailure {
                count,
                order: key.order,
                gfp: self.gfp.decode(key.gfp_flags as u64),
                gfp_flags: key.gfp_flags as u64,
                can_reclaim: self.gfp.can_reclaim(key.gfp_flags as u64),
                migratetype: migratetype_name(&self.migratetypes, stats.migratetype),
                pid: key.tgid,
                comm: comm_string(&stats.comm),
                cgroup,
                first_seen_s: self.seconds_since_start(stats.first_ns),
                last_seen_s: self.seconds_since_start(stats.last_ns),
                kernel_stack,
                user_stack,
                user_stack_unwind,
            });
        }
        if scope == Scope::Interval {
            self.reported = latest.iter().map(|(k, s)| (*k, s.count)).collect();
        }
        rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_seen_s.total_cmp(&b.first_seen_s)));
        report.alloc_failures = rows;
        report.zone_snapshots = self.zone_snapshots.clone();
        report.warn_all(self.warnings.iter().chain(self.stacks.warnings().iter()));
    }

    fn row_processes(&self, into: &mut super::ProcessSet) {
        into.extend(self.latest.keys().map(|k| k.tgid));
    }

    fn user_stack_ids(&self, into: &mut super::StackIdSet) {
        into.extend(self.latest.keys().map(|k| k.user_stack));
    }

    fn forget_processes(&mut self, ebpf: &mut Ebpf, gone: &super::ProcessSet) -> Result<()> {
        let keys = self.latest.keys().copied().collect::<Vec<_>>();
        for key in super::forget_rows::<AllocKey, AllocStats>(ebpf, maps::ALLOC_ROWS, keys, |k| k.tgid, gone)?
        {
            self.latest.remove(&key);
            self.reported.remove(&key);
            self.user_stacks.remove(&key);
        }
        Ok(())
    }
}

/// Sums a row over CPUs: counts add up, first is the earliest, last the
/// latest (with its thread).
pub fn merge_cpus<'a>(per_cpu: impl Iterator<Item = &'a AllocStats>) -> Option<AllocStats> {
    let mut merged: Option<AllocStats> = None;
    for s in per_cpu.filter(|s| s.count > 0) {
        merged = Some(match merged {
            None => *s,
            Some(mut m) => {
                m.count += s.count;
                m.first_ns = m.first_ns.min(s.first_ns);
                if s.last_ns > m.last_ns {
                    m.last_ns = s.last_ns;
                    m.pid = s.pid;
                    m.comm = s.comm;
                }
                if m.memcg_id == 0 {
                    m.memcg_id = s.memcg_id;
                }
                m
            }
        });
    }
    merged
}

pub fn probe_hooks(env: &KernelEnv) -> Vec<Hook> {
    let exists = env.tracefs.has_event(TRACEPOINT.0, TRACEPOINT.1);
    vec![
        Hook {
            name: "kmem:mm_page_alloc".into(),
            available: exists,
            used: exists,
            required: true,
            note: if exists {
                "every page allocation; the program keeps failures (page NULL) only".into()
            } else {
                "no such tracepoint on this kernel".into()
            },
        },
        super::tp_btf_hook(env, &["mm_page_alloc"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(count: u64, first: u64, last: u64, pid: u32) -> AllocStats {
        AllocStats {
            count,
            first_ns: first,
            last_ns: last,
            memcg_id: 7,
            pid,
            migratetype: 0,
            comm: *b"helper\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn merges_rows_over_cpus() {
        let zero = AllocStats { count: 0, ..stats(0, 0, 0, 0) };
        let cpus = [stats(2, 100, 500, 11), zero, stats(3, 50, 400, 12)];
        let m = merge_cpus(cpus.iter()).unwrap();
        assert_eq!((m.count, m.first_ns, m.last_ns, m.pid), (5, 50, 500, 11));
        assert!(merge_cpus([zero].iter()).is_none());
        assert_eq!(comm_string(&m.comm), "helper");
    }
}
