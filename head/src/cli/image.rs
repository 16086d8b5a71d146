//! `wwctl image`.

use anyhow::Result;
use clap::Args;

use super::Context;

#[derive(Debug, Args)]
pub struct ImageArgs {}

pub fn run(_ctx: &Context, _args: ImageArgs) -> Result<()> {
    anyhow::bail!("wwctl image is not implemented yet")
}
