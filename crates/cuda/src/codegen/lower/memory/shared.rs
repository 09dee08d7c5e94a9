//! Shared memory tiles: `load_shared` and `store_shared`, through `ldmatrix` or vectors where
//! proven.
//!
//! What this module promises: a load reads exactly the tile `docs/vm.md` says; a store writes
//! the first owner's copy of every element of the tile, changing only its own bits. Fast paths:
//! - `ldmatrix.x4` (`.trans` for the B side) for loads: 16-bit elements, constant offsets, the
//!   layout divides by the A fragment or by two B fragments side by side
//!   ([`anybit_layout::fragments`]), and every 8-element row the lanes point at is contiguous
//!   and 16-byte aligned in the shared layout (checked for every warp, slot and lane);
//! - otherwise `ldmatrix` (`.x4`, `.x2` or `.x1`) register by register, for tiles of any rank:
//!   every 32-bit register (two 16-bit elements) of every lane holds the elements `ldmatrix`
//!   gives that lane from one 8×8 matrix of the last two dimensions (`.trans`: of its
//!   transpose), the matrix's 8 rows contiguous and 16-byte aligned; this is how a B operand is
//!   read out of a row-major `x` tile (load it as `[tokens, k]`, then `view` it as `[k, tokens]`);
//! - vector groups (see `vector`): the shared layout's lowest sub-dimension along the
//!   contiguous dimension has stride 1 and holds whole groups, every other sub-dimension's
//!   stride is a multiple of the group, any swizzle moves only offset bits at or above the
//!   group, and the group starts are provably aligned (allocations are 128-byte aligned).
//!   Shared tiles lie inside the tensor, so there is no run-time check.

use anybit_layout::fragments::{mma_m16n8k16_a, mma_m16n8k16_b_pair};
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::{Expr, StmtInfo};

use super::vector::{
    group_start_alignment, read_group, run_length, thread_bases, tile_coords, write_group, Plan,
    Vector, WIDTHS,
};
use crate::codegen::emitter::{Emitter, Reg, Shared, R};
use crate::codegen::layout::{contiguous, pow2_factor, shared_offset_expr, Terms};

/// The offsets of a shared tile access as C. The verifier checked ranks, and that the tile
/// fits at literal offsets; an offset the divisibility facts make a constant (through `let`)
/// is known only here, and a tile outside the tensor there is an error.
fn shared_tile(
    e: &Emitter,
    sh: &Shared,
    offsets: &[Expr],
    layout: &RegisterLayout,
) -> R<Vec<String>> {
    for (d, o) in offsets.iter().enumerate() {
        if let Some(c) = e.facts.constant(o) {
            if c < 0 || c as usize + layout.shape()[d] > sh.layout.shape()[d] {
                return Err(e.err(format!(
                    "the tile at offset {c} of size {} does not fit dimension {d} of size {}",
                    layout.shape()[d],
                    sh.layout.shape()[d]
                )));
            }
        }
    }
    Ok(e.offsets(offsets))
}

/// Lowers `%dst = load_shared(%src[offsets]) : layout` (the layout is the result's, in
/// `info`).
pub(in crate::codegen) fn load_shared(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    src: &str,
    offsets: &[Expr],
) -> R<()> {
    let sh = e.shared(src)?;
    let (reg, new) = e.result(info)?;
    let layout = reg.layout.clone();
    let o = shared_tile(e, &sh, offsets, &layout)?;
    let offsets = offsets.to_vec();
    e.with_result(dst, &reg, new, |e, t| {
        if try_ldmatrix(e, &sh, &offsets, &layout, t)?
            || try_ldmatrix_by_register(e, &sh, &offsets, &layout, t)?
        {
            return Ok(());
        }
        let terms = Terms::new(&layout);
        let bases = thread_bases(e, &terms, &o);
        let plan = plan_shared(e, &sh.layout, sh.dtype.bits() as usize, &offsets, &terms);
        emit_load_shared(e, &sh, &layout, &terms, &bases, &plan, t);
        Ok(())
    })
}

