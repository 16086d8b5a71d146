//! `wwctl`: the Ironwulf head-node command. Parses, sets up logging, runs the
//! verb and maps the final error to an exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod config;
mod fsutil;
mod image;
mod logging;
mod nodedb;
mod overlay;
mod serve;

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
