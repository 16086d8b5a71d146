//! Dynamic address allocation and the append-only lease log.
//!
//! Offers hold an address for [`super::OFFER_HOLD`]; a REQUEST binds it for
//! the lease time and appends a line to the log. The log is replayed and
//! compacted (atomically rewritten with only live leases) at start-up, so
//! leases survive restarts. Appends are buffered and synced by the server at
//! a short interval: a crash loses at most that interval's bindings, and those
//! clients simply ask again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use proto::Mac;

use crate::fsutil;

/// Seconds since the Unix epoch; the table takes time as an argument so it
/// stays a pure data structure.
pub type Secs = u64;

/// One client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub expires: Secs,
    pub bound: bool,
}

/// Why a lease log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading lease log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing lease log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The dynamic range and who holds which address in it.
#[derive(Debug)]
pub struct LeaseTable {
    start: u32,
    end: u32,
    by_mac: HashMap<Mac, Lease>,
    by_ip: HashMap<u32, Mac>,
    /// Addresses pinned to nodes: never handed out dynamically.
    reserved: HashSet<u32>,
    /// Addresses a client declined (in use by someone else) until this time.
    declined: HashMap<u32, Secs>,
    /// The next address never handed out; past `end` once all were.
    fresh: u64,
    /// Addresses handed back (released, expired, moved): reused in order.
    recycled: BTreeSet<u32>,
    /// When expired leases were last swept into `recycled`.
    swept: Option<Secs>,
    log: Option<LeaseLog>,
}

impl LeaseTable {
    /// A table for `range` (inclusive); `None` allocates nothing.
    pub fn new(
        range: Option<(Ipv4Addr, Ipv4Addr)>,
        reserved: impl IntoIterator<Item = Ipv4Addr>,
    ) -> Self {
        let (start, end) = match range {
            Some((a, b)) if u32::from(a) <= u32::from(b) => (u32::from(a), u32::from(b)),
            _ => (1, 0),
        };
        Self {
            start,
            end,
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
            reserved: reserved.into_iter().map(u32::from).collect(),
            declined: HashMap::new(),
            fresh: u64::from(start),
            recycled: BTreeSet::new(),
            swept: None,
            log: None,
        }
    }

    /// Replaces the set of addresses pinned to nodes.
    pub fn set_reserved(&mut self, reserved: impl IntoIterator<Item = Ipv4Addr>) {
        self.reserved = reserved.into_iter().map(u32::from).collect();
    }

    /// Replays and compacts the log at `path`, then appends to it.
    pub fn attach_log(&mut self, path: &Path, now: Secs) -> Result<(), LeaseError> {
        let read_err = |source| LeaseError::Read {
            path: path.to_owned(),
            source,
        };
        match File::open(path) {
            Ok(f) => {
                for (n, line) in BufReader::new(f).lines().enumerate() {
                    let line = line.map_err(read_err)?;
                    if let Err(why) = self.replay(&line, now) {
                        tracing::warn!(
                            "{}:{}: skipping lease record: {why}",
                            path.display(),
                            n + 1
                        );
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(read_err(e)),
        }
        let write_err = |source: io::Error| LeaseError::Write {
            path: path.to_owned(),
            source,
        };
        let mut compact = String::new();
        let mut live: Vec<_> = self
            .by_mac
            .iter()
            .filter(|(_, l)| l.bound && l.expires > now)
            .collect();
        live.sort_by_key(|(_, l)| u32::from(l.ip));
        for (mac, l) in live {
            compact.push_str(&format!("bind {mac} {} {}\n", l.ip, l.expires));
        }
        fsutil::write_atomic(path, compact.as_bytes(), 0o644)
            .map_err(|e| write_err(io::Error::other(format!("{e:#}"))))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(write_err)?;
        self.log = Some(LeaseLog {
            path: path.to_owned(),
            out: BufWriter::new(file),
            dirty: false,
        });
        Ok(())
    }

    fn replay(&mut self, line: &str, now: Secs) -> Result<(), &'static str> {
        let mut f = line.split_whitespace();
        let verb = f.next().ok_or("empty line")?;
        let mac: Mac = f.next().ok_or("no MAC")?.parse().map_err(|_| "bad MAC")?;
        let ip: Ipv4Addr = f
            .next()
            .ok_or("no address")?
            .parse()
            .map_err(|_| "bad address")?;
        match verb {
            "bind" => {
                let expires: Secs = f
                    .next()
                    .ok_or("no expiry")?
                    .parse()
                    .map_err(|_| "bad expiry")?;
                if expires > now && self.in_range(ip) {
                    self.set(
                        mac,
                        Lease {
                            ip,
                            expires,
                            bound: true,
                        },
                    );
                }
            }
            "release" => self.remove(mac, ip),
            _ => return Err("unknown record"),
        }
        Ok(())
    }

    fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&u32::from(ip))
    }

