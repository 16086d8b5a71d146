//! Golden-file tests of the shipped overlays (`overlays/` at the repo root).
//!
//! A fixture site (`tests/fixtures/golden/`: warewulf.conf and four nodes
//! covering plain Ethernet, IPv6 and routes, InfiniBand, a bond with a VLAN,
//! a BMC and local disks, and a node with no network at all) is laid out in
//! a temporary folder together with the head files templates read (host
//! keys, passwd, group, hosts, exports, an image's passwd). The real `wwctl`
//! then renders every overlay for every node (`overlay build --output`) and
//! the host overlay onto a fake head (`configure hostfile|nfs --root`, and
//! `overlay show --render` for the DHCP server files). Each output must
//! equal `tests/golden/<overlay>/<node>/<path>`; `tests/golden/MANIFEST`
//! records every output's mode, or its target for a symlink.
//!
//! `UPDATE_GOLDEN=1 cargo test -p head --test golden` rewrites the expected
//! files; review every change before committing it. The head's host name,
//! the build time and the temporary site folder are replaced by
//! `@BUILDHOST@`, `@BUILDTIME@` and `@ROOT@`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/golden");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");
const OVERLAYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../overlays");

/// Pseudo node names under which the host overlay's outputs are kept (the
/// second with `dhcp: template: static`).
const HOST: &str = "_head";
const HOST_STATIC: &str = "_head_static";

/// One rendered output: file contents or symlink target, and its mode.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File { data: Vec<u8>, mode: u32 },
    Link(String),
}

/// A site in a temporary folder, driven through the real `wwctl`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("temporary folder");
        let site = Site { dir };
        let root = site.root().to_str().expect("utf-8 temp path").to_owned();
        let conf = fs::read_to_string(Path::new(FIXTURES).join("warewulf.conf"))
            .expect("fixture warewulf.conf");
        site.write(
            "etc/warewulf/warewulf.conf",
            &conf.replace("@ROOT@", &root),
            0o644,
        );
        let nodes =
            fs::read_to_string(Path::new(FIXTURES).join("nodes.conf")).expect("fixture nodes.conf");
        site.write("etc/warewulf/nodes.conf", &nodes, 0o644);
        install_overlays(Path::new(OVERLAYS), &site.root().join("dist"));
        site
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, rel: &str, text: &str, mode: u32) {
        let p = self.root().join(rel);
        fs::create_dir_all(p.parent().expect("has a parent")).expect("create parent");
        fs::write(&p, text).expect("write fixture file");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod fixture file");
    }

    /// The head files that overlay templates read.
    fn head_files(&self) {
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let private = format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{kind} host key sentinel\n-----END OPENSSH PRIVATE KEY-----\n"
            );
            self.write(
                &format!("etc/warewulf/keys/ssh_host_{kind}_key"),
                &private,
                0o600,
            );
            let public = format!("ssh-{kind} AAAA{kind}sentinel root@head\n");
            self.write(
                &format!("etc/warewulf/keys/ssh_host_{kind}_key.pub"),
                &public,
                0o644,
            );
        }
        self.write(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nslurm:x:900:900::/var/lib/slurm:/sbin/nologin\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n",
            0o644,
        );
        self.write(
            "etc/group",
            "root:x:0:\nslurm:x:900:\nalice:x:1000:\n",
            0o644,
        );
        self.write(
            "etc/hosts",
            "127.0.0.1 localhost\n192.0.2.10 ldap.example ldap\n# Do not edit after this line\n10.0.0.99 stale-entry\n",
            0o644,
        );
        self.write("etc/exports", "/srv/scratch 192.0.2.0/24(rw)\n", 0o644);
        let image = "var/lib/warewulf/chroots/rocky-9/rootfs/etc";
        self.write(
            &format!("{image}/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nbin:x:1:1:bin:/bin:/sbin/nologin\nslurm:x:901:901::/var/lib/slurm:/bin/false\n",
            0o644,
        );
        self.write(
            &format!("{image}/group"),
            "root:x:0:\nbin:x:1:\nslurm:x:901:\n",
            0o644,
        );
    }

    fn wwctl(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_wwctl"))
            .args(args)
            .env(
                "WAREWULFCONF",
                self.root().join("etc/warewulf/warewulf.conf"),
            )
            .env("IRONWULF_DIST_OVERLAYS", self.root().join("dist"))
            .env("HOME", self.root().join("home"))
            .env_remove("IRONWULF_HOST_ROOT")
            .output()
            .expect("running wwctl");
        assert!(
            out.status.success(),
            "wwctl {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// Copies the shipped overlays the way an installation does: contents and
/// symlinks as they are, then the modes listed in `overlays/PERMISSIONS`
/// (git keeps only the executable bit).
fn install_overlays(src: &Path, dest: &Path) {
    copy_tree(src, dest);
    let list = fs::read_to_string(src.join("PERMISSIONS")).expect("overlays/PERMISSIONS");
    for line in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (mode, path) = line.split_once(' ').expect("PERMISSIONS line is MODE PATH");
        let mode = u32::from_str_radix(mode, 8).expect("octal mode");
        let p = dest.join(path.trim());
        assert!(p.exists(), "PERMISSIONS names a missing file: {path}");
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).expect("chmod overlay file");
    }
}

