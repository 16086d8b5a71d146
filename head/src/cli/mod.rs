//! Command-line surface of `wwctl`: clap types and thin handlers that call
//! into the owning modules. Flags follow Warewulf's names.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::config::{self, Config};

pub mod configure;
pub mod editor;
pub mod image;
pub mod initramfs;
pub mod kernel;
pub mod node;
pub mod output;
pub mod overlay;
pub mod power;
pub mod profile;
pub mod server;
pub mod ssh;

/// Ironwulf cluster provisioning (Warewulf compatible).
#[derive(Debug, Parser)]
#[command(name = "wwctl", version, max_term_width = 80)]
pub struct Cli {
    /// Path to warewulf.conf.
    #[arg(long, global = true, env = "WAREWULFCONF", default_value = config::DEFAULT_CONF)]
    pub warewulfconf: PathBuf,

    /// Print what is being done.
    #[arg(short, long, global = true)]
    pub verbose: bool,

    /// Print debugging detail.
    #[arg(short, long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up head services from warewulf.conf (ssh, hostfile, nfs).
    Configure(configure::ConfigureArgs),
    /// Manage node images.
    #[command(visible_alias = "container", alias = "vnfs")]
    Image(image::ImageArgs),
    /// Manage kernels imported apart from images.
    Kernel(kernel::KernelArgs),
    /// Build the stage-1 initramfs of two-stage boots.
    Initramfs(initramfs::InitramfsArgs),
    /// Manage nodes.
    Node(node::NodeArgs),
    /// Manage overlays and build node overlay images.
    Overlay(overlay::OverlayArgs),
    /// Manage node profiles.
    Profile(profile::ProfileArgs),
    /// Control node power through their BMCs (IPMI).
    Power(power::PowerArgs),
    /// Run the provisioning server (DHCP) in the foreground.
    Server(server::ServerArgs),
    /// Run a command on nodes over ssh, in parallel.
    Ssh(ssh::SshArgs),
    /// Print the version.
    Version,
}

/// What every handler gets: the loaded site configuration.
pub struct Context {
    pub config: Config,
}

/// Loads the configuration and runs the chosen verb.
pub fn run(cli: Cli) -> Result<()> {
    if let Command::Version = cli.command {
        println!("wwctl (ironwulf) {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let config = Config::load(&cli.warewulfconf)?;
    let ctx = Context { config };
    match cli.command {
        Command::Configure(args) => configure::run(&ctx, args),
        Command::Image(args) => image::run(&ctx, args),
        Command::Kernel(args) => kernel::run(&ctx, args),
        Command::Initramfs(args) => initramfs::run(&ctx, args),
        Command::Node(args) => node::run(&ctx, args),
        Command::Overlay(args) => overlay::run(&ctx, args),
        Command::Profile(args) => profile::run(&ctx, args),
        Command::Power(args) => power::run(&ctx, args),
        Command::Server(args) => server::run(&ctx, args),
        Command::Ssh(args) => ssh::run(&ctx, args),
        Command::Version => unreachable!("handled above"),
    }
}
