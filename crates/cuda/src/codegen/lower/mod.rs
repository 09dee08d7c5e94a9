//! The lowering of instructions, one file per instruction family: each keeps its generic
//! lowering (correct for any layout) and the fast paths selected for it together.
//!
//! - `memory/`: allocation, global views, loads and stores (vectorised, `ldmatrix`),
//!   `copy_async` (`cp.async`), `commit_group`, `wait_group`, `barrier`;
//! - `convert`: `view` (slices too), `cast` (packed conversions, reordering casts);
//! - `elementwise`: unary, binary (packed f16x2/bf16x2), comparisons, `where`;
//! - `dot`: generic and `mma.sync`;
//! - `reduce`: generic and `shfl.xor` butterflies.
//!
//! What this module promises: every lowering either emits code that computes what `docs/vm.md`
//! says, or returns a [`crate::codegen::CodegenError`] naming the instruction. A lowering takes
//! the verifier's facts about its statement (`anybit_vm::StmtInfo`: the result's type and
//! whether it overwrites, the operand maps of elementwise instructions) and checks nothing the
//! verifier proved; a fact that does not hold anyway is an internal error. A fast path is
//! used only when its preconditions are proven at generation time, and computes what the
//! generic lowering computes (up to the summation order `docs/vm.md` allows for `dot` and
//! `reduce_sum`).
//!
//! Imports point one way: the lowering files use the shared core below them (`emitter`,
//! `element`, `layout`, `scalar`, `cast`) and the layout crate, never the program walk and
//! never another family; inside `memory/`, `global`, `shared` and `copy` use `vector`.

pub(super) mod convert;
pub(super) mod dot;
pub(super) mod elementwise;
pub(super) mod memory;
pub(super) mod reduce;
