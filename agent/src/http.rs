//! A small blocking HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Hand-written because the agent must choose its own source port: in
//! Warewulf's `secure` mode the head serves the runtime overlay (which holds
//! password hashes and keys) only to source ports below 1024, which only
//! root can bind. The socket is created and bound here before `connect`,
//! trying the next port of the range when one is busy. One request per
//! connection (`Connection: close`): a poll a minute gains nothing from
//! keep-alive and a fresh privileged port each time is simpler to reason
//! about. With HTTPS, rustls wraps the bound `TcpStream` returned by
//! [`Client::connect`] ([`crate::tls`]: only the cluster CA is trusted).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use socket2::{Domain, Protocol, Socket, Type};

use crate::rng::Rng;

/// Longest status or header line accepted.
const MAX_LINE: u64 = 8 * 1024;
/// Most header lines accepted in one response.
const MAX_HEADERS: usize = 100;
/// Read buffer of a response.
const READ_BUF: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("resolving {0}")]
    Resolve(String, #[source] io::Error),
    #[error("{0} has no address")]
    NoAddress(String),
    #[error(
        "binding source port {port}: permission denied (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    )]
    BindDenied { port: u16 },
    #[error("no free source port in {lo}-{hi}")]
    NoFreePort { lo: u16, hi: u16 },
    #[error("binding source port {port}")]
    Bind {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("starting TLS")]
    Tls(#[source] rustls::Error),
    #[error("sending the request")]
    Send(#[source] io::Error),
    #[error("reading the response")]
    Read(#[source] io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
}

/// Where to connect and how.
pub struct Client {
    host: String,
    port: u16,
    bind: Option<RangeInclusive<u16>>,
    timeout: Duration,
    rng: Rng,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// One connection to the head, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

impl Client {
    pub fn new(
        host: &str,
        port: u16,
        bind: Option<RangeInclusive<u16>>,
        timeout: Duration,
    ) -> Self {
        Client {
            host: host.to_owned(),
            port,
            bind,
            timeout,
            rng: Rng::from_entropy(),
            tls: None,
        }
    }

    /// Speaks HTTPS, verifying the head as `name` under `config`.
    pub fn with_tls(mut self, config: Arc<ClientConfig>, name: ServerName<'static>) -> Self {
        self.tls = Some((config, name));
        self
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Sends one request and reads the response head; the body is read from
    /// the returned [`Response`].
    pub fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        let (stream, local_port) = self.connect()?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(HttpError::Read)?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(HttpError::Send)?;
        // Best effort: a missing TCP_NODELAY only costs latency.
        let _ = stream.set_nodelay(true);
        let mut stream = match &self.tls {
            None => Conn::Plain(stream),
            Some((config, name)) => {
                let tls = ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(HttpError::Tls)?;
                Conn::Tls(Box::new(StreamOwned::new(tls, stream)))
            }
        };

        let mut head = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wwclient/{}\r\n",
            self.authority(),
            env!("CARGO_PKG_VERSION")
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).map_err(HttpError::Send)?;
        stream.write_all(body).map_err(HttpError::Send)?;
        stream.flush().map_err(HttpError::Send)?;
        let sent = (head.len() + body.len()) as u64;

        let mut reader = BufReader::with_capacity(
            READ_BUF,
            Counting {
                inner: stream,
                count: 0,
            },
        );
        let (status, headers) = loop {
            let (status, headers) = read_head(&mut reader)?;
            // Interim responses (100 Continue, 103 Early Hints) precede the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            break (status, headers);
        };
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let framing = if method == "HEAD" || status == 204 || status == 304 {
            Framing::Length(0)
        } else if find("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked {
                left: 0,
                started: false,
                done: false,
            }
        } else if let Some(len) = find("content-length") {
            Framing::Length(
                len.trim()
                    .parse()
                    .map_err(|_| HttpError::Malformed(format!("Content-Length {len:?}")))?,
            )
        } else {
            Framing::UntilClose
        };
        Ok(Response {
            status,
            local_port,
            headers,
            body: Body { reader, framing },
            sent,
        })
    }

    /// Opens a connection, bound to a port of the configured range when set.
    fn connect(&mut self) -> Result<(TcpStream, u16), HttpError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| HttpError::Resolve(self.host.clone(), e))?
            .collect();
        let mut last = None;
        for addr in addrs {
            let result = match self.bind.clone() {
                None => TcpStream::connect_timeout(&addr, self.timeout)
                    .map_err(|source| HttpError::Connect { addr, source }),
                Some(range) => self.connect_bound(addr, range),
            };
            match result {
                Ok(stream) => {
                    let port = stream.local_addr().map_or(0, |a| a.port());
                    return Ok((stream, port));
                }
                // Local problems will not change with the next address.
                Err(e @ (HttpError::BindDenied { .. } | HttpError::NoFreePort { .. })) => {
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HttpError::NoAddress(self.host.clone())))
    }

    /// Binds a source port from `range` (starting at a random one, each tried
    /// once) and connects from it.
    fn connect_bound(
        &mut self,
        addr: SocketAddr,
        range: RangeInclusive<u16>,
    ) -> Result<TcpStream, HttpError> {
        let (lo, hi) = (*range.start(), *range.end());
        let count = u64::from(hi - lo) + 1;
        let start = self.rng.below(count);
        for i in 0..count {
            let port = lo + ((start + i) % count) as u16;
            let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
                .map_err(|source| HttpError::Connect { addr, source })?;
            // Lets a port whose last connection is in TIME_WAIT be bound again.
            sock.set_reuse_address(true)
                .map_err(|source| HttpError::Bind { port, source })?;
            let unspecified = match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            };
            match sock.bind(&SocketAddr::new(unspecified, port).into()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(HttpError::BindDenied { port });
                }
                Err(source) => return Err(HttpError::Bind { port, source }),
            }
            match sock.connect_timeout(&addr.into(), self.timeout) {
                Ok(()) => return Ok(sock.into()),
                // The same four-tuple is still in use: try another port.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable
                    ) =>
                {
                    continue;
                }
                Err(source) => return Err(HttpError::Connect { addr, source }),
            }
        }
        Err(HttpError::NoFreePort { lo, hi })
    }
}

