//! The in-memory model of a trace. Every output (text, JSON, folded stacks,
//! flame graphs, captures) renders a [`Report`]; nothing renders kernel maps
//! directly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracer_common::hist::{self, LatencyHist};

/// Everything one report says: a whole run, or one interval of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub host: Host,
    pub window: Window,
    /// Per family: traced or not, with which hook, and why not.
    pub families: Vec<FamilyStatus>,
    /// The task filter in force (`--pid`, `--comm`, `--cgroup`), as given:
    /// the memory families saw only those tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter: Vec<String>,
    #[serde(default)]
    pub block: Vec<BlockRow>,
    /// Block requests slower than `--slow-io`, slowest first (at most
    /// `SLOW_IOS_KEPT`; `slow_ios_dropped` says how many more there were).
    #[serde(default)]
    pub slow_ios: Vec<SlowIo>,
    #[serde(default)]
    pub slow_ios_dropped: u64,
    /// Slow I/Os trimmed while merging intervals, counted as dropped when
    /// the merge finishes. Never rendered.
    #[serde(skip)]
    pub slow_ios_trimmed: u64,
    /// Page allocation failures grouped by stack, most frequent first.
    #[serde(default)]
    pub alloc_failures: Vec<AllocFailure>,
    /// Free pages per zone and order, taken at the first failure of each
    /// order (how fragmented memory was).
    #[serde(default)]
    pub zone_snapshots: Vec<ZoneSnapshot>,
    /// OOM kills, in order.
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
    /// How hard the kernel tried before killing, in the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_retries: Option<OomRetries>,
    /// Direct and memory cgroup reclaim stalls.
    #[serde(default)]
    pub reclaim: Vec<StallRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<Compaction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kswapd: Option<Kswapd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thp: Option<Thp>,
    /// Dirty-page throttling, when the `dirty` family was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<Dirty>,
    /// Individual stalls (reclaim, compaction), longest kept when there
    /// are more than `stalls_kept_max`; `stalls_dropped` says how many not.
    #[serde(default)]
    pub stalls: Vec<Stall>,
    #[serde(default)]
    pub stalls_dropped: u64,
    /// Per interval (the `--interval`, else 1 s): counts side by side so
    /// that spikes line up.
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
    /// Sum of everything in `lost`.
    pub lost_events: u64,
    /// What the kernel side could not record, by reason.
    #[serde(default)]
    pub lost: Vec<LostCount>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// What made `tracer watch` write this capture, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerMark>,
    /// The machine the run traced: what a maintainer asks for first. On
    /// whole-run reports only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemContext>,
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

/// One slow block request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowIo {
    /// Seconds since the start of tracing, at completion.
    pub at_s: f64,
    pub latency_us: f64,
    pub device: String,
    pub op: String,
    pub bytes: u64,
    /// First sector; absent for requests without one (flushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<u64>,
    /// The process that was running when the request started (the
    /// submitter when it issued directly, else a kernel worker).
    pub pid: u32,
    pub comm: String,
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

/// One histogram bucket: `low_us < latency <= high_us` (upper edge
/// inclusive, as Prometheus and OpenTelemetry read buckets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub low_us: f64,
    pub high_us: f64,
    pub count: u64,
    /// Exponential bucket index at schema 4: the bucket holds
    /// `(2^((index-1)/16), 2^(index/16)]` ns. Absent for the zero bucket,
    /// the overflow bucket, and in captures of format 1 (log-linear
    /// buckets, `low_us <= latency < high_us`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<i32>,
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
    /// Not a frame: the user stack was unwound no further, for this
    /// reason ("no CFI for ...", "stack copy too small (8192 bytes)",
    /// "process gone ..."). Always last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<String>,
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
    /// How the user stack was unwound: "dwarf" (from the binaries' CFI),
    /// "frame pointers", "dwarf + frame pointers", or "frame pointers (in
    /// the kernel)" where no stack copy was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_stack_unwind: Option<String>,
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