    /// True when `ip` may go to `mac`: in range, not pinned, not declined,
    /// and free or already `mac`'s.
    fn available(&self, ip: u32, mac: Mac, now: Secs) -> bool {
        if !(self.start..=self.end).contains(&ip) || self.reserved.contains(&ip) {
            return false;
        }
        if self.declined.get(&ip).is_some_and(|&until| until > now) {
            return false;
        }
        match self.by_ip.get(&ip) {
            None => true,
            Some(owner) if *owner == mac => true,
            Some(owner) => self.by_mac.get(owner).is_none_or(|l| l.expires <= now),
        }
    }

    fn set(&mut self, mac: Mac, lease: Lease) {
        if let Some(old) = self.by_mac.insert(mac, lease)
            && old.ip != lease.ip
            && self.by_ip.get(&u32::from(old.ip)) == Some(&mac)
        {
            self.by_ip.remove(&u32::from(old.ip));
            self.recycle(old.ip);
        }
        if let Some(prev) = self.by_ip.insert(u32::from(lease.ip), mac)
            && prev != mac
        {
            self.by_mac.remove(&prev);
        }
    }

    fn remove(&mut self, mac: Mac, ip: Ipv4Addr) {
        if self.by_mac.get(&mac).is_some_and(|l| l.ip == ip) {
            self.by_mac.remove(&mac);
            self.by_ip.remove(&u32::from(ip));
            self.recycle(ip);
        }
    }

    fn recycle(&mut self, ip: Ipv4Addr) {
        if self.in_range(ip) {
            self.recycled.insert(u32::from(ip));
        }
    }

    /// The lease `mac` currently holds, if unexpired.
    pub fn get(&self, mac: Mac, now: Secs) -> Option<Lease> {
        self.by_mac.get(&mac).copied().filter(|l| l.expires > now)
    }

    /// Picks an address for `mac` and holds it for `hold` seconds: its
    /// previous address, else the one it asked for, else the next free one.
    pub fn offer(
        &mut self,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        now: Secs,
        hold: Secs,
    ) -> Option<Ipv4Addr> {
        if let Some(l) = self.by_mac.get(&mac).copied()
            && self.available(u32::from(l.ip), mac, now)
        {
            let expires = if l.bound && l.expires > now {
                l.expires
            } else {
                now + hold
            };
            self.set(mac, Lease { expires, ..l });
            return Some(l.ip);
        }
        let ip = match requested
            .map(u32::from)
            .filter(|&r| self.available(r, mac, now))
        {
            Some(r) => r,
            None => self.next_free(mac, now)?,
        };
        let ip = Ipv4Addr::from(ip);
        self.set(
            mac,
            Lease {
                ip,
                expires: now + hold,
                bound: false,
            },
        );
        Some(ip)
    }

