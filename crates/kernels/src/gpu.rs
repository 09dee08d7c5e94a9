//! Running the kernels on a GPU: prepared weights in device memory, kernels generated, compiled
//! (through the on-disk cache) and loaded once, launches checked before they happen.
//!
//! What this module promises: [`Matmul::run`] refuses, before any launch, a token count the
//! kernel does not take, an activation type the weight was not prepared for and every buffer
//! shorter than what the kernel reads or writes; errors name the problem and the valid choices.

use std::collections::HashMap;

use anybit_cuda::{
    generate, BufferCheckError, CodegenError, CompileError, DeviceBuffer, GeneratedKernel, Gpu,
    Kernel, KernelArgument, KernelCache, Launch, RuntimeError,
};
use anybit_vm::VerifyError;

use crate::decode::{DecodeKernel, DecodeSchedule};
use crate::format::{Activation, QuantFormat};
use crate::tuning::{schedule_from, DeviceKey, TuningCache, TuningTable};
use crate::weight::PreparedWeight;

/// A product that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatmulError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The kernel's program does not verify (a bug of the schedule that built it).
    #[error("verifying `{kernel}`: {error}")]
    Verify { kernel: String, error: VerifyError },
    #[error("generating `{kernel}`: {error}")]
    Codegen { kernel: String, error: CodegenError },
    #[error("{m} tokens: the kernel `{kernel}` takes 1 to {max}")]
    Tokens {
        m: usize,
        max: usize,
        kernel: String,
    },
    #[error("{what} holds {found} bytes, but {needed} are needed ({detail})")]
    BufferTooSmall {
        what: &'static str,
        found: usize,
        needed: usize,
        detail: String,
    },
    #[error("the kernel is for a {kernel} weight, and this weight is {weight}")]
    WrongWeight {
        kernel: QuantFormat,
        weight: QuantFormat,
    },
    #[error(transparent)]
    Buffers(#[from] BufferCheckError),
    #[error("the kernel {what}, and the call {call}")]
    Mismatch { what: String, call: String },
}

/// The CUDA of `spec` for `target`: its program, verified once and generated.
fn generate_kernel(
    spec: &DecodeKernel,
    target: anybit_cuda::Target,
) -> Result<anybit_cuda::GeneratedKernel, MatmulError> {
    let program = spec.program().program;
    let verified = anybit_vm::verify(&program).map_err(|error| MatmulError::Verify {
        kernel: spec.name(),
        error,
    })?;
    generate(&verified, target).map_err(|error| MatmulError::Codegen {
        kernel: spec.name(),
        error,
    })
}

/// A prepared weight in device memory.
pub struct DeviceWeight {
    pub format: QuantFormat,
    pub n: usize,
    pub k: usize,
    pub scale_dtype: anybit_dtype::DType,
    pub codes: DeviceBuffer,
    pub scales: DeviceBuffer,
    pub zeros: Option<DeviceBuffer>,
}

impl DeviceWeight {
    /// Copies a prepared weight to the GPU.
    pub fn upload(gpu: &Gpu, weight: &PreparedWeight) -> Result<DeviceWeight, MatmulError> {
        Ok(DeviceWeight {
            format: weight.format,
            n: weight.n,
            k: weight.k,
            scale_dtype: weight.scale_dtype,
            codes: gpu.upload(&weight.codes)?,
            scales: gpu.upload(&weight.scales)?,
            zeros: weight
                .zeros
                .as_ref()
                .map(|zeros| gpu.upload(zeros))
                .transpose()?,
        })
    }

    /// Bytes a product reads from the weight: codes, scales and zero points.
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.len() + self.zeros.as_ref().map_or(0, DeviceBuffer::len)
    }
}

/// Kernels loaded on one GPU, by name.
pub struct Matmul<'g> {
    gpu: &'g Gpu,
    cache: KernelCache,
    /// Loaded kernels by name, with what generation said about them (dynamic shared memory,
    /// the views the launch check reads).
    kernels: HashMap<String, (Kernel, GeneratedKernel)>,
    /// The tuning cache's entries for this GPU, read on first use.
    tuned: Option<TuningTable>,
}

