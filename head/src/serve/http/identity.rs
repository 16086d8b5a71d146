//! Who is asking: the `wwid` (a MAC) from the path, `?wwid=`, or, when the
//! request carries neither, the kernel's neighbour table entry for the
//! request's source address.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use proto::Mac;

use super::{HttpError, NodeRequest};

/// The kernel's IPv4 neighbour table.
pub const PROC_NET_ARP: &str = "/proc/net/arp";

/// The node identity of `req`; `Ok(None)` when nothing identifies it.
/// A `wwid` that is given but is not a MAC is a bad request.
pub fn wwid(req: &NodeRequest, arp_table: &Path) -> Result<Option<Mac>, HttpError> {
    let given = req
        .path_wwid
        .as_deref()
        .filter(|s| !s.is_empty())
        .or_else(|| req.param(proto::QUERY_WWID));
    if let Some(text) = given {
        return text
            .trim()
            .parse::<Mac>()
            .map(Some)
            .map_err(|_| HttpError::bad_request(format!("wwid {text:?} is not a MAC address")));
    }
    let Some(IpAddr::V4(ip)) = req.peer.map(|p| p.ip().to_canonical()) else {
        return Ok(None);
    };
    Ok(std::fs::read_to_string(arp_table)
        .ok()
        .and_then(|table| arp_lookup(&table, ip)))
}

/// Finds `ip` in `/proc/net/arp` text; incomplete entries (flags 0 or an
/// all-zero address) do not count.
pub fn arp_lookup(table: &str, ip: Ipv4Addr) -> Option<Mac> {
    table.lines().skip(1).find_map(|line| {
        let mut cols = line.split_whitespace();
        let addr: Ipv4Addr = cols.next()?.parse().ok()?;
        let _hw_type = cols.next()?;
        let flags = u32::from_str_radix(cols.next()?.trim_start_matches("0x"), 16).ok()?;
        let mac: Mac = cols.next()?.parse().ok()?;
        (addr == ip && flags != 0 && mac != Mac([0; 6])).then_some(mac)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
10.0.0.5         0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0
10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.7         0x1         0x2         AA:BB:CC:DD:EE:07     *        eth1
";

    #[test]
    fn arp_finds_complete_entries_only() {
        let find = |ip: &str| arp_lookup(TABLE, ip.parse().unwrap());
        assert_eq!(find("10.0.0.5"), Some("aa:bb:cc:dd:ee:01".parse().unwrap()));
        assert_eq!(find("10.0.0.7"), Some("aa:bb:cc:dd:ee:07".parse().unwrap()));
        assert_eq!(find("10.0.0.6"), None);
        assert_eq!(find("10.0.0.8"), None);
    }
}
