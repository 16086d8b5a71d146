//! Finding the kernels inside an image tree, the way Warewulf does: look in
//! the usual places, read the version from the path, and boot the highest
//! version that is neither a debug nor a rescue kernel.

use std::cmp::Ordering;
use std::fs;
use std::path::Path;

use serde::Serialize;

/// Where kernels are looked for, in order: a directory inside the image, and
/// how a file in it must be named. `{}` in `file` stands for the version.
const SEARCH: &[(&str, Pattern)] = &[
    // aarch64 on SUSE ships `Image-<ver>`; the `vmlinux` beside it does not boot.
    ("boot", Pattern::Prefix("Image-")),
    ("boot", Pattern::Prefix("vmlinuz-")),
    // Fedora/RHEL and Debian with merged /usr keep a copy next to the modules.
    ("lib/modules", Pattern::InVersionDir("vmlinuz")),
    ("lib/modules", Pattern::InVersionDir("vmlinuz.gz")),
    ("usr/lib/modules", Pattern::InVersionDir("vmlinuz")),
];

#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// `<dir>/<prefix><version>`
    Prefix(&'static str),
    /// `<dir>/<version>/<file>`
    InVersionDir(&'static str),
}

/// A kernel found in an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// Path inside the image, starting with `/`.
    pub path: String,
    /// Version read from the path (`6.1.0-28-amd64`), if it has one.
    pub version: Option<String>,
}

impl Kernel {
    fn is_debug_or_rescue(&self) -> bool {
        self.path.contains("+debug") || self.path.contains("-rescue")
    }
}

/// Every kernel in the image rooted at `root`, sorted by ascending version.
/// Paths are not followed outside the image: a symlinked `/boot` entry is
/// listed by its own name.
pub fn find(root: &Path) -> Vec<Kernel> {
    let mut found: Vec<Kernel> = Vec::new();
    for (dir, pattern) in SEARCH {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let (rel, version) = match pattern {
                Pattern::Prefix(prefix) => {
                    let Some(rest) = name.strip_prefix(prefix) else {
                        continue;
                    };
                    (format!("/{dir}/{name}"), rest.to_owned())
                }
                Pattern::InVersionDir(file) => {
                    if !root.join(dir).join(&name).join(file).is_file() {
                        continue;
                    }
                    (format!("/{dir}/{name}/{file}"), name.clone())
                }
            };
            if !root.join(rel.trim_start_matches('/')).is_file() {
                continue;
            }
            let version = version
                .starts_with(|c: char| c.is_ascii_digit())
                .then_some(version);
            if !found.iter().any(|k| k.path == rel) {
                found.push(Kernel { path: rel, version });
            }
        }
    }
    // Stable: equal versions keep search order.
    found.sort_by(|a, b| compare_versions(a.version.as_deref(), b.version.as_deref()));
    found
}

/// The kernel a node boots by default: the highest version that is neither
/// a debug nor a rescue kernel.
pub fn default_kernel(kernels: &[Kernel]) -> Option<&Kernel> {
    kernels.iter().rev().find(|k| !k.is_debug_or_rescue())
}

/// Orders versions the way a person reads them: runs of digits compare as
/// numbers (`6.1.0-28` > `6.1.0-9`), a missing version sorts first.
pub fn compare_versions(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => natural_cmp(a, b),
    }
}

fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_digits(a);
                let (nb, rb) = split_digits(b);
                let na = na.trim_start_matches('0');
                let nb = nb.trim_start_matches('0');
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

fn split_digits(s: &[u8]) -> (&str, &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    // The prefix is ASCII digits, so it is valid UTF-8.
    (std::str::from_utf8(&s[..n]).unwrap_or_default(), &s[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"kernel").unwrap();
    }

    #[test]
    fn natural_version_order() {
        let mut v = vec![
            "6.1.0-9-amd64",
            "6.1.0-28-amd64",
            "5.14.0-427.el9.x86_64",
            "6.10.1",
            "6.2",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            [
                "5.14.0-427.el9.x86_64",
                "6.1.0-9-amd64",
                "6.1.0-28-amd64",
                "6.2",
                "6.10.1"
            ]
        );
    }

    #[test]
    fn finds_highest_non_debug_kernel() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        touch(root, "boot/vmlinuz-6.1.0-9-amd64");
        touch(root, "boot/vmlinuz-6.1.0-28-amd64");
        touch(root, "boot/vmlinuz-6.5.0+debug");
        touch(root, "boot/vmlinuz-0-rescue-abcdef");
        touch(root, "lib/modules/5.14.0-427.el9.x86_64/vmlinuz");
        fs::create_dir_all(root.join("lib/modules/6.1.0-28-amd64/kernel")).unwrap();
        let kernels = find(root);
        assert_eq!(kernels.len(), 5, "{kernels:?}");
        let def = default_kernel(&kernels).unwrap();
        assert_eq!(def.path, "/boot/vmlinuz-6.1.0-28-amd64");
        assert_eq!(def.version.as_deref(), Some("6.1.0-28-amd64"));
        assert!(
            kernels
                .iter()
                .any(|k| k.path == "/lib/modules/5.14.0-427.el9.x86_64/vmlinuz")
        );
    }

    #[test]
    fn image_without_kernel() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("boot")).unwrap();
        assert!(default_kernel(&find(dir.path())).is_none());
    }
}
