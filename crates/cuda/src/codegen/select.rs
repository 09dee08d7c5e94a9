//! Instruction selection: tensor-core `mma.sync`, `ldmatrix`, `cp.async`, packed 16-bit float
//! arithmetic and in-warp reductions, each used only when layout division (and, for memory,
//! contiguity and alignment) proves it computes what the generic lowering computes.

use anybit_layout::RegisterLayout;
use anybit_vm::{BinaryOp, Expr, Operand, ReduceOp};

use super::emit::{Emitter, Global, Reg, Shared};
use super::CodegenError;

type R<T> = Result<T, CodegenError>;

pub(super) fn try_ldmatrix(
    _e: &mut Emitter,
    _sh: &Shared,
    _offsets: &[Expr],
    _layout: &RegisterLayout,
    _t: &str,
) -> R<bool> {
    Ok(false)
}

pub(super) fn try_cp_async(
    _e: &mut Emitter,
    _sh: &Shared,
    _g: &Global,
    _offsets: &[Expr],
    _o: &[String],
) -> R<bool> {
    Ok(false)
}

pub(super) fn try_packed_binary(
    _e: &mut Emitter,
    _dst: &str,
    _reg: &Reg,
    _new: bool,
    _op: BinaryOp,
    _lhs: &Operand,
    _rhs: &Operand,
) -> R<bool> {
    Ok(false)
}

pub(super) fn try_mma(
    _e: &mut Emitter,
    _dst: &str,
    _reg: &Reg,
    _new: bool,
    _a: &Reg,
    _b: &Reg,
    _c: &Reg,
) -> R<bool> {
    Ok(false)
}

pub(super) fn try_reduce_in_warp(
    _e: &mut Emitter,
    _dst: &str,
    _reg: &Reg,
    _new: bool,
    _op: ReduceOp,
    _x: &Reg,
    _dim: usize,
) -> R<bool> {
    Ok(false)
}
