//! Memory stalls: direct reclaim, memory cgroup reclaim and direct
//! compaction, timed from begin to end in the thread that stalled, with a
//! sample of its user stack at most once a second per process and stack
//! (`shared::sample_user_stack`); kswapd's wake/sleep as context.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::tracing::StackIdContext,
};
use tracer_common::{
    counters::Counter,
    stall::{
        COMPACT_ATTEMPTS, COMPACT_RESULT_BASE, COMPACT_RESULTS, Ended, InFlight, KSWAPD_AWAKE_NS,
        KSWAPD_SLEEPS, KSWAPD_WAKES, KSWAPD_WAKEUPS_REQUESTED, STALL_ABANDONED, STALL_COMPACTION,
        STALL_COUNT_SLOTS, STALL_DIRECT_RECLAIM, STALL_EVENTS_BYTES, STALL_IN_FLIGHT, STALL_MEMCG_RECLAIM,
        STALL_ROWS, STALL_STACK_ROWS, STALL_UNMATCHED_END, StallConfig, StallEvent, StallKey, StallStackKey,
        StallStackStats, StallStart, StallStats, StallTask, stall_begin, stall_end,
    },
    ustack::STACK_SAMPLE_EVENTS_BYTES,
};

use crate::{
    both_flavors,
    shared::{
        CurrentTask, Fields, capture_stacks, count, global, has_user_stack, row_for, sample_user_stack,
        task_wanted,
    },
};

#[unsafe(no_mangle)]
static STALL_CONFIG: StallConfig = StallConfig { cc_direct: u32::MAX, _pad: 0 };

/// Threads inside a stall. LRU: a thread that exits mid-stall ages out.
#[map]
static STALL_START: LruHashMap<StallTask, StallStart> = LruHashMap::with_max_entries(STALL_IN_FLIGHT, 0);
/// Rows are allocated on first use: each holds a histogram per CPU.
#[map(name = "STALL_ROWS")]
static STALL_ROWS_MAP: PerCpuHashMap<StallKey, StallStats> =
    PerCpuHashMap::with_max_entries(STALL_ROWS, BPF_F_NO_PREALLOC);
#[map]
static STALL_ZERO: PerCpuArray<StallStats> = PerCpuArray::with_max_entries(1, 0);
#[map]
static STALL_STACKS: PerCpuHashMap<StallStackKey, StallStackStats> =
    PerCpuHashMap::with_max_entries(STALL_STACK_ROWS, 0);
#[map]
static STALL_EVENTS: RingBuf = RingBuf::with_byte_size(STALL_EVENTS_BYTES, 0);
/// User stack samples of stalls, for user space to unwind.
#[map]
static STALL_STACK_SAMPLES: RingBuf = RingBuf::with_byte_size(STACK_SAMPLE_EVENTS_BYTES, 0);
#[map]
static STALL_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STALL_COUNT_SLOTS, 0);
/// kswapd wake time per node.
#[map]
static KSWAPD_AWAKE: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

#[inline(always)]
fn bump(slot: u32, by: u64) {
    if let Some(counter) = STALL_COUNTS.get_ptr_mut(slot) {
        unsafe { *counter += by };
    }
}

/// The in-flight LRU map, for the pairing rules in `tracer_common::stall`.
struct KernelInFlight;

impl InFlight for KernelInFlight {
    #[inline(always)]
    fn take(&mut self, task: StallTask) -> Option<StallStart> {
        let start = unsafe { STALL_START.get(task) }.copied()?;
        let _ = STALL_START.remove(task);
        Some(start)
    }

    #[inline(always)]
    fn put(&mut self, task: StallTask, start: StallStart) -> bool {
        let open = unsafe { STALL_START.get(task) }.is_some();
        let _ = STALL_START.insert(task, start, BPF_ANY as u64);
        open
    }
}

