//! The Rust twin of `tests/c/nofp.c`: a release build without frame
//! pointers (`rustc -C opt-level=3 -C force-frame-pointers=no -g`, built by
//! the tests as nofp.c is), whose failing allocation and OOM trigger happen
//! in main -> f -> g and main -> hog -> touch, for tests of user stacks
//! unwound from CFI. Standard library only: rustc alone builds it.
//!
//!   nofp_rs alloc-fail MEMCG_DIR MAX_FAILURES
//!   nofp_rs oom MEMCG_DIR MB
//!
//! as nofp.c's commands. Lines marked with UNWIND-<NAME> are the calls the
//! tests expect in the stack.

use std::io::{BufRead as _, Write as _};
use std::path::Path;

unsafe extern "C" {
    fn syscall(number: i64, ...) -> i64;
    fn __errno_location() -> *mut i32;
    fn mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
    fn munmap(addr: *mut u8, len: usize) -> i32;
    fn close(fd: i32) -> i32;
}

const SYS_BPF: i64 = 321;
const ENOMEM: i32 = 12;
const MAX_FDS: usize = 100_000;

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    rest: [u32; 14],
}

fn wait_for(word: &str) {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
    if !line.starts_with(word) {
        eprintln!("expected `{word}` on stdin");
        std::process::exit(2);
    }
}

/// The innermost function of ours: libc's syscall() is called from here.
#[inline(never)]
fn g(value_size: u32) -> i64 {
    let attr = MapCreateAttr { map_type: 2, key_size: 4, value_size, max_entries: 1, rest: [0; 14] };
    let attr = std::hint::black_box(&attr);
    let fd = unsafe { syscall(SYS_BPF, 0i64, attr as *const MapCreateAttr, size_of::<MapCreateAttr>()) }; // UNWIND-G
    // Used after the call: not a tail call.
    if fd < 0 { -(unsafe { *__errno_location() } as i64) } else { fd }
}

#[inline(never)]
fn f(max_failures: u32, fds: &mut Vec<i32>) -> u32 {
    let mut failures = 0;
    while failures < max_failures && fds.len() < MAX_FDS {
        let fd = g(std::hint::black_box(16384)); // UNWIND-F
        if fd >= 0 {
            fds.push(fd as i32);
        } else if fd == -(ENOMEM as i64) {
            failures += 1;
        } else {
            eprintln!("BPF_MAP_CREATE failed: {}", std::io::Error::from_raw_os_error(-fd as i32));
            std::process::exit(2);
        }
    }
    failures
}

/// Writes one byte per page: each fault charges the memory cgroup.
#[inline(never)]
fn touch(area: *mut u8, len: usize) {
    let mut offset = 0;
    while offset < len {
        unsafe { area.add(offset).write_volatile(1) }; // UNWIND-TOUCH
        offset += 4096;
    }
}

#[inline(never)]
fn hog(len: usize) {
    // PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS
    let area = unsafe { mmap(std::ptr::null_mut(), len, 3, 0x22, -1, 0) };
    if area as isize == -1 {
        eprintln!("mmap: {}", std::io::Error::last_os_error());
        std::process::exit(2);
    }
    touch(area, std::hint::black_box(len)); // UNWIND-HOG
    unsafe { munmap(area, len) };
}

fn usage() -> ! {
    eprintln!("usage: nofp_rs alloc-fail MEMCG_DIR MAX_FAILURES | nofp_rs oom MEMCG_DIR MB");
    std::process::exit(2)
}

#[inline(never)]
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        usage();
    }
    let memcg = Path::new(&args[2]);
    let number: usize = args[3].parse().unwrap_or_else(|_| usage());
    // Allocated and touched before joining the memcg (see nofp.c).
    let mut fds: Vec<i32> = vec![-1; MAX_FDS];
    fds.clear();
    println!("{{\"pid\":{}}}", std::process::id());
    std::io::stdout().flush().unwrap();
    wait_for("go");
    std::fs::write(memcg.join("cgroup.procs"), std::process::id().to_string()).expect("joining the memcg");
    match args[1].as_str() {
        "oom" => {
            hog(number << 20); // UNWIND-OOM-MAIN
            println!("{{\"survived\":true}}");
        }
        "alloc-fail" => {
            let v1 = memcg.join("memory.usage_in_bytes").exists();
            let (usage_file, limit_file) = if v1 {
                ("memory.usage_in_bytes", "memory.limit_in_bytes")
            } else {
                ("memory.current", "memory.max")
            };
            let usage: u64 = std::fs::read_to_string(memcg.join(usage_file)).unwrap().trim().parse().unwrap();
            std::fs::write(memcg.join(limit_file), (usage + (1 << 20)).to_string())
                .expect("setting the limit");
            let failures = f(number as u32, &mut fds); // UNWIND-MAIN
            println!("{{\"maps\":{},\"failed_creates\":{failures}}}", fds.len());
            std::io::stdout().flush().unwrap();
            wait_for("exit");
            for fd in fds {
                unsafe { close(fd) };
            }
        }
        _ => usage(),
    }
}
