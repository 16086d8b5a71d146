//! The socket side: a minimal HTTP/1.1 server with keep-alive and
//! pipelining that hands each request to the [`router`](super::router) and
//! writes the answer. When the answer is a file range (a
//! [`FileRange`] extension), the bytes go from the page cache to the socket
//! with `sendfile(2)`, never through user space; this is what lets the head
//! serve multi-GB images at nginx speed (see `bench/http.sh`).
//!
//! Requests are small (a request line, a few headers, at most a status
//! report as body); anything the router does not need is refused early:
//! heads over 16 KiB, bodies over 64 KiB, chunked uploads.
//!
//! [`serve_tls`] runs the same loop over rustls: the handshake has its own
//! timeout, requests carry the [`OverTls`] extension, and file bodies are
//! read with `pread` and encrypted in user space (no `sendfile`).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use super::artifact::{FileRange, Part};
use super::{HttpState, Peer, plain, router};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
const MAX_BODY: usize = 64 * 1024;
/// Largest number of header lines.
const MAX_HEADERS: usize = 100;
/// Largest non-file response body collected in memory.
const MAX_RESPONSE: usize = 16 * 1024 * 1024;
/// An idle keep-alive connection is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A started request head or body must arrive within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that takes no bytes for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// In-flight requests get this long to finish after shutdown is asked.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest single `sendfile` call.
const SENDFILE_MAX: usize = 1 << 30;
/// A TLS handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// File bytes read per TLS write.
const TLS_CHUNK: usize = 256 * 1024;

/// Request extension: the request arrived over HTTPS.
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// Response extension: bytes sent after the [`FileRange`] body (already
/// counted in `Content-Length`), e.g. a node's token member.
#[derive(Clone, Debug)]
pub struct Trailer(pub Bytes);

/// A connection the loop can write a file range to.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {
    async fn send_range(&mut self, range: &FileRange) -> Result<()>;
}

impl Transport for TcpStream {
    async fn send_range(&mut self, range: &FileRange) -> Result<()> {
        for part in &range.parts {
            send_file(self, part).await?;
        }
        Ok(())
    }
}

impl Transport for TlsStream<TcpStream> {
    async fn send_range(&mut self, range: &FileRange) -> Result<()> {
        let mut buf = vec![0u8; TLS_CHUNK];
        for part in &range.parts {
            let mut offset = part.offset;
            let mut left = part.len;
            while left > 0 {
                let want = usize::try_from(left).map_or(TLS_CHUNK, |l| l.min(TLS_CHUNK));
                let n = part
                    .file
                    .read_at(&mut buf[..want], offset)
                    .context("reading an artifact")?;
                if n == 0 {
                    anyhow::bail!("artifact shrank while it was being sent");
                }
                timed(self.write_all(&buf[..n])).await?;
                offset += n as u64;
                left -= n as u64;
                tokio::task::consume_budget().await;
            }
        }
        Ok(())
    }
}

/// TCP listeners on `port`: one on every interface when `interfaces` is
/// empty, else one per interface bound to it (`SO_BINDTODEVICE`), so the
/// head answers nothing that arrives on another network.
pub fn listeners(port: u16, interfaces: &[String]) -> Result<Vec<TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let one = |iface: Option<&str>| -> std::io::Result<TcpListener> {
        let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        if let Some(i) = iface {
            sock.bind_device(Some(i.as_bytes()))?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        sock.listen(1024)?;
        TcpListener::from_std(sock.into())
    };
    if interfaces.is_empty() {
        return Ok(vec![
            one(None).with_context(|| format!("binding TCP port {port}"))?,
        ]);
    }
    interfaces
        .iter()
        .map(|i| one(Some(i)).with_context(|| format!("binding TCP port {port} on {i}")))
        .collect()
}

/// Serves HTTP on `listener` until `shutdown` turns true, then stops
/// accepting, lets in-flight requests finish (up to 30 s) and returns.
pub async fn serve(
    state: Arc<HttpState>,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    serve_with(state, listener, None, shutdown).await
}

/// [`serve`] over TLS: every connection starts with a rustls handshake.
pub async fn serve_tls(
    state: Arc<HttpState>,
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    serve_with(state, listener, Some(TlsAcceptor::from(config)), shutdown).await
}

