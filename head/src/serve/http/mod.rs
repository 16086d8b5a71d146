//! The head's HTTP service: everything iPXE, `wwinit` and `wwclient` fetch.
//!
//! - [`router`]: the routes (axum), one place for identity, asset keys, the
//!   `secure` port rule, iPXE scripts, artifact semantics and `/status`;
//! - `artifact`: which file a stage means for a node, `ETag`, `Range`, `304`;
//! - `conn`: the socket side, a small HTTP/1.1 keep-alive loop that hands
//!   every request to the router and sends file bodies with `sendfile(2)`;
//! - `identity`: `wwid` from the path, the query or the neighbour table;
//!   with `tls`, the node-identity checks and node tokens (`docs/security.md`);
//! - `ipxe`: rendering `<sysconfdir>/warewulf/ipxe/<template>.ipxe`;
//! - `status`: the per-node boot timeline behind `GET /status`;
//! - `manifest`: `GET /manifest/{wwid}`, what a two-stage node streams;
//! - `autobuild`: stale overlays rebuilt on request (`autobuild overlays`).
//!
//! Nodes are swapped in whole by [`HttpState::set_nodes`] when `nodes.conf`
//! changes; a request sees either the old or the new set, never a mix.

mod artifact;
mod autobuild;
mod conn;
mod identity;
mod ipxe;
mod manifest;
mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use proto::Mac;

use crate::config::Config;
use crate::nodedb::MergedNode;
use crate::serve::ratelimit::RateLimit;

pub use conn::{listeners, serve, serve_tls};

/// Header a node may use instead of `?assetkey=`.
pub const ASSET_KEY_HEADER: &str = "x-warewulf-asset-key";

/// The largest `POST /status` body accepted.
const STATUS_BODY_LIMIT: usize = 4096;

/// What a request asks for; also the stage recorded in `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Ipxe,
    Kernel,
    Image,
    System,
    Runtime,
    Initramfs,
    /// Modules of a kernel imported apart from the node's image.
    Kmods,
}

impl Stage {
    /// The `?stage=` spelling of the legacy `/provision` route.
    fn from_query(s: &str) -> Option<Self> {
        Some(match s {
            "ipxe" => Self::Ipxe,
            "kernel" => Self::Kernel,
            "image" | "container" => Self::Image,
            "system" => Self::System,
            "runtime" => Self::Runtime,
            "initramfs" => Self::Initramfs,
            "kmods" => Self::Kmods,
            _ => return None,
        })
    }

    /// Warewulf's name for the stage in `/status`.
    fn status_name(self) -> &'static str {
        match self {
            Self::Ipxe => "IPXE",
            Self::Kernel => "KERNEL",
            Self::Image => "IMAGE",
            Self::System => "SYSTEM_OVERLAY",
            Self::Runtime => "RUNTIME_OVERLAY",
            Self::Initramfs => "INITRAMFS",
            Self::Kmods => "KMODS",
        }
    }
}

/// The nodes as last loaded, indexed by every hardware address they own.
#[derive(Default)]
struct Nodes {
    by_id: HashMap<String, Arc<MergedNode>>,
    by_mac: HashMap<Mac, Arc<MergedNode>>,
}

impl Nodes {
    fn new(nodes: Vec<MergedNode>) -> Self {
        let mut out = Self::default();
        for node in nodes {
            let node = Arc::new(node);
            let macs = node
                .conf
                .netdevs
                .iter()
                .flat_map(|m| m.values())
                .filter_map(|nd| nd.hwaddr.as_deref()?.parse::<Mac>().ok());
            for mac in macs {
                out.by_mac.entry(mac).or_insert_with(|| Arc::clone(&node));
            }
            out.by_id.insert(node.id.clone(), node);
        }
        out
    }
}

/// Everything the HTTP service needs; shared by all connections.
pub struct HttpState {
    config: Arc<Config>,
    nodes: RwLock<Arc<Nodes>>,
    status: status::StatusTable,
    digests: artifact::DigestCache,
    autobuild: Arc<autobuild::Autobuild>,
    /// The kernel's IPv4 neighbour table, for requests that carry no `wwid`.
    arp_table: PathBuf,
    /// Node traffic (unknown nodes, bad keys) is logged at a bounded rate.
    log_limit: Mutex<RateLimit>,
    /// The per-node token key, with `warewulf: tls` (see `identity`).
    tokens: Option<crate::tls::token::TokenKey>,
}

impl HttpState {
    pub fn new(config: &Config, nodes: Vec<MergedNode>) -> Self {
        Self {
            config: Arc::new(config.clone()),
            nodes: RwLock::new(Arc::new(Nodes::new(nodes))),
            status: status::StatusTable::default(),
            digests: artifact::DigestCache::default(),
            autobuild: Arc::default(),
            arp_table: PathBuf::from(identity::PROC_NET_ARP),
            tokens: identity::token_key(config),
            log_limit: Mutex::new(RateLimit::new(20, Duration::from_secs(10))),
        }
    }

