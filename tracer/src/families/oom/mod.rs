//! OOM kills: victim, trigger, cgroup, stacks and reaping (kernel side:
//! `tracer-ebpf/src/oom.rs`).

use std::{
    rc::Rc,
    task::{Context, Poll},
};

use anyhow::{Context as _, Result};
use aya::{Ebpf, EbpfLoader, maps::PerCpuArray};
use tracer_common::oom::{
    OOM_COUNT_COMPACT_RETRY, OOM_COUNT_RECLAIM_RETRY, OOM_KIND_KILL, OOM_KIND_REAP_FINISH,
    OOM_KIND_REAP_START, OomEvent, OomOffsets,
};
use tracer_common::{maps, ustack::UserStackConfig};

use super::{
    EventRing, Family, Hook, KernelEnv, ProgramFlavor, Scope, Tracepoints, comm_string, drain_ring_with_tail,
    load_and_attach, load_and_attach_as, present_tracepoints,
    stacks::{Stacks, UserStack},
    tracepoint_hooks, watch_ring,
};
use crate::{
    kernel::{btf::KernelBtf, cgroups::Cgroups},
    model::{Frame, OomKill, OomRetries, Report},
    symbolize,
    unwind::{
        self, UserStackSample,
        snapshots::{Keeper, Snapshots},
    },
};

pub mod report;

/// The family in the registry.
pub const FAMILY: super::FamilySpec = super::family_spec!(
    "oom",
    "OOM kills: victim, trigger, cgroup",
    hooks: |env, _options| probe_hooks(env),
    build: build,
);

fn build(setup: &super::Setup<'_>) -> Result<Box<dyn Family>> {
    Ok(Box::new(OomFamily::new(setup.env, setup.stacks.clone(), setup.options.user_stack_bytes)?))
}

/// Kills kept for the whole-run report.
const KILLS_KEPT: usize = 500;

const TRACEPOINTS: &Tracepoints = &[
    ("mark_victim", true, "each kill, in the context of the task that caused it"),
    ("start_task_reaping", false, "the OOM reaper starts freeing the victim's memory"),
    ("finish_task_reaping", false, "the OOM reaper is done"),
    ("reclaim_retry_zone", false, "counted: reclaim retried before the kill"),
    ("compact_retry", false, "counted: compaction retried before the kill"),
];

fn category(_tp: &str) -> &'static str {
    "oom"
}

/// Where processes are announced as they enter reclaim, for the maps of
/// OOM triggers that do not outlive their kill (`unwind::snapshots`):
/// (program, tracepoint).
const PRESSURE_HOOKS: [(&str, &str); 2] = [
    ("oom_pressure_memcg_reclaim", "mm_vmscan_memcg_reclaim_begin"),
    ("oom_pressure_direct_reclaim", "mm_vmscan_direct_reclaim_begin"),
];

/// A kill and what only existed when it happened.
struct Kill {
    event: OomEvent,
    cgroup: String,
    trigger_cgroup: String,
    limit: Option<(String, u64, u64)>,
    user_stack: UserStack,
    reap_start_ns: Option<u64>,
    reap_finish_ns: Option<u64>,
}

pub struct OomFamily {
    offsets: OomOffsets,
    user_stack_config: UserStackConfig,
    started_mono_ns: u64,
    page_kb: u64,
    flavor: Option<ProgramFlavor>,
    attached: Vec<&'static str>,
    events: Option<EventRing>,
    cgroups: Option<Cgroups>,
    kills: Vec<Kill>,
    kills_reported: usize,
    /// Kills reported in their intervals and then let go (past
    /// [`KILLS_KEPT`]): the whole-run list names only the later ones.
    kills_dropped: u64,
    retries: [u64; 2],
    retries_reported: [u64; 2],
    stacks: Rc<Stacks>,
    /// Takes the maps of processes entering reclaim, when user stacks are
    /// unwound.
    keeper: Option<Keeper>,
    warnings: Vec<String>,
}

