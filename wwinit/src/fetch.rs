//! Two-stage artifacts: manifest, then each archive streamed
//! HTTP → digest check → decompress → unpack into the new root, with no
//! temporary copy. The digest and size are checked when the stream ends;
//! a mismatch fails the boot before anything from the new root runs.
//!
//! With more than one CPU the chain is cut into stages on their own
//! threads ([`Pipeline`]), which hand 256 KiB chunks to each other, so
//! receiving, hashing, decompressing and writing files overlap. SHA-256 is
//! `ring`'s assembly (already linked for TLS), about twice as fast as
//! portable code on CPUs without SHA extensions.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result, bail};
use initramfs::compress::decoder;
use initramfs::unpack::{UnpackOptions, UnpackStats, unpack_newc};
use proto::{Mac, Manifest, Sha256Digest, routes};
use ring::digest::{Context as Sha256, SHA256};

use crate::cmdline::Server;
use crate::http::{self, Backoff, Download, Opened, Url};
use crate::sys::FetchEntry;

/// Largest manifest accepted.
const MANIFEST_LIMIT: u64 = 1 << 20;

/// Context of an error raised while an opened download was being verified
/// and unpacked (digest or size mismatch, a corrupt stream, a transfer that
/// could not be resumed): the bytes did not arrive intact, so fetching again
/// into a fresh root may succeed. Errors before the body (404, 403, no
/// answer within the budget) never carry it.
#[derive(Debug)]
pub struct Corrupt {
    pub url: String,
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// A `Read` that hashes and counts what passes and, at the end, checks the
/// expected digest and size. Errors at the end are repeated on every read.
pub struct Verify<R: Read> {
    inner: R,
    hasher: Sha256,
    count: u64,
    /// `count`, for whoever holds [`Verify::counter`] (another thread).
    shared: Arc<AtomicU64>,
    want_digest: Option<Sha256Digest>,
    want_size: Option<u64>,
    failed: Option<String>,
    finished: bool,
}

impl<R: Read> Verify<R> {
    pub fn new(inner: R, want_digest: Option<Sha256Digest>, want_size: Option<u64>) -> Self {
        Verify {
            inner,
            hasher: Sha256::new(&SHA256),
            count: 0,
            shared: Arc::default(),
            want_digest,
            want_size,
            failed: None,
            finished: false,
        }
    }

    /// Bytes seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes seen so far, readable after the `Verify` moved to another thread.
    pub fn counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared)
    }

    fn check(&mut self) -> Option<String> {
        if let Some(size) = self.want_size
            && size != self.count
        {
            return Some(format!(
                "size mismatch: got {} bytes, want {size}",
                self.count
            ));
        }
        if let Some(want) = self.want_digest {
            let mut got = [0u8; 32];
            got.copy_from_slice(self.hasher.clone().finish().as_ref());
            let got = Sha256Digest(got);
            if got != want {
                return Some(format!("digest mismatch: got {got}, want {want}"));
            }
        }
        None
    }
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(msg) = &self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()));
        }
        if self.finished {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finished = true;
            if let Some(msg) = self.check() {
                self.failed = Some(msg.clone());
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
            }
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        self.shared.store(self.count, Ordering::Relaxed);
        Ok(n)
    }
}

/// Size of the chunks a stage thread hands over.
const CHUNK: usize = 256 * 1024;
/// Chunks on their way from one stage to the next (2 MiB).
const CHUNKS_IN_FLIGHT: usize = 8;
/// Buffer between the compressed stream and its decoder.
const DECODER_INPUT: usize = 256 * 1024;

/// What a stage thread hands over: a filled prefix of a chunk, or its error.
type Filled = io::Result<(Vec<u8>, usize)>;

/// The queue between a stage thread and its consumer. (A mutex and a
/// condition variable: `std::sync::mpsc` added ~33 KiB to wwinit.)
#[derive(Default)]
struct Queue {
    /// Chunks on their way to the consumer, oldest first.
    filled: VecDeque<Filled>,
    /// Emptied chunks on their way back to the thread.
    spent: Vec<Vec<u8>>,
    /// The consumer stopped reading (finished, failed or dropped).
    closed: bool,
    /// The thread has queued its last chunk (end of stream or error).
    done: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A poisoned queue only means the other side panicked; its state is
        // still consistent (every update is one statement).
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, q: MutexGuard<'a, Queue>) -> MutexGuard<'a, Queue> {
        self.changed.wait(q).unwrap_or_else(PoisonError::into_inner)
    }

