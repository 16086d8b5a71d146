//! Router tests: every route driven with `tower::ServiceExt::oneshot` against
//! a temporary site (a real image build, fake overlays, two nodes).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use indicatif::ProgressBar;
use initramfs::compress::Compression;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use super::{HttpState, Peer, router};
use crate::config::Config;
use crate::image::{BuildOptions, ImageStore};
use crate::nodedb::merge::merge_all;
use crate::nodedb::store::parse;

const N1: &str = "aa:bb:cc:dd:ee:01";
const N2: &str = "aa:bb:cc:dd:ee:02";
const KERNEL: &[u8] = b"KERNEL-6.1.0-bytes";
const RUNTIME: &[u8] = b"runtime overlay of n1";

const NODES: &str = "\
nodeprofiles:
  default:
    image name: img
    kernel:
      args: [quiet, crashkernel=no]
nodes:
  n1:
    profiles: [default]
    cluster name: c1
    network devices:
      default:
        hwaddr: aa:bb:cc:dd:ee:01
        ipaddr: 10.0.0.5
  n2:
    profiles: [default]
    asset key: s3cret
    network devices:
      default:
        hwaddr: AA-BB-CC-DD-EE-02
";

struct Site {
    dir: tempfile::TempDir,
    config: Config,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let mut config = Config {
            ipaddr: Some("10.0.0.1".into()),
            ..Config::default()
        };
        config.warewulf.secure = false;
        config.warewulf.autobuild_overlays = false;
        config.paths.sysconfdir = r.join("etc");
        config.paths.localstatedir = r.join("var");
        config.paths.wwchrootdir = r.join("chroots");
        config.paths.wwprovisiondir = r.join("provision");
        config.paths.ipxesource = r.join("ipxe");
        std::fs::create_dir_all(r.join("etc/warewulf/ipxe")).unwrap();
        std::fs::create_dir_all(r.join("ipxe/arm64-efi")).unwrap();
        std::fs::write(r.join("ipxe/ipxe-snponly-x86_64.efi"), b"EFI binary").unwrap();
        std::fs::write(r.join("ipxe/arm64-efi/snponly.efi"), b"arm EFI").unwrap();

        // A tiny image, built by the real builder.
        let rootfs = r.join("chroots/img/rootfs");
        std::fs::create_dir_all(rootfs.join("boot")).unwrap();
        std::fs::write(rootfs.join("boot/vmlinuz-6.1.0"), KERNEL).unwrap();
        std::fs::write(rootfs.join("hello"), b"hello world\n").unwrap();
        let opts = BuildOptions {
            force: false,
            compressions: vec![Compression::Gzip],
            source_date_epoch: Some(0),
            level: None,
            threads: 1,
        };
        crate::image::build(
            &ImageStore::new(&config.paths),
            "img",
            &opts,
            &ProgressBar::hidden(),
        )
        .unwrap();

        // Overlays as the overlay builder lays them out: a plain file and a
        // pointer to a content-addressed blob.
        let prov = r.join("provision");
        std::fs::create_dir_all(prov.join("overlays/n1")).unwrap();
        std::fs::write(
            prov.join("overlays/n1/__SYSTEM__.img.gz"),
            b"system overlay of n1",
        )
        .unwrap();
        let name = blob_name(RUNTIME);
        std::fs::create_dir_all(prov.join("blobs")).unwrap();
        std::fs::write(prov.join("blobs").join(&name), RUNTIME).unwrap();
        std::os::unix::fs::symlink(
            format!("../../blobs/{name}"),
            prov.join("overlays/n1/__RUNTIME__.img.gz"),
        )
        .unwrap();
        Self { dir, config }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn state(&self) -> Arc<HttpState> {
        let db = parse(NODES, Path::new("nodes.conf")).unwrap();
        Arc::new(HttpState::new(&self.config, merge_all(&db)))
    }

    fn app(&self) -> Router {
        router(self.state())
    }

    fn image_bytes(&self) -> Vec<u8> {
        std::fs::read(self.root().join("provision/images/img.img.gz")).unwrap()
    }
}

