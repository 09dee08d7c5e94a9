//! Finding the CUDA toolkit pieces anybit needs at run time: NVRTC and the CUDA headers.
//!
//! Nothing is needed at build time. The search order is:
//! 1. `ANYBIT_CUDA_HOME`, then `CUDA_HOME`, then `CUDA_PATH` (a toolkit folder, or a pip wheel
//!    folder such as `.../site-packages/nvidia/cu13`);
//! 2. the project-local wheel cache `.cache/cuda/nvidia/cu13` that `scripts/install-cuda-wheels`
//!    fills, looked for in the current folder, the executable's folder and their ancestors;
//! 3. `/usr/local/cuda`;
//! 4. pip-installed wheels (`nvidia/cu13` in the site-packages of the active virtual environment
//!    (`VIRTUAL_ENV`), of `~/.local`, `/usr/local` and `/usr`, for every `python3.*`).
//!
//! A folder qualifies when it holds `libnvrtc.so.13` (in `lib64/` or `lib/`) and `cuda_fp16.h`
//! (in `include/`). [`ToolkitError::NotFound`] lists every place that was looked at.

use std::path::{Path, PathBuf};

/// The NVRTC library name this build uses (CUDA 13).
pub const NVRTC_LIBRARY: &str = "libnvrtc.so.13";
/// The NVRTC builtins library that NVRTC opens by name when it compiles.
pub const NVRTC_BUILTINS_LIBRARY: &str = "libnvrtc-builtins.so.13.0";
/// Where the project-local wheel cache keeps the toolkit, relative to the repository root.
pub const PROJECT_CACHE: &str = ".cache/cuda/nvidia/cu13";

/// A usable toolkit: where NVRTC and the headers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Toolkit {
    /// The toolkit folder.
    pub root: PathBuf,
    /// How it was found, e.g. `CUDA_HOME` or `project cache`.
    pub found_by: String,
    pub nvrtc_library: PathBuf,
    /// `None` when the builtins library is not beside NVRTC (then NVRTC must find it itself).
    pub nvrtc_builtins_library: Option<PathBuf>,
    pub include_dir: PathBuf,
    /// Folder with `cuobjdump`/`nvdisasm`, when present.
    pub bin_dir: Option<PathBuf>,
}

/// No toolkit could be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolkitError {
    #[error(
        "no CUDA toolkit with {NVRTC_LIBRARY} and cuda_fp16.h was found; looked in:\n{}\n\
         Run scripts/install-cuda-wheels (installs NVRTC and the headers from PyPI into \
         .cache/cuda) or set ANYBIT_CUDA_HOME to a CUDA 13 toolkit",
        .searched.iter().map(|place| format!("  - {place}")).collect::<Vec<_>>().join("\n")
    )]
    NotFound { searched: Vec<String> },
}

/// Looks for the toolkit in the documented order.
pub fn locate_toolkit() -> Result<Toolkit, ToolkitError> {
    let mut searched = Vec::new();
    for (variable, found_by) in [
        ("ANYBIT_CUDA_HOME", "ANYBIT_CUDA_HOME"),
        ("CUDA_HOME", "CUDA_HOME"),
        ("CUDA_PATH", "CUDA_PATH"),
    ] {
        match std::env::var_os(variable) {
            Some(value) if !value.is_empty() => {
                let root = PathBuf::from(value);
                if let Some(toolkit) = inspect(&root, found_by) {
                    return Ok(toolkit);
                }
                searched.push(format!("{} (from {variable})", root.display()));
            }
            _ => searched.push(format!("{variable} (not set)")),
        }
    }
    for start in search_starts() {
        for folder in start.ancestors() {
            let root = folder.join(PROJECT_CACHE);
            if let Some(toolkit) = inspect(&root, "project cache") {
                return Ok(toolkit);
            }
        }
        searched.push(format!(
            "{PROJECT_CACHE} in {} and the folders above it",
            start.display()
        ));
    }
    let system = PathBuf::from("/usr/local/cuda");
    if let Some(toolkit) = inspect(&system, "/usr/local/cuda") {
        return Ok(toolkit);
    }
    searched.push(system.display().to_string());
    for root in site_packages_toolkits() {
        if let Some(toolkit) = inspect(&root, "pip wheels") {
            return Ok(toolkit);
        }
        searched.push(root.display().to_string());
    }
    if searched
        .iter()
        .all(|place| !place.contains("site-packages"))
    {
        searched.push("nvidia/cu13 in Python site-packages (none found)".to_string());
    }
    Err(ToolkitError::NotFound { searched })
}

/// `nvidia/cu13` folders of pip-installed CUDA wheels in the usual Python prefixes.
fn site_packages_toolkits() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    if let Some(environment) = std::env::var_os("VIRTUAL_ENV") {
        prefixes.push(PathBuf::from(environment));
    }
    if let Some(home) = std::env::var_os("HOME") {
        prefixes.push(PathBuf::from(home).join(".local"));
    }
    prefixes.extend([PathBuf::from("/usr/local"), PathBuf::from("/usr")]);
    let mut roots = Vec::new();
    for prefix in prefixes {
        let Ok(entries) = std::fs::read_dir(prefix.join("lib")) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("python3"))
            })
            .collect();
        pythons.sort();
        for python in pythons {
            for packages in ["site-packages", "dist-packages"] {
                let root = python.join(packages).join("nvidia").join("cu13");
                if root.is_dir() {
                    roots.push(root);
                }
            }
        }
    }
    roots
}

/// The current folder and the executable's folder, where they can be read.
fn search_starts() -> Vec<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(current) = std::env::current_dir() {
        starts.push(current);
    }
    if let Some(folder) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        if !starts.contains(&folder) {
            starts.push(folder);
        }
    }
    starts
}

/// The toolkit in `root`, if it has NVRTC and the headers.
fn inspect(root: &Path, found_by: &str) -> Option<Toolkit> {
    let library_dir = ["lib64", "lib"]
        .iter()
        .map(|name| root.join(name))
        .find(|dir| dir.join(NVRTC_LIBRARY).is_file())?;
    let include_dir = root.join("include");
    if !include_dir.join("cuda_fp16.h").is_file() {
        return None;
    }
    let builtins = library_dir.join(NVRTC_BUILTINS_LIBRARY);
    let bin_dir = root.join("bin");
    Some(Toolkit {
        root: root.to_path_buf(),
        found_by: found_by.to_string(),
        nvrtc_library: library_dir.join(NVRTC_LIBRARY),
        nvrtc_builtins_library: builtins.is_file().then_some(builtins),
        include_dir,
        bin_dir: bin_dir.join("cuobjdump").is_file().then_some(bin_dir),
    })
}
