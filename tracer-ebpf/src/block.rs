//! Block I/O latency: request start (issue, or insert with `--queued`) to
//! completion, per device and operation, aggregated in per-CPU rows.
//!
//! Each tracepoint has two entry points over one body: BTF tracepoints
//! (`tp_btf`, direct struct loads, cheapest) and raw tracepoints (loads
//! through `bpf_probe_read_kernel`) for kernels that refuse `tp_btf`. User
//! space attaches one of the two.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_current_comm},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tracer_common::{
    block::{
        BLOCK_EVENTS_BYTES, BLOCK_FILTER_ENTRIES, BLOCK_ROWS as BLOCK_ROW_ENTRIES, BLOCK_START_SETS,
        BlockKey, BlockOffsets, BlockStats, SlowRequest, StartSet, StartWay,
    },
    counters::Counter,
};

use crate::{
    both_flavors,
    shared::{CurrentTask, Fields, count, global, row_for, task_filter_active, task_wanted},
};

/// Field offsets, filled in from BTF by the loader.
#[unsafe(no_mangle)]
static BLOCK_OFFSETS: BlockOffsets = BlockOffsets {
    rq_q: 0,
    rq_cmd_flags: 0,
    q_disk: 0,
    rq_disk: u32::MAX,
    disk_major: 0,
    disk_first_minor: 0,
    req_op_mask: 0xff,
    rq_sector: 0,
};
/// 1 when `--disk` restricts tracing to the devices in `BLOCK_DISKS`.
#[unsafe(no_mangle)]
static BLOCK_FILTER_DISKS: u8 = 0;
/// 1 when latency starts at insert (queue + device time).
#[unsafe(no_mangle)]
static BLOCK_FROM_INSERT: u8 = 0;
/// Requests at least this slow are streamed (`--slow-io`).
#[unsafe(no_mangle)]
static BLOCK_SLOW_NS: u64 = u64::MAX;

/// Start times of requests in flight: a set-associative table keyed by the
/// request's address. Bounded by construction; a request that finds its
/// set full is counted (`block_start_failed`) and completes untimed.
#[map]
static BLOCK_START: Array<StartSet> = Array::with_max_entries(BLOCK_START_SETS, 0);
#[map]
static BLOCK_ROWS: PerCpuHashMap<BlockKey, BlockStats> =
    PerCpuHashMap::with_max_entries(BLOCK_ROW_ENTRIES, 0);
/// Devices (`dev_t`) accepted by the `--disk` filter.
#[map]
static BLOCK_DISKS: HashMap<u32, u8> = HashMap::with_max_entries(BLOCK_FILTER_ENTRIES, 0);
#[map]
static BLOCK_EVENTS: RingBuf = RingBuf::with_byte_size(BLOCK_EVENTS_BYTES, 0);
/// One zeroed row, the template for new rows (too big for the BPF stack).
#[map]
static BLOCK_ZERO: PerCpuArray<BlockStats> = PerCpuArray::with_max_entries(1, 0);

/// Which set of the start table holds a request (Fibonacci hashing).
#[inline(always)]
fn start_set(addr: u64) -> Option<*mut StartSet> {
    let index = (addr.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50) as u32 & (BLOCK_START_SETS - 1);
    BLOCK_START.get_ptr_mut(index)
}

/// `dev_t` of the disk a request belongs to.
#[inline(always)]
fn request_dev<F: Fields>(rq: u64, offsets: &BlockOffsets) -> Option<u32> {
    let disk: u64 = if offsets.rq_disk != u32::MAX {
        F::read(rq, offsets.rq_disk)?
    } else {
        let queue: u64 = F::read(rq, offsets.rq_q)?;
        if queue == 0 {
            return None;
        }
        F::read(queue, offsets.q_disk)?
    };
    if disk == 0 {
        return None;
    }
    let major: u32 = F::read(disk, offsets.disk_major)?;
    let minor: u32 = F::read(disk, offsets.disk_first_minor)?;
    Some((major << 20) | minor)
}

#[inline(always)]
fn disk_wanted(dev: u32) -> bool {
    global(&BLOCK_FILTER_DISKS) == 0 || unsafe { BLOCK_DISKS.get(dev) }.is_some()
}

