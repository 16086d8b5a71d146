//! Compression of archives (gzip, zstd, xz) and decompression of initramfs
//! streams made of concatenated members.
//!
//! Gzip is compressed in parallel, pigz-style, into ONE gzip member that any
//! inflater (including the kernel's) accepts: the input is cut into
//! [`GZIP_BLOCK`] blocks; each worker deflates one block as raw deflate with
//! the previous 32 KiB of input preset as dictionary, ending it with a sync
//! flush (an empty stored block, so the output is byte aligned and no block is
//! final) or, for the last block, with a finishing flush. The caller's thread
//! writes the block outputs in order between our own gzip header and trailer;
//! the CRC-32 is combined from per-block CRCs.
//!
//! Zstd uses libzstd's own worker threads with an explicit window
//! ([`ZSTD_WINDOW_LOG`]) well under the kernel's 128 MiB limit.
//!
//! The [`decoder`] mirrors the kernel's `unpack_to_rootfs`: zero bytes between
//! members are skipped, each member is detected by its magic, and an
//! uncompressed newc member is passed through entry by entry up to its
//! `TRAILER!!!` so that a compressed member may follow it.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, FlushCompress, Status};

use crate::newc::{self, HEADER_LEN, MAX_NAME_LEN, pad4};

/// Input block size of the parallel gzip encoder.
pub const GZIP_BLOCK: usize = 128 * 1024;
/// Deflate window, carried between blocks as dictionary.
const DEFLATE_WINDOW: usize = 32 * 1024;
/// Default gzip level (as `gzip`/`pigz`).
pub const GZIP_DEFAULT_LEVEL: i32 = 6;
/// Default zstd level.
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;
/// Default xz preset.
pub const XZ_DEFAULT_LEVEL: i32 = 6;
/// Zstd window: 8 MiB, far below the kernel's 128 MiB (`ZSTD_WINDOWLOG_MAX` 27) and
/// cheap in early-boot memory.
pub const ZSTD_WINDOW_LOG: u32 = 23;
/// Input per zstd worker job.
pub const ZSTD_JOB_SIZE: u32 = 8 << 20;

/// A compression format of an archive member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
    Xz,
}

impl Compression {
    /// File name extension without the dot ("" for none).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => "gz",
            Compression::Zstd => "zst",
            Compression::Xz => "xz",
        }
    }

    /// Parses "none", "gz", "gzip", "zst", "zstd", "xz" (case-insensitive).
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" | "" => Compression::None,
            "gz" | "gzip" => Compression::Gzip,
            "zst" | "zstd" => Compression::Zstd,
            "xz" => Compression::Xz,
            _ => return None,
        })
    }

    /// The format of a member starting with `head`, judged by its magic.
    pub fn detect(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if head.starts_with(b"0707") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// Encoder settings.
#[derive(Clone, Debug, Default)]
pub struct EncoderOptions {
    /// Level; `None` = the format's default (gzip 6, zstd 3, xz 6).
    pub level: Option<i32>,
    /// Worker threads; 0 = all cores.
    pub threads: usize,
}

impl EncoderOptions {
    fn worker_count(&self) -> usize {
        if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.threads
        }
    }
}

/// A compressing `Write`; call [`Encoder::finish`] to complete the stream
/// (dropping it instead leaves a truncated stream and stops its workers).
pub struct Encoder<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    None(W),
    Gzip(Box<ParGzip<W>>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
}

