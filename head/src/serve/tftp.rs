//! The embedded read-only TFTP server: iPXE binaries for PXE firmware from
//! `paths: ipxesource`, everything else from `tftp: tftproot`, and the
//! Raspberry Pi boot ROM's per-board requests (`<serial>/start4.elf`) folded
//! onto one shared folder, `<tftproot>/rpi/`.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::io::{Cursor, Sink};
use tokio::sync::watch;

use crate::config::Config;

/// The folder every Raspberry Pi's `<serial>/…` request is served from.
pub const PI_DIR: &str = "rpi";

/// Warewulf's iPXE file names (RHEL packaging) and what Debian's `ipxe`
/// package calls the same build, so stock `warewulf.conf` files work.
const ALIASES: &[(&str, &str)] = &[
    ("ipxe-snponly-x86_64.efi", "snponly.efi"),
    ("ipxe-x86_64.efi", "ipxe.efi"),
    ("undionly.kpxe", "undionly.kpxe"),
];

/// Why a request was refused; becomes a TFTP error packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `..`, NUL bytes, or a path that resolves outside the roots.
    Outside,
    NotFound,
}

/// The directories requests are answered from.
#[derive(Clone, Debug)]
pub struct Roots {
    pub ipxe: PathBuf,
    pub tftp: PathBuf,
}

impl Roots {
    pub fn from_config(conf: &Config) -> Self {
        Self {
            ipxe: conf.paths.ipxesource.clone(),
            tftp: conf.tftp.tftproot.clone(),
        }
    }

    /// Maps a requested name to a file inside one of the roots.
    pub fn resolve(&self, requested: &str) -> Result<PathBuf, Refusal> {
        if requested.contains('\0') {
            return Err(Refusal::Outside);
        }
        let mut parts = Vec::new();
        for c in Path::new(requested.trim_start_matches('/')).components() {
            match c {
                Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(Refusal::Outside);
                }
            }
        }
        // Warewulf keeps its iPXE binaries under `<tftproot>/warewulf/`.
        if parts.first().is_some_and(|p| p == "warewulf") {
            parts.remove(0);
        }
        if parts.is_empty() {
            return Err(Refusal::NotFound);
        }
        let rel: PathBuf = parts.iter().collect();
        let mut candidates = Vec::new();
        if is_pi_serial(&parts[0]) && parts.len() > 1 {
            candidates.push((
                self.tftp.clone(),
                Path::new(PI_DIR).join(parts[1..].iter().collect::<PathBuf>()),
            ));
        }
        if parts.len() == 1 {
            let name = parts[0].as_str();
            candidates.push((self.ipxe.clone(), PathBuf::from(name)));
            for (ww, debian) in ALIASES {
                if name == *ww {
                    candidates.push((self.ipxe.clone(), PathBuf::from(debian)));
                }
            }
        }
        candidates.push((self.tftp.clone(), rel.clone()));
        // A Pi asks for `config.txt`, `start4.elf`… at the top level too.
        candidates.push((self.tftp.clone(), Path::new(PI_DIR).join(&rel)));
        for (root, rel) in candidates {
            if let Some(found) = contained(&root, &rel)? {
                return Ok(found);
            }
        }
        Err(Refusal::NotFound)
    }
}

/// `root/rel` if it is a regular file whose real path stays inside `root`.
fn contained(root: &Path, rel: &Path) -> Result<Option<PathBuf>, Refusal> {
    let Ok(real_root) = fs::canonicalize(root) else {
        return Ok(None);
    };
    let Ok(real) = fs::canonicalize(root.join(rel)) else {
        return Ok(None);
    };
    if !real.starts_with(&real_root) {
        return Err(Refusal::Outside);
    }
    Ok(real.is_file().then_some(real))
}

/// The Pi boot ROM prefixes requests with the board's 8-hex-digit serial.
fn is_pi_serial(s: &str) -> bool {
    s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The async-tftp request handler over [`Roots`].
struct ReadOnly {
    roots: Roots,
}

impl Handler for ReadOnly {
    type Reader = Cursor<Vec<u8>>;
    type Writer = Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let requested = path.to_string_lossy();
        let file = match self.roots.resolve(&requested) {
            Ok(f) => f,
            Err(Refusal::Outside) => {
                tracing::warn!("TFTP {client}: refused {requested:?} (outside the TFTP roots)");
                return Err(packet::Error::PermissionDenied);
            }
            Err(Refusal::NotFound) => {
                tracing::debug!("TFTP {client}: {requested:?} not found");
                return Err(packet::Error::FileNotFound);
            }
        };
        // Boot files are small (iPXE ≈ 1 MiB, Pi firmware a few MiB).
        let data = tokio::fs::read(&file).await.map_err(|e| {
            tracing::warn!("TFTP {client}: reading {}: {e}", file.display());
            packet::Error::UnknownError
        })?;
        tracing::info!(
            "TFTP {client}: sending {} ({} bytes)",
            file.display(),
            data.len()
        );
        let len = data.len() as u64;
        Ok((Cursor::new(data), Some(len)))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!("TFTP {client}: refused write of {}", path.display());
        Err(packet::Error::IllegalOperation)
    }
}

