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
    families::REGISTRY,
    model::{LostCount, Report, TimelinePoint, Window},
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
}

impl Merger {
    pub fn add(&mut self, report: &Report) {
        let start = *self.start_unix_s.get_or_insert(report.window.start_unix_s - report.window.offset_s);
        let whole = &mut self.whole;
        whole.tool.clone_from(&report.tool);
        whole.version.clone_from(&report.version);
        whole.host.clone_from(&report.host);
        whole.families.clone_from(&report.families);
        whole.filter.clone_from(&report.filter);
        whole.window = Window {
            start_unix_s: start,
            offset_s: 0.0,
            duration_s: report.window.offset_s + report.window.duration_s,
            interval: None,
        };
        for family in REGISTRY {
            (family.merge)(whole, report);
        }
        for lost in &report.lost {
            match whole.lost.iter_mut().find(|l| l.reason == lost.reason) {
                Some(into) => into.count += lost.count,
                None => whole.lost.push(LostCount { reason: lost.reason.clone(), count: lost.count }),
            }
        }
        whole.warn_all(&report.warnings);
        whole.timeline.push(TimelinePoint::of(report));
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
        for family in REGISTRY {
            (family.finish_merge)(&mut whole);
        }
        whole.lost_events = whole.lost.iter().map(|l| l.count).sum();
        whole
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::hist::LatencyHist;

    use super::*;
    use crate::model::{
        AllocFailure, BlockRow, Compaction, Frame, Kswapd, NamedCount, OomKill, OomRetries, Percentiles,
        SlowIo, Stall, StallBreakdown, StallRow, StallStack, Thp, ThpProcess, ZoneFree, ZoneSnapshot,
        buckets_of,
    };

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
                in_flight: 0,
                in_flight_longest_ms: 0.0,
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
                    user_stack_unwind: None,
                }],
            }
        };
        let a = [1_000_000, 2_000_000];
        let b = [8_000_000];
        let intervals = [
            interval(0, |r| {
                r.reclaim =
                    vec![StallRow { in_flight: 2, in_flight_longest_ms: 50.0, ..row(&a, 1, "shrink") }];
                r.compaction = Some(Compaction {
                    stalls: StallRow { kind: "compaction".into(), ..row(&a, 1, "compact") },
                    attempts: 2,
                    results: vec![NamedCount { name: "skipped".into(), count: 2 }],
                });
            }),
            interval(1, |r| {
                r.reclaim =
                    vec![StallRow { in_flight: 1, in_flight_longest_ms: 30.0, ..row(&b, 1, "shrink") }];
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
        // In progress is a state: the whole run ends as its last window.
        assert_eq!((direct.in_flight, direct.in_flight_longest_ms), (1, 30.0));
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
