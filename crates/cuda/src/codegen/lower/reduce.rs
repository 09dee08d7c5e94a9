//! `reduce_sum`, `reduce_max`, `reduce_min` along one dimension of a register tensor.
//!
//! What this module promises: every element of the result combines the source elements along
//! `dim`, as `docs/vm.md` says (a sum may be associated in another order; `min` and `max` are
//! exact). Two lowerings:
//! - in-warp (selected when proven): each thread combines its own slots, then `shfl.xor`
//!   butterflies combine across lanes. Used only when the reduced dimension's thread digits
//!   have power-of-two sizes and strides inside a warp, and every result slot takes the same
//!   source slots in every thread;
//! - generic (any layout): the logical values go to shared scratch memory (first owners
//!   write), then every holder of a result element combines its row.

use std::collections::BTreeMap;

use anybit_vm::{ReduceOp, StmtInfo};

use crate::codegen::element::{ctype, decode, encode, kind, Kind};
use crate::codegen::emitter::{Emitter, Reg, R};
use crate::codegen::layout::Terms;

/// Lowers `%dst = reduce_<op>(%src, dim)`: in-warp where proven, generic otherwise.
/// The verifier proved `dim < rank` and recorded the result layout (the source's reduced along
/// `dim`).
pub(in crate::codegen) fn reduce(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    op: ReduceOp,
    src: &str,
    dim: usize,
) -> R<()> {
    let x = e.register(src)?;
    let (reg, new) = e.result(info)?;
    let out_layout = reg.layout.clone();
    if try_reduce_in_warp(e, dst, &reg, new, op, &x, dim)? {
        return Ok(());
    }
    e.note_selection("generic reduction through shared memory");
    let dtype = x.dtype;
    let float = dtype.is_float();
    let shape = x.layout.shape().to_vec();
    let total: usize = shape.iter().product();
    let scratch = e.scratch(4 * total);
    let vt = if float { "float" } else { ctype(kind(dtype)) };
    e.declare(dst, &reg, new);
    e.open("{");
    e.line(&format!("{vt}* const s = ({vt}*){};", scratch.pointer));
    e.line(scratch.fence());
    let terms = Terms::new(&x.layout);
    let owner = terms.first_owner_cond("tid");
    if let Some(cnd) = &owner {
        e.open(&format!("if ({cnd}) {{"));
    }
    let flat = |coords: &[String]| -> String {
        let mut parts = Vec::new();
        let mut stride = 1;
        for d in (0..shape.len()).rev() {
            parts.push(if stride == 1 {
                format!("({})", coords[d])
            } else {
                format!("({}) * {stride}", coords[d])
            });
            stride *= shape[d];
        }
        parts.join(" + ")
    };
    let coords: Vec<String> = (0..shape.len())
        .map(|d| {
            format!(
                "{} + {}",
                terms.thread_coord_expr(d, "tid"),
                terms.local_coord_expr(d, "l")
            )
        })
        .collect();
    e.open(&format!(
        "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
        x.layout.local_size()
    ));
    e.line(&format!(
        "s[{}] = {};",
        flat(&coords),
        decode(dtype, &format!("ab_get<{}>({}, l)", dtype.bits(), x.cname))
    ));
    e.close("}");
    if owner.is_some() {
        e.close("}");
    }
    e.line("__syncthreads();");
    let oterms = Terms::new(&out_layout);
    let len = shape[dim];
    let step: usize = shape[dim + 1..].iter().product();
    let combine = reduce_combine(op, kind(dtype));
    e.with_result(dst, &reg, false, |e, t| {
        e.open(&format!(
            "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
            out_layout.local_size()
        ));
        let coords: Vec<String> = (0..shape.len())
            .map(|d| {
                format!(
                    "{} + {}",
                    oterms.thread_coord_expr(d, "tid"),
                    oterms.local_coord_expr(d, "l")
                )
            })
            .collect();
        e.line(&format!("const int at = {};", flat(&coords)));
        e.line(&format!("{vt} acc = s[at];"));
        e.line(&format!(
            "for (int kk = 1; kk < {len}; ++kk) {{ const {vt} b = s[at + kk * {step}]; acc = {}; }}",
            combine("acc", "b")
        ));
        e.line(&format!(
            "ab_set<{}>({t}, l, {});",
            dtype.bits(),
            encode(dtype, "acc")
        ));
        e.close("}");
        Ok(())
    })?;
    e.close("}");
    Ok(())
}

