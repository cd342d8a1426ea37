//! Dirty-page throttling: `writeback:balance_dirty_pages`, a classic
//! tracepoint whose record carries the device, the memory cgroup and the
//! pause the kernel chose; its fields are read at the offsets user space
//! found in the tracepoint's format file. Aggregated per process, stack,
//! cgroup and device; only user stack samples are streamed (see
//! `shared::sample_user_stack`).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_NO_PREALLOC,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::{map, tracepoint},
    maps::{PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
};
use tracer_common::{
    counters::Counter,
    dirty::{DIRTY_ROWS, DirtyKey, DirtyOffsets, DirtyStats},
    ustack::{STACK_SAMPLE_DIRTY, STACK_SAMPLE_EVENTS_BYTES},
};

use crate::shared::{
    CurrentTask as _, Fields as _, Probe, capture_stacks, global, has_user_stack, row_for, sample_user_stack,
    task_wanted,
};

/// Set by the loader from the format file.
#[unsafe(no_mangle)]
static DIRTY_OFFSETS: DirtyOffsets = DirtyOffsets {
    bdi: 0,
    dirty: 0,
    limit: 0,
    wb_dirty: 0,
    wb_setpoint: 0,
    pause: 0,
    cgroup_ino: u32::MAX,
    _pad: 0,
};

#[map(name = "DIRTY_ROWS")]
static DIRTY_ROWS_MAP: PerCpuHashMap<DirtyKey, DirtyStats> =
    PerCpuHashMap::with_max_entries(DIRTY_ROWS, BPF_F_NO_PREALLOC);
#[map]
static DIRTY_ZERO: PerCpuArray<DirtyStats> = PerCpuArray::with_max_entries(1, 0);
/// User stack samples of throttled writers, for user space to unwind.
#[map]
static DIRTY_STACK_SAMPLES: RingBuf = RingBuf::with_byte_size(STACK_SAMPLE_EVENTS_BYTES, 0);

#[tracepoint(category = "writeback", name = "balance_dirty_pages")]
pub fn balance_dirty_pages(ctx: TracePointContext) -> u32 {
    on_balance_dirty_pages(&ctx);
    0
}

#[inline(always)]
fn on_balance_dirty_pages(ctx: &TracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let task = Probe::current_task();
    if task_wanted::<Probe>(task, tgid).is_none() {
        return;
    }
    let offsets = global(&DIRTY_OFFSETS);
    let record = ctx.as_ptr() as u64;
    let field = |offset: u32| Probe::read::<u64>(record, offset).unwrap_or(0);
    let pause_ms = field(offsets.pause) as i64;
    let cgroup_ino = if offsets.cgroup_ino == u32::MAX { 0 } else { field(offsets.cgroup_ino) };
    let (kernel_stack, user_stack) = capture_stacks(ctx, has_user_stack::<Probe>(task));
    if pause_ms > 0 {
        sample_user_stack(&DIRTY_STACK_SAMPLES, STACK_SAMPLE_DIRTY, pid_tgid, user_stack);
    }
    let key = DirtyKey {
        tgid,
        kernel_stack,
        user_stack,
        _pad: 0,
        cgroup_ino,
        bdi: Probe::read::<[u8; 32]>(record, offsets.bdi).unwrap_or([0; 32]),
    };
    let Some(row) = row_for(&DIRTY_ROWS_MAP, &DIRTY_ZERO, &key, Counter::MapFull) else {
        return;
    };
    // Per-CPU row: plain updates are race-free.
    let row = unsafe { &mut *row };
    row.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    if pause_ms <= 0 {
        row.unpaused += 1;
        return;
    }
    let pause_ns = pause_ms as u64 * 1_000_000;
    if pause_ns > row.pauses.max_ns {
        row.dirty_at_max = field(offsets.dirty);
        row.limit_at_max = field(offsets.limit);
        row.wb_dirty_at_max = field(offsets.wb_dirty);
        row.wb_setpoint_at_max = field(offsets.wb_setpoint);
    }
    row.pauses.record(pause_ns);
}
