//! A small client for the OCI distribution API (Docker registry v2): image
//! references, manifest and index fetches with content negotiation, blob
//! downloads into a cache keyed by digest (verified before they are renamed
//! into place), anonymous, basic and bearer-token authentication, plain
//! HTTP for `--nohttps`, and proxies from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;
use ureq::http::Response;

use super::oci::{self, Descriptor, Verified};
use crate::fsutil;

/// Docker Hub, where a reference without a registry host points.
const DOCKER_HUB: &str = "registry-1.docker.io";
/// Connect timeout; blobs may take long, so there is no overall timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Every manifest type we can read, for the `Accept` header.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// `docker://host[:port]/repo/name[:tag][@sha256:…]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl Reference {
    /// Parses what follows `docker://` or `oci://`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || format!("invalid image reference {s:?}");
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                oci::parse_digest(d).with_context(bad)?;
                (r, Some(d.to_owned()))
            }
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), path.to_owned())
            }
            _ => ("docker.io".to_owned(), rest.to_owned()),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
            _ => (path.clone(), "latest".to_owned()),
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid = !repository.is_empty()
            && repository.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            })
            && !tag.is_empty();
        if !valid {
            bail!(
                "{}: repository names are lowercase letters, digits, '.', '_', '-' and '/'",
                bad()
            );
        }
        Ok(Self {
            registry,
            repository,
            reference: digest.unwrap_or(tag),
        })
    }

    fn host(&self) -> &str {
        if self.registry == "docker.io" {
            DOCKER_HUB
        } else {
            &self.registry
        }
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{sep}{}",
            self.registry, self.repository, self.reference
        )
    }
}

/// Registry login.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// A connection to one registry for one repository.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    reference: Reference,
    credentials: Option<Credentials>,
    /// The `Authorization` header value once a challenge was answered.
    authorization: Option<String>,
}

impl Client {
    pub fn new(reference: &Reference, nohttps: bool, credentials: Option<Credentials>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .proxy(ureq::Proxy::try_from_env())
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(concat!("ironwulf/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let scheme = if nohttps { "http" } else { "https" };
        Self {
            agent,
            base: format!(
                "{scheme}://{}/v2/{}",
                reference.host(),
                reference.repository
            ),
            reference: reference.clone(),
            credentials,
            authorization: None,
        }
    }

    /// GET `url`, answering one authentication challenge.
    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response<ureq::Body>> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(auth) = &self.authorization {
                req = req.header("Authorization", auth);
            }
            let resp = req.call().with_context(|| format!("GET {url}"))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.authenticate(&challenge)
                    .with_context(|| format!("authenticating to {}", self.reference.registry))?;
                continue;
            }
            if !(200..300).contains(&status) {
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                bail!("GET {url}: HTTP {status} {}", body.trim());
            }
            return Ok(resp);
        }
        bail!("GET {url}: still unauthorized after logging in (HTTP 401)")
    }

    /// Answers a `WWW-Authenticate` challenge (Basic or Bearer).
    fn authenticate(&mut self, challenge: &str) -> Result<()> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let c = self.credentials.as_ref().context(
                    "the registry wants a login: set --username and WAREWULF_OCI_PASSWORD",
                )?;
                self.authorization = Some(basic(c));
                Ok(())
            }
            "bearer" => {
                let params = parse_challenge(params);
                let realm = params
                    .iter()
                    .find(|(k, _)| k == "realm")
                    .map(|(_, v)| v.clone())
                    .context("bearer challenge without a realm")?;
                let mut url = realm;
                let mut sep = if url.contains('?') { '&' } else { '?' };
                for key in ["service", "scope"] {
                    if let Some((_, v)) = params.iter().find(|(k, _)| k == key) {
                        url.push(sep);
                        url.push_str(key);
                        url.push('=');
                        url.push_str(&query_escape(v));
                        sep = '&';
                    }
                }
                if !params.iter().any(|(k, _)| k == "scope") {
                    url.push(sep);
                    url.push_str(&format!(
                        "scope=repository:{}:pull",
                        query_escape(&self.reference.repository)
                    ));
                }
                let mut req = self.agent.get(&url);
                if let Some(c) = &self.credentials {
                    req = req.header("Authorization", basic(c));
                }
                let resp = req.call().with_context(|| format!("GET {url}"))?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .with_config()
                    .limit(oci::MAX_JSON)
                    .read_to_vec()
                    .with_context(|| format!("reading the token from {url}"))?;
                if status != 200 {
                    bail!(
                        "token request {url}: HTTP {status} {}",
                        String::from_utf8_lossy(&body).trim()
                    );
                }
                let v: serde_json::Value =
                    serde_json::from_slice(&body).context("decoding the token response")?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .context("the token response has no token")?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            "" => bail!("HTTP 401 without a WWW-Authenticate challenge"),
            other => bail!("unsupported authentication scheme {other:?}"),
        }
    }

    /// The manifest or index at `reference`, verified when it is a digest.
    /// Returns (media type, digest, bytes).
    pub fn manifest(&mut self, reference: &str) -> Result<(String, String, Vec<u8>)> {
        let url = format!("{}/manifests/{reference}", self.base);
        let resp = self.get(&url, Some(ACCEPT))?;
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let body = resp
            .into_body()
            .with_config()
            .limit(oci::MAX_JSON)
            .read_to_vec()
            .with_context(|| format!("reading {url}"))?;
        let digest = oci::sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            bail!("manifest {reference} from {url} has digest {digest}");
        }
        Ok((media_type, digest, body))
    }

    /// Downloads the blob of `desc` into `cache` unless it is there.
    pub fn fetch_blob(
        &mut self,
        desc: &Descriptor,
        cache: &BlobCache,
        bar: &ProgressBar,
    ) -> Result<PathBuf> {
        let target = cache.path(&desc.digest)?;
        if cache.contains(desc)? {
            bar.inc(desc.size);
            return Ok(target);
        }
        let url = format!("{}/blobs/{}", self.base, desc.digest);
        let resp = self.get(&url, None)?;
        let reader = resp.into_body().into_reader();
        cache
            .store(reader, desc, bar)
            .with_context(|| format!("downloading {url}"))?;
        Ok(target)
    }
}

