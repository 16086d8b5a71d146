//! Kernel module loading for two-stage boot: match the `modalias` of every
//! device in `/sys/bus/*/devices/*` against `modules.alias`, resolve
//! dependencies from `modules.dep`, and load with `finit_module`.
//!
//! Compressed modules (`.ko.xz`, `.ko.zst`, `.ko.gz`) go to the kernel as
//! files with `MODULE_INIT_COMPRESSED_FILE` (Linux ≥ 6.6 with in-kernel
//! decompression); when the kernel refuses that flag we decompress with the
//! `initramfs` crate's decoder and call `init_module`. Loading runs in
//! passes: a bus driver (e.g. `virtio_pci`) makes new devices appear whose
//! drivers load in the next pass, which runs at once when the device list
//! changed; devices that appear later are handled by [`Loader::rescan`].

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// `finit_module` flag: the file is compressed, the kernel decompresses.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;
/// Passes of "scan devices, load matches" in a row.
const MAX_PASSES: usize = 5;

/// Errors of module loading.
#[derive(Debug, Error)]
pub enum ModuleError {
    #[error("reading {}", .0.display())]
    Read(PathBuf, #[source] io::Error),
    #[error("unknown module {0} (not in modules.dep)")]
    Unknown(String),
    #[error("loading module {}", .0.display())]
    Load(PathBuf, #[source] io::Error),
}

/// `modules.alias` and `modules.dep` of one kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// `(pattern, module name)` in file order.
    aliases: Vec<(String, String)>,
    /// Module name → (path relative to the modules dir, deps in load-last-first order).
    deps: HashMap<String, (String, Vec<String>)>,
}

/// `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net` (dashes as underscores).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleIndex {
    /// Parses the two files' text.
    pub fn parse(alias: &str, dep: &str) -> Self {
        let aliases = alias
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next()? == "alias").then_some(())?;
                Some((w.next()?.to_owned(), w.next()?.replace('-', "_")))
            })
            .collect();
        let deps = dep
            .lines()
            .filter_map(|l| {
                let (path, rest) = l.split_once(':')?;
                let deps = rest.split_whitespace().map(str::to_owned).collect();
                Some((module_name(path), (path.to_owned(), deps)))
            })
            .collect();
        ModuleIndex { aliases, deps }
    }

    /// Modules whose alias pattern matches `modalias`.
    pub fn matches<'a>(&'a self, modalias: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.aliases
            .iter()
            .filter(move |(p, _)| glob(p.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.as_str())
    }

    /// Paths (relative) to load for `name`, dependencies first.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, ModuleError> {
        let name = name.replace('-', "_");
        let (path, deps) = self.deps.get(&name).ok_or(ModuleError::Unknown(name))?;
        // modprobe loads the dependency list from its end.
        let mut out: Vec<String> = deps.iter().rev().cloned().collect();
        out.push(path.clone());
        Ok(out)
    }
}

/// Shell-style glob (`*`, `?`, `[...]` with ranges and `!`/`^`), as
/// `modules.alias` patterns use.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&p[pi..], s[si])
                        && ok
                    {
                        pi += next;
                        si += 1;
                        continue;
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class at the start of `p`; (matched, class length).
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            hit |= (p[i]..=p[i + 2]).contains(&c);
            i += 3;
        } else {
            hit |= p[i] == c;
            i += 1;
        }
    }
    None
}

/// `/lib/modules/$(uname -r)`.
pub fn modules_dir() -> io::Result<PathBuf> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname to write into.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: uname NUL-terminates release.
    let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    Ok(Path::new("/lib/modules").join(rel.to_string_lossy().as_ref()))
}

/// Every `modalias` of present devices.
fn device_modaliases() -> Vec<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir("/sys/bus") else {
        return Vec::new();
    };
    for bus in buses.flatten() {
        let Ok(devs) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devs.flatten() {
            if let Ok(a) = std::fs::read_to_string(dev.path().join("modalias")) {
                let a = a.trim();
                if !a.is_empty() {
                    out.insert(a.to_owned());
                }
            }
        }
    }
    out.into_iter().collect()
}

fn errno(e: &io::Error, n: libc::c_int) -> bool {
    e.raw_os_error() == Some(n)
}

