//! The DHCP answer to one request, as a pure function of the request, the
//! settings, the node reservations and the lease table.

use std::net::Ipv4Addr;

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use proto::Mac;

use super::classify::{ClientKind, classify};
use super::leases::{LeaseTable, Secs};
use super::{DYNAMIC_LEASE, DhcpSettings, Hosts, OFFER_HOLD, STATIC_LEASE};

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// Through the relay agent in `giaddr`, port 67.
    Relay(Ipv4Addr),
    /// To the client's configured address, port 68.
    Unicast(Ipv4Addr),
    /// To 255.255.255.255:68 on the interface the request came in on.
    Broadcast,
    /// Back to the request's source address and port (proxyDHCP on 4011).
    Source,
}

/// What to do with one request.
#[derive(Debug)]
pub enum Outcome {
    Reply {
        msg: Box<Message>,
        dest: Destination,
    },
    /// No answer; the reason is for debug logging.
    Ignore(&'static str),
}

/// Extra facts the server learned from a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// An unknown MAC asked while some node is discoverable.
    pub discovered: Option<Mac>,
}

/// Answers `req`. `via_proxy_port` is true for packets that arrived on 4011.
pub fn respond(
    req: &Message,
    settings: &DhcpSettings,
    hosts: &Hosts,
    leases: &mut LeaseTable,
    now: Secs,
    via_proxy_port: bool,
) -> (Outcome, Observed) {
    let mut seen = Observed::default();
    if req.opcode() != Opcode::BootRequest {
        return (Outcome::Ignore("not a BOOTREQUEST"), seen);
    }
    // `chaddr()` slices by the packet's `hlen`, which panics past 16: check
    // it first (a fuzzed packet of death, see `fuzz/fuzz_targets/dhcp.rs`).
    if req.htype() != HType::Eth || !(6..=16).contains(&req.hlen()) {
        return (Outcome::Ignore("not an Ethernet client"), seen);
    }
    let Some(msg_type) = req.opts().msg_type() else {
        return (
            Outcome::Ignore("no message type (BOOTP is not served)"),
            seen,
        );
    };
    let mut hw = [0u8; 6];
    hw.copy_from_slice(&req.chaddr()[..6]);
    let mac = Mac(hw);
    let kind = classify(req);

    if settings.proxy || via_proxy_port {
        return (
            proxy_answer(req, settings, kind, msg_type, via_proxy_port),
            seen,
        );
    }

    let reservation = hosts.reservations.get(&mac);
    if reservation.is_none() && hosts.discovery {
        seen.discovered = Some(mac);
    }
    let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ if !req.ciaddr().is_unspecified() => Some(req.ciaddr()),
        _ => None,
    };
    let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };

    let dynamic_secs = DYNAMIC_LEASE.as_secs();
    let outcome = match msg_type {
        MessageType::Discover => {
            let (ip, secs) = match reservation {
                Some(r) => (r.ip, STATIC_LEASE.as_secs()),
                None => match leases.offer(mac, requested, now, OFFER_HOLD.as_secs()) {
                    Some(ip) => (ip, dynamic_secs),
                    None => {
                        return (
                            Outcome::Ignore("no free address in the dynamic range"),
                            seen,
                        );
                    }
                },
            };
            reply(
                req,
                settings,
                hosts,
                mac,
                kind,
                MessageType::Offer,
                ip,
                Some(secs),
            )
        }
        MessageType::Request => {
            if server_id.is_some_and(|id| id != settings.server_ip) {
                // The client took another server's offer; drop our hold.
                if let Some(l) = leases.get(mac, now).filter(|l| !l.bound) {
                    leases.release(mac, l.ip);
                }
                return (Outcome::Ignore("REQUEST for another server"), seen);
            }
            let Some(want) = requested else {
                return (Outcome::Ignore("REQUEST without an address"), seen);
            };
            match reservation {
                Some(r) if r.ip == want => reply(
                    req,
                    settings,
                    hosts,
                    mac,
                    kind,
                    MessageType::Ack,
                    want,
                    Some(STATIC_LEASE.as_secs()),
                ),
                Some(_) => nak(req, settings),
                None if leases.bind(mac, want, now, dynamic_secs) => reply(
                    req,
                    settings,
                    hosts,
                    mac,
                    kind,
                    MessageType::Ack,
                    want,
                    Some(dynamic_secs),
                ),
                None => nak(req, settings),
            }
        }
        MessageType::Release => {
            leases.release(mac, req.ciaddr());
            Outcome::Ignore("RELEASE handled")
        }
        MessageType::Decline => {
            if let Some(ip) = requested {
                leases.decline(mac, ip, now, 600);
            }
            Outcome::Ignore("DECLINE handled")
        }
        MessageType::Inform => reply(
            req,
            settings,
            hosts,
            mac,
            kind,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            None,
        ),
        _ => Outcome::Ignore("message type not handled by a server"),
    };
    (outcome, seen)
}

