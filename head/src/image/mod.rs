//! Node images: the image trees under `wwchrootdir`, their built archives
//! under `wwprovisiondir/images`, and the kernels found inside them.

pub mod admin;
pub mod build;
pub mod exec;
pub mod fsat;
pub mod import;
pub mod kernel;
pub mod kernel_import;
pub mod layer;
pub mod manifest;
pub mod oci;
pub mod registry;
pub mod store;
pub mod syncuser;

pub use build::{BuildOptions, BuildOutcome, build};
pub use manifest::ImageManifest;
pub use store::ImageStore;
