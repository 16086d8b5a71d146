//! A small blocking HTTP/1.1 client for the node protocol: `GET` with
//! `Range` resumption, exponential backoff with jitter, `Retry-After`, and a
//! `POST` for status reports, to an IPv4 head (stage 1 has no resolver):
//! plain HTTP as Warewulf, or HTTPS verified against the cluster CA when
//! the node has one ([`crate::tls`]).
//!
//! Runtime overlay downloads come from a privileged source port when
//! possible, so the head's `secure` rule (runtime overlay only to ports
//! < 1024) is met; other requests use ordinary ports.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::cmdline::Server;
use crate::tls::Conn;

/// Connect and per-read timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Status reports must not hold up the boot.
const REPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Buffer over the socket.
const SOCKET_BUF: usize = 256 * 1024;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Errors of HTTP transfers.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("bad URL {0:?} (want http://<ipv4>[:port]/path)")]
    Url(String),
    #[error("connecting to {0}")]
    Connect(SocketAddr, #[source] io::Error),
    #[error("talking to {0}")]
    Io(String, #[source] io::Error),
    #[error("malformed response from {0}: {1}")]
    Protocol(String, String),
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: gave up after {attempts} attempts; last error: {last}")]
    GaveUp {
        url: String,
        attempts: u32,
        last: String,
    },
}

/// An `http://` URL with an IPv4 host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    pub addr: SocketAddrV4,
    pub path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, addr) = (crate::tls::scheme(), crate::tls::target(self.addr));
        write!(f, "{scheme}://{addr}{}", self.path)
    }
}

impl Url {
    /// `http://a.b.c.d[:port][/path]`.
    pub fn parse(s: &str) -> Result<Url, HttpError> {
        let bad = || HttpError::Url(s.to_owned());
        let rest = s.strip_prefix("http://").ok_or_else(bad)?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (hostport, 80),
        };
        let ip: Ipv4Addr = host.parse().map_err(|_| bad())?;
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        Ok(Url {
            addr: SocketAddrV4::new(ip, port),
            path: path.to_owned(),
        })
    }

    /// `path_or_url` on `server`, or as is when absolute.
    pub fn on(server: &Server, path_or_url: &str) -> Result<Url, HttpError> {
        if path_or_url.starts_with("http://") {
            return Url::parse(path_or_url);
        }
        let path = if path_or_url.starts_with('/') {
            path_or_url.to_owned()
        } else {
            format!("/{path_or_url}")
        };
        Url::parse(&format!("http://{}:{}{path}", server.host, server.port))
    }
}

/// Retry schedule: `initial × 2^attempt`, capped at `max`, scaled by a
/// jitter factor in [0.5, 1.0), never less than the server's `Retry-After`;
/// retries stop once `budget` has passed since the first attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub budget: Duration,
}

impl Backoff {
    /// The schedule for downloads with a total `budget`.
    pub fn with_budget(budget: Duration) -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            budget,
        }
    }

    /// Delay before retry number `attempt` (0-based); `jitter` in [0, 1).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max);
        let jittered = capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0);
        match retry_after {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    /// Whether a retry after `delay` still fits in the budget.
    pub fn allows(&self, started: Instant, delay: Duration) -> bool {
        started.elapsed() + delay <= self.budget
    }
}

/// Statuses worth retrying: the head is busy, restarting, or building.
pub fn retryable(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in seconds (HTTP dates are not supported: `None`).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse().ok().map(Duration::from_secs)
}

/// `Content-Range: bytes START-END/TOTAL` → (START, TOTAL if known).
pub fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.parse().ok()?, total.parse().ok()))
}

/// A random number in [0, 1) from the kernel (0.5 if it is not available).
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    // The raw syscall: static musl builds resolved `getrandom()` to a null
    // weak symbol (PID 1 jumped to address 0).
    // SAFETY: the kernel writes at most b.len() bytes into b.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            b.as_mut_ptr(),
            b.len(),
            libc::GRND_NONBLOCK,
        )
    };
    if n != 8 {
        return 0.5;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// A response: status, lowercase headers, and the body.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response body.
pub enum Body {
    Length(io::Take<BufReader<Conn>>),
    Chunked(Chunked<BufReader<Conn>>),
    Close(BufReader<Conn>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Length(r) => r.read(buf),
            Body::Chunked(r) => r.read(buf),
            Body::Close(r) => r.read(buf),
        }
    }
}

