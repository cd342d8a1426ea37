//! The reclaim family's part of a report: its text section and how its
//! rows of interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use super::STACKS_KEPT;
use crate::{
    model::{
        Compaction, Kswapd, Report, StallBreakdown, StallRow, StallStack, add_named_counts, merge_latency,
        us_to_ns,
    },
    render::parts::{or_root, percentiles_line, plural, render_log2, render_stack, us},
};

/// The summary line: stall time by kind.
pub fn summary(report: &Report) -> String {
    let rows: Vec<&StallRow> = report.stall_rows().filter(|r| r.count + r.in_flight > 0).collect();
    if rows.is_empty() {
        return "no reclaim or compaction stalls".into();
    }
    let parts: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {}, {:.1} ms (longest {} us){}",
                kind_title(&r.kind),
                r.count,
                plural(r.count, "stall"),
                r.total_ms,
                us(r.latency_us.max),
                in_flight_note(r)
            )
        })
        .collect();
    parts.join("; ")
}

/// ", 2 still in progress (the oldest 1.2 s so far)", or nothing.
fn in_flight_note(row: &StallRow) -> String {
    if row.in_flight == 0 {
        return String::new();
    }
    format!(
        ", {} still in progress at the end (the oldest {} so far)",
        row.in_flight,
        human_ms(row.in_flight_longest_ms)
    )
}

fn human_ms(ms: f64) -> String {
    if ms >= 1000.0 { format!("{:.1} s", ms / 1000.0) } else { format!("{ms:.1} ms") }
}

fn kind_title(kind: &str) -> &'static str {
    match kind {
        "direct" => "direct reclaim",
        "memcg" => "memory cgroup reclaim",
        _ => "direct compaction",
    }
}

/// Processes of one command in one cgroup: 29 stress workers or OOM-killed
/// restarts of a service stall alike, and read better as one line.
#[derive(Debug, PartialEq)]
pub struct ProcessGroup<'a> {
    pub comm: &'a str,
    pub cgroup: &'a str,
    pub pids: Vec<u32>,
    pub count: u64,
    pub total_ms: f64,
    pub max_us: f64,
}

/// `processes` (busiest first) grouped by command and cgroup, busiest
/// group first.
pub fn group_processes(processes: &[StallBreakdown]) -> Vec<ProcessGroup<'_>> {
    let mut groups: Vec<ProcessGroup<'_>> = Vec::new();
    for p in processes {
        match groups.iter_mut().find(|g| g.comm == p.comm && g.cgroup == p.cgroup) {
            Some(g) => {
                g.pids.push(p.pid);
                g.count += p.count;
                g.total_ms += p.total_ms;
                g.max_us = g.max_us.max(p.latency_us.max);
            }
            None => groups.push(ProcessGroup {
                comm: &p.comm,
                cgroup: &p.cgroup,
                pids: vec![p.pid],
                count: p.count,
                total_ms: p.total_ms,
                max_us: p.latency_us.max,
            }),
        }
    }
    groups.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
    groups
}

/// At most eight pids, then how many in all.
fn pid_list(pids: &[u32]) -> String {
    const SHOWN: usize = 8;
    let shown: Vec<String> = pids.iter().take(SHOWN).map(u32::to_string).collect();
    if pids.len() > SHOWN {
        format!("{}, ... {} in all", shown.join(", "), pids.len())
    } else {
        shown.join(", ")
    }
}

/// Its section of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    render_reclaim(out, report);
}

