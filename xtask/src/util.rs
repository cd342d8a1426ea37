//! Helpers shared by the xtask commands.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn workspace() -> Result<cargo_metadata::Metadata> {
    cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")
}

pub fn target_dir() -> Result<PathBuf> {
    Ok(workspace()?.target_directory.into_std_path_buf())
}

pub fn require_root(why: &str) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("this needs root: {why}. Run it as root (for example `sudo -E cargo xtask ...`)");
    }
    Ok(())
}

/// The static target for this machine's architecture (musl).
pub fn static_target() -> String {
    format!("{}-unknown-linux-musl", std::env::consts::ARCH)
}

/// Builds the tracer binary and returns its path: with `release`, the
/// statically linked one (musl) that runs on any host.
pub fn build_tracer(release: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "tracer", "--bin", "tracer"]);
    let path = if release {
        let target = static_target();
        cmd.args(["--release", "--target", &target]);
        run(&mut cmd, "building tracer")?;
        target_dir()?.join(target).join("release/tracer")
    } else {
        run(&mut cmd, "building tracer")?;
        target_dir()?.join("debug/tracer")
    };
    if release {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "xtask: built {} (statically linked, {:.1} MB, kernel programs embedded): copy this one file \
             to the host to trace",
            path.display(),
            size as f64 / 1e6
        );
    } else {
        println!("xtask: built {}", path.display());
    }
    Ok(path)
}

/// A loop device over a file in /dev/shm, detached and deleted on drop.
pub struct LoopDevice {
    device: String,
    backing: PathBuf,
}

impl LoopDevice {
    pub fn create(bytes: u64) -> Result<Self> {
        let backing = PathBuf::from(format!("/dev/shm/tracer-xtask-{}.img", std::process::id()));
        let file =
            std::fs::File::create(&backing).with_context(|| format!("creating {}", backing.display()))?;
        file.set_len(bytes)?;
        let device = output(
            Command::new("losetup").args(["--find", "--show", "--direct-io=on"]).arg(&backing),
            "losetup",
        );
        let device = match device {
            Ok(d) => d.trim().to_string(),
            Err(e) => {
                let _ = std::fs::remove_file(&backing);
                return Err(e);
            }
        };
        Ok(Self { device, backing })
    }

    pub fn path(&self) -> &str {
        &self.device
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["--detach", &self.device]).status();
        let _ = std::fs::remove_file(&self.backing);
    }
}

/// A mixed direct I/O workload (dd with oflag/iflag=direct and fsync) in
/// the background, for demos.
pub fn direct_io_workload(device: &str, duration: Duration) -> Result<Child> {
    let script = format!(
        "end=$(( $(date +%s) + {secs} )); while [ $(date +%s) -lt $end ]; do \
         dd if=/dev/zero of={device} bs=4k count=256 oflag=direct conv=fsync status=none; \
         dd if={device} of=/dev/null bs=4k count=256 iflag=direct status=none; done",
        secs = duration.as_secs().max(1),
    );
    Command::new("sh").args(["-c", &script]).spawn().context("starting the demo workload")
}

pub fn exists_on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| Path::new(&dir).join(program).exists()))
}

/// Builds the integration tests' workload helper (release) and returns it.
pub fn build_test_helper() -> Result<PathBuf> {
    run(
        cargo().args(["build", "--release", "--package", "tracer-tests", "--bin", "tracer-test-helper"]),
        "building the workload helper",
    )?;
    Ok(target_dir()?.join("release/tracer-test-helper"))
}

/// A cgroup v1 memory cgroup for the demo, removed on drop; `None` where
/// the host has no v1 memory hierarchy.
pub struct ScratchMemcg {
    dir: PathBuf,
}

impl ScratchMemcg {
    pub fn create(tag: &str) -> Option<Self> {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            return None;
        }
        let dir = root.join(format!("tracer-{tag}-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        std::fs::write(dir.join("memory.limit_in_bytes"), (64u64 << 20).to_string()).ok()?;
        Some(Self { dir })
    }

    /// Allocation failures, memory cgroup reclaim and an OOM kill inside it.
    pub fn provoke(&self, helper: &Path) -> Result<()> {
        use std::io::Write as _;
        let dir = self.dir.to_str().context("cgroup path")?;
        // Each helper waits for "go" (and "exit") on stdin.
        let driven = |args: &[&str], script: &str| -> Result<()> {
            let mut child =
                Command::new(helper).args(args).stdin(Stdio::piped()).stdout(Stdio::null()).spawn()?;
            child.stdin.take().context("stdin")?.write_all(script.as_bytes())?;
            let _ = child.wait()?;
            Ok(())
        };
        driven(&["alloc-fail", dir, "10"], "go\nexit\n")?;
        // alloc-fail pins the limit just above its usage; give room back.
        std::fs::write(self.dir.join("memory.limit_in_bytes"), (64u64 << 20).to_string())?;
        driven(&["oom-hog", dir, "128"], "go\n")?;
        let file = std::env::temp_dir().join(format!("tracer-demo-{}", std::process::id()));
        let read = Command::new(helper)
            .args(["memcg-read", dir, file.to_str().unwrap_or_default(), "72"])
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&file);
        read.map(|_| ()).map_err(Into::into)
    }
}

impl Drop for ScratchMemcg {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
