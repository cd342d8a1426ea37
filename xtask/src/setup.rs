//! Installs the build prerequisites of the kernel programs, idempotently:
//! the nightly toolchain's rust-src, and a bpf-linker linked against the
//! nightly's own LLVM (bpf-linker and rustc must agree on the LLVM major);
//! and cargo-fuzz for the fuzz targets.

use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::util;

/// bpf-linker release line known to build against LLVM 22 here.
const BPF_LINKER_VERSION: &str = "~0.13";
/// cargo-fuzz release line known to work with the nightly here.
const CARGO_FUZZ_VERSION: &str = "~0.13";

pub fn setup() -> Result<()> {
    if !util::exists_on_path("rustup") {
        bail!("rustup is not on PATH; tracer's kernel programs need a nightly toolchain managed by rustup");
    }
    ensure_nightly_with_rust_src()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    crate::static_build::ensure_tools()?;
    crate::packages::ensure(crate::packages::TEST_TOOLS)?;
    Ok(())
}

pub fn cargo_fuzz_path() -> Result<std::path::PathBuf> {
    Ok(util::target_dir()?.join("tools/bin/cargo-fuzz"))
}

/// cargo-fuzz into `target/tools`, once.
fn ensure_cargo_fuzz() -> Result<()> {
    let cargo_fuzz = cargo_fuzz_path()?;
    let runs =
        Command::new(&cargo_fuzz).args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if runs {
        return Ok(());
    }
    println!(
        "xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (for the fuzz targets); about a minute, once"
    );
    let tools = util::target_dir()?.join("tools");
    util::run(
        util::cargo()
            .args(["install", "cargo-fuzz", "--locked", "--force", "--version", CARGO_FUZZ_VERSION])
            .arg("--root")
            .arg(&tools)
            .env("PATH", path_with_tools(&tools)),
        "cargo install cargo-fuzz",
    )
    .context("installing cargo-fuzz needs network access to crates.io")
}

/// PATH with the tools directory first, so `cargo install --root` there
/// does not warn that it is missing from PATH (tracer's build finds the
/// tools by path, not through PATH).
fn path_with_tools(tools: &Path) -> std::ffi::OsString {
    let mut dirs = vec![tools.join("bin")];
    dirs.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(dirs).unwrap_or_default()
}

pub fn nightly(args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly"]).args(args);
    // Inside `cargo xtask`, these point at the stable toolchain.
    cmd.env_remove("RUSTC").env_remove("RUSTUP_TOOLCHAIN").env_remove("CARGO");
    cmd
}

fn ensure_nightly_with_rust_src() -> Result<()> {
    let has_nightly = nightly(&["rustc", "--version"]).output().is_ok_and(|o| o.status.success());
    if !has_nightly {
        println!("xtask: installing the nightly toolchain (for the eBPF crate)");
        util::run(
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]),
            "rustup toolchain install nightly",
        )?;
    }
    let sysroot = nightly_sysroot()?;
    if !Path::new(&sysroot).join("lib/rustlib/src/rust/library/core").is_dir() {
        println!("xtask: adding rust-src to the nightly toolchain");
        util::run(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src",
        )?;
    }
    Ok(())
}

fn nightly_sysroot() -> Result<String> {
    Ok(util::output(&mut nightly(&["rustc", "--print", "sysroot"]), "rustc +nightly --print sysroot")?
        .trim()
        .to_string())
}

/// LLVM major version of the nightly rustc, from `rustc -vV`.
fn nightly_llvm_major() -> Result<u32> {
    let info = util::output(&mut nightly(&["rustc", "-vV"]), "rustc +nightly -vV")?;
    parse_llvm_major(&info).context("`rustc +nightly -vV` printed no LLVM version")
}

fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv.lines().find_map(|l| l.strip_prefix("LLVM version: "))?.split('.').next()?.trim().parse().ok()
}

fn ensure_bpf_linker() -> Result<()> {
    let tools = util::target_dir()?.join("tools");
    let linker = tools.join("bin/bpf-linker");
    let major = nightly_llvm_major()?;
    let sysroot = nightly_sysroot()?;
    let stamp = tools.join("bpf-linker.llvm");
    let wanted_stamp = format!("llvm-{major} {sysroot}\n");
    let runs = Command::new(&linker).arg("--version").output().is_ok_and(|o| o.status.success());
    if runs && fs::read_to_string(&stamp).is_ok_and(|s| s == wanted_stamp) {
        return Ok(());
    }

    let lib_dir = Path::new(&sysroot).join("lib");
    let libllvm = fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so.")))
        .with_context(|| {
            format!(
                "the nightly toolchain ships no libLLVM.so.* in {}; cannot build bpf-linker",
                lib_dir.display()
            )
        })?;
    // bpf-linker's build looks for `$LLVM_PREFIX/lib/libLLVM.so`.
    let prefix = tools.join(format!("llvm-{major}"));
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;

    println!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} ({}); \
         this takes about a minute, once",
        libllvm.display()
    );
    let status = util::cargo()
        .args(["install", "bpf-linker", "--locked", "--force", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", &format!("llvm-{major}")])
        .arg("--root")
        .arg(&tools)
        .env("PATH", path_with_tools(&tools))
        .env("LLVM_PREFIX", &prefix)
        // The binary needs the nightly's libLLVM at run time too: the
        // symlink prefix does not carry its soname, so point at the source.
        .env("RUSTFLAGS", format!("-C link-arg=-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .context("starting cargo install bpf-linker")?;
    if !status.success() {
        bail!(
            "building bpf-linker failed ({status}). It needs network access to crates.io and a \
             bpf-linker release with an `llvm-{major}` feature; see shared notes in the README"
        );
    }
    let version = util::output(Command::new(&linker).arg("--version"), "bpf-linker --version")
        .context("the bpf-linker just built does not run")?;
    fs::write(&stamp, wanted_stamp)?;
    println!("xtask: installed {} at {}", version.trim(), linker.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("rustc 1.0"), None);
    }
}