fn render_reclaim(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nMemory stalls");
    let mut rows: Vec<&StallRow> = report.reclaim.iter().collect();
    if let Some(c) = &report.compaction {
        rows.push(&c.stalls);
    }
    for row in rows {
        let title = match row.kind.as_str() {
            "direct" => "direct reclaim",
            "memcg" => "memory cgroup reclaim",
            _ => "direct compaction",
        };
        let _ = writeln!(
            out,
            "\n{title}: {} stalls, {:.1} ms in total{}{}{}",
            row.count,
            row.total_ms,
            if row.kind == "compaction" {
                String::new()
            } else {
                format!(", {} pages reclaimed", row.nr_reclaimed)
            },
            if row.untimed + row.abandoned > 0 {
                format!(" ({} untimed: began before tracing; {} abandoned)", row.untimed, row.abandoned)
            } else {
                String::new()
            },
            in_flight_note(row)
        );
        if row.count == 0 {
            continue;
        }
        render_log2(out, &row.histogram);
        let _ = writeln!(out, "     {}", percentiles_line(&row.latency_us));
        let _ = writeln!(out, "     top processes:");
        for group in group_processes(&row.processes).iter().take(5) {
            let cgroup =
                if group.cgroup.is_empty() { String::new() } else { format!(" in {}", group.cgroup) };
            let who = match group.pids.as_slice() {
                [pid] => format!("{pid:>7} {:<16}", group.comm),
                pids => format!("{:>5} x {:<16}", pids.len(), group.comm),
            };
            let _ = write!(
                out,
                "       {who}{cgroup}: {} {}, {:.1} ms, max {} us",
                group.count,
                plural(group.count, "stall"),
                group.total_ms,
                us(group.max_us)
            );
            if group.pids.len() > 1 {
                let _ = write!(out, " (pids {})", pid_list(&group.pids));
            }
            out.push('\n');
        }
        if row.cgroups.len() > 1
            || row.cgroups.first().is_some_and(|c| !c.cgroup.is_empty() && c.cgroup != "/")
        {
            let _ = writeln!(out, "     by cgroup:");
            for c in row.cgroups.iter().take(5) {
                let _ = writeln!(
                    out,
                    "       {:<30} {} stalls, {:.1} ms",
                    or_root(&c.cgroup),
                    c.count,
                    c.total_ms
                );
            }
        }
        if let Some(top) = row.stacks.first() {
            let _ = writeln!(
                out,
                "     slowest stack ({} stalls, {:.1} ms, pid {}):",
                top.count, top.total_ms, top.pid
            );
            render_stack(out, "kernel", &top.kernel_stack);
            let title =
                crate::families::alloc::report::user_stack_title("user", top.user_stack_unwind.as_deref());
            render_stack(out, &title, &top.user_stack);
        }
    }
    if let Some(c) = &report.compaction {
        let results: Vec<String> = c.results.iter().map(|r| format!("{} {}", r.name, r.count)).collect();
        let _ = writeln!(
            out,
            "  direct compaction attempts: {}{}",
            c.attempts,
            if results.is_empty() { String::new() } else { format!("; results: {}", results.join(", ")) }
        );
    }
    if let Some(k) = &report.kswapd {
        let _ = writeln!(
            out,
            "  kswapd: {} wakes, {:.1} ms awake, {} wake-up requests",
            k.wakes, k.awake_ms, k.wakeups_requested
        );
    }
    if report.stalls_dropped > 0 {
        let _ = writeln!(
            out,
            "  ({} shortest individual stalls not kept; all are in the counts above)",
            report.stalls_dropped
        );
    }
}

/// Adds one interval's rows into the whole run's (replaying a capture).
pub fn merge(whole: &mut Report, report: &Report) {
    for row in &report.reclaim {
        match whole.reclaim.iter_mut().find(|r| r.kind == row.kind) {
            Some(into) => merge_stall_row(into, row),
            None => whole.reclaim.push(row.clone()),
        }
    }
    if let Some(compaction) = &report.compaction {
        match &mut whole.compaction {
            None => whole.compaction = Some(compaction.clone()),
            Some(into) => merge_compaction(into, compaction),
        }
    }
    if let Some(kswapd) = &report.kswapd {
        let into = whole.kswapd.get_or_insert_with(Kswapd::default);
        into.wakes += kswapd.wakes;
        into.sleeps += kswapd.sleeps;
        into.awake_ms += kswapd.awake_ms;
        into.wakeups_requested += kswapd.wakeups_requested;
    }
    whole.stalls.extend(report.stalls.iter().cloned());
    // Counted since the start of the run, like slow_ios_dropped.
    whole.stalls_dropped = whole.stalls_dropped.max(report.stalls_dropped);
}

/// Breakdowns ordered by time stalled, the stacks kept as a live run keeps
/// them.
pub fn finish_merge(whole: &mut Report) {
    let compaction = whole.compaction.iter_mut().map(|c| &mut c.stalls);
    for row in whole.reclaim.iter_mut().chain(compaction) {
        row.processes.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        row.cgroups.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        row.stacks.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        row.stacks.truncate(STACKS_KEPT);
    }
}

