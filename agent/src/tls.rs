//! HTTPS to the head: rustls (ring) trusting exactly one CA, the cluster CA
//! that `wwctl configure tls` made and the head put on the node.
//!
//! A node may boot with its clock at 1970 (no RTC, no NTP yet). The head's
//! certificates are valid from 2000-01-01, and the check uses the later of
//! the node's clock and [`CLOCK_FLOOR`], so such a node still verifies the
//! head's certificate chain and name; expiry is checked once the clock is right.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// 2001-01-01T00:00:00Z: a clock earlier than this is taken as unset.
pub const CLOCK_FLOOR: u64 = 978_307_200;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the CA file {0}")]
    Read(String, #[source] std::io::Error),
    #[error("the CA file {0} holds no usable certificate")]
    NoCert(String),
    #[error("setting up TLS")]
    Setup(#[source] rustls::Error),
    #[error("{0:?} is not a valid server name")]
    Name(String),
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

/// Reads the CA file at `path` into a client configuration.
pub fn client_config_from_file(
    path: &std::path::Path,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let shown = path.display().to_string();
    let pem = std::fs::read(path).map_err(|e| TlsError::Read(shown.clone(), e))?;
    client_config(&pem, &shown)
}

/// The name the head's certificate must carry: its address or host name.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::Name(host.to_owned()))
}
