//! `tracer watch`: a capture of what came before a trigger, written by
//! itself when the trigger fires.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::Value;
use tracer_tests::{Helper, LoopDevice, MemCgroup, Tracer, require_root, run_tracer};

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
    ]);
    let before = disk.stat();
    for _ in 0..3 {
        let out = std::process::Command::new(HELPER)
            .args(["direct-io", &disk.device, "100", "0", "0", "0"])
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
    assert!(waited < Duration::from_secs(2 + 5), "--once ended {waited:?} after the kill");
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
