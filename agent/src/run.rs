//! The loop: poll, apply on change, report, sleep (interval ± 10 %, or an
//! exponential back-off after an error), wake early on SIGHUP.

use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::apply;
use crate::archive;
use crate::http::{Client, query_escape};
use crate::log;
use crate::notify;
use crate::record::Record;
use crate::rng::Rng;
use crate::settings::Settings;
use crate::signals::{Signal, Signals};

/// Poll jitter: ± this fraction of the interval, so a rack of nodes booted
/// together does not poll in lock-step.
const JITTER: f64 = 0.10;
/// First delay after a failed poll; doubles per failure up to [`BACKOFF_CAP`].
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Connect, read and write timeout of one request.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Stage name in `POST /status/{wwid}`.
const STATUS_STAGE: &str = "WWCLIENT_SYNC";
/// Held (`flock`) by the running agent, in the state directory.
const LOCK_FILE: &str = "lock";
/// Longest error body quoted in a log line.
const ERROR_BODY: u64 = 256;
/// The node token, both ways (see the head's `tls::token`).
const TOKEN_HEADER: &str = "X-Warewulf-Token";
/// Asks the head for a token in a header rather than in an archive.
const TOKEN_VIA_HEADER: &str = "X-Warewulf-Token-Via";

/// What one poll found.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Applied,
}

pub fn run(settings: Settings) -> anyhow::Result<()> {
    let signals = Signals::block().context("blocking signals")?;
    fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("creating {}", settings.state_dir.display()))?;
    // One agent per state directory: two would race on the root and the record.
    let lock_path = settings.state_dir.join(LOCK_FILE);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            bail!(
                "another wwclient is running (it holds {})",
                lock_path.display()
            )
        }
        Err(fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path.display()));
        }
    }
    let mut record = Record::load(&settings.state_dir);
    if apply::recover(&settings.root, &settings.state_dir, &mut record)? {
        // Killed during an apply: the root may hold parts of a newer overlay
        // than the record said, so the overlay is fetched in full once.
        log::warn!("the last apply was interrupted; re-applying the runtime overlay");
    }
    let mut client = Client::new(
        &settings.host,
        settings.port,
        settings.bind.clone(),
        IO_TIMEOUT,
    );
    if let Some(ca) = &settings.ca {
        let config = crate::tls::client_config_from_file(ca)?;
        client = client.with_tls(config, crate::tls::server_name(&settings.host)?);
    }
    let mut agent = Agent {
        client,
        record,
        settings,
        reported_sync: false,
    };
    let s = &agent.settings;
    log::info!(
        "node {}, head {}://{}:{}, every {} s{}, applying to {}",
        s.wwid,
        if s.ca.is_some() { "https" } else { "http" },
        s.host,
        s.port,
        s.interval.as_secs(),
        s.bind
            .as_ref()
            .map(|r| format!(", from source ports {}-{}", r.start(), r.end()))
            .unwrap_or_default(),
        s.root.display()
    );
    let mut rng = Rng::from_entropy();
    let mut ready = false;
    let mut failures = 0u32;
    loop {
        if signals.pending() == Some(Signal::Stop) {
            log::info!("stopping");
            return Ok(());
        }
        match agent.poll() {
            Ok(_) => {
                failures = 0;
                if !ready {
                    ready = true;
                    match notify::notify("READY=1\nSTATUS=runtime overlay in sync") {
                        Ok(true) => log::debug!("told systemd we are ready"),
                        Ok(false) => {}
                        Err(e) => log::warn!("notifying systemd: {e}"),
                    }
                }
                if agent.settings.once {
                    return Ok(());
                }
            }
            Err(e) => {
                if agent.settings.once {
                    return Err(e);
                }
                failures = failures.saturating_add(1);
                log::error!("{e:#}");
            }
        }
        let delay = if failures == 0 {
            agent.settings.interval.mul_f64(rng.jitter(JITTER))
        } else {
            backoff(failures).mul_f64(rng.jitter(JITTER))
        };
        log::debug!("next poll in {:.1} s", delay.as_secs_f64());
        match signals.wait(delay) {
            Some(Signal::Poll) => log::info!("SIGHUP: polling now"),
            Some(Signal::Stop) => {
                log::info!("stopping");
                return Ok(());
            }
            None => {}
        }
    }
}

