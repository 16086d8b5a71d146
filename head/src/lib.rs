//! The Ironwulf head node as a library: everything `wwctl` does, so the
//! binary, the benchmarks and the fuzz targets share one implementation.

pub mod cli;
pub mod config;
pub mod fsutil;
pub mod image;
pub mod initramfs;
pub mod logging;
pub mod nodedb;
pub mod overlay;
pub mod par;
pub mod power;
pub mod serve;
pub mod tls;
