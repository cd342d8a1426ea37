//! Text for terminals, in the form engineers know from biolatency: log2
//! ranges, counts and bars, plus percentiles from the fine histogram.

use std::fmt::Write as _;

use crate::{
    model::{
        AllocFailure, BlockRow, Bucket, Frame, MemoryState, OomKill, Report, StallRow, SystemContext,
        TimelinePoint, ZoneSnapshot,
    },
    symbolize::frame_label,
};

const BAR_WIDTH: usize = 40;

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
            if let Some(system) = &report.system {
                render_system(&mut out, system);
            }
        }
    }
    if report.family("block").is_some_and(|f| f.state == "traced") {
        render_block(&mut out, &report.block);
        render_slow_ios(&mut out, report);
    }
    if report.family("alloc").is_some_and(|f| f.state == "traced") {
        render_alloc(&mut out, &report.alloc_failures, &report.zone_snapshots);
    }
    if report.family("oom").is_some_and(|f| f.state == "traced") {
        render_oom(&mut out, report);
    }
    if report.family("reclaim").is_some_and(|f| f.state == "traced") {
        render_reclaim(&mut out, report);
    }
    if let (Some(thp), true) = (&report.thp, report.family("thp").is_some_and(|f| f.state == "traced")) {
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
    if report.window.interval.is_none() && report.timeline.len() > 1 {
        render_timeline(&mut out, &report.timeline);
    }
    render_lost(&mut out, report);
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
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

fn render_block(out: &mut String, rows: &[BlockRow]) {
    let _ = writeln!(out, "\nBlock I/O latency");
    if rows.is_empty() {
        let _ = writeln!(out, "  no block requests completed");
        return;
    }
    for row in rows {
        let _ = writeln!(
            out,
            "\n{} ({}) {}: {} requests, {}, {} errors{}",
            row.device,
            row.dev,
            row.op,
            row.count,
            human_bytes(row.bytes),
            row.errors,
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
            "     p50 {}  p90 {}  p99 {}  p99.9 {}  max {} usecs  (percentiles within {:.1}%)",
            us(l.p50),
            us(l.p90),
            us(l.p99),
            us(l.p999),
            us(l.max),
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

/// Collapses fine buckets into biolatency's log2 microsecond slots (slot 0
/// is "0 -> 1", slot k is 2^k -> 2^(k+1)-1), by each bucket's midpoint.
pub fn log2_slots(buckets: &[Bucket]) -> Vec<(u64, u64, u64)> {
    let mut slots = [0u64; 64];
    let mut top = None;
    let mut bottom = None;
    for b in buckets {
        let mid_us = ((b.low_us + b.high_us) / 2.0).floor() as u64;
        let slot = if mid_us < 2 { 0 } else { 63 - mid_us.leading_zeros() as usize };
        slots[slot] += b.count;
        top = top.max(Some(slot));
        bottom = Some(bottom.map_or(slot, |s: usize| s.min(slot)));
    }
    let (Some(bottom), Some(top)) = (bottom, top) else {
        return Vec::new();
    };
    (bottom..=top)
        .map(|slot| {
            let (low, high) = if slot == 0 { (0, 1) } else { (1u64 << slot, (1u64 << (slot + 1)) - 1) };
            (low, high, slots[slot])
        })
        .collect()
}

fn render_log2(out: &mut String, buckets: &[Bucket]) {
    let slots = log2_slots(buckets);
    if slots.is_empty() {
        let _ = writeln!(out, "     (no timed requests)");
        return;
    }
    let peak = slots.iter().map(|s| s.2).max().unwrap_or(1).max(1);
    // Rows are "     {8} -> {8}": the header's columns line up with them.
    let _ = writeln!(out, "     {:>8}{:12} : {:<8} distribution", "usecs", "", "count");
    for (low, high, count) in slots {
        let stars = ((count as u128 * BAR_WIDTH as u128).div_ceil(peak as u128)) as usize;
        let stars = if count == 0 { 0 } else { stars.min(BAR_WIDTH) };
        let _ = writeln!(
            out,
            "     {:>8} -> {:<8} : {:<8} |{:<width$}|",
            low,
            high,
            count,
            "*".repeat(stars),
            width = BAR_WIDTH
        );
    }
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
        render_stack(out, "user stack", &row.user_stack);
    }
    for snapshot in zones {
        let _ =
            writeln!(out, "\n  Free blocks per order at the {} ({:.2}s):", snapshot.reason, snapshot.at_s);
        for zone in &snapshot.zones {
            let orders: Vec<String> = zone.free_blocks.iter().map(u64::to_string).collect();
            let _ = writeln!(out, "     node {} {:<8} {}", zone.node, zone.zone, orders.join(" "));
        }
    }
}

fn render_stack(out: &mut String, title: &str, frames: &[Frame]) {
    if frames.is_empty() {
        return;
    }
    let bare = title.contains("user") && frames.iter().all(|f| f.module.is_none() && f.symbol.is_none());
    if bare {
        // Its memory map is read when the event arrives; a process killed
        // at once (an OOM victim that triggered its own kill) is gone.
        let _ = writeln!(out, "     {title} (the process exited before its memory map could be read):");
    } else {
        let _ = writeln!(out, "     {title}:");
    }
    for frame in frames {
        let _ = writeln!(out, "       {}", frame_label(frame));
    }
}

fn render_oom(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nOOM kills: {}", report.oom_kills.len());
    for kill in &report.oom_kills {
        render_kill(out, kill);
    }
    if let Some(r) = &report.oom_retries {
        let _ = writeln!(
            out,
            "  retries before killing: reclaim_retry_zone {}, compact_retry {}",
            r.reclaim_retry_zone, r.compact_retry
        );
    }
}

fn render_kill(out: &mut String, kill: &OomKill) {
    let kb = |v: u64| human_bytes(v * 1024);
    let limit = match (&kill.limit_cgroup, kill.limit_bytes) {
        (Some(cgroup), Some(limit)) => format!(
            ", limit {} in {cgroup} (usage {})",
            human_bytes(limit),
            human_bytes(kill.usage_bytes.unwrap_or(0))
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\n  at {:.2}s: killed {} ({}) uid {} in {}: {} OOM{limit}",
        kill.at_s,
        kill.victim_pid,
        kill.victim_comm,
        kill.victim_uid,
        or_root(&kill.cgroup),
        kill.scope
    );
    let _ = writeln!(
        out,
        "     victim: total-vm {}, anon-rss {}, file-rss {}, shmem-rss {}, page tables {}, oom_score_adj {}",
        kb(kill.total_vm_kb),
        kb(kill.anon_rss_kb),
        kb(kill.file_rss_kb),
        kb(kill.shmem_rss_kb),
        kb(kill.pgtables_kb),
        kill.oom_score_adj
    );
    let _ = writeln!(
        out,
        "     trigger: {} ({}) in {}",
        kill.trigger_pid,
        kill.trigger_comm,
        or_root(&kill.trigger_cgroup)
    );
    let reaped = match (kill.reap_start_ms, kill.reap_ms) {
        (Some(start), Some(done)) => {
            format!("OOM reaper started after {start:.1} ms, done after {done:.1} ms")
        }
        (Some(start), None) => {
            format!("OOM reaper started after {start:.1} ms, not finished when tracing ended")
        }
        _ => "OOM reaper not seen (the victim freed its memory by exiting, or tracing ended first)".into(),
    };
    let _ = writeln!(out, "     {reaped}");
    render_stack(out, "trigger kernel stack", &kill.trigger_kernel_stack);
    render_stack(out, "trigger user stack", &kill.trigger_user_stack);
}

fn or_root(cgroup: &str) -> &str {
    if cgroup.is_empty() { "(unknown cgroup)" } else { cgroup }
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
            "\n{title}: {} stalls, {:.1} ms in total{}{}",
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
            }
        );
        if row.count == 0 {
            continue;
        }
        render_log2(out, &row.histogram);
        let l = &row.latency_us;
        let _ = writeln!(out, "     p50 {}  p99 {}  max {} usecs", us(l.p50), us(l.p99), us(l.max));
        let _ = writeln!(out, "     top processes:");
        for p in row.processes.iter().take(5) {
            let cgroup = if p.cgroup.is_empty() { String::new() } else { format!(" in {}", p.cgroup) };
            let _ = writeln!(
                out,
                "       {:>7} {:<16}{cgroup}: {} stalls, {:.1} ms, max {} us",
                p.pid,
                p.comm,
                p.count,
                p.total_ms,
                us(p.latency_us.max)
            );
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
            render_stack(out, "user", &top.user_stack);
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

fn render_timeline(out: &mut String, points: &[TimelinePoint]) {
    let _ = writeln!(out, "\nTime line (per interval; stalls as count/ms)");
    let _ = writeln!(
        out,
        "  {:>6} {:>8} {:>8} {:>8} {:>11} {:>11} {:>11} {:>5} {:>6} {:>4}",
        "t(s)", "block io", "p99 us", "max us", "direct", "memcg", "compaction", "thp", "allocf", "oom"
    );
    let stall = |b: &crate::model::StallBrief| format!("{}/{:.0}", b.count, b.total_ms);
    for p in points {
        let _ = writeln!(
            out,
            "  {:>6.1} {:>8} {:>8.1} {:>8.1} {:>11} {:>11} {:>11} {:>5} {:>6} {:>4}",
            p.offset_s,
            p.block_requests,
            p.block_p99_us,
            p.block_max_us,
            stall(&p.direct_reclaim),
            stall(&p.memcg_reclaim),
            stall(&p.compaction),
            p.thp_splits,
            p.alloc_failures,
            p.oom_kills
        );
    }
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

fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(low_us: f64, high_us: f64, count: u64) -> Bucket {
        Bucket { low_us, high_us, count, index: None }
    }

    #[test]
    fn log2_slots_follow_biolatency() {
        let slots = log2_slots(&[b(0.5, 0.53, 3), b(2.0, 2.1, 1), b(5.0, 5.3, 2), b(40.0, 42.0, 7)]);
        assert_eq!(slots.first(), Some(&(0, 1, 3)));
        assert_eq!(slots[1], (2, 3, 1));
        assert_eq!(slots[2], (4, 7, 2));
        assert_eq!(slots.last(), Some(&(32, 63, 7)));
        assert_eq!(slots.iter().map(|s| s.2).sum::<u64>(), 13);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
