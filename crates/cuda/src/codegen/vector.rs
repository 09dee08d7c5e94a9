//! Global and shared loads and stores of register tiles, vectorised where contiguity and
//! alignment are proven, for every element width.
//!
//! What this module promises: the emitted code reads (writes) exactly the elements
//! `docs/vm.md` says, reading 0 out of bounds and dropping out-of-bounds global stores. A
//! *group* of `G` consecutive elements of a thread becomes `k` accesses of `B` = 4, 8 or 16
//! bytes, where `G·n = k·8B` bits (`G = 8B / gcd(n, 8B)`, so a group is a whole number of
//! elements and of accesses: 32 `u3` = three 4-byte words, 128 `u5` = five 16-byte vectors),
//! only when (a) the group is contiguous in the thread's registers and in memory (the global
//! dimension's stride is the constant 1; the shared layout's lowest sub-dimension has stride
//! 1, holds whole groups, and any swizzle moves only bits above the group), (b) the group's
//! first bit address is provably a multiple of `8B` (from the offsets' and strides'
//! divisibility facts, the layout's thread and local parts, the 16-byte alignment of pointer
//! arguments and the 128-byte alignment of shared allocations), and (c) for global memory, at
//! run time, the whole group is in bounds; a group that is partly out of bounds falls back to
//! per-element accesses. A group covers whole words holding only its own elements, so its
//! stores are plain stores: only per-element sub-byte stores need atomics.

use super::emitter::{Emitter, Global, Reg, Shared};
use super::layout::{pow2_factor, shared_offset_expr, Terms};
use super::scalar::gcd;
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::Expr;

/// One vectorised access pattern: groups of `elems` elements along `dim`, each `accesses`
/// accesses of `bytes` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Vector {
    pub dim: usize,
    pub elems: usize,
    pub bytes: usize,
    pub accesses: usize,
}

impl Vector {
    /// The group for `bits`-bit elements and `bytes`-byte accesses.
    pub fn group(dim: usize, bits: usize, bytes: usize) -> Vector {
        let access_bits = bytes * 8;
        let g = gcd(bits as u64, access_bits as u64) as usize;
        Vector {
            dim,
            elems: access_bits / g,
            bytes,
            accesses: bits / g,
        }
    }

    fn words(&self) -> usize {
        self.bytes / 4
    }

    fn describe(&self, dtype: anybit_dtype::DType, what: &str) -> String {
        if self.accesses == 1 {
            format!(
                "{}-byte {what} ({} elements of {dtype} along dimension {})",
                self.bytes, self.elems, self.dim
            )
        } else {
            format!(
                "{}-byte {what}, {} per group of {} elements of {dtype} ({} bits) along dimension {}",
                self.bytes,
                self.accesses,
                self.elems,
                self.elems * dtype.bits() as usize,
                self.dim
            )
        }
    }
}

/// How a tile access is split into groups.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// `None` for per-element accesses.
    pub vector: Option<Vector>,
}

/// The number of consecutive local indices, starting at every multiple of it, that walk
/// dimension `dim` with coordinate stride 1 (consecutive registers = consecutive coordinates).
pub(super) fn run_length(terms: &Terms, dim: usize) -> usize {
    let mut run = 1usize;
    for t in &terms.local_terms {
        if t.dim == dim && t.coord_stride == run && t.index_stride == run {
            run *= t.size;
        } else {
            break;
        }
    }
    run
}

/// The largest power of two that provably divides the coordinate along `dim` of the first
/// element of every group of `elems` (a power of two dividing the run) elements: the offset's
/// divisor, the thread part and the local digits outside the run.
fn group_start_alignment(
    e: &Emitter,
    offset: &Expr,
    terms: &Terms,
    dim: usize,
    elems: usize,
) -> usize {
    let mut align = div_pow2(e.facts.divisor(offset));
    align = align.min(terms.thread_coord_alignment(dim));
    for t in &terms.local_terms {
        if t.dim == dim && t.coord_stride >= elems {
            align = align.min(pow2_factor(t.coord_stride));
        }
    }
    align
}

/// The byte sizes to try, widest first.
const WIDTHS: [usize; 3] = [16, 8, 4];

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
    let run = run_length(terms, dim);
    let _ = layout;
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

