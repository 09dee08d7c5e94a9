//! Code generation: a VM program → CUDA C++ with inline PTX, one kernel per program.
//!
//! What this module promises (`docs/codegen.md` explains how):
//! - [`generate`] takes a verified program ([`anybit_vm::Verified`], from [`anybit_vm::verify`])
//!   and uses what the verifier learned (result types, overwrites, operand maps) instead of
//!   checking names, spaces, shapes, dtypes and broadcasting again. It either returns a
//!   [`GeneratedKernel`] whose source NVRTC compiles for the target, or a [`CodegenError`] that
//!   names the statement (its span) and the reason: what only code generation can know (too
//!   much shared memory, facts it derives itself), or [`CodegenError::Internal`] where a fact
//!   the verifier guarantees does not hold (a bug). It never panics.
//! - The kernel computes what `docs/vm.md` says, for every instruction: every instruction has a
//!   generic lowering that is correct for any layout, and faster instructions (`mma.sync`,
//!   `ldmatrix`, `cp.async`, vector accesses, packed conversions) are used only where layout
//!   division and divisibility facts prove them equivalent.
//! - The output is deterministic and named after the program, so it can be golden-tested.
//!
//! Modules, from the top down (each imports only modules below it):
//! - `program`: the walk over the program's statements, one dispatch line per instruction;
//! - `lower`: one file per instruction family (`memory/`, `elementwise`, `dot`, `reduce`), each
//!   with its generic lowering and its fast paths;
//! - `emitter` (output, names, scopes, registers, shared memory) and `element` (compute kinds,
//!   decoding and encoding as C, literals);
//! - [`layout`] (register and shared layouts as index arithmetic), [`scalar`] (scalar
//!   expressions and divisibility facts), [`cast`] (fast conversion recipes that a host test
//!   checks for every code), [`prelude`] (fixed device helpers).

// `is_multiple_of` is newer than the workspace's minimum Rust version (1.85).
#![allow(clippy::manual_is_multiple_of)]

pub mod cast;
mod element;
mod emitter;
mod error;
pub mod extents;
pub(crate) mod layout;
mod lower;
pub mod prelude;
mod program;
pub(crate) mod scalar;

use anybit_dtype::DType;
use anybit_vm::{Expr, ParamKind, Verified};

use crate::target::Target;

pub use cast::{cast_test_program, reference_cast, FastCast, PlaneCast};
pub use emitter::{shared_memory_limit, STATIC_SHARED_LIMIT};
pub use error::{BufferCheckError, CodegenError, GridError};
pub use scalar::EvalError;

/// The kind of a kernel parameter, in launch order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelParamKind {
    /// A device pointer (`const u8*`-like, passed as a 64-bit address) to packed elements of
    /// this type. It must be aligned to 16 bytes (`cudaMalloc` gives 256).
    Pointer(DType),
    /// A 32-bit `int`, with its divisibility promise if any.
    Int { multiple_of: Option<u32> },
}

/// One kernel parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelParam {
    /// The program's name of the parameter.
    pub name: String,
    pub kind: KernelParamKind,
}

/// The result of [`generate`]: CUDA C++ source and what a launcher needs to run it.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedKernel {
    /// The `extern "C" __global__` function's name (the program's name).
    pub name: String,
    /// The complete CUDA C++ source (prelude + kernel).
    pub source: String,
    /// Parameters in launch order.
    pub params: Vec<KernelParam>,
    /// Threads per block (`blockDim.x`; y and z are 1).
    pub threads: u32,
    /// Shared memory declared in the source (≤ 48 KiB).
    pub static_shared_bytes: usize,
    /// Dynamic shared memory to pass at launch (used when the block needs more than 48 KiB;
    /// the launcher must then raise `cudaFuncAttributeMaxDynamicSharedMemorySize`).
    pub dynamic_shared_bytes: usize,
    /// The target the source was generated for.
    pub target: Target,
    /// What instruction selection chose, one line per decision (`line:column mnemonic: …`).
    pub selections: Vec<String>,
    grid: Vec<Expr>,
    views: Vec<extents::ViewExtent>,
}

impl GeneratedKernel {
    /// The kernel part of [`GeneratedKernel::source`], without the fixed prelude.
    pub fn kernel_source(&self) -> &str {
        self.source
            .strip_prefix(prelude::PRELUDE)
            .unwrap_or(&self.source)
    }

    /// The integer parameters, in order.
    pub fn int_params(&self) -> impl Iterator<Item = &KernelParam> {
        self.params
            .iter()
            .filter(|p| matches!(p.kind, KernelParamKind::Int { .. }))
    }

