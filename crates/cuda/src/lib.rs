//! anybit's CUDA backend: finding the toolkit (NVRTC and headers), compiling CUDA C++ to PTX and
//! cubin with an on-disk cache, and asking the driver what GPUs there are. Everything works, and
//! fails with clear errors, on machines without CUDA: libraries are loaded at run time, never
//! linked.

pub mod codegen;
mod compile;
mod driver;
mod nvrtc;
mod runtime;
mod sass;
mod target;
mod toolkit;

pub use codegen::{
    generate, BufferCheckError, CodegenError, GeneratedKernel, KernelParam, KernelParamKind,
};
pub use compile::{compile, CompileError, CompiledModule, KernelCache};
pub use driver::{probe_driver, DriverStatus, GpuInfo};
pub use nvrtc::{load_nvrtc, nvrtc_version, NvrtcError};
pub use runtime::{DeviceBuffer, Gpu, Kernel, KernelArgument, Launch, RuntimeError};
pub use sass::{disassemble, sass_by_function, SassError};
pub use target::{ParseTargetError, Target};
pub use toolkit::{
    add_python_site_packages, locate_toolkit, Toolkit, ToolkitError, NVRTC_LIBRARY, PROJECT_CACHE,
};
