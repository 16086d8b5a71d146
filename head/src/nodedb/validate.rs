//! Checks run before any write of `nodes.conf`: malformed MAC, IP and
//! netmask values, duplicate MAC or IP addresses across nodes, unknown
//! profiles and profile cycles. Each problem names the node or profile and
//! the field; [`locate`] adds the line and column when the input was a file.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use super::merge::merge_all;
use super::model::{NodeConf, NodesConf};

/// Whether a problem sits in a node or a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Node,
    Profile,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Owner::Node => "node",
            Owner::Profile => "profile",
        })
    }
}

/// One validation failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub owner: Owner,
    pub name: String,
    /// The field as written in `nodes.conf`, e.g. `network devices.default.hwaddr`.
    pub field: String,
    pub message: String,
    /// Key path in the YAML document, used to find line and column.
    pub path: Vec<String>,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let (Some(l), Some(c)) = (self.line, self.column) {
                write!(f, ":{l}:{c}")?;
            }
            f.write_str(": ")?;
        }
        write!(
            f,
            "{} {}: field {:?}: {}",
            self.owner, self.name, self.field, self.message
        )
    }
}

impl Problem {
    fn new(owner: Owner, name: &str, path: &[&str], message: String) -> Self {
        let top = match owner {
            Owner::Node => "nodes",
            Owner::Profile => "nodeprofiles",
        };
        let mut full = vec![top.to_owned(), name.to_owned()];
        full.extend(path.iter().map(|s| (*s).to_owned()));
        Self {
            owner,
            name: name.to_owned(),
            field: path.join("."),
            message,
            path: full,
            file: None,
            line: None,
            column: None,
        }
    }

    /// Attaches the file name and, when found in `text`, line and column.
    pub fn located(mut self, file: &std::path::Path, text: &str) -> Self {
        let keys: Vec<&str> = self.path.iter().map(String::as_str).collect();
        if let Some((l, c)) = locate(text, &keys) {
            self.line = Some(l);
            self.column = Some(c);
        }
        self.file = Some(file.to_owned());
        self
    }
}