/// The boot file and whether it is fetched over TFTP (so `siaddr` matters).
fn boot_file(settings: &DhcpSettings, kind: ClientKind) -> Option<(String, bool)> {
    let base = format!("http://{}:{}", settings.server_ip, settings.http_port);
    match kind {
        ClientKind::Ipxe => Some((
            format!("{base}/ipxe/${{mac:hexhyp}}?assetkey=${{asset}}&uuid=${{uuid}}"),
            false,
        )),
        ClientKind::Pxe { arch } => match settings.ipxe_binaries.get(&arch) {
            Some(file) => Some((file.clone(), true)),
            None => {
                tracing::debug!("no iPXE binary configured for PXE architecture {arch:#06x}");
                None
            }
        },
        ClientKind::HttpClient { arch } => {
            let file = settings.ipxe_binaries.get(&http_to_pxe_arch(arch))?;
            Some((format!("{base}/efiboot/{file}"), false))
        }
        ClientKind::Plain => None,
    }
}

/// UEFI HTTP boot architectures (RFC 4578 / IANA) and the PXE architecture
/// whose iPXE binary they run.
fn http_to_pxe_arch(arch: u16) -> u16 {
    match arch {
        0x0f => 0x06,
        0x10 => 0x07,
        0x12 => 0x0a,
        0x13 => 0x0b,
        other => other,
    }
}

/// The common part of every reply to `req`.
fn base_reply(req: &Message, settings: &DhcpSettings, msg_type: MessageType) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(req.htype())
        .set_chaddr(req.chaddr())
        .set_xid(req.xid())
        .set_flags(req.flags())
        .set_giaddr(req.giaddr());
    m.opts_mut().insert(DhcpOption::MessageType(msg_type));
    m.opts_mut()
        .insert(DhcpOption::ServerIdentifier(settings.server_ip));
    m
}

#[allow(clippy::too_many_arguments)]
fn reply(
    req: &Message,
    settings: &DhcpSettings,
    hosts: &Hosts,
    mac: Mac,
    kind: ClientKind,
    msg_type: MessageType,
    yiaddr: Ipv4Addr,
    lease_secs: Option<Secs>,
) -> Outcome {
    let mut m = base_reply(req, settings, msg_type);
    m.set_yiaddr(yiaddr);
    if msg_type == MessageType::Ack && !req.ciaddr().is_unspecified() {
        m.set_ciaddr(req.ciaddr());
    }
    let reservation = hosts.reservations.get(&mac);
    let opts = m.opts_mut();
    if let Some(secs) = lease_secs {
        let secs = u32::try_from(secs).unwrap_or(u32::MAX);
        opts.insert(DhcpOption::AddressLeaseTime(secs));
        opts.insert(DhcpOption::Renewal(secs / 2));
        opts.insert(DhcpOption::Rebinding(secs / 8 * 7));
    }
    let netmask = reservation
        .and_then(|r| r.netmask)
        .unwrap_or(settings.netmask);
    opts.insert(DhcpOption::SubnetMask(netmask));
    if let Some(gw) = reservation.and_then(|r| r.gateway).or(settings.router) {
        opts.insert(DhcpOption::Router(vec![gw]));
    }
    if !settings.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(settings.dns.clone()));
    }
    if let Some(r) = reservation {
        opts.insert(DhcpOption::Hostname(r.hostname.clone()));
    }
    add_boot(&mut m, settings, kind);
    Outcome::Reply {
        dest: destination(req, msg_type),
        msg: Box::new(m),
    }
}