/// A compressing writer for `c` over `out`.
pub fn encoder<W: Write>(c: Compression, opts: &EncoderOptions, out: W) -> io::Result<Encoder<W>> {
    let threads = opts.worker_count();
    let inner = match c {
        Compression::None => Inner::None(out),
        Compression::Gzip => {
            let level = opts.level.unwrap_or(GZIP_DEFAULT_LEVEL).clamp(0, 9) as u32;
            Inner::Gzip(Box::new(ParGzip::new(out, level, threads)?))
        }
        Compression::Zstd => {
            let level = opts.level.unwrap_or(ZSTD_DEFAULT_LEVEL).clamp(1, 19);
            let mut e = zstd::stream::write::Encoder::new(out, level)?;
            // Workers run asynchronously even with one thread, so the caller
            // keeps reading files while libzstd compresses.
            e.multithread(threads as u32)?;
            e.window_log(ZSTD_WINDOW_LOG)?;
            // Smaller jobs than libzstd's default (4 x window) keep memory
            // near 80 MiB and both cores busy on medium-sized trees.
            e.set_parameter(zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
            e.include_checksum(true)?;
            Inner::Zstd(e)
        }
        Compression::Xz => {
            let level = opts.level.unwrap_or(XZ_DEFAULT_LEVEL).clamp(0, 9) as u32;
            // The kernel's XZ decoder checks CRC32 (CRC64 only on newer kernels).
            let stream =
                liblzma::stream::Stream::new_easy_encoder(level, liblzma::stream::Check::Crc32)
                    .map_err(io::Error::other)?;
            Inner::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
        }
    };
    Ok(Encoder { inner })
}

impl<W: Write> Encoder<W> {
    /// Flushes all compressed data, writes the format's trailer and returns the sink.
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::None(mut w) => {
                w.flush()?;
                Ok(w)
            }
            Inner::Gzip(g) => g.finish(),
            Inner::Zstd(z) => z.finish(),
            Inner::Xz(x) => x.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::None(w) => w.write(buf),
            Inner::Gzip(g) => g.write(buf),
            Inner::Zstd(z) => z.write(buf),
            Inner::Xz(x) => x.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.write_all(buf),
            Inner::Gzip(g) => g.write_all(buf),
            Inner::Zstd(z) => z.write_all(buf),
            Inner::Xz(x) => x.write_all(buf),
        }
    }

    /// Passes completed output on; does not end compressed blocks early.
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.flush(),
            Inner::Gzip(g) => {
                g.drain(false)?;
                g.out.flush()
            }
            Inner::Zstd(_) | Inner::Xz(_) => Ok(()),
        }
    }
}

// ---------------------------------------------------------------- parallel gzip

struct GzJob {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

struct GzDone {
    seq: u64,
    out: Vec<u8>,
    crc: crc32fast::Hasher,
    /// The input buffer, returned for reuse.
    data: Vec<u8>,
}

/// The pigz-style encoder described in the module docs.
struct ParGzip<W: Write> {
    out: W,
    block: Vec<u8>,
    dict: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    pool: Pool,
    done: Receiver<io::Result<GzDone>>,
    ready: BTreeMap<u64, GzDone>,
    crc: crc32fast::Hasher,
    isize: u64,
    spare: Vec<Vec<u8>>,
}

/// Worker threads; dropping the pool closes the job channel and joins them.
struct Pool {
    jobs: Option<Sender<GzJob>>,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            // A panicked worker has already shown up as a closed channel.
            let _ = w.join();
        }
    }
}

impl<W: Write> ParGzip<W> {
    fn new(mut out: W, level: u32, threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::channel::<GzJob>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel();
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&job_rx);
            let tx = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gzip-{i}"))
                .spawn(move || gzip_worker(level, &rx, &tx))?;
            workers.push(handle);
        }
        // Header: magic, deflate, no flags, mtime 0 (reproducible), no extra flags, OS unix.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])?;
        Ok(ParGzip {
            out,
            block: Vec::with_capacity(GZIP_BLOCK),
            dict: Vec::with_capacity(DEFLATE_WINDOW),
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: threads * 4,
            pool: Pool {
                jobs: Some(job_tx),
                workers,
            },
            done: done_rx,
            ready: BTreeMap::new(),
            crc: crc32fast::Hasher::new(),
            isize: 0,
            spare: Vec::new(),
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == GZIP_BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.write(buf)?;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.receive_one()?;
            self.drain(false)?;
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(GZIP_BLOCK));
        let data = std::mem::replace(&mut self.block, next);
        let dict = std::mem::take(&mut self.dict);
        let tail = data.len().saturating_sub(DEFLATE_WINDOW);
        self.dict = data[tail..].to_vec();
        let job = GzJob {
            seq: self.next_seq,
            data,
            dict,
            last,
        };
        self.next_seq += 1;
        self.pool
            .jobs
            .as_ref()
            .expect("jobs sender lives until finish")
            .send(job)
            .map_err(|_| io::Error::other("gzip worker exited"))?;
        self.in_flight += 1;
        // Collect whatever is done without waiting.
        while let Ok(r) = self.done.try_recv() {
            self.accept(r)?;
        }
        self.drain(false)
    }

    fn accept(&mut self, r: io::Result<GzDone>) -> io::Result<()> {
        let d = r?;
        self.in_flight -= 1;
        self.ready.insert(d.seq, d);
        Ok(())
    }

    fn receive_one(&mut self) -> io::Result<()> {
        let r = self
            .done
            .recv()
            .map_err(|_| io::Error::other("gzip worker exited"))?;
        self.accept(r)
    }

    /// Writes finished blocks in order; with `all`, waits for every block.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        loop {
            while let Some(d) = self.ready.remove(&self.next_write) {
                self.out.write_all(&d.out)?;
                self.crc.combine(&d.crc);
                self.isize += d.data.len() as u64;
                let mut data = d.data;
                data.clear();
                if self.spare.len() < self.max_in_flight {
                    self.spare.push(data);
                }
                self.next_write += 1;
            }
            if !all || self.next_write == self.next_seq {
                return Ok(());
            }
            self.receive_one()?;
        }
    }

    fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        self.drain(true)?;
        let crc = self.crc.clone().finalize();
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&crc.to_le_bytes());
        // ISIZE is the input length modulo 2^32.
        trailer[4..].copy_from_slice(&(self.isize as u32).to_le_bytes());
        self.out.write_all(&trailer)?;
        self.out.flush()?;
        drop(self.pool);
        Ok(self.out)
    }
}

