//! `cargo xtask vm-test [KERNEL...]`: the integration suite inside VMs on
//! the kernels users run, Debian 12's own, from its package archive.
//!
//! Set-up is idempotent: qemu (Debian's `qemu-system-x86`), virtme-ng (PyPI,
//! `vng`, which boots a kernel with the host's root shared read-only), and
//! each kernel's package, downloaded and unpacked once into a cache outside
//! the checkout (`/var/lib/tracer-vm`), so later runs and fresh clones on
//! the same machine reuse it. The newest build of each series is resolved
//! at run time: old builds leave the archive as new ones arrive.
//!
//! The guest runs the host's built binaries (the static tracer and the test
//! executables) and writes its results into a directory shared read-write;
//! this prints one table, kernel x family.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// Not /var/cache: virtme-ng mounts a tmpfs there in the guest.
const CACHE: &str = "/var/lib/tracer-vm";
/// The longest one kernel's guest may run (the suite takes 15-25 minutes
/// under single-threaded emulation).
const GUEST_DEADLINE: Duration = Duration::from_secs(50 * 60);

/// A kernel series of the matrix: its name on the command line and the
/// Debian package name pattern of its builds (newest wins).
pub struct Series {
    pub name: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    what: &'static str,
    /// Also fetch the vmlinux with DWARF from the `-dbg` package (~860 MB
    /// download, ~630 MB unpacked; seconds here), for kernel file:line.
    debug_vmlinux: bool,
}

pub const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
        what: "Debian 12's own kernel",
        debug_vmlinux: true,
    },
    Series {
        name: "6.1-rt",
        prefix: "linux-image-6.1.0-",
        suffix: "-rt-amd64-unsigned",
        what: "Debian 12's PREEMPT_RT kernel (no THP)",
        debug_vmlinux: false,
    },
    Series {
        name: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64-unsigned",
        what: "Debian 12's backport series (also Debian 13's)",
        debug_vmlinux: false,
    },
];

/// Tests that fail on a kernel of the matrix for a reason outside tracer,
/// each with that reason: (series, test, why). They still run, and the
/// table lists them with their outcome; any other failure fails the run.
pub const KNOWN_FAILURES: &[(&str, &str, &str)] = &[
    ("6.1", "allocation_failures_match_ftrace_and_resolve_to_the_helpers_code", ALLOC_HELPER_OOM_KILLED),
    ("6.1", "kernel_frames_have_file_and_line_from_the_distributions_vmlinux", ALLOC_HELPER_OOM_KILLED),
    ("6.1", "a_capture_of_every_family_reports_what_record_printed", ALLOC_HELPER_OOM_KILLED),
];

/// Why the allocation-failure helper sometimes dies on 6.1.
const ALLOC_HELPER_OOM_KILLED: &str = "uses the allocation-failure helper, which 6.1's memcg OOM killer \
     killed in both full 6.1 runs of 2026-11-30: at the limit, the dentry of a new map's file \
     descriptor (__d_alloc <- alloc_file_pseudo <- anon_inode_getfd <- map_create, GFP_KERNEL; \
     console.log) was charged before the next map's __GFP_NORETRY allocation could fail, and a \
     GFP_KERNEL charge with nothing left to reclaim OOM-kills. It passed in the rerun after the \
     helper locked its pages in (which fixed 6.12's kill, a fault on its code), but that does not \
     prevent this charge";

fn known_failure(series: &str, test: &str) -> Option<&'static str> {
    KNOWN_FAILURES.iter().find(|(s, t, _)| *s == series && *t == test).map(|(_, _, why)| *why)
}

/// A kernel unpacked in the cache.
pub struct Kernel {
    pub series: &'static str,
    /// `uname -r`, e.g. 6.1.0-56-amd64.
    pub release: String,
    pub root: PathBuf,
    /// The vmlinux with DWARF, where the series fetches it.
    pub debug_vmlinux: Option<PathBuf>,
}

