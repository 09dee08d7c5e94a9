//! Products on memory and streams the caller owns: the entry point of a serving stack (the
//! PyTorch extension uses it with `tensor.data_ptr()` and
//! `torch.cuda.current_stream().cuda_stream`).
//!
//! [`matmul_on_stream`] enqueues `y = x · dequant(W)ᵀ (+ bias)` on a raw `CUstream` in the
//! primary context of the device, without synchronising and without allocating: the kernels
//! are the decode kernels of [`crate::decode`], with the schedule the tuning cache holds for
//! the device and product ([`crate::tuning`], read once per process and device) or else
//! [`DecodeSchedule::heuristic`] ([`plan`] shows the heuristic's);
//! an M above what they take ([`MAX_TOKENS_PER_LAUNCH`]) is split into launches of at most
//! that many tokens (rows of `x` and `y`), each with the kernel for its own token count, on the
//! same stream. Every kernel is generated and compiled once (through the on-disk
//! [`KernelCache`]) and loaded once per process and device, into a cache shared by all threads.
//!
//! What this module promises:
//! - Everything is checked before anything is enqueued ([`plan`] does it and needs no GPU): the
//!   activation and scale types, the format and shape ([`QuantFormat::check`]), the token
//!   count, null pointers, pointers not aligned to 16 bytes, zero points and bias given or not
//!   as the format says, and the buffer lengths the shapes imply against every extent the
//!   kernel's views reach ([`GeneratedKernel::check_buffers`]). Errors name the problem and
//!   the valid choices.
//! - Nothing waits for the GPU: a fault of a kernel surfaces at the caller's next
//!   synchronisation of the stream.
//! - The calling thread's current CUDA context is the same after a call as before it.
//!
//! The safety contract of the raw pointers is on [`matmul_on_stream`].

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

use anybit_cuda::{
    generate, probe_driver, BufferCheckError, CodegenError, CompileError, DriverStatus,
    GeneratedKernel, KernelCache, RuntimeError, Target,
};
use anybit_dtype::DType;
use anybit_vm::VerifyError;
use cudarc::driver::{result, sys, CudaContext, CudaFunction, DriverError};
use cudarc::nvrtc::Ptx;

use crate::decode::{DecodeKernel, DecodeSchedule};
use crate::format::{Activation, FormatError, QuantFormat, ZeroPoints};
use crate::prepared::{FragmentLayout, GroupLayout};
use crate::tuning::{schedule_from, DeviceKey, TuningCache, TuningTable};

/// The most tokens one decode kernel takes (8 token tiles of 8); larger M is split.
pub const MAX_TOKENS_PER_LAUNCH: usize = 64;

/// The largest M a call takes (the kernels' integer arguments are 32-bit).
pub const MAX_TOKENS: usize = i32::MAX as usize;

/// The alignment every pointer must have, in bytes (the kernels load 16 bytes at a time).
pub const POINTER_ALIGNMENT: u64 = 16;

/// A prepared weight (see [`crate::prepared`]) in device memory the caller owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightPointers {
    pub format: QuantFormat,
    /// Rows of the weight: the output features.
    pub n: usize,
    /// Columns of the weight: the input features.
    pub k: usize,
    /// The type of the scales and zero points: f16, bf16 or f32.
    pub scale_dtype: DType,
    /// The prepared codes: [`FragmentLayout::bytes`] bytes.
    pub codes: u64,
    /// The prepared scales: [`GroupLayout::len`] values of `scale_dtype`.
    pub scales: u64,
    /// The prepared zero points, when the format has them (as many values as scales).
    pub zeros: Option<u64>,
}

/// Activations of one product in device memory the caller owns: `x` is `[m, k]` and `y` is
/// `[m, n]`, both row-major and contiguous, of type `activation`; `bias` is `[n]` of the same
/// type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActivationPointers {
    /// f16 or bf16.
    pub activation: DType,
    pub m: usize,
    pub x: u64,
    pub bias: Option<u64>,
    pub y: u64,
}

