//! `wwctl node`: add, set, unset, list, delete, edit, export and import
//! nodes in `nodes.conf`, with Warewulf's flag names. Field flags shared with
//! `wwctl profile` live here too ([`FieldArgs`], [`UnsetArgs`]).

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, IsTerminal, Write as _};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Args, Subcommand};

use super::Context;
use super::output::{FormatArgs, Table};
use crate::nodedb::hostlist;
use crate::nodedb::merge::{MergedNode, field_sources};
use crate::nodedb::model::{NodeConf, NodesConf, is_unset_value, parse_bool};
use crate::nodedb::store::{self, NodeDb, NodeDbError};
use crate::nodedb::validate::{Owner, Problem, validate};

/// Manage nodes.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Add new nodes (NODENAME may be a hostlist such as n[01-10]).
    #[command(visible_alias = "new")]
    Add(AddArgs),
    /// Set fields of nodes matching PATTERN.
    #[command(visible_alias = "modify")]
    Set(SetArgs),
    /// Clear fields of nodes matching PATTERN.
    Unset(UnsetCmd),
    /// List nodes and their settings.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Delete nodes matching PATTERN.
    #[command(visible_alias = "rm", alias = "del", alias = "remove")]
    Delete(DeleteArgs),
    /// Edit nodes as YAML in $EDITOR.
    Edit(EditArgs),
    /// Print nodes as YAML, as `node import` reads them.
    Export(ExportArgs),
    /// Add or replace nodes from a YAML file.
    Import(ImportArgs),
    /// Connect to a node's serial console (IPMI Serial-over-LAN).
    Console(super::power::ConsoleArgs),
    /// Show a node's IPMI sensors.
    Sensors(super::power::SensorsArgs),
}

/// Flags that set fields of a node or a profile.
#[derive(Debug, Clone, Default, Args)]
pub struct FieldArgs {
    /// Arbitrary comment.
    #[arg(long)]
    pub comment: Option<String>,
    /// Cluster group.
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<String>,
    /// Image name.
    #[arg(long, visible_alias = "container")]
    pub image: Option<String>,
    /// iPXE template name.
    #[arg(long)]
    pub ipxe: Option<String>,
    /// Runtime overlays (comma separated).
    #[arg(
        short = 'R',
        long = "runtime-overlays",
        alias = "runtime",
        value_delimiter = ','
    )]
    pub runtime_overlays: Option<Vec<String>>,
    /// System overlays (comma separated).
    #[arg(
        short = 'O',
        long = "system-overlays",
        alias = "wwinit",
        value_delimiter = ','
    )]
    pub system_overlays: Option<Vec<String>>,
    /// Kernel version.
    #[arg(short = 'K', long = "kernelversion", alias = "kerneloverride")]
    pub kernel_version: Option<String>,
    /// Kernel arguments (comma separated).
    #[arg(
        short = 'A',
        long = "kernelargs",
        value_delimiter = ',',
        allow_hyphen_values = true
    )]
    pub kernel_args: Option<Vec<String>>,
    /// Init process to boot the image.
    #[arg(short = 'i', long)]
    pub init: Option<String>,
    /// Root file system (initramfs, tmpfs, ramfs or a device).
    #[arg(long)]
    pub root: Option<String>,
    /// Profiles (comma separated; ~name removes an inherited profile).
    #[arg(short = 'P', long = "profile", value_delimiter = ',')]
    pub profiles: Option<Vec<String>>,
    /// Primary network device name.
    #[arg(short = 'p', long = "primarynet")]
    pub primarynet: Option<String>,
    /// Add tags (key=value, comma separated).
    #[arg(long = "tagadd", value_delimiter = ',')]
    pub tagadd: Vec<String>,
    /// Delete tags by key.
    #[arg(long = "tagdel", value_delimiter = ',')]
    pub tagdel: Vec<String>,

    /// IPMI user name.
    #[arg(long = "ipmiuser")]
    pub ipmiuser: Option<String>,
    /// IPMI password.
    #[arg(long = "ipmipass")]
    pub ipmipass: Option<String>,
    /// IPMI address (incremented per node by `node add`).
    #[arg(long = "ipmiaddr")]
    pub ipmiaddr: Option<String>,
    /// IPMI netmask.
    #[arg(long = "ipminetmask", alias = "ipmimask")]
    pub ipminetmask: Option<String>,
    /// IPMI gateway.
    #[arg(long = "ipmigateway")]
    pub ipmigateway: Option<String>,
    /// IPMI port.
    #[arg(long = "ipmiport")]
    pub ipmiport: Option<String>,
    /// IPMI interface (lan, lanplus).
    #[arg(long = "ipmiinterface")]
    pub ipmiinterface: Option<String>,
    /// IPMI escape character.
    #[arg(long = "ipmiescapechar")]
    pub ipmiescapechar: Option<String>,
    /// Write the IPMI configuration at boot (true/false).
    #[arg(long = "ipmiwrite")]
    pub ipmiwrite: Option<String>,
    /// IPMI command template.
    #[arg(long = "ipmitemplate")]
    pub ipmitemplate: Option<String>,
    /// Add IPMI tags (key=value).
    #[arg(long = "ipmitagadd", value_delimiter = ',')]
    pub ipmitagadd: Vec<String>,
    /// Delete IPMI tags by key.
    #[arg(long = "ipmitagdel", value_delimiter = ',')]
    pub ipmitagdel: Vec<String>,

    /// Network the network flags apply to.
    #[arg(long = "netname", default_value = "default")]
    pub netname: String,
    /// Device name of the network (e.g. eth0).
    #[arg(short = 'N', long = "netdev")]
    pub netdev: Option<String>,
    /// Hardware (MAC) address.
    #[arg(short = 'H', long = "hwaddr")]
    pub hwaddr: Option<String>,
    /// IPv4 address (incremented per node by `node add`).
    #[arg(short = 'I', long = "ipaddr")]
    pub ipaddr: Option<String>,
    /// IPv4 netmask.
    #[arg(short = 'M', long = "netmask")]
    pub netmask: Option<String>,
    /// IPv4 gateway.
    #[arg(short = 'G', long = "gateway")]
    pub gateway: Option<String>,
    /// IPv6 address.
    #[arg(long = "ipaddr6")]
    pub ipaddr6: Option<String>,
    /// IPv6 prefix length.
    #[arg(long = "prefixlen6")]
    pub prefixlen6: Option<String>,
    /// IPv6 gateway.
    #[arg(long = "gateway6")]
    pub gateway6: Option<String>,
    /// MTU.
    #[arg(long)]
    pub mtu: Option<String>,
    /// Device type (ethernet, infiniband, ...).
    #[arg(short = 'T', long = "type")]
    pub kind: Option<String>,
    /// Bring the device up at boot (true/false).
    #[arg(long)]
    pub onboot: Option<String>,
    /// Add network tags (key=value).
    #[arg(long = "nettagadd", value_delimiter = ',')]
    pub nettagadd: Vec<String>,
    /// Delete network tags by key.
    #[arg(long = "nettagdel", value_delimiter = ',')]
    pub nettagdel: Vec<String>,
    /// Delete the named network device.
    #[arg(long = "netdel")]
    pub netdel: Vec<String>,
}

