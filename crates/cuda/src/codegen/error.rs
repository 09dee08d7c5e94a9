//! The errors of code generation: a program that cannot be lowered, and a grid that cannot be
//! computed from launch arguments.
//!
//! What this module promises: every error names what is at fault (the statement's span and
//! instruction, the argument, the grid dimension) in its message. It imports nothing else of
//! code generation except the scalar evaluator's error, so every part may use it.

use anybit_vm::Span;

use super::scalar::EvalError;
use crate::target::Target;

/// A program the backend cannot lower.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodegenError {
    /// The instruction at `span` cannot be lowered (for example a type the backend does not
    /// handle, or a program that is not well formed).
    #[error("{span}: `{inst}`: {reason}")]
    Unsupported {
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