    /// The next address for a new client: never-used addresses first, then
    /// recycled ones. When both run out, expired leases and declines are
    /// swept back at most once a second, so a full range answers "none" in
    /// constant time instead of scanning it for every DISCOVER.
    fn next_free(&mut self, mac: Mac, now: Secs) -> Option<u32> {
        while self.fresh <= u64::from(self.end) {
            let ip =
                u32::try_from(self.fresh).expect("fresh stays within the u32 range while <= end");
            self.fresh += 1;
            if self.available(ip, mac, now) {
                return Some(ip);
            }
        }
        if let Some(ip) = self.pop_recycled(mac, now) {
            return Some(ip);
        }
        if self.swept.is_some_and(|t| t >= now) {
            return None;
        }
        self.swept = Some(now);
        let expired: Vec<(Mac, Ipv4Addr)> = self
            .by_mac
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(m, l)| (*m, l.ip))
            .collect();
        for (m, ip) in expired {
            self.remove(m, ip);
        }
        let cleared: Vec<u32> = self
            .declined
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in cleared {
            self.declined.remove(&ip);
            self.recycled.insert(ip);
        }
        self.pop_recycled(mac, now)
    }

    fn pop_recycled(&mut self, mac: Mac, now: Secs) -> Option<u32> {
        while let Some(ip) = self.recycled.pop_first() {
            if self.available(ip, mac, now) {
                return Some(ip);
            }
        }
        None
    }

    /// Binds `ip` to `mac` for `secs` (a REQUEST); false when the address
    /// is not `mac`'s to take.
    pub fn bind(&mut self, mac: Mac, ip: Ipv4Addr, now: Secs, secs: Secs) -> bool {
        if !self.available(u32::from(ip), mac, now) {
            return false;
        }
        let expires = now + secs;
        self.set(
            mac,
            Lease {
                ip,
                expires,
                bound: true,
            },
        );
        if let Some(log) = &mut self.log {
            log.append(format_args!("bind {mac} {ip} {expires}\n"));
        }
        true
    }

    /// Frees `mac`'s address (RELEASE).
    pub fn release(&mut self, mac: Mac, ip: Ipv4Addr) {
        if self.by_mac.get(&mac).is_some_and(|l| l.ip == ip) {
            self.remove(mac, ip);
            if let Some(log) = &mut self.log {
                log.append(format_args!("release {mac} {ip}\n"));
            }
        }
    }

    /// `ip` is in use by someone we do not know (DECLINE): skip it for a while.
    pub fn decline(&mut self, mac: Mac, ip: Ipv4Addr, now: Secs, quarantine: Secs) {
        self.remove(mac, ip);
        self.declined.insert(u32::from(ip), now + quarantine);
    }

    /// Writes buffered log records and syncs them to disk.
    pub fn sync(&mut self) -> Result<(), LeaseError> {
        match &mut self.log {
            Some(log) => log.sync(),
            None => Ok(()),
        }
    }

    /// Number of clients holding an unexpired address.
    pub fn active(&self, now: Secs) -> usize {
        self.by_mac.values().filter(|l| l.expires > now).count()
    }
}

#[derive(Debug)]
struct LeaseLog {
    path: PathBuf,
    out: BufWriter<File>,
    dirty: bool,
}

impl LeaseLog {
    fn append(&mut self, record: std::fmt::Arguments<'_>) {
        if let Err(e) = self.out.write_fmt(record) {
            tracing::error!("appending to lease log {}: {e}", self.path.display());
        }
        self.dirty = true;
    }

