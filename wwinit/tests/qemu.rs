#![allow(clippy::unwrap_used)]
//! Real boots of the static `wwinit` as `/init` of Debian's kernel in QEMU
//! (TCG), with initramfs archives written by our own codec.
//!
//! - single-stage, `root=tmpfs`: wwinit copies the unpacked initramfs into a
//!   tmpfs, switches root and execs `/sbin/test-init` (which prints its
//!   marker and powers off);
//! - single-stage, `root=initramfs`: exec in place;
//! - a bad config ends in the crash action (`wwinit.crash=poweroff`);
//! - two-stage: stage 1 holds wwinit and `e1000.ko.xz`; wwinit loads the
//!   driver by modalias, runs its DHCP client against QEMU's user network,
//!   fetches the manifest, image and system overlay from an HTTP server in
//!   this test (digests checked), switches root and execs test-init.
//!
//! Needs what `qemu-tests` needs (kernel from `scripts/fetch-kernel.sh`,
//! QEMU, the musl target). `IRONWULF_SKIP_QEMU=1` skips, loudly. Console
//! logs: `target/tmp/qemu-wwinit-<test>.log`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use initramfs::compress::{Compression, EncoderOptions, encoder};
use qemu_tests::initrd::{MEMBER_FILE, Member, TEST_INIT_MARKER};
use qemu_tests::{Arch, Kernel, Vm, artifacts, qemu_opted_out};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
const MAC: &str = "52:54:00:12:34:56";

/// The static wwinit, built once per test process.
fn wwinit_binary() -> Result<Vec<u8>> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let path = BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args([
                    "build",
                    "--release",
                    "-p",
                    "wwinit",
                    "--target",
                    artifacts::MUSL_TARGET,
                ])
                .current_dir(artifacts::workspace_root())
                .status()
                .map_err(|e| format!("running cargo: {e}"))?;
            if !status.success() {
                return Err(format!("building the static wwinit failed: {status}"));
            }
            Ok(artifacts::target_dir()
                .join(artifacts::MUSL_TARGET)
                .join("release")
                .join("wwinit"))
        })
        .clone()
        .map_err(|e| anyhow!(e))?;
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn test_init() -> Result<Vec<u8>> {
    let p = artifacts::test_init()?;
    std::fs::read(&p).with_context(|| format!("reading {}", p.display()))
}

fn log_path(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-wwinit-{test}.log"))
}

/// A node's initramfs as the kernel would unpack it for a single-stage
/// boot: the image (test-init), the wwinit overlay (`/init ->
/// warewulf/wwinit`) and a system overlay with `wwinit.conf`.
fn single_stage_initrd(conf: &str, member: &str) -> Result<Vec<u8>> {
    Member::new()
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("run", 0o755)
        .dir("etc", 0o755)
        .dir("sbin", 0o755)
        .dir("warewulf", 0o755)
        .char_device("dev/console", 0o600, 5, 1)
        .file("sbin/test-init", 0o755, test_init()?)
        .file("warewulf/wwinit", 0o755, wwinit_binary()?)
        .symlink("init", "warewulf/wwinit")
        .file("warewulf/wwinit.conf", 0o600, conf.as_bytes())
        .file(MEMBER_FILE, 0o644, member.as_bytes())
        .compressed(Compression::Gzip)
}

fn spawn(
    test: &str,
    initrd: &[u8],
    append: &str,
    extra: &[&str],
) -> Result<(Vm, tempfile::TempDir)> {
    let kernel = Kernel::locate(Arch::Amd64)?;
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let path = tmp.path().join("initrd");
    std::fs::write(&path, initrd).context("writing the initrd")?;
    let mut b = Vm::builder()
        .kernel_for(&kernel)
        .initrd(&path)
        .memory_mib(256)
        .append(format!("console=ttyS0 panic=-1 {append}"))
        .console_log(log_path(test));
    if extra.is_empty() {
        // No NIC unless the test wants one.
        b = b.args(["-nic", "none"]);
    }
    let vm = b.args(extra.iter().copied()).spawn()?;
    eprintln!("{test}: {}", vm.command_line());
    Ok((vm, tmp))
}

fn finish(mut vm: Vm, test: &str, member: &str) -> Result<()> {
    vm.console()
        .expect(&format!("{TEST_INIT_MARKER}{member}"), BOOT_TIMEOUT)?;
    vm.expect_poweroff(POWEROFF_TIMEOUT)
        .context("the guest did not power off after the marker")?;
    eprintln!("{test}: ok (console: {})", log_path(test).display());
    Ok(())
}

