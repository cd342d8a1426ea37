//! Dirty-page throttling against the kernel's own record of it: a writer on
//! its own loop-backed ext4, with vm.dirty_bytes low so that
//! balance_dirty_pages pauses it, traced by tracer and, over the same
//! window, by a private ftrace instance filtered on the writer's pid.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use tracer_tests::{Ext4Mount, FtraceCount, LoopDevice, Tracer, require_root};

/// The writeback limits, restored on drop (also when the test fails):
/// writing a ratio clears the bytes setting and the reverse.
struct DirtyLimits(Vec<(&'static str, String)>);

impl DirtyLimits {
    const FILES: [&str; 4] =
        ["dirty_bytes", "dirty_background_bytes", "dirty_ratio", "dirty_background_ratio"];

    fn lower(bytes: u64, background: u64) -> Self {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/sys/vm/{f}")).unwrap().trim().to_string();
        let saved = Self(Self::FILES.iter().map(|f| (*f, read(f))).collect());
        std::fs::write("/proc/sys/vm/dirty_bytes", bytes.to_string()).unwrap();
        std::fs::write("/proc/sys/vm/dirty_background_bytes", background.to_string()).unwrap();
        saved
    }
}

impl Drop for DirtyLimits {
    fn drop(&mut self) {
        // A zero "bytes" means the ratio was in force: write the ratio.
        for (file, value) in &self.0 {
            if value != "0" {
                let _ = std::fs::write(format!("/proc/sys/vm/{file}"), value);
            }
        }
    }
}

/// `field=value` out of an ftrace line.
fn field(line: &str, name: &str) -> i64 {
    let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len() + 2..].split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn throttling_pauses_equal_the_kernels_record() {
    require_root();
    let disk = LoopDevice::new("dirty", 320 << 20);
    let mount = Ext4Mount::new(&disk, "dirty");
    // The writer waits for a line on stdin, so its pid is known (and
    // filtered on) before it writes anything.
    let mut writer = Command::new("sh")
        .args(["-c", "read go && exec dd if=/dev/zero of=\"$1\" bs=1M count=160 status=none", "sh"])
        .arg(mount.dir.join("file"))
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = writer.id();
    let ftrace = FtraceCount::new("dirty", "writeback/balance_dirty_pages", &format!("common_pid == {pid}"));
    let tracer = Tracer::start(&["trace", "dirty", "--duration", "120s", "--json"]);
    let limits = DirtyLimits::lower(1 << 20, 512 << 10);
    writer.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(writer.wait().unwrap().success());
    drop(limits);
    let records = ftrace.records();
    let done = tracer.stop();
    assert!(done.status.success(), "{}", done.stderr);
    let report = done.json();

    let paused: Vec<i64> = records.iter().map(|l| field(l, "pause")).filter(|&p| p > 0).collect();
    let unpaused = records.len() - paused.len();
    assert!(paused.len() >= 3, "the writer was hardly throttled: {} pauses", paused.len());
    let rows: Vec<&serde_json::Value> =
        report["dirty"]["rows"].as_array().unwrap().iter().filter(|r| r["pid"] == pid).collect();
    assert!(!rows.is_empty(), "no row for the writer {pid}: {}", report["dirty"]);
    let sum = |f: &str| rows.iter().map(|r| r[f].as_f64().unwrap()).sum::<f64>();
    assert_eq!(sum("pauses") as usize, paused.len(), "pauses vs ftrace");
    assert_eq!(sum("unpaused") as usize, unpaused, "let through vs ftrace");
    // The pause is the kernel's own figure (ms), summed the same way.
    assert_eq!(sum("total_ms"), paused.iter().sum::<i64>() as f64, "total pause vs ftrace");
    for row in &rows {
        assert_eq!(row["comm"], "dd");
        assert!(row["device"].as_str().unwrap().starts_with(&disk.name), "{row}");
        let hist: u64 =
            row["histogram"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
        assert_eq!(hist, row["pauses"].as_u64().unwrap());
        assert!(row["at_longest"]["limit"].as_u64().unwrap() > 0, "{row}");
    }
    assert!(!rows[0]["stacks"][0]["kernel_stack"].as_array().unwrap().is_empty(), "no stack: {}", rows[0]);
    assert_eq!(report["lost_events"], 0);
}
