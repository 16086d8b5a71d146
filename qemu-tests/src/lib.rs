//! Harness for real VM boots under `qemu-system-* -accel tcg`.
//!
//! - [`vm`]: the [`Vm`] builder and running VM, killed with its whole process
//!   group on drop (also when a test panics);
//! - [`console`]: the serial console transcript and ordered `expect` markers;
//! - [`kernel`]: finds the Debian kernel fetched by `scripts/fetch-kernel.sh`;
//! - [`artifacts`]: locates (and if needed builds) binaries the guests run,
//!   such as the static `test-init`;
//! - [`initrd`]: assembles small initramfs members with our own archive writer;
//! - [`optout`]: the explicit `IRONWULF_SKIP_QEMU=1` opt-out;
//! - [`netns`]: a private boot network (namespace, bridge, taps) per test;
//! - [`head`]: a temp site and `wwctl server` running in that network;
//! - [`debian`]: the cached Debian 12 node image (`scripts/build-debian-image.sh`);
//! - [`ssh`]: logging in to booted nodes from the head's namespace.
//!
//! QEMU always runs with TCG: `/dev/kvm` is not usable on the test machines.

pub mod artifacts;
pub mod console;
pub mod debian;
pub mod head;
pub mod initrd;
pub mod kernel;
pub mod netns;
pub mod optout;
pub mod ssh;
pub mod tiny;
pub mod vm;

pub use console::Console;
pub use kernel::{Arch, Kernel};
pub use optout::qemu_opted_out;
pub use vm::{Vm, VmBuilder};
