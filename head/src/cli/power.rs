//! `wwctl power on|off|cycle|reset|soft|status`, and the BMC parts of `wwctl
//! node` (`console`, `sensors`): select nodes, run their BMC command template
//! (crate::power) with a fan-out limit, report per node. Any failed node
//! makes the command exit non-zero after the report.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::Context;
use super::node::select;
use super::output::{FormatArgs, Table};
use crate::nodedb::hostlist;
use crate::nodedb::merge::MergedNode;
use crate::nodedb::store::NodeDb;
use crate::power::bmc::Templates;
use crate::power::{self, BmcCmd, Outcome, RunOptions, words};

/// Control node power through their BMCs.
#[derive(Debug, Args)]
pub struct PowerArgs {
    #[command(subcommand)]
    pub command: PowerCommand,
}

#[derive(Debug, Subcommand)]
pub enum PowerCommand {
    /// Power on nodes matching PATTERN.
    On(TargetArgs),
    /// Power off nodes matching PATTERN (hard).
    Off(TargetArgs),
    /// Power nodes off, then on again.
    Cycle(TargetArgs),
    /// Reset nodes (hard reboot).
    Reset(TargetArgs),
    /// Ask nodes to shut down (ACPI soft off).
    Soft(TargetArgs),
    /// Show the power state of nodes.
    Status(TargetArgs),
}

/// Nodes and how to reach their BMCs.
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Nodes: names, hostlists such as n[01-10], or globs.
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub format: FormatArgs,
}

/// How BMC commands run.
#[derive(Clone, Copy, Debug, Args)]
pub struct RunArgs {
    /// Only show the command that would run for each node.
    #[arg(short = 's', long)]
    pub show: bool,
    /// How many nodes to handle at once.
    #[arg(short = 'f', long, default_value_t = 50)]
    pub fanout: usize,
    /// Seconds before a node's command is given up and killed.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
}

impl RunArgs {
    fn options(self) -> RunOptions {
        RunOptions {
            fanout: self.fanout,
            timeout: Duration::from_secs(self.timeout),
            show: self.show,
        }
    }
}

/// `wwctl node sensors`.
#[derive(Debug, Args)]
pub struct SensorsArgs {
    /// Nodes: names, hostlists such as n[01-10], or globs.
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Show every sensor with thresholds (`sensor list`, not `sdr list`).
    #[arg(short = 'F', long)]
    pub full: bool,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub format: FormatArgs,
}

/// `wwctl node console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The node.
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Only show the command that would run.
    #[arg(short = 's', long)]
    pub show: bool,
}

pub fn run(ctx: &Context, args: PowerArgs) -> Result<()> {
    let (cmd, target) = match args.command {
        PowerCommand::On(t) => (BmcCmd::PowerOn, t),
        PowerCommand::Off(t) => (BmcCmd::PowerOff, t),
        PowerCommand::Cycle(t) => (BmcCmd::PowerCycle, t),
        PowerCommand::Reset(t) => (BmcCmd::PowerReset, t),
        PowerCommand::Soft(t) => (BmcCmd::PowerSoft, t),
        PowerCommand::Status(t) => (BmcCmd::PowerStatus, t),
    };
    let outcomes = execute(ctx, &target.patterns, cmd, target.run)?;
    if !target.format.print_structured(&outcomes)? {
        print!("{}", table(&outcomes, cmd == BmcCmd::PowerStatus).render());
    }
    summary(&outcomes)
}

/// `wwctl node sensors`: `sdr list` (or `sensor list`) per node.
pub fn sensors(ctx: &Context, args: SensorsArgs) -> Result<()> {
    let cmd = if args.full {
        BmcCmd::SensorList
    } else {
        BmcCmd::SdrList
    };
    let outcomes = execute(ctx, &args.patterns, cmd, args.run)?;
    if !args.format.print_structured(&outcomes)? {
        for o in &outcomes {
            match &o.error {
                None => println!("{}:\n{}\n", o.node, o.output),
                Some(e) => eprintln!("{}: {e}", o.node),
            }
        }
    }
    summary(&outcomes)
}

