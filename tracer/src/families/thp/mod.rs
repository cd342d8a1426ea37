//! Transparent huge page splits. No kernel has a split tracepoint, so this
//! family uses the best hook the running kernel allows: fentry on the split
//! functions, else a kprobe on them (both per process, with stacks), else
//! the kernel's /proc/vmstat counters (global counts only).

use std::{collections::BTreeMap, rc::Rc};

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::PerCpuValues,
    programs::{FEntry, KProbe},
};
use tracer_common::maps;
use tracer_common::thp::{SplitKey, SplitStats};

use super::{Family, Hook, KernelEnv, Scope, comm_string, per_cpu_rows, stacks::Stacks};
use crate::{
    kernel::vmstat,
    model::{NamedCount, Report, Thp, ThpProcess},
};

pub mod report;

/// The family in the registry.
pub const FAMILY: super::FamilySpec = super::family_spec!(
    "thp",
    "Transparent huge page splits",
    hooks: |env, _options| probe_hooks(env),
    build: build,
);

fn build(setup: &super::Setup<'_>) -> Result<Box<dyn Family>> {
    Ok(Box::new(ThpFamily::new(setup.stacks.clone())?))
}

/// (program prefix, kernel function): PMD splits first (required of a
/// function hook), page splits second.
const FUNCTIONS: [(&str, &str); 2] =
    [("split_huge_pmd", "__split_huge_pmd"), ("split_huge_page", "split_huge_page_to_list_to_order")];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Fentry,
    Kprobe,
    Vmstat,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Fentry => "fentry",
            Method::Kprobe => "kprobe",
            Method::Vmstat => "vmstat",
        }
    }
}

pub struct ThpFamily {
    method: Method,
    /// Why better methods were not used.
    refused: Vec<String>,
    base: BTreeMap<String, u64>,
    latest: BTreeMap<String, u64>,
    reported: BTreeMap<String, u64>,
    splits: BTreeMap<SplitKey, SplitStats>,
    splits_reported: BTreeMap<SplitKey, u64>,
    stacks: Rc<Stacks>,
}

impl ThpFamily {
    pub fn new(stacks: Rc<Stacks>) -> Result<Self> {
        let counters = vmstat::thp_split_counters(&vmstat::read());
        if !counters.contains_key("thp_split_pmd") {
            bail!("/proc/vmstat has no thp_split_pmd: this kernel has no transparent huge pages");
        }
        Ok(Self {
            method: Method::Vmstat,
            refused: Vec::new(),
            latest: counters.clone(),
            reported: counters.clone(),
            base: counters,
            splits: BTreeMap::new(),
            splits_reported: BTreeMap::new(),
            stacks,
        })
    }

    fn try_fentry(ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()> {
        let btf = env.aya_btf().context("no kernel BTF")?;
        for (i, (prefix, function)) in FUNCTIONS.iter().enumerate() {
            let name = format!("{prefix}_fentry");
            let prog: &mut FEntry = ebpf.program_mut(&name).context("program missing")?.try_into()?;
            let attached = prog
                .load(function, btf)
                .map_err(anyhow::Error::from)
                .and_then(|()| prog.attach().map(|_| ()).map_err(anyhow::Error::from));
            // Page splits are a bonus; PMD splits are the point.
            if let Err(e) = attached
                && i == 0
            {
                return Err(e.context(format!("fentry on {function}")));
            }
        }
        Ok(())
    }

    fn try_kprobe(ebpf: &mut Ebpf) -> Result<()> {
        if !kprobes_supported() {
            bail!("kprobe on {}: this kernel has no kprobes", FUNCTIONS[0].1);
        }
        for (i, (prefix, function)) in FUNCTIONS.iter().enumerate() {
            let name = format!("{prefix}_kprobe");
            let prog: &mut KProbe = ebpf.program_mut(&name).context("program missing")?.try_into()?;
            let attached = prog
                .load()
                .map_err(anyhow::Error::from)
                .and_then(|()| prog.attach(function, 0).map(|_| ()).map_err(anyhow::Error::from));
            if let Err(e) = attached
                && i == 0
            {
                return Err(e.context(format!("kprobe on {function}")));
            }
        }
        Ok(())
    }
}

impl Family for ThpFamily {
    fn name(&self) -> &'static str {
        "thp"
    }