/// Boot file (header field and option 67), next-server, and the vendor
/// class echo HTTP boot requires; iPXE is told not to wait for proxyDHCP.
fn add_boot(m: &mut Message, settings: &DhcpSettings, kind: ClientKind) {
    let Some((file, via_tftp)) = boot_file(settings, kind) else {
        return;
    };
    if via_tftp {
        m.set_siaddr(settings.server_ip);
        m.opts_mut().insert(DhcpOption::TFTPServerName(
            settings.server_ip.to_string().into_bytes(),
        ));
    }
    // The 128-byte header field fits every TFTP name; long URLs go in option 67 only.
    if file.len() < 128 {
        m.set_fname_str(&file);
    }
    m.opts_mut()
        .insert(DhcpOption::BootfileName(file.into_bytes()));
    match kind {
        ClientKind::HttpClient { .. } => {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        }
        ClientKind::Ipxe => {
            // Option 175 (iPXE encapsulated): no-pxedhcp (176) = 1.
            m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                OptionCode::from(175u8),
                vec![176, 1, 1],
            )));
        }
        ClientKind::Pxe { .. } | ClientKind::Plain => {}
    }
}

fn nak(req: &Message, settings: &DhcpSettings) -> Outcome {
    let mut m = base_reply(req, settings, MessageType::Nak);
    m.set_flags(Flags::default().set_broadcast());
    Outcome::Reply {
        dest: destination(req, MessageType::Nak),
        msg: Box::new(m),
    }
}

fn destination(req: &Message, msg_type: MessageType) -> Destination {
    if !req.giaddr().is_unspecified() {
        Destination::Relay(req.giaddr())
    } else if msg_type != MessageType::Nak && !req.ciaddr().is_unspecified() {
        Destination::Unicast(req.ciaddr())
    } else {
        Destination::Broadcast
    }
}