/// Where the OOM programs read the victim's numbers, from BTF.
pub fn oom_offsets(btf: &KernelBtf) -> Result<OomOffsets> {
    // Kernels before 6.2 keep the mm counters in `struct mm_rss_stat`
    // (atomic longs), later ones in an array of percpu counters.
    let (rss_stride, rss_count) = if btf.has_type("mm_rss_stat") {
        (8, 0)
    } else {
        (btf.struct_size("percpu_counter")?, btf.member_offset("percpu_counter", "count")?)
    };
    let index = |name: &str| btf.find_enumerator(name).map(|v| v as u32);
    Ok(OomOffsets {
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_comm: btf.member_offset("task_struct", "comm")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        task_signal: btf.member_offset("task_struct", "signal")?,
        signal_oom_score_adj: btf.member_offset("signal_struct", "oom_score_adj")?,
        mm_total_vm: btf.member_offset("mm_struct", "total_vm")?,
        mm_pgtables_bytes: btf.member_offset("mm_struct", "pgtables_bytes")?,
        mm_rss_stat: btf.member_offset("mm_struct", "rss_stat")?,
        rss_stride,
        rss_count,
        rss_file: index("MM_FILEPAGES")?,
        rss_anon: index("MM_ANONPAGES")?,
        rss_shmem: index("MM_SHMEMPAGES")?,
        victim_is_pid: 0,
        _pad: 0,
    })
}

impl OomFamily {
    pub fn new(env: &KernelEnv, stacks: Rc<Stacks>, user_stack_bytes: u32) -> Result<Self> {
        let btf = env.btf.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut offsets = oom_offsets(btf).context("reading the OOM victim's layout from BTF")?;
        // Older kernels' mark_victim(int pid[, uid_t uid]) has none of the
        // victim's sizes: the pid is all the kernel gives about the victim.
        let format = std::fs::read_to_string(env.tracefs.root().join("events/oom/mark_victim/format"))
            .unwrap_or_default();
        let victim_is_pid = !format.is_empty() && !format.contains(" total_vm;");
        offsets.victim_is_pid = victim_is_pid as u32;
        let mut warnings = Vec::new();
        if victim_is_pid {
            warnings.push(
                "oom: this kernel's oom:mark_victim gives only the victim's pid: the victim's command \
                 comes from /proc while it lasts, its sizes are not known (reported as 0)"
                    .to_string(),
            );
        }
        let page_kb = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) / 1024) as u64;
        let (user_stack_config, warning) = unwind::config_or_off(&env.btf, user_stack_bytes);
        warnings.extend(warning);
        Ok(Self {
            offsets,
            user_stack_config,
            started_mono_ns: env.started_mono_ns,
            page_kb,
            flavor: None,
            attached: Vec::new(),
            events: None,
            cgroups: Cgroups::find(),
            kills: Vec::new(),
            kills_reported: 0,
            kills_dropped: 0,
            retries: [0; 2],
            retries_reported: [0; 2],
            stacks,
            keeper: None,
            warnings,
        })
    }

    /// Announcements of processes entering reclaim, and the thread that
    /// takes their maps: only when user stacks are copied for unwinding.
    fn keep_maps(&mut self, ebpf: &mut Ebpf, env: &KernelEnv, flavor: ProgramFlavor) -> Result<()> {
        let ring = aya::maps::RingBuf::try_from(
            ebpf.take_map(maps::OOM_PRESSURE_EVENTS).context("OOM_PRESSURE_EVENTS map")?,
        )?;
        for (program, tp) in PRESSURE_HOOKS {
            load_and_attach_as(ebpf, flavor, program, tp, env)?;
        }
        let snapshots = std::sync::Arc::new(std::sync::Mutex::new(Snapshots::default()));
        self.stacks.use_snapshots(snapshots.clone());
        self.keeper = Some(Keeper::spawn(ring, snapshots));
        Ok(())
    }

    /// `tail`: what follows the event in its record (a kill's user stack
    /// copy).
    fn on_event(&mut self, event: &OomEvent, tail: &[u8], ebpf: &Ebpf) {
        match event.kind {
            OOM_KIND_KILL => {
                let mut event = *event;
                if self.offsets.victim_is_pid != 0 && event.victim_comm == [0; 16] {
                    // Best effort, while the victim has not exited yet.
                    if let Ok(comm) = std::fs::read(format!("/proc/{}/comm", event.victim_pid)) {
                        let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
                        let n = comm.len().min(15);
                        event.victim_comm[..n].copy_from_slice(&comm[..n]);
                    }
                }
                let event = &event;
                // The trigger's map first: it is often the victim, and
                // about to exit.
                let sample = UserStackSample::from_record_tail(tail);
                let user_stack = self.stacks.user_stack(
                    event.trigger_tgid,
                    Some(event.trigger_mm).filter(|&mm| mm != 0),
                    event.trigger_user_stack,
                    sample.as_ref(),
                    ebpf,
                );
                let path = |cgroups: &mut Option<Cgroups>, id| {
                    cgroups.as_mut().and_then(|c| c.path_of(id)).unwrap_or_default()
                };
                let cgroup = path(&mut self.cgroups, event.victim_memcg);
                let trigger_cgroup = path(&mut self.cgroups, event.trigger_memcg);
                let limit = self.cgroups.as_ref().and_then(|c| limited_ancestor(c, &trigger_cgroup));
                self.kills.push(Kill {
                    event: *event,
                    cgroup,
                    trigger_cgroup,
                    limit,
                    user_stack,
                    reap_start_ns: None,
                    reap_finish_ns: None,
                });
            }
            kind @ (OOM_KIND_REAP_START | OOM_KIND_REAP_FINISH) => {
                // Reaping follows the victim's latest kill.
                if let Some(kill) =
                    self.kills.iter_mut().rev().find(|k| k.event.victim_pid == event.victim_pid)
                {
                    let slot = if kind == OOM_KIND_REAP_START {
                        &mut kill.reap_start_ns
                    } else {
                        &mut kill.reap_finish_ns
                    };
                    slot.get_or_insert(event.ts_ns);
                }
            }
            _ => {}
        }
    }
}

