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
