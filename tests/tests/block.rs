//! Block I/O latency against /sys/block/<dev>/stat, on loop devices of the
//! tests' own.

use serde_json::Value;
use tracer_tests::{BlockStat, LoopDevice, Tracer, require_root, run_helper};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");

/// The count tests trace without slow-I/O streaming, so that the counts
/// depend on the aggregation alone; the slow path has its own exact test.
const NO_SLOW_IO: [&str; 2] = ["--slow-io", "off"];

fn rows_of<'a>(report: &'a Value, device: &str) -> Vec<&'a Value> {
    report["block"].as_array().expect("block rows").iter().filter(|r| r["device"] == device).collect()
}

fn count_op(rows: &[&Value], op: &str) -> u64 {
    rows.iter().filter(|r| r["op"] == op).map(|r| r["count"].as_u64().unwrap()).sum()
}

/// Per row: histogram sum + untimed == count, and ordered percentiles.
fn assert_row_invariants(rows: &[&Value]) {
    for row in rows {
        let hist: u64 =
            row["histogram"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
        let count = row["count"].as_u64().unwrap();
        let untimed = row["untimed"].as_u64().unwrap();
        assert_eq!(hist + untimed, count, "histogram sum + untimed != count in {row}");
        let l = &row["latency_us"];
        let p: Vec<f64> =
            ["p50", "p90", "p99", "p999", "max"].iter().map(|k| l[k].as_f64().unwrap()).collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "percentiles out of order: {l}");
        if hist > 0 {
            assert!(p[0] > 0.0, "zero median latency: {l}");
        }
    }
}

/// Known issue (README, "Known issues"): about one run in twenty under load,
/// one completion that ftrace's own probe on `block:block_rq_complete`
/// records never reaches tracer's program (either flavor; no recursion
/// miss; a counter at the program's entry misses it too). A run exactly one
/// completion short is retried once, saying so; any other mismatch, or a
/// second shortfall, fails.
fn one_short(rows: &[&Value], delta: &BlockStat, attempt: u32) -> bool {
    let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let short = attempt == 1 && total + 1 == delta.total();
    if short {
        eprintln!(
            "one completion short of the block stat ({total} vs {delta:?}): the known kernel-side loss; again"
        );
    }
    short
}

/// Checks tracer's rows for one device against the stat delta, op by op.
fn assert_matches_stat(rows: &[&Value], delta: &BlockStat) {
    assert_eq!(count_op(rows, "read"), delta.reads, "reads");
    assert_eq!(count_op(rows, "write"), delta.writes, "writes");
    assert_eq!(count_op(rows, "flush"), delta.flushes, "flushes");
    assert_eq!(count_op(rows, "discard"), delta.discards, "discards");
    let total: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    assert_eq!(total, delta.total(), "total against reads+writes+discards+flushes");
}

#[test]
fn block_counts_equal_the_kernels_block_stat() {
    counts_equal_block_stat("block-counts", &[], "tp_btf");
}

/// The same through the raw-tracepoint fallback (probe reads).
#[test]
fn raw_tracepoint_fallback_counts_equal_the_kernels_block_stat() {
    counts_equal_block_stat("block-raw", &["--force-raw-tp"], "raw_tp");
}

fn counts_equal_block_stat(tag: &str, extra: &[&str], flavor: &str) {
    require_root();
    for attempt in 1..=2 {
        if counts_equal_block_stat_once(tag, extra, flavor, attempt) {
            return;
        }
    }
}

/// One run; false when it came out one completion short (see `one_short`).
fn counts_equal_block_stat_once(tag: &str, extra: &[&str], flavor: &str, attempt: u32) -> bool {
    let disk = LoopDevice::new(tag, 64 << 20);
    let mut args = vec!["trace", "block", "--disk", &disk.name, "--duration", "120s", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&NO_SLOW_IO);
    let tracer = Tracer::start(&args);
    let before = disk.stat();
    run_helper(HELPER, &["direct-io", &disk.device, "3000", "2000", "50", "20"]);
    let delta = disk.stat().since(&before);
    let done = tracer.stop();
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let report = done.json();

    assert!(
        delta.reads >= 3000 && delta.writes >= 2000 && delta.flushes >= 40 && delta.discards >= 20,
        "{delta:?}"
    );
    let rows = rows_of(&report, &disk.name);
    if one_short(&rows, &delta, attempt) {
        return false;
    }
    assert_matches_stat(&rows, &delta);
    assert_row_invariants(&rows);
    // Reads all start after tracing began: every one is timed.
    let read = rows.iter().find(|r| r["op"] == "read").unwrap();
    assert_eq!(read["untimed"], 0);
    assert_eq!(read["bytes"].as_u64().unwrap(), delta.reads * 4096);
    assert_eq!(report["lost_events"], 0);
    // --disk kept other devices out.
    assert!(report["block"].as_array().unwrap().iter().all(|r| r["device"] == disk.name.as_str()));
    let block = report["families"].as_array().unwrap().iter().find(|f| f["family"] == "block").unwrap();
    assert!(block["hook"].as_str().unwrap().starts_with(flavor), "{block}");
    true
}

