//! Disassembling cubins to SASS with `cuobjdump` (from the toolkit or the project's wheel
//! cache), so tests can check which machine instructions code generation produced.

use std::collections::BTreeMap;
use std::process::Command;

use crate::toolkit::locate_toolkit;

/// Disassembly failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SassError {
    #[error("cuobjdump not found: the toolkit at {0} has no bin/cuobjdump (scripts/install-cuda-wheels installs it)")]
    NoDisassembler(String),
    #[error(transparent)]
    Toolkit(#[from] crate::ToolkitError),
    #[error("cuobjdump failed: {0}")]
    Failed(String),
}

/// The SASS text of a cubin.
pub fn disassemble(cubin: &[u8]) -> Result<String, SassError> {
    let toolkit = locate_toolkit()?;
    let bin_dir = toolkit
        .bin_dir
        .ok_or_else(|| SassError::NoDisassembler(toolkit.root.display().to_string()))?;
    let failed = |reason: std::io::Error| SassError::Failed(reason.to_string());
    let directory = std::env::temp_dir().join(format!(
        "anybit-sass-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&directory).map_err(failed)?;
    let path = directory.join("module.cubin");
    std::fs::write(&path, cubin).map_err(failed)?;
    let output = Command::new(bin_dir.join("cuobjdump"))
        .arg("-sass")
        .arg(&path)
        .output()
        .map_err(failed);
    let _ = std::fs::remove_dir_all(&directory);
    let output = output?;
    if !output.status.success() {
        return Err(SassError::Failed(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Splits `cuobjdump -sass` output into the SASS of each function, by function name.
pub fn sass_by_function(sass: &str) -> BTreeMap<String, String> {
    let mut functions = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in sass.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            if let Some((name, body)) = current.take() {
                functions.insert(name, body);
            }
            current = Some((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((name, body)) = current {
        functions.insert(name, body);
    }
    functions
}