    /// Checks that every pointer argument's buffer holds what the program's views of it can
    /// reach for the integer arguments (`int_args` in parameter order, pointers skipped;
    /// `buffer_bytes` one length per pointer parameter, in order). Views that depend on a loop
    /// variable or a block index are not checked (`extents` module).
    pub fn check_buffers(
        &self,
        int_args: &[i32],
        buffer_bytes: &[usize],
    ) -> Result<(), BufferCheckError> {
        // Also checks the argument count and the `multiple_of` promises.
        self.grid(int_args)?;
        let ints: Vec<&KernelParam> = self.int_params().collect();
        let pointers: Vec<&KernelParam> = self
            .params
            .iter()
            .filter(|p| matches!(p.kind, KernelParamKind::Pointer(_)))
            .collect();
        if pointers.len() != buffer_bytes.len() {
            return Err(BufferCheckError::BufferCount {
                expected: pointers.len(),
                got: buffer_bytes.len(),
            });
        }
        let lookup = |name: &str| {
            ints.iter()
                .position(|p| p.name == name)
                .map(|i| int_args[i])
        };
        for view in &self.views {
            let Some(reach) = view.reach(&lookup) else {
                continue;
            };
            let pointer = view.pointer().to_string();
            let reach = reach.map_err(|error| BufferCheckError::Eval {
                pointer: pointer.clone(),
                error,
            })?;
            let extents::Reach::Elements { lowest, highest } = reach else {
                continue;
            };
            if lowest < 0 {
                return Err(BufferCheckError::BeforeStart {
                    pointer,
                    elements: -lowest,
                });
            }
            let Some(index) = pointers.iter().position(|p| p.name == pointer) else {
                continue;
            };
            let elements = highest as u64 + 1;
            let bits = view.bits();
            let needed = (elements * u64::from(bits)).div_ceil(8);
            if (buffer_bytes[index] as u64) < needed {
                return Err(BufferCheckError::TooSmall {
                    pointer,
                    found: buffer_bytes[index],
                    needed,
                    elements,
                    bits,
                });
            }
        }
        Ok(())
    }

    /// The grid `[x, y, z]` for the values of the integer parameters, given in parameter order
    /// (pointers skipped). Checks `multiple_of` promises, like the interpreter.
    pub fn grid(&self, int_args: &[i32]) -> Result<[u32; 3], GridError> {
        let ints: Vec<&KernelParam> = self.int_params().collect();
        if ints.len() != int_args.len() {
            return Err(GridError::ArgumentCount {
                expected: ints.len(),
                got: int_args.len(),
            });
        }
        for (param, &value) in ints.iter().zip(int_args) {
            if let KernelParamKind::Int {
                multiple_of: Some(m),
            } = param.kind
            {
                if m != 0 && value % m as i32 != 0 {
                    return Err(GridError::NotMultiple {
                        name: param.name.clone(),
                        value,
                        multiple: m,
                    });
                }
            }
        }
        let lookup = |name: &str| {
            ints.iter()
                .position(|p| p.name == name)
                .map(|i| int_args[i])
        };
        let mut grid = [1u32; 3];
        for (dim, e) in self.grid.iter().enumerate().take(3) {
            let value = scalar::eval(e, &lookup).map_err(|error| GridError::Eval { dim, error })?;
            if value < 0 {
                return Err(GridError::Negative { dim, value });
            }
            grid[dim] = value as u32;
        }
        Ok(grid)
    }
}

/// Generates the CUDA C++ kernel of a verified program for `target`. A caller with a bare
/// [`anybit_vm::Program`] verifies it first: `generate(&anybit_vm::verify(&program)?, target)`.
pub fn generate(verified: &Verified<'_>, target: Target) -> Result<GeneratedKernel, CodegenError> {
    let program = verified.program();
    let output = program::emit_program(verified, target)?;
    let params = program
        .params
        .iter()
        .map(|p| KernelParam {
            name: p.name.clone(),
            kind: match &p.kind {
                ParamKind::Pointer(dtype) => KernelParamKind::Pointer(*dtype),
                ParamKind::Int { multiple_of } => KernelParamKind::Int {
                    multiple_of: *multiple_of,
                },
            },
        })
        .collect();
    Ok(GeneratedKernel {
        name: output.name,
        source: format!("{}{}", prelude::PRELUDE, output.kernel),
        params,
        threads: program.threads,
        static_shared_bytes: output.static_shared,
        dynamic_shared_bytes: output.dynamic_shared,
        target,
        selections: output.selections,
        grid: program.grid.clone(),
        views: extents::view_extents(program),
    })
}

/// The generated kernel of [`cast_test_program`].
pub fn cast_test_kernel(dtype: DType, target: Target) -> Result<GeneratedKernel, CodegenError> {
    let program = cast_test_program(dtype);
    // The program is built here, so a verifier error is a bug of this crate.
    let verified = anybit_vm::verify(&program).map_err(|error| CodegenError::Internal {
        inst: "program".to_string(),
        span: program.span,
        reason: format!("the cast test program does not verify: {error}"),
    })?;
    generate(&verified, target)
}