/// One OOM kill.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OomKill {
    /// Seconds since the start of tracing.
    pub at_s: f64,
    pub victim_pid: u32,
    pub victim_comm: String,
    pub victim_uid: u32,
    /// The victim's memory cgroup (where the kill is counted).
    pub cgroup: String,
    /// "memcg" (a cgroup limit was hit), "global" (the whole machine ran
    /// out), or "unknown", from the trigger's kernel stack.
    pub scope: String,
    /// For memcg OOMs: the nearest cgroup at or above the trigger's with a
    /// memory limit, its limit and usage when the kill was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    pub oom_score_adj: i32,
    pub trigger_pid: u32,
    pub trigger_comm: String,
    pub trigger_cgroup: String,
    /// Milliseconds from the kill to the OOM reaper starting and finishing
    /// on the victim, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reap_start_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reap_ms: Option<f64>,
    pub trigger_kernel_stack: Vec<Frame>,
    pub trigger_user_stack: Vec<Frame>,
    /// How the trigger's user stack was unwound, as
    /// [`AllocFailure::user_stack_unwind`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_user_stack_unwind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OomRetries {
    /// `oom:reclaim_retry_zone` events: reclaim retried before giving up.
    pub reclaim_retry_zone: u64,
    /// `oom:compact_retry` events.
    pub compact_retry: u64,
}

/// One kind of stall (direct reclaim, memcg reclaim, compaction).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallRow {
    /// "direct", "memcg" or "compaction".
    pub kind: String,
    pub count: u64,
    pub total_ms: f64,
    pub latency_us: Percentiles,
    pub histogram: Vec<Bucket>,
    /// Pages reclaimed (reclaim kinds).
    pub nr_reclaimed: u64,
    /// Stalls that ended without a begin seen (entered before tracing
    /// started): counted here, not timed.
    pub untimed: u64,
    /// Begins replaced by a later begin of the same thread before their end
    /// was seen (the thread exited inside the stall, or an event was lost).
    pub abandoned: u64,
    /// Stalls begun and not ended when the window closed, by live threads:
    /// not in `count`, which holds ended stalls. A stall that never ends is
    /// the one an on-call engineer most needs to see. Absent in older
    /// captures.
    #[serde(default)]
    pub in_flight: u64,
    /// How long the oldest of those had lasted when the window closed.
    #[serde(default)]
    pub in_flight_longest_ms: f64,
    /// Busiest processes first.
    pub processes: Vec<StallBreakdown>,
    pub cgroups: Vec<StallBreakdown>,
    /// Where the stalls came from, most total time first (at most 20).
    pub stacks: Vec<StallStack>,
}

