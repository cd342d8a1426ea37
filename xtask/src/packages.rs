//! Debian packages the tests and builds use, installed idempotently: a
//! package is installed only when its command is missing, and a failed
//! install is retried once after refreshing stale package lists (a fresh
//! machine may have none).

use std::process::Command;

use anyhow::{Result, bail};

use crate::util;

/// A Debian package, the command that shows it is installed, and why the
/// project needs it.
pub struct Package {
    pub name: &'static str,
    pub command: &'static str,
    pub why: &'static str,
}

/// What the integration tests run besides tracer.
pub const TEST_TOOLS: &[Package] = &[
    Package {
        name: "prometheus",
        command: "prometheus",
        why: "the metrics export test scrapes tracer with it",
    },
    Package {
        name: "linux-perf",
        command: "perf",
        why: "user stacks are checked against `perf record --call-graph dwarf`",
    },
    Package {
        name: "gcc",
        command: "gcc",
        why: "the C helper without frame pointers is built -O2 by the tests",
    },
    Package { name: "e2fsprogs", command: "mkfs.ext4", why: "tests put ext4 on their own loop devices" },
    Package { name: "mount", command: "losetup", why: "tests trace loop devices of their own" },
    Package {
        name: "util-linux",
        command: "fsfreeze",
        why: "the watch p99 test holds requests with fsfreeze",
    },
];

pub fn ensure(packages: &[Package]) -> Result<()> {
    let missing: Vec<&Package> = packages.iter().filter(|p| !util::exists_on_path(p.command)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let install = format!("apt-get install -y {}", names.join(" "));
    if !util::exists_on_path("apt-get") {
        bail!("missing {}: install them with your distribution's packages", names.join(", "));
    }
    for p in &missing {
        println!("xtask: installing Debian's {} ({})", p.name, p.why);
    }
    util::require_root(&format!("installing packages: `{install}`"))?;
    let apt = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(&names)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if !apt().status().is_ok_and(|s| s.success()) {
        println!("xtask: apt-get install failed; updating the package lists and trying again");
        util::run(Command::new("apt-get").arg("update"), "apt-get update")?;
        util::run(&mut apt(), &install)?;
    }
    Ok(())
}
