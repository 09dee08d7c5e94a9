//! Running compiled modules on a GPU: device buffers, copies, launches, event timing.
//!
//! Promises:
//! - [`Gpu::open`] returns [`RuntimeError::NoDriver`] / [`RuntimeError::NoGpu`] instead of
//!   panicking on a machine without CUDA.
//! - Every driver call is checked; a launch is followed by a stream synchronisation, so a kernel
//!   fault surfaces as the error of the launch that caused it.

use std::sync::Arc;

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::compile::CompiledModule;
use crate::driver::{probe_driver, DriverStatus, GpuInfo};
use crate::target::Target;

/// A GPU operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error("no CUDA driver on this machine (libcuda.so could not be loaded); GPU runs need an NVIDIA GPU and driver — use the CPU interpreter instead")]
    NoDriver,
    #[error("the CUDA driver failed: {0}")]
    DriverFailed(String),
    #[error("no GPU with ordinal {ordinal}: this machine has {count}")]
    NoGpu { ordinal: usize, count: usize },
    #[error("{name} (compute capability {major}.{minor}) is not supported; anybit targets compute capability 8.0, 8.6, 8.9 and 9.0")]
    UnsupportedGpu {
        name: String,
        major: i32,
        minor: i32,
    },
    #[error("{call} failed: {error}")]
    Call { call: &'static str, error: String },
    #[error("the module was compiled for {module} but the GPU needs {gpu}")]
    TargetMismatch { module: Target, gpu: Target },
    #[error(
        "shared memory request of {requested} bytes exceeds the GPU's {available} bytes per block"
    )]
    SharedMemory { requested: usize, available: usize },
}

fn call(call: &'static str) -> impl Fn(DriverError) -> RuntimeError {
    move |error| RuntimeError::Call {
        call,
        error: format!("{error:?}"),
    }
}

/// An open GPU with one stream.
pub struct Gpu {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: GpuInfo,
    target: Target,
}

/// Device memory holding raw bytes.
///
/// The allocation is rounded up to whole 32-bit words (zero-filled past `len`): a kernel stores
/// a sub-byte element by atomic operations on the word that holds it, which for the last
/// elements of a buffer whose length is not a multiple of 4 reach past its last byte.
pub struct DeviceBuffer {
    slice: CudaSlice<u8>,
    len: usize,
}

/// Bytes allocated for a buffer of `len` bytes: whole words, at least one.
fn allocated_bytes(len: usize) -> usize {
    len.max(1).next_multiple_of(4)
}

impl DeviceBuffer {
    /// The buffer's length in bytes (without the padding of its last word).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A kernel ready to launch.
pub struct Kernel {
    function: CudaFunction,
    _module: Arc<CudaModule>,
    name: String,
}

/// One kernel argument, in the order of the kernel's parameters.
pub enum KernelArgument<'a> {
    Buffer(&'a DeviceBuffer),
    I32(i32),
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
}

impl Gpu {
    /// Opens GPU `ordinal`.
    pub fn open(ordinal: usize) -> Result<Gpu, RuntimeError> {
        let gpus = match probe_driver() {
            DriverStatus::NotInstalled => return Err(RuntimeError::NoDriver),
            DriverStatus::Failed(reason) => return Err(RuntimeError::DriverFailed(reason)),
            DriverStatus::Available { gpus, .. } => gpus,
        };
        let info = gpus.get(ordinal).cloned().ok_or(RuntimeError::NoGpu {
            ordinal,
            count: gpus.len(),
        })?;
        let (major, minor) = info.compute_capability;
        let target = Target::for_compute_capability(major, minor).ok_or_else(|| {
            RuntimeError::UnsupportedGpu {
                name: info.name.clone(),
                major,
                minor,
            }
        })?;
        let context = CudaContext::new(ordinal).map_err(call("cuCtxCreate"))?;
        let stream = context.default_stream();
        Ok(Gpu {
            context,
            stream,
            info,
            target,
        })
    }

    pub fn info(&self) -> &GpuInfo {
        &self.info
    }

    /// The target code for this GPU must be compiled for.
    pub fn target(&self) -> Target {
        self.target
    }

    /// Copies bytes to a new device buffer.
    pub fn upload(&self, bytes: &[u8]) -> Result<DeviceBuffer, RuntimeError> {
        let mut buffer = self.alloc_zeroed(bytes.len())?;
        self.write(&mut buffer, bytes)?;
        Ok(buffer)
    }

    /// Copies a device buffer back.
    pub fn download(&self, buffer: &DeviceBuffer) -> Result<Vec<u8>, RuntimeError> {
        self.stream
            .clone_dtoh(&buffer.slice.slice(..buffer.len))
            .map_err(call("cuMemcpyDtoH"))
    }

