//! Block I/O latency: request start (insert or issue) to completion, per
//! device and operation, aggregated in per-CPU rows.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_F_NO_COMMON_LRU, BPF_NOEXIST},
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::RawTracePointContext,
};
use tracer_common::{
    block::{
        BLOCK_FILTER_ENTRIES, BLOCK_ROWS as BLOCK_ROW_ENTRIES, BLOCK_START_ENTRIES, BlockKey, BlockOffsets,
        BlockStats,
    },
    counters::Counter,
};

use crate::shared::{count, global, read_field};

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
    _pad: 0,
};
/// 1 when `--disk` restricts tracing to the devices in `BLOCK_DISKS`.
#[unsafe(no_mangle)]
static BLOCK_FILTER_DISKS: u8 = 0;
/// 1 when latency starts at insert (queue + device time).
#[unsafe(no_mangle)]
static BLOCK_FROM_INSERT: u8 = 0;

/// Start time per in-flight request, keyed by `struct request *`.
#[map]
static BLOCK_START: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(BLOCK_START_ENTRIES, BPF_F_NO_COMMON_LRU);
#[map]
static BLOCK_ROWS: PerCpuHashMap<BlockKey, BlockStats> =
    PerCpuHashMap::with_max_entries(BLOCK_ROW_ENTRIES, 0);
/// Devices (`dev_t`) accepted by the `--disk` filter.
#[map]
static BLOCK_DISKS: HashMap<u32, u8> = HashMap::with_max_entries(BLOCK_FILTER_ENTRIES, 0);
/// One zeroed row, the template for new rows (too big for the BPF stack).
#[map]
static BLOCK_ZERO: PerCpuArray<BlockStats> = PerCpuArray::with_max_entries(1, 0);

/// `dev_t` of the disk a request belongs to.
#[inline(always)]
fn request_dev(rq: u64, offsets: &BlockOffsets) -> Option<u32> {
    let disk: u64 = if offsets.rq_disk != u32::MAX {
        read_field(rq, offsets.rq_disk)?
    } else {
        let queue: u64 = read_field(rq, offsets.rq_q)?;
        read_field(queue, offsets.q_disk)?
    };
    if disk == 0 {
        return None;
    }
    let major: u32 = read_field(disk, offsets.disk_major)?;
    let minor: u32 = read_field(disk, offsets.disk_first_minor)?;
    Some((major << 20) | minor)
}

#[inline(always)]
fn disk_wanted(dev: u32) -> bool {
    global(&BLOCK_FILTER_DISKS) == 0 || unsafe { BLOCK_DISKS.get(&dev) }.is_some()
}

#[inline(always)]
fn record_start(rq: u64, flags: u64) {
    if global(&BLOCK_FILTER_DISKS) != 0 {
        let offsets = global(&BLOCK_OFFSETS);
        match request_dev(rq, &offsets) {
            Some(dev) if disk_wanted(dev) => {}
            _ => return,
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    match BLOCK_START.insert(&rq, &now, flags) {
        Ok(()) => {}
        // With BPF_NOEXIST an existing entry (the insert time) is the point.
        Err(err) if flags == BPF_NOEXIST as u64 && err == -17 => {}
        Err(_) => count(Counter::BlockStartFailed),
    }
}

#[raw_tracepoint(tracepoint = "block_rq_insert")]
pub fn block_rq_insert(ctx: RawTracePointContext) -> i32 {
    record_start(ctx.arg(0), BPF_ANY as u64);
    0
}

#[raw_tracepoint(tracepoint = "block_rq_issue")]
pub fn block_rq_issue(ctx: RawTracePointContext) -> i32 {
    // From insert: keep the insert time when there is one; requests that go
    // straight to the driver are never inserted and start here.
    let flags = if global(&BLOCK_FROM_INSERT) != 0 { BPF_NOEXIST } else { BPF_ANY };
    record_start(ctx.arg(0), flags as u64);
    0
}

/// A request merged into another is freed without completing: forget it,
/// so a later request at the same address does not inherit its start.
#[raw_tracepoint(tracepoint = "block_rq_merge")]
pub fn block_rq_merge(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let _ = BLOCK_START.remove(&rq);
    0
}

#[raw_tracepoint(tracepoint = "block_rq_complete")]
pub fn block_rq_complete(ctx: RawTracePointContext) -> i32 {
    let rq: u64 = ctx.arg(0);
    let status: u64 = ctx.arg(1);
    let nr_bytes: u64 = ctx.arg(2);
    let now = unsafe { bpf_ktime_get_ns() };

    let started = unsafe { BLOCK_START.get(&rq) }.copied();
    if started.is_some() {
        let _ = BLOCK_START.remove(&rq);
    }

    let offsets = global(&BLOCK_OFFSETS);
    let Some(dev) = request_dev(rq, &offsets) else {
        return 0;
    };
    if !disk_wanted(dev) {
        return 0;
    }
    let Some(cmd_flags) = read_field::<u32>(rq, offsets.rq_cmd_flags) else {
        return 0;
    };
    let key = BlockKey { dev, op: cmd_flags & offsets.req_op_mask };
    let Some(row) = row_for(&key) else {
        return 0;
    };
    // Per-CPU row: plain updates are race-free.
    let row = unsafe { &mut *row };
    row.completed += 1;
    row.bytes += nr_bytes & 0xffff_ffff;
    if status & 0xff != 0 {
        row.errors += 1;
    }
    match started {
        Some(start) if now >= start => row.latency.record(now - start),
        _ => row.untimed += 1,
    }
    0
}

#[inline(always)]
fn row_for(key: &BlockKey) -> Option<*mut BlockStats> {
    if let Some(row) = BLOCK_ROWS.get_ptr_mut(key) {
        return Some(row);
    }
    let zero = BLOCK_ZERO.get_ptr(0)?;
    if let Err(err) = BLOCK_ROWS.insert(key, unsafe { &*zero }, BPF_NOEXIST as u64) {
        // EEXIST: another CPU created it meanwhile; anything else is a full map.
        if err != -17 {
            count(Counter::BlockRowsFull);
            return None;
        }
    }
    BLOCK_ROWS.get_ptr_mut(key)
}
