//! `wwctl power`, `wwctl node sensors` and `wwctl ssh` end to end, without
//! QEMU, inside network namespaces this test creates:
//!
//! - real BMCs: `ipmi_sim` (package `openipmi`) on the namespace's loopback,
//!   driven by the shipped `ipmitool.tmpl` and the real `ipmitool`; the
//!   "machine" behind each BMC is a `sleep` its `startcmd` runs, so power
//!   state really changes. A wrong password, a node without a BMC address
//!   and a BMC that never answers each fail alone, with their reason;
//! - a site template naming another tool, with the fan-out limit observed
//!   from the commands themselves;
//! - a real OpenSSH `sshd` on two addresses for `wwctl ssh`.
//!
//! Needs root, `ip`, `ipmi_sim`, `ipmitool`, `sshd`, `ssh`, `ssh-keygen`;
//! `.ci/run` installs them. (The QEMU version, where `power on` boots a VM
//! through the head, is `qemu-tests/tests/power.rs`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A network namespace with `lo` up (and extra addresses on it), deleted on drop.
struct Netns(String);

impl Netns {
    fn new(addrs: &[&str]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "iwpw{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"]);
        for a in addrs {
            run("ip", &["-n", &ns.0, "addr", "add", a, "dev", "lo"]);
        }
        ns
    }

    fn exec(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.0, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process this test started in its own process group; the whole group
/// (e.g. ipmi_sim and the `startcmd` it ran) is killed on drop.
struct Group(Child);

impl Group {
    fn spawn(mut cmd: Command, log: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(fs::File::create(log).unwrap())
            .stderr(fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        Group(child)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = i32::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) on a process group this test created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temp site whose datadir and sysconfdir are inside it.
fn site(nodes: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().display().to_string();
    fs::create_dir_all(dir.path().join("etc/warewulf")).unwrap();
    fs::write(
        dir.path().join("etc/warewulf/warewulf.conf"),
        format!(
            "ipaddr: 10.97.6.254\nnetmask: 255.255.255.0\npaths:\n  sysconfdir: {r}/etc\n  datadir: {r}/share\n  localstatedir: {r}/var\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  wwchrootdir: {r}/chroots\n"
        ),
    )
    .unwrap();
    fs::write(dir.path().join("etc/warewulf/nodes.conf"), nodes).unwrap();
    dir
}

/// `wwctl --warewulfconf <site> ARGS` inside `ns`.
fn wwctl(ns: &Netns, site: &Path, args: &[&str]) -> Output {
    ns.exec(env!("CARGO_BIN_EXE_wwctl"))
        .arg("--warewulfconf")
        .arg(site.join("etc/warewulf/warewulf.conf"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// JSON outcomes of a `--json` run, by node.
fn outcomes(out: &Output) -> serde_json::Map<String, Value> {
    let list: Vec<Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(out)));
    list.into_iter()
        .map(|o| (o["node"].as_str().unwrap().to_owned(), o))
        .collect()
}

/// One ipmi_sim BMC on 127.0.0.1:`port` (user admin/secret); `power on`
/// runs `sleep 600` as the machine. Chassis control needs the VM interface
/// (`serial … codec VM`, on `port + 1`), although no VM connects to it here.
fn bmc(ns: &Netns, dir: &Path, name: &str, port: u16) -> Group {
    let state = dir.join(format!("{name}-state"));
    fs::create_dir_all(&state).unwrap();
    let conf = dir.join(format!("{name}.conf"));
    fs::write(
        &conf,
        format!(
            "name \"{name}\"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 {vm_port} codec VM
  startcmd \"sleep 600\"
  startnow false
  user 2 true \"admin\" \"secret\" admin 10 none md2 md5 straight
",
            vm_port = port + 1
        ),
    )
    .unwrap();
    let emu = dir.join(format!("{name}.emu"));
    fs::write(
        &emu,
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .unwrap();
    let mut cmd = ns.exec("ipmi_sim");
    cmd.arg("-c")
        .arg(&conf)
        .arg("-f")
        .arg(&emu)
        .arg("-s")
        .arg(&state)
        .arg("-n");
    let sim = Group::spawn(cmd, &dir.join(format!("{name}.log")));
    // Ready when it answers a status query.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ns
            .exec("ipmitool")
            .args(["-I", "lan", "-H", "127.0.0.1", "-p", &port.to_string()])
            .args(["-U", "admin", "-P", "secret", "chassis", "power", "status"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "ipmi_sim {name} did not answer");
        std::thread::sleep(Duration::from_millis(200));
    }
    sim
}

const BMC_NODES: &str = "nodeprofiles:
  bmc:
    ipmi:
      username: admin
      password: secret
      interface: lan
      ipaddr: 127.0.0.1
nodes:
  n1:
    profiles: [bmc]
    ipmi: {port: '19623'}
  n2:
    profiles: [bmc]
    ipmi: {port: '19633'}
  n3:
    profiles: [bmc]
    ipmi: {port: '19623', password: wrong}
  n4: {}
  n5:
    profiles: [bmc]
    ipmi: {port: '19699'}
";

#[test]
fn power_runs_ipmitool_against_real_bmcs_and_reports_each_node() {
    let ns = Netns::new(&[]);
    let site = site(BMC_NODES);
    let _a = bmc(&ns, site.path(), "bmc1", 19623);
    let _b = bmc(&ns, site.path(), "bmc2", 19633);
    let s = site.path();

    // Both machines start off; the wrong password and the node without a
    // BMC fail alone, each with its reason, and the command fails.
    let out = wwctl(&ns, s, &["power", "status", "n[1-4]", "--json"]);
    assert!(!out.status.success(), "{:?}", text(&out));
    let o = outcomes(&out);
    assert_eq!(o["n1"]["power"], "off", "{o:?}");
    assert_eq!(o["n2"]["power"], "off", "{o:?}");
    assert_eq!(o["n3"]["ok"], false);
    let why = o["n3"]["error"].as_str().unwrap();
    assert!(
        why.starts_with("ipmitool exited with status 1: ")
            && why.contains("Unable to establish")
            && why.ends_with("IPMI username and password)"),
        "{why}"
    );
    assert_eq!(
        o["n4"]["error"],
        "no IPMI address (set it with `wwctl node set --ipmiaddr`)"
    );
    assert!(
        text(&out).1.contains("2 of 4 nodes failed: n[3-4]"),
        "{:?}",
        text(&out)
    );

    // On: the BMCs start their machines and say so.
    let out = wwctl(&ns, s, &["power", "on", "n[1-2]"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.starts_with("NODE  RESULT  OUTPUT\n"), "{stdout}");
    for n in ["n1", "n2"] {
        assert!(
            stdout.contains(&format!("{n}    ok      Chassis Power Control: Up/On")),
            "{stdout}"
        );
    }
    let o = outcomes(&wwctl(&ns, s, &["power", "status", "n[1-2]", "--json"]));
    assert_eq!(
        (&o["n1"]["power"], &o["n2"]["power"]),
        (&"on".into(), &"on".into())
    );

    // Off for one of them only. ipmi_sim reports "off" once the machine
    // process has gone, a moment after it answered.
    let out = wwctl(&ns, s, &["power", "off", "n1"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    let stdout = loop {
        let out = wwctl(&ns, s, &["power", "status", "n1", "n2"]);
        let (stdout, _) = text(&out);
        assert!(out.status.success(), "{stdout}");
        if stdout.contains("n1    ok      on") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        break stdout;
    };
    assert!(
        stdout.contains("n1    ok      off    Chassis Power is off"),
        "{stdout}"
    );
    assert!(
        stdout.contains("n2    ok      on     Chassis Power is on"),
        "{stdout}"
    );

    // Cycle reaches the running machine (reset needs a VM behind the BMC:
    // qemu-tests/tests/power.rs); sensors answer.
    let out = wwctl(&ns, s, &["power", "cycle", "n2"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = wwctl(&ns, s, &["node", "sensors", "n[1-2]"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("n1:\n") && stdout.contains("\nn2:\n"),
        "{stdout}"
    );

    // A BMC that never answers is given up after --timeout.
    let started = Instant::now();
    let out = wwctl(
        &ns,
        s,
        &["power", "status", "n5", "--timeout", "2", "--json"],
    );
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15));
    let o = outcomes(&out);
    assert!(
        o["n5"]["error"]
            .as_str()
            .unwrap()
            .starts_with("ipmitool gave no answer within 2 s and was killed"),
        "{o:?}"
    );

    // --show renders without running; the console command is `sol activate`.
    let out = wwctl(&ns, s, &["power", "off", "n2", "--show"]);
    assert!(
        text(&out)
            .0
            .contains("ipmitool -I lan -H 127.0.0.1 -p 19633 -U admin -P secret chassis power off"),
        "{:?}",
        text(&out)
    );
    let out = wwctl(&ns, s, &["node", "console", "n3", "--show"]);
    assert_eq!(
        text(&out).0,
        "ipmitool -I lan -H 127.0.0.1 -p 19623 -U admin -P wrong sol activate\n"
    );
    let o = outcomes(&wwctl(&ns, s, &["power", "status", "n2", "--json"]));
    assert_eq!(o["n2"]["power"], "on", "--show must not run anything");

    // Patterns that match nothing are an error, as in `node set`.
    let out = wwctl(&ns, s, &["power", "on", "gpu1"]);
    assert!(
        text(&out).1.contains("no node matches \"gpu1\""),
        "{:?}",
        text(&out)
    );
}

#[test]
fn site_template_swaps_the_tool_and_fanout_bounds_parallelism() {
    let ns = Netns::new(&[]);
    let mut nodes = String::from("nodeprofiles: {}\nnodes:\n");
    for i in 1..=8 {
        nodes.push_str(&format!(
            "  n{i}:\n    ipmi:\n      ipaddr: 10.0.0.{i}\n      template: probe.tmpl\n      tags: {{rack: r{i}}}\n"
        ));
    }
    let site = site(&nodes);
    let probe = site.path().join("probe");
    fs::create_dir_all(&probe).unwrap();
    // The "tool" records how many copies of itself run at once.
    let script = site.path().join("probe.sh");
    fs::write(
        &script,
        "#!/bin/sh\nd=\"$1\"; shift\nmkdir \"$d/run.$$\"\nls \"$d\" | grep -c '^run' >> \"$d/counts\"\nsleep 0.3\nrmdir \"$d/run.$$\"\necho \"$@\"\n",
    )
    .unwrap();
    let bmc_dir = site.path().join("share/warewulf/bmc");
    fs::create_dir_all(&bmc_dir).unwrap();
    fs::write(
        bmc_dir.join("probe.tmpl"),
        format!(
            "sh {} {} {{{{ .Cmd }}}} {{{{ .Ipaddr }}}} {{{{ .Tags.rack | quote }}}}\n",
            script.display(),
            probe.display()
        ),
    )
    .unwrap();
    let out = wwctl(
        &ns,
        site.path(),
        &["power", "cycle", "n[1-8]", "--fanout", "3", "--json"],
    );
    assert!(out.status.success(), "{:?}", text(&out));
    let o = outcomes(&out);
    for i in 1..=8 {
        assert_eq!(
            o[&format!("n{i}")]["output"],
            format!("PowerCycle 10.0.0.{i} r{i}")
        );
    }
    let counts: Vec<usize> = fs::read_to_string(probe.join("counts"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 8);
    assert!(counts.iter().all(|c| (1..=3).contains(c)), "{counts:?}");
}

/// ssh keys, known_hosts and an sshd on 10.97.6.1 and 10.97.6.2.
struct SshFixture {
    _sshd: Group,
    rsh: String,
}

fn sshd(ns: &Netns, dir: &Path) -> SshFixture {
    let keygen = |path: &Path| {
        run(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                path.to_str().unwrap(),
            ],
        )
    };
    let host_key = dir.join("host_ed25519");
    let user_key = dir.join("id_ed25519");
    keygen(&host_key);
    keygen(&user_key);
    fs::copy(user_key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
    let host_pub = fs::read_to_string(host_key.with_extension("pub")).unwrap();
    let known = dir.join("known_hosts");
    fs::write(
        &known,
        format!("10.97.6.1 {host_pub}10.97.6.2 {host_pub}10.97.6.3 {host_pub}"),
    )
    .unwrap();
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "ListenAddress 10.97.6.1:22\nListenAddress 10.97.6.2:22\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
            host_key.display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    // sshd's privilege separation folder (the ssh service makes it at boot).
    fs::create_dir_all("/run/sshd").unwrap();
    let mut cmd = ns.exec("/usr/sbin/sshd");
    cmd.args(["-D", "-e", "-f"]).arg(&config);
    let log = dir.join("sshd.log");
    let group = Group::spawn(cmd, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::read_to_string(log.with_extension("err"))
        .unwrap_or_default()
        .matches("Server listening on")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "sshd did not start: {}",
            fs::read_to_string(log.with_extension("err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rsh = format!(
        "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR -l root",
        user_key.display(),
        known.display()
    );
    SshFixture { _sshd: group, rsh }
}

#[test]
fn ssh_runs_in_parallel_with_prefixes_and_an_exit_summary() {
    let ns = Netns::new(&["10.97.6.1/32", "10.97.6.2/32"]);
    let site = site(
        "nodeprofiles: {}
nodes:
  n1:
    network devices:
      default: {ipaddr: 10.97.6.1}
  n2:
    network devices:
      default: {ipaddr: 10.97.6.2}
  n3:
    network devices:
      default: {ipaddr: 10.97.6.3}
  n4: {}
",
    );
    let fx = sshd(&ns, site.path());
    let s = site.path();
    let remote = r#"set -- $SSH_CONNECTION; echo "answered on $3"; echo "to stderr" >&2; case $3 in 10.97.6.2) exit 3;; esac"#;

    let out = wwctl(&ns, s, &["ssh", "--rsh", &fx.rsh, "n[1-4]", "--", remote]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}{stderr}");
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["n1: answered on 10.97.6.1", "n2: answered on 10.97.6.2"]
    );
    for expected in [
        "n1: to stderr\n",
        "n2: to stderr\n",
        "exit 0: n1\n",
        "exit 3: n2\n",
        "exit 255: n3\n",
        "not run (no network device): n4\n",
        "3 of 4 nodes failed: n[2-4]",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} missing in:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("n3: ssh: connect to host 10.97.6.3"),
        "{stderr}"
    );

    // Only the nodes that answer: success, and Warewulf's form without `--`.
    let out = wwctl(
        &ns,
        s,
        &[
            "ssh", "--rsh", &fx.rsh, "--fanout", "1", "n1", "uname", "-s",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout, "n1: Linux\n");
    assert_eq!(stderr, "exit 0: n1\n");

    // --dryrun prints the command per node and connects nowhere.
    let out = wwctl(&ns, s, &["ssh", "-n", "n[1-2]", "--", "echo", "a b"]);
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "n1: ssh 10.97.6.1 echo 'a b'",
            "n2: ssh 10.97.6.2 echo 'a b'"
        ]
    );
}