/// Records that `rq` starts now. With `keep_earlier`, a start already
/// recorded for it (its insert) is kept.
#[inline(always)]
fn record_start<F: CurrentTask>(rq: u64, keep_earlier: bool) {
    // A process filter applies where the submitter is running: at start.
    if task_filter_active() {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if task_wanted::<F>(F::current_task(), tgid).is_none() {
            return;
        }
    }
    if global(&BLOCK_FILTER_DISKS) != 0 {
        match request_dev::<F>(rq, &global(&BLOCK_OFFSETS)) {
            Some(dev) if disk_wanted(dev) => {}
            _ => return,
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let addr = F::addr(rq);
    let Some(set) = start_set(addr) else {
        return;
    };
    let set = unsafe { &mut *set };
    // Issued again (requeued) or issued after insert: same way.
    for way in set.ways.iter_mut() {
        if way.rq == addr {
            if !keep_earlier {
                stamp(way, now, tgid);
            }
            return;
        }
    }
    for way in set.ways.iter_mut() {
        if way.rq == 0 {
            way.rq = addr;
            stamp(way, now, tgid);
            return;
        }
    }
    count(Counter::BlockStartFailed);
}

/// A request's start: when, by which process, and (with `--slow-io`, which
/// reports it) that process's command name now, while it still runs.
#[inline(always)]
fn stamp(way: &mut StartWay, now: u64, tgid: u32) {
    way.start_ns = now;
    way.tgid = tgid;
    if global(&BLOCK_SLOW_NS) != u64::MAX {
        // Into the table directly: no copy through the BPF stack. On
        // failure the helper zeroes it (an empty name, as before).
        unsafe { bpf_get_current_comm(way.comm.as_mut_ptr().cast(), way.comm.len() as u32) };
    }
}

/// Takes `rq`'s start out of the table; `rq` 0 in the result: none.
/// A plain struct rather than an `Option`: LLVM loads an `Option`'s
/// payload off the stack before testing it, and 6.1's verifier refuses a
/// read of stack that the `None` path left uninitialised.
#[inline(always)]
fn take_start(addr: u64) -> StartWay {
    let mut taken = StartWay { rq: 0, start_ns: 0, tgid: 0, _pad: 0, comm: [0; 16] };
    if addr == 0 {
        return taken;
    }
    if let Some(set) = start_set(addr) {
        let set = unsafe { &mut *set };
        for way in set.ways.iter_mut() {
            if way.rq == addr {
                taken = *way;
                way.rq = 0;
                break;
            }
        }
    }
    taken
}

#[inline(always)]
fn on_complete<F: Fields>(rq: u64, status: u64, nr_bytes: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    let started = take_start(F::addr(rq));
    let timed = started.rq != 0;
    // With a process filter, only requests seen starting in it count.
    if !timed && task_filter_active() {
        return;
    }
    let offsets = global(&BLOCK_OFFSETS);
    let Some(dev) = request_dev::<F>(rq, &offsets) else {
        count(Counter::ProbeReadFailed);
        return;
    };
    if !disk_wanted(dev) {
        return;
    }
    let Some(cmd_flags) = F::read::<u32>(rq, offsets.rq_cmd_flags) else {
        count(Counter::ProbeReadFailed);
        return;
    };
    let key = BlockKey { dev, op: cmd_flags & offsets.req_op_mask };
    let Some(row) = row_for(&BLOCK_ROWS, &BLOCK_ZERO, &key, Counter::BlockRowsFull) else {
        return;
    };
    // Per-CPU row: plain updates are race-free.
    let row = unsafe { &mut *row };
    row.completed += 1;
    row.bytes += nr_bytes & 0xffff_ffff;
    if status & 0xff != 0 {
        row.errors += 1;
    }
    if timed && now >= started.start_ns {
        let latency = now - started.start_ns;
        row.latency.record(latency);
        if latency >= global(&BLOCK_SLOW_NS) {
            report_slow::<F>(rq, &key, latency, now, nr_bytes as u32, &started, &offsets);
        }
    } else {
        row.untimed += 1;
    }
}

#[inline(always)]
fn report_slow<F: Fields>(
    rq: u64,
    key: &BlockKey,
    latency: u64,
    now: u64,
    bytes: u32,
    start: &StartWay,
    o: &BlockOffsets,
) {
    match BLOCK_EVENTS.reserve::<SlowRequest>(0) {
        Some(mut entry) => {
            entry.write(SlowRequest {
                ts_ns: now,
                latency_ns: latency,
                sector: F::read::<u64>(rq, o.rq_sector).unwrap_or(0),
                dev: key.dev,
                op: key.op,
                bytes,
                tgid: start.tgid,
                comm: start.comm,
            });
            entry.submit(0);
        }
        None => count(Counter::RingbufFull),
    }
}

/// With --queued, an issue keeps the start its insert recorded; requests
/// that bypass the queue start at issue.
#[inline(always)]
fn from_insert() -> bool {
    global(&BLOCK_FROM_INSERT) != 0
}

/// A request merged into another is freed without completing: forget it,
/// so a later request at the same address does not inherit its start.
#[inline(always)]
fn on_merge<F: Fields>(rq: u64) {
    let _ = take_start(F::addr(rq));
}

// Entry points. Arguments are the tracepoints' TP_PROTO: (struct request *)
// for insert, issue and merge; (struct request *, blk_status_t error,
// unsigned int nr_bytes) for complete.

both_flavors!(block_rq_issue_btf, block_rq_issue_raw, "block_rq_issue", |ctx, F| {
    record_start::<F>(ctx.arg(0), from_insert())
});
both_flavors!(block_rq_insert_btf, block_rq_insert_raw, "block_rq_insert", |ctx, F| {
    record_start::<F>(ctx.arg(0), false)
});
both_flavors!(block_rq_merge_btf, block_rq_merge_raw, "block_rq_merge", |ctx, F| on_merge::<F>(ctx.arg(0)));
both_flavors!(block_rq_complete_btf, block_rq_complete_raw, "block_rq_complete", |ctx, F| {
    on_complete::<F>(ctx.arg(0), ctx.arg(1), ctx.arg(2))
});
