//! anybit's CUDA backend. So far: finding the toolkit (NVRTC and headers) and asking the driver
//! what GPUs there are. Everything works, and fails with clear errors, on machines without CUDA:
//! libraries are loaded at run time, never linked.

mod driver;
mod nvrtc;
mod toolkit;

pub use driver::{probe_driver, DriverStatus, GpuInfo};
pub use nvrtc::{load_nvrtc, nvrtc_version, NvrtcError};
pub use toolkit::{locate_toolkit, Toolkit, ToolkitError, NVRTC_LIBRARY, PROJECT_CACHE};