    /// Replaces the node set (after `nodes.conf` changed); in-flight requests
    /// finish with the set they started with.
    pub fn set_nodes(&self, nodes: Vec<MergedNode>) {
        let fresh = Arc::new(Nodes::new(nodes));
        *self.nodes.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    fn nodes(&self) -> Arc<Nodes> {
        Arc::clone(&self.nodes.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Logs a warning caused by node traffic, at most 20 per 10 s.
    fn warn_rate_limited(&self, msg: impl FnOnce() -> String) {
        let mut limit = self.log_limit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(suppressed) = limit.allow(Instant::now()) {
            if suppressed > 0 {
                tracing::warn!("{} (and {suppressed} similar messages suppressed)", msg());
            } else {
                tracing::warn!("{}", msg());
            }
        }
    }
}

/// A request answered with an error status and a one-line reason.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{}", self.message);
        } else {
            tracing::debug!("{}: {}", self.status, self.message);
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

/// Request extension: the client's address and port, set by the connection
/// loop (tests set it by hand). Needed for the `secure` port rule and the
/// neighbour-table lookup.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// What every node route reads from a request.
struct NodeRequest {
    method: Method,
    headers: HeaderMap,
    query: HashMap<String, String>,
    /// `{wwid}` from the path, percent-decoded.
    path_wwid: Option<String>,
    peer: Option<SocketAddr>,
    /// Whether the request came over HTTPS.
    tls: bool,
}

impl NodeRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn asset_key(&self) -> Option<&str> {
        self.param(proto::QUERY_ASSETKEY).or_else(|| {
            self.headers
                .get(ASSET_KEY_HEADER)
                .and_then(|v| v.to_str().ok())
        })
    }

    fn peer_ip(&self) -> String {
        self.peer.map(|p| p.ip().to_string()).unwrap_or_default()
    }
}

impl FromRequestParts<Arc<HttpState>> for NodeRequest {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<HttpState>,
    ) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::bad_request(format!("bad query string: {e}")))?;
        let path_wwid = match RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params
                .iter()
                .find(|(k, _)| *k == "wwid")
                .map(|(_, v)| v.to_owned()),
            Err(_) => None,
        };
        let peer = parts.extensions.get::<Peer>().map(|p| p.0);
        Ok(Self {
            method: parts.method.clone(),
            headers: parts.headers.clone(),
            query,
            path_wwid,
            peer,
            tls: parts.extensions.get::<conn::OverTls>().is_some(),
        })
    }
}

/// Every route of the HTTP service.
pub fn router(state: Arc<HttpState>) -> Router {
    let mut r = Router::new();
    for (prefix, stage) in [
        ("ipxe", Stage::Ipxe),
        ("kernel", Stage::Kernel),
        ("image", Stage::Image),
        ("system", Stage::System),
        ("runtime", Stage::Runtime),
        ("initramfs", Stage::Initramfs),
        ("kmods", Stage::Kmods),
    ] {
        let handler =
            move |st: State<Arc<HttpState>>, req: NodeRequest| stage_route(st, req, stage);
        r = r
            .route(&format!("/{prefix}"), get(handler))
            .route(&format!("/{prefix}/{{wwid}}"), get(handler));
    }
    r.route("/manifest", get(manifest::manifest_route))
        .route("/manifest/{wwid}", get(manifest::manifest_route))
        .route("/provision", get(provision_route))
        .route("/provision/{wwid}", get(provision_route))
        .route("/efiboot/{*file}", get(efiboot_route))
        .route("/status", get(status_route))
        .route("/status/{wwid}", post(report_route))
        .with_state(state)
}

async fn provision_route(st: State<Arc<HttpState>>, req: NodeRequest) -> Response {
    let Some(stage) = req.param("stage").and_then(Stage::from_query) else {
        return HttpError::bad_request(
            "missing or unknown ?stage= (ipxe, kernel, image, system, runtime, initramfs)",
        )
        .into_response();
    };
    stage_route(st, req, stage).await
}