/// Flags only nodes have.
#[derive(Debug, Clone, Default, Args)]
pub struct NodeOnlyArgs {
    /// Let the node be discovered on the network (true/false).
    #[arg(short = 'e', long, num_args = 0..=1, default_missing_value = "true")]
    pub discoverable: Option<String>,
    /// Asset tag (key) the node must present.
    #[arg(long)]
    pub asset: Option<String>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Node names or hostlists (n[01-04]).
    #[arg(required = true, value_name = "NODENAME")]
    pub names: Vec<String>,
    #[command(flatten)]
    pub fields: FieldArgs,
    #[command(flatten)]
    pub node: NodeOnlyArgs,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// Nodes to change (names, hostlists or globs).
    #[arg(value_name = "PATTERN", required_unless_present = "all")]
    pub patterns: Vec<String>,
    /// Apply to all nodes.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub fields: FieldArgs,
    #[command(flatten)]
    pub node: NodeOnlyArgs,
}

/// Which fields `unset` clears.
#[derive(Debug, Clone, Default, Args)]
pub struct UnsetArgs {
    /// Clear the comment.
    #[arg(long)]
    pub comment: bool,
    /// Clear the cluster.
    #[arg(long)]
    pub cluster: bool,
    /// Clear the image.
    #[arg(long, visible_alias = "container")]
    pub image: bool,
    /// Clear the iPXE template.
    #[arg(long)]
    pub ipxe: bool,
    /// Clear the runtime overlays.
    #[arg(long = "runtime-overlays")]
    pub runtime_overlays: bool,
    /// Clear the system overlays.
    #[arg(long = "system-overlays")]
    pub system_overlays: bool,
    /// Clear the kernel version.
    #[arg(long = "kernelversion")]
    pub kernel_version: bool,
    /// Clear the kernel arguments.
    #[arg(long = "kernelargs")]
    pub kernel_args: bool,
    /// Clear init.
    #[arg(long)]
    pub init: bool,
    /// Clear root.
    #[arg(long)]
    pub root: bool,
    /// Clear the profile list.
    #[arg(long = "profile")]
    pub profiles: bool,
    /// Clear the primary network.
    #[arg(long = "primarynet")]
    pub primarynet: bool,
    /// Clear the IPMI settings (all of them).
    #[arg(long = "ipmi")]
    pub ipmi: bool,
    /// Clear the IPMI address.
    #[arg(long = "ipmiaddr")]
    pub ipmiaddr: bool,
    /// Clear the IPMI user name.
    #[arg(long = "ipmiuser")]
    pub ipmiuser: bool,
    /// Clear the IPMI password.
    #[arg(long = "ipmipass")]
    pub ipmipass: bool,
    /// Network the network flags apply to.
    #[arg(long = "netname", default_value = "default")]
    pub netname: String,
    /// Clear the device's hardware address.
    #[arg(long)]
    pub hwaddr: bool,
    /// Clear the device's IPv4 address.
    #[arg(long)]
    pub ipaddr: bool,
    /// Clear the device's netmask.
    #[arg(long)]
    pub netmask: bool,
    /// Clear the device's gateway.
    #[arg(long)]
    pub gateway: bool,
    /// Clear the device name.
    #[arg(long)]
    pub netdev: bool,
    /// Clear the device's MTU.
    #[arg(long)]
    pub mtu: bool,
    /// Clear the device's onboot flag.
    #[arg(long)]
    pub onboot: bool,
    /// Delete tags by key.
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Delete network tags by key.
    #[arg(long = "nettag", value_delimiter = ',')]
    pub nettags: Vec<String>,
    /// Delete IPMI tags by key.
    #[arg(long = "ipmitag", value_delimiter = ',')]
    pub ipmitags: Vec<String>,
    /// Delete network devices by name.
    #[arg(long = "net", value_delimiter = ',')]
    pub nets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UnsetCmd {
    /// Nodes to change (names, hostlists or globs).
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub fields: UnsetArgs,
    /// Clear discoverable.
    #[arg(long)]
    pub discoverable: bool,
    /// Clear the asset key.
    #[arg(long)]
    pub asset: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Nodes to list (names, hostlists or globs); all when empty.
    #[arg(value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Every set field with the profile that set it.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Kernel, image and overlays.
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Network devices.
    #[arg(short = 'n', long)]
    pub net: bool,
    /// IPMI settings.
    #[arg(short = 'i', long)]
    pub ipmi: bool,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Nodes to delete (names, hostlists or globs).
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// Nodes to edit; all when empty.
    #[arg(value_name = "PATTERN")]
    pub patterns: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Nodes to export; all when empty.
    #[arg(value_name = "PATTERN")]
    pub patterns: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// YAML file mapping node names to their settings.
    pub file: PathBuf,
    /// Replace nodes that already exist without asking.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

pub fn run(ctx: &Context, args: NodeArgs) -> Result<()> {
    let path = ctx.config.nodes_conf();
    match args.command {
        NodeCommand::Add(a) => add(&path, a),
        NodeCommand::Set(a) => set(&path, a),
        NodeCommand::Unset(a) => unset(&path, a),
        NodeCommand::List(a) => list(&path, a),
        NodeCommand::Delete(a) => delete(&path, a),
        NodeCommand::Edit(a) => edit(&path, a),
        NodeCommand::Export(a) => export(&path, a),
        NodeCommand::Import(a) => import(&path, a),
        NodeCommand::Console(a) => super::power::console(ctx, a),
        NodeCommand::Sensors(a) => super::power::sensors(ctx, a),
    }
}

/// Runs a locked read-modify-write of `nodes.conf`.
pub(crate) fn update<T>(path: &Path, f: impl FnOnce(&mut NodesConf) -> Result<T>) -> Result<T> {
    NodeDb::update(path, |c| f(c).map_err(UpdateError::Other)).map_err(|e| match e {
        UpdateError::Db(e) => anyhow::Error::new(e),
        UpdateError::Other(e) => e,
    })
}

enum UpdateError {
    Db(NodeDbError),
    Other(anyhow::Error),
}

impl From<NodeDbError> for UpdateError {
    fn from(e: NodeDbError) -> Self {
        UpdateError::Db(e)
    }
}

fn add(path: &Path, a: AddArgs) -> Result<()> {
    let names = hostlist::expand_all(&a.names)?;
    a.fields.check()?;
    let count = names.len();
    update(path, |db| {
        let has_default = db.profiles().contains_key("default");
        for (i, name) in names.iter().enumerate() {
            if db.nodes().contains_key(name) {
                bail!("node {name} already exists");
            }
            let mut node = NodeConf::default();
            if has_default && a.fields.profiles.is_none() {
                node.profiles = Some(vec!["default".into()]);
            }
            a.fields
                .apply(&mut node, i)
                .with_context(|| format!("node {name}"))?;
            a.node.apply(&mut node)?;
            node.tidy();
            db.nodes_mut().insert(name.clone(), node);
        }
        Ok(())
    })?;
    tracing::info!("added {count} node(s)");
    Ok(())
}

fn set(path: &Path, a: SetArgs) -> Result<()> {
    a.fields.check()?;
    let patterns = if a.all {
        Vec::new()
    } else {
        a.patterns.clone()
    };
    confirm_selected(path, Entries::Nodes, &patterns, "modify", a.yes)?;
    update(path, |db| {
        let names = select(db.nodes(), &patterns, "node")?;
        for name in names {
            let node = db
                .nodes_mut()
                .get_mut(&name)
                .expect("selected from this map");
            a.fields
                .apply(node, 0)
                .with_context(|| format!("node {name}"))?;
            a.node.apply(node)?;
            node.tidy();
        }
        Ok(())
    })
}

fn unset(path: &Path, a: UnsetCmd) -> Result<()> {
    confirm_selected(path, Entries::Nodes, &a.patterns, "modify", a.yes)?;
    update(path, |db| {
        for name in select(db.nodes(), &a.patterns, "node")? {
            let node = db
                .nodes_mut()
                .get_mut(&name)
                .expect("selected from this map");
            a.fields.apply(node);
            if a.discoverable {
                node.discoverable = None;
            }
            if a.asset {
                node.asset_key = None;
            }
            node.tidy();
        }
        Ok(())
    })
}

fn delete(path: &Path, a: DeleteArgs) -> Result<()> {
    confirm_selected(path, Entries::Nodes, &a.patterns, "delete", a.yes)?;
    update(path, |db| {
        for name in select(db.nodes(), &a.patterns, "node")? {
            db.nodes_mut().remove(&name);
        }
        Ok(())
    })
}

fn list(path: &Path, a: ListArgs) -> Result<()> {
    let db = NodeDb::load(path)?;
    let names = select_any(db.conf.nodes(), &a.patterns)?;
    let merged: Vec<MergedNode> = names.iter().filter_map(|n| db.merged(n)).collect();
    for m in &merged {
        for p in &m.missing_profiles {
            tracing::warn!("node {}: profile {p} not found", m.id);
        }
    }
    let structured: BTreeMap<&str, &NodeConf> =
        merged.iter().map(|m| (m.id.as_str(), &m.conf)).collect();
    if a.format.print_structured(&structured)? {
        return Ok(());
    }
    let dash = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("--").to_owned();
    if a.all {
        let mut t = Table::new(["NODE", "FIELD", "PROFILE", "VALUE"]);
        for m in &merged {
            t.row([m.id.clone(), "Id".into(), "--".into(), m.id.clone()]);
            let raw = &db.conf.nodes()[&m.id];
            for f in field_sources(db.conf.profiles(), &m.id, raw) {
                t.row([m.id.clone(), f.field, dash(Some(&f.source)), f.value]);
            }
        }
        t.print();
    } else if a.net {
        let mut t = Table::new(["NODE", "NETWORK", "HWADDR", "IPADDR", "GATEWAY", "DEVICE"]);
        for m in &merged {
            let devs = m.conf.netdevs.clone().unwrap_or_default();
            if devs.is_empty() {
                t.row([
                    m.id.clone(),
                    "--".into(),
                    "--".into(),
                    "--".into(),
                    "--".into(),
                    "--".into(),
                ]);
            }
            for (name, d) in devs {
                t.row([
                    m.id.clone(),
                    name,
                    dash(d.hwaddr.as_deref()),
                    dash(d.ipaddr.as_deref()),
                    dash(d.gateway.as_deref()),
                    dash(d.device.as_deref()),
                ]);
            }
        }
        t.print();
    } else if a.ipmi {
        let mut t = Table::new([
            "NODE",
            "IPMI IPADDR",
            "IPMI PORT",
            "IPMI USERNAME",
            "IPMI INTERFACE",
        ]);
        for m in &merged {
            let i = m.conf.ipmi.clone().unwrap_or_default();
            t.row([
                m.id.clone(),
                dash(i.ipaddr.as_deref()),
                dash(i.port.as_deref()),
                dash(i.username.as_deref()),
                dash(i.interface.as_deref()),
            ]);
        }
        t.print();
    } else if a.long {
        let mut t = Table::new(["NODE NAME", "KERNEL VERSION", "IMAGE", "OVERLAYS (S/R)"]);
        for m in &merged {
            let c = &m.conf;
            let ov = |l: &Option<Vec<String>>| dash(l.as_ref().map(|v| v.join(",")).as_deref());
            t.row([
                m.id.clone(),
                dash(c.kernel.as_ref().and_then(|k| k.version.as_deref())),
                dash(c.image_name.as_deref()),
                format!("{}/{}", ov(&c.system_overlay), ov(&c.runtime_overlay)),
            ]);
        }
        t.print();
    } else {
        let mut t = Table::new(["NODE NAME", "PROFILES", "NETWORK"]);
        for m in &merged {
            let profiles = m.conf.profiles.clone().unwrap_or_default().join(",");
            let nets: Vec<String> = m
                .conf
                .netdevs
                .iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
            t.row([
                m.id.clone(),
                dash(Some(&profiles)),
                dash(Some(&nets.join(", "))),
            ]);
        }
        t.print();
    }
    Ok(())
}

fn export(path: &Path, a: ExportArgs) -> Result<()> {
    let db = NodeDb::load(path)?;
    let names = if a.patterns.is_empty() {
        db.conf.nodes().keys().cloned().collect()
    } else {
        select(db.conf.nodes(), &a.patterns, "node")?
    };
    let out: BTreeMap<&String, &NodeConf> = names
        .iter()
        .filter_map(|n| db.conf.nodes().get_key_value(n))
        .collect();
    print!(
        "{}",
        serde_norway::to_string(&out).context("encoding YAML")?
    );
    Ok(())
}

fn import(path: &Path, a: ImportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let incoming = parse_entry_map(&text, &a.file)?;
    update(path, |db| {
        let before = db.clone();
        let existing: Vec<&String> = incoming
            .keys()
            .filter(|n| db.nodes().contains_key(*n))
            .collect();
        if !existing.is_empty() && !a.yes {
            let names: Vec<&str> = existing.iter().map(|s| s.as_str()).collect();
            bail!(
                "nodes already exist (use --yes to replace): {}",
                hostlist::collapse(&names)
            );
        }
        for (name, node) in &incoming {
            db.nodes_mut().insert(name.clone(), node.clone());
        }
        check_input(&before, db, Owner::Node, &incoming, &a.file, &text)
    })
}

fn edit(path: &Path, a: EditArgs) -> Result<()> {
    let db = NodeDb::load(path)?;
    let names: Vec<String> = if a.patterns.is_empty() {
        db.conf.nodes().keys().cloned().collect()
    } else {
        select(db.conf.nodes(), &a.patterns, "node")?
    };
    let current: BTreeMap<String, NodeConf> = names
        .iter()
        .filter_map(|n| db.conf.nodes().get(n).map(|c| (n.clone(), c.clone())))
        .collect();
    let Some((file, text)) = edit_yaml(&current)? else {
        println!("no changes");
        return Ok(());
    };
    let edited = parse_entry_map(&text, &file)?;
    update(path, |db| {
        let before = db.clone();
        for name in current.keys() {
            db.nodes_mut().remove(name);
        }
        for (name, node) in &edited {
            db.nodes_mut().insert(name.clone(), node.clone());
        }
        check_input(&before, db, Owner::Node, &edited, &file, &text)
    })
}

/// Writes `entries` to a temp YAML file, opens `$EDITOR` on it and returns
/// the file and its new text, or `None` when nothing changed.
pub(crate) fn edit_yaml(entries: &BTreeMap<String, NodeConf>) -> Result<Option<(PathBuf, String)>> {
    let before = serde_norway::to_string(entries).context("encoding YAML")?;
    let header = "# Edit, save and quit; the result is validated before it is saved.\n";
    let tmp = tempfile::Builder::new()
        .prefix("wwctl-edit-")
        .suffix(".yaml")
        .tempfile()
        .context("creating a temp file")?;
    std::fs::write(tmp.path(), format!("{header}{before}")).context("writing the temp file")?;
    super::editor::edit(tmp.path())?;
    let after = std::fs::read_to_string(tmp.path()).context("reading the edited file")?;
    if after == format!("{header}{before}") {
        return Ok(None);
    }
    // Keep the edited file so a failed validation does not lose the work.
    let (_, kept) = tmp.keep().context("keeping the edited file")?;
    Ok(Some((kept, after)))
}

/// Parses a YAML map of names to entries (export/edit/import format).
pub(crate) fn parse_entry_map(text: &str, file: &Path) -> Result<BTreeMap<String, NodeConf>> {
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(BTreeMap::new());
    }
    serde_norway::from_str(text).map_err(|e| anyhow::Error::new(store::yaml_error(file, &e)))
}

/// Validates `db` after entries from `file` were applied; problems in those
/// entries are reported with their line and column in `file`.
pub(crate) fn check_input(
    before: &NodesConf,
    db: &NodesConf,
    owner: Owner,
    entries: &BTreeMap<String, NodeConf>,
    file: &Path,
    text: &str,
) -> Result<()> {
    let old: HashSet<String> = validate(before).iter().map(ToString::to_string).collect();
    let problems: Vec<Problem> = validate(db)
        .into_iter()
        .filter(|p| !old.contains(&p.to_string()))
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    let located: Vec<Problem> = problems
        .into_iter()
        .map(|mut p| {
            if p.owner == owner && entries.contains_key(&p.name) {
                // The input has no `nodes:` / `nodeprofiles:` level.
                p.path.remove(0);
                p.located(file, text)
            } else {
                p
            }
        })
        .collect();
    Err(NodeDbError::Invalid(located).into())
}

/// Which map of `nodes.conf` a command works on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Entries {
    Nodes,
    Profiles,
}

