//! Who is asking: the `wwid` (a MAC) from the path, `?wwid=`, or, when the
//! request carries neither, the kernel's neighbour table entry for the
//! request's source address.
//!
//! With `warewulf: tls: true` the head also checks that the asker *is* the
//! node before it hands out the node's secrets ([`check_node`]): a system or
//! runtime overlay goes only to the node's own address, and, when the asker
//! is on a directly attached segment, only if the neighbour table maps that
//! address to one of the node's MACs. The runtime overlay further needs
//! HTTPS and a valid per-node token ([`crate::tls::token`]); tokens are
//! handed out with the system overlay and refreshed with every runtime
//! answer ([`with_token`]). Threat model: `docs/security.md`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use proto::Mac;

use super::artifact::FileRange;
use super::conn::Trailer;
use super::{HttpError, HttpState, NodeRequest, Stage};
use crate::nodedb::MergedNode;
use crate::tls::token::{self, TOKEN_HEADER, TOKEN_VIA_HEADER};

/// The kernel's IPv4 neighbour table.
pub const PROC_NET_ARP: &str = "/proc/net/arp";

/// The node identity of `req`; `Ok(None)` when nothing identifies it.
/// A `wwid` that is given but is not a MAC is a bad request.
pub fn wwid(req: &NodeRequest, arp_table: &Path) -> Result<Option<Mac>, HttpError> {
    let given = req
        .path_wwid
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| req.param(proto::QUERY_WWID));
    if let Some(text) = given {
        return text
            .trim()
            .parse::<Mac>()
            .map(Some)
            .map_err(|_| HttpError::bad_request(format!("wwid {text:?} is not a MAC address")));
    }
    let Some(IpAddr::V4(ip)) = req.peer.map(|p| p.ip().to_canonical()) else {
        return Ok(None);
    };
    Ok(std::fs::read_to_string(arp_table)
        .ok()
        .and_then(|table| arp_lookup(&table, ip)))
}

/// Finds `ip` in `/proc/net/arp` text; incomplete entries (flags 0 or an
/// all-zero address) do not count.
pub fn arp_lookup(table: &str, ip: Ipv4Addr) -> Option<Mac> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let addr: Ipv4Addr = cols.next()?.parse().ok()?;
        let _hw_type = cols.next()?;
        let flags = u32::from_str_radix(cols.next()?.trim_start_matches("0x"), 16).ok()?;
        let mac: Mac = cols.next()?.parse().ok()?;
        (addr == ip && flags != 0 && mac != Mac([0; 6])).then_some(mac)
    })
}

/// The token key of a TLS site (created on first use); `None` without
/// `tls`, or when the key cannot be read, in which case runtime overlays
/// are refused (fail closed) and the reason is logged.
pub fn token_key(config: &crate::config::Config) -> Option<token::TokenKey> {
    if !config.warewulf.tls {
        return None;
    }
    let path = crate::tls::TlsPaths::new(config).file(crate::tls::TOKEN_KEY);
    match token::TokenKey::load_or_create(&path) {
        Ok(k) => Some(k),
        Err(e) => {
            tracing::error!("no node tokens, runtime overlays will be refused: {e:#}");
            None
        }
    }
}

/// The MACs and IP addresses `nodes.conf` gives `node`.
fn node_addresses(node: &MergedNode) -> (Vec<Mac>, Vec<IpAddr>) {
    let mut macs = Vec::new();
    let mut ips = Vec::new();
    for nd in node.conf.netdevs.iter().flat_map(|m| m.values()) {
        if let Some(mac) = nd.hwaddr.as_deref().and_then(|h| h.parse::<Mac>().ok()) {
            macs.push(mac);
        }
        for ip in [nd.ipaddr.as_deref(), nd.ipaddr6.as_deref()]
            .into_iter()
            .flatten()
        {
            let bare = ip.split('/').next().unwrap_or_default().trim();
            if let Ok(ip) = bare.parse::<IpAddr>() {
                ips.push(ip);
            }
        }
    }
    (macs, ips)
}

/// Whether a node request may receive `stage` of `node` (see the module
/// docs). Without `tls` every request passes, as in Warewulf.
pub fn check_node(
    state: &HttpState,
    node: &MergedNode,
    req: &NodeRequest,
    stage: Stage,
) -> Result<(), HttpError> {
    if !state.config.warewulf.tls || !matches!(stage, Stage::System | Stage::Runtime) {
        return Ok(());
    }
    let refuse = |why: String| {
        state.warn_rate_limited(|| {
            format!(
                "node {}: {stage:?} refused to {}: {why}",
                node.id,
                req.peer_ip()
            )
        });
        state
            .status
            .record(&node.id, "BAD_IDENTITY", "", &req.peer_ip(), 0);
        HttpError::forbidden(format!("{stage:?} overlay refused: {why}"))
    };
    let Some(peer) = req.peer.map(|p| p.ip().to_canonical()) else {
        return Err(refuse("no client address".into()));
    };
    let (macs, ips) = node_addresses(node);
    if !ips.is_empty() && !ips.contains(&peer) {
        return Err(refuse(format!(
            "{peer} is not an address of node {}",
            node.id
        )));
    }
    let neighbour = match peer {
        IpAddr::V4(v4) => std::fs::read_to_string(&state.arp_table)
            .ok()
            .and_then(|t| arp_lookup(&t, v4)),
        IpAddr::V6(_) => None,
    };
    match neighbour {
        Some(mac) if !macs.contains(&mac) => {
            return Err(refuse(format!(
                "the neighbour table maps {peer} to {mac}, not to node {}",
                node.id
            )));
        }
        Some(_) => {}
        // Routed (or IPv6) without a configured address: nothing ties the
        // asker to the node.
        None if ips.is_empty() => {
            return Err(refuse(format!(
                "node {} has no address in nodes.conf and {peer} is not a direct neighbour",
                node.id
            )));
        }
        None => {}
    }
    if stage == Stage::Runtime {
        if !req.tls {
            return Err(refuse(
                "the runtime overlay is served over HTTPS only".into(),
            ));
        }
        let Some(key) = &state.tokens else {
            return Err(refuse("the head has no token key".into()));
        };
        let given = req.headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
        if let Err(e) = key.verify(&node.id, given, crate::serve::unix_now()) {
            return Err(refuse(e.to_string()));
        }
    }
    Ok(())
}

