//! The release binary needs nothing from the host but the kernel: it runs
//! in a chroot holding only itself (and the kernel's /proc, /sys and
//! tracefs), and a capture recorded there reports outside.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use tracer_tests::{Finished, require_root, tracer_bin};

/// Whether an ELF executable asks for a program interpreter (ld.so): a
/// static binary has no PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    assert!(elf.starts_with(b"\x7fELF") && elf[4] == 2, "not a 64-bit ELF file");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == PT_INTERP
    })
}

/// The binary under test when it is static (`cargo xtask test` passes the
/// release build), else the static release build, built now.
fn static_tracer() -> PathBuf {
    let bin = tracer_bin();
    if !has_interpreter(&std::fs::read(bin).unwrap()) {
        return bin.to_path_buf();
    }
    let target = format!("{}-unknown-linux-musl", std::env::consts::ARCH);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--package", "tracer", "--bin", "tracer", "--target", &target])
        .args(["--message-format=json-render-diagnostics"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running cargo build");
    assert!(
        out.status.success(),
        "building the static tracer failed (`cargo xtask setup` installs the musl target)"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "tracer")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no tracer executable")
}

/// A directory holding only a copy of the binary and empty /proc and /sys
/// mount points; removed on drop.
struct ChrootDir(PathBuf);

impl ChrootDir {
    fn new(binary: &Path) -> Self {
        let dir = std::env::temp_dir().join(format!("tracer-chroot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["proc", "sys"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::copy(binary, dir.join("tracer")).unwrap();
        Self(dir)
    }

    /// Runs `/tracer ARGS` chrooted into the directory. The bind mounts are
    /// made in a mount namespace of the child's own: they exist only for
    /// it and vanish with it, whatever happens to the test.
    fn run(&self, args: &[&str]) -> Finished {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let root = c(&self.0);
        let binds: Vec<(CString, CString)> = ["/proc", "/sys", "/sys/kernel/tracing"]
            .iter()
            .map(|m| (CString::new(*m).unwrap(), c(&self.0.join(m.trim_start_matches('/')))))
            .collect();
        let mut cmd = Command::new("/tracer");
        cmd.args(args).env_clear();
        unsafe {
            cmd.pre_exec(move || {
                let check = |rc: libc::c_int| {
                    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
                };
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // Nothing mounted here propagates back to the host.
                check(libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                for (source, target) in &binds {
                    check(libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                check(libc::chroot(root.as_ptr()))?;
                check(libc::chdir(c"/".as_ptr()))
            });
        }
        let out = cmd.output().expect("starting /tracer in the chroot");
        Finished {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for ChrootDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn static_binary_traces_and_records_in_an_empty_chroot() {
    require_root();
    let binary = static_tracer();
    assert!(!has_interpreter(&std::fs::read(&binary).unwrap()), "{} is not static", binary.display());
    assert!(
        Path::new("/sys/kernel/tracing/events").is_dir(),
        "tracefs is not mounted at /sys/kernel/tracing (run `tracer probes` once, it mounts it)"
    );
    let dir = ChrootDir::new(&binary);

    let version = dir.run(&["--version"]);
    assert!(version.status.success(), "{}", version.stderr);
    assert!(version.stdout.contains("-linux-musl, static)"), "{}", version.stdout);

    let probes = dir.run(&["probes"]);
    assert!(probes.status.success(), "probes in the chroot: {}", probes.stderr);
    assert!(probes.stdout.contains("block: traced with"), "{}", probes.stdout);

    let trace = dir.run(&["trace", "block", "oom", "--duration", "1s"]);
    assert!(trace.status.success(), "trace in the chroot: {}", trace.stderr);
    assert!(trace.stderr.contains("attached block, oom"), "{}", trace.stderr);
    assert!(trace.stdout.contains("Block I/O latency"), "{}", trace.stdout);

    let record = dir.run(&["record", "-o", "/run.cap", "block", "--duration", "1s"]);
    assert!(record.status.success(), "record in the chroot: {}", record.stderr);
    // The mounts lived in the child's namespace only: the host sees none.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(dir.0.to_str().unwrap()), "a chroot mount leaked: {mountinfo}");
    let mut entries: Vec<String> =
        std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    entries.sort();
    assert_eq!(entries, ["proc", "run.cap", "sys", "tracer"], "the chroot held nothing else");

    // Outside, with the same binary: the capture names the static build.
    let out = Command::new(&binary)
        .args(["report", "--format", "json"])
        .arg(dir.0.join("run.cap"))
        .output()
        .expect("running tracer report");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let block = report["families"].as_array().unwrap().iter().find(|f| f["family"] == "block").unwrap();
    assert_eq!(block["state"], "traced", "{block}");
    let build = &report["system"]["tracer"];
    assert_eq!(build["linkage"], "static", "{build}");
    assert!(build["target"].as_str().unwrap().ends_with("-linux-musl"), "{build}");
}
