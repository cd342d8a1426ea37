//! The commands, each to the module that does it.

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    cli::{Cli, Command},
    probes, replay,
    session::{self, Outputs},
};

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Trace(args) => {
            session::trace(&args.run, Outputs { report: args.output.as_deref(), capture: None, watch: None })
        }
        Command::Record(args) => {
            session::trace(&args.run, Outputs { report: None, capture: Some(&args.capture), watch: None })
        }
        Command::Report(args) => replay::run(&args),
        Command::Probes(args) => probes::run(args),
        Command::Watch(args) => crate::watch::run(&args),
    }
}
