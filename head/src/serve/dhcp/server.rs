//! DHCP sockets: one per configured interface (bound to the device so
//! broadcasts leave through it), plus port 4011 in proxy mode. Requests are
//! answered inline; the lease log is synced every [`SYNC_INTERVAL`].

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use dhcproto::v4::Message;
use dhcproto::{Decodable, Encodable};
use proto::Mac;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch};

use super::leases::LeaseTable;
use super::respond::{Destination, Outcome, respond};
use super::{DhcpSettings, Hosts, Reservation};
use crate::config::Config;
use crate::nodedb::MergedNode;
use crate::serve::ratelimit::RateLimit;

/// How often buffered lease records are written and synced.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(200);
const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
const PROXY_PORT: u16 = 4011;
/// How quickly a DHCP thread notices shutdown.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Builds the responder's settings from `warewulf.conf`.
pub fn settings_from_config(conf: &Config) -> Result<DhcpSettings> {
    let server_ip: Ipv4Addr = conf
        .ipaddr
        .as_deref()
        .context("warewulf.conf: ipaddr is needed to serve DHCP")?
        .parse()
        .context("warewulf.conf: ipaddr is not an IPv4 address")?;
    let netmask: Ipv4Addr = conf
        .netmask
        .as_deref()
        .context("warewulf.conf: netmask is needed to serve DHCP")?
        .parse()
        .context("warewulf.conf: netmask is not an IPv4 netmask")?;
    let parse = |key: &str, v: &Option<String>| -> Result<Option<Ipv4Addr>> {
        v.as_deref()
            .map(|s| {
                s.parse().with_context(|| {
                    format!("warewulf.conf: dhcp: {key}: {s:?} is not an IPv4 address")
                })
            })
            .transpose()
    };
    let range = match (
        parse("range start", &conf.dhcp.range_start)?,
        parse("range end", &conf.dhcp.range_end)?,
    ) {
        (Some(a), Some(b)) if u32::from(a) <= u32::from(b) => Some((a, b)),
        (Some(a), Some(b)) => bail!("warewulf.conf: dhcp: range start {a} is after range end {b}"),
        (None, None) => None,
        _ => bail!("warewulf.conf: dhcp: give both range start and range end, or neither"),
    };
    let mut ipxe_binaries = BTreeMap::new();
    for (arch, file) in &conf.tftp.ipxe {
        let code = u16::from_str_radix(&arch.replace(':', ""), 16).with_context(|| {
            format!("warewulf.conf: tftp: ipxe: {arch:?} is not an architecture like 00:07")
        })?;
        ipxe_binaries.insert(code, file.clone());
    }
    Ok(DhcpSettings {
        server_ip,
        netmask,
        router: None,
        dns: Vec::new(),
        range,
        http_port: conf.warewulf.port,
        ipxe_binaries,
        proxy: conf.dhcp.proxy,
    })
}

/// Reservations for every network device that has both a MAC and an IPv4
/// address; the hostname is the node's name.
pub fn hosts_from_nodes(nodes: &[MergedNode]) -> Hosts {
    let mut hosts = Hosts::default();
    for node in nodes {
        let c = &node.conf;
        if c.discoverable
            .as_deref()
            .and_then(crate::nodedb::model::parse_bool)
            == Some(true)
        {
            hosts.discovery = true;
        }
        for nd in c.netdevs.iter().flat_map(|m| m.values()) {
            let (Some(mac), Some(ip)) = (
                nd.hwaddr.as_deref().and_then(|m| m.parse::<Mac>().ok()),
                nd.ipaddr
                    .as_deref()
                    .and_then(|i| i.parse::<Ipv4Addr>().ok()),
            ) else {
                continue;
            };
            hosts.reservations.insert(
                mac,
                Reservation {
                    ip,
                    hostname: node.id.clone(),
                    netmask: nd.netmask.as_deref().and_then(|m| m.parse().ok()),
                    gateway: nd.gateway.as_deref().and_then(|g| g.parse().ok()),
                },
            );
        }
    }
    hosts
}

/// The running DHCP service's shared state.
pub struct Dhcp {
    settings: DhcpSettings,
    hosts: RwLock<Arc<Hosts>>,
    leases: Mutex<LeaseTable>,
    bad_packets: Mutex<RateLimit>,
    discovered: mpsc::UnboundedSender<Mac>,
}

impl Dhcp {
    pub fn new(
        settings: DhcpSettings,
        hosts: Hosts,
        leases: LeaseTable,
        discovered: mpsc::UnboundedSender<Mac>,
    ) -> Self {
        Self {
            settings,
            hosts: RwLock::new(Arc::new(hosts)),
            leases: Mutex::new(leases),
            bad_packets: Mutex::new(RateLimit::new(10, Duration::from_secs(60))),
            discovered,
        }
    }

    /// Replaces the reservations (after `nodes.conf` changed).
    pub fn set_hosts(&self, hosts: Hosts) {
        let reserved: Vec<Ipv4Addr> = hosts.reservations.values().map(|r| r.ip).collect();
        *self.hosts.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(hosts);
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_reserved(reserved);
    }

