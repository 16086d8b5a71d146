//! `wwctl node`: placeholder until the node database lands (issue 02).

use anyhow::{Result, bail};
use clap::Args;

use super::Context;

/// Manage nodes (not yet available).
#[derive(Debug, Args)]
pub struct NodeArgs {}

pub fn run(_ctx: &Context, _args: NodeArgs) -> Result<()> {
    bail!("wwctl node is not implemented yet")
}
