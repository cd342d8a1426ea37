//! The kernel's PSI triggers (Documentation/accounting/psi.rst): a
//! threshold written to a pressure file is watched by the kernel, which
//! wakes pollers with POLLPRI when the stall within the window exceeds it.
//! Nothing runs until then; the watch loop polls without waiting once per
//! interval.

use std::{
    fs::OpenOptions,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub struct PsiTrigger {
    file: std::fs::File,
    pub path: PathBuf,
}

impl PsiTrigger {
    /// Registers "some"/"full" `stall` within `window` on `/proc/pressure/memory`
    /// or on a cgroup's `memory.pressure` (cgroup v2).
    pub fn register(
        full: bool,
        stall: Duration,
        window: Duration,
        cgroup_dir: Option<&Path>,
    ) -> Result<Self> {
        let path = match cgroup_dir {
            Some(dir) => dir.join("memory.pressure"),
            None => PathBuf::from("/proc/pressure/memory"),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .with_context(|| {
            format!(
                "opening {} for a PSI trigger (needs CONFIG_PSI, and psi=1 where it is off by default)",
                path.display()
            )
        })?;
        // The kernel turns the last byte written into the string's end: a
        // newline it may eat.
        let kind = if full { "full" } else { "some" };
        let spec = format!("{kind} {} {}\n", stall.as_micros(), window.as_micros());
        if let Err(e) = file.write_all(spec.as_bytes()) {
            let hint =
                if e.raw_os_error() == Some(libc::EINVAL) && !window.as_micros().is_multiple_of(2_000_000) {
                    " (without CAP_SYS_RESOURCE the kernel takes only windows that are multiples of 2s)"
                } else {
                    ""
                };
            bail!("registering the PSI trigger `{}` on {}: {e}{hint}", spec.trim_end(), path.display());
        }
        Ok(Self { file, path })
    }

    /// Whether the kernel signalled the trigger since the last look.
    pub fn fired(&self) -> bool {
        let mut poll = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        let ready = unsafe { libc::poll(&mut poll, 1, 0) };
        ready > 0 && poll.revents & libc::POLLPRI != 0
    }
}
