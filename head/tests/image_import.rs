//! `wwctl image import` from every source kind, in a temp site: a real
//! registry (Debian's `docker-registry`, in a network namespace of the
//! test's own), OCI layouts and archives made by `skopeo`, tarballs, chroot
//! directories, and malicious archives that must be refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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

    fn rootfs(&self, image: &str) -> PathBuf {
        self.root().join("chroots").join(image).join("rootfs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wwctl"));
        cmd.arg("--warewulfconf")
            .arg(self.root().join("etc/warewulf/warewulf.conf"))
            .args(args);
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

    fn fails(&self, args: &[&str]) -> String {
        let out = self.wwctl(args);
        assert!(!out.status.success(), "wwctl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// A tar built entry by entry.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Self {
        Self(tar::Builder::new(Vec::new()))
    }
    fn dir(mut self, path: &str) -> Self {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }
    fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }
    fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }
    fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }
    fn node(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = header(kind, 0o600, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, &[][..]).unwrap();
        self
    }
    fn xattr(mut self, key: &str, value: &[u8]) -> Self {
        let k = format!("SCHILY.xattr.{key}");
        self.0.append_pax_extensions([(k.as_str(), value)]).unwrap();
        self
    }
    /// An entry whose name is written raw, bypassing the builder's checks.
    fn raw(mut self, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) -> Self {
        let mut h = header(kind, 0o644, data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// The busybox tree every test image starts from.
fn base_layer() -> Vec<u8> {
    let busybox = fs::read("/usr/bin/busybox").expect("busybox-static is installed");
    Tar::new()
        .dir("bin")
        .file("bin/busybox", &busybox, 0o755)
        .symlink("bin/sh", "busybox")
        .hardlink("bin/cat", "bin/busybox")
        .dir("etc")
        .file("etc/motd", b"one\n", 0o644)
        .file("etc/removed", b"gone\n", 0o644)
        .dir("opt/dir")
        .file("opt/dir/a", b"a\n", 0o644)
        .file("opt/dir/b", b"b\n", 0o644)
        .xattr("user.ironwulf", b"kept")
        .file("opt/keep", b"keep\n", 0o640)
        .dir("dev")
        .node("dev/console", tar::EntryType::Char, 5, 1)
        .node("dev/fifo", tar::EntryType::Fifo, 0, 0)
        .finish()
}

/// Layer 2: a whiteout, an opaque directory (marker after a new entry in
/// it, as tar order allows), a changed file.
fn second_layer() -> Vec<u8> {
    Tar::new()
        .file("etc/.wh.removed", b"", 0o644)
        .file("opt/dir/c", b"c\n", 0o644)
        .file("opt/dir/.wh..wh..opq", b"", 0o644)
        .file("etc/motd", b"two\n", 0o644)
        .finish()
}

/// Writes an OCI image layout with the two layers (the first plain, the
/// second gzip) tagged `v1`.
fn write_layout(dir: &Path) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let l1 = base_layer();
    let l2 = second_layer();
    let (d1, s1) = put(&l1);
    let (d2, s2) = put(&gzip(&l2));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&l1), sha256(&l2)]},
    });
    let (dc, sc) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d1, "size": s1},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d2, "size": s2},
        ],
    });
    let (dm, sm) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": dm, "size": sm,
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn get_xattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid strings and buffer.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

