#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `wwctl power` and `wwctl node console` against a real BMC with a real
//! machine behind it: `ipmi_sim` (package `openipmi`) is the BMC, and its
//! `startcmd` is a QEMU node that connects back through `ipmi-bmc-extern`.
//! `ipmi_sim`, `wwctl server` and the node share a network namespace this
//! test creates, so `wwctl power on` makes the BMC start QEMU, which
//! PXE-boots through our DHCP, iPXE script and HTTP to an `/init` that says
//! it booted and stays up.
//!
//! Proves, in order: `status` says off; a wrong password fails that node
//! alone with its reason; `on` boots the node through the head; `status`
//! says on; `node console` (ipmitool's Serial-over-LAN, through ipmi_sim's
//! SOL bridge to the VM's serial port) shows the running node; `reset`
//! reboots it through the head again; `off` stops QEMU and `status` says off.
//!
//! Needs root, `qemu-system-x86`, `ipxe`, `openipmi`, `ipmitool`,
//! `busybox-static`, `bsdutils` (`script`), `scripts/fetch-kernel.sh`.
//! `IRONWULF_SKIP_QEMU=1` skips.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qemu_tests::head::{Site, wwctl};
use qemu_tests::netns::Netns;
use qemu_tests::{Arch, Kernel, qemu_opted_out};

/// PXE → iPXE → HTTP → kernel → init under TCG takes about 25–35 s here.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const MAC: &str = "52:54:00:12:34:21";
const BOOTED: &str = "IRONWULF-POWER: booted";
const ALIVE: &str = "IRONWULF-POWER: alive";

/// A process group this test started (ipmi_sim and the QEMU it runs, or
/// a console session); killed whole on drop, also when the test panics.
struct Group(Child);

