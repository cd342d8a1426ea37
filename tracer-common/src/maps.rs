//! Names of the kernel programs' maps and read-only globals, as user space
//! looks them up: one spelling for both sides. The kernel side names each
//! map or global exactly so (its static, or `#[map(name = ...)]`); a unit
//! test of `tracer` checks every name here against the built object.

pub const ALLOC_CONFIG: &str = "ALLOC_CONFIG";
pub const ALLOC_EVENTS: &str = "ALLOC_EVENTS";
pub const ALLOC_ROWS: &str = "ALLOC_ROWS";
pub const BLOCK_DISKS: &str = "BLOCK_DISKS";
pub const BLOCK_EVENTS: &str = "BLOCK_EVENTS";
pub const BLOCK_FILTER_DISKS: &str = "BLOCK_FILTER_DISKS";
pub const BLOCK_FROM_INSERT: &str = "BLOCK_FROM_INSERT";
pub const BLOCK_OFFSETS: &str = "BLOCK_OFFSETS";
pub const BLOCK_ROWS: &str = "BLOCK_ROWS";
pub const BLOCK_SLOW_NS: &str = "BLOCK_SLOW_NS";
pub const COUNTERS: &str = "COUNTERS";
pub const DIRTY_OFFSETS: &str = "DIRTY_OFFSETS";
pub const DIRTY_ROWS: &str = "DIRTY_ROWS";
pub const DIRTY_STACK_SAMPLES: &str = "DIRTY_STACK_SAMPLES";
pub const OOM_COUNTS: &str = "OOM_COUNTS";
pub const OOM_EVENTS: &str = "OOM_EVENTS";
pub const OOM_OFFSETS: &str = "OOM_OFFSETS";
pub const OOM_PRESSURE_EVENTS: &str = "OOM_PRESSURE_EVENTS";
pub const STACKS: &str = "STACKS";
pub const STALL_CONFIG: &str = "STALL_CONFIG";
pub const STALL_COUNTS: &str = "STALL_COUNTS";
pub const STALL_EVENTS: &str = "STALL_EVENTS";
pub const STALL_ROWS: &str = "STALL_ROWS";
pub const STALL_STACK_SAMPLES: &str = "STALL_STACK_SAMPLES";
pub const STALL_STACKS: &str = "STALL_STACKS";
pub const STALL_START: &str = "STALL_START";
pub const TASK_FILTER: &str = "TASK_FILTER";
pub const TASK_OFFSETS: &str = "TASK_OFFSETS";
pub const THP_SPLITS: &str = "THP_SPLITS";
pub const USER_STACK_CONFIG: &str = "USER_STACK_CONFIG";
pub const USER_STACK_SAMPLED: &str = "USER_STACK_SAMPLED";
pub const USER_STACK_SCRATCH: &str = "USER_STACK_SCRATCH";

/// Every name above.
pub const ALL: &[&str] = &[
    ALLOC_CONFIG,
    ALLOC_EVENTS,
    ALLOC_ROWS,
    BLOCK_DISKS,
    BLOCK_EVENTS,
    BLOCK_FILTER_DISKS,
    BLOCK_FROM_INSERT,
    BLOCK_OFFSETS,
    BLOCK_ROWS,
    BLOCK_SLOW_NS,
    COUNTERS,
    DIRTY_OFFSETS,
    DIRTY_ROWS,
    DIRTY_STACK_SAMPLES,
    OOM_COUNTS,
    OOM_EVENTS,
    OOM_OFFSETS,
    OOM_PRESSURE_EVENTS,
    STACKS,
    STALL_CONFIG,
    STALL_COUNTS,
    STALL_EVENTS,
    STALL_ROWS,
    STALL_STACK_SAMPLES,
    STALL_STACKS,
    STALL_START,
    TASK_FILTER,
    TASK_OFFSETS,
    THP_SPLITS,
    USER_STACK_CONFIG,
    USER_STACK_SAMPLED,
    USER_STACK_SCRATCH,
];