/// proxyDHCP (PXE spec §2.2.5): boot information only, no address. Offers on
/// port 67 carry `PXEClient` and discovery control "use the boot file"; a
/// request on 4011 is answered with an ACK to its source.
fn proxy_answer(
    req: &Message,
    settings: &DhcpSettings,
    kind: ClientKind,
    msg_type: MessageType,
    via_proxy_port: bool,
) -> Outcome {
    if kind == ClientKind::Plain {
        return Outcome::Ignore("proxyDHCP answers boot clients only");
    }
    let reply_type = match (msg_type, via_proxy_port) {
        (MessageType::Discover, false) => MessageType::Offer,
        (MessageType::Request | MessageType::Inform, true) => MessageType::Ack,
        _ => return Outcome::Ignore("proxyDHCP ignores this message type"),
    };
    let mut m = base_reply(req, settings, reply_type);
    if kind != ClientKind::Ipxe {
        m.opts_mut().insert(DhcpOption::ClassIdentifier(match kind {
            ClientKind::HttpClient { .. } => b"HTTPClient".to_vec(),
            _ => b"PXEClient".to_vec(),
        }));
        // PXE_DISCOVERY_CONTROL (6) = 8: boot straight from the file given.
        m.opts_mut()
            .insert(DhcpOption::VendorExtensions(vec![6, 1, 8, 255]));
    }
    add_boot(&mut m, settings, kind);
    let dest = if via_proxy_port {
        Destination::Source
    } else {
        destination(req, reply_type)
    };
    Outcome::Reply {
        msg: Box::new(m),
        dest,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dhcproto::v4::Architecture;

    use super::super::Reservation;
    use super::*;

    const NODE: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    const STRANGER: Mac = Mac([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]);

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn settings() -> DhcpSettings {
        DhcpSettings {
            server_ip: ip("10.0.0.1"),
            netmask: ip("255.255.255.0"),
            router: Some(ip("10.0.0.254")),
            dns: vec![],
            range: Some((ip("10.0.0.100"), ip("10.0.0.110"))),
            http_port: 9873,
            ipxe_binaries: BTreeMap::from([
                (0x00, "undionly.kpxe".to_owned()),
                (0x07, "ipxe-snponly-x86_64.efi".to_owned()),
                (0x09, "ipxe-snponly-x86_64.efi".to_owned()),
                (0x0b, "snponly.efi".to_owned()),
            ]),
            proxy: false,
        }
    }

    fn hosts() -> Hosts {
        let mut h = Hosts::default();
        h.reservations.insert(
            NODE,
            Reservation {
                ip: ip("10.0.0.11"),
                hostname: "n01".into(),
                netmask: None,
                gateway: None,
            },
        );
        h
    }

    fn request(mac: Mac, t: MessageType, opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_chaddr(&mac.0)
            .set_xid(0x1234_5678);
        m.opts_mut().insert(DhcpOption::MessageType(t));
        for o in opts {
            m.opts_mut().insert(o);
        }
        // Through the wire and back, as the server sees it.
        use dhcproto::{Decodable, Encodable};
        Message::from_bytes(&m.to_vec().unwrap()).unwrap()
    }

    fn pxe(arch: u16) -> Vec<DhcpOption> {
        vec![
            DhcpOption::ClassIdentifier(
                format!("PXEClient:Arch:{arch:05}:UNDI:002001").into_bytes(),
            ),
            DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
        ]
    }

    fn run(
        req: &Message,
        s: &DhcpSettings,
        h: &Hosts,
        t: &mut LeaseTable,
    ) -> (Message, Destination) {
        match respond(req, s, h, t, 1000, false).0 {
            Outcome::Reply { msg, dest } => (*msg, dest),
            Outcome::Ignore(why) => panic!("ignored: {why}"),
        }
    }

    fn table(s: &DhcpSettings) -> LeaseTable {
        LeaseTable::new(s.range, [ip("10.0.0.11")])
    }

    fn bootfile(m: &Message) -> String {
        match m.opts().get(OptionCode::BootfileName) {
            Some(DhcpOption::BootfileName(f)) => String::from_utf8(f.clone()).unwrap(),
            other => panic!("no boot file: {other:?}"),
        }
    }

    #[test]
    fn hardware_length_over_16_is_ignored_not_a_panic() {
        use dhcproto::{Decodable, Encodable};
        let s = settings();
        let mut raw = request(NODE, MessageType::Discover, pxe(0))
            .to_vec()
            .unwrap();
        for hlen in [0u8, 5, 17, 255] {
            raw[2] = hlen;
            let m = Message::from_bytes(&raw).unwrap();
            let (out, _) = respond(&m, &s, &hosts(), &mut table(&s), 1000, false);
            assert!(matches!(out, Outcome::Ignore(_)), "hlen {hlen}");
        }
    }

    #[test]
    fn bios_pxe_gets_undionly_over_tftp_at_its_reserved_address() {
        let s = settings();
        let (m, dest) = run(
            &request(NODE, MessageType::Discover, pxe(0)),
            &s,
            &hosts(),
            &mut table(&s),
        );
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(m.yiaddr(), ip("10.0.0.11"));
        assert_eq!(m.siaddr(), ip("10.0.0.1"));
        assert_eq!(m.fname_str().unwrap().unwrap(), "undionly.kpxe");
        assert_eq!(bootfile(&m), "undionly.kpxe");
        assert!(
            matches!(m.opts().get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "n01")
        );
        assert!(
            matches!(m.opts().get(OptionCode::Router), Some(DhcpOption::Router(r)) if r == &[ip("10.0.0.254")])
        );
        assert_eq!(dest, Destination::Broadcast);
    }

    #[test]
    fn uefi_pxe_gets_the_efi_binary_for_its_arch() {
        let s = settings();
        for (arch, want) in [
            (7, "ipxe-snponly-x86_64.efi"),
            (9, "ipxe-snponly-x86_64.efi"),
            (0x0b, "snponly.efi"),
        ] {
            let (m, _) = run(
                &request(NODE, MessageType::Discover, pxe(arch)),
                &s,
                &hosts(),
                &mut table(&s),
            );
            assert_eq!(bootfile(&m), want, "arch {arch}");
        }
        // An architecture nobody configured gets an address but no file.
        let (m, _) = run(
            &request(NODE, MessageType::Discover, pxe(0x19)),
            &s,
            &hosts(),
            &mut table(&s),
        );
        assert!(m.opts().get(OptionCode::BootfileName).is_none());
    }

    #[test]
    fn ipxe_gets_the_script_url_and_no_pxedhcp() {
        let s = settings();
        let mut opts = pxe(7);
        opts.push(DhcpOption::UserClass(b"iPXE".to_vec()));
        let (m, _) = run(
            &request(NODE, MessageType::Discover, opts),
            &s,
            &hosts(),
            &mut table(&s),
        );
        assert_eq!(
            bootfile(&m),
            "http://10.0.0.1:9873/ipxe/${mac:hexhyp}?assetkey=${asset}&uuid=${uuid}"
        );
        assert_eq!(m.siaddr(), Ipv4Addr::UNSPECIFIED, "no TFTP for iPXE");
        match m.opts().get(OptionCode::from(175u8)) {
            Some(DhcpOption::Unknown(u)) => assert_eq!(u.data(), &[176, 1, 1]),
            other => panic!("no option 175: {other:?}"),
        }
    }

    #[test]
    fn http_client_gets_an_http_url_and_its_vendor_class_back() {
        let s = settings();
        let opts = vec![
            DhcpOption::ClassIdentifier(b"HTTPClient:Arch:00016:UNDI:003001".to_vec()),
            DhcpOption::ClientSystemArchitecture(Architecture::from(0x10)),
        ];
        let (m, _) = run(
            &request(NODE, MessageType::Discover, opts),
            &s,
            &hosts(),
            &mut table(&s),
        );
        assert_eq!(
            bootfile(&m),
            "http://10.0.0.1:9873/efiboot/ipxe-snponly-x86_64.efi"
        );
        assert!(
            matches!(m.opts().get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(v)) if v == b"HTTPClient")
        );
    }

    #[test]
    fn unknown_machine_gets_a_dynamic_address_and_the_full_exchange_works() {
        let s = settings();
        let h = hosts();
        let mut t = table(&s);
        let (offer, _) = run(
            &request(STRANGER, MessageType::Discover, pxe(0)),
            &s,
            &h,
            &mut t,
        );
        assert_eq!(offer.yiaddr(), ip("10.0.0.100"));
        let req = request(
            STRANGER,
            MessageType::Request,
            vec![
                DhcpOption::RequestedIpAddress(offer.yiaddr()),
                DhcpOption::ServerIdentifier(ip("10.0.0.1")),
            ],
        );
        let (ack, _) = run(&req, &s, &h, &mut t);
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip("10.0.0.100"));
        assert!(matches!(
            ack.opts().get(OptionCode::AddressLeaseTime),
            Some(DhcpOption::AddressLeaseTime(120))
        ));
        assert!(ack.opts().get(OptionCode::Hostname).is_none());
        assert!(t.get(STRANGER, 1000).unwrap().bound);
    }

    #[test]
    fn discoverable_sites_report_unknown_macs() {
        let s = settings();
        let mut h = hosts();
        let req = request(STRANGER, MessageType::Discover, pxe(0));
        assert_eq!(
            respond(&req, &s, &h, &mut table(&s), 0, false).1.discovered,
            None
        );
        h.discovery = true;
        assert_eq!(
            respond(&req, &s, &h, &mut table(&s), 0, false).1.discovered,
            Some(STRANGER)
        );
        let known = request(NODE, MessageType::Discover, pxe(0));
        assert_eq!(
            respond(&known, &s, &h, &mut table(&s), 0, false)
                .1
                .discovered,
            None
        );
    }

    #[test]
    fn static_only_site_ignores_strangers() {
        let mut s = settings();
        s.range = None;
        let req = request(STRANGER, MessageType::Discover, pxe(0));
        assert!(matches!(
            respond(&req, &s, &hosts(), &mut table(&s), 0, false).0,
            Outcome::Ignore(_)
        ));
    }

    #[test]
    fn wrong_address_is_naked_and_other_servers_requests_ignored() {
        let s = settings();
        let h = hosts();
        let mut t = table(&s);
        let req = request(
            NODE,
            MessageType::Request,
            vec![DhcpOption::RequestedIpAddress(ip("10.0.0.50"))],
        );
        let (m, dest) = run(&req, &s, &h, &mut t);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(dest, Destination::Broadcast);

        let other = request(
            NODE,
            MessageType::Request,
            vec![
                DhcpOption::RequestedIpAddress(ip("10.0.0.11")),
                DhcpOption::ServerIdentifier(ip("10.0.0.2")),
            ],
        );
        assert!(matches!(
            respond(&other, &s, &h, &mut t, 0, false).0,
            Outcome::Ignore(_)
        ));
    }

    #[test]
    fn renewal_is_unicast_and_relay_goes_to_giaddr() {
        let s = settings();
        let h = hosts();
        let mut t = table(&s);
        let mut renew = request(NODE, MessageType::Request, vec![]);
        renew.set_ciaddr(ip("10.0.0.11"));
        let (m, dest) = run(&renew, &s, &h, &mut t);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(dest, Destination::Unicast(ip("10.0.0.11")));

        let mut relayed = request(NODE, MessageType::Discover, pxe(0));
        relayed.set_giaddr(ip("10.1.0.1"));
        let (m, dest) = run(&relayed, &s, &h, &mut t);
        assert_eq!(m.giaddr(), ip("10.1.0.1"));
        assert_eq!(dest, Destination::Relay(ip("10.1.0.1")));
    }

    #[test]
    fn proxy_mode_adds_boot_information_without_an_address() {
        let mut s = settings();
        s.proxy = true;
        let h = hosts();
        let mut t = table(&s);
        let (m, dest) = run(
            &request(STRANGER, MessageType::Discover, pxe(7)),
            &s,
            &h,
            &mut t,
        );
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(bootfile(&m), "ipxe-snponly-x86_64.efi");
        assert!(
            matches!(m.opts().get(OptionCode::ClassIdentifier), Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient")
        );
        assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
        assert_eq!(dest, Destination::Broadcast);

        // A plain client is left to the site's own DHCP server.
        let plain = request(STRANGER, MessageType::Discover, vec![]);
        assert!(matches!(
            respond(&plain, &s, &h, &mut t, 0, false).0,
            Outcome::Ignore(_)
        ));

        // The 4011 request is acknowledged back to its source.
        let req = request(STRANGER, MessageType::Request, pxe(7));
        let (outcome, _) = respond(&req, &s, &h, &mut t, 0, true);
        match outcome {
            Outcome::Reply { msg, dest } => {
                assert_eq!(msg.opts().msg_type(), Some(MessageType::Ack));
                assert_eq!(dest, Destination::Source);
            }
            Outcome::Ignore(why) => panic!("{why}"),
        }
    }

    #[test]
    fn release_frees_a_dynamic_lease() {
        let s = settings();
        let h = hosts();
        let mut t = table(&s);
        assert!(t.bind(STRANGER, ip("10.0.0.100"), 1000, 120));
        let mut rel = request(STRANGER, MessageType::Release, vec![]);
        rel.set_ciaddr(ip("10.0.0.100"));
        assert!(matches!(
            respond(&rel, &s, &h, &mut t, 1000, false).0,
            Outcome::Ignore(_)
        ));
        assert_eq!(t.get(STRANGER, 1000), None);
    }

    #[test]
    fn non_requests_and_bootp_are_ignored() {
        let s = settings();
        let mut m = request(NODE, MessageType::Discover, vec![]);
        m.set_opcode(Opcode::BootReply);
        assert!(matches!(
            respond(&m, &s, &hosts(), &mut table(&s), 0, false).0,
            Outcome::Ignore(_)
        ));
        let mut bootp = Message::default();
        bootp.set_opcode(Opcode::BootRequest).set_chaddr(&NODE.0);
        assert!(matches!(
            respond(&bootp, &s, &hosts(), &mut table(&s), 0, false).0,
            Outcome::Ignore(_)
        ));
    }
}