fn gzip_worker(level: u32, jobs: &Mutex<Receiver<GzJob>>, done: &Sender<io::Result<GzDone>>) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        // A panic must reach the writer as an error: a silent worker death
        // would leave it waiting for this block forever.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| deflate_block(level, &job)))
                .unwrap_or_else(|_| Err(io::Error::other("gzip worker panicked")));
        let r = r.map(|out| {
            let mut crc = crc32fast::Hasher::new();
            crc.update(&job.data);
            GzDone {
                seq: job.seq,
                out,
                crc,
                data: job.data,
            }
        });
        if done.send(r).is_err() {
            return;
        }
    }
}

/// Deflates one block. A fresh compressor per block (not `reset()`): a
/// reused one can look at stale window bytes near the block end, which makes
/// the output depend on which worker ran the previous block, i.e. not
/// reproducible.
fn deflate_block(level: u32, job: &GzJob) -> io::Result<Vec<u8>> {
    let mut compressor = Compress::new(flate2::Compression::new(level), false);
    let c = &mut compressor;
    if !job.dict.is_empty() {
        c.set_dictionary(&job.dict).map_err(io::Error::other)?;
    }
    let flush = if job.last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let input = &job.data[..];
    let mut out = Vec::with_capacity(input.len() / 2 + 1024);
    let start_in = c.total_in();
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(input.len() / 4 + 4096);
        }
        let consumed = (c.total_in() - start_in) as usize;
        let status = c
            .compress_vec(&input[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = (c.total_in() - start_in) as usize;
        match status {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => {
                // A sync flush is complete once all input is in and zlib left output space unused.
                if !job.last && consumed == input.len() && out.len() < out.capacity() {
                    return Ok(out);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- decoder

/// Largest header read-ahead kept when passing an uncompressed member through.
const RAW_HEADER_MAX: usize = HEADER_LEN + MAX_NAME_LEN + 4;

/// A `Read` over the decompressed content of a stream of concatenated
/// members (gzip, zstd, xz or uncompressed newc, mixed), skipping zero
/// padding between members.
pub struct Decoder<R: BufRead> {
    state: State<R>,
    members: u64,
}

enum State<R: BufRead> {
    Boundary(R),
    Raw(R, RawMember),
    Gzip(flate2::bufread::GzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Xz(liblzma::bufread::XzDecoder<R>),
    Empty,
}

/// Progress through an uncompressed newc member.
#[derive(Default)]
struct RawMember {
    pending: Vec<u8>,
    pending_at: usize,
    passthrough: u64,
    saw_trailer: bool,
}

/// A decompressing reader over `input`; see [`Decoder`].
pub fn decoder<R: BufRead>(input: R) -> Decoder<R> {
    Decoder {
        state: State::Boundary(input),
        members: 0,
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: BufRead> Decoder<R> {
    /// Members started so far.
    pub fn members(&self) -> u64 {
        self.members
    }

    /// Skips zeros and opens the next member; `Ok(false)` at the end of input.
    fn open_member(&mut self) -> io::Result<bool> {
        let State::Boundary(mut r) = std::mem::replace(&mut self.state, State::Empty) else {
            return Ok(true);
        };
        let first = loop {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.state = State::Boundary(r);
                    return Err(e);
                }
            };
            if buf.is_empty() {
                self.state = State::Boundary(r);
                return Ok(false);
            }
            let zeros = buf.iter().take_while(|&&b| b == 0).count();
            if zeros < buf.len() {
                let first = buf[zeros];
                r.consume(zeros);
                break first;
            }
            r.consume(zeros);
        };
        // The first byte decides; each decoder then checks the rest of its magic.
        self.members += 1;
        self.state = match first {
            0x1f => State::Gzip(flate2::bufread::GzDecoder::new(r)),
            0x28 => State::Zstd(zstd::stream::read::Decoder::with_buffer(r)?.single_frame()),
            0xfd => State::Xz(liblzma::bufread::XzDecoder::new(r)),
            b'0' => State::Raw(r, RawMember::default()),
            b => {
                self.state = State::Boundary(r);
                let what = match b {
                    b'B' => "unsupported compression: bzip2".to_string(),
                    0x5d => "unsupported compression: lzma".to_string(),
                    0x02 | 0x04 => "unsupported compression: lz4".to_string(),
                    0x89 => "unsupported compression: lzo".to_string(),
                    b => format!("unknown compression or junk between members (byte {b:#04x})"),
                };
                return Err(invalid(what));
            }
        };
        Ok(true)
    }

    /// Ends the current member and returns to the boundary state.
    fn end_member(&mut self) {
        self.state = match std::mem::replace(&mut self.state, State::Empty) {
            State::Raw(r, _) => State::Boundary(r),
            State::Gzip(d) => State::Boundary(d.into_inner()),
            State::Zstd(d) => State::Boundary(d.finish()),
            State::Xz(d) => State::Boundary(d.into_inner()),
            other => other,
        };
    }
}

impl RawMember {
    /// Reads the next header and name into `pending`, setting how much data follows.
    fn next_header<R: BufRead>(&mut self, r: &mut R) -> io::Result<()> {
        self.pending.clear();
        self.pending_at = 0;
        self.pending.resize(HEADER_LEN, 0);
        r.read_exact(&mut self.pending)
            .map_err(|e| eof_as(e, "uncompressed archive ends before its trailer"))?;
        if &self.pending[..6] != newc::MAGIC && &self.pending[..6] != newc::MAGIC_CRC {
            return Err(invalid("bad newc magic in uncompressed member".to_string()));
        }
        let field = |i: usize| -> io::Result<u32> {
            let s = std::str::from_utf8(&self.pending[6 + i * 8..14 + i * 8])
                .map_err(|_| invalid("bad newc header field".to_string()))?;
            u32::from_str_radix(s, 16).map_err(|_| invalid("bad newc header field".to_string()))
        };
        let filesize = field(6)?;
        let namesize = field(11)? as usize;
        if namesize == 0 || HEADER_LEN + namesize > RAW_HEADER_MAX {
            return Err(invalid("bad newc name size".to_string()));
        }
        let name_part = namesize + pad4(HEADER_LEN + namesize);
        self.pending.resize(HEADER_LEN + name_part, 0);
        r.read_exact(&mut self.pending[HEADER_LEN..])
            .map_err(|e| eof_as(e, "uncompressed archive ends before its trailer"))?;
        let name = &self.pending[HEADER_LEN..HEADER_LEN + namesize];
        self.saw_trailer = name.strip_suffix(&[0]) == Some(newc::TRAILER);
        self.passthrough = u64::from(filesize) + pad4((filesize & 3) as usize) as u64;
        Ok(())
    }
}

fn eof_as(e: io::Error, msg: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_string())
    } else {
        e
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = match &mut self.state {
                State::Empty => return Err(io::Error::other("decoder failed earlier")),
                State::Boundary(_) => {
                    if !self.open_member()? {
                        return Ok(0);
                    }
                    continue;
                }
                State::Gzip(d) => d.read(buf)?,
                State::Zstd(d) => d.read(buf)?,
                State::Xz(d) => d.read(buf)?,
                State::Raw(r, m) => {
                    if m.pending_at < m.pending.len() {
                        let n = (m.pending.len() - m.pending_at).min(buf.len());
                        buf[..n].copy_from_slice(&m.pending[m.pending_at..m.pending_at + n]);
                        m.pending_at += n;
                        return Ok(n);
                    }
                    if m.passthrough > 0 {
                        let want = m.passthrough.min(buf.len() as u64) as usize;
                        let n = r.read(&mut buf[..want])?;
                        if n == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "uncompressed archive ends inside an entry",
                            ));
                        }
                        m.passthrough -= n as u64;
                        return Ok(n);
                    }
                    if m.saw_trailer {
                        0
                    } else {
                        m.next_header(r)?;
                        continue;
                    }
                }
            };
            if n > 0 {
                return Ok(n);
            }
            // The member ended; look for another.
            self.end_member();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(n: usize) -> Vec<u8> {
        // Compressible but not trivial.
        let mut v = Vec::with_capacity(n);
        let mut x: u32 = 12345;
        while v.len() < n {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let word = ["alpha ", "beta ", "gamma ", "delta\n", "eps "][(x >> 16) as usize % 5];
            v.extend_from_slice(word.as_bytes());
            if (x >> 8).is_multiple_of(7) {
                v.push((x >> 3) as u8);
            }
        }
        v.truncate(n);
        v
    }

    fn compress(c: Compression, data: &[u8], threads: usize) -> Vec<u8> {
        let opts = EncoderOptions {
            level: None,
            threads,
        };
        let mut e = encoder(c, &opts, Vec::new()).unwrap();
        // Odd write sizes exercise block splitting.
        for chunk in data.chunks(7919) {
            e.write_all(chunk).unwrap();
        }
        e.finish().unwrap()
    }

    #[test]
    fn parallel_gzip_is_one_valid_member() {
        for len in [
            0,
            1,
            GZIP_BLOCK - 1,
            GZIP_BLOCK,
            GZIP_BLOCK * 3 + 17,
            2_000_000,
        ] {
            let data = payload(len);
            for threads in [1, 3] {
                let gz = compress(Compression::Gzip, &data, threads);
                let mut d = flate2::read::GzDecoder::new(&gz[..]);
                let mut back = Vec::new();
                d.read_to_end(&mut back).unwrap();
                assert_eq!(back, data, "len {len} threads {threads}");
                // Nothing follows the single member.
                let mut rest = Vec::new();
                d.into_inner().read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty());
            }
        }
    }

    #[test]
    fn gzip_output_is_reproducible_across_thread_counts() {
        // Mixed text and noise, so that block ends see varied matches.
        let mut data = Vec::new();
        for i in 0..40u32 {
            data.extend(payload(20_000 + i as usize * 997));
            data.extend((0..5_000u32).map(|j| (j.wrapping_mul(2_654_435_761) >> (i % 24)) as u8));
            data.extend_from_slice(include_bytes!("newc.rs"));
        }
        assert_eq!(
            compress(Compression::Gzip, &data, 1),
            compress(Compression::Gzip, &data, 4)
        );
    }

    #[test]
    fn zstd_output_does_not_depend_on_thread_count() {
        let data = payload(3 * ZSTD_JOB_SIZE as usize);
        assert_eq!(
            compress(Compression::Zstd, &data, 1),
            compress(Compression::Zstd, &data, 3)
        );
    }

    #[test]
    fn every_format_round_trips_through_decoder() {
        let data = payload(300_000);
        for c in [Compression::Gzip, Compression::Zstd, Compression::Xz] {
            let packed = compress(c, &data, 2);
            assert_eq!(Compression::detect(&packed), Some(c));
            let mut back = Vec::new();
            decoder(&packed[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "{c:?}");
        }
    }

    #[test]
    fn mixed_members_with_zero_padding() {
        let mut raw = newc::Writer::new(Vec::new());
        raw.add_file("raw", 0o644, b"uncompressed").unwrap();
        let raw = raw.finish().unwrap();
        let mut second = newc::Writer::new(Vec::new());
        second.add_file("gz", 0o644, b"compressed").unwrap();
        let second = second.finish().unwrap();

        let mut stream = raw.clone();
        stream.extend_from_slice(&[0; 508]);
        stream.extend(compress(Compression::Gzip, &second, 1));
        stream.extend_from_slice(&[0; 3]);
        stream.extend(compress(Compression::Zstd, &raw, 1));
        stream.extend(compress(Compression::Xz, &second, 1));
        stream.extend(raw.clone());
        let mut out = Vec::new();
        let mut d = decoder(&stream[..]);
        d.read_to_end(&mut out).unwrap();
        assert_eq!(d.members(), 5);
        let expect = [&raw[..], &second, &raw, &second, &raw].concat();
        assert_eq!(out, expect);
    }

    #[test]
    fn junk_between_members_is_an_error() {
        let mut stream = compress(Compression::Gzip, b"x", 1);
        stream.extend_from_slice(b"junk");
        let mut out = Vec::new();
        let err = decoder(&stream[..]).read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn encoder_and_decoder_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Encoder<std::fs::File>>();
        assert_send::<Decoder<std::io::BufReader<std::fs::File>>>();
    }

    #[test]
    fn names_and_extensions() {
        assert_eq!(Compression::from_name("zstd"), Some(Compression::Zstd));
        assert_eq!(Compression::from_name("gz"), Some(Compression::Gzip));
        assert_eq!(Compression::from_name("bz2"), None);
        assert_eq!(Compression::Zstd.extension(), "zst");
    }
}
