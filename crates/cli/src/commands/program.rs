//! `anybit check FILE` and `anybit fmt FILE`: reading, verifying and printing VM programs.

use std::path::{Path, PathBuf};

use anybit_vm::{parse, print, verify, Program, Verified};
use anyhow::{bail, Context, Result};

use super::write_atomically;

/// Reads and parses a program; errors are `FILE:line:column: message`.
pub fn read_program(path: &Path) -> Result<Program> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).map_err(|error| anyhow::anyhow!("{}:{error}", path.display()))
}

/// Verifies a program read from `path`, once, for everything that runs or compiles it;
/// errors are `FILE:line:column: message`.
pub fn verify_program<'p>(path: &Path, program: &'p Program) -> Result<Verified<'p>> {
    verify(program).map_err(|error| anyhow::anyhow!("{}:{error}", path.display()))
}

/// Reads, parses and verifies a program, for commands that need only the verdict.
pub fn load_program(path: &Path) -> Result<Program> {
    let program = read_program(path)?;
    verify_program(path, &program)?;
    Ok(program)
}

/// `anybit check`: every file is parsed and verified; all errors are reported.
pub fn check(paths: &[PathBuf]) -> Result<()> {
    let mut failures = 0;
    for path in paths {
        match load_program(path) {
            Ok(program) => println!("{}: ok (program `{}`)", path.display(), program.name),
            Err(error) => {
                eprintln!("{error:#}");
                failures += 1;
            }
        }
    }
    if failures > 0 {
        bail!("{failures} of {} file(s) failed the check", paths.len());
    }
    Ok(())
}

/// `anybit fmt`: prints the canonical text, or rewrites the file (`--write`), or only reports
/// whether it is canonical (`--check`).
pub fn format(path: &Path, write: bool, check_only: bool) -> Result<()> {
    let program = load_program(path)?;
    let canonical = print(&program);
    let current = std::fs::read_to_string(path)?;
    if check_only {
        if current != canonical {
            bail!(
                "{} is not in canonical form; run `anybit fmt --write {}`",
                path.display(),
                path.display()
            );
        }
        return Ok(());
    }
    if write {
        if current != canonical {
            write_atomically(path, canonical.as_bytes())?;
        }
        return Ok(());
    }
    print!("{canonical}");
    Ok(())
}
