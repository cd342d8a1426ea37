//! `tracer record` and `tracer report`: a capture of every family reports
//! the same JSON that `record` printed, in every format, without root; a
//! capture killed mid-run still reports; bad files are clear errors.

use std::{os::unix::fs::PermissionsExt as _, process::Command, time::Duration};

use serde_json::Value;
use tracer_tests::{
    Finished, Helper, LoopDevice, MemCgroup, Tracer, require_root, run_helper, run_tracer, tracer_bin,
};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");
/// A small complete capture and one cut short, checked in as fuzz seeds.
const SEED_COMPLETE: &[u8] = include_bytes!("../../fuzz/seeds/capture_reader/complete.cap");

/// A scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-capture-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn report(capture: &str, extra: &[&str]) -> Finished {
    let mut args = vec!["report", capture];
    args.extend_from_slice(extra);
    run_tracer(&args)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
        .collect()
}

fn assert_no_panic(done: &Finished) {
    assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
}

/// Every family's workload while `record` runs; then the capture reports
/// what `record` printed, as JSON, text, folded stacks, SVG and Perfetto,
/// also as an unprivileged user.
#[test]
fn a_capture_of_every_family_reports_what_record_printed() {
    require_root();
    let scratch = Scratch::new("all");
    let capture = scratch.path("run.cap");
    let disk = LoopDevice::new("capture", 64 << 20);
    let alloc_memcg = MemCgroup::new("capture-alloc");
    let oom_memcg = MemCgroup::new("capture-oom");
    oom_memcg.set_limit(64u64 << 20);
    let read_memcg = MemCgroup::new("capture-read");
    read_memcg.set_limit(16u64 << 20);
    let mut allocator = Helper::start(HELPER, &["alloc-fail", alloc_memcg.dir.to_str().unwrap(), "5"]);
    let alloc_pid = allocator.read_json()["pid"].as_u64().unwrap();

    let tracer = Tracer::start(&["record", "-o", &capture, "--duration", "120s", "--json"]);
    run_helper(HELPER, &["direct-io", &disk.device, "300", "200", "50", "5"]);
    allocator.say("go");
    allocator.read_json();
    let mut hog = Helper::start(HELPER, &["oom-hog", oom_memcg.dir.to_str().unwrap(), "256"]);
    let hog_pid = hog.read_json()["pid"].as_u64().unwrap();
    hog.say("go");
    hog.wait();
    // PREEMPT_RT kernels have no THP: the family is unavailable there.
    let thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
    if thp {
        run_helper(HELPER, &["thp-split", "5"]);
    }
    let file = scratch.path("memcg-read");
    run_helper(HELPER, &["memcg-read", read_memcg.dir.to_str().unwrap(), &file, "64"]);
    std::thread::sleep(Duration::from_millis(500));
    let recorded = tracer.stop();
    allocator.say("exit");
    allocator.wait();
    assert!(recorded.status.success(), "record failed: {}", recorded.stderr);
    assert!(recorded.stderr.contains(&format!("capture written to {capture}")), "{}", recorded.stderr);
    let printed = recorded.json();

    // Each family saw its workload.
    assert!(printed["block"].as_array().unwrap().iter().any(|r| r["device"] == disk.name.as_str()));
    assert!(printed["alloc_failures"].as_array().unwrap().iter().any(|r| r["pid"] == alloc_pid));
    assert!(printed["oom_kills"].as_array().unwrap().iter().any(|k| k["victim_pid"] == hog_pid));
    let memcg_row = printed["reclaim"].as_array().unwrap().iter().find(|r| r["kind"] == "memcg").unwrap();
    assert!(memcg_row["count"].as_u64().unwrap() > 0, "{memcg_row}");
    if thp {
        assert!(printed["thp"]["splits"].as_u64().unwrap() >= 5, "{}", printed["thp"]);
    } else {
        let family = printed["families"].as_array().unwrap().iter().find(|f| f["family"] == "thp").unwrap();
        assert_eq!(family["state"], "unavailable", "no THP on this kernel: {family}");
    }
    let system = &printed["system"];
    assert!(system["kernel"]["release"].as_str().is_some_and(|r| !r.is_empty()), "{system}");
    assert!(system["end"]["vmstat"]["oom_kill"].as_u64().is_some(), "system context at the end");

    let mode = std::fs::metadata(&capture).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "capture mode {mode:o}");

    let json = report(&capture, &["--format", "json"]);
    assert!(json.status.success(), "{}", json.stderr);
    assert_eq!(json.json(), printed, "report --format json differs from what record printed");
    assert_eq!(json.stdout, recorded.stdout, "the same bytes, too");

    let text = report(&capture, &[]);
    assert!(text.status.success(), "{}", text.stderr);
    assert!(text.stdout.contains("Block I/O latency") && text.stdout.contains(&disk.name), "{}", text.stdout);
    assert!(text.stdout.contains("  system   "), "{}", text.stdout);

    let folded = report(&capture, &["--format", "folded"]);
    assert!(folded.status.success(), "{}", folded.stderr);
    assert!(folded.stdout.lines().any(|l| l.contains("__bpf_map_area_alloc")), "{}", folded.stdout);

    let svg_path = scratch.path("flame.svg");
    let svg = report(&capture, &["--format", "svg", "-o", &svg_path]);
    assert!(svg.status.success(), "{}", svg.stderr);
    let time_svg = std::fs::read_to_string(&svg_path).unwrap();
    assert_well_formed_svg(&time_svg);
    // One unit a graph: the failures are events, not time.
    assert!(!time_svg.contains("alloc_failure"), "events in the time flame graph");
    let events = report(&capture, &["--format", "svg", "--flame", "events"]);
    assert!(events.status.success(), "{}", events.stderr);
    assert_well_formed_svg(&events.stdout);
    assert!(events.stdout.contains("__bpf_map_area_alloc"), "the failures' stacks are in the events graph");

    let perfetto = report(&capture, &["--format", "perfetto"]);
    assert!(perfetto.status.success(), "{}", perfetto.stderr);
    let trace: Value = serde_json::from_str(&perfetto.stdout).unwrap();
    let events = trace["traceEvents"].as_array().expect("traceEvents");
    assert!(events.iter().any(|e| e["ph"] == "X"), "no stall or slow I/O slices");
    assert!(events.iter().any(|e| e["ph"] == "i"), "no OOM kill or allocation failure instants");

    // Anywhere: not root, no capabilities, a copy the user can read.
    let copy = scratch.path("copy.cap");
    std::fs::copy(&capture, &copy).unwrap();
    std::os::unix::fs::chown(&copy, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&scratch.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = scratch.path("tracer");
    std::fs::copy(tracer_bin(), &binary).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .args([&binary, "report", &copy, "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "report as nobody: {stderr}");
    let as_nobody: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(as_nobody, printed, "report as nobody differs");
}

fn assert_well_formed_svg(svg: &str) {
    let mut reader = quick_xml::Reader::from_str(svg);
    let mut root = None;
    let mut depth = 0i32;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(e)) => {
                root.get_or_insert_with(|| String::from_utf8_lossy(e.name().as_ref()).into_owned());
                depth += 1;
            }
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("the SVG is not well-formed XML at {}: {e}", reader.buffer_position()),
        }
    }
    assert_eq!(root.as_deref(), Some("svg"));
    assert_eq!(depth, 0, "unclosed elements");
}

