//! Test helpers: a minimal head that serves a runtime overlay with `ETag`
//! and `304`, records every request (peer port, bytes both ways), can play
//! `secure: true` and can break on purpose; overlay archive builders; and a
//! way to run the `wwclient` binary against it.

// Test support: a panic here is how a test reports failure.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use initramfs::newc::{Header, Writer};
use sha2::{Digest, Sha256};

pub const WWID: &str = "52:54:00:12:34:56";
pub const ASSET_KEY: &str = "rack 7/u12";

/// How the test head misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Answer every runtime request with this status.
    Status(u16),
    /// Announce the full length, send half the body, close.
    Truncate,
    /// Close the connection without answering.
    Close,
}

/// One request as the head saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub peer_port: u16,
    pub status: u16,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub body: Vec<u8>,
}

impl Logged {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct HeadState {
    archive: Vec<u8>,
    etag: String,
    secure: bool,
    /// Play a head that sends `Last-Modified` instead of `ETag`.
    dates_only: bool,
    fail: Option<Failure>,
    log: Vec<Logged>,
}

/// A minimal head on 127.0.0.1 (threads live until the test process ends).
pub struct TestHead {
    pub addr: SocketAddr,
    state: Arc<Mutex<HeadState>>,
}

impl TestHead {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(HeadState::default()));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        TestHead { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `archive` from now on (`ETag` = its sha256).
    pub fn serve(&self, archive: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        s.etag = hex::encode(Sha256::digest(&archive));
        s.archive = archive;
    }

    pub fn etag(&self) -> String {
        self.state.lock().unwrap().etag.clone()
    }

    pub fn set_secure(&self, secure: bool) {
        self.state.lock().unwrap().secure = secure;
    }

    pub fn set_dates_only(&self, on: bool) {
        self.state.lock().unwrap().dates_only = on;
    }

    pub fn set_fail(&self, fail: Option<Failure>) {
        self.state.lock().unwrap().fail = fail;
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn runtime_requests(&self) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.target.starts_with("/runtime/"))
            .collect()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Waits until `pred` holds for the log.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Logged]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if pred(&self.log()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pred(&self.log())
    }
}

fn handle(conn: TcpStream, state: &Mutex<HeadState>) -> std::io::Result<()> {
    let peer_port = conn.peer_addr()?.port();
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut bytes_in = 0;
    let mut line = String::new();
    bytes_in += reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        bytes_in += reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    bytes_in += len;

    let (archive, etag, secure, fail, dates_only) = {
        let s = state.lock().unwrap();
        (
            s.archive.clone(),
            s.etag.clone(),
            s.secure,
            s.fail,
            s.dates_only,
        )
    };
    // With dates only, the "date" is derived from the content's digest.
    let date = format!(
        "Sun, 22 Nov 2026 03:{}:00 GMT",
        &etag.get(..2).unwrap_or("00")
    );
    let validator = if dates_only {
        format!("Last-Modified: {date}\r\n")
    } else {
        format!("ETag: \"{etag}\"\r\n")
    };
    let ims = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("if-modified-since"))
        .map(|(_, v)| v.clone());
    let mut out = conn;
    let common = "Accept-Ranges: bytes\r\nCache-Control: no-cache\r\n\
                  Date: Sun, 22 Nov 2026 03:00:00 GMT\r\nConnection: close\r\n";
    let (status, response): (u16, Vec<u8>) = if method == "POST" && target.starts_with("/status/") {
        (
            204,
            format!("HTTP/1.1 204 No Content\r\n{common}\r\n").into_bytes(),
        )
    } else if method == "GET" && target.starts_with("/runtime/") {
        let inm = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("if-none-match"))
            .map(|(_, v)| v.clone());
        if secure && peer_port >= 1024 {
            let msg = "secure mode: the runtime overlay is served to privileged ports only\n";
            (
                403,
                format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n{common}\r\n{msg}",
                    msg.len()
                )
                .into_bytes(),
            )
        } else if let Some(f) = fail {
            match f {
                Failure::Status(code) => (
                    code,
                    format!("HTTP/1.1 {code} Broken\r\nContent-Length: 7\r\n{common}\r\nbroken\n")
                        .into_bytes(),
                ),
                Failure::Close => (0, Vec::new()),
                Failure::Truncate => {
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"{etag}\"\r\n{common}\r\n",
                        archive.len()
                    )
                    .into_bytes();
                    r.extend_from_slice(&archive[..archive.len() / 2]);
                    (200, r)
                }
            }
        } else if (!dates_only && inm.as_deref() == Some(&format!("\"{etag}\"")))
            || (dates_only && ims.as_deref() == Some(&date))
        {
            (
                304,
                format!("HTTP/1.1 304 Not Modified\r\n{validator}{common}\r\n").into_bytes(),
            )
        } else {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\
                 {validator}{common}\r\n",
                archive.len()
            )
            .into_bytes();
            r.extend_from_slice(&archive);
            (200, r)
        }
    } else {
        (
            404,
            format!("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n{common}\r\n").into_bytes(),
        )
    };
    state.lock().unwrap().log.push(Logged {
        method,
        target,
        headers,
        peer_port,
        status,
        bytes_in,
        bytes_out: response.len(),
        body,
    });
    out.write_all(&response)?;
    out.flush()?;
    let _ = out.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// What an overlay entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    Dir,
    Link(String),
}

