//! BMC LAN configuration over `/dev/ipmi0` (the kernel's IPMI device
//! interface), used when the node's `ipmi.write=true`.
//!
//! The requests are built purely ([`plan`]) from the node's settings:
//! IPMI v2.0 "Set LAN Configuration Parameters" (NetFn Transport, 0x01) on
//! LAN channel 1 for IP source (static), address, netmask, gateway and
//! 802.1q VLAN; "Set User Name" / "Set User Password" / "Set User Access"
//! (NetFn App) for user 2, as Warewulf's `ipmitool`-based hook does. They
//! go to the BMC through `IPMICTL_SEND_COMMAND` and the reply comes back
//! with `IPMICTL_RECEIVE_MSG_TRUNC`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::Ipmi;

/// NetFn of application commands.
pub const NETFN_APP: u8 = 0x06;
/// NetFn of transport (LAN) commands.
pub const NETFN_TRANSPORT: u8 = 0x0c;
/// The LAN channel configured (Warewulf's default).
pub const LAN_CHANNEL: u8 = 1;
/// The BMC user configured (the first non-anonymous user, as Warewulf).
pub const USER_ID: u8 = 2;
/// The kernel's IPMI device interface.
pub const DEVICE: &str = "/dev/ipmi0";
/// Drivers for a system-interface BMC and its device node.
pub const DRIVERS: &[&str] = &["ipmi_si", "ipmi_devintf"];
/// How long to wait for `/dev/ipmi0` after loading the drivers.
const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// How long to wait for the BMC to answer one request.
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// One request to the BMC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub netfn: u8,
    pub cmd: u8,
    pub data: Vec<u8>,
    /// What it sets, for logs (never the password itself).
    pub what: &'static str,
}

fn lan(param: u8, value: &[u8], what: &'static str) -> Request {
    let mut data = vec![LAN_CHANNEL, param];
    data.extend_from_slice(value);
    Request {
        netfn: NETFN_TRANSPORT,
        cmd: 0x01,
        data,
        what,
    }
}

/// The requests that apply `cfg`, in order.
pub fn plan(cfg: &Ipmi) -> Vec<Request> {
    let mut r = Vec::new();
    if let Some(a) = cfg.ipaddr {
        r.push(lan(4, &[0x01], "IP source static"));
        r.push(lan(3, &a.octets(), "IP address"));
    }
    if let Some(m) = cfg.netmask {
        r.push(lan(6, &m.octets(), "netmask"));
    }
    if let Some(g) = cfg.gateway {
        r.push(lan(12, &g.octets(), "default gateway"));
    }
    match cfg.vlan {
        // Parameter 20: VLAN id low byte, then enable bit + id high nibble.
        Some(id) => r.push(lan(
            20,
            &[(id & 0xff) as u8, 0x80 | ((id >> 8) & 0x0f) as u8],
            "VLAN",
        )),
        None if cfg.ipaddr.is_some() => r.push(lan(20, &[0, 0], "VLAN off")),
        None => {}
    }
    if let Some(name) = &cfg.username {
        let mut data = vec![USER_ID];
        let mut n = name.as_bytes().to_vec();
        n.resize(16, 0);
        data.extend_from_slice(&n[..16]);
        r.push(Request {
            netfn: NETFN_APP,
            cmd: 0x45,
            data,
            what: "user name",
        });
    }
    if let Some(pw) = &cfg.password {
        // 16-byte passwords unless longer (then the 20-byte form, bit 7).
        let (flag, len) = if pw.len() > 16 { (0x80, 20) } else { (0, 16) };
        let mut p = pw.as_bytes().to_vec();
        p.resize(len, 0);
        let mut data = vec![flag | USER_ID, 0x02];
        data.extend_from_slice(&p[..len]);
        r.push(Request {
            netfn: NETFN_APP,
            cmd: 0x47,
            data,
            what: "user password",
        });
        r.push(Request {
            netfn: NETFN_APP,
            cmd: 0x47,
            data: vec![USER_ID, 0x01],
            what: "enable user",
        });
        r.push(Request {
            netfn: NETFN_APP,
            cmd: 0x43,
            // Change bits + IPMI messaging on, channel; user; ADMINISTRATOR; no session limit.
            data: vec![0x90 | LAN_CHANNEL, USER_ID, 0x04, 0x00],
            what: "user access (administrator)",
        });
    }
    r
}