/// Reads a status line and headers.
fn read_head<R: BufRead>(r: &mut R) -> Result<(u16, Vec<(String, String)>), HttpError> {
    let line = read_line(r)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!("status line {line:?}")));
    }
    let status: u16 = code
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| HttpError::Malformed(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        if headers.len() == MAX_HEADERS {
            return Err(HttpError::Malformed("too many headers".to_owned()));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {line:?}")))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// One CRLF- (or LF-) terminated line, without the terminator.
fn read_line<R: BufRead>(r: &mut R) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    r.take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .map_err(HttpError::Read)?;
    if buf.last() != Some(&b'\n') {
        return Err(HttpError::Malformed(if buf.is_empty() {
            "connection closed before the response".to_owned()
        } else {
            "line too long or truncated".to_owned()
        }));
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| HttpError::Malformed("non-UTF-8 header".to_owned()))
}

/// A response whose head has been read.
pub struct Response {
    pub status: u16,
    /// The source port the request came from.
    pub local_port: u16,
    headers: Vec<(String, String)>,
    body: Body,
    sent: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body, framed by `Content-Length`, chunked encoding or close. A
    /// body that ends early is an `UnexpectedEof` error, never a short read.
    pub fn body(&mut self) -> &mut Body {
        &mut self.body
    }

    /// Up to `limit` bytes of the body as text, for error messages.
    pub fn text(&mut self, limit: u64) -> String {
        let mut buf = Vec::new();
        let _ = (&mut self.body).take(limit).read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).trim().to_owned()
    }

    /// Bytes sent and received on the wire so far (head and body).
    pub fn traffic(&self) -> (u64, u64) {
        (self.sent, self.body.reader.get_ref().count)
    }
}

/// Counts the bytes read from the socket.
pub struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

enum Framing {
    Length(u64),
    Chunked {
        left: u64,
        started: bool,
        done: bool,
    },
    UntilClose,
}

/// The body of a [`Response`].
pub struct Body<R = Conn> {
    reader: BufReader<Counting<R>>,
    framing: Framing,
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "response body truncated")
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::Length(left) => {
                if *left == 0 {
                    return Ok(0);
                }
                let want = (*left).min(buf.len() as u64) as usize;
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(truncated());
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::UntilClose => self.reader.read(buf),
            Framing::Chunked {
                left,
                started,
                done,
            } => {
                if *done {
                    return Ok(0);
                }
                if *left == 0 {
                    if *started {
                        let crlf = read_line(&mut self.reader).map_err(io_err)?;
                        if !crlf.is_empty() {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "bad chunk end",
                            ));
                        }
                    }
                    *started = true;
                    let line = read_line(&mut self.reader).map_err(io_err)?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "bad chunk size")
                    })?;
                    if size == 0 {
                        // Trailers up to the empty line.
                        while !read_line(&mut self.reader).map_err(io_err)?.is_empty() {}
                        *done = true;
                        return Ok(0);
                    }
                    *left = size;
                }
                let want = (*left).min(buf.len() as u64) as usize;
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(truncated());
                }
                *left -= n as u64;
                Ok(n)
            }
        }
    }
}

fn io_err(e: HttpError) -> io::Error {
    match e {
        HttpError::Read(e) => e,
        HttpError::Malformed(m) => io::Error::new(io::ErrorKind::UnexpectedEof, m),
        other => io::Error::other(other.to_string()),
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head() {
        let raw = b"HTTP/1.1 304 Not Modified\r\nETag: \"abc\"\r\nX-A:  b \r\n\r\nrest";
        let mut r = &raw[..];
        let (status, headers) = read_head(&mut r).unwrap();
        assert_eq!(status, 304);
        assert_eq!(
            headers,
            vec![
                ("ETag".into(), "\"abc\"".into()),
                ("X-A".into(), "b".into())
            ]
        );
        assert_eq!(r, b"rest");
    }

    #[test]
    fn rejects_bad_heads() {
        for raw in [
            &b"FTP 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
            b"",
        ] {
            let mut r = raw;
            assert!(
                read_head(&mut r).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    fn body(raw: &'static [u8], framing: Framing) -> Body<&'static [u8]> {
        Body {
            reader: BufReader::new(Counting {
                inner: raw,
                count: 0,
            }),
            framing,
        }
    }

    #[test]
    fn chunked_body() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let mut out = String::new();
        let chunked = Framing::Chunked {
            left: 0,
            started: false,
            done: false,
        };
        body(raw, chunked).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
        let cut = Framing::Chunked {
            left: 0,
            started: false,
            done: false,
        };
        assert!(
            body(b"5\r\nhel", cut)
                .read_to_string(&mut String::new())
                .is_err()
        );
    }

    #[test]
    fn short_body_is_an_error_not_a_short_read() {
        let mut out = Vec::new();
        let err = body(b"abc", Framing::Length(10))
            .read_to_end(&mut out)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut out = Vec::new();
        body(b"abcdef", Framing::Length(3))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("a b/c&d~"), "a%20b%2Fc%26d~");
    }
}
