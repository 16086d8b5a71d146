//! Kernel modules without `depmod`: the `.modinfo` section of each `.ko`
//! (ELF, possibly `.xz`/`.zst`/`.gz` compressed) gives its aliases, its
//! dependencies and the kernel it was built for. From that the stage-1
//! builder writes its own `modules.alias` and `modules.dep` covering only
//! the modules it ships, so an image (or an unpacked kernel `.deb`) without
//! those files works too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use initramfs::compress::decoder;

/// Extensions a module file may carry, uncompressed first.
pub const MODULE_SUFFIXES: &[&str] = &[".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// Largest module accepted (the biggest in-tree modules are ~20 MiB).
const MODULE_LIMIT: u64 = 256 << 20;

/// Why a module's metadata could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ModinfoError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not an ELF file")]
    NotElf { path: PathBuf },
    #[error("{path}: malformed ELF: {what}")]
    Malformed { path: PathBuf, what: &'static str },
    #[error("{path}: no .modinfo section (not a kernel module)")]
    NoModinfo { path: PathBuf },
    #[error("walking {path}")]
    Walk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net` (dashes as underscores).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

/// ELF machine numbers of the architectures Ironwulf boots.
pub fn machine_name(machine: u16) -> &'static str {
    match machine {
        3 => "i386",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv",
        21 => "ppc64",
        _ => "unknown",
    }
}

/// What a module's `.modinfo` and ELF header say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// ELF `e_machine`.
    pub machine: u16,
    pub aliases: Vec<String>,
    /// Module names from `depends=`.
    pub depends: Vec<String>,
    pub vermagic: Option<String>,
}

/// Reads an ELF file (a module, or the wwinit binary) and returns its
/// `e_machine` and the raw `.modinfo` section, if any.
pub fn parse_elf(path: &Path, data: &[u8]) -> Result<(u16, Option<Vec<u8>>), ModinfoError> {
    let bad = |what| ModinfoError::Malformed {
        path: path.to_owned(),
        what,
    };
    if data.len() < 52 || &data[..4] != b"\x7fELF" {
        return Err(ModinfoError::NotElf {
            path: path.to_owned(),
        });
    }
    let wide = match data[4] {
        1 => false,
        2 => true,
        _ => return Err(bad("unknown ELF class")),
    };
    let le = match data[5] {
        1 => true,
        2 => false,
        _ => return Err(bad("unknown byte order")),
    };
    let u16_at = |off: usize| -> Option<u64> {
        let b: [u8; 2] = data.get(off..off + 2)?.try_into().ok()?;
        Some(u64::from(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }))
    };
    let u32_at = |off: usize| -> Option<u64> {
        let b: [u8; 4] = data.get(off..off + 4)?.try_into().ok()?;
        Some(u64::from(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }))
    };
    let u64_at = |off: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(off..off + 8)?.try_into().ok()?;
        Some(if le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    let machine = u16_at(18).ok_or_else(|| bad("short header"))? as u16;
    // (e_shoff, e_shentsize, e_shnum, e_shstrndx) and the section header's
    // (sh_offset, sh_size) positions differ between ELF32 and ELF64.
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e))
    } else {
        (u32_at(0x20), u16_at(0x2e), u16_at(0x30), u16_at(0x32))
    };
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) =
        (shoff, shentsize, shnum, shstrndx)
    else {
        return Err(bad("short header"));
    };
    if shnum == 0 {
        return Ok((machine, None));
    }
    let section = |i: u64| -> Option<(u64, u64, u64)> {
        let base = usize::try_from(shoff.checked_add(i.checked_mul(shentsize)?)?).ok()?;
        let name = u32_at(base)?;
        let (off, size) = if wide {
            (u64_at(base + 24)?, u64_at(base + 32)?)
        } else {
            (u32_at(base + 16)?, u32_at(base + 20)?)
        };
        Some((name, off, size))
    };
    let bytes = |off: u64, size: u64| -> Option<&[u8]> {
        let start = usize::try_from(off).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        data.get(start..end)
    };
    let (_, stroff, strsize) =
        section(shstrndx).ok_or_else(|| bad("section names out of range"))?;
    let names = bytes(stroff, strsize).ok_or_else(|| bad("section names out of range"))?;
    for i in 0..shnum {
        let (name, off, size) = section(i).ok_or_else(|| bad("section header out of range"))?;
        let name = usize::try_from(name)
            .ok()
            .and_then(|n| names.get(n..))
            .map(|s| s.split(|&b| b == 0).next().unwrap_or_default())
            .ok_or_else(|| bad("section name out of range"))?;
        if name == b".modinfo" {
            let body = bytes(off, size).ok_or_else(|| bad(".modinfo out of range"))?;
            return Ok((machine, Some(body.to_vec())));
        }
    }
    Ok((machine, None))
}

/// Reads a module file, decompressing `.xz`, `.zst` and `.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>, ModinfoError> {
    let err = |source| ModinfoError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(err)?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    if name.ends_with(".ko") {
        file.take(MODULE_LIMIT).read_to_end(&mut out).map_err(err)?;
    } else {
        decoder(BufReader::new(file))
            .take(MODULE_LIMIT)
            .read_to_end(&mut out)
            .map_err(err)?;
    }
    Ok(out)
}

/// The metadata of the module at `path`.
pub fn modinfo(path: &Path) -> Result<ModInfo, ModinfoError> {
    let data = read_module(path)?;
    let (machine, section) = parse_elf(path, &data)?;
    let section = section.ok_or_else(|| ModinfoError::NoModinfo {
        path: path.to_owned(),
    })?;
    let mut info = ModInfo {
        machine,
        ..ModInfo::default()
    };
    for field in section.split(|&b| b == 0) {
        let field = String::from_utf8_lossy(field);
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "alias" => info.aliases.push(value.to_owned()),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.replace('-', "_")),
            ),
            "vermagic" => info.vermagic = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok(info)
}

/// Every module file under one kernel's modules directory, by name.
#[derive(Debug, Default)]
pub struct ModuleTree {
    pub dir: PathBuf,
    /// Module name → path relative to `dir`.
    pub files: BTreeMap<String, String>,
    /// Names listed in `modules.builtin` (compiled into the kernel).
    pub builtin: BTreeSet<String>,
}

impl ModuleTree {
    /// Walks `dir` (without following symlinks such as `build`/`source`).
    /// When a name appears twice, `updates/` wins over everything else, as
    /// in depmod's default search order.
    pub fn scan(dir: &Path) -> Result<Self, ModinfoError> {
        let mut tree = ModuleTree {
            dir: dir.to_owned(),
            ..Self::default()
        };
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let abs = dir.join(&rel);
            let entries = fs::read_dir(&abs).map_err(|source| ModinfoError::Walk {
                path: abs.clone(),
                source,
            })?;
            let mut names: Vec<_> = entries
                .filter_map(|e| e.ok())
                .map(|e| (e.file_name(), e.file_type()))
                .collect();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, ty) in names {
                let child = rel.join(&name);
                let Ok(ty) = ty else { continue };
                if ty.is_dir() {
                    stack.push(child);
                    continue;
                }
                let s = child.to_string_lossy().into_owned();
                if !ty.is_file() || !MODULE_SUFFIXES.iter().any(|x| s.ends_with(x)) {
                    continue;
                }
                let m = module_name(&s);
                match tree.files.get(&m) {
                    Some(old) if !s.starts_with("updates/") || old.starts_with("updates/") => {}
                    _ => {
                        tree.files.insert(m, s);
                    }
                }
            }
        }
        if let Ok(text) = fs::read_to_string(dir.join("modules.builtin")) {
            tree.builtin = text.lines().map(module_name).collect();
        }
        Ok(tree)
    }
}