/// Something that answers IPMI requests: reply data, completion code first.
pub trait Bmc {
    fn send(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> io::Result<Vec<u8>>;
}

/// Sends `reqs`; returns what was set and what failed (name: reason).
pub fn apply(bmc: &mut dyn Bmc, reqs: &[Request]) -> (Vec<&'static str>, Vec<String>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for r in reqs {
        match bmc.send(r.netfn, r.cmd, &r.data) {
            Ok(reply) if reply.first() == Some(&0) => ok.push(r.what),
            Ok(reply) => failed.push(format!(
                "{}: completion code {:#04x}",
                r.what,
                reply.first().copied().unwrap_or(0xff)
            )),
            Err(e) => failed.push(format!("{}: {e}", r.what)),
        }
    }
    (ok, failed)
}

// --- /dev/ipmi0 (linux/ipmi.h)

const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: libc::c_int = 0x0c;
const IPMI_BMC_CHANNEL: libc::c_short = 0x0f;

#[repr(C)]
struct IpmiMsg {
    netfn: u8,
    cmd: u8,
    data_len: u16,
    data: *mut u8,
}

#[repr(C)]
struct IpmiReq {
    addr: *mut u8,
    addr_len: libc::c_uint,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

#[repr(C)]
struct IpmiRecv {
    recv_type: libc::c_int,
    addr: *mut u8,
    addr_len: libc::c_uint,
    msgid: libc::c_long,
    msg: IpmiMsg,
}

#[repr(C)]
struct SystemInterfaceAddr {
    addr_type: libc::c_int,
    channel: libc::c_short,
    lun: u8,
}

/// `_IOC(dir, 'i', nr, size)`.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'i' as u64) << 8) | nr
}
/// `_IOR('i', 13, struct ipmi_req)`.
const IPMICTL_SEND_COMMAND: u64 = ioc(2, 13, std::mem::size_of::<IpmiReq>());
/// `_IOWR('i', 11, struct ipmi_recv)`.
const IPMICTL_RECEIVE_MSG_TRUNC: u64 = ioc(3, 11, std::mem::size_of::<IpmiRecv>());

/// The BMC behind `/dev/ipmi0`.
pub struct DevIpmi {
    file: File,
    msgid: libc::c_long,
}