/// Finds the widest vector access for a shared tile access whose groups are contiguous and
/// aligned in the shared layout for every thread and every offset the facts allow.
pub(super) fn plan_shared(
    e: &Emitter,
    sh: &SharedLayout,
    bits: usize,
    offsets: &[Expr],
    terms: &Terms,
) -> Plan {
    let rank = sh.rank();
    let none = Plan { vector: None };
    // The contiguous dimension: its lowest sub-dimension (of size > 1) has stride 1.
    let lowest = |d: usize| sh.sub_dims(d).iter().rev().find(|s| s.0 > 1).copied();
    let Some(dim) = (0..rank)
        .rev()
        .find(|&d| lowest(d).is_some_and(|(_, stride)| stride == 1))
    else {
        return none;
    };
    let (low_size, _) = lowest(dim).expect("found above");
    let run = run_length(terms, dim);
    for bytes in WIDTHS {
        let v = Vector::group(dim, bits, bytes);
        if run % v.elems != 0 || low_size % v.elems != 0 {
            continue;
        }
        // Group starts along `dim` are multiples of G, so a group lies inside one block of
        // the lowest sub-dimension and starts at a multiple of G there.
        if group_start_alignment(e, &offsets[dim], terms, dim, v.elems) % v.elems != 0 {
            continue;
        }
        // Every other sub-dimension adds digit * stride: strides must be multiples of G.
        let mut aligned = true;
        for d in 0..rank {
            let subs = sh.sub_dims(d);
            let mut skipped_lowest = d != dim;
            for &(size, stride) in subs.iter().rev() {
                if size <= 1 {
                    continue;
                }
                if !skipped_lowest {
                    skipped_lowest = true;
                    continue;
                }
                if pow2_factor(stride) % v.elems != 0 {
                    aligned = false;
                }
            }
        }
        // A swizzle must move only offset bits above the group, driven by bits above it.
        if let Some(s) = sh.swizzle() {
            if s.bits > 0 {
                let low = v.elems.trailing_zeros();
                if s.base < low || s.shift < low {
                    aligned = false;
                }
            }
        }
        if aligned {
            return Plan { vector: Some(v) };
        }
    }
    none
}

fn div_pow2(d: u64) -> usize {
    pow2_factor(d.min(usize::MAX as u64) as usize)
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

/// The coordinates (C) of local element `l` (a C expression): thread base + local part.
fn tile_coords(terms: &Terms, bases: &[String], l: &str) -> Vec<String> {
    (0..terms.rank)
        .map(|d| {
            let lc = terms.local_coord_expr(d, l);
            if lc == "0" {
                bases[d].clone()
            } else {
                format!("{} + {lc}", bases[d])
            }
        })
        .collect()
}

fn declare_coords(e: &mut Emitter, coords: &[String]) {
    let decl: Vec<String> = coords
        .iter()
        .enumerate()
        .map(|(d, c)| format!("c{d} = {c}"))
        .collect();
    e.line(&format!("const int {};", decl.join(", ")));
}

fn vector_type(words: usize) -> &'static str {
    match words {
        4 => "uint4",
        2 => "uint2",
        _ => "u32",
    }
}

fn vector_parts(words: usize) -> Vec<&'static str> {
    match words {
        4 => vec!["x.x", "x.y", "x.z", "x.w"],
        2 => vec!["x.x", "x.y"],
        _ => vec!["x"],
    }
}

/// Reads group `v` (a C variable) of `vec` from the byte address `at` (a C `u8*` expression)
/// into the register words of `t`.
fn read_group(e: &mut Emitter, vec: &Vector, at: &str, t: &str) {
    let words = vec.words();
    let vt = vector_type(words);
    if vec.accesses == 1 {
        e.line(&format!("const {vt} x = *(const {vt}*)({at});"));
        for (i, p) in vector_parts(words).iter().enumerate() {
            e.line(&format!("{t}[v * {words} + {i}] = {p};"));
        }
        return;
    }
    let k = vec.accesses;
    e.line(&format!("const u8* const q = {at};"));
    e.open(&format!("#pragma unroll\nfor (int j = 0; j < {k}; ++j) {{"));
    e.line(&format!(
        "const {vt} x = *(const {vt}*)(q + j * {});",
        vec.bytes
    ));
    for (i, p) in vector_parts(words).iter().enumerate() {
        e.line(&format!("{t}[(v * {k} + j) * {words} + {i}] = {p};"));
    }
    e.close("}");
}

