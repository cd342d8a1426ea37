//! Page allocation failures (`kmem:mm_page_alloc` with no page).

/// Aggregation key: failures with the same stacks, order, gfp mode and
/// process are one row.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocKey {
    /// Stack ids in the `STACKS` map; negative when capture failed.
    pub kernel_stack: i32,
    pub user_stack: i32,
    pub order: u32,
    pub gfp_flags: u32,
    pub tgid: u32,
    pub _pad: u32,
}

/// Per row, per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocStats {
    pub count: u64,
    /// `bpf_ktime_get_ns` of the first and last failure.
    pub first_ns: u64,
    pub last_ns: u64,
    pub memcg_id: u64,
    /// Thread that failed last.
    pub pid: u32,
    pub migratetype: i32,
    pub comm: [u8; 16],
}

/// Streamed when a row is created, so user space can record the process's
/// memory map (for its user stack) while the process still exists. A
/// [`crate::ustack::UserStackHeader`] and the stack copy follow it in the
/// record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocEvent {
    pub key: AllocKey,
    pub ts_ns: u64,
    pub memcg_id: u64,
    pub pid: u32,
    pub migratetype: i32,
    pub comm: [u8; 16],
}

/// Smallest order traced (`--min-order`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocConfig {
    pub min_order: u32,
    pub _pad: u32,
}

pub const ALLOC_ROWS: u32 = 4096;
/// Ring buffer for new-row events, each with up to
/// [`crate::ustack::USER_STACK_MAX`] bytes of user stack.
pub const ALLOC_EVENTS_BYTES: u32 = 1 << 20;