/// Loads one module file; `Ok(false)` if it was already loaded.
pub fn load_file(path: &Path) -> Result<bool, ModuleError> {
    let err = |e| ModuleError::Load(path.to_owned(), e);
    let file = File::open(path).map_err(err)?;
    let params = CString::default();
    let name = path.to_string_lossy();
    let compressed = [".xz", ".zst", ".gz"].iter().any(|s| name.ends_with(s));
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    // SAFETY: a valid fd, a NUL-terminated empty parameter string and flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if errno(&e, libc::EEXIST) {
        return Ok(false);
    }
    // Older kernels: unknown flag (EINVAL), no finit_module (ENOSYS), or a
    // kernel without this decompressor (EOPNOTSUPP/ENOEXEC-like): do it ourselves.
    let retry = errno(&e, libc::ENOSYS)
        || (compressed && (errno(&e, libc::EINVAL) || errno(&e, libc::EOPNOTSUPP)));
    if !retry {
        return Err(err(e));
    }
    let mut image = Vec::new();
    if compressed {
        initramfs::compress::decoder(BufReader::new(file))
            .read_to_end(&mut image)
            .map_err(err)?;
    } else {
        BufReader::new(file).read_to_end(&mut image).map_err(err)?;
    }
    // SAFETY: the image buffer and its length are valid; params is NUL-terminated.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            image.as_ptr(),
            image.len() as libc::c_ulong,
            params.as_ptr(),
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if errno(&e, libc::EEXIST) {
        Ok(false)
    } else {
        Err(err(e))
    }
}

/// Loads `names` (with dependencies) unless already loaded or built in;
/// how many were loaded.
pub fn load_named(names: &[&str]) -> Result<usize, ModuleError> {
    let dir =
        modules_dir().map_err(|e| ModuleError::Read("/proc/sys/kernel/osrelease".into(), e))?;
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| ModuleError::Read(p, e))
    };
    let index = ModuleIndex::parse("", &read("modules.dep")?);
    let mut loaded = 0;
    for name in names {
        if Path::new("/sys/module").join(name).exists() {
            continue;
        }
        for rel in index.load_order(name)? {
            if Path::new("/sys/module").join(module_name(&rel)).exists() {
                continue;
            }
            if load_file(&dir.join(&rel))? {
                loaded += 1;
            }
        }
    }
    Ok(loaded)
}

/// Loads modules for present hardware, remembering what it has done, so
/// that devices appearing later (a bus driver that probes asynchronously,
/// USB NICs still enumerating) get their drivers on a later [`Loader::rescan`].
pub struct Loader {
    dir: PathBuf,
    index: ModuleIndex,
    /// Module files tried (loaded, already present, or failed).
    done: BTreeSet<String>,
    /// The device modaliases of the last pass.
    devices: Vec<String>,
}

