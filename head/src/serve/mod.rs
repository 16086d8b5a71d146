//! `wwctl server`: what a node talks to from power-on. This module owns the
//! process (signals, reloading `nodes.conf`, discovery); `dhcp/` owns the
//! DHCP protocol.

pub mod dhcp;
pub mod http;
pub mod ratelimit;
pub mod tftp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use proto::Mac;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::nodedb::model::{NetDev, parse_bool};
use crate::nodedb::{NodeDb, NodeDbError};
use dhcp::leases::LeaseTable;
use dhcp::server::{Dhcp, hosts_from_nodes, settings_from_config};

/// How often `nodes.conf` is checked for changes made by `wwctl` or an editor.
const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Where DHCP leases are kept across restarts.
pub fn lease_log(config: &Config) -> PathBuf {
    config
        .paths
        .localstatedir
        .join("warewulf")
        .join("dhcp.leases")
}

/// Runs every enabled service until SIGTERM or SIGINT. SIGHUP re-reads
/// `nodes.conf` at once.
pub async fn run(config: Config) -> Result<()> {
    let nodes_path = config.nodes_conf();
    let mut db = NodeDb::load(&nodes_path)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let dhcp = if config.dhcp.enabled {
        let settings = settings_from_config(&config)?;
        let hosts = hosts_from_nodes(&db.merged_all());
        let reserved: Vec<_> = hosts.reservations.values().map(|r| r.ip).collect();
        let mut leases = LeaseTable::new(settings.range, reserved);
        let log = lease_log(&config);
        let now = unix_now();
        leases
            .attach_log(&log, now)
            .context("opening the DHCP lease log")?;
        tracing::info!(
            "{} DHCP leases restored from {}",
            leases.active(now),
            log.display()
        );
        // The responder reports unknown MACs only while some node is
        // discoverable; the channel lives as long as the service.
        let (disc_tx, disc_rx) = mpsc::unbounded_channel();
        let dhcp = Arc::new(Dhcp::new(settings, hosts, leases, disc_tx));
        tracing::info!("DHCP on {}", describe(&config.dhcp.interfaces));
        let serve = Arc::clone(&dhcp);
        let interfaces = config.dhcp.interfaces.clone();
        let stop = stop_rx.clone();
        tasks.spawn(async move { serve.serve(&interfaces, stop).await });
        tasks.spawn(discover_loop(nodes_path.clone(), disc_rx, stop_rx.clone()));
        Some(dhcp)
    } else {
        None
    };

    if config.tftp.enabled {
        let roots = tftp::Roots::from_config(&config);
        tracing::info!(
            "TFTP on port {} from {} and {}",
            config.tftp.port,
            roots.ipxe.display(),
            roots.tftp.display()
        );
        tasks.spawn(tftp::serve(
            roots,
            config.tftp.port,
            config.dhcp.interfaces.clone(),
            stop_rx.clone(),
        ));
    }

    let http_state = Arc::new(http::HttpState::new(&config, db.merged_all()));
    // HTTP, and HTTPS with `tls`, on `dhcp: interfaces` only when set.
    let interfaces = &config.dhcp.interfaces;
    for listener in http::listeners(config.warewulf.port, interfaces)? {
        tracing::info!(
            "HTTP on port {} ({})",
            config.warewulf.port,
            describe(interfaces)
        );
        tasks.spawn(http::serve(
            Arc::clone(&http_state),
            listener,
            stop_rx.clone(),
        ));
    }
    if config.warewulf.tls {
        let tls = crate::tls::server_config(&config)?;
        for listener in http::listeners(config.warewulf.tls_port, interfaces)? {
            tracing::info!(
                "HTTPS on port {} ({})",
                config.warewulf.tls_port,
                describe(interfaces)
            );
            tasks.spawn(http::serve_tls(
                Arc::clone(&http_state),
                listener,
                Arc::clone(&tls),
                stop_rx.clone(),
            ));
        }
    }

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    loop {
        let forced = tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => true,
            _ = tick.tick() => false,
            Some(done) = tasks.join_next() => {
                // A service ended on its own: that is fatal for the server.
                done.context("a server task panicked")??;
                anyhow::bail!("a server task stopped unexpectedly");
            }
        };
        let changed = if forced {
            db.reload().map(|()| true)
        } else {
            db.reload_if_changed()
        };
        match changed {
            Ok(true) => {
                tracing::info!("{} changed; reloading nodes", nodes_path.display());
                if let Some(dhcp) = &dhcp {
                    dhcp.set_hosts(hosts_from_nodes(&db.merged_all()));
                }
                http_state.set_nodes(db.merged_all());
            }
            Ok(false) => {}
            Err(e) => tracing::error!("keeping the previous nodes: {:#}", anyhow::Error::from(e)),
        }
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        done.context("a server task panicked")??;
    }
    Ok(())
}

fn describe(interfaces: &[String]) -> String {
    if interfaces.is_empty() {
        "all interfaces".to_owned()
    } else {
        interfaces.join(", ")
    }
}

/// Writes each MAC reported by DHCP into the first discoverable node that
/// has no MAC on its primary network device, as Warewulf's discovery does.
async fn discover_loop(
    nodes_path: PathBuf,
    mut rx: mpsc::UnboundedReceiver<Mac>,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    loop {
        let mac = tokio::select! {
            m = rx.recv() => match m {
                Some(mac) => mac,
                None => return Ok(()),
            },
            _ = stop.changed() => return Ok(()),
        };
        let path = nodes_path.clone();
        let result = tokio::task::spawn_blocking(move || assign_discovered(&path, mac))
            .await
            .context("discovery task panicked")?;
        match result {
            Ok(Some(node)) => tracing::info!("discovered {mac}: assigned to node {node}"),
            Ok(None) => tracing::debug!("discovered {mac}, but no discoverable node is waiting"),
            Err(e) => tracing::error!("recording discovered {mac}: {:#}", anyhow::Error::from(e)),
        }
    }
}

/// The locked read-modify-write behind discovery; returns the node that got `mac`.
pub fn assign_discovered(nodes_path: &Path, mac: Mac) -> Result<Option<String>, NodeDbError> {
    NodeDb::update(nodes_path, |conf| {
        let known = conf.nodes().values().any(|n| {
            n.netdevs
                .iter()
                .flat_map(|m| m.values())
                .any(|nd| nd.hwaddr.as_deref().and_then(|h| h.parse::<Mac>().ok()) == Some(mac))
        });
        if known {
            return Ok(None);
        }
        for (name, node) in conf.nodes_mut().iter_mut() {
            if node.discoverable.as_deref().and_then(parse_bool) != Some(true) {
                continue;
            }
            let netname = node
                .primary_network
                .clone()
                .unwrap_or_else(|| "default".to_owned());
            let netdevs = node.netdevs.get_or_insert_with(Default::default);
            let nd: &mut NetDev = netdevs.entry(netname).or_default();
            if nd.hwaddr.as_deref().is_some_and(|h| !h.is_empty()) {
                continue;
            }
            nd.hwaddr = Some(mac.to_string());
            node.discoverable = None;
            return Ok(Some(name.clone()));
        }
        Ok(None)
    })
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
