//! The in-memory model of a trace. Every output (text, JSON, folded stacks,
//! flame graphs, captures) renders a [`Report`]; nothing renders kernel maps
//! directly.

use serde::{Deserialize, Serialize};
use tracer_common::hist::{LatencyHist, bucket_high, bucket_low};

/// Everything one report says: a whole run, or one interval of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub host: Host,
    pub window: Window,
    /// Per family: traced or not, with which hook, and why not.
    pub families: Vec<FamilyStatus>,
    #[serde(default)]
    pub block: Vec<BlockRow>,
    /// Sum of everything in `lost`.
    pub lost_events: u64,
    /// What the kernel side could not record, by reason.
    #[serde(default)]
    pub lost: Vec<LostCount>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub kernel_release: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// Wall clock at the start of the window, seconds since the Unix epoch.
    pub start_unix_s: f64,
    /// Seconds from the start of tracing to the start of this window.
    pub offset_s: f64,
    pub duration_s: f64,
    /// Set on per-interval reports (0-based), absent on whole-run reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyStatus {
    pub family: String,
    /// "traced", "unavailable" or "failed".
    pub state: String,
    /// The hook in use (or that would be), in words.
    pub hook: String,
    /// Why a family is not traced, or a caveat about the hook.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LostCount {
    pub reason: String,
    pub count: u64,
}

/// Block I/O of one device and operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRow {
    pub device: String,
    /// "MAJ:MIN".
    pub dev: String,
    /// read, write, flush, discard or other.
    pub op: String,
    /// Completed requests.
    pub count: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Completions without a start time, not in the histogram: empty
    /// PREFLUSH writes, which the flush machinery completes without issuing
    /// them (their device time is in the `flush` row), requests in flight
    /// when tracing began, and starts evicted from the bounded start map.
    pub untimed: u64,
    pub latency_us: Percentiles,
    pub histogram: Vec<Bucket>,
}

/// Latency summary in microseconds. Percentiles are bucket midpoints,
/// within `relative_error` of the true value; `max` is exact on whole-run
/// reports and a bucket bound on interval reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub relative_error: f64,
}

/// One histogram bucket: `low_us <= latency < high_us`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub low_us: f64,
    pub high_us: f64,
    pub count: u64,
}

pub fn ns_to_us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Percentiles {
    pub fn of(hist: &LatencyHist) -> Self {
        let q = |ppm| hist.quantile_ns(ppm).map_or(0.0, ns_to_us);
        let samples: u64 = hist.buckets.iter().sum();
        Self {
            p50: q(500_000),
            p90: q(900_000),
            p99: q(990_000),
            p999: q(999_000),
            max: ns_to_us(hist.max_ns),
            mean: if samples == 0 { 0.0 } else { ns_to_us(hist.sum_ns) / samples as f64 },
            relative_error: tracer_common::hist::MAX_RELATIVE_ERROR,
        }
    }
}

/// Non-empty buckets of a histogram, for the model.
pub fn buckets_of(hist: &LatencyHist) -> Vec<Bucket> {
    hist.buckets
        .iter()
        .enumerate()
        .filter(|(_, count)| **count > 0)
        .map(|(index, &count)| Bucket {
            low_us: ns_to_us(bucket_low(index)),
            high_us: ns_to_us(bucket_high(index)),
            count,
        })
        .collect()
}

impl Report {
    pub fn family(&self, name: &str) -> Option<&FamilyStatus> {
        self.families.iter().find(|f| f.family == name)
    }
}
