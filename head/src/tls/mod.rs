//! The cluster's TLS material and the per-node tokens.
//!
//! `<sysconfdir>/warewulf/tls/` holds, as `wwctl configure tls` writes them:
//! - `ca.crt`, `ca.key`: the cluster CA. Nodes trust `ca.crt` only (it
//!   travels in the stage-1 initramfs and the `wwinit` overlay);
//! - `warewulf.crt`, `warewulf.key`: the head's certificate, signed by the CA,
//!   with the head's addresses and names as subject alternative names
//!   (Warewulf's file names, so its docs still apply);
//! - `token.key`: the secret behind the per-node tokens ([`token`]).
//!
//! Keys are written mode 0600, certificates 0644, all temp+fsync+rename.
//! Certificates are valid from 2000-01-01, so a node whose clock has not
//! been set yet (no RTC) can still verify the head; see `docs/security.md`.

pub mod token;

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::fsutil;

/// File names below `<sysconfdir>/warewulf/tls/`.
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const HEAD_CRT: &str = "warewulf.crt";
pub const HEAD_KEY: &str = "warewulf.key";
pub const TOKEN_KEY: &str = "token.key";
/// Where a node finds the cluster CA and the head's HTTPS port: in its
/// stage 1 (appended by the head) and, for the CA, in the `wwinit` overlay.
pub const NODE_CA_PATH: &str = "warewulf/tls/ca.crt";
pub const NODE_PORT_PATH: &str = "warewulf/tls/port";

/// First day of validity of every certificate we issue (see the module docs).
const NOT_BEFORE: (i32, u8, u8) = (2000, 1, 1);
/// Lifetime of the CA and of the head certificate, in years from now.
const CA_YEARS: i32 = 30;
const HEAD_YEARS: i32 = 10;

/// Where the TLS files of a site live.
#[derive(Clone, Debug)]
pub struct TlsPaths {
    pub dir: PathBuf,
}