/// A request from 10.0.0.5, unprivileged port.
fn req(method: Method, uri: &str) -> Request<Body> {
    req_from(method, uri, "10.0.0.5:40000")
}

fn req_from(method: Method, uri: &str, peer: &str) -> Request<Body> {
    let mut r = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    r.extensions_mut()
        .insert(Peer(peer.parse::<SocketAddr>().unwrap()));
    r
}

async fn send(app: &Router, r: Request<Body>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = app.clone().oneshot(r).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    (parts.status, parts.headers, bytes.to_vec())
}

async fn get(app: &Router, uri: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    send(app, req(Method::GET, uri)).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The blob file name of `content`.
fn blob_name(content: &[u8]) -> String {
    crate::overlay::composite::blob_name(&Sha256::digest(content).into())
}

#[tokio::test]
async fn ipxe_script_for_a_known_node() {
    let site = Site::new();
    let (st, _, body) = get(&site.app(), &format!("/ipxe/{}", N1.replace(':', "-"))).await;
    let body = text(&body);
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(body.starts_with("#!ipxe\n"), "{body}");
    assert!(body.contains("booting node n1 in cluster c1"), "{body}");
    assert!(body.contains("set base http://10.0.0.1:9873\n"), "{body}");
    assert!(body.contains("Kernel:         6.1.0"), "{body}");
    assert!(
        body.contains(&format!("wwid={N1} quiet crashkernel=no")),
        "{body}"
    );
    assert!(!body.contains("<no value>"), "{body}");
}

#[tokio::test]
async fn ipxe_script_for_an_unknown_node_is_unconfigured() {
    let site = Site::new();
    let (st, _, body) = get(&site.app(), "/ipxe/aa-bb-cc-dd-ee-99").await;
    let body = text(&body);
    assert_eq!(st, StatusCode::OK);
    assert!(
        body.contains("This node (aa:bb:cc:dd:ee:99) is not configured"),
        "{body}"
    );
    assert!(body.contains("reboot"), "{body}");
}

#[tokio::test]
async fn site_ipxe_templates_replace_the_shipped_ones() {
    let site = Site::new();
    let dir = site.root().join("etc/warewulf/ipxe");
    std::fs::write(dir.join("default.ipxe"), "{{.Authority}} {{.Id}} {{.Hwaddr}} {{.ImageName}} {{.Root}} {{.TLS}} {{.Port}} {{range $k, $v := .NetDevs}}{{$k}}={{$v.Ipaddr}}{{end}}").unwrap();
    std::fs::write(dir.join("custom.ipxe"), "custom {{.Ipxe}} {{.KernelArgs}}").unwrap();
    let app = site.app();
    let (_, _, body) = get(&app, &format!("/ipxe/{N1}")).await;
    assert_eq!(
        text(&body),
        format!("10.0.0.1:9873 n1 {N1} img initramfs false 9873 default=10.0.0.5")
    );
    // A node naming a template the site lacks gets a clear 404.
    let db = parse(
        &NODES.replace("    cluster name: c1\n", "    ipxe template: custom\n"),
        Path::new("n"),
    )
    .unwrap();
    let state = site.state();
    state.set_nodes(merge_all(&db));
    let (st, _, body) = get(&router(state), &format!("/ipxe/{N1}")).await;
    assert_eq!(
        (st, text(&body)),
        (
            StatusCode::OK,
            "custom custom quiet crashkernel=no".to_owned()
        )
    );
}

#[tokio::test]
async fn wwid_from_path_query_legacy_route_and_neighbour_table() {
    let site = Site::new();
    let arp = site.root().join("arp");
    std::fs::write(
        &arp,
        format!("IP address HW type Flags HW address Mask Device\n10.0.0.5 0x1 0x2 {N1} * eth0\n"),
    )
    .unwrap();
    let db = parse(NODES, Path::new("nodes.conf")).unwrap();
    let mut state = HttpState::new(&site.config, merge_all(&db));
    state.arp_table = arp;
    let app = router(Arc::new(state));
    for uri in [
        format!("/kernel/{N1}"),
        format!("/kernel/{}", N1.replace(':', "-")),
        format!("/kernel/{}", N1.to_uppercase()),
        format!("/kernel?wwid={N1}"),
        format!("/provision/{}?stage=kernel", N1.replace(':', "-")),
        format!("/provision?stage=kernel&wwid={N1}"),
        "/kernel".to_owned(),
    ] {
        let (st, _, body) = get(&app, &uri).await;
        assert_eq!((st, body.as_slice()), (StatusCode::OK, KERNEL), "{uri}");
    }
    // A client the neighbour table does not know is unknown.
    let (st, _, _) = send(&app, req_from(Method::GET, "/kernel", "10.0.0.9:40000")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = get(&app, "/kernel/not-a-mac").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = get(&app, &format!("/provision/{N1}?stage=bogus")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn artifacts_are_served_with_their_digests() {
    let site = Site::new();
    let app = site.app();
    let quoted = |b: &[u8]| format!("\"{}\"", hex::encode(Sha256::digest(b)));

    let (st, h, body) = get(&app, &format!("/image/{N1}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body, site.image_bytes());
    assert_eq!(h[header::ETAG], quoted(&body).as_str());
    assert_eq!(h[header::CONTENT_LENGTH], body.len().to_string().as_str());

    let (st, h, body) = get(&app, &format!("/kernel/{N1}")).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, KERNEL));
    assert_eq!(h[header::ETAG], quoted(KERNEL).as_str());

    let (st, _, body) = get(&app, &format!("/system/{N1}?compress=gz")).await;
    assert_eq!(
        (st, text(&body).as_str()),
        (StatusCode::OK, "system overlay of n1")
    );

    let (st, h, body) = get(&app, &format!("/runtime/{N1}")).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, RUNTIME));
    assert_eq!(h[header::ETAG], quoted(RUNTIME).as_str());

    // Not built, bad compression, no stage-1 yet, unknown node.
    let (st, _, body) = get(&app, &format!("/image/{N1}?compress=zst")).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{}", text(&body));
    let (st, _, _) = get(&app, &format!("/image/{N1}?compress=lz4")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, body) = get(&app, &format!("/initramfs/{N1}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert!(
        text(&body).contains("no stage-1 initramfs for kernel 6.1.0"),
        "{}",
        text(&body)
    );
    let (st, _, _) = get(&app, "/image/aa-bb-cc-dd-ee-99").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Stage-1 appears once it is built.
    let dir = site.root().join("provision/initramfs");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("6.1.0.img"), b"stage one").unwrap();
    let (st, _, body) = get(&app, &format!("/initramfs/{N1}")).await;
    assert_eq!((st, text(&body).as_str()), (StatusCode::OK, "stage one"));
}

#[tokio::test]
async fn range_head_etag_and_not_modified() {
    let site = Site::new();
    let app = site.app();
    let full = site.image_bytes();
    let n = full.len();
    let uri = format!("/image/{N1}");
    let ranged = |range: &str| {
        let mut r = req(Method::GET, &uri);
        r.headers_mut()
            .insert(header::RANGE, range.parse().unwrap());
        r
    };

    let (st, h, body) = send(&app, ranged("bytes=0-3")).await;
    assert_eq!(st, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &full[..4]);
    assert_eq!(h[header::CONTENT_RANGE], format!("bytes 0-3/{n}").as_str());
    assert_eq!(h[header::CONTENT_LENGTH], "4");

    let (st, _, body) = send(&app, ranged("bytes=-5")).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &full[n - 5..])
    );
    let (st, _, body) = send(&app, ranged("bytes=10-")).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &full[10..])
    );

    let (st, h, body) = send(&app, ranged(&format!("bytes={n}-"))).await;
    assert_eq!(st, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h[header::CONTENT_RANGE], format!("bytes */{n}").as_str());
    assert!(body.is_empty());

    let (st, h, body) = send(&app, req(Method::HEAD, &uri)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_LENGTH], n.to_string().as_str());
    assert!(body.is_empty());
    let etag = h[header::ETAG].clone();

    let mut r = req(Method::GET, &uri);
    r.headers_mut().insert(header::IF_NONE_MATCH, etag.clone());
    let (st, h, body) = send(&app, r).await;
    assert_eq!(st, StatusCode::NOT_MODIFIED);
    assert_eq!(h[header::ETAG], etag);
    assert!(body.is_empty());

    // A stale If-Range gets the whole, current file.
    let mut r = ranged("bytes=0-3");
    r.headers_mut()
        .insert(header::IF_RANGE, "\"old\"".parse().unwrap());
    let (st, _, body) = send(&app, r).await;
    assert_eq!((st, body.len()), (StatusCode::OK, n));
}

