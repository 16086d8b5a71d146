//! `wwinit`: PID 1 of a node's initramfs. Thin: answers `--help`/`--version`,
//! refuses to run as anything but PID 1, then hands over to [`wwinit::run_pid1`].

const USAGE: &str = "\
wwinit: PID 1 for Ironwulf nodes (builds the root file system, execs init)

usage: wwinit [--help] [--version]

Runs only as PID 1 (the kernel's /init). Settings: /warewulf/wwinit.conf and
wwinit.* kernel parameters; see docs/wwinit.md and docs/kernel-cmdline.md.";

fn main() -> ! {
    match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => {
            println!("{USAGE}");
            std::process::exit(0)
        }
        Some("-V" | "--version") => {
            println!("wwinit (ironwulf) {}", env!("CARGO_PKG_VERSION"));
            std::process::exit(0)
        }
        _ if std::process::id() != 1 => {
            eprintln!("wwinit: not PID 1; refusing to touch this system (try --help)");
            std::process::exit(2)
        }
        _ => wwinit::run_pid1(),
    }
}
