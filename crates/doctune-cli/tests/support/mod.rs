//! What the binary's tests share: running `doctune` with a data folder of its own.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `doctune ARGS` with `DOCTUNE_HOME=home` and no log filter from the environment.
pub fn doctune(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_doctune"))
        .args(args)
        .env("DOCTUNE_HOME", home)
        .env_remove("DOCTUNE_LOG")
        .output()
        .unwrap()
}
