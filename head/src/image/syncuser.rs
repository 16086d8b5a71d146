//! `wwctl image syncuser`: make an image's users and groups agree with the
//! head's, as Warewulf does, so that ids match across the cluster.
//!
//! Rules: an account in both keeps the image's line but takes the head's id;
//! an account only on the head is added; an account only in the image keeps
//! its id unless the head uses that id for another name, in which case the
//! head wins and the image account moves to a free id. Files in the image
//! owned by a moved id are re-owned (one walk, never following symlinks).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::fsat;
use crate::fsutil;

/// First id handed to an image account that had to move.
const FIRST_FREE_ID: u32 = 1000;
/// Ids at and above this are never handed out (nobody, -1).
const LAST_FREE_ID: u32 = 60000;

/// One line of `/etc/passwd` or `/etc/group`, split on `:`.
#[derive(Clone, Debug)]
struct Entry {
    fields: Vec<String>,
}

impl Entry {
    fn name(&self) -> &str {
        &self.fields[0]
    }
    fn id(&self) -> u32 {
        self.fields[2].parse().unwrap_or(u32::MAX)
    }
    fn set_id(&mut self, id: u32) {
        self.fields[2] = id.to_string();
    }
}

/// A parsed passwd or group file; lines that are not entries are kept.
#[derive(Clone, Debug)]
struct Db {
    lines: Vec<Result<Entry, String>>,
}

impl Db {
    fn parse(text: &str, path: &Path, min_fields: usize) -> Result<Self> {
        let mut lines = Vec::new();
        for (no, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with('+') || t.starts_with('-') {
                lines.push(Err(line.to_owned()));
                continue;
            }
            let fields: Vec<String> = line.split(':').map(str::to_owned).collect();
            if fields.len() < min_fields || fields[2].parse::<u32>().is_err() {
                bail!("{}:{}: malformed entry {line:?}", path.display(), no + 1);
            }
            lines.push(Ok(Entry { fields }));
        }
        Ok(Self { lines })
    }

    fn read(path: &Path, min_fields: usize) -> Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Self::parse(&text, path, min_fields)
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| l.as_ref().ok())
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            match l {
                Ok(e) => out.push_str(&e.fields.join(":")),
                Err(raw) => out.push_str(raw),
            }
            out.push('\n');
        }
        out
    }
}

/// One change syncuser makes (or would make).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Change {
    /// `user` or `group`.
    pub kind: &'static str,
    pub name: String,
    /// `None` when the account is added from the head.
    pub old_id: Option<u32>,
    pub new_id: u32,
    /// Why: `head id`, `added from head`, `clashed with head`.
    pub reason: &'static str,
}

/// What syncuser found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SyncReport {
    pub changes: Vec<Change>,
    /// Files re-owned (0 when only checking).
    pub files_chowned: u64,
}

/// Merges the head's `db` into the image's; returns the new image db, the
/// id moves (old → new) and the changes.
fn merge(
    head: &Db,
    image: &Db,
    kind: &'static str,
    changes: &mut Vec<Change>,
) -> (Db, HashMap<u32, u32>) {
    let head_by_name: HashMap<&str, &Entry> = head.entries().map(|e| (e.name(), e)).collect();
    let head_ids: HashMap<u32, &str> = head.entries().map(|e| (e.id(), e.name())).collect();
    let image_names: HashSet<&str> = image.entries().map(Entry::name).collect();
    let mut used: HashSet<u32> = head.entries().map(Entry::id).collect();
    used.extend(image.entries().map(Entry::id));
    let mut moves = HashMap::new();
    let mut out = image.clone();
    for line in &mut out.lines {
        let Ok(e) = line else { continue };
        let old = e.id();
        if let Some(h) = head_by_name.get(e.name()) {
            if h.id() != old {
                moves.insert(old, h.id());
                changes.push(Change {
                    kind,
                    name: e.name().to_owned(),
                    old_id: Some(old),
                    new_id: h.id(),
                    reason: "head id",
                });
                e.set_id(h.id());
            }
        } else if let Some(owner) = head_ids.get(&old)
            && *owner != e.name()
        {
            let new = (FIRST_FREE_ID..LAST_FREE_ID)
                .find(|i| !used.contains(i))
                .unwrap_or(LAST_FREE_ID);
            used.insert(new);
            moves.insert(old, new);
            changes.push(Change {
                kind,
                name: e.name().to_owned(),
                old_id: Some(old),
                new_id: new,
                reason: "clashed with head",
            });
            e.set_id(new);
        }
    }
    for h in head.entries() {
        if !image_names.contains(h.name()) {
            let mut fields = h.fields.clone();
            // Password hashes stay on the head.
            fields[1] = "x".into();
            changes.push(Change {
                kind,
                name: h.name().to_owned(),
                old_id: None,
                new_id: h.id(),
                reason: "added from head",
            });
            out.lines.push(Ok(Entry { fields }));
        }
    }
    (out, moves)
}

