//! Empty on purpose: every kit's Cargo.toml points here as its `lib`, because
//! Cargo needs something to compile. The work happens in `build.rs`.
