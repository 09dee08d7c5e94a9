//! `anybit-interp`: the CPU reference interpreter of anybit programs.
//!
//! It executes a [`Program`] over its grid exactly as `docs/vm.md` specifies, bit for bit, and
//! is the oracle that generated GPU code is compared with.
//!
//! ```
//! use anybit_dtype::DType;
//! use anybit_interp::{pack_values, run, unpack_values, Arguments};
//!
//! let program = anybit_vm::parse(
//!     "program scale(x: ptr<f32>, y: ptr<f32>, n: i32)
//!      grid(ceil_div(n, 32))
//!      threads(32)
//!      {
//!          %gx = view_global(x, [n], [1]);
//!          %gy = view_global(y, [n], [1]);
//!          %v = load_global(%gx[block.x * 32], spatial(32));
//!          %w = mul(%v, 2.5);
//!          store_global(%gy[block.x * 32], %w);
//!      }",
//! )?;
//! let mut args = Arguments::new(&program);
//! args.set("x", pack_values(DType::F32, &[1.0, 2.0, 3.0]))?
//!     .set("y", vec![0u8; 12])?
//!     .set("n", 3)?;
//! run(&program, &mut args, &mut std::io::sink())?;
//! let y = unpack_values(DType::F32, args.buffer("y").unwrap_or_default(), 3);
//! assert_eq!(y, [2.5, 5.0, 7.5]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Promises
//! - **Semantics.** Every instruction, scalar expression and statement behaves as `docs/vm.md`
//!   says; element conversions go through `anybit_dtype`
//!   ([`DType::encode`](anybit_dtype::DType::encode),
//!   [`DType::decode`](anybit_dtype::DType::decode)). Results are deterministic: the same
//!   program and arguments give the same bits on every run and machine.
//! - **Verified programs only.** [`run_verified`] takes an [`anybit_vm::Verified`] program,
//!   so an ill-formed program cannot reach the interpreter; it relies on what the verifier
//!   guarantees (scopes, spaces, dtypes, shapes, broadcasting) instead of checking it again,
//!   and takes result layouts and operand maps from the verifier's facts. [`run`] and
//!   [`run_with`] verify a bare `Program` first (a rejected one is [`RunError::Verify`]).
//! - **No panics.** Run-time errors of the semantics (overflow, division by zero, a loop step
//!   that is not positive, an in-bounds element outside its buffer, a shared tile outside its
//!   tensor, `multiple_of` promises broken at launch) are reported as [`RunError`]s that name
//!   the block, the statement's span (`line:column` of the text form) and the instruction. A
//!   state the verifier rules out (a bug in it or here) is [`Fault::Internal`], not a panic.
//! - **Buffers.** The caller owns the memory: one `Vec<u8>` per pointer parameter in
//!   [`Arguments`], packed as `anybit_dtype::pack` packs (element `e` at bits `[e·n, (e+1)·n)`).
//!   Buffers never alias. On success the output buffers hold the results; on error they hold the
//!   writes made before the error.
//! - **Order.** Blocks run one after the other, `x` fastest, then `y`, then `z`; inside a block
//!   every instruction runs to completion before the next one. A `copy_async` reads global
//!   memory and writes shared memory at the `wait_group` that retires its group; copies never
//!   waited for are dropped at the end of the block.
//! - **Unspecified contents.** `alloc_register` without a value and `alloc_shared` fill the
//!   tensor with all-one bits (NaN in f16, bf16, f32 and the 8-bit OCP floats; −1 or the maximum
//!   in integers), so that programs that read memory they never wrote stand out.
//! - **Registers** are kept per thread and local slot (replicas included), so `view` sees each
//!   thread's own bits; instructions that move data between threads read logical values (the
//!   first owner's).
//!
//! # `print`
//! `print(%x)` writes to the writer given to [`run`]:
//! ```text
//! %x in block (0,0,0): register<f32, spatial(2,2)>
//! [[1.5, 2],
//!  [-0, NaN]]
//! ```
//! The first line names the tensor, the block and the tensor's type; then come the logical
//! values, row-major, as nested brackets (one innermost row per line, a blank line between
//! blocks of rank 3 and more). Floats are printed as the shortest decimal that reads back as the
//! exact value (`inf`, `-inf`, `NaN`, `-0`), integers in decimal. Shared tensors print the same
//! way.
//!
//! # Speed
//! Layout tables (coordinates of every slot, first owners, broadcast maps) are computed once per
//! layout and run; the per-element work is a table lookup and the element operation. A
//! 64×256·256×64 quantized matmul runs in milliseconds in a test build.

