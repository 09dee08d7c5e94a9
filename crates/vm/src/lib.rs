//! `anybit-vm`: the IR of anybit programs, a builder, a text form and a verifier.
//!
//! Modules and what each promises:
//! - [`ir`]: the data types of a program; plain data, no checks; spans never affect equality.
//! - [`builder`]: [`builder::ProgramBuilder`], an ergonomic way to build programs in Rust.
//!
//! The rest of this page is `docs/vm.md`, the semantics of the IR: the contract between this
//! crate, the interpreter and code generation.
//!
#![doc = include_str!("../../../docs/vm.md")]

pub mod builder;
pub mod examples;
pub mod ir;
pub mod text;

pub use builder::{ProgramBuilder, Tensor};
pub use ir::*;
pub use text::{parse, print, ParseError};
