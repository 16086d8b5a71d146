//! Fuzzes the unpacker into a fresh temporary directory and checks that
//! nothing was created beside it.
#![no_main]

use initramfs::unpack::{self, UnpackOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let top = std::env::temp_dir().join(format!("initramfs-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&top);
    let dest = top.join("dest");
    std::fs::create_dir_all(&dest).expect("temp dir");
    let opts = UnpackOptions {
        skip_unprivileged_nodes: true,
        ..UnpackOptions::default()
    };
    let _ = unpack::unpack(data, &dest, &opts);
    let beside: Vec<_> = std::fs::read_dir(&top).expect("temp dir").collect();
    assert_eq!(
        beside.len(),
        1,
        "unpack created something outside its destination"
    );
    let _ = std::fs::remove_dir_all(&top);
});
