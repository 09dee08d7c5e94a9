//! Global loads and stores of register tiles, vectorised where contiguity and alignment are
//! proven.
//!
//! What this module promises: the emitted code reads (writes) exactly the elements
//! `docs/vm.md` says, reading 0 out of bounds and dropping out-of-bounds stores. A run of a
//! thread's elements becomes one access of 4, 8 or 16 bytes only when (a) the run is
//! contiguous in the thread's registers and in memory (the dimension's stride is the constant
//! 1), (b) the first element's bit address is provably a multiple of the access size (from the
//! offsets' and strides' divisibility facts, the layout's thread and local parts, and the
//! 16-byte alignment of pointer arguments), and (c) at run time the whole run is in bounds;
//! a run that is partly out of bounds falls back to per-element accesses.

use super::emit::{Emitter, Global, Reg};
use super::layout::{pow2_factor, Terms};
use anybit_layout::RegisterLayout;
use anybit_vm::Expr;

/// How a tile access is split into runs.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// (dimension, elements per run, bytes per access), or `None` for per-element accesses.
    pub vector: Option<(usize, usize, usize)>,
}

/// Finds the widest provably aligned vector access for a global tile access.
pub(super) fn plan_global(
    e: &Emitter,
    g: &Global,
    offsets: &[Expr],
    layout: &RegisterLayout,
    terms: &Terms,
) -> Plan {
    let bits = g.dtype.bits() as usize;
    let rank = g.rank;
    let none = Plan { vector: None };
    // The contiguous dimension: constant stride 1.
    let Some(dim) = (0..rank).rev().find(|&d| g.stride_const[d] == Some(1)) else {
        return none;
    };
    // Local digits of `dim` that are the least significant local digits, with coordinate
    // strides 1, s, s*s..: a run of consecutive local indices walking the dimension.
    let mut run = 1usize;
    for t in &terms.local_terms {
        if t.dim == dim && t.coord_stride == run && t.index_stride == run {
            run *= t.size;
        } else {
            break;
        }
    }
    // Widest access: up to 16 bytes, a power of two, at least 4 bytes, dividing the run.
    let mut best = None;
    for bytes in [16usize, 8, 4] {
        let elems = bytes * 8 / bits.max(1);
        if elems == 0 || elems * bits != bytes * 8 || run % elems != 0 {
            continue;
        }
        // Alignment of the first element of every run, in elements.
        let mut align = pow2_factor(0);
        // Offset along `dim`.
        align = align.min(div_pow2(e.facts.divisor(&offsets[dim])));
        align = align.min(terms.thread_coord_alignment(dim));
        for t in &terms.local_terms {
            if t.dim == dim && t.coord_stride >= elems {
                align = align.min(pow2_factor(t.coord_stride));
            }
        }
        // Other dimensions contribute (offset + coordinate) * stride.
        for d in 0..rank {
            if d != dim {
                align = align.min(div_pow2(g.stride_div[d]));
            }
        }
        if align % elems == 0 {
            best = Some((dim, elems, bytes));
            break;
        }
    }
    let _ = layout;
    Plan { vector: best }
}

fn div_pow2(d: u64) -> usize {
    pow2_factor(d.min(usize::MAX as u64) as usize)
}