/// Delay after `failures` consecutive failed polls (≥ 1).
fn backoff(failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << shift).min(BACKOFF_CAP)
}

struct Agent {
    settings: Settings,
    client: Client,
    record: Record,
    /// Whether this run has reported to `/status` yet.
    reported_sync: bool,
}

impl Agent {
    /// `?assetkey=` (Warewulf's spelling) and the header form of the key.
    fn query(&self) -> String {
        match &self.settings.asset_key {
            Some(k) => format!("?{}={}", proto::QUERY_ASSETKEY, query_escape(k)),
            None => String::new(),
        }
    }

    /// The node token: from the token file, else (HTTPS only) fetched
    /// with `HEAD /system/{wwid}`, which the head answers only to this
    /// node's own address.
    fn token(&mut self, renew: bool) -> Option<String> {
        let path = &self.settings.token_file;
        if !renew
            && let Ok(t) = fs::read_to_string(path)
            && !t.trim().is_empty()
        {
            return Some(t.trim().to_owned());
        }
        self.settings.ca.as_ref()?;
        let target = format!("/system/{}{}", self.settings.wwid, self.query());
        let mut headers = vec![(TOKEN_VIA_HEADER, "header")];
        if let Some(k) = &self.settings.asset_key {
            headers.push(("X-Warewulf-Asset-Key", k.as_str()));
        }
        match self.client.request("HEAD", &target, &headers, b"") {
            Ok(r) if r.status == 200 => {
                let t = r.header(TOKEN_HEADER).map(str::to_owned);
                if let Some(t) = &t {
                    self.save_token(t);
                }
                t
            }
            Ok(mut r) => {
                let status = r.status;
                log::warn!("asking for a node token: {status}: {}", r.text(ERROR_BODY));
                None
            }
            Err(e) => {
                log::warn!("asking for a node token: {e}");
                None
            }
        }
    }

