//! A QEMU virtual machine: a builder for the command line, and the running VM
//! that owns the QEMU process group.
//!
//! QEMU runs in its own process group with stdin closed, its serial console
//! (`-nographic`) on a pipe read by a [`Console`], and its stderr captured for
//! error messages. Dropping a [`Vm`] sends `SIGKILL` to the whole group and
//! reaps QEMU, so a panicking test never leaves a VM behind; QEMU also gets
//! `SIGKILL` if the thread that spawned it dies (`PR_SET_PDEATHSIG`), which
//! covers a test process killed from outside.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tempfile::TempPath;

use crate::console::{Console, Transcript};
use crate::kernel::{Arch, Kernel};

/// How often [`Vm::wait_exit`] polls QEMU.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// Initrds passed together are padded to this alignment, as iPXE does.
const INITRD_ALIGN: u64 = 4;

/// Builder for a [`Vm`]: `Vm::builder().kernel(k).initrd(i).spawn()?`.
#[derive(Debug, Clone)]
pub struct VmBuilder {
    qemu: OsString,
    machine: Vec<OsString>,
    kernel: Option<PathBuf>,
    initrds: Vec<PathBuf>,
    append: String,
    memory_mib: u32,
    extra: Vec<OsString>,
    console_log: Option<PathBuf>,
    netns: Option<String>,
    no_reboot: bool,
}

impl Default for VmBuilder {
    fn default() -> Self {
        Self {
            qemu: "qemu-system-x86_64".into(),
            machine: Vec::new(),
            kernel: None,
            initrds: Vec::new(),
            append: "console=ttyS0 panic=-1".to_owned(),
            memory_mib: 256,
            extra: Vec::new(),
            console_log: None,
            netns: None,
            no_reboot: true,
        }
    }
}

impl VmBuilder {
    /// Boots `kernel` directly, choosing QEMU binary, machine and console for
    /// its architecture.
    pub fn kernel_for(mut self, kernel: &Kernel) -> Self {
        match kernel.arch() {
            Arch::Amd64 => {
                self.qemu = "qemu-system-x86_64".into();
                self.machine.clear();
                self.append = "console=ttyS0 panic=-1".to_owned();
            }
            Arch::Arm64 => {
                self.qemu = "qemu-system-aarch64".into();
                self.machine = ["-M", "virt", "-cpu", "cortex-a57"]
                    .map(OsString::from)
                    .to_vec();
                self.append = "console=ttyAMA0 panic=-1".to_owned();
            }
        }
        self.kernel = Some(kernel.path().to_path_buf());
        self
    }

    /// The QEMU binary (default `qemu-system-x86_64`, looked up in `PATH`).
    pub fn qemu(mut self, binary: impl Into<OsString>) -> Self {
        self.qemu = binary.into();
        self
    }

    /// The kernel image for `-kernel`.
    pub fn kernel(mut self, path: impl Into<PathBuf>) -> Self {
        self.kernel = Some(path.into());
        self
    }

    /// Adds an initrd. Several initrds are concatenated (4-byte aligned, as
    /// iPXE does) into one temporary file owned by the VM.
    pub fn initrd(mut self, path: impl Into<PathBuf>) -> Self {
        self.initrds.push(path.into());
        self
    }

    /// The kernel command line (default `console=ttyS0 panic=-1`).
    pub fn append(mut self, cmdline: impl Into<String>) -> Self {
        self.append = cmdline.into();
        self
    }