    /// Overwrites a device buffer with `bytes`, which must be as long as the buffer.
    pub fn write(&self, buffer: &mut DeviceBuffer, bytes: &[u8]) -> Result<(), RuntimeError> {
        if bytes.len() != buffer.len {
            return Err(RuntimeError::Call {
                call: "cuMemcpyHtoD",
                error: format!(
                    "{} bytes cannot overwrite a buffer of {} bytes",
                    bytes.len(),
                    buffer.len
                ),
            });
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_htod(bytes, &mut buffer.slice.slice_mut(..buffer.len))
            .map_err(call("cuMemcpyHtoD"))
    }

    /// Loads `entry` from a module compiled for this GPU.
    pub fn load(&self, module: &CompiledModule, entry: &str) -> Result<Kernel, RuntimeError> {
        if module.target != self.target {
            return Err(RuntimeError::TargetMismatch {
                module: module.target,
                gpu: self.target,
            });
        }
        let loaded = self
            .context
            .load_module(Ptx::from_binary(module.cubin.clone()))
            .map_err(call("cuModuleLoadData"))?;
        let function = loaded
            .load_function(entry)
            .map_err(call("cuModuleGetFunction"))?;
        Ok(Kernel {
            function,
            _module: loaded,
            name: entry.to_string(),
        })
    }

    /// Launches a kernel and waits for it; errors of the kernel itself are reported here.
    pub fn launch(
        &self,
        kernel: &Kernel,
        launch: Launch,
        arguments: &[KernelArgument<'_>],
    ) -> Result<(), RuntimeError> {
        self.enqueue(kernel, launch, arguments)?;
        self.stream.synchronize().map_err(call("kernel execution"))
    }

    /// Median time of `repeats` launches in milliseconds, after `warmup` untimed launches, each
    /// timed with CUDA events. `between` runs before every launch (e.g. to flush L2) outside
    /// the timed region.
    pub fn time(
        &self,
        kernel: &Kernel,
        launch: Launch,
        arguments: &[KernelArgument<'_>],
        warmup: usize,
        repeats: usize,
        between: impl FnMut() -> Result<(), RuntimeError>,
    ) -> Result<f64, RuntimeError> {
        self.time_work(warmup, repeats, between, || {
            self.enqueue(kernel, launch, arguments)
        })
    }

    /// A new device buffer of `bytes` zero bytes.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<DeviceBuffer, RuntimeError> {
        let slice = self
            .stream
            .alloc_zeros::<u8>(allocated_bytes(bytes))
            .map_err(call("cuMemAlloc"))?;
        Ok(DeviceBuffer { slice, len: bytes })
    }

    /// Median time in milliseconds of `repeats` device-to-device copies of all of `source`
    /// into `destination` (which must be at least as long), after `warmup` untimed ones.
    pub fn time_copy(
        &self,
        source: &DeviceBuffer,
        destination: &mut DeviceBuffer,
        warmup: usize,
        repeats: usize,
    ) -> Result<f64, RuntimeError> {
        let bytes = source.len();
        if destination.len() < bytes {
            return Err(RuntimeError::Call {
                call: "cuMemcpyDtoD",
                error: format!(
                    "the destination holds {} bytes, fewer than the {bytes} to copy",
                    destination.len()
                ),
            });
        }
        let stream = &self.stream;
        let source = source.slice.slice(..bytes);
        let destination = std::cell::RefCell::new(destination.slice.slice_mut(..bytes));
        self.time_work(
            warmup,
            repeats,
            || Ok(()),
            || {
                stream
                    .memcpy_dtod(&source, &mut *destination.borrow_mut())
                    .map_err(call("cuMemcpyDtoD"))
            },
        )
    }

    /// Median of `repeats` event-timed runs of `work` (after `warmup` untimed ones), with
    /// `between` before each run, outside the timed region.
    fn time_work(
        &self,
        warmup: usize,
        repeats: usize,
        mut between: impl FnMut() -> Result<(), RuntimeError>,
        mut work: impl FnMut() -> Result<(), RuntimeError>,
    ) -> Result<f64, RuntimeError> {
        for _ in 0..warmup {
            between()?;
            work()?;
        }
        let mut times = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            between()?;
            let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
            let start = self
                .stream
                .record_event(timing)
                .map_err(call("cuEventRecord"))?;
            work()?;
            let end = self
                .stream
                .record_event(timing)
                .map_err(call("cuEventRecord"))?;
            end.synchronize().map_err(call("kernel execution"))?;
            times.push(start.elapsed_ms(&end).map_err(call("cuEventElapsedTime"))? as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times.get(times.len() / 2).copied().unwrap_or(f64::NAN))
    }

    /// Enqueues a launch without waiting for it (errors of the kernel itself surface at the next
    /// synchronisation).
    pub fn enqueue_launch(
        &self,
        kernel: &Kernel,
        launch: Launch,
        arguments: &[KernelArgument<'_>],
    ) -> Result<(), RuntimeError> {
        self.enqueue(kernel, launch, arguments)
    }

    fn enqueue(
        &self,
        kernel: &Kernel,
        launch: Launch,
        arguments: &[KernelArgument<'_>],
    ) -> Result<(), RuntimeError> {
        if launch.dynamic_shared_bytes > 48 * 1024 {
            kernel
                .function
                .set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    launch.dynamic_shared_bytes as i32,
                )
                .map_err(|_| RuntimeError::SharedMemory {
                    requested: launch.dynamic_shared_bytes as usize,
                    available: 227 * 1024,
                })?;
        }
        let mut builder = self.stream.launch_builder(&kernel.function);
        let values: Vec<i32> = arguments
            .iter()
            .map(|argument| match argument {
                KernelArgument::I32(value) => *value,
                KernelArgument::Buffer(_) => 0,
            })
            .collect();
        for (argument, value) in arguments.iter().zip(&values) {
            match argument {
                KernelArgument::Buffer(buffer) => builder.arg(&buffer.slice),
                KernelArgument::I32(_) => builder.arg(value),
            };
        }
        let config = LaunchConfig {
            grid_dim: (launch.grid[0], launch.grid[1], launch.grid[2]),
            block_dim: (launch.block[0], launch.block[1], launch.block[2]),
            shared_mem_bytes: launch.dynamic_shared_bytes,
        };
        // SAFETY: the caller passes arguments in the kernel's parameter order; buffers outlive
        // the launch because `launch` synchronises and `time` waits on its end event.
        unsafe { builder.launch(config) }
            .map(|_| ())
            .map_err(|error| RuntimeError::Call {
                call: "cuLaunchKernel",
                error: format!("{}: {error:?}", kernel.name),
            })
    }
}
