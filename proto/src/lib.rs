//! Wire types shared by the head (`wwctl server`), `wwinit` and `wwclient`.
//!
//! Everything that crosses the network between them is named here once: route
//! prefixes, query parameter names and the node identity (`wwid`). This crate
//! does no I/O so that the node-side binaries stay small.

pub mod wwid;

pub use wwid::{Mac, ParseMacError};

/// Query parameter carrying the node identity when it is not in the path.
pub const QUERY_WWID: &str = "wwid";
/// Query parameter carrying the node's asset key.
pub const QUERY_ASSETKEY: &str = "assetkey";
/// Query parameter choosing the compression of an artifact (`gz` or `zst`).
pub const QUERY_COMPRESS: &str = "compress";