#[tokio::test]
async fn asset_key_is_required_when_set() {
    let site = Site::new();
    let app = site.app();
    for uri in [
        format!("/kernel/{N2}"),
        format!("/ipxe/{N2}"),
        format!("/image/{N2}"),
    ] {
        let (st, _, _) = get(&app, &uri).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{uri}");
        let (st, _, _) = get(&app, &format!("{uri}?assetkey=wrong")).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{uri}");
        let (st, _, _) = get(&app, &format!("{uri}?assetkey=s3cret")).await;
        assert_eq!(st, StatusCode::OK, "{uri}");
        let mut r = req(Method::GET, &uri);
        r.headers_mut()
            .insert("x-warewulf-asset-key", "s3cret".parse().unwrap());
        let (st, _, _) = send(&app, r).await;
        assert_eq!(st, StatusCode::OK, "{uri}");
    }
    // n1 has no key: none needed.
    let (st, _, _) = get(&app, &format!("/kernel/{N1}")).await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn secure_mode_serves_runtime_to_privileged_ports_only() {
    let mut site = Site::new();
    site.config.warewulf.secure = true;
    let app = site.app();
    let uri = format!("/runtime/{N1}");
    let (st, _, _) = send(&app, req_from(Method::GET, &uri, "10.0.0.5:40000")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = send(
        &app,
        req_from(
            Method::GET,
            &format!("/provision/{N1}?stage=runtime"),
            "10.0.0.5:1023",
        ),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = send(&app, req_from(Method::GET, &uri, "10.0.0.5:987")).await;
    assert_eq!((st, body.as_slice()), (StatusCode::OK, RUNTIME));
    // Other stages do not care about the port.
    let (st, _, _) = send(
        &app,
        req_from(Method::GET, &format!("/system/{N1}"), "10.0.0.5:40000"),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn efiboot_serves_ipxe_binaries_and_refuses_traversal() {
    let site = Site::new();
    std::fs::write(site.root().join("secret"), b"do not serve").unwrap();
    let app = site.app();
    let (st, _, body) = get(&app, "/efiboot/ipxe-snponly-x86_64.efi").await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, b"EFI binary".as_slice())
    );
    let (st, _, body) = get(&app, "/efiboot/arm64-efi/snponly.efi").await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, b"arm EFI".as_slice())
    );
    for uri in [
        "/efiboot/../secret",
        "/efiboot/../../etc/passwd",
        "/efiboot/%2e%2e/secret",
        "/efiboot/%2e%2e%2fsecret",
        "/efiboot/..%2f..%2fetc%2fpasswd",
        "/efiboot/arm64-efi/../../secret",
        "/efiboot/%2fetc%2fpasswd",
        "/efiboot/.hidden",
        "/efiboot/missing.efi",
    ] {
        let (st, _, body) = get(&app, uri).await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::BAD_REQUEST,
            "{uri}: {st}"
        );
        assert_ne!(body, b"do not serve", "{uri}");
    }
}