/// Unless `yes`, asks whether to `verb` the entries `patterns` select
/// (deletions list them) and fails with "aborted" on anything but yes.
pub(crate) fn confirm_selected(
    path: &Path,
    entries: Entries,
    patterns: &[String],
    verb: &str,
    yes: bool,
) -> Result<()> {
    if yes {
        return Ok(());
    }
    let db = NodeDb::load(path)?;
    let (map, what) = match entries {
        Entries::Nodes => (db.conf.nodes(), "node"),
        Entries::Profiles => (db.conf.profiles(), "profile"),
    };
    let names = select(map, patterns, what)?;
    let mut question = format!("Are you sure you want to {verb} {} {what}(s)", names.len());
    if verb == "delete" {
        let listed = match entries {
            Entries::Nodes => hostlist::collapse(&names),
            Entries::Profiles => names.join(","),
        };
        question.push_str(&format!(": {listed}"));
    }
    question.push('?');
    if !confirm(&question)? {
        bail!("aborted");
    }
    Ok(())
}

/// Names in `map` matching any pattern (exact name, hostlist or glob); a
/// pattern that matches nothing is an error naming `what` (node, profile).
pub(crate) fn select<V>(
    map: &BTreeMap<String, V>,
    patterns: &[String],
    what: &str,
) -> Result<Vec<String>> {
    matching(map, patterns, Some(what))
}

