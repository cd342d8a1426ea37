//! Block I/O latency: what the kernel programs aggregate per device and
//! request operation.

use crate::hist::LatencyHist;

/// Aggregation key. `dev` is the kernel's `dev_t` (major << 20 | minor),
/// `op` the raw `req_op` value (`cmd_flags & REQ_OP_MASK`); user space names
/// it from BTF's `enum req_op`, so the kernel side needs no table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey {
    pub dev: u32,
    pub op: u32,
}

/// Per device and operation, per CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockStats {
    /// Completed requests (whether timed or not).
    pub completed: u64,
    /// Bytes completed (the completion's own byte count).
    pub bytes: u64,
    /// Completions with a non-zero block status.
    pub errors: u64,
    /// Completions without a start time: empty PREFLUSH writes completed by
    /// the flush machinery without being issued, requests issued before
    /// tracing began, or whose start entry was evicted. Counted, never
    /// silently dropped.
    pub untimed: u64,
    pub latency: LatencyHist,
}

impl BlockStats {
    pub const fn zeroed() -> Self {
        Self { completed: 0, bytes: 0, errors: 0, untimed: 0, latency: LatencyHist::zeroed() }
    }
}

/// Offsets resolved from BTF at load time and handed to the kernel programs
/// as read-only globals: nothing about kernel structs is compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockOffsets {
    /// `struct request`: `q`.
    pub rq_q: u32,
    /// `struct request`: `cmd_flags`.
    pub rq_cmd_flags: u32,
    /// `struct request_queue`: `disk` (kernels where the request has no
    /// `rq_disk`).
    pub q_disk: u32,
    /// `struct request`: `rq_disk`, or `u32::MAX` when absent (newer kernels).
    pub rq_disk: u32,
    /// `struct gendisk`: `major` (followed by `first_minor`, both `int`).
    pub disk_major: u32,
    /// `struct gendisk`: `first_minor`.
    pub disk_first_minor: u32,
    /// Mask of the operation bits in `cmd_flags` (`REQ_OP_MASK`).
    pub req_op_mask: u32,
    /// `struct request`: `__sector`.
    pub rq_sector: u32,
}

/// A request slower than `--slow-io`, streamed to user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlowRequest {
    /// Completion time (`bpf_ktime_get_ns`).
    pub ts_ns: u64,
    pub latency_ns: u64,
    pub sector: u64,
    pub dev: u32,
    pub op: u32,
    pub bytes: u32,
    /// Process that started the request, and its command name as the
    /// kernel had it then: the process may be gone when user space reads
    /// the event.
    pub tgid: u32,
    pub comm: [u8; 16],
}

/// Ring buffer for slow requests.
pub const BLOCK_EVENTS_BYTES: u32 = 256 * 1024;

/// One way of the start table: a request's address, its start time, and
/// the process running when it started (for slow request reports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartWay {
    /// Address of the `struct request`; 0 marks a free way.
    pub rq: u64,
    pub start_ns: u64,
    pub tgid: u32,
    pub _pad: u32,
    /// The starting task's command name; filled in only with `--slow-io`
    /// (the one thing that reports it).
    pub comm: [u8; 16],
}

/// Ways per set.
pub const BLOCK_START_WAYS: usize = 4;

/// One set of the start table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartSet {
    pub ways: [StartWay; BLOCK_START_WAYS],
}

/// Sets in the start table (a power of two): 16384 x 4 ways holds 65536
/// requests in flight in 2.5 MiB. A direct-indexed table instead of a hash
/// map, because map updates per request cost several percent of IOPS.
pub const BLOCK_START_SETS: u32 = 1 << 14;
/// Rows (device x operation) kept in the kernel.
pub const BLOCK_ROWS: u32 = 1024;
/// Devices accepted by the `--disk` filter.
pub const BLOCK_FILTER_ENTRIES: u32 = 64;
