//! Wire types shared by the head (`wwctl server`), `wwinit` and `wwclient`.
//!
//! Everything that crosses the network between them is named here once: route
//! paths ([`routes`]), query parameter names, the node identity (`wwid`), the
//! artifact manifest and status reports ([`manifest`]). This crate does no I/O
//! so that the node-side binaries stay small.

pub mod manifest;
pub mod routes;
pub mod wwid;

pub use manifest::{
    ArtifactCompression, ArtifactStage, Manifest, ManifestEntry, ParseDigestError, Sha256Digest,
    StatusReport,
};
pub use wwid::{Mac, ParseMacError};

/// Query parameter carrying the node identity when it is not in the path.
pub const QUERY_WWID: &str = "wwid";
/// Query parameter carrying the node's asset key.
pub const QUERY_ASSETKEY: &str = "assetkey";
/// Query parameter choosing the compression of an artifact (`gz` or `zst`).
pub const QUERY_COMPRESS: &str = "compress";