/// One launch, ready to enqueue or time.
pub struct Prepared<'a> {
    pub launch: Launch,
    pub arguments: Vec<KernelArgument<'a>>,
}

impl<'g> Matmul<'g> {
    /// Kernels for `gpu`, compiled through the default kernel cache.
    pub fn new(gpu: &'g Gpu) -> Matmul<'g> {
        Matmul {
            gpu,
            cache: KernelCache::default_location(),
            kernels: HashMap::new(),
            tuned: None,
        }
    }

    /// The schedule the library launches for `m` tokens and an `[n, k]` weight: the tuning
    /// cache's entry for this GPU, driver and library version where `anybit bench matmul
    /// --tune` made one, else [`DecodeSchedule::heuristic`]. An unreadable cache counts as empty
    /// (tuning reports and replaces it).
    pub fn schedule_for(
        &mut self,
        format: QuantFormat,
        activation: Activation,
        scale_dtype: anybit_dtype::DType,
        n: usize,
        k: usize,
        m: usize,
    ) -> DecodeSchedule {
        let gpu = self.gpu;
        let tuned = self.tuned.get_or_insert_with(|| {
            TuningCache::default_location()
                .load(&DeviceKey::of(gpu))
                .unwrap_or_default()
        });
        schedule_from(tuned, format, activation, scale_dtype, n, k, m)
    }

    /// Generates and compiles `specs` into the kernel cache on `threads` threads (NVRTC runs
    /// in parallel), so that the loads that follow only read the cache.
    pub fn precompile(&self, specs: &[DecodeKernel], threads: usize) -> Result<(), MatmulError> {
        let target = self.gpu.target();
        let cache = &self.cache;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<(), MatmulError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| -> Result<(), MatmulError> {
                        loop {
                            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(spec) = specs.get(index) else {
                                return Ok(());
                            };
                            let generated = generate_kernel(spec, target)?;
                            cache.compile(&generated.source, &generated.name, target)?;
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|worker| {
                    worker.join().unwrap_or_else(|_| {
                        Err(MatmulError::Mismatch {
                            what: "compiles in worker threads".into(),
                            call: "a worker panicked".into(),
                        })
                    })
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// Generates, compiles and loads `spec` (once).
    pub fn load(&mut self, spec: &DecodeKernel) -> Result<&Kernel, MatmulError> {
        let name = spec.name();
        if !self.kernels.contains_key(&name) {
            let generated = generate_kernel(spec, self.gpu.target())?;
            let module =
                self.cache
                    .compile(&generated.source, &generated.name, self.gpu.target())?;
            let kernel = self.gpu.load(&module, &generated.name)?;
            self.kernels.insert(name.clone(), (kernel, generated));
        }
        Ok(&self.kernels[&name].0)
    }

    /// Checks a product and returns its launch: `x` is `[m, k]`, `y` is `[m, n]`, both of the
    /// kernel's activation type; `bias` is `[n]`.
    pub fn prepare<'a>(
        &mut self,
        spec: &DecodeKernel,
        x: &'a DeviceBuffer,
        m: usize,
        weight: &'a DeviceWeight,
        bias: Option<&'a DeviceBuffer>,
        y: &'a DeviceBuffer,
    ) -> Result<Prepared<'a>, MatmulError> {
        if spec.format != weight.format {
            return Err(MatmulError::WrongWeight {
                kernel: spec.format,
                weight: weight.format,
            });
        }
        if spec.scale_dtype != weight.scale_dtype {
            return Err(MatmulError::Mismatch {
                what: format!("reads {} scales", spec.scale_dtype),
                call: format!("passes {} scales", weight.scale_dtype),
            });
        }
        if spec.bias != bias.is_some() {
            return Err(MatmulError::Mismatch {
                what: format!("{} a bias", if spec.bias { "takes" } else { "takes no" }),
                call: format!(
                    "{} one",
                    if bias.is_some() {
                        "passes"
                    } else {
                        "passes no"
                    }
                ),
            });
        }
        let max = spec.schedule.max_tokens();
        if m == 0 || m > max {
            return Err(MatmulError::Tokens {
                m,
                max,
                kernel: spec.name(),
            });
        }
        let (n, k) = (weight.n, weight.k);
        let act_bytes = 2;
        let check = |what, buffer: &DeviceBuffer, needed: usize, detail: String| {
            if buffer.len() < needed {
                Err(MatmulError::BufferTooSmall {
                    what,
                    found: buffer.len(),
                    needed,
                    detail,
                })
            } else {
                Ok(())
            }
        };
        check(
            "x",
            x,
            m * k * act_bytes,
            format!("[{m}, {k}] {}", spec.activation),
        )?;
        check(
            "y",
            y,
            m * n * act_bytes,
            format!("[{m}, {n}] {}", spec.activation),
        )?;
        if let Some(bias) = bias {
            check(
                "bias",
                bias,
                n * act_bytes,
                format!("[{n}] {}", spec.activation),
            )?;
        }
        let rows = spec.schedule.block_rows();
        let blocks = n.div_ceil(rows) as u32;
        let threads = spec.schedule.threads() as u32;
        self.load(spec)?;
        let generated = &self.kernels[&spec.name()].1;
        let dynamic_shared_bytes = generated.dynamic_shared_bytes as u32;
        let mut arguments = vec![
            KernelArgument::Buffer(x),
            KernelArgument::Buffer(&weight.codes),
            KernelArgument::Buffer(&weight.scales),
        ];
        if let Some(zeros) = &weight.zeros {
            arguments.push(KernelArgument::Buffer(zeros));
        }
        if let Some(bias) = bias {
            arguments.push(KernelArgument::Buffer(bias));
        }
        arguments.push(KernelArgument::Buffer(y));
        arguments.extend([
            KernelArgument::I32(m as i32),
            KernelArgument::I32(n as i32),
            KernelArgument::I32(k as i32),
        ]);
        // The check every launch makes: no view of the program reaches past a buffer.
        let lengths: Vec<usize> = arguments
            .iter()
            .filter_map(|argument| match argument {
                KernelArgument::Buffer(buffer) => Some(buffer.len()),
                KernelArgument::I32(_) => None,
            })
            .collect();
        generated.check_buffers(&[m as i32, n as i32, k as i32], &lengths)?;
        Ok(Prepared {
            launch: Launch {
                grid: [blocks, 1, 1],
                block: [threads, 1, 1],
                dynamic_shared_bytes,
            },
            arguments,
        })
    }

    /// Runs one product and waits for it.
    pub fn run(
        &mut self,
        spec: &DecodeKernel,
        x: &DeviceBuffer,
        m: usize,
        weight: &DeviceWeight,
        bias: Option<&DeviceBuffer>,
        y: &DeviceBuffer,
    ) -> Result<(), MatmulError> {
        let prepared = self.prepare(spec, x, m, weight, bias, y)?;
        let gpu = self.gpu;
        let kernel = self.load(spec)?;
        gpu.launch(kernel, prepared.launch, &prepared.arguments)?;
        Ok(())
    }

    /// Median time in milliseconds of `repeats` launches after `warmup`, with `between` run
    /// (untimed) before each (to flush L2).
    #[allow(clippy::too_many_arguments)]
    pub fn time(
        &mut self,
        spec: &DecodeKernel,
        x: &DeviceBuffer,
        m: usize,
        weight: &DeviceWeight,
        bias: Option<&DeviceBuffer>,
        y: &DeviceBuffer,
        warmup: usize,
        repeats: usize,
        between: impl FnMut() -> Result<(), RuntimeError>,
    ) -> Result<f64, MatmulError> {
        let prepared = self.prepare(spec, x, m, weight, bias, y)?;
        let gpu = self.gpu;
        let kernel = self.load(spec)?;
        Ok(gpu.time(
            kernel,
            prepared.launch,
            &prepared.arguments,
            warmup,
            repeats,
            between,
        )?)
    }
}
