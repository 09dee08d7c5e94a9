//! Global memory: `view_global`, `load_global` and `store_global`, vectorised where proven.
//!
//! What this module promises: a load reads exactly the elements `docs/vm.md` says, 0 where out
//! of bounds; a store writes the first owner's copy of every in-bounds element and nothing
//! else, changing only its own bits (sub-byte elements through `atomicAnd`/`atomicOr` on the
//! words that hold them). A thread accesses a group of its elements with vectors only when
//! (a) the global dimension's stride is the constant 1 and the group is consecutive in its
//! registers, (b) the group's first bit address is provably a multiple of the access (from the
//! offsets' and strides' divisibility facts, the layout's thread and local parts and the
//! 16-byte alignment of pointer arguments), and (c) at run time, the whole group is in bounds;
//! a group partly out of bounds falls back to per-element accesses. A group covers whole words
//! holding only its own elements, so its stores are plain stores.

use anybit_layout::RegisterLayout;
use anybit_vm::{Expr, StmtInfo, TensorType};

use super::vector::{
    div_pow2, group_start_alignment, read_group, run_length, thread_bases, tile_coords,
    write_group, Plan, Vector, WIDTHS,
};
use crate::codegen::emitter::{Emitter, Global, Reg, Var, R};
use crate::codegen::layout::Terms;

/// Lowers `%dst = view_global(ptr, sizes, strides)`: the element type is the pointer's, as the
/// verifier recorded it in `info`.
pub(in crate::codegen) fn view_global(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    ptr: &str,
    shape: &[Expr],
    strides: &[Expr],
) -> R<()> {
    let TensorType::Global { dtype, .. } = e.definition(info)?.ty else {
        return Err(e.internal("the verifier recorded a result that is not a global tensor"));
    };
    let cname = e.fresh_tensor_name("g", dst);
    e.line(&format!("u8* const {cname} = p_{ptr};"));
    let mut decl = Vec::new();
    for (i, (s, t)) in shape.iter().zip(strides).enumerate() {
        decl.push(format!("{cname}_n{i} = {}", e.scalar(s)));
        decl.push(format!("{cname}_t{i} = {}", e.scalar(t)));
    }
    e.line(&format!("const int {};", decl.join(", ")));
    let g = Global {
        dtype,
        rank: shape.len(),
        cname,
        size_div: shape.iter().map(|s| e.facts.divisor(s)).collect(),
        stride_div: strides.iter().map(|s| e.facts.divisor(s)).collect(),
        stride_const: strides.iter().map(|s| e.facts.constant(s)).collect(),
    };
    e.define(dst, Var::Global(g));
    Ok(())
}

/// Lowers `%dst = load_global(%src[offsets]) : layout` (the layout is the result's, in `info`).
pub(in crate::codegen) fn load_global(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    src: &str,
    offsets: &[Expr],
) -> R<()> {
    let g = e.global(src)?;
    let o = e.offsets(offsets);
    let (reg, new) = e.result(info)?;
    let offsets = offsets.to_vec();
    let layout = reg.layout.clone();
    e.with_result(dst, &reg, new, |e, t| {
        let terms = Terms::new(&layout);
        let bases = thread_bases(e, &terms, &o);
        let plan = plan_global(e, &g, &offsets, &terms);
        emit_load_global(e, &g, &layout, &terms, &bases, &plan, t);
        Ok(())
    })
}

/// Lowers `store_global(%dst[offsets], %src)`: first owners store.
pub(in crate::codegen) fn store_global(
    e: &mut Emitter,
    dst: &str,
    offsets: &[Expr],
    src: &str,
) -> R<()> {
    let g = e.global(dst)?;
    let x = e.register(src)?;
    let o = e.offsets(offsets);
    let terms = Terms::new(&x.layout);
    e.open("{");
    let bases = thread_bases(e, &terms, &o);
    let owner = terms.first_owner_cond("tid");
    if let Some(c) = &owner {
        e.line("// replicated: the first owner of each element stores it");
        e.open(&format!("if ({c}) {{"));
    }
    let plan = plan_global(e, &g, offsets, &terms);
    emit_store_global(e, &g, &x, &terms, &bases, &plan);
    if owner.is_some() {
        e.close("}");
    }
    e.close("}");
    Ok(())
}

