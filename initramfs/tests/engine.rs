//! Integration tests of the archive engine: tree → archive → unpack round
//! trips, the kernel-compatible policies, traversal refusals and property tests.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use initramfs::compress::{self, Compression, EncoderOptions};
use initramfs::newc::{self, Header, Kind, Writer};
use initramfs::tree::{self, TreeOptions};
use initramfs::unpack::{self, UnpackError, UnpackOptions};
use proptest::prelude::*;

// ---------------------------------------------------------------- helpers

fn archive(build: impl FnOnce(&mut Writer<Vec<u8>>)) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    build(&mut w);
    w.finish().unwrap()
}

fn compress_with(c: Compression, data: &[u8]) -> Vec<u8> {
    let mut e = compress::encoder(c, &EncoderOptions::default(), Vec::new()).unwrap();
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn set_mtime(path: &Path, secs: u64) {
    let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let f = fs::File::options()
        .write(true)
        .open(path)
        .or_else(|_| fs::File::open(path))
        .unwrap();
    f.set_modified(t).unwrap();
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o640) }, 0);
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A sample tree with every kind of entry the engine handles.
fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/warewulf")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/share/doc/pkg")).unwrap();
    fs::create_dir_all(root.join("boot")).unwrap();
    fs::write(root.join("etc/hostname"), b"node1\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("usr/bin/tool"), &big).unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/tool-alias")).unwrap();
    fs::write(root.join("usr/share/doc/pkg/README"), b"docs").unwrap();
    fs::write(root.join("boot/vmlinuz"), b"kernel").unwrap();
    symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
    symlink("/nonexistent/target", root.join("etc/dangling")).unwrap();
    fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"etc/caf\xe9")),
        b"latin1",
    )
    .unwrap();
    mkfifo(&root.join("etc/fifo"));
    fs::write(
        root.join("etc/warewulf/excludes"),
        b"# comment\n/boot/*\n\n/usr/share/doc\n",
    )
    .unwrap();
    if is_root() {
        std::os::unix::fs::lchown(root.join("etc/hostname"), Some(1234), Some(5678)).unwrap();
        let c = std::ffi::CString::new(root.join("etc/console").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path; makedev(5, 1) is /dev/console.
        let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(5, 1)) };
        assert_eq!(r, 0);
    }
    set_mtime(&root.join("etc/hostname"), 1_600_000_000);
}

/// Everything observable about a tree, keyed by relative path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    rdev: u64,
    content: Option<Vec<u8>>,
    target: Option<PathBuf>,
}

fn snapshot(root: &Path, with_dir_mtime: bool) -> BTreeMap<Vec<u8>, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for de in fs::read_dir(&dir).unwrap() {
            let p = de.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                rel,
                Node {
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    mtime: if md.is_dir() && !with_dir_mtime {
                        0
                    } else {
                        md.mtime()
                    },
                    rdev: md.rdev(),
                    content: md.is_file().then(|| fs::read(&p).unwrap()),
                    target: md.is_symlink().then(|| fs::read_link(&p).unwrap()),
                },
            );
        }
    }
    out
}

fn build(root: &Path, opts: &TreeOptions, c: Compression) -> Vec<u8> {
    let scan = tree::scan(root, opts).unwrap();
    let enc = compress::encoder(c, &EncoderOptions::default(), Vec::new()).unwrap();
    let mut last = 0;
    let enc = tree::write_archive(&scan, enc, &mut |n| {
        assert!(n >= last, "progress is cumulative");
        last = n;
    })
    .unwrap();
    assert_eq!(last, scan.total_bytes());
    enc.finish().unwrap()
}

fn names(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut r = newc::Reader::new(compress::decoder(data));
    while let Some(h) = r.next_entry().unwrap() {
        out.push(h.name);
    }
    out
}

// ---------------------------------------------------------------- tree → archive → unpack