#[inline(always)]
fn on_begin<F: CurrentTask, C: StackIdContext>(ctx: &C, kind: u32, order: i32, gfp: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let task = F::current_task();
    if task_wanted::<F>(task, (pid_tgid >> 32) as u32).is_none() {
        return;
    }
    let (kernel_stack, user_stack) = capture_stacks(ctx, has_user_stack::<F>(task));
    let start =
        StallStart { ts_ns: unsafe { bpf_ktime_get_ns() }, order, gfp_flags: gfp, kernel_stack, user_stack };
    if stall_begin(&mut KernelInFlight, StallTask { pid: pid_tgid as u32, kind }, start) {
        bump(STALL_ABANDONED + kind, 1);
    }
    sample_user_stack(&STALL_STACK_SAMPLES, kind, pid_tgid, user_stack);
}

#[inline(always)]
fn on_end<F: CurrentTask>(kind: u32, result: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let (start, duration) =
        match stall_end(&mut KernelInFlight, StallTask { pid: pid_tgid as u32, kind }, now) {
            Ended::Timed { start, duration_ns } => (start, duration_ns),
            Ended::Unmatched => {
                // Began before tracing (or filtered out at begin): not timed.
                let filtered = task_wanted::<F>(F::current_task(), (pid_tgid >> 32) as u32).is_none();
                if !filtered {
                    bump(STALL_UNMATCHED_END + kind, 1);
                }
                return;
            }
        };
    let tgid = (pid_tgid >> 32) as u32;
    let memcg_id = task_wanted::<F>(F::current_task(), tgid).unwrap_or(0);
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);

    if let Some(row) =
        row_for(&STALL_ROWS_MAP, &STALL_ZERO, &StallKey { kind, tgid, memcg_id }, Counter::MapFull)
    {
        let row = unsafe { &mut *row };
        row.latency.record(duration);
        row.comm = comm;
        if kind != STALL_COMPACTION {
            row.reclaimed += result;
        }
    }
    let stack_key =
        StallStackKey { kind, kernel_stack: start.kernel_stack, user_stack: start.user_stack, tgid };
    match STALL_STACKS.get_ptr_mut(stack_key) {
        Some(s) => unsafe {
            (*s).count += 1;
            (*s).total_ns += duration;
        },
        None => {
            let stats = StallStackStats { count: 1, total_ns: duration };
            if STALL_STACKS.insert(stack_key, stats, BPF_NOEXIST as u64).is_err() {
                count(Counter::MapFull);
            }
        }
    }
    match STALL_EVENTS.reserve::<StallEvent>(0) {
        Some(mut entry) => {
            entry.write(StallEvent {
                start_ns: start.ts_ns,
                duration_ns: duration,
                memcg_id,
                result,
                kind,
                pid: pid_tgid as u32,
                tgid,
                order: start.order,
                gfp_flags: start.gfp_flags,
                _pad: 0,
                comm,
            });
            entry.submit(0);
        }
        None => count(Counter::RingbufFull),
    }
}

/// Direct compaction only: kcompactd compacts in the background, nobody
/// waits for it.
#[inline(always)]
fn is_direct<F: Fields>(cc: u64) -> bool {
    let offset = global(&STALL_CONFIG).cc_direct;
    offset == u32::MAX || F::read::<u8>(cc, offset).unwrap_or(0) != 0
}

#[inline(always)]
fn on_compaction_end<F: CurrentTask>(cc: u64, status: u64) {
    if !is_direct::<F>(cc) {
        return;
    }
    let status = status as u32;
    if status < COMPACT_RESULTS {
        bump(COMPACT_RESULT_BASE + status, 1);
    }
    on_end::<F>(STALL_COMPACTION, status as u64);
}

#[inline(always)]
fn on_kswapd_wake(nid: u64) {
    bump(KSWAPD_WAKES, 1);
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = KSWAPD_AWAKE.insert(nid as u32, now, BPF_NOEXIST as u64);
}

