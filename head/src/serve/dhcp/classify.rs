//! What kind of boot client sent a request: PXE firmware (BIOS or UEFI, by
//! option 93), iPXE (user class `iPXE`), UEFI HTTP boot (vendor class
//! `HTTPClient`), or a plain DHCP client such as a booted node's OS.

use dhcproto::v4::{DhcpOption, Message, OptionCode};

/// The boot stage a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientKind {
    /// Firmware PXE (vendor class `PXEClient`); `arch` from option 93.
    Pxe { arch: u16 },
    /// iPXE, already running: gets the URL of its boot script.
    Ipxe,
    /// UEFI HTTP boot (vendor class `HTTPClient`): gets an HTTP URL.
    HttpClient { arch: u16 },
    /// Anything else: an address and nothing to boot.
    Plain,
}

/// Reads the boot-relevant options of a request.
pub fn classify(msg: &Message) -> ClientKind {
    let opts = msg.opts();
    // iPXE sends its user class as the bare string, not RFC 3004's
    // length-prefixed list; accept both.
    if let Some(DhcpOption::UserClass(uc)) = opts.get(OptionCode::UserClass)
        && (uc == b"iPXE" || uc.get(1..) == Some(b"iPXE".as_slice()) && uc[0] == 4)
    {
        return ClientKind::Ipxe;
    }
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => u16::from(*a),
        _ => 0,
    };
    match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(vc)) if vc.starts_with(b"PXEClient") => {
            ClientKind::Pxe { arch }
        }
        Some(DhcpOption::ClassIdentifier(vc)) if vc.starts_with(b"HTTPClient") => {
            ClientKind::HttpClient { arch }
        }
        _ => ClientKind::Plain,
    }
}

#[cfg(test)]
mod tests {
    use dhcproto::v4::{Architecture, MessageType};

    use super::*;

    fn req(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::default();
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    #[test]
    fn kinds() {
        let pxe = |vc: &str, arch: u16| {
            vec![
                DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()),
                DhcpOption::ClientSystemArchitecture(Architecture::from(arch)),
            ]
        };
        let cases = [
            (
                pxe("PXEClient:Arch:00000:UNDI:002001", 0),
                ClientKind::Pxe { arch: 0 },
            ),
            (
                pxe("PXEClient:Arch:00007:UNDI:003016", 7),
                ClientKind::Pxe { arch: 7 },
            ),
            (
                pxe("HTTPClient:Arch:00016:UNDI:003001", 16),
                ClientKind::HttpClient { arch: 16 },
            ),
            (
                {
                    let mut o = pxe("PXEClient:Arch:00007:UNDI:003016", 7);
                    o.push(DhcpOption::UserClass(b"iPXE".to_vec()));
                    o
                },
                ClientKind::Ipxe,
            ),
            (
                vec![DhcpOption::UserClass(b"\x04iPXE".to_vec())],
                ClientKind::Ipxe,
            ),
            (
                vec![DhcpOption::ClassIdentifier(b"udhcp 1.36".to_vec())],
                ClientKind::Plain,
            ),
            (vec![], ClientKind::Plain),
        ];
        for (opts, want) in cases {
            assert_eq!(classify(&req(opts.clone())), want, "{opts:?}");
        }
    }
}