#[test]
fn tree_round_trips_through_every_compression() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let opts = TreeOptions {
        one_file_system: true,
        ..TreeOptions::default()
    };
    let want = snapshot(src.path(), true);
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
    ] {
        let data = build(src.path(), &opts, c);
        let dst = tempfile::tempdir().unwrap();
        let stats = unpack::unpack(&data[..], dst.path(), &UnpackOptions::default()).unwrap();
        assert_eq!(snapshot(dst.path(), true), want, "{c:?}");
        assert_eq!(stats.hardlinks, 1);
        let a = fs::metadata(dst.path().join("usr/bin/tool")).unwrap();
        let b = fs::metadata(dst.path().join("usr/bin/tool-alias")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link kept");
        assert_eq!(a.nlink(), 2);
    }
}

#[test]
fn gnu_cpio_and_gzip_accept_our_output() {
    if Command::new("cpio").arg("--version").output().is_err()
        || Command::new("gzip").arg("--version").output().is_err()
    {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let data = build(src.path(), &TreeOptions::default(), Compression::Gzip);
    // Outside the tree (it would be archived) and not a fixed path (tests
    // run in parallel).
    let gz_dir = tempfile::tempdir().unwrap();
    let gz = gz_dir.path().join("archive.gz");
    fs::write(&gz, &data).unwrap();
    let out = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    fs::remove_file(&gz).unwrap();
    assert!(out.status.success());
    let dst = tempfile::tempdir().unwrap();
    let mut child = Command::new("cpio")
        .args(["-i", "-d", "-m", "--quiet", "--no-absolute-filenames"])
        .current_dir(dst.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(child.wait().unwrap().success());
    let ours = tempfile::tempdir().unwrap();
    unpack::unpack(&data[..], ours.path(), &UnpackOptions::default()).unwrap();
    // GNU cpio does not restore directory mtimes reliably; compare the rest.
    assert_eq!(snapshot(dst.path(), false), snapshot(ours.path(), false));
}

#[test]
fn scan_is_sorted_with_parents_first_and_root_as_dot() {
    let src = tempfile::tempdir().unwrap();
    for d in ["a/b", "a.b", "-x", "z"] {
        fs::create_dir_all(src.path().join(d)).unwrap();
    }
    fs::write(src.path().join("a/b/f"), b"").unwrap();
    let scan = tree::scan(src.path(), &TreeOptions::default()).unwrap();
    let paths: Vec<&[u8]> = scan.entries().iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(
        paths,
        vec![&b"."[..], b"-x", b"a", b"a.b", b"a/b", b"a/b/f", b"z"]
    );
    let inos: Vec<u32> = scan.entries().iter().map(|e| e.ino).collect();
    assert_eq!(inos, (1..=7).collect::<Vec<u32>>());
}

#[test]
fn excludes_follow_warewulf() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let excludes = tree::read_excludes(src.path()).unwrap();
    assert_eq!(
        excludes,
        vec!["/boot/*".to_string(), "/usr/share/doc".to_string()]
    );
    let scan = tree::scan(
        src.path(),
        &TreeOptions {
            excludes,
            ..TreeOptions::default()
        },
    )
    .unwrap();
    let paths: Vec<&[u8]> = scan.entries().iter().map(|e| e.path.as_slice()).collect();
    assert!(paths.contains(&&b"boot"[..]), "the directory itself stays");
    assert!(!paths.contains(&&b"boot/vmlinuz"[..]));
    assert!(!paths.iter().any(|p| p.starts_with(b"usr/share/doc")));
    assert!(paths.contains(&&b"usr/share"[..]));
    assert!(
        tree::read_excludes(&src.path().join("usr"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn hard_links_share_ino_and_store_data_on_last_link() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("a"), b"shared").unwrap();
    fs::hard_link(src.path().join("a"), src.path().join("b")).unwrap();
    fs::hard_link(src.path().join("a"), src.path().join("c")).unwrap();
    fs::write(src.path().join("d"), b"single").unwrap();
    let data = build(src.path(), &TreeOptions::default(), Compression::None);
    let mut r = newc::Reader::new(&data[..]);
    let mut seen = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let body = r.data_to_vec(1 << 20).unwrap();
        seen.push((h.name, h.ino, h.nlink, body));
    }
    let ino = seen[1].1;
    assert_eq!(seen[1], (b"a".to_vec(), ino, 3, vec![]));
    assert_eq!(seen[2], (b"b".to_vec(), ino, 3, vec![]));
    assert_eq!(seen[3], (b"c".to_vec(), ino, 3, b"shared".to_vec()));
    assert_eq!(seen[4].2, 1);
    assert_ne!(seen[4].1, ino);
    // The cpio crate (GNU semantics) agrees on sizes.
    let mut cur = std::io::Cursor::new(data);
    let mut sizes = Vec::new();
    loop {
        let rd = cpio::NewcReader::new(cur).unwrap();
        if rd.entry().is_trailer() {
            break;
        }
        sizes.push(rd.entry().file_size());
        cur = rd.finish().unwrap();
    }
    assert_eq!(sizes, vec![0, 0, 0, 6, 6]);
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("old"), b"").unwrap();
    fs::write(src.path().join("new"), b"").unwrap();
    set_mtime(&src.path().join("old"), 1_000);
    set_mtime(&src.path().join("new"), 2_000_000_000);
    let opts = TreeOptions {
        source_date_epoch: Some(1_700_000_000),
        ..TreeOptions::default()
    };
    let scan = tree::scan(src.path(), &opts).unwrap();
    let m: BTreeMap<&[u8], i64> = scan
        .entries()
        .iter()
        .map(|e| (e.path.as_slice(), e.mtime))
        .collect();
    assert_eq!(m[&b"old"[..]], 1_000);
    assert_eq!(m[&b"new"[..]], 1_700_000_000);
    // Same tree, same options: byte-identical archives.
    assert_eq!(
        build(src.path(), &opts, Compression::Gzip),
        build(src.path(), &opts, Compression::Gzip)
    );
}

#[test]
fn fingerprint_tracks_metadata_and_options() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let opts = TreeOptions::default();
    let fp = || tree::scan(src.path(), &opts).unwrap().fingerprint();
    let first = fp();
    assert_eq!(first, fp(), "a rescan of an unchanged tree is stable");
    let with_excludes = tree::scan(
        src.path(),
        &TreeOptions {
            excludes: vec!["/boot".into()],
            ..TreeOptions::default()
        },
    )
    .unwrap()
    .fingerprint();
    assert_ne!(first, with_excludes);
    fs::set_permissions(
        src.path().join("etc/empty"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let chmodded = fp();
    assert_ne!(first, chmodded);
    // Same size and mtime, new content: caught by ctime.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let p = src.path().join("etc/hostname");
    fs::write(&p, b"node2\n").unwrap();
    set_mtime(&p, 1_600_000_000);
    assert_ne!(chmodded, fp());
}

#[test]
fn too_large_file_is_named() {
    let src = tempfile::tempdir().unwrap();
    fs::create_dir(src.path().join("usr")).unwrap();
    let f = fs::File::create(src.path().join("usr/big.bin")).unwrap();
    if f.set_len(newc::MAX_FILE_SIZE + 1).is_err() {
        return; // no sparse files here
    }
    let err = tree::scan(src.path(), &TreeOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file too large for newc (max 4 GiB - 1): usr/big.bin"
    );
}

#[test]
fn one_file_system_keeps_mount_point_but_not_contents() {
    // /dev/pts is its own file system below /dev on Linux hosts and containers.
    let (Ok(dev), Ok(pts)) = (fs::metadata("/dev"), fs::metadata("/dev/pts")) else {
        return;
    };
    if dev.dev() == pts.dev() || fs::read_dir("/dev/pts").map_or(0, |d| d.count()) == 0 {
        return;
    }
    let scan = |one_file_system| {
        let opts = TreeOptions {
            one_file_system,
            ..TreeOptions::default()
        };
        let s = tree::scan(Path::new("/dev"), &opts).unwrap();
        let paths: Vec<Vec<u8>> = s.entries().iter().map(|e| e.path.clone()).collect();
        paths
    };
    let xdev = scan(true);
    assert!(xdev.contains(&b"pts".to_vec()));
    assert!(!xdev.iter().any(|p| p.starts_with(b"pts/")));
    assert!(scan(false).iter().any(|p| p.starts_with(b"pts/")));
}

// ---------------------------------------------------------------- unpack semantics

fn outside_and_dest() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let top = tempfile::tempdir().unwrap();
    let dest = top.path().join("dest");
    let outside = top.path().join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"original").unwrap();
    (top, dest, outside)
}

