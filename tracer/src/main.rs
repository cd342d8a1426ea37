use std::process::ExitCode;

use tracer::{cli, commands};

/// The static (musl) build: musl's malloc is much slower than glibc's at
/// the many small allocations of parsing and rendering reports.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // A memory-forensics tool must not be a source of what it measures: its
    // allocator returning memory would split transparent huge pages and
    // show up as THP splits of its own.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let cli = cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracer: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
