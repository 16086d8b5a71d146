//! `wwclient`: the runtime overlay agent. Not implemented yet (issue 06); it
//! refuses to run rather than pretend to keep anything in sync.

use std::process::ExitCode;

const USAGE: &str = "\
wwclient: keeps this node's runtime overlay in sync with the head

usage: wwclient [--help] [--version]

The synchronisation loop arrives with issue 06; this build only answers --help.";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("wwclient (ironwulf) {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("wwclient: the runtime overlay loop is not implemented in this build");
            ExitCode::from(2)
        }
    }
}
