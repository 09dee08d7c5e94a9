//! Compiling CUDA C++ to PTX and cubin with NVRTC, and caching the results on disk.
//!
//! Promises:
//! - [`compile`] returns the PTX and the cubin for the target, or a [`CompileError`] whose text
//!   shows each NVRTC diagnostic followed by the source line it points at.
//! - [`KernelCache`] keys entries by source, options, target and NVRTC version; entries are
//!   written to a temporary file and renamed into place, so processes compiling the same kernel
//!   at once never see a partial file.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys};
use sha2::{Digest, Sha256};

use crate::nvrtc::{load_nvrtc, nvrtc_version, NvrtcError};
use crate::target::Target;

/// The output of one compilation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompiledModule {
    pub target: Target,
    pub ptx: String,
    pub cubin: Vec<u8>,
    /// NVRTC's log (warnings), empty when it had nothing to say.
    pub log: String,
}

/// Compilation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Nvrtc(#[from] NvrtcError),
    #[error("NVRTC could not compile `{name}` for {target}:\n{diagnostics}")]
    Rejected {
        name: String,
        target: Target,
        diagnostics: String,
    },
    #[error("kernel cache at {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("the source of `{0}` contains a NUL byte")]
    NulInSource(String),
}

/// Compiles `source` (CUDA C++) for `target`. `name` names the program in diagnostics.
pub fn compile(source: &str, name: &str, target: Target) -> Result<CompiledModule, CompileError> {
    let toolkit = load_nvrtc()?;
    let call_failed = |call: &str, error: nvrtc_result::NvrtcError| {
        CompileError::Nvrtc(NvrtcError::Call(format!("{call}: {error:?}")))
    };
    let source_c = CString::new(source).map_err(|_| CompileError::NulInSource(name.into()))?;
    let name_c =
        CString::new(format!("{name}.cu")).map_err(|_| CompileError::NulInSource(name.into()))?;
    let options = compile_options(target, &toolkit.include_dir);
    let program = nvrtc_result::create_program(&source_c, Some(&name_c))
        .map_err(|error| call_failed("nvrtcCreateProgram", error))?;
    // SAFETY: `program` is a live NVRTC program until the destroy below; every buffer passed
    // to NVRTC is sized by the matching size query.
    let outcome = unsafe {
        let compiled = nvrtc_result::compile_program(program, &options);
        let log = read_log(program);
        match compiled {
            Err(_) => Err(CompileError::Rejected {
                name: name.to_string(),
                target,
                diagnostics: annotate_diagnostics(&log, source),
            }),
            Ok(()) => {
                let ptx = nvrtc_result::get_ptx(program)
                    .map_err(|error| call_failed("nvrtcGetPTX", error))?;
                let ptx: Vec<u8> = ptx
                    .iter()
                    .map(|&c| c as u8)
                    .take_while(|&c| c != 0)
                    .collect();
                let cubin =
                    read_cubin(program).map_err(|error| call_failed("nvrtcGetCUBIN", error))?;
                Ok(CompiledModule {
                    target,
                    ptx: String::from_utf8_lossy(&ptx).into_owned(),
                    cubin,
                    log: log.trim().to_string(),
                })
            }
        }
    };
    // SAFETY: destroyed once, after its last use.
    unsafe { nvrtc_result::destroy_program(program) }
        .map_err(|error| call_failed("nvrtcDestroyProgram", error))?;
    outcome
}

fn compile_options(target: Target, include_dir: &Path) -> Vec<String> {
    vec![
        format!("--gpu-architecture={}", target.name()),
        format!("--include-path={}", include_dir.display()),
        "--std=c++17".to_string(),
        "--device-as-default-execution-space".to_string(),
        "--generate-line-info".to_string(),
    ]
}