/// A product that cannot be launched.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("scales are stored as f16, bf16 or f32, not {0}")]
    ScaleType(DType),
    #[error("M = {m}: the number of tokens (rows of x) must be between 1 and {MAX_TOKENS}")]
    Tokens { m: usize },
    #[error("the pointer `{what}` is null")]
    Null { what: &'static str },
    #[error("the pointer `{what}` ({address:#x}) is not aligned to {POINTER_ALIGNMENT} bytes; pass the start of an allocation or an offset that is a multiple of {POINTER_ALIGNMENT} bytes")]
    Misaligned { what: &'static str, address: u64 },
    #[error("the format {0} has zero points, and no `zeros` pointer was given")]
    MissingZeros(QuantFormat),
    #[error("a `zeros` pointer was given, but the format {0} has no zero points")]
    UnexpectedZeros(QuantFormat),
    #[error("the buffers the shapes imply do not cover what `{kernel}` reads and writes: {error}")]
    Buffers {
        kernel: String,
        error: BufferCheckError,
    },
    /// The kernel's program does not verify (a bug of the schedule that built it).
    #[error("verifying `{kernel}`: {error}")]
    Verify { kernel: String, error: VerifyError },
    #[error("generating `{kernel}`: {error}")]
    Codegen { kernel: String, error: CodegenError },
    #[error(
        "the kernel `{kernel}` takes the parameters ({found}), but launches pass ({expected})"
    )]
    Parameters {
        kernel: String,
        found: String,
        expected: String,
    },
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

fn driver(call: &'static str) -> impl Fn(DriverError) -> LaunchError {
    move |error| {
        LaunchError::Runtime(RuntimeError::Call {
            call,
            error: format!("{error:?}"),
        })
    }
}

/// One launch of a product: its kernel and the rows of `x` and `y` it covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedLaunch {
    pub kernel: DecodeKernel,
    /// The first token (row of `x` and `y`) of this launch.
    pub first_token: usize,
    /// Its token count, 1 to [`MAX_TOKENS_PER_LAUNCH`].
    pub tokens: usize,
}

/// The buffer lengths in bytes, in the kernels' parameter order (`x`, codes, scales, zeros,
/// bias, `y`), that a product of `tokens` tokens reads and writes.
fn implied_lengths(weight: &WeightPointers, tokens: usize, bias: bool) -> Vec<usize> {
    let codes = FragmentLayout::new(weight.format.weight, weight.n, weight.k);
    let groups = GroupLayout::new(&codes, weight.format.group.size(weight.k));
    let scale_bytes = (weight.scale_dtype.bits() / 8) as usize;
    let mut lengths = vec![
        tokens * weight.k * 2,
        codes.bytes(),
        groups.len() * scale_bytes,
    ];
    if weight.zeros.is_some() {
        lengths.push(groups.len() * scale_bytes);
    }
    if bias {
        lengths.push(weight.n * 2);
    }
    lengths.push(tokens * weight.n * 2);
    lengths
}

