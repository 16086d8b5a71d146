//! `wwctl overlay …` end to end, in a temp site with its own shipped and
//! site overlays.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use initramfs::newc::{Kind, Reader};

/// A site living entirely in a temp dir; `dist/` plays the shipped overlays.
struct Site {
    dir: tempfile::TempDir,
}

/// One entry of a built image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    data: Vec<u8>,
}

const NODES: &str = "\
nodeprofiles:
  default:
    comment: from profile
    system overlay: [base, sys]
    runtime overlay: [rt]
nodes:
  n1:
    profiles: [default]
    network devices:
      default:
        device: eth0
        hwaddr: 00:11:22:33:44:01
        ipaddr: 10.0.0.11
        netmask: 255.255.255.0
  n2:
    profiles: [default]
    network devices:
      default:
        device: eth0
        hwaddr: 00:11:22:33:44:02
        ipaddr: 10.0.0.12
        netmask: 255.255.255.0
      ib:
        device: ib0
        ipaddr: 10.1.0.12
";

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let conf = format!(
            "ipaddr: 10.0.0.1\nnetmask: 255.255.255.0\nnetwork: 10.0.0.0\npaths:\n  sysconfdir: {r}/etc\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  localstatedir: {r}/var\n  cachedir: {r}/cache\n  datadir: {r}/share\n",
            r = root.display()
        );
        fs::create_dir_all(root.join("etc/warewulf")).unwrap();
        fs::create_dir_all(root.join("dist")).unwrap();
        fs::create_dir_all(root.join("overlays")).unwrap();
        fs::write(root.join("etc/warewulf/warewulf.conf"), conf).unwrap();
        fs::write(root.join("etc/warewulf/nodes.conf"), NODES).unwrap();
        let site = Self { dir };
        // Shipped overlays.
        site.put("dist", "base", "etc/motd", "shipped motd\n", 0o644);
        site.put("dist", "base", "etc/site.conf", "secret\n", 0o640);
        fs::create_dir_all(site.root().join("dist/base/rootfs/var/empty")).unwrap();
        symlink(
            "site.conf",
            site.root().join("dist/base/rootfs/etc/conf-link"),
        )
        .unwrap();
        site.put("dist", "base", "etc/hostname.ww", "{{ .Id }}\n", 0o600);
        site.put("dist", "base", "etc/shadowed", "shipped only\n", 0o644);
        site.put("dist", "sys", "etc/shipped-sys", "shipped sys\n", 0o644);
        // Site overlays.
        site.put("overlays", "sys", "etc/sys.conf", "site sys\n", 0o644);
        site.put(
            "overlays",
            "sys",
            "etc/node.conf.ww",
            "id={{ .Id }} ip={{ (index .NetDevs \"default\").Ipaddr }} server={{ .Ipaddr }} comment={{ .Comment }} primary={{ (index .NetDevs \"default\").Primary }}\n",
            0o644,
        );
        site.put(
            "overlays",
            "sys",
            "etc/ifcfg.ww",
            "{{- range $name, $nd := .NetDevs }}{{ file (printf \"ifcfg-%s\" $name) }}\nDEVICE={{ $nd.Device }}\nONBOOT={{ $nd.OnBoot.BoolDefaultTrue }}\n{{ end -}}\n",
            0o644,
        );
        site.put(
            "overlays",
            "sys",
            "etc/link.ww",
            "{{ softlink \"/etc/sys.conf\" }}\n",
            0o644,
        );
        site.put(
            "overlays",
            "sys",
            "etc/skip.ww",
            "{{ if eq .Id \"n1\" }}{{ abort }}{{ end }}only n2\n",
            0o644,
        );
        site.put(
            "overlays",
            "rt",
            "etc/hosts.ww",
            "{{ $.Ipaddr }} warewulf\n{{- range $node := $.AllNodes }}{{ range $dev, $nd := $node.NetDevs }}\n{{ $nd.Ipaddr }} {{ $node.Id }}-{{ $dev }}{{ end }}{{ end }}\n",
            0o644,
        );
        site
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `rel` into overlay `name` under `base` (`dist` or `overlays`).
    fn put(&self, base: &str, name: &str, rel: &str, text: &str, mode: u32) {
        let p = self.root().join(base).join(name).join("rootfs").join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn site_file(&self, name: &str, rel: &str) -> PathBuf {
        self.root()
            .join("overlays")
            .join(name)
            .join("rootfs")
            .join(rel)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wwctl"));
        cmd.arg("--warewulfconf")
            .arg(self.root().join("etc/warewulf/warewulf.conf"))
            .args(args)
            .env("IRONWULF_DIST_OVERLAYS", self.root().join("dist"));
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

    fn pointer(&self, node: &str, stem: &str) -> PathBuf {
        self.root()
            .join("provision/overlays")
            .join(node)
            .join(format!("{stem}.img.gz"))
    }

    fn target(&self, node: &str, stem: &str) -> PathBuf {
        fs::read_link(self.pointer(node, stem)).unwrap()
    }

    fn blobs(&self) -> BTreeMap<String, i128> {
        fs::read_dir(self.root().join("provision/blobs"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
                )
            })
            .collect()
    }

    fn set_nodes(&self, text: &str) {
        fs::write(self.root().join("etc/warewulf/nodes.conf"), text).unwrap();
    }

    /// A node's image as the node receives it (`wwctl overlay image`), `ext`
    /// its compression.
    fn image_bytes(&self, node: &str, stem: &str, ext: &str) -> Vec<u8> {
        let mut args = vec!["overlay", "image", node, "--compress", ext];
        if stem == "__RUNTIME__" {
            args.push("--runtime");
        }
        let out = self.wwctl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Every entry of a node's gzip image.
    fn image(&self, node: &str, stem: &str) -> BTreeMap<String, Entry> {
        let bytes = self.image_bytes(node, stem, "gz");
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut raw)
            .unwrap();
        entries(&raw)
    }
}

