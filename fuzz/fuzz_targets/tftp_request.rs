//! Fuzzes how a TFTP read request's file name is mapped into the roots:
//! whatever the name, the answer is a regular file inside one of the roots,
//! "not found" or "outside"; never a file elsewhere, never a panic.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use head::serve::tftp::Roots;
use libfuzzer_sys::fuzz_target;

struct Tree {
    _dir: tempfile::TempDir,
    roots: Roots,
    real_ipxe: PathBuf,
    real_tftp: PathBuf,
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let ipxe = dir.path().join("ipxe");
        let tftp = dir.path().join("tftp");
        std::fs::create_dir_all(tftp.join("rpi/overlays")).expect("mkdir");
        std::fs::create_dir_all(&ipxe).expect("mkdir");
        std::fs::write(ipxe.join("undionly.kpxe"), b"pxe").expect("write");
        std::fs::write(tftp.join("rpi/start4.elf"), b"pi").expect("write");
        std::fs::write(dir.path().join("secret"), b"secret").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), tftp.join("escape"))
            .expect("symlink");
        let real_ipxe = std::fs::canonicalize(&ipxe).expect("canonical");
        let real_tftp = std::fs::canonicalize(&tftp).expect("canonical");
        Tree {
            _dir: dir,
            roots: Roots { ipxe, tftp },
            real_ipxe,
            real_tftp,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // async-tftp hands the handler the name as a lossy UTF-8 path.
    let name = String::from_utf8_lossy(data);
    let t = tree();
    if let Ok(found) = t.roots.resolve(&name) {
        assert!(
            found.starts_with(&t.real_ipxe) || found.starts_with(&t.real_tftp),
            "{name:?} resolved outside the roots: {}",
            found.display()
        );
        assert!(found.is_file());
    }
});
