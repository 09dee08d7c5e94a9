//! What the CUDA driver reports: its version and the GPUs, without ever panicking when there is
//! no driver (`cudarc` would panic on first use, so its presence is checked first).

use cudarc::driver::{result, sys};

/// One GPU as the driver describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    pub ordinal: i32,
    pub name: String,
    /// (major, minor), e.g. (9, 0) for an H100.
    pub compute_capability: (i32, i32),
    pub memory_bytes: usize,
}

/// The state of the CUDA driver on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverStatus {
    /// `libcuda.so` could not be loaded: no NVIDIA driver is installed.
    NotInstalled,
    /// The driver loaded but failed (for example no device, or a driver/kernel mismatch).
    Failed(String),
    /// The driver works; `version` is the CUDA version it supports, e.g. (13, 0).
    Available {
        version: (i32, i32),
        gpus: Vec<GpuInfo>,
    },
}

/// Asks the driver for its version and GPUs.
pub fn probe_driver() -> DriverStatus {
    // SAFETY: only tries to open the library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return DriverStatus::NotInstalled;
    }
    match query_driver() {
        Ok((version, gpus)) => DriverStatus::Available { version, gpus },
        Err(error) => DriverStatus::Failed(error.to_string()),
    }
}

type DriverReport = ((i32, i32), Vec<GpuInfo>);

fn query_driver() -> Result<DriverReport, result::DriverError> {
    result::init()?;
    let mut version = 0;
    // SAFETY: a valid out-pointer; the driver is initialised.
    unsafe { sys::cuDriverGetVersion(&mut version).result()? };
    let count = result::device::get_count()?;
    let mut gpus = Vec::new();
    for ordinal in 0..count {
        let device = result::device::get(ordinal)?;
        let attribute = |attribute| {
            // SAFETY: `device` came from `device::get`.
            unsafe { result::device::get_attribute(device, attribute) }
        };
        gpus.push(GpuInfo {
            ordinal,
            name: result::device::get_name(device)?,
            compute_capability: (
                attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            // SAFETY: `device` came from `device::get`.
            memory_bytes: unsafe { result::device::total_mem(device)? },
        });
    }
    Ok(((version / 1000, (version % 1000) / 10), gpus))
}