#[inline(always)]
fn on_kswapd_sleep(nid: u64) {
    bump(KSWAPD_SLEEPS, 1);
    let nid = nid as u32;
    if let Some(woke) = unsafe { KSWAPD_AWAKE.get(nid) }.copied() {
        let _ = KSWAPD_AWAKE.remove(nid);
        bump(KSWAPD_AWAKE_NS, unsafe { bpf_ktime_get_ns() }.saturating_sub(woke));
    }
}

// Entry points. vmscan begin events are (int order, gfp_t gfp_flags), end
// events (unsigned long nr_reclaimed); compaction begin/end start with
// (struct compact_control *cc, ...), end's fifth argument is the status;
// kswapd_wake(int nid, int zid, int order), kswapd_sleep(int nid).

both_flavors!(
    mm_vmscan_direct_reclaim_begin_btf,
    mm_vmscan_direct_reclaim_begin_raw,
    "mm_vmscan_direct_reclaim_begin",
    |ctx, F| {
        on_begin::<F, _>(&ctx, STALL_DIRECT_RECLAIM, ctx.arg::<u64>(0) as i32, ctx.arg::<u64>(1) as u32)
    }
);
both_flavors!(
    mm_vmscan_direct_reclaim_end_btf,
    mm_vmscan_direct_reclaim_end_raw,
    "mm_vmscan_direct_reclaim_end",
    |ctx, F| { on_end::<F>(STALL_DIRECT_RECLAIM, ctx.arg(0)) }
);
both_flavors!(
    mm_vmscan_memcg_reclaim_begin_btf,
    mm_vmscan_memcg_reclaim_begin_raw,
    "mm_vmscan_memcg_reclaim_begin",
    |ctx, F| {
        on_begin::<F, _>(&ctx, STALL_MEMCG_RECLAIM, ctx.arg::<u64>(0) as i32, ctx.arg::<u64>(1) as u32)
    }
);
both_flavors!(
    mm_vmscan_memcg_reclaim_end_btf,
    mm_vmscan_memcg_reclaim_end_raw,
    "mm_vmscan_memcg_reclaim_end",
    |ctx, F| { on_end::<F>(STALL_MEMCG_RECLAIM, ctx.arg(0)) }
);
both_flavors!(mm_compaction_begin_btf, mm_compaction_begin_raw, "mm_compaction_begin", |ctx, F| {
    if is_direct::<F>(ctx.arg(0)) {
        on_begin::<F, _>(&ctx, STALL_COMPACTION, -1, 0)
    }
});
both_flavors!(mm_compaction_end_btf, mm_compaction_end_raw, "mm_compaction_end", |ctx, F| {
    on_compaction_end::<F>(ctx.arg(0), ctx.arg(4))
});
both_flavors!(
    mm_compaction_try_to_compact_pages_btf,
    mm_compaction_try_to_compact_pages_raw,
    "mm_compaction_try_to_compact_pages",
    |ctx, F| {
        {
            let _ = &ctx;
            bump(COMPACT_ATTEMPTS, 1)
        }
    }
);
both_flavors!(mm_vmscan_kswapd_wake_btf, mm_vmscan_kswapd_wake_raw, "mm_vmscan_kswapd_wake", |ctx, F| {
    on_kswapd_wake(ctx.arg(0))
});
both_flavors!(mm_vmscan_kswapd_sleep_btf, mm_vmscan_kswapd_sleep_raw, "mm_vmscan_kswapd_sleep", |ctx, F| {
    on_kswapd_sleep(ctx.arg(0))
});
both_flavors!(
    mm_vmscan_wakeup_kswapd_btf,
    mm_vmscan_wakeup_kswapd_raw,
    "mm_vmscan_wakeup_kswapd",
    |ctx, F| {
        {
            let _ = &ctx;
            bump(KSWAPD_WAKEUPS_REQUESTED, 1)
        }
    }
);
