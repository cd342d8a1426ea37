//! Types and math shared by the kernel programs (`tracer-ebpf`) and user
//! space (`tracer`). `no_std`; `#[repr(C)]` so both sides agree on layout.
#![cfg_attr(not(test), no_std)]

pub mod alloc;
pub mod block;
pub mod counters;
pub mod dirty;
pub mod hist;
pub mod maps;
pub mod oom;
pub mod stall;
pub mod task;
pub mod thp;
pub mod ustack;

#[cfg(feature = "user")]
mod pod {
    // Safety: plain-old-data, `#[repr(C)]`, no padding holes that matter,
    // every bit pattern valid.
    unsafe impl aya::Pod for crate::block::BlockKey {}
    unsafe impl aya::Pod for crate::block::BlockStats {}
    unsafe impl aya::Pod for crate::block::BlockOffsets {}
    unsafe impl aya::Pod for crate::alloc::AllocKey {}
    unsafe impl aya::Pod for crate::alloc::AllocStats {}
    unsafe impl aya::Pod for crate::alloc::AllocConfig {}
    unsafe impl aya::Pod for crate::task::TaskOffsets {}
    unsafe impl aya::Pod for crate::oom::OomOffsets {}
    unsafe impl aya::Pod for crate::stall::StallKey {}
    unsafe impl aya::Pod for crate::stall::StallStats {}
    unsafe impl aya::Pod for crate::stall::StallStackKey {}
    unsafe impl aya::Pod for crate::stall::StallStackStats {}
    unsafe impl aya::Pod for crate::stall::StallConfig {}
    unsafe impl aya::Pod for crate::stall::StallTask {}
    unsafe impl aya::Pod for crate::stall::StallStart {}
    unsafe impl aya::Pod for crate::thp::SplitKey {}
    unsafe impl aya::Pod for crate::thp::SplitStats {}
    unsafe impl aya::Pod for crate::task::TaskFilter {}
    unsafe impl aya::Pod for crate::ustack::UserStackConfig {}
}
