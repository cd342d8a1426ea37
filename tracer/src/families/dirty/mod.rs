//! Dirty-page throttling: every pause `balance_dirty_pages` makes a writer
//! take, per process, stack, memory cgroup and backing device, from the
//! classic tracepoint `writeback:balance_dirty_pages` (fields at the
//! offsets its tracefs format file gives: no struct layout is assumed).

pub mod report;

use std::{
    collections::BTreeMap,
    task::{Context, Poll},
};

use anyhow::{Context as _, Result};
use aya::{Ebpf, EbpfLoader, maps::PerCpuValues, programs::TracePoint};
use tracer_common::{
    dirty::{DirtyKey, DirtyOffsets, DirtyStats},
    hist::LatencyHist,
    maps,
    ustack::UserStackConfig,
};

use super::{
    EventRing, Family, Hook, KernelEnv, Scope, comm_string, per_cpu_rows, stacks::Stacks, take_stack_samples,
    watch_ring,
};
use crate::{
    kernel::{cgroups::Cgroups, devices, tracefs::EventFormat},
    model::{Dirty, DirtyRow, DirtyState, Percentiles, Report, StallStack, buckets_of},
    symbolize, unwind,
};

/// The family in the registry.
pub const FAMILY: super::FamilySpec = super::family_spec!(
    "dirty",
    "Dirty-page throttling: writers paused by balance_dirty_pages",
    hooks: |env, _options| probe_hooks(env),
    build: build,
);

fn build(setup: &super::Setup<'_>) -> Result<Box<dyn Family>> {
    Ok(Box::new(DirtyFamily::new(setup.env, setup.stacks.clone(), setup.options.user_stack_bytes)?))
}

const CATEGORY: &str = "writeback";
const TRACEPOINT: &str = "balance_dirty_pages";
/// Stacks kept per row, most pause first.
pub const STACKS_KEPT: usize = 5;

pub struct DirtyFamily {
    offsets: DirtyOffsets,
    latest: BTreeMap<DirtyKey, DirtyStats>,
    reported: BTreeMap<DirtyKey, DirtyStats>,
    cgroups: Option<Cgroups>,
    stacks: std::rc::Rc<Stacks>,
    /// User stack samples of throttled writers (`--user-stack`).
    samples: Option<EventRing>,
    user_stack_config: UserStackConfig,
    warnings: Vec<String>,
}

impl DirtyFamily {
    /// `user_stack_bytes`: `--user-stack`, the stack copied per sample.
    pub fn new(env: &KernelEnv, stacks: std::rc::Rc<Stacks>, user_stack_bytes: u32) -> Result<Self> {
        let format = env.tracefs.event_format(CATEGORY, TRACEPOINT)?;
        let (user_stack_config, warning) = unwind::config_or_off(&env.btf, user_stack_bytes);
        Ok(Self {
            offsets: offsets_of(&format)?,
            latest: BTreeMap::new(),
            reported: BTreeMap::new(),
            cgroups: Cgroups::find(),
            stacks,
            samples: None,
            user_stack_config,
            warnings: warning.into_iter().collect(),
        })
    }
}

/// The record's field offsets. The writeback context's fields were named
/// `bdi_*` before they became `wb_*`; `cgroup_ino` came later than the rest.
pub fn offsets_of(format: &EventFormat) -> Result<DirtyOffsets> {
    let at = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| format.field(n))
            .map(|f| f.offset)
            .with_context(|| format!("{CATEGORY}:{TRACEPOINT} has no field {}", names.join(" or ")))
    };
    Ok(DirtyOffsets {
        bdi: at(&["bdi"])?,
        dirty: at(&["dirty"])?,
        limit: at(&["limit"])?,
        wb_dirty: at(&["wb_dirty", "bdi_dirty"])?,
        wb_setpoint: at(&["wb_setpoint", "bdi_setpoint"])?,
        pause: at(&["pause"])?,
        cgroup_ino: at(&["cgroup_ino"]).unwrap_or(u32::MAX),
        _pad: 0,
    })
}

/// One row per CPU summed: counts and histograms add; the state at the
/// longest pause is the CPU's that paused longest.
fn fold_cpus(cpus: &PerCpuValues<DirtyStats>) -> Option<DirtyStats> {
    let mut total = DirtyStats::zeroed();
    let mut longest = 0;
    for s in cpus.iter() {
        if s.pauses.max_ns > longest {
            longest = s.pauses.max_ns;
            total.dirty_at_max = s.dirty_at_max;
            total.limit_at_max = s.limit_at_max;
            total.wb_dirty_at_max = s.wb_dirty_at_max;
            total.wb_setpoint_at_max = s.wb_setpoint_at_max;
        }
        total.unpaused += s.unpaused;
        total.pauses.merge(&s.pauses);
        if s.comm[0] != 0 {
            total.comm = s.comm;
        }
    }
    Some(total)
}

