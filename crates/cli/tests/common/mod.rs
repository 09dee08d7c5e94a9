//! What the CLI tests share: the binary run as a user runs it, and fingerprints of a
//! directory that show a refused request left it as it was.

// Each test file uses some of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// Runs the `anybit` binary with `arguments` and returns what it printed and its status.
pub fn anybit(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anybit"))
        .args(arguments)
        .output()
        .expect("the anybit binary runs")
}

/// The output's standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The name and SHA-256 of every file in `directory`, in name order.
pub fn hashes(directory: &Path) -> Vec<(String, Vec<u8>)> {
    let mut hashes: Vec<(String, Vec<u8>)> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, Sha256::digest(std::fs::read(&path).unwrap()).to_vec())
        })
        .collect();
    hashes.sort();
    hashes
}

/// The names of everything in `directory`, sorted.
pub fn names(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