impl Group {
    fn spawn(cmd: &mut Command) -> Self {
        Group(cmd.process_group(0).spawn().unwrap())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = i32::try_from(self.0.id()).unwrap();
        // SAFETY: kill(2) on a process group this test created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Image `tiny`: busybox, Debian's kernel in /boot and an `/init` that
/// reports the boot and then stays up, printing a heartbeat.
fn image(site: &Site, kernel: &Kernel) {
    let rootfs = site.rootfs("tiny");
    for dir in ["boot", "dev", "proc", "sys", "etc", "run", "tmp", "bin"] {
        fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    let name = kernel
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let name = if name.starts_with("vmlinuz-") {
        name
    } else {
        format!("vmlinuz-{name}")
    };
    fs::copy(kernel.path(), rootfs.join("boot").join(name)).unwrap();
    let status = Command::new("mknod")
        .arg(rootfs.join("dev/console"))
        .args(["c", "5", "1"])
        .status()
        .unwrap();
    assert!(status.success(), "mknod dev/console");
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    fs::write(
        rootfs.join("init"),
        format!(
            "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\necho \"{BOOTED} $(/bin/busybox cut -d' ' -f1 /proc/uptime)\"\nwhile :; do echo \"{ALIVE}\"; /bin/busybox sleep 2; done\n"
        ),
    )
    .unwrap();
    fs::set_permissions(rootfs.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// ipmi_sim's LAN config: BMC on 127.0.0.1:623 (admin/secret), the VM side
/// on :9002, SOL bridged to the VM's serial port on :9003, and `startcmd`
/// the QEMU node (network boot on `tap`, console also logged to `log`).
fn lan_conf(tap: &str, log: &Path, pidfile: &Path) -> String {
    let qemu = [
        "qemu-system-x86_64 -accel tcg -m 512 -display none -monitor none",
        "-boot n -netdev tap,id=n0,ifname=TAP,script=no,downscript=no",
        "-device virtio-net-pci,netdev=n0,mac=MAC",
        "-chardev socket,id=ser0,host=127.0.0.1,port=9003,server=on,wait=off,logfile=LOG",
        "-serial chardev:ser0",
        "-chardev socket,id=ipmi0,host=127.0.0.1,port=9002,reconnect=10",
        "-device ipmi-bmc-extern,chardev=ipmi0,id=bmc0 -device isa-ipmi-kcs,bmc=bmc0",
        "-pidfile PIDFILE",
    ]
    .join(" ")
    .replace("TAP", tap)
    .replace("MAC", MAC)
    .replace("LOG", &log.display().to_string())
    .replace("PIDFILE", &pidfile.display().to_string());
    format!(
        "name \"node-bmc\"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 9002 codec VM
  sol \"tcp:127.0.0.1:9003\" 115200
  startcmd \"{qemu}\"
  startnow false
  user 2 true \"admin\" \"secret\" admin 10 none md2 md5 straight
"
    )
}

/// `wwctl --warewulfconf <site> ARGS` in the namespace.
fn power_cmd(ns: &Netns, site: &Site, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()])
        .arg(wwctl().unwrap())
        .arg("--warewulfconf")
        .arg(site.conf())
        .args(args);
    cmd
}

fn run(ns: &Netns, site: &Site, args: &[&str]) -> Output {
    power_cmd(ns, site, args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The node's power state from `wwctl power status NODE --json`.
fn power(ns: &Netns, site: &Site, node: &str) -> serde_json::Value {
    let out = run(ns, site, &["power", "status", node, "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    list[0].clone()
}

/// Waits until `path` contains `marker` `count` times.
fn wait_log(
    path: &Path,
    marker: &str,
    count: usize,
    timeout: Duration,
    head_log: &dyn Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.matches(marker).count() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{marker:?} ×{count} not on the console within {timeout:?}:\n{text}\nserver log:\n{}",
            head_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Polls `wwctl power status` until it reports `want`.
fn wait_power(ns: &Netns, site: &Site, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let s = power(ns, site, "n1");
        if s["power"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "power never became {want}: {s}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pid_alive(pidfile: &Path) -> bool {
    let Ok(text) = fs::read_to_string(pidfile) else {
        return false;
    };
    let pid: i32 = text.trim().parse().unwrap();
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn power_on_boots_the_node_through_the_head_and_off_stops_it() {
    if qemu_opted_out("power_on_boots_the_node_through_the_head_and_off_stops_it") {
        return;
    }
    let kernel = Kernel::locate(Arch::Amd64).unwrap();
    let mut ns = Netns::new("pw").unwrap();
    let tap = ns.add_tap().unwrap();
    let site = Site::new().unwrap();
    image(&site, &kernel);
    site.nodes(&format!(
        "nodeprofiles:
  bmc:
    ipmi:
      ipaddr: 127.0.0.1
      username: admin
      interface: lan
nodes:
  n1:
    profiles: [bmc]
    image name: tiny
    system overlay: [hostname]
    runtime overlay: [hosts]
    kernel:
      args: [console=ttyS0, panic=-1, quiet]
    ipmi:
      password: secret
    network devices:
      default:
        hwaddr: {MAC}
        ipaddr: 10.99.0.21
        netmask: 255.255.255.0
  n2:
    profiles: [bmc]
    ipmi:
      password: wrong
"
    ))
    .unwrap();
    site.wwctl(&["image", "build", "tiny"]).unwrap();
    site.wwctl(&["overlay", "build"]).unwrap();
    let head = site.start(&ns).unwrap();
    let head_log = || head.log();

    let dir = site.root().join("bmc");
    fs::create_dir_all(dir.join("state")).unwrap();
    let console_log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("qemu-power.log");
    let _ = fs::remove_file(&console_log);
    let pidfile = dir.join("qemu.pid");
    fs::write(dir.join("lan.conf"), lan_conf(&tap, &console_log, &pidfile)).unwrap();
    fs::write(
        dir.join("bmc.emu"),
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\nmc_enable 0x20\n",
    )
    .unwrap();
    let sim_log = fs::File::create(dir.join("ipmi_sim.log")).unwrap();
    let _bmc = Group::spawn(
        Command::new("ip")
            .args(["netns", "exec", ns.name(), "ipmi_sim", "-n", "-c"])
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("state"))
            .stdin(Stdio::null())
            .stdout(sim_log.try_clone().unwrap())
            .stderr(sim_log),
    );

    // Off at first; the wrong password fails n2 alone, with the reason.
    let deadline = Instant::now() + Duration::from_secs(20);
    let out = loop {
        let out = run(&ns, &site, &["power", "status", "n[1-2]", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if list[0]["ok"] == true || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["power"], "off", "{list}");
    let why = list[1]["error"].as_str().unwrap();
    assert!(
        why.contains("Unable to establish") && why.contains("IPMI username and password"),
        "{list}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 2 nodes failed: n2"));

    // On: the BMC starts QEMU, which boots from the network through the head.
    let started = Instant::now();
    let out = run(&ns, &site, &["power", "on", "n1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Chassis Power Control: Up/On"));
    wait_log(&console_log, BOOTED, 1, BOOT_TIMEOUT, &head_log);
    eprintln!(
        "power on → init in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(pid_alive(&pidfile), "QEMU is not running");
    assert!(
        head.log().contains("DHCP"),
        "the node did not boot through the head:\n{}",
        head.log()
    );
    wait_power(&ns, &site, "on", Duration::from_secs(30));

    // Console: Serial-over-LAN shows the running node (lanplus, as SOL
    // needs; ipmi_sim does not list cipher suites, so pin one with the tag).
    site.wwctl(&[
        "node",
        "set",
        "-y",
        "n1",
        "--ipmiinterface",
        "lanplus",
        "--ipmitagadd",
        "ciphersuite=3",
    ])
    .unwrap();
    let mut console_cmd = Command::new("script");
    let inner = power_cmd(&ns, &site, &["node", "console", "n1"]);
    let line: Vec<String> = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect();
    console_cmd
        .args(["-qfec", &line.join(" "), "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut console = Group::spawn(&mut console_cmd);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = console.0.stdout.take().unwrap();
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if text.contains(ALIVE) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat over SOL:\n{text}\nipmi_sim: {}",
            fs::read_to_string(dir.join("ipmi_sim.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // ipmitool's escape: "~." at the start of a line ends the session, and
    // `wwctl node console` with it, successfully.
    let mut stdin = console.0.stdin.take().unwrap();
    stdin.write_all(b"\r~.").unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = console.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the console did not end on ~.");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "wwctl node console: {status}\n{}",
        String::from_utf8_lossy(&seen.lock().unwrap())
    );
    drop(console);

    // Reset: the node reboots, again through the head.
    let out = run(&ns, &site, &["power", "reset", "n1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_log(&console_log, BOOTED, 2, BOOT_TIMEOUT, &head_log);

    // Off: QEMU goes away and the BMC says off.
    let out = run(&ns, &site, &["power", "off", "n1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_power(&ns, &site, "off", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while pid_alive(&pidfile) {
        assert!(Instant::now() < deadline, "QEMU still runs after power off");
        std::thread::sleep(Duration::from_millis(250));
    }
}
