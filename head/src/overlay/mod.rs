//! Overlays: the per-node files layered over the image at boot.
//!
//! - [`store`]: where overlays live (shipped and site, site shadowing shipped);
//! - [`deps`]: which template data a `.ww` source reaches (node-independent
//!   templates are rendered once per run);
//! - [`data`]: Warewulf's template data (`TemplateStruct`) from nodes and config;
//! - [`render`]: one overlay read, parsed and rendered for a node;
//! - [`build`]: per-node system/runtime images in the content-addressed store;
//! - [`composite`]: images stored as a reference to a large shared member
//!   plus the node's own member.

pub mod allnodes;
pub mod build;
pub mod composite;
pub mod data;
pub mod deps;
pub mod nodeset;
pub mod render;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use data::Site;
use render::{Prepared, RenderedFile, merge_into};
use store::OverlayStore;

/// Renders overlay `overlay` for node `node` completely (plain files,
/// directories, symlinks and every template), as it lands on the node.
/// Errors name the overlay, the file and, for parse errors, line and column.
pub fn render_overlay_for_node(
    config: &Config,
    overlay: &str,
    node: &str,
) -> Result<Vec<RenderedFile>> {
    let nodes = Arc::new(build::load_nodes(config)?);
    let Some(n) = nodes.iter().find(|n| n.id == node) else {
        bail!("node {node} does not exist");
    };
    let store = OverlayStore::new(&config.paths);
    let prep = Prepared::load(store.require(overlay)?).map_err(anyhow::Error::msg)?;
    let site = Site::new(config, nodes.clone(), SystemTime::now());
    let env = build::render_env(config);
    let data = site.node(n, true).map_err(anyhow::Error::msg)?;
    let mut tree = BTreeMap::new();
    merge_into(&mut tree, prep.statics.iter().cloned());
    let mut errors = Vec::new();
    for t in &prep.templates {
        match prep.render_template(t, &data.data(overlay, &t.host_path), &env) {
            Ok((files, _)) => merge_into(&mut tree, files),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        bail!("node {node}: {}", errors.join("\n"));
    }
    Ok(tree.into_values().collect())
}

/// The raw rendered text of one template for a node (what Warewulf's
/// `overlay show --render` prints, `file`/`softlink` markers included).
pub fn render_text(config: &Config, overlay: &str, file: &str, node: &str) -> Result<String> {
    let nodes = Arc::new(build::load_nodes(config)?);
    let Some(n) = nodes.iter().find(|n| n.id == node) else {
        bail!("node {node} does not exist");
    };
    let store = OverlayStore::new(&config.paths);
    let dir = store.require(overlay)?;
    let path = store::inside(&dir.rootfs, file)?;
    let tmpl = wwtemplate::Template::from_file(&path)
        .with_context(|| format!("overlay {overlay}: {file}"))?;
    let site = Site::new(config, nodes.clone(), SystemTime::now());
    let data = site.node(n, true).map_err(anyhow::Error::msg)?;
    let env = build::render_env(config);
    tmpl.render_text(&data.data(overlay, &path.to_string_lossy()), &env)
        .with_context(|| format!("overlay {overlay}: {file}: node {node}"))
}
