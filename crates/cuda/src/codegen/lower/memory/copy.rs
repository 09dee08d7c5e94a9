//! Asynchronous copies from global to shared memory: `copy_async`, `commit_group`,
//! `wait_group`.
//!
//! What this module promises: after the `wait_group` that retires it, a `copy_async` has
//! written every element of the shared tensor from the global tile at the offsets (0 where out
//! of bounds). Two lowerings:
//! - `cp.async` of 16, 8 or 4 bytes (selected when proven): the global dimension is contiguous
//!   (stride constant 1), the chunk starts are provably aligned, the shared chunks are
//!   contiguous and aligned (checked for every chunk), and bounds are handled by the
//!   zero-filling `src-size` operand: when the size along the contiguous dimension is a multiple
//!   of the group, a group is all in or all out; otherwise (only 8-bit and wider types) the
//!   source size is the number of in-bounds bytes;
//! - generic: a synchronous copy of elements `tid, tid + T, …` of the tile, complete before any
//!   later `wait_group` returns.

use anybit_vm::Expr;

use super::vector::Vector;
use crate::codegen::emitter::{Emitter, Global, Shared, R};
use crate::codegen::layout::{contiguous, shared_offset_expr};

/// Lowers `copy_async(%dst, %src[offsets])`: `cp.async` where proven, a synchronous copy
/// otherwise.
pub(in crate::codegen) fn copy_async(
    e: &mut Emitter,
    dst: &str,
    src: &str,
    offsets: &[Expr],
) -> R<()> {
    let sh = e.shared(dst)?;
    let g = e.global(src)?;
    let o = e.offsets(offsets);
    e.open("{");
    if try_cp_async(e, &sh, &g, offsets, &o)? {
        e.close("}");
        return Ok(());
    }
    // Generic: each thread copies elements tid, tid + T, ... of the tile (row-major),
    // synchronously; the copy is complete before any later wait_group returns.
    let shape = sh.layout.shape().to_vec();
    let total: usize = shape.iter().product();
    let n = g.dtype.bits();
    e.open(&format!(
        "for (int i = tid; i < {total}; i += {}) {{",
        e.threads
    ));
    let mut coords = Vec::new();
    let mut inner = 1usize;
    let mut decl = Vec::new();
    for d in (0..shape.len()).rev() {
        let mut c = if inner == 1 {
            "i".to_string()
        } else {
            format!("i / {inner}")
        };
        if d != 0 {
            c = if inner == 1 {
                format!("i % {}", shape[d])
            } else {
                format!("({c}) % {}", shape[d])
            };
        }
        decl.push((d, c));
        inner *= shape[d];
    }
    decl.sort();
    for (d, c) in decl {
        e.line(&format!("const int c{d} = {c};"));
        coords.push(format!("c{d}"));
    }
    let in_bounds: Vec<String> = (0..g.rank)
        .map(|d| format!("ab_in({} + c{d}, {}_n{d})", o[d], g.cname))
        .collect();
    let address: Vec<String> = (0..g.rank)
        .map(|d| format!("(i64)({} + c{d}) * {}_t{d}", o[d], g.cname))
        .collect();
    let off = shared_offset_expr(&sh.layout, &coords);
    e.line(&format!(
        "const u32 v = ({}) ? ab_ld<{n}>({}, {}) : 0u;",
        in_bounds.join(" && "),
        g.cname,
        address.join(" + ")
    ));
    e.line(&format!("ab_st<{n}>({}, {off}, v);", sh.cname));
    e.close("}");
    e.close("}");
    Ok(())
}

/// Lowers `commit_group`.
pub(in crate::codegen) fn commit_group(e: &mut Emitter) -> R<()> {
    e.line("ab_commit_group();");
    Ok(())
}

/// Lowers `wait_group(pending)`.
pub(in crate::codegen) fn wait_group(e: &mut Emitter, pending: u32) -> R<()> {
    e.line(&format!("ab_wait_group<{pending}>();"));
    Ok(())
}

