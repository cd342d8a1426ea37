//! Text for terminals, in the form engineers know from biolatency: log2
//! ranges, counts and bars, plus percentiles from the fine histogram.

use std::fmt::Write as _;

use crate::{
    model::{MemoryState, Report, SystemContext, TimelinePoint},
    render::parts::human_bytes,
};

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let w = &report.window;
    match w.interval {
        Some(index) => {
            let _ = writeln!(
                out,
                "--- interval {} ({:.1}s - {:.1}s) ---",
                index + 1,
                w.offset_s,
                w.offset_s + w.duration_s
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{} {} on {} (Linux {}), {:.1}s traced",
                report.tool, report.version, report.host.hostname, report.host.kernel_release, w.duration_s
            );
            for f in &report.families {
                let detail = if f.detail.is_empty() { String::new() } else { format!(" ({})", f.detail) };
                let _ = writeln!(out, "  {:<8} {:<11} {}{}", f.family, f.state, f.hook, detail);
            }
            if !report.filter.is_empty() {
                let _ = writeln!(
                    out,
                    "  filter   {} (memory families: only these tasks; block: requests they issued)",
                    report.filter.join(" ")
                );
            }
            if let Some(system) = &report.system {
                render_system(&mut out, system);
            }
            if let Some(t) = &report.trigger {
                let _ = writeln!(out, "  trigger  {} at {:.1}s: {}", t.trigger, t.at_s, t.what);
            }
            render_summary(&mut out, report);
        }
    }
    for family in crate::families::REGISTRY {
        if report.family(family.name).is_some_and(|f| f.state == "traced") {
            (family.render_text)(&mut out, report);
        }
    }
    if report.window.interval.is_none() && report.timeline.len() > 1 {
        render_timeline(&mut out, &report.timeline, report.trigger.as_ref().map(|t| t.at_s));
    }
    render_lost(&mut out, report);
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// What happened, a line per traced family (details follow in its
/// section), and memory pressure as the kernel measured it beside what
/// tracer timed.
fn render_summary(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nSummary");
    for family in crate::families::REGISTRY {
        if report.family(family.name).is_some_and(|f| f.state == "traced") {
            let _ = writeln!(out, "  {:<8} {}", family.name, (family.summary)(report));
        }
    }
    if let Some(line) = pressure_line(report) {
        let _ = writeln!(out, "  {:<8} {line}", "pressure");
    }
}

/// PSI memory stall over the run against the reclaim and compaction
/// stalls tracer timed (PSI counts wall time with any task stalled; the
/// traced stalls add up per task, so overlapping stalls can exceed it).
/// With `--cgroup` on cgroup v2, the cgroup's own PSI, which is what the
/// traced (filtered) stalls compare with.
fn pressure_line(report: &Report) -> Option<String> {
    let system = report.system.as_ref()?;
    let end_state = system.end.as_ref()?;
    let (scope, start, end) = match (&system.start.psi_cgroup, &end_state.psi_cgroup) {
        (Some(a), Some(b)) if a.cgroup == b.cgroup => (format!(" in {}", a.cgroup), a.totals, b.totals),
        _ => (String::new(), system.start.psi_memory?, end_state.psi_memory?),
    };
    let some_ms = end.some_us.saturating_sub(start.some_us) as f64 / 1000.0;
    let full_ms = end.full_us.saturating_sub(start.full_us) as f64 / 1000.0;
    let mut line = format!("PSI memory{scope}: some {some_ms:.1} ms, full {full_ms:.1} ms over the run");
    if report.family("reclaim").is_some_and(|f| f.state == "traced") && some_ms > 0.0 {
        let traced = report.stall_rows().map(|r| r.total_ms).fold(0.0, |a, b| a + b);
        let _ = write!(
            line,
            "; traced reclaim and compaction {traced:.1} ms ({:.0}% of some{})",
            traced / some_ms * 100.0,
            // PSI counts a millisecond once however many tasks stall in it.
            if traced > some_ms * 1.05 { ": several tasks stalled at once" } else { "" }
        );
        let vm = |name: &str| {
            let (a, b) = (system.start.vmstat.get(name), end_vmstat(report, name));
            b.unwrap_or(0).saturating_sub(a.copied().unwrap_or(0))
        };
        let refaults = vm("workingset_refault_anon") + vm("workingset_refault_file");
        if some_ms >= 100.0 && traced < some_ms / 2.0 {
            let _ = write!(
                line,
                "; the rest is not reclaim tracer timed: refaults (thrashing: {refaults} in the run), \
                 swap-in or throttling"
            );
        }
    }
    Some(line)
}

fn end_vmstat(report: &Report, name: &str) -> Option<u64> {
    report.system.as_ref()?.end.as_ref()?.vmstat.get(name).copied()
}

