//! Differential testing: random programs and inputs, and the rules for comparing a GPU run with
//! the CPU interpreter, which defines what a program means.

pub mod random_programs;

pub use random_programs::{random_layout, random_program, Agreement, RandomProgram};
