//! Node images: the image trees under `wwchrootdir`, their built archives
//! under `wwprovisiondir/images`, and the kernels found inside them.

pub mod build;
pub mod kernel;
pub mod manifest;
pub mod store;

pub use build::{BuildOptions, BuildOutcome, build};
pub use manifest::ImageManifest;
pub use store::ImageStore;
