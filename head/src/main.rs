//! `wwctl`: the Ironwulf head-node command. Parses, sets up logging, runs the
//! verb and maps the final error to an exit code.

use std::process::ExitCode;

use clap::Parser;
use head::{cli, logging};

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    logging::init(args.verbose, args.debug);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