    /// Thread side: queues `msg`, waiting for room; false once the consumer
    /// has stopped reading.
    fn send(&self, msg: Filled) -> bool {
        let mut q = self.lock();
        while q.filled.len() >= CHUNKS_IN_FLIGHT && !q.closed {
            q = self.wait(q);
        }
        if q.closed {
            return false;
        }
        q.filled.push_back(msg);
        self.changed.notify_all();
        true
    }

    /// Thread side: an emptied chunk, or a new one.
    fn chunk(&self) -> Vec<u8> {
        self.lock().spent.pop().unwrap_or_else(|| vec![0; CHUNK])
    }

    /// Sets a flag and wakes the other side.
    fn mark(&self, f: impl FnOnce(&mut Queue)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }
}

/// The consumer's end of a stage thread: a `Read` over the chunks it hands
/// over, giving each emptied chunk back for reuse. Dropping it tells the
/// thread to stop (at its next hand-over) and detaches it.
struct ReadAhead {
    shared: Arc<Shared>,
    thread: Option<Thread>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
    finished: bool,
}

impl ReadAhead {
    /// Waits for the thread to end (after the stream was read to its end).
    fn join(mut self) {
        self.shared.mark(|q| q.closed = true);
        if let Some(t) = self.thread.take() {
            // SAFETY: `t` was started by `read_ahead` and is joined once.
            unsafe { libc::pthread_join(t.0, std::ptr::null_mut()) };
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.shared.mark(|q| q.closed = true);
        if let Some(t) = self.thread.take() {
            // SAFETY: `t` was started by `read_ahead`, and is neither joined
            // nor detached yet.
            unsafe { libc::pthread_detach(t.0) };
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.len {
            if self.finished || buf.is_empty() {
                return Ok(0);
            }
            let msg = {
                let mut q = self.shared.lock();
                loop {
                    if let Some(m) = q.filled.pop_front() {
                        break Some(m);
                    }
                    if q.done {
                        break None;
                    }
                    q = self.shared.wait(q);
                }
            };
            match msg {
                Some(Ok((chunk, len))) if len > 0 => {
                    let spent = std::mem::replace(&mut self.cur, chunk);
                    if spent.len() == CHUNK {
                        self.shared.mark(|q| q.spent.push(spent));
                    }
                    self.len = len;
                    self.pos = 0;
                }
                Some(Err(e)) => {
                    self.finished = true;
                    return Err(e);
                }
                // An empty chunk marks the end of the stream; a thread that
                // is done without one failed to say why (it cannot).
                Some(Ok(_)) => {
                    self.finished = true;
                    return Ok(0);
                }
                None => {
                    self.finished = true;
                    return Err(io::Error::other("a stage thread ended early"));
                }
            }
        }
        let n = buf.len().min(self.len - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Moves `input` to a new thread that reads it in chunks ahead of the
/// returned reader. The thread ends at the end of the stream (handing over
/// an empty chunk), at an error (handed over), or when the reader is dropped.
fn read_ahead<R: Read + Send + 'static>(mut input: R) -> io::Result<ReadAhead> {
    let shared = Arc::new(Shared::default());
    let theirs = Arc::clone(&shared);
    let thread = spawn(move || {
        loop {
            let mut chunk = theirs.chunk();
            // Fill the chunk (fewer hand-overs), or stop at the end.
            let mut len = 0;
            let end = loop {
                match input.read(&mut chunk[len..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        len += n;
                        if len == chunk.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if len > 0 && !theirs.send(Ok((chunk, len))) {
                break;
            }
            match end {
                Err(e) => {
                    theirs.send(Err(e));
                    break;
                }
                Ok(()) if len == 0 => {
                    theirs.send(Ok((Vec::new(), 0)));
                    break;
                }
                Ok(()) => {}
            }
        }
        theirs.mark(|q| q.done = true);
    })?;
    Ok(ReadAhead {
        shared,
        thread: Some(thread),
        cur: Vec::new(),
        len: 0,
        pos: 0,
        finished: false,
    })
}

/// A thread started by [`spawn`], to be joined or detached once.
struct Thread(libc::pthread_t);

// SAFETY: a pthread_t is an opaque handle; POSIX lets any thread join or
// detach it.
unsafe impl Send for Thread {}

/// Stack of a stage thread (musl's default, 128 KiB, is tight for the
/// decoders and TLS).
const THREAD_STACK: usize = 1 << 20;

/// What a thread started by [`spawn`] runs.
type Start = Box<dyn FnOnce() + Send>;

extern "C" fn thread_main(arg: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: `spawn` leaked a `Box<Start>` with `Box::into_raw` for
    // exactly this thread.
    let start = unsafe { Box::from_raw(arg.cast::<Start>()) };
    start();
    std::ptr::null_mut()
}

/// Starts `f` with `pthread_create` itself: `std::thread::spawn` would add
/// ~27 KiB to wwinit (thread names, output capture, results and panics
/// carried across threads), and these threads need none of it.
fn spawn(f: impl FnOnce() + Send + 'static) -> io::Result<Thread> {
    let start: Box<Start> = Box::new(Box::new(f));
    let arg = Box::into_raw(start);
    // SAFETY: all-zero is a valid pthread_t, overwritten on success.
    let mut thread: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_attr_t is plain data, initialised by pthread_attr_init.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: `attr` is writable; init then setstacksize on it are valid,
    // and `thread_main` takes ownership of `arg` only if the thread starts.
    let rc = unsafe {
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, THREAD_STACK);
        let rc = libc::pthread_create(&mut thread, &attr, thread_main, arg.cast());
        libc::pthread_attr_destroy(&mut attr);
        rc
    };
    if rc != 0 {
        // SAFETY: no thread started, so `arg` is still ours.
        drop(unsafe { Box::from_raw(arg) });
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Thread(thread))
}

/// CPUs in our affinity mask. (Not `std::thread::available_parallelism`:
/// its cgroup parsing is ~14 KiB of code, and PID 1 has no quota.)
fn cpus() -> usize {
    // SAFETY: cpu_set_t is plain data; all-zero is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and its size is passed.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return 1;
    }
    // SAFETY: CPU_COUNT only reads the set.
    usize::try_from(unsafe { libc::CPU_COUNT(&set) }).unwrap_or(1)
}

/// How the fetch chain is spread over threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pipeline {
    /// One thread: socket → digest → decompress → unpack.
    Inline,
    /// Socket, digest and decompression on a thread; unpack here.
    TwoThreads,
    /// Socket and digest on one thread, decompression on another, unpack here.
    ThreeThreads,
}

impl Pipeline {
    /// Threads the chain runs on.
    pub fn threads(self) -> usize {
        match self {
            Pipeline::Inline => 1,
            Pipeline::TwoThreads => 2,
            Pipeline::ThreeThreads => 3,
        }
    }

    /// The shape for this node: one thread per CPU, up to three.
    pub fn for_cpus(n: usize) -> Self {
        match n {
            0 | 1 => Pipeline::Inline,
            2 => Pipeline::TwoThreads,
            _ => Pipeline::ThreeThreads,
        }
    }
}

const UNPACK: UnpackOptions = UnpackOptions {
    preserve_owner: true,
    skip_unprivileged_nodes: false,
};

/// Unpacks `input` into `dest` and reads it to its end, so the digest check
/// runs even when the archive ends before padding does. The stages run on
/// as many threads as [`Pipeline::for_cpus`] says for this node.
pub fn unpack_verified<R: Read + Send + 'static>(
    input: R,
    digest: Option<Sha256Digest>,
    size: Option<u64>,
    dest: &Path,
) -> Result<(UnpackStats, u64)> {
    unpack_with(Pipeline::for_cpus(cpus()), input, digest, size, dest)
}

/// [`unpack_verified`] with a chosen [`Pipeline`]. On an error, stage
/// threads are left to notice the closed queue and end by themselves.
pub fn unpack_with<R: Read + Send + 'static>(
    pipeline: Pipeline,
    input: R,
    digest: Option<Sha256Digest>,
    size: Option<u64>,
    dest: &Path,
) -> Result<(UnpackStats, u64)> {
    let v = Verify::new(input, digest, size);
    let count = v.counter();
    // One instantiation of the decoders and the unpacker (most of wwinit's
    // archive code) serves every shape: both are fed through `dyn Read`.
    let raw: Box<dyn Read + Send> = match pipeline {
        Pipeline::Inline | Pipeline::TwoThreads => Box::new(v),
        Pipeline::ThreeThreads => {
            Box::new(read_ahead(v).context("starting the socket and digest thread")?)
        }
    };
    let decoded = decoder(BufReader::with_capacity(DECODER_INPUT, raw));
    let (stats, thread) = if pipeline == Pipeline::Inline {
        let mut decoded: Box<dyn Read + Send> = Box::new(decoded);
        let stats =
            unpack_newc(&mut decoded as &mut dyn Read, dest, &UNPACK).context("unpacking")?;
        io::copy(&mut decoded, &mut io::sink()).context("verifying")?;
        (stats, None)
    } else {
        let mut decoded = read_ahead(decoded).context("starting the decompression thread")?;
        let stats =
            unpack_newc(&mut decoded as &mut dyn Read, dest, &UNPACK).context("unpacking")?;
        io::copy(&mut decoded, &mut io::sink()).context("verifying")?;
        (stats, Some(decoded))
    };
    if let Some(t) = thread {
        t.join();
    }
    Ok((stats, count.load(Ordering::Relaxed)))
}

/// `GET /manifest/{wwid}`: `None` if the head does not have the route.
pub fn manifest(server: &Server, wwid: &Mac, policy: Backoff) -> Result<Option<Manifest>> {
    let url = Url::on(server, &routes::manifest(wwid))?;
    let Some(body) = http::get_small(url.clone(), policy, MANIFEST_LIMIT)? else {
        return Ok(None);
    };
    let m: Manifest = serde_json::from_slice(&body)
        .with_context(|| format!("parsing the manifest from {url}"))?;
    Ok(Some(m))
}

/// Streams one artifact into `dest`; returns whether it was applied (an
/// optional artifact may be absent) and a one-line summary.
pub fn fetch_unpack(
    server: &Server,
    entry: &FetchEntry,
    dest: &Path,
    policy: Backoff,
) -> Result<(bool, String)> {
    let (path, digest, size, required) = match entry {
        FetchEntry::Verified(e) => (e.url.as_str(), Some(e.digest), Some(e.size), true),
        FetchEntry::Unverified(_, p, req) => (p.as_str(), None, None, *req),
    };
    let url = Url::on(server, path)?;
    // The head's `secure` mode serves runtime overlays to privileged ports only.
    let privileged = entry.stage() == proto::ArtifactStage::Runtime.name();
    let download = match Download::open_from(url.clone(), policy, privileged)? {
        Opened::Ok(d) => d,
        Opened::NotFound if !required => {
            return Ok((false, format!("{url}: not provided (404), skipped")));
        }
        Opened::NotFound => bail!("{url}: not found (404)"),
    };
    // Without a manifest, the HTTP length is all we can check.
    let size = size.or(download.total());
    let pipeline = Pipeline::for_cpus(cpus());
    let (stats, bytes) = unpack_with(pipeline, download, digest, size, dest).context(Corrupt {
        url: url.to_string(),
    })?;
    let checked = if digest.is_some() { ", sha256 ok" } else { "" };
    Ok((
        true,
        format!(
            "{url}: {bytes} bytes, {} entries{checked}, {} thread(s)",
            stats.entries,
            pipeline.threads()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use initramfs::compress::{Compression, EncoderOptions, encoder};
    use initramfs::newc::Writer;
    use std::io::Write;

    use super::*;

    fn sha256(data: &[u8]) -> Sha256Digest {
        let mut d = [0u8; 32];
        d.copy_from_slice(ring::digest::digest(&SHA256, data).as_ref());
        Sha256Digest(d)
    }

    const ALL: [Pipeline; 3] = [
        Pipeline::Inline,
        Pipeline::TwoThreads,
        Pipeline::ThreeThreads,
    ];

    /// Incompressible bytes (a xorshift stream).
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        let mut e = encoder(
            Compression::Zstd,
            &EncoderOptions {
                level: None,
                threads: 1,
            },
            Vec::new(),
        )
        .expect("enc");
        e.write_all(data).expect("write");
        e.finish().expect("finish")
    }

    /// A zstd newc archive: `etc/hello`, and `big` when `big` is not empty.
    fn archive_with(big: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new());
        w.add_dir("etc", 0o755).expect("dir");
        w.add_file("etc/hello", 0o644, b"hi\n").expect("file");
        if !big.is_empty() {
            w.add_file("big", 0o600, big).expect("file");
        }
        zstd(&w.finish().expect("finish"))
    }

    fn archive() -> Vec<u8> {
        archive_with(&[])
    }

    fn run(
        p: Pipeline,
        data: &[u8],
        digest: Option<Sha256Digest>,
        size: Option<u64>,
        dest: &Path,
    ) -> Result<(UnpackStats, u64)> {
        unpack_with(p, io::Cursor::new(data.to_vec()), digest, size, dest)
    }

    #[test]
    fn verified_unpack_accepts_good_and_rejects_bad_digest() {
        let data = archive();
        let good = sha256(&data);
        for p in ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let (stats, n) = run(p, &data, Some(good), Some(data.len() as u64), dir.path())
                .unwrap_or_else(|e| panic!("{p:?}: {e:#}"));
            assert_eq!(n, data.len() as u64, "{p:?}");
            assert_eq!(stats.files, 1, "{p:?}");
            assert_eq!(
                std::fs::read(dir.path().join("etc/hello")).expect("read"),
                b"hi\n"
            );

            let bad = Sha256Digest([0; 32]);
            let err = run(p, &data, Some(bad), None, dir.path()).expect_err("mismatch");
            assert!(
                format!("{err:#}").contains("digest mismatch"),
                "{p:?}: {err:#}"
            );
            let err = run(p, &data, None, Some(1), dir.path()).expect_err("mismatch");
            assert!(
                format!("{err:#}").contains("size mismatch"),
                "{p:?}: {err:#}"
            );
        }
    }

    #[test]
    fn trailing_padding_is_hashed() {
        let mut data = archive();
        data.extend_from_slice(&[0; 512]);
        let d = sha256(&data);
        for p in ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let (_, n) =
                run(p, &data, Some(d), None, dir.path()).unwrap_or_else(|e| panic!("{p:?}: {e:#}"));
            assert_eq!(n, data.len() as u64, "{p:?}");
        }
    }

    #[test]
    fn many_chunks_arrive_whole_and_in_order() {
        // More than the chunks in flight, so the queues fill, wait and
        // recycle their chunks.
        let big = noise(CHUNK * (CHUNKS_IN_FLIGHT * 2 + 3) + 12_345);
        let data = archive_with(&big);
        let d = sha256(&data);
        for p in ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let (stats, n) = run(p, &data, Some(d), Some(data.len() as u64), dir.path())
                .unwrap_or_else(|e| panic!("{p:?}: {e:#}"));
            assert_eq!((stats.files, n), (2, data.len() as u64), "{p:?}");
            assert!(
                std::fs::read(dir.path().join("big")).expect("read") == big,
                "{p:?}"
            );
        }
    }

    #[test]
    fn broken_streams_fail_without_hanging() {
        let data = archive_with(&noise(CHUNK * 3));
        // Cut short: the decoder fails at the end of the input.
        let cut = &data[..data.len() / 2];
        // Not an archive: the unpacker fails at once while the threads
        // still have most of the stream to hand over.
        let junk = zstd(&noise(CHUNK * (CHUNKS_IN_FLIGHT * 3)));
        for p in ALL {
            let dir = tempfile::tempdir().expect("tempdir");
            let err = run(p, cut, None, None, dir.path()).expect_err("truncated");
            assert!(format!("{err:#}").contains("unpacking"), "{p:?}: {err:#}");
            let err = run(p, &junk, None, None, dir.path()).expect_err("junk");
            assert!(format!("{err:#}").contains("unpacking"), "{p:?}: {err:#}");
        }
    }
}