/// Adds what a TLS site hands a node with its artifacts (TLS mode only):
///
/// - to a stage-1 initramfs, a gzip member with the cluster CA
///   (`/warewulf/tls/ca.crt`) and the HTTPS port (`/warewulf/tls/port`), so
///   wwinit verifies the head without rebuilding stage 1 when the CA changes;
/// - to a system or runtime overlay, the node's token: a runtime answer and
///   a system answer to a node that asked for it by header
///   (`x-warewulf-token-via: header`, two-stage) carry it in the
///   `x-warewulf-token` header; a full system answer otherwise gets it as an
///   extra gzip member holding `/warewulf/token` (single-stage: iPXE passes
///   the body to the kernel as is).
///
/// An answer with an extra member has no `ETag` and no ranges.
pub fn with_tls_material(
    state: &HttpState,
    node: &MergedNode,
    req: &NodeRequest,
    stage: Stage,
    mut resp: Response,
) -> Result<Response, HttpError> {
    if !state.config.warewulf.tls || resp.status().is_client_error() {
        return Ok(resp);
    }
    if stage == Stage::Initramfs {
        if resp.status() != StatusCode::OK || req.method == axum::http::Method::HEAD {
            return Ok(resp);
        }
        let member = ca_member(&state.config)?;
        return Ok(append_member(resp, member));
    }
    let Some(key) = state.tokens.as_ref() else {
        return Ok(resp);
    };
    if !matches!(stage, Stage::System | Stage::Runtime) {
        return Ok(resp);
    }
    let token = key.issue(&node.id, crate::serve::unix_now());
    let as_header = stage == Stage::Runtime
        || req.headers.get(TOKEN_VIA_HEADER).is_some()
        || resp.status() != StatusCode::OK
        || req.method == axum::http::Method::HEAD;
    if as_header {
        let v = HeaderValue::from_str(&token)
            .map_err(|e| HttpError::internal(format!("token header: {e}")))?;
        resp.headers_mut().insert(TOKEN_HEADER, v);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok(resp);
    }
    let member = token::member(&[(token::TOKEN_PATH, 0o600, format!("{token}\n").as_bytes())])
        .map_err(|e| HttpError::internal(format!("token member: {e:#}")))?;
    Ok(append_member(resp, member))
}

/// The stage-1 addition of a TLS site: the CA and the HTTPS port.
fn ca_member(config: &crate::config::Config) -> Result<Vec<u8>, HttpError> {
    let path = crate::tls::TlsPaths::new(config).file(crate::tls::CA_CRT);
    let ca = std::fs::read(&path).map_err(|e| {
        HttpError::internal(format!(
            "TLS is on but {} cannot be read ({e}): run 'wwctl configure tls --create'",
            path.display()
        ))
    })?;
    let port = format!("{}\n", config.warewulf.tls_port);
    token::member(&[
        (crate::tls::NODE_CA_PATH, 0o644, &ca),
        (crate::tls::NODE_PORT_PATH, 0o644, port.as_bytes()),
    ])
    .map_err(|e| HttpError::internal(format!("CA member: {e:#}")))
}

/// Sends `member` after the file body of `resp` (a full `200`), which then
/// has no `ETag` and no ranges since its bytes are not the file's.
fn append_member(mut resp: Response, member: Vec<u8>) -> Response {
    let Some(range) = resp.extensions().get::<FileRange>() else {
        return resp;
    };
    let total = range.total() + member.len() as u64;
    let h = resp.headers_mut();
    h.remove(header::ETAG);
    h.remove(header::ACCEPT_RANGES);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.extensions_mut().insert(Trailer(Bytes::from(member)));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
10.0.0.5         0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0
10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.7         0x1         0x2         AA:BB:CC:DD:EE:07     *        eth1
";

    #[test]
    fn arp_finds_complete_entries_only() {
        let find = |ip: &str| arp_lookup(TABLE, ip.parse().unwrap());
        assert_eq!(find("10.0.0.5"), Some("aa:bb:cc:dd:ee:01".parse().unwrap()));
        assert_eq!(find("10.0.0.7"), Some("aa:bb:cc:dd:ee:07".parse().unwrap()));
        assert_eq!(find("10.0.0.6"), None);
        assert_eq!(find("10.0.0.8"), None);
    }
}
