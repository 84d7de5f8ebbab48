// Empty on purpose: the crate exists for its build script, which writes the
// merged defaults TOML.
