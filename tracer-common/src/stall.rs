//! Memory stalls: direct reclaim, memory cgroup reclaim and direct
//! compaction, each a begin/end pair in the task that stalled.

use crate::hist::LatencyHist;

pub const STALL_DIRECT_RECLAIM: u32 = 0;
pub const STALL_MEMCG_RECLAIM: u32 = 1;
pub const STALL_COMPACTION: u32 = 2;
pub const STALL_KINDS: u32 = 3;

/// In flight: a thread inside one kind of stall.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StallTask {
    pub pid: u32,
    pub kind: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallStart {
    pub ts_ns: u64,
    pub order: i32,
    pub gfp_flags: u32,
    pub kernel_stack: i32,
    pub user_stack: i32,
}

/// Aggregation row: one kind of stall of one process in one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StallKey {
    pub kind: u32,
    pub tgid: u32,
    pub memcg_id: u64,
}

/// Per row, per CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StallStats {
    /// Pages reclaimed (reclaim kinds).
    pub reclaimed: u64,
    pub comm: [u8; 16],
    pub latency: LatencyHist,
}

impl StallStats {
    pub const fn zeroed() -> Self {
        Self { reclaimed: 0, comm: [0; 16], latency: LatencyHist::zeroed() }
    }
}

/// Where stalls come from, for flame graphs: by stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StallStackKey {
    pub kind: u32,
    pub kernel_stack: i32,
    pub user_stack: i32,
    pub tgid: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallStackStats {
    pub count: u64,
    pub total_ns: u64,
}

/// One stall, streamed for the time line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallEvent {
    pub start_ns: u64,
    pub duration_ns: u64,
    pub memcg_id: u64,
    /// Pages reclaimed, or the compaction result.
    pub result: u64,
    pub kind: u32,
    pub pid: u32,
    pub tgid: u32,
    pub order: i32,
    pub gfp_flags: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

/// `compact_control.direct_compaction` (bool), from BTF; `u32::MAX`
/// counts every compaction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StallConfig {
    pub cc_direct: u32,
    pub _pad: u32,
}

/// Slots of the `STALL_COUNTS` per-CPU array.
pub const STALL_UNMATCHED_END: u32 = 0; // + kind: ends without a begin (3 slots)
pub const KSWAPD_WAKES: u32 = 3;
pub const KSWAPD_SLEEPS: u32 = 4;
pub const KSWAPD_AWAKE_NS: u32 = 5;
pub const KSWAPD_WAKEUPS_REQUESTED: u32 = 6;
pub const COMPACT_ATTEMPTS: u32 = 7;
/// Compaction results by `enum compact_result` value.
pub const COMPACT_RESULT_BASE: u32 = 8;
pub const COMPACT_RESULTS: u32 = 16;
pub const STALL_COUNT_SLOTS: u32 = COMPACT_RESULT_BASE + COMPACT_RESULTS + STALL_KINDS;

pub const STALL_ROWS: u32 = 1024;
pub const STALL_STACK_ROWS: u32 = 2048;
pub const STALL_IN_FLIGHT: u32 = 8192;
pub const STALL_EVENTS_BYTES: u32 = 1 << 20;

/// Threads inside a stall: the kernel's LRU hash, or a map in tests.
pub trait InFlight {
    /// Removes and returns the thread's start, if any.
    fn take(&mut self, task: StallTask) -> Option<StallStart>;
    /// Records a start; true if it replaced one still open.
    fn put(&mut self, task: StallTask, start: StallStart) -> bool;
}

/// What a begin/end pair came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Begin and end of the same thread and kind: timed.
    Timed { start: StallStart, duration_ns: u64 },
    /// An end without its begin: the thread entered the stall before
    /// tracing started (or its begin was filtered out). Counted, not timed.
    Unmatched,
}