async fn serve_with(
    state: Arc<HttpState>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let app = router(state);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!("accepting an HTTP connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let stop = shutdown.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    stream.set_nodelay(true).ok();
                    let result = match tls {
                        None => connection(app, stream, peer, stop, false).await,
                        Some(acceptor) => {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => connection(app, s, peer, stop, true).await,
                                Ok(Err(e)) => Err(anyhow::Error::from(e).context("TLS handshake")),
                                Err(_) => Err(anyhow::anyhow!("TLS handshake timed out")),
                            }
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!("HTTP connection from {peer}: {e:#}");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} HTTP connections still busy after the drain timeout; closing them",
            conns.len()
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// One parsed request head.
struct Head {
    method: Method,
    target: String,
    version: Version,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Bytes of the head including the blank line.
    len: usize,
}

enum Parse {
    Done(Head),
    Partial,
    Bad(&'static str),
}

fn parse_head(buf: &[u8]) -> Parse {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Parse::Bad("request head too large")
        } else {
            Parse::Partial
        };
    };
    if end > MAX_HEAD {
        return Parse::Bad("request head too large");
    }
    let Ok(text) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Bad("request head is not UTF-8");
    };
    let mut lines = text.split("\r\n");
    let Some(first) = lines.next() else {
        return Parse::Bad("empty request");
    };
    let mut parts = first.split(' ');
    let (Some(m), Some(target), Some(v), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parse::Bad("malformed request line");
    };
    let Ok(method) = Method::from_bytes(m.as_bytes()) else {
        return Parse::Bad("bad method");
    };
    let version = match v {
        "HTTP/1.1" => Version::HTTP_11,
        "HTTP/1.0" => Version::HTTP_10,
        _ => return Parse::Bad("unsupported HTTP version"),
    };
    if !target.starts_with('/') {
        return Parse::Bad("request target must be a path");
    }
    let mut headers = Vec::new();
    for line in lines {
        if headers.len() >= MAX_HEADERS {
            return Parse::Bad("too many headers");
        }
        let Some((name, value)) = line.split_once(':') else {
            return Parse::Bad("malformed header");
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) else {
            return Parse::Bad("malformed header");
        };
        headers.push((name, value));
    }
    Parse::Done(Head {
        method,
        target: target.to_owned(),
        version,
        headers,
        len: end + 4,
    })
}

/// Serves one connection until the client closes it, asks to, errs, idles
/// out, or the server shuts down between requests.
async fn connection<S: Transport>(
    app: Router,
    mut stream: S,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
    tls: bool,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if buf.is_empty() && *shutdown.borrow() {
            return Ok(());
        }
        // Wait for (the rest of) a request head.
        let head = loop {
            match parse_head(&buf) {
                Parse::Done(h) => break h,
                Parse::Bad(why) => {
                    let resp = plain(StatusCode::BAD_REQUEST, why);
                    write_response(&mut stream, resp, false, false).await?;
                    return Ok(());
                }
                Parse::Partial => {}
            }
            let wait = if buf.is_empty() {
                IDLE_TIMEOUT
            } else {
                REQUEST_TIMEOUT
            };
            let read = tokio::select! {
                r = tokio::time::timeout(wait, stream.read_buf(&mut buf)) => r,
                _ = shutdown.changed(), if buf.is_empty() => return Ok(()),
            };
            match read {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e).context("reading a request"),
            }
        };
        buf.drain(..head.len);

        let get_header =
            |name: &HeaderName| head.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let connection_hdr = get_header(&header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let mut keep_alive = match head.version {
            Version::HTTP_10 => connection_hdr.contains("keep-alive"),
            _ => !connection_hdr.contains("close"),
        };
        if get_header(&header::TRANSFER_ENCODING).is_some() {
            let resp = plain(
                StatusCode::NOT_IMPLEMENTED,
                "chunked request bodies are not supported",
            );
            write_response(&mut stream, resp, false, false).await?;
            return Ok(());
        }
        let body_len = match get_header(&header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|s| s.parse::<usize>().ok()))
        {
            None => 0,
            Some(Some(n)) if n <= MAX_BODY => n,
            Some(Some(_)) => {
                let resp = plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
                write_response(&mut stream, resp, false, false).await?;
                return Ok(());
            }
            Some(None) => {
                let resp = plain(StatusCode::BAD_REQUEST, "bad Content-Length");
                write_response(&mut stream, resp, false, false).await?;
                return Ok(());
            }
        };
        let expects_continue = get_header(&header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if body_len > buf.len() && expects_continue {
            stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        while buf.len() < body_len {
            match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_buf(&mut buf)).await {
                Ok(Ok(0)) | Err(_) => return Ok(()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e).context("reading a request body"),
            }
        }
        let body: Vec<u8> = buf.drain(..body_len).collect();

        let is_head = head.method == Method::HEAD;
        let mut req = Request::new(Body::from(body));
        *req.method_mut() = head.method;
        *req.version_mut() = head.version;
        *req.uri_mut() = match head.target.parse() {
            Ok(u) => u,
            Err(_) => {
                let resp = plain(StatusCode::BAD_REQUEST, "bad request target");
                write_response(&mut stream, resp, false, false).await?;
                return Ok(());
            }
        };
        for (name, value) in head.headers {
            req.headers_mut().append(name, value);
        }
        req.extensions_mut().insert(Peer(peer));
        if tls {
            req.extensions_mut().insert(OverTls);
        }

        let resp = match app.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if *shutdown.borrow() {
            keep_alive = false;
        }
        write_response(&mut stream, resp, keep_alive, is_head).await?;
        if !keep_alive {
            stream.shutdown().await.ok();
            return Ok(());
        }
    }
}