/// A stall row's share for one process or one cgroup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallBreakdown {
    /// Processes: pid; cgroups: 0.
    pub pid: u32,
    pub comm: String,
    pub cgroup: String,
    pub count: u64,
    pub total_ms: f64,
    pub latency_us: Percentiles,
    pub nr_reclaimed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallStack {
    pub count: u64,
    pub total_ms: f64,
    pub pid: u32,
    pub kernel_stack: Vec<Frame>,
    pub user_stack: Vec<Frame>,
    /// How the user stack was unwound, as
    /// [`AllocFailure::user_stack_unwind`]: from the latest sample of the
    /// row's stack ("dwarf", ...), or "frame pointers (in the kernel)" when
    /// it has none. Absent in older captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_stack_unwind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// Direct compaction runs (per zone), timed.
    pub stalls: StallRow,
    /// `mm_compaction_try_to_compact_pages`: direct compaction attempts.
    pub attempts: u64,
    /// Results of the runs, by `enum compact_result` name.
    pub results: Vec<NamedCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kswapd {
    pub wakes: u64,
    pub sleeps: u64,
    /// Total time kswapd threads were awake, all nodes.
    pub awake_ms: f64,
    /// `mm_vmscan_wakeup_kswapd`: allocations that asked for kswapd.
    pub wakeups_requested: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thp {
    /// How splits are counted: "fentry", "kprobe" (per process, with
    /// stacks) or "vmstat" (the kernel's global counters only).
    pub method: String,
    /// PMD splits (`thp_split_pmd`, or `__split_huge_pmd` calls).
    pub splits: u64,
    /// Every `thp_split*` and `*deferred_split*` counter of /proc/vmstat,
    /// as deltas over the window.
    pub counters: Vec<NamedCount>,
    /// Per process; empty with the vmstat method, which has no such detail.
    pub processes: Vec<ThpProcess>,
    pub note: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThpProcess {
    pub pid: u32,
    pub comm: String,
    pub pmd_splits: u64,
    pub page_splits: u64,
    pub kernel_stack: Vec<Frame>,
}

/// One stall, for time lines.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stall {
    pub kind: String,
    /// Seconds since the start of tracing.
    pub start_s: f64,
    pub duration_ms: f64,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    pub cgroup: String,
    pub order: i32,
    /// Pages reclaimed, or the compaction result.
    pub result: String,
}

/// The traced machine: what stays put during a run (taken as it starts),
/// and the memory counters as it started and ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemContext {
    pub kernel: KernelInfo,
    pub config: KernelConfig,
    /// /proc/cmdline.
    pub cmdline: String,
    pub cpus: CpuInfo,
    pub memory_total_kb: u64,
    /// Online NUMA nodes.
    pub numa_nodes: u32,
    /// Memory management settings: THP modes, vm.* and a few kernel.*
    /// sysctls, by name (`vm.zone_reclaim_mode`, `transparent_hugepage.enabled`).
    pub settings: BTreeMap<String, String>,
    /// Disks (not partitions), from /sys/block.
    pub block_devices: Vec<BlockDeviceInfo>,
    pub start: MemoryState,
    /// Absent when the run did not end normally (a capture cut short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<MemoryState>,
    /// The tracer binary that traced (empty in captures of older versions).
    #[serde(default)]
    pub tracer: TracerBuild,
}

/// How a tracer binary was built.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TracerBuild {
    pub version: String,
    /// Git commit it was built from (short), or "unknown".
    pub commit: String,
    /// Rust target triple, e.g. x86_64-unknown-linux-musl.
    pub target: String,
    /// "static" (runs on any host) or "dynamic" (needs a recent enough glibc).
    pub linkage: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`: build number, date and preemption model.
    pub version: String,
    /// `uname -m`.
    pub machine: String,
    /// GNU build id of the running kernel (hex), to match a vmlinux to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// Address of `_stext` in /proc/kallsyms: with the vmlinux's own, it
    /// undoes KASLR when kernel frames are resolved again elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stext: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelConfig {
    /// Where the lines come from (`/proc/config.gz`, `/boot/config-RELEASE`),
    /// absent when neither exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The options that matter to tracing and memory, as the file has them
    /// (`CONFIG_MEMCG=y`, `# CONFIG_KPROBES is not set`).
    pub lines: Vec<String>,
    /// Why there are no lines.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub online: u32,
    pub model: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDeviceInfo {
    pub name: String,
    /// "MAJ:MIN".
    pub dev: String,
    pub size_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotational: Option<bool>,
    /// The active I/O scheduler (`none`, `mq-deadline`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Memory counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryState {
    /// Wall clock, seconds since the Unix epoch.
    pub taken_unix_s: f64,
    /// /proc/meminfo: kB, except the `HugePages_*` counts.
    pub meminfo: BTreeMap<String, u64>,
    /// /proc/vmstat.
    pub vmstat: BTreeMap<String, u64>,
    /// /proc/buddyinfo: free blocks per zone and order.
    pub buddyinfo: Vec<ZoneFree>,
    /// /proc/pressure/memory's cumulative stall totals, where the kernel
    /// has PSI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_memory: Option<PsiTotals>,
    /// The `--cgroup`'s `memory.pressure` totals (cgroup v2 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_cgroup: Option<CgroupPsi>,
}

/// A cgroup's PSI memory totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupPsi {
    /// As given to `--cgroup`.
    pub cgroup: String,
    pub totals: PsiTotals,
}

/// PSI stall totals, microseconds since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiTotals {
    /// Time at least one task stalled on memory.
    pub some_us: u64,
    /// Time all non-idle tasks stalled on memory at once.
    pub full_us: u64,
}

/// Writers made to wait by dirty-page throttling (`balance_dirty_pages`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dirty {
    /// Per process, backing device and memory cgroup; longest total pause
    /// first.
    pub rows: Vec<DirtyRow>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirtyRow {
    pub pid: u32,
    pub comm: String,
    /// The backing device (its name in /sys/class/bdi, e.g. "7:0").
    pub device: String,
    /// The writeback's memory cgroup ("" when unknown).
    pub cgroup: String,
    /// Times the process was made to wait.
    pub pauses: u64,
    /// Times it was checked and let through without waiting.
    pub unpaused: u64,
    /// Sum of the pauses the kernel chose (its `pause`, ms).
    pub total_ms: f64,
    pub latency_us: Percentiles,
    pub histogram: Vec<Bucket>,
    /// Dirty pages against the limit, globally and for this device's
    /// writeback, at the longest pause.
    pub at_longest: DirtyState,
    /// Where the writes came from, most pause first (at most 5).
    pub stacks: Vec<StallStack>,
}

