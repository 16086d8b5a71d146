//! iPXE scripts: `<sysconfdir>/warewulf/ipxe/<template>.ipxe` rendered with
//! Warewulf's iPXE variables. Sites without their own copy of `default.ipxe`
//! or `unconfigured.ipxe` get the ones shipped in `head/share/ipxe/`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use proto::Mac;
use wwtemplate::{RenderEnv, Template, Value};

use super::{HttpError, HttpState, artifact};
use crate::nodedb::MergedNode;
use crate::nodedb::model::NetDev;

const SHIPPED_DEFAULT: &str = include_str!("../../../share/ipxe/default.ipxe");
const SHIPPED_UNCONFIGURED: &str = include_str!("../../../share/ipxe/unconfigured.ipxe");

/// The script for a node nobody has configured: it says so and reboots.
pub fn unconfigured(state: &HttpState, mac: Option<Mac>) -> Result<Response, HttpError> {
    let hwaddr = mac.map(|m| m.to_string()).unwrap_or_default();
    let data = variables(state, None, &hwaddr, "", "unconfigured");
    render(state, "unconfigured", &data)
}

/// The node's own script, from its `ipxe template` (default `default`).
pub fn script(
    state: &HttpState,
    node: &MergedNode,
    mac: Option<Mac>,
) -> Result<Response, HttpError> {
    let name = node
        .conf
        .ipxe
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if name.contains('/') || name.starts_with('.') {
        return Err(HttpError::internal(format!(
            "node {}: invalid ipxe template name {name:?}",
            node.id
        )));
    }
    let hwaddr = mac.map(|m| m.to_string()).unwrap_or_default();
    let kver = artifact::kernel_version(state, node).unwrap_or_default();
    let data = variables(state, Some(node), &hwaddr, &kver, name);
    render(state, name, &data)
}

fn render(state: &HttpState, name: &str, data: &Value) -> Result<Response, HttpError> {
    let path = template_path(state, name);
    let source = match std::fs::read_to_string(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match name {
            "default" => SHIPPED_DEFAULT.to_owned(),
            "unconfigured" => SHIPPED_UNCONFIGURED.to_owned(),
            _ => {
                return Err(HttpError::not_found(format!(
                    "ipxe template {} not found",
                    path.display()
                )));
            }
        },
        Err(e) => {
            return Err(HttpError::internal(format!(
                "reading {}: {e}",
                path.display()
            )));
        }
    };
    let tmpl = Template::parse(&format!("{name}.ipxe"), &source)
        .map_err(|e| HttpError::internal(format!("parsing {}: {e}", path.display())))?;
    let env = RenderEnv::new().with_sysconfdir(state.config.paths.sysconfdir.display().to_string());
    let text = tmpl
        .render_text(data, &env)
        .map_err(|e| HttpError::internal(format!("rendering {}: {e}", path.display())))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

fn template_path(state: &HttpState, name: &str) -> PathBuf {
    state
        .config
        .paths
        .sysconfdir
        .join("warewulf/ipxe")
        .join(format!("{name}.ipxe"))
}

/// Warewulf's iPXE template variables. An unconfigured node gets only
/// `Hwaddr` and the server's address; every other field is empty.
fn variables(
    state: &HttpState,
    node: Option<&MergedNode>,
    hwaddr: &str,
    kernel_version: &str,
    template: &str,
) -> Value {
    let conf = &state.config;
    let ipaddr = bare(conf.ipaddr.as_deref());
    let ipaddr6 = bare(conf.ipaddr6.as_deref());
    let port = conf.warewulf.port.to_string();
    let authority = match (ipaddr.is_empty(), ipaddr6.is_empty()) {
        (true, false) => format!("[{ipaddr6}]:{port}"),
        _ => format!("{ipaddr}:{port}"),
    };
    let empty = String::new();
    let id = node.map_or("", |n| n.id.as_str());
    let c = node.map(|n| &n.conf);
    let field = |f: Option<&String>| f.unwrap_or(&empty).as_str().to_owned();
    let args = c
        .and_then(|c| c.kernel.as_ref())
        .and_then(|k| k.args.as_ref())
        .map(|a| a.join(" "))
        .unwrap_or_default();
    let tags = c.and_then(|c| c.tags.clone()).unwrap_or_default();
    let primary = node.and_then(MergedNode::primary_netdev).unwrap_or("");
    let netdevs: BTreeMap<String, Value> = c
        .and_then(|c| c.netdevs.as_ref())
        .map(|m| {
            m.iter()
                .map(|(name, nd)| (name.clone(), netdev(name, nd, name == primary)))
                .collect()
        })
        .unwrap_or_default();
    let root = c.and_then(|c| c.root.as_deref()).filter(|r| !r.is_empty());
    Value::object()
        .field("Message", "")
        .field("WaitTime", "")
        .field("Hostname", id)
        .field("Fqdn", id)
        .field("Id", id)
        .field("Cluster", field(c.and_then(|c| c.cluster_name.as_ref())))
        .field("ImageName", field(c.and_then(|c| c.image_name.as_ref())))
        .field(
            "ContainerName",
            field(c.and_then(|c| c.image_name.as_ref())),
        )
        // Older (Warewulf 4.4/4.5) templates still name this one.
        .field("KernelOverride", "")
        .field("Ipxe", if node.is_some() { template } else { "" })
        .field("Hwaddr", hwaddr)
        .field("Ipaddr", ipaddr)
        .field("Ipaddr6", ipaddr6)
        .field("Port", port)
        .field("Authority", authority)
        .field("KernelArgs", args)
        .field("KernelVersion", kernel_version)
        .field(
            "Root",
            root.unwrap_or(if node.is_some() { "initramfs" } else { "" }),
        )
        .field("TLS", conf.warewulf.tls)
        .field("Tags", tags)
        .field("NetDevs", Value::map(netdevs))
        .build()
}

/// An address without its `/prefix`.
fn bare(addr: Option<&str>) -> String {
    let a = addr.unwrap_or_default();
    a.split_once('/').map_or(a, |(ip, _)| ip).trim().to_owned()
}

/// One network device as Warewulf's `NetDev` appears to templates.
fn netdev(name: &str, nd: &NetDev, primary: bool) -> Value {
    let s = |v: &Option<String>| v.clone().unwrap_or_default();
    Value::object()
        .field("Id", name)
        .field("Type", s(&nd.kind))
        .field(
            "OnBoot",
            Value::wwbool(nd.onboot.as_deref().unwrap_or_default()),
        )
        .field("Device", s(&nd.device))
        .field("Hwaddr", s(&nd.hwaddr))
        .field("Ipaddr", s(&nd.ipaddr))
        .field("Netmask", s(&nd.netmask))
        .field("Gateway", s(&nd.gateway))
        .field("Ipaddr6", s(&nd.ipaddr6))
        .field("Prefixlen6", s(&nd.prefixlen6))
        .field("Gateway6", s(&nd.gateway6))
        .field("MTU", s(&nd.mtu))
        .field("Primary", primary)
        .field("Tags", nd.tags.clone().unwrap_or_default())
        .build()
}
