//! Who this node is: its `wwid` (a MAC) and its asset key.
//!
//! The `wwid` comes from `wwid=` on the kernel command line, as Warewulf's
//! iPXE script sets it (`wwid=[eth0]` names an interface whose address is
//! used), else from the interface that holds the IPv4 default route. The
//! asset key is the SMBIOS chassis asset tag, as Warewulf reads it.

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};
use proto::Mac;

const PROC_CMDLINE: &str = "/proc/cmdline";
const PROC_NET_ROUTE: &str = "/proc/net/route";
const SYS_CLASS_NET: &str = "/sys/class/net";
const DMI_ASSET_TAG: &str = "/sys/class/dmi/id/chassis_asset_tag";

/// The node identity: `--wwid`, else `/proc/cmdline`, else the default route.
pub fn wwid(flag: Option<&str>) -> anyhow::Result<Mac> {
    if let Some(s) = flag {
        return s.parse().with_context(|| format!("--wwid {s:?}"));
    }
    if let Ok(cmdline) = fs::read_to_string(PROC_CMDLINE)
        && let Some(w) = cmdline_wwid(&cmdline)
    {
        if let Some(iface) = w.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            return interface_mac(iface);
        }
        return w
            .parse()
            .with_context(|| format!("wwid={w} on the kernel command line"));
    }
    let route =
        fs::read_to_string(PROC_NET_ROUTE).with_context(|| format!("reading {PROC_NET_ROUTE}"))?;
    match default_route_interface(&route) {
        Some(iface) => interface_mac(&iface),
        None => {
            bail!("no wwid= on the kernel command line and no IPv4 default route: pass --wwid MAC")
        }
    }
}

/// The value of the last `wwid=` on a kernel command line.
pub fn cmdline_wwid(cmdline: &str) -> Option<&str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|p| p.strip_prefix("wwid="))
        .rfind(|v| !v.is_empty())
}

/// The interface of the first IPv4 default route in `/proc/net/route`.
pub fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_ascii_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        let up = f
            .get(3)
            .and_then(|x| u32::from_str_radix(x, 16).ok())
            .is_some_and(|fl| fl & 1 != 0);
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" && up).then(|| f[0].to_owned())
    })
}

fn interface_mac(iface: &str) -> anyhow::Result<Mac> {
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        bail!("invalid interface name {iface:?}");
    }
    let path = Path::new(SYS_CLASS_NET).join(iface).join("address");
    let s = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("address of interface {iface}"))
}

/// `--asset-key`, else the chassis asset tag (spaces as `_`, as Warewulf
/// sends it); `None` when neither is available.
pub fn asset_key(flag: Option<&str>) -> Option<String> {
    if let Some(k) = flag {
        return Some(k.to_owned()).filter(|k| !k.is_empty());
    }
    let tag = fs::read_to_string(DMI_ASSET_TAG).ok()?;
    let tag = tag.trim().replace(' ', "_");
    (!tag.is_empty()).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_wwid_table() {
        for (line, want) in [
            (
                "quiet wwid=52:54:00:aa:bb:cc console=ttyS0\n",
                Some("52:54:00:aa:bb:cc"),
            ),
            ("wwid=[eth0]", Some("[eth0]")),
            ("wwid= quiet", None),
            ("wwid=a wwid=b", Some("b")),
            ("xwwid=a", None),
            ("", None),
        ] {
            assert_eq!(cmdline_wwid(line), want, "{line:?}");
        }
    }

    #[test]
    fn default_route_from_proc_net_route() {
        let table = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
";
        assert_eq!(default_route_interface(table).as_deref(), Some("eth0"));
        let none = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth1\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(default_route_interface(none), None);
    }
}
