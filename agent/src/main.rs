//! `wwclient`: the runtime overlay agent of an Ironwulf node.
//!
//! It polls the head for the node's runtime overlay (`GET /runtime/{wwid}`
//! with `If-None-Match`), and when the overlay changed it unpacks it, applies
//! it file by file with atomic renames, deletes what an earlier overlay wrote
//! and the new one dropped, and records what it wrote. Single threaded, no
//! async runtime, no libsystemd. Behaviour and flags: `docs/wwclient.md`.

mod apply;
mod archive;
mod cli;
mod http;
mod identity;
mod log;
mod notify;
mod record;
mod rng;
mod run;
mod settings;
mod signals;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli::Command::Run(args)) => args,
        Ok(cli::Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Command::Version) => {
            println!("wwclient (ironwulf) {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("wwclient: {e}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    log::init(args.debug);
    let result = settings::Settings::resolve(&args).and_then(run::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
