//! `wwctl image exec|shell` (overlay, commit on exit 0, discard otherwise,
//! crash safety, locking, bind mounts), `image syncuser`, and the whole-image
//! verbs (`copy`, `rename`, `delete`, `kernels`), in a temp site. Needs root
//! (namespaces and mounts), as `wwctl image exec` itself does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// A site with image `bb`: busybox, /etc/motd, /opt/dir/{a,b}.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let conf = format!(
            "paths:\n  sysconfdir: {r}/etc\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  localstatedir: {r}/var\n  cachedir: {r}/cache\nimage mounts:\n  - source: {r}/shared\n    dest: /mnt/shared\n    readonly: true\n  - source: {r}/shared/hello\n    dest: /etc/copied\n    copy: true\n",
            r = root.display()
        );
        fs::create_dir_all(root.join("etc/warewulf")).unwrap();
        fs::write(root.join("etc/warewulf/warewulf.conf"), conf).unwrap();
        fs::create_dir_all(root.join("shared")).unwrap();
        fs::write(root.join("shared/hello"), b"from the head\n").unwrap();
        let src = root.join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::copy("/usr/bin/busybox", src.join("bin/busybox")).unwrap();
        symlink("busybox", src.join("bin/sh")).unwrap();
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/motd"), b"motd\n").unwrap();
        fs::create_dir_all(src.join("opt/dir")).unwrap();
        fs::write(src.join("opt/dir/a"), b"a\n").unwrap();
        fs::write(src.join("opt/dir/b"), b"b\n").unwrap();
        let site = Self { dir };
        site.ok(&["image", "import", src.to_str().unwrap(), "bb"]);
        site
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn rootfs(&self) -> PathBuf {
        self.root().join("chroots/bb/rootfs")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wwctl"));
        cmd.arg("--warewulfconf")
            .arg(self.root().join("etc/warewulf/warewulf.conf"))
            .args(args);
        cmd
    }

    fn wwctl(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
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

    fn sh(&self, script: &str) -> Output {
        self.wwctl(&[
            "image",
            "exec",
            "bb",
            "--build=false",
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
    }
}

/// Every path under `root` with its content or link target, for comparisons.
fn snapshot(root: &Path) -> Vec<(String, u32, String)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_dir() {
                todo.push(p.clone());
                String::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                format!(
                    "{:x}",
                    fs::read(&p)
                        .unwrap()
                        .iter()
                        .map(|&b| u64::from(b))
                        .sum::<u64>()
                )
            };
            out.push((rel, m.mode(), what));
        }
    }
    out.sort();
    out
}

