//! The node database (`nodes.conf`): model, profile merge, store, hostlists.
//!
//! - [`model`]: the YAML structures, as Warewulf writes them, keeping unknown keys;
//! - [`merge`]: profile resolution with per-field sources (pure);
//! - [`validate`]: checks run before every write, with file positions;
//! - [`store`]: locked, validated, atomic read-modify-write and change stamps;
//! - [`split`]: large files parsed in pieces on all cores when that is exact;
//! - [`hostlist`]: `n[01-10]` expansion and collapse.

pub mod hostlist;
pub mod merge;
pub mod model;
pub mod split;
pub mod store;
pub mod validate;

#[allow(unused_imports)]
pub use merge::{FieldSource, MergedNode};
#[allow(unused_imports)]
pub use model::{NetDev, NodeConf, NodesConf};
#[allow(unused_imports)]
pub use store::{NodeDb, NodeDbError, Stamp};
