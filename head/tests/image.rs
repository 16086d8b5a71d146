//! `wwctl image build` / `image list` end to end, in a temp site.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// A site living entirely in a temp dir.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let conf = format!(
            "paths:\n  sysconfdir: {r}/etc\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  localstatedir: {r}/var\n  cachedir: {r}/cache\n",
            r = root.display()
        );
        fs::create_dir_all(root.join("etc/warewulf")).unwrap();
        fs::write(root.join("etc/warewulf/warewulf.conf"), conf).unwrap();
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn conf(&self) -> PathBuf {
        self.root().join("etc/warewulf/warewulf.conf")
    }

    fn rootfs(&self, image: &str) -> PathBuf {
        self.root().join("chroots").join(image).join("rootfs")
    }

    fn artifact(&self, file: &str) -> PathBuf {
        self.root().join("provision/images").join(file)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wwctl"));
        cmd.arg("--warewulfconf")
            .arg(self.conf())
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH");
        cmd
    }

    fn wwctl(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.wwctl(args);
        assert!(
            out.status.success(),
            "wwctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A small image with two kernels, a symlink and excluded folders.
    fn make_image(&self, name: &str) -> PathBuf {
        let r = self.rootfs(name);
        for d in [
            "bin",
            "etc/warewulf",
            "boot",
            "usr/share/doc/pkg",
            "var/cache/apt",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("bin/sh"), b"#!not really a shell\n").unwrap();
        fs::set_permissions(r.join("bin/sh"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(r.join("etc/hostname"), b"template\n").unwrap();
        fs::write(r.join("boot/vmlinuz-6.1.0-9-amd64"), b"old kernel").unwrap();
        fs::write(r.join("boot/vmlinuz-6.1.0-28-amd64"), b"new kernel").unwrap();
        fs::write(r.join("usr/share/doc/pkg/README"), b"docs").unwrap();
        fs::write(r.join("var/cache/apt/pkgcache.bin"), vec![7u8; 4096]).unwrap();
        symlink("/bin/sh", r.join("bin/bash")).unwrap();
        fs::write(
            r.join("etc/warewulf/excludes"),
            "/usr/share/doc/*\n/var/cache/apt\n",
        )
        .unwrap();
        r
    }
}

fn manifest(site: &Site, name: &str) -> serde_json::Value {
    let text = fs::read(site.artifact(&format!("{name}.manifest.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

fn unpack(archive: &Path) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let file = fs::File::open(archive).unwrap();
    initramfs::unpack::unpack(
        file,
        out.path(),
        &initramfs::unpack::UnpackOptions::default(),
    )
    .unwrap();
    out
}

#[test]
fn builds_gzip_and_zstd_artifacts_that_unpack_to_the_tree() {
    let site = Site::new();
    site.make_image("debian");
    let out = site.ok(&["image", "build", "debian", "--compress", "gz,zst"]);
    assert!(out.contains("debian: built"), "{out}");

    let m = manifest(&site, "debian");
    assert_eq!(m["kernel_version"], "6.1.0-28-amd64");
    assert_eq!(m["kernel_path"], "/boot/vmlinuz-6.1.0-28-amd64");
    let artifacts = m["artifacts"].as_array().unwrap();
    assert_eq!(artifacts.len(), 2);
    for a in artifacts {
        let path = site.artifact(a["file"].as_str().unwrap());
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, a["size"].as_u64().unwrap());
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            a["sha256"].as_str().unwrap()
        );

        let tree = unpack(&path);
        let t = tree.path();
        assert_eq!(fs::read(t.join("etc/hostname")).unwrap(), b"template\n");
        assert_eq!(
            fs::read_link(t.join("bin/bash")).unwrap(),
            Path::new("/bin/sh")
        );
        let mode = fs::metadata(t.join("bin/sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
        // Excludes: globbed contents and a whole directory are left out.
        assert!(t.join("usr/share/doc").is_dir());
        assert!(!t.join("usr/share/doc/pkg").exists());
        assert!(!t.join("var/cache/apt").exists());
    }
    assert_eq!(
        &fs::read(site.artifact("debian.img.gz")).unwrap()[..2],
        &[0x1f, 0x8b]
    );
    assert_eq!(
        &fs::read(site.artifact("debian.img.zst")).unwrap()[..4],
        &[0x28, 0xb5, 0x2f, 0xfd]
    );
    // Two artifacts and the manifest; no temp files left behind.
    let names: Vec<String> = fs::read_dir(site.root().join("provision/images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn unchanged_tree_is_skipped_and_a_change_rebuilds() {
    let site = Site::new();
    let r = site.make_image("img");
    site.ok(&["image", "build", "img"]);
    let first = manifest(&site, "img");

    let out = site.ok(&["image", "build", "img"]);
    assert!(out.contains("img: up to date"), "{out}");
    assert_eq!(manifest(&site, "img"), first);

    // Same size, new content: the mtime tells.
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(r.join("etc/hostname"), b"changed!\n").unwrap();
    let out = site.ok(&["image", "build", "img"]);
    assert!(out.contains("img: built"), "{out}");
    assert_ne!(manifest(&site, "img")["fingerprint"], first["fingerprint"]);

    let out = site.ok(&["image", "build", "img", "--force"]);
    assert!(out.contains("img: built"), "{out}");
}

#[test]
fn another_compression_is_added_beside_the_first() {
    let site = Site::new();
    site.make_image("img");
    site.ok(&["image", "build", "img"]);
    let out = site.ok(&["image", "build", "img", "--compress", "zst"]);
    assert!(out.contains("img: built"), "{out}");
    let m = manifest(&site, "img");
    let kinds: Vec<&str> = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["compression"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["gz", "zst"]);
    assert!(site.artifact("img.img.gz").exists());
}

#[test]
fn stale_artifacts_of_an_older_tree_are_removed() {
    let site = Site::new();
    let r = site.make_image("img");
    site.ok(&["image", "build", "img", "--compress", "gz,zst"]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(r.join("etc/motd"), b"new file\n").unwrap();
    site.ok(&["image", "build", "img", "--compress", "zst"]);
    assert!(
        !site.artifact("img.img.gz").exists(),
        "a gz of the old tree must not be served"
    );
    let kinds = manifest(&site, "img")["artifacts"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(kinds, 1);
}

#[test]
fn reproducible_with_source_date_epoch() {
    let site = Site::new();
    site.make_image("img");
    let build = || {
        let out = site
            .command(&["image", "build", "img", "--force", "--compress", "zst"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::read(site.artifact("img.img.zst")).unwrap()
    };
    let a = build();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let hostname = site.rootfs("img").join("etc/hostname");
    fs::write(&hostname, fs::read(&hostname).unwrap()).unwrap();
    let b = build();
    assert_eq!(
        a, b,
        "same tree and SOURCE_DATE_EPOCH must give identical archives"
    );
}

#[test]
fn all_builds_every_image_and_list_shows_them() {
    let site = Site::new();
    site.make_image("a");
    site.make_image("b");
    fs::create_dir_all(site.root().join("chroots/not-an-image")).unwrap();
    let before = site.ok(&["image", "list"]);
    assert!(before.contains("not built"), "{before}");

    let out = site.ok(&["image", "build", "--all"]);
    assert!(
        out.contains("a: built") && out.contains("b: built"),
        "{out}"
    );

    let table = site.ok(&["image", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IMAGE NAME"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].starts_with('a') && lines[1].contains("6.1.0-28-amd64"),
        "{table}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&site.ok(&["image", "list", "--json"])).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(json[0]["built"]["kernel_version"], "6.1.0-28-amd64");

    let yaml = site.ok(&["container", "list", "--yaml"]);
    assert!(yaml.contains("name: a"), "{yaml}");
}

#[test]
fn missing_image_and_bad_input_fail_clearly() {
    let site = Site::new();
    let out = site.wwctl(&["image", "build", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image nope not found"), "{err}");

    let out = site.wwctl(&["image", "build", "../etc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid image name"));

    let out = site.wwctl(&["image", "build", "x", "--compress", "lz4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported image compression"));
}
