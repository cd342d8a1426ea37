//! One whole-run report from interval reports, for a capture whose final
//! report never got written (the tracer was killed). Pure.
//!
//! Interval reports add up to the run: counts add, histograms merge (and
//! percentiles are computed again from the merged buckets), events
//! concatenate. What intervals cannot give back exactly: a latency maximum
//! is the largest interval maximum (itself a bucket bound, see
//! docs/json.md), and the percentiles of per-process and per-cgroup
//! breakdowns, which keep no histogram, are the largest of the intervals'
//! (an upper bound).

use crate::{
    families::{block, reclaim::STACKS_KEPT},
    model::{
        AllocFailure, BlockRow, Bucket, Compaction, Kswapd, LostCount, NamedCount, OomRetries, Percentiles,
        Report, SlowIo, StallBreakdown, StallRow, StallStack, Thp, ThpProcess, TimelinePoint, Window,
        buckets_of, hist_of,
    },
};

/// The whole run that `intervals` (in order) cover. `tool`, `version`,
/// `host` and `families` are the last interval's; `system` is left for
/// the caller.
pub fn merge_intervals(intervals: &[Report]) -> Report {
    let mut merger = Merger::default();
    for report in intervals {
        merger.add(report);
    }
    merger.finish()
}

/// [`merge_intervals`] one interval at a time, so that a capture streams
/// through it: what it keeps is the merged report, not the intervals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merger {
    whole: Report,
    /// Wall clock of the run's start, from the first interval.
    start_unix_s: Option<f64>,
    intervals: usize,
    /// Slow I/Os trimmed on the way (counted as dropped at the end).
    trimmed_slow_ios: u64,
}

impl Merger {
    pub fn add(&mut self, report: &Report) {
        let start = *self.start_unix_s.get_or_insert(report.window.start_unix_s - report.window.offset_s);
        let whole = &mut self.whole;
        whole.tool.clone_from(&report.tool);
        whole.version.clone_from(&report.version);
        whole.host.clone_from(&report.host);
        whole.families.clone_from(&report.families);
        whole.window = Window {
            start_unix_s: start,
            offset_s: 0.0,
            duration_s: report.window.offset_s + report.window.duration_s,
            interval: None,
        };
        merge_into(whole, report);
        whole.timeline.push(TimelinePoint::of(report));
        // Only the slowest are kept in the end: keep the list short on the way.
        if whole.slow_ios.len() > 4 * block::SLOW_IOS_KEPT {
            self.trimmed_slow_ios += trim_slow_ios(&mut whole.slow_ios);
        }
        self.intervals += 1;
    }

    /// How many intervals were added.
    pub fn intervals(&self) -> usize {
        self.intervals
    }

    pub fn finish(self) -> Report {
        if self.intervals == 0 {
            return Report::default();
        }
        let mut whole = self.whole;
        block::sort_rows(&mut whole.block);
        whole.slow_ios_dropped += self.trimmed_slow_ios + trim_slow_ios(&mut whole.slow_ios);
        whole
            .alloc_failures
            .sort_by(|a, b| b.count.cmp(&a.count).then(a.first_seen_s.total_cmp(&b.first_seen_s)));
        let compaction = whole.compaction.iter_mut().map(|c| &mut c.stalls);
        for row in whole.reclaim.iter_mut().chain(compaction) {
            row.processes.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
            row.cgroups.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
            row.stacks.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
            row.stacks.truncate(STACKS_KEPT);
        }
        if let Some(thp) = &mut whole.thp {
            thp.processes.sort_by_key(|p| std::cmp::Reverse(p.pmd_splits + p.page_splits));
        }
        whole.lost_events = whole.lost.iter().map(|l| l.count).sum();
        whole
    }
}

/// Keeps the slowest [`block::SLOW_IOS_KEPT`] slow I/Os; returns how many
/// went.
fn trim_slow_ios(slow_ios: &mut Vec<SlowIo>) -> u64 {
    slow_ios.sort_by(|a, b| b.latency_us.total_cmp(&a.latency_us));
    let excess = slow_ios.len().saturating_sub(block::SLOW_IOS_KEPT);
    slow_ios.truncate(block::SLOW_IOS_KEPT);
    excess as u64
}

