//! HTTPS to the head for wwinit: rustls (ring) trusting exactly one CA,
//! the cluster CA that `wwctl configure tls` made.
//!
//! TLS is on when `/warewulf/tls/ca.crt` exists: in a two-stage boot the
//! head appends it (with `/warewulf/tls/port`) to the stage 1 it serves; in
//! a single-stage boot the `wwinit` overlay writes it (the port is then
//! `server.tls_port` of `/warewulf/wwinit.conf`). Every request then goes to
//! the head's HTTPS port and is verified against that CA; a head that
//! cannot prove its identity gets nothing (no fallback to plain HTTP).
//!
//! The node token the head hands out with the system overlay (asked for as
//! a header, so the overlay's manifest digest still holds) is kept for the
//! process and sent with every later request, which is what lets the
//! runtime overlay be fetched during boot.
//!
//! A node may boot with its clock at 1970 (no RTC, no NTP yet). The head's
//! certificates are valid from 2000-01-01, and the check uses the later of
//! the node's clock and [`CLOCK_FLOOR`], so such a node still verifies the
//! head's chain and name; expiry is checked once the clock is right.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// 2001-01-01T00:00:00Z: a clock earlier than this is taken as unset.
pub const CLOCK_FLOOR: u64 = 978_307_200;
/// The cluster CA; its presence turns HTTPS on.
const CA_FILE: &str = "/warewulf/tls/ca.crt";
/// The head's HTTPS port, next to the CA in stage 1.
const PORT_FILE: &str = "/warewulf/tls/port";
/// Single-stage: the port from wwinit's settings.
const WWINIT_CONF: &str = "/warewulf/wwinit.conf";
const DEFAULT_PORT: u16 = 9874;
/// Node token headers (the head's `tls::token`).
const TOKEN_HEADER: &str = "x-warewulf-token";
const TOKEN_VIA_HEADER: &str = "x-warewulf-token-via";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the CA file {0}")]
    Read(String, #[source] std::io::Error),
    #[error("the CA file {0} holds no usable certificate")]
    NoCert(String),
    #[error("setting up TLS")]
    Setup(#[source] rustls::Error),
}

/// Checks the head's certificate under the cluster CA with a floored clock.
struct Verifier(Arc<WebPkiServerVerifier>);

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cluster CA verifier")
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.as_secs().max(CLOCK_FLOOR),
        ));
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client configuration trusting only the CA(s) in `ca_pem`.
pub fn client_config(ca_pem: &[u8], source: &str) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        roots.add(cert).map_err(TlsError::Setup)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCert(source.to_owned()));
    }
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| TlsError::Setup(rustls::Error::General(e.to_string())))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier(inner)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// HTTPS settings of this boot.
pub struct Session {
    config: Arc<rustls::ClientConfig>,
    port: u16,
}

/// The HTTPS settings, loaded once; `None` when there is no CA (plain
/// HTTP, as Warewulf). A CA that cannot be loaded is reported once and
/// leaves TLS on with no usable trust, so every request fails loudly
/// instead of silently falling back to plain HTTP.
pub fn session() -> Option<&'static Result<Session, TlsError>> {
    static SESSION: OnceLock<Option<Result<Session, TlsError>>> = OnceLock::new();
    SESSION
        .get_or_init(|| {
            let pem = match std::fs::read(CA_FILE) {
                Ok(p) => p,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
                Err(e) => return Some(Err(TlsError::Read(CA_FILE.to_owned(), e))),
            };
            let port = port_from(
                std::fs::read_to_string(PORT_FILE).ok().as_deref(),
                std::fs::read_to_string(WWINIT_CONF).ok().as_deref(),
            );
            let s = client_config(&pem, CA_FILE).map(|config| Session { config, port });
            match &s {
                Ok(s) => crate::log::info(&format!("HTTPS to the head on port {}", s.port)),
                Err(e) => crate::log::warn(&format!("TLS: {e}")),
            }
            Some(s)
        })
        .as_ref()
}

