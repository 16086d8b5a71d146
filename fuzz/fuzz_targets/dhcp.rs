//! Fuzzes DHCP decoding and the responder: any datagram must be answered,
//! ignored or rejected, never panic (a packet of death would stop
//! provisioning for the whole cluster).
#![no_main]

use std::sync::OnceLock;

use dhcproto::Decodable;
use dhcproto::v4::Message;
use head::config::Config;
use head::serve::dhcp::classify::classify;
use head::serve::dhcp::leases::LeaseTable;
use head::serve::dhcp::respond::respond;
use head::serve::dhcp::server::{hosts_from_nodes, settings_from_config};
use head::serve::dhcp::{DhcpSettings, Hosts};
use libfuzzer_sys::fuzz_target;

const CONF: &str = "ipaddr: 10.0.0.1\nnetmask: 255.255.255.0\ndhcp:\n  range start: 10.0.0.100\n  range end: 10.0.0.110\n";

fn site() -> &'static (DhcpSettings, Hosts) {
    static SITE: OnceLock<(DhcpSettings, Hosts)> = OnceLock::new();
    SITE.get_or_init(|| {
        let conf = Config::parse(CONF, std::path::Path::new("fuzz.conf")).expect("fixed config");
        let settings = settings_from_config(&conf).expect("fixed config");
        (settings, hosts_from_nodes(&[]))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::from_bytes(data) else {
        return;
    };
    let _ = classify(&msg);
    let (settings, hosts) = site();
    let mut leases = LeaseTable::new(settings.range, Vec::new());
    let _ = respond(&msg, settings, hosts, &mut leases, 1_000, false);
    let _ = respond(&msg, settings, hosts, &mut leases, 1_001, true);
});
