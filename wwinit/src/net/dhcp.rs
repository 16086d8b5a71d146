//! A minimal DHCPv4 client (RFC 2131): DISCOVER → OFFER → REQUEST → ACK,
//! broadcast replies requested, first valid offer taken. Packets are built
//! and parsed purely; the exchange runs over a [`Transport`] so it is
//! tested with constructed packets.

use std::io;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use thiserror::Error;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const BOOTREQUEST: u8 = 1;
const BOOTREPLY: u8 = 2;
/// Ask servers to broadcast replies: we have no address to receive unicast.
const FLAG_BROADCAST: u16 = 0x8000;
const FIXED_LEN: usize = 236;

/// Option codes we use.
pub mod opt {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MSG_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAM_LIST: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
    pub const PAD: u8 = 0;
}

/// DHCP message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Ack = 5,
    Nak = 6,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => MsgType::Discover,
            2 => MsgType::Offer,
            3 => MsgType::Request,
            5 => MsgType::Ack,
            6 => MsgType::Nak,
            _ => return None,
        })
    }
}

/// Errors of the exchange.
#[derive(Debug, Error)]
pub enum DhcpError {
    #[error("sending DHCP packet")]
    Send(#[source] io::Error),
    #[error("receiving DHCP packet")]
    Recv(#[source] io::Error),
    #[error("no DHCP lease within {0:?} ({1})")]
    Timeout(Duration, String),
}

/// A BOOTP/DHCP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    fn new(op: u8, xid: u32, mac: [u8; 6]) -> Self {
        Packet {
            op,
            xid,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options: Vec::new(),
        }
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }

    fn addr_option(&self, code: u8) -> Option<Ipv4Addr> {
        let v = self.option(code)?;
        let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    }

    pub fn msg_type(&self) -> Option<MsgType> {
        MsgType::from_u8(*self.option(opt::MSG_TYPE)?.first()?)
    }

    /// Wire form (at least 300 bytes, as BOOTP relays expect).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(300);
        b.extend_from_slice(&[self.op, 1, 6, 0]);
        b.extend_from_slice(&self.xid.to_be_bytes());
        b.extend_from_slice(&self.secs.to_be_bytes());
        b.extend_from_slice(&self.flags.to_be_bytes());
        for a in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            b.extend_from_slice(&a.octets());
        }
        b.extend_from_slice(&self.chaddr);
        b.resize(FIXED_LEN, 0); // chaddr padding, sname, file
        b.extend_from_slice(&MAGIC);
        for (code, val) in &self.options {
            // Longer values would need RFC 3396 splitting; ours are short.
            let len = u8::try_from(val.len()).unwrap_or(u8::MAX);
            b.push(*code);
            b.push(len);
            b.extend_from_slice(&val[..usize::from(len)]);
        }
        b.push(opt::END);
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    /// Parses a packet; `None` if it is not a well-formed DHCP packet.
    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < FIXED_LEN + 4 || b[1] != 1 || b[2] != 6 || b[FIXED_LEN..FIXED_LEN + 4] != MAGIC
        {
            return None;
        }
        let addr = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        let mut p = Packet {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: addr(12),
            yiaddr: addr(16),
            siaddr: addr(20),
            giaddr: addr(24),
            chaddr: b[28..34].try_into().ok()?,
            options: Vec::new(),
        };
        let mut i = FIXED_LEN + 4;
        while i < b.len() {
            match b[i] {
                opt::PAD => i += 1,
                opt::END => break,
                code => {
                    let len = usize::from(*b.get(i + 1)?);
                    let val = b.get(i + 2..i + 2 + len)?;
                    // RFC 3396: repeated options concatenate.
                    match p.options.iter_mut().find(|(c, _)| *c == code) {
                        Some((_, v)) => v.extend_from_slice(val),
                        None => p.options.push((code, val.to_vec())),
                    }
                    i += 2 + len;
                }
            }
        }
        Some(p)
    }
}

/// What the server granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub addr: Ipv4Addr,
    pub netmask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Option 54: the server that answered.
    pub server_id: Ipv4Addr,
    /// `siaddr` (next server), when set.
    pub next_server: Option<Ipv4Addr>,
    pub lease_secs: Option<u32>,
    pub hostname: Option<String>,
}

fn base(xid: u32, mac: [u8; 6], kind: MsgType) -> Packet {
    let mut p = Packet::new(BOOTREQUEST, xid, mac);
    p.flags = FLAG_BROADCAST;
    p.options.push((opt::MSG_TYPE, vec![kind as u8]));
    let mut cid = vec![1];
    cid.extend_from_slice(&mac);
    p.options.push((opt::CLIENT_ID, cid));
    p.options
        .push((opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec()));
    p.options
        .push((opt::VENDOR_CLASS, b"ironwulf-wwinit".to_vec()));
    p.options.push((
        opt::PARAM_LIST,
        vec![
            opt::SUBNET_MASK,
            opt::ROUTER,
            opt::DNS,
            opt::HOSTNAME,
            opt::LEASE_TIME,
            opt::SERVER_ID,
        ],
    ));
    p
}

