//! Health counters: every place where the kernel side could lose data
//! counts it here (one per-CPU array slot each), so reports can say what was
//! lost instead of silently under-counting.

/// Index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A block row could not be created: the row map was full.
    BlockRowsFull = 0,
    /// A block start time could not be stored.
    BlockStartFailed = 1,
    /// Reading a kernel struct field failed.
    ProbeReadFailed = 2,
    /// A stack could not be captured (`bpf_get_stackid` failed).
    StackFailed = 3,
    /// An event did not fit in a ring buffer.
    RingbufFull = 4,
    /// An aggregation map other than the block rows was full.
    MapFull = 5,
    /// A user stack copy for unwinding was not recorded: its registers or
    /// stack could not be read, or the record did not fit in its ring
    /// (the event then went without it).
    UserStackFailed = 6,
}

/// Number of counter slots (keep in step with [`Counter`]).
pub const COUNTER_SLOTS: u32 = 8;

impl Counter {
    pub const ALL: [Counter; 7] = [
        Counter::BlockRowsFull,
        Counter::BlockStartFailed,
        Counter::ProbeReadFailed,
        Counter::StackFailed,
        Counter::RingbufFull,
        Counter::MapFull,
        Counter::UserStackFailed,
    ];

    /// Stable name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::BlockRowsFull => "block_rows_full",
            Counter::BlockStartFailed => "block_start_failed",
            Counter::ProbeReadFailed => "probe_read_failed",
            Counter::StackFailed => "stack_capture_failed",
            Counter::RingbufFull => "ringbuf_full",
            Counter::MapFull => "map_full",
            Counter::UserStackFailed => "user_stack_failed",
        }
    }
}
