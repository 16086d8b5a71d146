//! Power control and console access through each node's BMC, the way
//! Warewulf does it: a command template ([`bmc`]) turns the node's `ipmi:`
//! fields and an action into a command line (`ipmitool …` by default; a site
//! can name another tool in `ipmi: template`), which runs once per node, at
//! most `fanout` at a time ([`fanout`]), with a time limit. Every node gets
//! an [`Outcome`]: the tool's output, or the reason it failed.
//!
//! - [`bmc`]: template lookup, template data, rendering to argv;
//! - [`words`]: sh-style word splitting without expansion;
//! - [`fanout`]: the bounded parallel runner (also used by `wwctl ssh`).

pub mod bmc;
pub mod fanout;
pub mod words;

use std::io::Read as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use thiserror::Error;

use crate::nodedb::merge::MergedNode;
use bmc::Templates;
use words::WordsError;

/// How often a running BMC command is checked for exit or timeout.
const POLL: Duration = Duration::from_millis(10);

/// The actions a BMC template implements; the names are Warewulf's `.Cmd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BmcCmd {
    PowerOn,
    PowerOff,
    PowerCycle,
    PowerReset,
    PowerSoft,
    PowerStatus,
    SdrList,
    SensorList,
    Console,
}

impl BmcCmd {
    /// The value of `.Cmd` in the template.
    pub fn as_str(self) -> &'static str {
        match self {
            BmcCmd::PowerOn => "PowerOn",
            BmcCmd::PowerOff => "PowerOff",
            BmcCmd::PowerCycle => "PowerCycle",
            BmcCmd::PowerReset => "PowerReset",
            BmcCmd::PowerSoft => "PowerSoft",
            BmcCmd::PowerStatus => "PowerStatus",
            BmcCmd::SdrList => "SDRList",
            BmcCmd::SensorList => "SensorList",
            BmcCmd::Console => "Console",
        }
    }
}

/// Why a BMC command failed for one node.
#[derive(Debug, Error)]
pub enum PowerError {
    #[error("no IPMI address (set it with `wwctl node set --ipmiaddr`)")]
    NoAddress,
    #[error("BMC template {} not found", path.display())]
    TemplateMissing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing the BMC template")]
    TemplateParse(#[source] wwtemplate::TemplateError),
    #[error("rendering the BMC command")]
    Render(#[source] wwtemplate::TemplateError),
    #[error("BMC template {template} rendered no command for {cmd}")]
    Empty { template: String, cmd: &'static str },
    #[error("splitting the command rendered by {template}")]
    Words {
        template: String,
        #[source]
        source: WordsError,
    },
    #[error("running {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {status}{}{}", colon(output), hint(program, output))]
    Failed {
        program: String,
        status: String,
        output: String,
    },
    #[error("{program} gave no answer within {} s and was killed{}", seconds(*after), colon(output))]
    Timeout {
        program: String,
        after: Duration,
        output: String,
    },
}

/// `": line; line"` for the non-empty lines of `output`, or nothing.
fn colon(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(": {}", lines.join("; "))
    }
}

/// `60` or `0.3`: whole seconds without decimals.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{:.1}", d.as_secs_f64())
    }
}

/// A pointer to the usual cause when ipmitool could not open a session.
fn hint(program: &str, output: &str) -> &'static str {
    let ipmitool = program.rsplit('/').next() == Some("ipmitool");
    if ipmitool && output.contains("Unable to establish") {
        " (check the BMC address and port and the IPMI username and password)"
    } else {
        ""
    }
}

impl PowerError {
    /// The message with its causes, `a: b: c`, for a per-node report.
    pub fn reason(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

/// What happened on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub node: String,
    pub ok: bool,
    /// `on` or `off` when the action was `PowerStatus` and the tool said so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// The tool's output (stdout and stderr as written), trimmed; with
    /// `show`, the command that would run.
    pub output: String,
    /// Why the node failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How [`run_all`] runs the commands.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// At most this many commands at once.
    pub fanout: usize,
    /// Each command is killed after this long.
    pub timeout: Duration,
    /// Render only: report the command instead of running it.
    pub show: bool,
}

/// The command line for `cmd` on `node`: its template, rendered.
pub fn command_for(
    templates: &Templates,
    node: &MergedNode,
    cmd: BmcCmd,
) -> Result<Vec<String>, PowerError> {
    let ipmi = node.conf.ipmi.clone().unwrap_or_default();
    if ipmi.ipaddr.as_deref().is_none_or(|a| a.trim().is_empty()) {
        return Err(PowerError::NoAddress);
    }
    let template = templates.get(ipmi.template.as_deref().unwrap_or_default())?;
    bmc::command(&template, &ipmi, cmd)
}

/// Runs `cmd` on every node, at most `opts.fanout` at once; `done` sees
/// each outcome as it arrives. Outcomes come back in the order of `nodes`.
pub fn run_all(
    templates: &Templates,
    nodes: &[MergedNode],
    cmd: BmcCmd,
    opts: RunOptions,
    done: impl Fn(&Outcome) + Sync,
) -> Vec<Outcome> {
    fanout::run(
        nodes,
        opts.fanout,
        |node| {
            let result = command_for(templates, node, cmd).and_then(|argv| {
                tracing::debug!("{}: running {}", node.id, words::join(&argv));
                if opts.show {
                    Ok(words::join(&argv))
                } else {
                    run_captured(&argv, opts.timeout)
                }
            });
            outcome(&node.id, cmd, result)
        },
        done,
    )
}

/// Turns one node's result into its [`Outcome`].
fn outcome(node: &str, cmd: BmcCmd, result: Result<String, PowerError>) -> Outcome {
    match result {
        Ok(output) => Outcome {
            node: node.to_owned(),
            ok: true,
            power: (cmd == BmcCmd::PowerStatus)
                .then(|| power_state(&output))
                .flatten(),
            output,
            error: None,
        },
        Err(e) => Outcome {
            node: node.to_owned(),
            ok: false,
            power: None,
            output: match &e {
                PowerError::Failed { output, .. } | PowerError::Timeout { output, .. } => {
                    output.clone()
                }
                _ => String::new(),
            },
            error: Some(e.reason()),
        },
    }
}

/// `on`/`off` from a status answer such as ipmitool's `Chassis Power is on`.
pub fn power_state(output: &str) -> Option<String> {
    output.lines().rev().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        let (_, rest) = lower.split_once("power is ")?;
        let word = rest.split_whitespace().next()?;
        matches!(word, "on" | "off").then(|| word.to_owned())
    })
}

