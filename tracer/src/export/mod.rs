//! Metrics for engines that keep history across a fleet: Prometheus
//! (scraped, `prometheus`) and OpenTelemetry. [`Metrics`] is cumulative
//! since tracing started, built from the interval reports of the one model
//! (never from kernel maps), and bounded: its series are a fixed set per
//! device, operation, kind and at most [`MAX_CGROUPS`] cgroups, whatever
//! the run's length.
//!
//! Latency histograms keep tracer's own buckets (the exponential layout of
//! Prometheus native histograms at schema 4, in nanoseconds: see
//! `tracer_common::hist`), so exported histograms add up exactly across
//! hosts. They are in nanoseconds, not seconds, because bucket edges at
//! 2^(i/16) ns do not fall on 2^(j/16) s.

pub mod otlp;
pub mod prometheus;
pub mod server;

use std::collections::BTreeMap;

use tracer_common::hist::{self, LatencyHist};

use crate::model::{self, Report};

/// Cgroups with their own label; later ones are counted as "other". The
/// first ones seen keep their label, so no counter ever moves between
/// series (which would look like a reset).
pub const MAX_CGROUPS: usize = 20;
/// The label of cgroups past [`MAX_CGROUPS`].
pub const OTHER_CGROUP: &str = "other";

/// One latency series: how many, how much, and the histogram.
#[derive(Clone)]
pub struct LatencySeries {
    pub count: u64,
    pub bytes: u64,
    pub errors: u64,
    pub hist: Box<LatencyHist>,
}

impl Default for LatencySeries {
    fn default() -> Self {
        Self { count: 0, bytes: 0, errors: 0, hist: Box::new(LatencyHist::zeroed()) }
    }
}

impl LatencySeries {
    fn add_buckets(&mut self, buckets: &[model::Bucket], sum_ns: u64) {
        let interval = model::hist_of(buckets, sum_ns, 0);
        self.hist.merge(&interval);
    }
}

/// Everything exported, cumulative since tracing started.
#[derive(Clone, Default)]
pub struct Metrics {
    pub hostname: String,
    pub kernel_release: String,
    /// Seconds since the Unix epoch when tracing started.
    pub start_unix_s: f64,
    /// (device, op) -> requests, bytes, errors, latency.
    pub block: BTreeMap<(String, String), LatencySeries>,
    /// Stall kind ("direct", "memcg", "compaction") -> stalls and latency.
    pub stalls: BTreeMap<String, LatencySeries>,
    /// (kind, cgroup) -> stalls and their total time in ns.
    pub stalls_by_cgroup: BTreeMap<(String, String), (u64, u64)>,
    /// (order, could reclaim) -> allocation failures.
    pub alloc_failures: BTreeMap<(u32, bool), u64>,
    /// cgroup of the victim -> OOM kills.
    pub oom_kills: BTreeMap<String, u64>,
    pub thp_splits: u64,
    /// Reason -> events the kernel side could not record.
    pub lost: BTreeMap<String, u64>,
    /// Cgroups that have their own label, in the order first seen.
    cgroups: Vec<String>,
}

impl Metrics {
    pub fn new(hostname: &str, kernel_release: &str, start_unix_s: f64) -> Self {
        Self {
            hostname: hostname.into(),
            kernel_release: kernel_release.into(),
            start_unix_s,
            ..Self::default()
        }
    }

    /// Adds one interval report (counts in it are for that interval only).
    pub fn add_interval(&mut self, report: &Report) {
        for row in &report.block {
            let series = self.block.entry((row.device.clone(), row.op.clone())).or_default();
            series.count += row.count;
            series.bytes += row.bytes;
            series.errors += row.errors;
            let timed: u64 = row.histogram.iter().map(|b| b.count).sum();
            series.add_buckets(&row.histogram, (row.latency_us.mean * 1000.0 * timed as f64).round() as u64);
        }
        for row in report.stall_rows() {
            let series = self.stalls.entry(row.kind.clone()).or_default();
            series.count += row.count;
            series.add_buckets(&row.histogram, (row.total_ms * 1e6).round() as u64);
            for cgroup in &row.cgroups {
                let label = self.cgroup_label(&cgroup.cgroup);
                let entry = self.stalls_by_cgroup.entry((row.kind.clone(), label)).or_default();
                entry.0 += cgroup.count;
                entry.1 += (cgroup.total_ms * 1e6).round() as u64;
            }
        }
        for failure in &report.alloc_failures {
            *self.alloc_failures.entry((failure.order, failure.can_reclaim)).or_default() += failure.count;
        }
        for kill in &report.oom_kills {
            let label = self.cgroup_label(&kill.cgroup);
            *self.oom_kills.entry(label).or_default() += 1;
        }
        if let Some(thp) = &report.thp {
            self.thp_splits += thp.splits;
        }
        for lost in &report.lost {
            *self.lost.entry(lost.reason.clone()).or_default() += lost.count;
        }
    }

