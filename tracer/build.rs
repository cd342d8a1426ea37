//! Builds the kernel programs (`tracer-ebpf`) with the nightly toolchain and
//! bpf-linker, for embedding into the `tracer` binary.

use std::{env, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow, bail};

const SETUP_HINT: &str = "run `cargo xtask setup` once (it installs the nightly's rust-src and \
                          a bpf-linker built against the nightly's LLVM)";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("tracer-ebpf manifest has no parent"))?.to_string();

    emit_build_info();
    let linker = find_bpf_linker(metadata.target_directory.as_std_path())?;
    println!("cargo:rerun-if-changed={}", linker.display());
    println!("cargo:rerun-if-env-changed=TRACER_BPF_LINKER");
    check_nightly_rust_src()?;
    // The BPF target's linker is `bpf-linker`; point cargo at ours. Build
    // scripts are single-threaded, so setting the environment is sound.
    unsafe { env::set_var("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker) };
    // aya-build turns every line the nested cargo prints into a
    // cargo:warning; keep it to real diagnostics.
    unsafe { env::set_var("CARGO_TERM_QUIET", "true") };

    // aya-build watches tracer-ebpf; the kernel programs also compile the
    // shared types.
    println!("cargo:rerun-if-changed={root_dir}/../tracer-common/src");
    aya_build::build_ebpf(
        [aya_build::Package { name: "tracer-ebpf", root_dir: &root_dir, ..Default::default() }],
        aya_build::Toolchain::default(),
    )
    .with_context(|| format!("building the kernel programs failed; if tools are missing, {SETUP_HINT}"))
}

/// How this binary was built, for `tracer --version` and captures
/// (`crate::build_info`): the git commit and the target.
fn emit_build_info() {
    let target = env::var("TARGET").unwrap_or_default();
    println!("cargo:rerun-if-env-changed=TRACER_GIT_COMMIT");
    let commit = env::var("TRACER_GIT_COMMIT").ok().or_else(git_commit).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRACER_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=TRACER_TARGET={target}");
}

/// The checked-out commit (short), and rebuild triggers for when it moves;
/// None outside a git checkout (a source tarball).
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // HEAD itself (a branch switch) and the branch's ref (a commit); in a
    // worktree both live under the worktree's own git directory.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let branch_ref = branch.and_then(|b| git(&["rev-parse", "--git-path", &b]));
    for path in [git(&["rev-parse", "--git-path", "HEAD"]), branch_ref].into_iter().flatten() {
        println!("cargo:rerun-if-changed={path}");
    }
    // Only when it exists: cargo reruns a build script watching a missing
    // file on every build, and rebuilds tracer with it.
    if let Some(packed) = git(&["rev-parse", "--git-common-dir"]).map(|dir| format!("{dir}/packed-refs"))
        && std::path::Path::new(&packed).exists()
    {
        println!("cargo:rerun-if-changed={packed}");
    }
    Some(commit)
}

/// `TRACER_BPF_LINKER`, else the one `cargo xtask setup` installs under the
/// target directory, else `bpf-linker` on PATH.
fn find_bpf_linker(target_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    if let Some(path) = env::var_os("TRACER_BPF_LINKER") {
        return Ok(PathBuf::from(path));
    }
    let ours = target_dir.join("tools/bin/bpf-linker");
    if ours.exists() {
        return Ok(ours);
    }
    if let Some(path) = env::var_os("PATH") {
        for dir in env::split_paths(&path) {
            let candidate = dir.join("bpf-linker");
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    bail!("bpf-linker not found: {SETUP_HINT}")
}

fn check_nightly_rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .env_remove("RUSTC")
        .output();
    let sysroot = match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        _ => bail!("no nightly Rust toolchain: {SETUP_HINT}"),
    };
    let src = PathBuf::from(sysroot).join("lib/rustlib/src/rust/library/core");
    if !src.exists() {
        bail!("the nightly toolchain has no rust-src component: {SETUP_HINT}");
    }
    Ok(())
}
