//! Fuzzes the multi-member decoder and the newc reader: any input must end in
//! entries, a clean end or an error — never a panic or an endless loop.
#![no_main]

use std::io::Read;

use initramfs::compress;
use initramfs::newc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Bound decompression bombs: stop after 64 MiB of output.
    let mut r = newc::Reader::new(compress::decoder(data).take(64 << 20));
    let mut sink = Vec::new();
    loop {
        match r.next_entry() {
            Ok(Some(_)) => {
                sink.clear();
                if r.data().take(1 << 20).read_to_end(&mut sink).is_err() {
                    return;
                }
            }
            Ok(None) => match r.next_archive() {
                Ok(true) => continue,
                _ => return,
            },
            Err(_) => return,
        }
    }
});
