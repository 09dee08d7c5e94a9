//! The errors of code generation: a program that cannot be lowered, and a grid that cannot be
//! computed from launch arguments.
//!
//! What this module promises: every error names what is at fault (the statement's span and
//! instruction, the argument, the grid dimension) in its message. It imports nothing else of
//! code generation except the scalar evaluator's error, so every part may use it.
//!
//! Code generation takes a verified program, so its errors are only what the verifier cannot
//! know: what the backend does not lower, facts it derives itself (a loop step or a tile offset
//! that its divisibility facts make a constant), and the target's shared memory. A fact the
//! verifier guarantees that does not hold anyway is [`CodegenError::Internal`], a bug.

use anybit_vm::Span;

use super::scalar::EvalError;
use crate::target::Target;

/// A program the backend cannot lower.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// The statement at `span` cannot be lowered (for example a loop step that code generation
    /// proves is not positive, or a shared tile at a constant offset outside the tensor).
    #[error("{span}: `{inst}`: {reason}")]
    Unsupported {
        /// The instruction's mnemonic (or `program`, `let`, `for`, `if`).
        inst: String,
        span: Span,
        reason: String,
    },
    /// Something the verifier guarantees does not hold at `span` (a name that is not visible,
    /// a tensor of the wrong space, facts missing for a statement): a bug in the verifier or in
    /// code generation, reported instead of a panic.
    #[error("{span}: `{inst}`: internal error in code generation (a bug): {reason}")]
    Internal {
        /// The instruction's mnemonic (or `program`, `let`, `for`, `if`).
        inst: String,
        span: Span,
        reason: String,
    },
    /// The program uses more shared memory than the target has.
    #[error("{span}: program `{program}` needs {bytes} bytes of shared memory per block, more than the {limit} bytes {target} allows")]
    SharedMemory {
        program: String,
        span: Span,
        bytes: usize,
        limit: usize,
        target: Target,
    },
}

/// A launch whose buffers do not hold what the program's views reach.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BufferCheckError {
    #[error("expected {expected} buffers (one per pointer parameter), got {got}")]
    BufferCount { expected: usize, got: usize },
    #[error("buffer `{pointer}` holds {found} bytes, but the program's view of it reaches {needed} bytes ({elements} elements of {bits} bits) for these arguments")]
    TooSmall {
        pointer: String,
        found: usize,
        needed: u64,
        elements: u64,
        bits: u32,
    },
    #[error("the program's view of `{pointer}` reaches {elements} elements before the pointer for these arguments (a negative stride); no buffer can hold that")]
    BeforeStart { pointer: String, elements: i64 },
    #[error("the extent of the view of `{pointer}`: {error}")]
    Eval { pointer: String, error: EvalError },
    #[error(transparent)]
    Grid(#[from] GridError),
}

/// A grid could not be computed from the arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GridError {
    #[error("expected {expected} integer arguments, got {got}")]
    ArgumentCount { expected: usize, got: usize },
    #[error("argument `{name}` = {value} is not a multiple of {multiple}")]
    NotMultiple {
        name: String,
        value: i32,
        multiple: u32,
    },
    #[error("grid dimension {dim}: {error}")]
    Eval { dim: usize, error: EvalError },
    #[error("grid dimension {dim} is negative ({value})")]
    Negative { dim: usize, value: i32 },
}
