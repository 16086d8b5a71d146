//! `GET /manifest/{wwid}`: the archives a two-stage node streams into its
//! root, in layering order, each with the URL to fetch it, its sha256 and
//! size as served, and its compression ([`proto::Manifest`]).
//!
//! Every entry is resolved exactly as the artifact route would answer it
//! (same file, same `ETag`), with its compression pinned in the URL
//! (`?compress=`), so the digest a node checks is the digest of the bytes
//! it will receive. zstd is preferred when built: it decompresses fastest
//! on the node.
//!
//! Order: image, (kmods: the slot for a kernel override's modules, served by
//! its own route), system overlay, runtime overlay. The image and the system
//! overlay are required: when one is not built the answer is `503`, which
//! wwinit retries with backoff while the admin builds it. The runtime
//! overlay is listed when it is built.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto::{ArtifactCompression, ArtifactStage, Manifest, ManifestEntry, Sha256Digest};

use super::{HttpError, HttpState, NodeRequest, Stage, artifact, check_asset_key, identity};

/// Compressions offered to two-stage nodes, preferred first.
const PREFERRED: &[(&str, ArtifactCompression)] = &[
    ("zst", ArtifactCompression::Zst),
    ("gz", ArtifactCompression::Gz),
];

/// The artifacts of a manifest in layering order, with whether each is
/// required. A kernel override's kmods go between image and system.
const LAYERS: &[(ArtifactStage, Stage, bool)] = &[
    (ArtifactStage::Image, Stage::Image, true),
    (ArtifactStage::System, Stage::System, true),
    (ArtifactStage::Runtime, Stage::Runtime, false),
];

pub async fn manifest_route(State(state): State<Arc<HttpState>>, req: NodeRequest) -> Response {
    match answer(&state, &req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn answer(state: &Arc<HttpState>, req: &NodeRequest) -> Result<Response, HttpError> {
    let mac = identity::wwid(req, &state.arp_table)?;
    let nodes = state.nodes();
    let (Some(mac), Some(node)) = (mac, mac.and_then(|m| nodes.by_mac.get(&m)).cloned()) else {
        let shown = mac.map_or_else(|| format!("client {}", req.peer_ip()), |m| m.to_string());
        state.warn_rate_limited(|| format!("manifest request from unknown node {shown}"));
        return Err(HttpError::not_found(format!("unknown node {shown}")));
    };
    check_asset_key(state, &node, req)?;
    let mut manifest: Manifest = Vec::new();
    for &(stage, route_stage, required) in LAYERS {
        match entry(state, &node, &mac, stage, route_stage).await? {
            Some(e) => manifest.push(e),
            None if required => {
                return Err(HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "node {}: the {} artifact is not built yet",
                        node.id,
                        stage.name()
                    ),
                ));
            }
            None => {}
        }
    }
    let body = serde_json::to_vec(&manifest)
        .map_err(|e| HttpError::internal(format!("encoding the manifest: {e}")))?;
    state
        .status
        .record(&node.id, "MANIFEST", "manifest", &req.peer_ip(), 0);
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// One manifest entry, or `None` when the artifact is not built in any
/// offered compression.
async fn entry(
    state: &Arc<HttpState>,
    node: &Arc<crate::nodedb::MergedNode>,
    mac: &proto::Mac,
    stage: ArtifactStage,
    route_stage: Stage,
) -> Result<Option<ManifestEntry>, HttpError> {
    for &(ext, compression) in PREFERRED {
        let found = match artifact::resolve(state, Arc::clone(node), route_stage, Some(ext)).await {
            Ok(f) => f,
            Err(e) if e.status == StatusCode::NOT_FOUND => continue,
            Err(e) => return Err(e),
        };
        let digest: Sha256Digest = format!("sha256:{}", found.etag).parse().map_err(|e| {
            HttpError::internal(format!("{} of node {}: {e}", stage.name(), node.id))
        })?;
        return Ok(Some(ManifestEntry {
            stage,
            url: format!(
                "{}?{}={ext}",
                proto::routes::node_path(stage.name(), mac),
                proto::QUERY_COMPRESS
            ),
            digest,
            size: found.size(),
            compression,
        }));
    }
    Ok(None)
}
