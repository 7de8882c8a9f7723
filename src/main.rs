//! The `fovea` command: parse the command line, run, print an error once, exit 2 on failure.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = fovea::cli::Cli::parse();
    match fovea::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fovea: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