/// Lowers `store_shared(%dst[offsets], %src)`: first owners store.
pub(in crate::codegen) fn store_shared(
    e: &mut Emitter,
    dst: &str,
    offsets: &[Expr],
    src: &str,
) -> R<()> {
    let sh = e.shared(dst)?;
    let x = e.register(src)?;
    let o = shared_tile(e, &sh, offsets, &x.layout)?;
    let terms = Terms::new(&x.layout);
    e.open("{");
    let bases = thread_bases(e, &terms, &o);
    let owner = terms.first_owner_cond("tid");
    if let Some(c) = &owner {
        e.open(&format!("if ({c}) {{"));
    }
    let plan = plan_shared(e, &sh.layout, sh.dtype.bits() as usize, offsets, &terms);
    emit_store_shared(e, &sh, &x, &terms, &bases, &plan);
    if owner.is_some() {
        e.close("}");
    }
    e.close("}");
    Ok(())
}

/// Finds the widest vector access for a shared tile access whose groups are contiguous and
/// aligned in the shared layout for every thread and every offset the facts allow.
fn plan_shared(
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

/// Loads a shared tile into the temporary `t` (every element is written).
fn emit_load_shared(
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
        e.note_selection(vec.describe(sh.dtype, "shared loads"));
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
fn emit_store_shared(
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
        e.note_selection(vec.describe(sh.dtype, "shared stores"));
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

/// The `ldmatrix.x4` lowering of a shared load into the temporary `t`, when its preconditions
/// hold; `false` (nothing emitted) otherwise.
fn try_ldmatrix(
    e: &mut Emitter,
    sh: &Shared,
    offsets: &[Expr],
    layout: &RegisterLayout,
    t: &str,
) -> R<bool> {
    if sh.dtype.bits() != 16 || layout.rank() != 2 || e.threads % 32 != 0 {
        return Ok(false);
    }
    let Some(o): Option<Vec<usize>> = offsets
        .iter()
        .map(|x| e.facts.constant(x).and_then(|v| usize::try_from(v).ok()))
        .collect()
    else {
        return Ok(false);
    };
    for (trans, atom) in [(false, mma_m16n8k16_a()), (true, mma_m16n8k16_b_pair())] {
        let Some(q) = layout.divide(&atom) else {
            continue;
        };
        // Every row a lane points at: contiguous 8 elements along dimension 1, 16-byte aligned.
        let qt = Terms::new(&q);
        let mut fits = true;
        'check: for w in 0..q.num_threads() {
            let tc = qt.thread_coords(w);
            for slot in 0..q.local_size() {
                let lc = qt.local_coords(slot);
                for lane in 0..32 {
                    let c = [
                        o[0] + (tc[0] + lc[0]) * 16 + ((lane >> 3) & 1) * 8 + (lane & 7),
                        o[1] + (tc[1] + lc[1]) * 16 + (lane >> 4) * 8,
                    ];
                    if !contiguous(&sh.layout, &c, 1, 8, 8) {
                        fits = false;
                        break 'check;
                    }
                }
            }
        }
        if !fits {
            continue;
        }
        e.note_selection(format!(
            "ldmatrix.sync.aligned.m8n8.x4{}.b16: {} per thread",
            if trans { ".trans" } else { "" },
            q.local_size()
        ));
        let coords: Vec<String> = (0..2)
            .map(|d| {
                let lane = if d == 0 {
                    "((tid >> 3) & 1) * 8 + (tid & 7)"
                } else {
                    "((tid >> 4) & 1) * 8"
                };
                let mut parts = vec![];
                if o[d] != 0 {
                    parts.push(o[d].to_string());
                }
                let w = qt.thread_coord_expr(d, "(tid / 32)");
                if w != "0" {
                    parts.push(format!("({w}) * 16"));
                }
                let s = qt.local_coord_expr(d, "s");
                if s != "0" {
                    parts.push(format!("({s}) * 16"));
                }
                parts.push(lane.to_string());
                parts.join(" + ")
            })
            .collect();
        let off = shared_offset_expr(&sh.layout, &coords);
        let function = if trans {
            "ab_ldmatrix_x4_trans"
        } else {
            "ab_ldmatrix_x4"
        };
        e.open(&format!(
            "#pragma unroll\nfor (int s = 0; s < {}; ++s) {{",
            q.local_size()
        ));
        e.line(&format!(
            "{function}({t} + 4 * s, {} + 2 * ({off}));",
            sh.cname
        ));
        e.close("}");
        return Ok(true);
    }
    Ok(false)
}

/// The register-by-register `ldmatrix` lowering into the temporary `t`, when every register of
/// `layout` is one row-pair of an 8×8 matrix of the last two dimensions as `ldmatrix` (or
/// `ldmatrix.trans`) hands it to its lane, and the matrix's rows are contiguous and 16-byte
/// aligned in the shared layout; `false` (nothing emitted) otherwise.
///
/// Lane `l` gives `ldmatrix` the address of row `l % 8` of matrix `l / 8` of its group. The
/// matrix of register `r` starts, in every lane of warp `w`, at `thread_part(32 w) +
/// local_part(2 r)` (coordinates are thread part plus local part), which is what the emitted
/// address computes.
fn try_ldmatrix_by_register(
    e: &mut Emitter,
    sh: &Shared,
    offsets: &[Expr],
    layout: &RegisterLayout,
    t: &str,
) -> R<bool> {
    let rank = layout.rank();
    if sh.dtype.bits() != 16
        || rank < 2
        || layout.num_threads() % 32 != 0
        || layout.local_size() % 2 != 0
    {
        return Ok(false);
    }
    let Some(o): Option<Vec<usize>> = offsets
        .iter()
        .map(|x| e.facts.constant(x).and_then(|v| usize::try_from(v).ok()))
        .collect()
    else {
        return Ok(false);
    };
    let (row, col) = (rank - 2, rank - 1);
    let registers = layout.local_size() / 2;
    let per_load = [4, 2, 1]
        .into_iter()
        .find(|n| registers % n == 0)
        .unwrap_or(1);
    // Where a lane's pair sits in its matrix, and the dimension the pair runs along.
    let place = |trans: bool, lane: usize| {
        let (i, j) = (lane / 4, 2 * (lane % 4));
        if trans {
            ((j, i), row)
        } else {
            ((i, j), col)
        }
    };
    let fits = |trans: bool| {
        for thread in 0..layout.num_threads() {
            let lane = thread % 32;
            let ((di, dj), along) = place(trans, lane);
            for r in 0..registers {
                let first = layout.coordinates(thread, 2 * r);
                let mut second = first.clone();
                second[along] += 1;
                if layout.coordinates(thread, 2 * r + 1) != second {
                    return false;
                }
                let mut origin = layout.coordinates(thread - lane, 2 * r);
                if first[row] != origin[row] + di || first[col] != origin[col] + dj {
                    return false;
                }
                let mut others = first.clone();
                others[row] = origin[row];
                others[col] = origin[col];
                if others != origin {
                    return false;
                }
                if lane == 0 {
                    for (c, offset) in origin.iter_mut().zip(&o) {
                        *c += offset;
                    }
                    for i in 0..8 {
                        let mut start = origin.clone();
                        start[row] += i;
                        if !contiguous(&sh.layout, &start, col, 8, 8) {
                            return false;
                        }
                    }
                }
            }
        }
        true
    };
    let Some(trans) = [false, true].into_iter().find(|&trans| fits(trans)) else {
        return Ok(false);
    };
    let suffix = if trans { ".trans" } else { "" };
    e.note_selection(format!(
        "ldmatrix.sync.aligned.m8n8.x{per_load}{suffix}.b16 by register: {} per thread",
        registers / per_load
    ));
    let terms = Terms::new(layout);
    let matrix = match per_load {
        4 => " + ((tid >> 3) & 3)",
        2 => " + ((tid >> 3) & 1)",
        _ => "",
    };
    let local = format!("(2 * ({per_load} * s{matrix}))");
    let coords: Vec<String> = (0..rank)
        .map(|d| {
            let mut parts = vec![];
            if o[d] != 0 {
                parts.push(o[d].to_string());
            }
            for part in [
                terms.thread_coord_expr(d, "(tid & ~31)"),
                terms.local_coord_expr(d, &local),
            ] {
                if part != "0" {
                    parts.push(format!("({part})"));
                }
            }
            if d == row {
                parts.push("(tid & 7)".to_string());
            }
            if parts.is_empty() {
                "0".to_string()
            } else {
                parts.join(" + ")
            }
        })
        .collect();
    let off = shared_offset_expr(&sh.layout, &coords);
    e.open(&format!(
        "#pragma unroll\nfor (int s = 0; s < {}; ++s) {{",
        registers / per_load
    ));
    e.line(&format!(
        "ab_ldmatrix<{per_load}, {trans}>({t} + {per_load} * s, {} + 2 * ({off}));",
        sh.cname
    ));
    e.close("}");
    Ok(true)
}