/// `wwctl node console`: the node's `Console` command (`ipmitool sol
/// activate` by default) on this terminal.
pub fn console(ctx: &Context, args: ConsoleArgs) -> Result<()> {
    let nodes = load(ctx, std::slice::from_ref(&args.node))?;
    let [node] = nodes.as_slice() else {
        bail!(
            "{:?} matches {} nodes; console takes one",
            args.node,
            nodes.len()
        );
    };
    let templates = Templates::new(&ctx.config.paths.datadir);
    let argv = power::command_for(&templates, node, BmcCmd::Console)
        .map_err(|e| anyhow::anyhow!("{}: {}", node.id, e.reason()))?;
    if args.show {
        println!("{}", words::join(&argv));
        return Ok(());
    }
    tracing::debug!("{}: running {}", node.id, words::join(&argv));
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .with_context(|| format!("{}: running {}", node.id, argv[0]))?;
    if !status.success() {
        bail!("{}: {} {}", node.id, argv[0], power::describe(status));
    }
    Ok(())
}

/// The merged nodes matching `patterns` (each must match something).
fn load(ctx: &Context, patterns: &[String]) -> Result<Vec<MergedNode>> {
    let db = NodeDb::load(&ctx.config.nodes_conf())?;
    let names = select(db.conf.nodes(), patterns, "node")?;
    Ok(names.iter().filter_map(|n| db.merged(n)).collect())
}

/// Runs `cmd` on the nodes matching `patterns`, with a progress bar on
/// stderr when it is a terminal.
fn execute(ctx: &Context, patterns: &[String], cmd: BmcCmd, run: RunArgs) -> Result<Vec<Outcome>> {
    let nodes = load(ctx, patterns)?;
    let templates = Templates::new(&ctx.config.paths.datadir);
    let bar = ProgressBar::new(nodes.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} nodes {elapsed}")
            .expect("the progress template is valid"),
    );
    let outcomes = power::run_all(&templates, &nodes, cmd, run.options(), |_| bar.inc(1));
    bar.finish_and_clear();
    Ok(outcomes)
}

/// The per-node table: output for nodes that answered, the reason for the
/// others; `status` adds the power state.
pub fn table(outcomes: &[Outcome], with_power: bool) -> Table {
    let mut t = if with_power {
        Table::new(["NODE", "RESULT", "POWER", "OUTPUT"])
    } else {
        Table::new(["NODE", "RESULT", "OUTPUT"])
    };
    for o in outcomes {
        let result = if o.ok { "ok" } else { "failed" };
        let text = match &o.error {
            Some(e) => e.clone(),
            None => one_line(&o.output),
        };
        if with_power {
            let power = o.power.clone().unwrap_or_else(|| "--".into());
            t.row([o.node.clone(), result.into(), power, text]);
        } else {
            t.row([o.node.clone(), result.into(), text]);
        }
    }
    t
}

/// Output lines joined with `; ` so each node keeps one table row.
fn one_line(output: &str) -> String {
    output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fails naming the failed nodes, when there are any.
fn summary(outcomes: &[Outcome]) -> Result<()> {
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.node.as_str())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} nodes failed: {}",
            failed.len(),
            outcomes.len(),
            hostlist::collapse(&failed)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(node: &str, ok: bool, power: Option<&str>, output: &str, error: Option<&str>) -> Outcome {
        Outcome {
            node: node.into(),
            ok,
            power: power.map(Into::into),
            output: output.into(),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn table_shows_output_or_reason_per_node() {
        let outcomes = [
            o("n1", true, Some("on"), "Cipher\nChassis Power is on", None),
            o(
                "n2",
                false,
                None,
                "x",
                Some("ipmitool exited with status 1: x"),
            ),
        ];
        assert_eq!(
            table(&outcomes, true).render(),
            "NODE  RESULT  POWER  OUTPUT\n\
             n1    ok      on     Cipher; Chassis Power is on\n\
             n2    failed  --     ipmitool exited with status 1: x\n"
        );
        assert_eq!(
            table(&outcomes[..1], false).render(),
            "NODE  RESULT  OUTPUT\nn1    ok      Cipher; Chassis Power is on\n"
        );
        let e = summary(&outcomes).unwrap_err();
        assert_eq!(e.to_string(), "1 of 2 nodes failed: n2");
        assert!(summary(&outcomes[..1]).is_ok());
    }
}