    fn sync(&mut self) -> Result<(), LeaseError> {
        if !self.dirty {
            return Ok(());
        }
        let err = |source| LeaseError::Write {
            path: self.path.clone(),
            source,
        };
        self.out.flush().map_err(err)?;
        self.out.get_ref().sync_data().map_err(err)?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([0x52, 0x54, 0, 0, 0, n])
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn table() -> LeaseTable {
        LeaseTable::new(
            Some((ip("10.0.0.100"), ip("10.0.0.102"))),
            [ip("10.0.0.101")],
        )
    }

    #[test]
    fn offers_skip_reserved_and_reuse_per_client() {
        let mut t = table();
        assert_eq!(t.offer(mac(1), None, 0, 30), Some(ip("10.0.0.100")));
        assert_eq!(
            t.offer(mac(2), None, 0, 30),
            Some(ip("10.0.0.102")),
            "101 is reserved"
        );
        assert_eq!(
            t.offer(mac(3), None, 0, 30),
            None,
            "range exhausted while offers are held"
        );
        assert_eq!(
            t.offer(mac(1), None, 5, 30),
            Some(ip("10.0.0.100")),
            "same client, same address"
        );
        // Once the hold runs out, the address can go to someone else.
        assert_eq!(t.offer(mac(3), None, 100, 30), Some(ip("10.0.0.100")));
    }

    /// Regression: once the range was full, every DISCOVER scanned all of it
    /// (2 ms each for a /16), which capped the server far below its speed.
    #[test]
    fn full_range_answers_none_and_reclaims_after_expiry() {
        let mut t = LeaseTable::new(Some((ip("10.0.0.1"), ip("10.0.0.4"))), []);
        for n in 1..=4 {
            assert!(t.offer(mac(n), None, 0, 30).is_some());
        }
        for n in 5..=50 {
            assert_eq!(t.offer(mac(n), None, 1, 30), None);
        }
        assert!(t.bind(mac(2), ip("10.0.0.2"), 1, 120));
        // Holds expire at 30; mac 2's binding lasts to 121.
        let got: Vec<_> = (60..63).map(|n| t.offer(mac(n), None, 40, 30)).collect();
        assert_eq!(
            got,
            [
                Some(ip("10.0.0.1")),
                Some(ip("10.0.0.3")),
                Some(ip("10.0.0.4"))
            ]
        );
        assert_eq!(t.offer(mac(70), None, 40, 30), None, "mac 2 still holds .2");
    }

    #[test]
    fn requested_address_honoured_when_free() {
        let mut t = table();
        assert_eq!(
            t.offer(mac(1), Some(ip("10.0.0.102")), 0, 30),
            Some(ip("10.0.0.102"))
        );
        assert_eq!(
            t.offer(mac(2), Some(ip("10.0.0.102")), 0, 30),
            Some(ip("10.0.0.100"))
        );
        assert_eq!(t.offer(mac(3), Some(ip("10.0.0.101")), 0, 30), None);
    }

    #[test]
    fn bind_refuses_someone_elses_address() {
        let mut t = table();
        assert!(t.bind(mac(1), ip("10.0.0.100"), 0, 120));
        assert!(!t.bind(mac(2), ip("10.0.0.100"), 10, 120));
        assert!(!t.bind(mac(2), ip("10.0.0.101"), 10, 120), "reserved");
        assert!(
            !t.bind(mac(2), ip("10.0.1.1"), 10, 120),
            "outside the range"
        );
        assert!(
            t.bind(mac(2), ip("10.0.0.100"), 200, 120),
            "expired lease is free again"
        );
        assert_eq!(t.get(mac(1), 200), None);
    }

    #[test]
    fn release_and_decline_free_the_address() {
        let mut t = table();
        assert!(t.bind(mac(1), ip("10.0.0.100"), 0, 120));
        t.release(mac(1), ip("10.0.0.100"));
        assert_eq!(t.get(mac(1), 1), None);
        assert!(t.bind(mac(2), ip("10.0.0.100"), 1, 120));
        t.decline(mac(2), ip("10.0.0.100"), 2, 60);
        assert_eq!(
            t.offer(mac(3), Some(ip("10.0.0.100")), 3, 30),
            Some(ip("10.0.0.102"))
        );
    }

    #[test]
    fn leases_survive_a_restart_through_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dhcp.leases");
        let mut t = table();
        t.attach_log(&path, 0).unwrap();
        assert!(t.bind(mac(1), ip("10.0.0.102"), 0, 120));
        assert!(t.bind(mac(2), ip("10.0.0.100"), 0, 120));
        t.release(mac(2), ip("10.0.0.100"));
        t.sync().unwrap();

        let mut again = table();
        again.attach_log(&path, 10).unwrap();
        assert_eq!(again.get(mac(1), 10).map(|l| l.ip), Some(ip("10.0.0.102")));
        assert_eq!(again.get(mac(2), 10), None);
        // Compaction left one live record.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

        // Expired leases are dropped on replay.
        let mut later = table();
        later.attach_log(&path, 1000).unwrap();
        assert_eq!(later.active(1000), 0);
    }

    #[test]
    fn corrupt_log_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dhcp.leases");
        std::fs::write(
            &path,
            "bind zz 10.0.0.100 99\ngarbage\nbind 52:54:00:00:00:01 10.0.0.100 99\n",
        )
        .unwrap();
        let mut t = table();
        t.attach_log(&path, 0).unwrap();
        assert_eq!(t.get(mac(1), 0).map(|l| l.ip), Some(ip("10.0.0.100")));
    }
}