/// Finds the widest provably aligned vector access for a global tile access.
fn plan_global(e: &Emitter, g: &Global, offsets: &[Expr], terms: &Terms) -> Plan {
    let bits = g.dtype.bits() as usize;
    let rank = g.rank;
    let none = Plan { vector: None };
    // The contiguous dimension: constant stride 1.
    let Some(dim) = (0..rank).rev().find(|&d| g.stride_const[d] == Some(1)) else {
        return none;
    };
    let run = run_length(terms, dim);
    for bytes in WIDTHS {
        let v = Vector::group(dim, bits, bytes);
        if run % v.elems != 0 {
            continue;
        }
        // Alignment of the first element of every group, in elements: G elements are a
        // whole number of accesses, and G is a power of two, so an element address that is a
        // multiple of G is a bit address that is a multiple of the access.
        let mut align = group_start_alignment(e, &offsets[dim], terms, dim, v.elems);
        // Other dimensions contribute (offset + coordinate) * stride.
        for d in 0..rank {
            if d != dim {
                align = align.min(div_pow2(g.stride_div[d]));
            }
        }
        if align % v.elems == 0 {
            return Plan { vector: Some(v) };
        }
    }
    none
}

fn coords_and_bounds(
    g: &Global,
    terms: &Terms,
    bases: &[String],
    l: &str,
) -> (Vec<String>, String, String) {
    let coords = tile_coords(terms, bases, l);
    let in_bounds: Vec<String> = (0..g.rank)
        .map(|d| format!("ab_in(c{d}, {}_n{d})", g.cname))
        .collect();
    let address: Vec<String> = (0..g.rank)
        .map(|d| format!("(i64)c{d} * {}_t{d}", g.cname))
        .collect();
    (coords, in_bounds.join(" && "), address.join(" + "))
}

fn declare_coords(e: &mut Emitter, coords: &[String]) {
    let decl: Vec<String> = coords
        .iter()
        .enumerate()
        .map(|(d, c)| format!("c{d} = {c}"))
        .collect();
    e.line(&format!("const int {};", decl.join(", ")));
}

/// Loads the tile into the zeroed temporary `t`.
fn emit_load_global(
    e: &mut Emitter,
    g: &Global,
    layout: &RegisterLayout,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
    t: &str,
) {
    emit_global_access(
        e,
        g,
        layout.local_size(),
        terms,
        bases,
        plan,
        GlobalAccess::Load { into: t },
    );
}

/// Stores the tile (the caller restricts it to first owners).
fn emit_store_global(
    e: &mut Emitter,
    g: &Global,
    x: &Reg,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
) {
    emit_global_access(
        e,
        g,
        x.layout.local_size(),
        terms,
        bases,
        plan,
        GlobalAccess::Store { from: &x.cname },
    );
}

/// Which way a global tile moves, and the thread's register array on the other side.
#[derive(Clone, Copy)]
enum GlobalAccess<'a> {
    Load { into: &'a str },
    Store { from: &'a str },
}

impl GlobalAccess<'_> {
    /// The statement that moves local element `local` alone.
    fn element(self, n: u32, global: &str, address: &str, local: &str) -> String {
        match self {
            GlobalAccess::Load { into } => {
                format!("ab_set<{n}>({into}, {local}, ab_ld<{n}>({global}, {address}));")
            }
            GlobalAccess::Store { from } => {
                format!("ab_st<{n}>({global}, {address}, ab_get<{n}>({from}, {local}));")
            }
        }
    }
}

/// The bounds checks of a thread's whole tile: (all in, all out) as C conditions. The tile's
/// coordinate `d` ranges over `base_d + [0, extent_d]`, the extent being the largest local
/// part; it is all in when both ends are, and all out when some dimension's range misses
/// `[0, size)` entirely.
fn tile_bounds(g: &Global, terms: &Terms, bases: &[String]) -> (String, String) {
    let mut all_in = Vec::new();
    let mut all_out = Vec::new();
    for (d, base) in bases.iter().enumerate() {
        let extent: usize = terms
            .local_terms
            .iter()
            .filter(|t| t.dim == d)
            .map(|t| (t.size - 1) * t.coord_stride)
            .sum();
        let size = format!("{}_n{d}", g.cname);
        if extent == 0 {
            all_in.push(format!("ab_in({base}, {size})"));
            all_out.push(format!("!ab_in({base}, {size})"));
        } else {
            all_in.push(format!(
                "ab_in({base}, {size}) && ab_in({base} + {extent}, {size})"
            ));
            all_out.push(format!("{base} + {extent} < 0 || {base} >= {size}"));
        }
    }
    (all_in.join(" && "), all_out.join(" || "))
}

