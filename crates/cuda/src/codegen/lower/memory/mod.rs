//! Memory instructions: register and shared allocation, global views, loads and stores,
//! asynchronous copies and the block barrier.
//!
//! What this module promises: every access reads or writes exactly the elements `docs/vm.md`
//! says, in the element encoding of `docs/codegen.md` (packed little-endian bit streams, any
//! width); replicated register tensors are stored by their first owners only. Files, each with
//! its generic lowering and its fast paths:
//! - [`global`]: `view_global`, `load_global`, `store_global` (vector groups);
//! - [`shared`]: `load_shared`, `store_shared` (`ldmatrix`, vector groups);
//! - [`copy`]: `copy_async` (`cp.async`), `commit_group`, `wait_group`;
//! - `vector`: the vector groups and tile addressing the three share.
//!
//! Imports point one way: `global`, `shared` and `copy` use `vector`; nothing here imports
//! this file.

pub(in crate::codegen) mod copy;
pub(in crate::codegen) mod global;
pub(in crate::codegen) mod shared;
mod vector;

use anybit_dtype::DType;
use anybit_layout::SharedLayout;
use anybit_vm::{Literal, StmtInfo};

use crate::codegen::element::{literal_code, splat_words};
use crate::codegen::emitter::{Emitter, Shared, Var, R};

/// Lowers `%dst = alloc_register<dtype, layout>(init)`: every element set to `init` (or 0).
pub(in crate::codegen) fn alloc_register(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    init: Option<&Literal>,
) -> R<()> {
    let (reg, new) = e.result(info)?;
    let dtype = reg.dtype;
    let w = reg.words();
    let code = match init {
        None => 0,
        Some(lit) => literal_code(dtype, lit).ok_or_else(|| {
            e.internal(format!("a float literal initialises a tensor of {dtype}"))
        })?,
    };
    let pattern = splat_words(code, dtype.bits(), reg.layout.local_size());
    if new {
        e.line(&format!("u32 {}[{w}];", reg.cname));
        e.define(dst, Var::Register(reg.clone()));
    }
    if pattern.iter().all(|&p| p == pattern[0]) {
        e.line(&format!(
            "#pragma unroll\nfor (int i = 0; i < {w}; ++i) {}[i] = 0x{:x}u;",
            reg.cname, pattern[0]
        ));
    } else {
        for (i, p) in pattern.iter().enumerate() {
            e.line(&format!("{}[{i}] = 0x{p:x}u;", reg.cname));
        }
    }
    Ok(())
}

/// Lowers `%dst = alloc_shared<dtype, layout>`: placed first-fit among the live allocations.
pub(in crate::codegen) fn alloc_shared(
    e: &mut Emitter,
    dst: &str,
    dtype: DType,
    layout: &SharedLayout,
) -> R<()> {
    let span = layout.span();
    let bits = span
        .checked_mul(dtype.bits() as usize)
        .ok_or_else(|| e.err("the shared tensor is too large"))?;
    let (id, offset) = e.allocate_shared(bits.div_ceil(8));
    let cname = e.fresh_tensor_name("sh", dst);
    e.line(&format!("u8* const {cname} = ab_smem + {offset};"));
    e.define(
        dst,
        Var::Shared(Shared {
            dtype,
            layout: layout.clone(),
            cname,
            id,
        }),
    );
    Ok(())
}

/// Lowers `free_shared(%tensor)`: its memory may be reused from here on.
pub(in crate::codegen) fn free_shared(e: &mut Emitter, tensor: &str) -> R<()> {
    let sh = e.shared(tensor)?;
    e.free_shared(tensor, sh.id);
    Ok(())
}

/// Lowers `barrier`.
pub(in crate::codegen) fn barrier(e: &mut Emitter) -> R<()> {
    e.line("__syncthreads();");
    Ok(())
}