fn coords_and_bounds(
    e: &Emitter,
    g: &Global,
    terms: &Terms,
    bases: &[String],
    l: &str,
) -> (Vec<String>, String, String) {
    let _ = e;
    let coords: Vec<String> = (0..g.rank)
        .map(|d| {
            let lc = terms.local_coord_expr(d, l);
            if lc == "0" {
                bases[d].clone()
            } else {
                format!("{} + {lc}", bases[d])
            }
        })
        .collect();
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
pub(super) fn emit_load_global(
    e: &mut Emitter,
    g: &Global,
    layout: &RegisterLayout,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
    t: &str,
) {
    let n = g.dtype.bits();
    let locals = layout.local_size();
    if let Some((dim, elems, bytes)) = plan.vector {
        e.select(format!(
            "{}-byte global loads ({elems} elements of {} along dimension {dim})",
            bytes, g.dtype
        ));
        let words = bytes / 4;
        e.open(&format!(
            "#pragma unroll\nfor (int v = 0; v < {}; ++v) {{",
            locals / elems
        ));
        e.line(&format!("const int l0 = v * {elems};"));
        let (coords, in_bounds, address) = coords_and_bounds(e, g, terms, bases, "l0");
        declare_coords(e, &coords);
        let last = format!("c{dim} + {}", elems - 1);
        e.open(&format!(
            "if ({in_bounds} && ab_in({last}, {}_n{dim})) {{",
            g.cname
        ));
        let vt = match words {
            4 => "uint4",
            2 => "uint2",
            _ => "u32",
        };
        e.line(&format!(
            "const {vt} x = *(const {vt}*)({} + (({address}) * {n} >> 3));",
            g.cname
        ));
        let parts: Vec<&str> = match words {
            4 => vec!["x.x", "x.y", "x.z", "x.w"],
            2 => vec!["x.x", "x.y"],
            _ => vec!["x"],
        };
        for (i, p) in parts.iter().enumerate() {
            e.line(&format!("{t}[v * {words} + {i}] = {p};"));
        }
        e.close("} else {");
        e.indent_in();
        e.open(&format!(
            "#pragma unroll\nfor (int i = 0; i < {elems}; ++i) {{"
        ));
        let (coords, in_bounds, address) = coords_and_bounds(e, g, terms, bases, "(l0 + i)");
        declare_coords(e, &coords);
        e.line(&format!(
            "if ({in_bounds}) ab_set<{n}>({t}, l0 + i, ab_ld<{n}>({}, {address}));",
            g.cname
        ));
        e.close("}");
        e.close("}");
        e.close("}");
        return;
    }
    e.open(&format!(
        "#pragma unroll\nfor (int l = 0; l < {locals}; ++l) {{"
    ));
    let (coords, in_bounds, address) = coords_and_bounds(e, g, terms, bases, "l");
    declare_coords(e, &coords);
    e.line(&format!(
        "if ({in_bounds}) ab_set<{n}>({t}, l, ab_ld<{n}>({}, {address}));",
        g.cname
    ));
    e.close("}");
}

/// Stores the tile (the caller restricts it to first owners).
pub(super) fn emit_store_global(
    e: &mut Emitter,
    g: &Global,
    x: &Reg,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
) {
    let n = g.dtype.bits();
    let locals = x.layout.local_size();
    if let Some((dim, elems, bytes)) = plan.vector {
        e.select(format!(
            "{}-byte global stores ({elems} elements of {} along dimension {dim})",
            bytes, g.dtype
        ));
        let words = bytes / 4;
        e.open(&format!(
            "#pragma unroll\nfor (int v = 0; v < {}; ++v) {{",
            locals / elems
        ));
        e.line(&format!("const int l0 = v * {elems};"));
        let (coords, in_bounds, address) = coords_and_bounds(e, g, terms, bases, "l0");
        declare_coords(e, &coords);
        let last = format!("c{dim} + {}", elems - 1);
        e.open(&format!(
            "if ({in_bounds} && ab_in({last}, {}_n{dim})) {{",
            g.cname
        ));
        let r = &x.cname;
        let value = match words {
            4 => format!("make_uint4({r}[v * 4], {r}[v * 4 + 1], {r}[v * 4 + 2], {r}[v * 4 + 3])"),
            2 => format!("make_uint2({r}[v * 2], {r}[v * 2 + 1])"),
            _ => format!("{r}[v]"),
        };
        let vt = match words {
            4 => "uint4",
            2 => "uint2",
            _ => "u32",
        };
        e.line(&format!(
            "*({vt}*)({} + (({address}) * {n} >> 3)) = {value};",
            g.cname
        ));
        e.close("} else {");
        e.indent_in();
        e.open(&format!(
            "#pragma unroll\nfor (int i = 0; i < {elems}; ++i) {{"
        ));
        let (coords, in_bounds, address) = coords_and_bounds(e, g, terms, bases, "(l0 + i)");
        declare_coords(e, &coords);
        e.line(&format!(
            "if ({in_bounds}) ab_st<{n}>({}, {address}, ab_get<{n}>({r}, l0 + i));",
            g.cname
        ));
        e.close("}");
        e.close("}");
        e.close("}");
        return;
    }
    e.open(&format!(
        "#pragma unroll\nfor (int l = 0; l < {locals}; ++l) {{"
    ));
    let (coords, in_bounds, address) = coords_and_bounds(e, g, terms, bases, "l");
    declare_coords(e, &coords);
    e.line(&format!(
        "if ({in_bounds}) ab_st<{n}>({}, {address}, ab_get<{n}>({}, l));",
        g.cname, x.cname
    ));
    e.close("}");
}
