//! Instruction selection: `ldmatrix` and `cp.async`.
//!
//! What this module promises: each `try_*` function either emits code that computes exactly
//! what the generic lowering in `emit` computes and returns `true`, or emits nothing and
//! returns `false`. The preconditions are proven at generation time:
//! - `ldmatrix.x4` (`.trans` for the B side): 16-bit elements, constant offsets, the layout
//!   divides by the atom, and every 8-element row the lanes point at is contiguous and 16-byte
//!   aligned in the shared layout (checked for every warp, slot and lane);
//! - `cp.async` of 16, 8 or 4 bytes: the global dimension is contiguous (stride constant 1), the
//!   chunk start is provably aligned, the shared chunks are contiguous and aligned (checked for
//!   every chunk), and bounds are handled by the zero-filling `src-size` operand.

use anybit_layout::fragments::{mma_m16n8k16_a, mma_m16n8k16_b_pair};
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::Expr;

use super::emitter::{Emitter, Global, Shared, R};
use super::layout::{shared_offset_expr, Terms};

/// Does the shared layout hold `len` elements from `c` along `dim` at consecutive offsets, the
/// first one aligned to `align` elements?
fn contiguous(layout: &SharedLayout, c: &[usize], dim: usize, len: usize, align: usize) -> bool {
    let Some(first) = layout.checked_offset(c) else {
        return false;
    };
    if first % align != 0 {
        return false;
    }
    let mut x = c.to_vec();
    (1..len).all(|j| {
        x[dim] = c[dim] + j;
        layout.checked_offset(&x) == Some(first + j)
    })
}

pub(super) fn try_ldmatrix(
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
        e.select(format!(
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

pub(super) fn try_cp_async(
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
        let group = super::vector::Vector::group(dim, bits, bytes);
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
        e.select(format!(
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
