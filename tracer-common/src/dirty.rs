//! Dirty-page throttling: `writeback:balance_dirty_pages` fires each time a
//! writer is made to wait (`pause` > 0, the length the kernel chose, in
//! ms) or was checked and let through (`pause` <= 0).

use crate::hist::LatencyHist;

/// Rows: process x stack x memory cgroup x backing device.
pub const DIRTY_ROWS: u32 = 1024;

/// Where the fields are in the tracepoint's record, read from its tracefs
/// format file when loading (the record's layout moves between kernels).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirtyOffsets {
    /// `char bdi[32]`: the backing device's name.
    pub bdi: u32,
    /// Pages, global: `dirty` and the throttling `limit`.
    pub dirty: u32,
    pub limit: u32,
    /// Pages of this writeback context (device, cgroup): `wb_dirty` and
    /// `wb_setpoint` (named `bdi_*` on old kernels).
    pub wb_dirty: u32,
    pub wb_setpoint: u32,
    /// `long pause`, ms.
    pub pause: u32,
    /// `ino_t cgroup_ino`: the writeback's memory cgroup; u32::MAX when
    /// the kernel has no such field.
    pub cgroup_ino: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DirtyKey {
    pub tgid: u32,
    pub kernel_stack: i32,
    pub user_stack: i32,
    pub _pad: u32,
    pub cgroup_ino: u64,
    pub bdi: [u8; 32],
}

/// Per row, per CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DirtyStats {
    /// Times checked and let through without a pause.
    pub unpaused: u64,
    /// Global dirty and limit pages, and the writeback context's, at this
    /// CPU's longest pause.
    pub dirty_at_max: u64,
    pub limit_at_max: u64,
    pub wb_dirty_at_max: u64,
    pub wb_setpoint_at_max: u64,
    pub comm: [u8; 16],
    /// Pauses, ns (the kernel's ms x 10^6).
    pub pauses: LatencyHist,
}

impl DirtyStats {
    pub const fn zeroed() -> Self {
        Self {
            unpaused: 0,
            dirty_at_max: 0,
            limit_at_max: 0,
            wb_dirty_at_max: 0,
            wb_setpoint_at_max: 0,
            comm: [0; 16],
            pauses: LatencyHist::zeroed(),
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // Safety: plain-old-data, `#[repr(C)]`, every bit pattern valid.
    unsafe impl aya::Pod for super::DirtyOffsets {}
    unsafe impl aya::Pod for super::DirtyKey {}
    unsafe impl aya::Pod for super::DirtyStats {}
}
