//! A full disk loses no report: `trace -o FILE` prints to standard output
//! when FILE cannot be written, and `record` keeps tracing when its capture
//! cannot grow. Each test fills a small tmpfs of its own.

use std::{path::PathBuf, process::Command};

use tracer_tests::{require_root, run_tracer};

/// A tmpfs of `kib` KiB on a scratch directory, filled but for
/// `free_kib`; unmounted and removed on drop (also when the test fails).
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn new(tag: &str, kib: u64, free_kib: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-full-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tracer-full"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        let fs = Self(dir);
        let filler = vec![0u8; ((kib - free_kib) << 10) as usize];
        std::fs::write(fs.0.join("filler"), filler).expect("filling the tmpfs");
        fs
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_string()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_report_that_cannot_be_written_goes_to_standard_output() {
    require_root();
    let fs = SmallTmpfs::new("trace", 256, 0);
    let out = fs.path("report.txt");
    let done = run_tracer(&["trace", "block", "--duration", "1s", "-o", &out]);
    assert!(done.status.success(), "{}", done.stderr);
    let expected = format!("writing the report to {out} failed (No space left on device");
    assert!(done.stderr.contains(&expected), "{}", done.stderr);
    assert!(done.stderr.contains("printing it to standard output instead"), "{}", done.stderr);
    assert!(
        done.stdout.contains("Block I/O latency") && done.stdout.contains("lost events"),
        "{}",
        done.stdout
    );
}

#[test]
fn a_capture_whose_disk_fills_keeps_tracing() {
    require_root();
    // Room for the header and system context, not for 3 s of 100 ms
    // intervals.
    let fs = SmallTmpfs::new("record", 256, 48);
    let capture = fs.path("run.cap");
    let done = run_tracer(&["record", "-o", &capture, "--duration", "3s", "--interval", "100ms", "--json"]);
    assert!(done.status.success(), "{}", done.stderr);
    let expected = format!("writing the capture {capture} failed (No space left on device");
    assert!(done.stderr.contains(&expected), "{}", done.stderr);
    assert!(done.stderr.contains("tracing goes on"), "{}", done.stderr);
    assert!(done.stderr.contains(&format!("the capture {capture} is incomplete")), "{}", done.stderr);
    // The terminal report is complete: every interval and the whole run.
    let lines: Vec<serde_json::Value> =
        done.stdout.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let whole = lines.last().unwrap();
    assert!(whole["window"]["interval"].is_null());
    let traced = whole["window"]["duration_s"].as_f64().unwrap();
    assert!(traced >= 2.9, "the run went on to its end: {traced} s");
    assert!(lines.len() >= 25, "{} interval lines", lines.len() - 1);
    // What the capture holds reads as a capture cut short.
    let report = run_tracer(&["report", &capture, "--format", "json"]);
    assert!(report.status.success(), "{}", report.stderr);
    assert!(report.stderr.contains("was cut short"), "{}", report.stderr);
}
