//! OOM kills in memory cgroups of the tests' own, against the cgroup's own
//! `oom_kill` counter, /proc/vmstat `oom_kill`, and the kernel's log.

use std::sync::Mutex;

use serde_json::Value;
use tracer_tests::{Helper, MemCgroup, Tracer, require_root};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");

/// /proc/vmstat `oom_kill` is global: these tests do not overlap.
static SERIAL: Mutex<()> = Mutex::new(());

fn vmstat(name: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {name} in /proc/vmstat"))
}

/// anon-rss (kB) the kernel logged when it killed `pid`.
fn logged_anon_rss_kb(pid: u64) -> Option<u64> {
    let out = std::process::Command::new("dmesg").output().ok()?;
    let log = String::from_utf8_lossy(&out.stdout);
    let line = log.lines().rev().find(|l| l.contains(&format!("Killed process {pid} ")))?;
    let rest = line.split("anon-rss:").nth(1)?;
    rest.split("kB").next()?.trim().parse().ok()
}

/// Kernels before 6.2 keep up to 64 page counts per task before they
/// reach its mm's RSS counters (SPLIT_RSS_COUNTING).
fn split_rss_counting() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) < (6, 2)
}

/// The kernel log's lines containing any of `needles`.
fn kernel_log_lines(needles: &[&str]) -> String {
    let out = std::process::Command::new("dmesg").output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Kernels whose `oom:mark_victim` carries the victim's pid only (6.1,
/// whose Debian build also has the uid): its format has no sizes.
fn victim_is_pid_only() -> bool {
    let format =
        std::fs::read_to_string("/sys/kernel/tracing/events/oom/mark_victim/format").unwrap_or_default();
    !format.contains(" total_vm;")
}

fn start_hogs(memcg: &MemCgroup, n: usize, mb: &str, score_adj: &str) -> Vec<(u64, Helper)> {
    (0..n)
        .map(|_| {
            let mut hog = Helper::start(HELPER, &["oom-hog", memcg.dir.to_str().unwrap(), mb, score_adj]);
            let pid = hog.read_json()["pid"].as_u64().unwrap();
            (pid, hog)
        })
        .collect()
}

fn killed_by_sigkill(hog: Helper) -> bool {
    use std::os::unix::process::ExitStatusExt as _;
    hog.wait().signal() == Some(libc::SIGKILL)
}

/// The incident shape: one process allocates (the trigger), the OOM killer
/// picks a bigger one (the victim, made the preferred victim here).
#[test]
fn a_memcg_oom_kill_matches_the_kernels_counters() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let memcg = MemCgroup::new("oom");
    memcg.set_limit(64u64 << 20);
    let tracer = Tracer::start(&["trace", "oom", "--cgroup", &memcg.path, "--duration", "120s", "--json"]);
    let (vm0, cg0) = (vmstat("oom_kill"), memcg.oom_kills());

    // The victim holds 40 MiB and then waits, its oom_score_adj 1000 making
    // it the OOM killer's choice; the trigger needs 32 MiB more.
    let (pid, mut victim) = start_hogs(&memcg, 1, "40", "1000").pop().unwrap();
    victim.say("go");
    assert_eq!(victim.read_json()["survived"], true, "the victim got its memory");
    let (trigger_pid, mut trigger) = start_hogs(&memcg, 1, "32", "0").pop().unwrap();
    trigger.say("go");
    assert_eq!(trigger.read_json()["survived"], true, "the trigger goes on once the victim is killed");
    assert!(killed_by_sigkill(victim), "the victim was not OOM-killed");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let done = tracer.stop();
    trigger.say("exit");
    assert!(trigger.wait().success());
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let report = done.json();
    let (vm, cg) = (vmstat("oom_kill") - vm0, memcg.oom_kills() - cg0);

    let kills = report["oom_kills"].as_array().unwrap();
    assert_eq!(cg, 1, "the cgroup's own oom_kill counter");
    assert_eq!(kills.len() as u64, cg, "tracer kills vs the cgroup's oom_kill: {kills:#?}");
    assert_eq!(kills.len() as u64, vm, "tracer kills vs /proc/vmstat oom_kill");
    let kill = &kills[0];
    let pid_only = victim_is_pid_only();
    if !pid_only {
        // Where mark_victim gives a pid, the BTF program has no task to
        // read; the raw tracepoint (which reads none either) is expected.
        tracer_tests::assert_tp_btf(&report);
    }
    assert_eq!(kill["victim_pid"], pid);
    if pid_only {
        // The kernel gives the pid alone; the report says so.
        let warnings = report["warnings"].to_string();
        assert!(warnings.contains("gives only the victim's pid"), "{warnings}");
    } else {
        assert_eq!(kill["victim_comm"], "tracer-test-hel");
    }
    assert_eq!(kill["cgroup"], memcg.path.as_str());
    assert_eq!(kill["scope"], "memcg", "{}", kill["trigger_kernel_stack"]);
    assert_eq!(kill["limit_cgroup"], memcg.path.as_str());
    assert_eq!(kill["limit_bytes"], 64u64 << 20);
    assert_eq!(kill["trigger_pid"], trigger_pid, "the allocating process triggered the kill");
    assert_eq!(kill["trigger_cgroup"], memcg.path.as_str());
    if !pid_only {
        let anon = kill["anon_rss_kb"].as_u64().unwrap();
        let logged = logged_anon_rss_kb(pid).expect("the kernel logged the kill");
        // Read at mark_victim, logged just after; before 6.2 the victim,
        // already SIGKILLed, can fold its cached counts in meanwhile.
        let slack = if split_rss_counting() { 64 * 4 } else { 8 };
        assert!(anon.abs_diff(logged) <= slack, "anon RSS {anon} kB vs {logged} kB logged by the kernel");
        // The kernel's figure (what tracer reads) can be short by as much.
        assert!(anon + slack >= 40 << 10, "the victim held its 40 MiB: {anon} kB");
    }
    let frame = kill["trigger_user_stack"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["symbol"].as_str().is_some_and(|s| s.ends_with("touch_pages")))
        .unwrap_or_else(|| {
            panic!("touch_pages not in the trigger's user stack: {}", kill["trigger_user_stack"])
        });
    assert!(frame["file"].as_str().unwrap().ends_with("tracer-test-helper.rs"), "{frame}");
    assert_eq!(report["lost_events"], 0, "{}", report["lost"]);
}

