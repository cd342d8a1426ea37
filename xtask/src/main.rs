//! Project chores: `cargo xtask setup|build|demo|test|bench`.
//!
//! Everything a fresh machine needs is installed by `setup`, idempotently;
//! `demo` and `test` run it first, so they are the only commands a new user
//! needs.

mod bench;
mod fuzz;
mod packages;
mod setup;
mod static_build;
mod util;
mod vm;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building the kernel programs needs (nightly rust-src, a
    /// bpf-linker built against the nightly's LLVM). Idempotent.
    Setup,
    /// setup, then build the tracer binary (--release: the static binary to
    /// copy to other hosts, whatever their C library).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// setup, build, then trace a small workload on a scratch loop device for
    /// a few seconds and print the report. Needs root.
    Demo,
    /// setup, then fmt check, clippy, unit tests, the integration tests
    /// against the running kernel (root), and the fuzz targets for a
    /// bounded time. What CI runs.
    Test {
        /// How long to run each fuzz target (0 to skip fuzzing).
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        fuzz_seconds: u64,
        /// Kernels to run the integration suite on in VMs after the host
        /// (see vm-test): Debian 12's own by default; `none` to skip.
        #[arg(long, default_value = "6.1", value_delimiter = ',', value_name = "KERNELS")]
        vm: Vec<String>,
        /// Arguments passed on to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        cargo_test_args: Vec<String>,
    },
    /// setup, then run the fuzz targets (cargo-fuzz, nightly).
    Fuzz {
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        seconds: u64,
    },
    /// Overhead benchmarks against the anchor tools, in one run. Needs root.
    Bench(bench::BenchArgs),
    /// The integration suite inside VMs on Debian 12's kernels (6.1, 6.1-rt,
    /// 6.12; `all` or none for every one), with the host's built binaries;
    /// prints kernel x family. Needs root; installs qemu and virtme-ng.
    VmTest {
        /// Kernels: 6.1, 6.1-rt, 6.12, all.
        kernels: Vec<String>,
        /// A test name filter passed to each test executable.
        #[arg(last = true)]
        filter: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Setup => setup::setup(),
        Command::Build { release } => {
            setup::setup()?;
            util::build_tracer(release).map(|_| ())
        }
        Command::Demo => demo(),
        Command::Test { fuzz_seconds, vm, cargo_test_args } => test(&cargo_test_args, fuzz_seconds, &vm),
        Command::Fuzz { seconds } => {
            setup::setup()?;
            fuzz::run(std::time::Duration::from_secs(seconds))
        }
        Command::Bench(args) => {
            setup::setup()?;
            bench::run(args)
        }
        Command::VmTest { kernels, filter } => {
            setup::setup()?;
            vm::run(&kernels, &filter, true)
        }
    }
}

fn test(extra: &[String], fuzz_seconds: u64, vm_kernels: &[String]) -> Result<()> {
    setup::setup()?;
    util::require_root("the integration tests load eBPF programs and create loop devices")?;
    util::run(util::cargo().args(["fmt", "--all", "--", "--check"]), "cargo fmt --check")?;
    // Default members on the host; the kernel programs for their own target.
    util::run(util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]), "cargo clippy")?;
    util::run(
        setup::nightly(&["cargo", "clippy", "-p", "tracer-ebpf", "--target", "bpfel-unknown-none"]).args([
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy (kernel programs)",
    )?;
    // The integration tests run the binary users copy to hosts.
    let tracer = util::build_tracer(true)?;
    let mut cmd = util::cargo();
    cmd.arg("test").args(extra).env("TRACER_BIN", &tracer);
    util::run(&mut cmd, "cargo test")?;
    if fuzz_seconds > 0 {
        fuzz::run(std::time::Duration::from_secs(fuzz_seconds))?;
    }
    if !vm_kernels.iter().any(|k| k == "none") {
        // A feature is done when it passes on the kernels users run.
        vm::run(vm_kernels, &[], false)?;
    }
    println!("xtask: all checks and tests passed");
    Ok(())
}

fn demo() -> Result<()> {
    setup::setup()?;
    util::require_root("tracing loads eBPF programs")?;
    let tracer = util::build_tracer(true)?;
    let helper = util::build_test_helper()?;
    let scratch = util::LoopDevice::create(256 << 20)?;
    let memcg = util::ScratchMemcg::create("demo");
    println!(
        "xtask: tracing every family for 8s while a workload provokes each: direct I/O on {}, THP splits,{}",
        scratch.path(),
        if memcg.is_some() {
            " and in a 64 MiB memory cgroup: allocation failures, cgroup reclaim, an OOM kill"
        } else {
            ""
        }
    );
    let mut tracer_run = std::process::Command::new(&tracer).args(["trace", "--duration", "8s"]).spawn()?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let mut io = util::direct_io_workload(scratch.path(), std::time::Duration::from_secs(4))?;
    util::run(
        std::process::Command::new(&helper).args(["thp-split", "10"]).stdout(std::process::Stdio::null()),
        "THP splits",
    )?;
    if let Some(memcg) = &memcg {
        memcg.provoke(&helper)?;
    } else {
        println!("xtask: no cgroup v1 memory hierarchy here: the memory cgroup part of the demo is skipped");
    }
    let _ = io.wait();
    let status = tracer_run.wait()?;
    anyhow::ensure!(status.success(), "tracer exited with {status}");
    Ok(())
}