/// Runs `argv` with stdout and stderr in one pipe (their interleaving kept,
/// like Go's `CombinedOutput`) and stdin closed, in its own process group,
/// which is killed when `timeout` passes and cleaned up after the command
/// exits. Success is exit status 0; the output comes back trimmed.
pub fn run_captured(argv: &[String], timeout: Duration) -> Result<String, PowerError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(PowerError::Spawn {
            program: String::new(),
            source: std::io::Error::other("empty command line"),
        });
    };
    let spawn_err = |source| PowerError::Spawn {
        program: program.clone(),
        source,
    };
    let (mut reader, writer) = std::io::pipe().map_err(spawn_err)?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer.try_clone().map_err(spawn_err)?)
        .stderr(writer)
        .process_group(0);
    let mut child = command.spawn().map_err(spawn_err)?;
    // Close our copies of the pipe's write end so reading ends with the group.
    drop(command);
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("PIDs fit in i32"));
    let collector = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(POLL),
            Err(source) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait();
                return Err(spawn_err(source));
            }
        }
    };
    // Whatever the command left running in its group goes too, so the
    // pipe closes; the group is ours (process_group(0) above).
    let _ = killpg(pgid, Signal::SIGKILL);
    if status.is_none() {
        let _ = child.wait();
    }
    let output = collector.join().unwrap_or_default();
    let output = String::from_utf8_lossy(&output).trim().to_owned();
    match status {
        None => Err(PowerError::Timeout {
            program: program.clone(),
            after: timeout,
            output,
        }),
        Some(s) if s.success() => Ok(output),
        Some(s) => Err(PowerError::Failed {
            program: program.clone(),
            status: describe(s),
            output,
        }),
    }
}

/// `exited with status 1`, `was killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn captured_output_keeps_both_streams_in_order() {
        let out = run_captured(
            &argv(&["sh", "-c", "echo one; echo two >&2; echo three"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out, "one\ntwo\nthree");
    }

    #[test]
    fn failures_name_the_program_status_and_output() {
        let e = run_captured(
            &argv(&["sh", "-c", "echo 'Error: no session' >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(e.reason(), "sh exited with status 3: Error: no session");
        let e = run_captured(&argv(&["/nonexistent/tool"]), Duration::from_secs(1)).unwrap_err();
        assert!(
            e.reason().starts_with("running /nonexistent/tool: "),
            "{}",
            e.reason()
        );
    }

    #[test]
    fn timeouts_kill_the_whole_group() {
        let started = Instant::now();
        // The background sleep holds the pipe open: only killing the group
        // lets the call return.
        let e = run_captured(
            &argv(&["sh", "-c", "echo waiting; sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(
            e.reason(),
            "sh gave no answer within 0.3 s and was killed: waiting"
        );
    }

    #[test]
    fn ipmitool_session_errors_get_a_hint() {
        let e = PowerError::Failed {
            program: "/usr/bin/ipmitool".into(),
            status: "exited with status 1".into(),
            output: "Error: Unable to establish IPMI v2 / RMCP+ session\n".into(),
        };
        assert!(
            e.to_string().ends_with("IPMI username and password)"),
            "{e}"
        );
    }

    #[test]
    fn power_state_reads_status_answers() {
        assert_eq!(power_state("Chassis Power is on").as_deref(), Some("on"));
        assert_eq!(
            power_state("Unable to Get Channel Cipher Suites\nChassis Power is off").as_deref(),
            Some("off")
        );
        assert_eq!(power_state("Chassis Power Control: Up/On"), None);
    }

    #[test]
    fn nodes_without_an_address_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let templates = Templates::new(dir.path());
        let template = dir.path().join("t");
        std::fs::write(&template, "echo {{ .Cmd }} {{ .Ipaddr }}").unwrap();
        let db: crate::nodedb::model::NodesConf = serde_norway::from_str(&format!(
            "nodes:\n  a:\n    ipmi:\n      ipaddr: 10.0.0.1\n      template: {}\n  b: {{}}\n",
            template.display()
        ))
        .unwrap();
        let nodes = crate::nodedb::merge::merge_all(&db);
        let opts = RunOptions {
            fanout: 4,
            timeout: Duration::from_secs(10),
            show: false,
        };
        let out = run_all(&templates, &nodes, BmcCmd::PowerStatus, opts, |_| {});
        assert_eq!(out[0].output, "PowerStatus 10.0.0.1");
        assert!(out[0].ok && out[0].power.is_none());
        assert!(!out[1].ok);
        assert_eq!(
            out[1].error.as_deref(),
            Some("no IPMI address (set it with `wwctl node set --ipmiaddr`)")
        );
    }
}
