//! Reclaim, compaction and THP splits against /proc/vmstat and the
//! tests' own memory cgroups.

use std::sync::Mutex;

use serde_json::Value;
use tracer_tests::{MemCgroup, Tracer, require_root, run_helper};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");

/// Both tests compare against global /proc/vmstat counters.
static SERIAL: Mutex<()> = Mutex::new(());

fn vmstat_sum(prefix: &str) -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum()
}

fn row<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["reclaim"].as_array().unwrap().iter().find(|r| r["kind"] == kind).expect("reclaim row")
}

/// Whether this kernel lets tracer hook the split functions: they exist
/// (THP is built in) and kprobes do (fentry is tried first, but a kernel
/// with kprobes always has one of the two working here).
fn split_function_hooks() -> bool {
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    kallsyms.lines().any(|l| l.ends_with(" __split_huge_pmd"))
        && std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// THP splits, exact against `thp_split_pmd`, by the best hook the kernel
/// allows: per process from a function hook where kprobes/fentry exist (the
/// helper's own count), the global counters where they do not, and a clear
/// "unavailable" on kernels without THP (PREEMPT_RT).
#[test]
fn thp_splits_equal_thp_split_pmd() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        let done = tracer_tests::run_tracer(&["trace", "thp", "--duration", "1s", "--json"]);
        assert!(!done.status.success(), "nothing to trace without THP: {}", done.stderr);
        assert!(done.stderr.contains("no transparent huge pages"), "says why: {}", done.stderr);
        return;
    }
    let tracer = Tracer::start(&["trace", "thp", "--duration", "120s", "--json"]);
    let before = vmstat_sum("thp_split_pmd");
    let out: Value = serde_json::from_str(&run_helper(HELPER, &["thp-split", "20"])).unwrap();
    let delta = vmstat_sum("thp_split_pmd") - before;
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let report = done.json();
    assert_eq!(out["huge_faults"], 20, "the helper did not get huge pages: {out}");
    assert_eq!(delta, 20, "one thp_split_pmd per iteration");
    let thp = &report["thp"];
    let method = thp["method"].as_str().unwrap();
    if split_function_hooks() {
        assert!(method == "fentry" || method == "kprobe", "a function hook is possible here: {thp}");
        let helper = thp["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == out["pid"])
            .unwrap_or_else(|| panic!("the helper's splits, per process: {thp}"));
        assert_eq!(helper["pmd_splits"], 20, "the helper's own count: {helper}");
        assert_eq!(thp["splits"], delta, "all splits against thp_split_pmd: {thp}");
    } else {
        assert_eq!(method, "vmstat", "no kprobes or fentry here: the counters");
        assert_eq!(thp["splits"], delta, "{thp}");
        assert!(thp["processes"].as_array().unwrap().is_empty(), "the counter method has no per-task detail");
        assert!(thp["note"].as_str().unwrap().contains("no per-process"), "{thp}");
    }
    let family = report["families"].as_array().unwrap().iter().find(|f| f["family"] == "thp").unwrap();
    assert!(family["hook"].as_str().unwrap().contains(method), "{family}");
}

#[test]
fn memcg_reclaim_is_attributed_to_its_cgroup() {
    require_root();
    let memcg = MemCgroup::new("memcg-reclaim");
    memcg.set_limit(16u64 << 20);
    let file = std::env::temp_dir().join(format!("tracer-memcg-read-{}", std::process::id()));
    let tracer =
        Tracer::start(&["trace", "reclaim", "--cgroup", &memcg.path, "--duration", "120s", "--json"]);
    let hits0 = memcg.limit_hits();
    run_helper(HELPER, &["memcg-read", memcg.dir.to_str().unwrap(), file.to_str().unwrap(), "128"]);
    let hits = memcg.limit_hits() - hits0;
    let _ = std::fs::remove_file(&file);
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let report = done.json();
    tracer_tests::assert_tp_btf(&report);
    assert_eq!(
        report["filter"],
        serde_json::json!([format!("--cgroup {}", memcg.path)]),
        "the report states its filter"
    );
    let memcg_row = row(&report, "memcg");
    assert!(hits > 0, "the limit was never hit");
    assert!(memcg_row["count"].as_u64().unwrap() > 0, "no memcg reclaim seen: {memcg_row}");
    let cgroups = memcg_row["cgroups"].as_array().unwrap();
    assert!(!cgroups.is_empty() && cgroups.iter().all(|c| c["cgroup"] == memcg.path.as_str()), "{cgroups:?}");
    assert!(memcg_row["nr_reclaimed"].as_u64().unwrap() > 0);
    let process = &memcg_row["processes"][0];
    assert_eq!(process["comm"], "tracer-test-hel");
    let hist: u64 =
        memcg_row["histogram"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(hist, memcg_row["count"].as_u64().unwrap());
    assert!(
        report["stalls"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "memcg" && s["cgroup"] == memcg.path.as_str())
    );
}

/// The one slow test: global direct reclaim from a page cache filled past
/// what is free by a sparse file, every zone's min watermark raised above
/// its free pages (the helper says how), and a burst of anonymous memory;
/// bounded to a few GiB and cleaned up (file deleted, page cache dropped,
/// watermark restored) whatever happens.
#[test]
fn direct_reclaim_entries_equal_allocstall() {
    require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const MIN_FREE: &str = "/proc/sys/vm/min_free_kbytes";
    struct Cleanup(std::path::PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::write(MIN_FREE, &self.1);
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            >> 10
    };
    // The cache takes all free memory and then some, so kswapd has
    // pressed every zone down to its watermarks before the burst.
    let cache = mib("MemFree:") + 512;
    // Every fault of the burst finds the zones below their min watermark
    // until reclaim catches up: 1 GiB gives many stalls and spares a
    // shared machine.
    let anon = (mib("MemTotal:") / 4).clamp(256, 1024);
    let sparse = std::path::PathBuf::from(format!("/var/tmp/tracer-sparse-{}", std::process::id()));
    // The helper raises the min watermark once the cache is full; put back
    // whatever happens.
    let _cleanup = Cleanup(sparse.clone(), std::fs::read_to_string(MIN_FREE).unwrap().trim().to_string());

    let tracer = Tracer::start(&["trace", "reclaim", "--duration", "600s", "--json"]);
    let before = vmstat_sum("allocstall_");
    let watermarks = run_helper(
        HELPER,
        &["reclaim-pressure", sparse.to_str().unwrap(), &cache.to_string(), &anon.to_string()],
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stalls = vmstat_sum("allocstall_") - before;
    println!("{stalls} direct reclaim entries; helper: {watermarks}");
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let report = done.json();
    let direct = row(&report, "direct");
    assert!(stalls > 0, "the workload caused no direct reclaim; watermarks and zones: {watermarks}");
    // Ended, ended without a begin seen, and still in progress when tracer
    // stopped (allocstall counts a stall as it begins).
    let counted = ["count", "untimed", "in_flight"].iter().map(|k| direct[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(counted, stalls, "direct reclaim entries vs allocstall_* delta: {direct}");
    assert!(direct["total_ms"].as_f64().unwrap() > 0.0);
    assert!(!direct["stacks"].as_array().unwrap().is_empty(), "no stack for the stalls");
}
