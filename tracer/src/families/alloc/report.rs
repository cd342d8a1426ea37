//! The alloc family's part of a report: its text section and how its rows
//! of interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use crate::{
    model::{AllocFailure, Report, ZoneSnapshot},
    render::parts::{plural, render_stack},
};

/// The summary line: how many failures, of which orders, first when.
pub fn summary(report: &Report) -> String {
    let rows = &report.alloc_failures;
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let Some(first) = rows.iter().min_by(|a, b| a.first_seen_s.total_cmp(&b.first_seen_s)) else {
        return "no page allocation failures".into();
    };
    let (low, high) = rows.iter().fold((u32::MAX, 0), |(l, h), r| (l.min(r.order), h.max(r.order)));
    let orders = if low == high { format!("order {low}") } else { format!("orders {low}-{high}") };
    format!(
        "{total} page allocation {} ({orders}, {} {}), first at {:.1}s by {} ({})",
        plural(total, "failure"),
        rows.len(),
        plural(rows.len() as u64, "stack"),
        first.first_seen_s,
        first.pid,
        first.comm
    )
}

/// Its section of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    render_alloc(out, &report.alloc_failures, &report.zone_snapshots);
}

fn render_alloc(out: &mut String, rows: &[AllocFailure], zones: &[ZoneSnapshot]) {
    let total: u64 = rows.iter().map(|r| r.count).sum();
    let _ = writeln!(out, "\nPage allocation failures: {total}");
    for row in rows {
        let _ = writeln!(out, "\n  {} x order-{} {} ({})", row.count, row.order, row.gfp, row.migratetype);
        let _ = writeln!(
            out,
            "     {}",
            if row.can_reclaim {
                "could reclaim (__GFP_DIRECT_RECLAIM) and still failed"
            } else {
                "atomic: no direct reclaim allowed (expected to fail under pressure)"
            }
        );
        let cgroup = if row.cgroup.is_empty() { String::new() } else { format!(" in {}", row.cgroup) };
        let _ = writeln!(
            out,
            "     process {} ({}){cgroup}, first at {:.2}s, last at {:.2}s",
            row.pid, row.comm, row.first_seen_s, row.last_seen_s
        );
        render_stack(out, "kernel stack", &row.kernel_stack);
        render_stack(out, &user_stack_title("user stack", row.user_stack_unwind.as_deref()), &row.user_stack);
    }
    for snapshot in zones {
        let _ =
            writeln!(out, "\n  Free blocks per order at the {} ({:.2}s):", snapshot.reason, snapshot.at_s);
        // Columns as wide as their widest count, under an order heading.
        let orders = snapshot.zones.iter().map(|z| z.free_blocks.len()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..orders)
            .map(|o| {
                let widest =
                    snapshot.zones.iter().filter_map(|z| z.free_blocks.get(o)).map(|n| n.to_string().len());
                widest.max().unwrap_or(1).max(o.to_string().len())
            })
            .collect();
        let heading: Vec<String> = widths.iter().enumerate().map(|(o, w)| format!("{o:>w$}")).collect();
        let _ = writeln!(out, "     {:<15} {}", "order", heading.join(" "));
        for zone in &snapshot.zones {
            let counts: Vec<String> =
                zone.free_blocks.iter().zip(&widths).map(|(n, w)| format!("{n:>w$}")).collect();
            let _ = writeln!(out, "     node {} {:<8} {}", zone.node, zone.zone, counts.join(" "));
        }
    }
}

/// `user stack (dwarf)`: a user stack's title says how it was unwound,
/// when the capture knows.
pub fn user_stack_title(title: &str, unwind: Option<&str>) -> String {
    match unwind {
        Some(how) => format!("{title} ({how})"),
        None => title.to_string(),
    }
}

/// Adds one interval's rows into the whole run's (replaying a capture).
pub fn merge(whole: &mut Report, report: &Report) {
    for failure in &report.alloc_failures {
        match whole.alloc_failures.iter_mut().find(|f| same_failure(f, failure)) {
            Some(into) => merge_failure(into, failure),
            None => whole.alloc_failures.push(failure.clone()),
        }
    }
    // Each interval carries every snapshot taken so far.
    for snapshot in &report.zone_snapshots {
        if !whole.zone_snapshots.contains(snapshot) {
            whole.zone_snapshots.push(snapshot.clone());
        }
    }
}

/// Most frequent failures first, as a live run orders them.
pub fn finish_merge(whole: &mut Report) {
    whole
        .alloc_failures
        .sort_by(|a, b| b.count.cmp(&a.count).then(a.first_seen_s.total_cmp(&b.first_seen_s)));
}

fn same_failure(a: &AllocFailure, b: &AllocFailure) -> bool {
    (a.order, a.gfp_flags, a.pid) == (b.order, b.gfp_flags, b.pid)
        && a.kernel_stack == b.kernel_stack
        && a.user_stack == b.user_stack
}

fn merge_failure(into: &mut AllocFailure, failure: &AllocFailure) {
    into.count += failure.count;
    into.first_seen_s = into.first_seen_s.min(failure.first_seen_s);
    if failure.last_seen_s >= into.last_seen_s {
        // The thread that failed last names the row, as in the kernel's.
        into.last_seen_s = failure.last_seen_s;
        into.comm = failure.comm.clone();
    }
    if into.cgroup.is_empty() {
        into.cgroup = failure.cgroup.clone();
    }
}