/// Serves TFTP on `port` until `shutdown` turns true; on each of
/// `interfaces` only (`SO_BINDTODEVICE`) when the list is not empty.
pub async fn serve(
    roots: Roots,
    port: u16,
    interfaces: Vec<String>,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    if interfaces.is_empty() {
        let socket =
            std::net::UdpSocket::bind(addr).with_context(|| format!("binding TFTP port {port}"))?;
        return serve_socket(roots, socket, shutdown).await;
    }
    let mut servers = tokio::task::JoinSet::new();
    for iface in &interfaces {
        let socket = bound_udp(addr, iface)
            .with_context(|| format!("binding TFTP port {port} on {iface}"))?;
        servers.spawn(serve_socket(roots.clone(), socket, shutdown.clone()));
    }
    while let Some(done) = servers.join_next().await {
        done.context("a TFTP server panicked")??;
    }
    Ok(())
}

/// A UDP socket on `addr` that only sees traffic of `iface`.
fn bound_udp(addr: SocketAddr, iface: &str) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.bind_device(Some(iface.as_bytes()))?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

async fn serve_socket(
    roots: Roots,
    socket: std::net::UdpSocket,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let server = TftpServerBuilder::with_handler(ReadOnly { roots })
        .std_socket(socket)
        .context("setting up TFTP")?
        .timeout(Duration::from_secs(3))
        .block_size_limit(1468)
        .window_size_limit(16)
        .build()
        .await
        .context("starting the TFTP server")?;
    tokio::select! {
        r = server.serve() => r.map_err(|e| io::Error::other(e.to_string())).context("TFTP server failed"),
        _ = shutdown.changed() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> (tempfile::TempDir, Roots) {
        let dir = tempfile::tempdir().unwrap();
        let ipxe = dir.path().join("ipxe");
        let tftp = dir.path().join("tftp");
        fs::create_dir_all(&ipxe).unwrap();
        fs::create_dir_all(tftp.join(PI_DIR).join("overlays")).unwrap();
        fs::write(ipxe.join("undionly.kpxe"), b"pxe").unwrap();
        fs::write(ipxe.join("snponly.efi"), b"efi").unwrap();
        fs::write(tftp.join(PI_DIR).join("start4.elf"), b"pi").unwrap();
        fs::write(tftp.join(PI_DIR).join("overlays/dtb"), b"dtb").unwrap();
        fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), tftp.join("escape")).unwrap();
        let r = Roots { ipxe, tftp };
        (dir, r)
    }

    fn name(p: PathBuf) -> String {
        p.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn ipxe_binaries_and_warewulf_names() {
        let (_d, r) = roots();
        assert_eq!(name(r.resolve("undionly.kpxe").unwrap()), "undionly.kpxe");
        assert_eq!(
            name(r.resolve("/warewulf/undionly.kpxe").unwrap()),
            "undionly.kpxe"
        );
        assert_eq!(
            name(r.resolve("warewulf/ipxe-snponly-x86_64.efi").unwrap()),
            "snponly.efi"
        );
        assert_eq!(r.resolve("nope.efi"), Err(Refusal::NotFound));
    }

    #[test]
    fn every_pi_serial_maps_to_the_shared_folder() {
        let (_d, r) = roots();
        let a = r.resolve("1234abcd/start4.elf").unwrap();
        let b = r.resolve("deadbeef/start4.elf").unwrap();
        assert_eq!(a, b);
        assert_eq!(name(r.resolve("start4.elf").unwrap()), "start4.elf");
        assert_eq!(name(r.resolve("1234abcd/overlays/dtb").unwrap()), "dtb");
    }

    #[test]
    fn traversal_is_refused() {
        let (_d, r) = roots();
        for bad in [
            "../secret",
            "/../secret",
            "warewulf/../../secret",
            "1234abcd/../../secret",
            "a\0b",
        ] {
            assert_eq!(r.resolve(bad), Err(Refusal::Outside), "{bad:?}");
        }
        assert_eq!(
            r.resolve("escape"),
            Err(Refusal::Outside),
            "symlink out of the root"
        );
    }
}
