//! Integration tests for the node database, driving the real `wwctl` binary
//! against a temporary site whose `warewulf.conf` points every path into it.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const WWCTL: &str = env!("CARGO_BIN_EXE_wwctl");
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nodes");

/// A site in a temp folder: `warewulf.conf` plus `etc/warewulf/nodes.conf`.
struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/warewulf")).unwrap();
        let conf = format!(
            "ipaddr: 10.0.0.1/24\npaths:\n  sysconfdir: {r}/etc\n  localstatedir: {r}/var/lib\n  \
             wwoverlaydir: {r}/overlays\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  \
             cachedir: {r}/cache\n",
            r = root.display()
        );
        fs::write(root.join("warewulf.conf"), conf).unwrap();
        Self { dir }
    }

    fn with_fixture(name: &str) -> Self {
        let site = Self::new();
        fs::copy(Path::new(FIXTURES).join(name), site.nodes_conf()).unwrap();
        site
    }

    fn nodes_conf(&self) -> PathBuf {
        self.dir.path().join("etc/warewulf/nodes.conf")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WWCTL);
        c.args(args)
            .env("WAREWULFCONF", self.dir.path().join("warewulf.conf"))
            .env_remove("RUST_LOG")
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "wwctl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs, requires failure and an unchanged nodes.conf; returns stderr.
    fn fails_unchanged(&self, args: &[&str]) -> String {
        let before = fs::read(self.nodes_conf()).ok();
        let out = self.run(args);
        assert!(!out.status.success(), "wwctl {args:?} should have failed");
        let after = fs::read(self.nodes_conf()).ok();
        assert_eq!(before, after, "wwctl {args:?} changed nodes.conf");
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

fn assert_contains(haystack: &str, needles: &[&str]) {
    for n in needles {
        assert!(haystack.contains(n), "expected {n:?} in:\n{haystack}");
    }
}

#[test]
fn add_set_list_delete_with_profiles() {
    let site = Site::new();
    site.ok(&[
        "profile",
        "add",
        "default",
        "--comment",
        "base",
        "-M",
        "255.255.255.0",
    ]);
    site.ok(&[
        "node",
        "add",
        "n[01-04]",
        "-I",
        "10.0.0.11",
        "--ipmiaddr",
        "10.1.0.11",
    ]);
    let nodes = site.json(&["node", "list", "--json"]);
    for (i, name) in ["n01", "n02", "n03", "n04"].iter().enumerate() {
        let n = &nodes[name];
        assert_eq!(
            n["profiles"][0], "default",
            "{name} gets the default profile"
        );
        assert_eq!(
            n["network devices"]["default"]["ipaddr"],
            format!("10.0.0.{}", 11 + i)
        );
        assert_eq!(n["network devices"]["default"]["netmask"], "255.255.255.0");
        assert_eq!(n["ipmi"]["ipaddr"], format!("10.1.0.{}", 11 + i));
    }

    site.ok(&[
        "node",
        "set",
        "-y",
        "n0[2-3]",
        "--tagadd",
        "rack=7",
        "-A",
        "quiet,console=ttyS0",
    ]);
    let all = site.ok(&["node", "list", "-a", "n02"]);
    assert_contains(
        &all,
        &[
            "Tags[rack]",
            "Kernel.Args",
            "quiet,console=ttyS0",
            "Comment",
            "default",
        ],
    );
    let short = site.ok(&["node", "list"]);
    assert_contains(&short, &["NODE NAME", "PROFILES", "n04"]);

    site.ok(&["node", "unset", "-y", "n02", "--tag", "rack"]);
    let nodes = site.json(&["node", "list", "--json", "n02"]);
    assert!(nodes["n02"].get("tags").is_none(), "{nodes}");

    // Without --yes and with no answer on stdin, delete is refused.
    let err = site.fails_unchanged(&["node", "delete", "n01"]);
    assert_contains(&err, &["aborted"]);
    site.ok(&["node", "delete", "-y", "n0[1-2]"]);
    let nodes = site.json(&["node", "list", "--json"]);
    assert_eq!(nodes.as_object().unwrap().len(), 2);

    let yaml = site.ok(&["node", "list", "--yaml", "n03"]);
    assert_contains(&yaml, &["n03:", "ipaddr: 10.0.0.13"]);
}

#[test]
fn profile_commands() {
    let site = Site::new();
    site.ok(&["profile", "add", "base", "-O", "wwinit,hosts"]);
    site.ok(&[
        "profile",
        "add",
        "gpu",
        "-P",
        "base",
        "-O",
        "nvidia,~hosts",
        "--comment",
        "GPUs",
    ]);
    site.ok(&["profile", "set", "-y", "gpu", "--image", "rocky-gpu"]);
    site.ok(&["node", "add", "g1", "-P", "gpu"]);
    let n = site.json(&["node", "list", "--json", "g1"]);
    assert_eq!(
        n["g1"]["system overlay"],
        serde_json::json!(["wwinit", "nvidia"])
    );
    assert_eq!(n["g1"]["image name"], "rocky-gpu");
    let list = site.ok(&["profile", "list"]);
    assert_contains(&list, &["base", "gpu", "GPUs"]);
    let all = site.ok(&["profile", "list", "-a", "gpu"]);
    assert_contains(&all, &["ImageName", "rocky-gpu"]);
    site.ok(&["profile", "unset", "-y", "gpu", "--image"]);
    let p = site.json(&["profile", "list", "--json", "gpu"]);
    assert!(p["gpu"].get("image name").is_none());
    // gpu still names base: deleting it would leave a dangling reference.
    let err = site.fails_unchanged(&["profile", "delete", "-y", "base"]);
    assert_contains(
        &err,
        &[
            "profile gpu",
            "field \"profiles\"",
            "unknown profile \"base\"",
        ],
    );
    site.ok(&["profile", "unset", "-y", "gpu", "--profile"]);
    site.ok(&["profile", "delete", "-y", "base"]);
    let p = site.json(&["profile", "list", "--json"]);
    assert_eq!(p.as_object().unwrap().len(), 1);
}

#[test]
fn fifty_concurrent_sets_all_land() {
    let site = Site::new();
    site.ok(&["node", "add", "n[01-50]", "-I", "10.0.1.1"]);
    let children: Vec<_> = (1..=50)
        .map(|i| {
            let name = format!("n{i:02}");
            site.cmd(&[
                "node",
                "set",
                "-y",
                &name,
                "--comment",
                &format!("c{i}"),
                "--tagadd",
                &format!("k{i}=v"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let nodes = site.json(&["node", "list", "--json"]);
    for i in 1..=50 {
        let n = &nodes[format!("n{i:02}")];
        assert_eq!(n["comment"], format!("c{i}"), "n{i:02}");
        assert_eq!(n["tags"][format!("k{i}")], "v");
    }
    let leftovers: Vec<_> = fs::read_dir(site.nodes_conf().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn fixtures_round_trip() {
    for fixture in ["basic.conf", "nested.conf", "legacy.conf"] {
        let site = Site::with_fixture(fixture);
        let nodes_before = site.json(&["node", "list", "--json"]);
        let profiles_before = site.json(&["profile", "list", "--json"]);
        let all_before = site.ok(&["node", "list", "-a"]);
        // Force a rewrite through our serialiser without changing anything that stays.
        site.ok(&["profile", "add", "zz-scratch"]);
        site.ok(&["profile", "delete", "-y", "zz-scratch"]);
        let written = fs::read_to_string(site.nodes_conf()).unwrap();
        assert!(!written.contains("zz-scratch"));
        assert_eq!(
            site.json(&["node", "list", "--json"]),
            nodes_before,
            "{fixture}"
        );
        assert_eq!(
            site.json(&["profile", "list", "--json"]),
            profiles_before,
            "{fixture}"
        );
        assert_eq!(site.ok(&["node", "list", "-a"]), all_before, "{fixture}");
        // A second rewrite is byte-identical to the first.
        site.ok(&["profile", "add", "zz-scratch"]);
        site.ok(&["profile", "delete", "-y", "zz-scratch"]);
        assert_eq!(
            fs::read_to_string(site.nodes_conf()).unwrap(),
            written,
            "{fixture}"
        );
    }
}

#[test]
fn nested_fixture_merges_like_warewulf() {
    let site = Site::with_fixture("nested.conf");
    let n = site.json(&["node", "list", "--json"]);
    // gpu → default: lists appended, ~ignition removed, right-most scalar wins.
    assert_eq!(
        n["gpu01"]["system overlay"],
        serde_json::json!(["wwinit", "hosts", "nvidia"])
    );
    assert_eq!(n["gpu01"]["image name"], "rocky-gpu");
    assert_eq!(n["gpu01"]["tags"]["role"], "gpu");
    assert_eq!(n["gpu01"]["tags"]["site"], "lab");
    assert_eq!(n["gpu01"]["tags"]["rack"], "12");
    assert_eq!(
        n["gpu01"]["comment"], "0755",
        "numbers-looking values stay strings"
    );
    assert_eq!(
        n["gpu01"]["network devices"]["ib"]["netmask"],
        "255.255.0.0"
    );
    // Node-level ~quiet drops the inherited kernel arg.
    assert_eq!(
        n["gpu02"]["kernel"]["args"],
        serde_json::json!(["crashkernel=no", "nvidia-drm.modeset=1", "console=ttyS0"])
    );
    assert_eq!(n["gpu02"]["cluster name"], "no");
    assert_eq!(n["gpu02"]["ipmi"]["write"], "no");
    // mixed = [gpu, storage, ~default]: default's own fields are gone, but
    // gpu's and storage's remain.
    assert_eq!(n["mix01"]["image name"], "rocky-gpu");
    assert!(n["mix01"].get("cluster name").is_none());
    assert_eq!(n["mix01"]["disks"]["/dev/sda"]["wipe_table"], true);
    assert_eq!(n["mix01"]["network devices"]["extra"]["vlan id"], 42);
    let all = site.ok(&["node", "list", "-a", "gpu02"]);
    assert_contains(&all, &["Kernel.Args", "default,gpu,gpu02", "SUPERSEDED"]);
    // Unknown keys survive a write.
    site.ok(&["node", "set", "-y", "st01", "--comment", "touched"]);
    let text = fs::read_to_string(site.nodes_conf()).unwrap();
    assert_contains(&text, &["future field:", "vlan id: 42", "comment: touched"]);
}

#[test]
fn bad_mac_ip_netmask_are_refused() {
    let site = Site::with_fixture("basic.conf");
    let err = site.fails_unchanged(&["node", "set", "-y", "n1", "-H", "00:16:zz:00:00:01"]);
    assert_contains(
        &err,
        &[
            "node n1",
            "network devices.default.hwaddr",
            "malformed MAC address",
        ],
    );
    let err = site.fails_unchanged(&["node", "set", "-y", "n2", "-I", "10.0.0.300"]);
    assert_contains(
        &err,
        &[
            "node n2",
            "network devices.default.ipaddr",
            "malformed IP address",
        ],
    );
    let err = site.fails_unchanged(&[
        "node",
        "set",
        "-y",
        "n2",
        "--netname",
        "ib",
        "-M",
        "255.0.255.0",
    ]);
    assert_contains(
        &err,
        &["node n2", "network devices.ib.netmask", "malformed netmask"],
    );
    let err = site.fails_unchanged(&[
        "profile",
        "set",
        "-y",
        "default",
        "--ipminetmask",
        "300.0.0.0",
    ]);
    assert_contains(
        &err,
        &["profile default", "ipmi.netmask", "malformed netmask"],
    );
    let err = site.fails_unchanged(&["node", "set", "-y", "n1", "--onboot", "maybe"]);
    assert_contains(&err, &["--onboot", "maybe"]);
}

#[test]
fn duplicate_addresses_are_refused() {
    let site = Site::with_fixture("basic.conf");
    let err = site.fails_unchanged(&["node", "add", "n9", "-H", "00:16:3E:00:00:01"]);
    assert_contains(
        &err,
        &[
            "node n",
            "hwaddr",
            "00:16:3e:00:00:01",
            "already used by node n",
        ],
    );
    let err = site.fails_unchanged(&["node", "set", "-y", "n3", "-I", "10.0.0.11"]);
    assert_contains(
        &err,
        &[
            "node n3",
            "network devices.default.ipaddr",
            "10.0.0.11",
            "already used by node n1",
        ],
    );
    let err = site.fails_unchanged(&["node", "add", "n1"]);
    assert_contains(&err, &["node n1 already exists"]);
}

#[test]
fn unknown_profile_and_cycles_are_refused() {
    let site = Site::with_fixture("nested.conf");
    let err = site.fails_unchanged(&["node", "set", "-y", "gpu01", "-P", "gpu,ghost"]);
    assert_contains(
        &err,
        &["node gpu01", "\"profiles\"", "unknown profile \"ghost\""],
    );
    let err = site.fails_unchanged(&["profile", "set", "-y", "default", "-P", "mixed"]);
    assert_contains(
        &err,
        &["profile cycle", "default", "mixed", "field \"profiles\""],
    );
    // ~name entries are not references.
    site.ok(&["node", "set", "-y", "gpu01", "-P", "gpu,~storage"]);
}

#[test]
fn bad_hostlists_are_refused() {
    let site = Site::with_fixture("basic.conf");
    let err = site.fails_unchanged(&["node", "add", "n[05-01]"]);
    assert_contains(&err, &["n[05-01]", "runs backwards"]);
    let err = site.fails_unchanged(&["node", "add", "n[01-"]);
    assert_contains(&err, &["n[01-", "unclosed"]);
    let err = site.fails_unchanged(&["node", "set", "-y", "x[a-b]", "--comment", "c"]);
    assert_contains(&err, &["x[a-b]", "bad range"]);
    let err = site.fails_unchanged(&["node", "set", "-y", "nosuch", "--comment", "c"]);
    assert_contains(&err, &["no node matches", "nosuch"]);
}

#[test]
fn broken_nodes_conf_reports_line_and_column() {
    let site = Site::new();
    fs::write(
        site.nodes_conf(),
        "nodes:\n  n1:\n    comment: x\n    network devices: [\n",
    )
    .unwrap();
    let path = site.nodes_conf().display().to_string();
    let err = site.fails_unchanged(&["node", "list"]);
    assert_contains(&err, &[&format!("{path}:")]);
    let err = site.fails_unchanged(&["node", "set", "-y", "n1", "--comment", "y"]);
    assert_contains(&err, &[&format!("{path}:4:22:"), "network devices"]);
    fs::write(site.nodes_conf(), "nodes:\n  n1:\n    network devices: 7\n").unwrap();
    let err = site.fails_unchanged(&["node", "list"]);
    assert_contains(&err, &[&format!("{path}:3:"), "network devices"]);
}

#[test]
fn import_validates_with_positions() {
    let site = Site::with_fixture("basic.conf");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.yaml");
    fs::write(
        &file,
        "n7:\n  profiles: [default]\n  network devices:\n    default:\n      hwaddr: 00:16:3e:00:00:99\n      ipaddr: 10.0.0.17\nn8:\n  network devices:\n    default:\n      hwaddr: not-a-mac\n",
    )
    .unwrap();
    let f = file.display().to_string();
    let err = site.fails_unchanged(&["node", "import", &f]);
    assert_contains(
        &err,
        &[
            &format!("{f}:10:7: node n8"),
            "network devices.default.hwaddr",
            "malformed MAC",
        ],
    );

    fs::write(&file, "n7:\n  comment: [unclosed\n").unwrap();
    let err = site.fails_unchanged(&["node", "import", &f]);
    assert_contains(&err, &[&format!("{f}:")]);

    fs::write(&file, "n7:\n  comment: imported\n  profiles: [default]\n").unwrap();
    site.ok(&["node", "import", &f]);
    let err = site.fails_unchanged(&["node", "import", &f]);
    assert_contains(&err, &["already exist", "n7"]);
    site.ok(&["node", "import", "-y", &f]);
    let n = site.json(&["node", "list", "--json", "n7"]);
    assert_eq!(n["n7"]["comment"], "imported");

    // export → import is the identity.
    let exported = site.ok(&["node", "export"]);
    fs::write(&file, &exported).unwrap();
    let before = fs::read(site.nodes_conf()).unwrap();
    site.ok(&["node", "import", "-y", &f]);
    assert_eq!(fs::read(site.nodes_conf()).unwrap(), before);
}

#[test]
fn edit_validates_before_saving() {
    let site = Site::with_fixture("basic.conf");
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    // An "editor" that breaks n2's MAC address.
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/00:16:3e:00:00:02/00:16:3e:00:00:0x/' \"$1\"\n",
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = fs::read(site.nodes_conf()).unwrap();
    let out = site
        .cmd(&["node", "edit", "n2"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(
        &err,
        &[
            "wwctl-edit-",
            ".yaml:",
            "node n2",
            "network devices.default.hwaddr",
            "malformed MAC",
        ],
    );
    assert_eq!(fs::read(site.nodes_conf()).unwrap(), before);

    // A valid edit lands.
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/10.0.0.12/10.0.0.22/' \"$1\"\n",
    )
    .unwrap();
    let out = site
        .cmd(&["node", "edit", "n2"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = site.json(&["node", "list", "--json", "n2"]);
    assert_eq!(n["n2"]["network devices"]["default"]["ipaddr"], "10.0.0.22");
}

#[test]
fn profile_edit_cycle_is_located() {
    let site = Site::with_fixture("nested.conf");
    let dir = tempfile::tempdir().unwrap();
    let editor = dir.path().join("editor.sh");
    fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^  comment: base of everything/  profiles: [mixed]\\n  comment: x/' \"$1\"\n",
    )
    .unwrap();
    fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = fs::read(site.nodes_conf()).unwrap();
    let out = site
        .cmd(&["profile", "edit", "default"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(
        &err,
        &[".yaml:3:3: profile default: field \"profiles\": profile cycle default -> mixed"],
    );
    assert_eq!(fs::read(site.nodes_conf()).unwrap(), before);

    // An editor that changes nothing leaves the file alone.
    fs::write(&editor, "#!/bin/sh\ntrue\n").unwrap();
    let out = site
        .cmd(&["profile", "edit"])
        .env("EDITOR", &editor)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(fs::read(site.nodes_conf()).unwrap(), before);
}

#[test]
fn import_unknown_profile_is_located() {
    let site = Site::with_fixture("basic.conf");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.yaml");
    fs::write(&file, "n7:\n  comment: c\n  profiles: [default, nosuch]\n").unwrap();
    let f = file.display().to_string();
    let err = site.fails_unchanged(&["node", "import", &f]);
    assert_contains(
        &err,
        &[&format!(
            "{f}:3:3: node n7: field \"profiles\": unknown profile \"nosuch\""
        )],
    );
}

#[test]
fn warewulf_conf_unknown_keys_warn_only() {
    let site = Site::new();
    let conf = site.dir.path().join("warewulf.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str("no such key: 1\nwarewulf:\n  port: 9999\n  bogus: true\n");
    fs::write(&conf, text).unwrap();
    let out = site.run(&["node", "list"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_contains(
        &err,
        &[
            &conf.display().to_string(),
            "\"no such key\"",
            "\"warewulf.bogus\"",
        ],
    );
}

#[test]
fn help_fits_80_columns() {
    for args in [
        &["node", "add", "--help"][..],
        &["node", "set", "--help"],
        &["node", "list", "--help"],
        &["node", "unset", "--help"],
        &["profile", "set", "--help"],
    ] {
        let site = Site::new();
        let out = site.ok(args);
        for line in out.lines() {
            assert!(line.chars().count() <= 80, "{args:?}: {line:?}");
        }
    }
}
