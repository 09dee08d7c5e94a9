//! Finding the CUDA toolkit pieces anybit needs at run time: NVRTC and the CUDA headers.
//!
//! Nothing is needed at build time. The search order is:
//! 1. `ANYBIT_CUDA_HOME`, then `CUDA_HOME`, then `CUDA_PATH` (a toolkit folder, or a pip wheel
//!    folder such as `.../site-packages/nvidia/cu13`);
//! 2. the project-local wheel cache `.cache/cuda/nvidia/cu13` that `scripts/install-cuda-wheels`
//!    fills, looked for in the current folder, the executable's folder and their ancestors;
//! 3. `/usr/local/cuda`;
//! 4. pip-installed wheels (`nvidia/cu13` in the site-packages of the active virtual environment
//!    (`VIRTUAL_ENV`), of `~/.local`, `/usr/local` and `/usr`, for every `python3.*`);
//! 5. the site-packages folders of the Python interpreter anybit runs inside, as registered with
//!    [`add_python_site_packages`] (the `anybit` Python package registers `sys.path` when it is
//!    imported), in the order given: in each, `nvidia/cu13` (the CUDA 13 wheels, which PyTorch
//!    depends on), then `nvidia/cuda_nvrtc/lib` with the headers of `nvidia/cuda_runtime/include`
//!    (the layout of the older per-library wheels).
//!
//! A folder qualifies when it holds `libnvrtc.so.13` (in `lib64/` or `lib/`) and `cuda_fp16.h`
//! (in `include/`). [`ToolkitError::NotFound`] lists every place that was looked at.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    let registered = PYTHON_SITE_PACKAGES
        .lock()
        .map(|folders| folders.clone())
        .unwrap_or_default();
    match python_environment_toolkit(&registered, &mut searched) {
        Some(toolkit) => Ok(toolkit),
        None => Err(ToolkitError::NotFound { searched }),
    }
}

