//! `wwctl profile`: placeholder until the node database lands (issue 02).

use anyhow::{Result, bail};
use clap::Args;

use super::Context;

/// Manage profiles (not yet available).
#[derive(Debug, Args)]
pub struct ProfileArgs {}

pub fn run(_ctx: &Context, _args: ProfileArgs) -> Result<()> {
    bail!("wwctl profile is not implemented yet")
}
