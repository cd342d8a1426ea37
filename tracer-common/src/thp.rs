//! THP splits, counted by a function hook (fentry or kprobe) where the
//! kernel allows one.

/// THP splits counted by a function hook (fentry or kprobe), where the
/// kernel allows one; key: process and kernel stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SplitKey {
    pub tgid: u32,
    pub kernel_stack: i32,
    /// 0: PMD split (`__split_huge_pmd`), 1: page split.
    pub what: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitStats {
    pub count: u64,
    pub comm: [u8; 16],
}
