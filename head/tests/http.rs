//! Integration tests for the HTTP service over real sockets: `wwctl image
//! build` makes an image, `wwctl server` serves it, and a raw HTTP/1.1
//! client checks keep-alive, pipelining, `Range`, `HEAD`, the `sendfile`
//! path and a clean SIGTERM. (Route-by-route checks live next to the router,
//! in `src/serve/http/tests.rs`.)
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WWCTL: &str = env!("CARGO_BIN_EXE_wwctl");
const MAC: &str = "aa:bb:cc:dd:ee:01";

/// A temp site with one node and one built image, and its running server.
struct Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wwctl(conf: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(WWCTL);
    c.args(args)
        .env("WAREWULFCONF", conf)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let port = free_port();
        fs::create_dir_all(r.join("etc/warewulf")).unwrap();
        let rootfs = r.join("chroots/img/rootfs");
        fs::create_dir_all(rootfs.join("boot")).unwrap();
        fs::write(rootfs.join("boot/vmlinuz-6.1.0"), b"kernel").unwrap();
        // Incompressible content, so the archive spans many sendfile calls.
        let mut noise = Vec::with_capacity(3 << 20);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while noise.len() < 3 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        fs::write(rootfs.join("noise"), &noise).unwrap();
        // A site overlay with a large shared file and a node template: its
        // images are stored as the shared blob plus each node's own member.
        let big = r.join("overlays/big/rootfs");
        fs::create_dir_all(big.join("etc")).unwrap();
        fs::write(big.join("shared.bin"), &noise[..256 << 10]).unwrap();
        fs::write(big.join("etc/hostname.ww"), "{{ .Id }}\n").unwrap();
        let conf = r.join("warewulf.conf");
        fs::write(
            &conf,
            format!(
                "ipaddr: 127.0.0.1\nwarewulf:\n  port: {port}\n  secure: false\n\
                 dhcp:\n  enabled: false\ntftp:\n  enabled: false\npaths:\n  sysconfdir: {r}/etc\n  \
                 localstatedir: {r}/var\n  wwchrootdir: {r}/chroots\n  wwprovisiondir: {r}/provision\n  \
                 wwoverlaydir: {r}/overlays\n  cachedir: {r}/cache\n",
                r = r.display()
            ),
        )
        .unwrap();
        fs::write(
            r.join("etc/warewulf/nodes.conf"),
            format!("nodeprofiles: {{}}\nnodes:\n  n1:\n    image name: img\n    system overlay: [big]\n    runtime overlay: [big]\n    network devices:\n      default:\n        hwaddr: {MAC}\n"),
        )
        .unwrap();
        for args in [&["image", "build", "img"][..], &["overlay", "build"]] {
            let out = wwctl(&conf, args).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let child = wwctl(&conf, &["server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self { dir, port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "wwctl server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn image(&self) -> Vec<u8> {
        fs::read(self.path("provision/images/img.img.gz")).unwrap()
    }

    /// n1's system image as `wwctl overlay image` assembles it.
    fn system_overlay(&self) -> Vec<u8> {
        let conf = self.path("warewulf.conf");
        let out = wwctl(&conf, &["overlay", "image", "n1"]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn connect(&self) -> BufReader<TcpStream> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        BufReader::new(s)
    }
}

/// One parsed response.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response; `head_only` for answers to HEAD.
fn read_resp(conn: &mut BufReader<TcpStream>, head_only: bool) -> Resp {
    let mut line = String::new();
    conn.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        conn.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').unwrap();
        headers.push((n.to_owned(), v.trim().to_owned()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only && status != 304 {
        let len: usize = resp.header("content-length").unwrap().parse().unwrap();
        resp.body = vec![0; len];
        conn.read_exact(&mut resp.body).unwrap();
    }
    resp
}

fn send(conn: &mut BufReader<TcpStream>, req: &str) {
    conn.get_mut().write_all(req.as_bytes()).unwrap();
}

#[test]
fn serves_artifacts_over_keep_alive_with_ranges_and_stops_on_sigterm() {
    let server = Server::start();
    let image = server.image();
    let n = image.len();
    let mut c = server.connect();

    // Pipelined: three requests written at once, answered in order on one connection.
    send(
        &mut c,
        &format!(
            "GET /image/{MAC} HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n\
             HEAD /image/{mh} HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /image?wwid={MAC} HTTP/1.1\r\nHost: x\r\n\r\n",
            mh = MAC.replace(':', "-")
        ),
    );
    let r = read_resp(&mut c, false);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{n}").as_str())
    );
    assert_eq!(r.body, &image[100..200]);
    let r = read_resp(&mut c, true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(n.to_string().as_str()));
    let etag = r.header("etag").unwrap().to_owned();
    let r = read_resp(&mut c, false);
    assert_eq!(r.status, 200);
    assert!(r.body == image, "full download differs");

    // Suffix range, conditional GET, unsatisfiable range, then small routes.
    send(
        &mut c,
        &format!("GET /image/{MAC} HTTP/1.1\r\nRange: bytes=-10\r\n\r\n"),
    );
    assert_eq!(read_resp(&mut c, false).body, &image[n - 10..]);
    send(
        &mut c,
        &format!("GET /image/{MAC} HTTP/1.1\r\nIf-None-Match: {etag}\r\n\r\n"),
    );
    assert_eq!(read_resp(&mut c, false).status, 304);
    send(
        &mut c,
        &format!("GET /image/{MAC} HTTP/1.1\r\nRange: bytes={n}-\r\n\r\n"),
    );
    let r = read_resp(&mut c, false);
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some(format!("bytes */{n}").as_str()))
    );
    send(&mut c, &format!("GET /ipxe/{MAC} HTTP/1.1\r\n\r\n"));
    let r = read_resp(&mut c, false);
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body)
            .contains(&format!("set base http://127.0.0.1:{}", server.port))
    );
    send(&mut c, "GET /kernel/aa-bb-cc-dd-ee-99 HTTP/1.1\r\n\r\n");
    assert_eq!(read_resp(&mut c, false).status, 404);
    let report = r#"{"stage":"wwinit","detail":"socket test"}"#;
    send(
        &mut c,
        &format!(
            "POST /status/{MAC} HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{report}",
            report.len()
        ),
    );
    assert_eq!(read_resp(&mut c, true).status, 204);
    send(&mut c, "GET /status HTTP/1.1\r\nConnection: close\r\n\r\n");
    let r = read_resp(&mut c, false);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["nodes"]["n1"]["stage"], "wwinit");
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "the server closed after Connection: close");

    // A composite overlay image: the shared blob, then the node's bytes,
    // both by sendfile; a range across the seam.
    let system = server.system_overlay();
    let blob = fs::canonicalize(server.path("provision/overlays/n1/__SYSTEM__.img.gz")).unwrap();
    assert!(
        fs::metadata(&blob).unwrap().len() < 64 << 10,
        "stored without the shared part"
    );
    let marker = head::overlay::composite::MARKER_MAX;
    let shared_len = system.len() - (fs::metadata(&blob).unwrap().len() as usize - marker);
    let mut c = server.connect();
    send(&mut c, &format!("GET /system/{MAC} HTTP/1.1\r\n\r\n"));
    let r = read_resp(&mut c, false);
    assert_eq!(r.status, 200);
    assert!(r.body == system, "composite download differs");
    let etag = r.header("etag").unwrap().trim_matches('"');
    let name: [u8; 32] = hex::decode(etag).unwrap().try_into().unwrap();
    assert_eq!(
        head::overlay::composite::blob_name(&name),
        blob.file_name().unwrap().to_string_lossy()
    );
    let (a, b) = (shared_len - 10, shared_len + 9);
    send(
        &mut c,
        &format!("GET /system/{MAC} HTTP/1.1\r\nRange: bytes={a}-{b}\r\n\r\n"),
    );
    let r = read_resp(&mut c, false);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &system[a..=b]);

    // Garbage gets a 400 and a closed connection.
    let mut c = server.connect();
    send(&mut c, "BLAH\r\n\r\n");
    assert_eq!(read_resp(&mut c, false).status, 400);

    // SIGTERM: the server stops on its own, cleanly.
    let mut server = server;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            assert!(status.success(), "wwctl server exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "wwctl server ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
