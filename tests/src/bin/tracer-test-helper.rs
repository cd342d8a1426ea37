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
        eprintln!(
            "usage: tracer-test-helper direct-io DEVICE READS WRITES FSYNC_EVERY DISCARDS\n\
             \x20      tracer-test-helper alloc-fail MEMCG_DIR MAX_FAILURES"
        );
        std::process::exit(2);
    };
    match command.as_str() {
        "direct-io" => {
            let n = |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok()).expect("numeric argument");
            direct_io(&args[1], n(2), n(3), n(4), n(5));
        }
        "alloc-fail" => {
            let max_failures = args.get(2).and_then(|v| v.parse().ok()).expect("MAX_FAILURES");
            alloc_fail(std::path::Path::new(&args[1]), max_failures);
        }
        "oom-hog" => {
            let mb: usize = args.get(2).and_then(|v| v.parse().ok()).expect("MB");
            let score_adj: i32 = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(0);
            oom_hog(std::path::Path::new(&args[1]), mb, score_adj);
        }
        "thp-split" => {
            let n: u32 = args.get(1).and_then(|v| v.parse().ok()).expect("N");
            thp_split(n);
        }
        "memcg-read" => {
            let mb: usize = args.get(3).and_then(|v| v.parse().ok()).expect("MB");
            memcg_read(std::path::Path::new(&args[1]), std::path::Path::new(&args[2]), mb);
            // `wait`: stays until told to `exit` (the test reads the tracer's
            // maps while this process is alive).
            if args.get(4).is_some_and(|a| a == "wait") {
                wait_for("exit");
            }
        }
        "reclaim-pressure" => {
            let n =
                |i: usize| args.get(i).and_then(|v| v.parse::<u64>().ok()).expect("numeric argument (MiB)");
            reclaim_pressure(std::path::Path::new(&args[1]), n(2), n(3));
        }
        "bpf-progs" => bpf_programs(),
        "bpf-map-keys" => {
            let pid: u32 = args.get(1).and_then(|v| v.parse().ok()).expect("PID");
            bpf_map_keys(pid, args.get(2).expect("MAP NAME"));
        }
        "empty-probes" => empty_probes(&args[1..]),
        "peak-rss" => peak_rss(&args[1..]),
        other => {
            eprintln!("unknown helper command {other}");
            std::process::exit(2);
        }
    }
}

/// Runs CMD ARGS... with its output discarded and prints its peak RSS in
/// KiB and whether it succeeded. Measured here, not in the test process:
/// Linux carries a parent's RSS high-water mark across fork and exec, so a
/// child of a big test process would inherit the test's peak.
fn peak_rss(command: &[String]) {
    // Reaped by wait4 below, which also gives its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = std::process::Command::new(&command[0])
        .args(&command[1..])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting the command");
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    println!("{} {ok}", usage.ru_maxrss);
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

/// Waits for a line on stdin: lets the test attach tracer (with --pid) and
/// read results while this process is still alive.
fn wait_for(word: &str) {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("reading stdin");
    assert_eq!(line.trim(), word, "expected `{word}` on stdin");
}

/// Provokes real page allocation failures (shared/notes/KERNEL-FACTS.md):
/// in a memory cgroup whose limit is just above its usage, BPF array maps
/// with one 16 KiB value are created until their order-3 kmalloc
/// (`__GFP_NORETRY|__GFP_ACCOUNT`) fails its memcg charge.
fn alloc_fail(memcg: &std::path::Path, max_failures: u32) {
    use std::io::Write as _;
    // Touched before joining the memcg, so its pages are charged outside
    // it: a page fault at the tight limit below would get this process
    // OOM-killed instead of failing the kernel's allocation.
    let mut fds: Vec<i64> = vec![-1; 100_000];
    fds.clear();
    // Likewise the kernel's file descriptor table: grown now (it never
    // shrinks), not by a map's descriptor at the limit, whose charge
    // (GFP_KERNEL_ACCOUNT, not __GFP_NORETRY) would OOM-kill this process.
    unsafe {
        // The highest descriptor the limit allows (1024 in a guest), for
        // the largest table.
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let top = (limit.rlim_cur.min(4096) as i32) - 1;
        assert_eq!(libc::dup2(0, top), top, "growing the fd table: {}", std::io::Error::last_os_error());
        libc::close(top);
    }
    println!("{{\"pid\":{}}}", std::process::id());
    std::io::stdout().flush().unwrap();
    wait_for("go");
    // And every page of this program resident and locked, charged outside:
    // a fault on its code at the limit (read in again from a VM's 9p root,
    // seen on 6.12) would be OOM-killed too.
    assert_eq!(
        unsafe { libc::mlockall(libc::MCL_CURRENT) },
        0,
        "mlockall: {}",
        std::io::Error::last_os_error()
    );
    std::fs::write(memcg.join("cgroup.procs"), std::process::id().to_string()).expect("joining the memcg");
    // cgroup v1's files, or v2's where the kernel has no v1 memory
    // controller (Debian's 6.12).
    let (usage_file, limit_file) = if memcg.join("memory.limit_in_bytes").exists() {
        ("memory.usage_in_bytes", "memory.limit_in_bytes")
    } else {
        ("memory.current", "memory.max")
    };
    let usage: u64 = std::fs::read_to_string(memcg.join(usage_file)).unwrap().trim().parse().unwrap();
    std::fs::write(memcg.join(limit_file), (usage + (1 << 20)).to_string()).expect("setting the limit");
    let mut failures = 0;
    while failures < max_failures && fds.len() < 100_000 {
        let fd = create_map();
        if fd >= 0 {
            fds.push(fd);
        } else if fd == -(libc::ENOMEM as i64) {
            failures += 1;
        } else {
            panic!("BPF_MAP_CREATE failed with {fd}");
        }
    }
    println!("{{\"maps\":{},\"failed_creates\":{failures}}}", fds.len());
    std::io::stdout().flush().unwrap();
    wait_for("exit");
    for fd in fds {
        unsafe { libc::close(fd as i32) };
    }
}

#[repr(C)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    rest: [u32; 14],
}