impl Kernel {
    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
}

fn series_named(name: &str) -> Result<&'static Series> {
    SERIES.iter().find(|s| s.name == name).with_context(|| {
        let known: Vec<&str> = SERIES.iter().map(|s| s.name).collect();
        format!("unknown kernel `{name}`: the matrix has {} (or `all`)", known.join(", "))
    })
}

/// Installs qemu, busybox (vng's initramfs), kmod (depmod, modprobe) and
/// virtme-ng when missing.
pub fn ensure_tools() -> Result<()> {
    crate::packages::ensure(&[
        crate::packages::Package {
            name: "qemu-system-x86",
            command: "qemu-system-x86_64",
            why: "vm-test boots Debian's kernels in it",
        },
        crate::packages::Package { name: "busybox-static", command: "busybox", why: "virtme-ng's initramfs" },
        crate::packages::Package {
            name: "kmod",
            command: "depmod",
            why: "the kernels' module indexes, and modprobe in the guest (which runs the host's root)",
        },
    ])?;
    if !util::exists_on_path("vng") {
        println!("xtask: installing virtme-ng from PyPI (vng, to boot kernels with the host's root)");
        util::run(
            Command::new("python3").args(["-m", "pip", "install", "--quiet", "virtme-ng"]),
            "pip install virtme-ng",
        )?;
    }
    Ok(())
}

/// The newest package of a series in the archive.
fn newest_package(series: &Series) -> Result<String> {
    let search = || {
        util::output(
            Command::new("apt-cache").args([
                "search",
                "--names-only",
                &format!("^{}", regex_escape(series.prefix)),
            ]),
            "apt-cache search",
        )
    };
    let pick = |listing: &str| {
        let mut names: Vec<String> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.ends_with(series.suffix))
            .filter(|n| {
                // The build number alone between prefix and suffix: not
                // `-cloud-`, `-rt-` in the plain series.
                let middle = &n[series.prefix.len()..n.len() - series.suffix.len()];
                !middle.contains('-') || series.suffix.starts_with("-rt") && !middle.contains("-rt")
            })
            .map(String::from)
            .collect();
        names.sort_by_key(|n| version_key(n));
        names.pop()
    };
    if let Some(name) = pick(&search()?) {
        return Ok(name);
    }
    util::run(Command::new("apt-get").arg("update"), "apt-get update")?;
    pick(&search()?).with_context(|| {
        format!("no {}*{} package in the archive (apt-cache search)", series.prefix, series.suffix)
    })
}

fn regex_escape(text: &str) -> String {
    text.replace('.', "\\.")
}

/// Numbers in a package name, for a version order (6.1.0-9 < 6.1.0-56).
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Downloads and unpacks the newest kernel of `series`, once.
pub fn prepare(series: &Series) -> Result<Kernel> {
    let package = newest_package(series)?;
    let release = package.trim_start_matches("linux-image-").trim_end_matches("-unsigned").to_string();
    let root = Path::new(CACHE).join(format!("root-{release}"));
    let mut kernel =
        Kernel { series: series.name, release: release.clone(), root: root.clone(), debug_vmlinux: None };
    if !kernel.vmlinuz().exists() {
        let debs = Path::new(CACHE).join("debs");
        std::fs::create_dir_all(&debs)?;
        println!("xtask: downloading {package} ({})", series.what);
        util::run(
            Command::new("apt-get").args(["download", &package]).current_dir(&debs),
            "apt-get download",
        )?;
        let deb = std::fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
            .context("the downloaded package")?;
        let partial = root.with_extension("partial");
        let _ = std::fs::remove_dir_all(&partial);
        util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial), "dpkg-deb -x")?;
        util::run(Command::new("depmod").arg("-b").arg(&partial).arg(&release), "depmod")?;
        std::fs::rename(&partial, &root)?;
        let _ = std::fs::remove_file(&deb);
    }
    if series.debug_vmlinux {
        kernel.debug_vmlinux = Some(fetch_debug_vmlinux(&release)?);
    }
    // vng builds its initramfs from /lib/modules/<release>: point it at the
    // cache (harmless on the host, which runs another kernel).
    let modules = Path::new("/lib/modules").join(&release);
    if !modules.exists() {
        let _ = std::fs::remove_file(&modules); // a link to a cache moved away
        std::fs::create_dir_all("/lib/modules")?;
        std::os::unix::fs::symlink(root.join("lib/modules").join(&release), &modules)
            .with_context(|| format!("linking {}", modules.display()))?;
    }
    Ok(kernel)
}

