//! Node images: build, list.
