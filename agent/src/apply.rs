//! Applying a staged overlay to the root, one atomic step per path, and
//! deleting what an earlier overlay wrote and this one dropped.
//!
//! For each path `P` of the overlay, with `A` what the overlay says, `R` what
//! the record says the agent wrote last time, and `D` what is on disk:
//! - `D == A`: nothing to write; `P` is (now) ours.
//! - `R == A` but `D != A`: the overlay has not changed `P` since the agent
//!   wrote it, so somebody changed it locally: keep the local change. The
//!   next overlay that changes `P` overwrites it.
//! - otherwise: write `A` (temp file in the same directory, owner, mode,
//!   fsync, rename), so readers see the old or the new file, never a mix.
//!
//! Paths in the record but not in the overlay are deleted only if they still
//! are what the agent wrote (a locally changed file is left in place), and
//! directories only if the agent created them and they are empty. Paths the
//! agent never wrote are never deleted; existing directories are never
//! re-owned or re-moded.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::archive::{Content, Entry, Staged};
use crate::log;
use crate::record::{self, Pending, Record, Recorded};

/// What one apply did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Files and symlinks written, directories created or fixed.
    pub written: usize,
    pub removed: usize,
    /// Local changes kept (see the module comment).
    pub kept_local: usize,
    pub unchanged: usize,
    pub failed: usize,
}

/// The result of an apply: the new record entries and what happened.
pub struct Applied {
    pub entries: BTreeMap<String, Recorded>,
    pub stats: Stats,
}

/// What a path is on disk (`lstat`, never following a final symlink).
enum OnDisk {
    Missing,
    File(Metadata),
    Dir(Metadata),
    Symlink(Metadata, PathBuf),
    Other,
}

fn observe(path: &Path) -> io::Result<OnDisk> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
        Err(e) => return Err(e),
    };
    let ft = meta.file_type();
    Ok(if ft.is_file() {
        OnDisk::File(meta)
    } else if ft.is_dir() {
        OnDisk::Dir(meta)
    } else if ft.is_symlink() {
        let target = fs::read_link(path)?;
        OnDisk::Symlink(meta, target)
    } else {
        OnDisk::Other
    })
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Whether what is on disk at `path` is exactly `want`.
fn disk_is(disk: &OnDisk, path: &Path, want: &Recorded) -> bool {
    match (disk, want) {
        (
            OnDisk::File(m),
            Recorded::File {
                sha256,
                mode,
                uid,
                gid,
            },
        ) => {
            m.mode() & 0o7777 == *mode
                && m.uid() == *uid
                && m.gid() == *gid
                && sha256_file(path).is_ok_and(|s| s == *sha256)
        }
        (OnDisk::Symlink(m, t), Recorded::Symlink { target, uid, gid }) => {
            t.as_os_str() == target.as_str() && m.uid() == *uid && m.gid() == *gid
        }
        (OnDisk::Dir(m), Recorded::Dir { mode, uid, gid }) => {
            m.mode() & 0o7777 == *mode && m.uid() == *uid && m.gid() == *gid
        }
        _ => false,
    }
}

/// The record form of an overlay entry.
pub fn recorded(e: &Entry) -> Recorded {
    match &e.content {
        Content::File { sha256, .. } => Recorded::File {
            sha256: hex::encode(sha256),
            mode: e.perm,
            uid: e.uid,
            gid: e.gid,
        },
        Content::Symlink(target) => Recorded::Symlink {
            target: target.clone(),
            uid: e.uid,
            gid: e.gid,
        },
        Content::Dir => Recorded::Dir {
            mode: e.perm,
            uid: e.uid,
            gid: e.gid,
        },
    }
}

/// `dir/.wwclient~name`: the temporary of `dst`, in its own directory so the
/// rename stays on one file system.
pub fn temp_path(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cut = name.len().min(240);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    dst.with_file_name(format!(".wwclient~{}", &name[..cut]))
}