/// Loads or stores a global tile. A thread whose whole tile is in bounds moves it with vector
/// groups where the plan allows (single elements otherwise) and no further checks; a thread
/// whose tile is wholly out of bounds moves nothing (a load leaves its zeros); a thread at an
/// edge checks every group, and moves a group partly out of bounds element by element.
fn emit_global_access(
    e: &mut Emitter,
    g: &Global,
    locals: usize,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
    access: GlobalAccess<'_>,
) {
    let n = g.dtype.bits();
    if let Some(vec) = plan.vector {
        let what = match access {
            GlobalAccess::Load { .. } => "global loads",
            GlobalAccess::Store { .. } => "global stores",
        };
        e.note_selection(vec.describe(g.dtype, what));
    }
    let (all_in, all_out) = tile_bounds(g, terms, bases);
    e.open(&format!("if ({all_in}) {{"));
    match plan.vector {
        Some(vec) => {
            let elems = vec.elems;
            e.open(&format!(
                "#pragma unroll\nfor (int v = 0; v < {}; ++v) {{",
                locals / elems
            ));
            e.line(&format!("const int l0 = v * {elems};"));
            let (coords, _, address) = coords_and_bounds(g, terms, bases, "l0");
            declare_coords(e, &coords);
            let pointer = format!("{} + (({address}) * {n} >> 3)", g.cname);
            match access {
                GlobalAccess::Load { into } => read_group(e, &vec, &pointer, into),
                GlobalAccess::Store { from } => write_group(e, &vec, &pointer, from),
            }
            e.close("}");
        }
        None => {
            e.open(&format!(
                "#pragma unroll\nfor (int l = 0; l < {locals}; ++l) {{"
            ));
            let (coords, _, address) = coords_and_bounds(g, terms, bases, "l");
            declare_coords(e, &coords);
            e.line(&access.element(n, &g.cname, &address, "l"));
            e.close("}");
        }
    }
    e.close(&format!("}} else if (!({all_out})) {{"));
    e.indent_in();
    emit_checked_access(e, g, locals, terms, bases, plan, access);
    e.close("}");
}

/// The edge of a tile: every vector group (or element) checked on its own.
fn emit_checked_access(
    e: &mut Emitter,
    g: &Global,
    locals: usize,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
    access: GlobalAccess<'_>,
) {
    let n = g.dtype.bits();
    if let Some(vec) = plan.vector {
        let (dim, elems) = (vec.dim, vec.elems);
        e.open(&format!(
            "#pragma unroll\nfor (int v = 0; v < {}; ++v) {{",
            locals / elems
        ));
        e.line(&format!("const int l0 = v * {elems};"));
        let (coords, in_bounds, address) = coords_and_bounds(g, terms, bases, "l0");
        declare_coords(e, &coords);
        let last = format!("c{dim} + {}", elems - 1);
        e.open(&format!(
            "if ({in_bounds} && ab_in({last}, {}_n{dim})) {{",
            g.cname
        ));
        let pointer = format!("{} + (({address}) * {n} >> 3)", g.cname);
        match access {
            GlobalAccess::Load { into } => read_group(e, &vec, &pointer, into),
            GlobalAccess::Store { from } => write_group(e, &vec, &pointer, from),
        }
        e.close("} else {");
        e.indent_in();
        e.open(&format!(
            "#pragma unroll\nfor (int i = 0; i < {elems}; ++i) {{"
        ));
        let (coords, in_bounds, address) = coords_and_bounds(g, terms, bases, "(l0 + i)");
        declare_coords(e, &coords);
        let element = access.element(n, &g.cname, &address, "l0 + i");
        e.line(&format!("if ({in_bounds}) {element}"));
        e.close("}");
        e.close("}");
        e.close("}");
        return;
    }
    e.open(&format!(
        "#pragma unroll\nfor (int l = 0; l < {locals}; ++l) {{"
    ));
    let (coords, in_bounds, address) = coords_and_bounds(g, terms, bases, "l");
    declare_coords(e, &coords);
    let element = access.element(n, &g.cname, &address, "l");
    e.line(&format!("if ({in_bounds}) {element}"));
    e.close("}");
}
