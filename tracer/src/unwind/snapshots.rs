//! Memory maps taken before they are needed: the process that the OOM
//! killer kills for its own allocation (victim = trigger, the common case
//! in a memory cgroup) has often exited, its map with it, by the time its
//! kill's event is read. Every such process enters reclaim first (memory
//! cgroup reclaim, usually also direct reclaim), a millisecond or more
//! before the kill and longer before its exit; the kernel side announces
//! each process the first time it does (`PressureEvent`, once per address
//! space), and a thread of its own here, never held up by the run loop,
//! reads its map at once.
//!
//! Bounded: the last [`SNAPSHOTS_MAX`] processes, each as the map lines
//! the unwinder uses (files and executable memory, not the anonymous
//! heap), at most [`SNAPSHOT_BYTES_MAX`]: typically 2-20 KiB a process,
//! 8 MiB at the very most. The files' unwind tables are read when a stack
//! needs them (into the unwinder's bounded object cache), from the path in
//! the map if it still names the same file (inode).

use std::{
    collections::HashMap,
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use tracer_common::oom::PressureEvent;

use super::maps;

/// Processes whose map is kept.
pub const SNAPSHOTS_MAX: usize = 128;
/// Largest map text kept for one process (its useful lines); a larger one
/// is not kept.
pub const SNAPSHOT_BYTES_MAX: usize = 64 << 10;

/// One process's memory map, as its announcement found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Its address space (`mm_struct` address): the same process, as long
    /// as it neither exits nor execs.
    pub mm: u64,
    /// The lines of `/proc/PID/maps` that unwinding uses.
    pub maps: String,
}

/// The last processes' maps, least recently used evicted first.
#[derive(Default)]
pub struct Snapshots {
    by_pid: HashMap<u32, (u64, Snapshot)>,
    tick: u64,
    /// Announcements whose map could not be read (the process was gone).
    pub missed: u64,
    /// Maps not kept for their size.
    pub too_big: u64,
}

impl Snapshots {
    /// Keeps `snapshot` for `pid`, evicting the least recently used
    /// process when full.
    pub fn insert(&mut self, pid: u32, snapshot: Snapshot) {
        self.tick += 1;
        if self.by_pid.len() >= SNAPSHOTS_MAX
            && !self.by_pid.contains_key(&pid)
            && let Some(oldest) = self.by_pid.iter().min_by_key(|(_, (tick, _))| *tick).map(|(&pid, _)| pid)
        {
            self.by_pid.remove(&oldest);
        }
        self.by_pid.insert(pid, (self.tick, snapshot));
    }

    /// The map kept for `pid` if it is of address space `mm` (a pid is
    /// reused; an exec replaces the address space).
    pub fn get(&mut self, pid: u32, mm: u64) -> Option<&Snapshot> {
        self.tick += 1;
        let (tick, snapshot) = self.by_pid.get_mut(&pid).filter(|(_, s)| mm != 0 && s.mm == mm)?;
        *tick = self.tick;
        Some(snapshot)
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }

    /// Takes the map of the process an announcement names, now.
    pub fn take(&mut self, event: &PressureEvent) {
        let read = maps::read_maps(event.tgid).map(|text| useful_lines(&text));
        log::debug!(
            "process {} under memory pressure: map read {} us after it entered reclaim",
            event.tgid,
            crate::families::monotonic_ns().saturating_sub(event.ts_ns) / 1000
        );
        match read {
            Some(text) if text.len() > SNAPSHOT_BYTES_MAX => self.too_big += 1,
            Some(text) => self.insert(event.tgid, Snapshot { mm: event.mm, maps: text }),
            None => {
                log::debug!("process {} under memory pressure gone before its map was read", event.tgid);
                self.missed += 1
            }
        }
    }
}

