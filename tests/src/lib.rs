//! Shared pieces of the integration tests: the tracer binary under test,
//! scratch loop devices and cgroups that clean up after themselves (also
//! when a test fails), and readers of the kernel's own counters.
//!
//! Tests run in parallel: each works on its own loop device, pid or cgroup
//! and filters tracer to it.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{OnceLock, mpsc},
    time::{Duration, Instant},
};

/// Fails the test with what to do when not root: these tests attach eBPF
/// programs and create devices; passing without them would prove nothing.
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "integration tests need root (they load eBPF programs): run `cargo xtask test` as root"
    );
}

/// The tracer binary, freshly built (or `TRACER_BIN`).
pub fn tracer_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("TRACER_BIN") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "--package",
                "tracer",
                "--bin",
                "tracer",
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo build for tracer");
        assert!(out.status.success(), "building tracer failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "tracer")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no tracer executable")
    })
}

/// A loop device over a file in /dev/shm; detached and deleted on drop.
pub struct LoopDevice {
    pub device: String,
    pub name: String,
    backing: PathBuf,
}

impl LoopDevice {
    pub fn new(tag: &str, bytes: u64) -> Self {
        let backing = PathBuf::from(format!("/dev/shm/tracer-test-{tag}-{}.img", std::process::id()));
        // Direct I/O keeps the backing file out of the page cache; tmpfs
        // has it only since 6.6, so older kernels get a buffered loop.
        Self::attach(backing, bytes, true)
    }

    /// A buffered loop device over a new file at `backing` (on a
    /// filesystem of the test's own, say): its writes go through the
    /// backing filesystem's write path, `sb_start_write` included.
    pub fn buffered_over(backing: PathBuf, bytes: u64) -> Self {
        Self::attach(backing, bytes, false)
    }

    fn attach(backing: PathBuf, bytes: u64, direct: bool) -> Self {
        std::fs::File::create(&backing).and_then(|f| f.set_len(bytes)).expect("creating loop backing file");
        let losetup = |direct: &[&str]| {
            Command::new("losetup")
                .args(["--find", "--show"])
                .args(direct)
                .arg(&backing)
                .output()
                .expect("running losetup")
        };
        let mut out = losetup(if direct { &["--direct-io=on"] } else { &[] });
        if direct
            && !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("Invalid argument")
        {
            out = losetup(&[]);
        }
        if !out.status.success() {
            let _ = std::fs::remove_file(&backing);
            panic!("losetup failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = device.trim_start_matches("/dev/").to_string();
        let dev = Self { device, name, backing };
        dev.wait_idle();
        dev
    }

    /// Waits until nothing (udev probing a new device, say) is doing I/O.
    fn wait_idle(&self) {
        let mut last = self.stat();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.stat();
            if now == last && now.in_flight == 0 {
                return;
            }
            last = now;
        }
    }

    pub fn stat(&self) -> BlockStat {
        BlockStat::read(&self.name)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["--detach", &self.device]).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// An ext4 made on `disk`, mounted on a fresh directory; unmounted and the
/// directory removed on drop (drop it before `disk`).
pub struct Ext4Mount {
    pub dir: PathBuf,
}

impl Ext4Mount {
    pub fn new(disk: &LoopDevice, tag: &str) -> Self {
        let ok = Command::new("mkfs.ext4").args(["-q", "-F", &disk.device]).status().unwrap().success();
        assert!(ok, "mkfs.ext4 {}", disk.device);
        let dir = std::env::temp_dir().join(format!("tracer-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount").arg(&disk.device).arg(&dir).status().unwrap().success();
        if !ok {
            let _ = std::fs::remove_dir(&dir);
            panic!("mount {}", disk.device);
        }
        Self { dir }
    }
}

impl Drop for Ext4Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// /sys/block/<dev>/stat, the fields tracer is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockStat {
    pub reads: u64,
    pub writes: u64,
    pub in_flight: u64,
    pub discards: u64,
    pub flushes: u64,
}

impl BlockStat {
    pub fn read(dev: &str) -> Self {
        let text = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).expect("reading block stat");
        let f: Vec<u64> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
        // Fields: 0 reads, 4 writes, 8 in flight, 11 discards, 15 flushes.
        Self { reads: f[0], writes: f[4], in_flight: f[8], discards: f[11], flushes: f[15] }
    }

    pub fn since(&self, before: &Self) -> Self {
        Self {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            in_flight: self.in_flight,
            discards: self.discards - before.discards,
            flushes: self.flushes - before.flushes,
        }
    }

    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.discards + self.flushes
    }
}

/// A running tracer. Killed on drop, so a failing test leaves nothing
/// attached.
pub struct Tracer {
    child: Option<Child>,
    /// Everything printed on stdout so far, and a message when it ended.
    stdout_text: std::sync::Arc<std::sync::Mutex<String>>,
    stdout_ended: mpsc::Receiver<()>,
    stderr_lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("tracer printed no JSON ({e}); stderr:\n{}\nstdout:\n{}", self.stderr, self.stdout)
        })
    }

    /// Every JSON line (for --interval --json).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line ({e}): {l}")))
            .collect()
    }
}