/// Blobs by digest under `<cachedir>/warewulf/blobs/sha256/`, each written
/// to a temp file, verified, fsynced and renamed, so a present file is whole.
pub struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub fn new(cachedir: &Path) -> Self {
        Self {
            dir: cachedir.join("warewulf/blobs/sha256"),
        }
    }

    pub fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join(oci::parse_digest(digest)?))
    }

    /// Whether the blob is cached with the expected size (content is
    /// verified again when it is read).
    pub fn contains(&self, desc: &Descriptor) -> Result<bool> {
        Ok(fs::metadata(self.path(&desc.digest)?)
            .is_ok_and(|m| desc.size == 0 || m.len() == desc.size))
    }

    /// Copies `reader` into the cache, verifying digest and size.
    pub fn store<R: Read>(&self, reader: R, desc: &Descriptor, bar: &ProgressBar) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let target = self.path(&desc.digest)?;
        let mut file = fsutil::AtomicFile::new(&target)?;
        file.set_mode(0o644)?;
        let mut verified = Verified::new(bar.wrap_read(reader), &desc.digest);
        let mut buf = vec![0u8; oci::LAYER_BUF];
        loop {
            let n = verified.read(&mut buf).context("reading the blob")?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .with_context(|| format!("writing {}", target.display()))?;
        }
        let size = verified.check()?;
        if desc.size != 0 && size != desc.size {
            bail!(
                "blob {} is {size} bytes, the manifest says {}",
                desc.digest,
                desc.size
            );
        }
        file.commit()
    }
}

fn basic(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64(format!("{}:{}", c.username, c.password).as_bytes())
    )
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `key="value", key2=value2` → pairs.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_owned(), &q[end + 1..]),
                None => (q.to_owned(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].trim().to_owned(), &after[end..]),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads `WAREWULF_OCI_USERNAME`/`WAREWULF_OCI_PASSWORD` (Warewulf's
/// variables) unless a username is given.
pub fn credentials(username: Option<String>) -> Option<Credentials> {
    let username = username.or_else(|| std::env::var("WAREWULF_OCI_USERNAME").ok())?;
    let password = std::env::var("WAREWULF_OCI_PASSWORD").unwrap_or_default();
    Some(Credentials { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("docker.io", "library/busybox", "latest")
        );
        let r = Reference::parse("127.0.0.1:5000/tests/multi:v1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "tests/multi");
        assert_eq!(r.reference, "v1");
        let d = oci::sha256_digest(b"x");
        let r = Reference::parse(&format!("localhost/a@{d}")).unwrap();
        assert_eq!(r.reference, d);
        assert!(Reference::parse("Host.x/UPPER:tag").is_err());
        assert!(Reference::parse("a@sha256:zz").is_err());
    }

    #[test]
    fn challenges_and_base64() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[2].1, "repository:a/b:pull");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
