//! OOM kills: `oom:mark_victim` runs in the task that invoked the OOM
//! killer, so the current stacks are the allocation that caused the kill;
//! the victim comes as the tracepoint's task argument. Reaping and the
//! kernel's retries before giving up are tracked alongside.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_RB_FORCE_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    counters::Counter,
    oom::{
        OOM_COUNT_COMPACT_RETRY, OOM_COUNT_RECLAIM_RETRY, OOM_COUNT_SLOTS, OOM_EVENTS_BYTES, OOM_KIND_KILL,
        OOM_KIND_REAP_FINISH, OOM_KIND_REAP_START, OomEvent, OomOffsets, PRESSURE_EVENTS_BYTES,
        PRESSURE_SEEN_ENTRIES, PressureEvent,
    },
};

use crate::{
    both_flavors,
    shared::{
        CurrentTask, Fields, Probe, capture_stacks, count, global, has_user_stack, send_with_user_stack,
        task_memcg_id, task_mm_addr, task_wanted, user_stack_copies_on, user_stack_record,
    },
};

#[unsafe(no_mangle)]
static OOM_OFFSETS: OomOffsets = OomOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_comm: 0,
    task_mm: 0,
    task_signal: 0,
    signal_oom_score_adj: 0,
    mm_total_vm: 0,
    mm_pgtables_bytes: 0,
    mm_rss_stat: 0,
    rss_stride: 0,
    rss_count: 0,
    rss_file: 0,
    rss_anon: 0,
    rss_shmem: 0,
    victim_is_pid: 0,
    _pad: 0,
};

#[map]
static OOM_EVENTS: RingBuf = RingBuf::with_byte_size(OOM_EVENTS_BYTES, 0);
#[map]
static OOM_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(OOM_COUNT_SLOTS, 0);
/// Processes entering reclaim, once per address space (see
/// [`PressureEvent`]).
#[map]
static OOM_PRESSURE_EVENTS: RingBuf = RingBuf::with_byte_size(PRESSURE_EVENTS_BYTES, 0);
/// Address spaces announced on `OOM_PRESSURE_EVENTS`, with their tgid.
#[map]
static OOM_PRESSURE_SEEN: LruHashMap<u64, u32> = LruHashMap::with_max_entries(PRESSURE_SEEN_ENTRIES, 0);

/// One mm counter, as `get_mm_counter` reads it (never negative). Always
/// copied with `bpf_probe_read_kernel`, in the tp_btf program too: before
/// 6.2 the counters are an array of `atomic_long_t`, a typedef, and 6.1's
/// verifier refuses a direct load into it ("Type 'atomic_long_t' is not a
/// struct"), which cost 6.1 its tp_btf OOM program.
#[inline(always)]
fn rss_pages(mm: u64, index: u32, o: &OomOffsets) -> u64 {
    let at = o.mm_rss_stat + index * o.rss_stride + o.rss_count;
    Probe::read::<i64>(mm, at).unwrap_or(0).max(0) as u64
}

