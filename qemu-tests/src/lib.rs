//! Harness for real VM boots under `qemu-system-* -accel tcg`.