/// `bpf(BPF_MAP_CREATE)` of an array map with one 16 KiB value. The
/// syscall instruction is here rather than in libc, so this function is
/// the innermost user frame of the failing allocation (frame-pointer
/// unwinding cannot see the caller of a libc leaf function).
#[inline(never)]
fn create_map() -> i64 {
    const SYS_BPF: i64 = 321;
    const BPF_MAP_CREATE: i64 = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 16384,
        max_entries: 1,
        rest: [0; 14],
    };
    let ret: i64;
    unsafe {
        // DWARF gives the whole asm block the line of its first token.
        std::arch::asm!( // ALLOC-CALL
            "syscall",
            inlateout("rax") SYS_BPF => ret,
            in("rdi") BPF_MAP_CREATE,
            in("rsi") &attr as *const MapCreateAttr,
            in("rdx") std::mem::size_of::<MapCreateAttr>(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn join_memcg(memcg: &std::path::Path) {
    std::fs::write(memcg.join("cgroup.procs"), std::process::id().to_string()).expect("joining the memcg");
}

/// Touches `mb` MiB of anonymous memory inside `memcg` (whose limit the test
/// set lower): the memory cgroup's OOM killer runs while `touch_pages`
/// faults, and kills this process, or with `score_adj` -1000 another one,
/// after which this one says it survived and waits for `exit`.
fn oom_hog(memcg: &std::path::Path, mb: usize, score_adj: i32) {
    use std::io::Write as _;
    println!("{{\"pid\":{}}}", std::process::id());
    std::io::stdout().flush().unwrap();
    wait_for("go");
    std::fs::write("/proc/self/oom_score_adj", score_adj.to_string()).expect("setting oom_score_adj");
    join_memcg(memcg);
    let len = mb << 20;
    let area = map_anonymous(len);
    touch_pages(area.cast(), len);
    // Reached only when another process was killed instead.
    println!("{{\"survived\":true}}");
    std::io::stdout().flush().unwrap();
    wait_for("exit");
}

/// Writes one byte per page: each fault charges the memory cgroup.
#[inline(never)]
fn touch_pages(area: *mut u8, len: usize) {
    for offset in (0..len).step_by(4096) {
        unsafe { std::ptr::write_volatile(area.add(offset), 1) }; // OOM-TOUCH
    }
}

/// `n` THP splits (shared/notes/KERNEL-FACTS.md): a 2 MiB-aligned window
/// madvised MADV_HUGEPAGE and touched (huge page faults), then one 4 KiB
/// page of it MADV_DONTNEED'd, which splits the PMD.
fn thp_split(n: u32) {
    const HUGE: usize = 2 << 20;
    let mut huge_faults = 0;
    for _ in 0..n {
        let len = 8 << 20;
        let base = map_anonymous(len);
        let aligned = ((base as usize + HUGE - 1) & !(HUGE - 1)) as *mut u8;
        assert_eq!(unsafe { libc::madvise(aligned.cast(), 2 * HUGE, libc::MADV_HUGEPAGE) }, 0);
        for offset in (0..2 * HUGE).step_by(4096) {
            unsafe { std::ptr::write_volatile(aligned.add(offset), 1) };
        }
        let smaps = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
        if smaps.lines().any(|l| l.starts_with("AnonHugePages:") && !l.contains(" 0 kB")) {
            huge_faults += 1;
        }
        assert_eq!(unsafe { libc::madvise(aligned.add(HUGE + 4096).cast(), 4096, libc::MADV_DONTNEED) }, 0);
        unsafe { libc::munmap(base, len) };
    }
    println!("{{\"iterations\":{n},\"huge_faults\":{huge_faults},\"pid\":{}}}", std::process::id());
}

/// Inside `memcg` (small limit set by the test), writes then re-reads `mb`
/// MiB of `file`: the page cache it fills is charged to the cgroup, whose
/// limit forces memory cgroup reclaim.
fn memcg_read(memcg: &std::path::Path, file: &std::path::Path, mb: usize) {
    use std::io::{Read as _, Write as _};
    join_memcg(memcg);
    let chunk = vec![7u8; 1 << 20];
    let mut f = std::fs::File::create(file).unwrap();
    for _ in 0..mb {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let mut f = std::fs::File::open(file).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        total += n;
    }
    println!("{{\"read\":{total}}}");
}

/// Global direct reclaim, bounded: fill the page cache past what is free
/// by reading a sparse file (`cache_mib` MiB), raise the min watermark of
/// every zone above that zone's free pages, then fault in `anon_mib` MiB of
/// anonymous memory. Prints what it set, per zone, as JSON.
///
/// The watermark is what makes this deterministic: an allocation that finds
/// every zone below its min watermark wakes kswapd and then reclaims
/// directly at once (`__alloc_pages_slowpath`), whoever wins later. Raising
/// `vm.min_free_kbytes` just above the machine's total MemFree is not
/// enough: the kernel splits it between the zones by their size
/// (`__setup_per_zone_wmarks`), not by what each has free, so a zone with
/// much of its memory still free (a 4 GiB VM's DMA32, when the cache filled
/// Normal first) stays above its share and serves the burst while kswapd
/// keeps up. So the value is computed from /proc/zoneinfo: for each zone,
/// the share that puts its min above its free pages less its protection
/// (lowmem_reserve, which an allocation that could use a higher zone must
/// leave) plus a margin for what kswapd frees meanwhile. The setting is
/// restored here after the burst (the test restores it too, whatever
/// happens).
fn reclaim_pressure(sparse: &std::path::Path, cache_mib: u64, anon_mib: u64) {
    use std::io::Read as _;
    const MIN_FREE: &str = "/proc/sys/vm/min_free_kbytes";
    let f = std::fs::File::create(sparse).unwrap();
    f.set_len(cache_mib << 20).unwrap();
    let mut f = std::fs::File::open(sparse).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    while f.read(&mut buf).unwrap_or(0) > 0 {}
    // kswapd, woken while the cache filled, balances the zones to their
    // high watermarks and goes back to sleep: raising the watermarks does
    // not wake it, so the burst's first fault finds it asleep.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let original = std::fs::read_to_string(MIN_FREE).unwrap().trim().to_string();
    let zones = read_zones();
    let min_free_kb = min_free_kbytes_for_direct_reclaim(&zones);
    // Direct reclaim must be able to take the watermark and the burst out
    // of the page cache: otherwise this would OOM-kill on a shared machine.
    let available_kb = meminfo_kb("MemAvailable:");
    assert!(
        min_free_kb + (anon_mib << 10) + (512 << 10) < available_kb,
        "vm.min_free_kbytes {min_free_kb} for direct reclaim plus the {anon_mib} MiB burst would not fit \
         in MemAvailable {available_kb} kB: {zones:?}"
    );
    std::fs::write(MIN_FREE, min_free_kb.to_string()).unwrap();
    let raised = read_zones();
    let len = (anon_mib << 20) as usize;
    let area = map_anonymous(len);
    touch_pages(area.cast(), len);
    std::fs::write(MIN_FREE, &original).unwrap();
    unsafe { libc::munmap(area, len) };
    let described: Vec<String> = zones
        .iter()
        .zip(&raised)
        .map(|(z, r)| {
            format!(
                "{{\"zone\":\"{}\",\"free\":{},\"protection\":{},\"managed\":{},\"min_after\":{},\"free_after\":{}}}",
                z.name, z.free, z.protection, z.managed, r.min, r.free
            )
        })
        .collect();
    println!(
        "{{\"min_free_kbytes\":{min_free_kb},\"original\":{original},\"zones\":[{}]}}",
        described.join(",")
    );
}

/// A /proc/meminfo value, in kB.
fn meminfo_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/meminfo"))
}

/// A zone of /proc/zoneinfo, in pages.
#[derive(Debug, Default)]
struct Zone {
    name: String,
    free: u64,
    min: u64,
    managed: u64,
    /// The largest lowmem_reserve entry: what an allocation that may use
    /// the highest zone (anonymous memory, GFP_HIGHUSER_MOVABLE) must leave.
    protection: u64,
}

fn read_zones() -> Vec<Zone> {
    let text = std::fs::read_to_string("/proc/zoneinfo").unwrap();
    let mut zones: Vec<Zone> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
        match words.as_slice() {
            ["Node", _, "zone", name, ..] => zones.push(Zone { name: name.to_string(), ..Zone::default() }),
            ["pages", "free", ..] => zones.last_mut().unwrap().free = number(2).unwrap(),
            ["min", ..] => zones.last_mut().unwrap().min = number(1).unwrap(),
            ["managed", ..] => zones.last_mut().unwrap().managed = number(1).unwrap(),
            ["protection:", ..] => {
                zones.last_mut().unwrap().protection = line
                    .split(['(', ')', ','])
                    .filter_map(|w| w.trim().parse::<u64>().ok())
                    .max()
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    zones
}

/// The `vm.min_free_kbytes` that puts every zone's min watermark at least
/// 64 MiB above what the zone could give an anonymous page now. The kernel
/// gives zone z `pages_min * managed_z / lowmem` (lowmem: every zone's
/// managed pages but ZONE_MOVABLE's, whose min is a token). Zones under a
/// sixteenth of memory (DMA's 15 MiB) are left out: their share would have
/// to be most of memory, and what they hold above their reserve is a few
/// MiB, less than the burst.
fn min_free_kbytes_for_direct_reclaim(zones: &[Zone]) -> u64 {
    const MARGIN_PAGES: u64 = 64 << 8;
    let lowmem: u64 = zones.iter().filter(|z| z.name != "Movable").map(|z| z.managed).sum();
    let pages_min = zones
        .iter()
        .filter(|z| z.name != "Movable" && z.managed >= lowmem / 16)
        .map(|z| (z.free.saturating_sub(z.protection) + MARGIN_PAGES) * lowmem / z.managed + 1)
        .max()
        .expect("a zone with memory");
    pages_min * 4
}

/// Names of every BPF program loaded in the kernel, as a JSON list
/// (BPF_PROG_GET_NEXT_ID, BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD).
fn bpf_programs() {
    const SYS_BPF: libc::c_long = 321;
    const PROG_GET_NEXT_ID: libc::c_long = 11;
    const PROG_GET_FD_BY_ID: libc::c_long = 13;
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_prog_info: the name is at byte 64, 16 bytes.
    const NAME_AT: usize = 64;
    let mut names = Vec::new();
    let mut id: u32 = 0;
    loop {
        let mut attr = [0u32; 4];
        attr[0] = id;
        let rc = unsafe { libc::syscall(SYS_BPF, PROG_GET_NEXT_ID, attr.as_mut_ptr(), 16) };
        if rc != 0 {
            break;
        }
        id = attr[1];
        let mut by_id = [0u32; 4];
        by_id[0] = id;
        let fd = unsafe { libc::syscall(SYS_BPF, PROG_GET_FD_BY_ID, by_id.as_mut_ptr(), 16) };
        if fd < 0 {
            continue; // freed meanwhile
        }
        let mut info = [0u8; 256];
        let mut info_attr = [0u64; 2];
        info_attr[0] = fd as u64 | ((info.len() as u64) << 32);
        info_attr[1] = info.as_mut_ptr() as u64;
        let rc = unsafe { libc::syscall(SYS_BPF, OBJ_GET_INFO_BY_FD, info_attr.as_mut_ptr(), 16) };
        unsafe { libc::close(fd as i32) };
        if rc == 0 {
            let name = &info[NAME_AT..NAME_AT + 16];
            let end = name.iter().position(|&b| b == 0).unwrap_or(16);
            names.push(format!("\"{}\"", String::from_utf8_lossy(&name[..end])));
        }
    }
    println!("[{}]", names.join(","));
}

/// Prints the keys, in hex, of process `pid`'s BPF map named `name` (found
/// through the map ids in its file descriptors' fdinfo): one process's
/// maps, however many tracers run beside it.
fn bpf_map_keys(pid: u32, name: &str) {
    const SYS_BPF: libc::c_long = 321;
    const MAP_GET_NEXT_KEY: libc::c_long = 4;
    const MAP_GET_FD_BY_ID: libc::c_long = 14;
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // struct bpf_map_info: key_size at byte 8, name at 24 (16 bytes).
    let (key_size_at, name_at) = (8, 24);
    let mut ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .expect("the process's fdinfo")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("map_id:")?.trim().parse().ok()))
        .collect();
    ids.sort();
    ids.dedup();
    for id in ids {
        let by_id = [id, 0, 0, 0];
        let fd = unsafe { libc::syscall(SYS_BPF, MAP_GET_FD_BY_ID, by_id.as_ptr(), 16) };
        if fd < 0 {
            continue;
        }
        let mut info = [0u8; 128];
        let info_attr = [fd as u64 | ((info.len() as u64) << 32), info.as_mut_ptr() as u64];
        let rc = unsafe { libc::syscall(SYS_BPF, OBJ_GET_INFO_BY_FD, info_attr.as_ptr(), 16) };
        let map_name = &info[name_at..name_at + 16];
        let end = map_name.iter().position(|&b| b == 0).unwrap_or(16);
        if rc != 0 || map_name[..end] != name.as_bytes()[..name.len().min(15)] {
            unsafe { libc::close(fd as i32) };
            continue;
        }
        let key_size = u32::from_ne_bytes(info[key_size_at..key_size_at + 4].try_into().unwrap()) as usize;
        let (mut key, mut next) = (vec![0u8; key_size], vec![0u8; key_size]);
        let mut first = true;
        loop {
            // union bpf_attr: map_fd, key (NULL for the first), next_key.
            let attr: [u64; 3] =
                [fd as u64, if first { 0 } else { key.as_ptr() as u64 }, next.as_mut_ptr() as u64];
            if unsafe { libc::syscall(SYS_BPF, MAP_GET_NEXT_KEY, attr.as_ptr(), 24) } != 0 {
                break;
            }
            println!("{}", next.iter().map(|b| format!("{b:02x}")).collect::<String>());
            key.copy_from_slice(&next);
            first = false;
        }
        unsafe { libc::close(fd as i32) };
        return;
    }
    panic!("process {pid} holds no BPF map named {name}");
}

/// Attaches an empty BPF program (`return 0`) to each named raw
/// tracepoint, says "attached", and keeps them until killed. The benchmarks'
/// floor: what any BPF program at those hooks costs, before doing anything.
fn empty_probes(tracepoints: &[String]) {
    const SYS_BPF: libc::c_long = 321;
    const PROG_LOAD: libc::c_long = 5;
    const RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
    // r0 = 0; exit.
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD: type, insn count, insns, license.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&PROG_TYPE_RAW_TRACEPOINT.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..53].copy_from_slice(b"empty");
    let prog = unsafe { libc::syscall(SYS_BPF, PROG_LOAD, attr.as_ptr(), attr.len()) };
    assert!(prog >= 0, "loading an empty program: {}", std::io::Error::last_os_error());
    let mut links = Vec::new();
    for name in tracepoints {
        let name = CString::new(name.as_str()).unwrap();
        let mut open = [0u64; 2];
        open[0] = name.as_ptr() as u64;
        open[1] = prog as u64;
        let link = unsafe { libc::syscall(SYS_BPF, RAW_TRACEPOINT_OPEN, open.as_ptr(), 16) };
        assert!(link >= 0, "attaching to {name:?}: {}", std::io::Error::last_os_error());
        links.push(link);
    }
    println!("attached {}", tracepoints.join(" "));
    // Detached when the process exits (the links are its file descriptors);
    // SIGINT ends it even where a shell started it with SIGINT ignored.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    loop {
        unsafe { libc::pause() };
    }
}

/// `len` bytes of private anonymous memory.
fn map_anonymous(len: usize) -> *mut libc::c_void {
    let area = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(area, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    area
}
