//! `wwinit`: PID 1 of a node's initramfs. Not implemented yet (issue 05); this
//! build answers `--help` and otherwise refuses to run.

use std::process::ExitCode;

const USAGE: &str = "\
wwinit: PID 1 for Ironwulf nodes (builds the root file system, execs init)

usage: wwinit [--help] [--version]

Booting arrives with issue 05; this build only answers --help.";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("-V" | "--version") => {
            println!("wwinit (ironwulf) {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("wwinit: booting is not implemented in this build");
            ExitCode::from(2)
        }
    }
}