#[test]
fn single_stage_tmpfs_switches_root_and_execs_init() -> Result<()> {
    let test = "single-stage-tmpfs";
    if qemu_opted_out(test) {
        return Ok(());
    }
    let conf = "id=n1\nroot=tmpfs\ninit=/sbin/test-init\n";
    let initrd = single_stage_initrd(conf, "tmpfs")?;
    let (mut vm, _tmp) = spawn(
        test,
        &initrd,
        "wwinit.crash=poweroff wwinit.crash_delay=0",
        &[],
    )?;
    vm.console().expect_all(
        &[
            "wwinit: stage mount: done",
            "wwinit: stage config: done in",
            "single-stage, node n1, root Tmpfs, init /sbin/test-init",
            "wwinit: copied ",
            "wwinit: stage rootfs: done",
            "wwinit: stage switch-root: done",
            "wwinit: exec /sbin/test-init",
        ],
        BOOT_TIMEOUT,
    )?;
    finish(vm, test, "tmpfs")
}

#[test]
fn single_stage_initramfs_execs_in_place() -> Result<()> {
    let test = "single-stage-initramfs";
    if qemu_opted_out(test) {
        return Ok(());
    }
    let conf = "root=initramfs\ninit=/sbin/test-init\n";
    let initrd = single_stage_initrd(conf, "initramfs")?;
    let (mut vm, _tmp) = spawn(
        test,
        &initrd,
        "wwinit.crash=poweroff wwinit.crash_delay=0",
        &[],
    )?;
    vm.console().expect_all(
        &[
            "wwinit: stage rootfs: skipped (root=initramfs",
            "wwinit: stage switch-root: skipped",
        ],
        BOOT_TIMEOUT,
    )?;
    finish(vm, test, "initramfs")
}

#[test]
fn bad_config_ends_in_crash_action() -> Result<()> {
    let test = "bad-config";
    if qemu_opted_out(test) {
        return Ok(());
    }
    let initrd = single_stage_initrd("root=persistent\n", "never")?;
    let (mut vm, _tmp) = spawn(
        test,
        &initrd,
        "wwinit.crash=poweroff wwinit.crash_delay=1",
        &[],
    )?;
    vm.console().expect_all(
        &[
            "wwinit: ERROR: boot failed: stage config: warewulf/wwinit.conf line 1: root",
            "powering off in 1 s",
        ],
        BOOT_TIMEOUT,
    )?;
    vm.expect_poweroff(POWEROFF_TIMEOUT)?;
    ensure!(
        !vm.console().text().contains(TEST_INIT_MARKER),
        "init ran despite the bad config"
    );
    Ok(())
}

// ------------------------------------------------------------ two-stage

/// What the test head serves: path → body.
struct Head {
    routes: Vec<(String, Vec<u8>)>,
    statuses: Mutex<Vec<String>>,
}

/// Serves `head` on 127.0.0.1 (QEMU's user network maps 10.0.2.2 to it).
fn serve(head: Arc<Head>) -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding the test head")?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            let head = Arc::clone(&head);
            std::thread::spawn(move || {
                let _ = answer(&head, conn);
            });
        }
    });
    Ok(port)
}

fn answer(head: &Head, conn: std::net::TcpStream) -> Result<()> {
    let mut r = BufReader::new(&conn);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
    }
    let mut w = &conn;
    if method == "POST" {
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        head.statuses
            .lock()
            .unwrap()
            .push(format!("{path} {}", String::from_utf8_lossy(&body)));
        w.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")?;
        return Ok(());
    }
    match head.routes.iter().find(|(p, _)| *p == path) {
        Some((_, body)) => {
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            w.write_all(body)?;
        }
        None => w.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    Ok(())
}

fn xz(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = encoder(
        Compression::Xz,
        &EncoderOptions {
            level: None,
            threads: 1,
        },
        Vec::new(),
    )?;
    e.write_all(data)?;
    Ok(e.finish()?)
}