/// A module chosen for the stage 1, with its metadata.
#[derive(Clone, Debug)]
pub struct Chosen {
    pub name: String,
    /// Path relative to the modules directory.
    pub rel: String,
    pub info: ModInfo,
}

/// Resolves `wanted` and all their dependencies; returns them in load
/// order (dependencies first). `Err` names a dependency that is missing.
pub fn resolve(tree: &ModuleTree, wanted: &[String]) -> Result<Vec<Chosen>, anyhow::Error> {
    let mut infos: HashMap<String, Chosen> = HashMap::new();
    let mut order = Vec::new();
    let mut visiting = BTreeSet::new();
    for name in wanted {
        visit(tree, name, None, &mut infos, &mut order, &mut visiting)?;
    }
    Ok(order
        .into_iter()
        .filter_map(|n| infos.get(&n).cloned())
        .collect())
}

fn visit(
    tree: &ModuleTree,
    name: &str,
    parent: Option<&str>,
    infos: &mut HashMap<String, Chosen>,
    order: &mut Vec<String>,
    visiting: &mut BTreeSet<String>,
) -> Result<(), anyhow::Error> {
    if infos.contains_key(name) || visiting.contains(name) {
        return Ok(());
    }
    let Some(rel) = tree.files.get(name) else {
        if tree.builtin.contains(name) {
            return Ok(());
        }
        match parent {
            Some(p) => anyhow::bail!(
                "module {p} depends on {name}, which is not in {}",
                tree.dir.display()
            ),
            None => anyhow::bail!("module {name} is not in {}", tree.dir.display()),
        }
    };
    let info = modinfo(&tree.dir.join(rel))?;
    visiting.insert(name.to_owned());
    for dep in &info.depends {
        visit(tree, dep, Some(name), infos, order, visiting)?;
    }
    visiting.remove(name);
    order.push(name.to_owned());
    infos.insert(
        name.to_owned(),
        Chosen {
            name: name.to_owned(),
            rel: rel.clone(),
            info,
        },
    );
    Ok(())
}

