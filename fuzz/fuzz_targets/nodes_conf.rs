//! Fuzzes the `nodes.conf` loader: YAML in Warewulf's schema, then the
//! profile merge every command and the server run. Any text must load or
//! fail with an error, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(conf) = head::nodedb::store::parse(text, Path::new("nodes.conf")) else {
        return;
    };
    let _ = head::nodedb::merge::merge_all(&conf);
});