/// One overlay entry: kind, permissions, owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub node: Node,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

/// An overlay as a map path → item (paths relative, no leading `/`).
#[derive(Clone, Debug, Default)]
pub struct Overlay(pub BTreeMap<String, Item>);

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn file(mut self, path: &str, perm: u32, data: impl AsRef<[u8]>) -> Self {
        self.0.insert(
            path.into(),
            Item {
                node: Node::File(data.as_ref().to_vec()),
                perm,
                uid: 0,
                gid: 0,
            },
        );
        self
    }
    pub fn owned(mut self, path: &str, uid: u32, gid: u32) -> Self {
        let item = self.0.get_mut(path).expect("owned() after adding the path");
        item.uid = uid;
        item.gid = gid;
        self
    }
    pub fn dir(mut self, path: &str, perm: u32) -> Self {
        self.0.insert(
            path.into(),
            Item {
                node: Node::Dir,
                perm,
                uid: 0,
                gid: 0,
            },
        );
        self
    }
    pub fn link(mut self, path: &str, target: &str) -> Self {
        self.0.insert(
            path.into(),
            Item {
                node: Node::Link(target.into()),
                perm: 0o777,
                uid: 0,
                gid: 0,
            },
        );
        self
    }
    pub fn without(mut self, path: &str) -> Self {
        self.0.remove(path);
        self
    }

    /// The newc archive, as the head builds it: a `.` entry first, sorted paths.
    pub fn newc(&self) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.append_bytes(&Header::dir(".", 0o755), &[]).unwrap();
        for (path, item) in &self.0 {
            let (mut h, data): (Header, &[u8]) = match &item.node {
                Node::File(d) => (Header::file(path.as_str(), item.perm, d.len() as u64), d),
                Node::Dir => (Header::dir(path.as_str(), item.perm), &[]),
                Node::Link(t) => (Header::symlink(path.as_str(), t.len() as u64), t.as_bytes()),
            };
            h.uid = item.uid;
            h.gid = item.gid;
            h.ino = w.next_ino();
            w.append_bytes(&h, data).unwrap();
        }
        w.finish().unwrap()
    }

    pub fn gz(&self) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&self.newc()).unwrap();
        e.finish().unwrap()
    }

    pub fn zst(&self) -> Vec<u8> {
        zstd::encode_all(&self.newc()[..], 3).unwrap()
    }

    /// Asserts every entry is on disk under `root` exactly as described.
    pub fn assert_applied(&self, root: &Path) {
        for (path, item) in &self.0 {
            let p = root.join(path);
            let meta = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{path}: {e}"));
            match &item.node {
                Node::File(d) => {
                    assert!(meta.is_file(), "{path} is a file");
                    assert_eq!(&fs::read(&p).unwrap(), d, "{path} content");
                    assert_eq!(meta.permissions().mode() & 0o7777, item.perm, "{path} mode");
                }
                Node::Dir => assert!(meta.is_dir(), "{path} is a directory"),
                Node::Link(t) => {
                    assert!(meta.file_type().is_symlink(), "{path} is a symlink");
                    assert_eq!(
                        fs::read_link(&p).unwrap(),
                        PathBuf::from(t),
                        "{path} target"
                    );
                }
            }
            assert_eq!(
                (meta.uid(), meta.gid()),
                (item.uid, item.gid),
                "{path} owner"
            );
        }
    }
}

/// Paths of one simulated node.
pub struct TestNode {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
}

impl TestNode {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let config = dir.path().join("wwinit.conf");
        fs::create_dir_all(&root).unwrap();
        fs::write(&config, "").unwrap();
        TestNode {
            _dir: dir,
            root,
            state,
            config,
        }
    }

    /// The `wwclient` command for this node and `head`, without `--once`.
    pub fn command(&self, head: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_wwclient"));
        c.args([
            "--server",
            head,
            "--wwid",
            WWID,
            "--asset-key",
            ASSET_KEY,
            "--debug",
        ])
        .arg("--config")
        .arg(&self.config)
        .arg("--root")
        .arg(&self.root)
        .arg("--state-dir")
        .arg(&self.state)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM");
        c
    }

    /// Runs `wwclient --once` with extra arguments.
    pub fn once(&self, head: &str, extra: &[&str]) -> Output {
        let out = self
            .command(head)
            .arg("--once")
            .args(extra)
            .output()
            .unwrap();
        eprintln!(
            "--- wwclient --once {extra:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn spawn(&self, head: &str, extra: &[&str]) -> Child {
        self.command(head)
            .args(extra)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Names under the root starting with `.wwclient~` (temporaries).
    pub fn temporaries(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let ft = e.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(e.path());
                }
                if e.file_name().to_string_lossy().starts_with(".wwclient~") {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

/// Sends `sig` to a child process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of our own child.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill({}, {sig})", child.id());
}

/// Waits for a child to exit, killing it after `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