/// Parses a MAC address the way Go's `net.ParseMAC` does for the common
/// forms: 6, 8 or 20 octets separated by `:` or `-`, or dotted quads of hex.
pub fn parse_mac(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    let octets: Vec<&str> = if s.contains(':') {
        s.split(':').collect()
    } else if s.contains('-') {
        s.split('-').collect()
    } else if s.contains('.') {
        let groups: Vec<&str> = s.split('.').collect();
        if groups.iter().any(|g| g.len() != 4) {
            return None;
        }
        return groups
            .iter()
            .flat_map(|g| [&g[..2], &g[2..]])
            .map(|o| u8::from_str_radix(o, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .filter(|v| matches!(v.len(), 6 | 8 | 20));
    } else {
        return None;
    };
    if !matches!(octets.len(), 6 | 8 | 20) || octets.iter().any(|o| o.len() != 2) {
        return None;
    }
    octets
        .iter()
        .map(|o| u8::from_str_radix(o, 16).ok())
        .collect()
}

/// A contiguous IPv4 netmask.
pub fn parse_netmask(s: &str) -> Option<Ipv4Addr> {
    let m: Ipv4Addr = s.trim().parse().ok()?;
    let bits = u32::from(m);
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(m)
}

/// An IP address; IPv6 fields may carry a `/prefix`.
fn parse_ip(s: &str, allow_prefix: bool) -> Option<IpAddr> {
    let s = s.trim();
    if allow_prefix && let Some((a, p)) = s.split_once('/') {
        p.parse::<u8>().ok()?;
        return a.parse().ok();
    }
    s.parse().ok()
}

fn check_entry(owner: Owner, name: &str, c: &NodeConf, out: &mut Vec<Problem>) {
    let mut bad = |path: &[&str], what: &str, value: &str| {
        out.push(Problem::new(
            owner,
            name,
            path,
            format!("malformed {what} {value:?}"),
        ));
    };
    // (path, what, value, is it well-formed)
    let mut check = |path: &[&str], what: &str, value: &Option<String>, ok: fn(&str) -> bool| {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty())
            && !ok(v)
        {
            bad(path, what, v);
        }
    };
    let ip = |v: &str| parse_ip(v, false).is_some();
    let ip6 = |v: &str| parse_ip(v, true).is_some();
    let mask = |v: &str| parse_netmask(v).is_some();
    for (dev, d) in c.netdevs.iter().flatten() {
        let p = |k: &'static str| ["network devices", dev.as_str(), k];
        check(&p("hwaddr"), "MAC address", &d.hwaddr, |v| {
            parse_mac(v).is_some()
        });
        check(&p("ipaddr"), "IP address", &d.ipaddr, ip);
        check(&p("gateway"), "IP address", &d.gateway, ip);
        check(&p("ipaddr6"), "IP address", &d.ipaddr6, ip6);
        check(&p("gateway6"), "IP address", &d.gateway6, ip6);
        check(&p("netmask"), "netmask", &d.netmask, mask);
        check(&p("mtu"), "MTU", &d.mtu, |v| {
            v.trim().parse::<u32>().is_ok()
        });
        check(&p("prefixlen6"), "IPv6 prefix length", &d.prefixlen6, |v| {
            v.trim().parse::<u8>().is_ok_and(|n| n <= 128)
        });
    }
    if let Some(i) = &c.ipmi {
        check(&["ipmi", "ipaddr"], "IP address", &i.ipaddr, ip);
        check(&["ipmi", "gateway"], "IP address", &i.gateway, ip);
        check(&["ipmi", "netmask"], "netmask", &i.netmask, mask);
    }
}

fn check_profile_refs(
    owner: Owner,
    name: &str,
    c: &NodeConf,
    profiles: &BTreeMap<String, NodeConf>,
    out: &mut Vec<Problem>,
) {
    for p in c.profiles.iter().flatten() {
        if p.starts_with('~') || p.is_empty() {
            continue;
        }
        if !profiles.contains_key(p) {
            out.push(Problem::new(
                owner,
                name,
                &["profiles"],
                format!("unknown profile {p:?}"),
            ));
        }
    }
}

/// Finds profile cycles (`a → b → a`); one problem per profile on a cycle.
fn check_cycles(profiles: &BTreeMap<String, NodeConf>, out: &mut Vec<Problem>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit<'a>(
        id: &'a str,
        profiles: &'a BTreeMap<String, NodeConf>,
        marks: &mut HashMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        out: &mut Vec<Problem>,
    ) {
        match marks.get(id) {
            Some(Mark::Done) => return,
            Some(Mark::Active) => {
                let start = stack.iter().position(|s| *s == id).unwrap_or(0);
                let mut cycle: Vec<&str> = stack[start..].to_vec();
                cycle.push(id);
                out.push(Problem::new(
                    Owner::Profile,
                    id,
                    &["profiles"],
                    format!("profile cycle {}", cycle.join(" -> ")),
                ));
                return;
            }
            None => {}
        }
        let Some(p) = profiles.get(id) else { return };
        marks.insert(id, Mark::Active);
        stack.push(id);
        for child in p.profiles.iter().flatten() {
            if !child.starts_with('~') {
                visit(child, profiles, marks, stack, out);
            }
        }
        stack.pop();
        marks.insert(id, Mark::Done);
    }
    let mut marks = HashMap::new();
    for id in profiles.keys() {
        visit(id, profiles, &mut marks, &mut Vec::new(), out);
    }
}

/// Every problem in `conf`, nodes first, in name order.
pub fn validate(conf: &NodesConf) -> Vec<Problem> {
    let mut out = Vec::new();
    let profiles = conf.profiles();
    for (name, n) in conf.nodes() {
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            out.push(Problem::new(
                Owner::Node,
                name,
                &[],
                "invalid node name".into(),
            ));
        }
        check_entry(Owner::Node, name, n, &mut out);
        check_profile_refs(Owner::Node, name, n, profiles, &mut out);
    }
    for (name, p) in profiles {
        check_entry(Owner::Profile, name, p, &mut out);
        check_profile_refs(Owner::Profile, name, p, profiles, &mut out);
    }
    check_cycles(profiles, &mut out);
    check_duplicates(conf, &mut out);
    out
}

/// Duplicate hardware or IP addresses between nodes (after profile merge).
fn check_duplicates(conf: &NodesConf, out: &mut Vec<Problem>) {
    let mut macs: HashMap<Vec<u8>, (String, String)> = HashMap::new();
    let mut ips: HashMap<IpAddr, (String, String)> = HashMap::new();
    for node in merge_all(conf) {
        for (dev, d) in node.conf.netdevs.iter().flatten() {
            if let Some(mac) = d.hwaddr.as_deref().and_then(parse_mac) {
                match macs.get(&mac) {
                    Some((other, _)) if *other != node.id => out.push(Problem::new(
                        Owner::Node,
                        &node.id,
                        &["network devices", dev, "hwaddr"],
                        format!(
                            "MAC address {} is already used by node {other}",
                            d.hwaddr.as_deref().unwrap_or_default()
                        ),
                    )),
                    Some(_) => {}
                    None => {
                        macs.insert(mac, (node.id.clone(), dev.clone()));
                    }
                }
            }
            if let Some(ip) = d.ipaddr.as_deref().and_then(|v| parse_ip(v, false)) {
                match ips.get(&ip) {
                    Some((other, _)) if *other != node.id => out.push(Problem::new(
                        Owner::Node,
                        &node.id,
                        &["network devices", dev, "ipaddr"],
                        format!("IP address {ip} is already used by node {other}"),
                    )),
                    Some(_) => {}
                    None => {
                        ips.insert(ip, (node.id.clone(), dev.clone()));
                    }
                }
            }
        }
    }
}

