//! Pieces every probe family uses: the health counters and field reads.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::map, maps::PerCpuArray};
use tracer_common::counters::{COUNTER_SLOTS, Counter};

/// Health counters, see [`Counter`].
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer.
        unsafe { *slot += 1 };
    }
}

/// Reads a `T` at `base + offset` in kernel memory; counts failures.
#[inline(always)]
pub fn read_field<T>(base: u64, offset: u32) -> Option<T> {
    match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
        Ok(value) => Some(value),
        Err(_) => {
            count(Counter::ProbeReadFailed);
            None
        }
    }
}

/// Reads a read-only global set by the loader. Volatile so the compiler
/// keeps the load instead of folding the placeholder value in.
#[inline(always)]
pub fn global<T: Copy>(value: &'static T) -> T {
    unsafe { core::ptr::read_volatile(value) }
}