fn assert_outside_untouched(top: &Path, outside: &Path) {
    let mut names: Vec<_> = fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec![std::ffi::OsString::from("keep")]);
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"original");
    let mut top_names: Vec<_> = fs::read_dir(top)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top_names.sort();
    assert_eq!(top_names, vec!["dest", "outside"]);
}

#[test]
fn refuses_dotdot_names() {
    let (top, dest, outside) = outside_and_dest();
    for name in ["../evil", "a/../../evil", "../outside/keep"] {
        let data = archive(|w| w.add_file(name, 0o644, b"pwned").unwrap());
        let err = unpack::unpack(&data[..], &dest, &UnpackOptions::default()).unwrap_err();
        assert!(matches!(err, UnpackError::DotDot { .. }), "{name}: {err}");
    }
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn refuses_absolute_names() {
    let (top, dest, outside) = outside_and_dest();
    let abs = outside.join("keep");
    let data = archive(|w| w.add_file(abs.to_str().unwrap(), 0o644, b"pwned").unwrap());
    let err = unpack::unpack(&data[..], &dest, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Absolute { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("absolute entry name refused: {}", abs.display())
    );
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn refuses_writes_through_absolute_symlink() {
    let (top, dest, outside) = outside_and_dest();
    let data = archive(|w| {
        w.add_symlink("a", outside.to_str().unwrap()).unwrap();
        w.add_file("a/passwd", 0o644, b"pwned").unwrap();
    });
    let err = unpack::unpack(&data[..], &dest, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::SymlinkInPath { .. }), "{err}");
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn refuses_writes_through_relative_symlink() {
    let (top, dest, outside) = outside_and_dest();
    let data = archive(|w| {
        w.add_dir("d", 0o755).unwrap();
        w.add_symlink("d/a", "../../outside").unwrap();
        w.add_dir("d/a/sub", 0o755).unwrap();
        w.add_file("d/a/sub/f", 0o644, b"pwned").unwrap();
    });
    let err = unpack::unpack(&data[..], &dest, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::SymlinkInPath { .. }), "{err}");
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn refuses_hard_link_through_symlink() {
    let (top, dest, outside) = outside_and_dest();
    let data = archive(|w| {
        let mut h = Header::file("x", 0o644, 0);
        h.ino = 9;
        h.nlink = 2;
        w.append_bytes(&h, b"").unwrap();
        w.add_symlink("a", outside.to_str().unwrap()).unwrap();
        let mut h = Header::file("a/keep", 0o644, 5);
        h.ino = 9;
        h.nlink = 2;
        w.append_bytes(&h, b"pwned").unwrap();
    });
    let err = unpack::unpack(&data[..], &dest, &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::SymlinkInPath { .. }), "{err}");
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn hard_link_to_a_first_link_replaced_by_a_symlink_does_not_write_through_it() {
    let (top, dest, outside) = outside_and_dest();
    let target = outside.join("keep");
    let data = archive(|w| {
        let mut h = Header::file("x", 0o644, 0);
        h.ino = 9;
        h.nlink = 2;
        w.append_bytes(&h, b"").unwrap();
        w.add_symlink("x", target.to_str().unwrap()).unwrap();
        let mut h = Header::file("y", 0o644, 5);
        h.ino = 9;
        h.nlink = 2;
        w.append_bytes(&h, b"pwned").unwrap();
    });
    // Refusing or writing a fresh inode are both fine; following the link is not.
    let _ = unpack::unpack(&data[..], &dest, &UnpackOptions::default());
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn file_entry_replaces_symlink_instead_of_following_it() {
    let (top, dest, outside) = outside_and_dest();
    let target = outside.join("keep");
    let data = archive(|w| {
        w.add_symlink("f", target.to_str().unwrap()).unwrap();
        w.add_file("f", 0o644, b"inside").unwrap();
        w.add_symlink("d", outside.to_str().unwrap()).unwrap();
        w.add_dir("d", 0o755).unwrap();
        w.add_file("d/new", 0o644, b"inside").unwrap();
    });
    unpack::unpack(&data[..], &dest, &UnpackOptions::default()).unwrap();
    assert_eq!(fs::read(dest.join("f")).unwrap(), b"inside");
    assert!(fs::symlink_metadata(dest.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(dest.join("d/new")).unwrap(), b"inside");
    assert_outside_untouched(top.path(), &outside);
}

#[test]
fn last_entry_wins_across_members() {
    let first = archive(|w| {
        w.add_dir("d", 0o700).unwrap();
        w.add_file("d/keep", 0o644, b"kept").unwrap();
        w.add_file("f", 0o644, b"one").unwrap();
        w.add_symlink("s", "f").unwrap();
        w.add_file("l", 0o644, b"file").unwrap();
        w.add_dir("e", 0o755).unwrap();
    });
    let second = archive(|w| {
        w.add_dir("d", 0o751).unwrap();
        w.add_file("f", 0o600, b"two").unwrap();
        w.add_file("s", 0o644, b"no longer a link").unwrap();
        w.add_symlink("l", "f").unwrap();
        w.add_file("e", 0o644, b"empty dir replaced").unwrap();
    });
    let mut stream = compress_with(Compression::Gzip, &first);
    stream.extend_from_slice(&[0; 512]);
    stream.extend(compress_with(Compression::Zstd, &second));
    let dst = tempfile::tempdir().unwrap();
    let stats = unpack::unpack(&stream[..], dst.path(), &UnpackOptions::default()).unwrap();
    assert_eq!(stats.archives, 2);
    let d = dst.path();
    assert_eq!(fs::metadata(d.join("d")).unwrap().mode() & 0o7777, 0o751);
    assert_eq!(fs::read(d.join("d/keep")).unwrap(), b"kept");
    assert_eq!(fs::read(d.join("f")).unwrap(), b"two");
    assert_eq!(fs::metadata(d.join("f")).unwrap().mode() & 0o7777, 0o600);
    assert!(fs::symlink_metadata(d.join("s")).unwrap().is_file());
    assert_eq!(fs::read_link(d.join("l")).unwrap(), Path::new("f"));
    assert_eq!(fs::read(d.join("e")).unwrap(), b"empty dir replaced");
}

#[test]
fn non_empty_directory_is_not_replaced_by_a_file() {
    let data = archive(|w| {
        w.add_dir("d", 0o755).unwrap();
        w.add_file("d/x", 0o644, b"").unwrap();
        w.add_file("d", 0o644, b"file").unwrap();
    });
    let dst = tempfile::tempdir().unwrap();
    let err = unpack::unpack(&data[..], dst.path(), &UnpackOptions::default()).unwrap_err();
    assert!(matches!(err, UnpackError::NonEmptyDir { .. }), "{err}");
}

#[test]
fn dot_prefixed_names_implicit_parents_and_devices() {
    let data = archive(|w| {
        w.add_dir(".", 0o755).unwrap();
        w.add_file("./deep/er/file", 0o640, b"x").unwrap();
        w.add_node("dev/null", Kind::CharDevice, 0o666, 1, 3)
            .unwrap();
        w.add_node("run/fifo", Kind::Fifo, 0o600, 0, 0).unwrap();
        w.add_node("run/sock", Kind::Socket, 0o600, 0, 0).unwrap();
    });
    let dst = tempfile::tempdir().unwrap();
    let opts = UnpackOptions {
        skip_unprivileged_nodes: true,
        ..UnpackOptions::default()
    };
    unpack::unpack(&data[..], dst.path(), &opts).unwrap();
    let d = dst.path();
    assert_eq!(fs::read(d.join("deep/er/file")).unwrap(), b"x");
    assert_eq!(fs::metadata(d).unwrap().mode() & 0o7777, 0o755);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(d.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        fs::symlink_metadata(d.join("run/sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
    if is_root() {
        let md = fs::symlink_metadata(d.join("dev/null")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), libc::makedev(1, 3));
    }
}

#[test]
fn empty_or_zero_stream_unpacks_nothing() {
    let dst = tempfile::tempdir().unwrap();
    for data in [&[][..], &[0u8; 512][..]] {
        let stats = unpack::unpack(data, dst.path(), &UnpackOptions::default()).unwrap();
        assert_eq!(stats, unpack::UnpackStats::default());
    }
    assert_eq!(fs::read_dir(dst.path()).unwrap().count(), 0);
}

#[test]
fn truncated_stream_is_an_error() {
    let src = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let data = build(src.path(), &TreeOptions::default(), Compression::Zstd);
    let dst = tempfile::tempdir().unwrap();
    assert!(
        unpack::unpack(
            &data[..data.len() / 2],
            dst.path(),
            &UnpackOptions::default()
        )
        .is_err()
    );
}

#[test]
fn names_of_a_built_archive_start_with_dot() {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"").unwrap();
    let data = build(src.path(), &TreeOptions::default(), Compression::Zstd);
    assert_eq!(names(&data), vec![b".".to_vec(), b"f".to_vec()]);
}

// ---------------------------------------------------------------- properties

fn arb_name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::collection::vec(
            prop::num::u8::ANY.prop_filter("no separators", |b| *b != 0 && *b != b'/'),
            1..6,
        )
        .prop_filter("not dot names", |c| c != b"." && c != b".."),
        1..4,
    )
    .prop_map(|comps| comps.join(&b'/'))
}

fn arb_header() -> impl Strategy<Value = (Header, Vec<u8>)> {
    (
        arb_name(),
        prop_oneof![
            Just(Kind::File),
            Just(Kind::Dir),
            Just(Kind::Symlink),
            Just(Kind::CharDevice),
            Just(Kind::BlockDevice),
            Just(Kind::Fifo),
            Just(Kind::Socket)
        ],
        0u32..0o7777,
        any::<(u32, u32, u32, u32, u32, u32)>(),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(name, kind, perm, (uid, gid, mtime, ino, nlink, rdev), data)| {
                let data = if matches!(kind, Kind::File | Kind::Symlink) {
                    data
                } else {
                    Vec::new()
                };
                let h = Header {
                    uid,
                    gid,
                    mtime,
                    ino,
                    nlink,
                    rdev_major: rdev >> 20,
                    rdev_minor: rdev & 0xfffff,
                    size: data.len() as u64,
                    ..Header::new(name, kind, perm)
                };
                (h, data)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn newc_entries_round_trip(entries in prop::collection::vec(arb_header(), 0..20)) {
        let data = archive(|w| for (h, d) in &entries { w.append_bytes(h, d).unwrap() });
        prop_assert_eq!(data.len() % 4, 0);
        let mut r = newc::Reader::new(&data[..]);
        for (h, d) in &entries {
            let got = r.next_entry().unwrap().unwrap();
            prop_assert_eq!(&got, h);
            prop_assert_eq!(&r.data_to_vec(1 << 20).unwrap(), d);
        }
        prop_assert!(r.next_entry().unwrap().is_none());
    }

    #[test]
    fn random_trees_round_trip(
        files in prop::collection::btree_map(
            prop::collection::vec("[a-c]{1,2}", 1..4).prop_map(|c| c.join("/")),
            (prop::collection::vec(any::<u8>(), 0..2000), 0o400u32..0o777, 0u64..2_000_000_000),
            1..12,
        ),
        c in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Zstd)],
    ) {
        let src = tempfile::tempdir().unwrap();
        for (path, (content, perm, mtime)) in &files {
            let p = src.path().join(path);
            // A path may already exist as a directory of an earlier, longer path.
            if fs::create_dir_all(p.parent().unwrap()).is_err() || p.is_dir() {
                continue;
            }
            fs::write(&p, content).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*perm)).unwrap();
            set_mtime(&p, *mtime);
        }
        let data = build(src.path(), &TreeOptions::default(), c);
        let dst = tempfile::tempdir().unwrap();
        unpack::unpack(&data[..], dst.path(), &UnpackOptions::default()).unwrap();
        prop_assert_eq!(snapshot(dst.path(), true), snapshot(src.path(), true));
    }

    #[test]
    fn last_entry_wins_over_concatenated_members(
        writes in prop::collection::vec(
            (0usize..4, prop::collection::vec(any::<u8>(), 0..64), any::<bool>()),
            1..24,
        ),
        splits in prop::collection::vec((1usize..6, 0usize..4, 0usize..9), 1..5),
    ) {
        let names = ["a", "b", "sub/c", "sub/d"];
        // Cut the writes into members, each with its own compression and padding.
        let mut stream = Vec::new();
        let mut expect: BTreeMap<&str, (bool, Vec<u8>)> = BTreeMap::new();
        let mut rest = &writes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let (take, comp, pad) = splits[i % splits.len()];
            i += 1;
            let (now, later) = rest.split_at(take.min(rest.len()));
            rest = later;
            let member = archive(|w| {
                for (n, content, as_link) in now {
                    if *as_link {
                        let t: String = content.iter().map(|b| char::from(b'a' + b % 26)).collect();
                        let t = if t.is_empty() { "x".to_string() } else { t };
                        w.add_symlink(names[*n], &t).unwrap();
                        expect.insert(names[*n], (true, t.into_bytes()));
                    } else {
                        w.add_file(names[*n], 0o644, content).unwrap();
                        expect.insert(names[*n], (false, content.clone()));
                    }
                }
            });
            let c = [Compression::None, Compression::Gzip, Compression::Zstd, Compression::Xz][comp];
            stream.extend(compress_with(c, &member));
            stream.extend(std::iter::repeat_n(0u8, pad * 4));
        }
        let dst = tempfile::tempdir().unwrap();
        unpack::unpack(&stream[..], dst.path(), &UnpackOptions::default()).unwrap();
        for (n, (is_link, content)) in expect {
            let p = dst.path().join(n);
            if is_link {
                let target = fs::read_link(&p).unwrap();
                prop_assert_eq!(target.as_os_str().as_bytes(), &content[..]);
            } else {
                prop_assert!(fs::symlink_metadata(&p).unwrap().is_file());
                prop_assert_eq!(fs::read(&p).unwrap(), content);
            }
        }
    }

    #[test]
    fn reader_never_panics_on_garbage(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut r = newc::Reader::new(compress::decoder(&data[..]));
        let mut buf = Vec::new();
        while let Ok(Some(_)) = r.next_entry() {
            if r.data().read_to_end(&mut buf).is_err() {
                break;
            }
        }
    }
}