/// Pages, as `balance_dirty_pages` saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DirtyState {
    pub dirty: u64,
    pub limit: u64,
    pub wb_dirty: u64,
    pub wb_setpoint: u64,
}

/// A `tracer watch` trigger that fired.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerMark {
    /// e.g. "oom", "p99", "psi-some", "signal".
    pub trigger: String,
    /// What it saw, e.g. "OOM kill of 4242 (hog) in /db".
    pub what: String,
    /// Seconds from the start of the capture to the end of the interval in
    /// which it fired.
    pub at_s: f64,
}

/// Everything per interval, side by side.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    pub offset_s: f64,
    pub duration_s: f64,
    pub block_requests: u64,
    /// Over all traced disks and operations.
    pub block_p99_us: f64,
    pub block_max_us: f64,
    pub direct_reclaim: StallBrief,
    pub memcg_reclaim: StallBrief,
    pub compaction: StallBrief,
    pub thp_splits: u64,
    pub kswapd_wakes: u64,
    pub alloc_failures: u64,
    pub oom_kills: u64,
    /// Dirty-throttling pauses, when the `dirty` family was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<StallBrief>,
    /// Per disk with requests in the interval: its own p99 (the pooled one
    /// above hides a slow disk behind a busy fast one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskPoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskPoint {
    pub device: String,
    pub requests: u64,
    pub p99_us: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallBrief {
    pub count: u64,
    pub total_ms: f64,
    pub max_ms: f64,
}

impl TimelinePoint {
    /// The point's columns in the text time line: (header, width, value).
    /// A family's column is here only when it was traced; `disks` get a
    /// p99 column each (the busiest disks of the run, the same for every
    /// row).
    pub fn columns(&self, disks: &[String]) -> Vec<(String, usize, String)> {
        let stall = |b: &StallBrief| format!("{}/{:.0}", b.count, b.total_ms);
        let mut columns: Vec<(String, usize, String)> = vec![
            ("t(s)".into(), 6, format!("{:.1}", self.offset_s)),
            ("block io".into(), 8, self.block_requests.to_string()),
        ];
        if disks.len() > 1 {
            for disk in disks {
                // "-": no request on that disk in this interval.
                let p99 = self.disks.iter().find(|d| &d.device == disk).map(|d| format!("{:.1}", d.p99_us));
                let header = format!("p99 {disk}");
                let width = header.len().max(8);
                columns.push((header, width, p99.unwrap_or_else(|| "-".into())));
            }
        } else {
            columns.push(("p99 us".into(), 8, format!("{:.1}", self.block_p99_us)));
        }
        columns.extend([
            ("max us".into(), 8, format!("{:.1}", self.block_max_us)),
            ("direct".into(), 11, stall(&self.direct_reclaim)),
            ("memcg".into(), 11, stall(&self.memcg_reclaim)),
            ("compaction".into(), 11, stall(&self.compaction)),
            ("thp".into(), 5, self.thp_splits.to_string()),
            ("allocf".into(), 6, self.alloc_failures.to_string()),
            ("oom".into(), 4, self.oom_kills.to_string()),
        ]);
        if let Some(dirty) = &self.dirty {
            columns.push(("dirty".into(), 11, stall(dirty)));
        }
        columns
    }

    /// The disks that get a p99 column: the busiest of the run, at most
    /// four, in name order.
    pub fn busy_disks(points: &[TimelinePoint]) -> Vec<String> {
        let mut requests: BTreeMap<&str, u64> = BTreeMap::new();
        for d in points.iter().flat_map(|p| &p.disks) {
            *requests.entry(&d.device).or_default() += d.requests;
        }
        let mut busiest: Vec<(&str, u64)> = requests.into_iter().collect();
        busiest.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        let mut disks: Vec<String> = busiest.into_iter().take(4).map(|(d, _)| d.to_string()).collect();
        disks.sort();
        disks
    }