/// `/usr/lib/debug/boot/vmlinux-<release>` out of Debian's `-dbg` package,
/// once: only that file is kept.
fn fetch_debug_vmlinux(release: &str) -> Result<PathBuf> {
    let inner = format!("usr/lib/debug/boot/vmlinux-{release}");
    let dir = Path::new(CACHE).join(format!("dbg-{release}"));
    let vmlinux = dir.join(&inner);
    if vmlinux.is_file() {
        return Ok(vmlinux);
    }
    let package = format!("linux-image-{release}-dbg");
    let debs = Path::new(CACHE).join("debs");
    std::fs::create_dir_all(&debs)?;
    println!("xtask: downloading {package} for its vmlinux with DWARF (~860 MB, once)");
    util::run(Command::new("apt-get").args(["download", &package]).current_dir(&debs), "apt-get download")?;
    let deb = std::fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_"))))
        .context("the downloaded -dbg package")?;
    std::fs::create_dir_all(&dir)?;
    let script =
        format!("dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' './{inner}'", deb.display(), dir.display());
    util::run(Command::new("sh").args(["-c", &script]), "unpacking the vmlinux")?;
    let _ = std::fs::remove_file(&deb);
    Ok(vmlinux)
}

/// The test executables of the integration suite, built on the host.
pub fn build_test_executables() -> Result<Vec<(String, PathBuf)>> {
    let out = util::output(
        util::cargo().args([
            "test",
            "-p",
            "tracer-tests",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ]),
        "building the integration tests",
    )?;
    let mut exes = Vec::new();
    for message in cargo_metadata::Message::parse_stream(out.as_bytes()).flatten() {
        if let cargo_metadata::Message::CompilerArtifact(a) = message
            && a.profile.test
            && a.target.kind.iter().any(|k| k.to_string() == "test")
            && let Some(exe) = a.executable
        {
            exes.push((a.target.name.clone(), exe.into_std_path_buf()));
        }
    }
    exes.sort();
    if exes.is_empty() {
        bail!("cargo built no integration test executables");
    }
    Ok(exes)
}

/// What one kernel's run gave.
pub struct Outcome {
    pub kernel: String,
    pub release: String,
    /// Per family: the first line `tracer probes` printed for it.
    pub families: Vec<(String, String)>,
    /// Per test executable: (passed, failed, names of failed tests).
    pub tests: Vec<(String, u64, u64, Vec<String>)>,
    /// Names of the tests that passed (a known failure may not have run).
    pub passed: Vec<String>,
    pub wall: Duration,
    pub boot_to_first_test: Option<Duration>,
}

impl Outcome {
    pub fn failed(&self) -> u64 {
        self.tests.iter().map(|t| t.2).sum()
    }

    /// Failures not in [`KNOWN_FAILURES`] for this kernel.
    pub fn unexpected_failures(&self) -> Vec<&str> {
        self.tests
            .iter()
            .flat_map(|t| t.3.iter())
            .filter(|name| known_failure(&self.kernel, name).is_none())
            .map(String::as_str)
            .collect()
    }
}