/// Syncs image `rootfs` with the head's `etc` (normally `/etc`). Only
/// reports unless `write` is set.
pub fn syncuser(rootfs: &Path, head_etc: &Path, write: bool) -> Result<SyncReport> {
    let mut report = SyncReport::default();
    let head_passwd = Db::read(&head_etc.join("passwd"), 7)?;
    let head_group = Db::read(&head_etc.join("group"), 4)?;
    let img_passwd_path = rootfs.join("etc/passwd");
    let img_group_path = rootfs.join("etc/group");
    for p in [&img_passwd_path, &img_group_path] {
        if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!("{} is a symlink; refusing to rewrite it", p.display());
        }
    }
    let img_passwd = Db::read(&img_passwd_path, 7)?;
    let img_group = Db::read(&img_group_path, 4)?;
    let (group, gid_moves) = merge(&head_group, &img_group, "group", &mut report.changes);
    let (mut passwd, uid_moves) = merge(&head_passwd, &img_passwd, "user", &mut report.changes);
    // Primary groups follow their group's move.
    for line in &mut passwd.lines {
        if let Ok(e) = line
            && let Ok(gid) = e.fields[3].parse::<u32>()
            && let Some(new) = gid_moves.get(&gid)
        {
            e.fields[3] = new.to_string();
        }
    }
    report
        .changes
        .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    if !write || report.changes.is_empty() {
        return Ok(report);
    }
    fs::create_dir_all(rootfs.join("etc")).context("creating the image's /etc")?;
    fsutil::write_atomic(&img_group_path, group.render().as_bytes(), 0o644)?;
    fsutil::write_atomic(&img_passwd_path, passwd.render().as_bytes(), 0o644)?;
    if !uid_moves.is_empty() || !gid_moves.is_empty() {
        let root =
            fsat::open_root(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
        report.files_chowned = chown_tree(root.as_raw_fd(), &uid_moves, &gid_moves)
            .with_context(|| format!("re-owning files in {}", rootfs.display()))?;
    }
    Ok(report)
}

/// Re-owns every entry below `dir` whose uid or gid moved.
fn chown_tree(dir: i32, uids: &HashMap<u32, u32>, gids: &HashMap<u32, u32>) -> Result<u64> {
    let mut n = 0;
    for name in fsat::list_dir(dir)? {
        let c = fsat::cname(&name)?;
        let st = fsat::lstat_at(dir, &c)?;
        let uid = uids.get(&st.st_uid).copied().unwrap_or(st.st_uid);
        let gid = gids.get(&st.st_gid).copied().unwrap_or(st.st_gid);
        if (uid, gid) != (st.st_uid, st.st_gid) {
            let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
            fsat::chown_at(dir, &c, uid, gid)?;
            // chown clears set-id bits; put them back.
            if !is_link && st.st_mode & 0o6000 != 0 {
                fsat::chmod_at(dir, &c, st.st_mode & 0o7777)?;
            }
            n += 1;
        }
        if fsat::is_dir(&st) {
            let sub = fsat::open_dir_at(dir, &c)?;
            n += chown_tree(sub.as_raw_fd(), uids, gids)?;
        }
    }
    Ok(n)
}

/// Counts of changes by reason, for a one-line summary.
pub fn summary(report: &SyncReport) -> BTreeMap<&'static str, usize> {
    let mut m = BTreeMap::new();
    for c in &report.changes {
        *m.entry(c.reason).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(text: &str) -> Db {
        Db::parse(text, Path::new("t"), 7).unwrap()
    }

    #[test]
    fn head_wins() {
        let head = db(
            "root:x:0:0::/root:/bin/sh\nmunge:x:990:990::/:/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash\n",
        );
        let image = db(
            "root:x:0:0::/root:/bin/sh\nmunge:x:995:995::/run/munge:/sbin/nologin\nsvc:x:990:990::/:/bin/false\n",
        );
        let mut changes = Vec::new();
        let (out, moves) = merge(&head, &image, "user", &mut changes);
        let text = out.render();
        assert!(
            text.contains("munge:x:990:995::/run/munge:/sbin/nologin"),
            "{text}"
        );
        assert!(text.contains("svc:x:1001:990::/:/bin/false"), "{text}");
        assert!(
            text.contains("alice:x:1000:1000::/home/alice:/bin/bash"),
            "{text}"
        );
        assert_eq!(moves.get(&995), Some(&990));
        assert_eq!(moves.get(&990), Some(&1001));
        assert_eq!(changes.len(), 3);
        assert!(Db::parse("bad:line\n", Path::new("p"), 7).is_err());
    }
}
