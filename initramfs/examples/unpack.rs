//! Unpacks an initramfs stream (any mix of members) into a directory and
//! reports timing: `unpack <archive> <dest>`. A manual benchmark aid.

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use initramfs::unpack::{self, UnpackOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: unpack <archive> <dest>");
        std::process::exit(2);
    }
    let t0 = Instant::now();
    let stats = unpack::unpack(
        File::open(&args[1])?,
        Path::new(&args[2]),
        &UnpackOptions::default(),
    )?;
    eprintln!("{stats:?} in {:.3}s", t0.elapsed().as_secs_f64());
    Ok(())
}