/// Checks a product and splits it into launches, without a GPU: every check of
/// [`matmul_on_stream`] but the ones against the kernel's views (which need the generated
/// kernel, see [`check_launch`]).
pub fn plan(
    weight: &WeightPointers,
    activations: &ActivationPointers,
) -> Result<Vec<PlannedLaunch>, LaunchError> {
    let activation = Activation::from_dtype(activations.activation)
        .ok_or(FormatError::ActivationType(activations.activation))?;
    weight.format.check(weight.n, weight.k)?;
    if !matches!(weight.scale_dtype, DType::F16 | DType::Bf16 | DType::F32) {
        return Err(LaunchError::ScaleType(weight.scale_dtype));
    }
    match (weight.format.zeros, weight.zeros) {
        (ZeroPoints::None, Some(_)) => return Err(LaunchError::UnexpectedZeros(weight.format)),
        (ZeroPoints::Codes | ZeroPoints::Scaled, None) => {
            return Err(LaunchError::MissingZeros(weight.format))
        }
        _ => {}
    }
    let m = activations.m;
    if m == 0 || m > MAX_TOKENS {
        return Err(LaunchError::Tokens { m });
    }
    let pointers = [
        ("x", Some(activations.x)),
        ("codes", Some(weight.codes)),
        ("scales", Some(weight.scales)),
        ("zeros", weight.zeros),
        ("bias", activations.bias),
        ("y", Some(activations.y)),
    ];
    for (what, pointer) in pointers {
        match pointer {
            Some(0) => return Err(LaunchError::Null { what }),
            Some(address) if !address.is_multiple_of(POINTER_ALIGNMENT) => {
                return Err(LaunchError::Misaligned { what, address })
            }
            _ => {}
        }
    }
    let mut launches = Vec::new();
    let mut first_token = 0;
    while first_token < m {
        let tokens = (m - first_token).min(MAX_TOKENS_PER_LAUNCH);
        let schedule =
            DecodeSchedule::heuristic(tokens, weight.n, weight.k, weight.format, activation);
        launches.push(PlannedLaunch {
            kernel: DecodeKernel {
                format: weight.format,
                activation,
                scale_dtype: weight.scale_dtype,
                bias: activations.bias.is_some(),
                schedule,
            },
            first_token,
            tokens,
        });
        first_token += tokens;
    }
    Ok(launches)
}

/// The parameter names launches pass, in order.
fn parameter_names(kernel: &DecodeKernel) -> Vec<&'static str> {
    let mut names = vec!["x", "w", "scales"];
    if kernel.format.zeros != ZeroPoints::None {
        names.push("zeros");
    }
    if kernel.bias {
        names.push("bias");
    }
    names.extend(["y", "m", "n", "k"]);
    names
}

/// The CUDA of `kernel` for `target`, its parameters checked against the order launches use.
pub fn generate_kernel(
    kernel: &DecodeKernel,
    target: Target,
) -> Result<GeneratedKernel, LaunchError> {
    let program = kernel.program().program;
    let verified = anybit_vm::verify(&program).map_err(|error| LaunchError::Verify {
        kernel: kernel.name(),
        error,
    })?;
    let generated = generate(&verified, target).map_err(|error| LaunchError::Codegen {
        kernel: kernel.name(),
        error,
    })?;
    let found: Vec<&str> = generated.params.iter().map(|p| p.name.as_str()).collect();
    let expected = parameter_names(kernel);
    if found != expected {
        return Err(LaunchError::Parameters {
            kernel: kernel.name(),
            found: found.join(", "),
            expected: expected.join(", "),
        });
    }
    Ok(generated)
}

/// Checks one planned launch against what its generated kernel reaches: the buffers the
/// shapes imply must cover every view.
pub fn check_launch(
    generated: &GeneratedKernel,
    launch: &PlannedLaunch,
    weight: &WeightPointers,
) -> Result<(), LaunchError> {
    let lengths = implied_lengths(weight, launch.tokens, launch.kernel.bias);
    let ints = [launch.tokens as i32, weight.n as i32, weight.k as i32];
    generated
        .check_buffers(&ints, &lengths)
        .map_err(|error| LaunchError::Buffers {
            kernel: launch.kernel.name(),
            error,
        })
}

/// A kernel loaded on one device.
struct LoadedKernel {
    function: CudaFunction,
    generated: GeneratedKernel,
}

/// What is loaded in this process: primary contexts by device ordinal, kernels by device and
/// options.
#[derive(Default)]
struct Loaded {
    contexts: HashMap<usize, (Arc<CudaContext>, Target)>,
    kernels: HashMap<(usize, DecodeKernel), Arc<LoadedKernel>>,
    /// The tuning cache's entries for each device (empty where it has none or is unreadable).
    tuned: HashMap<usize, TuningTable>,
}