    /// Guest memory in MiB (default 256).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Adds one raw QEMU argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Adds raw QEMU arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra.extend(args.into_iter().map(Into::into));
        self
    }

    /// Also copies the serial console to `path`.
    pub fn console_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.console_log = Some(path.into());
        self
    }

    /// The full QEMU argument list (without the binary), for logs and tests.
    pub fn command_args(&self, initrd: Option<&Path>) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-accel", "tcg", "-nographic"].map(OsString::from).to_vec();
        if self.no_reboot {
            args.push("-no-reboot".into());
        }
        args.push("-m".into());
        args.push(self.memory_mib.to_string().into());
        args.extend(self.machine.iter().cloned());
        if let Some(kernel) = &self.kernel {
            args.push("-kernel".into());
            args.push(kernel.into());
            args.push("-append".into());
            args.push(self.append.clone().into());
        }
        if let Some(initrd) = initrd {
            args.push("-initrd".into());
            args.push(initrd.into());
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Runs QEMU inside network namespace `name` (for `-netdev tap`
    /// devices made there by [`crate::netns::Netns`]).
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_owned());
        self
    }

    /// Lets the guest reboot instead of ending QEMU (drops `-no-reboot`), as
    /// a real node that retries a failed network boot.
    pub fn allow_reboot(mut self) -> Self {
        self.no_reboot = false;
        self
    }

    /// Network boot first (`-boot n`) from a virtio NIC with `mac` on tap
    /// `tap` (made with [`crate::netns::Netns::add_tap`]); under SeaBIOS the
    /// NIC's iPXE ROM runs.
    pub fn pxe_nic(self, tap: &str, mac: &str) -> Self {
        self.args([
            "-boot".to_owned(),
            "n".to_owned(),
            "-netdev".to_owned(),
            format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device".to_owned(),
            format!("virtio-net-pci,netdev=n0,mac={mac}"),
        ])
    }

    /// Starts QEMU.
    ///
    /// QEMU dies with the thread that called `spawn` (`PR_SET_PDEATHSIG`), so
    /// keep the VM in that thread, as a test function naturally does.
    pub fn spawn(self) -> Result<Vm> {
        let (initrd, initrd_tmp) = match self.initrds.as_slice() {
            [] => (None, None),
            [one] => (Some(one.clone()), None),
            many => {
                let tmp = concat_initrds(many)?;
                (Some(tmp.to_path_buf()), Some(tmp))
            }
        };
        let args = self.command_args(initrd.as_deref());
        let log = match &self.console_log {
            Some(path) => {
                Some(File::create(path).with_context(|| format!("creating {}", path.display()))?)
            }
            None => None,
        };

        match &self.netns {
            // `ip netns exec` execs QEMU in place: same PID, same group.
            Some(ns) => {
                let mut wrapped: Vec<OsString> =
                    vec!["netns".into(), "exec".into(), ns.into(), self.qemu.clone()];
                wrapped.extend(args);
                launch(&OsString::from("ip"), wrapped, log, initrd_tmp)
            }
            None => launch(&self.qemu, args, log, initrd_tmp),
        }
    }
}

/// Spawns `program` with `args` in its own process group and starts the
/// console and stderr readers.
fn launch(
    program: &OsString,
    args: Vec<OsString>,
    log: Option<File>,
    initrd: Option<TempPath>,
) -> Result<Vm> {
    let mut command = Command::new(program);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only calls
    // prctl(2), which is async-signal-safe; it touches no Rust state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| {
        format!(
            "starting {} (is QEMU installed? `apt-get install qemu-system-x86`)",
            program.to_string_lossy()
        )
    })?;

    let serial = Arc::new(Transcript::default());
    let stderr = Arc::new(Transcript::default());
    let stdout_pipe = child.stdout.take();
    let stderr_pipe = child.stderr.take();
    let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
    // From here on, Drop kills QEMU whatever fails next.
    let vm = Vm {
        child,
        pgid,
        exit: None,
        console: Console::new(Arc::clone(&serial), Arc::clone(&stderr)),
        command_line: render(program, &args),
        _initrd: initrd,
    };
    if let Some(pipe) = stdout_pipe {
        std::thread::Builder::new()
            .name("qemu-console".into())
            .spawn(move || serial.pump(pipe, log))
            .context("starting the console reader")?;
    }
    if let Some(pipe) = stderr_pipe {
        std::thread::Builder::new()
            .name("qemu-stderr".into())
            .spawn(move || stderr.pump(pipe, None))
            .context("starting the stderr reader")?;
    }
    Ok(vm)
}

/// A running QEMU; killed with its process group when dropped.
#[derive(Debug)]
pub struct Vm {
    child: Child,
    pgid: Pid,
    exit: Option<ExitStatus>,
    console: Console,
    command_line: String,
    /// The concatenated initrd, deleted with the VM.
    _initrd: Option<TempPath>,
}

impl Vm {
    /// A builder with the defaults: x86-64, TCG, 256 MiB, `-nographic -no-reboot`.
    pub fn builder() -> VmBuilder {
        VmBuilder::default()
    }

    /// The serial console.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// The QEMU command line, shell-quoted loosely for humans.
    pub fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Process id of QEMU (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for QEMU to exit by itself (the guest powered off, or with
    /// `-no-reboot`, rebooted or panicked); fails with the console text if it
    /// is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for qemu")? {
                self.exit = Some(status);
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    self.console
                        .failure(&format!("qemu still running after {timeout:?}"))
                );
            }
            std::thread::sleep(EXIT_POLL);
        }
    }

    /// Like [`Vm::wait_exit`], and also requires exit status 0 (a clean
    /// power-off).
    pub fn expect_poweroff(&mut self, timeout: Duration) -> Result<()> {
        let status = self.wait_exit(timeout)?;
        if !status.success() {
            bail!(self.console.failure(&format!("qemu exited with {status}")));
        }
        Ok(())
    }

    /// Kills the QEMU process group and reaps QEMU.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exit {
            return Ok(status);
        }
        // ESRCH means the group is already gone; the wait below reaps QEMU.
        match killpg(self.pgid, Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => return Err(err).context("killing the qemu process group"),
        }
        let status = self.child.wait().context("reaping qemu")?;
        self.exit = Some(status);
        Ok(status)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // `kill` only signals a group whose leader is not reaped yet: once
        // reaped, its id may belong to someone else.
        if let Err(err) = self.kill() {
            eprintln!(
                "qemu-tests: cleaning up qemu (pid {}): {err:#}",
                self.child.id()
            );
        }
    }
}

