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
    /// Page allocation failures grouped by stack, most frequent first.
    #[serde(default)]
    pub alloc_failures: Vec<AllocFailure>,
    /// Free pages per zone and order, taken at the first failure of each
    /// order (how fragmented memory was).
    #[serde(default)]
    pub zone_snapshots: Vec<ZoneSnapshot>,
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

/// One stack frame, resolved addr2line-style where possible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    /// Address as captured (kernel: kernel virtual address; user: address
    /// in the process).
    pub addr: u64,
    /// Function, demangled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// `addr - start of symbol`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// "kernel", or the path of the binary or library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// Functions inlined at this address, outermost first; the innermost
    /// is where `addr` really is.
    #[serde(default)]
    pub inlined: Vec<InlinedFrame>,
    /// User frames: offset in `module` and its GNU build id, so the frame
    /// can be resolved again on another machine with the same files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// User frames: the address as `module`'s symbols and DWARF number it
    /// (`file_offset` through its program headers). A separate debug file
    /// keeps no file offsets, so it is searched by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elf_addr: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InlinedFrame {
    pub symbol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
}

/// Page allocation failures that share kernel stack, user stack, order, gfp
/// mode and process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocFailure {
    pub count: u64,
    pub order: u32,
    /// Decoded as the kernel prints it: `GFP_KERNEL|__GFP_NOWARN|...`.
    pub gfp: String,
    pub gfp_flags: u64,
    /// `__GFP_DIRECT_RECLAIM` set: the allocation could have reclaimed
    /// memory and still failed (atomic ones are expected to fail under
    /// pressure).
    pub can_reclaim: bool,
    pub migratetype: String,
    pub pid: u32,
    pub comm: String,
    /// Memory cgroup path, when known.
    pub cgroup: String,
    /// Seconds since the start of tracing.
    pub first_seen_s: f64,
    pub last_seen_s: f64,
    pub kernel_stack: Vec<Frame>,
    pub user_stack: Vec<Frame>,
}

/// Free pages per zone and order at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneSnapshot {
    /// Seconds since the start of tracing.
    pub at_s: f64,
    /// Why it was taken, e.g. "first order-3 failure".
    pub reason: String,
    pub zones: Vec<ZoneFree>,
}

/// One line of /proc/buddyinfo, and the zone's lines of /proc/pagetypeinfo
/// when readable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneFree {
    pub node: u32,
    pub zone: String,
    /// Free blocks of each order, 0 first.
    pub free_blocks: Vec<u64>,
    /// Per migrate type ("Unmovable", ...): free blocks of each order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_migratetype: Vec<(String, Vec<u64>)>,
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