impl Tracer {
    /// Starts `tracer ARGS` and waits until it says it is attached.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(tracer_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tracer");
        let mut stdout = child.stdout.take().unwrap();
        let stdout_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ended_tx, stdout_ended) = mpsc::channel();
        let text = stdout_text.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            let mut pending = Vec::new();
            while let Ok(n) = stdout.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&chunk[..n]);
                // Whole UTF-8 characters only; the rest waits for more.
                let valid = match std::str::from_utf8(&pending) {
                    Ok(s) => s.len(),
                    Err(e) => e.valid_up_to(),
                };
                text.lock().unwrap().push_str(std::str::from_utf8(&pending[..valid]).unwrap());
                pending.drain(..valid);
            }
            text.lock().unwrap().push_str(&String::from_utf8_lossy(&pending));
            let _ = ended_tx.send(());
        });
        let stderr_lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let lines = stderr_lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("attached") {
                    let _ = ready_tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let mut tracer = Self { child: Some(child), stdout_text, stdout_ended, stderr_lines };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return tracer;
            }
            let exited = tracer.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || Instant::now() > deadline {
                let done = tracer.finish();
                panic!("tracer did not attach ({}):\n{}", done.status, done.stderr);
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// What the tracer has printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        self.stdout_text.lock().unwrap().clone()
    }

    /// What the tracer has printed on stderr so far, line by line.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_lines.lock().unwrap().join("\n")
    }

    /// Sends a signal and collects the output.
    pub fn stop_with(mut self, signal: i32) -> Finished {
        unsafe { libc::kill(self.pid(), signal) };
        self.finish()
    }

    pub fn stop(self) -> Finished {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for the tracer to end by itself (its --duration).
    pub fn finish(&mut self) -> Finished {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = self.stdout_ended.recv_timeout(Duration::from_secs(10));
        let stdout = std::mem::take(&mut *self.stdout_text.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
        let stderr = self.stderr_lines.lock().unwrap().join("\n");
        Finished { status, stdout, stderr }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs tracer to completion with `args`.
pub fn run_tracer(args: &[&str]) -> Finished {
    let out = Command::new(tracer_bin()).args(args).output().expect("running tracer");
    Finished {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs a helper workload and returns its stdout.
pub fn run_helper(helper: &str, args: &[&str]) -> String {
    let out = Command::new(helper).args(args).output().expect("running tracer-test-helper");
    assert!(
        out.status.success(),
        "helper {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A memory cgroup of the test's own, in the hierarchy tracer uses: cgroup
/// v1's `memory` one where the kernel has it (Debian's 6.1, the development
/// machines), else the unified (v2) one (Debian's 6.12 has no
/// CONFIG_MEMCG_V1). Removed on drop after its tasks are gone.
pub struct MemCgroup {
    pub dir: PathBuf,
    /// Path in the hierarchy, as `tracer --cgroup` takes it.
    pub path: String,
    /// 1 or 2.
    pub version: u8,
}

/// The memory controller's hierarchy, chosen as tracer chooses it
/// (`kernel::cgroups::memory_hierarchy`): v1 `memory`, else cgroup2.
pub fn memory_hierarchy() -> (PathBuf, u8) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<(String, String, String)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut right = right.split_whitespace();
            let (fstype, _, opts) = (right.next()?, right.next()?, right.next().unwrap_or(""));
            Some((left.split_whitespace().nth(4)?.to_string(), fstype.to_string(), opts.to_string()))
        })
        .collect();
    let v1 =
        mounts.iter().find(|(_, fstype, opts)| fstype == "cgroup" && opts.split(',').any(|o| o == "memory"));
    if let Some((root, _, _)) = v1 {
        return (PathBuf::from(root), 1);
    }
    let (root, _, _) = mounts
        .iter()
        .find(|(_, fstype, _)| fstype == "cgroup2")
        .expect("a memory cgroup hierarchy: cgroup v1 `memory` or cgroup2");
    (PathBuf::from(root), 2)
}

impl MemCgroup {
    pub fn new(tag: &str) -> Self {
        let (root, version) = memory_hierarchy();
        if version == 2 {
            // Children get memory.* files only once the parent enables the
            // controller for them.
            let control = root.join("cgroup.subtree_control");
            if !std::fs::read_to_string(&control)
                .unwrap_or_default()
                .split_whitespace()
                .any(|c| c == "memory")
            {
                std::fs::write(&control, "+memory").unwrap_or_else(|e| {
                    panic!("enabling the memory controller in {}: {e}", control.display())
                });
            }
        }
        let path = format!("/tracer-test-{tag}-{}", std::process::id());
        let dir = root.join(path.trim_start_matches('/'));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        Self { dir, path, version }
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    /// Sets the hard limit (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    /// `command` started inside this cgroup (it joins before it runs).
    pub fn enter<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        use std::os::unix::process::CommandExt as _;
        let procs = self.dir.join("cgroup.procs");
        unsafe {
            command.pre_exec(move || {
                std::fs::write(&procs, std::process::id().to_string())?;
                Ok(())
            })
        }
    }

    pub fn set_limit(&self, bytes: u64) {
        let file = if self.version == 1 { "memory.limit_in_bytes" } else { "memory.max" };
        std::fs::write(self.dir.join(file), bytes.to_string())
            .unwrap_or_else(|e| panic!("setting {}/{file}: {e}", self.dir.display()));
    }

    /// A `key value` line of a flat keyed file (memory.events, memory.oom_control).
    fn keyed(&self, file: &str, key: &str) -> u64 {
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// OOM kills in the cgroup: `oom_kill` of v1 memory.oom_control, or of
    /// v2 memory.events.
    pub fn oom_kills(&self) -> u64 {
        if self.version == 1 {
            self.keyed("memory.oom_control", "oom_kill")
        } else {
            self.keyed("memory.events", "oom_kill")
        }
    }

    /// Times a charge hit the limit: v1 memory.failcnt, v2 memory.events
    /// `max` (how often usage was about to go over memory.max).
    pub fn limit_hits(&self) -> u64 {
        if self.version == 1 {
            self.read("memory.failcnt").trim().parse().unwrap_or(0)
        } else {
            self.keyed("memory.events", "max")
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        // Tasks still inside (a failed test) go back to the root first.
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            let root_procs = self.dir.parent().unwrap().join("cgroup.procs");
            for pid in procs.lines() {
                let _ = std::fs::write(&root_procs, pid);
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A private tracefs instance counting one event through a filter: an
/// independent count of what tracer should see. Removed on drop.
pub struct FtraceCount {
    instance: PathBuf,
    event: String,
}

impl FtraceCount {
    pub fn new(tag: &str, event: &str, filter: &str) -> Self {
        let tracing = Path::new("/sys/kernel/tracing");
        if !tracing.join("instances").is_dir() {
            let _ = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status();
        }
        let instance = tracing.join("instances").join(format!("tracer-test-{tag}-{}", std::process::id()));
        std::fs::create_dir(&instance).expect("creating a tracefs instance");
        let count = Self { instance, event: event.to_string() };
        let dir = count.instance.join("events").join(event);
        std::fs::write(dir.join("filter"), filter).expect("setting the event filter");
        std::fs::write(dir.join("enable"), "1").expect("enabling the event");
        count
    }

    /// Events recorded; fails if the buffer overran (the count would lie).
    pub fn count(&self) -> u64 {
        self.records().len() as u64
    }

    /// The events recorded, as ftrace prints them (stops recording); fails
    /// if the buffer overran.
    pub fn records(&self) -> Vec<String> {
        let _ = std::fs::write(self.instance.join("events").join(&self.event).join("enable"), "0");
        for cpu in std::fs::read_dir(self.instance.join("per_cpu")).unwrap().flatten() {
            let stats = std::fs::read_to_string(cpu.path().join("stats")).unwrap();
            assert!(stats.contains("overrun: 0\n"), "ftrace buffer overran: {stats}");
        }
        let name = self.event.rsplit('/').next().unwrap();
        let trace = std::fs::read_to_string(self.instance.join("trace")).unwrap();
        trace
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains(&format!(" {name}:")))
            .map(String::from)
            .collect()
    }
}

impl Drop for FtraceCount {
    fn drop(&mut self) {
        let dir = self.instance.join("events").join(&self.event);
        let _ = std::fs::write(dir.join("enable"), "0");
        let _ = std::fs::write(dir.join("filter"), "0");
        let _ = std::fs::remove_dir(&self.instance);
    }
}

/// A helper process driven over stdin/stdout, killed on drop.
pub struct Helper {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Helper {
    pub fn start(helper: &str, args: &[&str]) -> Self {
        let mut child = Command::new(helper)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting tracer-test-helper");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next JSON line the helper prints.
    pub fn read_json(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading the helper");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("helper printed `{line}`: {e}"))
    }

    pub fn say(&mut self, word: &str) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{word}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn wait(mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every traced family attached its BTF tracepoints (this kernel allows
/// them): the raw-tracepoint fallback must not hide a verifier rejection.
pub fn assert_tp_btf(report: &serde_json::Value) {
    for family in report["families"].as_array().expect("families") {
        let hook = family["hook"].as_str().unwrap_or_default();
        if family["state"] == "traced" && family["family"] != "thp" {
            assert!(hook.starts_with("tp_btf"), "{} fell back to raw tracepoints: {hook}", family["family"]);
        }
    }
}

/// How much slower than this host the machine may be: 3 inside vm-test's
/// emulated guests (TRACER_TEST_EMULATED, set by vm-test), else 1. For
/// the few bounds on how soon something happens.
pub fn emulation_slowdown() -> u32 {
    if std::env::var_os("TRACER_TEST_EMULATED").is_some() { 3 } else { 1 }
}
