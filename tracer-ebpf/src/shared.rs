//! Pieces every probe family uses: the health counters and the two ways of
//! reading kernel structs.

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

/// Reads a read-only global set by the loader. Volatile so the compiler
/// keeps the load instead of folding the placeholder value in.
#[inline(always)]
pub fn global<T: Copy>(value: &'static T) -> T {
    unsafe { core::ptr::read_volatile(value) }
}

/// How a program reads kernel structs, so one body serves both program
/// types: `tp_btf` programs get typed pointers the verifier lets them
/// dereference; raw tracepoints get plain numbers and must copy through a
/// helper.
pub trait Fields {
    /// The `T` at `base + offset`, or `None` if it cannot be read.
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T>;
    /// A pointer as a plain number, usable as a key.
    fn addr(ptr: u64) -> u64;
}

/// Direct loads through BTF-typed pointers (faults read as zero).
pub struct Direct;
/// `bpf_probe_read_kernel` copies.
pub struct Probe;

/// Scratch slot for [`Direct::addr`].
#[map]
static ADDR_SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

impl Fields for Direct {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
        Some(unsafe { core::ptr::read_volatile((base + offset as u64) as *const T) })
    }

    /// The verifier forbids arithmetic on typed pointers (hashing one);
    /// a pointer stored in a map value reads back as a plain number.
    #[inline(always)]
    fn addr(ptr: u64) -> u64 {
        match ADDR_SCRATCH.get_ptr_mut(0) {
            Some(slot) => unsafe {
                core::ptr::write_volatile(slot, ptr);
                core::ptr::read_volatile(slot)
            },
            None => 0,
        }
    }
}

impl Fields for Probe {
    #[inline(always)]
    fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
        match unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) } {
            Ok(value) => Some(value),
            Err(_) => {
                count(Counter::ProbeReadFailed);
                None
            }
        }
    }

    #[inline(always)]
    fn addr(ptr: u64) -> u64 {
        ptr
    }
}
