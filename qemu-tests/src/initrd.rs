//! Small initramfs members for test guests, written with our own archive
//! writer (`initramfs::newc`) and compressors (`initramfs::compress`), so the
//! boot tests also prove that the kernel accepts what we produce.

use std::io::Write;

use anyhow::{Context, Result};
use initramfs::compress::{Compression, EncoderOptions, encoder};
use initramfs::newc::{Kind, Writer};

/// Where `test-init` reads the text it reports in its marker.
pub const MEMBER_FILE: &str = "etc/ironwulf-member";
/// The marker `test-init` prints, followed by the contents of [`MEMBER_FILE`].
pub const TEST_INIT_MARKER: &str = "IRONWULF-TEST-INIT: member=";

/// One archive entry.
#[derive(Debug, Clone)]
enum Entry {
    Dir {
        name: String,
        perm: u32,
    },
    File {
        name: String,
        perm: u32,
        data: Vec<u8>,
    },
    Symlink {
        name: String,
        target: String,
    },
    CharDevice {
        name: String,
        perm: u32,
        major: u32,
        minor: u32,
    },
}

/// An initramfs member: entries written in the order they were added.
#[derive(Debug, Clone, Default)]
pub struct Member {
    entries: Vec<Entry>,
}

impl Member {
    /// An empty member.
    pub fn new() -> Self {
        Self::default()
    }

    /// The base member for a `test-init` guest: `dev proc sys etc`, `/init`,
    /// `dev/console` (char 5:1, so the kernel has a console without
    /// devtmpfs) and [`MEMBER_FILE`] containing `member`.
    pub fn test_init_base(init: &[u8], member: &str) -> Self {
        Self::new()
            .dir("dev", 0o755)
            .dir("proc", 0o555)
            .dir("sys", 0o555)
            .dir("etc", 0o755)
            .file("init", 0o755, init)
            .char_device("dev/console", 0o600, 5, 1)
            .file(MEMBER_FILE, 0o644, member.as_bytes())
    }

    /// A member holding only `etc` and [`MEMBER_FILE`] with `member` (the
    /// kernel does not create missing parent directories).
    pub fn member_file(member: &str) -> Self {
        Self::new()
            .dir("etc", 0o755)
            .file(MEMBER_FILE, 0o644, member.as_bytes())
    }

    /// Adds a directory.
    pub fn dir(mut self, name: &str, perm: u32) -> Self {
        self.entries.push(Entry::Dir {
            name: name.to_owned(),
            perm,
        });
        self
    }

    /// Adds a regular file.
    pub fn file(mut self, name: &str, perm: u32, data: impl Into<Vec<u8>>) -> Self {
        self.entries.push(Entry::File {
            name: name.to_owned(),
            perm,
            data: data.into(),
        });
        self
    }

    /// Adds a symbolic link.
    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.entries.push(Entry::Symlink {
            name: name.to_owned(),
            target: target.to_owned(),
        });
        self
    }

    /// Adds a character device node.
    pub fn char_device(mut self, name: &str, perm: u32, major: u32, minor: u32) -> Self {
        self.entries.push(Entry::CharDevice {
            name: name.to_owned(),
            perm,
            major,
            minor,
        });
        self
    }

    /// The uncompressed newc archive.
    pub fn cpio(&self) -> Result<Vec<u8>> {
        let mut writer = Writer::new(Vec::new());
        for entry in &self.entries {
            let (name, result) = match entry {
                Entry::Dir { name, perm } => (name, writer.add_dir(name, *perm)),
                Entry::File { name, perm, data } => (name, writer.add_file(name, *perm, data)),
                Entry::Symlink { name, target } => (name, writer.add_symlink(name, target)),
                Entry::CharDevice {
                    name,
                    perm,
                    major,
                    minor,
                } => (
                    name,
                    writer.add_node(name, Kind::CharDevice, *perm, *major, *minor),
                ),
            };
            result.with_context(|| format!("adding {name} to the test initramfs"))?;
        }
        writer.finish().context("finishing the test initramfs")
    }

    /// The archive compressed with `compression`.
    pub fn compressed(&self, compression: Compression) -> Result<Vec<u8>> {
        let cpio = self.cpio()?;
        let options = EncoderOptions {
            level: None,
            threads: 1,
        };
        let mut enc = encoder(compression, &options, Vec::new())
            .with_context(|| format!("starting the {compression:?} encoder"))?;
        enc.write_all(&cpio)
            .with_context(|| format!("compressing with {compression:?}"))?;
        enc.finish()
            .with_context(|| format!("finishing the {compression:?} stream"))
    }
}

/// Concatenates compressed (or plain) members into one initrd, in order; the
/// kernel unpacks them one after another, later entries replacing earlier.
pub fn concat(members: &[&[u8]]) -> Vec<u8> {
    members.concat()
}