#[inline(always)]
fn on_mark_victim<F: CurrentTask, C: StackIdContext>(ctx: &C, victim: u64, uid: u64) {
    let o = global(&OOM_OFFSETS);
    if o.victim_is_pid != 0 {
        on_mark_victim_pid::<F, _>(ctx, victim as u32);
        return;
    }
    let victim_tgid = F::read::<i32>(victim, o.task_tgid).unwrap_or(0) as u32;
    // --pid and --cgroup select kills by their victim.
    let Some(victim_memcg) = task_wanted::<F>(victim, victim_tgid) else {
        return;
    };
    let mm = F::read::<u64>(victim, o.task_mm).unwrap_or(0);
    let signal = F::read::<u64>(victim, o.task_signal).unwrap_or(0);
    let current = F::current_task();
    let user = has_user_stack::<F>(current);
    let (kernel_stack, user_stack) = capture_stacks(ctx, user);
    let pid_tgid = bpf_get_current_pid_tgid();
    let (total_vm, anon_rss, file_rss, shmem_rss, pgtables_bytes) = if mm == 0 {
        (0, 0, 0, 0, 0)
    } else {
        (
            F::read::<u64>(mm, o.mm_total_vm).unwrap_or(0),
            rss_pages(mm, o.rss_anon, &o),
            rss_pages(mm, o.rss_file, &o),
            rss_pages(mm, o.rss_shmem, &o),
            F::read::<i64>(mm, o.mm_pgtables_bytes).unwrap_or(0).max(0) as u64,
        )
    };
    let Some(record) = user_stack_record::<OomEvent>() else {
        return;
    };
    let event = unsafe { &mut *record };
    *event = OomEvent {
        kind: OOM_KIND_KILL,
        victim_pid: F::read::<i32>(victim, o.task_pid).unwrap_or(0) as u32,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        victim_tgid,
        victim_uid: uid as u32,
        victim_comm: F::read::<[u8; 16]>(victim, o.task_comm).unwrap_or([0; 16]),
        victim_memcg,
        total_vm,
        anon_rss,
        file_rss,
        shmem_rss,
        pgtables_bytes,
        oom_score_adj: if signal == 0 {
            0
        } else {
            F::read::<i16>(signal, o.signal_oom_score_adj).unwrap_or(0) as i32
        },
        trigger_pid: pid_tgid as u32,
        trigger_tgid: (pid_tgid >> 32) as u32,
        trigger_kernel_stack: kernel_stack,
        trigger_user_stack: user_stack,
        _pad: 0,
        trigger_comm: bpf_get_current_comm().unwrap_or([0; 16]),
        trigger_memcg: task_memcg_id::<F>(current),
        trigger_mm: task_mm_addr::<F>(current),
    };
    send_with_user_stack(&OOM_EVENTS, record, user);
}

/// `mark_victim(int pid)`: the victim's pid only. The kill is in the
/// trigger's memory cgroup (or above it), so filters apply to the trigger.
#[inline(always)]
fn on_mark_victim_pid<F: CurrentTask, C: StackIdContext>(ctx: &C, victim_pid: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let current = F::current_task();
    let Some(trigger_memcg) = task_wanted::<F>(current, (pid_tgid >> 32) as u32) else {
        return;
    };
    let user = has_user_stack::<F>(current);
    let (kernel_stack, user_stack) = capture_stacks(ctx, user);
    let Some(record) = user_stack_record::<OomEvent>() else {
        return;
    };
    let event = unsafe { &mut *record };
    *event = OomEvent {
        kind: OOM_KIND_KILL,
        victim_pid,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        victim_tgid: victim_pid,
        victim_uid: 0,
        victim_comm: [0; 16],
        victim_memcg: trigger_memcg,
        total_vm: 0,
        anon_rss: 0,
        file_rss: 0,
        shmem_rss: 0,
        pgtables_bytes: 0,
        oom_score_adj: 0,
        trigger_pid: pid_tgid as u32,
        trigger_tgid: (pid_tgid >> 32) as u32,
        trigger_kernel_stack: kernel_stack,
        trigger_user_stack: user_stack,
        _pad: 0,
        trigger_comm: bpf_get_current_comm().unwrap_or([0; 16]),
        trigger_memcg,
        trigger_mm: task_mm_addr::<F>(current),
    };
    send_with_user_stack(&OOM_EVENTS, record, user);
}

#[inline(always)]
fn on_reaping(kind: u32, pid: u64) {
    let Some(mut entry) = OOM_EVENTS.reserve::<OomEvent>(0) else {
        count(Counter::RingbufFull);
        return;
    };
    entry.write(OomEvent {
        kind,
        victim_pid: pid as u32,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        victim_tgid: 0,
        victim_uid: 0,
        victim_comm: [0; 16],
        victim_memcg: 0,
        total_vm: 0,
        anon_rss: 0,
        file_rss: 0,
        shmem_rss: 0,
        pgtables_bytes: 0,
        oom_score_adj: 0,
        trigger_pid: 0,
        trigger_tgid: 0,
        trigger_kernel_stack: -1,
        trigger_user_stack: -1,
        _pad: 0,
        trigger_comm: [0; 16],
        trigger_memcg: 0,
        trigger_mm: 0,
    });
    entry.submit(0);
}

