//! URL paths of the node protocol, built in one place so the head's router,
//! `wwinit` and `wwclient` cannot drift apart.
//!
//! Every node route is `/{prefix}/{wwid}` with the MAC in canonical form
//! (lowercase, colon separated).

use crate::wwid::Mac;

/// The head's default HTTP port (Warewulf's `warewulf.port`).
pub const DEFAULT_PORT: u16 = 9873;

/// Route prefix of the node image archive.
pub const IMAGE: &str = "image";
/// Route prefix of the kernel modules archive.
pub const KMODS: &str = "kmods";
/// Route prefix of the node's system overlay.
pub const SYSTEM: &str = "system";
/// Route prefix of the node's runtime overlay.
pub const RUNTIME: &str = "runtime";
/// Route prefix of the node's artifact manifest (`GET`, JSON [`crate::Manifest`]).
pub const MANIFEST: &str = "manifest";
/// Route prefix of boot status reports (`POST`, JSON [`crate::StatusReport`]).
pub const STATUS: &str = "status";

/// `/{prefix}/{wwid}`.
pub fn node_path(prefix: &str, wwid: &Mac) -> String {
    format!("/{prefix}/{wwid}")
}

/// `/image/{wwid}`.
pub fn image(wwid: &Mac) -> String {
    node_path(IMAGE, wwid)
}

/// `/kmods/{wwid}`.
pub fn kmods(wwid: &Mac) -> String {
    node_path(KMODS, wwid)
}

/// `/system/{wwid}`.
pub fn system(wwid: &Mac) -> String {
    node_path(SYSTEM, wwid)
}

/// `/runtime/{wwid}`.
pub fn runtime(wwid: &Mac) -> String {
    node_path(RUNTIME, wwid)
}

/// `/manifest/{wwid}`.
pub fn manifest(wwid: &Mac) -> String {
    node_path(MANIFEST, wwid)
}

/// `/status/{wwid}`.
pub fn status(wwid: &Mac) -> String {
    node_path(STATUS, wwid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_use_canonical_mac() {
        let mac: Mac = "52-54-00-AB-CD-EF".parse().expect("valid mac");
        assert_eq!(image(&mac), "/image/52:54:00:ab:cd:ef");
        assert_eq!(kmods(&mac), "/kmods/52:54:00:ab:cd:ef");
        assert_eq!(system(&mac), "/system/52:54:00:ab:cd:ef");
        assert_eq!(runtime(&mac), "/runtime/52:54:00:ab:cd:ef");
        assert_eq!(manifest(&mac), "/manifest/52:54:00:ab:cd:ef");
        assert_eq!(status(&mac), "/status/52:54:00:ab:cd:ef");
    }
}