    /// A cgroup's label: its path while fewer than [`MAX_CGROUPS`] have
    /// one, else [`OTHER_CGROUP`].
    fn cgroup_label(&mut self, cgroup: &str) -> String {
        if self.cgroups.iter().any(|c| c == cgroup) {
            return cgroup.into();
        }
        if self.cgroups.len() < MAX_CGROUPS {
            self.cgroups.push(cgroup.into());
            return cgroup.into();
        }
        OTHER_CGROUP.into()
    }
}

/// A native histogram's buckets: the zero bucket and spans of consecutive
/// exponential indexes with delta-encoded counts, as Prometheus'
/// protobuf exposition and OTLP's exponential histograms (after undoing
/// the deltas) carry them.
#[derive(Debug, Default, PartialEq)]
pub struct SparseBuckets {
    pub zero_count: u64,
    /// (offset from the end of the previous span, or the first index for
    /// the first span; length).
    pub spans: Vec<(i32, u32)>,
    /// Count of each bucket in the spans, in order.
    pub counts: Vec<u64>,
}

impl SparseBuckets {
    pub fn of(h: &LatencyHist) -> Self {
        let mut out = SparseBuckets { zero_count: h.buckets[0], ..Default::default() };
        let mut next_index: Option<i32> = None;
        for (slot, &count) in h.buckets.iter().enumerate() {
            if count == 0 {
                continue;
            }
            // Values past 2^MAX_EXP ns share the bucket just above it: the
            // only place a native histogram can hold them.
            let index = hist::schema_index(slot).unwrap_or(match slot {
                0 => continue,
                _ => hist::MAX_INDEX as i32 + 1,
            });
            match next_index {
                Some(next) if next == index => out.spans.last_mut().expect("a span").1 += 1,
                Some(next) => out.spans.push((index - next, 1)),
                None => out.spans.push((index, 1)),
            }
            out.counts.push(count);
            next_index = Some(index + 1);
        }
        out
    }

    /// Counts as Prometheus sends them: each the difference to the one
    /// before (the first to zero).
    pub fn deltas(&self) -> Vec<i64> {
        let mut previous = 0i64;
        self.counts
            .iter()
            .map(|&c| {
                let delta = c as i64 - previous;
                previous = c as i64;
                delta
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of_values(values: &[u64]) -> LatencyHist {
        let mut h = LatencyHist::zeroed();
        values.iter().for_each(|&v| h.record(v));
        h
    }

    #[test]
    fn sparse_buckets_are_spans_of_consecutive_indexes() {
        // 2^10 ns closes bucket 160; 2^10+1 opens 161; 2^20 closes 320.
        let h = hist_of_values(&[0, 1024, 1025, 1025, 1 << 20]);
        let sparse = SparseBuckets::of(&h);
        assert_eq!(sparse.zero_count, 1);
        assert_eq!(sparse.spans, vec![(160, 2), (320 - 162, 1)]);
        assert_eq!(sparse.counts, vec![1, 2, 1]);
        assert_eq!(sparse.deltas(), vec![1, 1, -1]);
    }

    #[test]
    fn cgroup_labels_are_bounded_and_stable() {
        let mut m = Metrics::default();
        for i in 0..MAX_CGROUPS + 5 {
            m.cgroup_label(&format!("/cg{i}"));
        }
        assert_eq!(m.cgroup_label("/cg0"), "/cg0", "the first ones keep their label");
        assert_eq!(m.cgroup_label(&format!("/cg{}", MAX_CGROUPS + 1)), OTHER_CGROUP);
        assert_eq!(m.cgroups.len(), MAX_CGROUPS);
    }

    /// Interval reports added up equal the histogram of all their
    /// samples: the exported cumulative histogram loses nothing.
    #[test]
    fn intervals_add_up_to_the_whole() {
        let values_a = [900u64, 15_000, 15_001, 2_000_000];
        let values_b = [1000u64, 77_777, 5_000_000_000];
        let row = |values: &[u64]| {
            let h = hist_of_values(values);
            model::BlockRow {
                device: "loop7".into(),
                dev: "7:7".into(),
                op: "read".into(),
                count: values.len() as u64,
                bytes: 4096 * values.len() as u64,
                errors: 0,
                untimed: 0,
                latency_us: model::Percentiles::of(&h),
                histogram: model::buckets_of(&h),
            }
        };
        let mut m = Metrics::default();
        for values in [&values_a[..], &values_b[..]] {
            m.add_interval(&Report { block: vec![row(values)], ..Report::default() });
        }
        let all: Vec<u64> = values_a.iter().chain(&values_b).copied().collect();
        let series = &m.block[&("loop7".to_string(), "read".to_string())];
        assert_eq!(series.count, 7);
        assert_eq!(series.hist.buckets, hist_of_values(&all).buckets);
    }
}