/// Boots `kernel`, runs the suite inside, and reads the results back.
pub fn run_on(
    kernel: &Kernel,
    tracer: &Path,
    exes: &[(String, PathBuf)],
    filter: &[String],
) -> Result<Outcome> {
    let results = util::target_dir()?.join("vm-test").join(&kernel.release);
    let _ = std::fs::remove_dir_all(&results);
    std::fs::create_dir_all(&results)?;
    let script = guest_script(kernel, tracer, exes, filter, &results);
    let script_path = results.join("guest.sh");
    std::fs::write(&script_path, script)?;
    // A disk for temporary files: the guest otherwise has only tmpfs, whose
    // pages reclaim cannot take back without swap (the reclaim tests need
    // page cache). Sparse on the host, removed afterwards.
    let scratch = results.join("scratch.img");
    std::fs::File::create(&scratch)?.set_len(16 << 30)?;
    println!(
        "xtask: booting {} ({}) under qemu (TCG: KVM here cannot run a stock kernel)",
        kernel.release, kernel.series
    );
    let started = Instant::now();
    // vng's qemu reopens stdout/stderr with truncation: piped, not a file.
    let mut vng = Command::new("vng")
        .args(["-v", "--disable-kvm", "--cpus", "2", "--memory", "4G"])
        .arg("-r")
        .arg(kernel.vmlinuz())
        .arg(format!("--rwdir={}", results.display()))
        // One host thread runs both vCPUs. With a thread per vCPU (MTTCG), a
        // vCPU kept executing the int3 that the kernel's live patching of a
        // tracepoint's jump label (text_poke_bp) had already replaced, in
        // `__alloc_pages` as tracer attached or detached: a soft lockup on
        // 6.1, "Oops: int3" on 6.12, RCU stalls on 6.1-rt, three times in
        // two days. Real CPUs do not do that; serialized emulation does not
        // either.
        .arg(format!(
            "--qemu-opts=-accel tcg,thread=single -drive file={},format=raw,if=virtio,cache=unsafe",
            scratch.display()
        ))
        .arg("--")
        .arg(format!("bash {}", script_path.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .context("starting vng (virtme-ng)")?;
    // Both of vng's outputs (the guest's console is on stderr) are copied
    // into console.log as they come: read, so a full pipe never stalls the
    // guest (a kernel's OOM reports alone can fill one), and on disk, to
    // look at while the guest runs.
    let console_path = results.join("console.log");
    let console = std::fs::OpenOptions::new().create(true).append(true).open(&console_path)?;
    let mut copiers = Vec::new();
    let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
        vng.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        vng.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ];
    for mut pipe in pipes.into_iter().flatten() {
        let mut file = console.try_clone()?;
        copiers.push(std::thread::spawn(move || {
            let _ = std::io::copy(&mut pipe, &mut file);
        }));
    }
    // However the guest fares, the run ends: CI has 90 minutes in all.
    while vng.try_wait()?.is_none() {
        if started.elapsed() > GUEST_DEADLINE {
            println!(
                "xtask: {} still running after {} min: stopping it",
                kernel.release,
                GUEST_DEADLINE.as_secs() / 60
            );
            // vng and its qemu, and no one else's (another run's guest).
            unsafe { libc::kill(-(vng.id() as i32), libc::SIGKILL) };
            let _ = vng.kill();
            let _ = vng.wait();
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for copier in copiers {
        let _ = copier.join();
    }
    let wall = started.elapsed();
    let _ = std::fs::remove_file(&scratch);
    if !results.join("done").exists() {
        bail!(
            "the guest on {} did not finish its script; console in {}",
            kernel.release,
            console_path.display()
        );
    }
    let probes = std::fs::read_to_string(results.join("probes.txt")).unwrap_or_default();
    let families = probes
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains(": "))
        .filter_map(|l| l.split_once(": "))
        // A family's line, not a line of a verifier log quoted under it.
        .filter(|(f, _)| !f.is_empty() && f.chars().all(|c| c.is_ascii_lowercase()))
        .map(|(f, s)| {
            let short: String = s.chars().take(160).collect();
            (f.to_string(), if short.len() < s.len() { format!("{short}...") } else { short })
        })
        .collect();
    let mut tests = Vec::new();
    let mut passed = Vec::new();
    for (name, _) in exes {
        let text = std::fs::read_to_string(results.join(format!("test-{name}.txt"))).unwrap_or_default();
        tests.push(parse_test_output(name, &text));
        passed.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... ok")))
                .map(String::from),
        );
    }
    let boot_to_first_test = std::fs::read_to_string(results.join("first-test-at"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    Ok(Outcome {
        kernel: kernel.series.into(),
        release: kernel.release.clone(),
        families,
        tests,
        passed,
        wall,
        boot_to_first_test,
    })
}

/// (name, passed, failed, failed test names) from libtest's output.
pub fn parse_test_output(name: &str, text: &str) -> (String, u64, u64, Vec<String>) {
    let number_before = |line: &str, word: &str| {
        let words: Vec<&str> = line.split_whitespace().collect();
        words.windows(2).find(|w| w[1].trim_end_matches([';', ',']) == word).and_then(|w| w[0].parse().ok())
    };
    let (mut passed, mut failed) = (0, 0);
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with("test result:") {
            passed += number_before(line, "passed").unwrap_or(0);
            failed += number_before(line, "failed").unwrap_or(0);
        }
        if let Some(test) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
            failures.push(test.to_string());
        }
    }
    if !text.contains("test result:") {
        // Crashed or timed out before libtest's summary.
        failed += 1;
        failures.push(format!("{name} (no summary: crashed or timed out)"));
    }
    (name.to_string(), passed, failed, failures)
}

/// The directory of the cargo running xtask, which holds the toolchain's
/// own rustc (not a rustup proxy, which would need rustup's home in the
/// guest).
fn host_toolchain_bin() -> PathBuf {
    std::env::var_os("CARGO")
        .map(PathBuf::from)
        .and_then(|cargo| cargo.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/usr/bin"))
}

/// The script the guest runs: set the machine up as the tests expect (loop
/// devices, a cgroup v1 memory hierarchy where the kernel has one, else
/// v2's, tracefs), then each test executable with the static tracer,
/// results into `results`.
fn guest_script(
    kernel: &Kernel,
    tracer: &Path,
    exes: &[(String, PathBuf)],
    filter: &[String],
    results: &Path,
) -> String {
    let r = results.display();
    let mut s = format!(
        r#"#!/bin/bash
set -u
R={r}
exec > $R/guest.log 2>&1
T0=$(cut -d' ' -f1 /proc/uptime)
# Loop devices for the block tests; the module has no dependencies.
modprobe loop 2>/dev/null || insmod $(ls {root}/lib/modules/$(uname -r)/kernel/drivers/block/loop.ko* | head -1) \
  || echo "no loop module"
# The layout of the development machines: cgroup v1 memory beside v2. A
# kernel without the v1 memory controller (6.12: no CONFIG_MEMCG_V1) gets
# v2 alone, its memory controller enabled for the tests' cgroups.
if ! grep -q ' cgroup .*memory' /proc/self/mountinfo; then
  umount /sys/fs/cgroup 2>/dev/null
  mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
  mkdir -p /sys/fs/cgroup/memory /sys/fs/cgroup/unified
  if ! mount -t cgroup -o memory cgroup /sys/fs/cgroup/memory 2>/dev/null; then
    echo "no cgroup v1 memory controller: memory cgroups are v2's"
    rmdir /sys/fs/cgroup/memory
  fi
  mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
  grep -q ' cgroup .*memory' /proc/self/mountinfo || echo +memory > /sys/fs/cgroup/unified/cgroup.subtree_control
fi
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
# Temporary files on the scratch disk, a real filesystem (see run_on).
modprobe virtio_blk 2>/dev/null; modprobe ext4 2>/dev/null
for i in $(seq 50); do [ -b /dev/vda ] && break; sleep 0.2; done
if mkfs.ext4 -q -F /dev/vda && mkdir -p /run/scratch && mount /dev/vda /run/scratch; then
  mkdir -p /run/scratch/tmp /run/scratch/vartmp && chmod 1777 /run/scratch/tmp /run/scratch/vartmp
  mount --bind /run/scratch/vartmp /var/tmp
  export TMPDIR=/run/scratch/tmp
else
  echo "no scratch disk: temporary files stay on tmpfs"
fi
export TRACER_BIN={tracer}
# Emulated (TCG): the few tests bounding how soon something happens allow
# for it.
export TRACER_TEST_EMULATED=1
# The host's Rust toolchain (the tests build a release helper with rustc).
export PATH={toolchain}:$PATH
{debug}
uname -r > $R/uname
$TRACER_BIN probes > $R/probes.txt 2>&1
# Why a family fell back (a verifier's refusal of tp_btf, say), for the record.
$TRACER_BIN -v trace --duration 2s > /dev/null 2> $R/trace-verbose.txt
echo "$(cut -d' ' -f1 /proc/uptime)" > $R/first-test-at
"#,
        root = kernel.root.display(),
        tracer = tracer.display(),
        toolchain = host_toolchain_bin().display(),
        debug = match &kernel.debug_vmlinux {
            // Where Debian's -dbg package puts it: tracer finds it itself.
            Some(v) => format!(
                "mkdir -p /usr/lib/debug/boot && ln -sf {} /usr/lib/debug/boot/ && export TRACER_TEST_REQUIRE_VMLINUX=1",
                v.display()
            ),
            None => String::new(),
        },
    );
    for (name, exe) in exes {
        // /proc/vmstat around each executable: what the kernel did (kswapd
        // or direct reclaim, OOM kills) when a test says it saw nothing.
        s.push_str(&format!(
            "cp /proc/vmstat $R/vmstat-before-{name}.txt\n\
             timeout 600 {} --test-threads=2 {} > $R/test-{name}.txt 2>&1; echo $? > $R/test-{name}.rc\n\
             cp /proc/vmstat $R/vmstat-after-{name}.txt\n",
            exe.display(),
            filter.join(" ")
        ));
    }
    s.push_str("echo \"$T0\" > $R/done\n");
    s
}

/// Which test executable checks which family.
fn family_of_test(test: &str) -> &'static str {
    match test {
        "block" | "full_disk" => "block",
        "alloc" => "alloc",
        "oom" => "oom",
        "memory" => "reclaim/thp",
        _ => "all",
    }
}

/// The table: kernel x family -> what tracer did, and tests.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::from("| kernel | family | on this kernel | tests |\n|---|---|---|---|\n");
    for o in outcomes {
        for (family, state) in &o.families {
            let tests: Vec<String> = o
                .tests
                .iter()
                .filter(|t| family_of_test(&t.0).split('/').any(|f| f == family))
                .map(|t| format!("{} {}/{}", t.0, t.1, t.1 + t.2))
                .collect();
            out.push_str(&format!(
                "| {} ({}) | {family} | {} | {} |\n",
                o.kernel,
                o.release,
                state,
                tests.join(", ")
            ));
        }
        let others: Vec<String> = o
            .tests
            .iter()
            .filter(|t| family_of_test(&t.0) == "all")
            .map(|t| format!("{} {}/{}", t.0, t.1, t.1 + t.2))
            .collect();
        out.push_str(&format!("| {} ({}) | (all) | | {} |\n", o.kernel, o.release, others.join(", ")));
    }
    for o in outcomes {
        for (series, test, why) in KNOWN_FAILURES.iter().filter(|k| k.0 == o.kernel) {
            let failed = o.tests.iter().any(|t| t.3.iter().any(|n| n == test));
            let outcome = if failed {
                "failed this run"
            } else if o.passed.iter().any(|n| n == test) {
                "passed this run"
            } else {
                "not run (filtered out)"
            };
            out.push_str(&format!("\n{series}: known failure {test} ({outcome}): {why}"));
        }
        let failures: Vec<&String> = o.tests.iter().flat_map(|t| t.3.iter()).collect();
        out.push_str(&format!(
            "\n{} ({}): {} passed, {} failed; wall {:.0} s (boot to first test {}){}",
            o.kernel,
            o.release,
            o.tests.iter().map(|t| t.1).sum::<u64>(),
            o.failed(),
            o.wall.as_secs_f64(),
            o.boot_to_first_test.map_or("?".into(), |d| format!("{:.0} s", d.as_secs_f64())),
            if failures.is_empty() {
                String::new()
            } else {
                format!("\n  failed: {}", failures.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
            }
        ));
    }
    out.push('\n');
    out
}

/// `cargo xtask vm-test [KERNEL...] [-- TEST FILTER]`. With `strict`,
/// a failure outside [`KNOWN_FAILURES`] fails the run; without, it is
/// reported as loudly but the run succeeds (what `cargo xtask test` does
/// while emulated guests are still flaky: see the README).
pub fn run(kernels: &[String], filter: &[String], strict: bool) -> Result<()> {
    util::require_root("the VMs run the integration suite as root, and set-up installs packages")?;
    ensure_tools()?;
    let names: Vec<&str> = if kernels.is_empty() || kernels.iter().any(|k| k == "all") {
        SERIES.iter().map(|s| s.name).collect()
    } else {
        kernels.iter().map(String::as_str).collect()
    };
    let series: Vec<&Series> = names.iter().map(|n| series_named(n)).collect::<Result<_>>()?;
    let tracer = util::build_tracer(true)?;
    let exes = build_test_executables()?;
    let mut outcomes = Vec::new();
    for s in series {
        let kernel = prepare(s)?;
        match run_on(&kernel, &tracer, &exes, filter) {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) if !strict => {
                println!("xtask: WARNING: {} ({}): {e:#}; not fatal here", s.name, kernel.release)
            }
            Err(e) => return Err(e),
        }
    }
    let table = table(&outcomes);
    println!("\n{table}");
    let summary = util::target_dir()?.join("vm-test/summary.md");
    std::fs::write(&summary, &table)?;
    println!("xtask: the table is also in {}", summary.display());
    let unexpected: Vec<&str> = outcomes.iter().flat_map(Outcome::unexpected_failures).collect();
    if !unexpected.is_empty() && !strict {
        println!(
            "xtask: WARNING: {} tests failed inside the VMs outside the known failures: {} \
             (logs under target/vm-test/<release>/); not fatal here, `cargo xtask vm-test` is strict",
            unexpected.len(),
            unexpected.join(", ")
        );
        return Ok(());
    }
    if !unexpected.is_empty() {
        bail!(
            "{} tests failed inside the VMs: {} (logs under target/vm-test/<release>/)",
            unexpected.len(),
            unexpected.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_output_is_counted() {
        let text = "running 3 tests\ntest a ... ok\ntest b ... FAILED\ntest c ... ok\n\n\
                    test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(parse_test_output("x", text), ("x".into(), 2, 1, vec!["b".into()]));
        let crashed = parse_test_output("y", "running 1 test\n");
        assert_eq!((crashed.1, crashed.2), (0, 1));
    }

    #[test]
    fn newest_build_wins() {
        let mut names = ["linux-image-6.1.0-9-amd64-unsigned", "linux-image-6.1.0-56-amd64-unsigned"];
        names.sort_by_key(|n| version_key(n));
        assert_eq!(names[1], "linux-image-6.1.0-56-amd64-unsigned");
        assert!(
            version_key("linux-image-6.12.9+deb12-amd64") < version_key("linux-image-6.12.117+deb12-amd64")
        );
    }
}
