//! The thp family's part of a report: its text section and how its rows of
//! interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use crate::model::{Report, Thp, ThpProcess, add_named_counts};

/// The summary line.
pub fn summary(report: &Report) -> String {
    match &report.thp {
        Some(thp) => format!(
            "{} PMD {} ({})",
            thp.splits,
            crate::render::parts::plural(thp.splits, "split"),
            thp.method
        ),
        None => "no THP splits".into(),
    }
}

/// Its section of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    if let Some(thp) = &report.thp {
        let _ = writeln!(out, "\nTHP splits: {} PMD splits (method: {})", thp.splits, thp.method);
        let counters: Vec<String> = thp.counters.iter().map(|c| format!("{} {}", c.name, c.count)).collect();
        let _ = writeln!(out, "  {}", counters.join(", "));
        for p in &thp.processes {
            let _ = writeln!(
                out,
                "  {} ({}): {} PMD splits, {} page splits",
                p.pid, p.comm, p.pmd_splits, p.page_splits
            );
        }
        let _ = writeln!(out, "  note: {}", thp.note);
    }
}

/// Adds one interval's rows into the whole run's (replaying a capture).
pub fn merge(whole: &mut Report, report: &Report) {
    if let Some(thp) = &report.thp {
        match &mut whole.thp {
            None => whole.thp = Some(thp.clone()),
            Some(into) => merge_thp(into, thp),
        }
    }
}

/// Processes with the most splits first.
pub fn finish_merge(whole: &mut Report) {
    if let Some(thp) = &mut whole.thp {
        thp.processes.sort_by_key(|p| std::cmp::Reverse(p.pmd_splits + p.page_splits));
    }
}

fn merge_thp(into: &mut Thp, other: &Thp) {
    into.method = other.method.clone();
    into.note = other.note.clone();
    into.splits += other.splits;
    add_named_counts(&mut into.counters, &other.counters);
    for p in &other.processes {
        match into.processes.iter_mut().find(|q| q.pid == p.pid) {
            Some(q) => merge_thp_process(q, p),
            None => into.processes.push(p.clone()),
        }
    }
}

fn merge_thp_process(into: &mut ThpProcess, other: &ThpProcess) {
    into.pmd_splits += other.pmd_splits;
    into.page_splits += other.page_splits;
    if into.kernel_stack.is_empty() {
        into.kernel_stack = other.kernel_stack.clone();
    }
}