mod args;
mod error;
mod exec;
mod layouts;
mod num;
mod print;

use std::io::Write;

use anybit_vm::{ParamKind, Program, Verified};

pub use args::{pack_codes, pack_values, unpack_codes, unpack_values, Argument, Arguments};
pub use error::{ArgumentError, Fault, RunError, RuntimeError};

use exec::{BlockState, Machine};
use layouts::LayoutCache;

/// Options of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Runs this grid `[x, y, z]` instead of the program's.
    pub grid: Option<[u32; 3]>,
}

/// What a run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// The grid that ran.
    pub grid: [u32; 3],
    /// Number of blocks run.
    pub blocks: u64,
}

/// Verifies `program` and runs it over its grid with `args`, writing `print` output to `out`.
pub fn run(program: &Program, args: &mut Arguments, out: &mut dyn Write) -> Result<(), RunError> {
    run_with(program, args, &RunOptions::default(), out).map(|_| ())
}

/// Like [`run`], with options.
pub fn run_with(
    program: &Program,
    args: &mut Arguments,
    options: &RunOptions,
    out: &mut dyn Write,
) -> Result<RunSummary, RunError> {
    let verified = anybit_vm::verify(program).map_err(|error| RunError::Verify {
        program: program.name.clone(),
        error,
    })?;
    run_verified(&verified, args, options, out)
}

/// Runs a program that `anybit_vm::verify` accepted (for callers that verify once and hand
/// the same [`Verified`] program to the interpreter and to code generation).
pub fn run_verified(
    verified: &Verified<'_>,
    args: &mut Arguments,
    options: &RunOptions,
    out: &mut dyn Write,
) -> Result<RunSummary, RunError> {
    let program = verified.program();
    args.check(program)?;
    let values = args.take_values();
    let mut machine = Machine {
        verified,
        program,
        args: values,
        layouts: LayoutCache::default(),
        out,
    };
    let result = launch(&mut machine, options);
    args.restore_values(std::mem::take(&mut machine.args));
    result
}

fn launch(machine: &mut Machine, options: &RunOptions) -> Result<RunSummary, RunError> {
    let program = machine.program;
    let refuse = |message: String| RunError::Launch {
        program: program.name.clone(),
        message,
    };
    for (param, value) in program.params.iter().zip(&machine.args) {
        if let (
            ParamKind::Int {
                multiple_of: Some(m),
            },
            Argument::Int(value),
        ) = (&param.kind, value)
        {
            if i64::from(*value).checked_rem(i64::from(*m)) != Some(0) {
                return Err(refuse(format!(
                    "`{}` = {value} breaks its promise `multiple_of {m}`",
                    param.name
                )));
            }
        }
    }
    let grid = match options.grid {
        Some(grid) => {
            if grid.iter().any(|&size| size > i32::MAX as u32) {
                return Err(refuse(format!(
                    "the grid {grid:?} does not fit i32 block indices"
                )));
            }
            grid
        }
        None => {
            // The verifier saw 1 to 3 dimensions that use no block index.
            let st = BlockState::new([0; 3]);
            let mut grid = [1u32; 3];
            for (dim, expr) in program.grid.iter().take(3).enumerate() {
                let size = machine
                    .eval(&st, expr)
                    .map_err(|fault| refuse(format!("grid dimension {dim}: {fault}")))?;
                grid[dim] = u32::try_from(size).map_err(|_| {
                    refuse(format!(
                        "grid dimension {dim} is {size}; it must not be negative"
                    ))
                })?;
            }
            grid
        }
    };
    let mut blocks = 0;
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                let mut st = BlockState::new([x as i32, y as i32, z as i32]);
                machine.run_block(&mut st).map_err(RunError::Runtime)?;
                blocks += 1;
            }
        }
    }
    Ok(RunSummary { grid, blocks })
}