/// A thread enters a stall. A begin while one of the same kind is still
/// open means the earlier end was never seen (the thread exited inside
/// it, or an event was lost): the new begin wins and `true` says one was
/// abandoned.
#[inline(always)]
pub fn stall_begin<M: InFlight>(in_flight: &mut M, task: StallTask, start: StallStart) -> bool {
    in_flight.put(task, start)
}

/// A thread leaves a stall at `now_ns`.
#[inline(always)]
pub fn stall_end<M: InFlight>(in_flight: &mut M, task: StallTask, now_ns: u64) -> Ended {
    match in_flight.take(task) {
        Some(start) => Ended::Timed { start, duration_ns: now_ns.saturating_sub(start.ts_ns) },
        None => Ended::Unmatched,
    }
}

/// Begins abandoned: replaced by a later begin of the same thread and
/// kind (one slot per kind after `STALL_UNMATCHED_END`'s three).
pub const STALL_ABANDONED: u32 = COMPACT_RESULT_BASE + COMPACT_RESULTS; // + kind

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    struct Map(BTreeMap<(u32, u32), StallStart>);

    impl InFlight for Map {
        fn take(&mut self, task: StallTask) -> Option<StallStart> {
            self.0.remove(&(task.pid, task.kind))
        }
        fn put(&mut self, task: StallTask, start: StallStart) -> bool {
            self.0.insert((task.pid, task.kind), start).is_some()
        }
    }

    fn start(ts_ns: u64) -> StallStart {
        StallStart { ts_ns, order: 0, gfp_flags: 0, kernel_stack: -1, user_stack: -1 }
    }
    const DIRECT: StallTask = StallTask { pid: 7, kind: STALL_DIRECT_RECLAIM };
    const MEMCG: StallTask = StallTask { pid: 7, kind: STALL_MEMCG_RECLAIM };

    #[test]
    fn a_pair_is_timed_and_closed() {
        let mut m = Map::default();
        assert!(!stall_begin(&mut m, DIRECT, start(100)));
        assert_eq!(stall_end(&mut m, DIRECT, 350), Ended::Timed { start: start(100), duration_ns: 250 });
        assert_eq!(stall_end(&mut m, DIRECT, 400), Ended::Unmatched, "closed: a second end is unmatched");
    }

    #[test]
    fn an_end_from_before_tracing_is_unmatched() {
        let mut m = Map::default();
        assert_eq!(stall_end(&mut m, DIRECT, 10), Ended::Unmatched);
    }

    #[test]
    fn kinds_and_threads_do_not_mix() {
        let mut m = Map::default();
        stall_begin(&mut m, DIRECT, start(100));
        stall_begin(&mut m, MEMCG, start(150));
        stall_begin(&mut m, StallTask { pid: 8, ..DIRECT }, start(120));
        // memcg reclaim nested inside direct reclaim ends first.
        assert_eq!(stall_end(&mut m, MEMCG, 170), Ended::Timed { start: start(150), duration_ns: 20 });
        assert_eq!(stall_end(&mut m, DIRECT, 200), Ended::Timed { start: start(100), duration_ns: 100 });
        assert_eq!(
            stall_end(&mut m, StallTask { pid: 8, ..DIRECT }, 220),
            Ended::Timed { start: start(120), duration_ns: 100 }
        );
    }

    #[test]
    fn a_begin_whose_end_was_missed_is_abandoned() {
        let mut m = Map::default();
        stall_begin(&mut m, DIRECT, start(100));
        // The thread exited inside reclaim; its pid is reused.
        assert!(stall_begin(&mut m, DIRECT, start(900)), "the open begin is reported abandoned");
        assert_eq!(stall_end(&mut m, DIRECT, 950), Ended::Timed { start: start(900), duration_ns: 50 });
    }

    #[test]
    fn clock_going_backwards_is_not_a_huge_stall() {
        let mut m = Map::default();
        stall_begin(&mut m, DIRECT, start(500));
        assert_eq!(stall_end(&mut m, DIRECT, 400), Ended::Timed { start: start(500), duration_ns: 0 });
    }
}