/// DHCPDISCOVER.
pub fn discover(xid: u32, mac: [u8; 6]) -> Packet {
    base(xid, mac, MsgType::Discover)
}

/// DHCPREQUEST for an offer (SELECTING state).
pub fn request(xid: u32, mac: [u8; 6], offer: &Lease) -> Packet {
    let mut p = base(xid, mac, MsgType::Request);
    p.options
        .push((opt::REQUESTED_IP, offer.addr.octets().to_vec()));
    p.options
        .push((opt::SERVER_ID, offer.server_id.octets().to_vec()));
    p
}

/// A reply for us (our xid and MAC, a BOOTREPLY with a type), as a lease.
pub fn parse_reply(p: &Packet, xid: u32, mac: [u8; 6]) -> Option<(MsgType, Lease)> {
    if p.op != BOOTREPLY || p.xid != xid || p.chaddr != mac {
        return None;
    }
    let kind = p.msg_type()?;
    let server_id = p.addr_option(opt::SERVER_ID).unwrap_or(p.siaddr);
    let lease = Lease {
        addr: p.yiaddr,
        netmask: p.addr_option(opt::SUBNET_MASK),
        router: p.addr_option(opt::ROUTER),
        dns: p
            .option(opt::DNS)
            .unwrap_or(&[])
            .chunks_exact(4)
            .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            .collect(),
        server_id,
        next_server: (!p.siaddr.is_unspecified()).then_some(p.siaddr),
        lease_secs: p
            .option(opt::LEASE_TIME)
            .and_then(|v| v.get(..4))
            .and_then(|v| v.try_into().ok())
            .map(u32::from_be_bytes),
        hostname: p
            .option(opt::HOSTNAME)
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    };
    Some((kind, lease))
}

/// Sends and receives raw DHCP payloads.
pub trait Transport {
    fn send(&mut self, packet: &[u8]) -> io::Result<()>;
    /// The next datagram within `timeout`, `None` on timeout.
    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>>;
}

/// Waits for a reply of one of `kinds` until `until`, ignoring others.
fn await_reply(
    t: &mut dyn Transport,
    xid: u32,
    mac: [u8; 6],
    until: Instant,
    accept: &dyn Fn(MsgType, &Lease) -> bool,
) -> Result<Option<(MsgType, Lease)>, DhcpError> {
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(None);
        }
        let Some(raw) = t.recv(until - now).map_err(DhcpError::Recv)? else {
            return Ok(None);
        };
        if let Some(p) = Packet::decode(&raw)
            && let Some((kind, lease)) = parse_reply(&p, xid, mac)
            && accept(kind, &lease)
        {
            return Ok(Some((kind, lease)));
        }
    }
}

