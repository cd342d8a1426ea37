//! `tracer watch`: a capture of what came before a trigger, written by
//! itself when the trigger fires.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{Ext4Mount, Helper, LoopDevice, MemCgroup, Tracer, require_root, run_helper, run_tracer};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");

/// A capture directory of this test's own, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn captures(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.0)
            .map(|d| {
                d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cap")).collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn report_json(capture: &Path) -> Value {
    let done = run_tracer(&["report", "--format", "json", capture.to_str().unwrap()]);
    assert!(done.status.success(), "{}", done.stderr);
    done.json()
}

fn reads_on(report: &Value, disk: &str) -> u64 {
    report["block"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["device"] == disk && r["op"] == "read")
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

/// Steady I/O on a loop device, then an OOM kill in a memory cgroup: the
/// capture appears by itself soon after the kill, with the kill and the
/// I/O of the seconds before it, and `--once` ends the watch.
#[test]
fn an_oom_kill_writes_a_capture_of_the_seconds_before_it() {
    require_root();
    let disk = LoopDevice::new("watch", 16 << 20);
    let memcg = MemCgroup::new("watch");
    memcg.set_limit(64 << 20);
    let dir = Dir::new("oom");
    let mut tracer = Tracer::start(&[
        "watch",
        "block",
        "oom",
        "--disk",
        &disk.name,
        "--dir",
        dir.0.to_str().unwrap(),
        "--trigger",
        "oom",
        "--keep",
        "30s",
        "--after",
        "2s",
        "--once",
        // Exact counts: see NO_SLOW_IO in tests/block.rs.
        "--slow-io",
        "off",
        // Kills and I/O of this test only: other tests kill processes too.
        "--cgroup",
        &memcg.path,
    ]);
    let before = disk.stat();
    for _ in 0..3 {
        let out = memcg
            .enter(std::process::Command::new(HELPER).args(["direct-io", &disk.device, "100", "0", "0", "0"]))
            .output();
        assert!(out.unwrap().status.success());
        std::thread::sleep(Duration::from_millis(700));
    }
    let reads = disk.stat().since(&before).reads;
    assert!(dir.captures().is_empty(), "a capture before any trigger");

    let mut victim = Helper::start(HELPER, &["oom-hog", memcg.dir.to_str().unwrap(), "40", "1000"]);
    let victim_pid = victim.read_json()["pid"].as_u64().unwrap();
    victim.say("go");
    assert_eq!(victim.read_json()["survived"], true);
    let mut trigger = Helper::start(HELPER, &["oom-hog", memcg.dir.to_str().unwrap(), "32", "0"]);
    trigger.read_json();
    trigger.say("go");
    assert_eq!(trigger.read_json()["survived"], true, "the trigger goes on once the victim is killed");
    let killed = Instant::now();
    let done = tracer.finish();
    let waited = killed.elapsed();
    trigger.say("exit");
    let _ = trigger.wait();
    assert!(done.status.success(), "{}", done.stderr);
    // --after, then a few seconds to write the capture and exit.
    let bound = Duration::from_secs(2 + 5 * u64::from(tracer_tests::emulation_slowdown()));
    assert!(waited < bound, "--once ended {waited:?} after the kill (bound {bound:?})");
    assert!(done.stderr.contains("trigger oom fired"), "{}", done.stderr);

    let captures = dir.captures();
    assert_eq!(captures.len(), 1, "{captures:?}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&captures[0]).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&dir.0).unwrap().permissions().mode() & 0o777, 0o700);
    let report = report_json(&captures[0]);
    let kills = report["oom_kills"].as_array().unwrap();
    assert_eq!(kills.len(), 1, "{kills:?}");
    assert_eq!(kills[0]["victim_pid"], victim_pid);
    assert_eq!(reads_on(&report, &disk.name), reads, "the I/O before the kill, exactly");
    assert_eq!(report["trigger"]["trigger"], "oom");
    let text = run_tracer(&["report", captures[0].to_str().unwrap()]).stdout;
    assert!(text.contains("  trigger  oom at "), "{text}");
    assert!(text.contains("<- trigger"), "the time line marks it: {text}");
}

/// SIGUSR1 writes a capture at once; a p99 trigger above anything a
/// loop device does stays quiet; SIGTERM ends the watch.
#[test]
fn sigusr1_dumps_and_a_quiet_trigger_does_not_fire() {
    require_root();
    let disk = LoopDevice::new("watch-usr1", 16 << 20);
    let dir = Dir::new("usr1");
    let tracer = Tracer::start(&[
        "watch",
        "block",
        "--disk",
        &disk.name,
        "--dir",
        dir.0.to_str().unwrap(),
        "--trigger",
        &format!("p99:{}>10s", disk.name),
        "--keep",
        "10s",
        "--slow-io",
        "off",
    ]);
    let out =
        std::process::Command::new(HELPER).args(["direct-io", &disk.device, "200", "0", "0", "0"]).output();
    assert!(out.unwrap().status.success());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(dir.captures().is_empty(), "the p99 trigger fired on a fast disk");
    unsafe { libc::kill(tracer.pid(), libc::SIGUSR1) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.captures().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Written, not still being written: give the sync a moment.
    std::thread::sleep(Duration::from_millis(300));
    let done = tracer.stop_with(libc::SIGTERM);
    assert!(done.status.success(), "{}", done.stderr);
    let captures = dir.captures();
    assert_eq!(captures.len(), 1, "{}", done.stderr);
    assert!(captures[0].to_string_lossy().ends_with("-signal.cap"));
    assert_eq!(reads_on(&report_json(&captures[0]), &disk.name), 200);
}

#[test]
fn a_malformed_trigger_is_a_usage_error_that_lists_what_is_accepted() {
    let done = run_tracer(&["watch", "--dir", "/tmp/x", "--trigger", "p99>soon"]);
    assert_eq!(done.status.code(), Some(2), "{}", done.stderr);
    assert!(done.stderr.contains("accepted: oom | alloc-fail"), "{}", done.stderr);
}

/// The kernel's PSI trigger: memory cgroup reclaim in a tight cgroup
/// (a stall of memory pressure) fires it; nothing before.
#[test]
fn a_psi_trigger_fires_under_memory_cgroup_pressure() {
    require_root();
    if !Path::new("/proc/pressure/memory").exists() {
        panic!("this kernel has no PSI (/proc/pressure/memory): CONFIG_PSI, or psi=1 on its command line");
    }
    let memcg = MemCgroup::new("watch-psi");
    memcg.set_limit(16 << 20);
    let dir = Dir::new("psi");
    let mut tracer = Tracer::start(&[
        "watch",
        "reclaim",
        "--dir",
        dir.0.to_str().unwrap(),
        "--trigger",
        "psi:some>20ms/2s",
        "--keep",
        "10s",
        "--after",
        "0",
        "--once",
    ]);
    let file = std::env::temp_dir().join(format!("tracer-watch-psi-file-{}", std::process::id()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.captures().is_empty() && Instant::now() < deadline {
        tracer_tests::run_helper(
            HELPER,
            &["memcg-read", memcg.dir.to_str().unwrap(), file.to_str().unwrap(), "128"],
        );
    }
    let _ = std::fs::remove_file(&file);
    let done = tracer.finish();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stderr.contains("trigger psi-some fired: memory pressure"), "{}", done.stderr);
    let captures = dir.captures();
    assert_eq!(captures.len(), 1);
    let report = report_json(&captures[0]);
    let memcg_stalls: u64 = report["reclaim"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "memcg")
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert!(memcg_stalls > 0, "the capture shows the reclaim behind the pressure: {}", report["reclaim"]);
}

/// The u32 at byte `at` of each key of map `map` of tracer `tracer_pid`
/// (the process of a row, a stack id...).
fn key_fields(tracer_pid: i32, map: &str, at: usize) -> Vec<u32> {
    run_helper(HELPER, &["bpf-map-keys", &tracer_pid.to_string(), map])
        .lines()
        .map(|key| {
            let byte = |i: usize| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap();
            u32::from_le_bytes([byte(at), byte(at + 1), byte(at + 2), byte(at + 3)])
        })
        .collect()
}

/// A watch runs for days while processes come and go: the rows of one that
/// exited leave the kernel's maps a few intervals later, and its user
/// stacks leave the stack map (else the maps fill with the dead, and new
/// processes' stalls and stacks are lost as "map full" and "stack capture
/// failed").
#[test]
fn rows_of_an_exited_process_leave_the_kernel_maps() {
    require_root();
    let memcg = MemCgroup::new("watch-forget");
    memcg.set_limit(16 << 20);
    let dir = Dir::new("forget");
    let tracer = Tracer::start(&[
        "watch",
        "reclaim",
        "--cgroup",
        &memcg.path,
        "--dir",
        dir.0.to_str().unwrap(),
        "--trigger",
        "oom",
    ]);
    let file = std::env::temp_dir().join(format!("tracer-watch-forget-file-{}", std::process::id()));
    let mut helper = Helper::start(
        HELPER,
        &["memcg-read", memcg.dir.to_str().unwrap(), file.to_str().unwrap(), "64", "wait"],
    );
    helper.read_json();
    let pid = helper.pid();
    // Read while the helper is alive: its rows are kept until it has been
    // gone at two interval ends.
    let rows = key_fields(tracer.pid(), "STALL_ROWS", 4);
    // StallStackKey { kind, kernel_stack, user_stack, tgid }: the helper's
    // user stacks (the watch is filtered to its cgroup: no one else's).
    let user_stacks: Vec<u32> = key_fields(tracer.pid(), "STALL_STACKS", 8)
        .into_iter()
        .zip(key_fields(tracer.pid(), "STALL_STACKS", 12))
        .filter(|&(id, tgid)| tgid == pid && (id as i32) >= 0)
        .map(|(id, _)| id)
        .collect();
    helper.say("exit");
    assert!(helper.wait().success());
    let _ = std::fs::remove_file(&file);
    assert!(rows.contains(&pid), "the helper's memcg reclaim has a row: {rows:?} (helper {pid})");
    assert!(!user_stacks.is_empty(), "the helper's stalls have user stacks");
    // Two interval ends after the exit, however late a loaded machine
    // makes them.
    let deadline = Instant::now() + Duration::from_secs(10 * tracer_tests::emulation_slowdown() as u64);
    let left = || {
        let stacks = key_fields(tracer.pid(), "STACKS", 0);
        (
            key_fields(tracer.pid(), "STALL_ROWS", 4).contains(&pid),
            key_fields(tracer.pid(), "STALL_STACKS", 12).contains(&pid),
            user_stacks.iter().filter(|id| stacks.contains(id)).count(),
        )
    };
    loop {
        let now = left();
        if now == (false, false, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exited helper's rows and user stacks are still there: {now:?} (helper {pid}, stacks {user_stacks:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert!(!done.stderr.contains("warning: forgetting"), "{}", done.stderr);
}

/// `fsfreeze -f` on a mountpoint; thawed on drop, also when the test fails
/// (writes held by the freeze would otherwise wait forever, and the
/// filesystem could not be unmounted). Declared after the devices it sits
/// on, so dropped before them.
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn new(mountpoint: &'a Path) -> Self {
        let out = Command::new("fsfreeze").arg("-f").arg(mountpoint).output().expect("running fsfreeze");
        assert!(out.status.success(), "fsfreeze -f: {}", String::from_utf8_lossy(&out.stderr));
        Self(mountpoint)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(self.0).status();
    }
}

/// Waits until `done` holds for the tracer's stderr so far; false on timeout.
fn wait_for_stderr(tracer: &Tracer, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done(&tracer.stderr_so_far()) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// One write to `disk`, a buffered loop device over a file on `mount`,
/// held `hold` by freezing `mount` while it is in flight: the loop
/// worker's write to the backing file waits in `sb_start_write` until the
/// thaw, so the request's issue-to-completion time is at least `hold`.
/// Returns the time from just before the write was started to its end: no
/// request of it can have taken longer.
fn one_held_write(mount: &Path, disk: &LoopDevice, hold: Duration) -> Duration {
    let frozen = Frozen::new(mount);
    let started = Instant::now();
    let writer = Command::new(HELPER)
        .args(["direct-io", &disk.device, "0", "1", "0", "0"])
        .stdout(Stdio::null())
        .spawn()
        .expect("starting tracer-test-helper");
    // Held from when the block layer has it, not from the spawn: on a busy
    // machine the helper may take a while to get there.
    let deadline = Instant::now() + Duration::from_secs(20);
    while disk.stat().in_flight == 0 {
        assert!(Instant::now() < deadline, "the write never reached {}", disk.name);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(hold);
    drop(frozen);
    let out = writer.wait_with_output().unwrap();
    assert!(out.status.success(), "the held write failed: {}", out.status);
    started.elapsed()
}

/// The acceptance of a p99 trigger: a loop device (B) over a file on an
/// ext4 on another loop device (A). Steady fast direct I/O on B fires
/// nothing; one write to B held 500 ms by `fsfreeze` of A's mountpoint
/// gives B an interval whose p99 is over the 200 ms threshold, and the
/// capture appears `--after` later, its report naming the trigger and
/// showing the slow write. Held again within `--cooldown`: the trigger
/// fires, is logged as within its cooldown, and no second capture comes.
#[test]
fn a_p99_trigger_fires_when_requests_are_held_and_not_before() {
    require_root();
    let threshold = Duration::from_millis(200);
    let hold = Duration::from_millis(500);
    let lower = LoopDevice::new("watch-p99-lower", 64 << 20);
    let mount = Ext4Mount::new(&lower, "watch-p99-fs");
    let disk = LoopDevice::buffered_over(mount.dir.join("upper.img"), 16 << 20);
    let dir = Dir::new("p99");
    let trigger = format!("p99:{}>{}ms", disk.name, threshold.as_millis());
    let tracer = Tracer::start(&[
        "watch",
        "block",
        "--disk",
        &disk.name,
        "--dir",
        dir.0.to_str().unwrap(),
        "--trigger",
        &trigger,
        "--keep",
        "60s",
        "--after",
        "2s",
        "--cooldown",
        "10m",
        "--slow-io",
        "off",
    ]);

    // Steady fast I/O, then a whole interval for its last report.
    for _ in 0..6 {
        run_helper(HELPER, &["direct-io", &disk.device, "50", "20", "0", "0"]);
        std::thread::sleep(Duration::from_millis(400));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!tracer.stderr_so_far().contains("fired"), "fired on fast I/O:\n{}", tracer.stderr_so_far());
    assert!(dir.captures().is_empty(), "a capture before the slow write");

    let longest = one_held_write(&mount.dir, &disk, hold);
    let thawed = Instant::now();
    let written = wait_for_stderr(&tracer, Duration::from_secs(15), |e| e.contains("capture written to"));
    let waited = thawed.elapsed();
    assert!(written, "no capture after the held write:\n{}", tracer.stderr_so_far());
    // --after 2s is two intervals after the one with the slow write.
    assert!(waited < Duration::from_secs(2 + 4), "the capture came {waited:?} after the thaw");
    let stderr = tracer.stderr_so_far();
    assert!(stderr.contains(&format!("trigger p99 fired: {} write p99", disk.name)), "{stderr}");
    let captures = dir.captures();
    assert_eq!(captures.len(), 1, "{captures:?}");
    assert!(captures[0].to_string_lossy().ends_with("-p99.cap"), "{captures:?}");

    // Within the cooldown: fired, logged, no capture.
    one_held_write(&mount.dir, &disk, hold);
    let logged = wait_for_stderr(&tracer, Duration::from_secs(10), |e| e.contains("within its cooldown"));
    assert!(logged, "the second slow interval was not seen:\n{}", tracer.stderr_so_far());
    // Past where its --after would have ended.
    std::thread::sleep(Duration::from_secs(3));
    let done = tracer.stop_with(libc::SIGTERM);
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(done.stderr.matches("trigger p99 fired:").count(), 1, "{}", done.stderr);
    assert!(
        done.stderr.contains("trigger p99 fired (")
            && done.stderr.contains("within its cooldown: no capture")
    );
    assert_eq!(dir.captures(), captures, "a capture within the cooldown");

    let report = report_json(&captures[0]);
    assert_eq!(report["trigger"]["trigger"], "p99", "{}", report["trigger"]);
    let what = report["trigger"]["what"].as_str().unwrap();
    assert!(what.starts_with(&format!("{} write p99", disk.name)), "{what}");
    // The time line: fast intervals with requests before the trigger's,
    // which is over the threshold.
    let at = report["trigger"]["at_s"].as_f64().unwrap();
    let threshold_us = threshold.as_secs_f64() * 1e6;
    let mut before = 0;
    let mut fired = None;
    for point in report["timeline"].as_array().unwrap() {
        let end = point["offset_s"].as_f64().unwrap() + point["duration_s"].as_f64().unwrap();
        let p99 = point["block_p99_us"].as_f64().unwrap();
        if end < at - 1e-6 {
            assert!(p99 <= threshold_us, "a slow interval before the trigger: {point}");
            before += point["block_requests"].as_u64().unwrap();
        } else if (end - at).abs() < 1e-6 {
            fired = Some(p99);
        }
    }
    assert!(before >= 6 * 70 / 2, "the steady I/O before the trigger is in the capture: {before} requests");
    let fired = fired.expect("the trigger's interval is in the time line");
    assert!(fired > threshold_us, "the trigger's interval has p99 {fired} us");
    // The held write as tracer measured it: at least the hold, at most
    // the helper's whole run (bucket bounds within their relative error).
    let writes = report["block"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["device"] == disk.name.as_str() && r["op"] == "write")
        .expect("writes on the disk");
    let max = writes["latency_us"]["max"].as_f64().unwrap();
    let error = 1.0 + writes["latency_us"]["relative_error"].as_f64().unwrap();
    assert!(max * error >= hold.as_secs_f64() * 1e6, "max {max} us, held {hold:?}");
    assert!(max <= longest.as_secs_f64() * 1e6 * error, "max {max} us, the helper ran {longest:?}");
}

/// SIGUSR1 writes a capture each time, `--cooldown` notwithstanding, and
/// `--max-disk` (here one byte) removes the older capture once the newer
/// one is written, never the newer one. 100 ms intervals: the two may
/// fall in one second, which then names the second `-2`.
#[test]
fn sigusr1_ignores_the_cooldown_and_max_disk_removes_the_older_capture() {
    require_root();
    let disk = LoopDevice::new("watch-maxdisk", 16 << 20);
    let dir = Dir::new("maxdisk");
    let tracer = Tracer::start(&[
        "watch",
        "block",
        "--disk",
        &disk.name,
        "--dir",
        dir.0.to_str().unwrap(),
        "--trigger",
        "signal",
        "--interval",
        "100ms",
        "--keep",
        "10s",
        "--cooldown",
        "10m",
        "--max-disk",
        "1",
        "--slow-io",
        "off",
    ]);
    let written = |n: usize| move |e: &str| e.matches("capture written to").count() >= n;
    run_helper(HELPER, &["direct-io", &disk.device, "20", "0", "0", "0"]);
    unsafe { libc::kill(tracer.pid(), libc::SIGUSR1) };
    assert!(wait_for_stderr(&tracer, Duration::from_secs(10), written(1)), "{}", tracer.stderr_so_far());
    let first = dir.captures();
    assert_eq!(first.len(), 1, "{first:?}");
    run_helper(HELPER, &["direct-io", &disk.device, "30", "0", "0", "0"]);
    unsafe { libc::kill(tracer.pid(), libc::SIGUSR1) };
    assert!(wait_for_stderr(&tracer, Duration::from_secs(10), written(2)), "{}", tracer.stderr_so_far());
    let done = tracer.stop_with(libc::SIGTERM);
    assert!(done.status.success(), "{}", done.stderr);
    assert!(!done.stderr.contains("cooldown"), "{}", done.stderr);
    assert!(done.stderr.contains(&format!("removed {} (--max-disk)", first[0].display())), "{}", done.stderr);
    let left = dir.captures();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left, first, "the newer capture stays");
    assert!(done.stderr.contains(&format!("capture written to {} ", left[0].display())), "{}", done.stderr);
    // The newer capture starts after the older one: the second run's reads.
    assert_eq!(reads_on(&report_json(&left[0]), &disk.name), 30);
}
