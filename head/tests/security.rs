//! The head's node-identity rules over real sockets: `wwctl server` with
//! `warewulf: tls: true` in one network namespace, "nodes" in another
//! behind a veth pair (so the head's neighbour table is real), and curl as
//! the client. Needs root, `ip` and `curl`; `.ci/run` installs them.
//!
//! Checked: HTTPS with the cluster CA; the system overlay carries a node
//! token; node A cannot get node B's runtime overlay with its own token,
//! from B's address, or with B's MAC; plain HTTP never serves the runtime
//! overlay; path traversal on every HTTP route is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAC_A: &str = "52:54:00:aa:00:01";
const MAC_B: &str = "52:54:00:bb:00:02";
const HEAD: &str = "10.96.0.1";
const IP_A: &str = "10.96.0.11";
const IP_B: &str = "10.96.0.12";
const IP_STRANGER: &str = "10.96.0.50";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two namespaces: `h` (the head, `srv` = 10.96.0.1/24) and `n` (the nodes,
/// `cli` with A's, B's and a stranger's address); deleted on drop.
struct Net {
    head: String,
    node: String,
}

impl Net {
    fn new() -> Self {
        let id = std::process::id();
        let net = Net {
            head: format!("iwsech{id}"),
            node: format!("iwsecn{id}"),
        };
        let (h, n) = (net.head.as_str(), net.node.as_str());
        for args in [
            vec!["netns", "add", h],
            vec!["netns", "add", n],
            vec!["-n", h, "link", "set", "lo", "up"],
            vec!["-n", n, "link", "set", "lo", "up"],
            vec![
                "-n", h, "link", "add", "srv", "type", "veth", "peer", "name", "cli", "netns", n,
            ],
            vec!["-n", h, "addr", "add", "10.96.0.1/24", "dev", "srv"],
            vec!["-n", n, "link", "set", "cli", "address", MAC_A],
            vec!["-n", n, "addr", "add", "10.96.0.11/24", "dev", "cli"],
            vec!["-n", n, "addr", "add", "10.96.0.12/24", "dev", "cli"],
            vec!["-n", n, "addr", "add", "10.96.0.50/24", "dev", "cli"],
            vec!["-n", h, "link", "set", "srv", "up"],
            vec!["-n", n, "link", "set", "cli", "up"],
        ] {
            run("ip", &args);
        }
        net
    }

    /// Gives the node side another MAC and makes the head forget the old one.
    fn spoof_mac(&self, mac: &str) {
        run("ip", &["-n", &self.node, "link", "set", "cli", "down"]);
        run(
            "ip",
            &["-n", &self.node, "link", "set", "cli", "address", mac],
        );
        run("ip", &["-n", &self.node, "link", "set", "cli", "up"]);
        run("ip", &["-n", &self.head, "neigh", "flush", "dev", "srv"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.head, &self.node] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let st = Command::new(program).args(args).status().unwrap();
    assert!(st.success(), "{program} {args:?} failed");
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Site {
    dir: tempfile::TempDir,
    port: u16,
    tls_port: u16,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().display().to_string();
        let (port, tls_port) = (free_tcp_port(), free_tcp_port());
        fs::create_dir_all(dir.path().join("etc/warewulf")).unwrap();
        let conf = format!(
            "ipaddr: {HEAD}\nnetmask: 255.255.255.0\nwarewulf:\n  port: {port}\n  tls port: {tls_port}\n  tls: true\n  secure: false\n  autobuild overlays: false\ndhcp:\n  enabled: false\ntftp:\n  enabled: false\npaths:\n  sysconfdir: {r}/etc\n  localstatedir: {r}/var\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  wwoverlaydir: {r}/overlays\n  ipxesource: {r}/ipxe\n"
        );
        fs::write(dir.path().join("etc/warewulf/warewulf.conf"), conf).unwrap();
        let nodes = format!(
            "nodes:\n  n1:\n    network devices:\n      default:\n        hwaddr: {MAC_A}\n        ipaddr: {IP_A}\n  n2:\n    network devices:\n      default:\n        hwaddr: {MAC_B}\n        ipaddr: {IP_B}\n"
        );
        fs::write(dir.path().join("etc/warewulf/nodes.conf"), nodes).unwrap();
        for n in ["n1", "n2"] {
            let d = dir.path().join("provision/overlays").join(n);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("__SYSTEM__.img.gz"), system_overlay(n)).unwrap();
            fs::write(d.join("__RUNTIME__.img.gz"), format!("RUNTIME-{n}")).unwrap();
        }
        // n1's system overlay stored the way a large shared member is: a
        // shared blob, and a blob with a marker naming it plus the rest
        // (`overlay::composite`), so HTTP and HTTPS send it in two parts.
        let sys = system_overlay("n1");
        let (shared, own) = sys.split_at(10);
        let name = |b: &[u8]| {
            use sha2::Digest;
            head::overlay::composite::blob_name(&sha2::Sha256::digest(b).into())
        };
        let blobs = dir.path().join("provision/blobs");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(blobs.join(name(shared)), shared).unwrap();
        let mut blob =
            head::overlay::composite::marker(initramfs::compress::Compression::Gzip, &name(shared))
                .unwrap();
        blob.extend_from_slice(own);
        fs::write(blobs.join(name(&sys)), blob).unwrap();
        let ptr = dir.path().join("provision/overlays/n1/__SYSTEM__.img.gz");
        fs::remove_file(&ptr).unwrap();
        std::os::unix::fs::symlink(format!("../../blobs/{}", name(&sys)), &ptr).unwrap();
        Site {
            dir,
            port,
            tls_port,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn conf(&self) -> PathBuf {
        self.path().join("etc/warewulf/warewulf.conf")
    }

    fn ca(&self) -> PathBuf {
        self.path().join("etc/warewulf/tls/ca.crt")
    }

    fn wwctl(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wwctl"));
        c.arg("--warewulfconf").arg(self.conf());
        c
    }
}

/// A tiny gzip member standing in for a node's system overlay.
fn system_overlay(node: &str) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(format!("SYSTEM-{node}").as_bytes()).unwrap();
    e.finish().unwrap()
}

/// One curl answer.
struct Answer {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// `curl` from the node namespace, from source address `src`.
fn curl(net: &Net, site: &Site, src: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let out = site.path().join("curl.out");
    let hdr = site.path().join("curl.hdr");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.node, "curl", "-sS", "--path-as-is"])
        .args(["--max-time", "20", "--interface", src, "--cacert"])
        .arg(site.ca())
        .arg("-o")
        .arg(&out)
        .arg("-D")
        .arg(&hdr)
        .args(["-w", "%{http_code}"]);
    for (n, v) in headers {
        cmd.arg("-H").arg(format!("{n}: {v}"));
    }
    let o = cmd.arg(url).stderr(Stdio::inherit()).output().unwrap();
    let status = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    Answer {
        status,
        headers: fs::read_to_string(&hdr).unwrap_or_default(),
        body: fs::read(&out).unwrap_or_default(),
    }
}

fn https(site: &Site, path: &str) -> String {
    format!("https://{HEAD}:{}{path}", site.tls_port)
}

fn http(site: &Site, path: &str) -> String {
    format!("http://{HEAD}:{}{path}", site.port)
}

fn start(net: &Net, site: &Site) -> Server {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.head])
        .arg(env!("CARGO_BIN_EXE_wwctl"))
        .arg("--warewulfconf")
        .arg(site.conf())
        .args(["-v", "server"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(site.path().join("server.log")).unwrap());
    let server = Server(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = curl(net, site, IP_A, &https(site, "/status"), &[]);
        if a.status == 200 {
            return server;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS never came up:\n{}",
            fs::read_to_string(site.path().join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The token from the extra member after `original` in a system answer.
fn token_in(body: &[u8], original: &[u8]) -> String {
    assert!(body.len() > original.len(), "no member appended");
    assert_eq!(&body[..original.len()], original, "overlay bytes changed");
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(&body[original.len()..])
        .read_to_end(&mut cpio)
        .unwrap();
    let mut r = initramfs::newc::Reader::new(&cpio[..]);
    while let Some(h) = r.next_entry().unwrap() {
        if h.name == b"warewulf/token" {
            assert_eq!(h.perm, 0o600);
            let mut t = String::new();
            r.data().read_to_string(&mut t).unwrap();
            return t.trim().to_owned();
        }
    }
    panic!("no warewulf/token in the appended member");
}

#[test]
fn tls_node_identity_and_tokens_keep_node_secrets_to_their_node() {
    let site = Site::new();
    let out = site
        .wwctl()
        .args(["configure", "tls", "--create"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let net = Net::new();
    let _server = start(&net, &site);
    let a_path = |stage: &str| format!("/{stage}/{MAC_A}");
    let b_path = |stage: &str| format!("/{stage}/{MAC_B}");

    // Single-stage over plain HTTP (iPXE): A gets its system overlay with a
    // token member appended; over HTTPS likewise.
    let sys_a = system_overlay("n1");
    let plain = curl(&net, &site, IP_A, &http(&site, &a_path("system")), &[]);
    assert_eq!(plain.status, 200);
    let token_a = token_in(&plain.body, &sys_a);
    let tls = curl(&net, &site, IP_A, &https(&site, &a_path("system")), &[]);
    assert_eq!(tls.status, 200);
    token_in(&tls.body, &sys_a);
    // Two-stage asks for the token as a header: the bytes stay the overlay's.
    let via = curl(
        &net,
        &site,
        IP_A,
        &https(&site, &a_path("system")),
        &[("x-warewulf-token-via", "header")],
    );
    assert_eq!(via.status, 200);
    assert_eq!(via.body, sys_a);
    assert!(via.header("x-warewulf-token").is_some());

    // A's runtime overlay: HTTPS and A's token only.
    let tok = [("x-warewulf-token", token_a.as_str())];
    let ok = curl(&net, &site, IP_A, &https(&site, &a_path("runtime")), &tok);
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body, b"RUNTIME-n1");
    let rotated = ok.header("x-warewulf-token").expect("a rotated token");
    let again = curl(
        &net,
        &site,
        IP_A,
        &https(&site, &a_path("runtime")),
        &[("x-warewulf-token", &rotated)],
    );
    assert_eq!(again.status, 200, "the rotated token works");
    let no_token = curl(&net, &site, IP_A, &https(&site, &a_path("runtime")), &[]);
    assert_eq!(no_token.status, 403);
    let over_http = curl(&net, &site, IP_A, &http(&site, &a_path("runtime")), &tok);
    assert_eq!(over_http.status, 403, "runtime overlay over plain HTTP");

    // A asks for B's runtime overlay with A's token: wrong address.
    let a_for_b = curl(&net, &site, IP_A, &https(&site, &b_path("runtime")), &tok);
    assert_eq!(a_for_b.status, 403);
    assert!(!a_for_b.body.starts_with(b"RUNTIME"));
    // ... from B's address, but the neighbour table maps it to A's MAC.
    let wrong_mac = curl(&net, &site, IP_B, &https(&site, &b_path("runtime")), &tok);
    assert_eq!(wrong_mac.status, 403);
    let sys_b = curl(&net, &site, IP_B, &https(&site, &b_path("system")), &[]);
    assert_eq!(sys_b.status, 403, "B's system overlay to A's MAC");
    // ... from an address no node has.
    let stranger = curl(
        &net,
        &site,
        IP_STRANGER,
        &https(&site, &a_path("system")),
        &[],
    );
    assert_eq!(stranger.status, 403);
    // ... with B's address and B's MAC spoofed, A's token still fails.
    net.spoof_mac(MAC_B);
    let spoofed = curl(&net, &site, IP_B, &https(&site, &b_path("runtime")), &tok);
    assert_eq!(spoofed.status, 403, "A's token is not B's");
    assert!(!spoofed.body.starts_with(b"RUNTIME"));
    net.spoof_mac(MAC_A);

    // Path traversal on every route, over both listeners: refused, and never
    // a file from outside the artifact store.
    fs::write(site.path().join("secret"), "TOP-SECRET").unwrap();
    for route in [
        "ipxe",
        "kernel",
        "image",
        "system",
        "runtime",
        "initramfs",
        "kmods",
        "manifest",
        "provision",
        "efiboot",
        "status",
    ] {
        for evil in [
            "/../../../../secret",
            "/..%2f..%2f..%2f..%2fsecret",
            "/%2e%2e/%2e%2e/%2e%2e/secret",
            "?stage=system&wwid=../../secret",
        ] {
            for url in [
                https(&site, &format!("/{route}{evil}")),
                http(&site, &format!("/{route}{evil}")),
            ] {
                let a = curl(&net, &site, IP_A, &url, &[]);
                let text = String::from_utf8_lossy(&a.body);
                assert!(!text.contains("TOP-SECRET"), "{url} leaked the file");
                if route != "status" || evil.starts_with('/') {
                    assert!((400..500).contains(&a.status), "{url}: {} {text}", a.status);
                }
            }
        }
    }
}