/// Like [`select`], but patterns that match nothing are ignored (for `list`).
pub(crate) fn select_any<V>(map: &BTreeMap<String, V>, patterns: &[String]) -> Result<Vec<String>> {
    matching(map, patterns, None)
}

fn matching<V>(
    map: &BTreeMap<String, V>,
    patterns: &[String],
    strict: Option<&str>,
) -> Result<Vec<String>> {
    if patterns.is_empty() {
        return Ok(map.keys().cloned().collect());
    }
    let mut out = Vec::new();
    for pat in patterns {
        let expanded = if pat.contains('*') || pat.contains('?') {
            vec![pat.clone()]
        } else {
            hostlist::expand(pat)?
        };
        let mut matched = false;
        for p in &expanded {
            for name in map.keys() {
                if glob_match(p, name) {
                    matched = true;
                    if !out.contains(name) {
                        out.push(name.clone());
                    }
                }
            }
        }
        if let Some(what) = strict
            && !matched
        {
            bail!("no {what} matches {pat:?}");
        }
    }
    out.sort();
    Ok(out)
}

/// `*` and `?` wildcards; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0usize, 0usize, None, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Asks a yes/no question on stderr; anything but y/yes (or end of input) is no.
pub(crate) fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        tracing::debug!("stdin is not a terminal; reading the answer anyway");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// A scalar flag value: Warewulf's unset words clear the field.
fn scalar(dst: &mut Option<String>, value: &Option<String>) {
    if let Some(v) = value {
        *dst = if is_unset_value(v) || v.is_empty() {
            None
        } else {
            Some(v.clone())
        };
    }
}