/// Decoder of `Transfer-Encoding: chunked`.
pub struct Chunked<R: BufRead> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut s = String::new();
        (&mut self.inner).take(4096).read_line(&mut s)?;
        if !s.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated chunk header",
            ));
        }
        Ok(s.trim_end().to_owned())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let size = self.line()?;
            let size = size.split(';').next().unwrap_or("");
            self.left = u64::from_str_radix(size.trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if self.left == 0 {
                // Trailers up to the empty line.
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated chunk",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 && !self.line()?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunk not followed by CRLF",
            ));
        }
        Ok(n)
    }
}

/// Connects, from a random privileged port if asked and we may (root).
fn connect(addr: SocketAddr, timeout: Duration, privileged: bool) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    // SAFETY: geteuid has no preconditions.
    let root = privileged && unsafe { libc::geteuid() } == 0;
    if !root {
        return TcpStream::connect_timeout(&addr, timeout);
    }
    let mut last = None;
    for _ in 0..8 {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        if root {
            let port = 600 + (jitter() * 400.0) as u16;
            let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            if let Err(e) = sock.bind(&local.into()) {
                last = Some(e);
                continue;
            }
        }
        return match sock.connect_timeout(&addr.into(), timeout) {
            Ok(()) => Ok(sock.into()),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    || e.kind() == io::ErrorKind::AddrNotAvailable =>
            {
                last = Some(e);
                continue;
            }
            Err(e) => Err(e),
        };
    }
    // No free privileged port: an ordinary one still works unless the head is `secure`.
    crate::log::warn(&format!(
        "no privileged source port for {addr} ({}); using any port",
        last.map_or_else(String::new, |e| e.to_string())
    ));
    TcpStream::connect_timeout(&addr, timeout)
}

