//! The dirty family's part of a report: its text section and how its rows
//! of interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use super::STACKS_KEPT;
use crate::{
    model::{Dirty, DirtyRow, Report, merge_latency, us_to_ns},
    render::parts::{or_root, plural, render_log2, render_stack, us},
};

/// The summary line: pauses, and the writer paused longest.
pub fn summary(report: &Report) -> String {
    let rows = report.dirty.as_ref().map(|d| d.rows.as_slice()).unwrap_or_default();
    let pauses: u64 = rows.iter().map(|r| r.pauses).sum();
    let Some(top) = rows.first().filter(|_| pauses > 0) else {
        return "no writer was throttled".into();
    };
    let total_ms = rows.iter().map(|r| r.total_ms).fold(0.0, |a, b| a + b);
    format!(
        "{pauses} throttling {}, {total_ms:.1} ms; most: {} ({}) writing to {}, {:.1} ms",
        plural(pauses, "pause"),
        top.pid,
        top.comm,
        top.device,
        top.total_ms
    )
}

/// Its section of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    let Some(dirty) = &report.dirty else {
        return;
    };
    let pauses: u64 = dirty.rows.iter().map(|r| r.pauses).sum();
    let total_ms = dirty.rows.iter().map(|r| r.total_ms).fold(0.0, |a, b| a + b);
    let _ = writeln!(
        out,
        "\nDirty-page throttling: {pauses} pauses, {total_ms:.1} ms in total (the pauses balance_dirty_pages chose)"
    );
    for row in &dirty.rows {
        let _ = writeln!(
            out,
            "\n  {} ({}) writing to {} in {}: {} pauses, {:.1} ms, longest {} us; {} times let through",
            row.pid,
            row.comm,
            row.device,
            or_root(&row.cgroup),
            row.pauses,
            row.total_ms,
            us(row.latency_us.max),
            row.unpaused
        );
        if row.pauses == 0 {
            continue;
        }
        let s = &row.at_longest;
        let _ = writeln!(
            out,
            "     at the longest: {} dirty pages of a {} limit; this device's writeback {} dirty, setpoint {}",
            s.dirty, s.limit, s.wb_dirty, s.wb_setpoint
        );
        render_log2(out, &row.histogram);
        if let Some(top) = row.stacks.first() {
            let _ = writeln!(out, "     most paused stack ({} pauses, {:.1} ms):", top.count, top.total_ms);
            render_stack(out, "kernel", &top.kernel_stack);
            let title =
                crate::families::alloc::report::user_stack_title("user", top.user_stack_unwind.as_deref());
            render_stack(out, &title, &top.user_stack);
        }
    }
}

/// Longest total pause first.
pub fn sort_rows(rows: &mut [DirtyRow]) {
    rows.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms).then(a.pid.cmp(&b.pid)));
}

/// Adds one interval's rows into the whole run's (replaying a capture).
pub fn merge(whole: &mut Report, report: &Report) {
    let Some(dirty) = &report.dirty else {
        return;
    };
    let into = whole.dirty.get_or_insert_with(Dirty::default);
    for row in &dirty.rows {
        match into
            .rows
            .iter_mut()
            .find(|r| (r.pid, &r.device, &r.cgroup) == (row.pid, &row.device, &row.cgroup))
        {
            Some(r) => merge_row(r, row),
            None => into.rows.push(row.clone()),
        }
    }
}

/// Orders the merged rows as a live run does.
pub fn finish_merge(whole: &mut Report) {
    if let Some(dirty) = &mut whole.dirty {
        sort_rows(&mut dirty.rows);
        for row in &mut dirty.rows {
            row.stacks.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
            row.stacks.truncate(STACKS_KEPT);
        }
    }
}

fn merge_row(into: &mut DirtyRow, row: &DirtyRow) {
    if row.latency_us.max > into.latency_us.max {
        into.at_longest = row.at_longest;
    }
    let sum_ns = us_to_ns((into.total_ms + row.total_ms) * 1000.0);
    merge_latency((&mut into.latency_us, &mut into.histogram), (&row.latency_us, &row.histogram), sum_ns);
    into.pauses += row.pauses;
    into.unpaused += row.unpaused;
    into.total_ms += row.total_ms;
    into.comm.clone_from(&row.comm);
    for s in &row.stacks {
        match into
            .stacks
            .iter_mut()
            .find(|t| t.kernel_stack == s.kernel_stack && t.user_stack == s.user_stack)
        {
            Some(t) => {
                t.count += s.count;
                t.total_ms += s.total_ms;
            }
            None => into.stacks.push(s.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::LatencyHist;

    use super::*;
    use crate::model::{Percentiles, buckets_of};

    fn row(pid: u32, pauses_ms: &[u64]) -> DirtyRow {
        let mut h = LatencyHist::zeroed();
        for ms in pauses_ms {
            h.record(ms * 1_000_000);
        }
        DirtyRow {
            pid,
            comm: "dd".into(),
            device: "loop0 (7:0)".into(),
            pauses: h.samples,
            total_ms: h.sum_ns as f64 / 1e6,
            latency_us: Percentiles::of(&h),
            histogram: buckets_of(&h),
            ..DirtyRow::default()
        }
    }

    #[test]
    fn intervals_add_up_and_render() {
        let interval = |rows| Report { dirty: Some(Dirty { rows }), ..Report::default() };
        let mut whole = Report::default();
        merge(&mut whole, &interval(vec![row(7, &[4, 8])]));
        merge(&mut whole, &interval(vec![row(7, &[12]), row(9, &[40])]));
        finish_merge(&mut whole);
        let rows = &whole.dirty.as_ref().unwrap().rows;
        assert_eq!(rows.iter().map(|r| (r.pid, r.pauses)).collect::<Vec<_>>(), [(9, 1), (7, 3)]);
        assert!((rows[1].total_ms - 24.0).abs() < 1e-9);
        assert_eq!(rows[1].histogram.iter().map(|b| b.count).sum::<u64>(), 3);
        let mut text = String::new();
        render_text(&mut text, &whole);
        assert!(text.contains("Dirty-page throttling: 4 pauses, 64.0 ms in total"), "{text}");
        assert!(text.contains("7 (dd) writing to loop0 (7:0)"), "{text}");
    }

    #[test]
    fn a_report_without_the_family_renders_nothing() {
        let mut text = String::new();
        render_text(&mut text, &Report::default());
        assert!(text.is_empty());
    }
}