impl TlsPaths {
    pub fn new(config: &Config) -> Self {
        Self {
            dir: config.paths.sysconfdir.join("warewulf").join("tls"),
        }
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// What [`create`] did.
#[derive(Debug, Default)]
pub struct Created {
    pub ca: bool,
    pub head: bool,
    pub token_key: bool,
}

/// The subject alternative names of the head certificate: the head's
/// configured addresses, its host name, `localhost`, then `extra`.
pub fn head_names(config: &Config, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut push = |n: String| {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    };
    for ip in [config.ipaddr.as_deref(), config.ipaddr6.as_deref()]
        .into_iter()
        .flatten()
    {
        let bare = ip.split('/').next().unwrap_or_default().trim();
        if bare.parse::<IpAddr>().is_ok() {
            push(bare.to_owned());
        }
    }
    if let Ok(host) = nix::unistd::gethostname() {
        push(host.to_string_lossy().into_owned());
    }
    push("localhost".to_owned());
    push("127.0.0.1".to_owned());
    for n in extra {
        push(n.trim().to_owned());
    }
    names
}

/// Creates what is missing: the CA, the head certificate (re-issued when
/// `renew` is set or the CA is new) and the token key.
pub fn create(config: &Config, extra_names: &[String], renew: bool) -> Result<Created> {
    let paths = TlsPaths::new(config);
    fs::create_dir_all(&paths.dir).with_context(|| format!("creating {}", paths.dir.display()))?;
    let mut done = Created::default();
    let (ca_crt, ca_key) = (paths.file(CA_CRT), paths.file(CA_KEY));
    if !ca_crt.exists() || !ca_key.exists() {
        let (crt, key) = new_ca(config)?;
        fsutil::write_atomic(&ca_key, key.as_bytes(), 0o600)?;
        fsutil::write_atomic(&ca_crt, crt.as_bytes(), 0o644)?;
        done.ca = true;
    }
    let (head_crt, head_key) = (paths.file(HEAD_CRT), paths.file(HEAD_KEY));
    if done.ca || renew || !head_crt.exists() || !head_key.exists() {
        let ca_pem = read(&ca_crt)?;
        let ca_key_pem = read(&ca_key)?;
        let (crt, key) = new_head_cert(&ca_pem, &ca_key_pem, &head_names(config, extra_names))?;
        fsutil::write_atomic(&head_key, key.as_bytes(), 0o600)?;
        fsutil::write_atomic(&head_crt, crt.as_bytes(), 0o644)?;
        done.head = true;
    }
    let token_key = paths.file(TOKEN_KEY);
    if !token_key.exists() {
        token::TokenKey::create(&token_key)?;
        done.token_key = true;
    }
    Ok(done)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Valid from [`NOT_BEFORE`] to January 1st, `years` after the current year.
fn set_validity(params: &mut CertificateParams, years: i32) {
    const SECS_PER_YEAR: u64 = 31_556_952;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let year = 1970 + i32::try_from(now / SECS_PER_YEAR).unwrap_or(0);
    let (y, m, d) = NOT_BEFORE;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// A new cluster CA: (certificate PEM, key PEM).
fn new_ca(config: &Config) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cluster = config
        .ipaddr
        .as_deref()
        .map(|ip| ip.split('/').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Ironwulf cluster CA {cluster}").trim().to_owned(),
    );
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_YEARS);
    let cert = params.self_signed(&key).context("signing the CA")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A head certificate for `names`, signed by the CA: (certificate PEM, key PEM).
pub fn new_head_cert(ca_pem: &str, ca_key_pem: &str, names: &[String]) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(ca_key_pem).context("reading the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).context("reading the CA certificate")?;
    let mut params = CertificateParams::default();
    for n in names {
        let san = match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .with_context(|| format!("{n:?} is not a valid DNS name"))?,
            ),
        };
        params.subject_alt_names.push(san);
    }
    let cn = names.first().cloned().unwrap_or_else(|| "warewulf".into());
    params.distinguished_name.push(DnType::CommonName, cn);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params, HEAD_YEARS);
    let key = KeyPair::generate().context("generating the head key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the head certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Copies the TLS files from `from` (a directory with at least `ca.crt`,
/// `warewulf.crt` and `warewulf.key`; `ca.key` and `token.key` optional)
/// after checking that they form a usable server identity.
pub fn import(config: &Config, from: &Path) -> Result<Vec<&'static str>> {
    let src = |n: &str| from.join(n);
    for required in [CA_CRT, HEAD_CRT, HEAD_KEY] {
        if !src(required).is_file() {
            bail!("{} is missing", src(required).display());
        }
    }
    // Refuse a set that the server could not use or that nodes would reject.
    let name = head_names(config, &[]).remove(0);
    check_pair(
        &read(&src(CA_CRT))?,
        &read(&src(HEAD_CRT))?,
        &read(&src(HEAD_KEY))?,
        &name,
    )
    .with_context(|| format!("checking the TLS files in {}", from.display()))?;
    let paths = TlsPaths::new(config);
    let mut copied = Vec::new();
    for (name, mode) in [
        (CA_CRT, 0o644),
        (HEAD_CRT, 0o644),
        (HEAD_KEY, 0o600),
        (CA_KEY, 0o600),
        (TOKEN_KEY, 0o600),
    ] {
        let from = src(name);
        if !from.is_file() {
            continue;
        }
        let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        fsutil::write_atomic(&paths.file(name), &data, mode)?;
        copied.push(name);
    }
    Ok(copied)
}

/// Copies the site's TLS files (those that exist) to `to`, keys mode 0600.
pub fn export(config: &Config, to: &Path) -> Result<Vec<&'static str>> {
    let paths = TlsPaths::new(config);
    if !paths.file(CA_CRT).is_file() {
        bail!(
            "no TLS files in {}: run 'wwctl configure tls --create' first",
            paths.dir.display()
        );
    }
    let mut copied = Vec::new();
    for (name, mode) in [
        (CA_CRT, 0o644),
        (HEAD_CRT, 0o644),
        (HEAD_KEY, 0o600),
        (CA_KEY, 0o600),
        (TOKEN_KEY, 0o600),
    ] {
        let from = paths.file(name);
        if !from.is_file() {
            continue;
        }
        let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        fsutil::write_atomic(&to.join(name), &data, mode)?;
        copied.push(name);
    }
    Ok(copied)
}

/// Checks that `crt`+`key` make a server identity that a client trusting
/// `ca` accepts when it connects to `name` (the address nodes use).
fn check_pair(ca: &str, crt: &str, key: &str, name: &str) -> Result<()> {
    server_config_from(crt, key)?;
    let roots = root_store(ca)?;
    let chain = certs(crt)?;
    let Some(leaf) = chain.first() else {
        bail!("warewulf.crt holds no certificate");
    };
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .context("building a verifier for ca.crt")?;
    let name = rustls_pki_types::ServerName::try_from(name.to_owned())
        .with_context(|| format!("{name:?} is not a server name"))?;
    use rustls::client::danger::ServerCertVerifier as _;
    verifier
        .verify_server_cert(
            leaf,
            &chain[1..],
            &name,
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .map_err(|e| anyhow::anyhow!("warewulf.crt is not accepted under ca.crt: {e}"))?;
    Ok(())
}

fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("reading certificates: {e}"))
}

