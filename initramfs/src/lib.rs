//! The archive engine (placeholder until the codec lands).