/// Every entry of an uncompressed image (all concatenated archives, last
/// wins).
fn entries(raw: &[u8]) -> BTreeMap<String, Entry> {
    let mut r = Reader::new(raw);
    let mut out = BTreeMap::new();
    loop {
        while let Some(h) = r.next_entry().unwrap() {
            let data = r.data_to_vec(1 << 20).unwrap();
            out.insert(
                String::from_utf8(h.name.clone()).unwrap(),
                Entry {
                    kind: h.kind,
                    mode: h.perm,
                    uid: h.uid,
                    gid: h.gid,
                    data,
                },
            );
        }
        if !r.next_archive().unwrap() {
            break;
        }
    }
    out
}

fn text(e: &Entry) -> &str {
    std::str::from_utf8(&e.data).unwrap()
}

#[test]
fn build_renders_copies_and_keeps_modes_and_links() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    let img = s.image("n2", "__SYSTEM__");
    assert_eq!(text(&img["etc/hostname"]), "n2\n");
    assert_eq!(img["etc/hostname"].mode, 0o600);
    assert_eq!(text(&img["etc/site.conf"]), "secret\n");
    assert_eq!(img["etc/site.conf"].mode, 0o640);
    assert_eq!(img["etc/conf-link"].kind, Kind::Symlink);
    assert_eq!(text(&img["etc/conf-link"]), "site.conf");
    assert_eq!(img["var/empty"].kind, Kind::Dir);
    assert_eq!(
        text(&img["etc/node.conf"]),
        "id=n2 ip=10.0.0.12 server=10.0.0.1 comment=from profile primary=true\n"
    );
    assert!(!img.contains_key("etc/node.conf.ww"));
    // `file` makes one output per network device, next to the template.
    assert_eq!(
        text(&img["etc/ifcfg-default"]),
        "DEVICE=eth0\nONBOOT=true\n"
    );
    assert_eq!(text(&img["etc/ifcfg-ib"]), "DEVICE=ib0\nONBOOT=true\n");
    assert!(!img.contains_key("etc/ifcfg"));
    // `softlink` makes a symlink (replacing nothing here); `abort` writes nothing.
    assert_eq!(img["etc/link"].kind, Kind::Symlink);
    assert_eq!(text(&img["etc/link"]), "/etc/sys.conf");
    assert_eq!(text(&img["etc/skip"]), "only n2\n");
    assert!(!s.image("n1", "__SYSTEM__").contains_key("etc/skip"));
    let rt = s.image("n1", "__RUNTIME__");
    assert_eq!(
        text(&rt["etc/hosts"]),
        "10.0.0.1 warewulf\n10.0.0.11 n1-default\n10.0.0.12 n2-default\n10.1.0.12 n2-ib\n"
    );
}