fn root_store(ca: &str) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots
            .add(c)
            .map_err(|e| anyhow::anyhow!("ca.crt is not a usable CA: {e}"))?;
    }
    if roots.is_empty() {
        bail!("ca.crt holds no certificate");
    }
    Ok(roots)
}

fn server_config_from(crt: &str, key: &str) -> Result<rustls::ServerConfig> {
    let chain = certs(crt)?;
    if chain.is_empty() {
        bail!("warewulf.crt holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| anyhow::anyhow!("reading warewulf.key: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("choosing TLS versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("warewulf.key does not match warewulf.crt")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The HTTPS server configuration from the site's `warewulf.crt` and
/// `warewulf.key`; a clear error naming `wwctl configure tls` when missing.
pub fn server_config(config: &Config) -> Result<Arc<rustls::ServerConfig>> {
    let paths = TlsPaths::new(config);
    let (crt, key) = (paths.file(HEAD_CRT), paths.file(HEAD_KEY));
    if !crt.is_file() || !key.is_file() {
        bail!(
            "TLS is enabled but {} or {} is missing: run 'wwctl configure tls --create'",
            crt.display(),
            key.display()
        );
    }
    let cfg = server_config_from(&read(&crt)?, &read(&key)?)
        .with_context(|| format!("loading the head certificate from {}", paths.dir.display()))?;
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &Path) -> Config {
        let mut c = Config::default();
        c.paths.sysconfdir = dir.to_owned();
        c.ipaddr = Some("10.0.0.1/24".into());
        c
    }

    #[test]
    fn create_is_idempotent_and_renews_on_request() {
        let tmp = tempfile::tempdir().unwrap();
        let c = site(tmp.path());
        let first = create(&c, &["head.example".into()], false).unwrap();
        assert!(first.ca && first.head && first.token_key);
        let paths = TlsPaths::new(&c);
        let mode = |n| {
            use std::os::unix::fs::PermissionsExt;
            fs::metadata(paths.file(n)).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(CA_KEY), 0o600);
        assert_eq!(mode(HEAD_KEY), 0o600);
        assert_eq!(mode(TOKEN_KEY), 0o600);
        assert_eq!(mode(HEAD_CRT), 0o644);
        let again = create(&c, &[], false).unwrap();
        assert!(!again.ca && !again.head && !again.token_key);
        let before = fs::read(paths.file(HEAD_CRT)).unwrap();
        let renewed = create(&c, &[], true).unwrap();
        assert!(!renewed.ca && renewed.head);
        assert_ne!(before, fs::read(paths.file(HEAD_CRT)).unwrap());
        server_config(&c).unwrap();
        check_pair(
            &read(&paths.file(CA_CRT)).unwrap(),
            &read(&paths.file(HEAD_CRT)).unwrap(),
            &read(&paths.file(HEAD_KEY)).unwrap(),
            "10.0.0.1",
        )
        .unwrap();
    }

    #[test]
    fn names_hold_the_head_address_and_extras() {
        let tmp = tempfile::tempdir().unwrap();
        let names = head_names(&site(tmp.path()), &["head.example".into()]);
        assert_eq!(names[0], "10.0.0.1");
        assert!(names.contains(&"head.example".to_owned()));
        assert!(names.contains(&"localhost".to_owned()));
    }

    #[test]
    fn import_refuses_a_foreign_certificate_and_export_round_trips() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (ca, cb) = (site(a.path()), site(b.path()));
        create(&ca, &[], false).unwrap();
        create(&cb, &[], false).unwrap();
        let out = tempfile::tempdir().unwrap();
        let copied = export(&ca, out.path()).unwrap();
        assert!(copied.contains(&HEAD_KEY));
        // Site b's CA with site a's head certificate: refused.
        fs::copy(TlsPaths::new(&cb).file(CA_CRT), out.path().join(CA_CRT)).unwrap();
        let err = import(&cb, out.path()).unwrap_err();
        assert!(format!("{err:#}").contains("not accepted"), "{err:#}");
        // The matching set imports.
        fs::copy(TlsPaths::new(&ca).file(CA_CRT), out.path().join(CA_CRT)).unwrap();
        import(&cb, out.path()).unwrap();
        assert_eq!(
            fs::read(TlsPaths::new(&cb).file(HEAD_CRT)).unwrap(),
            fs::read(TlsPaths::new(&ca).file(HEAD_CRT)).unwrap()
        );
    }
}
