//! Logging to stderr, the binary's only log sink. Under systemd
//! (`JOURNAL_STREAM` set) lines carry `<N>` syslog priority prefixes, which
//! journald turns into levels; otherwise they start with `wwclient: LEVEL:`.
//! A tracing subscriber would triple the size of this binary for no gain.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);
static JOURNAL: AtomicBool = AtomicBool::new(false);

#[derive(Clone, Copy)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

/// Sets the verbosity and detects journald.
pub fn init(debug: bool) {
    DEBUG.store(debug, Ordering::Relaxed);
    JOURNAL.store(
        std::env::var_os("JOURNAL_STREAM").is_some(),
        Ordering::Relaxed,
    );
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if matches!(level, Level::Debug) && !debug_enabled() {
        return;
    }
    let (prio, name) = match level {
        Level::Error => (3, "error"),
        Level::Warn => (4, "warning"),
        Level::Info => (6, "info"),
        Level::Debug => (7, "debug"),
    };
    let mut err = std::io::stderr().lock();
    // A closed stderr must not take the agent down.
    let _ = if JOURNAL.load(Ordering::Relaxed) {
        writeln!(err, "<{prio}>{args}")
    } else {
        writeln!(err, "wwclient: {name}: {args}")
    };
}

macro_rules! error {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Error, format_args!($($t)*)) };
}
macro_rules! warning {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Warn, format_args!($($t)*)) };
}
macro_rules! info {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Info, format_args!($($t)*)) };
}
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::emit($crate::log::Level::Debug, format_args!($($t)*)) };
}
pub(crate) use {debug, error, info, warning as warn};