fn entry(stage: &str, url: &str, data: &[u8], compression: &str) -> String {
    format!(
        r#"{{"stage":"{stage}","url":"{url}","digest":"sha256:{}","size":{},"compression":"{compression}"}}"#,
        hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref()),
        data.len()
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn two_stage_dhcp_fetch_verify_switch_root() -> Result<()> {
    let test = "two-stage";
    if qemu_opted_out(test) {
        return Ok(());
    }
    two_stage(
        test,
        true,
        "wwinit.dhcp_timeout=30",
        "lease 10.0.2.15/255.255.255.0 from 10.0.2.2",
        &[", sha256 ok", ", sha256 ok"],
    )
}

/// Static `ip=` instead of DHCP, and a head without the manifest route:
/// wwinit falls back to the bare routes (404 on the optional kmods and
/// runtime is skipped) and checks only HTTP lengths.
#[test]
fn two_stage_static_ip_without_manifest() -> Result<()> {
    let test = "two-stage-static";
    if qemu_opted_out(test) {
        return Ok(());
    }
    two_stage(
        test,
        false,
        "ip=10.0.2.15::10.0.2.2:255.255.255.0:n1:eth0:off",
        "address 10.0.2.15, wwid 52:54:00:12:34:56",
        &[
            "the head has no manifest route",
            "/kmods/52:54:00:12:34:56: not provided (404), skipped",
        ],
    )
}

fn two_stage(
    test: &str,
    with_manifest: bool,
    append: &str,
    net_marker: &str,
    fetch_markers: &[&str],
) -> Result<()> {
    let kernel = Kernel::locate(Arch::Amd64)?;
    let release = kernel
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("kernel file name is not vmlinuz-<release>")?
        .to_owned();
    let moddir = kernel
        .path()
        .parent()
        .and_then(Path::parent)
        .context("kernel has no parent directory")?
        .join("lib/modules")
        .join(&release);
    let e1000_rel = "kernel/drivers/net/ethernet/intel/e1000/e1000.ko";
    let e1000 = std::fs::read(moddir.join(e1000_rel))
        .with_context(|| format!("reading e1000.ko under {}", moddir.display()))?;
    let mdir = format!("lib/modules/{release}");

    // Stage 1: wwinit and one compressed NIC driver (exercises the
    // decompress + init_module fallback: this kernel has no in-kernel
    // module decompression).
    let stage1 = Member::new()
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("run", 0o755)
        .dir("lib", 0o755)
        .dir("lib/modules", 0o755)
        .dir(&mdir, 0o755)
        // The kernel creates no missing parents: every level is listed.
        .dir(&format!("{mdir}/kernel"), 0o755)
        .dir(&format!("{mdir}/kernel/drivers"), 0o755)
        .dir(&format!("{mdir}/kernel/drivers/net"), 0o755)
        .dir(&format!("{mdir}/kernel/drivers/net/ethernet"), 0o755)
        .dir(&format!("{mdir}/kernel/drivers/net/ethernet/intel"), 0o755)
        .dir(&format!("{mdir}/kernel/drivers/net/ethernet/intel/e1000"), 0o755)
        .char_device("dev/console", 0o600, 5, 1)
        .file("init", 0o755, wwinit_binary()?)
        .file(
            &format!("{mdir}/modules.alias"),
            0o644,
            "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias pci:v00008086d00001004sv*sd*bc*sc*i* e1000\n",
        )
        .file(&format!("{mdir}/modules.dep"), 0o644, format!("{e1000_rel}.xz:\n"))
        .file(&format!("{mdir}/{e1000_rel}.xz"), 0o644, xz(&e1000)?)
        .compressed(Compression::Gzip)?;

    let image = Member::new()
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("run", 0o755)
        .dir("etc", 0o755)
        .dir("sbin", 0o755)
        .file("sbin/test-init", 0o755, test_init()?)
        .file(MEMBER_FILE, 0o644, "image")
        .compressed(Compression::Zstd)?;
    let system = Member::new()
        .dir("etc", 0o755)
        .dir("warewulf", 0o755)
        .file(
            "warewulf/wwinit.conf",
            0o600,
            "id=n1\nroot=tmpfs\ninit=/sbin/test-init\n",
        )
        .file(MEMBER_FILE, 0o644, "two-stage")
        .compressed(Compression::Gzip)?;
    let (img_url, sys_url) = (format!("/image/{MAC}"), format!("/system/{MAC}"));
    let manifest = format!(
        "[{},{}]",
        entry("image", &img_url, &image, "zst"),
        entry("system", &sys_url, &system, "gz")
    );
    let head = Arc::new(Head {
        routes: if with_manifest {
            vec![
                (format!("/manifest/{MAC}"), manifest.into_bytes()),
                (img_url, image),
                (sys_url, system),
            ]
        } else {
            vec![(img_url, image), (sys_url, system)]
        },
        statuses: Mutex::new(Vec::new()),
    });
    let port = serve(Arc::clone(&head))?;

    let nic = format!("user,model=e1000,mac={MAC}");
    let (mut vm, _tmp) = spawn(
        test,
        &stage1,
        &format!(
            "wwinit.crash=poweroff wwinit.crash_delay=0 wwinit.server=10.0.2.2:{port} {append}"
        ),
        &["-nic", &nic],
    )?;
    vm.console().expect_all(
        &[
            "no /warewulf/wwinit.conf: two-stage boot",
            "wwinit: loaded e1000 (for pci:v00008086d0000100E",
            "wwinit: stage modules: done",
            net_marker,
            "wwinit: stage fetch: start",
        ],
        BOOT_TIMEOUT,
    )?;
    vm.console().expect_all(fetch_markers, BOOT_TIMEOUT)?;
    vm.console().expect_all(
        &[
            "wwinit: stage fetch: done",
            "wwinit: stage switch-root: done",
            "wwinit: exec /sbin/test-init",
        ],
        BOOT_TIMEOUT,
    )?;
    finish(vm, test, "two-stage")?;
    let statuses = head.statuses.lock().unwrap().clone();
    for want in [
        "\"stage\":\"network\"",
        "\"stage\":\"fetched image\"",
        "\"stage\":\"fetched system\"",
        "\"stage\":\"init\"",
    ] {
        if !statuses
            .iter()
            .any(|s| s.starts_with(&format!("/status/{MAC} ")) && s.contains(want))
        {
            bail!("no status report {want}; got {statuses:#?}");
        }
    }
    Ok(())
}

// ------------------------------------------------------------ IPMI

/// Adds `lib/modules/<release>/…` with the given modules (paths relative to
/// the modules directory) and a `modules.dep` to `m`.
fn with_modules(
    mut m: Member,
    release: &str,
    moddir: &Path,
    dep: &str,
    rels: &[&str],
) -> Result<Member> {
    let base = format!("lib/modules/{release}");
    let mut dirs = std::collections::BTreeSet::new();
    for rel in rels {
        let mut acc = base.clone();
        for part in Path::new(rel).parent().into_iter().flat_map(Path::iter) {
            acc = format!("{acc}/{}", part.to_string_lossy());
            dirs.insert(acc.clone());
        }
    }
    m = m
        .dir("lib", 0o755)
        .dir("lib/modules", 0o755)
        .dir(&base, 0o755);
    // BTreeSet order puts parents before children.
    for d in &dirs {
        m = m.dir(d, 0o755);
    }
    for rel in rels {
        let data = std::fs::read(moddir.join(rel)).with_context(|| format!("reading {rel}"))?;
        m = m.file(&format!("{base}/{rel}"), 0o644, data);
    }
    Ok(m.file(&format!("{base}/modules.dep"), 0o644, dep))
}

fn kernel_modules(kernel: &Kernel) -> Result<(String, PathBuf)> {
    let release = kernel
        .path()
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("kernel file name is not vmlinuz-<release>")?
        .to_owned();
    let moddir = kernel
        .path()
        .parent()
        .and_then(Path::parent)
        .context("kernel has no parent directory")?
        .join("lib/modules")
        .join(&release);
    Ok((release, moddir))
}

/// QEMU 7.2's built-in BMC simulator answers Get Device ID but not the LAN
/// and user commands: this proves the driver loading, `/dev/ipmi0` and the
/// ioctl round trip, and that BMC errors are reported without stopping the
/// boot. The bytes of the LAN requests are checked by unit tests.
#[test]
fn ipmi_talks_to_the_bmc_and_boot_continues() -> Result<()> {
    let test = "ipmi";
    if qemu_opted_out(test) {
        return Ok(());
    }
    let kernel = Kernel::locate(Arch::Amd64)?;
    let (release, moddir) = kernel_modules(&kernel)?;
    let ipmi = "kernel/drivers/char/ipmi";
    let dep = format!(
        "{ipmi}/ipmi_msghandler.ko:\n{ipmi}/ipmi_si.ko: {ipmi}/ipmi_msghandler.ko\n{ipmi}/ipmi_devintf.ko: {ipmi}/ipmi_msghandler.ko\n"
    );
    let conf = "root=initramfs\ninit=/sbin/test-init\nipmi.write=true\nipmi.ipaddr=10.1.0.5\nipmi.netmask=255.255.0.0\nipmi.username=admin\nipmi.password=secret\n";
    let base = Member::new()
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("run", 0o755)
        .dir("etc", 0o755)
        .dir("sbin", 0o755)
        .dir("warewulf", 0o755)
        .char_device("dev/console", 0o600, 5, 1)
        .file("sbin/test-init", 0o755, test_init()?)
        .file("warewulf/wwinit", 0o755, wwinit_binary()?)
        .symlink("init", "warewulf/wwinit")
        .file("warewulf/wwinit.conf", 0o600, conf)
        .file(MEMBER_FILE, 0o644, "ipmi");
    let rels = [
        format!("{ipmi}/ipmi_msghandler.ko"),
        format!("{ipmi}/ipmi_si.ko"),
        format!("{ipmi}/ipmi_devintf.ko"),
    ];
    let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
    let initrd =
        with_modules(base, &release, &moddir, &dep, &rels)?.compressed(Compression::Gzip)?;
    let (mut vm, _tmp) = spawn(
        test,
        &initrd,
        "wwinit.crash=poweroff wwinit.crash_delay=0",
        &[
            "-nic",
            "none",
            "-device",
            "ipmi-bmc-sim,id=bmc0",
            "-device",
            "isa-ipmi-kcs,bmc=bmc0",
        ],
    )?;
    vm.console().expect_all(
        &[
            "wwinit: IPMI drivers: 3 loaded",
            "wwinit: BMC device 0x20",
            "wwinit: stage ipmi: done",
        ],
        BOOT_TIMEOUT,
    )?;
    finish(vm, test, "ipmi")
}

/// Kills and reaps a helper process on drop (also when a test panics).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Against OpenIPMI's `ipmi_sim` (the BMC of `shared/fixtures/ipmi_sim`,
/// reached by QEMU's `ipmi-bmc-extern`): wwinit writes the LAN and user
/// settings, then `ipmitool` over the simulated LAN reads them back with the
/// new password. Needs `apt-get install openipmi ipmitool` and the fixed
/// ports 19623/19624, hence opt-in.
#[test]
#[ignore = "needs openipmi's ipmi_sim and ipmitool (apt-get install openipmi ipmitool); run with --ignored"]
fn ipmi_settings_reach_an_ipmi_sim_bmc() -> Result<()> {
    let test = "ipmi-sim";
    if qemu_opted_out(test) {
        return Ok(());
    }
    let fixtures = std::env::var_os("IRONWULF_IPMI_FIXTURES").map_or_else(
        || PathBuf::from("/work/shared/fixtures/ipmi_sim"),
        PathBuf::from,
    );
    let tmp = tempfile::tempdir()?;
    let state = tmp.path().join("state");
    std::fs::create_dir(&state)?;
    let _sim = Child(
        Command::new("ipmi_sim")
            .arg("-c")
            .arg(fixtures.join("lan.conf"))
            .arg("-f")
            .arg(fixtures.join("bmc1.emu"))
            .arg("-s")
            .arg(&state)
            .arg("-n")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting ipmi_sim (apt-get install openipmi)")?,
    );
    std::thread::sleep(Duration::from_secs(1));

    let kernel = Kernel::locate(Arch::Amd64)?;
    let (release, moddir) = kernel_modules(&kernel)?;
    let ipmi = "kernel/drivers/char/ipmi";
    let dep = format!(
        "{ipmi}/ipmi_msghandler.ko:\n{ipmi}/ipmi_si.ko: {ipmi}/ipmi_msghandler.ko\n{ipmi}/ipmi_devintf.ko: {ipmi}/ipmi_msghandler.ko\n"
    );
    let conf = "root=initramfs\ninit=/sbin/test-init\nipmi.write=true\nipmi.ipaddr=10.1.0.5\n\
                ipmi.netmask=255.255.0.0\nipmi.gateway=10.1.0.1\nipmi.vlan=42\nipmi.username=admin\nipmi.password=n3wpass\n";
    let base = Member::new()
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("run", 0o755)
        .dir("etc", 0o755)
        .dir("sbin", 0o755)
        .dir("warewulf", 0o755)
        .char_device("dev/console", 0o600, 5, 1)
        .file("sbin/test-init", 0o755, test_init()?)
        .file("warewulf/wwinit", 0o755, wwinit_binary()?)
        .symlink("init", "warewulf/wwinit")
        .file("warewulf/wwinit.conf", 0o600, conf)
        .file(MEMBER_FILE, 0o644, "ipmi-sim");
    let rels = [
        format!("{ipmi}/ipmi_msghandler.ko"),
        format!("{ipmi}/ipmi_si.ko"),
        format!("{ipmi}/ipmi_devintf.ko"),
    ];
    let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
    let initrd =
        with_modules(base, &release, &moddir, &dep, &rels)?.compressed(Compression::Gzip)?;
    let (mut vm, _tmp) = spawn(
        test,
        &initrd,
        "wwinit.crash=poweroff wwinit.crash_delay=0",
        &[
            "-nic",
            "none",
            "-chardev",
            "socket,id=ipmi0,host=127.0.0.1,port=19624,reconnect=10",
            "-device",
            "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
            "-device",
            "isa-ipmi-kcs,bmc=bmc0",
        ],
    )?;
    vm.console().expect_all(
        &["wwinit: BMC device", "wwinit: stage ipmi: done"],
        BOOT_TIMEOUT,
    )?;
    finish(vm, test, "ipmi-sim")?;
    let out = Command::new("ipmitool")
        .args([
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
            "19623",
            "-U",
            "admin",
            "-P",
            "n3wpass",
        ])
        .args(["lan", "print", "1"])
        .output()
        .context("running ipmitool")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    for want in ["10.1.0.5", "255.255.0.0", "10.1.0.1", "42"] {
        ensure!(text.contains(want), "`lan print 1` lacks {want}:\n{text}");
    }
    Ok(())
}

/// Warewulf hook scripts run in the new root after the switch, in order,
/// with the image's shell (static busybox here) and `PREFIX` set empty.
#[test]
fn hooks_run_in_the_new_root_in_order() -> Result<()> {
    let test = "hooks";
    if qemu_opted_out(test) {
        return Ok(());
    }
    let busybox = std::fs::read("/bin/busybox")
        .context("reading /bin/busybox (apt-get install busybox-static)")?;
    let first = "printf 'wwinit.d' > /etc/ironwulf-member\n";
    let second = "read x < /etc/ironwulf-member\n\
                  [ -d /newroot ] || x=\"$x+newroot-gone\"\n\
                  printf '%s+init.d+prefix=%s.' \"$x\" \"$PREFIX\" > /etc/ironwulf-member\n";
    let conf = "root=tmpfs\ninit=/sbin/test-init\n";
    let initrd = Member::new()
        .dir("dev", 0o755)
        .dir("proc", 0o555)
        .dir("sys", 0o555)
        .dir("run", 0o755)
        .dir("etc", 0o755)
        .dir("bin", 0o755)
        .dir("sbin", 0o755)
        .dir("warewulf", 0o755)
        .dir("warewulf/wwinit.d", 0o755)
        .dir("warewulf/init.d", 0o755)
        .char_device("dev/console", 0o600, 5, 1)
        .file("bin/busybox", 0o755, busybox)
        .symlink("bin/sh", "busybox")
        .file("sbin/test-init", 0o755, test_init()?)
        .file("warewulf/wwinit", 0o755, wwinit_binary()?)
        .symlink("init", "warewulf/wwinit")
        .file("warewulf/wwinit.conf", 0o600, conf)
        .file("warewulf/wwinit.d/10-first", 0o644, first)
        .file("warewulf/init.d/20-second", 0o644, second)
        .file(MEMBER_FILE, 0o644, "untouched")
        .compressed(Compression::Gzip)?;
    let (mut vm, _tmp) = spawn(
        test,
        &initrd,
        "wwinit.crash=poweroff wwinit.crash_delay=0",
        &[],
    )?;
    vm.console().expect_all(
        &[
            "wwinit: stage switch-root: done",
            "wwinit: running /warewulf/wwinit.d/10-first",
            "wwinit: running /warewulf/init.d/20-second",
            "wwinit: stage hooks: done",
        ],
        BOOT_TIMEOUT,
    )?;
    finish(vm, test, "wwinit.d+newroot-gone+init.d+prefix=.")
}