/// The lines of a memory map that unwinding reads: mappings of files
/// (where code is, and each file's load bias) and executable memory
/// (`[vdso]`, JIT code).
pub fn useful_lines(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let useful = maps::parse_maps(line).first().is_some_and(|m| m.executable || m.inode != 0);
        if useful {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The thread that takes snapshots as announcements arrive; stopped and
/// joined on drop.
pub struct Keeper {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Keeper {
    pub fn spawn(ring: aya::maps::RingBuf<aya::maps::MapData>, snapshots: Arc<Mutex<Snapshots>>) -> Keeper {
        let stop = Arc::new(AtomicBool::new(false));
        let mut ring = ring;
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tracer-maps".into())
                .spawn(move || {
                    raise_priority();
                    let ring = &mut ring;
                    let fd = ring.as_raw_fd();
                    let mut was_ready = false;
                    while !stop.load(Ordering::Relaxed) {
                        let mut events = Vec::new();
                        while let Some(item) = ring.next() {
                            if item.len() >= size_of::<PressureEvent>() {
                                // Safety: the kernel side writes a
                                // `PressureEvent` (plain #[repr(C)]) per record.
                                events.push(unsafe {
                                    std::ptr::read_unaligned(item.as_ptr().cast::<PressureEvent>())
                                });
                            }
                        }
                        if !events.is_empty() {
                            let mut snapshots = snapshots.lock().unwrap_or_else(|e| e.into_inner());
                            for event in &events {
                                snapshots.take(event);
                            }
                            continue;
                        }
                        if was_ready {
                            // Readable while a record is still being
                            // written: never spin at real-time priority.
                            std::thread::sleep(std::time::Duration::from_millis(1));
                        }
                        // Woken by each announcement; the timeout only
                        // bounds how long a stop waits.
                        let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                        let ready = unsafe { libc::poll(&mut poll, 1, 100) };
                        if ready < 0
                            && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
                            || poll.revents & (libc::POLLERR | libc::POLLNVAL) != 0
                        {
                            log::warn!(
                                "tracer-maps: polling its ring failed; maps are no longer taken early"
                            );
                            return;
                        }
                        was_ready = ready > 0;
                    }
                })
                .expect("spawning a thread")
        };
        Keeper { stop, thread: Some(thread) }
    }
}

/// The reader races the process's exit by a few milliseconds, and a
/// normal thread's wakeup, even at nice -20, is now and then as late
/// (measured here, 2 CPUs: 3-8 ms in 1 wakeup of 20; with SCHED_FIFO at
/// the lowest real-time priority, at most 0.33 ms in 60). The thread
/// sleeps in poll() and reads one map per announced process (once per
/// address space), so its real-time share is tiny; the kernel's real-time
/// throttling bounds it all the same.
///
/// The raw system call: musl's `sched_setscheduler` always fails with
/// ENOSYS (it is per thread on Linux, not per process as POSIX says), and
/// musl's `sched_param` has more fields than glibc's.
fn raise_priority() {
    // SAFETY: all-zero is a valid sched_param on both C libraries.
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = 1;
    // Thread id 0: the calling thread.
    if unsafe { libc::syscall(libc::SYS_sched_setscheduler, 0, libc::SCHED_FIFO, &param) } != 0 {
        log::debug!("tracer-maps thread keeps its priority: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(mm: u64) -> Snapshot {
        Snapshot { mm, maps: format!("{mm:x}\n") }
    }

    #[test]
    fn keeps_the_last_processes_used() {
        let mut kept = Snapshots::default();
        for pid in 0..SNAPSHOTS_MAX as u32 {
            kept.insert(pid, snapshot(pid as u64 + 1));
        }
        // Process 0 is used again: 1 is now the oldest, and goes.
        assert!(kept.get(0, 1).is_some());
        kept.insert(1000, snapshot(1001));
        assert_eq!(kept.len(), SNAPSHOTS_MAX);
        assert!(kept.get(1, 2).is_none());
        assert!(kept.get(0, 1).is_some() && kept.get(2, 3).is_some() && kept.get(1000, 1001).is_some());
        // A process kept again replaces itself, evicting nothing.
        kept.insert(1000, snapshot(1002));
        assert_eq!(kept.len(), SNAPSHOTS_MAX);
        assert!(kept.get(1000, 1001).is_none() && kept.get(1000, 1002).is_some());
    }

    #[test]
    fn a_snapshot_is_of_one_address_space() {
        let mut kept = Snapshots::default();
        kept.insert(7, snapshot(0xffff_8880_0000_1000));
        assert!(kept.get(7, 0xffff_8880_0000_1000).is_some());
        // The pid reused, or the process exec'd: another address space.
        assert!(kept.get(7, 0xffff_8880_0000_2000).is_none());
        // An event that does not know its address space cannot tell.
        assert!(kept.get(7, 0).is_none());
        assert!(kept.get(8, 0xffff_8880_0000_1000).is_none());
    }

    #[test]
    fn keeps_files_and_code_not_the_heap() {
        let text = "\
555555554000-555555555000 r--p 00000000 fd:01 1234                       /usr/bin/app
555555555000-555555556000 r-xp 00001000 fd:01 1234                       /usr/bin/app
555555559000-55555557a000 rw-p 00000000 00:00 0                          [heap]
7ffff7d00000-7ffff7d10000 rw-p 00000000 00:00 0 
7ffff7e00000-7ffff7e10000 r-xp 00000000 00:00 0 
7ffff7fc1000-7ffff7fc3000 r-xp 00000000 00:00 0                          [vdso]
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
";
        let kept = useful_lines(text);
        let paths: Vec<String> = maps::parse_maps(&kept).into_iter().map(|m| m.path).collect();
        assert_eq!(paths, ["/usr/bin/app", "/usr/bin/app", "", "[vdso]"]);
    }

    #[test]
    fn takes_the_map_of_a_live_process_and_counts_one_gone() {
        let mut kept = Snapshots::default();
        let me = PressureEvent { mm: 42, ts_ns: 0, tgid: std::process::id(), pid: std::process::id() };
        kept.take(&me);
        let own = kept.get(me.tgid, 42).expect("this process's map").maps.clone();
        assert!(own.lines().any(|l| l.contains("r-xp") && l.contains('/')), "{own}");
        assert!(!own.contains("[stack]"));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = PressureEvent { tgid: child.id(), pid: child.id(), ..me };
        child.wait().unwrap();
        kept.take(&gone);
        assert_eq!((kept.missed, kept.len()), (1, 1));
    }
}