    /// The point of one interval report.
    pub fn of(report: &Report) -> Self {
        let brief = |row: Option<&StallRow>| {
            row.map_or_else(StallBrief::default, |r| StallBrief {
                count: r.count,
                total_ms: r.total_ms,
                max_ms: r.latency_us.max / 1000.0,
            })
        };
        let kind = |k: &str| report.reclaim.iter().find(|r| r.kind == k);
        let mut block = LatencyHistView::default();
        for row in &report.block {
            block.add(&row.histogram);
        }
        let block_max_us = report.block.iter().map(|r| r.latency_us.max).fold(0.0, f64::max);
        Self {
            offset_s: report.window.offset_s,
            duration_s: report.window.duration_s,
            block_requests: report.block.iter().map(|r| r.count).sum(),
            // A bucket midpoint, never above the maximum (as in the rows).
            block_p99_us: block.quantile_us(0.99).min(block_max_us),
            block_max_us,
            direct_reclaim: brief(kind("direct")),
            memcg_reclaim: brief(kind("memcg")),
            compaction: brief(report.compaction.as_ref().map(|c| &c.stalls)),
            thp_splits: report.thp.as_ref().map_or(0, |t| t.splits),
            kswapd_wakes: report.kswapd.as_ref().map_or(0, |k| k.wakes),
            alloc_failures: report.alloc_failures.iter().map(|a| a.count).sum(),
            oom_kills: report.oom_kills.len() as u64,
            disks: disk_points(report),
            dirty: report.dirty.as_ref().map(|d| StallBrief {
                count: d.rows.iter().map(|r| r.pauses).sum(),
                total_ms: d.rows.iter().map(|r| r.total_ms).fold(0.0, |a, b| a + b),
                max_ms: d.rows.iter().map(|r| r.latency_us.max).fold(0.0, f64::max) / 1000.0,
            }),
        }
    }
}

/// Each disk's p99 over its operations in one interval report.
fn disk_points(report: &Report) -> Vec<DiskPoint> {
    let mut by_disk: BTreeMap<&str, (u64, LatencyHistView, f64)> = BTreeMap::new();
    for row in &report.block {
        let entry = by_disk.entry(&row.device).or_default();
        entry.0 += row.count;
        entry.1.add(&row.histogram);
        entry.2 = entry.2.max(row.latency_us.max);
    }
    by_disk
        .into_iter()
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(device, (requests, mut hist, max))| DiskPoint {
            device: device.to_string(),
            requests,
            p99_us: hist.quantile_us(0.99).min(max),
        })
        .collect()
}

/// Histogram buckets of several rows merged, for an overall percentile.
#[derive(Default)]
struct LatencyHistView {
    buckets: Vec<(f64, f64, u64)>,
}

impl LatencyHistView {
    fn add(&mut self, buckets: &[Bucket]) {
        for b in buckets {
            match self.buckets.iter_mut().find(|x| x.0 == b.low_us) {
                Some(x) => x.2 += b.count,
                None => self.buckets.push((b.low_us, b.high_us, b.count)),
            }
        }
    }

    /// Midpoint of the bucket holding quantile `q`.
    fn quantile_us(&mut self, q: f64) -> f64 {
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: u64 = self.buckets.iter().map(|b| b.2).sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (low, high, count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return (low + high) / 2.0;
            }
        }
        0.0
    }
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
        .map(|(slot, &count)| {
            let (low_ns, high_ns) = hist::slot_edges_ns(slot);
            Bucket {
                low_us: low_ns / 1000.0,
                high_us: high_ns / 1000.0,
                count,
                index: hist::schema_index(slot),
            }
        })
        .collect()
}

/// The histogram of a model row again, the inverse of [`buckets_of`]:
/// `sum_ns` and `max_ns` come from the row's summary.
pub fn hist_of(buckets: &[Bucket], sum_ns: u64, max_ns: u64) -> LatencyHist {
    let mut hist = LatencyHist::zeroed();
    for bucket in buckets {
        hist.buckets[slot_of(bucket)] += bucket.count;
        hist.samples += bucket.count;
    }
    hist.sum_ns = sum_ns;
    hist.max_ns = max_ns;
    hist
}