fn loaded() -> &'static Mutex<Loaded> {
    static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();
    LOADED.get_or_init(|| Mutex::new(Loaded::default()))
}

/// Refuses to go on without a driver library (cudarc would panic at its first call).
fn require_driver() -> Result<(), LaunchError> {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the driver library by its usual names.
    if *PRESENT.get_or_init(|| unsafe { sys::is_culib_present() }) {
        Ok(())
    } else {
        Err(RuntimeError::NoDriver.into())
    }
}

/// Restores the calling thread's current context when dropped (cudarc binds its own).
struct CurrentContext(Option<sys::CUcontext>);

impl CurrentContext {
    fn save() -> Result<CurrentContext, LaunchError> {
        Ok(CurrentContext(
            result::ctx::get_current().map_err(driver("cuCtxGetCurrent"))?,
        ))
    }
}

impl Drop for CurrentContext {
    fn drop(&mut self) {
        if let Some(context) = self.0 {
            // SAFETY: `context` was current on this thread when the guard was made, and
            // contexts a caller has made current stay alive while it uses them.
            let _ = unsafe { result::ctx::set_current(context) };
        }
    }
}

impl Loaded {
    /// The primary context of `device` and the target its code is compiled for.
    fn context(&mut self, device: usize) -> Result<(Arc<CudaContext>, Target), LaunchError> {
        if let Some(found) = self.contexts.get(&device) {
            return Ok(found.clone());
        }
        let (version, gpus) = match probe_driver() {
            DriverStatus::NotInstalled => return Err(RuntimeError::NoDriver.into()),
            DriverStatus::Failed(reason) => return Err(RuntimeError::DriverFailed(reason).into()),
            DriverStatus::Available { version, gpus } => (version, gpus),
        };
        let info = gpus.get(device).ok_or(RuntimeError::NoGpu {
            ordinal: device,
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
        let context = CudaContext::new(device).map_err(driver("cuDevicePrimaryCtxRetain"))?;
        self.contexts.insert(device, (context.clone(), target));
        let key = DeviceKey::new(&info.name, info.compute_capability, version);
        let tuned = TuningCache::default_location()
            .load(&key)
            .unwrap_or_default();
        self.tuned.insert(device, tuned);
        Ok((context, target))
    }

    /// `launches` (the heuristic's, from [`plan`]) with the schedules the tuning cache holds for
    /// `device`.
    fn tune(
        &mut self,
        device: usize,
        weight: &WeightPointers,
        launches: &mut [PlannedLaunch],
    ) -> Result<(), LaunchError> {
        self.context(device)?;
        if let Some(table) = self.tuned.get(&device).filter(|table| !table.is_empty()) {
            for launch in launches {
                let kernel = &mut launch.kernel;
                kernel.schedule = schedule_from(
                    table,
                    weight.format,
                    kernel.activation,
                    weight.scale_dtype,
                    weight.n,
                    weight.k,
                    launch.tokens,
                );
            }
        }
        Ok(())
    }

    /// `kernel` loaded on `device`: generated, compiled through the kernel cache and loaded
    /// the first time, then reused.
    fn kernel(
        &mut self,
        device: usize,
        kernel: &DecodeKernel,
    ) -> Result<Arc<LoadedKernel>, LaunchError> {
        if let Some(found) = self.kernels.get(&(device, *kernel)) {
            return Ok(found.clone());
        }
        let (context, target) = self.context(device)?;
        let generated = generate_kernel(kernel, target)?;
        let module =
            KernelCache::default_location().compile(&generated.source, &generated.name, target)?;
        let module = context
            .load_module(Ptx::from_binary(module.cubin))
            .map_err(driver("cuModuleLoadData"))?;
        let function = module
            .load_function(&generated.name)
            .map_err(driver("cuModuleGetFunction"))?;
        if generated.dynamic_shared_bytes > 48 * 1024 {
            function
                .set_attribute(
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    generated.dynamic_shared_bytes as i32,
                )
                .map_err(driver("cuFuncSetAttribute"))?;
        }
        let loaded = Arc::new(LoadedKernel {
            function,
            generated,
        });
        self.kernels.insert((device, *kernel), loaded.clone());
        Ok(loaded)
    }

    /// `launches` given the tuning cache's schedules for `device`, and their kernels loaded
    /// there, each checked against its launch.
    fn load_checked(
        &mut self,
        device: usize,
        weight: &WeightPointers,
        launches: &mut [PlannedLaunch],
    ) -> Result<Vec<Arc<LoadedKernel>>, LaunchError> {
        self.tune(device, weight, launches)?;
        launches
            .iter()
            .map(|launch| {
                let kernel = self.kernel(device, &launch.kernel)?;
                check_launch(&kernel.generated, launch, weight)?;
                Ok(kernel)
            })
            .collect()
    }
}

/// Generates, compiles and loads on `device` every kernel a product of `activations.m`
/// tokens uses, without launching anything (so that a later call, for example inside CUDA
/// graph capture, only launches). Pointers are checked as by [`matmul_on_stream`] but never
/// read.
pub fn preload(
    device: usize,
    weight: &WeightPointers,
    activations: &ActivationPointers,
) -> Result<(), LaunchError> {
    let mut launches = plan(weight, activations)?;
    require_driver()?;
    let _restore = CurrentContext::save()?;
    let mut state = loaded().lock().unwrap_or_else(|poison| poison.into_inner());
    state.load_checked(device, weight, &mut launches)?;
    Ok(())
}

/// Enqueues `y = x · dequant(W)ᵀ (+ bias)` on `stream` in the primary context of GPU
/// `device`, and returns without waiting for it. The first call for a kernel generates,
/// compiles (or reads from the kernel cache) and loads it, which takes up to a few seconds
/// and must not happen during CUDA graph capture (call it once before, or [`preload`]).
///
/// # Safety
///
/// - Every pointer is a device address in `device`'s memory (or memory mapped into it) and
///   stays valid until the launches on `stream` have completed.
/// - The buffers hold at least what the shapes imply: `x` `[m, k]` and `y` `[m, n]` of the
///   activation type, `bias` `[n]` of it, and the prepared codes, scales and zero points of
///   `weight` (from [`crate::PreparedWeight`] for the same format, shape and scale type).
///   Lengths are not known here, so a shorter buffer is an out-of-bounds access.
/// - `y` does not overlap `x`, the weight or `bias`, and nothing else writes the buffers (or
///   reads `y`) until the launches have completed: the caller orders its other work on
///   `stream` or with events.
/// - `stream` is a valid stream of `device`'s primary context, or null for its legacy
///   default stream.
pub unsafe fn matmul_on_stream(
    device: usize,
    stream: *mut c_void,
    weight: &WeightPointers,
    activations: &ActivationPointers,
) -> Result<(), LaunchError> {
    let mut launches = plan(weight, activations)?;
    require_driver()?;
    let _restore = CurrentContext::save()?;
    let mut state = loaded().lock().unwrap_or_else(|poison| poison.into_inner());
    let kernels = state.load_checked(device, weight, &mut launches)?;
    let (context, _) = state.context(device)?;
    drop(state);
    context
        .bind_to_thread()
        .map_err(driver("cuCtxSetCurrent"))?;
    let activation_bytes = 2u64;
    for (launch, kernel) in launches.iter().zip(&kernels) {
        let first = launch.first_token as u64;
        let mut pointers: Vec<u64> = vec![
            activations.x + first * weight.k as u64 * activation_bytes,
            weight.codes,
            weight.scales,
        ];
        pointers.extend(weight.zeros);
        pointers.extend(activations.bias);
        pointers.push(activations.y + first * weight.n as u64 * activation_bytes);
        let mut ints = [launch.tokens as i32, weight.n as i32, weight.k as i32];
        let mut parameters: Vec<*mut c_void> = pointers
            .iter_mut()
            .map(|pointer| pointer as *mut u64 as *mut c_void)
            .chain(
                ints.iter_mut()
                    .map(|value| value as *mut i32 as *mut c_void),
            )
            .collect();
        let schedule = launch.kernel.schedule;
        let blocks = weight.n.div_ceil(schedule.block_rows()) as u32;
        // SAFETY: the function was loaded in this context, which is current; `parameters`
        // point at values in the kernel's parameter order (checked when it was generated) that
        // live until the call returns (the driver copies them); the buffers are the caller's
        // promise (see above) and cover the kernel's views (checked by `check_launch`).
        unsafe {
            result::launch_kernel(
                kernel.function.cu_function(),
                (blocks, 1, 1),
                (schedule.threads() as u32, 1, 1),
                kernel.generated.dynamic_shared_bytes as u32,
                stream as sys::CUstream,
                &mut parameters,
            )
        }
        .map_err(|error| {
            LaunchError::Runtime(RuntimeError::Call {
                call: "cuLaunchKernel",
                error: format!("{}: {error:?}", launch.kernel.name()),
            })
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Group;

    fn weight(format: QuantFormat, n: usize, k: usize) -> WeightPointers {
        WeightPointers {
            format,
            n,
            k,
            scale_dtype: DType::F16,
            codes: 0x1000,
            scales: 0x2000,
            zeros: (format.zeros != ZeroPoints::None).then_some(0x3000),
        }
    }

    fn activations(m: usize) -> ActivationPointers {
        ActivationPointers {
            activation: DType::F16,
            m,
            x: 0x4000,
            bias: None,
            y: 0x5000,
        }
    }

    fn u4() -> QuantFormat {
        QuantFormat {
            weight: DType::Unsigned(4),
            group: Group::Elements(128),
            zeros: ZeroPoints::Codes,
        }
    }

    #[test]
    fn large_m_is_split_into_launches_of_at_most_64_tokens() {
        let launches = plan(&weight(u4(), 256, 512), &activations(150)).expect("plans");
        let spans: Vec<(usize, usize)> = launches
            .iter()
            .map(|launch| (launch.first_token, launch.tokens))
            .collect();
        assert_eq!(spans, [(0, 64), (64, 64), (128, 22)]);
        assert_eq!(launches[0].kernel.schedule.max_tokens(), 64);
        assert_eq!(launches[2].kernel.schedule.max_tokens(), 32);
        let one = plan(&weight(u4(), 256, 512), &activations(1)).expect("plans");
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].kernel.schedule.max_tokens(), 8);
    }

    #[test]
    fn every_bad_input_is_named() {
        let good = weight(u4(), 256, 512);
        let error = |weight: WeightPointers, activations: ActivationPointers| {
            plan(&weight, &activations)
                .expect_err("refused")
                .to_string()
        };
        let text = error(
            good,
            ActivationPointers {
                activation: DType::F32,
                ..activations(1)
            },
        );
        assert!(
            text.contains("f32") && text.contains("f16 or bf16"),
            "{text}"
        );
        let text = error(weight(u4(), 256, 500), activations(1));
        assert!(
            text.contains("K = 500 is not a multiple of 16") && text.contains("groups of 128"),
            "{text}"
        );
        let text = error(weight(u4(), 0, 512), activations(1));
        assert!(text.contains("at least 1"), "{text}");
        let text = error(weight(u4(), 1 << 24, 512), activations(1));
        assert!(text.contains("below 2^24"), "{text}");
        let text = error(good, activations(0));
        assert!(
            text.contains("M = 0") && text.contains("between 1 and"),
            "{text}"
        );
        let text = error(
            WeightPointers {
                scale_dtype: DType::Unsigned(8),
                ..good
            },
            activations(1),
        );
        assert!(text.contains("f16, bf16 or f32, not u8"), "{text}");
        let text = error(WeightPointers { scales: 0, ..good }, activations(1));
        assert_eq!(text, "the pointer `scales` is null");
        let text = error(
            good,
            ActivationPointers {
                x: 0x4002,
                ..activations(1)
            },
        );
        assert!(
            text.contains("`x` (0x4002) is not aligned to 16 bytes"),
            "{text}"
        );
        let text = error(
            good,
            ActivationPointers {
                bias: Some(0x18),
                ..activations(1)
            },
        );
        assert!(text.contains("`bias` (0x18)"), "{text}");
        let text = error(
            WeightPointers {
                zeros: None,
                ..good
            },
            activations(1),
        );
        assert!(text.contains("has zero points"), "{text}");
        let symmetric = weight(
            QuantFormat::new(DType::Signed(4), Group::Elements(128)),
            8,
            128,
        );
        let text = error(
            WeightPointers {
                zeros: Some(0x3000),
                ..symmetric
            },
            activations(1),
        );
        assert!(text.contains("has no zero points"), "{text}");
        let text = error(
            weight(
                QuantFormat::new(DType::Signed(4), Group::Elements(48)),
                8,
                96,
            ),
            activations(1),
        );
        assert!(text.contains("group size 48"), "{text}");
    }

    #[test]
    fn implied_buffers_cover_every_view_of_the_kernels() {
        // Shapes that are not multiples of the tiles, with and without zeros and bias.
        for (format, n, k) in [
            (u4(), 200, 384),
            (
                QuantFormat::new(DType::Unsigned(3), Group::PerChannel),
                40,
                96,
            ),
            (
                QuantFormat::new("f6e3m2".parse().expect("a type"), Group::Elements(32)),
                24,
                64,
            ),
        ] {
            for m in [1, 7, 16, 64, 70] {
                for bias in [None, Some(0x6000)] {
                    let activations = ActivationPointers {
                        bias,
                        ..activations(m)
                    };
                    let weight = WeightPointers {
                        zeros: (format.zeros != ZeroPoints::None).then_some(0x3000),
                        ..weight(format, n, k)
                    };
                    for launch in plan(&weight, &activations).expect("plans") {
                        let generated =
                            generate_kernel(&launch.kernel, Target::Sm90a).expect("generates");
                        check_launch(&generated, &launch, &weight).expect("covered");
                    }
                }
            }
        }
    }

    #[test]
    fn a_buffer_shorter_than_the_views_is_refused() {
        let weight = weight(u4(), 64, 256);
        let launch = plan(&weight, &activations(8)).expect("plans").remove(0);
        let generated = generate_kernel(&launch.kernel, Target::Sm90a).expect("generates");
        check_launch(&generated, &launch, &weight).expect("8 tokens fit");
        // Buffers for 4 tokens with a launch of 8: `x` is the first too short.
        let lengths = implied_lengths(&weight, 4, false);
        let error = generated
            .check_buffers(&[8, 64, 256], &lengths)
            .expect_err("buffers for 4 tokens do not hold 8");
        assert!(
            error.to_string().starts_with("buffer `x` holds 2048 bytes"),
            "{error}"
        );
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if !matches!(probe_driver(), DriverStatus::NotInstalled) {
            return;
        }
        let weight = weight(u4(), 64, 256);
        let error = preload(0, &weight, &activations(1)).expect_err("no driver");
        assert_eq!(error, LaunchError::Runtime(RuntimeError::NoDriver));
        // SAFETY: nothing is launched: the call fails before it reaches the driver.
        let error = unsafe { matmul_on_stream(0, std::ptr::null_mut(), &weight, &activations(1)) }
            .expect_err("no driver");
        assert_eq!(error, LaunchError::Runtime(RuntimeError::NoDriver));
    }
}
