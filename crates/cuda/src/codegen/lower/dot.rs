//! `dot`: `%d = dot(%a, %b, %c)`, the matrix product `a·b + c` of register tensors, batched
//! over leading dimensions.
//!
//! What this module promises: every element of the result is `c[p][i][j] + Σ_k
//! a[p][i][k]·b[p][k][j]` as `docs/vm.md` says (floats in f32, in the summation order it
//! allows; integers wrapping), for every batch index `p`.
//! Two lowerings:
//! - `mma.sync.aligned.m16n8k16` (selected when proven): f16 or bf16 inputs with f32
//!   accumulators, where `a`, `b` and `c` divide by the fragment atoms of
//!   [`anybit_layout::fragments`] and, for every C fragment, the A and B fragments of every k
//!   step sit in the same local slots in every warp;
//! - generic (any layout and type): the logical values of `a` and `b` go to shared scratch
//!   memory (first owners write), then every holder of an element of the result computes it.

use anybit_dtype::DType;
use anybit_layout::fragments::{mma_m16n8k16_a, mma_m16n8k16_b, mma_m16n8k16_c};

use anybit_vm::StmtInfo;

use crate::codegen::element::{decode, encode};
use crate::codegen::emitter::{Emitter, Reg, R};
use crate::codegen::layout::Terms;

/// Lowers `%dst = dot(%a, %b, %c)`: `mma.sync` where proven, generic otherwise. The verifier
/// proved the shapes (`[.., M, K]·[.., K, N] + [.., M, N]`, rank at least 2) and dtypes (a and
/// b alike, floats with floats); the result has c's type.
pub(in crate::codegen) fn dot(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    a: &str,
    b: &str,
    c: &str,
) -> R<()> {
    let (ra, rb, rc) = (e.register(a)?, e.register(b)?, e.register(c)?);
    let (sa, sb, sc) = (ra.layout.shape(), rb.layout.shape(), rc.layout.shape());
    let rank = sa.len();
    let (m, k, n) = (sa[rank - 2], sa[rank - 1], sb[rank - 1]);
    let batch: usize = sa[..rank - 2].iter().product();
    let (reg, new) = e.result(info)?;
    if try_mma(e, dst, &reg, new, &ra, &rb, &rc)? {
        return Ok(());
    }
    // Generic: logical values of a and b through shared memory, then every holder of an
    // element of c computes it.
    e.note_selection(if batch == 1 {
        format!("generic dot through shared memory ({m}x{k} by {k}x{n})")
    } else {
        format!("generic dot through shared memory ({batch} x {m}x{k} by {k}x{n})")
    });
    let float = ra.dtype.is_float();
    let scratch = e.scratch(4 * batch * (m * k + k * n));
    let vt = if float { "float" } else { "u32" };
    e.declare(dst, &reg, new);
    e.open("{");
    e.line(&format!("{vt}* const sa = ({vt}*){};", scratch.pointer));
    e.line(&format!("{vt}* const sb = sa + {};", batch * m * k));
    e.line(scratch.fence());
    for (r, rows, stride, arr) in [(&ra, m, k, "sa"), (&rb, k, n, "sb")] {
        let terms = Terms::new(&r.layout);
        let owner = terms.first_owner_cond("tid");
        e.open("{");
        if let Some(cnd) = &owner {
            e.open(&format!("if ({cnd}) {{"));
        }
        let t0 = terms.thread_coord_expr(rank - 2, "tid");
        let t1 = terms.thread_coord_expr(rank - 1, "tid");
        e.open(&format!(
            "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
            r.layout.local_size()
        ));
        let v = decode(
            r.dtype,
            &format!("ab_get<{}>({}, l)", r.dtype.bits(), r.cname),
        );
        let v = if float { v } else { format!("(u32)({v})") };
        let row = match batch_index(&terms, sa, "l") {
            Some(p) => format!("{p} * {rows} + {t0}"),
            None => t0,
        };
        e.line(&format!(
            "{arr}[({row} + {}) * {stride} + {t1} + {}] = {v};",
            terms.local_coord_expr(rank - 2, "l"),
            terms.local_coord_expr(rank - 1, "l")
        ));
        e.close("}");
        if owner.is_some() {
            e.close("}");
        }
        e.close("}");
    }
    e.line("__syncthreads();");
    let cname = rc.cname.clone();
    let ct = rc.dtype;
    e.with_result(dst, &reg, false, |e, t| {
        let terms = Terms::new(&rc.layout);
        let t0 = terms.thread_coord_expr(rank - 2, "tid");
        let t1 = terms.thread_coord_expr(rank - 1, "tid");
        e.open(&format!(
            "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
            rc.layout.local_size()
        ));
        let batch = batch_index(&terms, sc, "l");
        let (a_row, b_row) = match &batch {
            Some(p) => {
                e.line(&format!("const int p = {p};"));
                (format!("(p * {m} + i)"), format!("(p * {k} + kk)"))
            }
            None => ("i".to_string(), "kk".to_string()),
        };
        e.line(&format!(
            "const int i = {t0} + {}, j = {t1} + {};",
            terms.local_coord_expr(rank - 2, "l"),
            terms.local_coord_expr(rank - 1, "l")
        ));
        let cv = decode(ct, &format!("ab_get<{}>({cname}, l)", ct.bits()));
        if float {
            e.line(&format!("float acc = {cv};"));
            e.line(&format!(
                "for (int kk = 0; kk < {k}; ++kk) acc = fmaf(sa[{a_row} * {k} + kk], sb[{b_row} * {n} + j], acc);"
            ));
        } else {
            e.line(&format!("u32 acc = (u32)({cv});"));
            e.line(&format!(
                "for (int kk = 0; kk < {k}; ++kk) acc += sa[{a_row} * {k} + kk] * sb[{b_row} * {n} + j];"
            ));
        }
        let res = encode(ct, "acc");
        e.line(&format!("ab_set<{}>({t}, l, {res});", ct.bits()));
        e.close("}");
        Ok(())
    })?;
    e.close("}");
    Ok(())
}

