//! Empty on purpose: the variant's Cargo.toml points here as its `lib`,
//! because Cargo needs something to compile. The work happens in `build.rs`.
//! `make twoliter-project` places this file at variants/variants.rs.