    fn hook_summary(&self) -> String {
        match self.method {
            Method::Vmstat => {
                "/proc/vmstat thp_split_* counters (global counts, no per-process detail)".into()
            }
            m => format!("{} on {} (per process, with stacks)", m.as_str(), FUNCTIONS[0].1),
        }
    }

    fn refused(&self) -> String {
        self.refused.join("; ")
    }

    fn configure<'a>(&'a self, _loader: &mut EbpfLoader<'a>) {}

    fn attach(&mut self, ebpf: &mut Ebpf, env: &KernelEnv) -> Result<()> {
        match Self::try_fentry(ebpf, env) {
            Ok(()) => self.method = Method::Fentry,
            Err(e) => {
                self.refused.push(refusal(&e));
                match Self::try_kprobe(ebpf) {
                    Ok(()) => self.method = Method::Kprobe,
                    Err(e) => self.refused.push(refusal(&e)),
                }
            }
        }
        // Counters from now: what was attached before this point is moot.
        self.base = vmstat::thp_split_counters(&vmstat::read());
        self.latest = self.base.clone();
        self.reported = self.base.clone();
        Ok(())
    }

    fn sample(&mut self, ebpf: &mut Ebpf) -> Result<()> {
        self.latest = vmstat::thp_split_counters(&vmstat::read());
        if self.method != Method::Vmstat {
            self.splits = per_cpu_rows(ebpf, maps::THP_SPLITS, |cpus: &PerCpuValues<SplitStats>| {
                let mut total = SplitStats::default();
                for s in cpus.iter() {
                    total.count += s.count;
                    if s.comm[0] != 0 {
                        total.comm = s.comm;
                    }
                }
                Some(total)
            })?;
        }
        Ok(())
    }

    fn row_processes(&self, into: &mut super::ProcessSet) {
        into.extend(self.splits.keys().map(|k| k.tgid));
    }

    fn forget_processes(&mut self, ebpf: &mut Ebpf, gone: &super::ProcessSet) -> Result<()> {
        if self.method == Method::Vmstat {
            return Ok(());
        }
        let keys = self.splits.keys().copied().collect::<Vec<_>>();
        for key in super::forget_rows::<SplitKey, SplitStats>(ebpf, maps::THP_SPLITS, keys, |k| k.tgid, gone)?
        {
            self.splits.remove(&key);
            self.splits_reported.remove(&key);
        }
        Ok(())
    }

    fn fill(&mut self, report: &mut Report, scope: Scope, ebpf: &Ebpf) {
        let base = match scope {
            Scope::Interval => std::mem::replace(&mut self.reported, self.latest.clone()),
            Scope::Whole => self.base.clone(),
        };
        let counters: Vec<NamedCount> = self
            .latest
            .iter()
            .map(|(name, v)| NamedCount {
                name: name.clone(),
                count: v.saturating_sub(*base.get(name).unwrap_or(v)),
            })
            .collect();
        let pmd_counter = counters.iter().find(|c| c.name == "thp_split_pmd").map_or(0, |c| c.count);
        let split_base = match scope {
            Scope::Interval => std::mem::replace(
                &mut self.splits_reported,
                self.splits.iter().map(|(k, s)| (*k, s.count)).collect(),
            ),
            Scope::Whole => BTreeMap::new(),
        };
        let mut by_pid: BTreeMap<u32, ThpProcess> = BTreeMap::new();
        let entries: Vec<(SplitKey, SplitStats)> = self.splits.iter().map(|(k, s)| (*k, *s)).collect();
        for (key, stats) in entries {
            let n = stats.count - split_base.get(&key).copied().unwrap_or(0).min(stats.count);
            if n == 0 {
                continue;
            }
            let kernel_stack = self.stacks.kernel(key.kernel_stack, ebpf);
            let p = by_pid.entry(key.tgid).or_insert_with(|| ThpProcess {
                pid: key.tgid,
                comm: comm_string(&stats.comm),
                kernel_stack,
                ..ThpProcess::default()
            });
            if key.what == 0 { p.pmd_splits += n } else { p.page_splits += n }
        }
        let mut processes: Vec<ThpProcess> = by_pid.into_values().collect();
        processes.sort_by_key(|p| std::cmp::Reverse(p.pmd_splits + p.page_splits));
        let (splits, note) = match self.method {
            Method::Vmstat => (
                pmd_counter,
                format!(
                    "counted from the kernel's global /proc/vmstat counters: no per-process or per-stack detail \
                     (function hooks refused: {})",
                    self.refused.join("; ")
                ),
            ),
            m => (
                processes.iter().map(|p| p.pmd_splits).sum(),
                format!("{} hooks on the split functions; vmstat counters alongside", m.as_str()),
            ),
        };
        report.thp = Some(Thp { method: self.method.as_str().into(), splits, counters, processes, note });
    }
}