/// `latest - base`, row by row.
fn delta(
    latest: &BTreeMap<DirtyKey, DirtyStats>,
    base: &BTreeMap<DirtyKey, DirtyStats>,
) -> Vec<(DirtyKey, DirtyStats)> {
    latest
        .iter()
        .map(|(k, s)| {
            let mut d = *s;
            if let Some(b) = base.get(k) {
                d.pauses = s.pauses.delta_since(&b.pauses);
                d.unpaused = s.unpaused.saturating_sub(b.unpaused);
            }
            (*k, d)
        })
        .filter(|(_, d)| d.pauses.samples + d.unpaused > 0)
        .collect()
}

/// A report row: process, backing device, memory cgroup.
type RowKey = (u32, [u8; 32], u64);

/// A NUL-padded name.
fn bdi_name(bdi: &[u8; 32]) -> String {
    let end = bdi.iter().position(|&b| b == 0).unwrap_or(bdi.len());
    String::from_utf8_lossy(&bdi[..end]).into_owned()
}

/// "loop0 (7:0)" for a backing device named by its major:minor.
fn device_label(bdi: &str, names: &BTreeMap<u32, String>) -> String {
    match devices::parse_major_minor(bdi).and_then(|dev| names.get(&dev)) {
        Some(name) => format!("{name} ({bdi})"),
        None => bdi.to_string(),
    }
}

impl Family for DirtyFamily {
    fn name(&self) -> &'static str {
        "dirty"
    }

    fn hook_summary(&self) -> String {
        format!("tracepoint {CATEGORY}:{TRACEPOINT} (fields from its format file)")
    }

    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(maps::DIRTY_OFFSETS, &self.offsets, true);
        loader.override_global(maps::USER_STACK_CONFIG, &self.user_stack_config, true);
    }

    fn attach(&mut self, ebpf: &mut Ebpf, _env: &KernelEnv) -> Result<()> {
        self.samples = Some(watch_ring(ebpf, maps::DIRTY_STACK_SAMPLES)?);
        let program: &mut TracePoint =
            ebpf.program_mut(TRACEPOINT).context("no balance_dirty_pages program")?.try_into()?;
        program.load().context("loading the balance_dirty_pages program")?;
        program.attach(CATEGORY, TRACEPOINT).context("attaching writeback:balance_dirty_pages")?;
        Ok(())
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, ebpf: &Ebpf) -> Poll<()> {
        take_stack_samples(self.samples.as_mut(), cx, &self.stacks, ebpf)
    }

    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        self.latest = per_cpu_rows(ebpf, maps::DIRTY_ROWS, fold_cpus)?;
        Ok(())
    }

    fn row_processes(&self, into: &mut super::ProcessSet) {
        into.extend(self.latest.keys().map(|k| k.tgid));
    }

    fn user_stack_ids(&self, into: &mut super::StackIdSet) {
        into.extend(self.latest.keys().map(|k| k.user_stack));
    }

    fn forget_processes(&mut self, ebpf: &mut Ebpf, gone: &super::ProcessSet) -> Result<()> {
        let keys = self.latest.keys().copied().collect::<Vec<_>>();
        for key in super::forget_rows::<DirtyKey, DirtyStats>(ebpf, maps::DIRTY_ROWS, keys, |k| k.tgid, gone)?
        {
            self.latest.remove(&key);
            self.reported.remove(&key);
        }
        Ok(())
    }

    fn fill(&mut self, report: &mut Report, scope: Scope, ebpf: &Ebpf) {
        let base = match scope {
            Scope::Interval => std::mem::replace(&mut self.reported, self.latest.clone()),
            Scope::Whole => BTreeMap::new(),
        };
        let names = devices::names(&devices::list());
        // Rows: process x device x cgroup; stacks inside them.
        let mut grouped: BTreeMap<RowKey, Vec<(DirtyKey, DirtyStats)>> = BTreeMap::new();
        for (key, stats) in delta(&self.latest, &base) {
            grouped.entry((key.tgid, key.bdi, key.cgroup_ino)).or_default().push((key, stats));
        }
        let mut rows = Vec::new();
        for ((pid, bdi, cgroup_ino), mut parts) in grouped {
            let mut pauses = LatencyHist::zeroed();
            let mut unpaused = 0;
            let mut at_longest = DirtyState::default();
            let mut longest = 0;
            let mut comm = String::new();
            for (_, s) in &parts {
                pauses.merge(&s.pauses);
                unpaused += s.unpaused;
                if s.pauses.max_ns >= longest {
                    longest = s.pauses.max_ns;
                    at_longest = DirtyState {
                        dirty: s.dirty_at_max,
                        limit: s.limit_at_max,
                        wb_dirty: s.wb_dirty_at_max,
                        wb_setpoint: s.wb_setpoint_at_max,
                    };
                }
                comm = comm_string(&s.comm);
            }
            parts.sort_by_key(|(_, s)| std::cmp::Reverse(s.pauses.sum_ns));
            let stacks = parts
                .iter()
                .filter(|(_, s)| s.pauses.samples > 0)
                .take(STACKS_KEPT)
                .map(|(key, s)| {
                    let mut user = self.stacks.row_user_stack(pid, key.user_stack, ebpf);
                    symbolize::resolve_user_frames(&mut user.frames);
                    StallStack {
                        count: s.pauses.samples,
                        total_ms: s.pauses.sum_ns as f64 / 1e6,
                        pid,
                        kernel_stack: self.stacks.kernel(key.kernel_stack, ebpf),
                        user_stack: user.frames,
                        user_stack_unwind: user.unwind,
                    }
                })
                .collect();
            let cgroup = self.cgroups.as_mut().and_then(|c| c.path_of(cgroup_ino)).unwrap_or_default();
            rows.push(DirtyRow {
                pid,
                comm,
                device: device_label(&bdi_name(&bdi), &names),
                cgroup,
                pauses: pauses.samples,
                unpaused,
                total_ms: pauses.sum_ns as f64 / 1e6,
                latency_us: Percentiles::of(&pauses),
                histogram: buckets_of(&pauses),
                at_longest,
                stacks,
            });
        }
        report::sort_rows(&mut rows);
        report.dirty = Some(Dirty { rows });
        report.warn_all(self.warnings.iter().chain(self.stacks.warnings().iter()));
    }
}