/// A thread entering reclaim: its process is announced the first time
/// (per address space), while it is sure to be alive, so user space can
/// take its memory map in time for an OOM kill it may trigger and not
/// outlive. Only when user stacks are copied (nothing would use it
/// otherwise); filtered as kills are.
#[inline(always)]
fn on_reclaim_begin<F: CurrentTask>() {
    if !user_stack_copies_on() {
        return;
    }
    let task = F::current_task();
    let mm = task_mm_addr::<F>(task);
    if mm == 0 {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if unsafe { OOM_PRESSURE_SEEN.get(mm) }.is_some_and(|&seen| seen == tgid) {
        return;
    }
    if task_wanted::<F>(task, tgid).is_none() {
        return;
    }
    let Some(mut entry) = OOM_PRESSURE_EVENTS.reserve::<PressureEvent>(0) else {
        // Not marked seen: announced at its next reclaim instead.
        count(Counter::RingbufFull);
        return;
    };
    let _ = OOM_PRESSURE_SEEN.insert(mm, tgid, BPF_ANY as u64);
    entry.write(PressureEvent { mm, ts_ns: unsafe { bpf_ktime_get_ns() }, tgid, pid: pid_tgid as u32 });
    // Rare, and the reader races the process's exit: woken every time.
    entry.submit(BPF_RB_FORCE_WAKEUP as u64);
}

#[inline(always)]
fn count_retry(slot: u32) {
    if let Some(counter) = OOM_COUNTS.get_ptr_mut(slot) {
        unsafe { *counter += 1 };
    }
}

// mark_victim(struct task_struct *task, uid_t uid);
// start_task_reaping(int pid); finish_task_reaping(int pid);
// reclaim_retry_zone(...) and compact_retry(...) are only counted.

both_flavors!(mark_victim_btf, mark_victim_raw, "mark_victim", |ctx, F| {
    on_mark_victim::<F, _>(&ctx, ctx.arg(0), ctx.arg(1))
});
both_flavors!(start_task_reaping_btf, start_task_reaping_raw, "start_task_reaping", |ctx, F| {
    on_reaping(OOM_KIND_REAP_START, ctx.arg(0))
});
both_flavors!(finish_task_reaping_btf, finish_task_reaping_raw, "finish_task_reaping", |ctx, F| {
    on_reaping(OOM_KIND_REAP_FINISH, ctx.arg(0))
});
both_flavors!(reclaim_retry_zone_btf, reclaim_retry_zone_raw, "reclaim_retry_zone", |ctx, F| {
    {
        let _ = &ctx;
        count_retry(OOM_COUNT_RECLAIM_RETRY)
    }
});
both_flavors!(compact_retry_btf, compact_retry_raw, "compact_retry", |ctx, F| {
    {
        let _ = &ctx;
        count_retry(OOM_COUNT_COMPACT_RETRY)
    }
});
both_flavors!(
    oom_pressure_direct_reclaim_btf,
    oom_pressure_direct_reclaim_raw,
    "mm_vmscan_direct_reclaim_begin",
    |ctx, F| {
        {
            let _ = &ctx;
            on_reclaim_begin::<F>()
        }
    }
);
both_flavors!(
    oom_pressure_memcg_reclaim_btf,
    oom_pressure_memcg_reclaim_raw,
    "mm_vmscan_memcg_reclaim_begin",
    |ctx, F| {
        {
            let _ = &ctx;
            on_reclaim_begin::<F>()
        }
    }
);
