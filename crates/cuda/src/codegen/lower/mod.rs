//! The lowering of instructions, one file per instruction family: each keeps its generic
//! lowering (correct for any layout) and the fast paths selected for it together.
//!
//! What this module promises: every lowering either emits code that computes what `docs/vm.md`
//! says, or returns a [`crate::codegen::CodegenError`] naming the instruction; a fast path is
//! used only when its preconditions are proven at generation time, and computes what the
//! generic lowering computes.
//!
//! Imports point one way: the lowering files use the shared core below them (`emitter`,
//! `element`, `layout`, `scalar`, `cast`) and the layout crate, never the program walk and
//! never each other.

pub(super) mod dot;
pub(super) mod elementwise;
pub(super) mod memory;
pub(super) mod reduce;
