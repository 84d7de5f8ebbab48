// Merges the crate's defaults.d/*.toml, in name order, into one defaults
// TOML that the settings-defaults package installs.
fn main() {
    bottlerocket_defaults_helper::generate_defaults_toml().unwrap();
}