/// The nearest cgroup at or above `path` with a memory limit, with its
/// limit and usage now: for a memcg OOM, the limit that was hit.
fn limited_ancestor(cgroups: &Cgroups, path: &str) -> Option<(String, u64, u64)> {
    let (limit_file, usage_file) = if cgroups.version() == 1 {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    } else {
        ("memory.max", "memory.current")
    };
    let mut current = if path.is_empty() { "/".to_string() } else { path.to_string() };
    loop {
        let limit = cgroups.read(&current, limit_file).and_then(|v| v.parse::<u64>().ok());
        // v1 says "unlimited" with a huge number; v2 with "max".
        if let Some(limit) = limit.filter(|&l| l < (1 << 60)) {
            let usage = cgroups.read(&current, usage_file).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Some((current, limit, usage));
        }
        if current == "/" {
            return None;
        }
        current = match current.rsplit_once('/') {
            Some(("", _)) | None => "/".to_string(),
            Some((parent, _)) => parent.to_string(),
        };
    }
}

/// memcg or global, from the functions the trigger was in.
pub fn oom_scope(kernel_stack: &[Frame]) -> &'static str {
    let has = |name: &str| kernel_stack.iter().any(|f| f.symbol.as_deref() == Some(name));
    if has("mem_cgroup_out_of_memory") || has("mem_cgroup_oom") || has("try_charge_memcg") {
        "memcg"
    } else if has("__alloc_pages_may_oom") || has("pagefault_out_of_memory") || has("out_of_memory") {
        "global"
    } else {
        "unknown"
    }
}