/// The site-packages folders registered by [`add_python_site_packages`].
static PYTHON_SITE_PACKAGES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Adds the site-packages folders of the Python interpreter this process runs (for example
/// `sys.path`) to the last step of the search, keeping the order and skipping repeats. Only
/// searches that start afterwards see them; NVRTC is loaded once per process, at the first
/// compilation, so an embedding program registers its folders before it compiles.
pub fn add_python_site_packages(folders: impl IntoIterator<Item = PathBuf>) {
    if let Ok(mut registered) = PYTHON_SITE_PACKAGES.lock() {
        for folder in folders {
            if !registered.contains(&folder) {
                registered.push(folder);
            }
        }
    }
}

/// The first toolkit in `site_packages` (in order; in each folder the `nvidia/cu13` wheels, then
/// the per-library `nvidia/cuda_nvrtc` and `nvidia/cuda_runtime` wheels), noting in `searched`
/// every place looked at.
fn python_environment_toolkit(
    site_packages: &[PathBuf],
    searched: &mut Vec<String>,
) -> Option<Toolkit> {
    const FOUND_BY: &str = "Python environment";
    for folder in site_packages {
        let nvidia = folder.join("nvidia");
        let combined = nvidia.join("cu13");
        if let Some(toolkit) = inspect(&combined, FOUND_BY) {
            return Some(toolkit);
        }
        searched.push(combined.display().to_string());
        let nvrtc = nvidia.join("cuda_nvrtc");
        let include_dir = nvidia.join("cuda_runtime").join("include");
        if let Some(toolkit) = inspect_split(&nvrtc, &include_dir, FOUND_BY) {
            return Some(toolkit);
        }
        searched.push(format!(
            "{} with {}",
            nvrtc.join("lib").display(),
            include_dir.display()
        ));
    }
    None
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
    inspect_split(root, &root.join("include"), found_by)
}

/// The toolkit with NVRTC under `root` and the headers in `include_dir`, if both are there.
fn inspect_split(root: &Path, include_dir: &Path, found_by: &str) -> Option<Toolkit> {
    let library_dir = ["lib64", "lib"]
        .iter()
        .map(|name| root.join(name))
        .find(|dir| dir.join(NVRTC_LIBRARY).is_file())?;
    let include_dir = include_dir.to_path_buf();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh empty folder under the system's temporary folder.
    fn scratch(name: &str) -> PathBuf {
        let folder =
            std::env::temp_dir().join(format!("anybit-toolkit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).expect("create a scratch folder");
        folder
    }

    fn touch(path: PathBuf) {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        std::fs::write(path, b"").expect("write a file");
    }

    /// The CUDA 13 layout: NVRTC and headers under `nvidia/cu13`.
    fn combined_wheels(site: &Path) {
        touch(site.join("nvidia/cu13/lib").join(NVRTC_LIBRARY));
        touch(site.join("nvidia/cu13/include/cuda_fp16.h"));
    }

    /// The per-library layout: NVRTC under `nvidia/cuda_nvrtc`, headers under `cuda_runtime`.
    fn split_wheels(site: &Path) {
        touch(site.join("nvidia/cuda_nvrtc/lib").join(NVRTC_LIBRARY));
        touch(site.join("nvidia/cuda_runtime/include/cuda_fp16.h"));
    }

    #[test]
    fn python_environment_search_order() {
        let root = scratch("order");
        let (empty, split, both) = (root.join("empty"), root.join("split"), root.join("both"));
        std::fs::create_dir_all(&empty).expect("create a folder");
        split_wheels(&split);
        combined_wheels(&both);
        split_wheels(&both);

        // Folders in the order given; the empty one is searched and listed first.
        let mut searched = Vec::new();
        let found = python_environment_toolkit(&[empty.clone(), split.clone()], &mut searched)
            .expect("the per-library wheels qualify");
        assert_eq!(found.found_by, "Python environment");
        assert_eq!(
            found.nvrtc_library,
            split.join("nvidia/cuda_nvrtc/lib").join(NVRTC_LIBRARY)
        );
        assert_eq!(found.include_dir, split.join("nvidia/cuda_runtime/include"));
        // Before it: both layouts of the empty folder, then the CUDA 13 layout of this one.
        assert_eq!(searched.len(), 3, "{searched:?}");
        assert!(searched[0].ends_with("empty/nvidia/cu13"), "{searched:?}");
        assert!(
            searched[1].contains("empty/nvidia/cuda_nvrtc"),
            "{searched:?}"
        );
        assert!(searched[2].ends_with("split/nvidia/cu13"), "{searched:?}");

        // In one folder, the CUDA 13 layout comes before the per-library one.
        let mut searched = Vec::new();
        let found = python_environment_toolkit(&[both.clone(), split], &mut searched)
            .expect("the CUDA 13 wheels qualify");
        assert_eq!(found.root, both.join("nvidia/cu13"));
        assert!(searched.is_empty());

        // Nothing qualifies: every place is listed.
        let mut searched = Vec::new();
        assert!(python_environment_toolkit(std::slice::from_ref(&empty), &mut searched).is_none());
        assert_eq!(searched.len(), 2);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn headers_are_required_beside_nvrtc() {
        let root = scratch("headers");
        touch(root.join("nvidia/cuda_nvrtc/lib").join(NVRTC_LIBRARY));
        let mut searched = Vec::new();
        assert!(python_environment_toolkit(std::slice::from_ref(&root), &mut searched).is_none());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn registered_folders_keep_their_order_without_repeats() {
        add_python_site_packages([PathBuf::from("/a"), PathBuf::from("/b")]);
        add_python_site_packages([PathBuf::from("/b"), PathBuf::from("/c")]);
        let registered = PYTHON_SITE_PACKAGES.lock().expect("not poisoned").clone();
        let position = |name: &str| registered.iter().position(|path| path == Path::new(name));
        assert!(position("/a") < position("/b") && position("/b") < position("/c"));
        assert_eq!(
            registered
                .iter()
                .filter(|path| *path == Path::new("/b"))
                .count(),
            1
        );
    }
}
