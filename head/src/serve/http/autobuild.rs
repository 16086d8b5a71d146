//! `warewulf: autobuild overlays`: a node's system or runtime request first
//! brings its overlay images up to date.
//!
//! Requests queue their node; one builder task at a time runs
//! [`overlay::build`](crate::overlay::build::build) for every node queued
//! (an unchanged node costs a hash comparison, not a render), and each
//! request waits for the build that covers its node. So a thousand nodes
//! booting at once cause one or two builds, concurrent requests of one node
//! share one build, and a node is checked at most once per [`FRESH_FOR`].
//! A failed build is logged and the images that exist are served.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use initramfs::compress::Compression;
use tokio::sync::watch;

use crate::config::Config;
use crate::overlay::build::{self, BuildOptions};

/// A node checked this recently is not checked again.
const FRESH_FOR: Duration = Duration::from_secs(10);
/// A request waits at most this long for a build, then takes what exists.
const WAIT_MAX: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Queue {
    /// Node → compressions it needs, waiting for the next build.
    pending: HashMap<String, BTreeSet<&'static str>>,
    running: bool,
    /// When each node was last brought up to date.
    fresh: HashMap<String, Instant>,
}

/// The on-request overlay builder of one server.
pub struct Autobuild {
    queue: Mutex<Queue>,
    /// Number of builds finished.
    done: watch::Sender<u64>,
}

impl Default for Autobuild {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue::default()),
            done: watch::channel(0).0,
        }
    }
}

impl Autobuild {
    /// Returns once `node`'s overlays were checked (and rebuilt if stale) in
    /// `ext` (`gz`, `zst`) and the compressions it already has.
    pub async fn ensure(self: &Arc<Self>, config: &Arc<Config>, node: &str, ext: &'static str) {
        let mut done = self.done.subscribe();
        let target = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            if q.fresh.get(node).is_some_and(|t| t.elapsed() < FRESH_FOR)
                && has_pointer(config, node, ext)
            {
                return;
            }
            q.pending.entry(node.to_owned()).or_default().insert(ext);
            let now = *done.borrow_and_update();
            if q.running {
                // The running build took its nodes before this one queued.
                now + 2
            } else {
                q.running = true;
                let batch = std::mem::take(&mut q.pending);
                let me = Arc::clone(self);
                let config = Arc::clone(config);
                tokio::spawn(async move { me.builder(config, batch).await });
                now + 1
            }
        };
        let waited = tokio::time::timeout(WAIT_MAX, done.wait_for(|n| *n >= target)).await;
        if waited.is_err() {
            tracing::warn!("node {node}: overlay build still running; serving what exists");
        }
    }

    /// Builds `batch`, then whatever queued meanwhile, until the queue is
    /// empty. Finishing a build, counting it and taking the next batch happen
    /// under one lock, so a waiter's target count is always right.
    async fn builder(
        self: Arc<Self>,
        config: Arc<Config>,
        mut batch: HashMap<String, BTreeSet<&'static str>>,
    ) {
        loop {
            let nodes: Vec<String> = batch.keys().cloned().collect();
            let cfg = Arc::clone(&config);
            let result = tokio::task::spawn_blocking(move || build_batch(&cfg, batch)).await;
            if let Err(e) = result {
                tracing::error!("overlay autobuild panicked: {e}");
            }
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            for n in nodes {
                q.fresh.insert(n, now);
            }
            self.done.send_modify(|n| *n += 1);
            if q.pending.is_empty() {
                q.running = false;
                return;
            }
            batch = std::mem::take(&mut q.pending);
        }
    }
}

/// True when `node` has its system image in `ext`.
fn has_pointer(config: &Config, node: &str, ext: &str) -> bool {
    pointer_dir(config, node)
        .join(format!("__SYSTEM__.img.{ext}"))
        .exists()
}

fn pointer_dir(config: &Config, node: &str) -> std::path::PathBuf {
    config.paths.wwprovisiondir.join("overlays").join(node)
}

/// Runs one build per distinct compression set: what each node has already
/// plus what was asked for, so a request never drops a compression an admin
/// built.
fn build_batch(config: &Config, batch: HashMap<String, BTreeSet<&'static str>>) {
    let mut groups: HashMap<BTreeSet<&'static str>, Vec<String>> = HashMap::new();
    for (node, mut exts) in batch {
        let dir = pointer_dir(config, &node);
        for ext in ["gz", "zst"] {
            if Path::new(&dir)
                .join(format!("__SYSTEM__.img.{ext}"))
                .exists()
            {
                exts.insert(ext);
            }
        }
        groups.entry(exts).or_default().push(node);
    }
    for (exts, nodes) in groups {
        let opts = BuildOptions {
            nodes: nodes.clone(),
            workers: 0,
            compressions: exts
                .iter()
                .filter_map(|e| Compression::from_name(e))
                .collect(),
            force: false,
        };
        match build::build(config, &opts, &ProgressBar::hidden()) {
            Ok(report) => {
                if report.images_built > 0 {
                    tracing::info!(
                        "autobuild: {} overlay images rebuilt for {}",
                        report.images_built,
                        nodes.join(",")
                    );
                }
                for e in report.errors.iter().take(5) {
                    tracing::warn!("autobuild: {e}");
                }
            }
            Err(e) => tracing::error!("autobuild of {}: {e:#}", nodes.join(",")),
        }
    }
}