/// Writes group `v` of `vec` from the register words of `r` to the byte address `at`.
fn write_group(e: &mut Emitter, vec: &Vector, at: &str, r: &str) {
    let words = vec.words();
    let vt = vector_type(words);
    let (index, pre) = if vec.accesses == 1 {
        ("v".to_string(), None)
    } else {
        (format!("(v * {} + j)", vec.accesses), Some(vec.accesses))
    };
    let value = match words {
        4 => format!(
            "make_uint4({r}[{index} * 4], {r}[{index} * 4 + 1], {r}[{index} * 4 + 2], {r}[{index} * 4 + 3])"
        ),
        2 => format!("make_uint2({r}[{index} * 2], {r}[{index} * 2 + 1])"),
        _ => format!("{r}[{index}]"),
    };
    match pre {
        None => e.line(&format!("*({vt}*)({at}) = {value};")),
        Some(k) => {
            e.line(&format!("u8* const q = {at};"));
            e.open(&format!("#pragma unroll\nfor (int j = 0; j < {k}; ++j) {{"));
            e.line(&format!("*({vt}*)(q + j * {}) = {value};", vec.bytes));
            e.close("}");
        }
    }
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
pub(super) fn emit_store_global(
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

/// Loads or stores a global tile: whole vector groups where the plan allows and the group is in
/// bounds, single predicated elements otherwise.
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
        let (dim, elems) = (vec.dim, vec.elems);
        let what = match access {
            GlobalAccess::Load { .. } => "global loads",
            GlobalAccess::Store { .. } => "global stores",
        };
        e.select(vec.describe(g.dtype, what));
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

/// Loads a shared tile into the temporary `t` (every element is written).
pub(super) fn emit_load_shared(
    e: &mut Emitter,
    sh: &Shared,
    layout: &RegisterLayout,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
    t: &str,
) {
    let n = sh.dtype.bits();
    let locals = layout.local_size();
    if let Some(vec) = plan.vector {
        e.select(vec.describe(sh.dtype, "shared loads"));
        e.open(&format!(
            "#pragma unroll\nfor (int v = 0; v < {}; ++v) {{",
            locals / vec.elems
        ));
        e.line(&format!("const int l0 = v * {};", vec.elems));
        let coords = tile_coords(terms, bases, "l0");
        let off = shared_offset_expr(&sh.layout, &coords);
        e.line(&format!("const int o = {off};"));
        read_group(e, &vec, &format!("{} + (o * {n} >> 3)", sh.cname), t);
        e.close("}");
        return;
    }
    e.open(&format!(
        "#pragma unroll\nfor (int l = 0; l < {locals}; ++l) {{"
    ));
    let coords = tile_coords(terms, bases, "l");
    let off = shared_offset_expr(&sh.layout, &coords);
    e.line(&format!(
        "ab_set<{n}>({t}, l, ab_ld<{n}>({}, {off}));",
        sh.cname
    ));
    e.close("}");
}

/// Stores a register tile to shared memory (the caller restricts it to first owners).
pub(super) fn emit_store_shared(
    e: &mut Emitter,
    sh: &Shared,
    x: &Reg,
    terms: &Terms,
    bases: &[String],
    plan: &Plan,
) {
    let n = sh.dtype.bits();
    let locals = x.layout.local_size();
    if let Some(vec) = plan.vector {
        e.select(vec.describe(sh.dtype, "shared stores"));
        e.open(&format!(
            "#pragma unroll\nfor (int v = 0; v < {}; ++v) {{",
            locals / vec.elems
        ));
        e.line(&format!("const int l0 = v * {};", vec.elems));
        let coords = tile_coords(terms, bases, "l0");
        let off = shared_offset_expr(&sh.layout, &coords);
        e.line(&format!("const int o = {off};"));
        write_group(e, &vec, &format!("{} + (o * {n} >> 3)", sh.cname), &x.cname);
        e.close("}");
        return;
    }
    e.open(&format!(
        "#pragma unroll\nfor (int l = 0; l < {locals}; ++l) {{"
    ));
    let coords = tile_coords(terms, bases, "l");
    let off = shared_offset_expr(&sh.layout, &coords);
    e.line(&format!(
        "ab_st<{n}>({}, {off}, ab_get<{n}>({}, l));",
        sh.cname, x.cname
    ));
    e.close("}");
}