/// The HTTPS port: the stage-1 port file, else `server.tls_port=` of
/// wwinit.conf, else 9874.
pub fn port_from(port_file: Option<&str>, wwinit_conf: Option<&str>) -> u16 {
    let from_file = port_file.and_then(|t| t.trim().parse().ok());
    let from_conf = wwinit_conf.and_then(|t| {
        t.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "server.tls_port")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
    });
    from_file
        .or(from_conf)
        .filter(|&p: &u16| p > 0)
        .unwrap_or(DEFAULT_PORT)
}

/// Where to connect for `addr`: the HTTPS port of the same host with TLS.
pub fn target(addr: SocketAddrV4) -> SocketAddr {
    match session() {
        Some(Ok(s)) => SocketAddr::V4(SocketAddrV4::new(*addr.ip(), s.port)),
        _ => SocketAddr::V4(addr),
    }
}

/// `https` or `http`, for messages.
pub fn scheme() -> &'static str {
    if session().is_some() { "https" } else { "http" }
}

/// One connection to the head, plain or TLS (boxed: one pointer, so the
/// buffered readers holding it are no larger than over a bare socket).
pub struct Conn(Box<Inner>);

// Boxed as a whole, so the size difference costs nothing per connection.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Plain(TcpStream),
    Tls(StreamOwned<ClientConnection, TcpStream>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut *self.0 {
            Inner::Plain(s) => s.read(buf),
            Inner::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *self.0 {
            Inner::Plain(s) => s.write(buf),
            Inner::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut *self.0 {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}

/// Wraps a connected stream in TLS when the session says so.
pub fn wrap(stream: TcpStream, addr: SocketAddrV4) -> io::Result<Conn> {
    match session() {
        None => Ok(Conn(Box::new(Inner::Plain(stream)))),
        Some(Err(e)) => Err(io::Error::other(e.to_string())),
        Some(Ok(s)) => {
            let name = ServerName::IpAddress((*addr.ip()).into());
            let tls =
                ClientConnection::new(Arc::clone(&s.config), name).map_err(io::Error::other)?;
            Ok(Conn(Box::new(Inner::Tls(StreamOwned::new(tls, stream)))))
        }
    }
}

fn token_slot() -> &'static Mutex<Option<String>> {
    static TOKEN: OnceLock<Mutex<Option<String>>> = OnceLock::new();
    TOKEN.get_or_init(|| Mutex::new(None))
}

/// Headers for every request under TLS: ask for the token as a header, and
/// send the one we hold.
pub fn request_headers() -> Vec<(&'static str, String)> {
    if session().is_none() {
        return Vec::new();
    }
    let mut out = vec![(TOKEN_VIA_HEADER, "header".to_owned())];
    if let Some(t) = token_slot()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    {
        out.push((TOKEN_HEADER, t));
    }
    out
}

/// Keeps the token a response carries (headers lowercased).
pub fn remember_token(headers: &[(String, String)]) {
    if let Some((_, t)) = headers.iter().find(|(k, _)| k == TOKEN_HEADER) {
        *token_slot().lock().unwrap_or_else(|p| p.into_inner()) = Some(t.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_port_sources_in_order() {
        assert_eq!(port_from(Some("9443\n"), Some("server.tls_port=1")), 9443);
        assert_eq!(port_from(None, Some("id=n1\nserver.tls_port=9555\n")), 9555);
        assert_eq!(
            port_from(Some("junk"), Some("server.tls_port=")),
            DEFAULT_PORT
        );
        assert_eq!(port_from(None, None), DEFAULT_PORT);
    }

    #[test]
    fn a_ca_without_certificates_is_refused() {
        assert!(matches!(
            client_config(b"not a pem", "x"),
            Err(TlsError::NoCert(_))
        ));
    }
}