/// Finds the line and column (1-based) of the last key of `path` in a
/// block-style YAML text such as `nodes.conf`. Flow-style input is not
/// searched; the caller then reports the problem without a position.
pub fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let mut min_indent: isize = -1;
    let mut found: Option<(usize, usize)> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    for key in path {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = (line.len() - trimmed.len()) as isize;
            if indent <= min_indent {
                // Left the parent block.
                break;
            }
            let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
            let unquoted = key_of(body);
            if unquoted.as_deref() == Some(*key) {
                hit = Some((i, indent));
                break;
            }
        }
        let (i, indent) = hit?;
        found = Some((i + 1, indent as usize + 1));
        min_indent = indent;
        start = i + 1;
    }
    found
}

/// The key of a `key: value` line, without quotes.
fn key_of(body: &str) -> Option<String> {
    let (k, _) = if let Some(rest) = body.strip_prefix('"') {
        let end = rest.find('"')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned());
    } else if let Some(rest) = body.strip_prefix('\'') {
        let end = rest.find('\'')?;
        return rest[end + 1..]
            .trim_start()
            .starts_with(':')
            .then(|| rest[..end].to_owned());
    } else {
        let pos = body
            .find(": ")
            .or_else(|| body.strip_suffix(':').map(|b| b.len()))?;
        (&body[..pos], ())
    };
    Some(k.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<Problem> {
        validate(&serde_norway::from_str(yaml).unwrap())
    }

    #[test]
    fn macs() {
        assert!(parse_mac("00:11:22:aa:BB:ff").is_some());
        assert!(parse_mac("00-11-22-33-44-55").is_some());
        assert!(parse_mac("0011.2233.4455").is_some());
        for bad in [
            "",
            "00:11:22:33:44",
            "zz:11:22:33:44:55",
            "001122334455",
            "0:1:2:3:4:5",
        ] {
            assert!(parse_mac(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn netmasks() {
        assert!(parse_netmask("255.255.255.0").is_some());
        assert!(parse_netmask("0.0.0.0").is_some());
        assert!(parse_netmask("255.0.255.0").is_none());
        assert!(parse_netmask("24").is_none());
    }

    #[test]
    fn finds_each_kind_of_problem() {
        let p = problems(
            "nodeprofiles:\n  a:\n    profiles: [b]\n  b:\n    profiles: [a]\nnodes:\n  n1:\n    profiles: [ghost]\n    network devices:\n      default:\n        hwaddr: zz\n        ipaddr: 10.0.0.300\n        netmask: 255.0.255.0\n",
        );
        let text: Vec<String> = p.iter().map(ToString::to_string).collect();
        let has = |s: &str| text.iter().any(|t| t.contains(s));
        assert!(
            has("node n1: field \"network devices.default.hwaddr\": malformed MAC"),
            "{text:?}"
        );
        assert!(
            has("node n1: field \"network devices.default.ipaddr\": malformed IP"),
            "{text:?}"
        );
        assert!(
            has("field \"network devices.default.netmask\": malformed netmask"),
            "{text:?}"
        );
        assert!(
            has("node n1: field \"profiles\": unknown profile \"ghost\""),
            "{text:?}"
        );
        assert!(has("profile cycle a -> b -> a"), "{text:?}");
    }

    #[test]
    fn duplicates_across_nodes() {
        let p = problems(
            "nodes:\n  n1:\n    network devices:\n      d:\n        hwaddr: 00:00:00:00:00:01\n        ipaddr: 10.0.0.1\n  n2:\n    network devices:\n      d:\n        hwaddr: 00:00:00:00:00:01\n        ipaddr: 10.0.0.1\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].to_string().contains("already used by node n1"));
    }

    #[test]
    fn locate_finds_nested_keys() {
        let text = "nodeprofiles: {}\nnodes:\n  n0:\n    comment: x\n  n1:\n    network devices:\n      default:\n        hwaddr: zz\n";
        assert_eq!(
            locate(
                text,
                &["nodes", "n1", "network devices", "default", "hwaddr"]
            ),
            Some((8, 9))
        );
        assert_eq!(locate(text, &["nodes", "n0", "network devices"]), None);
        assert_eq!(
            locate("\"nodes\":\n  'a b':\n    x: 1\n", &["nodes", "a b", "x"]),
            Some((3, 5))
        );
    }
}