impl DevIpmi {
    /// Opens `path`, waiting for it to appear (the driver probes async).
    pub fn open(path: &Path) -> io::Result<Self> {
        let started = Instant::now();
        loop {
            match OpenOptions::new().read(true).write(true).open(path) {
                Ok(file) => return Ok(DevIpmi { file, msgid: 0 }),
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound && started.elapsed() < DEVICE_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[allow(clippy::unnecessary_cast, clippy::cast_possible_truncation)]
fn ioctl<T>(fd: &File, req: u64, arg: &mut T) -> io::Result<()> {
    // SAFETY: `arg` is the structure `req` names; its pointers stay valid
    // for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as libc::Ioctl, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Bmc for DevIpmi {
    fn send(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut addr = SystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        let mut body = data.to_vec();
        self.msgid += 1;
        let mut req = IpmiReq {
            addr: (&mut addr as *mut SystemInterfaceAddr).cast(),
            addr_len: std::mem::size_of::<SystemInterfaceAddr>() as libc::c_uint,
            msgid: self.msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: u16::try_from(body.len())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
                data: body.as_mut_ptr(),
            },
        };
        ioctl(&self.file, IPMICTL_SEND_COMMAND, &mut req)?;
        let deadline = Instant::now() + REPLY_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no reply from the BMC",
                ));
            }
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                continue;
            }
            let mut raddr = [0u8; 64];
            let mut rdata = vec![0u8; 256];
            let mut recv = IpmiRecv {
                recv_type: 0,
                addr: raddr.as_mut_ptr(),
                addr_len: raddr.len() as libc::c_uint,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: rdata.len() as u16,
                    data: rdata.as_mut_ptr(),
                },
            };
            ioctl(&self.file, IPMICTL_RECEIVE_MSG_TRUNC, &mut recv)?;
            if recv.msgid != self.msgid {
                continue; // a stale reply
            }
            rdata.truncate(usize::from(recv.msg.data_len));
            return Ok(rdata);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn ioctl_numbers_match_linux() {
        assert_eq!(std::mem::size_of::<IpmiReq>(), 40);
        assert_eq!(std::mem::size_of::<IpmiRecv>(), 48);
        assert_eq!(IPMICTL_SEND_COMMAND, 0x8028_690d);
        assert_eq!(IPMICTL_RECEIVE_MSG_TRUNC, 0xc030_690b);
    }

    #[test]
    fn plan_bytes() {
        let cfg = Ipmi {
            write: true,
            ipaddr: Some(Ipv4Addr::new(10, 1, 0, 5)),
            netmask: Some(Ipv4Addr::new(255, 255, 0, 0)),
            gateway: Some(Ipv4Addr::new(10, 1, 0, 1)),
            vlan: Some(0x123),
            username: Some("admin".into()),
            password: Some("secret".into()),
        };
        let p = plan(&cfg);
        let lines: Vec<(u8, u8, Vec<u8>)> =
            p.iter().map(|r| (r.netfn, r.cmd, r.data.clone())).collect();
        let mut name = b"admin".to_vec();
        name.resize(16, 0);
        let mut pw = b"secret".to_vec();
        pw.resize(16, 0);
        assert_eq!(
            lines,
            vec![
                (0x0c, 0x01, vec![1, 4, 1]),
                (0x0c, 0x01, vec![1, 3, 10, 1, 0, 5]),
                (0x0c, 0x01, vec![1, 6, 255, 255, 0, 0]),
                (0x0c, 0x01, vec![1, 12, 10, 1, 0, 1]),
                (0x0c, 0x01, vec![1, 20, 0x23, 0x81]),
                (0x06, 0x45, [vec![2], name].concat()),
                (0x06, 0x47, [vec![2, 2], pw].concat()),
                (0x06, 0x47, vec![2, 1]),
                (0x06, 0x43, vec![0x91, 2, 4, 0]),
            ]
        );
        let long = plan(&Ipmi {
            password: Some("a-twenty-char-passwd".into()),
            ..Ipmi::default()
        });
        assert_eq!(long[0].data[0], 0x82);
        assert_eq!(long[0].data.len(), 22);
        assert!(plan(&Ipmi::default()).is_empty());
    }

    struct Fake(Vec<(u8, u8)>);
    impl Bmc for Fake {
        fn send(&mut self, netfn: u8, cmd: u8, _data: &[u8]) -> io::Result<Vec<u8>> {
            self.0.push((netfn, cmd));
            Ok(if cmd == 0x45 { vec![0xc1] } else { vec![0] })
        }
    }

    #[test]
    fn apply_reports_failures_by_name() {
        let cfg = Ipmi {
            ipaddr: Some(Ipv4Addr::new(10, 1, 0, 5)),
            username: Some("admin".into()),
            ..Ipmi::default()
        };
        let mut bmc = Fake(Vec::new());
        let (ok, failed) = apply(&mut bmc, &plan(&cfg));
        assert_eq!(ok, ["IP source static", "IP address", "VLAN off"]);
        assert_eq!(failed, ["user name: completion code 0xc1"]);
    }
}
