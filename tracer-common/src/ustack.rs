//! User registers and a copy of the top of the user stack, taken by the
//! kernel programs at rare events (allocation failures, OOM triggers) so
//! that user space can unwind binaries without frame pointers from their
//! CFI, as `perf --call-graph dwarf` does.
//!
//! A ring buffer record carrying one is the family's event `E`, then a
//! [`UserStackHeader`], then `len` bytes of stack starting at `sp`.

/// Most stack bytes one record can carry (the per-event copy is the
/// configured size, at most this). A power of two, and with the event and
/// header it must fit a per-CPU map value (at most 32 KiB).
pub const USER_STACK_MAX: usize = 16384;
/// `USER_STACK_MAX - 1`: masks a length into the copy buffer.
pub const USER_STACK_MASK: u32 = (USER_STACK_MAX - 1) as u32;
/// What perf copies by default (`--call-graph dwarf,8192`).
pub const USER_STACK_DEFAULT: u32 = 8192;

/// Where the user registers are in `struct pt_regs` (from BTF) and how
/// much stack to copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserStackConfig {
    /// Offsets of `pt_regs.ip`, `.sp` and `.bp`.
    pub regs_ip: u32,
    pub regs_sp: u32,
    pub regs_bp: u32,
    /// Bytes to copy from the user stack pointer up; 0 copies nothing
    /// (and records no registers). At most [`USER_STACK_MAX`].
    pub copy_bytes: u32,
}

/// Follows the family's event in a record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserStackHeader {
    /// User registers of the current task when the event fired (its
    /// state at kernel entry: the syscall or fault that got here).
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of stack that follow, copied from `sp` up. Less than
    /// `requested` when the full size faulted (the top of the stack is
    /// nearer than that); 0 when even the page of `sp` could not be read.
    pub len: u32,
    /// The configured size.
    pub requested: u32,
}

/// Size of the header, as the kernel and user space lay records out.
pub const USER_STACK_HEADER_BYTES: usize = core::mem::size_of::<UserStackHeader>();

/// Stalls and throttling pauses are aggregated by the kernel's
/// frame-pointer stack id (`bpf_get_stackid`), and can be frequent: their
/// user stacks are copied as samples, at most one per process and user
/// stack id every [`STACK_SAMPLE_INTERVAL_NS`], so user space can show the
/// unwound stack in place of the frame-pointer walk.
///
/// Which process and user stack a sample is of: the key of the map of the
/// last sample's time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackSampleKey {
    pub tgid: u32,
    /// Stack id in the `STACKS` map (the frame-pointer walk).
    pub user_stack: i32,
}

/// A sample's record: this event, then a [`UserStackHeader`] and the
/// stack copy.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackSampleEvent {
    pub ts_ns: u64,
    pub key: StackSampleKey,
    /// The thread, and what it was entering: a `stall` kind, or
    /// [`STACK_SAMPLE_DIRTY`].
    pub pid: u32,
    pub kind: u32,
}

/// [`StackSampleEvent::kind`] of a throttling pause (the stall kinds are
/// 0..3).
pub const STACK_SAMPLE_DIRTY: u32 = 16;
/// Least time between two samples of one process and user stack id.
pub const STACK_SAMPLE_INTERVAL_NS: u64 = 1_000_000_000;
/// Process and stack pairs whose last sample time is kept (least recently
/// sampled forgotten first).
pub const STACK_SAMPLE_KEYS: u32 = 4096;
/// Ring buffer of samples, per family that takes them: room for 30 of the
/// largest (16 KiB copies), 60 of the default 8 KiB, between two reads.
pub const STACK_SAMPLE_EVENTS_BYTES: u32 = 1 << 19;