/// The slot a model bucket came from; format-1 buckets (log-linear, no
/// index) go to the slot of their midpoint, within 2.2% of where they were.
fn slot_of(bucket: &Bucket) -> usize {
    if let Some(slot) = bucket.index.and_then(hist::slot_of_index) {
        return slot;
    }
    if bucket.high_us <= 0.0 {
        return 0;
    }
    let low_ns = bucket.low_us * 1000.0;
    if low_ns >= (1u64 << hist::MAX_EXP) as f64 {
        return hist::OVERFLOW_SLOT;
    }
    hist::bucket_index(((bucket.low_us + bucket.high_us) * 500.0) as u64)
}

// Merging interval rows (used by every family's `merge`).

/// Two latency summaries with their buckets, as one: the histogram again
/// from both rows' buckets, `sum_ns` from the caller (the rows' totals).
pub fn merge_latency(
    into: (&mut Percentiles, &mut Vec<Bucket>),
    other: (&Percentiles, &[Bucket]),
    sum_ns: u64,
) {
    let max_ns = us_to_ns(into.0.max.max(other.0.max));
    let mut hist = hist_of(into.1, sum_ns, max_ns);
    hist.merge(&hist_of(other.1, 0, 0));
    *into.0 = Percentiles::of(&hist);
    *into.1 = buckets_of(&hist);
}

/// How many requests a histogram timed.
pub fn timed(buckets: &[Bucket]) -> u64 {
    buckets.iter().map(|b| b.count).sum()
}

pub fn us_to_ns(us: f64) -> u64 {
    (us * 1000.0).round() as u64
}

/// Adds counts by name.
pub fn add_named_counts(into: &mut Vec<NamedCount>, other: &[NamedCount]) {
    for c in other {
        match into.iter_mut().find(|d| d.name == c.name) {
            Some(d) => d.count += c.count,
            None => into.push(c.clone()),
        }
    }
}

impl Report {
    /// Every kind of stall row: reclaim's, then direct compaction's.
    pub fn stall_rows(&self) -> impl Iterator<Item = &StallRow> {
        self.reclaim.iter().chain(self.compaction.iter().map(|c| &c.stalls))
    }

    pub fn family(&self, name: &str) -> Option<&FamilyStatus> {
        self.families.iter().find(|f| f.family == name)
    }

    /// Every kernel stack in the report, to resolve them again.
    pub fn kernel_stacks_mut(&mut self) -> Vec<&mut Vec<Frame>> {
        let mut stacks: Vec<&mut Vec<Frame>> = Vec::new();
        stacks.extend(self.alloc_failures.iter_mut().map(|a| &mut a.kernel_stack));
        stacks.extend(self.oom_kills.iter_mut().map(|k| &mut k.trigger_kernel_stack));
        let compaction = self.compaction.iter_mut().map(|c| &mut c.stalls);
        for row in self.reclaim.iter_mut().chain(compaction) {
            stacks.extend(row.stacks.iter_mut().map(|s| &mut s.kernel_stack));
        }
        for row in self.dirty.iter_mut().flat_map(|d| d.rows.iter_mut()) {
            stacks.extend(row.stacks.iter_mut().map(|s| &mut s.kernel_stack));
        }
        if let Some(thp) = &mut self.thp {
            stacks.extend(thp.processes.iter_mut().map(|p| &mut p.kernel_stack));
        }
        stacks
    }

    /// Every user stack in the report.
    pub fn user_stacks_mut(&mut self) -> Vec<&mut Vec<Frame>> {
        let mut stacks: Vec<&mut Vec<Frame>> = Vec::new();
        stacks.extend(self.alloc_failures.iter_mut().map(|a| &mut a.user_stack));
        stacks.extend(self.oom_kills.iter_mut().map(|k| &mut k.trigger_user_stack));
        let compaction = self.compaction.iter_mut().map(|c| &mut c.stalls);
        for row in self.reclaim.iter_mut().chain(compaction) {
            stacks.extend(row.stacks.iter_mut().map(|s| &mut s.user_stack));
        }
        for row in self.dirty.iter_mut().flat_map(|d| d.rows.iter_mut()) {
            stacks.extend(row.stacks.iter_mut().map(|s| &mut s.user_stack));
        }
        stacks
    }

    /// Adds warnings not already there.
    pub fn warn_all<'a>(&mut self, warnings: impl IntoIterator<Item = &'a String>) {
        for w in warnings {
            if !self.warnings.contains(w) {
                self.warnings.push(w.clone());
            }
        }
    }
}