async fn stage_route(
    State(state): State<Arc<HttpState>>,
    req: NodeRequest,
    stage: Stage,
) -> Response {
    match answer_stage(&state, &req, stage).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// Finds the node, enforces the asset key and the `secure` port rule, then
/// answers one stage.
async fn answer_stage(
    state: &Arc<HttpState>,
    req: &NodeRequest,
    stage: Stage,
) -> Result<Response, HttpError> {
    let mac = identity::wwid(req, &state.arp_table)?;
    let nodes = state.nodes();
    let Some(node) = mac.and_then(|m| nodes.by_mac.get(&m)).cloned() else {
        let shown = mac.map_or_else(|| format!("client {}", req.peer_ip()), |m| m.to_string());
        state.warn_rate_limited(|| format!("{stage:?} request from unknown node {shown}"));
        if stage == Stage::Ipxe {
            return ipxe::unconfigured(state, mac);
        }
        return Err(HttpError::not_found(format!("unknown node {shown}")));
    };
    check_asset_key(state, &node, req)?;
    identity::check_node(state, &node, req, stage)?;
    if stage == Stage::Runtime && state.config.warewulf.secure {
        match req.peer {
            Some(p) if p.port() < 1024 => {}
            _ => {
                state.warn_rate_limited(|| {
                    format!(
                        "node {}: runtime overlay refused to unprivileged port of {}",
                        node.id,
                        req.peer_ip()
                    )
                });
                return Err(HttpError::forbidden(
                    "secure mode: the runtime overlay is served to privileged ports only",
                ));
            }
        }
    }
    let resp = if stage == Stage::Ipxe {
        let resp = ipxe::script(state, &node, mac)?;
        state
            .status
            .record(&node.id, stage.status_name(), "ipxe", &req.peer_ip(), 0);
        resp
    } else {
        let found = artifact::resolve(
            state,
            Arc::clone(&node),
            stage,
            req.param(proto::QUERY_COMPRESS),
        )
        .await?;
        let name = found.name.clone();
        let (resp, bytes) = artifact::respond(found, &req.method, &req.headers);
        let resp = identity::with_tls_material(state, &node, req, stage, resp)?;
        state
            .status
            .record(&node.id, stage.status_name(), &name, &req.peer_ip(), bytes);
        resp
    };
    Ok(resp)
}

fn check_asset_key(
    state: &HttpState,
    node: &MergedNode,
    req: &NodeRequest,
) -> Result<(), HttpError> {
    let Some(want) = node.conf.asset_key.as_deref().filter(|k| !k.is_empty()) else {
        return Ok(());
    };
    let given = req.asset_key().unwrap_or_default();
    if constant_time_eq(want.as_bytes(), given.as_bytes()) {
        return Ok(());
    }
    state.warn_rate_limited(|| format!("node {}: wrong asset key from {}", node.id, req.peer_ip()));
    state
        .status
        .record(&node.id, "BAD_ASSET", "", &req.peer_ip(), 0);
    Err(HttpError::forbidden("asset key does not match"))
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// `GET /efiboot/{file}`: iPXE EFI binaries from `paths: ipxesource`, for
/// UEFI HTTP boot. The firmware cannot send a node identity or asset key, and
/// these files are the same public binaries for every node.
async fn efiboot_route(
    State(state): State<Arc<HttpState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let found = match artifact::efiboot(&state, &file).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    artifact::respond(found, &method, &headers).0
}

/// `GET /status`: every known node with its last stage, in Warewulf's layout.
async fn status_route(State(state): State<Arc<HttpState>>) -> Response {
    let nodes = state.nodes();
    let mut ids: Vec<&str> = nodes.by_id.keys().map(String::as_str).collect();
    ids.sort_unstable();
    let body = state.status.to_json(&ids);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `POST /status/{wwid}` with `{"stage": "...", "detail": "..."}`: a node
/// reports how far it got.
async fn report_route(
    State(state): State<Arc<HttpState>>,
    req: NodeRequest,
    body: Bytes,
) -> Response {
    match report(&state, &req, &body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

fn report(state: &HttpState, req: &NodeRequest, body: &[u8]) -> Result<(), HttpError> {
    if body.len() > STATUS_BODY_LIMIT {
        return Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "status report too large",
        ));
    }
    let mac = identity::wwid(req, &state.arp_table)?;
    let nodes = state.nodes();
    let Some(node) = mac.and_then(|m| nodes.by_mac.get(&m)).cloned() else {
        let shown = mac.map_or_else(|| format!("client {}", req.peer_ip()), |m| m.to_string());
        state.warn_rate_limited(|| format!("status report from unknown node {shown}"));
        return Err(HttpError::not_found(format!("unknown node {shown}")));
    };
    check_asset_key(state, &node, req)?;
    let report: status::Report = serde_json::from_slice(body)
        .map_err(|e| HttpError::bad_request(format!("bad status report: {e}")))?;
    report.validate().map_err(HttpError::bad_request)?;
    state.status.report(&node.id, &report, &req.peer_ip());
    Ok(())
}

/// An empty-bodied response with `status`; used by the connection loop.
fn plain(status: StatusCode, message: &str) -> Response {
    let mut resp = Response::new(Body::from(format!("{message}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
