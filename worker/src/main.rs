//! The Oxbow worker binary: `run`, `local`, `validate` and `bench`, each in
//! [`oxbow_worker::commands`]. `oxbow-worker --help` and `oxbow-worker <command> --help` list
//! every option.

use std::process::ExitCode;

use clap::Parser;
use oxbow_worker::commands::{Cli, Command, local, run, validate};

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run::main(&args),
        Command::Local(args) => local::main(&args),
        Command::Validate { manifest } => validate::main(&manifest),
        Command::Bench(bench) => bench.run(),
    }
}