#[test]
fn exit_zero_commits() {
    let site = Site::new();
    // Fedora-style read-only root directory: a commit must keep its mode.
    fs::set_permissions(site.rootfs(), fs::Permissions::from_mode(0o555)).unwrap();
    let out = site.sh(
        "set -e; echo new > /etc/new; rm /etc/motd; chmod 700 /opt/dir/a; \
         rm -rf /opt/dir; mkdir /opt/dir; echo c > /opt/dir/c; \
         mkdir -p /var/lib/x; echo y > /var/lib/x/y; \
         test \"$(hostname)\" = bb; test \"$$\" = 1; \
         test -c /dev/null; test -d /sys/kernel; cat /mnt/shared/hello; \
         grep -q head /etc/copied; \
         if touch /mnt/shared/x 2>/dev/null; then exit 9; fi",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from the head\n");
    assert!(stderr.contains("committed"), "{stderr}");
    let r = site.rootfs();
    assert_eq!(fs::read(r.join("etc/new")).unwrap(), b"new\n");
    assert_eq!(fs::metadata(&r).unwrap().mode() & 0o7777, 0o555);
    assert!(!r.join("etc/motd").exists());
    let names: Vec<_> = fs::read_dir(r.join("opt/dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["c"], "a replaced directory replaces the old one");
    assert_eq!(fs::read(r.join("var/lib/x/y")).unwrap(), b"y\n");
    // Mount points made for the session are not committed; nothing of the
    // session stays behind.
    assert!(
        !r.join("mnt").exists(),
        "bind mount point leaked into the image"
    );
    assert!(
        !r.join("etc/copied").exists(),
        "a copied-in file leaked into the image"
    );
    assert!(!r.join("proc").exists() && !r.join("sys").exists());
    assert!(!site.root().join("chroots/bb/.exec").exists());
    assert!(!r.join("opt/dir/a").exists());
    // No overlay-private attributes or whiteout devices in the image.
    for (path, mode, _) in snapshot(&r) {
        assert_ne!(mode & libc::S_IFMT, libc::S_IFCHR, "{path}");
    }
    // The mounts stayed private to the session.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(site.root().to_str().unwrap()), "{mounts}");
}

#[test]
fn non_zero_discards() {
    let site = Site::new();
    let before = snapshot(&site.rootfs());
    let out = site.sh("echo x > /etc/new; rm /etc/motd; rm -rf /opt; exit 3");
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("discarded"));
    assert_eq!(snapshot(&site.rootfs()), before);
    assert!(!site.root().join("chroots/bb/.exec").exists());
    // A command that does not exist is a failure too, and discards.
    let out = site.wwctl(&["image", "exec", "bb", "--", "/no/such/program"]);
    assert!(!out.status.success());
    assert_eq!(snapshot(&site.rootfs()), before);
}

#[test]
fn kill_9_leaves_image_untouched_and_lock_is_exclusive() {
    let site = Site::new();
    let before = snapshot(&site.rootfs());
    let mut child = site
        .command(&[
            "image",
            "exec",
            "bb",
            "--build=false",
            "--",
            "/bin/sh",
            "-c",
            "echo x > /etc/crash; rm /etc/motd; exec sleep 300",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let upper = site.root().join("chroots/bb/.exec/upper/etc/crash");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !upper.exists() {
        assert!(Instant::now() < deadline, "the session never wrote");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A second session on the same image is refused while the first runs.
    let out = site.sh("true");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sleepers_before = count_sleepers();
    assert!(sleepers_before >= 1);
    // SAFETY: signalling the child this test spawned, by PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert_eq!(
        snapshot(&site.rootfs()),
        before,
        "a killed session changed the image"
    );
    // The command dies with wwctl (parent-death signal + PID namespace).
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_sleepers() >= sleepers_before {
        assert!(Instant::now() < deadline, "the command outlived wwctl");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The next session cleans up and works.
    let out = site.sh("test ! -e /etc/crash && echo ok > /etc/after");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(site.rootfs().join("etc/after").exists());
    assert!(site.rootfs().join("etc/motd").exists());
}

/// Processes running `sleep 300` (what the killed session ran).
fn count_sleepers() -> usize {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == b"sleep\x00300\x00")
        .count()
}

#[test]
fn shell_says_what_happens_and_binds() {
    let site = Site::new();
    let extra = site.root().join("extra");
    fs::create_dir_all(&extra).unwrap();
    fs::write(extra.join("data"), b"rw\n").unwrap();
    let mut child = site
        .command(&[
            "image",
            "shell",
            "bb",
            "--bind",
            &format!("{}:/srv/extra", extra.display()),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo $PS1; cat /srv/extra/data; echo more >> /srv/extra/data; echo shell > /etc/from-shell; exit 0\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("saved when the shell exits 0"), "{stderr}");
    assert!(
        stdout.contains("[wwctl image bb]"),
        "prompt names the image: {stdout}"
    );
    assert!(stdout.contains("rw\n"), "{stdout}");
    assert_eq!(
        fs::read(site.rootfs().join("etc/from-shell")).unwrap(),
        b"shell\n"
    );
    // A read-write bind writes through to the head; the mount point is not committed.
    assert_eq!(fs::read(extra.join("data")).unwrap(), b"rw\nmore\n");
    assert!(!site.rootfs().join("srv").exists());
    // Committing rebuilt the image (default --build=true).
    assert!(site.root().join("provision/images/bb.img.gz").is_file());
}

#[test]
fn syncuser_head_ids_win() {
    let site = Site::new();
    let head_passwd = fs::read_to_string("/etc/passwd").unwrap();
    let head_group = fs::read_to_string("/etc/group").unwrap();
    let id_of = |db: &str, name: &str| -> u32 {
        db.lines()
            .find(|l| l.split(':').next() == Some(name))
            .map(|l| l.split(':').nth(2).unwrap().parse().unwrap())
            .unwrap_or_else(|| panic!("no {name} on the head"))
    };
    let daemon_uid = id_of(&head_passwd, "daemon");
    let daemon_gid = id_of(&head_group, "daemon");
    let r = site.rootfs();
    // In the image `daemon` has other ids, and `imgsvc` holds the head's daemon uid.
    fs::write(
        r.join("etc/passwd"),
        format!("root:x:0:0:root:/root:/bin/sh\ndaemon:x:4242:4242::/:/bin/false\nimgsvc:x:{daemon_uid}:4343::/:/bin/false\n"),
    )
    .unwrap();
    fs::write(
        r.join("etc/group"),
        "root:x:0:\ndaemon:x:4242:\nimgsvc:x:4343:\n",
    )
    .unwrap();
    fs::write(r.join("opt/daemon-file"), b"d").unwrap();
    std::os::unix::fs::chown(r.join("opt/daemon-file"), Some(4242), Some(4242)).unwrap();
    fs::write(r.join("opt/svc-file"), b"s").unwrap();
    std::os::unix::fs::chown(r.join("opt/svc-file"), Some(daemon_uid), Some(4343)).unwrap();
    fs::set_permissions(r.join("opt/svc-file"), fs::Permissions::from_mode(0o4755)).unwrap();

    // Without --write only a report.
    let out = site.ok(&["image", "syncuser", "bb"]);
    assert!(out.contains("--write"), "{out}");
    assert_eq!(fs::metadata(r.join("opt/daemon-file")).unwrap().uid(), 4242);

    let out = site.ok(&["image", "syncuser", "bb", "--write", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["files_chowned"].as_u64().unwrap() >= 2, "{out}");
    let passwd = fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains(&format!("daemon:x:{daemon_uid}:{daemon_gid}:")),
        "{passwd}"
    );
    let svc_uid = id_of(&passwd, "imgsvc");
    assert_ne!(svc_uid, daemon_uid, "the head's id wins");
    let m = fs::metadata(r.join("opt/daemon-file")).unwrap();
    assert_eq!((m.uid(), m.gid()), (daemon_uid, daemon_gid));
    let m = fs::metadata(r.join("opt/svc-file")).unwrap();
    assert_eq!(m.uid(), svc_uid);
    assert_eq!(m.mode() & 0o7777, 0o4755, "set-id bit kept");
    // Head-only accounts are added, without password hashes.
    assert!(passwd.lines().count() > 3);
    assert!(passwd.lines().all(|l| l.split(':').nth(1) == Some("x")));
    // Idempotent.
    let out = site.ok(&["image", "syncuser", "bb", "--write"]);
    assert!(out.contains("already match"), "{out}");
}

#[test]
fn copy_rename_delete_kernels() {
    let site = Site::new();
    let r = site.rootfs();
    fs::create_dir_all(r.join("boot")).unwrap();
    fs::write(r.join("boot/vmlinuz-6.1.0-9-amd64"), b"k").unwrap();
    site.ok(&["image", "build", "bb"]);
    site.ok(&["image", "copy", "bb", "bb2"]);
    assert!(site.root().join("chroots/bb2/rootfs/bin/busybox").is_file());
    site.ok(&["container", "rename", "bb2", "bb3"]);
    assert!(!site.root().join("chroots/bb2").exists());
    assert!(site.root().join("chroots/bb3/rootfs/bin/busybox").is_file());
    site.ok(&["image", "rename", "bb", "renamed"]);
    assert!(
        site.root()
            .join("provision/images/renamed.img.gz")
            .is_file()
    );
    assert!(!site.root().join("provision/images/bb.img.gz").exists());
    let manifest =
        fs::read_to_string(site.root().join("provision/images/renamed.manifest.json")).unwrap();
    assert!(manifest.contains("\"name\": \"renamed\""), "{manifest}");
    let kernels = site.ok(&["vnfs", "kernels", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&kernels).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{kernels}");
    assert_eq!(v[0]["version"], "6.1.0-9-amd64");
    let err = site.wwctl(&["image", "copy", "renamed", "bb3"]);
    assert!(String::from_utf8_lossy(&err.stderr).contains("already exists"));
    site.ok(&["image", "delete", "renamed", "bb3"]);
    assert!(!site.root().join("chroots/renamed").exists());
    assert!(!site.root().join("provision/images/renamed.img.gz").exists());
    assert!(site.ok(&["image", "list", "--json"]).trim() == "[]");
}

#[test]
fn interrupted_import_is_recovered() {
    let site = Site::new();
    let chroots = site.root().join("chroots");
    // What a `wwctl image import --force` killed between its two renames leaves.
    fs::rename(chroots.join("bb"), chroots.join(".bb.old-4242")).unwrap();
    fs::create_dir_all(chroots.join(".bb.import-4243/rootfs/etc")).unwrap();
    let out = site.sh("test -e /etc/motd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(site.rootfs().join("etc/motd").is_file());
    assert!(!chroots.join(".bb.old-4242").exists());
    assert!(!chroots.join(".bb.import-4243").exists());
}
