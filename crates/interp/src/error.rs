//! Errors of a run: bad arguments, a launch that cannot start, and faults inside a block.

use std::fmt;

use anybit_vm::Span;

/// Why a program could not run to the end.
///
/// When a run fails after blocks have started, the global buffers may already hold the writes of
/// the blocks (and instructions) that ran before the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The arguments do not fit the program.
    #[error(transparent)]
    Argument(#[from] ArgumentError),
    /// The verifier rejects the program (only from the entry points that take a bare
    /// `Program`; [`crate::run_verified`] takes a verified one).
    #[error("`{program}` is not a valid program: {error}")]
    Verify {
        /// The program's name.
        program: String,
        /// The verifier's error.
        error: anybit_vm::VerifyError,
    },
    /// The launch was refused before any block ran (grid, threads, `multiple_of` promises).
    #[error("cannot launch `{program}`: {message}")]
    Launch {
        /// The program's name.
        program: String,
        /// What is wrong.
        message: String,
    },
    /// A block stopped with a run-time error.
    #[error(transparent)]
    Runtime(Box<RuntimeError>),
}

impl RunError {
    /// The run-time error, when this is one.
    pub fn runtime(&self) -> Option<&RuntimeError> {
        match self {
            RunError::Runtime(error) => Some(error),
            _ => None,
        }
    }

    /// The fault of a run-time error, when this is one.
    pub fn fault(&self) -> Option<&Fault> {
        self.runtime().map(|error| &error.fault)
    }
}

/// An argument that does not fit the program's parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// No parameter has this name.
    #[error("`{program}` has no parameter `{name}` (its parameters are: {params})")]
    UnknownName {
        program: String,
        name: String,
        params: String,
    },
    /// The position is past the last parameter.
    #[error("`{program}` has {count} parameters, so there is no parameter at position {index}")]
    UnknownIndex {
        program: String,
        index: usize,
        count: usize,
    },
    /// A buffer for an `i32` parameter or a value for a pointer.
    #[error("parameter `{name}` is {expected}, but {given} was given")]
    WrongKind {
        name: String,
        expected: String,
        given: &'static str,
    },
    /// A parameter without a value at launch.
    #[error("parameter `{name}` has no value")]
    Missing { name: String },
    /// The arguments were made for a program with other parameters.
    #[error("the arguments were made for parameters ({made_for}), but `{program}` has ({params})")]
    OtherProgram {
        program: String,
        made_for: String,
        params: String,
    },
}

/// A run-time error inside a block, with where it happened.
#[derive(Debug)]
pub struct RuntimeError {
    /// The block's index `(x, y, z)`.
    pub block: [u32; 3],
    /// The span of the statement at fault ([`Span::UNKNOWN`] for programs built in Rust).
    pub span: Span,
    /// The statement: an instruction's mnemonic (`load_global`), or `let`, `for`, `if`.
    pub statement: &'static str,
    /// What went wrong.
    pub fault: Fault,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [x, y, z] = self.block;
        write!(f, "block ({x},{y},{z}), ")?;
        if !self.span.is_unknown() {
            write!(f, "line {}, ", self.span)?;
        }
        write!(f, "{}: {}", self.statement, self.fault)
    }
}

impl std::error::Error for RuntimeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.fault {
            Fault::Output(error) => Some(error),
            _ => None,
        }
    }
}

/// What went wrong in a block: the run-time errors of `docs/vm.md`, resource limits of the
/// interpreter, and [`Fault::Internal`] for a state the verifier rules out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Fault {
    /// An `i32` scalar expression overflowed.
    #[error("i32 overflow in {lhs} {op} {rhs}")]
    Overflow {
        op: &'static str,
        lhs: i32,
        rhs: i32,
    },
    /// Scalar division or remainder by zero.
    #[error("{lhs} {op} 0: division by zero")]
    DivisionByZero { op: &'static str, lhs: i32 },
    /// `ceil_div(a, b)` with `b <= 0`.
    #[error("ceil_div({lhs}, {rhs}): the divisor must be positive")]
    CeilDivByNonPositive { lhs: i32, rhs: i32 },
    /// A loop step that is not positive.
    #[error("the loop step is {0}; it must be positive")]
    NonPositiveStep(i32),
    /// A negative size in `view_global`.
    #[error("size {size} of dimension {dim} of `%{tensor}` is negative")]
    NegativeSize {
        tensor: String,
        dim: usize,
        size: i32,
    },
    /// An in-bounds global element whose address is outside the buffer.
    #[error("global element {element} of `{param}` is outside its {capacity}-element buffer (coordinates {coordinates:?} of `%{tensor}`)")]
    OutsideBuffer {
        param: String,
        tensor: String,
        coordinates: Vec<i64>,
        element: i64,
        capacity: u64,
    },
    /// A shared-memory tile that does not lie inside its tensor.
    #[error("the tile of shape {tile:?} at offsets {offsets:?} does not lie inside `%{tensor}` of shape {shape:?}")]
    SharedTileOutOfRange {
        tensor: String,
        offsets: Vec<i64>,
        tile: Vec<usize>,
        shape: Vec<usize>,
    },
    /// Integer `div` of tensor elements by zero.
    #[error("integer division by zero (element {coordinates:?} of the result)")]
    TensorDivisionByZero { coordinates: Vec<usize> },
    /// A `copy_async` whose destination was freed before the `wait_group` that completes it.
    #[error("the destination `%{tensor}` of a copy_async (line {copy_span}) was freed before the copy completed")]
    CopyDestinationFreed { tensor: String, copy_span: Span },
    /// A fault while a `wait_group` performs an earlier `copy_async`.
    #[error("completing the copy_async at line {copy_span}: {fault}")]
    InCopy { copy_span: Span, fault: Box<Fault> },
    /// A tensor too large for the interpreter.
    #[error("{0}")]
    TooLarge(String),
    /// Writing `print` output failed.
    #[error("writing print output: {0}")]
    Output(#[from] std::io::Error),
    /// The interpreter met a state that a verified program cannot reach (a tensor or scalar
    /// that is not where the verifier saw it): a bug in the verifier or the interpreter,
    /// reported instead of a panic.
    #[error("internal error: {0} (the verifier should have ruled this out)")]
    Internal(String),
}

/// A [`Fault::Internal`] error.
pub(crate) fn internal(message: impl Into<String>) -> Fault {
    Fault::Internal(message.into())
}