    /// Keeps a rotated token (mode 0600, written atomically).
    fn save_token(&self, token: &str) {
        let path = &self.settings.token_file;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(format!("{token}\n").as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        if let Err(e) = write() {
            log::warn!("saving the node token to {}: {e}", path.display());
        }
    }

    fn poll(&mut self) -> anyhow::Result<Outcome> {
        let token = if self.settings.ca.is_some() {
            self.token(false)
        } else {
            None
        };
        match self.poll_with(token.as_deref()) {
            // An expired or foreign token: fetch a fresh one and retry once.
            Err(e) if token.is_some() && e.to_string().contains("(403:") => {
                log::info!("the head refused the node token; renewing it");
                let fresh = self.token(true);
                self.poll_with(fresh.as_deref())
            }
            other => other,
        }
    }

    fn poll_with(&mut self, token: Option<&str>) -> anyhow::Result<Outcome> {
        let path = format!("/runtime/{}", self.settings.wwid);
        let target = format!("{path}{}", self.query());
        let if_none_match = self.record.etag.as_ref().map(|e| format!("\"{e}\""));
        let mut headers = Vec::new();
        if let Some(k) = &self.settings.asset_key {
            headers.push(("X-Warewulf-Asset-Key", k.as_str()));
        }
        if let Some(t) = token {
            headers.push((TOKEN_HEADER, t));
        }
        if let Some(v) = &if_none_match {
            headers.push(("If-None-Match", v.as_str()));
        } else if let Some(v) = &self.record.last_modified {
            // Heads that only know dates (Go's http.ServeContent without an ETag).
            headers.push(("If-Modified-Since", v.as_str()));
        }
        let started = Instant::now();
        let mut resp = self
            .client
            .request("GET", &target, &headers, b"")
            .with_context(|| {
                format!(
                    "GET {path} from {}:{}",
                    self.settings.host, self.settings.port
                )
            })?;
        if let Some(fresh) = resp.header(TOKEN_HEADER).map(str::to_owned)
            && Some(fresh.as_str()) != token
        {
            self.save_token(&fresh);
        }
        match resp.status {
            304 => {
                let (sent, received) = resp.traffic();
                log::debug!(
                    "runtime overlay unchanged (304 from source port {}; {sent} bytes sent, {received} received)",
                    resp.local_port
                );
                if !self.reported_sync {
                    self.report("in sync (unchanged since the last apply)");
                }
                Ok(Outcome::Unchanged)
            }
            200 => {
                let etag = resp.header("etag").map(parse_etag);
                let last_modified = resp.header("last-modified").map(str::to_owned);
                let state_dir = self.settings.state_dir.clone();
                apply::recover(&self.settings.root, &state_dir, &mut self.record)?;
                let staged = archive::stage(resp.body(), &state_dir)
                    .with_context(|| format!("reading the runtime overlay from GET {path}"))?;
                let (_, received) = resp.traffic();
                drop(resp);
                let applied = apply::apply(
                    &self.settings.root,
                    &staged,
                    &self.record.entries,
                    &state_dir,
                )?;
                let st = applied.stats;
                self.record.entries = applied.entries;
                // A partial apply is retried in full by the next poll.
                (self.record.etag, self.record.last_modified) = if st.failed == 0 {
                    (etag.clone(), last_modified)
                } else {
                    (None, None)
                };
                self.record
                    .commit(&state_dir)
                    .context("saving the record of applied files")?;
                let summary = format!(
                    "{} written, {} removed, {} local changes kept, {} unchanged, {} failed",
                    st.written, st.removed, st.kept_local, st.unchanged, st.failed
                );
                let short_tag: String = etag
                    .as_deref()
                    .unwrap_or("(no etag)")
                    .chars()
                    .take(12)
                    .collect();
                log::info!(
                    "applied runtime overlay {short_tag} ({received} bytes in {:.2} s): {summary}",
                    started.elapsed().as_secs_f64()
                );
                self.report(&format!("overlay {short_tag}: {summary}"));
                if st.failed > 0 {
                    bail!(
                        "{} paths of the runtime overlay could not be applied",
                        st.failed
                    );
                }
                Ok(Outcome::Applied)
            }
            403 if self.settings.bind.is_none() => {
                let why = resp.text(ERROR_BODY);
                bail!(
                    "the head refused GET {path} (403: {why}); a secure head serves the runtime overlay only to source ports below 1024: run as root with --secure or --port-range"
                )
            }
            status => {
                let why = resp.text(ERROR_BODY);
                bail!("the head answered {status} to GET {path}: {why}")
            }
        }
    }

    /// `POST /status/{wwid}`, best effort: the head's timeline is a
    /// convenience, never a reason to fail a sync.
    fn report(&mut self, detail: &str) {
        let body = serde_json::json!({ "stage": STATUS_STAGE, "detail": detail }).to_string();
        let target = format!("/status/{}{}", self.settings.wwid, self.query());
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(k) = &self.settings.asset_key {
            headers.push(("X-Warewulf-Asset-Key", k.as_str()));
        }
        // Tried once per start even if it fails: a head without `/status`
        // (Warewulf's) must not cost every unchanged poll a second request.
        self.reported_sync = true;
        match self
            .client
            .request("POST", &target, &headers, body.as_bytes())
        {
            Ok(mut r) if (200..300).contains(&r.status) => {
                let _ = r.text(ERROR_BODY);
            }
            Ok(mut r) => {
                let status = r.status;
                log::debug!("status report answered {status}: {}", r.text(ERROR_BODY));
            }
            Err(e) => log::debug!("status report failed: {e}"),
        }
    }
}

/// `"abc"` or `W/"abc"` → `abc`.
fn parse_etag(v: &str) -> String {
    v.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let got: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("\"ab\""), "ab");
        assert_eq!(parse_etag("W/\"ab\""), "ab");
        assert_eq!(parse_etag("ab"), "ab");
    }
}
