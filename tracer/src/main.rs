use std::process::ExitCode;

use tracer::{cli, session};

fn main() -> ExitCode {
    let cli = cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp(None)
        .init();
    match session::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracer: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