#[tokio::test]
async fn status_reports_and_listing() {
    let site = Site::new();
    let app = site.app();
    let post = |uri: &str, body: &str| {
        let mut r = req(Method::POST, uri);
        *r.body_mut() = Body::from(body.to_owned());
        r
    };
    let (st, _, _) = send(
        &app,
        post(
            &format!("/status/{}", N1.replace(':', "-")),
            r#"{"stage":"switch-root","detail":"image 3 s"}"#,
        ),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = send(&app, post(&format!("/status/{N2}"), r#"{"stage":"init"}"#)).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, _) = send(
        &app,
        post(
            &format!("/status/{N2}?assetkey=s3cret"),
            r#"{"stage":"init"}"#,
        ),
    )
    .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _, _) = send(&app, post(&format!("/status/{N1}"), "not json")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send(&app, post(&format!("/status/{N1}"), r#"{"stage":""}"#)).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _, _) = send(&app, post("/status/aa-bb-cc-dd-ee-99", r#"{"stage":"x"}"#)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let (st, h, body) = get(&app, "/status").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let n1 = &v["nodes"]["n1"];
    assert_eq!(n1["node name"], "n1");
    assert_eq!(n1["stage"], "switch-root");
    assert_eq!(n1["detail"], "image 3 s");
    assert_eq!(n1["ipaddr"], "10.0.0.5");
    assert!(n1["last seen"].as_u64().unwrap() > 0);
    assert_eq!(v["nodes"]["n2"]["stage"], "init");

    // Downloads are recorded too, with their size.
    let (_, _, kernel) = get(&app, &format!("/kernel/{N1}")).await;
    let (_, _, body) = get(&app, "/status").await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["nodes"]["n1"]["stage"], "KERNEL");
    assert_eq!(v["nodes"]["n1"]["sent"], "vmlinuz-6.1.0");
    assert_eq!(v["nodes"]["n1"]["bytes sent"], kernel.len());
}

#[tokio::test]
async fn set_nodes_applies_without_restart() {
    let site = Site::new();
    let state = site.state();
    let app = router(Arc::clone(&state));
    let (st, _, _) = get(&app, &format!("/kernel/{N1}")).await;
    assert_eq!(st, StatusCode::OK);
    let moved = NODES.replace("aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:11");
    state.set_nodes(merge_all(&parse(&moved, Path::new("n")).unwrap()));
    let (st, _, _) = get(&app, &format!("/kernel/{N1}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, _) = get(&app, "/kernel/aa:bb:cc:dd:ee:11").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn kernel_version_selects_among_the_images_kernels() {
    let site = Site::new();
    let boot: PathBuf = site.root().join("chroots/img/rootfs/boot");
    std::fs::write(boot.join("vmlinuz-5.14.0"), b"old kernel").unwrap();
    let nodes = NODES.replace(
        "      args: [quiet, crashkernel=no]\n",
        "      version: 5.14.0\n",
    );
    let state = site.state();
    state.set_nodes(merge_all(&parse(&nodes, Path::new("n")).unwrap()));
    let app = router(state);
    let (st, _, body) = get(&app, &format!("/kernel/{N1}")).await;
    assert_eq!(
        (st, body.as_slice()),
        (StatusCode::OK, b"old kernel".as_slice())
    );
    let (_, _, body) = get(&app, &format!("/ipxe/{N1}")).await;
    assert!(
        text(&body).contains("Kernel:         5.14.0"),
        "{}",
        text(&body)
    );
}

#[tokio::test]
async fn stale_overlays_are_built_on_request() {
    let mut site = Site::new();
    let r = site.root().to_path_buf();
    site.config.warewulf.autobuild_overlays = true;
    site.config.paths.wwoverlaydir = r.join("overlays");
    site.config.paths.datadir = r.join("share");
    std::fs::create_dir_all(r.join("overlays/o1/rootfs/etc")).unwrap();
    std::fs::write(r.join("overlays/o1/rootfs/etc/motd"), b"built on request\n").unwrap();
    let nodes = "\
nodes:
  n3:
    image name: img
    system overlay: [o1]
    runtime overlay: [o1]
    network devices:
      default:
        hwaddr: aa:bb:cc:dd:ee:03
";
    std::fs::write(r.join("etc/warewulf/nodes.conf"), nodes).unwrap();
    let db = parse(nodes, Path::new("nodes.conf")).unwrap();
    let app = router(Arc::new(HttpState::new(&site.config, merge_all(&db))));
    // Concurrent requests of one node share one build.
    let reqs = (0..4).map(|_| {
        let app = app.clone();
        async move { get(&app, "/system/aa:bb:cc:dd:ee:03").await }
    });
    for (st, h, body) in futures_join_all(reqs).await {
        assert_eq!(st, StatusCode::OK, "{}", text(&body));
        assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip image");
        assert_eq!(h[header::CONTENT_LENGTH], body.len().to_string().as_str());
    }
    assert!(r.join("provision/overlays/n3/__SYSTEM__.img.gz").exists());
    let (st, _, _) = get(&app, "/runtime/aa:bb:cc:dd:ee:03?compress=zst").await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        r.join("provision/overlays/n3/__RUNTIME__.img.gz").exists(),
        "gz kept"
    );
}

/// Runs futures concurrently on the test runtime and collects their outputs.
async fn futures_join_all<F: Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ------------------------------------------------- two-stage: manifest, iPXE

#[tokio::test]
async fn manifest_lists_what_the_routes_serve_with_digests() {
    let site = Site::new();
    let app = site.app();
    let (st, h, body) = get(&app, &format!("/manifest/{}", N1.replace(':', "-"))).await;
    assert_eq!(st, StatusCode::OK, "{}", text(&body));
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    let m: proto::Manifest = serde_json::from_slice(&body).unwrap();
    let stages: Vec<&str> = m.iter().map(|e| e.stage.name()).collect();
    assert_eq!(stages, ["image", "system", "runtime"]);
    // Each URL answers with exactly the bytes the entry describes.
    for e in &m {
        assert_eq!(e.compression, proto::ArtifactCompression::Gz, "{e:?}");
        assert!(
            e.url
                .starts_with(&format!("/{}/{N1}?compress=gz", e.stage.name()))
        );
        let (st, _, bytes) = get(&app, &e.url).await;
        assert_eq!(st, StatusCode::OK, "{}", e.url);
        assert_eq!(bytes.len() as u64, e.size, "{}", e.url);
        assert_eq!(
            e.digest.to_string(),
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            "{}",
            e.url
        );
    }
    // zstd is preferred once the image has it.
    let opts = BuildOptions {
        force: true,
        compressions: vec![Compression::Gzip, Compression::Zstd],
        source_date_epoch: Some(0),
        level: None,
        threads: 1,
    };
    crate::image::build(
        &ImageStore::new(&site.config.paths),
        "img",
        &opts,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let (_, _, body) = get(&app, &format!("/manifest/{N1}")).await;
    let m: proto::Manifest = serde_json::from_slice(&body).unwrap();
    assert_eq!(m[0].compression, proto::ArtifactCompression::Zst);
    assert_eq!(m[0].url, format!("/image/{N1}?compress=zst"));
    let zst = std::fs::read(site.root().join("provision/images/img.img.zst")).unwrap();
    assert_eq!(m[0].size, zst.len() as u64);
}

#[tokio::test]
async fn manifest_refuses_unknown_nodes_and_waits_for_missing_builds() {
    let site = Site::new();
    let app = site.app();
    let (st, _, _) = get(&app, "/manifest/aa:bb:cc:dd:ee:99").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // n2 has an asset key and no overlays.
    let (st, _, _) = get(&app, &format!("/manifest/{N2}")).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _, body) = get(&app, &format!("/manifest/{N2}?assetkey=s3cret")).await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        text(&body).contains("node n2: the system artifact is not built yet"),
        "{}",
        text(&body)
    );
    // Without a runtime overlay the manifest simply omits it.
    std::fs::remove_file(site.root().join("provision/overlays/n1/__RUNTIME__.img.gz")).unwrap();
    let (st, _, body) = get(&app, &format!("/manifest/{N1}")).await;
    assert_eq!(st, StatusCode::OK);
    let m: proto::Manifest = serde_json::from_slice(&body).unwrap();
    assert_eq!(m.len(), 2);
}

#[tokio::test]
async fn ipxe_offers_two_stage_to_tagged_nodes() {
    let site = Site::new();
    let state = site.state();
    let app = router(Arc::clone(&state));
    let (_, _, body) = get(&app, &format!("/ipxe/{N1}")).await;
    let single = text(&body);
    assert!(single.contains("initrd --name image"), "{single}");
    assert!(!single.contains("stage1"), "{single}");

    let tagged = NODES.replace(
        "    cluster name: c1\n",
        "    cluster name: c1\n    tags:\n      ironwulf.boot: two-stage\n",
    );
    state.set_nodes(merge_all(&parse(&tagged, Path::new("n")).unwrap()));
    let (st, _, body) = get(&app, &format!("/ipxe/{N1}")).await;
    let two = text(&body);
    assert_eq!(st, StatusCode::OK, "{two}");
    assert!(
        two.contains(&format!(
            "initrd --name stage1 ${{base}}/initramfs/{N1}?${{query}} || goto reboot\n"
        )),
        "{two}"
    );
    assert!(
        two.contains(&format!(
            "boot kernel initrd=stage1 wwid={N1} wwinit.server=10.0.0.1:9873 \
             ip=${{ip}}::${{gateway}}:${{netmask}}:::off quiet crashkernel=no"
        )),
        "{two}"
    );
    assert!(!two.contains("initrd --name image"), "{two}");
    assert!(!two.contains("<no value>"), "{two}");
}

/// An image stored as a marker plus the node's own member
/// (`overlay::composite`) is served as the shared blob and then the node's
/// bytes, with the digest of that whole as its `ETag`, ranges across the
/// seam included.
#[tokio::test]
async fn composite_overlay_is_served_joined() {
    let site = Site::new();
    let blobs = site.root().join("provision/blobs");
    let shared: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let shared_name = blob_name(&shared);
    std::fs::write(blobs.join(&shared_name), &shared).unwrap();
    let own = b"the node's own member".to_vec();
    let whole = [shared.clone(), own.clone()].concat();
    let hex = hex::encode(Sha256::digest(&whole));
    let name = blob_name(&whole);
    let mut blob = crate::overlay::composite::marker(Compression::Gzip, &shared_name).unwrap();
    blob.extend_from_slice(&own);
    std::fs::write(blobs.join(&name), &blob).unwrap();
    let ptr = site.root().join("provision/overlays/n1/__SYSTEM__.img.gz");
    std::fs::remove_file(&ptr).unwrap();
    std::os::unix::fs::symlink(format!("../../blobs/{name}"), &ptr).unwrap();

    let app = site.app();
    let uri = format!("/system/{N1}?compress=gz");
    let (st, h, body) = get(&app, &uri).await;
    assert_eq!(st, StatusCode::OK);
    assert!(body == whole, "joined body");
    assert_eq!(h[header::ETAG], format!("\"{hex}\"").as_str());
    assert_eq!(h[header::CONTENT_LENGTH], whole.len().to_string().as_str());
    let n = whole.len();
    for (spec, want) in [
        (
            format!("bytes={}-{}", n - own.len() - 3, n - 5),
            &whole[n - own.len() - 3..=n - 5],
        ),
        (format!("bytes={}-", n - own.len()), &whole[n - own.len()..]),
        ("bytes=5-9".to_string(), &whole[5..10]),
    ] {
        let mut r = req(Method::GET, &uri);
        r.headers_mut().insert(header::RANGE, spec.parse().unwrap());
        let (st, _, body) = send(&app, r).await;
        assert_eq!(st, StatusCode::PARTIAL_CONTENT, "{spec}");
        assert!(body == want, "{spec}");
    }
    let (st, h, body) = send(&app, req(Method::HEAD, &uri)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h[header::CONTENT_LENGTH], n.to_string().as_str());
    assert!(body.is_empty());

    // The shared part gone: a clear server error, not a short image.
    std::fs::remove_file(blobs.join(&shared_name)).unwrap();
    let (st, _, body) = get(&app, &uri).await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text(&body).contains("shared part"), "{}", text(&body));
}