impl Loader {
    /// Reads `modules.alias` and `modules.dep` of the running kernel.
    pub fn new() -> Result<Self, ModuleError> {
        let dir =
            modules_dir().map_err(|e| ModuleError::Read("/proc/sys/kernel/osrelease".into(), e))?;
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(|e| ModuleError::Read(p, e))
        };
        let index = ModuleIndex::parse(&read("modules.alias")?, &read("modules.dep")?);
        Ok(Loader {
            dir,
            index,
            done: BTreeSet::new(),
            devices: Vec::new(),
        })
    }

    /// Loads `extra` (and dependencies) and every module matching present
    /// hardware; failures of `extra` modules are errors, failures of
    /// hardware-matched ones are logged and skipped (a driver for an
    /// unrelated device must not stop the boot). A pass that loaded
    /// something is followed by another only if the set of devices changed:
    /// bus drivers register their devices before `finit_module` returns
    /// unless they probe asynchronously, and late devices are picked up by
    /// [`Loader::rescan`] while the network stage waits for its interface,
    /// so no pass ever sleeps.
    pub fn load_all(
        &mut self,
        extra: &[String],
        log: &mut dyn FnMut(&str),
    ) -> Result<usize, ModuleError> {
        let mut loaded = 0;
        for name in extra {
            for rel in self.index.load_order(name)? {
                if self.done.insert(rel.clone()) && load_file(&self.dir.join(&rel))? {
                    loaded += 1;
                }
            }
        }
        self.devices = device_modaliases();
        let first = self.pass(log);
        loaded += first;
        if first > 0 {
            loaded += self.rescan(log);
        }
        Ok(loaded)
    }

    /// Loads drivers for devices that appeared since the last pass; how many
    /// modules were loaded (0 at once when nothing changed).
    pub fn rescan(&mut self, log: &mut dyn FnMut(&str)) -> usize {
        let mut loaded = 0;
        for _ in 0..MAX_PASSES {
            if !self.devices_changed() {
                break;
            }
            let new = self.pass(log);
            loaded += new;
            if new == 0 {
                break;
            }
        }
        loaded
    }

    /// Re-reads the device list; whether it differs from the last one.
    fn devices_changed(&mut self) -> bool {
        let now = device_modaliases();
        let changed = now != self.devices;
        self.devices = now;
        changed
    }

    /// One pass over `self.devices`: loads every matching module not tried yet.
    fn pass(&mut self, log: &mut dyn FnMut(&str)) -> usize {
        let mut new = 0;
        for alias in &self.devices {
            let wanted: Vec<String> = self.index.matches(alias).map(str::to_owned).collect();
            for module in wanted {
                if Path::new("/sys/module").join(&module).exists() {
                    continue; // built in, or already loaded
                }
                let Ok(order) = self.index.load_order(&module) else {
                    continue;
                };
                for rel in order {
                    if !self.done.insert(rel.clone()) {
                        continue;
                    }
                    match load_file(&self.dir.join(&rel)) {
                        Ok(true) => {
                            log(&format!("loaded {} (for {alias})", module_name(&rel)));
                            new += 1;
                        }
                        Ok(false) => {}
                        Err(e) => log(&format!("{e}: {}", e.source_text())),
                    }
                }
            }
        }
        new
    }
}

trait SourceText {
    fn source_text(&self) -> String;
}

impl SourceText for ModuleError {
    fn source_text(&self) -> String {
        std::error::Error::source(self).map_or_else(String::new, ToString::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias usb:v0BDAp8153d*dc*dsc*dp*ic*isc*ip*in* r8152
alias of:N*T*Cfoo,bar-[0-9]C* foo_bar
";
    const DEP: &str = "\
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz
kernel/drivers/virtio/virtio_pci_modern_dev.ko.xz:
kernel/drivers/net/virtio_net.ko.zst: kernel/drivers/net/net_failover.ko.zst kernel/net/core/failover.ko.zst
kernel/drivers/net/net_failover.ko.zst: kernel/net/core/failover.ko.zst
kernel/net/core/failover.ko.zst:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
";

    #[test]
    fn glob_table() {
        for (p, s, want) in [
            ("abc", "abc", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a[0-9]c", "a5c", true),
            ("a[0-9]c", "axc", false),
            ("a[!0-9]c", "axc", true),
            ("a[]]c", "a]c", true),
            ("*sv*sd*", "xsv1sd2", true),
            ("a*", "a", true),
        ] {
            assert_eq!(glob(p.as_bytes(), s.as_bytes()), want, "{p} vs {s}");
        }
    }

    #[test]
    fn matches_device_aliases() {
        let idx = ModuleIndex::parse(ALIAS, DEP);
        let m = |a: &str| idx.matches(a).map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            m("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(m("virtio:d00000001v00001AF4"), ["virtio_net"]);
        assert_eq!(m("virtio:d00000002v00001AF4"), Vec::<String>::new());
        assert_eq!(
            m("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"),
            ["e1000"]
        );
        assert_eq!(m("of:NfooTbarCfoo,bar-3Cx"), ["foo_bar"]);
    }

    #[test]
    fn dependencies_load_first() {
        let idx = ModuleIndex::parse(ALIAS, DEP);
        assert_eq!(
            idx.load_order("virtio_net").expect("known"),
            [
                "kernel/net/core/failover.ko.zst",
                "kernel/drivers/net/net_failover.ko.zst",
                "kernel/drivers/net/virtio_net.ko.zst",
            ]
        );
        assert_eq!(
            idx.load_order("e1000").expect("known"),
            ["kernel/drivers/net/ethernet/intel/e1000/e1000.ko"]
        );
        assert!(matches!(
            idx.load_order("nope"),
            Err(ModuleError::Unknown(_))
        ));
        assert_eq!(module_name("kernel/x/snd-hda-intel.ko.xz"), "snd_hda_intel");
    }
}