pub fn probe_hooks(env: &KernelEnv) -> Vec<Hook> {
    let exists = env.tracefs.has_event(CATEGORY, TRACEPOINT);
    let format = exists.then(|| env.tracefs.event_format(CATEGORY, TRACEPOINT).and_then(|f| offsets_of(&f)));
    let (available, note) = match format {
        None => (false, "not on this kernel".to_string()),
        Some(Err(e)) => (false, format!("{e:#}")),
        Some(Ok(_)) => {
            (true, "every throttling pause, with the dirty state (fields from its format file)".into())
        }
    };
    vec![Hook { name: format!("{CATEGORY}:{TRACEPOINT}"), available, used: available, required: true, note }]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's 6.1 names the writeback fields bdi_*.
    const FORMAT_6_1: &str = "name: balance_dirty_pages
ID: 700
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:char bdi[32];\toffset:8;\tsize:32;\tsigned:0;
\tfield:unsigned long limit;\toffset:40;\tsize:8;\tsigned:0;
\tfield:unsigned long setpoint;\toffset:48;\tsize:8;\tsigned:0;
\tfield:unsigned long dirty;\toffset:56;\tsize:8;\tsigned:0;
\tfield:unsigned long bdi_setpoint;\toffset:64;\tsize:8;\tsigned:0;
\tfield:unsigned long bdi_dirty;\toffset:72;\tsize:8;\tsigned:0;
\tfield:long pause;\toffset:112;\tsize:8;\tsigned:1;
";

    #[test]
    fn offsets_come_from_the_format_under_either_name() {
        let o = offsets_of(&EventFormat::parse(FORMAT_6_1).unwrap()).unwrap();
        assert_eq!((o.bdi, o.limit, o.dirty, o.wb_setpoint, o.wb_dirty, o.pause), (8, 40, 56, 64, 72, 112));
        assert_eq!(o.cgroup_ino, u32::MAX, "no cgroup_ino field: none read");
        let without_pause = FORMAT_6_1.replace("long pause", "long other");
        let err = offsets_of(&EventFormat::parse(&without_pause).unwrap()).unwrap_err();
        assert!(err.to_string().contains("no field pause"), "{err}");
    }

    #[test]
    fn interval_rows_are_deltas() {
        let key = DirtyKey { tgid: 7, kernel_stack: 1, user_stack: 2, _pad: 0, cgroup_ino: 0, bdi: [0; 32] };
        let mut earlier = DirtyStats::zeroed();
        earlier.pauses.record(4_000_000);
        earlier.unpaused = 3;
        let mut later = earlier;
        later.pauses.record(8_000_000);
        later.unpaused = 5;
        let d = delta(&BTreeMap::from([(key, later)]), &BTreeMap::from([(key, earlier)]));
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].1.pauses.samples, d[0].1.pauses.sum_ns, d[0].1.unpaused), (1, 8_000_000, 2));
        assert!(delta(&BTreeMap::from([(key, later)]), &BTreeMap::from([(key, later)])).is_empty());
    }
}
