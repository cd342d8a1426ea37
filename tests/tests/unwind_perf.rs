//! The reference for user stacks is `perf record --call-graph dwarf`: the
//! same allocation failures of the C helper built without frame pointers
//! (`tests/c/nofp.c`, `gcc -g -O2 -fomit-frame-pointer`), recorded by perf
//! and traced by tracer at once, give the same user frames, function by
//! function, from libc's `syscall` to `_start`.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use tracer_tests::{Helper, MemCgroup, Tracer, require_root};

const SOURCE: &str = include_str!("../c/nofp.c");

/// A scratch directory with the helper built in it, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// perf, stopped (SIGINT) on drop if the test fails first.
struct Perf(std::process::Child);

impl Perf {
    fn stop(mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        use std::os::unix::process::ExitStatusExt as _;
        let status = self.0.wait().expect("waiting for perf");
        // perf ends on SIGINT by raising it again, once its file is whole.
        assert!(status.success() || status.signal() == Some(libc::SIGINT), "perf record: {status}");
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Function names of a stack's frames, `+offset` and module left out.
fn names(frames: impl Iterator<Item = String>) -> Vec<String> {
    frames.map(|f| f.split('+').next().unwrap_or("").to_string()).collect()
}

/// The user frames of each order-3 failure perf recorded: `perf script`
/// prints a sample's header, then a callchain line per frame
/// (`ADDR SYMBOL+OFF (DSO)`), kernel frames first (left out).
fn perf_user_stacks(script: &str) -> Vec<Vec<String>> {
    script
        .split("\n\n")
        .filter(|sample| sample.lines().next().is_some_and(|h| h.contains("order=3")))
        .map(|sample| {
            names(
                sample
                    .lines()
                    .skip(1)
                    // Kernel frames by address: their DSO is
                    // [kernel.kallsyms], or the vmlinux perf found
                    // under /usr/lib/debug (as in vm-test's 6.1 guest).
                    .filter(|l| {
                        let addr = l.split_whitespace().next().and_then(|a| u64::from_str_radix(a, 16).ok());
                        addr.is_some_and(|a| a < 0xffff_8000_0000_0000)
                    })
                    .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string)),
            )
        })
        .collect()
}

#[test]
fn allocation_failure_user_stacks_are_those_perf_records_with_dwarf() {
    require_root();
    let scratch = Scratch(std::env::temp_dir().join(format!("tracer-test-perf-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let (source, binary) = (scratch.0.join("nofp.c"), scratch.0.join("nofp"));
    std::fs::write(&source, SOURCE).unwrap();
    let gcc = Command::new("gcc")
        .args(["-g", "-O2", "-fomit-frame-pointer", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("gcc runs (cargo xtask setup installs it)");
    assert!(gcc.status.success(), "gcc: {}", String::from_utf8_lossy(&gcc.stderr));

    let memcg = MemCgroup::new("unwind-perf");
    let mut helper =
        Helper::start(binary.to_str().unwrap(), &["alloc-fail", memcg.dir.to_str().unwrap(), "5"]);
    let pid = helper.read_json()["pid"].as_u64().unwrap().to_string();
    let tracer = Tracer::start(&["trace", "alloc", "--pid", &pid, "--duration", "120s", "--json"]);
    let perf_data = scratch.0.join("perf.data");
    // perf starts with its event disabled and acknowledges "enable" on a
    // second FIFO: then it is recording (writing its file's header, which
    // the test waited for before, comes before the event is on; in a slow
    // emulated guest the failures came first).
    let (control, ack) = (scratch.0.join("perf-control"), scratch.0.join("perf-ack"));
    for fifo in [&control, &ack] {
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo {}", fifo.display());
    }
    // Failures only (no page: pfn is -1), of this process, with 8 KiB of
    // stack per sample as tracer copies.
    let perf = Perf(
        Command::new("perf")
            .args(["record", "-q", "-e", "kmem:mm_page_alloc", "--filter", "pfn == 18446744073709551615"])
            .args(["--call-graph", "dwarf,8192", "-D", "-1", "--control"])
            .arg(format!("fifo:{},{}", control.display(), ack.display()))
            .args(["-p", &pid, "-o"])
            .arg(&perf_data)
            .stdout(Stdio::null())
            .spawn()
            .expect("perf runs (cargo xtask setup installs linux-perf)"),
    );
    let (told, answer) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{BufRead as _, Write as _};
        // Opening either FIFO waits for perf to open its end.
        let mut control =
            std::fs::OpenOptions::new().write(true).open(&control).expect("perf's control FIFO");
        control.write_all(b"enable\n").unwrap();
        let mut acked = String::new();
        std::io::BufReader::new(std::fs::File::open(&ack).expect("perf's ack FIFO"))
            .read_line(&mut acked)
            .unwrap();
        let _ = told.send(acked);
    });
    // perf reads the binaries' DWARF before it opens its FIFOs: minutes in
    // an emulated guest sharing the host with others.
    let wait = Duration::from_secs(120 * tracer_tests::emulation_slowdown() as u64);
    let acked = answer
        .recv_timeout(wait)
        .unwrap_or_else(|e| panic!("perf acknowledged 'enable' within {wait:?}: {e}"));
    assert_eq!(acked.trim(), "ack", "perf's answer to enable");
    helper.say("go");
    let result = helper.read_json();
    assert!(result["failed_creates"].as_u64().unwrap() >= 5, "helper did not provoke failures: {result}");
    std::thread::sleep(Duration::from_millis(500));
    let done = tracer.stop();
    perf.stop();
    helper.say("exit");
    assert!(helper.wait().success());
    assert!(done.status.success(), "tracer failed: {}", done.stderr);

    let script = Command::new("perf").arg("script").arg("-i").arg(&perf_data).output().expect("perf script");
    let (script, script_err) =
        (String::from_utf8_lossy(&script.stdout), String::from_utf8_lossy(&script.stderr));
    let perf_stacks = perf_user_stacks(&script);
    let size = std::fs::metadata(&perf_data).map(|m| m.len()).unwrap_or(0);
    assert!(
        !perf_stacks.is_empty(),
        "perf recorded no order-3 failure ({size} bytes of perf.data; tracer saw {}):\n{script}\nperf script: {script_err}",
        done.json()["alloc_failures"]
    );

    let report = done.json();
    let row = report["alloc_failures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"].as_u64().map(|p| p.to_string()) == Some(pid.clone()) && r["order"] == 3)
        .unwrap_or_else(|| panic!("no order-3 failure of {pid}: {}", report["alloc_failures"]));
    assert_eq!(row["user_stack_unwind"], "dwarf");
    let ours = names(
        row["user_stack"].as_array().unwrap().iter().map(|f| f["symbol"].as_str().unwrap_or("?").to_string()),
    );
    eprintln!("tracer: {ours:?}\nperf:   {perf_stacks:?}");
    // The same frames perf's DWARF unwinding gives, to the last one.
    assert!(
        perf_stacks.iter().all(|theirs| *theirs == ours),
        "tracer's user stack {ours:?} differs from perf's {perf_stacks:?}"
    );
    for expected in ["syscall", "g", "f", "main"] {
        assert!(ours.iter().any(|n| n == expected), "{expected} missing from {ours:?}");
    }
}
