//! `wwctl ssh PATTERN [--] COMMAND…`: runs a non-interactive command on many
//! nodes in parallel over ssh, as Warewulf's `wwctl ssh` does. Each node is
//! reached at the address of its primary network device; at most `--fanout`
//! connections run at once. Output lines are prefixed with the node name as
//! they arrive (stdout to stdout, stderr to stderr); a summary of exit codes
//! by node goes to stderr, and the command fails when any node did.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::Context;
use super::node::select;
use crate::nodedb::hostlist;
use crate::nodedb::merge::MergedNode;
use crate::nodedb::store::NodeDb;
use crate::power::{fanout, words};

/// Run a command on nodes over ssh, in parallel.
#[derive(Debug, Args)]
pub struct SshArgs {
    /// Only print the commands that would run.
    #[arg(short = 'n', long = "dryrun")]
    pub dryrun: bool,
    /// How many connections to run at once.
    #[arg(short = 'f', long, default_value_t = 32)]
    pub fanout: usize,
    /// Seconds to wait after each node before the next one in its slot.
    #[arg(short = 's', long, default_value_t = 0, value_name = "SECONDS")]
    pub sleep: u64,
    /// The ssh program, with options if needed ("ssh -i KEY -l admin").
    #[arg(long, default_value = "ssh", value_name = "COMMAND")]
    pub rsh: String,
    /// Nodes: names, hostlists such as n[01-10], or globs.
    #[arg(value_name = "PATTERN")]
    pub pattern: String,
    /// The command to run on every node.
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// How one node's command ended.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ended {
    Exit(i32),
    Signal(i32),
    /// Not started: no address, or the ssh program could not run.
    NotRun(String),
    /// `--dryrun`.
    Shown,
}

impl Ended {
    fn ok(&self) -> bool {
        matches!(self, Ended::Exit(0) | Ended::Shown)
    }
}

pub fn run(ctx: &Context, args: SshArgs) -> Result<()> {
    let rsh = words::split(&args.rsh).with_context(|| format!("--rsh {:?}", args.rsh))?;
    if rsh.is_empty() {
        bail!("--rsh is empty");
    }
    let db = NodeDb::load(&ctx.config.nodes_conf())?;
    let names = select(db.conf.nodes(), std::slice::from_ref(&args.pattern), "node")?;
    let nodes: Vec<MergedNode> = names.iter().filter_map(|n| db.merged(n)).collect();
    let pause = Duration::from_secs(args.sleep);
    let ended = fanout::run(
        &nodes,
        args.fanout,
        |node| {
            let result = one_node(node, &rsh, &args.command, args.dryrun);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
            result
        },
        |_| {},
    );
    let results: Vec<(&str, Ended)> = nodes.iter().map(|n| n.id.as_str()).zip(ended).collect();
    if args.dryrun {
        return Ok(());
    }
    eprint!("{}", summary(&results));
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, e)| !e.ok())
        .map(|(n, _)| *n)
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} nodes failed: {}",
            failed.len(),
            results.len(),
            hostlist::collapse(&failed)
        );
    }
    Ok(())
}

/// The IPv4 address of the node's primary network device.
pub fn primary_address(node: &MergedNode) -> Result<String, String> {
    let Some(primary) = node.conf.primary_network.as_deref() else {
        return Err("no network device".into());
    };
    let addr = node
        .conf
        .netdevs
        .as_ref()
        .and_then(|d| d.get(primary))
        .and_then(|d| d.ipaddr.as_deref())
        .map(|a| a.split('/').next().unwrap_or(a).trim())
        .filter(|a| !a.is_empty());
    addr.map(str::to_owned)
        .ok_or_else(|| format!("no IP address on its primary network {primary:?}"))
}

/// Runs the command on one node, printing its output with a prefix.
fn one_node(node: &MergedNode, rsh: &[String], command: &[String], dryrun: bool) -> Ended {
    let addr = match primary_address(node) {
        Ok(a) => a,
        Err(why) => {
            eprintln!("{}: {why}", node.id);
            return Ended::NotRun(why);
        }
    };
    let mut argv = rsh.to_vec();
    argv.push(addr);
    argv.extend(command.iter().cloned());
    if dryrun {
        println!("{}: {}", node.id, words::join(&argv));
        return Ended::Shown;
    }
    tracing::debug!("{}: running {}", node.id, words::join(&argv));
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            let why = format!("running {}: {e}", argv[0]);
            eprintln!("{}: {why}", node.id);
            return Ended::NotRun(why);
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    std::thread::scope(|s| {
        s.spawn(|| prefix_lines(stderr, |l| eprintln!("{}: {l}", node.id)));
        prefix_lines(stdout, |l| println!("{}: {l}", node.id));
    });
    match child.wait() {
        Ok(status) => match (
            status.code(),
            std::os::unix::process::ExitStatusExt::signal(&status),
        ) {
            (Some(code), _) => Ended::Exit(code),
            (None, Some(sig)) => Ended::Signal(sig),
            (None, None) => Ended::NotRun(format!("ended ({status})")),
        },
        Err(e) => Ended::NotRun(format!("waiting for {}: {e}", argv[0])),
    }
}

/// Calls `print` for every line of `from` (lossy UTF-8, newline removed).
fn prefix_lines(from: impl Read, print: impl Fn(&str)) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                print(text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

/// One line per outcome with the nodes it happened on, e.g. `exit 0: n[1-3]`.
fn summary(results: &[(&str, Ended)]) -> String {
    let mut groups: BTreeMap<&Ended, Vec<&str>> = BTreeMap::new();
    for (node, ended) in results {
        groups.entry(ended).or_default().push(node);
    }
    let mut out = String::new();
    for (ended, nodes) in groups {
        let label = match ended {
            Ended::Exit(code) => format!("exit {code}"),
            Ended::Signal(sig) => format!("killed by signal {sig}"),
            Ended::NotRun(why) => format!("not run ({why})"),
            Ended::Shown => continue,
        };
        out.push_str(&format!("{label}: {}\n", hostlist::collapse(&nodes)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodedb::merge::merge_all;

    #[test]
    fn summary_groups_nodes_by_exit_code() {
        let results = [
            ("n1", Ended::Exit(0)),
            ("n2", Ended::Exit(0)),
            ("n3", Ended::Exit(3)),
            ("n4", Ended::NotRun("no network device".into())),
            ("n5", Ended::Signal(9)),
        ];
        assert_eq!(
            summary(&results),
            "exit 0: n[1-2]\nexit 3: n3\nkilled by signal 9: n5\nnot run (no network device): n4\n"
        );
    }

    #[test]
    fn address_comes_from_the_primary_device() {
        let db = serde_norway::from_str(
            "nodes:
  a:
    primary network: ib
    network devices:
      default: {ipaddr: 10.0.0.1}
      ib: {ipaddr: 10.1.0.1/16}
  b:
    network devices:
      default: {hwaddr: 00:11:22:33:44:55}
  c: {}
",
        )
        .unwrap();
        let nodes = merge_all(&db);
        assert_eq!(primary_address(&nodes[0]).unwrap(), "10.1.0.1");
        assert_eq!(
            primary_address(&nodes[1]).unwrap_err(),
            "no IP address on its primary network \"default\""
        );
        assert_eq!(primary_address(&nodes[2]).unwrap_err(), "no network device");
    }
}
