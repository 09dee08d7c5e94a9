//! Loading NVRTC from the located toolkit.
//!
//! `cudarc` opens NVRTC by library name. To make it use the toolkit that [`locate_toolkit`]
//! found (for example the project's wheel cache, which is on no loader path), the builtins
//! library and NVRTC are first opened here by full path with `RTLD_GLOBAL` and kept open: the
//! dynamic loader then resolves later opens of the same names to these copies.

use std::sync::OnceLock;

use crate::toolkit::{locate_toolkit, Toolkit, ToolkitError};

/// NVRTC could not be made usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NvrtcError {
    #[error(transparent)]
    Toolkit(#[from] ToolkitError),
    #[error("could not load {library}: {reason}")]
    Load { library: String, reason: String },
    #[error("NVRTC call failed: {0}")]
    Call(String),
}

/// Loads NVRTC once per process and returns the toolkit it came from.
pub fn load_nvrtc() -> Result<&'static Toolkit, NvrtcError> {
    static LOADED: OnceLock<Result<Toolkit, NvrtcError>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let toolkit = locate_toolkit()?;
            for library in toolkit
                .nvrtc_builtins_library
                .iter()
                .chain(std::iter::once(&toolkit.nvrtc_library))
            {
                // SAFETY: opening NVRTC runs only its initialisers, which have no
                // preconditions; the handle is leaked so the library stays loaded.
                let opened = unsafe {
                    libloading::os::unix::Library::open(
                        Some(library),
                        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL,
                    )
                };
                match opened {
                    Ok(handle) => std::mem::forget(handle),
                    Err(error) => {
                        return Err(NvrtcError::Load {
                            library: library.display().to_string(),
                            reason: error.to_string(),
                        })
                    }
                }
            }
            Ok(toolkit)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The NVRTC version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), NvrtcError> {
    load_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded; both out-pointers are valid.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|error| NvrtcError::Call(format!("nvrtcVersion: {error:?}")))?;
    Ok((major, minor))
}
