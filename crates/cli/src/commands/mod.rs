//! One module per subcommand.

pub mod bench;
pub mod compile;
pub mod dequantize;
pub mod doctor;
pub mod dtype;
pub mod import;
pub mod kernel;
pub mod program;
pub mod quantize;
pub mod run;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` through a temporary file beside it that is renamed into place, so an
/// interrupted write never leaves a truncated file behind.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}