/// SIGKILL mid-run: the capture reports its complete intervals, says it
/// was cut short, and its whole-run block count is theirs.
#[test]
fn a_capture_killed_mid_run_still_reports() {
    require_root();
    let scratch = Scratch::new("killed");
    let capture = scratch.path("killed.cap");
    let disk = LoopDevice::new("capture-kill", 64 << 20);
    let args = [
        "record",
        "-o",
        &capture,
        "block",
        "--disk",
        &disk.name,
        "--interval",
        "1s",
        "--duration",
        "120s",
        "--json",
    ];
    let tracer = Tracer::start(&args);
    // Three intervals printed, however slow the machine (an emulated guest
    // beside others took 3.5 s for one).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tracer.stdout_so_far().matches('\n').count() < 3 && std::time::Instant::now() < deadline {
        run_helper(HELPER, &["direct-io", &disk.device, "100", "50", "10", "0"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    let killed = tracer.stop_with(libc::SIGKILL);
    assert!(!killed.status.success());
    // What record printed before it died: one line per interval.
    let printed = json_lines(&killed.stdout);
    assert!(printed.len() >= 3, "{} interval lines printed", printed.len());

    let done = report(&capture, &["--format", "json"]);
    assert!(done.status.success(), "{}", done.stderr);
    assert_no_panic(&done);
    assert!(done.stderr.contains("was cut short") && done.stderr.contains("UTC"), "{}", done.stderr);
    let mut lines = json_lines(&done.stdout);
    let whole = lines.pop().unwrap();
    assert!(whole["window"]["interval"].is_null(), "the whole-run report comes last");
    assert!(lines.len() >= 2, "{} complete intervals", lines.len());
    assert!(printed.len() - lines.len() <= 1, "at most the interval being written is lost");
    assert_eq!(lines, printed[..lines.len()], "the intervals are the ones record printed");
    let count = |report: &Value| -> u64 {
        report["block"].as_array().unwrap().iter().map(|r| r["count"].as_u64().unwrap()).sum()
    };
    let intervals: u64 = lines.iter().map(count).sum();
    assert!(intervals > 0, "no block I/O in the complete intervals");
    assert_eq!(count(&whole), intervals, "whole-run block count vs its intervals");
    assert_eq!(whole["timeline"].as_array().unwrap().len(), lines.len());
    let warnings = whole["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("rebuilt from")), "{warnings:?}");
    assert!(whole["system"]["kernel"]["release"].is_string(), "the system context from the start");

    let text = report(&capture, &[]);
    assert!(text.status.success(), "{}", text.stderr);
    assert!(text.stdout.contains("rebuilt from"), "{}", text.stdout);
}

/// The chunks of a capture: (kind, whole chunk bytes), after the file header.
fn chunks(capture: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let (mut at, mut out) = (13, Vec::new());
    while at + 12 <= capture.len() {
        let length = u32::from_le_bytes(capture[at + 4..at + 8].try_into().unwrap()) as usize;
        out.push((capture[at..at + 4].try_into().unwrap(), &capture[at..at + 12 + length]));
        at += 12 + length;
    }
    out
}

/// A flipped bit mid-capture loses that chunk only: the report says where
/// and what, and everything else is there.
#[test]
fn a_corrupt_chunk_is_skipped_with_a_warning() {
    let scratch = Scratch::new("corrupt");
    let chunks = chunks(SEED_COMPLETE);
    let (interval_at, _) = chunks.iter().enumerate().find(|(_, (k, _))| k == b"IVAL").unwrap();
    let start = 13 + chunks[..interval_at].iter().map(|(_, c)| c.len()).sum::<usize>();
    let mut flipped = SEED_COMPLETE.to_vec();
    flipped[start + 40] ^= 0x04;
    let path = scratch.path("flipped.cap");
    std::fs::write(&path, &flipped).unwrap();
    let done = report(&path, &["--format", "json"]);
    assert!(done.status.success(), "{}", done.stderr);
    assert_no_panic(&done);
    let expected =
        format!("warning: corrupt chunk at byte {start} (checksum mismatch): skipped bytes {start}..");
    assert!(done.stderr.contains(&expected), "{}", done.stderr);
    assert!(done.stderr.contains("interval report 1 is lost"), "{}", done.stderr);
    assert!(done.stderr.contains("the whole-run report is intact"), "{}", done.stderr);
    let intact = report(&scratch_copy(&scratch, "intact.cap", SEED_COMPLETE), &["--format", "json"]);
    assert_eq!(
        json_lines(&done.stdout).last(),
        json_lines(&intact.stdout).last(),
        "the same whole-run report"
    );
}

fn scratch_copy(scratch: &Scratch, name: &str, bytes: &[u8]) -> String {
    let path = scratch.path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Peak RSS (KiB) of a command run to its end, and its outcome.
fn peak_rss_kib(args: &[&str]) -> (u64, bool) {
    let out = run_helper(HELPER, &[&["peak-rss"], args].concat());
    let (rss, ok) = out.trim().split_once(' ').expect("peak-rss prints `KIB OK`");
    (rss.parse().unwrap(), ok == "true")
}

/// `report` streams: a 64 MB capture (the seed's intervals repeated)
/// reports in a fraction of its size; reading it whole took several times it.
#[test]
fn a_big_capture_reports_in_bounded_memory() {
    let scratch = Scratch::new("big");
    let chunks = chunks(SEED_COMPLETE);
    let intervals: Vec<&[u8]> = chunks.iter().filter(|(k, _)| k == b"IVAL").map(|(_, c)| *c).collect();
    assert!(!intervals.is_empty(), "the seed has interval chunks");
    let mut big = SEED_COMPLETE[..13].to_vec();
    for (kind, chunk) in &chunks {
        if kind == b"IVAL" {
            while big.len() < 64 << 20 {
                intervals.iter().for_each(|c| big.extend_from_slice(c));
            }
        } else {
            big.extend_from_slice(chunk);
        }
    }
    let path = scratch_copy(&scratch, "big.cap", &big);
    drop(big);
    for format in ["text", "json"] {
        let (rss, ok) = peak_rss_kib(&[tracer_bin().to_str().unwrap(), "report", &path, "--format", format]);
        assert!(ok, "report --format {format} failed");
        assert!(rss < 32 << 10, "report --format {format} of a 64 MB capture peaked at {rss} KiB");
    }
}

/// Bad input: clear errors, exit code 1, no panic. Needs no root.
#[test]
fn bad_captures_are_clear_errors() {
    let scratch = Scratch::new("bad");
    let expect_error = |file: &str, extra: &[&str], message: &str| {
        let done = report(file, extra);
        assert_eq!(done.status.code(), Some(1), "{file}: {}", done.stderr);
        assert_no_panic(&done);
        assert!(done.stderr.contains(message), "{file}: expected `{message}` in: {}", done.stderr);
        assert!(done.stdout.is_empty(), "{}", done.stdout);
    };
    expect_error(&scratch.path("missing.cap"), &[], "cannot read the capture");

    let write = |name: &str, bytes: &[u8]| {
        let path = scratch.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    expect_error(&write("empty.cap", b""), &[], "the file is empty: not a tracer capture");
    expect_error(&write("foreign.cap", b"{\"tool\": \"tracer\"}\n"), &[], "not a tracer capture");
    expect_error(&write("truncated.cap", &SEED_COMPLETE[..40]), &[], "cut short before its header");
    expect_error("/dev/zero", &[], "not a tracer capture");
    let mut newer = SEED_COMPLETE.to_vec();
    newer[9] = 9;
    expect_error(&write("newer.cap", &newer), &[], "written by a newer format version (9");

    let good = write("good.cap", SEED_COMPLETE);
    assert!(report(&good, &[]).status.success());
    expect_error(&good, &["--vmlinux", "/bin/true"], "does not match the traced kernel's");

    // Cut short after its header: not an error, but said.
    let cut = write("cut.cap", &SEED_COMPLETE[..SEED_COMPLETE.len() - 10]);
    let done = report(&cut, &["--format", "json"]);
    assert!(done.status.success(), "{}", done.stderr);
    assert!(done.stderr.contains("was cut short"), "{}", done.stderr);
}