/// Writes `resp`: a file range by `sendfile`, anything else from memory.
async fn write_response<S: Transport>(
    stream: &mut S,
    resp: Response<Body>,
    keep_alive: bool,
    is_head: bool,
) -> Result<()> {
    let (mut parts, body) = resp.into_parts();
    let file = parts.extensions.remove::<FileRange>();
    let trailer = parts.extensions.remove::<Trailer>();
    let bodiless = is_head
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let mut payload = None;
    if file.is_none() {
        let bytes = axum::body::to_bytes(body, MAX_RESPONSE)
            .await
            .map_err(|e| anyhow::anyhow!("building a response body: {e}"))?;
        let lengthless = parts.status.is_informational()
            || parts.status == StatusCode::NO_CONTENT
            || parts.status == StatusCode::NOT_MODIFIED;
        if !lengthless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        }
        if !bodiless {
            payload = Some(bytes);
        }
    } else {
        drop(body);
    }
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    parts.headers.remove(header::CONNECTION);
    for (name, value) in &parts.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(if keep_alive {
        b"Connection: keep-alive\r\n\r\n".as_slice()
    } else {
        b"Connection: close\r\n\r\n".as_slice()
    });
    if let Some(p) = &payload {
        head.extend_from_slice(p);
    }
    timed(stream.write_all(&head)).await?;
    if let Some(range) = file.filter(|_| !bodiless) {
        stream.send_range(&range).await?;
        if let Some(Trailer(bytes)) = trailer {
            timed(stream.write_all(&bytes)).await?;
        }
    }
    Ok(())
}

async fn timed<T>(fut: impl Future<Output = std::io::Result<T>>) -> Result<T> {
    match tokio::time::timeout(WRITE_TIMEOUT, fut).await {
        Ok(r) => r.context("writing a response"),
        Err(_) => anyhow::bail!("client stopped reading"),
    }
}

/// Copies one part of an artifact to the socket inside the kernel.
///
/// A short `sendfile` means the socket buffer is full: like nginx, the
/// readiness is dropped at once (by reporting `WouldBlock` to `try_io`)
/// instead of paying one more call that would fail with `EAGAIN`.
async fn send_file(stream: &mut TcpStream, range: &Part) -> Result<()> {
    let mut offset = i64::try_from(range.offset).context("file offset out of range")?;
    let mut left = range.len;
    while left > 0 {
        timed(stream.writable()).await?;
        let count = usize::try_from(left).map_or(SENDFILE_MAX, |l| l.min(SENDFILE_MAX));
        let mut sent = 0usize;
        let result = stream.try_io(Interest::WRITABLE, || {
            sent = nix::sys::sendfile::sendfile64(
                stream.as_fd(),
                range.file.as_fd(),
                Some(&mut offset),
                count,
            )
            .map_err(std::io::Error::from)?;
            if sent > 0 && sent < count {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        left -= sent as u64;
        match result {
            Ok(()) if sent == 0 => anyhow::bail!("artifact shrank while it was being sent"),
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e).context("sending a file"),
        }
        // Let other connections on this worker run between chunks.
        tokio::task::consume_budget().await;
    }
    Ok(())
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_heads_and_waits_for_more() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n"),
            Parse::Partial
        ));
        let Parse::Done(h) =
            parse_head(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\nrest")
        else {
            panic!("not parsed");
        };
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.target, "/a?b=c");
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.len, 50);
        assert!(matches!(
            parse_head(b"GET http://x/ HTTP/1.1\r\n\r\n"),
            Parse::Bad(_)
        ));
        assert!(matches!(parse_head(b"GET / HTTP/2\r\n\r\n"), Parse::Bad(_)));
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Parse::Bad(_)
        ));
        assert!(matches!(
            parse_head(&vec![b'a'; MAX_HEAD + 1]),
            Parse::Bad(_)
        ));
    }
}