/// Runs DISCOVER/OFFER/REQUEST/ACK until a lease or `timeout`. Retransmits
/// with doubling waits (1 s … 8 s); a NAK restarts from DISCOVER.
pub fn obtain(
    t: &mut dyn Transport,
    mac: [u8; 6],
    first_xid: u32,
    timeout: Duration,
) -> Result<Lease, DhcpError> {
    let deadline = Instant::now() + timeout;
    let mut wait = Duration::from_secs(1);
    let mut xid = first_xid;
    let mut last = "no offer".to_owned();
    while Instant::now() < deadline {
        t.send(&discover(xid, mac).encode())
            .map_err(DhcpError::Send)?;
        let until = (Instant::now() + wait).min(deadline);
        let offer = await_reply(t, xid, mac, until, &|k, l| {
            k == MsgType::Offer && !l.addr.is_unspecified() && !l.server_id.is_unspecified()
        })?;
        let Some((_, offer)) = offer else {
            wait = (wait * 2).min(Duration::from_secs(8));
            continue;
        };
        for _ in 0..3 {
            t.send(&request(xid, mac, &offer).encode())
                .map_err(DhcpError::Send)?;
            let until = (Instant::now() + Duration::from_secs(2)).min(deadline);
            let server = offer.server_id;
            let reply = await_reply(t, xid, mac, until, &|k, l| {
                matches!(k, MsgType::Ack | MsgType::Nak) && l.server_id == server
            })?;
            match reply {
                Some((MsgType::Ack, lease)) if !lease.addr.is_unspecified() => return Ok(lease),
                Some((MsgType::Ack, _)) => last = format!("ACK from {server} without an address"),
                Some(_) => {
                    last = format!("NAK from {server}");
                    break;
                }
                None => last = format!("no ACK from {server}"),
            }
        }
        xid = xid.wrapping_add(1);
    }
    Err(DhcpError::Timeout(timeout, last))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    fn reply(kind: MsgType, xid: u32, yiaddr: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
        let mut p = Packet::new(BOOTREPLY, xid, MAC);
        p.yiaddr = yiaddr;
        p.siaddr = server;
        p.options = vec![
            (opt::MSG_TYPE, vec![kind as u8]),
            (opt::SERVER_ID, server.octets().to_vec()),
            (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
            (opt::ROUTER, SERVER.octets().to_vec()),
            (opt::DNS, vec![10, 0, 2, 3, 8, 8, 8, 8]),
            (opt::LEASE_TIME, 86400u32.to_be_bytes().to_vec()),
        ];
        p.encode()
    }

    /// Answers each sent packet with the next scripted list of datagrams.
    struct Script {
        replies: VecDeque<Vec<Vec<u8>>>,
        pending: VecDeque<Vec<u8>>,
        sent: Vec<Packet>,
    }

    impl Transport for Script {
        fn send(&mut self, packet: &[u8]) -> io::Result<()> {
            self.sent
                .push(Packet::decode(packet).expect("we send valid packets"));
            self.pending
                .extend(self.replies.pop_front().unwrap_or_default());
            Ok(())
        }
        fn recv(&mut self, _timeout: Duration) -> io::Result<Option<Vec<u8>>> {
            Ok(self.pending.pop_front())
        }
    }

    fn script(replies: Vec<Vec<Vec<u8>>>) -> Script {
        Script {
            replies: replies.into(),
            pending: VecDeque::new(),
            sent: Vec::new(),
        }
    }

    #[test]
    fn round_trip() {
        let p = request(
            7,
            MAC,
            &Lease {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                netmask: None,
                router: None,
                dns: vec![],
                server_id: SERVER,
                next_server: None,
                lease_secs: None,
                hostname: None,
            },
        );
        let b = p.encode();
        assert_eq!(b.len(), 300);
        assert_eq!(Packet::decode(&b), Some(p.clone()));
        assert_eq!(p.msg_type(), Some(MsgType::Request));
        assert_eq!(p.flags, FLAG_BROADCAST);
        assert_eq!(p.option(opt::REQUESTED_IP), Some(&[10, 0, 2, 15][..]));
        assert!(Packet::decode(&b[..200]).is_none());
        let mut bad = b.clone();
        bad[236] = 0;
        assert!(Packet::decode(&bad).is_none());
    }

    #[test]
    fn full_exchange_takes_first_valid_offer() {
        let me = Ipv4Addr::new(10, 0, 2, 15);
        let mut t = script(vec![
            vec![
                reply(MsgType::Offer, 99, me, SERVER), // wrong xid
                reply(MsgType::Offer, 1, Ipv4Addr::UNSPECIFIED, SERVER), // no address
                reply(MsgType::Offer, 1, me, SERVER),
                reply(
                    MsgType::Offer,
                    1,
                    Ipv4Addr::new(10, 0, 2, 16),
                    Ipv4Addr::new(10, 0, 2, 9),
                ),
            ],
            vec![
                reply(
                    MsgType::Ack,
                    1,
                    Ipv4Addr::new(10, 0, 2, 16),
                    Ipv4Addr::new(10, 0, 2, 9),
                ), // other server
                reply(MsgType::Ack, 1, me, SERVER),
            ],
        ]);
        let lease = obtain(&mut t, MAC, 1, Duration::from_secs(5)).expect("lease");
        assert_eq!(lease.addr, me);
        assert_eq!(lease.netmask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(lease.router, Some(SERVER));
        assert_eq!(
            lease.dns,
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(8, 8, 8, 8)]
        );
        assert_eq!(lease.lease_secs, Some(86400));
        assert_eq!(lease.next_server, Some(SERVER));
        let kinds: Vec<_> = t.sent.iter().map(|p| p.msg_type()).collect();
        assert_eq!(kinds, [Some(MsgType::Discover), Some(MsgType::Request)]);
        assert_eq!(t.sent[1].option(opt::SERVER_ID), Some(&SERVER.octets()[..]));
    }

    #[test]
    fn nak_restarts_with_new_xid() {
        let me = Ipv4Addr::new(10, 0, 2, 15);
        let mut t = script(vec![
            vec![reply(MsgType::Offer, 1, me, SERVER)],
            vec![reply(MsgType::Nak, 1, Ipv4Addr::UNSPECIFIED, SERVER)],
            vec![reply(MsgType::Offer, 2, me, SERVER)],
            vec![reply(MsgType::Ack, 2, me, SERVER)],
        ]);
        let lease = obtain(&mut t, MAC, 1, Duration::from_secs(5)).expect("lease");
        assert_eq!(lease.addr, me);
        let xids: Vec<u32> = t.sent.iter().map(|p| p.xid).collect();
        assert_eq!(xids, [1, 1, 2, 2]);
    }

    #[test]
    fn silence_times_out() {
        let mut t = script(vec![]);
        let err = obtain(&mut t, MAC, 1, Duration::from_millis(30)).expect_err("no server");
        assert!(err.to_string().starts_with("no DHCP lease within"), "{err}");
        assert!(!t.sent.is_empty());
    }
}