fn merge_into(whole: &mut Report, report: &Report) {
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
    whole.oom_kills.extend(report.oom_kills.iter().cloned());
    if let Some(retries) = &report.oom_retries {
        let into = whole.oom_retries.get_or_insert_with(OomRetries::default);
        into.reclaim_retry_zone += retries.reclaim_retry_zone;
        into.compact_retry += retries.compact_retry;
    }
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
    if let Some(thp) = &report.thp {
        match &mut whole.thp {
            None => whole.thp = Some(thp.clone()),
            Some(into) => merge_thp(into, thp),
        }
    }
    whole.stalls.extend(report.stalls.iter().cloned());
    // Counted since the start of the run, like slow_ios_dropped.
    whole.stalls_dropped = whole.stalls_dropped.max(report.stalls_dropped);
    for lost in &report.lost {
        match whole.lost.iter_mut().find(|l| l.reason == lost.reason) {
            Some(into) => into.count += lost.count,
            None => whole.lost.push(LostCount { reason: lost.reason.clone(), count: lost.count }),
        }
    }
    whole.warn_all(&report.warnings);
}

/// Two latency summaries with their buckets, as one: the histogram again
/// from both rows' buckets, `sum_ns` from the caller (the rows' totals).
fn merge_latency(into: (&mut Percentiles, &mut Vec<Bucket>), other: (&Percentiles, &[Bucket]), sum_ns: u64) {
    let max_ns = us_to_ns(into.0.max.max(other.0.max));
    let mut hist = hist_of(into.1, sum_ns, max_ns);
    hist.merge(&hist_of(other.1, 0, 0));
    *into.0 = Percentiles::of(&hist);
    *into.1 = buckets_of(&hist);
}

