//! Bad input and hostile environments: each must give a clear message and
//! a non-zero exit when nothing could be traced.

use std::process::Command;

use tracer_tests::{Finished, require_root, run_tracer, tracer_bin};

fn run(cmd: &mut Command) -> Finished {
    let out = cmd.output().expect("running command");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn root_without_capabilities_is_told_what_is_missing() {
    require_root();
    // An empty bounding set leaves even root with no capabilities.
    let done = run(Command::new("setpriv")
        .args(["--bounding-set=-all", "--inh-caps=-all", "--"])
        .arg(tracer_bin())
        .args(["trace", "block", "--duration", "1s"]));
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("CAP_BPF") && done.stderr.contains("CAP_PERFMON"), "{}", done.stderr);
    assert!(done.stderr.contains("root without"), "{}", done.stderr);
    assert!(done.stdout.is_empty(), "no report without tracing: {}", done.stdout);
}

#[test]
fn not_root_is_told_to_run_as_root() {
    require_root();
    let copy = std::env::temp_dir().join(format!("tracer-nonroot-{}", std::process::id()));
    std::fs::copy(tracer_bin(), &copy).unwrap();
    let done = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(&copy)
        .args(["trace", "--duration", "1s"]));
    let _ = std::fs::remove_file(&copy);
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(done.stderr.contains("not root") && done.stderr.contains("sudo"), "{}", done.stderr);
}

#[test]
fn unknown_disk_is_an_error_naming_the_disks() {
    require_root();
    let done = run_tracer(&["trace", "block", "--disk", "nosuchdisk0", "--duration", "1s"]);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr.contains("unknown disk `nosuchdisk0`"), "{}", done.stderr);
    assert!(done.stderr.contains("disks on this host"), "{}", done.stderr);
}

#[test]
fn bad_duration_and_unwritable_output_are_errors() {
    require_root();
    let done = run_tracer(&["trace", "block", "--duration", "soon"]);
    assert_eq!(done.status.code(), Some(2));
    assert!(done.stderr.contains("not a duration"), "{}", done.stderr);
    let done = run_tracer(&["trace", "block", "--duration", "1s", "-o", "/proc/nonexistent/report.txt"]);
    assert_eq!(done.status.code(), Some(1));
    assert!(done.stderr.contains("cannot write the report"), "{}", done.stderr);
}

#[test]
fn absurd_negative_and_misfit_durations_are_usage_errors() {
    require_root();
    for (args, says) in [
        (&["--duration", "99999999999999999999s"][..], "too long"),
        (&["--duration", "-5s"], "`-5s` is negative: give how long, e.g. 5s"),
        (&["--interval", "-1s"], "negative"),
        (&["--slow-io", "99999999999999999999h"], "too long"),
        (&["--duration", "2s", "--interval", "5s"], "--interval 5s is longer than --duration 2s"),
    ] {
        let done = run_tracer(&[&["trace", "block"], args].concat());
        assert_eq!(done.status.code(), Some(2), "{args:?}: a usage error, not a panic: {}", done.stderr);
        assert!(done.stderr.contains(says), "{args:?}: {}", done.stderr);
        assert!(!done.stderr.contains("panicked") && done.stdout.is_empty(), "{}", done.stderr);
    }
}

#[test]
fn probes_as_non_root_says_it_needs_root() {
    require_root();
    let copy = std::env::temp_dir().join(format!("tracer-probes-nonroot-{}", std::process::id()));
    std::fs::copy(tracer_bin(), &copy).unwrap();
    let done = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--"])
        .arg(&copy)
        .arg("probes"));
    let _ = std::fs::remove_file(&copy);
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    // probes attaches as trace would: the same check, the same advice.
    assert!(done.stderr.contains("not root") && done.stderr.contains("Run it as root"), "{}", done.stderr);
    assert!(!done.stderr.contains("not mounted"), "{}", done.stderr);
}

/// In a private mount namespace (so parallel tests keep their tracefs),
/// unmount tracefs (and debugfs, whose `tracing` directory mounts tracefs
/// again when looked at): tracer mounts it itself and says so.
#[test]
fn missing_tracefs_is_mounted_and_reported() {
    require_root();
    let script = format!(
        "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
         umount /sys/kernel/debug 2>/dev/null; \
         test -d /sys/kernel/tracing/events && exit 99; \
         test -d /sys/kernel/debug/tracing/events && exit 99; exec {} trace block --duration 1s",
        tracer_bin().display()
    );
    let done =
        run(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]));
    assert_ne!(done.status.code(), Some(99), "could not unmount tracefs for the test");
    assert!(done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.contains("tracefs was not mounted; mounted it at /sys/kernel/tracing"),
        "{}",
        done.stderr
    );
}

/// A kernel without block_rq_issue: a fake tracefs in a private mount
/// namespace lists every block event but that one.
#[test]
fn missing_tracepoint_disables_the_family_with_a_reason() {
    require_root();
    let script = format!(
        "set -e; mount -t tracefs nodev /mnt 2>/dev/null || true; \
         real=/sys/kernel/tracing; [ -d $real/events ] || real=/mnt; \
         mkdir -p /tmp/faketrace-$$; mount -t tmpfs none /tmp/faketrace-$$; \
         for e in $real/events/block/*/; do n=$(basename $e); \
           [ $n = block_rq_issue ] || mkdir -p /tmp/faketrace-$$/events/block/$n; done; \
         mount --bind /tmp/faketrace-$$ /sys/kernel/tracing; \
         {bin} probes; echo ---; {bin} trace block --duration 1s",
        bin = tracer_bin().display()
    );
    let done =
        run(Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]));
    let (probes, _) = done.stdout.split_once("---").expect("probes ran");
    assert!(probes.contains("[-- ] block:block_rq_issue"), "{probes}");
    assert!(probes.contains("block: unavailable"), "{probes}");
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains("block: not traced: block:block_rq_issue is unavailable"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("nothing could be traced"), "{}", done.stderr);
}

#[test]
fn probes_lists_the_hooks_in_use() {
    require_root();
    let done = run_tracer(&["probes", "--json"]);
    assert!(done.status.success(), "{}", done.stderr);
    let probes: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let block = probes.as_array().unwrap().iter().find(|f| f["family"] == "block").unwrap();
    let used: Vec<&str> = block["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["used"] == true)
        .map(|h| h["hook"].as_str().unwrap())
        .collect();
    assert!(used.contains(&"block:block_rq_issue") && used.contains(&"block:block_rq_complete"), "{used:?}");
}

/// `probes` and `trace` agree on the hook of every family: probes attaches
/// as trace does. On kernels where a family falls back (raw_tp, the vmstat
/// counters) both say the same fallback.
#[test]
fn probes_and_trace_agree_on_every_hook() {
    require_root();
    let done = run_tracer(&["probes", "--json"]);
    assert!(done.status.success(), "{}", done.stderr);
    let probes: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let traced = run_tracer(&["trace", "--duration", "1s", "--json"]);
    assert!(traced.status.success(), "{}", traced.stderr);
    let report = traced.json();
    for family in report["families"].as_array().unwrap() {
        let name = family["family"].as_str().unwrap();
        let verdict = probes.as_array().unwrap().iter().find(|f| f["family"] == name).unwrap()["verdict"]
            .as_str()
            .unwrap()
            .to_string();
        let expected = match family["state"].as_str().unwrap() {
            "traced" => format!("traced with {}", family["hook"].as_str().unwrap()),
            state => format!("{state}: {}", family["detail"].as_str().unwrap_or_default()),
        };
        assert_eq!(verdict, expected, "{name}");
    }
}
