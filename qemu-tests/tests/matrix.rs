#![allow(clippy::unwrap_used)]
//! The boot matrix: real Debian 12 nodes (systemd, sshd, wwinit, wwclient)
//! network-booted in QEMU (TCG) from `wwctl server` running for a temp site
//! inside a network namespace made per test. Each scenario is asserted from
//! the node's serial console and from the head's `/status`; the ones that
//! reach `multi-user.target` also log in over SSH from the head's namespace
//! with the site's throw-away root key.
//!
//! The Debian image comes from `scripts/build-debian-image.sh` (built once,
//! cached under `/var/cache/ironwulf/images`). Needs root, QEMU, `ipxe`,
//! `openssh-client`; scenario 8 also `openipmi` and `ipmitool`.
//! `IRONWULF_SKIP_QEMU=1` skips. Boot timings go to stderr (`--nocapture`)
//! and are collected in docs/benchmarks.md; none is asserted.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use qemu_tests::head::{Head, Site, SiteOptions};
use qemu_tests::netns::Netns;
use qemu_tests::ssh::Ssh;
use qemu_tests::{Arch, Kernel, Vm, artifacts, debian, qemu_opted_out};

/// PXE, a 50 MB image over iPXE and systemd to `multi-user.target` under TCG
/// take 1–2 minutes alone; several nodes at once share two cores.
const BOOT_TIMEOUT: Duration = Duration::from_secs(360);
/// sshd and networkd may still be settling when the login prompt shows.
const SSH_TIMEOUT: Duration = Duration::from_secs(120);
/// Guest memory for the Debian nodes (single-stage keeps the compressed and
/// the unpacked image in RAM at once).
const NODE_MIB: u32 = 1024;
/// The kernel command line of every node (after iPXE's own words).
const KERNEL_ARGS: &str = "console=ttyS0, panic=-1, wwinit.crash=poweroff, wwinit.crash_delay=0, \
                           wwinit.tmpfs_size=90%";
/// Seconds between wwclient polls on the nodes.
const UPDATE_INTERVAL: u32 = 5;

/// Seconds since the Unix epoch (the head's `last seen` unit).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The MAC of node `n` (1-based).
fn mac(n: usize) -> String {
    format!("52:54:00:99:00:{n:02x}")
}

/// The address the overlays give node `n`.
fn ipaddr(n: usize) -> String {
    format!("10.99.0.{}", 10 + n)
}

/// A head with a temp site serving the Debian image to `n1`…`nN`, in its
/// own network namespace with one tap per node. Drop order (fields top to
/// bottom) stops the head before the namespace goes.
struct Cluster {
    head: Option<Head>,
    site: Site,
    ns: Netns,
    taps: Vec<String>,
    root_home: PathBuf,
    test: String,
}

/// What a test adds to the standard cluster.
#[derive(Default)]
struct Extra {
    /// YAML lines added to every node (indented under the node).
    node_yaml: String,
    /// Site overlays: (name, path inside the overlay, contents).
    overlays: Vec<(&'static str, &'static str, String)>,
    /// Extra runtime overlays for every node.
    runtime: Vec<&'static str>,
    /// Nodes (1-based) tagged `ironwulf.boot: two-stage`: iPXE loads kernel
    /// and the stage 1 from `wwctl initramfs build`, wwinit streams the rest.
    two_stage: Vec<usize>,
    /// MiB of incompressible data added to the image (`/opt/ballast`), as
    /// a site's application binaries would be.
    ballast_mib: usize,
}