#[test]
fn interval_reports_sum_to_the_kernels_block_stat() {
    require_root();
    for attempt in 1..=2 {
        if interval_reports_sum_once(attempt) {
            return;
        }
    }
}

fn interval_reports_sum_once(attempt: u32) -> bool {
    let disk = LoopDevice::new("block-interval", 64 << 20);
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--disk",
        &disk.name,
        "--duration",
        "120s",
        "--interval",
        "300ms",
        "--json",
        NO_SLOW_IO[0],
        NO_SLOW_IO[1],
    ]);
    let before = disk.stat();
    for _ in 0..4 {
        run_helper(HELPER, &["direct-io", &disk.device, "800", "600", "40", "5"]);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let delta = disk.stat().since(&before);
    std::thread::sleep(std::time::Duration::from_millis(400));
    let done = tracer.stop();
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let lines = done.json_lines();
    let (whole, intervals) = lines.split_last().expect("at least the final report");
    assert!(whole["window"]["interval"].is_null(), "last line is the whole run");
    assert!(intervals.len() >= 3, "expected several intervals, got {}", intervals.len());
    for (i, interval) in intervals.iter().enumerate() {
        assert_eq!(interval["window"]["interval"], i as u64);
        assert_row_invariants(&rows_of(interval, &disk.name));
    }

    // Sum the intervals per op, plus whatever completed after the last tick
    // (in the whole-run report but in no interval).
    let interval_total =
        |op: &str| -> u64 { intervals.iter().map(|r| count_op(&rows_of(r, &disk.name), op)).sum() };
    let whole_rows = rows_of(whole, &disk.name);
    if one_short(&whole_rows, &delta, attempt) {
        return false;
    }
    assert_matches_stat(&whole_rows, &delta);
    for op in ["read", "write", "flush", "discard"] {
        assert!(interval_total(op) <= count_op(&whole_rows, op), "{op}: intervals exceed the whole run");
    }
    // The workload ended 400 ms before the stop and intervals are 300 ms:
    // the last tick came after it, so the intervals hold all of it.
    let summed = BlockStat {
        reads: interval_total("read"),
        writes: interval_total("write"),
        flushes: interval_total("flush"),
        discards: interval_total("discard"),
        in_flight: 0,
    };
    assert_eq!(summed.total(), delta.total(), "intervals summed {summed:?} vs stat {delta:?}");
    true
}

#[test]
fn queued_mode_counts_equal_the_kernels_block_stat() {
    require_root();
    for attempt in 1..=2 {
        if queued_counts_once(attempt) {
            return;
        }
    }
}

fn queued_counts_once(attempt: u32) -> bool {
    let disk = LoopDevice::new("block-queued", 64 << 20);
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--queued",
        "--disk",
        &disk.name,
        "--duration",
        "120s",
        "--json",
        NO_SLOW_IO[0],
        NO_SLOW_IO[1],
    ]);
    let before = disk.stat();
    run_helper(HELPER, &["direct-io", &disk.device, "1500", "1500", "30", "0"]);
    let delta = disk.stat().since(&before);
    let done = tracer.stop();
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    let report = done.json();
    let rows = rows_of(&report, &disk.name);
    if one_short(&rows, &delta, attempt) {
        return false;
    }
    assert_matches_stat(&rows, &delta);
    assert_row_invariants(&rows);
    let block = report["families"].as_array().unwrap().iter().find(|f| f["family"] == "block").unwrap();
    assert!(block["hook"].as_str().unwrap().contains("block_rq_insert"), "{block}");
    true
}