/// A boolean flag value, normalised as Warewulf does (`yes` → `true`).
fn boolean(flag: &str, dst: &mut Option<String>, value: &Option<String>) -> Result<()> {
    if let Some(v) = value {
        if is_unset_value(v) || v.is_empty() {
            *dst = None;
        } else {
            let b = parse_bool(v).ok_or_else(|| anyhow!("--{flag}: {v:?} is not true or false"))?;
            *dst = Some(b.to_string());
        }
    }
    Ok(())
}

/// A list flag value replaces the list; a single unset word clears it.
fn set_list(dst: &mut Option<Vec<String>>, value: &Option<Vec<String>>) {
    if let Some(v) = value {
        let v: Vec<String> = v
            .iter()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        *dst = if v.is_empty() || (v.len() == 1 && is_unset_value(&v[0])) {
            None
        } else {
            Some(v)
        };
    }
}

fn tags(
    flag: &str,
    dst: &mut Option<BTreeMap<String, String>>,
    add: &[String],
    del: &[String],
) -> Result<()> {
    for kv in add {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--{flag}: {kv:?} is not key=value"))?;
        dst.get_or_insert_with(BTreeMap::new)
            .insert(k.trim().to_owned(), v.to_owned());
    }
    if let Some(map) = dst {
        for k in del {
            map.remove(k.trim());
        }
        if map.is_empty() {
            *dst = None;
        }
    }
    Ok(())
}

