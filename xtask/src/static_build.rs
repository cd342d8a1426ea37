//! The release binary is linked statically against musl, so that it runs on
//! any host of its architecture whatever its glibc (RHEL 8, Debian 11,
//! Amazon Linux 2...). This installs what that needs, idempotently: the
//! Rust standard library for the musl target, and Debian's `musl-tools`
//! (`musl-gcc`, for crates with C parts).

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::util;

pub fn ensure_tools() -> Result<()> {
    let target = util::static_target();
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]), "rustup")?;
    if !installed.lines().any(|l| l.trim() == target) {
        println!("xtask: adding the Rust target {target} (for the static release binary)");
        util::run(Command::new("rustup").args(["target", "add", &target]), "rustup target add")
            .with_context(|| format!("adding the {target} target needs network access"))?;
    }
    if !util::exists_on_path("musl-gcc") {
        let install = "apt-get install -y musl-tools";
        if !util::exists_on_path("apt-get") {
            bail!(
                "musl-gcc is missing (the static release build needs it): install your distribution's musl tools"
            );
        }
        util::require_root(&format!("the static release build needs musl-gcc: `{install}`"))?;
        println!("xtask: installing Debian's musl-tools (musl-gcc, for the static release binary)");
        let installed = Command::new("apt-get").args(["install", "-y", "musl-tools"]).status();
        if !installed.is_ok_and(|s| s.success()) {
            // A fresh machine's package lists may be missing or stale.
            println!("xtask: apt-get install failed; updating the package lists and trying again");
            util::run(Command::new("apt-get").arg("update"), "apt-get update")?;
            util::run(Command::new("apt-get").args(["install", "-y", "musl-tools"]), install)?;
        }
    }
    Ok(())
}