impl Cluster {
    fn new(test: &str, nodes: usize, extra: &Extra) -> Result<Self> {
        let image = debian::rootfs()?;
        let mut ns = Netns::new("mx")?;
        let taps = (0..nodes)
            .map(|_| ns.add_tap())
            .collect::<Result<Vec<_>>>()?;
        let mut site = Site::with_options(&SiteOptions {
            update_interval: Some(UPDATE_INTERVAL),
            ssh_key_types: vec!["ed25519".into()],
        })?;
        site.install_overlays()?;
        let root_home = site.private_root_home()?;
        site.wwctl(&["configure", "ssh"])?;
        let started = Instant::now();
        let rootfs = site.install_image("debian", &image)?;
        if extra.ballast_mib > 0 {
            write_ballast(&rootfs.join("opt/ballast"), extra.ballast_mib)?;
        }

        for (name, path, text) in &extra.overlays {
            let file = site.overlay(name).join(path);
            fs::create_dir_all(file.parent().unwrap())?;
            fs::write(&file, text)?;
        }
        let mut runtime = vec!["hosts", "ssh.authorized_keys"];
        runtime.extend(&extra.runtime);
        let mut yaml = format!(
            "nodeprofiles:
  default:
    image name: debian
    system overlay: [wwinit, wwclient, hosts, hostname, ssh.host_keys, issue, systemd.networkd]
    runtime overlay: [{}]
    kernel:
      args: [{KERNEL_ARGS}]
nodes:
",
            runtime.join(", ")
        );
        for n in 1..=nodes {
            yaml += &format!(
                "  n{n}:
    profiles: [default]
    network devices:
      default:
        hwaddr: {mac}
        ipaddr: {ip}
        netmask: 255.255.255.0
{extra}{tags}",
                mac = mac(n),
                ip = ipaddr(n),
                extra = extra.node_yaml,
                tags = if extra.two_stage.contains(&n) {
                    // wwinit takes the NIC down before init, so udev renames
                    // it (eth0 → ens3) as in a single-stage boot.
                    "    tags:\n      ironwulf.boot: two-stage\n".to_owned()
                } else {
                    String::new()
                },
            );
        }
        site.nodes(&yaml)?;
        site.wwctl(&["image", "build", "debian"])?;
        site.wwctl(&["overlay", "build"])?;
        if !extra.two_stage.is_empty() {
            // Stage 1: wwinit (from the installed wwinit overlay) and the
            // image's virtio NIC drivers.
            site.wwctl(&["initramfs", "build", "debian", "-m", "virtio"])?;
        }
        eprintln!(
            "{test}: site ready in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let head = site.start(&ns)?;
        Ok(Self {
            head: Some(head),
            site,
            ns,
            taps,
            root_home,
            test: test.to_owned(),
        })
    }

    fn head(&self) -> &Head {
        self.head.as_ref().expect("the head is running")
    }

    /// Powers on node `n` (BIOS: SeaBIOS runs the NIC's iPXE ROM).
    fn boot(&self, n: usize, extra_args: &[&str], reboot: bool) -> Result<Node> {
        self.boot_with(n, NODE_MIB, extra_args, reboot)
    }

    /// [`Cluster::boot`] with `mib` of guest memory.
    fn boot_with(&self, n: usize, mib: u32, extra_args: &[&str], reboot: bool) -> Result<Node> {
        let log = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("qemu-matrix-{}-n{n}-{mib}m.log", self.test));
        let mut builder = Vm::builder()
            .netns(self.ns.name())
            .memory_mib(mib)
            .console_log(&log)
            .pxe_nic(&self.taps[n - 1], &mac(n))
            .args(extra_args.iter().copied());
        if reboot {
            builder = builder.allow_reboot();
        }
        let vm = builder.spawn()?;
        eprintln!("{}: n{n}: {}", self.test, vm.command_line());
        Ok(Node {
            vm,
            n,
            started: Instant::now(),
            log,
        })
    }

    /// An SSH client for the nodes, trusting only the site's host key.
    fn ssh(&self, nodes: usize) -> Result<Ssh> {
        let addrs: Vec<String> = (1..=nodes).map(ipaddr).collect();
        let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        Ssh::new(
            self.ns.name(),
            &self.root_home.join(".ssh/id_ed25519"),
            &self
                .site
                .root()
                .join("etc/warewulf/keys/ssh_host_ed25519_key.pub"),
            &addrs,
            self.site.root(),
        )
    }

    /// The head's `/status` as JSON.
    fn status(&self) -> Result<serde_json::Value> {
        let text = self.ns.http_get(&self.head().url("/status"))?;
        serde_json::from_str(&text).context("parsing /status")
    }

