//! `wwctl server`: runs the provisioning services in the foreground (the
//! systemd unit runs exactly this).

use anyhow::{Context as _, Result};
use clap::Args;

use super::Context;

/// Run the provisioning server in the foreground.
///
/// Serves DHCP (when `dhcp: enabled`) and re-reads nodes.conf when it
/// changes or on SIGHUP; SIGTERM and SIGINT stop it cleanly.
#[derive(Debug, Args)]
pub struct ServerArgs {}

pub fn run(ctx: &Context, _args: ServerArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wwctl-server")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(crate::serve::run(ctx.config.clone()))
}
