//! Per-node tokens: short-lived proofs that a node received its own system
//! overlay.
//!
//! A token is `iw1.<expiry>.<mac>`, where `<expiry>` is a Unix time and
//! `<mac>` is HMAC-SHA256 (hex) under the head's `token.key` of the node's
//! id and the expiry. Nothing is stored per node: any head holding the key
//! can check a token, and changing the key revokes every token at once.
//!
//! The head hands a node its token with the system overlay (an extra gzip
//! member holding `/warewulf/token`, or the `X-Warewulf-Token` response
//! header for two-stage nodes whose overlay digest is pinned), and a fresh
//! one with every runtime overlay answer, so a running `wwclient` rotates it
//! well before it expires.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use initramfs::compress::{Compression, EncoderOptions, encoder};
use initramfs::newc::Writer;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::fsutil;

/// How long a token is accepted after it was issued.
pub const TOKEN_TTL_SECS: u64 = 3600;
/// Where the token lands in the node's root.
pub const TOKEN_PATH: &str = "warewulf/token";
/// Header carrying a token, both ways.
pub const TOKEN_HEADER: &str = "x-warewulf-token";
/// Request header by which a two-stage node asks for its token as a header
/// instead of an extra archive member (its overlay digest is pinned).
pub const TOKEN_VIA_HEADER: &str = "x-warewulf-token-via";

const PREFIX: &str = "iw1";
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("no token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token does not belong to this node")]
    Mismatch,
}

/// The head's token secret.
pub struct TokenKey(hmac::Key);

impl TokenKey {
    /// Writes a new random key to `path` (mode 0600).
    pub fn create(path: &Path) -> Result<()> {
        let mut raw = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        fsutil::write_atomic(path, hex::encode(raw).as_bytes(), 0o600)
    }

    /// Reads the key at `path`, creating it first when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            Self::create(path)?;
        }
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw = hex::decode(text.trim())
            .ok()
            .filter(|r| r.len() >= 16)
            .with_context(|| format!("{}: not a hex key of at least 16 bytes", path.display()))?;
        Ok(Self::from_bytes(&raw))
    }

    pub fn from_bytes(raw: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, raw))
    }

    fn tag(&self, node_id: &str, expiry: u64) -> hmac::Tag {
        hmac::sign(&self.0, format!("{node_id}\n{expiry}").as_bytes())
    }

    /// A token for `node_id`, valid [`TOKEN_TTL_SECS`] from `now`.
    pub fn issue(&self, node_id: &str, now: u64) -> String {
        let expiry = now.saturating_add(TOKEN_TTL_SECS);
        let tag = self.tag(node_id, expiry);
        format!("{PREFIX}.{expiry}.{}", hex::encode(tag.as_ref()))
    }

    /// Checks `token` for `node_id` at `now` (constant time on the MAC).
    pub fn verify(&self, node_id: &str, token: Option<&str>, now: u64) -> Result<(), TokenError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(TokenError::Missing);
        };
        let mut parts = token.split('.');
        let (Some(PREFIX), Some(expiry), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.0, format!("{node_id}\n{expiry}").as_bytes(), &mac)
            .map_err(|_| TokenError::Mismatch)?;
        if expiry < now {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// A gzip initramfs member holding `files` (path below `/`, mode, data)
/// and their parent directories, to be appended to an artifact: the kernel
/// and our unpacker both apply concatenated members in order.
pub fn member(files: &[(&str, u32, &[u8])]) -> Result<Vec<u8>> {
    let opts = EncoderOptions {
        level: None,
        threads: 1,
    };
    let enc = encoder(Compression::Gzip, &opts, Vec::new()).context("starting a gzip member")?;
    let mut w = Writer::new(enc);
    for (path, mode, data) in files {
        w.add_parents(path)
            .and_then(|()| w.add_file(path, *mode, data))
            .with_context(|| format!("adding {path} to an archive member"))?;
    }
    let enc = w.finish().context("finishing the archive member")?;
    let out = enc.finish().context("finishing the gzip member")?;
    if out.is_empty() {
        bail!("empty token member");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn tokens_verify_for_their_node_until_they_expire() {
        let key = TokenKey::from_bytes(&[7; 32]);
        let t = key.issue("n1", 1000);
        assert_eq!(key.verify("n1", Some(&t), 1000), Ok(()));
        assert_eq!(key.verify("n1", Some(&t), 1000 + TOKEN_TTL_SECS), Ok(()));
        assert_eq!(
            key.verify("n1", Some(&t), 1001 + TOKEN_TTL_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(key.verify("n2", Some(&t), 1000), Err(TokenError::Mismatch));
        let other = TokenKey::from_bytes(&[8; 32]);
        assert_eq!(
            other.verify("n1", Some(&t), 1000),
            Err(TokenError::Mismatch)
        );
        assert_eq!(key.verify("n1", None, 1000), Err(TokenError::Missing));
        // A longer expiry with the old MAC does not pass.
        let forged = t.replacen(".4600.", ".9999999.", 1);
        assert_eq!(
            key.verify("n1", Some(&forged), 1000),
            Err(TokenError::Mismatch)
        );
        for bad in ["x", "iw1.1.zz", "iw2.1.00", "iw1.a.00", "iw1.1.00.00"] {
            assert!(key.verify("n1", Some(bad), 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn member_unpacks_to_the_token_file() {
        let m = member(&[(TOKEN_PATH, 0o600, b"iw1.5.ab\n")]).unwrap();
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(&m[..])
            .read_to_end(&mut text)
            .unwrap();
        let mut r = initramfs::newc::Reader::new(&text[..]);
        let mut found = None;
        while let Some(e) = r.next_entry().unwrap() {
            if e.name == TOKEN_PATH.as_bytes() {
                assert_eq!(e.perm, 0o600);
                let mut body = String::new();
                r.data().read_to_string(&mut body).unwrap();
                found = Some(body);
            }
        }
        assert_eq!(found.as_deref(), Some("iw1.5.ab\n"));
    }

    #[test]
    fn keys_are_created_private_and_reloaded() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("token.key");
        let a = TokenKey::load_or_create(&p).unwrap();
        let b = TokenKey::load_or_create(&p).unwrap();
        let t = a.issue("n", 0);
        assert_eq!(b.verify("n", Some(&t), 0), Ok(()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::write(&p, "short").unwrap();
        assert!(TokenKey::load_or_create(&p).is_err());
    }
}