/// Two lines of the system context; JSON has all of it.
fn render_system(out: &mut String, system: &SystemContext) {
    let setting = |name: &str| system.settings.get(name).map_or("?", String::as_str);
    let nodes = if system.numa_nodes == 1 {
        "1 NUMA node".to_string()
    } else {
        format!("{} NUMA nodes", system.numa_nodes)
    };
    let _ = writeln!(
        out,
        "  system   {} {}, {} CPUs ({}), {} in {nodes}, THP {} (defrag {}), zone_reclaim_mode {}",
        system.kernel.machine,
        system.kernel.version,
        system.cpus.online,
        if system.cpus.model.is_empty() { "?" } else { &system.cpus.model },
        human_bytes(system.memory_total_kb * 1024),
        setting("transparent_hugepage.enabled"),
        setting("transparent_hugepage.defrag"),
        setting("vm.zone_reclaim_mode"),
    );
    let available = |state: &MemoryState| {
        state.meminfo.get("MemAvailable").map_or_else(|| "?".to_string(), |kb| human_bytes(kb * 1024))
    };
    let _ = match &system.end {
        Some(end) => writeln!(
            out,
            "  memory   available {} at the start, {} at the end",
            available(&system.start),
            available(end)
        ),
        None => writeln!(out, "  memory   available {} at the start", available(&system.start)),
    };
}

/// `trigger_at`: the end of the interval a `watch` trigger fired in, marked.
fn render_timeline(out: &mut String, points: &[TimelinePoint], trigger_at: Option<f64>) {
    let _ = writeln!(out, "\nTime line (per interval; stalls as count/ms)");
    let disks = TimelinePoint::busy_disks(points);
    let header = points.first().map(|p| p.columns(&disks)).unwrap_or_default();
    let _ = writeln!(out, "{}", timeline_header(&header));
    for p in points {
        let row = timeline_row(&p.columns(&disks));
        let fired = trigger_at.is_some_and(|at| at > p.offset_s && at <= p.offset_s + p.duration_s + 1e-6);
        let _ = writeln!(out, "{row}{}", if fired { "  <- trigger" } else { "" });
    }
}

/// The time line's header line for these columns.
pub fn timeline_header(columns: &[(String, usize, String)]) -> String {
    let cells: Vec<String> = columns.iter().map(|(h, w, _)| format!("{h:>w$}")).collect();
    format!("  {}", cells.join(" "))
}

/// One time-line row, aligned under [`timeline_header`].
pub fn timeline_row(columns: &[(String, usize, String)]) -> String {
    let cells: Vec<String> = columns.iter().map(|(_, w, v)| format!("{v:>w$}")).collect();
    format!("  {}", cells.join(" "))
}

fn render_lost(out: &mut String, report: &Report) {
    if report.lost_events == 0 {
        let _ = writeln!(out, "\nlost events: 0");
        return;
    }
    let detail: Vec<String> =
        report.lost.iter().filter(|l| l.count > 0).map(|l| format!("{} {}", l.count, l.reason)).collect();
    let _ = writeln!(out, "\nlost events: {} ({})", report.lost_events, detail.join(", "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CgroupPsi, FamilyStatus, MemoryState, PsiTotals, StallRow, SystemContext};

    fn state(some_us: u64, cgroup_some_us: Option<u64>) -> MemoryState {
        MemoryState {
            psi_memory: Some(PsiTotals { some_us, full_us: some_us / 2 }),
            psi_cgroup: cgroup_some_us
                .map(|us| CgroupPsi { cgroup: "/db".into(), totals: PsiTotals { some_us: us, full_us: 0 } }),
            ..MemoryState::default()
        }
    }

    fn report(start: MemoryState, end: MemoryState) -> Report {
        Report {
            families: vec![FamilyStatus {
                family: "reclaim".into(),
                state: "traced".into(),
                hook: String::new(),
                detail: String::new(),
            }],
            reclaim: vec![StallRow { kind: "memcg".into(), count: 3, total_ms: 30.0, ..StallRow::default() }],
            system: Some(SystemContext { start, end: Some(end), ..SystemContext::default() }),
            ..Report::default()
        }
    }

    #[test]
    fn the_pressure_line_compares_with_the_cgroups_own_psi_where_it_has_one() {
        let system_wide = report(state(1_000_000, None), state(1_200_000, None));
        assert_eq!(
            pressure_line(&system_wide).unwrap(),
            "PSI memory: some 200.0 ms, full 100.0 ms over the run; traced reclaim and compaction 30.0 ms (15% of \
             some); the rest is not reclaim tracer timed: refaults (thrashing: 0 in the run), swap-in or throttling"
        );
        let cgroup = report(state(1_000_000, Some(5_000)), state(1_200_000, Some(45_000)));
        assert_eq!(
            pressure_line(&cgroup).unwrap(),
            "PSI memory in /db: some 40.0 ms, full 0.0 ms over the run; traced reclaim and compaction 30.0 ms (75% \
             of some)"
        );
        let mut overlapping = report(state(1_000_000, None), state(1_020_000, None));
        overlapping.reclaim[0].total_ms = 39.0;
        assert_eq!(
            pressure_line(&overlapping).unwrap(),
            "PSI memory: some 20.0 ms, full 10.0 ms over the run; traced reclaim and compaction 39.0 ms (195% of \
             some: several tasks stalled at once)"
        );
    }
}
