//! The artifact manifest (`GET /manifest/{wwid}`) and boot status reports
//! (`POST /status/{wwid}`).
//!
//! A manifest is a JSON list of the archives a two-stage node layers into its
//! root, in order — later entries win, as with concatenated initrds:
//!
//! ```json
//! [{"stage": "image", "url": "/image/52:54:00:12:34:56",
//!   "digest": "sha256:9f86…", "size": 123456, "compression": "zst"}]
//! ```
//!
//! `url` is a path on the server that sent the manifest, or an absolute
//! `http://` URL. `digest` is `sha256:<64 hex>` over the bytes as served
//! (compressed). `size` is that byte count. `compression` is `gz`, `zst`, `xz`
//! or `none` (informational: the unpacker detects members by magic).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which artifact an entry is; also the stage name a node reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactStage {
    Image,
    Kmods,
    System,
    Runtime,
}

impl ArtifactStage {
    /// The lowercase name used on the wire and as the route prefix.
    pub fn name(self) -> &'static str {
        match self {
            ArtifactStage::Image => crate::routes::IMAGE,
            ArtifactStage::Kmods => crate::routes::KMODS,
            ArtifactStage::System => crate::routes::SYSTEM,
            ArtifactStage::Runtime => crate::routes::RUNTIME,
        }
    }
}

/// Compression of an artifact as served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactCompression {
    None,
    Gz,
    Zst,
    Xz,
}

/// A SHA-256 digest, written `sha256:<64 lowercase hex>` on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

/// Why a string is not a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseDigestError {
    input: String,
}

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed digest {:?} (want sha256:<64 hex>)",
            self.input
        )
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Sha256Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDigestError {
            input: s.to_owned(),
        };
        let hex = s.strip_prefix("sha256:").ok_or_else(err)?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
        }
        Ok(Sha256Digest(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One archive to layer into the node's root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub stage: ArtifactStage,
    /// A path on the server (`/image/…`) or an absolute `http://` URL.
    pub url: String,
    pub digest: Sha256Digest,
    /// Bytes as served.
    pub size: u64,
    pub compression: ArtifactCompression,
}

/// What `GET /manifest/{wwid}` returns: entries in layering order.
pub type Manifest = Vec<ManifestEntry>;

/// Body of `POST /status/{wwid}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn manifest_round_trips() {
        let json = format!(
            r#"[{{"stage":"image","url":"/image/52:54:00:12:34:56","digest":"{DIGEST}","size":42,"compression":"zst"}},
               {{"stage":"system","url":"http://10.0.0.1:9873/system/x","digest":"{DIGEST}","size":7,"compression":"gz"}}]"#
        );
        let m: Manifest = serde_json::from_str(&json).expect("valid manifest");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].stage, ArtifactStage::Image);
        assert_eq!(m[0].compression, ArtifactCompression::Zst);
        assert_eq!(m[1].stage.name(), "system");
        assert_eq!(m[0].digest.to_string(), DIGEST);
        let again: Manifest =
            serde_json::from_str(&serde_json::to_string(&m).expect("serialises")).expect("parses");
        assert_eq!(again, m);
    }

    #[test]
    fn manifest_rejects_bad_input() {
        for bad in [
            format!(
                r#"[{{"stage":"kernel","url":"/x","digest":"{DIGEST}","size":1,"compression":"gz"}}]"#
            ),
            r#"[{"stage":"image","url":"/x","digest":"sha256:00","size":1,"compression":"gz"}]"#
                .to_owned(),
            r#"[{"stage":"image","url":"/x","digest":"md5:00","size":1,"compression":"gz"}]"#
                .to_owned(),
            format!(
                r#"[{{"stage":"image","url":"/x","digest":"{DIGEST}","size":1,"compression":"bz2"}}]"#
            ),
            format!(
                r#"[{{"stage":"image","url":"/x","digest":"{DIGEST}","size":1,"compression":"gz","extra":1}}]"#
            ),
        ] {
            assert!(serde_json::from_str::<Manifest>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn status_report_omits_empty_detail() {
        let r = StatusReport {
            stage: "fetch image".into(),
            detail: None,
        };
        assert_eq!(
            serde_json::to_string(&r).expect("serialises"),
            r#"{"stage":"fetch image"}"#
        );
    }
}