/// How a reduction combines two values of the compute type.
fn reduce_combine(op: ReduceOp, k: Kind) -> impl Fn(&str, &str) -> String {
    move |a: &str, b: &str| match (op, k) {
        (ReduceOp::Sum, Kind::Float) => format!("__fadd_rn({a}, {b})"),
        (ReduceOp::Max, Kind::Float) => format!("ab_fmax({a}, {b})"),
        (ReduceOp::Min, Kind::Float) => format!("ab_fmin({a}, {b})"),
        (ReduceOp::Sum, Kind::Signed) => format!("(i32)((u32){a} + (u32){b})"),
        (ReduceOp::Sum, Kind::Unsigned) => format!("{a} + {b}"),
        (ReduceOp::Max, _) => format!("({a} > {b} ? {a} : {b})"),
        (ReduceOp::Min, _) => format!("({a} < {b} ? {a} : {b})"),
    }
}

/// The in-warp reduction, when its preconditions hold; `false` (nothing emitted) otherwise.
fn try_reduce_in_warp(
    e: &mut Emitter,
    dst: &str,
    reg: &Reg,
    new: bool,
    op: ReduceOp,
    x: &Reg,
    dim: usize,
) -> R<bool> {
    let threads = e.threads;
    if threads % 32 != 0 && threads > 32 {
        return Ok(false);
    }
    let terms = Terms::new(&x.layout);
    let pow2 = |v: usize| v.is_power_of_two();
    let mut butterflies = Vec::new();
    for t in &terms.thread_terms {
        if t.dim == dim {
            if !(pow2(t.index_stride) && pow2(t.size) && t.index_stride * t.size <= 32) {
                return Ok(false);
            }
            let mut off = t.index_stride;
            while off < t.index_stride * t.size {
                butterflies.push(off);
                off *= 2;
            }
        }
    }
    let width = if threads < 32 { threads } else { 32 };
    if butterflies.iter().any(|&b| b >= width) {
        return Ok(false);
    }
    // r(l): the result slot each source slot contributes to, the same in every thread.
    let out = &reg.layout;
    let mut slots: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for l in 0..x.layout.local_size() {
        let mut slot = None;
        for t in 0..threads {
            let mut c = x.layout.coordinates(t, l);
            c[dim] = 0;
            let Some(r) = out.local_index_of(t, &c) else {
                return Ok(false);
            };
            match slot {
                None => slot = Some(r),
                Some(s) if s != r => return Ok(false),
                _ => {}
            }
        }
        if let Some(r) = slot {
            slots.entry(r).or_default().push(l);
        }
    }
    if slots.len() != out.local_size() {
        return Ok(false);
    }
    e.note_selection(format!(
        "reduction in registers, then {} shfl.xor step(s) inside warps",
        butterflies.len()
    ));
    let dtype = x.dtype;
    let k = kind(dtype);
    let vt = ctype(k);
    let combine = reduce_combine(op, k);
    let n = dtype.bits();
    let xname = x.cname.clone();
    let full = if threads >= 32 {
        "0xffffffffu".to_string()
    } else {
        format!("0x{:x}u", (1u64 << threads) - 1)
    };
    e.with_result(dst, reg, new, |e, t| {
        e.line(&format!("{vt} acc[{}];", out.local_size()));
        for (r, ls) in &slots {
            for (i, l) in ls.iter().enumerate() {
                let v = decode(dtype, &format!("ab_get<{n}>({xname}, {l})"));
                if i == 0 {
                    e.line(&format!("acc[{r}] = {v};"));
                } else {
                    e.line(&format!(
                        "acc[{r}] = {};",
                        combine(&format!("acc[{r}]"), &v)
                    ));
                }
            }
        }
        for off in &butterflies {
            e.open(&format!(
                "#pragma unroll\nfor (int r = 0; r < {}; ++r) {{",
                out.local_size()
            ));
            e.line(&format!(
                "const {vt} other = __shfl_xor_sync({full}, acc[r], {off});"
            ));
            e.line(&format!("acc[r] = {};", combine("acc[r]", "other")));
            e.close("}");
        }
        e.line(&format!(
            "#pragma unroll\nfor (int r = 0; r < {}; ++r) ab_set<{n}>({t}, r, {});",
            out.local_size(),
            encode(dtype, "acc[r]")
        ));
        Ok(())
    })?;
    Ok(true)
}