/// Checks the result of applying both layers.
fn assert_two_layers(rootfs: &Path) {
    assert_eq!(fs::read(rootfs.join("etc/motd")).unwrap(), b"two\n");
    assert!(!rootfs.join("etc/removed").exists(), "whiteout not applied");
    let mut names: Vec<String> = fs::read_dir(rootfs.join("opt/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["c"],
        "opaque directory keeps only the new layer's entries"
    );
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let bb = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    let cat = fs::metadata(rootfs.join("bin/cat")).unwrap();
    assert_eq!(bb.ino(), cat.ino(), "hard link kept");
    assert_eq!(bb.mode() & 0o7777, 0o755);
    let console = fs::symlink_metadata(rootfs.join("dev/console")).unwrap();
    assert!(console.file_type().is_char_device());
    assert_eq!(console.rdev(), libc::makedev(5, 1));
    assert!(
        fs::symlink_metadata(rootfs.join("dev/fifo"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        get_xattr(&rootfs.join("opt/keep"), "user.ironwulf").as_deref(),
        Some(&b"kept"[..])
    );
    assert_eq!(
        fs::metadata(rootfs.join("opt/keep")).unwrap().mode() & 0o777,
        0o640
    );
    assert_eq!(
        fs::metadata(rootfs.join("etc/motd")).unwrap().mtime(),
        1_700_000_000
    );
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn skopeo(args: &[&str]) {
    run(Command::new("skopeo").arg("--insecure-policy").args(args));
}

#[test]
fn oci_layout_dir_and_archives() {
    let site = Site::new();
    let layout = site.root().join("layout");
    write_layout(&layout);

    let out = site.ok(&[
        "image",
        "import",
        &format!("oci:{}", layout.display()),
        "from-layout",
    ]);
    assert!(out.contains("2 layer(s)"), "{out}");
    assert_two_layers(&site.rootfs("from-layout"));
    // A bare directory with oci-layout is recognised too, and --force replaces.
    site.ok(&[
        "image",
        "import",
        "--force",
        layout.to_str().unwrap(),
        "from-layout",
    ]);
    assert_two_layers(&site.rootfs("from-layout"));

    // Archives written by skopeo, the way users make them.
    let oci_tar = site.root().join("img.oci.tar");
    let docker_tar = site.root().join("img.docker.tar");
    let src = format!("oci:{}:v1", layout.display());
    skopeo(&[
        "copy",
        &src,
        &format!("oci-archive:{}:v1", oci_tar.display()),
    ]);
    skopeo(&[
        "copy",
        &src,
        &format!("docker-archive:{}:ironwulf/test:v1", docker_tar.display()),
    ]);
    site.ok(&[
        "image",
        "import",
        oci_tar.to_str().unwrap(),
        "from-oci-archive",
    ]);
    assert_two_layers(&site.rootfs("from-oci-archive"));
    site.ok(&[
        "image",
        "import",
        docker_tar.to_str().unwrap(),
        "from-docker-archive",
    ]);
    assert_two_layers(&site.rootfs("from-docker-archive"));
    // The same, compressed as `docker save | gzip` leaves it.
    let gz = site.root().join("img.docker.tar.gz");
    fs::write(&gz, gzip(&fs::read(&docker_tar).unwrap())).unwrap();
    site.ok(&[
        "image",
        "import",
        &format!("docker-archive:{}", gz.display()),
        "from-gz",
    ]);
    assert_two_layers(&site.rootfs("from-gz"));

    let show = site.ok(&["image", "show", "from-docker-archive", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert!(
        v["source"]["source"]
            .as_str()
            .unwrap()
            .starts_with("docker-archive")
    );
    let list = site.ok(&["image", "list", "--yaml"]);
    assert!(list.contains("name: from-gz"), "{list}");
}

#[test]
fn corrupt_blob_is_refused() {
    let site = Site::new();
    let layout = site.root().join("layout");
    write_layout(&layout);
    // Flip one byte of the uncompressed layer (the largest blob).
    let blob = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut data = fs::read(&blob).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0xff;
    fs::write(&blob, data).unwrap();
    let err = site.fails(&[
        "image",
        "import",
        &format!("oci:{}", layout.display()),
        "bad",
    ]);
    assert!(err.contains("digest mismatch"), "{err}");
    assert!(!site.rootfs("bad").exists());
    assert!(
        fs::read_dir(site.root().join("chroots")).unwrap().all(|e| {
            let n = e.unwrap().file_name();
            !n.to_string_lossy().contains("import")
        }),
        "staging directory left behind"
    );
}

#[test]
fn tarballs_plain_gzip_zstd() {
    let site = Site::new();
    let tar = base_layer();
    let plain = site.root().join("root.tar");
    fs::write(&plain, &tar).unwrap();
    let gz = site.root().join("root.tar.gz");
    fs::write(&gz, gzip(&tar)).unwrap();
    let zst = site.root().join("root.tar.zst");
    fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    for (path, name) in [(&plain, "t-plain"), (&gz, "t-gz"), (&zst, "t-zst")] {
        site.ok(&["image", "import", path.to_str().unwrap(), name]);
        let r = site.rootfs(name);
        assert_eq!(fs::read(r.join("etc/motd")).unwrap(), b"one\n");
        assert_eq!(fs::read(r.join("opt/dir/b")).unwrap(), b"b\n");
    }
    // Default name from the file name.
    site.ok(&["image", "import", zst.to_str().unwrap()]);
    assert!(site.rootfs("root").join("bin/busybox").is_file());
    // An existing image needs --force or --update.
    let err = site.fails(&["image", "import", plain.to_str().unwrap(), "t-plain"]);
    assert!(err.contains("already exists"), "{err}");
    // --update overlays a layer onto the existing tree.
    let extra = site.root().join("extra.tar");
    fs::write(&extra, Tar::new().file("etc/extra", b"x\n", 0o644).finish()).unwrap();
    site.ok(&[
        "image",
        "import",
        "--update",
        extra.to_str().unwrap(),
        "t-plain",
    ]);
    assert!(site.rootfs("t-plain").join("etc/extra").is_file());
    assert!(site.rootfs("t-plain").join("bin/busybox").is_file());
    // --force replaces it.
    site.ok(&[
        "image",
        "import",
        "--force",
        extra.to_str().unwrap(),
        "t-plain",
    ]);
    assert!(!site.rootfs("t-plain").join("bin/busybox").exists());
}

#[test]
fn chroot_directory_needs_bin_sh() {
    let site = Site::new();
    let src = site.root().join("tree");
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hostname"), b"x\n").unwrap();
    let err = site.fails(&["image", "import", src.to_str().unwrap(), "tree"]);
    assert!(err.contains("no /bin/sh"), "{err}");
    fs::create_dir_all(src.join("usr/bin")).unwrap();
    fs::copy("/usr/bin/busybox", src.join("usr/bin/sh")).unwrap();
    // Merged /usr with an absolute link, resolved inside the tree.
    std::os::unix::fs::symlink("/usr/bin", src.join("bin")).unwrap();
    site.ok(&["image", "import", src.to_str().unwrap(), "tree", "--build"]);
    assert!(site.rootfs("tree").join("usr/bin/sh").is_file());
    assert!(site.root().join("provision/images/tree.img.gz").is_file());
}

#[test]
fn malicious_archives_are_refused() {
    let site = Site::new();
    let outside = site.root().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let abs_target = outside.join("absolute");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            Tar::new()
                .file("etc/ok", b"ok", 0o644)
                .raw(
                    b"../../../../outside/dotdot",
                    tar::EntryType::Regular,
                    b"",
                    b"pwned",
                )
                .finish(),
            "'..' refused",
        ),
        (
            "absolute",
            Tar::new()
                .raw(
                    abs_target.as_os_str().as_encoded_bytes(),
                    tar::EntryType::Regular,
                    b"",
                    b"pwned",
                )
                .finish(),
            "absolute entry name refused",
        ),
        (
            "symlink",
            Tar::new()
                .symlink("etc", outside.to_str().unwrap())
                .file("etc/through-link", b"pwned", 0o644)
                .finish(),
            "goes through a symlink",
        ),
        (
            "relsymlink",
            Tar::new()
                .symlink("up", "../../../../..")
                .raw(b"up/outside/rel", tar::EntryType::Regular, b"", b"pwned")
                .finish(),
            "goes through a symlink",
        ),
        (
            "hardlink",
            Tar::new()
                .raw(
                    b"etc/passwd",
                    tar::EntryType::Link,
                    b"../../../outside/victim",
                    b"",
                )
                .finish(),
            "'..' refused",
        ),
    ];
    fs::write(outside.join("victim"), b"victim").unwrap();
    for (name, data, want) in cases {
        let path = site.root().join(format!("{name}.tar"));
        fs::write(&path, &data).unwrap();
        let err = site.fails(&["image", "import", path.to_str().unwrap(), name]);
        assert!(err.contains(want), "{name}: {err}");
        assert!(!site.rootfs(name).exists(), "{name}: image created");
        // As an image layer too (whiteout handling on).
        let layer = site.root().join(format!("{name}-layout"));
        write_single_layer_layout(&layer, &data);
        let err = site.fails(&["image", "import", &format!("oci:{}", layer.display()), name]);
        assert!(err.contains(want), "{name} as a layer: {err}");
    }
    let mut left: Vec<String> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["victim"], "something was written outside the rootfs");
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
    // A whiteout that tries to climb out is refused as well.
    let layer = site.root().join("wh-layout");
    write_single_layer_layout(
        &layer,
        &Tar::new()
            .raw(b"etc/.wh...", tar::EntryType::Regular, b"", b"")
            .finish(),
    );
    let err = site.fails(&["image", "import", &format!("oci:{}", layer.display()), "wh"]);
    assert!(err.contains("refused"), "{err}");
}

fn write_single_layer_layout(dir: &Path, layer: &[u8]) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    let put = |data: &[u8]| {
        let d = sha256(data);
        fs::write(dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let (dl, sl) = put(layer);
    let (dc, sc) = put(br#"{"architecture":"amd64","os":"linux"}"#);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dl, "size": sl}],
    });
    let (dm, sm) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dm, "size": sm}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A network namespace of this test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "iwimg{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self(name);
        run(Command::new("ip").args(["-n", &ns.0, "link", "set", "lo", "up"]));
        ns
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// `docker-registry` on the namespace's loopback, killed by PID on drop.
struct Registry {
    child: Child,
    port: u16,
}

impl Registry {
    fn start(ns: &Netns, dir: &Path) -> Self {
        Self::start_with(ns, dir, "")
    }

    /// With `auth`, a YAML `auth:` section appended to the config.
    fn start_with(ns: &Netns, dir: &Path, auth: &str) -> Self {
        // The namespace is ours alone, so any port is free in it; vary it
        // anyway so that parallel runs never share an address.
        let port = 20000 + (std::process::id() % 20000) as u16;
        let config = dir.join("registry.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let child = ns
            .command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is installed");
        let reg = Self { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let code = ns
                .command("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}/v2/"))
                .output()
                .unwrap()
                .stdout;
            let ok = code == b"200" || code == b"401";
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        reg
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn registry_pull_multi_layer() {
    let site = Site::new();
    let layout = site.root().join("layout");
    write_layout(&layout);
    let ns = Netns::new();
    let reg = Registry::start(&ns, site.root());
    let host = format!("127.0.0.1:{}", reg.port);
    run(ns.command("skopeo").args([
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/ironwulf/multi:v1"),
    ]));

    let src = format!("docker://{host}/ironwulf/multi:v1");
    let wwctl = |args: &[&str]| {
        let mut c = ns.command(env!("CARGO_BIN_EXE_wwctl"));
        c.arg("--warewulfconf")
            .arg(site.root().join("etc/warewulf/warewulf.conf"))
            .args(args);
        c.output().unwrap()
    };
    // HTTPS against a plain-HTTP registry fails with a clear error.
    let out = wwctl(&["image", "import", &src, "multi"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pulling docker://"));

    let out = wwctl(&["image", "import", "--nohttps", &src, "multi"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_two_layers(&site.rootfs("multi"));
    // Blobs are cached by digest.
    let cache = site.root().join("cache/warewulf/blobs/sha256");
    let cached = fs::read_dir(&cache).unwrap().count();
    assert_eq!(cached, 2, "both layers cached");
    for e in fs::read_dir(&cache).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256(&fs::read(&p).unwrap()), format!("sha256:{name}"));
    }
    // A failed re-import (the registry is gone) leaves the image as it was.
    drop(reg);
    let out = wwctl(&["image", "import", "--nohttps", "--force", &src, "multi"]);
    assert!(
        !out.status.success(),
        "the manifest still comes from the registry"
    );
    let show = site.ok(&["image", "show", "multi", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert!(
        v["source"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_two_layers(&site.rootfs("multi"));
}

#[test]
fn kernel_override_serves_imported_kernel_and_kmods() {
    const MAC1: &str = "aa:bb:cc:dd:ee:01";
    const MAC2: &str = "aa:bb:cc:dd:ee:02";
    let site = Site::new();
    let r = site.root();
    let port = 8000 + (std::process::id() % 20000) as u16;
    fs::write(
        r.join("etc/warewulf/warewulf.conf"),
        format!(
            "ipaddr: 127.0.0.1\nwarewulf:\n  port: {port}\n  secure: false\ndhcp:\n  enabled: false\n\
             tftp:\n  enabled: false\npaths:\n  sysconfdir: {r}/etc\n  localstatedir: {r}/var\n  \
             wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  \
             cachedir: {r}/cache\n",
            r = r.display()
        ),
    )
    .unwrap();
    let rootfs = site.rootfs("img");
    fs::create_dir_all(rootfs.join("boot")).unwrap();
    fs::write(rootfs.join("boot/vmlinuz-6.1.0-img"), b"image kernel").unwrap();
    site.ok(&["image", "build", "img"]);
    // Another kernel, from a tree that is not the node's image.
    let ktree = r.join("ktree");
    fs::create_dir_all(ktree.join("boot")).unwrap();
    fs::write(ktree.join("boot/vmlinuz-6.9.9-other"), b"other kernel").unwrap();
    fs::create_dir_all(ktree.join("lib/modules/6.9.9-other/kernel")).unwrap();
    fs::write(ktree.join("lib/modules/6.9.9-other/kernel/x.ko"), b"module").unwrap();
    let out = site.ok(&[
        "kernel",
        "import",
        "6.9.9-other",
        "--root",
        ktree.to_str().unwrap(),
    ]);
    assert!(out.contains("imported"), "{out}");
    let list = site.ok(&["kernel", "list", "--json"]);
    assert!(list.contains("\"version\": \"6.9.9-other\""), "{list}");
    fs::write(
        r.join("etc/warewulf/nodes.conf"),
        format!(
            "nodeprofiles: {{}}\nnodes:\n  n1:\n    image name: img\n    kernel:\n      version: 6.9.9-other\n    \
             network devices:\n      default:\n        hwaddr: {MAC1}\n  n2:\n    image name: img\n    \
             network devices:\n      default:\n        hwaddr: {MAC2}\n"
        ),
    )
    .unwrap();

    let ns = Netns::new();
    let mut server = ns
        .command(env!("CARGO_BIN_EXE_wwctl"))
        .arg("--warewulfconf")
        .arg(r.join("etc/warewulf/warewulf.conf"))
        .arg("server")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fetch = |path: &str| -> (u16, Vec<u8>) {
        let body = r.join("body");
        let out = ns
            .command("curl")
            .args(["-s", "-o", body.to_str().unwrap(), "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
        (code, fs::read(&body).unwrap_or_default())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetch("/status").0 != 200 {
        assert!(Instant::now() < deadline, "wwctl server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = std::panic::catch_unwind(|| {
        assert_eq!(
            fetch(&format!("/kernel/{MAC1}")),
            (200, b"other kernel".to_vec())
        );
        let kmods = fs::read(r.join("provision/kernel/6.9.9-other/kmods.img.gz")).unwrap();
        assert_eq!(fetch(&format!("/kmods/{MAC1}")), (200, kmods));
        assert_eq!(fetch(&format!("/provision/{MAC1}?stage=kmods")).0, 200);
        // A node booting its image's own kernel has no separate modules.
        assert_eq!(
            fetch(&format!("/kernel/{MAC2}")),
            (200, b"image kernel".to_vec())
        );
        assert_eq!(fetch(&format!("/kmods/{MAC2}")).0, 404);
        let (code, ipxe) = fetch(&format!("/ipxe/{MAC1}"));
        let ipxe = String::from_utf8_lossy(&ipxe);
        assert_eq!(code, 200, "{ipxe}");
        assert!(ipxe.contains(&format!("/kmods/{MAC1}")), "{ipxe}");
        let image_at = ipxe.find("initrd=image").unwrap();
        let kmods_at = ipxe.find("${kmods}").unwrap();
        let system_at = ipxe.find("initrd=system").unwrap();
        assert!(
            image_at < kmods_at && kmods_at < system_at,
            "layer order: {ipxe}"
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// A minimal HTTP forward proxy on the namespace's loopback (a thread that
/// joins the namespace): one request per connection, recorded.
fn start_proxy(ns: &Netns) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let ns_file = fs::File::open(format!("/var/run/netns/{}", ns.0)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: joins this thread (only) to the test's network namespace.
        assert_eq!(
            unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        tx.send(listener.local_addr().unwrap().port()).unwrap();
        for conn in listener.incoming() {
            let Ok(mut client) = conn else { continue };
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, url) = (
                parts.next().unwrap_or("").to_owned(),
                parts.next().unwrap_or("").to_owned(),
            );
            log.lock().unwrap().push(format!("{method} {url}"));
            if method == "CONNECT" {
                // A tunnel: answer, then copy both ways until either side closes.
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let Ok(upstream) = TcpStream::connect(&url) else {
                    continue;
                };
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .unwrap();
                let (mut up_r, mut up_w) = (upstream.try_clone().unwrap(), upstream);
                let mut client_w = client.try_clone().unwrap();
                let pump = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut up_r, &mut client_w);
                    let _ = client_w.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut reader, &mut up_w);
                let _ = up_w.shutdown(std::net::Shutdown::Write);
                let _ = pump.join();
                continue;
            }
            let rest = url.strip_prefix("http://").unwrap_or(&url);
            let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let mut upstream = TcpStream::connect(hostport).unwrap();
            let mut head = format!("{method} {path} HTTP/1.1\r\n");
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if !lower.starts_with("connection:") && !lower.starts_with("proxy-") {
                    head.push_str(&h);
                }
            }
            head.push_str("Connection: close\r\n\r\n");
            upstream.write_all(head.as_bytes()).unwrap();
            let mut resp = Vec::new();
            upstream.read_to_end(&mut resp).unwrap();
            let _ = client.write_all(&resp);
        }
    });
    (rx.recv().unwrap(), seen)
}

#[test]
fn registry_pull_through_proxy() {
    let site = Site::new();
    let layout = site.root().join("layout");
    write_layout(&layout);
    let ns = Netns::new();
    let reg = Registry::start(&ns, site.root());
    let host = format!("127.0.0.1:{}", reg.port);
    run(ns.command("skopeo").args([
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{host}/ironwulf/proxied:v1"),
    ]));
    let (proxy_port, seen) = start_proxy(&ns);
    let out = ns
        .command(env!("CARGO_BIN_EXE_wwctl"))
        .arg("--warewulfconf")
        .arg(site.root().join("etc/warewulf/warewulf.conf"))
        .args([
            "image",
            "import",
            "--nohttps",
            &format!("docker://{host}/ironwulf/proxied:v1"),
            "px",
        ])
        .env("HTTP_PROXY", format!("http://127.0.0.1:{proxy_port}"))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_two_layers(&site.rootfs("px"));
    let seen = seen.lock().unwrap().clone();
    // Every connection to the registry went through the proxy.
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|r| r == &format!("CONNECT {host}")
                || r.starts_with(&format!("GET http://{host}/v2/"))),
        "{seen:?}"
    );
}

#[test]
fn registry_basic_auth() {
    let site = Site::new();
    let layout = site.root().join("layout");
    write_layout(&layout);
    let htpasswd = site.root().join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", "ironwulf", "s3cret"])
        .output()
        .expect("apache2-utils is installed");
    fs::write(&htpasswd, &out.stdout).unwrap();
    let ns = Netns::new();
    let reg = Registry::start_with(
        &ns,
        site.root(),
        &format!(
            "auth:\n  htpasswd:\n    realm: ironwulf-test\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let host = format!("127.0.0.1:{}", reg.port);
    let src = format!("docker://{host}/ironwulf/private:v1");
    run(ns.command("skopeo").args([
        "--insecure-policy",
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        "ironwulf:s3cret",
        &format!("oci:{}:v1", layout.display()),
        &src,
    ]));
    let import = |user: Option<&str>, password: &str| {
        let mut c = ns.command(env!("CARGO_BIN_EXE_wwctl"));
        c.arg("--warewulfconf")
            .arg(site.root().join("etc/warewulf/warewulf.conf"))
            .args(["image", "import", "--nohttps", &src, "private"])
            .env("WAREWULF_OCI_PASSWORD", password)
            .env_remove("WAREWULF_OCI_USERNAME");
        if let Some(u) = user {
            c.args(["--username", u]);
        }
        c.output().unwrap()
    };
    let out = import(None, "");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wants a login"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = import(Some("ironwulf"), "wrong");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = import(Some("ironwulf"), "s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_two_layers(&site.rootfs("private"));
}

#[test]
fn platform_is_picked_from_an_index() {
    let site = Site::new();
    let layout = site.root().join("layout");
    write_layout(&layout);
    let blobs = layout.join("blobs/sha256");
    let put = |data: &[u8]| {
        let d = sha256(data);
        fs::write(blobs.join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let amd64 = index["manifests"][0].clone();
    // arm64: the base layer only.
    let base = base_layer();
    let (dl, sl) = put(&base);
    let (dc, sc) = put(br#"{"architecture":"arm64","os":"linux"}"#);
    let arm = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": dc, "size": sc},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dl, "size": sl}],
    });
    let (dm, sm) = put(&serde_json::to_vec(&arm).unwrap());
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": amd64["mediaType"], "digest": amd64["digest"], "size": amd64["size"],
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": dm, "size": sm,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    });
    let (di, si) = put(&serde_json::to_vec(&nested).unwrap());
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": di, "size": si}]});
    fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();

    let src = format!("oci:{}", layout.display());
    site.ok(&["image", "import", &src, "amd", "--platform", "linux/amd64"]);
    assert_two_layers(&site.rootfs("amd"));
    site.ok(&["image", "import", &src, "arm", "--platform", "linux/arm64"]);
    assert_eq!(
        fs::read(site.rootfs("arm").join("etc/motd")).unwrap(),
        b"one\n"
    );
    assert!(site.rootfs("arm").join("etc/removed").exists());
    let err = site.fails(&["image", "import", &src, "s390", "--platform", "linux/s390x"]);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
    assert!(err.contains("linux/arm64/v8"), "{err}");
}