impl Family for OomFamily {
    fn name(&self) -> &'static str {
        "oom"
    }

    fn hook_summary(&self) -> String {
        let flavor = self.flavor.map_or("tp_btf or raw_tp", ProgramFlavor::as_str);
        let mut summary = format!("{flavor} oom:{}", self.attached.join(", oom:"));
        if self.keeper.is_some() {
            let hooks: Vec<String> = PRESSURE_HOOKS.iter().map(|(_, tp)| format!("vmscan:{tp}")).collect();
            summary += &format!(" (and {}: maps of processes entering reclaim)", hooks.join(", "));
        }
        summary
    }

    fn configure<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader.override_global(maps::OOM_OFFSETS, &self.offsets, true);
        loader.override_global(maps::USER_STACK_CONFIG, &self.user_stack_config, true);
    }

    fn attach(&mut self, ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()> {
        self.events = Some(watch_ring(ebpf, maps::OOM_EVENTS)?);
        // Optional tracepoints degrade the report, not the family.
        let (present, missing) = present_tracepoints(env, TRACEPOINTS, category);
        for (tp, what) in missing {
            self.warnings.push(format!("oom:{tp} is not on this kernel: not reported ({what})"));
        }
        let flavor = load_and_attach(ebpf, &present, env)?;
        self.flavor = Some(flavor);
        self.attached = present;
        if self.user_stack_config.copy_bytes != 0
            && let Err(e) = self.keep_maps(ebpf, env, flavor)
        {
            self.warnings.push(format!(
                "oom: processes entering reclaim are not followed ({e:#}): the trigger stack of a process \
                 gone before its kill is read ends at its innermost frame"
            ));
        }
        Ok(())
    }

    fn poll_events(&mut self, cx: &mut Context<'_>, ebpf: &Ebpf) -> Poll<()> {
        let Poll::Ready(batch) = drain_ring_with_tail::<OomEvent>(self.events.as_mut(), cx) else {
            return Poll::Pending;
        };
        for (event, tail) in &batch {
            self.on_event(event, tail, ebpf);
        }
        Poll::Ready(())
    }

    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        let counts: PerCpuArray<_, u64> =
            PerCpuArray::try_from(ebpf.map(maps::OOM_COUNTS).context("OOM_COUNTS map")?)?;
        for (slot, out) in
            [OOM_COUNT_RECLAIM_RETRY, OOM_COUNT_COMPACT_RETRY].into_iter().zip(self.retries.iter_mut())
        {
            *out = counts.get(&slot, 0)?.iter().sum();
        }
        Ok(())
    }

    fn fill(&mut self, report: &mut Report, scope: Scope, ebpf: &Ebpf) {
        let first = if scope == Scope::Interval { self.kills_reported } else { 0 };
        let mut rows = Vec::new();
        for i in first..self.kills.len() {
            let e = self.kills[i].event;
            let trigger_kernel_stack = self.stacks.kernel(e.trigger_kernel_stack, ebpf);
            let kill = &mut self.kills[i];
            symbolize::resolve_user_frames(&mut kill.user_stack.frames);
            let since = |ns: Option<u64>| ns.map(|t| t.saturating_sub(e.ts_ns) as f64 / 1e6);
            rows.push(OomKill {
                at_s: e.ts_ns.saturating_sub(self.started_mono_ns) as f64 / 1e9,
                victim_pid: e.victim_pid,
                victim_comm: comm_string(&e.victim_comm),
                victim_uid: e.victim_uid,
                cgroup: kill.cgroup.clone(),
                scope: oom_scope(&trigger_kernel_stack).into(),
                limit_cgroup: kill.limit.as_ref().map(|l| l.0.clone()),
                limit_bytes: kill.limit.as_ref().map(|l| l.1),
                usage_bytes: kill.limit.as_ref().map(|l| l.2),
                total_vm_kb: e.total_vm * self.page_kb,
                anon_rss_kb: e.anon_rss * self.page_kb,
                file_rss_kb: e.file_rss * self.page_kb,
                shmem_rss_kb: e.shmem_rss * self.page_kb,
                pgtables_kb: e.pgtables_bytes >> 10,
                oom_score_adj: e.oom_score_adj,
                trigger_pid: e.trigger_tgid,
                trigger_comm: comm_string(&e.trigger_comm),
                trigger_cgroup: kill.trigger_cgroup.clone(),
                reap_start_ms: since(kill.reap_start_ns),
                reap_ms: since(kill.reap_finish_ns),
                trigger_kernel_stack,
                trigger_user_stack: kill.user_stack.frames.clone(),
                trigger_user_stack_unwind: kill.user_stack.unwind.clone(),
            });
        }
        let base = if scope == Scope::Interval {
            self.kills_reported = self.kills.len();
            // Memory stays flat in runs of days (`watch`): kills already
            // reported in their interval go once there are too many.
            let excess = self.kills.len().saturating_sub(KILLS_KEPT).min(self.kills_reported);
            if excess > 0 {
                self.kills.drain(..excess);
                self.kills_reported -= excess;
                self.kills_dropped += excess as u64;
            }
            std::mem::replace(&mut self.retries_reported, self.retries)
        } else {
            if self.kills_dropped > 0 {
                report.warnings.push(format!(
                    "{} earlier OOM kills are in their interval reports only (the last {KILLS_KEPT} are listed)",
                    self.kills_dropped
                ));
            }
            [0; 2]
        };
        report.oom_kills = rows;
        report.oom_retries = Some(OomRetries {
            reclaim_retry_zone: self.retries[0].saturating_sub(base[0]),
            compact_retry: self.retries[1].saturating_sub(base[1]),
        });
        report.warn_all(self.warnings.iter().chain(self.stacks.warnings().iter()));
    }
}

