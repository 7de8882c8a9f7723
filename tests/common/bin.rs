// The `fovea` binary the tests run (included by common/mod.rs and common/exchange.rs).

/// The `fovea` binary under test, as a command. Under emulation (tools/cross.sh test arm runs
/// the ARM tests with qemu-user, which starts the test binary but not what it spawns) the
/// words of `FOVEA_TEST_RUNNER` (e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`) go first, as
/// cargo's target runner goes before the test binary.
pub fn fovea_command() -> std::process::Command {
    let mut words = fovea_argv();
    let mut command = std::process::Command::new(words.remove(0));
    command.args(words);
    command
}

/// [`fovea_command`] as words (runner first), for a shell line.
pub fn fovea_argv() -> Vec<String> {
    let mut words: Vec<String> = std::env::var("FOVEA_TEST_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    words.push(env!("CARGO_BIN_EXE_fovea").to_string());
    words
}
