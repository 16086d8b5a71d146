//! The per-node boot timeline: the last stage each node reached, what it was
//! sent, from where and when. Kept in memory, like Warewulf's; `GET /status`
//! renders it in Warewulf's JSON layout (`{"nodes": {"n1": {...}}}`) with
//! Ironwulf's extra fields (`detail`, `bytes sent`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Longest stage name a node may report.
const MAX_STAGE: usize = 64;
/// Longest detail text kept from a report.
const MAX_DETAIL: usize = 1024;

/// One node's last known state.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NodeStatus {
    #[serde(rename = "node name")]
    pub node_name: String,
    pub stage: String,
    /// File name of the last artifact sent (Warewulf's `sent`).
    pub sent: String,
    pub ipaddr: String,
    /// Seconds since the Unix epoch; 0 = never seen.
    #[serde(rename = "last seen")]
    pub last_seen: u64,
    /// Sum of the body bytes answered to this node since the server started.
    #[serde(rename = "bytes sent")]
    pub bytes_sent: u64,
    /// Free text from the node's last report.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The body of `POST /status/{wwid}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    pub stage: String,
    #[serde(default)]
    pub detail: Option<String>,
}

impl Report {
    /// Rejects empty or oversized stages and control characters.
    pub fn validate(&self) -> Result<(), String> {
        let stage = self.stage.trim();
        if stage.is_empty() || stage.len() > MAX_STAGE {
            return Err(format!("stage must be 1 to {MAX_STAGE} characters"));
        }
        if stage.chars().any(char::is_control) {
            return Err("stage must not contain control characters".to_owned());
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct AllStatus<'a> {
    nodes: BTreeMap<&'a str, NodeStatus>,
}

/// Status of every node that has talked to the server.
#[derive(Default)]
pub struct StatusTable {
    nodes: Mutex<HashMap<String, NodeStatus>>,
}

impl StatusTable {
    /// The server sent (or refused) `sent` to `node` at `stage`.
    pub fn record(&self, node: &str, stage: &str, sent: &str, ipaddr: &str, bytes: u64) {
        let mut map = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(node.to_owned()).or_default();
        entry.node_name = node.to_owned();
        entry.stage = stage.to_owned();
        entry.sent = sent.to_owned();
        entry.ipaddr = ipaddr.to_owned();
        entry.last_seen = crate::serve::unix_now();
        entry.bytes_sent = entry.bytes_sent.saturating_add(bytes);
        entry.detail.clear();
    }

    /// A node reported reaching a stage.
    pub fn report(&self, node: &str, report: &Report, ipaddr: &str) {
        let mut map = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(node.to_owned()).or_default();
        entry.node_name = node.to_owned();
        entry.stage = report.stage.trim().to_owned();
        entry.ipaddr = ipaddr.to_owned();
        entry.last_seen = crate::serve::unix_now();
        let detail = report.detail.as_deref().unwrap_or_default();
        entry.detail = detail
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_DETAIL)
            .collect();
    }

    /// `{"nodes": {...}}` for `nodes` (all known nodes, seen or not).
    pub fn to_json(&self, nodes: &[&str]) -> String {
        let map = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let all = AllStatus {
            nodes: nodes
                .iter()
                .map(|id| {
                    let st = map.get(*id).cloned().unwrap_or_else(|| NodeStatus {
                        node_name: (*id).to_owned(),
                        ..NodeStatus::default()
                    });
                    (*id, st)
                })
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&all).unwrap_or_else(|_| "{}".to_owned());
        text.push('\n');
        text
    }
}
