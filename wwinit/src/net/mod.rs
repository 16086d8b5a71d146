//! Bringing up the boot interface for two-stage boot: pick the NIC, set it
//! up, then configure it from `ip=` or from our own DHCP client. Addresses
//! and the default route are set with the classic `SIOCSIFADDR` /
//! `SIOCSIFNETMASK` / `SIOCADDRT` ioctls: enough for one IPv4 interface and
//! far smaller than a netlink stack.

pub mod dhcp;

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use proto::Mac;

use crate::cmdline::IpParam;
use crate::log;
use crate::sys::NetInfo;

/// How long to wait for a NIC to appear after its driver loaded.
const IFACE_WAIT: Duration = Duration::from_secs(10);
/// How long to wait for link (carrier) after setting the interface up.
const CARRIER_WAIT: Duration = Duration::from_secs(10);
/// Interval of the two waits above (sysfs reads are cheap).
const POLL: Duration = Duration::from_millis(20);
const ARPHRD_ETHER: &str = "1";

/// Ethernet interfaces with their MACs, sorted by name.
fn ether_ifaces() -> Vec<(String, Mac)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/sys/class/net") else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        let ty = fs::read_to_string(p.join("type")).unwrap_or_default();
        if ty.trim() != ARPHRD_ETHER {
            continue;
        }
        if let Ok(mac) = fs::read_to_string(p.join("address"))
            && let Ok(mac) = mac.trim().parse::<Mac>()
        {
            out.push((name, mac));
        }
    }
    out.sort();
    out
}

/// Chooses the interface: named by `ip=`, else the one with the `wwid` MAC,
/// else the first Ethernet interface; waits for it to appear, calling
/// `rescan` (load drivers for devices that appeared late) while it waits.
fn choose(
    named: Option<&str>,
    wwid: Option<Mac>,
    rescan: &mut dyn FnMut(),
) -> Result<(String, Mac)> {
    let started = Instant::now();
    loop {
        let all = ether_ifaces();
        let hit = match (named, wwid) {
            (Some(n), _) => all.into_iter().find(|(name, _)| name == n),
            (None, Some(w)) => all.into_iter().find(|(_, m)| *m == w),
            (None, None) => all.into_iter().next(),
        };
        if let Some(h) = hit {
            return Ok(h);
        }
        if started.elapsed() > IFACE_WAIT {
            let want = match (named, wwid) {
                (Some(n), _) => format!("interface {n}"),
                (None, Some(w)) => format!("an interface with MAC {w}"),
                (None, None) => "an Ethernet interface".to_owned(),
            };
            bail!("no {want} after {IFACE_WAIT:?} (is its driver in the stage-1 initramfs?)");
        }
        rescan();
        std::thread::sleep(POLL);
    }
}

fn ctl_socket() -> io::Result<OwnedFd> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    Ok(s.into())
}

/// The kernel's `struct ifreq` (40 bytes on 64-bit): the name, then a
/// 24-byte union. Our own definition: the `libc` crate's musl `ifreq` is
/// smaller than what the kernel writes back, which corrupted the stack.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: IfReqData,
}

#[repr(C)]
union IfReqData {
    addr: libc::sockaddr,
    flags: libc::c_short,
    _size: [u8; 24],
}

fn ifreq(name: &str) -> io::Result<IfReq> {
    let mut r = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: IfReqData { _size: [0; 24] },
    };
    let b = name.as_bytes();
    if b.len() >= r.name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    r.name[..b.len()].copy_from_slice(b);
    Ok(r)
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; the
    // kernel reads it as sockaddr_in because of sin_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// `SIOC*` numbers are `c_ulong` in libc while `ioctl` takes `c_int` on musl.
