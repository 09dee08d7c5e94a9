//! Elementwise instructions on register tensors: the unary operations (`neg`, `abs`, `exp`),
//! the binary operations (`add` … `max`), the comparisons and `where`, with broadcasting.
//!
//! What this module promises: every result element is what `docs/vm.md` says for the operand
//! elements at the same coordinates (a broadcast operand's size-1 dimensions read coordinate 0),
//! computed in each thread from its own registers. The dtype read, the result layout and each
//! operand's map (full, broadcast over which dimensions, scalar) are the verifier's
//! (`StmtInfo::elementwise`), which proved that every thread holds the broadcast elements it
//! needs; a broadcast operand's local index is found at generation time for every thread. Floats are computed in f32 without contraction and rounded once into the result
//! type; integers wrap. Fast path, used only when its preconditions hold:
//! - packed `fma.rn.{f16x2,bf16x2}` for `add`, `sub`, `mul` of f16/bf16 (a single rounding, as
//!   the f32 computation followed by rounding gives) for an even local size, with operands of
//!   the result's layout, statically indexed broadcasts, scalars or literals.

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;
use anybit_vm::{BinaryOp, CmpOp, Elementwise, ElementwiseOperand, Operand, StmtInfo, UnaryOp};

use crate::codegen::element::{
    ctype, decode, encode, float_c, float_literal_value, kind, mask_hex, Kind,
};
use crate::codegen::emitter::{Emitter, Reg, R};
use crate::codegen::layout::Terms;

/// Lowers `%dst = neg|abs|exp(%src)` (the verifier proved `exp` reads a float).
pub(in crate::codegen) fn unary(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    op: UnaryOp,
    src: &str,
) -> R<()> {
    let x = e.register(src)?;
    let dtype = x.dtype;
    let (reg, new) = e.result(info)?;
    let n = dtype.bits();
    let l = x.layout.local_size();
    e.with_result(dst, &reg, new, |e, t| {
        e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
        let v = decode(dtype, &format!("ab_get<{n}>({}, l)", x.cname));
        e.line(&format!("const {} a = {v};", ctype(kind(dtype))));
        let r = match (op, kind(dtype)) {
            (UnaryOp::Neg, Kind::Float) => "-a".to_string(),
            (UnaryOp::Abs, Kind::Float) => "fabsf(a)".to_string(),
            (UnaryOp::Exp, _) => "expf(a)".to_string(),
            (UnaryOp::Neg, _) => "0u - (u32)a".to_string(),
            (UnaryOp::Abs, Kind::Signed) => "a < 0 ? 0u - (u32)a : (u32)a".to_string(),
            (UnaryOp::Abs, Kind::Unsigned) => "a".to_string(),
        };
        e.line(&format!("ab_set<{n}>({t}, l, {});", encode(dtype, &r)));
        e.close("}");
        Ok(())
    })
}

/// Lowers `%dst = add|sub|mul|div|min|max(lhs, rhs)`: packed f16x2/bf16x2 where it applies,
/// one element at a time otherwise.
pub(in crate::codegen) fn binary(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    op: BinaryOp,
    lhs: &Operand,
    rhs: &Operand,
) -> R<()> {
    let facts = operand_maps(e, info, 2)?;
    let (dtype, layout) = (facts.dtype, &facts.layout);
    let (lhs, rhs) = ((lhs, &facts.operands[0]), (rhs, &facts.operands[1]));
    let (reg, new) = e.result(info)?;
    let n = dtype.bits();
    let l = layout.local_size();
    if try_packed_binary(e, dst, &reg, new, op, lhs, rhs)? {
        return Ok(());
    }
    let a = operand_value(e, lhs, dtype, layout, "l")?;
    let b = operand_value(e, rhs, dtype, layout, "l")?;
    e.with_result(dst, &reg, new, |e, t| {
        e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
        let ct = ctype(kind(dtype));
        e.line(&format!("const {ct} a = {a};"));
        e.line(&format!("const {ct} b = {b};"));
        let r = match (op, kind(dtype)) {
            (BinaryOp::Add, Kind::Float) => "__fadd_rn(a, b)".to_string(),
            (BinaryOp::Sub, Kind::Float) => "__fsub_rn(a, b)".to_string(),
            (BinaryOp::Mul, Kind::Float) => "__fmul_rn(a, b)".to_string(),
            (BinaryOp::Div, Kind::Float) => "__fdiv_rn(a, b)".to_string(),
            (BinaryOp::Min, Kind::Float) => "ab_fmin(a, b)".to_string(),
            (BinaryOp::Max, Kind::Float) => "ab_fmax(a, b)".to_string(),
            (BinaryOp::Add, _) => "(u32)a + (u32)b".to_string(),
            (BinaryOp::Sub, _) => "(u32)a - (u32)b".to_string(),
            (BinaryOp::Mul, _) => "(u32)a * (u32)b".to_string(),
            (BinaryOp::Div, Kind::Signed) if n == 32 => {
                "b == -1 ? 0u - (u32)a : (u32)(a / b)".to_string()
            }
            (BinaryOp::Div, _) => "a / b".to_string(),
            (BinaryOp::Min, _) => "a < b ? a : b".to_string(),
            (BinaryOp::Max, _) => "a > b ? a : b".to_string(),
        };
        e.line(&format!("ab_set<{n}>({t}, l, {});", encode(dtype, &r)));
        e.close("}");
        Ok(())
    })
}