fn timed(buckets: &[Bucket]) -> u64 {
    buckets.iter().map(|b| b.count).sum()
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

fn us_to_ns(us: f64) -> u64 {
    (us * 1000.0).round() as u64
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

fn merge_stall_row(into: &mut StallRow, row: &StallRow) {
    let sum_ns = us_to_ns((into.total_ms + row.total_ms) * 1000.0);
    into.count += row.count;
    into.total_ms += row.total_ms;
    merge_latency((&mut into.latency_us, &mut into.histogram), (&row.latency_us, &row.histogram), sum_ns);
    into.nr_reclaimed += row.nr_reclaimed;
    into.untimed += row.untimed;
    into.abandoned += row.abandoned;
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

fn add_named_counts(into: &mut Vec<NamedCount>, other: &[NamedCount]) {
    for c in other {
        match into.iter_mut().find(|d| d.name == c.name) {
            Some(d) => d.count += c.count,
            None => into.push(c.clone()),
        }
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

#[cfg(test)]
mod tests {
    use tracer_common::hist::LatencyHist;

    use super::*;
    use crate::model::{Frame, OomKill, SlowIo, Stall, ZoneFree, ZoneSnapshot};

    fn hist(samples_ns: &[u64]) -> LatencyHist {
        let mut h = LatencyHist::zeroed();
        for &ns in samples_ns {
            h.record(ns);
        }
        h
    }

    fn block_row(op: &str, samples_ns: &[u64], untimed: u64) -> BlockRow {
        let h = hist(samples_ns);
        BlockRow {
            device: "loop0".into(),
            dev: "7:0".into(),
            op: op.into(),
            count: samples_ns.len() as u64 + untimed,
            bytes: 4096 * (samples_ns.len() as u64 + untimed),
            errors: 0,
            untimed,
            latency_us: Percentiles::of(&h),
            histogram: buckets_of(&h),
        }
    }

    fn interval(index: u64, fill: impl FnOnce(&mut Report)) -> Report {
        let mut r = Report {
            tool: "tracer".into(),
            version: "0.1.0".into(),
            window: Window {
                start_unix_s: 1000.0 + index as f64,
                offset_s: index as f64,
                duration_s: 1.0,
                interval: Some(index),
            },
            lost: vec![LostCount { reason: "ringbuf_full".into(), count: index }],
            ..Report::default()
        };
        fill(&mut r);
        r
    }

    fn frame(symbol: &str) -> Frame {
        Frame { addr: 0xffff_ffff_8100_0000, symbol: Some(symbol.into()), ..Frame::default() }
    }

    #[test]
    fn nothing_to_merge() {
        assert_eq!(merge_intervals(&[]), Report::default());
    }

    #[test]
    fn block_rows_add_and_histograms_merge() {
        let a: Vec<u64> = (1..=900).map(|i| 10_000 + i * 10).collect();
        let b: Vec<u64> = (1..=100).map(|i| 2_000_000 + i * 1000).collect();
        let intervals = [
            interval(0, |r| r.block = vec![block_row("read", &a, 2), block_row("write", &a[..10], 0)]),
            interval(1, |r| r.block = vec![block_row("read", &b, 1)]),
        ];
        let whole = merge_intervals(&intervals);
        assert_eq!(whole.block.len(), 2);
        let read = &whole.block[0];
        assert_eq!((read.op.as_str(), read.count, read.untimed), ("read", 1003, 3));
        assert_eq!(read.bytes, 1003 * 4096);
        // The same as one histogram of every sample, but for the maximum,
        // which is the largest interval maximum.
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        let expected = hist(&all);
        assert_eq!(read.histogram, buckets_of(&expected));
        let p = &read.latency_us;
        let e = Percentiles::of(&expected);
        assert_eq!((p.p50, p.p90, p.p99, p.p999), (e.p50, e.p90, e.p99, e.p999));
        assert_eq!(p.max, intervals[1].block[0].latency_us.max);
        assert!((p.mean - e.mean).abs() < 1e-6, "{} vs {}", p.mean, e.mean);
        assert_eq!(whole.block[1].op, "write");
    }

    #[test]
    fn window_time_line_lost_and_warnings() {
        let intervals = [
            interval(0, |r| r.warnings = vec!["w1".into()]),
            interval(1, |r| r.warnings = vec!["w1".into(), "w2".into()]),
            interval(2, |_| {}),
        ];
        let whole = merge_intervals(&intervals);
        assert_eq!(
            whole.window,
            Window { start_unix_s: 1000.0, offset_s: 0.0, duration_s: 3.0, interval: None }
        );
        assert_eq!(whole.timeline.len(), 3);
        assert_eq!(whole.timeline[2].offset_s, 2.0);
        assert_eq!(whole.lost, [LostCount { reason: "ringbuf_full".into(), count: 3 }]);
        assert_eq!(whole.lost_events, 3);
        assert_eq!(whole.warnings, ["w1", "w2"]);
    }

    #[test]
    fn alloc_failures_merge_by_order_gfp_pid_and_stacks() {
        let failure = |count, first, last, comm: &str, stack: &str| AllocFailure {
            count,
            order: 3,
            gfp_flags: 0x42,
            pid: 7,
            comm: comm.into(),
            first_seen_s: first,
            last_seen_s: last,
            kernel_stack: vec![frame(stack)],
            ..AllocFailure::default()
        };
        let snapshot = |at_s| ZoneSnapshot {
            at_s,
            reason: "first order-3 failure".into(),
            zones: vec![ZoneFree {
                node: 0,
                zone: "Normal".into(),
                free_blocks: vec![1, 0],
                ..ZoneFree::default()
            }],
        };
        let intervals = [
            interval(0, |r| {
                r.alloc_failures = vec![failure(2, 0.1, 0.5, "a", "map_create")];
                r.zone_snapshots = vec![snapshot(0.1)];
            }),
            interval(1, |r| {
                r.alloc_failures =
                    vec![failure(5, 0.1, 1.5, "b", "map_create"), failure(9, 1.2, 1.3, "c", "other")];
                r.zone_snapshots = vec![snapshot(0.1)];
            }),
        ];
        let whole = merge_intervals(&intervals);
        assert_eq!(whole.alloc_failures.len(), 2);
        assert_eq!((whole.alloc_failures[0].count, whole.alloc_failures[0].comm.as_str()), (9, "c"));
        let merged = &whole.alloc_failures[1];
        assert_eq!((merged.count, merged.first_seen_s, merged.last_seen_s), (7, 0.1, 1.5));
        assert_eq!(merged.comm, "b", "named by the thread that failed last");
        assert_eq!(whole.zone_snapshots.len(), 1);
    }

    #[test]
    fn events_concatenate_and_counters_add() {
        let stall = |start_s| Stall { kind: "direct".into(), start_s, duration_ms: 1.0, ..Stall::default() };
        let kill = |at_s| OomKill { at_s, victim_pid: 9, ..OomKill::default() };
        let slow = |latency_us| SlowIo { latency_us, device: "loop0".into(), ..SlowIo::default() };
        let thp = |splits, pid| Thp {
            method: "vmstat".into(),
            splits,
            counters: vec![NamedCount { name: "thp_split_pmd".into(), count: splits }],
            processes: vec![ThpProcess { pid, pmd_splits: splits, ..ThpProcess::default() }],
            note: "n".into(),
        };
        let intervals = [
            interval(0, |r| {
                r.stalls = vec![stall(0.2)];
                r.oom_kills = vec![kill(0.3)];
                r.slow_ios = vec![slow(20_000.0)];
                r.thp = Some(thp(2, 5));
                r.kswapd = Some(Kswapd { wakes: 1, sleeps: 1, awake_ms: 2.0, wakeups_requested: 3 });
                r.oom_retries = Some(OomRetries { reclaim_retry_zone: 1, compact_retry: 0 });
                r.stalls_dropped = 4;
            }),
            interval(1, |r| {
                r.stalls = vec![stall(1.2), stall(1.4)];
                r.oom_kills = vec![kill(1.3)];
                r.slow_ios = vec![slow(50_000.0)];
                r.thp = Some(thp(3, 5));
                r.kswapd = Some(Kswapd { wakes: 2, sleeps: 2, awake_ms: 1.0, wakeups_requested: 0 });
                r.oom_retries = Some(OomRetries { reclaim_retry_zone: 2, compact_retry: 1 });
                r.stalls_dropped = 6;
            }),
        ];
        let whole = merge_intervals(&intervals);
        assert_eq!(whole.stalls.iter().map(|s| s.start_s).collect::<Vec<_>>(), [0.2, 1.2, 1.4]);
        assert_eq!(whole.stalls_dropped, 6, "cumulative: the last interval's");
        assert_eq!(whole.oom_kills.len(), 2);
        assert_eq!(whole.slow_ios.iter().map(|s| s.latency_us).collect::<Vec<_>>(), [50_000.0, 20_000.0]);
        let thp = whole.thp.unwrap();
        assert_eq!((thp.splits, thp.counters[0].count, thp.processes[0].pmd_splits), (5, 5, 5));
        assert_eq!(whole.kswapd, Some(Kswapd { wakes: 3, sleeps: 3, awake_ms: 3.0, wakeups_requested: 3 }));
        assert_eq!(whole.oom_retries, Some(OomRetries { reclaim_retry_zone: 3, compact_retry: 1 }));
        assert_eq!(whole.timeline.iter().map(|t| t.oom_kills).sum::<u64>(), 2);
    }

    #[test]
    fn stall_rows_merge_like_block_rows() {
        let row = |samples_ns: &[u64], pid: u32, stack: &str| {
            let h = hist(samples_ns);
            let total_ms = h.sum_ns as f64 / 1e6;
            StallRow {
                kind: "direct".into(),
                count: h.samples,
                total_ms,
                latency_us: Percentiles::of(&h),
                histogram: buckets_of(&h),
                nr_reclaimed: 10,
                untimed: 1,
                abandoned: 0,
                processes: vec![StallBreakdown {
                    pid,
                    comm: "db".into(),
                    count: h.samples,
                    total_ms,
                    latency_us: Percentiles::of(&h),
                    ..StallBreakdown::default()
                }],
                cgroups: vec![StallBreakdown {
                    cgroup: "/db".into(),
                    count: h.samples,
                    total_ms,
                    ..StallBreakdown::default()
                }],
                stacks: vec![StallStack {
                    count: h.samples,
                    total_ms,
                    pid,
                    kernel_stack: vec![frame(stack)],
                    user_stack: Vec::new(),
                }],
            }
        };
        let a = [1_000_000, 2_000_000];
        let b = [8_000_000];
        let intervals = [
            interval(0, |r| {
                r.reclaim = vec![row(&a, 1, "shrink")];
                r.compaction = Some(Compaction {
                    stalls: StallRow { kind: "compaction".into(), ..row(&a, 1, "compact") },
                    attempts: 2,
                    results: vec![NamedCount { name: "skipped".into(), count: 2 }],
                });
            }),
            interval(1, |r| {
                r.reclaim = vec![row(&b, 1, "shrink")];
                r.compaction = Some(Compaction {
                    stalls: StallRow { kind: "compaction".into(), ..row(&b, 2, "compact") },
                    attempts: 1,
                    results: vec![NamedCount { name: "success".into(), count: 1 }],
                });
            }),
        ];
        let whole = merge_intervals(&intervals);
        let direct = &whole.reclaim[0];
        assert_eq!((direct.count, direct.nr_reclaimed, direct.untimed), (3, 20, 2));
        assert!((direct.total_ms - 11.0).abs() < 1e-9);
        let expected = hist(&[1_000_000, 2_000_000, 8_000_000]);
        assert_eq!(direct.histogram, buckets_of(&expected));
        assert_eq!(direct.latency_us.p50, Percentiles::of(&expected).p50);
        assert!((direct.latency_us.mean - 11_000.0 / 3.0).abs() < 1e-6);
        assert_eq!(direct.processes.len(), 1);
        let p = &direct.processes[0];
        assert_eq!((p.count, p.latency_us.max), (3, 8000.0));
        assert!((p.latency_us.mean - 11_000.0 / 3.0).abs() < 1e-6);
        assert_eq!(direct.stacks.len(), 1);
        assert_eq!(direct.stacks[0].count, 3);
        let compaction = whole.compaction.unwrap();
        assert_eq!((compaction.stalls.count, compaction.attempts), (3, 3));
        assert_eq!(compaction.stalls.stacks.len(), 2, "different pids: different stacks");
        assert_eq!(compaction.stalls.stacks[0].pid, 2, "longest first");
        assert_eq!(compaction.results.len(), 2);
    }
}
