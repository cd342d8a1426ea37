//! Which memory cgroup the current task is in, shared by the memory
//! families. Offsets come from BTF at load time.

/// Offsets along `task->cgroups->subsys[memory_cgrp_id]->cgroup->kn->id`
/// and `css->parent`, and `task->mm`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskOffsets {
    /// `task_struct.mm` (NULL for kernel threads: no user stack).
    pub task_mm: u32,
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `css_set.subsys[memory_cgrp_id]`: offset of the array plus 8 x id.
    pub css_set_memory: u32,
    /// `cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `cgroup_subsys_state.parent`.
    pub css_parent: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (the cgroup directory's inode number).
    pub kn_id: u32,
    /// 0 when the kernel has no memory controller: ids read as 0.
    pub memcg_enabled: u32,
    pub _pad: u32,
}

/// Ancestors checked by the `--cgroup` filter.
pub const MEMCG_MAX_DEPTH: usize = 16;

/// `--pid`, `--comm` and `--cgroup`, shared by every family: 0 (or an
/// empty comm) means "any".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Process (thread group) id.
    pub tgid: u32,
    /// Length of `comm`; 0: no comm filter.
    pub comm_len: u32,
    /// Memory cgroup id (inode of its directory); matches it and its
    /// descendants.
    pub memcg_id: u64,
    /// Exact task name (as in /proc/PID/comm, at most 15 bytes).
    pub comm: [u8; 16],
}

impl TaskFilter {
    pub const fn is_active(&self) -> bool {
        self.tgid != 0 || self.comm_len != 0 || self.memcg_id != 0
    }
}
