//! OOM kills (`oom:mark_victim`), OOM reaping and the kernel's retries.

/// Layout the OOM programs read, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OomOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_mm: u32,
    pub task_signal: u32,
    /// `signal_struct.oom_score_adj` (short).
    pub signal_oom_score_adj: u32,
    /// `mm_struct.total_vm` (pages).
    pub mm_total_vm: u32,
    /// `mm_struct.pgtables_bytes` (atomic_long_t).
    pub mm_pgtables_bytes: u32,
    /// `mm_struct.rss_stat`: counter `i` is at
    /// `rss_stat + i * rss_stride + rss_count` (an s64/long of pages).
    pub mm_rss_stat: u32,
    pub rss_stride: u32,
    pub rss_count: u32,
    /// Indices of MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES.
    pub rss_file: u32,
    pub rss_anon: u32,
    pub rss_shmem: u32,
    /// Non-zero where `oom:mark_victim` gives the victim's pid, not its
    /// task (`mark_victim(int pid)`, kernels before the task and uid were
    /// added, e.g. 6.1): no victim detail can be read from the kernel.
    pub victim_is_pid: u32,
    pub _pad: u32,
}

pub const OOM_KIND_KILL: u32 = 1;
pub const OOM_KIND_REAP_START: u32 = 2;
pub const OOM_KIND_REAP_FINISH: u32 = 3;

/// One event on the OOM ring: a kill (all fields) or a reaping step
/// (`kind`, `ts_ns`, `victim_pid` only). A kill's record goes on with a
/// [`crate::ustack::UserStackHeader`] and the trigger's user stack copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomEvent {
    pub kind: u32,
    pub victim_pid: u32,
    pub ts_ns: u64,
    pub victim_tgid: u32,
    pub victim_uid: u32,
    pub victim_comm: [u8; 16],
    pub victim_memcg: u64,
    /// Pages, as the kernel's own tracepoint computes them.
    pub total_vm: u64,
    pub anon_rss: u64,
    pub file_rss: u64,
    pub shmem_rss: u64,
    pub pgtables_bytes: u64,
    pub oom_score_adj: i32,
    /// The task the OOM killer ran in: its allocation caused the kill.
    pub trigger_pid: u32,
    pub trigger_tgid: u32,
    pub trigger_kernel_stack: i32,
    pub trigger_user_stack: i32,
    pub _pad: u32,
    pub trigger_comm: [u8; 16],
    pub trigger_memcg: u64,
    /// The trigger's address space (`mm_struct` address, 0 if none): which
    /// [`PressureEvent`] snapshot of its memory map is the same process.
    pub trigger_mm: u64,
}

/// A process under memory pressure, once per address space: the first
/// time one of its threads enters direct or memory cgroup reclaim (which
/// every process the OOM killer kills for its own allocation has done
/// just before). User space snapshots its memory map then, for unwinding
/// its OOM trigger stack after it has exited.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PressureEvent {
    /// `mm_struct` address: the process's identity until it exits or execs.
    pub mm: u64,
    pub ts_ns: u64,
    pub tgid: u32,
    pub pid: u32,
}

/// Address spaces already announced (an LRU: one evicted is announced
/// again at its next reclaim).
pub const PRESSURE_SEEN_ENTRIES: u32 = 4096;
/// Announcements are tiny and once per process: room for 2,000 at once.
pub const PRESSURE_EVENTS_BYTES: u32 = 1 << 16;

/// Slots of the `OOM_COUNTS` per-CPU array.
pub const OOM_COUNT_RECLAIM_RETRY: u32 = 0;
pub const OOM_COUNT_COMPACT_RETRY: u32 = 1;
pub const OOM_COUNT_SLOTS: u32 = 2;

/// Kills are rare but must never be lost: room for thousands.
pub const OOM_EVENTS_BYTES: u32 = 1 << 20;