pub fn probe_hooks(env: &KernelEnv) -> Vec<Hook> {
    let btf_note = match &env.btf {
        Ok(btf) => oom_offsets(btf).err().map(|e| e.to_string()),
        Err(e) => Some(e.clone()),
    };
    let mut hooks = tracepoint_hooks(env, TRACEPOINTS, category);
    hooks.push(super::tp_btf_hook(env, &["mark_victim"]));
    for (_, tp) in PRESSURE_HOOKS {
        let exists = env.tracefs.has_event("vmscan", tp);
        hooks.push(Hook {
            name: format!("vmscan:{tp}"),
            available: exists,
            used: exists,
            required: false,
            note: if exists {
                "maps of processes entering reclaim, for trigger stacks of processes gone before their kill \
                 is read"
                    .into()
            } else {
                "not on this kernel".into()
            },
        });
    }
    hooks.push(Hook {
        name: "BTF task and mm layout".into(),
        available: btf_note.is_none(),
        used: btf_note.is_none(),
        required: true,
        note: btf_note.unwrap_or_else(|| "victim RSS read as the kernel's own get_mm_counter does".into()),
    });
    hooks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names.iter().map(|n| Frame { symbol: Some((*n).into()), ..Frame::default() }).collect()
    }

    #[test]
    fn scope_from_the_triggers_stack() {
        assert_eq!(
            oom_scope(&frames(&[
                "dump_header",
                "oom_kill_process",
                "out_of_memory",
                "mem_cgroup_out_of_memory",
                "try_charge_memcg"
            ])),
            "memcg"
        );
        assert_eq!(
            oom_scope(&frames(&[
                "oom_kill_process",
                "out_of_memory",
                "__alloc_pages_may_oom",
                "__alloc_pages_slowpath"
            ])),
            "global"
        );
        assert_eq!(oom_scope(&frames(&["something_else"])), "unknown");
    }

    #[test]
    fn finds_the_limit_above_a_cgroup() {
        let root = std::env::temp_dir().join(format!("tracer-oom-limit-{}", std::process::id()));
        std::fs::create_dir_all(root.join("web/child")).unwrap();
        std::fs::write(root.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(root.join("web/memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(root.join("web/memory.usage_in_bytes"), "67100000\n").unwrap();
        std::fs::write(root.join("web/child/memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        let cgroups = Cgroups::at(&root, 1);
        assert_eq!(limited_ancestor(&cgroups, "/web/child"), Some(("/web".into(), 67108864, 67100000)));
        assert_eq!(limited_ancestor(&cgroups, "/"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