/// Lowers `%dst = eq|ne|lt|le|gt|ge(lhs, rhs)` into a `u1` tensor.
pub(in crate::codegen) fn compare(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    op: CmpOp,
    lhs: &Operand,
    rhs: &Operand,
) -> R<()> {
    let facts = operand_maps(e, info, 2)?;
    let (dtype, layout) = (facts.dtype, &facts.layout);
    let (lhs, rhs) = ((lhs, &facts.operands[0]), (rhs, &facts.operands[1]));
    let (reg, new) = e.result(info)?;
    let a = operand_value(e, lhs, dtype, layout, "l")?;
    let b = operand_value(e, rhs, dtype, layout, "l")?;
    let l = layout.local_size();
    e.with_result(dst, &reg, new, |e, t| {
        e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
        let ct = ctype(kind(dtype));
        e.line(&format!("const {ct} a = {a};"));
        e.line(&format!("const {ct} b = {b};"));
        e.line(&format!(
            "ab_set<1>({t}, l, (a {} b) ? 1u : 0u);",
            op.symbol()
        ));
        e.close("}");
        Ok(())
    })
}

/// Lowers `%dst = where(%cond, then, otherwise)`: codes are chosen, not converted.
pub(in crate::codegen) fn where_(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    cond: &str,
    then: &Operand,
    otherwise: &Operand,
) -> R<()> {
    let facts = operand_maps(e, info, 3)?;
    let (dtype, layout) = (facts.dtype, &facts.layout);
    let c = e.register(cond)?;
    let (reg, new) = e.result(info)?;
    let cc = operand_code(e, &c, &facts.operands[0], layout, "l")?;
    let a = operand_code_of(e, (then, &facts.operands[1]), dtype, layout, "l")?;
    let b = operand_code_of(e, (otherwise, &facts.operands[2]), dtype, layout, "l")?;
    let n = dtype.bits();
    let l = layout.local_size();
    e.with_result(dst, &reg, new, |e, t| {
        e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
        e.line(&format!("ab_set<{n}>({t}, l, {cc} != 0u ? {a} : {b});"));
        e.close("}");
        Ok(())
    })
}

/// Where an operand's element is, relative to the result's local index.
enum OperandIndex {
    /// The same local index.
    Same,
    /// A compile-time function of the result's local index (a C expression of it).
    Static(String),
    /// A run-time value (a C expression of the local index and `tid`).
    Dynamic(String),
}

/// An operand with the verifier's map of it onto the result.
type Mapped<'o> = (&'o Operand, &'o ElementwiseOperand);

/// The verifier's facts about an elementwise instruction with `count` operands (for `where`,
/// the condition first).
fn operand_maps<'i>(e: &Emitter, info: &'i StmtInfo, count: usize) -> R<&'i Elementwise> {
    match &info.elementwise {
        Some(facts) if facts.operands.len() == count => Ok(facts),
        _ => Err(e.internal(format!(
            "the verifier recorded no maps for the {count} operands of this instruction"
        ))),
    }
}