fn copy_tree(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).expect("create folder");
    for entry in fs::read_dir(src).expect("read overlay folder") {
        let entry = entry.expect("folder entry");
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let ft = entry.file_type().expect("file type");
        if ft.is_symlink() {
            let target = fs::read_link(&from).expect("read symlink");
            std::os::unix::fs::symlink(target, &to).expect("create symlink");
        } else if ft.is_dir() {
            copy_tree(&from, &to);
        } else {
            fs::copy(&from, &to).expect("copy file");
            fs::set_permissions(
                &to,
                fs::Permissions::from_mode(0o644 | (mode_of(&from) & 0o111)),
            )
            .expect("chmod");
        }
    }
}

fn mode_of(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// Every file and symlink below `dir`, keyed by slash path relative to it.
fn collect(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Entry>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for entry in rd {
        let entry = entry.expect("folder entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let p = entry.path();
        let ft = entry.file_type().expect("file type");
        if ft.is_symlink() {
            let target = fs::read_link(&p).expect("read symlink");
            out.insert(rel, Entry::Link(target.to_string_lossy().into_owned()));
        } else if ft.is_dir() {
            collect(&p, &rel, out);
        } else {
            let data = fs::read(&p).expect("read output");
            out.insert(
                rel,
                Entry::File {
                    data,
                    mode: mode_of(&p),
                },
            );
        }
    }
}

/// Replaces what differs between machines and runs: the head's host name
/// (on the `/etc/hosts` line of the head and in the debug dump), the build
/// time, and the temporary site folder (`@ROOT@`).
fn normalise(data: &[u8], root: &str) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(data) else {
        return data.to_vec();
    };
    let text = text.replace(root, "@ROOT@");
    let host = nix_hostname();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let fixed = if body.starts_with("10.0.0.1 ") && body.ends_with(" warewulf") {
            "10.0.0.1 @BUILDHOST@ warewulf".to_owned()
        } else if let Some(rest) = body.strip_prefix("- BuildHost: ") {
            assert_eq!(rest, host, "BuildHost is the head's host name");
            "- BuildHost: @BUILDHOST@".to_owned()
        } else if body.starts_with("- BuildTime: ") {
            "- BuildTime: @BUILDTIME@".to_owned()
        } else if body.starts_with("- BuildTimeUnix: ") {
            "- BuildTimeUnix: @BUILDTIME@".to_owned()
        } else {
            body.to_owned()
        };
        out.push_str(&fixed);
        out.push_str(nl);
    }
    out.into_bytes()
}

fn nix_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| String::new(), |h| h.trim().to_owned())
}