    fn handle(&self, buf: &[u8], via_proxy_port: bool) -> Option<(Vec<u8>, Destination)> {
        let req = match Message::from_bytes(buf) {
            Ok(m) => m,
            Err(e) => {
                self.log_bad(format_args!(
                    "undecodable DHCP packet ({} bytes): {e}",
                    buf.len()
                ));
                return None;
            }
        };
        let hosts = Arc::clone(&self.hosts.read().unwrap_or_else(|e| e.into_inner()));
        let (outcome, seen) = {
            let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
            respond(
                &req,
                &self.settings,
                &hosts,
                &mut leases,
                crate::serve::unix_now(),
                via_proxy_port,
            )
        };
        if let Some(mac) = seen.discovered {
            let _ = self.discovered.send(mac);
        }
        match outcome {
            Outcome::Reply { msg, dest } => match msg.to_vec() {
                Ok(bytes) => Some((bytes, dest)),
                Err(e) => {
                    tracing::error!("encoding a DHCP reply: {e}");
                    None
                }
            },
            Outcome::Ignore(why) => {
                tracing::trace!("DHCP xid {:#x} ignored: {why}", req.xid());
                None
            }
        }
    }

    fn log_bad(&self, what: std::fmt::Arguments<'_>) {
        let mut limit = self.bad_packets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(suppressed) = limit.allow(Instant::now()) {
            if suppressed > 0 {
                tracing::warn!("{what} ({suppressed} similar messages suppressed)");
            } else {
                tracing::warn!("{what}");
            }
        }
    }

    /// Serves until `shutdown` turns true. `interfaces` empty binds all.
    ///
    /// Each socket gets its own OS thread doing blocking receive → answer →
    /// send: a DHCP exchange is microseconds of work, and a dedicated thread
    /// avoids a reactor wake-up per packet.
    pub async fn serve(
        self: Arc<Self>,
        interfaces: &[String],
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let devices: Vec<Option<&str>> = if interfaces.is_empty() {
            vec![None]
        } else {
            interfaces.iter().map(|i| Some(i.as_str())).collect()
        };
        let mut ports = vec![(SERVER_PORT, false)];
        if self.settings.proxy {
            ports.push((PROXY_PORT, true));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for dev in devices {
            for &(port, proxy) in &ports {
                let sock = bind(dev, port)?;
                let this = Arc::clone(&self);
                let stop = Arc::clone(&stop);
                let name = format!("dhcp-{}-{port}", dev.unwrap_or("any"));
                let thread = std::thread::Builder::new()
                    .name(name)
                    .spawn(move || this.receive_loop(&sock, port, proxy, &stop))
                    .context("starting a DHCP thread")?;
                threads.push(thread);
            }
        }
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            let result = self.leases.lock().unwrap_or_else(|e| e.into_inner()).sync();
            if let Err(e) = result {
                tracing::error!("{:#}", anyhow::Error::from(e));
            }
        }
        stop.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            for t in threads {
                if t.join().is_err() {
                    tracing::error!("a DHCP thread panicked");
                }
            }
        })
        .await
        .context("joining the DHCP threads")?;
        // Last sync on the way out.
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync()
            .map_err(anyhow::Error::from)
    }

    fn receive_loop(&self, sock: &UdpSocket, port: u16, via_proxy_port: bool, stop: &AtomicBool) {
        let mut buf = vec![0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            let (n, src) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    self.log_bad(format_args!("receiving on DHCP port {port}: {e}"));
                    continue;
                }
            };
            let Some((reply, dest)) = self.handle(&buf[..n], via_proxy_port) else {
                continue;
            };
            let to = match dest {
                Destination::Relay(ip) => SocketAddr::V4(SocketAddrV4::new(ip, SERVER_PORT)),
                Destination::Unicast(ip) => SocketAddr::V4(SocketAddrV4::new(ip, CLIENT_PORT)),
                Destination::Broadcast => {
                    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT))
                }
                Destination::Source => src,
            };
            if let Err(e) = sock.send_to(&reply, to) {
                self.log_bad(format_args!("sending a DHCP reply to {to}: {e}"));
            }
        }
    }
}

/// A blocking UDP socket on `port`, bound to `device` when given, allowed to broadcast.
fn bind(device: Option<&str>, port: u16) -> Result<UdpSocket> {
    let what = || {
        format!(
            "binding DHCP port {port}{}",
            device.map(|d| format!(" on {d}")).unwrap_or_default()
        )
    };
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).with_context(what)?;
    sock.set_reuse_address(true).with_context(what)?;
    sock.set_broadcast(true).with_context(what)?;
    if let Some(dev) = device {
        sock.bind_device(Some(dev.as_bytes())).with_context(what)?;
    }
    // Blocking with a short timeout, so the thread notices shutdown.
    sock.set_read_timeout(Some(STOP_POLL)).with_context(what)?;
    // Large buffers absorb bursts of a whole rack powering on.
    let _ = sock.set_recv_buffer_size(4 << 20);
    let _ = sock.set_send_buffer_size(4 << 20);
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port));
    sock.bind(&addr.into()).with_context(what)?;
    Ok(sock.into())
}
