//! Running cases on a GPU with generated code, for comparison with the interpreter.

use std::collections::HashMap;

use anybit_cuda::codegen::{generate, CodegenError, GeneratedKernel, GridError};
use anybit_cuda::{
    BufferCheckError, CompileError, DeviceBuffer, Gpu, Kernel, KernelArgument, KernelCache, Launch,
    RuntimeError,
};

use anybit_vm::VerifyError;

use crate::cases::{Case, Value};

/// A case could not be run on the GPU.
#[derive(Debug, thiserror::Error)]
pub enum GpuCaseError {
    /// The case's program does not verify, so it cannot be generated.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error(transparent)]
    Buffers(#[from] BufferCheckError),
    /// The kernel changed bytes of the padding after a buffer (see [`GpuRunner::run`]).
    #[error("the kernel wrote past the end of buffer argument {position}")]
    WrotePastTheEnd { position: usize },
}

/// Buffers are uploaded padded to whole 32-bit words: generated code writes sub-byte elements
/// with 32-bit atomics on the words that hold them (docs/codegen.md), which reach past the end
/// of a buffer whose size is no multiple of 4 bytes (without changing those bytes). The cuda
/// crate's GPU tests pad the same way; the padding must come back unchanged.
const PADDING_WORD: usize = 4;
/// What the padding is filled with.
const PADDING_BYTE: u8 = 0xa5;

fn padded(bytes: &[u8]) -> Vec<u8> {
    let mut padded = bytes.to_vec();
    padded.resize(
        bytes.len().max(1).next_multiple_of(PADDING_WORD),
        PADDING_BYTE,
    );
    padded
}

/// A GPU with a cache of compiled kernels (by program text).
pub struct GpuRunner {
    gpu: Gpu,
    cache: KernelCache,
    kernels: HashMap<String, (GeneratedKernel, Kernel)>,
}

impl GpuRunner {
    /// Opens GPU 0; kernels are cached on disk in `cache`.
    pub fn new(cache: KernelCache) -> Result<GpuRunner, RuntimeError> {
        Ok(GpuRunner {
            gpu: Gpu::open(0)?,
            cache,
            kernels: HashMap::new(),
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The generated kernel of a case (generating and compiling it on first use).
    pub fn generated(&mut self, case: &Case) -> Result<&GeneratedKernel, GpuCaseError> {
        Ok(&self.kernel(case)?.0)
    }

    fn kernel(&mut self, case: &Case) -> Result<&(GeneratedKernel, Kernel), GpuCaseError> {
        let key = anybit_vm::print(&case.program);
        if !self.kernels.contains_key(&key) {
            let generated = generate(&anybit_vm::verify(&case.program)?, self.gpu.target())?;
            let module =
                self.cache
                    .compile(&generated.source, &generated.name, self.gpu.target())?;
            let kernel = self.gpu.load(&module, &generated.name)?;
            self.kernels.insert(key.clone(), (generated, kernel));
        }
        Ok(&self.kernels[&key])
    }

    /// Runs a case with every output buffer filled with `poison`; returns the outputs in
    /// [`Case::outputs`] order. Buffers are padded to whole 32-bit words (see [`PADDING_WORD`]);
    /// a kernel that changes the padding fails the run.
    pub fn run(&mut self, case: &Case, poison: u8) -> Result<Vec<Vec<u8>>, GpuCaseError> {
        let values = case.with_poison(poison);
        self.kernel(case)?;
        let (generated, kernel) = &self.kernels[&anybit_vm::print(&case.program)];
        let buffers: Vec<Option<DeviceBuffer>> = values
            .iter()
            .map(|value| match value {
                Value::Buffer(bytes) => self.gpu.upload(&padded(bytes)).map(Some),
                Value::I32(_) => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        let arguments: Vec<KernelArgument<'_>> = values
            .iter()
            .zip(&buffers)
            .map(|(value, buffer)| match (value, buffer) {
                (_, Some(buffer)) => KernelArgument::Buffer(buffer),
                (Value::I32(number), None) => KernelArgument::I32(*number),
                (Value::Buffer(_), None) => unreachable!("every buffer was uploaded"),
            })
            .collect();
        let ints: Vec<i32> = values
            .iter()
            .filter_map(|value| match value {
                Value::I32(number) => Some(*number),
                Value::Buffer(_) => None,
            })
            .collect();
        // The buffers as the case made them (without the padding) must hold what the views
        // reach: the same check every launch of the project makes.
        let lengths: Vec<usize> = values
            .iter()
            .filter_map(|value| match value {
                Value::Buffer(bytes) => Some(bytes.len()),
                Value::I32(_) => None,
            })
            .collect();
        generated.check_buffers(&ints, &lengths)?;
        let launch = Launch {
            grid: generated.grid(&ints)?,
            block: [generated.threads, 1, 1],
            dynamic_shared_bytes: generated.dynamic_shared_bytes as u32,
        };
        self.gpu.launch(kernel, launch, &arguments)?;
        case.outputs
            .iter()
            .map(|&(index, _)| {
                let buffer = buffers[index].as_ref().expect("outputs are buffers");
                let mut bytes = self.gpu.download(buffer)?;
                let length = match &values[index] {
                    Value::Buffer(original) => original.len(),
                    Value::I32(_) => 0,
                };
                if bytes[length.min(bytes.len())..]
                    .iter()
                    .any(|&byte| byte != PADDING_BYTE)
                {
                    return Err(GpuCaseError::WrotePastTheEnd { position: index });
                }
                bytes.truncate(length);
                Ok(bytes)
            })
            .collect()
    }
}

impl GpuRunner {
    /// Generates and compiles every distinct program of `cases` on all CPU cores, and loads the
    /// kernels. A program that fails here is reported again by [`GpuRunner::run`].
    pub fn prepare(&mut self, cases: &[Case]) {
        let mut pending: Vec<(String, &Case)> = Vec::new();
        for case in cases {
            let key = anybit_vm::print(&case.program);
            if !self.kernels.contains_key(&key) && !pending.iter().any(|(k, _)| *k == key) {
                pending.push((key, case));
            }
        }
        let target = self.gpu.target();
        let workers = std::thread::available_parallelism().map_or(4, |n| n.get());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let cache = &self.cache;
        let compiled: Vec<(usize, GeneratedKernel, anybit_cuda::CompiledModule)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut done = Vec::new();
                            loop {
                                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some((_, case)) = pending.get(index) else {
                                    return done;
                                };
                                let Ok(verified) = anybit_vm::verify(&case.program) else {
                                    continue;
                                };
                                let Ok(generated) = generate(&verified, target) else {
                                    continue;
                                };
                                if let Ok(module) =
                                    cache.compile(&generated.source, &generated.name, target)
                                {
                                    done.push((index, generated, module));
                                }
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|handle| handle.join().unwrap_or_default())
                    .collect()
            });
        for (index, generated, module) in compiled {
            if let Ok(kernel) = self.gpu.load(&module, &generated.name) {
                self.kernels
                    .insert(pending[index].0.clone(), (generated, kernel));
            }
        }
    }

    /// Number of kernels compiled and loaded so far.
    pub fn kernel_count(&self) -> usize {
        self.kernels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_padded_to_whole_words() {
        for (length, padded_length) in [(0, 4), (1, 4), (4, 4), (5, 8), (9, 12)] {
            let bytes: Vec<u8> = (0..length as u8).collect();
            let padded = padded(&bytes);
            assert_eq!(padded.len(), padded_length);
            assert_eq!(&padded[..length], &bytes[..]);
            assert!(padded[length..].iter().all(|&byte| byte == PADDING_BYTE));
        }
    }
}
