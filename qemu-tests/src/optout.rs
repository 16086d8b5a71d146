//! The explicit opt-out from QEMU tests.
//!
//! QEMU tests never skip silently: a missing kernel or QEMU binary is a test
//! failure. Setting `IRONWULF_SKIP_QEMU=1` is the one way to skip them, and
//! each skipped test says so loudly on stderr.

/// Environment variable that, set to `1`, skips every QEMU test.
pub const SKIP_ENV: &str = "IRONWULF_SKIP_QEMU";

/// Returns `true` (after printing a skip notice naming `test`) when QEMU tests
/// are switched off with `IRONWULF_SKIP_QEMU=1`.
///
/// Use at the top of each QEMU test: `if qemu_opted_out("boot_x") { return Ok(()); }`.
pub fn qemu_opted_out(test: &str) -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v.trim() == "1");
    if skip {
        eprintln!(
            "\n*** SKIPPED QEMU TEST `{test}`: {SKIP_ENV}=1 is set. \
             This test did NOT run. ***\n"
        );
    }
    skip
}
