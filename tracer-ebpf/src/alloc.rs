//! Page allocation failures: `kmem:mm_page_alloc` fires for every page
//! allocation, millions per second; only failures (no page) go past the
//! first compare.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{PerCpuHashMap, RingBuf},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    alloc::{ALLOC_EVENTS_BYTES, ALLOC_ROWS, AllocConfig, AllocEvent, AllocKey, AllocStats},
    counters::Counter,
};

use crate::{
    both_flavors,
    shared::{
        CurrentTask, capture_stacks, count, global, has_user_stack, send_with_user_stack, task_wanted,
        user_stack_record,
    },
};

/// `--min-order`.
#[unsafe(no_mangle)]
static ALLOC_CONFIG: AllocConfig = AllocConfig { min_order: 0, _pad: 0 };

#[map(name = "ALLOC_ROWS")]
static ALLOC_ROWS_MAP: PerCpuHashMap<AllocKey, AllocStats> = PerCpuHashMap::with_max_entries(ALLOC_ROWS, 0);
/// New rows, with the user registers and stack, for user space to unwind
/// them and capture the process's mappings in time.
#[map]
static ALLOC_EVENTS: RingBuf = RingBuf::with_byte_size(ALLOC_EVENTS_BYTES, 0);

#[inline(always)]
fn on_page_alloc<F: CurrentTask, C: StackIdContext>(
    ctx: &C,
    page: u64,
    order: u64,
    gfp: u64,
    migratetype: u64,
) {
    if page != 0 {
        return;
    }
    let order = order as u32;
    if order < global(&ALLOC_CONFIG).min_order {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let task = F::current_task();
    let Some(memcg_id) = task_wanted::<F>(task, tgid) else {
        return;
    };
    let user = has_user_stack::<F>(task);
    let (kernel_stack, user_stack) = capture_stacks(ctx, user);
    let key = AllocKey { kernel_stack, user_stack, order, gfp_flags: gfp as u32, tgid, _pad: 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    let pid = pid_tgid as u32;
    if let Some(row) = ALLOC_ROWS_MAP.get_ptr_mut(key) {
        // Per-CPU row: plain updates are race-free.
        let row = unsafe { &mut *row };
        if row.count == 0 {
            row.first_ns = now;
        }
        row.count += 1;
        row.last_ns = now;
        row.pid = pid;
        row.comm = comm;
        return;
    }
    let row = AllocStats {
        count: 1,
        first_ns: now,
        last_ns: now,
        memcg_id,
        pid,
        migratetype: migratetype as i32,
        comm,
    };
    match ALLOC_ROWS_MAP.insert(key, row, BPF_NOEXIST as u64) {
        Ok(()) => {}
        // Created by another CPU meanwhile: ours is the zeroed slot.
        Err(-17) => {
            if let Some(slot) = ALLOC_ROWS_MAP.get_ptr_mut(key) {
                unsafe { *slot = row };
            }
            return;
        }
        Err(_) => {
            count(Counter::MapFull);
            return;
        }
    }
    // A new row: its user stack, to unwind where frame pointers are missing.
    let Some(record) = user_stack_record::<AllocEvent>() else {
        return;
    };
    unsafe {
        *record = AllocEvent { key, ts_ns: now, memcg_id, pid, migratetype: migratetype as i32, comm };
    }
    send_with_user_stack(&ALLOC_EVENTS, record, user);
}

// mm_page_alloc(struct page *page, unsigned int order, gfp_t gfp_flags,
// int migratetype).

both_flavors!(mm_page_alloc_btf, mm_page_alloc_raw, "mm_page_alloc", |ctx, F| {
    on_page_alloc::<F, _>(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3))
});
