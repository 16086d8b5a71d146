//! `wwctl server` end to end: the embedded TFTP server against the real
//! tftp-hpa client on loopback, and the embedded DHCP server against
//! busybox's `udhcpc` inside a network namespace this test creates (so no
//! DHCP packet ever reaches a real network). Needs root, `ip`, `tftp`
//! (tftp-hpa) and `busybox`; `.ci/run` installs them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `wwctl server`, killed (by PID) and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace with a veth pair `srv` (10.97.0.1/24) ↔ `cli`,
/// deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("iw{tag}{}", std::process::id());
        let ns = Netns(name.clone());
        for args in [
            vec!["netns", "add", &name],
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec![
                "-n", &name, "link", "add", "srv", "type", "veth", "peer", "name", "cli",
            ],
            vec!["-n", &name, "addr", "add", "10.97.0.1/24", "dev", "srv"],
            vec!["-n", &name, "link", "set", "srv", "up"],
            vec!["-n", &name, "link", "set", "cli", "up"],
        ] {
            run("ip", &args);
        }
        ns
    }

    fn set_client_mac(&self, mac: &str) {
        run("ip", &["-n", &self.0, "link", "set", "cli", "down"]);
        run("ip", &["-n", &self.0, "link", "set", "cli", "address", mac]);
        run("ip", &["-n", &self.0, "link", "set", "cli", "up"]);
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

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temp site: warewulf.conf (with `extra` appended), nodes.conf, paths inside.
fn site(extra: &str, nodes: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().display().to_string();
    fs::create_dir_all(dir.path().join("etc/warewulf")).unwrap();
    fs::create_dir_all(dir.path().join("ipxe")).unwrap();
    fs::create_dir_all(dir.path().join("tftpboot/rpi")).unwrap();
    let conf = format!(
        "ipaddr: 10.97.0.1\nnetmask: 255.255.255.0\n{extra}\npaths:\n  sysconfdir: {r}/etc\n  localstatedir: {r}/var\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  ipxesource: {r}/ipxe\n"
    );
    fs::write(dir.path().join("etc/warewulf/warewulf.conf"), conf).unwrap();
    fs::write(dir.path().join("etc/warewulf/nodes.conf"), nodes).unwrap();
    dir
}

fn conf(site: &Path) -> PathBuf {
    site.join("etc/warewulf/warewulf.conf")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(mut cmd: Command, site: &Path) -> Server {
    let child = cmd
        .arg(env!("CARGO_BIN_EXE_wwctl"))
        .arg("--warewulfconf")
        .arg(conf(site))
        .args(["-v", "server"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(site.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    Server(child)
}

fn server_log(site: &Path) -> String {
    fs::read_to_string(site.join("server.log")).unwrap_or_default()
}

#[test]
fn tftp_serves_ipxe_and_pi_files_and_refuses_traversal() {
    let port = free_udp_port();
    let http = free_tcp_port();
    let s = site(
        &format!(
            "warewulf:\n  port: {http}\ndhcp:\n  enabled: false\ntftp:\n  enabled: true\n  port: {port}\n  tftproot: {}/tftpboot\n",
            "SITE"
        ),
        "nodes: {}\n",
    );
    let root = s.path();
    let text = fs::read_to_string(conf(root))
        .unwrap()
        .replace("SITE", &root.display().to_string());
    fs::write(conf(root), text).unwrap();
    let ipxe: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("ipxe/undionly.kpxe"), &ipxe).unwrap();
    fs::write(root.join("tftpboot/rpi/start4.elf"), b"pi firmware").unwrap();
    fs::write(root.join("secret"), b"do not serve").unwrap();

    let mut plain = Command::new("env");
    plain.arg("--");
    let _server = start(plain, root);

    let get = |remote: &str, local: &Path| {
        Command::new("tftp")
            .args([
                "127.0.0.1",
                &port.to_string(),
                "-m",
                "binary",
                "-c",
                "get",
                remote,
            ])
            .arg(local)
            .output()
            .unwrap()
    };
    let out = root.join("got.kpxe");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = get("undionly.kpxe", &out);
        if fs::read(&out).is_ok_and(|b| b == ipxe) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no TFTP transfer; server log:\n{}",
            server_log(root)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let pi = root.join("got.elf");
    get("/1234abcd/start4.elf", &pi);
    assert_eq!(fs::read(&pi).unwrap(), b"pi firmware");

    for bad in ["../secret", "/../../secret", "warewulf/../../secret"] {
        let dest = root.join("stolen");
        let _ = fs::remove_file(&dest);
        let o = get(bad, &dest);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            fs::read(&dest).map(|b| b.is_empty()).unwrap_or(true),
            "{bad}: file content leaked: {text}"
        );
        assert!(
            text.contains("Access violation") || text.contains("rror"),
            "{bad}: {text}"
        );
    }
}

/// Writes a udhcpc event script that records the environment of `bound`.
fn udhcpc_script(dir: &Path) -> PathBuf {
    let path = dir.join("udhcpc.sh");
    let out = dir.join("lease.env");
    fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && env > {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs udhcpc in `ns` until it binds; returns the lease environment.
fn dhcp_lease(ns: &Netns, dir: &Path, extra: &[&str]) -> HashMap<String, String> {
    let script = udhcpc_script(dir);
    let env_file = dir.join("lease.env");
    let _ = fs::remove_file(&env_file);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ns
            .exec("busybox")
            .args([
                "udhcpc", "-i", "cli", "-f", "-q", "-n", "-t", "3", "-T", "1", "-s",
            ])
            .arg(&script)
            .args(extra)
            .output()
            .unwrap();
        if let Ok(text) = fs::read_to_string(&env_file) {
            return text
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "no lease: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

const NODE_MAC: &str = "52:54:00:12:34:56";
const STRANGER_MAC: &str = "52:54:00:aa:bb:cc";

fn dhcp_site(nodes: &str) -> tempfile::TempDir {
    site(
        "dhcp:\n  enabled: true\n  range start: 10.97.0.100\n  range end: 10.97.0.110\n  interfaces: [srv]\ntftp:\n  enabled: false\n",
        nodes,
    )
}

#[test]
fn dhcp_reservations_ranges_boot_files_and_restarts() {
    let nodes = format!(
        "nodeprofiles:\n  default: {{}}\nnodes:\n  n01:\n    profiles: [default]\n    network devices:\n      default:\n        hwaddr: {NODE_MAC}\n        ipaddr: 10.97.0.11\n"
    );
    let s = dhcp_site(&nodes);
    let root = s.path();
    let ns = Netns::new("dh");
    let server = start(ns.exec("env"), root);

    // A known node PXE-booting on BIOS: its reserved address and undionly.
    ns.set_client_mac(NODE_MAC);
    let pxe = [
        "-V",
        "PXEClient:Arch:00000:UNDI:002001",
        "-x",
        "0x5d:0000",
        "-O",
        "bootfile",
    ];
    let lease = dhcp_lease(&ns, root, &pxe);
    assert_eq!(lease["ip"], "10.97.0.11", "{lease:?}\n{}", server_log(root));
    assert_eq!(lease["hostname"], "n01");
    assert_eq!(lease["siaddr"], "10.97.0.1");
    assert_eq!(lease["boot_file"], "undionly.kpxe");

    // The same node, now as iPXE: the script URL.
    let ipxe = ["-x", "0x4d:69505845", "-O", "bootfile"];
    let lease = dhcp_lease(&ns, root, &ipxe);
    assert_eq!(
        lease
            .get("bootfile")
            .or(lease.get("boot_file"))
            .map(String::as_str),
        Some("http://10.97.0.1:9873/ipxe/${mac:hexhyp}?assetkey=${asset}&uuid=${uuid}"),
        "{lease:?}"
    );

    // An unknown machine gets the first address of the range.
    ns.set_client_mac(STRANGER_MAC);
    let lease = dhcp_lease(&ns, root, &[]);
    assert_eq!(lease["ip"], "10.97.0.100");
    assert!(!lease.contains_key("hostname"));

    // The lease survives a restart: the log has it and the same address comes back.
    std::thread::sleep(Duration::from_millis(500));
    drop(server);
    let log = fs::read_to_string(root.join("var/warewulf/dhcp.leases")).unwrap();
    assert!(
        log.contains(&format!("bind {STRANGER_MAC} 10.97.0.100")),
        "{log}"
    );
    let _server = start(ns.exec("env"), root);
    ns.set_client_mac("52:54:00:aa:bb:cd");
    assert_eq!(
        dhcp_lease(&ns, root, &[])["ip"],
        "10.97.0.101",
        "the old lease is still held"
    );
    ns.set_client_mac(STRANGER_MAC);
    assert_eq!(dhcp_lease(&ns, root, &[])["ip"], "10.97.0.100");
}

#[test]
fn dhcp_discovery_writes_the_mac_into_nodes_conf_and_reloads() {
    let nodes = "nodes:\n  n01:\n    discoverable: \"true\"\n    network devices:\n      default:\n        ipaddr: 10.97.0.21\n";
    let s = dhcp_site(nodes);
    let root = s.path();
    let ns = Netns::new("dd");
    let _server = start(ns.exec("env"), root);
    ns.set_client_mac(STRANGER_MAC);

    // First contact: a dynamic address, and the MAC is recorded.
    let _ = dhcp_lease(&ns, root, &[]);
    let path = root.join("etc/warewulf/nodes.conf");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fs::read_to_string(&path).unwrap().contains(STRANGER_MAC) {
        assert!(
            Instant::now() < deadline,
            "MAC not recorded:\n{}",
            server_log(root)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("discoverable"), "{text}");

    // After the automatic reload the machine is node n01 with its address.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lease = dhcp_lease(&ns, root, &[]);
        if lease["ip"] == "10.97.0.21" {
            assert_eq!(lease["hostname"], "n01");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {lease:?}\n{}",
            server_log(root)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Regression: the discovery task used to outlive the shutdown signal, so
/// SIGTERM logged "shutting down" and the process never exited.
#[test]
fn sigterm_stops_every_service_and_exits_zero() {
    let s = dhcp_site("nodes: {}\n");
    let root = s.path();
    let ns = Netns::new("st");
    let mut server = start(ns.exec("env"), root);
    // Let it bind its sockets.
    ns.set_client_mac(STRANGER_MAC);
    let _ = dhcp_lease(&ns, root, &[]);
    let pid = server.0.id().to_string();
    run("kill", &["-TERM", &pid]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running after SIGTERM:\n{}",
            server_log(root)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", server_log(root));
    assert!(server_log(root).contains("shutting down"));
}