/// Where, in the registers of a tensor operand mapped by `map`, the element is that local
/// index `lvar` (a C variable) of the result (`res`) reads.
fn operand_index(
    e: &Emitter,
    map: &ElementwiseOperand,
    res: &RegisterLayout,
    lvar: &str,
) -> R<OperandIndex> {
    let (dims, op) = match map {
        ElementwiseOperand::Full => return Ok(OperandIndex::Same),
        ElementwiseOperand::Broadcast { dims, layout } => (dims, &**layout),
        ElementwiseOperand::Scalar => {
            return Err(e.internal("a tensor operand is recorded as a scalar"))
        }
    };
    let broadcast: Vec<bool> = (0..res.rank()).map(|d| dims.contains(&d)).collect();
    let (threads, locals) = (res.num_threads(), res.local_size());
    // m[l]: the operand index, if it is the same in every thread.
    let mut table: Vec<Option<usize>> = vec![None; locals];
    let mut uniform = true;
    let mut c = vec![0usize; res.rank()];
    for t in 0..threads {
        for (l, entry) in table.iter_mut().enumerate() {
            res.coordinates_into(t, l, &mut c);
            for d in 0..c.len() {
                if broadcast[d] {
                    c[d] = 0;
                }
            }
            let Some(i) = op.local_index_of(t, &c) else {
                return Err(e.internal(format!(
                    "broadcast operand with layout {op} is not held by thread {t}, which holds result element {:?}",
                    res.coordinates(t, l)
                )));
            };
            match entry {
                None => *entry = Some(i),
                Some(j) if *j != i => uniform = false,
                _ => {}
            }
        }
    }
    let rterms = Terms::new(res);
    if uniform {
        let m: Vec<usize> = table.iter().map(|x| x.unwrap_or(0)).collect();
        // Try m(l) = sum of digit_j(l) * w_j over the result's local digits.
        let mut parts = Vec::new();
        let mut weights = Vec::new();
        for t in &rterms.local_terms {
            let w = m[t.index_stride] as i64 - m[0] as i64;
            weights.push((t.index_stride, t.size, w));
        }
        let linear = (0..locals).all(|l| {
            let v: i64 = m[0] as i64
                + weights
                    .iter()
                    .map(|&(s, z, w)| ((l / s) % z) as i64 * w)
                    .sum::<i64>();
            v == m[l] as i64
        });
        if linear && weights.iter().all(|&(_, _, w)| w >= 0) {
            if m[0] != 0 {
                parts.push(m[0].to_string());
            }
            for &(s, z, w) in weights.iter().rev() {
                if w == 0 {
                    continue;
                }
                let mut dgt = if s == 1 {
                    lvar.to_string()
                } else {
                    format!("{lvar} / {s}")
                };
                if s * z < locals {
                    dgt = format!("({dgt}) % {z}");
                }
                parts.push(if w == 1 {
                    dgt
                } else {
                    format!("({dgt}) * {w}")
                });
            }
            let expr = if parts.is_empty() {
                "0".to_string()
            } else {
                parts.join(" + ")
            };
            return Ok(OperandIndex::Static(expr));
        }
    }
    // Run-time index from the coordinates, read without indexing registers at run time.
    let oterms = Terms::new(op);
    let coords: Vec<String> = (0..res.rank())
        .map(|d| {
            if broadcast[d] {
                "0".to_string()
            } else {
                format!(
                    "({} + {})",
                    rterms.thread_coord_expr(d, "tid"),
                    rterms.local_coord_expr(d, lvar)
                )
            }
        })
        .collect();
    let mut parts = Vec::new();
    for t in &oterms.local_terms {
        parts.push(format!(
            "(({}) / {} % {}) * {}",
            coords[t.dim], t.coord_stride, t.size, t.index_stride
        ));
    }
    Ok(OperandIndex::Dynamic(if parts.is_empty() {
        "0".into()
    } else {
        parts.join(" + ")
    }))
}

/// C expression of the code of register operand `reg` (mapped by `map`) at result local index
/// `lvar`.
fn operand_code(
    e: &Emitter,
    reg: &Reg,
    map: &ElementwiseOperand,
    res: &RegisterLayout,
    lvar: &str,
) -> R<String> {
    let n = reg.dtype.bits();
    Ok(match operand_index(e, map, res, lvar)? {
        OperandIndex::Same => format!("ab_get<{n}>({}, {lvar})", reg.cname),
        OperandIndex::Static(i) => format!("ab_get<{n}>({}, {i})", reg.cname),
        OperandIndex::Dynamic(i) => format!(
            "ab_get_dyn<{n}, {}>({}, {i})",
            reg.layout.local_size(),
            reg.cname
        ),
    })
}