#[test]
fn softlink_template_becomes_symlink() {
    let s = Site::new();
    s.put(
        "overlays",
        "sys",
        "etc/alias.ww",
        "{{ softlink \"/etc/sys.conf\" }}\n",
        0o644,
    );
    s.ok(&["overlay", "build", "n[1]"]);
    assert!(!s.pointer("n2", "__SYSTEM__").exists());
    let img = s.image("n1", "__SYSTEM__");
    assert_eq!(img["etc/alias"].kind, Kind::Symlink);
    assert_eq!(text(&img["etc/alias"]), "/etc/sys.conf");
}

#[test]
fn site_overlay_shadows_shipped_one_whole() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    let img = s.image("n1", "__SYSTEM__");
    assert_eq!(text(&img["etc/sys.conf"]), "site sys\n");
    assert!(!img.contains_key("etc/shipped-sys"));
    assert_eq!(text(&img["etc/shadowed"]), "shipped only\n");
    let list = s.ok(&["overlay", "list"]);
    let sys = list.lines().find(|l| l.starts_with("sys ")).unwrap();
    assert!(sys.ends_with("true"), "{list}");
    let base = list.lines().find(|l| l.starts_with("base ")).unwrap();
    assert!(base.ends_with("false"), "{list}");
}

#[test]
fn broken_template_fails_only_its_node_and_names_the_position() {
    let s = Site::new();
    s.put("overlays", "bad", "etc/broken.ww", "fine\n{{ .Id \n", 0o644);
    s.set_nodes(&NODES.replace(
        "  n2:\n    profiles: [default]\n",
        "  n2:\n    profiles: [default]\n    system overlay: [base, bad]\n",
    ));
    let out = s.wwctl(&["overlay", "build"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node n2"), "{err}");
    assert!(err.contains("overlay bad"), "{err}");
    assert!(
        err.contains("etc/broken.ww: template broken.ww:3:1: unclosed action"),
        "{err}"
    );
    assert!(!err.contains("node n1"), "{err}");
    // n1 was built anyway, and n2's runtime image too.
    assert_eq!(text(&s.image("n1", "__SYSTEM__")["etc/hostname"]), "n1\n");
    assert!(s.pointer("n2", "__RUNTIME__").exists());
    assert!(!s.pointer("n2", "__SYSTEM__").exists());
}

#[test]
fn execution_error_of_one_node_is_reported_with_the_others_built() {
    let s = Site::new();
    s.put(
        "overlays",
        "sys",
        "etc/fail.ww",
        "{{ if eq .Id \"n1\" }}{{ index .Tags }}{{ fail }}{{ end }}\n",
        0o644,
    );
    // `fail` is no function: a parse error for everyone using the overlay.
    let out = s.wwctl(&["overlay", "build"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("fail.ww:1:"), "{err}");
    // Runtime images do not use `sys` and are built.
    assert!(s.pointer("n1", "__RUNTIME__").exists());
}

#[test]
fn unchanged_build_writes_nothing_and_one_change_rebuilds_one_node() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    let blobs = s.blobs();
    let n1 = s.target("n1", "__SYSTEM__");
    let n2 = s.target("n2", "__SYSTEM__");
    let out = s.wwctl(&["overlay", "build"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("built 0 images"), "{err}");
    assert_eq!(s.blobs(), blobs, "a no-op build rewrote blobs");

    // Change n1's comment: only n1's system image changes.
    s.set_nodes(&NODES.replace(
        "  n1:\n    profiles: [default]\n",
        "  n1:\n    profiles: [default]\n    comment: changed\n",
    ));
    let out = s.wwctl(&["overlay", "build"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("of 1 nodes"), "{err}");
    assert_ne!(s.target("n1", "__SYSTEM__"), n1);
    assert_eq!(s.target("n2", "__SYSTEM__"), n2);
    assert!(text(&s.image("n1", "__SYSTEM__")["etc/node.conf"]).contains("comment=changed"));
    // The old blob of n1 is gone, n2's is untouched.
    let now = s.blobs();
    let old = n1.file_name().unwrap().to_string_lossy().into_owned();
    assert!(!now.contains_key(&old), "old blob {old} kept");
    let keep = n2.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(now[&keep], blobs[&keep]);
}

#[test]
fn identical_outputs_share_one_blob() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    assert_eq!(s.target("n1", "__RUNTIME__"), s.target("n2", "__RUNTIME__"));
    assert_ne!(s.target("n1", "__SYSTEM__"), s.target("n2", "__SYSTEM__"));
    // Blob files are private: they may hold keys.
    let blob = s.pointer("n1", "__RUNTIME__").canonicalize().unwrap();
    assert_eq!(
        fs::metadata(blob).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn include_changes_trigger_a_rebuild() {
    let s = Site::new();
    let inc = s.root().join("etc/warewulf/motd.txt");
    fs::write(&inc, "one\n").unwrap();
    s.put(
        "overlays",
        "sys",
        "etc/inc.ww",
        &format!("{{{{ Include \"{}\" }}}}", inc.display()),
        0o644,
    );
    s.ok(&["overlay", "build", "--compress", "gz,zst"]);
    // Include drops the file's final newline, as Warewulf does.
    assert_eq!(text(&s.image("n1", "__SYSTEM__")["etc/inc"]), "one");
    let zst = s.root().join("provision/overlays/n1/__SYSTEM__.img.zst");
    assert!(zst.exists());
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&inc, "two\n").unwrap();
    s.ok(&["overlay", "build", "--compress", "gz,zst"]);
    assert_eq!(text(&s.image("n1", "__SYSTEM__")["etc/inc"]), "two");
    // Dropping zstd removes its pointers.
    s.ok(&["overlay", "build", "--force"]);
    assert!(!zst.exists());
}

#[test]
fn ignition_json_comes_from_disks_and_filesystems() {
    let s = Site::new();
    s.put(
        "overlays",
        "sys",
        "warewulf/ignition.json.ww",
        "{{- $j := IgnitionJson }}{{ if not $j }}{{ abort }}{{ end }}{{ $j }}",
        0o644,
    );
    s.set_nodes(&NODES.replace(
        "  n2:\n    profiles: [default]\n",
        "  n2:\n    profiles: [default]\n    disks:\n      /dev/vda:\n        wipe_table: true\n        partitions:\n          scratch:\n            number: \"1\"\n            should_exist: true\n    filesystems:\n      /dev/disk/by-partlabel/scratch:\n        format: btrfs\n        path: /scratch\n        wipe_filesystem: true\n",
    ));
    s.ok(&["overlay", "build"]);
    assert!(
        !s.image("n1", "__SYSTEM__")
            .contains_key("warewulf/ignition.json")
    );
    assert_eq!(
        text(&s.image("n2", "__SYSTEM__")["warewulf/ignition.json"]),
        "{\"ignition\":{\"version\":\"3.1.0\"},\"storage\":{\"disks\":[{\"device\":\"/dev/vda\",\
         \"partitions\":[{\"label\":\"scratch\",\"number\":1,\"shouldExist\":true}],\
         \"wipeTable\":true}],\"filesystems\":[{\"device\":\
         \"/dev/disk/by-partlabel/scratch\",\"format\":\"btrfs\",\"path\":\"/scratch\",\
         \"wipeFilesystem\":true}]}}"
    );
}

#[test]
fn show_render_info_and_list() {
    let s = Site::new();
    assert_eq!(
        s.ok(&["overlay", "show", "base", "etc/motd"]),
        "shipped motd\n"
    );
    assert_eq!(
        s.ok(&[
            "overlay",
            "show",
            "base",
            "/etc/hostname.ww",
            "--render",
            "n1"
        ]),
        "n1\n"
    );
    let info = s.ok(&["overlay", "info", "sys", "etc/node.conf.ww"]);
    assert!(info.contains(".Id"), "{info}");
    assert!(info.contains("per node"), "{info}");
    let info = s.ok(&["overlay", "info", "rt", "etc/hosts.ww"]);
    assert!(info.contains("once per build"), "{info}");
    let long = s.ok(&["overlay", "list", "-l", "base"]);
    assert!(long.contains("0640"), "{long}");
    assert!(long.contains("/etc/site.conf"), "{long}");
    let json = s.ok(&["overlay", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.as_array().unwrap().iter().any(|o| o["name"] == "rt"));
    let out = s.wwctl(&["overlay", "show", "base", "nope"]);
    assert!(!out.status.success());
}

#[test]
fn modifying_commands_copy_shipped_overlays_first() {
    let s = Site::new();
    s.ok(&["overlay", "mkdir", "base", "/opt/x", "--mode", "0700"]);
    let m = fs::metadata(s.site_file("base", "opt/x")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.permissions().mode() & 0o7777, 0o700);
    // The copy carries the shipped files.
    assert_eq!(
        fs::read_to_string(s.site_file("base", "etc/motd")).unwrap(),
        "shipped motd\n"
    );
    s.ok(&["overlay", "chmod", "base", "etc/motd", "0600"]);
    let m = fs::metadata(s.site_file("base", "etc/motd")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
    s.ok(&["overlay", "chown", "base", "etc/motd", "1234", "5678"]);
    let m = fs::metadata(s.site_file("base", "etc/motd")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    // Owner and mode reach the image.
    s.ok(&["overlay", "build", "n1"]);
    let e = &s.image("n1", "__SYSTEM__")["etc/motd"];
    assert_eq!((e.uid, e.gid, e.mode), (1234, 5678, 0o600));
    // Shipped overlays cannot be deleted; site ones can.
    let out = s.wwctl(&["overlay", "delete", "sys"]);
    assert!(!out.status.success());
    s.ok(&["overlay", "delete", "sys", "--force"]);
    let out = s.wwctl(&["overlay", "delete", "sys"]);
    assert!(!out.status.success(), "shipped sys must stay");
}

#[test]
fn create_import_delete_and_edit() {
    let s = Site::new();
    s.ok(&["overlay", "create", "mine"]);
    assert!(!s.wwctl(&["overlay", "create", "mine"]).status.success());
    let src = s.root().join("src.txt");
    fs::write(&src, "imported\n").unwrap();
    let out = s.wwctl(&[
        "overlay",
        "import",
        "mine",
        src.to_str().unwrap(),
        "/a/b/c.txt",
    ]);
    assert!(!out.status.success(), "missing parents need --parents");
    s.ok(&[
        "overlay",
        "import",
        "mine",
        src.to_str().unwrap(),
        "/a/b/c.txt",
        "--parents",
        "--mode",
        "0640",
    ]);
    let p = s.site_file("mine", "a/b/c.txt");
    assert_eq!(fs::read_to_string(&p).unwrap(), "imported\n");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
        0o640
    );
    s.ok(&["overlay", "delete", "mine", "/a/b/c.txt", "--parents"]);
    assert!(!s.site_file("mine", "a").exists());

    // Edit: a valid template is saved, a broken one is refused.
    let editor = s.root().join("editor.sh");
    fs::write(&editor, "#!/bin/sh\nprintf '%s\\n' \"$NEWTEXT\" > \"$1\"\n").unwrap();
    fs::set_permissions(&editor, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = s.command(&["overlay", "edit", "mine", "/etc/x.ww"]);
    let out = cmd
        .env("EDITOR", &editor)
        .env("NEWTEXT", "{{ .Id }}")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (a new file's parent is created by the atomic write)
    assert_eq!(
        fs::read_to_string(s.site_file("mine", "etc/x.ww")).unwrap(),
        "{{ .Id }}\n"
    );
    let mut cmd = s.command(&["overlay", "edit", "mine", "/etc/x.ww"]);
    let out = cmd
        .env("EDITOR", &editor)
        .env("NEWTEXT", "{{ .Id ")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x.ww:2:1: unclosed action"), "{err}");
    assert_eq!(
        fs::read_to_string(s.site_file("mine", "etc/x.ww")).unwrap(),
        "{{ .Id }}\n"
    );
}

#[test]
fn output_dir_writes_rendered_trees() {
    let s = Site::new();
    let out = s.root().join("out");
    s.ok(&["overlay", "build", "-o", out.to_str().unwrap(), "n1"]);
    assert_eq!(
        fs::read_to_string(out.join("n1/base/etc/hostname")).unwrap(),
        "n1\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("n1/sys/etc/ifcfg-default")).unwrap(),
        "DEVICE=eth0\nONBOOT=true\n"
    );
    assert!(!out.join("n2").exists());
}

/// Every node's image pointers (system and runtime).
fn targets(s: &Site) -> Vec<PathBuf> {
    ["n1", "n2", "n3"]
        .iter()
        .filter(|n| s.pointer(n, "__SYSTEM__").exists())
        .flat_map(|n| [s.target(n, "__SYSTEM__"), s.target(n, "__RUNTIME__")])
        .collect()
}

/// Builds `s` again from nothing (no index, caches or images) and returns
/// the pointers, which must equal the incremental ones.
fn from_scratch(s: &Site) -> Vec<PathBuf> {
    fs::remove_dir_all(s.root().join("provision")).unwrap();
    s.ok(&["overlay", "build"]);
    targets(s)
}

#[test]
fn all_nodes_templates_rebuild_others_only_for_fields_they_reach() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    let rt2 = s.target("n2", "__RUNTIME__");
    let sys2 = s.target("n2", "__SYSTEM__");
    // Building one node sees the same node list as building all.
    let err = String::from_utf8_lossy(&s.wwctl(&["overlay", "build", "n1"]).stderr).into_owned();
    assert!(err.contains("built 0 images"), "{err}");

    // A comment is not read by the hosts template: n2 stays as it is.
    s.set_nodes(&NODES.replace(
        "  n1:\n    profiles: [default]\n",
        "  n1:\n    profiles: [default]\n    comment: changed\n",
    ));
    let err = String::from_utf8_lossy(&s.wwctl(&["overlay", "build"]).stderr).into_owned();
    assert!(err.contains("of 1 nodes"), "{err}");
    assert_eq!(s.target("n2", "__RUNTIME__"), rt2);
    let incremental = targets(&s);
    assert_eq!(from_scratch(&s), incremental);

    // An address is: every runtime image carries the new hosts file.
    s.set_nodes(&NODES.replace("ipaddr: 10.0.0.11", "ipaddr: 10.0.0.99"));
    s.ok(&["overlay", "build"]);
    assert_ne!(s.target("n2", "__RUNTIME__"), rt2);
    assert_eq!(s.target("n2", "__SYSTEM__"), sys2);
    assert!(text(&s.image("n2", "__RUNTIME__")["etc/hosts"]).contains("10.0.0.99 n1-default"));
    let incremental = targets(&s);
    assert_eq!(from_scratch(&s), incremental);

    // A new device name and a new node are seen by everyone.
    let more = NODES.replace("      ib:\n", "      ib2:\n")
        + "  n3:\n    profiles: [default]\n    network devices:\n      default:\n        ipaddr: 10.0.0.13\n";
    s.set_nodes(&more);
    s.ok(&["overlay", "build"]);
    let hosts = text(&s.image("n1", "__RUNTIME__")["etc/hosts"]).to_string();
    assert!(
        hosts.contains("10.1.0.12 n2-ib2") && hosts.contains("10.0.0.13 n3-default"),
        "{hosts}"
    );
    let incremental = targets(&s);
    assert_eq!(from_scratch(&s), incremental);
}

#[test]
fn node_cache_is_checked_and_never_trusted_blindly() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    let cache = s.root().join("provision/overlays/.nodes.cache");
    assert!(cache.exists(), "plain nodes.conf keeps a node cache");

    // A damaged cache is ignored: the build is still a correct no-op.
    let mut bytes = fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&cache, &bytes).unwrap();
    let err = String::from_utf8_lossy(&s.wwctl(&["overlay", "build"]).stderr).into_owned();
    assert!(err.contains("built 0 images"), "{err}");
    assert_ne!(
        fs::read(&cache).unwrap(),
        bytes,
        "the damaged cache was not rewritten"
    );

    // A profile change reaches every node through the text outside the entries.
    s.set_nodes(&NODES.replace("comment: from profile", "comment: profile two"));
    s.ok(&["overlay", "build"]);
    for n in ["n1", "n2"] {
        assert!(text(&s.image(n, "__SYSTEM__")["etc/node.conf"]).contains("comment=profile two"));
    }

    // A layout the entries cannot be cut from (an anchor) is parsed whole,
    // builds the same images and leaves no cache behind.
    let anchored = NODES.replace(
        "    comment: from profile\n",
        "    comment: &c from profile\n",
    );
    s.set_nodes(&anchored);
    s.ok(&["overlay", "build"]);
    assert!(!cache.exists());
    let incremental = targets(&s);
    assert_eq!(from_scratch(&s), incremental);
    assert!(!cache.exists());

    // A broken entry is reported with its line, as by every other command.
    s.set_nodes(&NODES.replace(
        "    profiles: [default]\n    network",
        "    profiles: [default\n    network",
    ));
    let out = s.wwctl(&["overlay", "build"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nodes.conf") && err.contains("line"), "{err}");
}

/// Incompressible bytes, so a file of them keeps its size in the image.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// The blob file name of `data`.
fn blob_name(data: &[u8]) -> String {
    use sha2::Digest;
    head::overlay::composite::blob_name(&sha2::Sha256::digest(data).into())
}

#[test]
fn large_shared_member_is_stored_once_and_served_joined() {
    let s = Site::new();
    let big = noise(200 * 1024, 7);
    let p = s.root().join("dist/base/rootfs/usr/bin/tool");
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, &big).unwrap();
    s.ok(&["overlay", "build", "--compress", "gz,zst"]);
    let blobs = s.root().join("provision/blobs");

    for (ext, zstd) in [("gz", false), ("zst", true)] {
        let ptr = |n: &str| {
            s.root()
                .join("provision/overlays")
                .join(n)
                .join(format!("__SYSTEM__.img.{ext}"))
        };
        let (b1, b2) = (
            ptr("n1").canonicalize().unwrap(),
            ptr("n2").canonicalize().unwrap(),
        );
        // Each node's blob is small: the 200 KiB file is not in it ...
        for b in [&b1, &b2] {
            let len = fs::metadata(b).unwrap().len();
            assert!(len < 16 * 1024, "{ext}: {} is {len} bytes", b.display());
        }
        // ... but in the image the node receives, whose digest names the blob.
        let image = s.image_bytes("n1", "__SYSTEM__", ext);
        assert_eq!(
            blob_name(&image),
            b1.file_name().unwrap().to_string_lossy(),
            "{ext}"
        );
        let raw = if zstd {
            zstd::decode_all(&image[..]).unwrap()
        } else {
            let mut raw = Vec::new();
            flate2::read::MultiGzDecoder::new(&image[..])
                .read_to_end(&mut raw)
                .unwrap();
            raw
        };
        let files = entries(&raw);
        assert_eq!(files["usr/bin/tool"].data, big, "{ext}");
        assert_eq!(files["etc/hostname"].data, b"n1\n", "{ext}");
    }
    // One copy of the shared part per compression, whatever the node count.
    let sizes: Vec<u64> = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(
        sizes.iter().filter(|&&l| l > 150 * 1024).count(),
        2,
        "{sizes:?}"
    );

    // A new shared file: new shared and system blobs, the old ones are
    // removed; the runtime images (other overlays) stay as they were.
    let before: Vec<String> = s.blobs().into_keys().collect();
    fs::write(&p, noise(200 * 1024, 8)).unwrap();
    s.ok(&["overlay", "build", "--compress", "gz,zst"]);
    let after: Vec<String> = s.blobs().into_keys().collect();
    let kept: Vec<&String> = before.iter().filter(|b| after.contains(b)).collect();
    assert_eq!(kept.len(), 2, "runtime gz and zst only: {kept:?}");
    assert_eq!(after.len(), before.len());
    assert_eq!(from_scratch_with(&s, &["--compress", "gz,zst"]), after);
}

/// Blob names after a build from nothing with `args`.
fn from_scratch_with(s: &Site, args: &[&str]) -> Vec<String> {
    fs::remove_dir_all(s.root().join("provision")).unwrap();
    let mut all = vec!["overlay", "build"];
    all.extend(args);
    s.ok(&all);
    s.blobs().into_keys().collect()
}

#[test]
fn a_build_without_a_usable_index_sweeps_blobs_it_does_not_use() {
    let s = Site::new();
    s.ok(&["overlay", "build"]);
    let blobs = s.root().join("provision/blobs");
    let used = s.blobs();
    let stale = blobs.join(blob_name(b"an image of an older format"));
    let legacy = blobs.join("sha256");
    fs::create_dir_all(&legacy).unwrap();
    fs::write(legacy.join("ab".repeat(32)), b"hex-named blob").unwrap();
    fs::write(&stale, b"an image of an older format").unwrap();
    fs::write(blobs.join(".blob.Xy12"), b"temporary of a killed build").unwrap();
    fs::write(blobs.join("README"), b"not ours to judge").unwrap();

    // With the index readable, unknown files are left alone.
    s.ok(&["overlay", "build"]);
    assert!(stale.exists() && legacy.exists());

    fs::write(s.root().join("provision/overlays/.index"), b"damaged").unwrap();
    s.ok(&["overlay", "build"]);
    assert!(!stale.exists());
    assert!(!legacy.exists(), "hex-named blobs of the older layout");
    assert!(!blobs.join(".blob.Xy12").exists());
    assert!(blobs.join("README").exists());
    let mut after = s.blobs();
    after.remove("README");
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        used.keys().collect::<Vec<_>>()
    );
    assert_eq!(text(&s.image("n1", "__SYSTEM__")["etc/hostname"]), "n1\n");
}