/// The tensor-core lowering, when its preconditions hold; `false` (nothing emitted) otherwise.
fn try_mma(e: &mut Emitter, dst: &str, reg: &Reg, new: bool, a: &Reg, b: &Reg, c: &Reg) -> R<bool> {
    let function = match (a.dtype, c.dtype) {
        (DType::F16, DType::F32) => "ab_mma_f16",
        (DType::Bf16, DType::F32) => "ab_mma_bf16",
        _ => return Ok(false),
    };
    let rank = c.layout.rank();
    let batch_dims = rank - 2;
    let (fa, fb, fc) = (
        mma_m16n8k16_a().with_leading_dims(batch_dims),
        mma_m16n8k16_b().with_leading_dims(batch_dims),
        mma_m16n8k16_c().with_leading_dims(batch_dims),
    );
    let (Some(qa), Some(qb), Some(qc)) = (
        a.layout.divide(&fa),
        b.layout.divide(&fb),
        c.layout.divide(&fc),
    ) else {
        return Ok(false);
    };
    let k_steps = a.layout.shape()[rank - 1] / 16;
    let warps = qc.num_threads();
    // plan[q] = [(a slot, b slot) for each k step], the same in every warp.
    let mut plan: Vec<Vec<(usize, usize)>> = Vec::new();
    for q in 0..qc.local_size() {
        let mut steps = Vec::new();
        for kk in 0..k_steps {
            let mut slot: Option<(usize, usize)> = None;
            for w in 0..warps {
                // [batch.., i, j] of the C tile; A's is [batch.., i, kk], B's [batch.., kk, j].
                let pij = qc.coordinates(w, q);
                let mut pik = pij.clone();
                pik[rank - 1] = kk;
                let mut pkj = pij;
                pkj[rank - 2] = kk;
                let (Some(ia), Some(ib)) = (qa.local_index_of(w, &pik), qb.local_index_of(w, &pkj))
                else {
                    return Ok(false);
                };
                match slot {
                    None => slot = Some((ia, ib)),
                    Some(s) if s != (ia, ib) => return Ok(false),
                    _ => {}
                }
            }
            let Some(s) = slot else {
                return Ok(false);
            };
            steps.push(s);
        }
        plan.push(steps);
    }
    e.note_selection(format!(
        "mma.sync.aligned.m16n8k16 {} -> f32: {} tiles x {} k steps per warp",
        a.dtype,
        qc.local_size(),
        k_steps
    ));
    let (an, bn, cn) = (a.cname.clone(), b.cname.clone(), c.cname.clone());
    let words = c.words();
    e.with_result(dst, reg, new, |e, t| {
        e.line(&format!(
            "#pragma unroll\nfor (int i = 0; i < {words}; ++i) {t}[i] = {cn}[i];"
        ));
        for (q, steps) in plan.iter().enumerate() {
            for &(ia, ib) in steps {
                e.line(&format!(
                    "{function}({t} + {}, {an} + {}, {bn} + {});",
                    4 * q,
                    4 * ia,
                    2 * ib
                ));
            }
        }
        Ok(())
    })?;
    Ok(true)
}

/// The row-major index over the batch (all but the last two) dimensions of a tile of `shape`,
/// as C for the thread `tid` and the local index `local`; `None` without batch dimensions.
fn batch_index(terms: &Terms, shape: &[usize], local: &str) -> Option<String> {
    let rank = shape.len();
    (rank > 2).then(|| {
        let mut index = "0".to_string();
        for (dim, &size) in shape.iter().enumerate().take(rank - 2) {
            index = format!(
                "({index} * {size} + {} + {})",
                terms.thread_coord_expr(dim, "tid"),
                terms.local_coord_expr(dim, local)
            );
        }
        index
    })
}