/// Sends one request and reads the response head. `privileged`: connect
/// from a port below 1024 (the head's `secure` rule for runtime overlays).
pub fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
    privileged: bool,
) -> Result<Response, HttpError> {
    let addr = crate::tls::target(url.addr);
    let stream = connect(addr, timeout, privileged).map_err(|e| HttpError::Connect(addr, e))?;
    let io_err = |e| HttpError::Io(url.to_string(), e);
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut stream = crate::tls::wrap(stream, url.addr).map_err(io_err)?;
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wwinit/{}\r\nConnection: close\r\n",
        url.path,
        url.addr,
        env!("CARGO_PKG_VERSION")
    );
    for (k, v) in headers.iter().chain(&crate::tls::request_headers()) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(io_err)?;
    stream.write_all(body).map_err(io_err)?;
    let mut r = BufReader::with_capacity(SOCKET_BUF, stream);
    let (status, headers) = read_head(&mut r).map_err(|e| match e {
        HeadError::Io(e) => io_err(e),
        HeadError::Bad(m) => HttpError::Protocol(url.to_string(), m),
    })?;
    crate::tls::remember_token(&headers);
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        Body::Chunked(Chunked::new(r))
    } else if let Some(len) = header("content-length") {
        let len: u64 = len.trim().parse().map_err(|_| {
            HttpError::Protocol(url.to_string(), format!("bad Content-Length {len:?}"))
        })?;
        Body::Length(r.take(len))
    } else if method == "HEAD" || status == 204 || status == 304 {
        Body::Length(r.take(0))
    } else {
        Body::Close(r)
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

enum HeadError {
    Io(io::Error),
    Bad(String),
}

/// Reads the status line and headers (names lowercased).
fn read_head<R: BufRead>(r: &mut R) -> Result<(u16, Vec<(String, String)>), HeadError> {
    let mut total = 0;
    let mut line = String::new();
    let mut next = |line: &mut String| -> Result<(), HeadError> {
        line.clear();
        let n = r.take(8192).read_line(line).map_err(HeadError::Io)?;
        total += n;
        if n == 0 || !line.ends_with('\n') {
            return Err(HeadError::Bad(
                "connection closed in the response head".into(),
            ));
        }
        if total > MAX_HEAD {
            return Err(HeadError::Bad("response head too large".into()));
        }
        Ok(())
    };
    next(&mut line)?;
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HeadError::Bad(format!("status line {:?}", line.trim_end())));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HeadError::Bad(format!("status line {:?}", line.trim_end())))?;
    let mut headers = Vec::new();
    loop {
        next(&mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| HeadError::Bad(format!("header line {l:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Ok((status, headers))
}

/// A `Read` over a resource that survives dropped connections: on an error
/// or early end it reconnects with `Range: bytes=<offset>-` (with backoff),
/// so the consumer sees one uninterrupted stream.
pub struct Download {
    url: Url,
    privileged: bool,
    policy: Backoff,
    started: Instant,
    attempts: u32,
    offset: u64,
    total: Option<u64>,
    body: Option<Body>,
}

/// What opening a download found.
pub enum Opened {
    Ok(Download),
    NotFound,
}

impl Download {
    /// Connects (retrying per `policy`); a 404 is `NotFound`, not retried.
    pub fn open(url: Url, policy: Backoff) -> Result<Opened, HttpError> {
        Self::open_from(url, policy, false)
    }

    /// As [`Download::open`]; `privileged` connections come from a port below 1024.
    pub fn open_from(url: Url, policy: Backoff, privileged: bool) -> Result<Opened, HttpError> {
        let mut d = Download {
            url,
            privileged,
            policy,
            started: Instant::now(),
            attempts: 0,
            offset: 0,
            total: None,
            body: None,
        };
        match d.connect() {
            Ok(()) => Ok(Opened::Ok(d)),
            Err(HttpError::Status { status: 404, .. }) => Ok(Opened::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Total size, when the server said.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// One attempt; `Ok(Err(retry_after))` for a retryable failure.
    fn try_connect(&mut self) -> Result<Result<(), (String, Option<Duration>)>, HttpError> {
        let mut headers = Vec::new();
        if self.offset > 0 {
            headers.push(("Range", format!("bytes={}-", self.offset)));
        }
        let resp = match request("GET", &self.url, &headers, &[], IO_TIMEOUT, self.privileged) {
            Ok(r) => r,
            Err(e @ (HttpError::Connect(..) | HttpError::Io(..) | HttpError::Protocol(..))) => {
                return Ok(Err((format!("{e}: {}", source_of(&e)), None)));
            }
            Err(e) => return Err(e),
        };
        let url = self.url.to_string();
        match resp.status {
            200 => {
                let len = resp.header("content-length").and_then(|v| v.parse().ok());
                let mut body = resp.body;
                if self.offset > 0 {
                    // The server ignored Range: skip what we already have.
                    let skip = io::copy(&mut (&mut body).take(self.offset), &mut io::sink())
                        .map_err(|e| HttpError::Io(url.clone(), e))?;
                    if skip < self.offset {
                        return Ok(Err(("resource shrank while resuming".into(), None)));
                    }
                }
                self.total = len.or(self.total);
                self.body = Some(body);
                Ok(Ok(()))
            }
            206 => {
                let (start, total) = resp
                    .header("content-range")
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        HttpError::Protocol(url.clone(), "206 without Content-Range".into())
                    })?;
                if start != self.offset {
                    return Err(HttpError::Protocol(
                        url,
                        format!("asked for bytes from {}, got from {start}", self.offset),
                    ));
                }
                self.total = total.or(self.total);
                self.body = Some(resp.body);
                Ok(Ok(()))
            }
            s if retryable(s) => {
                let ra = resp.header("retry-after").and_then(parse_retry_after);
                Ok(Err((format!("HTTP {s}"), ra)))
            }
            status => Err(HttpError::Status { url, status }),
        }
    }

    fn connect(&mut self) -> Result<(), HttpError> {
        loop {
            let (why, ra) = match self.try_connect()? {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let delay = self.policy.delay(self.attempts, ra, jitter());
            self.attempts += 1;
            if !self.policy.allows(self.started, delay) {
                return Err(HttpError::GaveUp {
                    url: self.url.to_string(),
                    attempts: self.attempts,
                    last: why,
                });
            }
            crate::log::warn(&format!(
                "{}: {why}; retry {} in {:.1} s",
                self.url,
                self.attempts,
                delay.as_secs_f64()
            ));
            std::thread::sleep(delay);
        }
    }
}

fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map_or_else(String::new, ToString::to_string)
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.body.is_none() {
                self.connect().map_err(io::Error::other)?;
            }
            let Some(body) = self.body.as_mut() else {
                continue;
            };
            let err = match body.read(buf) {
                Ok(0) if buf.is_empty() => return Ok(0),
                Ok(0) => match self.total {
                    Some(t) if self.offset < t => {
                        format!("connection ended at byte {} of {t}", self.offset)
                    }
                    _ => return Ok(0),
                },
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => format!("reading at byte {}: {e}", self.offset),
            };
            self.body = None;
            let delay = self.policy.delay(self.attempts, None, jitter());
            self.attempts += 1;
            if !self.policy.allows(self.started, delay) {
                return Err(io::Error::other(HttpError::GaveUp {
                    url: self.url.to_string(),
                    attempts: self.attempts,
                    last: err,
                }));
            }
            crate::log::warn(&format!(
                "{}: {err}; resuming in {:.1} s",
                self.url,
                delay.as_secs_f64()
            ));
            std::thread::sleep(delay);
        }
    }
}

/// `GET` a small document (the manifest) into memory, with retries; `None` on 404.
pub fn get_small(url: Url, policy: Backoff, limit: u64) -> Result<Option<Vec<u8>>, HttpError> {
    let url_s = url.to_string();
    match Download::open(url, policy)? {
        Opened::NotFound => Ok(None),
        Opened::Ok(d) => {
            let mut out = Vec::new();
            d.take(limit + 1)
                .read_to_end(&mut out)
                .map_err(|e| HttpError::Io(url_s.clone(), e))?;
            if out.len() as u64 > limit {
                return Err(HttpError::Protocol(
                    url_s,
                    format!("larger than {limit} bytes"),
                ));
            }
            Ok(Some(out))
        }
    }
}

/// `POST` JSON once, with a short timeout; returns the status.
pub fn post_json(url: &Url, json: &[u8]) -> Result<u16, HttpError> {
    let resp = request(
        "POST",
        url,
        &[("Content-Type", "application/json".to_owned())],
        json,
        REPORT_TIMEOUT,
        false,
    )?;
    Ok(resp.status)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://10.0.0.1:9873/image/x").expect("valid");
        assert_eq!(u.addr, "10.0.0.1:9873".parse().expect("addr"));
        assert_eq!(u.path, "/image/x");
        assert_eq!(
            Url::parse("http://10.0.0.1").expect("valid").addr.port(),
            80
        );
        for bad in [
            "https://10.0.0.1/",
            "http://head/x",
            "http://10.0.0.1:x/",
            "http://10.0.0.1/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
        let s = Server {
            host: "10.0.2.2".into(),
            port: 9873,
        };
        assert_eq!(
            Url::on(&s, "/system/m").expect("valid").to_string(),
            "http://10.0.2.2:9873/system/m"
        );
        assert_eq!(
            Url::on(&s, "http://1.2.3.4/x").expect("valid").to_string(),
            "http://1.2.3.4:80/x"
        );
    }

    #[test]
    fn backoff_policy() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            budget: Duration::from_secs(60),
        };
        let table = [
            (0, None, 0.0, 250),
            (0, None, 0.999_999, 500),
            (1, None, 0.0, 500),
            (3, None, 1.0, 4000),
            (10, None, 1.0, 30_000),
            (40, None, 0.0, 15_000),
            (0, Some(Duration::from_secs(7)), 0.0, 7000),
            (10, Some(Duration::from_secs(1)), 1.0, 30_000),
            (0, Some(Duration::from_secs(3600)), 0.0, 300_000),
        ];
        for (attempt, ra, j, ms) in table {
            let got = b.delay(attempt, ra, j).as_millis();
            assert!(
                got.abs_diff(ms) <= 1,
                "attempt {attempt} ra {ra:?} jitter {j}: {got} ms, want {ms}"
            );
        }
        let now = Instant::now();
        assert!(b.allows(now, Duration::from_secs(59)));
        assert!(!b.allows(now, Duration::from_secs(61)));
        assert!(retryable(503) && retryable(429) && !retryable(404) && !retryable(403));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn chunked_decoding() {
        let raw = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nX-Trailer: y\r\n\r\n";
        let mut out = String::new();
        Chunked::new(&raw[..])
            .read_to_string(&mut out)
            .expect("valid");
        assert_eq!(out, "Wikipedia ");
        let mut out = Vec::new();
        assert!(Chunked::new(&b"4\r\nWi"[..]).read_to_end(&mut out).is_err());
    }

    /// A scripted server: each connection gets the next canned response and
    /// its request head is recorded.
    fn serve(responses: Vec<Vec<u8>>) -> (SocketAddrV4, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(addr) = l.local_addr().expect("addr") else {
            unreachable!("bound to IPv4")
        };
        let h = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for resp in responses {
                let (s, _) = l.accept().expect("accept");
                let mut r = BufReader::new(&s);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).expect("read") == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                heads.push(head);
                let _ = (&s).write_all(&resp);
            }
            heads
        });
        (addr, h)
    }

    #[test]
    fn download_retries_and_resumes_with_range() {
        let data = b"0123456789abcdefghij";
        let responses = vec![
            b"HTTP/1.1 503 Busy\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n".to_vec(),
            // Promises 20 bytes, sends 8, closes.
            [&b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n"[..], &data[..8]].concat(),
            [&b"HTTP/1.1 206 Partial\r\nContent-Range: bytes 8-19/20\r\nContent-Length: 12\r\n\r\n"[..], &data[8..]]
                .concat(),
        ];
        let (addr, h) = serve(responses);
        let policy = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
            budget: Duration::from_secs(10),
        };
        let url = Url::parse(&format!("http://{addr}/image/x")).expect("valid");
        let Opened::Ok(mut d) = Download::open(url, policy).expect("opens") else {
            panic!("not found")
        };
        let mut out = Vec::new();
        d.read_to_end(&mut out).expect("complete");
        assert_eq!(out, data);
        let heads = h.join().expect("server");
        assert!(
            heads[0].starts_with("GET /image/x HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(!heads[1].contains("Range"));
        assert!(heads[2].contains("Range: bytes=8-\r\n"), "{}", heads[2]);
    }

    #[test]
    fn not_found_is_not_retried_and_errors_give_up() {
        let (addr, h) = serve(vec![
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let policy = Backoff::with_budget(Duration::from_secs(5));
        let url = Url::parse(&format!("http://{addr}/runtime/x")).expect("valid");
        assert!(matches!(Download::open(url, policy), Ok(Opened::NotFound)));
        h.join().expect("server");

        let (addr, h) = serve(vec![
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ]);
        let url = Url::parse(&format!("http://{addr}/x")).expect("valid");
        assert!(matches!(
            Download::open(url, policy),
            Err(HttpError::Status { status: 403, .. })
        ));
        h.join().expect("server");

        let (addr, h) = serve(vec![
            b"HTTP/1.1 503 Busy\r\nRetry-After: 30\r\n\r\n".to_vec(),
        ]);
        let short = Backoff {
            budget: Duration::from_secs(1),
            ..policy
        };
        let url = Url::parse(&format!("http://{addr}/x")).expect("valid");
        let err = Download::open(url, short).err().expect("gives up");
        assert!(
            err.to_string()
                .contains("gave up after 1 attempts; last error: HTTP 503"),
            "{err}"
        );
        h.join().expect("server");
    }
}