/// Concatenates `parts` into a temporary file, zero-padding each part to
/// [`INITRD_ALIGN`] bytes.
fn concat_initrds(parts: &[PathBuf]) -> Result<TempPath> {
    let mut out = tempfile::Builder::new()
        .prefix("ironwulf-initrd-")
        .tempfile()
        .context("creating the combined initrd")?;
    let mut written = 0_u64;
    for part in parts {
        let pad = (INITRD_ALIGN - written % INITRD_ALIGN) % INITRD_ALIGN;
        let zeros = [0_u8; INITRD_ALIGN as usize];
        out.write_all(&zeros[..pad as usize])
            .context("padding the combined initrd")?;
        written += pad;
        let mut file = File::open(part).with_context(|| format!("opening {}", part.display()))?;
        written += std::io::copy(&mut file, &mut out)
            .with_context(|| format!("copying {} into the combined initrd", part.display()))?;
    }
    out.flush().context("writing the combined initrd")?;
    Ok(out.into_temp_path())
}

/// A readable command line for messages.
fn render(binary: &OsString, args: &[OsString]) -> String {
    std::iter::once(binary)
        .chain(args)
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains([' ', '"', '\'']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_tcg_and_the_boot_files() {
        let b = Vm::builder()
            .kernel("/k")
            .memory_mib(384)
            .arg("-smp")
            .arg("2");
        let args: Vec<String> = b
            .command_args(Some(Path::new("/i")))
            .iter()
            .map(|a| a.to_string_lossy().into())
            .collect();
        assert_eq!(
            args,
            [
                "-accel",
                "tcg",
                "-nographic",
                "-no-reboot",
                "-m",
                "384",
                "-kernel",
                "/k",
                "-append",
                "console=ttyS0 panic=-1",
                "-initrd",
                "/i",
                "-smp",
                "2"
            ]
        );
    }

    #[test]
    fn initrds_are_concatenated_with_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"abcde").unwrap();
        std::fs::write(&b, b"xy").unwrap();
        let joined = concat_initrds(&[a, b]).unwrap();
        assert_eq!(std::fs::read(&joined).unwrap(), b"abcde\0\0\0xy");
    }

    /// A stand-in for QEMU: a shell whose child sleeps in the same process
    /// group. Returns the VM and the sleeper's pid.
    fn vm_with_grandchild() -> (Vm, i32) {
        let args = ["-c", "sleep 600 & echo started $! .; wait"]
            .map(OsString::from)
            .to_vec();
        let mut vm = launch(&"/bin/sh".into(), args, None, None).unwrap();
        vm.console().expect(" .", Duration::from_secs(10)).unwrap();
        let text = vm.console().text();
        let sleeper = text
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .expect("shell printed the sleep pid");
        (vm, sleeper)
    }

    /// Whether `pid` is gone (or a zombie waiting for init to reap it).
    fn is_dead(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            if matches!(state, None | Some('Z')) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn drop_kills_the_whole_process_group() {
        let (vm, sleeper) = vm_with_grandchild();
        let leader = vm.pid();
        drop(vm);
        assert!(is_dead(sleeper), "sleep {sleeper} survived the drop");
        assert!(
            is_dead(i32::try_from(leader).unwrap()),
            "qemu stand-in survived"
        );
    }

    #[test]
    fn a_panicking_test_still_kills_the_vm() {
        let (vm, sleeper) = vm_with_grandchild();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _vm = vm;
            panic!("test failure while the VM runs");
        }));
        assert!(result.is_err());
        assert!(is_dead(sleeper), "sleep {sleeper} survived the panic");
    }

    #[test]
    fn wait_exit_reports_status_and_times_out_with_console() {
        let args = ["-c", "echo hello; exit 3"].map(OsString::from).to_vec();
        let mut vm = launch(&"/bin/sh".into(), args, None, None).unwrap();
        let status = vm.wait_exit(Duration::from_secs(10)).unwrap();
        assert_eq!(status.code(), Some(3));
        let err = vm.expect_poweroff(Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("exited with"), "{err}");

        let args = ["-c", "echo still here; sleep 600"]
            .map(OsString::from)
            .to_vec();
        let mut vm = launch(&"/bin/sh".into(), args, None, None).unwrap();
        vm.console()
            .expect("still here", Duration::from_secs(10))
            .unwrap();
        let err = vm.wait_exit(Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("still here"), "{err}");
    }
}