/// # Safety
/// `program` must be a live NVRTC program.
unsafe fn read_log(program: nvrtc_sys::nvrtcProgram) -> String {
    match nvrtc_result::get_program_log(program) {
        Ok(log) => {
            let bytes: Vec<u8> = log
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(error) => format!("(no log: {error:?})"),
    }
}

/// # Safety
/// `program` must be a live, successfully compiled NVRTC program.
unsafe fn read_cubin(
    program: nvrtc_sys::nvrtcProgram,
) -> Result<Vec<u8>, nvrtc_result::NvrtcError> {
    let mut size = 0usize;
    nvrtc_sys::nvrtcGetCUBINSize(program, &mut size).result()?;
    let mut cubin = vec![0u8; size];
    nvrtc_sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast()).result()?;
    Ok(cubin)
}

/// Each diagnostic line of the form `name.cu(LINE): …` followed by that line of the source.
fn annotate_diagnostics(log: &str, source: &str) -> String {
    let source_lines: Vec<&str> = source.lines().collect();
    let mut annotated = String::new();
    for line in log.lines() {
        annotated.push_str(line);
        annotated.push('\n');
        let line_number = line
            .split_once(".cu(")
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(number, _)| number.parse::<usize>().ok());
        if let Some(text) = line_number.and_then(|n| source_lines.get(n.wrapping_sub(1))) {
            annotated.push_str(&format!("    | {}\n", text.trim_end()));
        }
    }
    annotated.trim_end().to_string()
}

/// An on-disk cache of compiled modules.
#[derive(Clone, Debug)]
pub struct KernelCache {
    directory: PathBuf,
}

impl KernelCache {
    /// The cache in `directory` (created when first written).
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        KernelCache {
            directory: directory.into(),
        }
    }

    /// `ANYBIT_CACHE_DIR` if set, else `<user cache dir>/anybit/kernels` (e.g.
    /// `~/.cache/anybit/kernels`), else `.cache/anybit-kernels` in the current folder.
    pub fn default_location() -> Self {
        let directory = match std::env::var_os("ANYBIT_CACHE_DIR") {
            Some(value) if !value.is_empty() => PathBuf::from(value),
            _ => dirs::cache_dir()
                .map(|cache| cache.join("anybit").join("kernels"))
                .unwrap_or_else(|| PathBuf::from(".cache/anybit-kernels")),
        };
        KernelCache::new(directory)
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    /// The compiled module for `source`, from the cache or freshly compiled (and then stored).
    pub fn compile(
        &self,
        source: &str,
        name: &str,
        target: Target,
    ) -> Result<CompiledModule, CompileError> {
        let key = self.key(source, target)?;
        let cubin_path = self.directory.join(format!("{key}.cubin"));
        let ptx_path = self.directory.join(format!("{key}.ptx"));
        if let (Ok(cubin), Ok(ptx)) = (
            std::fs::read(&cubin_path),
            std::fs::read_to_string(&ptx_path),
        ) {
            return Ok(CompiledModule {
                target,
                ptx,
                cubin,
                log: String::new(),
            });
        }
        let module = compile(source, name, target)?;
        self.store(&ptx_path, module.ptx.as_bytes())?;
        // The cubin is written last: its presence means the entry is complete.
        self.store(&cubin_path, &module.cubin)?;
        Ok(module)
    }

    /// Hex SHA-256 of everything that determines the output.
    fn key(&self, source: &str, target: Target) -> Result<String, CompileError> {
        let toolkit = load_nvrtc()?;
        let (major, minor) = nvrtc_version()?;
        let mut hasher = Sha256::new();
        hasher.update(format!("nvrtc {major}.{minor}\n"));
        for option in compile_options(target, &toolkit.include_dir) {
            hasher.update(option);
            hasher.update("\n");
        }
        hasher.update(source);
        Ok(hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect())
    }

    fn store(&self, path: &Path, contents: &[u8]) -> Result<(), CompileError> {
        let cache_error = |reason: std::io::Error| CompileError::Cache {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        std::fs::create_dir_all(&self.directory).map_err(cache_error)?;
        let unique = format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let temporary = path.with_extension(unique.replace(['(', ')'], ""));
        std::fs::write(&temporary, contents).map_err(cache_error)?;
        std::fs::rename(&temporary, path).map_err(cache_error)
    }
}