/// The value (compute type of `dtype`, the verifier's for every value operand) of an operand
/// at result local index `lvar`.
fn operand_value(
    e: &Emitter,
    (op, map): Mapped<'_>,
    dtype: DType,
    res: &RegisterLayout,
    lvar: &str,
) -> R<String> {
    match op {
        Operand::Tensor(name) => {
            let r = e.register(name)?;
            Ok(decode(dtype, &operand_code(e, &r, map, res, lvar)?))
        }
        Operand::Scalar(x) => {
            let s = e.scalar(x);
            Ok(match kind(dtype) {
                Kind::Float if dtype == DType::F32 => format!("__int2float_rn({s})"),
                Kind::Float => decode(dtype, &encode(dtype, &format!("__int2float_rn({s})"))),
                _ => decode(dtype, &format!("((u32)({s}) & {})", mask_hex(dtype))),
            })
        }
        // The verifier proved that `dtype` is a float.
        Operand::Float(f) => Ok(float_c(float_literal_value(dtype, f.0))),
    }
}

/// The code (in `dtype`) of an operand at result local index `lvar`.
fn operand_code_of(
    e: &Emitter,
    (op, map): Mapped<'_>,
    dtype: DType,
    res: &RegisterLayout,
    lvar: &str,
) -> R<String> {
    match op {
        Operand::Tensor(name) => operand_code(e, &e.register(name)?, map, res, lvar),
        Operand::Scalar(x) => {
            let s = e.scalar(x);
            Ok(match kind(dtype) {
                Kind::Float => encode(dtype, &format!("__int2float_rn({s})")),
                _ => format!("((u32)({s}) & {})", mask_hex(dtype)),
            })
        }
        Operand::Float(f) => Ok(format!("0x{:x}u", dtype.encode(f.0 as f32))),
    }
}

/// A 32-bit C expression holding the operand's codes for result elements `2j` and `2j + 1`.
fn packed_operand(
    e: &Emitter,
    (op, map): Mapped<'_>,
    dtype: DType,
    res: &RegisterLayout,
) -> R<Option<String>> {
    Ok(Some(match op {
        Operand::Tensor(name) => {
            let r = e.register(name)?;
            match operand_index(e, map, res, "l")? {
                OperandIndex::Same => format!("{}[j]", r.cname),
                OperandIndex::Static(_) => {
                    let lo = match operand_index(e, map, res, "(2 * j)")? {
                        OperandIndex::Static(i) => i,
                        _ => return Ok(None),
                    };
                    let hi = match operand_index(e, map, res, "(2 * j + 1)")? {
                        OperandIndex::Static(i) => i,
                        _ => return Ok(None),
                    };
                    format!(
                        "(ab_get<16>({0}, {lo}) | (ab_get<16>({0}, {hi}) << 16))",
                        r.cname
                    )
                }
                OperandIndex::Dynamic(_) => return Ok(None),
            }
        }
        Operand::Scalar(x) => {
            let s = e.scalar(x);
            let code = encode(dtype, &format!("__int2float_rn({s})"));
            format!("({code} * 0x10001u)")
        }
        Operand::Float(f) => {
            let code = dtype.encode(f.0 as f32);
            format!("0x{:08x}u", code | (code << 16))
        }
    }))
}

/// The packed f16x2/bf16x2 lowering of `add`, `sub`, `mul`, when every operand can be read two
/// codes at a time; `false` (nothing emitted) otherwise.
fn try_packed_binary(
    e: &mut Emitter,
    dst: &str,
    reg: &Reg,
    new: bool,
    op: BinaryOp,
    lhs: Mapped<'_>,
    rhs: Mapped<'_>,
) -> R<bool> {
    let (function, one, minus_one) = match reg.dtype {
        DType::F16 => ("ab_fma_f16x2", "0x3c003c00u", "0xbc00bc00u"),
        DType::Bf16 => ("ab_fma_bf16x2", "0x3f803f80u", "0xbf80bf80u"),
        _ => return Ok(false),
    };
    if !matches!(op, BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul)
        || reg.layout.local_size() % 2 != 0
    {
        return Ok(false);
    }
    let (Some(a), Some(b)) = (
        packed_operand(e, lhs, reg.dtype, &reg.layout)?,
        packed_operand(e, rhs, reg.dtype, &reg.layout)?,
    ) else {
        return Ok(false);
    };
    let expr = match op {
        BinaryOp::Add => format!("{function}({a}, {one}, {b})"),
        BinaryOp::Sub => format!("{function}({b}, {minus_one}, {a})"),
        _ => format!("{function}({a}, {b}, 0x80008000u)"),
    };
    e.note_selection(format!(
        "packed {function} (two {} per instruction)",
        reg.dtype
    ));
    let pairs = reg.layout.local_size() / 2;
    e.with_result(dst, reg, new, |e, t| {
        e.line(&format!(
            "#pragma unroll\nfor (int j = 0; j < {pairs}; ++j) {t}[j] = {expr};"
        ));
        Ok(())
    })?;
    Ok(true)
}
