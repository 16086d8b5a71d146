//! Packs a directory tree into a compressed newc archive and reports timing:
//! `pack <root> <out> [none|gz|zst|xz] [level]`. A manual benchmark aid.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use initramfs::compress::{self, Compression, EncoderOptions};
use initramfs::tree::{self, TreeOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: pack <root> <out> [none|gz|zst|xz] [level]");
        std::process::exit(2);
    }
    let root = Path::new(&args[1]);
    let comp = Compression::from_name(args.get(3).map_or("zst", String::as_str))
        .ok_or("unknown compression")?;
    let level = args.get(4).map(|l| l.parse()).transpose()?;
    let t0 = Instant::now();
    let opts = TreeOptions {
        excludes: tree::read_excludes(root)?,
        one_file_system: true,
        ..TreeOptions::default()
    };
    let scan = tree::scan(root, &opts)?;
    let fp = scan.fingerprint();
    let t_scan = t0.elapsed();
    let out = BufWriter::with_capacity(1 << 20, File::create(&args[2])?);
    let enc = compress::encoder(comp, &EncoderOptions { level, threads: 0 }, out)?;
    let enc = tree::write_archive(&scan, enc, &mut |_| {})?;
    let file = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    let size = file.metadata()?.len();
    eprintln!(
        "{} entries, {} data bytes, scan+fingerprint {:.3}s ({:02x}{:02x}..), total {:.3}s, output {} bytes",
        scan.len(),
        scan.total_bytes(),
        t_scan.as_secs_f64(),
        fp[0],
        fp[1],
        t0.elapsed().as_secs_f64(),
        size
    );
    Ok(())
}