#[test]
fn sigterm_prints_the_final_report() {
    require_root();
    let disk = LoopDevice::new("block-sigterm", 16 << 20);
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--disk",
        &disk.name,
        "--duration",
        "120s",
        NO_SLOW_IO[0],
        NO_SLOW_IO[1],
    ]);
    let before = disk.stat();
    run_helper(HELPER, &["direct-io", &disk.device, "100", "0", "0", "0"]);
    let delta = disk.stat().since(&before);
    let done = tracer.stop_with(libc::SIGTERM);
    assert!(done.status.success(), "tracer failed: {}", done.stderr);
    assert!(done.stderr.contains("terminated"), "{}", done.stderr);
    let header = format!("{} (", disk.name);
    let line =
        done.stdout.lines().find(|l| l.starts_with(&header) && l.contains(" read: ")).unwrap_or_else(|| {
            panic!("no read line for {} in:\n{}", disk.name, done.stdout);
        });
    assert!(line.contains(&format!("read: {} requests", delta.reads)), "{line}");
    assert!(done.stdout.contains("usecs") && done.stdout.contains("p99"), "{}", done.stdout);
}

/// With a threshold below every latency, each request is reported one by
/// one, with the process that issued it, named even though it has exited
/// before tracer reads its events (tracer is stopped meanwhile: what a slow
/// guest or a busy machine does to a short-lived process), and none left
/// out when tracer is interrupted before it has read them.
#[test]
fn slow_requests_carry_their_process_size_and_sector() {
    require_root();
    let disk = LoopDevice::new("block-slow", 16 << 20);
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--disk",
        &disk.name,
        "--slow-io",
        "1us",
        "--duration",
        "120s",
        "--json",
    ]);
    let before = disk.stat();
    unsafe { libc::kill(tracer.pid(), libc::SIGSTOP) };
    let helper = std::process::Command::new(HELPER)
        .args(["direct-io", &disk.device, "300", "0", "0", "0"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let helper_pid = helper.id();
    let out = helper.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!std::path::Path::new(&format!("/proc/{helper_pid}")).exists(), "the helper is gone");
    let delta = disk.stat().since(&before);
    // Ctrl-C arrives with the events still unread: the report has them.
    let mut tracer = tracer;
    unsafe {
        libc::kill(tracer.pid(), libc::SIGINT);
        libc::kill(tracer.pid(), libc::SIGCONT);
    }
    let done = tracer.finish();
    let report = done.json();
    let slow: Vec<&Value> = report["slow_ios"].as_array().unwrap().iter().collect();
    assert_eq!(delta.reads, 300);
    assert_eq!(
        slow.len() as u64,
        delta.reads,
        "every read is at least 1 us; lost: {}, warnings: {}, rows: {:?}, stderr:\n{}",
        report["lost"],
        report["warnings"],
        rows_of(&report, &disk.name),
        done.stderr
    );
    assert_eq!(report["slow_ios_dropped"], 0);
    let sectors = (16u64 << 20) / 512;
    for io in &slow {
        assert_eq!(
            (io["comm"].as_str(), io["pid"].as_u64()),
            (Some("tracer-test-hel"), Some(helper_pid as u64)),
            "{io}"
        );
        assert_eq!(
            (io["device"].as_str(), io["op"].as_str(), io["bytes"].as_u64()),
            (Some(disk.name.as_str()), Some("read"), Some(4096))
        );
        assert!(
            io["sector"].as_u64().unwrap() < sectors && io["latency_us"].as_f64().unwrap() >= 1.0,
            "{io}"
        );
    }
    let latencies: Vec<f64> = slow.iter().map(|io| io["latency_us"].as_f64().unwrap()).collect();
    assert!(latencies.windows(2).all(|w| w[0] >= w[1]), "slowest first");
}

/// `--comm`: block requests of one process (attributed where they start),
/// everything else left out.
#[test]
fn comm_filter_keeps_only_that_process() {
    require_root();
    let disk = LoopDevice::new("block-comm", 16 << 20);
    let tracer = Tracer::start(&[
        "trace",
        "block",
        "--disk",
        &disk.name,
        "--comm",
        "tracer-test-hel",
        "--duration",
        "120s",
        "--json",
    ]);
    run_helper(HELPER, &["direct-io", &disk.device, "200", "0", "0", "0"]);
    // Another process reads the same disk: not counted.
    let dd = std::process::Command::new("dd")
        .args([
            &format!("if={}", disk.device),
            "of=/dev/null",
            "bs=4k",
            "count=100",
            "iflag=direct",
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(dd.success());
    let report = tracer.stop().json();
    let rows = rows_of(&report, &disk.name);
    assert_eq!(count_op(&rows, "read"), 200, "only the helper's reads: {rows:?}");
    assert_row_invariants(&rows);
    let done =
        tracer_tests::run_tracer(&["trace", "block", "--comm", "a-name-longer-than-15", "--duration", "1s"]);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr.contains("1 to 15 bytes"), "{}", done.stderr);
}
