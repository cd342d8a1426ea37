//! Workloads for the integration tests, each doing a known amount of a
//! known thing so tests can compare tracer against the kernel's counters.
//! Built with debug info, so its stacks resolve to file:line.

use std::{
    alloc::{Layout, alloc_zeroed},
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("usage: tracer-test-helper direct-io DEVICE READS WRITES FSYNC_EVERY DISCARDS");
        std::process::exit(2);
    };
    match command.as_str() {
        "direct-io" => {
            let n = |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok()).expect("numeric argument");
            direct_io(&args[1], n(2), n(3), n(4), n(5));
        }
        other => {
            eprintln!("unknown helper command {other}");
            std::process::exit(2);
        }
    }
}

const BLOCK: usize = 4096;
/// ioctl(BLKDISCARD) = _IO(0x12, 119).
const BLKDISCARD: libc::c_ulong = 0x1277;

/// O_DIRECT reads and writes of 4 KiB, an fdatasync every `fsync_every`
/// writes, and `discards` discards of 64 KiB.
fn direct_io(device: &str, reads: u64, writes: u64, fsync_every: u64, discards: u64) {
    let path = CString::new(std::ffi::OsStr::new(device).as_bytes()).unwrap();
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_DIRECT) };
    assert!(fd >= 0, "open {device}: {}", std::io::Error::last_os_error());
    let size = unsafe {
        let mut size: u64 = 0;
        // BLKGETSIZE64
        assert_eq!(libc::ioctl(fd, 0x80081272, &mut size), 0);
        size
    };
    let blocks = size / BLOCK as u64;
    let buf = unsafe { alloc_zeroed(Layout::from_size_align(BLOCK, BLOCK).unwrap()) };
    let mut syncs = 0;
    for i in 0..writes {
        unsafe { buf.cast::<u64>().write(i) };
        let offset = ((i * 7919) % blocks) * BLOCK as u64;
        let n = unsafe { libc::pwrite(fd, buf.cast(), BLOCK, offset as i64) };
        assert_eq!(n, BLOCK as isize, "pwrite: {}", std::io::Error::last_os_error());
        if fsync_every > 0 && (i + 1) % fsync_every == 0 {
            assert_eq!(unsafe { libc::fdatasync(fd) }, 0);
            syncs += 1;
        }
    }
    for i in 0..reads {
        let offset = ((i * 104729) % blocks) * BLOCK as u64;
        let n = unsafe { libc::pread(fd, buf.cast(), BLOCK, offset as i64) };
        assert_eq!(n, BLOCK as isize, "pread: {}", std::io::Error::last_os_error());
    }
    for i in 0..discards {
        let range: [u64; 2] = [(i * 16 % blocks.saturating_sub(16).max(1)) * BLOCK as u64, 16 * BLOCK as u64];
        let rc = unsafe { libc::ioctl(fd, BLKDISCARD, range.as_ptr()) };
        assert_eq!(rc, 0, "BLKDISCARD: {}", std::io::Error::last_os_error());
    }
    unsafe { libc::close(fd) };
    println!("{{\"reads\":{reads},\"writes\":{writes},\"fsyncs\":{syncs},\"discards\":{discards}}}");
}