/// Renders everything: `<overlay>/<node>/<path>` → entry.
fn render_all() -> BTreeMap<String, Entry> {
    let site = Site::new();
    site.head_files();
    let mut all = BTreeMap::new();

    let trees = site.root().join("out");
    site.wwctl(&[
        "overlay",
        "build",
        "--output",
        trees.to_str().expect("utf-8 path"),
    ]);
    let mut rendered = BTreeMap::new();
    collect(&trees, "", &mut rendered);
    for (path, entry) in rendered {
        // DIR/NODE/OVERLAY/PATH → OVERLAY/NODE/PATH
        let mut parts = path.splitn(3, '/');
        let (node, overlay, rest) = (
            parts.next().expect("node"),
            parts.next().expect("overlay"),
            parts.next().expect("path"),
        );
        all.insert(format!("{overlay}/{node}/{rest}"), entry);
    }

    let head = site.root().join("head");
    let head_arg = head.to_str().expect("utf-8 path");
    site.wwctl(&["configure", "hostfile", "--root", head_arg]);
    site.wwctl(&["configure", "nfs", "--root", head_arg]);
    for file in ["etc/dhcp/dhcpd.conf", "etc/dnsmasq.d/ww4-hosts.conf"] {
        let out = site.wwctl(&[
            "overlay",
            "show",
            "host",
            &format!("{file}.ww"),
            "--render",
            "n01",
        ]);
        let dest = head.join(file);
        fs::create_dir_all(dest.parent().expect("has a parent")).expect("create parent");
        fs::write(&dest, out.stdout).expect("write rendered host file");
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut host = BTreeMap::new();
    collect(&head, "", &mut host);
    for (path, entry) in host {
        all.insert(format!("host/{HOST}/{path}"), entry);
    }

    // The DHCP server files again with `dhcp: template: static`.
    let conf = site.root().join("etc/warewulf/warewulf.conf");
    let text = fs::read_to_string(&conf).expect("read warewulf.conf");
    assert!(
        text.contains("template: default"),
        "fixture uses the default DHCP template"
    );
    fs::write(&conf, text.replace("template: default", "template: static"))
        .expect("write warewulf.conf");
    for file in ["etc/dhcp/dhcpd.conf", "etc/dnsmasq.d/ww4-hosts.conf"] {
        let out = site.wwctl(&[
            "overlay",
            "show",
            "host",
            &format!("{file}.ww"),
            "--render",
            "n01",
        ]);
        all.insert(
            format!("host/{HOST_STATIC}/{file}"),
            Entry::File {
                data: out.stdout,
                mode: 0o644,
            },
        );
    }

    let root = site.root().to_str().expect("utf-8 path").to_owned();
    all.into_iter()
        .map(|(k, e)| match e {
            Entry::File { data, mode } => (
                k,
                Entry::File {
                    data: normalise(&data, &root),
                    mode,
                },
            ),
            link => (k, link),
        })
        .collect()
}

fn manifest(all: &BTreeMap<String, Entry>) -> String {
    let mut text =
        String::from("# Every golden output: mode and path, or path -> symlink target.\n");
    for (path, e) in all {
        match e {
            Entry::File { mode, .. } => text.push_str(&format!("{mode:04o} {path}\n")),
            Entry::Link(t) => text.push_str(&format!("link {path} -> {t}\n")),
        }
    }
    text
}

fn update(all: &BTreeMap<String, Entry>) {
    let golden = Path::new(GOLDEN);
    if golden.exists() {
        fs::remove_dir_all(golden).expect("remove old golden files");
    }
    for (path, e) in all {
        if let Entry::File { data, .. } = e {
            let p = golden.join(path);
            fs::create_dir_all(p.parent().expect("has a parent")).expect("create golden folder");
            fs::write(&p, data).expect("write golden file");
        }
    }
    fs::write(golden.join("MANIFEST"), manifest(all)).expect("write MANIFEST");
}

fn expected_files() -> BTreeMap<String, Vec<u8>> {
    let mut found = BTreeMap::new();
    collect(Path::new(GOLDEN), "", &mut found);
    found
        .into_iter()
        .filter(|(k, _)| k != "MANIFEST")
        .map(|(k, e)| match e {
            Entry::File { data, .. } => (k, data),
            Entry::Link(t) => panic!("golden folder holds a symlink {k} -> {t}"),
        })
        .collect()
}

#[test]
fn shipped_overlays_match_golden_files() {
    let all = render_all();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        update(&all);
        return;
    }
    let mut problems = Vec::new();
    let expected_manifest =
        fs::read_to_string(Path::new(GOLDEN).join("MANIFEST")).unwrap_or_default();
    let actual_manifest = manifest(&all);
    if expected_manifest != actual_manifest {
        problems.push(format!(
            "MANIFEST differs (outputs added, removed, or with another mode or link target):\n{}",
            line_diff(&expected_manifest, &actual_manifest)
        ));
    }
    let expected = expected_files();
    for (path, e) in &all {
        let Entry::File { data, .. } = e else {
            continue;
        };
        match expected.get(path) {
            None => problems.push(format!("{path}: no golden file")),
            Some(want) if want != data => problems.push(format!(
                "{path} differs:\n{}",
                line_diff(
                    &String::from_utf8_lossy(want),
                    &String::from_utf8_lossy(data)
                )
            )),
            Some(_) => {}
        }
    }
    for path in expected.keys() {
        if !matches!(all.get(path), Some(Entry::File { .. })) {
            problems.push(format!("{path}: golden file but no such output"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} golden mismatches (UPDATE_GOLDEN=1 regenerates; review the result):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

/// Lines only in `want` (`-`) and only in `got` (`+`), in order.
fn line_diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let mut out = String::new();
    for l in &w {
        if !g.contains(l) {
            out.push_str(&format!("- {l}\n"));
        }
    }
    for l in &g {
        if !w.contains(l) {
            out.push_str(&format!("+ {l}\n"));
        }
    }
    if out.is_empty() {
        out.push_str("(same lines, different order or blank lines)\n");
    }
    out
}

/// `configure ssh` makes every host key type once, root's key pair, and
/// puts root's public key into its authorized_keys; a second run keeps all.
#[test]
fn configure_ssh_creates_keys_once() {
    if Command::new("ssh-keygen").arg("-?").output().is_err() {
        eprintln!("ssh-keygen is not installed; skipping");
        return;
    }
    let site = Site::new();
    site.wwctl(&["configure", "ssh"]);
    let keys = site.root().join("etc/warewulf/keys");
    let mut first = BTreeMap::new();
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let private = keys.join(format!("ssh_host_{kind}_key"));
        assert_eq!(mode_of(&private), 0o600, "{kind} host key mode");
        assert!(keys.join(format!("ssh_host_{kind}_key.pub")).is_file());
        first.insert(kind, fs::read(&private).expect("read key"));
    }
    let ssh = site.root().join("home/.ssh");
    assert_eq!(mode_of(&ssh), 0o700);
    let public = fs::read_to_string(ssh.join("id_ed25519.pub")).expect("root public key");
    let authorized = fs::read_to_string(ssh.join("authorized_keys")).expect("authorized_keys");
    assert_eq!(authorized.trim(), public.trim());
    assert_eq!(mode_of(&ssh.join("authorized_keys")), 0o600);

    site.wwctl(&["configure", "ssh"]);
    for (kind, data) in first {
        assert_eq!(
            fs::read(keys.join(format!("ssh_host_{kind}_key"))).expect("read key"),
            data,
            "{kind} key kept"
        );
    }
    assert_eq!(
        fs::read_to_string(ssh.join("authorized_keys")).expect("authorized_keys"),
        authorized
    );
}

/// The rendered overlay keys reach nodes: ssh.host_keys copies exactly the
/// head's keys and writes nothing for a type the head has no key of.
#[test]
fn host_keys_follow_the_head() {
    let site = Site::new();
    site.head_files();
    let out = site.root().join("out");
    site.wwctl(&[
        "overlay",
        "build",
        "--output",
        out.to_str().expect("utf-8 path"),
        "n01",
    ]);
    let etc_ssh = out.join("n01/ssh.host_keys/etc/ssh");
    let key = fs::read(etc_ssh.join("ssh_host_rsa_key")).expect("rendered rsa key");
    assert_eq!(
        key,
        fs::read(site.root().join("etc/warewulf/keys/ssh_host_rsa_key")).expect("head key")
    );
    assert!(
        !etc_ssh.join("ssh_host_dsa_key").exists(),
        "no dsa key on the head, none on the node"
    );
}