/// `base` + `index` for auto-incremented addresses; unset words pass through.
fn incremented(flag: &str, base: &Option<String>, index: usize) -> Result<Option<String>> {
    let Some(v) = base else { return Ok(None) };
    if index == 0 || is_unset_value(v) {
        return Ok(Some(v.clone()));
    }
    let ip: Ipv4Addr = v
        .parse()
        .map_err(|_| anyhow!("--{flag}: malformed IP address {v:?}"))?;
    let n = u32::from(ip)
        .checked_add(u32::try_from(index).unwrap_or(u32::MAX))
        .ok_or_else(|| anyhow!("--{flag}: {v} + {index} overflows"))?;
    Ok(Some(Ipv4Addr::from(n).to_string()))
}

impl FieldArgs {
    /// Checks flag values that do not depend on the node.
    pub fn check(&self) -> Result<()> {
        let mut scratch = None;
        boolean("onboot", &mut scratch, &self.onboot)?;
        boolean("ipmiwrite", &mut scratch, &self.ipmiwrite)?;
        let mut t = None;
        tags("tagadd", &mut t, &self.tagadd, &[])?;
        tags("nettagadd", &mut t, &self.nettagadd, &[])?;
        tags("ipmitagadd", &mut t, &self.ipmitagadd, &[])?;
        Ok(())
    }