#[test]
fn several_kills_at_once_lose_none() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let memcg = MemCgroup::new("oom-many");
    memcg.set_limit(96u64 << 20);
    let tracer = Tracer::start(&["trace", "oom", "--cgroup", &memcg.path, "--duration", "120s", "--json"]);
    let (vm0, cg0) = (vmstat("oom_kill"), memcg.oom_kills());

    let mut hogs = start_hogs(&memcg, 4, "512", "0");
    for (_, hog) in &mut hogs {
        hog.say("go");
    }
    let pids: Vec<u64> = hogs.iter().map(|(pid, _)| *pid).collect();
    for (_, hog) in hogs {
        assert!(killed_by_sigkill(hog), "every hog is OOM-killed");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let done = tracer.stop();
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let report = done.json();
    let (vm, cg) = (vmstat("oom_kill") - vm0, memcg.oom_kills() - cg0);
    let kills = report["oom_kills"].as_array().unwrap();
    let victims: Vec<u64> = kills.iter().map(|k: &Value| k["victim_pid"].as_u64().unwrap()).collect();
    assert_eq!(cg, 4, "one kill per hog");
    assert_eq!(
        kills.len() as u64,
        cg,
        "tracer {victims:?} vs the cgroup's oom_kill; lost: {}, warnings: {}; the kernel's log:\n{}",
        report["lost"],
        report["warnings"],
        kernel_log_lines(&["Killed process", "oom-kill:", "Out of memory", "reaped process"])
    );
    assert_eq!(kills.len() as u64, vm, "tracer vs /proc/vmstat oom_kill");
    for pid in pids {
        assert!(victims.contains(&pid), "hog {pid} not among the victims {victims:?}");
    }
    assert_eq!(report["lost_events"], 0, "{}", report["lost"]);
}

#[test]
fn unknown_cgroup_is_an_error() {
    require_root();
    let done = tracer_tests::run_tracer(&["trace", "oom", "--cgroup", "/no/such/cgroup", "--duration", "1s"]);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr.contains("no memory cgroup `/no/such/cgroup`"), "{}", done.stderr);
}
