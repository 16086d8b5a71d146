//! The serial console of a running VM: a growing transcript fed by a reader
//! thread, and `expect` calls that wait for markers in order.
//!
//! Every [`Console::expect`] searches only the text after the previous match,
//! so a sequence of calls asserts the order of boot markers. A failed expect
//! carries the console text seen so far (and QEMU's stderr), which is usually
//! all one needs to see why a guest did not boot.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Bytes read from a pipe per `read` call.
const READ_CHUNK: usize = 8 * 1024;
/// At most this many trailing bytes of the transcript go into an error.
const ERROR_TAIL: usize = 64 * 1024;

/// A transcript shared between a reader thread and the test.
#[derive(Debug, Default)]
pub(crate) struct Transcript {
    state: Mutex<TranscriptState>,
    grown: Condvar,
}

#[derive(Debug, Default)]
struct TranscriptState {
    bytes: Vec<u8>,
    /// The writer side is closed (QEMU exited or the pipe broke).
    closed: bool,
}

impl Transcript {
    fn lock(&self) -> MutexGuard<'_, TranscriptState> {
        // A reader thread cannot panic while holding the lock (it only
        // appends), so a poisoned lock still holds a consistent transcript.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copies `source` into the transcript (and `log`, if any) until EOF.
    pub(crate) fn pump(&self, mut source: impl Read, mut log: Option<File>) {
        let mut buf = vec![0_u8; READ_CHUNK];
        loop {
            match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(file) = log.as_mut() {
                        // A broken log file must not stop the console.
                        if file.write_all(&buf[..n]).is_err() {
                            log = None;
                        }
                    }
                    self.lock().bytes.extend_from_slice(&buf[..n]);
                    self.grown.notify_all();
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.lock().closed = true;
        self.grown.notify_all();
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock().bytes).into_owned()
    }
}

/// The serial console of a [`crate::Vm`].
#[derive(Debug)]
pub struct Console {
    serial: Arc<Transcript>,
    stderr: Arc<Transcript>,
    /// Offset in the serial transcript just past the last matched marker.
    cursor: usize,
}

impl Console {
    pub(crate) fn new(serial: Arc<Transcript>, stderr: Arc<Transcript>) -> Self {
        Self {
            serial,
            stderr,
            cursor: 0,
        }
    }

    /// Waits until `marker` appears on the console after the previous match.
    ///
    /// Fails when `timeout` passes or QEMU closes the console first; the
    /// error holds the console text seen so far.
    pub fn expect(&mut self, marker: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let needle = marker.as_bytes();
        let mut searched_to = self.cursor;
        let mut state = self.serial.lock();
        loop {
            // Re-scan only the new text, plus an overlap for a marker split
            // across two reads.
            let from = searched_to.saturating_sub(needle.len()).max(self.cursor);
            if let Some(pos) = find(&state.bytes[from..], needle) {
                self.cursor = from + pos + needle.len();
                return Ok(());
            }
            searched_to = state.bytes.len();
            if state.closed {
                drop(state);
                bail!(self.failure(&format!("console closed before `{marker}` appeared")));
            }
            let now = Instant::now();
            if now >= deadline {
                drop(state);
                bail!(self.failure(&format!("no `{marker}` on the console within {timeout:?}")));
            }
            state = self
                .serial
                .grown
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits for each marker in turn, all within `timeout` in total.
    pub fn expect_all(&mut self, markers: &[&str], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (seen, marker) in markers.iter().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            self.expect(marker, left).map_err(|err| {
                err.context(format!(
                    "ordered markers: {seen} of {} seen ({:?} matched)",
                    markers.len(),
                    &markers[..seen]
                ))
            })?;
        }
        Ok(())
    }

    /// Everything the serial console printed so far.
    pub fn text(&self) -> String {
        self.serial.text()
    }

    /// Everything QEMU wrote to its stderr so far.
    pub fn qemu_stderr(&self) -> String {
        self.stderr.text()
    }

    /// A failure message followed by the console tail and QEMU's stderr.
    pub(crate) fn failure(&self, what: &str) -> String {
        let text = self.text();
        let (tail, cut) = tail(&text, ERROR_TAIL);
        let mut msg = format!("{what}\n----- console ({} bytes", text.len());
        if cut {
            msg.push_str(&format!(", last {} shown", tail.len()));
        }
        msg.push_str(") -----\n");
        msg.push_str(tail);
        if !msg.ends_with('\n') {
            msg.push('\n');
        }
        let stderr = self.qemu_stderr();
        if !stderr.trim().is_empty() {
            msg.push_str("----- qemu stderr -----\n");
            msg.push_str(stderr.trim_end());
            msg.push('\n');
        }
        msg.push_str("----- end -----");
        msg
    }
}

/// Position of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The last `max` bytes of `text` (at a char boundary) and whether it was cut.
fn tail(text: &str, max: usize) -> (&str, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    (&text[start..], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console_with(serial: &[u8], closed: bool) -> Console {
        let serial_t = Arc::new(Transcript::default());
        {
            let mut st = serial_t.lock();
            st.bytes.extend_from_slice(serial);
            st.closed = closed;
        }
        Console::new(serial_t, Arc::new(Transcript::default()))
    }

    #[test]
    fn markers_must_come_in_order() {
        let mut c = console_with(b"boot A\nthen B\n", true);
        c.expect("B", Duration::from_millis(10)).unwrap();
        let err = c.expect("A", Duration::from_millis(10)).unwrap_err();
        assert!(
            err.to_string().contains("console closed before `A`"),
            "{err}"
        );
        assert!(
            err.to_string().contains("boot A"),
            "error shows the console: {err}"
        );
    }

    #[test]
    fn expect_all_reports_progress() {
        let mut c = console_with(b"one two", true);
        let err = c
            .expect_all(&["one", "two", "three"], Duration::from_millis(10))
            .unwrap_err();
        let chain = format!("{err:#}");
        assert!(chain.contains("2 of 3 seen"), "{chain}");
    }

    #[test]
    fn timeout_carries_the_text_seen_so_far() {
        let mut c = console_with(b"kernel says hi", false);
        let err = c.expect("never", Duration::from_millis(20)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("within"), "{msg}");
        assert!(msg.contains("kernel says hi"), "{msg}");
    }

    #[test]
    fn marker_split_across_reads_is_found() {
        let serial = Arc::new(Transcript::default());
        let mut c = Console::new(Arc::clone(&serial), Arc::new(Transcript::default()));
        let writer = Arc::clone(&serial);
        let t = std::thread::spawn(move || {
            writer.pump(std::io::Cursor::new(b"xxMAR".to_vec()), None);
        });
        t.join().unwrap();
        // Reopen the transcript and append the rest, as a second read would.
        {
            let mut st = serial.lock();
            st.closed = false;
        }
        let writer = Arc::clone(&serial);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            writer.pump(std::io::Cursor::new(b"KER yy".to_vec()), None);
        });
        c.expect("MARKER", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn tail_cuts_at_char_boundary() {
        let (t, cut) = tail("aé", 1);
        assert!(cut);
        assert_eq!(t, "");
        assert_eq!(tail("abc", 5), ("abc", false));
    }
}