fn merge_stall_row(into: &mut StallRow, row: &StallRow) {
    let sum_ns = us_to_ns((into.total_ms + row.total_ms) * 1000.0);
    into.count += row.count;
    into.total_ms += row.total_ms;
    merge_latency((&mut into.latency_us, &mut into.histogram), (&row.latency_us, &row.histogram), sum_ns);
    into.nr_reclaimed += row.nr_reclaimed;
    into.untimed += row.untimed;
    into.abandoned += row.abandoned;
    // A state at the end of a window: the later window's holds.
    into.in_flight = row.in_flight;
    into.in_flight_longest_ms = row.in_flight_longest_ms;
    for p in &row.processes {
        match into.processes.iter_mut().find(|q| (q.pid, &q.cgroup) == (p.pid, &p.cgroup)) {
            Some(q) => merge_breakdown(q, p),
            None => into.processes.push(p.clone()),
        }
    }
    for c in &row.cgroups {
        match into.cgroups.iter_mut().find(|d| d.cgroup == c.cgroup) {
            Some(d) => merge_breakdown(d, c),
            None => into.cgroups.push(c.clone()),
        }
    }
    for s in &row.stacks {
        match into.stacks.iter_mut().find(|t| same_stack(t, s)) {
            Some(t) => {
                t.count += s.count;
                t.total_ms += s.total_ms;
            }
            None => into.stacks.push(s.clone()),
        }
    }
}

fn same_stack(a: &StallStack, b: &StallStack) -> bool {
    a.pid == b.pid && a.kernel_stack == b.kernel_stack && a.user_stack == b.user_stack
}

/// Breakdowns keep no histogram: percentiles become the largest of the
/// two (an upper bound); max and mean stay exact.
fn merge_breakdown(into: &mut StallBreakdown, other: &StallBreakdown) {
    into.count += other.count;
    into.total_ms += other.total_ms;
    into.nr_reclaimed += other.nr_reclaimed;
    if !other.comm.is_empty() {
        into.comm = other.comm.clone();
    }
    let (l, o) = (&mut into.latency_us, &other.latency_us);
    l.p50 = l.p50.max(o.p50);
    l.p90 = l.p90.max(o.p90);
    l.p99 = l.p99.max(o.p99);
    l.p999 = l.p999.max(o.p999);
    l.max = l.max.max(o.max);
    l.mean = if into.count == 0 { 0.0 } else { into.total_ms * 1000.0 / into.count as f64 };
}

fn merge_compaction(into: &mut Compaction, other: &Compaction) {
    merge_stall_row(&mut into.stalls, &other.stalls);
    into.attempts += other.attempts;
    add_named_counts(&mut into.results, &other.results);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Percentiles;

    fn process(pid: u32, comm: &str, cgroup: &str, count: u64, total_ms: f64, max_us: f64) -> StallBreakdown {
        StallBreakdown {
            pid,
            comm: comm.into(),
            cgroup: cgroup.into(),
            count,
            total_ms,
            latency_us: Percentiles { max: max_us, ..Percentiles::default() },
            nr_reclaimed: 0,
        }
    }

    #[test]
    fn processes_of_one_command_in_one_cgroup_are_one_line() {
        let processes = [
            process(10, "postgres", "/db", 5, 9.0, 4000.0),
            process(11, "stress", "/load", 4, 3.0, 900.0),
            process(12, "stress", "/load", 6, 4.0, 1500.0),
            process(13, "stress", "/other", 1, 0.5, 500.0),
            process(14, "stress", "/load", 2, 2.5, 700.0),
        ];
        let groups = group_processes(&processes);
        let summary: Vec<(&str, &str, Vec<u32>, u64)> =
            groups.iter().map(|g| (g.comm, g.cgroup, g.pids.clone(), g.count)).collect();
        assert_eq!(
            summary,
            [
                ("stress", "/load", vec![11, 12, 14], 12),
                ("postgres", "/db", vec![10], 5),
                ("stress", "/other", vec![13], 1)
            ]
        );
        assert_eq!(groups[0].total_ms, 9.5);
        assert_eq!(groups[0].max_us, 1500.0);

        let report = Report {
            reclaim: vec![StallRow {
                kind: "memcg".into(),
                count: 18,
                processes: processes.to_vec(),
                ..StallRow::default()
            }],
            ..Report::default()
        };
        let mut text = String::new();
        render_text(&mut text, &report);
        assert!(
            text.contains(
                "    3 x stress           in /load: 12 stalls, 9.5 ms, max 1500 us (pids 11, 12, 14)"
            ),
            "{text}"
        );
        assert!(text.contains("     10 postgres         in /db: 5 stalls, 9.0 ms, max 4000 us\n"), "{text}");
    }

    #[test]
    fn long_pid_lists_say_how_many_in_all() {
        let pids: Vec<u32> = (100..112).collect();
        assert_eq!(pid_list(&pids), "100, 101, 102, 103, 104, 105, 106, 107, ... 12 in all");
        assert_eq!(pid_list(&[7]), "7");
    }
}