#[allow(clippy::unnecessary_cast, clippy::cast_possible_truncation)]
fn ioctl<T>(fd: &OwnedFd, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` points to the structure `req` expects (ifreq or rtentry).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets `name` up.
pub fn set_up(name: &str) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut r = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.data.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut r)
}

/// Assigns `addr/mask` to `name`.
pub fn set_addr(name: &str, addr: Ipv4Addr, mask: Ipv4Addr) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.data.addr = sockaddr(addr);
    ioctl(&fd, libc::SIOCSIFADDR, &mut r)?;
    let mut r = ifreq(name)?;
    r.data.addr = sockaddr(mask);
    ioctl(&fd, libc::SIOCSIFNETMASK, &mut r)
}

/// Undoes [`up`] on `name`: removes its IPv4 address (`SIOCSIFADDR` with
/// 0.0.0.0 deletes it, and the kernel drops the routes through it), then
/// sets the link down. The kernel refuses to rename an interface that is
/// up, so this lets udev give it its predictable name, and networkd or
/// NetworkManager find it unconfigured, as after a single-stage boot.
pub fn release(name: &str) -> io::Result<()> {
    let fd = ctl_socket()?;
    let mut r = ifreq(name)?;
    r.data.addr = sockaddr(Ipv4Addr::UNSPECIFIED);
    match ioctl(&fd, libc::SIOCSIFADDR, &mut r) {
        // No address (static `ip=` without one): nothing to remove.
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
        other => other?,
    }
    let mut r = ifreq(name)?;
    ioctl(&fd, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { r.data.flags &= !(libc::IFF_UP as libc::c_short) };
    ioctl(&fd, libc::SIOCSIFFLAGS, &mut r)
}

/// Adds `default via gw`.
pub fn add_default_route(gw: Ipv4Addr) -> io::Result<()> {
    let fd = ctl_socket()?;
    // SAFETY: rtentry is plain data; all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(gw);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    match ioctl(&fd, libc::SIOCADDRT, &mut rt) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

fn wait_carrier(name: &str) {
    let started = Instant::now();
    let path = format!("/sys/class/net/{name}/carrier");
    while started.elapsed() < CARRIER_WAIT {
        if fs::read_to_string(&path).is_ok_and(|c| c.trim() == "1") {
            return;
        }
        std::thread::sleep(POLL);
    }
    log::warn(&format!(
        "{name}: no link after {CARRIER_WAIT:?}; trying anyway"
    ));
}

/// UDP on port 68 of one interface, broadcasting to port 67.
struct UdpTransport {
    sock: std::net::UdpSocket,
}

impl UdpTransport {
    fn open(iface: &str) -> io::Result<Self> {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        s.set_broadcast(true)?;
        s.bind_device(Some(iface.as_bytes()))?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, dhcp::CLIENT_PORT)).into())?;
        Ok(UdpTransport { sock: s.into() })
    }
}

impl dhcp::Transport for UdpTransport {
    fn send(&mut self, packet: &[u8]) -> io::Result<()> {
        self.sock
            .send_to(packet, (Ipv4Addr::BROADCAST, dhcp::SERVER_PORT))
            .map(|_| ())
    }

    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 1500];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Classful mask, for leases without option 1.
fn default_mask(a: Ipv4Addr) -> Ipv4Addr {
    match a.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// Brings the boot interface up and returns what the rest of the boot needs;
/// `rescan` runs while the interface has not appeared yet.
pub fn up(
    ip: Option<&IpParam>,
    wwid: Option<Mac>,
    dhcp_timeout: Duration,
    rescan: &mut dyn FnMut(),
) -> Result<NetInfo> {
    if let Err(e) = set_up("lo") {
        log::warn(&format!("lo: {e}"));
    }
    let named = match ip {
        Some(IpParam::Static(s)) => s.iface.as_deref(),
        Some(IpParam::Dhcp { iface }) => iface.as_deref(),
        Some(IpParam::Off) => bail!("ip=off, but a two-stage boot needs the network"),
        None => None,
    };
    let (iface, mac) = choose(named, wwid, rescan)?;
    set_up(&iface).with_context(|| format!("setting {iface} up"))?;
    wait_carrier(&iface);
    let (addr, server_hint) = match ip {
        Some(IpParam::Static(s)) => {
            set_addr(&iface, s.addr, s.netmask)
                .with_context(|| format!("setting {} on {iface}", s.addr))?;
            if let Some(gw) = s.gateway {
                add_default_route(gw).with_context(|| format!("adding default route via {gw}"))?;
            }
            (s.addr, s.server)
        }
        _ => {
            let mut t = UdpTransport::open(&iface)
                .with_context(|| format!("opening a DHCP socket on {iface}"))?;
            let xid = u32::from_le_bytes([mac.0[2], mac.0[3], mac.0[4], mac.0[5]])
                ^ (crate::http::jitter() * f64::from(u32::MAX)) as u32;
            let lease = dhcp::obtain(&mut t, mac.0, xid, dhcp_timeout)
                .with_context(|| format!("DHCP on {iface}"))?;
            let mask = lease.netmask.unwrap_or_else(|| default_mask(lease.addr));
            set_addr(&iface, lease.addr, mask)
                .with_context(|| format!("setting {} on {iface}", lease.addr))?;
            if let Some(gw) = lease.router {
                add_default_route(gw).with_context(|| format!("adding default route via {gw}"))?;
            }
            log::info(&format!(
                "{iface}: lease {}/{mask} from {} (router {:?}, next server {:?}, {} s)",
                lease.addr,
                lease.server_id,
                lease.router,
                lease.next_server,
                lease.lease_secs.unwrap_or(0)
            ));
            (lease.addr, lease.next_server.or(Some(lease.server_id)))
        }
    };
    Ok(NetInfo {
        iface,
        mac,
        addr,
        server_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_structs_match_the_kernel() {
        // 64-bit kernel sizes of struct ifreq and struct rtentry.
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<libc::rtentry>(), 120);
        assert_eq!(
            default_mask(Ipv4Addr::new(10, 1, 2, 3)),
            Ipv4Addr::new(255, 0, 0, 0)
        );
        assert_eq!(
            default_mask(Ipv4Addr::new(192, 168, 1, 1)),
            Ipv4Addr::new(255, 255, 255, 0)
        );
    }
}
