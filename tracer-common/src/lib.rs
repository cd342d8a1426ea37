//! Types and math shared by the kernel programs (`tracer-ebpf`) and user
//! space (`tracer`). `no_std`; `#[repr(C)]` so both sides agree on layout.
#![cfg_attr(not(test), no_std)]

pub mod block;
pub mod counters;
pub mod hist;

#[cfg(feature = "user")]
mod pod {
    // Safety: plain-old-data, `#[repr(C)]`, no padding holes that matter,
    // every bit pattern valid.
    unsafe impl aya::Pod for crate::block::BlockKey {}
    unsafe impl aya::Pod for crate::block::BlockStats {}
    unsafe impl aya::Pod for crate::block::BlockOffsets {}
}
