//! Kernel programs of tracer. One module per probe family; each aggregates
//! in per-CPU maps and streams only rare events.
#![no_std]
#![no_main]

mod alloc;
mod block;
mod dirty;
mod oom;
mod shared;
mod stall;
mod thp;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