fn key(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

/// Applies `staged` under `root`; `old` is the record of the previous apply.
/// `pending.json` is left in place: the caller saves the returned entries
/// with [`Record::commit`], which removes it.
///
/// Deletions come first, so that a directory the agent created can give way
/// to a file or symlink of the same name; then the overlay's entries,
/// parents before children.
pub fn apply(
    root: &Path,
    staged: &Staged,
    old: &BTreeMap<String, Recorded>,
    state_dir: &Path,
) -> anyhow::Result<Applied> {
    let mut pending = Pending::default();
    for (rel, entry) in &staged.entries {
        let dst = root.join(rel);
        match entry.content {
            Content::Dir if dst.symlink_metadata().is_ok() => continue,
            Content::Dir => {}
            _ => pending.temps.push(temp_path(&dst)),
        }
        pending.intended.insert(key(rel), recorded(entry));
    }
    pending.removals = old
        .keys()
        .filter(|k| !staged.entries.contains_key(Path::new(k.as_str())))
        .cloned()
        .collect();
    pending.save(state_dir)?;

    let mut ap = Applier {
        root,
        staged,
        old,
        new: BTreeMap::new(),
        stats: Stats::default(),
        touched: BTreeSet::new(),
        is_root: is_root(),
    };
    ap.delete_dropped();
    for (rel, entry) in &staged.entries {
        if let Err(e) = ap.one(rel, entry) {
            ap.stats.failed += 1;
            log::error!("applying /{}: {e}", rel.display());
            // Keep what we knew about it, so a later overlay can still delete it.
            if let Some(r) = old.get(&key(rel)) {
                ap.new.insert(key(rel), r.clone());
            }
        }
    }
    for dir in &ap.touched {
        record::sync_dir(dir);
    }
    Ok(Applied {
        entries: ap.new,
        stats: ap.stats,
    })
}

/// After a crash during an apply (or before its record was saved): removes
/// its temporaries, updates the record to what it managed to do (paths that
/// became what it intended are ours in that state; planned deletions that
/// happened are forgotten), forgets the overlay's tags so the next poll
/// fetches it in full, and commits that record. Returns whether an apply had
/// been interrupted.
pub fn recover(root: &Path, state_dir: &Path, record: &mut Record) -> anyhow::Result<bool> {
    let Some(pending) = Pending::load(state_dir) else {
        return Ok(false);
    };
    pending.remove_temps();
    let entries = &mut record.entries;
    for rel in &pending.removals {
        if matches!(observe(&root.join(rel)), Ok(OnDisk::Missing)) {
            entries.remove(rel);
        }
    }
    for (rel, want) in pending.intended {
        let dst = root.join(&rel);
        let Ok(disk) = observe(&dst) else { continue };
        let done = match (&disk, &want) {
            // Only directories missing before the apply were listed.
            (OnDisk::Dir(_), Recorded::Dir { .. }) => true,
            (d, w) => disk_is(d, &dst, w),
        };
        if done {
            entries.insert(rel, want);
        }
    }
    record.etag = None;
    record.last_modified = None;
    record
        .commit(state_dir)
        .context("saving the record recovered from an interrupted apply")?;
    Ok(true)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

struct Applier<'a> {
    root: &'a Path,
    staged: &'a Staged,
    old: &'a BTreeMap<String, Recorded>,
    new: BTreeMap<String, Recorded>,
    stats: Stats,
    /// Directories whose entries changed, fsynced at the end.
    touched: BTreeSet<PathBuf>,
    /// Owners are only set when running as root.
    is_root: bool,
}

impl Applier<'_> {
    fn one(&mut self, rel: &Path, entry: &Entry) -> io::Result<()> {
        let dst = self.root.join(rel);
        let want = recorded(entry);
        let before = self.old.get(&key(rel));
        self.ensure_parents(rel)?;
        let disk = observe(&dst)?;

        if let Content::Dir = entry.content {
            return self.dir(rel, &dst, entry, &want, before, &disk);
        }
        if disk_is(&disk, &dst, &want) {
            self.stats.unchanged += 1;
            self.new.insert(key(rel), want);
            return Ok(());
        }
        if before == Some(&want) {
            log::info!(
                "keeping local change to /{} (unchanged in the overlay)",
                rel.display()
            );
            self.stats.kept_local += 1;
            self.new.insert(key(rel), want);
            return Ok(());
        }
        match &disk {
            OnDisk::Dir(_) if matches!(before, Some(Recorded::Dir { .. })) => fs::remove_dir(&dst)?,
            OnDisk::Dir(_) => {
                return Err(io::Error::other(
                    "a directory wwclient did not create is in the way",
                ));
            }
            OnDisk::Other => {
                return Err(io::Error::other("a device, fifo or socket is in the way"));
            }
            _ => {}
        }
        match &entry.content {
            Content::File { offset, len, .. } => self.write_file(&dst, entry, *offset, *len)?,
            Content::Symlink(target) => self.write_symlink(&dst, entry, target)?,
            Content::Dir => unreachable!("directories are handled above"),
        }
        log::debug!("wrote /{}", rel.display());
        self.stats.written += 1;
        self.touched
            .insert(dst.parent().unwrap_or(self.root).to_owned());
        self.new.insert(key(rel), want);
        Ok(())
    }

    fn dir(
        &mut self,
        rel: &Path,
        dst: &Path,
        entry: &Entry,
        want: &Recorded,
        before: Option<&Recorded>,
        disk: &OnDisk,
    ) -> io::Result<()> {
        match disk {
            OnDisk::Missing => {}
            OnDisk::Dir(_) => {
                // Only directories the agent created are kept in its image.
                // Like files: a local chmod/chown is kept until the overlay
                // changes the directory's own mode or owner.
                if let Some(b @ Recorded::Dir { .. }) = before {
                    if b != want && !disk_is(disk, dst, want) {
                        self.set_owner_mode(dst, entry)?;
                        self.stats.written += 1;
                    } else {
                        self.stats.unchanged += 1;
                    }
                    self.new.insert(key(rel), want.clone());
                } else {
                    self.stats.unchanged += 1;
                }
                return Ok(());
            }
            _ if before.is_some_and(|b| disk_is(disk, dst, b)) => fs::remove_file(dst)?,
            _ => {
                return Err(io::Error::other(
                    "a file wwclient did not write is in the way",
                ));
            }
        }
        fs::create_dir(dst)?;
        self.set_owner_mode(dst, entry)?;
        self.touched
            .insert(dst.parent().unwrap_or(self.root).to_owned());
        self.stats.written += 1;
        self.new.insert(key(rel), want.clone());
        Ok(())
    }

    /// Creates missing parents of `rel` (for archives without directory
    /// entries) as root-owned 0755 directories, recorded as created.
    fn ensure_parents(&mut self, rel: &Path) -> io::Result<()> {
        let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) else {
            return Ok(());
        };
        let dst = self.root.join(parent);
        if dst.is_dir() {
            return Ok(());
        }
        self.ensure_parents(parent)?;
        fs::create_dir(&dst)?;
        let entry = Entry {
            content: Content::Dir,
            perm: 0o755,
            uid: 0,
            gid: 0,
        };
        self.set_owner_mode(&dst, &entry)?;
        self.new.insert(key(parent), recorded(&entry));
        Ok(())
    }

    fn set_owner_mode(&self, path: &Path, entry: &Entry) -> io::Result<()> {
        if self.is_root {
            std::os::unix::fs::chown(path, Some(entry.uid), Some(entry.gid))?;
        }
        // After chown, which clears set-id bits.
        fs::set_permissions(path, Permissions::from_mode(entry.perm))
    }

    fn write_file(&self, dst: &Path, entry: &Entry, offset: u64, len: u64) -> io::Result<()> {
        let tmp = temp_path(dst);
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            self.staged.copy_content(offset, len, &mut f)?;
            if self.is_root {
                std::os::unix::fs::fchown(&f, Some(entry.uid), Some(entry.gid))?;
            }
            f.set_permissions(Permissions::from_mode(entry.perm))?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, dst)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_symlink(&self, dst: &Path, entry: &Entry, target: &str) -> io::Result<()> {
        let tmp = temp_path(dst);
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            std::os::unix::fs::symlink(target, &tmp)?;
            if self.is_root {
                std::os::unix::fs::lchown(&tmp, Some(entry.uid), Some(entry.gid))?;
            }
            fs::rename(&tmp, dst)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Deletes what the previous overlay had and this one does not, deepest
    /// paths first, if it still is what the agent wrote.
    fn delete_dropped(&mut self) {
        let mut dropped: Vec<(PathBuf, &Recorded)> = self
            .old
            .iter()
            .map(|(k, r)| (PathBuf::from(k), r))
            .filter(|(p, _)| !self.staged.entries.contains_key(p))
            .collect();
        dropped.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, was) in dropped {
            let dst = self.root.join(&rel);
            let disk = match observe(&dst) {
                Ok(d) => d,
                Err(e) => {
                    log::warn!("checking /{}: {e}", rel.display());
                    continue;
                }
            };
            let result = match (&disk, was) {
                (OnDisk::Missing, _) => continue,
                (OnDisk::Dir(_), Recorded::Dir { .. }) => match fs::remove_dir(&dst) {
                    Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => {
                        log::info!(
                            "keeping /{}: it holds files wwclient did not write",
                            rel.display()
                        );
                        self.stats.kept_local += 1;
                        continue;
                    }
                    r => r,
                },
                (d, w) if !matches!(w, Recorded::Dir { .. }) && disk_is(d, &dst, w) => {
                    fs::remove_file(&dst)
                }
                _ => {
                    log::info!(
                        "keeping /{}: changed locally since wwclient wrote it",
                        rel.display()
                    );
                    self.stats.kept_local += 1;
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    log::debug!("removed /{}", rel.display());
                    self.stats.removed += 1;
                    self.touched
                        .insert(dst.parent().unwrap_or(self.root).to_owned());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    log::error!("removing /{}: {e}", rel.display());
                    self.stats.failed += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use initramfs::newc::Writer;

    fn stage(build: impl FnOnce(&mut Writer<Vec<u8>>), spool: &Path) -> Staged {
        let mut w = Writer::new(Vec::new());
        build(&mut w);
        crate::archive::stage(&w.finish().unwrap()[..], spool).unwrap()
    }

    #[test]
    fn temp_names_stay_in_the_directory() {
        assert_eq!(
            temp_path(Path::new("/etc/passwd")),
            PathBuf::from("/etc/.wwclient~passwd")
        );
        let long = format!("/d/{}", "é".repeat(200));
        let t = temp_path(Path::new(&long));
        assert!(t.file_name().unwrap().len() <= 255);
        assert_eq!(t.parent(), Some(Path::new("/d")));
    }

    #[test]
    fn add_modify_delete_and_local_changes() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir(r.join("etc")).unwrap();
        fs::write(r.join("etc/theirs"), b"not ours").unwrap();

        let v1 = stage(
            |w| {
                w.add_dir("etc", 0o755).unwrap();
                w.add_file("etc/a", 0o644, b"a1").unwrap();
                w.add_file("etc/b", 0o600, b"b1").unwrap();
                w.add_dir("etc/new", 0o700).unwrap();
                w.add_file("etc/new/c", 0o644, b"c1").unwrap();
                w.add_symlink("etc/l", "a").unwrap();
            },
            state.path(),
        );
        let a1 = apply(r, &v1, &BTreeMap::new(), state.path()).unwrap();
        assert_eq!(a1.stats.failed, 0);
        assert_eq!(fs::read(r.join("etc/b")).unwrap(), b"b1");
        assert_eq!(fs::metadata(r.join("etc/b")).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read_link(r.join("etc/l")).unwrap(), PathBuf::from("a"));
        assert!(
            !a1.entries.contains_key("etc"),
            "pre-existing directory is not ours"
        );
        assert!(a1.entries.contains_key("etc/new"));

        // Local change to b, overlay keeps b: kept. Overlay changes a: written.
        fs::write(r.join("etc/b"), b"local").unwrap();
        let v2 = stage(
            |w| {
                w.add_file("etc/a", 0o640, b"a2").unwrap();
                w.add_file("etc/b", 0o600, b"b1").unwrap();
            },
            state.path(),
        );
        let a2 = apply(r, &v2, &a1.entries, state.path()).unwrap();
        assert_eq!(fs::read(r.join("etc/a")).unwrap(), b"a2");
        assert_eq!(fs::metadata(r.join("etc/a")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read(r.join("etc/b")).unwrap(), b"local");
        assert_eq!(a2.stats.kept_local, 1);
        // Dropped: new/c, new/, l deleted; "theirs" and etc/ untouched.
        assert!(!r.join("etc/new").exists());
        assert!(fs::symlink_metadata(r.join("etc/l")).is_err());
        assert_eq!(fs::read(r.join("etc/theirs")).unwrap(), b"not ours");
        assert_eq!(a2.stats.removed, 3);

        // The overlay changes b: the local change is overwritten.
        let v3 = stage(|w| w.add_file("etc/b", 0o600, b"b3").unwrap(), state.path());
        let a3 = apply(r, &v3, &a2.entries, state.path()).unwrap();
        assert_eq!(fs::read(r.join("etc/b")).unwrap(), b"b3");
        assert!(!r.join("etc/a").exists());
        assert_eq!(a3.entries.len(), 1);
        let pending = state.path().join(record::PENDING_FILE);
        assert!(pending.exists(), "kept until the record is saved");
        let mut rec = Record {
            entries: a3.entries,
            ..Record::default()
        };
        rec.commit(state.path()).unwrap();
        assert!(!pending.exists());
        let leftovers: Vec<_> = fs::read_dir(r.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".wwclient~"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn locally_changed_file_is_not_deleted() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let r = root.path();
        let v1 = stage(|w| w.add_file("f", 0o644, b"1").unwrap(), state.path());
        let a1 = apply(r, &v1, &BTreeMap::new(), state.path()).unwrap();
        fs::write(r.join("f"), b"admin").unwrap();
        let v2 = stage(|w| w.add_file("g", 0o644, b"1").unwrap(), state.path());
        let a2 = apply(r, &v2, &a1.entries, state.path()).unwrap();
        assert_eq!(fs::read(r.join("f")).unwrap(), b"admin");
        assert!(!a2.entries.contains_key("f"));
    }

    #[test]
    fn recovery_adopts_what_an_interrupted_apply_did() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let r = root.path();
        let v1 = stage(
            |w| {
                w.add_file("a", 0o644, b"a1").unwrap();
                w.add_file("gone", 0o644, b"g").unwrap();
            },
            state.path(),
        );
        let a1 = apply(r, &v1, &BTreeMap::new(), state.path()).unwrap();
        // An apply of v2 that wrote "a", created "d", deleted "gone", then died.
        let v2 = stage(
            |w| {
                w.add_file("a", 0o644, b"a2").unwrap();
                w.add_dir("d", 0o755).unwrap();
                w.add_file("d/x", 0o644, b"x").unwrap();
            },
            state.path(),
        );
        let mut pending = Pending::default();
        for (p, e) in &v2.entries {
            pending.intended.insert(key(p), recorded(e));
            pending.temps.push(temp_path(&r.join(p)));
        }
        pending.removals.push("gone".into());
        pending.save(state.path()).unwrap();
        fs::write(r.join(".wwclient~a"), b"half").unwrap();
        fs::write(r.join("a"), b"a2").unwrap();
        fs::create_dir(r.join("d")).unwrap();
        fs::remove_file(r.join("gone")).unwrap();

        let mut rec = Record {
            entries: a1.entries.clone(),
            etag: Some("v1".into()),
            ..Record::default()
        };
        rec.save(state.path()).unwrap();
        assert!(recover(r, state.path(), &mut rec).unwrap());
        assert!(!r.join(".wwclient~a").exists());
        assert_eq!(rec.etag, None, "fetched in full next time");
        let entries = &Record::load(state.path()).entries;
        assert_eq!(entries, &rec.entries, "the recovered record is saved");
        assert_eq!(
            entries.get("a"),
            Some(&recorded(&v2.entries[Path::new("a")]))
        );
        assert!(entries.contains_key("d"));
        assert!(!entries.contains_key("d/x"), "not written yet");
        assert!(!entries.contains_key("gone"));
        assert!(
            !recover(r, state.path(), &mut rec).unwrap(),
            "nothing pending any more"
        );
    }

    /// A kill after the last file was renamed but before the record was
    /// saved: the next run must know those files are the overlay's, not
    /// local edits, and so put the old overlay back when it returns.
    #[test]
    fn kill_between_apply_and_record_keeps_the_written_files_ours() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let r = root.path();
        let v1 = stage(|w| w.add_file("f", 0o644, b"one").unwrap(), state.path());
        let v2 = stage(|w| w.add_file("f", 0o640, b"two").unwrap(), state.path());
        let mut rec = Record {
            entries: apply(r, &v1, &BTreeMap::new(), state.path())
                .unwrap()
                .entries,
            ..Record::default()
        };
        rec.commit(state.path()).unwrap();
        // v2 applied in full, then the process died before its commit.
        apply(r, &v2, &rec.entries, state.path()).unwrap();
        assert!(state.path().join(record::PENDING_FILE).exists());

        let mut rec = Record::load(state.path());
        assert!(recover(r, state.path(), &mut rec).unwrap());
        let back = apply(r, &v1, &rec.entries, state.path()).unwrap();
        assert_eq!(back.stats.kept_local, 0);
        assert_eq!(fs::read(r.join("f")).unwrap(), b"one");
        assert_eq!(fs::metadata(r.join("f")).unwrap().mode() & 0o777, 0o644);
    }

    #[test]
    fn missing_parents_are_created_and_recorded() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let v = stage(|w| w.add_file("a/b/c", 0o644, b"x").unwrap(), state.path());
        let out = apply(root.path(), &v, &BTreeMap::new(), state.path()).unwrap();
        assert_eq!(fs::read(root.path().join("a/b/c")).unwrap(), b"x");
        assert!(out.entries.contains_key("a") && out.entries.contains_key("a/b"));
    }
}
