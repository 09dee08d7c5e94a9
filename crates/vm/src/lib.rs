//! `anybit-vm`: the IR of anybit programs, a builder, a text form and a verifier.
//!
//! Modules and what each promises:
//! - [`ir`]: the data types of a program; plain data, no checks; spans never affect equality.
//! - [`builder`]: [`ProgramBuilder`], an ergonomic way to build programs in Rust; it checks
//!   nothing.
//! - [`text`]: [`print()`] and [`parse()`]; they round-trip (`parse(&print(&p)) == Ok(p)` for
//!   verified programs, `print(&parse(t)?) == t` for canonical text); the parser never panics
//!   and reports `line:column: what was expected`. Grammar: `docs/vm-text.md`.
//! - [`verify`](mod@verify): [`verify()`] accepts exactly the well-formed programs, returning a
//!   [`Verified`] program, and reports the first error with its span, as a [`VerifyErrorKind`].
//! - [`verified`]: [`Verified`], what the verifier learned (per statement: the type of the
//!   tensor it defines, the operand maps of elementwise instructions), for the interpreter and
//!   code generation to use instead of checking again.
//! - [`examples`]: reference programs (vector add, f16 matmul, softmax, quantized matmul for any
//!   weight type), also stored as text under `examples/`.
//!
//! The rest of this page is `docs/vm.md`, the semantics of the IR: the contract between this
//! crate, the interpreter and code generation.
//!
#![doc = include_str!("../../../docs/vm.md")]

pub mod builder;
pub mod examples;
pub mod ir;
pub mod text;
pub mod verified;
pub mod verify;

pub use builder::{ProgramBuilder, Tensor};
pub use ir::*;
pub use text::{parse, print, ParseError};
pub use verified::{Definition, Elementwise, ElementwiseOperand, StmtInfo, Verified};
pub use verify::{local_permutation, verify, VerifyError, VerifyErrorKind};