    fn any_net(&self) -> bool {
        self.netdev.is_some()
            || self.hwaddr.is_some()
            || self.ipaddr.is_some()
            || self.netmask.is_some()
            || self.gateway.is_some()
            || self.ipaddr6.is_some()
            || self.prefixlen6.is_some()
            || self.gateway6.is_some()
            || self.mtu.is_some()
            || self.kind.is_some()
            || self.onboot.is_some()
            || !self.nettagadd.is_empty()
            || !self.nettagdel.is_empty()
    }

    /// Applies the flags to `c`; `index` is the node's position in an `add`
    /// hostlist, added to `--ipaddr` and `--ipmiaddr`.
    pub fn apply(&self, c: &mut NodeConf, index: usize) -> Result<()> {
        scalar(&mut c.comment, &self.comment);
        scalar(&mut c.cluster_name, &self.cluster);
        scalar(&mut c.image_name, &self.image);
        scalar(&mut c.ipxe, &self.ipxe);
        set_list(&mut c.runtime_overlay, &self.runtime_overlays);
        set_list(&mut c.system_overlay, &self.system_overlays);
        if self.kernel_version.is_some() || self.kernel_args.is_some() {
            let k = c.kernel_mut();
            scalar(&mut k.version, &self.kernel_version);
            set_list(&mut k.args, &self.kernel_args);
        }
        scalar(&mut c.init, &self.init);
        scalar(&mut c.root, &self.root);
        set_list(&mut c.profiles, &self.profiles);
        scalar(&mut c.primary_network, &self.primarynet);
        tags("tagadd", &mut c.tags, &self.tagadd, &self.tagdel)?;

        let ipmiaddr = incremented("ipmiaddr", &self.ipmiaddr, index)?;
        let ipmi_flags = [
            &self.ipmiuser,
            &self.ipmipass,
            &ipmiaddr,
            &self.ipminetmask,
            &self.ipmigateway,
            &self.ipmiport,
            &self.ipmiinterface,
            &self.ipmiescapechar,
            &self.ipmiwrite,
            &self.ipmitemplate,
        ];
        if ipmi_flags.iter().any(|f| f.is_some())
            || !self.ipmitagadd.is_empty()
            || !self.ipmitagdel.is_empty()
        {
            let i = c.ipmi_mut();
            scalar(&mut i.username, &self.ipmiuser);
            scalar(&mut i.password, &self.ipmipass);
            scalar(&mut i.ipaddr, &ipmiaddr);
            scalar(&mut i.netmask, &self.ipminetmask);
            scalar(&mut i.gateway, &self.ipmigateway);
            scalar(&mut i.port, &self.ipmiport);
            scalar(&mut i.interface, &self.ipmiinterface);
            scalar(&mut i.escapechar, &self.ipmiescapechar);
            boolean("ipmiwrite", &mut i.write, &self.ipmiwrite)?;
            scalar(&mut i.template, &self.ipmitemplate);
            tags(
                "ipmitagadd",
                &mut i.tags,
                &self.ipmitagadd,
                &self.ipmitagdel,
            )?;
        }

        if self.any_net() {
            let ipaddr = incremented("ipaddr", &self.ipaddr, index)?;
            let d = c.netdev_mut(&self.netname);
            scalar(&mut d.device, &self.netdev);
            if let Some(h) = &self.hwaddr {
                // Warewulf stores MAC addresses in lower case.
                scalar(&mut d.hwaddr, &Some(h.to_ascii_lowercase()));
            }
            scalar(&mut d.ipaddr, &ipaddr);
            scalar(&mut d.netmask, &self.netmask);
            scalar(&mut d.gateway, &self.gateway);
            scalar(&mut d.ipaddr6, &self.ipaddr6);
            scalar(&mut d.prefixlen6, &self.prefixlen6);
            scalar(&mut d.gateway6, &self.gateway6);
            scalar(&mut d.mtu, &self.mtu);
            scalar(&mut d.kind, &self.kind);
            boolean("onboot", &mut d.onboot, &self.onboot)?;
            tags("nettagadd", &mut d.tags, &self.nettagadd, &self.nettagdel)?;
        }
        if let Some(devs) = &mut c.netdevs {
            for name in &self.netdel {
                devs.remove(name);
            }
            if devs.is_empty() {
                c.netdevs = None;
            }
        }
        Ok(())
    }
}

