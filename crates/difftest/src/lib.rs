//! Differential testing: random programs and inputs, and the rules for comparing another
//! implementation's results (the GPU's) with the CPU interpreter, which defines what a program
//! means.
//!
//! - [`random_programs`]: random small programs over every type and random layouts.
//! - [`cases`]: programs with fresh random arguments and poisoned outputs (the examples, the
//!   quantized matmul for every weight type, random programs).
//! - [`compare`]: running a case on the interpreter and comparing output buffers element by
//!   element, bit-exactly or within a stated tolerance.
//! - [`corpus`]: the program files of `corpus/` with their run lines, expectations and blessed
//!   CUDA snapshots; every executor runs them.
//! - [`gpu`]: running cases on a GPU with generated code (the binary `anybit-gpu-check`).

pub mod cases;
pub mod compare;
pub mod corpus;
pub mod gpu;
pub mod random_programs;

pub use cases::{Case, Value, POISON};
pub use compare::{compare, run_on_interpreter, run_values_on_interpreter, Comparison, Mismatch};
pub use random_programs::{random_layout, random_program, Agreement, RandomProgram};