/// The `cp.async` lowering, when its preconditions hold; `false` (nothing emitted) otherwise.
fn try_cp_async(
    e: &mut Emitter,
    sh: &Shared,
    g: &Global,
    offsets: &[Expr],
    o: &[String],
) -> R<bool> {
    let bits = g.dtype.bits() as usize;
    let rank = g.rank;
    let shape = sh.layout.shape().to_vec();
    let Some(dim) = (0..rank).rev().find(|&d| g.stride_const[d] == Some(1)) else {
        return Ok(false);
    };
    for bytes in [16usize, 8, 4] {
        // A group of `v` elements is `k` accesses of `bytes` bytes (`v` a power of two).
        let group = Vector::group(dim, bits, bytes);
        let (v, k) = (group.elems, group.accesses);
        if shape[dim] % v != 0 {
            continue;
        }
        // Global alignment of every group start, in elements.
        let aligned = e.facts.divisor(&offsets[dim]) % v as u64 == 0
            && (0..rank).all(|d| d == dim || g.stride_div[d] % v as u64 == 0);
        if !aligned {
            continue;
        }
        // Partial groups: only whole bytes can be zero-filled by `src-size`.
        let whole = g.size_div[dim] % v as u64 == 0;
        if !whole && (bits % 8 != 0 || k != 1) {
            continue;
        }
        // Shared groups contiguous and aligned.
        let mut group_shape = shape.clone();
        group_shape[dim] /= v;
        let groups: usize = group_shape.iter().product();
        let mut ok = true;
        let mut c = vec![0usize; rank];
        for i in 0..groups {
            let mut rest = i;
            for d in (0..rank).rev() {
                c[d] = rest % group_shape[d];
                rest /= group_shape[d];
            }
            c[dim] *= v;
            if !contiguous(&sh.layout, &c, dim, v, v) {
                ok = false;
                break;
            }
        }
        if !ok {
            continue;
        }
        let chunks = groups * k;
        e.note_selection(format!(
            "cp.async {bytes} bytes ({}), {chunks} chunks{}",
            if k == 1 {
                format!("{v} elements of {}", g.dtype)
            } else {
                format!("{k} per group of {v} elements of {}", g.dtype)
            },
            if whole {
                ""
            } else {
                ", partial chunks zero-filled"
            }
        ));
        let threads = e.threads;
        let iters = chunks.div_ceil(threads);
        e.open(&format!(
            "#pragma unroll\nfor (int k = 0; k < {iters}; ++k) {{"
        ));
        e.line(&format!("const int i = tid + k * {threads};"));
        if chunks % threads != 0 {
            e.line(&format!("if (i >= {chunks}) break;"));
        }
        // Chunk i is part `i % k` of group `i / k`.
        let (gi, part) = if k == 1 {
            ("i".to_string(), None)
        } else {
            e.line(&format!("const int gi = i / {k}, part = i % {k};"));
            ("gi".to_string(), Some(bytes))
        };
        let mut decl = Vec::new();
        let mut inner = 1usize;
        for d in (0..rank).rev() {
            let mut x = if inner == 1 {
                gi.clone()
            } else {
                format!("{gi} / {inner}")
            };
            if d != 0 {
                x = format!("({x}) % {}", group_shape[d]);
            }
            if d == dim && v != 1 {
                x = format!("({x}) * {v}");
            }
            decl.push(format!("c{d} = {x}"));
            inner *= group_shape[d];
        }
        decl.reverse();
        e.line(&format!("const int {};", decl.join(", ")));
        let gdecl: Vec<String> = (0..rank)
            .map(|d| format!("x{d} = {} + c{d}", o[d]))
            .collect();
        e.line(&format!("const int {};", gdecl.join(", ")));
        let others: Vec<String> = (0..rank)
            .filter(|&d| d != dim)
            .map(|d| format!("ab_in(x{d}, {}_n{d})", g.cname))
            .collect();
        let address: Vec<String> = (0..rank)
            .map(|d| format!("(i64)x{d} * {}_t{d}", g.cname))
            .collect();
        let mut cond = others.clone();
        if whole {
            cond.push(format!("ab_in(x{dim}, {}_n{dim})", g.cname));
            e.line(&format!(
                "const int n = ({}) ? {bytes} : 0;",
                cond.join(" && ")
            ));
        } else {
            cond.push(format!("x{dim} >= 0 && x{dim} < {}_n{dim}", g.cname));
            e.line(&format!(
                "const int n = ({}) ? min({}_n{dim} - x{dim}, {v}) * {} : 0;",
                cond.join(" && "),
                g.cname,
                bits / 8
            ));
        }
        let coords: Vec<String> = (0..rank).map(|d| format!("c{d}")).collect();
        let off = shared_offset_expr(&sh.layout, &coords);
        let extra = match part {
            Some(b) => format!(" + part * {b}"),
            None => String::new(),
        };
        e.line(&format!(
            "ab_cp_async<{bytes}>({} + (({off}) * {bits} >> 3){extra}, n ? {} + (({}) * {bits} >> 3){extra} : {}, n);",
            sh.cname,
            g.cname,
            address.join(" + "),
            g.cname
        ));
        e.close("}");
        return Ok(true);
    }
    Ok(false)
}
