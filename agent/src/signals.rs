//! Signals without handlers: SIGHUP, SIGTERM and SIGINT are blocked and
//! collected with `sigtimedwait`, which doubles as the loop's sleep. A
//! signal that arrives during a poll stays pending and is seen afterwards,
//! so an apply is never cut short by SIGTERM (SIGKILL still is; the apply is
//! built to survive that).

use std::io;
use std::mem::MaybeUninit;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: poll now.
    Poll,
    /// SIGTERM or SIGINT: exit.
    Stop,
}

pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks the signals for this (single) thread.
    pub fn block() -> io::Result<Self> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given; sigaddset and
        // sigprocmask only read the initialised set.
        unsafe {
            if libc::sigemptyset(set.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut set = set.assume_init();
            for sig in [libc::SIGHUP, libc::SIGTERM, libc::SIGINT] {
                libc::sigaddset(&mut set, sig);
            }
            if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Signals { set })
        }
    }

    /// Waits up to `timeout` for a signal; `None` when the time ran out.
    pub fn wait(&self, timeout: Duration) -> Option<Signal> {
        let ts = libc::timespec {
            // Via i32, which converts into `time_t` on every target (its width varies).
            tv_sec: (timeout.as_secs().min(i32::MAX as u64) as i32).into(),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
        };
        loop {
            // SAFETY: `set` is an initialised signal set, `ts` a valid
            // timespec; a null siginfo pointer is allowed.
            let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
            match sig {
                libc::SIGHUP => return Some(Signal::Poll),
                libc::SIGTERM | libc::SIGINT => return Some(Signal::Stop),
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                // EAGAIN: the timeout ran out. (An EINTR restart restarts the
                // full timeout; only other signals cause it, and rarely.)
                _ => return None,
            }
        }
    }

    /// A signal already pending, without waiting.
    pub fn pending(&self) -> Option<Signal> {
        self.wait(Duration::ZERO)
    }
}