/// The perf kprobe PMU aya attaches kprobes through.
/// Whether /proc/kallsyms lists `function` (a text symbol).
fn function_in_kallsyms(function: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|text| text.lines().any(|l| l.split_whitespace().nth(2) == Some(function)))
}

fn kprobes_supported() -> bool {
    std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// "fentry on __split_huge_pmd: Operation not permitted (os error 1)":
/// what was tried and the kernel's answer, without the loader's chain.
fn refusal(e: &anyhow::Error) -> String {
    let what = e.to_string();
    let why = e.root_cause().to_string();
    let why = why.rsplit(": ").next().unwrap_or(&why);
    if what.ends_with(why) { what } else { format!("{what}: {why}") }
}

pub fn probe_hooks(env: &KernelEnv) -> Vec<Hook> {
    let split_tracepoint =
        std::fs::read_dir(env.tracefs.root().join("events/huge_memory")).ok().and_then(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| n.contains("split"))
        });
    let has_fn_btf = |f: &str| env.btf.as_ref().is_ok_and(|b| b.has_type(f));
    let kprobes = kprobes_supported();
    // A kprobe on a function the kernel does not have (no THP) cannot work.
    let in_kallsyms = function_in_kallsyms(FUNCTIONS[0].1);
    let vmstat = vmstat::thp_split_counters(&vmstat::read()).contains_key("thp_split_pmd");
    vec![
        Hook {
            name: "tracepoint for THP splits".into(),
            available: split_tracepoint.is_some(),
            used: false,
            required: false,
            note: match split_tracepoint {
                Some(tp) => format!("huge_memory:{tp} exists but this version does not use it"),
                None => "none on this kernel (huge_memory:* has collapse events only)".into(),
            },
        },
        Hook {
            name: format!("fentry {}", FUNCTIONS[0].1),
            available: env.allow_tp_btf && has_fn_btf(FUNCTIONS[0].1),
            used: false,
            required: false,
            note: "tried first at run time; some kernels refuse fentry (EPERM)".into(),
        },
        Hook {
            name: format!("kprobe {}", FUNCTIONS[0].1),
            available: kprobes && in_kallsyms,
            used: false,
            required: false,
            note: match (kprobes, in_kallsyms) {
                (true, true) => "tried second at run time".into(),
                (false, _) => "this kernel has no kprobes".into(),
                (true, false) => format!("no {} in /proc/kallsyms (a kernel without THP)", FUNCTIONS[0].1),
            },
        },
        Hook {
            name: "/proc/vmstat thp_split_*".into(),
            available: vmstat,
            used: vmstat,
            required: true,
            note: if vmstat {
                "fallback: the kernel's global counters, sampled per interval (no per-process detail)".into()
            } else {
                // PREEMPT_RT kernels are built without THP.
                "no transparent huge pages on this kernel (no thp_split_* in /proc/vmstat)".into()
            },
        },
    ]
}