/// `modules.dep` for `chosen` (in load order): each line lists the
/// module's transitive dependencies so that loading them from the end of
/// the list works, as depmod writes them.
pub fn modules_dep(chosen: &[Chosen]) -> String {
    let by_name: HashMap<&str, &Chosen> = chosen.iter().map(|c| (c.name.as_str(), c)).collect();
    let position: HashMap<&str, usize> = chosen
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut out = String::new();
    for c in chosen {
        let mut deps = BTreeSet::new();
        let mut stack: Vec<&str> = c.info.depends.iter().map(String::as_str).collect();
        while let Some(d) = stack.pop() {
            if let Some(dc) = by_name.get(d)
                && deps.insert(d)
            {
                stack.extend(dc.info.depends.iter().map(String::as_str));
            }
        }
        // Load order is ascending position; the file lists it reversed.
        let mut deps: Vec<&str> = deps.into_iter().collect();
        deps.sort_by_key(|d| std::cmp::Reverse(position.get(d).copied().unwrap_or(0)));
        let rels: Vec<&str> = deps
            .iter()
            .filter_map(|d| by_name.get(d).map(|c| c.rel.as_str()))
            .collect();
        out.push_str(&c.rel);
        out.push(':');
        for r in rels {
            out.push(' ');
            out.push_str(r);
        }
        out.push('\n');
    }
    out
}

/// `modules.alias` for `chosen`.
pub fn modules_alias(chosen: &[Chosen]) -> String {
    let mut out = String::new();
    for c in chosen {
        for a in &c.info.aliases {
            out.push_str(&format!("alias {a} {}\n", c.name));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 LE relocatable with a `.modinfo` section.
    pub(crate) fn fake_module(machine: u16, modinfo: &[&str]) -> Vec<u8> {
        let mut info = Vec::new();
        for f in modinfo {
            info.extend_from_slice(f.as_bytes());
            info.push(0);
        }
        let names = b"\0.modinfo\0.shstrtab\0".to_vec();
        let mut data = vec![0u8; 64];
        data[..4].copy_from_slice(b"\x7fELF");
        data[4] = 2;
        data[5] = 1;
        data[6] = 1;
        data[16..18].copy_from_slice(&1u16.to_le_bytes());
        data[18..20].copy_from_slice(&machine.to_le_bytes());
        let info_off = data.len() as u64;
        data.extend_from_slice(&info);
        let names_off = data.len() as u64;
        data.extend_from_slice(&names);
        let shoff = data.len() as u64;
        let mut sh = |name: u32, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            data.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, info_off, info.len() as u64);
        sh(10, names_off, names.len() as u64);
        data[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        data[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        data[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        data[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        data
    }

    #[test]
    fn modinfo_of_a_fake_module() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("virtio_net.ko");
        std::fs::write(
            &p,
            fake_module(
                62,
                &[
                    "alias=virtio:d00000001v*",
                    "depends=net_failover,virtio",
                    "vermagic=6.1.0-1-amd64 SMP",
                ],
            ),
        )
        .expect("write");
        let info = modinfo(&p).expect("modinfo");
        assert_eq!(info.machine, 62);
        assert_eq!(info.aliases, ["virtio:d00000001v*"]);
        assert_eq!(info.depends, ["net_failover", "virtio"]);
        assert_eq!(info.vermagic.as_deref(), Some("6.1.0-1-amd64 SMP"));
    }

    #[test]
    fn not_elf_and_truncated_are_errors() {
        let p = Path::new("x.ko");
        assert!(matches!(
            parse_elf(p, b"hello"),
            Err(ModinfoError::NotElf { .. })
        ));
        let mut m = fake_module(62, &["alias=x"]);
        m.truncate(100);
        assert!(matches!(
            parse_elf(p, &m),
            Err(ModinfoError::Malformed { .. })
        ));
    }

    #[test]
    fn dependencies_resolve_in_load_order_and_dep_file_reverses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = dir.path().join("kernel");
        std::fs::create_dir_all(&k).expect("mkdir");
        for (name, deps) in [
            ("a", "depends=b,c"),
            ("b", "depends=c"),
            ("c", "depends="),
            ("unused", "depends="),
        ] {
            std::fs::write(
                k.join(format!("{name}.ko")),
                fake_module(62, &[&format!("alias=pci:{name}*"), deps]),
            )
            .expect("write");
        }
        std::fs::write(dir.path().join("modules.builtin"), "kernel/x/d.ko\n").expect("write");
        let tree = ModuleTree::scan(dir.path()).expect("scan");
        assert_eq!(tree.files.len(), 4);
        let chosen = resolve(&tree, &["a".to_owned(), "d".to_owned()]).expect("resolve");
        let names: Vec<_> = chosen.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a"]);
        assert_eq!(
            modules_dep(&chosen),
            "kernel/c.ko:\nkernel/b.ko: kernel/c.ko\nkernel/a.ko: kernel/b.ko kernel/c.ko\n"
        );
        assert!(modules_alias(&chosen).contains("alias pci:a* a\n"));
        let err = resolve(&tree, &["nope".to_owned()]).expect_err("missing");
        assert!(err.to_string().contains("module nope is not in"), "{err}");
    }
}
