//! The embedded DHCPv4 server: static reservations from the node database,
//! a dynamic range for unknown and discoverable machines, boot file
//! selection by client kind, proxyDHCP mode, and an append-only lease log.
//!
//! `classify` reads what a client is; `respond` builds the answer as a pure
//! function of the request, the configuration and the lease table; `leases`
//! owns address allocation and persistence; `server` owns the sockets.

pub mod classify;
pub mod leases;
pub mod respond;
pub mod server;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use proto::Mac;

/// How long a dynamic lease lasts (Warewulf's `max-lease-time`).
pub const DYNAMIC_LEASE: Duration = Duration::from_secs(120);
/// How long a static reservation's lease lasts.
pub const STATIC_LEASE: Duration = Duration::from_secs(3600);
/// How long an offered address is held for the client it was offered to.
pub const OFFER_HOLD: Duration = Duration::from_secs(30);

/// The validated DHCP settings the responder works from.
#[derive(Clone, Debug)]
pub struct DhcpSettings {
    /// Our address on the provisioning network: server identifier, next-server.
    pub server_ip: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// Default gateway handed to clients, if any.
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// The dynamic range (inclusive); `None` serves static reservations only.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// HTTP port of `wwctl server` (iPXE and HTTP-boot URLs).
    pub http_port: u16,
    /// Option 93 architecture → iPXE binary file name (`tftp: ipxe`).
    pub ipxe_binaries: BTreeMap<u16, String>,
    /// proxyDHCP: another server hands out addresses; we only add boot
    /// information for PXE clients.
    pub proxy: bool,
}

/// A node the database pins to an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub ip: Ipv4Addr,
    pub hostname: String,
    /// Per-node netmask and gateway override the network's.
    pub netmask: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
}

/// What the node database tells the DHCP server.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    pub reservations: HashMap<Mac, Reservation>,
    /// Whether any node is `discoverable` (unknown machines then get
    /// recorded through the discovery hook).
    pub discovery: bool,
}
