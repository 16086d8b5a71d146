//! The archive engine: the newc cpio codec ([`newc`]), compression and
//! multi-member decompression ([`compress`]), directory tree to archive
//! ([`tree`]) and safe, kernel-faithful unpacking ([`unpack`]).
//!
//! Used by the head to build images, overlays and stage-1 initramfs images,
//! and by `wwinit` (PID 1) to unpack what it fetched. No async runtime here.

pub mod compress;
pub mod newc;
pub mod tree;
pub mod unpack;