    /// Waits until `/status` shows `node` at one of `stages`.
    fn wait_stage(&self, node: &str, stages: &[&str], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let json = self.status()?;
            let stage = json["nodes"][node]["stage"].as_str().unwrap_or_default();
            if stages.contains(&stage) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("/status: {node} is at {stage:?}, not one of {stages:?}: {json}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until `/status` shows `node` polled by wwclient after `since`
    /// (Unix seconds): iPXE and wwinit fetched everything earlier, so only
    /// wwclient's runtime-overlay polls (`RUNTIME_OVERLAY`, a 304 or 200)
    /// and its sync reports (`WWCLIENT_SYNC`) move `last seen` past it.
    fn wait_wwclient(&self, node: &str, since: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let json = self.status()?;
            let n = &json["nodes"][node];
            let stage = n["stage"].as_str().unwrap_or_default();
            let seen = n["last seen"].as_u64().unwrap_or_default();
            if seen > since && matches!(stage, "RUNTIME_OVERLAY" | "WWCLIENT_SYNC") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("/status: no wwclient poll from {node} since {since}: {json}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn fail(&self, e: anyhow::Error) -> anyhow::Error {
        let log = self.head.as_ref().map(Head::log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        e.context(format!("server log (tail):\n{tail}"))
    }
}

/// A booting node and when it was powered on.
struct Node {
    vm: Vm,
    n: usize,
    started: Instant,
    log: PathBuf,
}

/// Seconds from power-on to each boot milestone of a Debian node.
#[derive(Debug, Default)]
struct Timings {
    init: f64,
    login: f64,
    multi_user: f64,
}

impl Node {
    /// Follows the console through wwinit (and its `wwinit` markers, in
    /// order) to systemd's login prompt (which shows the host name from the
    /// `hostname` overlay).
    fn expect_console_boot(&mut self, wwinit: &[&str]) -> Result<Timings> {
        let mut t = Timings::default();
        let console = self.vm.console();
        console.expect("wwinit: stage mount: start", BOOT_TIMEOUT)?;
        t.init = self.started.elapsed().as_secs_f64();
        let console = self.vm.console();
        console.expect_all(wwinit, BOOT_TIMEOUT)?;
        console.expect("wwinit: stage init: start", BOOT_TIMEOUT)?;
        console.expect("- Basic System.", BOOT_TIMEOUT)?;
        let prompt = format!("n{} login:", self.n);
        self.vm.console().expect(&prompt, BOOT_TIMEOUT)?;
        t.login = self.started.elapsed().as_secs_f64();
        Ok(t)
    }

    /// The console boot, then over SSH: waits for `multi-user.target` (systemd
    /// stops printing status once the serial getty owns the console) and
    /// checks what the overlays configured.
    fn expect_booted(&mut self, ssh: &Ssh, wwinit: &[&str]) -> Result<Timings> {
        let mut t = self.expect_console_boot(wwinit)?;
        let addr = ipaddr(self.n);
        ssh.wait(
            &addr,
            "systemctl is-active --quiet multi-user.target",
            SSH_TIMEOUT,
        )?;
        t.multi_user = self.started.elapsed().as_secs_f64();
        eprintln!(
            "n{}: wwinit after {:.1} s, login prompt after {:.1} s, multi-user.target after \
             {:.1} s (console: {})",
            self.n,
            t.init,
            t.login,
            t.multi_user,
            self.log.display()
        );
        check_node_over_ssh(ssh, self.n)?;
        Ok(t)
    }
}

/// Writes `mib` MiB of random bytes to `path` (a new file, so the cached
/// image the site's tree is hard-linked from stays untouched).
fn write_ballast(path: &Path, mib: usize) -> Result<()> {
    use std::io::{Read, Write};
    let mut random = fs::File::open("/dev/urandom")?;
    let mut out = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut buf = vec![0_u8; 1 << 20];
    for _ in 0..mib {
        random.read_exact(&mut buf)?;
        out.write_all(&buf)?;
    }
    Ok(())
}

/// Logs in to node `n` and checks what the overlays configured: host name,
/// address, the system state, and that wwclient runs under systemd.
fn check_node_over_ssh(ssh: &Ssh, n: usize) -> Result<()> {
    let out = ssh.run(
        &ipaddr(n),
        "hostname; ip -4 -o addr show scope global; \
         systemctl is-active ssh wwclient systemd-networkd; \
         systemctl is-system-running; systemd-analyze time | head -n 1; \
         systemctl --failed --no-legend --plain; networkctl list --no-pager --no-legend",
    )?;
    eprintln!("n{n} over ssh:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    ensure!(lines.first() == Some(&&*format!("n{n}")), "hostname: {out}");
    ensure!(
        out.contains(&format!("inet {}/24", ipaddr(n))),
        "address from the overlay missing: {out}"
    );
    ensure!(
        lines.iter().filter(|l| **l == "active").count() == 3,
        "ssh, wwclient, systemd-networkd not all active: {out}"
    );
    ensure!(
        lines.contains(&"running"),
        "systemd reports a degraded system: {out}"
    );
    Ok(())
}

/// 1. BIOS (SeaBIOS + the NIC's iPXE ROM), single-stage: iPXE loads kernel,
///    image, system and runtime overlays; wwinit execs systemd, which reaches
///    multi-user.target; sshd answers from the head's namespace with the key
///    the `ssh.authorized_keys` overlay delivered, presenting the host key of
///    `ssh.host_keys`; host name and address come from the overlays; wwclient
///    reports to `/status`.
#[test]
fn s1_bios_single_stage_debian() {
    let test = "s1_bios_single_stage_debian";
    if qemu_opted_out(test) {
        return;
    }
    let cluster = Cluster::new(test, 1, &Extra::default()).unwrap();
    let run = || -> Result<()> {
        let mut node = cluster.boot(1, &[], false)?;
        node.expect_booted(&cluster.ssh(1)?, &[])?;
        // The head saw the whole boot, then wwclient's first sync.
        cluster.wait_wwclient("n1", unix_now())?;
        let json = cluster.status()?;
        let n1 = &json["nodes"]["n1"];
        ensure!(n1["ipaddr"] == ipaddr(1).as_str(), "/status: {json}");
        let image = fs::metadata(cluster.site.root().join("provision/images/debian.img.gz"))
            .map_or(0, |m| m.len());
        ensure!(
            n1["bytes sent"].as_u64().unwrap_or_default() > image,
            "/status: fewer bytes sent than the image ({image}): {json}"
        );
        Ok(())
    };
    run().map_err(|e| cluster.fail(e)).unwrap();
}

/// 4. Four nodes boot at once from one head, each to `multi-user.target`
///    with its own host name, address and SSH login.
#[test]
fn s4_four_nodes_at_once() {
    let test = "s4_four_nodes_at_once";
    if qemu_opted_out(test) {
        return;
    }
    const NODES: usize = 4;
    let cluster = Cluster::new(test, NODES, &Extra::default()).unwrap();
    let run = || -> Result<()> {
        let mut nodes = (1..=NODES)
            .map(|n| cluster.boot(n, &[], false))
            .collect::<Result<Vec<_>>>()?;
        let ssh = cluster.ssh(NODES)?;
        for node in &mut nodes {
            let n = node.n;
            node.expect_booted(&ssh, &[])
                .with_context(|| format!("node n{n}"))?;
        }
        let booted = unix_now();
        for n in 1..=NODES {
            let name = format!("n{n}");
            cluster.wait_wwclient(&name, booted)?;
            let json = cluster.status()?;
            ensure!(
                json["nodes"][&name]["ipaddr"] == ipaddr(n).as_str(),
                "/status: {json}"
            );
        }
        // `wwctl ssh` fans out to the booted nodes from the head's namespace
        // with the site's key (the host keys checked as above).
        let rsh = format!(
            "ssh -F /dev/null -i {} -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes \
             -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR -l root",
            cluster.root_home.join(".ssh/id_ed25519").display(),
            cluster.site.root().join("known_hosts").display()
        );
        let out = cluster
            .ns
            .command(&qemu_tests::head::wwctl()?.to_string_lossy())
            .arg("--warewulfconf")
            .arg(cluster.site.conf())
            .args([
                "ssh", "--fanout", "4", "--rsh", &rsh, "n[1-4]", "--", "hostname",
            ])
            .output()
            .context("running wwctl ssh")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "wwctl ssh ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for n in 1..=NODES {
            ensure!(
                stdout.lines().any(|l| l.trim() == format!("n{n}: n{n}")),
                "wwctl ssh output lacks n{n}: {stdout}"
            );
        }
        Ok(())
    };
    run().map_err(|e| cluster.fail(e)).unwrap();
}

/// 5. A runtime overlay change reaches a running Debian node through
///    wwclient under systemd: the site overlay `motd` changes on the head,
///    `wwctl overlay build`, and within a few polls `/etc/motd` on the node
///    (read over SSH) has the new text; `/status` shows wwclient's sync.
#[test]
fn s5_runtime_overlay_reaches_running_node() {
    let test = "s5_runtime_overlay_reaches_running_node";
    if qemu_opted_out(test) {
        return;
    }
    let extra = Extra {
        overlays: vec![("motd", "etc/motd", "version one\n".to_owned())],
        runtime: vec!["motd"],
        ..Extra::default()
    };
    let cluster = Cluster::new(test, 1, &extra).unwrap();
    let run = || -> Result<()> {
        let mut node = cluster.boot(1, &[], false)?;
        let ssh = cluster.ssh(1)?;
        node.expect_booted(&ssh, &[])?;
        let addr = ipaddr(1);
        ensure!(ssh.run(&addr, "cat /etc/motd")? == "version one\n");

        fs::write(
            cluster.site.overlay("motd").join("etc/motd"),
            "version two\n",
        )?;
        cluster.site.wwctl(&["overlay", "build"])?;
        let changed = Instant::now();
        ssh.wait(
            &addr,
            "grep -qx 'version two' /etc/motd",
            Duration::from_secs(60),
        )?;
        eprintln!(
            "{test}: change seen on the node after {:.1} s (update interval {UPDATE_INTERVAL} s)",
            changed.elapsed().as_secs_f64()
        );
        cluster.wait_stage("n1", &["WWCLIENT_SYNC"], Duration::from_secs(30))?;
        let json = cluster.status()?;
        let detail = json["nodes"]["n1"]["detail"].as_str().unwrap_or_default();
        ensure!(detail.contains("overlay"), "/status detail: {json}");
        Ok(())
    };
    run().map_err(|e| cluster.fail(e)).unwrap();
}

/// 6. The head is restarted while iPXE downloads the node's image: the
///    transfer breaks, the iPXE script's failure path reboots the node (as
///    real hardware does; this VM may reboot), and the second attempt, served
///    by the restarted head, boots to `multi-user.target`.
#[test]
fn s6_head_restart_during_image_download() {
    let test = "s6_head_restart_during_image_download";
    if qemu_opted_out(test) {
        return;
    }
    let mut cluster = Cluster::new(test, 1, &Extra::default()).unwrap();
    let mut node = cluster.boot(1, &[], true).unwrap();
    let mut run = || -> Result<()> {
        // iPXE prints each URL as it starts fetching it.
        node.vm.console().expect("/image/", BOOT_TIMEOUT)?;
        std::thread::sleep(Duration::from_millis(500));
        let old = cluster.head.take().expect("the head runs");
        let pid = old.pid();
        drop(old);
        eprintln!("{test}: head (pid {pid}) killed during the image download");
        std::thread::sleep(Duration::from_secs(2));
        cluster.head = Some(cluster.site.start(&cluster.ns)?);
        eprintln!("{test}: head restarted");
        // The broken download must have been noticed (else the kill came
        // too late to prove anything).
        node.vm
            .console()
            .expect("Booting n1 failed", BOOT_TIMEOUT)?;
        node.expect_booted(&cluster.ssh(1)?, &[])?;
        cluster.wait_wwclient("n1", unix_now())?;
        Ok(())
    };
    let result = run();
    result.map_err(|e| cluster.fail(e)).unwrap();
}

/// Kills and reaps a helper process on drop (also when a test panics).
struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An OpenIPMI `ipmi_sim` BMC config: LAN side on 127.0.0.1:19623 (IPMI
/// v2 lanplus), VM side on 127.0.0.1:19624 for QEMU's `ipmi-bmc-extern`;
/// user 2 `admin`/`secret`. Ports are per network namespace.
const IPMI_LAN_CONF: &str = r#"name "bmc1"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 19623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  serial 15 127.0.0.1 19624 codec VM
  startnow false
  user 1 true  ""      "test"   user  10 none md2 md5 straight
  user 2 true  "admin" "secret" admin 10 none md2 md5 straight
"#;
/// The emulated management controller for [`IPMI_LAN_CONF`].
const IPMI_EMU: &str = "mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
";

/// 8. wwinit configures the node's BMC: `ipmi_sim` runs in the test's
///    namespace, QEMU connects it as the node's KCS BMC; the node's `ipmi`
///    settings from nodes.conf (`ipmi write: true`) reach it through wwinit's
///    `ipmi` stage on the Debian image's own modules; `ipmitool` over the
///    simulated LAN then reads them back with the new password, and the node
///    boots on.
#[test]
fn s8_bmc_configured_by_wwinit() {
    let test = "s8_bmc_configured_by_wwinit";
    if qemu_opted_out(test) {
        return;
    }
    let extra = Extra {
        node_yaml: "    ipmi:
      ipaddr: 10.1.0.5
      netmask: 255.255.0.0
      gateway: 10.1.0.1
      username: admin
      password: n3wpass
      write: \"true\"
      tags:
        vlan: \"42\"
"
        .to_owned(),
        ..Extra::default()
    };
    let cluster = Cluster::new(test, 1, &extra).unwrap();
    let run = || -> Result<()> {
        let dir = cluster.site.root().join("bmc");
        fs::create_dir_all(dir.join("state"))?;
        fs::write(dir.join("lan.conf"), IPMI_LAN_CONF)?;
        fs::write(dir.join("bmc.emu"), IPMI_EMU)?;
        let _sim = Helper(
            cluster
                .ns
                .command("ipmi_sim")
                .arg("-c")
                .arg(dir.join("lan.conf"))
                .arg("-f")
                .arg(dir.join("bmc.emu"))
                .arg("-s")
                .arg(dir.join("state"))
                .arg("-n")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(fs::File::create(dir.join("ipmi_sim.log"))?)
                .spawn()
                .context("starting ipmi_sim (apt-get install openipmi)")?,
        );
        std::thread::sleep(Duration::from_secs(1));
        let mut node = cluster.boot(
            1,
            &[
                "-chardev",
                "socket,id=ipmi0,host=127.0.0.1,port=19624,reconnect=10",
                "-device",
                "ipmi-bmc-extern,chardev=ipmi0,id=bmc0",
                "-device",
                "isa-ipmi-kcs,bmc=bmc0",
            ],
            false,
        )?;
        // wwinit's ipmi stage runs before it execs systemd, so the settings
        // are in the BMC once the node is up.
        node.expect_booted(
            &cluster.ssh(1)?,
            &["wwinit: BMC device", "wwinit: stage ipmi: done"],
        )?;
        let out = cluster
            .ns
            .command("ipmitool")
            .args(["-I", "lanplus", "-H", "127.0.0.1", "-p", "19623"])
            .args(["-U", "admin", "-P", "n3wpass", "lan", "print", "1"])
            .output()
            .context("running ipmitool (apt-get install ipmitool)")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!("{test}: ipmitool lan print 1:\n{text}");
        for want in ["10.1.0.5", "255.255.0.0", "10.1.0.1", ": 42"] {
            ensure!(text.contains(want), "`lan print 1` lacks {want}:\n{text}");
        }
        Ok(())
    };
    run().map_err(|e| cluster.fail(e)).unwrap();
}

/// OVMF (UEFI) firmware for a node: read-only code, a private copy of the
/// variables, and no option ROM on the NIC, so the firmware's own PXE
/// fetches iPXE over the head's TFTP.
fn uefi_args(dir: &Path) -> Result<Vec<String>> {
    let vars = dir.join("OVMF_VARS_4M.fd");
    fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
        .context("copying OVMF_VARS (apt-get install ovmf)")?;
    Ok(vec![
        "-drive".into(),
        "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
        "-drive".into(),
        format!("if=pflash,format=raw,file={}", vars.display()),
        "-global".into(),
        "virtio-net-pci.romfile=".into(),
    ])
}

/// 2. UEFI (OVMF, its PXE loads iPXE over our TFTP), two-stage: iPXE loads
///    kernel + stage 1; wwinit loads the NIC driver, takes iPXE's lease from
///    `ip=`, streams image and overlays checked against `/manifest`, switches
///    root into a tmpfs and execs systemd; `/status` shows wwinit's stages.
#[test]
fn s2_uefi_two_stage_debian() {
    let test = "s2_uefi_two_stage_debian";
    if qemu_opted_out(test) {
        return;
    }
    let extra = Extra {
        two_stage: vec![1],
        ..Extra::default()
    };
    let cluster = Cluster::new(test, 1, &extra).unwrap();
    let run = || -> Result<()> {
        let firmware = uefi_args(cluster.site.root())?;
        let firmware: Vec<&str> = firmware.iter().map(String::as_str).collect();
        let mut node = cluster.boot(1, &firmware, false)?;
        node.vm.console().expect("two-stage", BOOT_TIMEOUT)?;
        node.expect_booted(
            &cluster.ssh(1)?,
            &[
                "wwinit: stage fetch: done",
                "wwinit: stage switch-root: done",
            ],
        )?;
        cluster.wait_wwclient("n1", unix_now())?;
        let log = cluster.head().log();
        ensure!(log.contains("TFTP"), "server log: {log}");
        Ok(())
    };
    run().map_err(|e| cluster.fail(e)).unwrap();
}

/// Guest memory (MiB) at which the Debian image with [`BALLAST_MIB`] boots
/// two-stage but not single-stage; `IRONWULF_MATRIX_LOW_MIB` overrides (to
/// measure).
const LOW_MIB: u32 = 512;
/// Incompressible data in the low-memory scenario's image: single-stage
/// needs the compressed image and its unpacked copy in RAM at once, so the
/// gap between the two paths is the compressed size (58 MiB for the bare
/// image, whose systemd then runs with too little room to be reliable).
const BALLAST_MIB: usize = 96;

/// 3. Low memory: at [`LOW_MIB`] the single-stage boot fails (the
///    compressed image and its unpacked copy do not fit side by side) while
///    the two-stage boot, which streams into its tmpfs, reaches
///    `multi-user.target`. Both nodes boot the same image (the Debian image
///    plus [`BALLAST_MIB`] of application data) from one head.
#[test]
fn s3_low_memory_two_stage_only() {
    let test = "s3_low_memory_two_stage_only";
    if qemu_opted_out(test) {
        return;
    }
    let mib = std::env::var("IRONWULF_MATRIX_LOW_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LOW_MIB);
    let extra = Extra {
        two_stage: vec![2],
        ballast_mib: BALLAST_MIB,
        ..Extra::default()
    };
    let cluster = Cluster::new(test, 2, &extra).unwrap();
    let run = || -> Result<()> {
        // Single-stage must not come up: no login prompt, and QEMU ends
        // (kernel panic or wwinit's crash action, both power off here).
        let mut single = cluster.boot_with(1, mib, &[], false)?;
        let up = single.expect_console_boot(&[]);
        ensure!(
            up.is_err(),
            "single-stage booted with -m {mib}: pick a lower LOW_MIB"
        );
        let status = single.vm.wait_exit(Duration::from_secs(5));
        ensure!(
            status.is_ok(),
            "single-stage node still running after its failed boot"
        );
        // The kernel cannot unpack the image next to its compressed copy.
        let text = single.vm.console().text();
        ensure!(
            text.contains("Initramfs unpacking failed"),
            "single-stage at -m {mib} failed for another reason"
        );
        eprintln!("{test}: single-stage at -m {mib}: Initramfs unpacking failed (out of memory)");
        drop(single);

        let mut two = cluster.boot_with(2, mib, &[], false)?;
        let t = two.expect_booted(&cluster.ssh(2)?, &[])?;
        eprintln!(
            "{test}: two-stage at -m {mib} reached multi-user.target after {:.1} s",
            t.multi_user
        );
        Ok(())
    };
    run().map_err(|e| cluster.fail(e)).unwrap();
}

/// 7. aarch64, the Raspberry Pi path: no iPXE; the "firmware" (QEMU's
///    `-kernel`/`-initrd` on `-M virt`) loads Debian's arm64 kernel and the
///    stage 1 that `wwctl initramfs build --root` made from that kernel's
///    package with the arm64 wwinit, with one command line that names no node
///    (`console=… wwinit.crash=poweroff`): wwinit loads the virtio NIC by
///    modalias, gets the node's reserved address from the head with its own
///    DHCP client, finds itself by MAC, streams the arm64 busybox image and
///    the overlays, switches root and execs the image's init, which prints
///    the host name and hosts the overlays wrote.
#[test]
fn s7_aarch64_firmware_loaded_stage1() {
    let test = "s7_aarch64_firmware_loaded_stage1";
    if qemu_opted_out(test) {
        return;
    }
    let kernel = Kernel::locate(Arch::Arm64).unwrap();
    let image = debian::arm64_rootfs().unwrap();
    let mut ns = Netns::new("ma").unwrap();
    let tap = ns.add_tap().unwrap();
    let mut site = Site::new().unwrap();
    site.install_overlays().unwrap();
    site.install_image("arm", &image).unwrap();
    site.nodes(&format!(
        "nodeprofiles: {{}}
nodes:
  n1:
    image name: arm
    system overlay: [wwinit, hostname, hosts]
    runtime overlay: [hosts]
    tags:
      ironwulf.boot: two-stage
    network devices:
      default:
        hwaddr: {mac}
        ipaddr: {ip}
        netmask: 255.255.255.0
",
        mac = mac(1),
        ip = ipaddr(1)
    ))
    .unwrap();
    site.wwctl(&["image", "build", "arm"]).unwrap();
    site.wwctl(&["overlay", "build"]).unwrap();
    let stage1 = site.root().join("stage1-arm64.img");
    let kernel_tree = kernel.path().parent().unwrap().parent().unwrap();
    let wwinit = artifacts::wwinit_arm64().unwrap();
    site.wwctl(&[
        "initramfs",
        "build",
        "--root",
        kernel_tree.to_str().unwrap(),
        "-m",
        "virtio",
        "--wwinit",
        wwinit.to_str().unwrap(),
        "-o",
        stage1.to_str().unwrap(),
    ])
    .unwrap();
    let head = site.start(&ns).unwrap();

    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("qemu-matrix-{test}.log"));
    let started = Instant::now();
    let mut vm = Vm::builder()
        .netns(ns.name())
        .kernel_for(&kernel)
        .initrd(&stage1)
        .append("console=ttyAMA0 panic=-1 wwinit.crash=poweroff wwinit.crash_delay=0")
        .memory_mib(512)
        .console_log(&log)
        .args([
            "-netdev".to_owned(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=n0,mac={}", mac(1)),
        ])
        .spawn()
        .unwrap();
    eprintln!("{test}: {}", vm.command_line());
    let run = |vm: &mut Vm| -> Result<()> {
        vm.console().expect_all(
            &[
                "wwinit: stage mount: start",
                "wwinit: stage modules: done",
                &format!("address {}", ipaddr(1)),
                "wwinit: stage fetch: done",
                "wwinit: stage switch-root: done",
                "wwinit: stage init: start",
                "IRONWULF-ARM64: host n1 arch aarch64 root tmpfs",
                &format!("IRONWULF-ARM64: hosts: {}", ipaddr(1)),
            ],
            BOOT_TIMEOUT,
        )?;
        eprintln!(
            "{test}: init reached in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        vm.expect_poweroff(Duration::from_secs(60))?;
        // wwinit reported each stage; the last one before exec is `init`.
        let status = ns.http_get(&head.url("/status"))?;
        let json: serde_json::Value = serde_json::from_str(&status)?;
        ensure!(
            json["nodes"]["n1"]["stage"] == "init",
            "/status: n1 did not report init: {json}"
        );
        ensure!(
            json["nodes"]["n1"]["ipaddr"] == ipaddr(1).as_str(),
            "/status: {json}"
        );
        Ok(())
    };
    head.with_log(run(&mut vm)).unwrap();
}