impl NodeOnlyArgs {
    fn apply(&self, c: &mut NodeConf) -> Result<()> {
        boolean("discoverable", &mut c.discoverable, &self.discoverable)?;
        scalar(&mut c.asset_key, &self.asset);
        Ok(())
    }
}

impl UnsetArgs {
    /// Clears the chosen fields of `c`.
    pub fn apply(&self, c: &mut NodeConf) {
        let clear = |on: bool, f: &mut Option<String>| {
            if on {
                *f = None;
            }
        };
        clear(self.comment, &mut c.comment);
        clear(self.cluster, &mut c.cluster_name);
        clear(self.image, &mut c.image_name);
        clear(self.ipxe, &mut c.ipxe);
        clear(self.init, &mut c.init);
        clear(self.root, &mut c.root);
        clear(self.primarynet, &mut c.primary_network);
        if self.runtime_overlays {
            c.runtime_overlay = None;
        }
        if self.system_overlays {
            c.system_overlay = None;
        }
        if self.profiles {
            c.profiles = None;
        }
        if let Some(k) = &mut c.kernel {
            clear(self.kernel_version, &mut k.version);
            if self.kernel_args {
                k.args = None;
            }
        }
        if self.ipmi {
            c.ipmi = None;
        }
        if let Some(i) = &mut c.ipmi {
            clear(self.ipmiaddr, &mut i.ipaddr);
            clear(self.ipmiuser, &mut i.username);
            clear(self.ipmipass, &mut i.password);
            if let Some(t) = &mut i.tags {
                for k in &self.ipmitags {
                    t.remove(k);
                }
            }
        }
        if let Some(t) = &mut c.tags {
            for k in &self.tags {
                t.remove(k);
            }
        }
        if let Some(devs) = &mut c.netdevs {
            if let Some(d) = devs.get_mut(&self.netname) {
                clear(self.hwaddr, &mut d.hwaddr);
                clear(self.ipaddr, &mut d.ipaddr);
                clear(self.netmask, &mut d.netmask);
                clear(self.gateway, &mut d.gateway);
                clear(self.netdev, &mut d.device);
                clear(self.mtu, &mut d.mtu);
                clear(self.onboot, &mut d.onboot);
                if let Some(t) = &mut d.tags {
                    for k in &self.nettags {
                        t.remove(k);
                    }
                }
            }
            for n in &self.nets {
                devs.remove(n);
            }
            if devs.is_empty() {
                c.netdevs = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("n*", "n01"));
        assert!(glob_match("n?1", "n01"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("n?", "n01"));
        assert!(glob_match("n01", "n01"));
        assert!(!glob_match("gpu*", "n01"));
    }

    #[test]
    fn incremented_addresses() {
        let base = Some("10.0.0.254".to_owned());
        assert_eq!(
            incremented("ipaddr", &base, 0).unwrap().unwrap(),
            "10.0.0.254"
        );
        assert_eq!(
            incremented("ipaddr", &base, 3).unwrap().unwrap(),
            "10.0.1.1"
        );
        assert!(incremented("ipaddr", &Some("x".into()), 1).is_err());
    }

    #[test]
    fn flags_apply_with_warewulf_spellings() {
        let f = FieldArgs {
            onboot: Some("yes".into()),
            hwaddr: Some("AA:BB:CC:DD:EE:FF".into()),
            netname: "default".into(),
            tagadd: vec!["a=1".into()],
            comment: Some("UNDEF".into()),
            ..FieldArgs::default()
        };
        let mut c = NodeConf {
            comment: Some("old".into()),
            ..NodeConf::default()
        };
        f.apply(&mut c, 0).unwrap();
        let d = &c.netdevs.as_ref().unwrap()["default"];
        assert_eq!(d.onboot.as_deref(), Some("true"));
        assert_eq!(d.hwaddr.as_deref(), Some("aa:bb:cc:dd:ee:ff"));
        assert_eq!(c.comment, None);
        assert_eq!(c.tags.as_ref().unwrap()["a"], "1");
        let bad = FieldArgs {
            onboot: Some("maybe".into()),
            ..FieldArgs::default()
        };
        assert!(bad.check().is_err());
    }
}
