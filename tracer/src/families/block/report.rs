//! The block family's part of a report: its text section and how its rows
//! of interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use super::{SLOW_IOS_KEPT, sort_rows};
use crate::{
    model::{BlockRow, Report, SlowIo, merge_latency, timed, us_to_ns},
    render::parts::{human_bytes, percentiles_line, plural, render_log2, us},
};

/// The summary line: the slowest disk and the worst interval.
pub fn summary(report: &Report) -> String {
    let requests: u64 = report.block.iter().map(|r| r.count).sum();
    let Some(worst) = report
        .block
        .iter()
        .filter(|r| r.count > 0)
        .max_by(|a, b| a.latency_us.p99.total_cmp(&b.latency_us.p99))
    else {
        return "no block requests completed".into();
    };
    let mut line = format!(
        "{requests} {}; slowest: {} {} p99 {} us, max {} us",
        plural(requests, "request"),
        worst.device,
        worst.op,
        us(worst.latency_us.p99),
        us(worst.latency_us.max)
    );
    if let Some(p) = report.timeline.iter().max_by(|a, b| a.block_p99_us.total_cmp(&b.block_p99_us))
        && report.timeline.len() > 1
    {
        let _ = write!(line, "; worst interval at {:.0}s (p99 {} us)", p.offset_s, us(p.block_p99_us));
    }
    if !report.slow_ios.is_empty() {
        let _ =
            write!(line, "; {} slow requests listed", report.slow_ios.len() as u64 + report.slow_ios_dropped);
    }
    line
}

/// Its sections of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    render_block(out, &report.block);
    render_slow_ios(out, report);
}

fn render_block(out: &mut String, rows: &[BlockRow]) {
    let _ = writeln!(out, "\nBlock I/O latency");
    if rows.is_empty() {
        let _ = writeln!(out, "  no block requests completed");
        return;
    }
    for row in rows {
        let _ = writeln!(
            out,
            "\n{} ({}) {}: {} {}, {}, {} {}{}",
            row.device,
            row.dev,
            row.op,
            row.count,
            plural(row.count, "request"),
            human_bytes(row.bytes),
            row.errors,
            plural(row.errors, "error"),
            if row.untimed > 0 {
                format!(", {} untimed (never issued: empty flush writes, or in flight at start)", row.untimed)
            } else {
                String::new()
            }
        );
        render_log2(out, &row.histogram);
        let l = &row.latency_us;
        let _ = writeln!(
            out,
            "     {}  (percentiles within {:.1}%)",
            percentiles_line(l),
            l.relative_error * 100.0
        );
    }
}

fn render_slow_ios(out: &mut String, report: &Report) {
    if report.slow_ios.is_empty() {
        return;
    }
    let more = report.slow_ios.len().saturating_sub(10) as u64 + report.slow_ios_dropped;
    let _ = writeln!(
        out,
        "\nSlowest requests{}",
        if more > 0 { format!(" (10 shown, {more} more)") } else { String::new() }
    );
    let _ = writeln!(
        out,
        "  {:>9} {:>10} {:<10} {:<7} {:>8} {:>12}  process",
        "at (s)", "usecs", "device", "op", "bytes", "sector"
    );
    for io in report.slow_ios.iter().take(10) {
        let _ = writeln!(
            out,
            "  {:>9.3} {:>10} {:<10} {:<7} {:>8} {:>12}  {} ({})",
            io.at_s,
            us(io.latency_us),
            io.device,
            io.op,
            io.bytes,
            io.sector.map_or_else(|| "-".to_string(), |s| s.to_string()),
            io.pid,
            if io.comm.is_empty() { "?" } else { &io.comm }
        );
    }
}

/// Adds one interval's rows into the whole run's (replaying a capture).
pub fn merge(whole: &mut Report, report: &Report) {
    for row in &report.block {
        match whole.block.iter_mut().find(|r| (&r.device, &r.dev, &r.op) == (&row.device, &row.dev, &row.op))
        {
            Some(into) => merge_block_row(into, row),
            None => whole.block.push(row.clone()),
        }
    }
    whole.slow_ios.extend(report.slow_ios.iter().cloned());
    // Each interval counts the slow requests dropped so far, not since the
    // previous one.
    whole.slow_ios_dropped = whole.slow_ios_dropped.max(report.slow_ios_dropped);
    // Only the slowest are kept in the end: keep the list short on the way.
    if whole.slow_ios.len() > 4 * SLOW_IOS_KEPT {
        whole.slow_ios_trimmed += trim_slow_ios(&mut whole.slow_ios);
    }
}

/// Orders the merged rows as a live run does, and keeps the slowest.
pub fn finish_merge(whole: &mut Report) {
    sort_rows(&mut whole.block);
    whole.slow_ios_dropped +=
        std::mem::take(&mut whole.slow_ios_trimmed) + trim_slow_ios(&mut whole.slow_ios);
}

/// Keeps the slowest [`SLOW_IOS_KEPT`] slow I/Os; returns how many
/// went.
fn trim_slow_ios(slow_ios: &mut Vec<SlowIo>) -> u64 {
    slow_ios.sort_by(|a, b| b.latency_us.total_cmp(&a.latency_us));
    let excess = slow_ios.len().saturating_sub(SLOW_IOS_KEPT);
    slow_ios.truncate(SLOW_IOS_KEPT);
    excess as u64
}

fn merge_block_row(into: &mut BlockRow, row: &BlockRow) {
    into.count += row.count;
    into.bytes += row.bytes;
    into.errors += row.errors;
    into.untimed += row.untimed;
    // Block rows keep a mean, not a total.
    let sum_us = into.latency_us.mean * timed(&into.histogram) as f64
        + row.latency_us.mean * timed(&row.histogram) as f64;
    merge_latency(
        (&mut into.latency_us, &mut into.histogram),
        (&row.latency_us, &row.histogram),
        us_to_ns(sum_us),
    );
}
