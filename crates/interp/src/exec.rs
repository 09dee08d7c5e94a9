//! The execution of blocks: scopes, statements and instructions.
//!
//! It runs verified programs only, so it does not check again what the verifier guarantees
//! (scopes, memory spaces, dtypes, ranks, shapes, broadcasting, layouts spanning the block):
//! elementwise instructions and reductions take their result layout and operand maps from the
//! verifier's facts. What is left to report is what only a run can know (the run-time errors
//! of `docs/vm.md`) and, instead of a panic, [`Fault::Internal`] where a lookup by name finds
//! nothing although the verifier saw it.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;

use anybit_dtype::{read_code, write_code, DType};
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::{
    CmpOp, Cond, Elementwise, ElementwiseOperand, Expr, ExprOp, Inst, Literal, Operand, ParamKind,
    Program, ReduceOp, Span, Stmt, StmtKind, TensorType, Verified,
};

use crate::args::Argument;
use crate::error::{internal, Fault, RuntimeError};
use crate::layouts::{LayoutCache, LayoutInfo};
use crate::num::{self, Decoder, FloatDecoder, IntDecoder};

/// The most bits one shared allocation may have in the interpreter (128 MiB).
const MAX_SHARED_BITS: usize = 1 << 30;

/// A register tensor: every slot's code (see [`LayoutInfo`] for slots).
#[derive(Clone)]
pub(crate) struct RegTensor {
    pub dtype: DType,
    pub info: Rc<LayoutInfo>,
    pub codes: Vec<u32>,
}

/// A view of global memory, with its sizes and strides evaluated.
pub(crate) struct GlobalView<'p> {
    pub param: usize,
    pub name: &'p str,
    pub dtype: DType,
    pub sizes: Vec<i64>,
    pub strides: Vec<i64>,
}

enum TensorVar<'p> {
    Register(RegTensor),
    /// Index into [`BlockState::shared`].
    Shared(usize),
    Global(Rc<GlobalView<'p>>),
}

struct SharedAlloc<'p> {
    dtype: DType,
    layout: &'p SharedLayout,
    bytes: Vec<u8>,
}

struct PendingCopy<'p> {
    dst: usize,
    dst_name: &'p str,
    src: Rc<GlobalView<'p>>,
    src_name: &'p str,
    offsets: Vec<i64>,
    span: Span,
}

struct Frame {
    scalars: usize,
    tensors: usize,
}

/// The state of one block.
pub(crate) struct BlockState<'p> {
    /// The block's index (0, 0, 0 while the grid is evaluated: the grid uses no block index).
    index: [i32; 3],
    scalars: Vec<(&'p str, i32)>,
    tensors: Vec<(&'p str, TensorVar<'p>)>,
    frames: Vec<Frame>,
    /// Shared allocations; `None` once freed.
    shared: Vec<Option<SharedAlloc<'p>>>,
    committed: VecDeque<Vec<PendingCopy<'p>>>,
    open: Vec<PendingCopy<'p>>,
}

impl<'p> BlockState<'p> {
    pub fn new(index: [i32; 3]) -> BlockState<'p> {
        BlockState {
            index,
            scalars: Vec::new(),
            tensors: Vec::new(),
            frames: Vec::new(),
            shared: Vec::new(),
            committed: VecDeque::new(),
            open: Vec::new(),
        }
    }

    fn push_frame(&mut self) {
        self.frames.push(Frame {
            scalars: self.scalars.len(),
            tensors: self.tensors.len(),
        });
    }

    fn pop_frame(&mut self) {
        if let Some(frame) = self.frames.pop() {
            self.scalars.truncate(frame.scalars);
            // Shared tensors live until the end of the block that allocated them.
            for (_, var) in self.tensors.drain(frame.tensors..) {
                if let TensorVar::Shared(id) = var {
                    self.shared[id] = None;
                }
            }
        }
    }

    /// The visible tensor variable `name`.
    fn tensor(&self, name: &str) -> Result<&TensorVar<'p>, Fault> {
        match self.tensors.iter().rev().find(|(n, _)| *n == name) {
            Some((_, var)) => Ok(var),
            None => Err(internal(format!("no tensor `%{name}` is visible"))),
        }
    }

    fn register(&self, name: &str) -> Result<&RegTensor, Fault> {
        match self.tensor(name)? {
            TensorVar::Register(tensor) => Ok(tensor),
            _ => Err(internal(format!("`%{name}` is not a register tensor"))),
        }
    }

    fn global(&self, name: &str) -> Result<Rc<GlobalView<'p>>, Fault> {
        match self.tensor(name)? {
            TensorVar::Global(view) => Ok(view.clone()),
            _ => Err(internal(format!("`%{name}` is not a global tensor"))),
        }
    }

    /// The index of the live shared allocation of `%name` in [`BlockState::shared`].
    fn shared_id(&self, name: &str) -> Result<usize, Fault> {
        match self.tensor(name)? {
            TensorVar::Shared(id) if matches!(self.shared.get(*id), Some(Some(_))) => Ok(*id),
            _ => Err(internal(format!("`%{name}` is not a live shared tensor"))),
        }
    }

    fn shared(&self, name: &str) -> Result<&SharedAlloc<'p>, Fault> {
        let id = self.shared_id(name)?;
        self.shared[id]
            .as_ref()
            .ok_or_else(|| internal(format!("`%{name}` is not a live shared tensor")))
    }

    /// Defines a new shared or global tensor variable (the verifier saw that none is visible).
    fn define(&mut self, name: &'p str, var: TensorVar<'p>) {
        self.tensors.push((name, var));
    }

    /// Overwrites the visible register tensor `name` (which has the value's type: the verifier
    /// checked), or defines it when none is visible.
    fn assign(&mut self, name: &'p str, value: RegTensor) {
        match self.tensors.iter_mut().rev().find(|(n, _)| *n == name) {
            Some((_, TensorVar::Register(old))) => old.codes = value.codes,
            _ => self.tensors.push((name, TensorVar::Register(value))),
        }
    }
}

/// The result layout of an elementwise instruction and its `N` operands, one code per result
/// slot each.
type Aligned<'s, const N: usize> = (Rc<LayoutInfo>, [Cow<'s, [u32]>; N]);

/// What a run needs besides the state of a block.
pub(crate) struct Machine<'p, 'o> {
    pub verified: &'p Verified<'p>,
    pub program: &'p Program,
    pub args: Vec<Argument>,
    pub layouts: LayoutCache,
    pub out: &'o mut dyn Write,
}

fn located(
    st: &BlockState,
    span: Span,
    statement: &'static str,
    fault: Fault,
) -> Box<RuntimeError> {
    let [x, y, z] = st.index;
    Box::new(RuntimeError {
        block: [x as u32, y as u32, z as u32],
        span,
        statement,
        fault,
    })
}

fn scalar_op(op: ExprOp, a: i32, b: i32) -> Result<i32, Fault> {
    let overflow = || Fault::Overflow {
        op: op.symbol(),
        lhs: a,
        rhs: b,
    };
    match op {
        ExprOp::Add => a.checked_add(b).ok_or_else(overflow),
        ExprOp::Sub => a.checked_sub(b).ok_or_else(overflow),
        ExprOp::Mul => a.checked_mul(b).ok_or_else(overflow),
        ExprOp::Div | ExprOp::Rem if b == 0 => Err(Fault::DivisionByZero {
            op: op.symbol(),
            lhs: a,
        }),
        ExprOp::Div => a.checked_div(b).ok_or_else(overflow),
        // i32::MIN % -1 is 0 exactly (only the quotient overflows).
        ExprOp::Rem => Ok(a.wrapping_rem(b)),
        ExprOp::Min => Ok(a.min(b)),
        ExprOp::Max => Ok(a.max(b)),
        ExprOp::CeilDiv => {
            if b <= 0 {
                return Err(Fault::CeilDivByNonPositive { lhs: a, rhs: b });
            }
            let (a64, b64) = (a as i64, b as i64);
            let quotient = a64.div_euclid(b64) + i64::from(a64.rem_euclid(b64) != 0);
            i32::try_from(quotient).map_err(|_| overflow())
        }
    }
}

impl<'p> Machine<'p, '_> {
    /// Runs the program's body as block `st`.
    pub fn run_block(&mut self, st: &mut BlockState<'p>) -> Result<(), Box<RuntimeError>> {
        self.exec_body(st, &self.program.body)
    }

    fn exec_body(
        &mut self,
        st: &mut BlockState<'p>,
        body: &'p [Stmt],
    ) -> Result<(), Box<RuntimeError>> {
        st.push_frame();
        let result = body.iter().try_for_each(|stmt| self.exec_stmt(st, stmt));
        st.pop_frame();
        result
    }

    fn exec_stmt(
        &mut self,
        st: &mut BlockState<'p>,
        stmt: &'p Stmt,
    ) -> Result<(), Box<RuntimeError>> {
        match &stmt.kind {
            StmtKind::Let { name, value } => {
                let value = self
                    .eval(st, value)
                    .map_err(|fault| located(st, stmt.span, "let", fault))?;
                st.scalars.push((name, value));
                Ok(())
            }
            StmtKind::For(lp) => {
                let bounds = (|| {
                    let start = self.eval(st, &lp.start)?;
                    let end = self.eval(st, &lp.end)?;
                    let step = self.eval(st, &lp.step)?;
                    if step <= 0 {
                        return Err(Fault::NonPositiveStep(step));
                    }
                    Ok((start, end, step))
                })();
                let (start, end, step) =
                    bounds.map_err(|fault| located(st, stmt.span, "for", fault))?;
                let mut i = start as i64;
                while i < end as i64 {
                    st.push_frame();
                    st.scalars.push((&lp.var, i as i32));
                    let result = lp.body.iter().try_for_each(|s| self.exec_stmt(st, s));
                    st.pop_frame();
                    result?;
                    i += step as i64;
                }
                Ok(())
            }
            StmtKind::If {
                cond,
                then_body,
                else_body,
            } => {
                let taken = self
                    .cond(st, cond)
                    .map_err(|fault| located(st, stmt.span, "if", fault))?;
                self.exec_body(st, if taken { then_body } else { else_body })
            }
            StmtKind::Inst(inst) => self
                .exec_inst(st, stmt, inst)
                .map_err(|fault| located(st, stmt.span, inst.mnemonic(), fault)),
        }
    }

    fn scalar(&self, st: &BlockState, name: &str) -> Result<i32, Fault> {
        if let Some((_, value)) = st.scalars.iter().rev().find(|(n, _)| *n == name) {
            return Ok(*value);
        }
        match self.program.params.iter().position(|p| p.name == name) {
            Some(index) => match self.args.get(index) {
                Some(Argument::Int(value)) => Ok(*value),
                _ => Err(internal(format!("`{name}` is not an i32"))),
            },
            None => Err(internal(format!("no scalar `{name}` is visible"))),
        }
    }

    pub fn eval(&self, st: &BlockState, expr: &Expr) -> Result<i32, Fault> {
        match expr {
            Expr::Const(value) => Ok(*value),
            Expr::Var(name) => self.scalar(st, name),
            Expr::BlockIdx(axis) => Ok(st.index[axis.index()]),
            Expr::Binary(op, a, b) => {
                let a = self.eval(st, a)?;
                let b = self.eval(st, b)?;
                scalar_op(*op, a, b)
            }
        }
    }

    fn cond(&self, st: &BlockState, cond: &Cond) -> Result<bool, Fault> {
        Ok(match cond {
            Cond::Bool(value) => *value,
            Cond::Compare(op, a, b) => {
                let (a, b) = (self.eval(st, a)?, self.eval(st, b)?);
                match op {
                    CmpOp::Lt => a < b,
                    CmpOp::Le => a <= b,
                    CmpOp::Gt => a > b,
                    CmpOp::Ge => a >= b,
                    CmpOp::Eq => a == b,
                    CmpOp::Ne => a != b,
                }
            }
            // Both sides are evaluated, so an error in either is an error.
            Cond::And(a, b) => {
                let a = self.cond(st, a)?;
                self.cond(st, b)? && a
            }
            Cond::Or(a, b) => {
                let a = self.cond(st, a)?;
                self.cond(st, b)? || a
            }
            Cond::Not(a) => !self.cond(st, a)?,
        })
    }

    fn offsets(&self, st: &BlockState, offsets: &[Expr]) -> Result<Vec<i64>, Fault> {
        offsets
            .iter()
            .map(|e| self.eval(st, e).map(i64::from))
            .collect()
    }

    /// The verifier's operand maps of the elementwise instruction `stmt`.
    fn elementwise_facts(&self, stmt: &Stmt) -> Result<&'p Elementwise, Fault> {
        self.verified
            .info(stmt)
            .and_then(|info| info.elementwise.as_ref())
            .ok_or_else(|| internal("an elementwise instruction without operand maps"))
    }

    fn exec_inst(
        &mut self,
        st: &mut BlockState<'p>,
        stmt: &'p Stmt,
        inst: &'p Inst,
    ) -> Result<(), Fault> {
        let span = stmt.span;
        match inst {
            Inst::AllocRegister {
                dst,
                dtype,
                layout,
                init,
            } => {
                let info = self.layouts.get(layout)?;
                let code = match init {
                    Some(Literal::Int(value)) => num::int_constant(*dtype, *value),
                    Some(Literal::Float(value)) => num::float_constant(*dtype, value.0),
                    // Unspecified contents: all one bits.
                    None => dtype.code_mask(),
                };
                let codes = vec![code; info.num_slots()];
                st.assign(
                    dst,
                    RegTensor {
                        dtype: *dtype,
                        info,
                        codes,
                    },
                );
                Ok(())
            }
            Inst::AllocShared { dst, dtype, layout } => {
                let bits = layout
                    .span()
                    .checked_mul(dtype.bits() as usize)
                    .filter(|&bits| bits <= MAX_SHARED_BITS)
                    .ok_or_else(|| {
                        Fault::TooLarge(format!(
                            "shared tensor `%{dst}` spans {} elements of {dtype}; the \
                             interpreter allows at most {MAX_SHARED_BITS} bits",
                            layout.span()
                        ))
                    })?;
                let bytes = vec![0xff; bits.div_ceil(8)];
                st.shared.push(Some(SharedAlloc {
                    dtype: *dtype,
                    layout,
                    bytes,
                }));
                st.define(dst, TensorVar::Shared(st.shared.len() - 1));
                Ok(())
            }
            Inst::FreeShared { tensor } => {
                let id = st.shared_id(tensor)?;
                st.shared[id] = None;
                Ok(())
            }
            Inst::ViewGlobal {
                dst,
                ptr,
                shape,
                strides,
            } => {
                let (param, dtype) = self
                    .program
                    .params
                    .iter()
                    .enumerate()
                    .find_map(|(index, p)| match p.kind {
                        ParamKind::Pointer(dtype) if p.name == *ptr => Some((index, dtype)),
                        _ => None,
                    })
                    .ok_or_else(|| internal(format!("`{ptr}` is not a pointer parameter")))?;
                let sizes = self.offsets(st, shape)?;
                let strides = self.offsets(st, strides)?;
                if let Some(dim) = sizes.iter().position(|&s| s < 0) {
                    return Err(Fault::NegativeSize {
                        tensor: dst.clone(),
                        dim,
                        size: sizes[dim] as i32,
                    });
                }
                let view = GlobalView {
                    param,
                    name: ptr,
                    dtype,
                    sizes,
                    strides,
                };
                st.define(dst, TensorVar::Global(Rc::new(view)));
                Ok(())
            }
            Inst::LoadGlobal {
                dst,
                src,
                offsets,
                layout,
            } => {
                let view = st.global(src)?;
                let offsets = self.offsets(st, offsets)?;
                let info = self.layouts.get(layout)?;
                let codes = self.load_global(&view, src, &offsets, &info)?;
                st.assign(
                    dst,
                    RegTensor {
                        dtype: view.dtype,
                        info,
                        codes,
                    },
                );
                Ok(())
            }
            Inst::StoreGlobal { dst, offsets, src } => {
                let view = st.global(dst)?;
                let offsets = self.offsets(st, offsets)?;
                let tensor = st.register(src)?;
                self.store_global(&view, dst, &offsets, tensor)
            }
            Inst::LoadShared {
                dst,
                src,
                offsets,
                layout,
            } => {
                let offsets = self.offsets(st, offsets)?;
                let info = self.layouts.get(layout)?;
                let alloc = st.shared(src)?;
                let positions = shared_tile(alloc.layout, src, &offsets, &info)?;
                let bits = alloc.dtype.bits();
                let codes = info
                    .slot_element
                    .iter()
                    .map(|&element| read_code(&alloc.bytes, bits, positions[element as usize]))
                    .collect();
                let dtype = alloc.dtype;
                st.assign(dst, RegTensor { dtype, info, codes });
                Ok(())
            }
            Inst::StoreShared { dst, offsets, src } => {
                let offsets = self.offsets(st, offsets)?;
                let id = st.shared_id(dst)?;
                let tensor = st.register(src)?;
                let alloc = st.shared(dst)?;
                let positions = shared_tile(alloc.layout, dst, &offsets, &tensor.info)?;
                let bits = alloc.dtype.bits();
                let logical: Vec<u32> = tensor
                    .info
                    .first_owner
                    .iter()
                    .map(|&slot| tensor.codes[slot as usize])
                    .collect();
                if let Some(alloc) = &mut st.shared[id] {
                    for (element, &code) in logical.iter().enumerate() {
                        write_code(&mut alloc.bytes, bits, positions[element], code);
                    }
                }
                Ok(())
            }
            Inst::CopyAsync { dst, src, offsets } => {
                let id = st.shared_id(dst)?;
                let view = st.global(src)?;
                let offsets = self.offsets(st, offsets)?;
                st.open.push(PendingCopy {
                    dst: id,
                    dst_name: dst,
                    src: view,
                    src_name: src,
                    offsets,
                    span,
                });
                Ok(())
            }
            Inst::CommitGroup => {
                let group = std::mem::take(&mut st.open);
                st.committed.push_back(group);
                Ok(())
            }
            Inst::WaitGroup { pending } => {
                while st.committed.len() > *pending as usize {
                    if let Some(group) = st.committed.pop_front() {
                        for copy in &group {
                            self.complete_copy(st, copy).map_err(|fault| match fault {
                                fault @ Fault::CopyDestinationFreed { .. } => fault,
                                fault => Fault::InCopy {
                                    copy_span: copy.span,
                                    fault: Box::new(fault),
                                },
                            })?;
                        }
                    }
                }
                Ok(())
            }
            Inst::Barrier => Ok(()),
            Inst::View {
                dst,
                src,
                dtype,
                layout,
                offset,
            } => {
                let info = self.layouts.get(layout)?;
                let tensor = st.register(src)?;
                let codes = view_codes(tensor, *dtype, &info, offset.unwrap_or(0));
                st.assign(
                    dst,
                    RegTensor {
                        dtype: *dtype,
                        info,
                        codes,
                    },
                );
                Ok(())
            }
            Inst::Cast {
                dst,
                src,
                dtype,
                layout,
            } => {
                let tensor = st.register(src)?;
                let converted = num::cast(tensor.dtype, *dtype, &tensor.codes);
                let result = self.placed(*dtype, converted, &tensor.info, layout.as_ref())?;
                st.assign(dst, result);
                Ok(())
            }
            Inst::CastPlanes {
                dst,
                planes,
                code,
                dtype,
                layout,
            } => {
                let first = st.register(&planes[0])?;
                let mut joined = vec![0u32; first.codes.len()];
                let mut shift = 0;
                for plane in planes {
                    let plane = st.register(plane)?;
                    // The plane's codes in the first plane's local order.
                    let ordered = reorder(&plane.codes, &plane.info.layout, &first.info.layout)?;
                    for (code, part) in joined.iter_mut().zip(ordered) {
                        *code |= part << shift;
                    }
                    shift += plane.dtype.bits();
                }
                let converted = num::cast(*code, *dtype, &joined);
                let result = self.placed(*dtype, converted, &first.info, layout.as_ref())?;
                st.assign(dst, result);
                Ok(())
            }
            Inst::Unary { dst, op, src } => {
                let tensor = st.register(src)?;
                let result = RegTensor {
                    dtype: tensor.dtype,
                    info: tensor.info.clone(),
                    codes: num::unary(tensor.dtype, *op, &tensor.codes),
                };
                st.assign(dst, result);
                Ok(())
            }
            Inst::Binary { dst, op, lhs, rhs } => {
                let facts = self.elementwise_facts(stmt)?;
                let (info, operands) = self.aligned(st, facts, [lhs, rhs])?;
                let [a, b] = operands;
                let codes = num::binary(facts.dtype, *op, &a, &b).map_err(|slot| {
                    Fault::TensorDivisionByZero {
                        coordinates: info.coords(slot).iter().map(|&c| c as usize).collect(),
                    }
                })?;
                let dtype = facts.dtype;
                st.assign(dst, RegTensor { dtype, info, codes });
                Ok(())
            }
            Inst::Compare { dst, op, lhs, rhs } => {
                let facts = self.elementwise_facts(stmt)?;
                let (info, operands) = self.aligned(st, facts, [lhs, rhs])?;
                let [a, b] = operands;
                let codes = num::compare(facts.dtype, *op, &a, &b);
                let dtype = DType::Unsigned(1);
                st.assign(dst, RegTensor { dtype, info, codes });
                Ok(())
            }
            Inst::Where {
                dst,
                cond,
                then,
                otherwise,
            } => {
                let facts = self.elementwise_facts(stmt)?;
                let cond = Operand::Tensor(cond.clone());
                let (info, operands) = self.aligned(st, facts, [&cond, then, otherwise])?;
                let [cond, then, otherwise] = operands;
                let codes = choose(&cond, &then, &otherwise);
                let dtype = facts.dtype;
                st.assign(dst, RegTensor { dtype, info, codes });
                Ok(())
            }
            Inst::Dot { dst, a, b, c } => {
                let result = dot(st.register(a)?, st.register(b)?, st.register(c)?);
                st.assign(dst, result);
                Ok(())
            }
            Inst::Reduce { dst, op, src, dim } => {
                let layout = self
                    .verified
                    .info(stmt)
                    .and_then(|info| info.result_layout())
                    .ok_or_else(|| internal("a reduction without a result layout"))?;
                let info = self.layouts.get(layout)?;
                let result = reduce(st.register(src)?, *op, *dim as usize, info);
                st.assign(dst, result);
                Ok(())
            }
            Inst::Print { src } => self.print(st, src),
        }
    }

    /// The global element index of `offsets + coords`: `Ok(None)` when a coordinate is out of
    /// bounds, an error when the element is outside the buffer.
    fn global_element(
        &self,
        view: &GlobalView,
        tensor: &str,
        offsets: &[i64],
        coords: &[u32],
    ) -> Result<Option<usize>, Fault> {
        let mut element: i64 = 0;
        let mut overflow = false;
        // The verifier saw equal ranks: one offset, coordinate, size and stride per dimension.
        let dims = offsets
            .iter()
            .zip(coords)
            .zip(&view.sizes)
            .zip(&view.strides);
        for (((&offset, &coord), &size), &stride) in dims {
            let c = offset + coord as i64;
            if c < 0 || c >= size {
                return Ok(None);
            }
            match c
                .checked_mul(stride)
                .and_then(|term| element.checked_add(term))
            {
                Some(sum) => element = sum,
                None => overflow = true,
            }
        }
        let capacity = self.buffer(view.param).len() as u64 * 8 / view.dtype.bits() as u64;
        if overflow || element < 0 || element as u64 >= capacity {
            return Err(Fault::OutsideBuffer {
                param: view.name.to_string(),
                tensor: tensor.to_string(),
                coordinates: offsets
                    .iter()
                    .zip(coords)
                    .map(|(&o, &c)| o + c as i64)
                    .collect(),
                element: if overflow { i64::MAX } else { element },
                capacity,
            });
        }
        Ok(Some(element as usize))
    }

    fn buffer(&self, param: usize) -> &[u8] {
        match self.args.get(param) {
            Some(Argument::Buffer(bytes)) => bytes,
            _ => &[],
        }
    }

    fn load_global(
        &self,
        view: &GlobalView,
        tensor: &str,
        offsets: &[i64],
        info: &LayoutInfo,
    ) -> Result<Vec<u32>, Fault> {
        let bits = view.dtype.bits();
        let bytes = self.buffer(view.param);
        let mut codes = Vec::with_capacity(info.num_slots());
        for slot in 0..info.num_slots() {
            let code = match self.global_element(view, tensor, offsets, info.coords(slot))? {
                Some(element) => read_code(bytes, bits, element),
                None => 0,
            };
            codes.push(code);
        }
        Ok(codes)
    }

    fn store_global(
        &mut self,
        view: &GlobalView,
        tensor: &str,
        offsets: &[i64],
        src: &RegTensor,
    ) -> Result<(), Fault> {
        let bits = view.dtype.bits();
        for &slot in src.info.first_owner.iter() {
            let slot = slot as usize;
            let Some(element) =
                self.global_element(view, tensor, offsets, src.info.coords(slot))?
            else {
                continue;
            };
            if let Some(Argument::Buffer(bytes)) = self.args.get_mut(view.param) {
                write_code(bytes, bits, element, src.codes[slot]);
            }
        }
        Ok(())
    }

    /// The result of a `cast` or `cast_planes`: `codes` (thread-major, in `from`'s local order)
    /// put in `layout`'s order where given.
    fn placed(
        &mut self,
        dtype: DType,
        codes: Vec<u32>,
        from: &Rc<LayoutInfo>,
        layout: Option<&RegisterLayout>,
    ) -> Result<RegTensor, Fault> {
        let (codes, info) = match layout {
            None => (codes, from.clone()),
            Some(layout) => (
                reorder(&codes, &from.layout, layout)?,
                self.layouts.get(layout)?,
            ),
        };
        Ok(RegTensor { dtype, info, codes })
    }

    fn complete_copy(&self, st: &mut BlockState<'p>, copy: &PendingCopy<'p>) -> Result<(), Fault> {
        let Some(alloc) = &st.shared[copy.dst] else {
            return Err(Fault::CopyDestinationFreed {
                tensor: copy.dst_name.to_string(),
                copy_span: copy.span,
            });
        };
        let layout = alloc.layout;
        let shape = layout.shape().to_vec();
        let count: usize = shape.iter().product();
        let bits = copy.src.dtype.bits();
        let bytes = self.buffer(copy.src.param);
        let mut coords = vec![0u32; shape.len()];
        let mut coords_usize = vec![0usize; shape.len()];
        let mut writes = Vec::with_capacity(count);
        for element in 0..count {
            let mut rest = element;
            for d in (0..shape.len()).rev() {
                coords_usize[d] = rest % shape[d];
                coords[d] = coords_usize[d] as u32;
                rest /= shape[d];
            }
            let code =
                match self.global_element(&copy.src, copy.src_name, &copy.offsets, &coords)? {
                    Some(index) => read_code(bytes, bits, index),
                    None => 0,
                };
            writes.push((layout.offset(&coords_usize), code));
        }
        if let Some(alloc) = &mut st.shared[copy.dst] {
            let capacity = alloc.bytes.len() * 8 / bits as usize;
            for (offset, code) in writes {
                // SharedLayout promises offsets below its span for coordinates in its shape.
                if offset >= capacity {
                    return Err(internal(format!(
                        "shared offset {offset} of `%{}` is outside its allocation",
                        copy.dst_name
                    )));
                }
                write_code(&mut alloc.bytes, bits, offset, code);
            }
        }
        Ok(())
    }

    /// The operands of an elementwise instruction with the verifier's `facts`, aligned with
    /// its result: one code per result slot each, in its dtype (`u1` for a condition), and the
    /// result's layout tables.
    fn aligned<'s, const N: usize>(
        &mut self,
        st: &'s BlockState<'p>,
        facts: &Elementwise,
        operands: [&Operand; N],
    ) -> Result<Aligned<'s, N>, Fault> {
        let info = self.layouts.get(&facts.layout)?;
        let slots = info.num_slots();
        let mut aligned: [Cow<'s, [u32]>; N] = std::array::from_fn(|_| Cow::Borrowed(&[][..]));
        for ((operand, fact), out) in operands.iter().zip(&facts.operands).zip(&mut aligned) {
            *out = match operand {
                Operand::Tensor(name) => {
                    let tensor = st.register(name)?;
                    match fact {
                        ElementwiseOperand::Full => Cow::Borrowed(&tensor.codes[..]),
                        _ => {
                            let map = self.layouts.broadcast(&info, &tensor.info)?;
                            let codes = &tensor.codes;
                            Cow::Owned(map.iter().map(|&slot| codes[slot as usize]).collect())
                        }
                    }
                }
                Operand::Scalar(expr) => {
                    let value = i64::from(self.eval(st, expr)?);
                    Cow::Owned(vec![num::int_constant(facts.dtype, value); slots])
                }
                Operand::Float(value) => {
                    Cow::Owned(vec![num::float_constant(facts.dtype, value.0); slots])
                }
            };
        }
        Ok((info, aligned))
    }

    fn print(&mut self, st: &BlockState<'p>, name: &str) -> Result<(), Fault> {
        let (ty, shape, codes): (TensorType, Vec<usize>, Vec<u32>) = match st.tensor(name)? {
            TensorVar::Register(t) => (
                TensorType::Register {
                    dtype: t.dtype,
                    layout: t.info.layout.clone(),
                },
                t.info.shape.clone(),
                t.info
                    .first_owner
                    .iter()
                    .map(|&slot| t.codes[slot as usize])
                    .collect(),
            ),
            TensorVar::Shared(_) => {
                let alloc = st.shared(name)?;
                let shape = alloc.layout.shape().to_vec();
                let count: usize = shape.iter().product();
                let mut coords = vec![0usize; shape.len()];
                let mut codes = Vec::with_capacity(count);
                for element in 0..count {
                    let mut rest = element;
                    for d in (0..shape.len()).rev() {
                        coords[d] = rest % shape[d];
                        rest /= shape[d];
                    }
                    codes.push(read_code(
                        &alloc.bytes,
                        alloc.dtype.bits(),
                        alloc.layout.offset(&coords),
                    ));
                }
                (
                    TensorType::Shared {
                        dtype: alloc.dtype,
                        layout: alloc.layout.clone(),
                    },
                    shape,
                    codes,
                )
            }
            TensorVar::Global(_) => {
                return Err(internal(format!("`%{name}` is a global tensor")));
            }
        };
        let [x, y, z] = st.index;
        let decoder = Decoder::new(ty.dtype());
        let values: Vec<String> = codes
            .iter()
            .map(|&code| num::format_value(&decoder, code))
            .collect();
        let mut text = format!("%{name} in block ({x},{y},{z}): {ty}\n");
        crate::print::nested(&mut text, &shape, &values);
        text.push('\n');
        self.out.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// `where`: the `then` code where the condition is 1, the `otherwise` code elsewhere.
fn choose(cond: &[u32], then: &[u32], otherwise: &[u32]) -> Vec<u32> {
    cond.iter()
        .zip(then.iter().zip(otherwise))
        .map(|(&c, (&a, &b))| if c != 0 { a } else { b })
        .collect()
}

/// Element offsets in the shared allocation of every element of a tile at `offsets`.
fn shared_tile(
    layout: &SharedLayout,
    tensor: &str,
    offsets: &[i64],
    tile: &LayoutInfo,
) -> Result<Vec<usize>, Fault> {
    let fits = offsets
        .iter()
        .zip(&tile.shape)
        .zip(layout.shape())
        .all(|((&o, &t), &s)| o >= 0 && o + t as i64 <= s as i64);
    if !fits {
        return Err(Fault::SharedTileOutOfRange {
            tensor: tensor.to_string(),
            offsets: offsets.to_vec(),
            tile: tile.shape.clone(),
            shape: layout.shape().to_vec(),
        });
    }
    let span = layout.span();
    let mut coords = vec![0usize; offsets.len()];
    let mut positions = Vec::with_capacity(tile.num_elements);
    for element in 0..tile.num_elements {
        for ((c, &o), &t) in coords
            .iter_mut()
            .zip(offsets)
            .zip(tile.element_coords(element))
        {
            *c = o as usize + t as usize;
        }
        let offset = layout.offset(&coords);
        // SharedLayout promises offsets below its span for coordinates in its shape.
        if offset >= span {
            return Err(internal(format!(
                "shared offset {offset} of `%{tensor}` is outside its span {span}"
            )));
        }
        positions.push(offset);
    }
    Ok(positions)
}

/// `view`: every thread's register bits, reread as `dtype` in the layout of `info` (the
/// verifier saw that both layouts give each thread the same number of bits).
fn view_codes(src: &RegTensor, dtype: DType, info: &LayoutInfo, offset: u32) -> Vec<u32> {
    let (n, m) = (src.dtype.bits(), dtype.bits());
    let mask = dtype.code_mask() as u64;
    let mut codes = Vec::with_capacity(info.num_slots());
    for thread_codes in src.codes.chunks(src.info.local_size.max(1)) {
        // Skip the source elements wholly before `offset`, then the bits of the one it starts in.
        let skipped = (offset / n) as usize;
        let mut source = thread_codes.iter().skip(skipped);
        let (mut acc, mut have) = (0u64, 0u32);
        let drop_bits = offset - skipped as u32 * n;
        if drop_bits > 0 {
            let code = source.next().copied().unwrap_or(0);
            acc = (code as u64) >> drop_bits;
            have = n - drop_bits;
        }
        for _ in 0..info.local_size {
            while have < m {
                let code = source.next().copied().unwrap_or(0);
                acc |= (code as u64) << have;
                have += n;
            }
            codes.push((acc & mask) as u32);
            acc = acc.checked_shr(m).unwrap_or(0);
            have -= m;
        }
    }
    codes
}

/// `dot(a, b, c)` on logical values (the verifier saw shapes `[.., M, K]`, `[.., K, N]`,
/// `[.., M, N]` with equal batch dimensions, one dtype for `a` and `b`, and floats with floats
/// or integers with integers).
fn dot(a: &RegTensor, b: &RegTensor, c: &RegTensor) -> RegTensor {
    let rank = a.info.shape.len().max(2);
    let size = |t: &RegTensor, dim: usize| t.info.shape.get(dim).copied().unwrap_or(1);
    let (m, k, n) = (size(a, rank - 2), size(a, rank - 1), size(b, rank - 1));
    let batch: usize = a.info.shape.iter().take(rank - 2).product();
    // Exactly batch·m·k, batch·k·n and batch·m·n values, so that no index below can fall
    // outside.
    let logical = |t: &RegTensor, count: usize| -> Vec<u32> {
        let mut values: Vec<u32> = t
            .info
            .first_owner
            .iter()
            .map(|&slot| t.codes[slot as usize])
            .collect();
        values.resize(count, 0);
        values
    };
    let (la, lb, lc) = (
        logical(a, batch * m * k),
        logical(b, batch * k * n),
        logical(c, batch * m * n),
    );
    let mut result = vec![0u32; batch * m * n];
    for p in 0..batch {
        let (la, lb, lc) = (
            &la[p * m * k..(p + 1) * m * k],
            &lb[p * k * n..(p + 1) * k * n],
            &lc[p * m * n..(p + 1) * m * n],
        );
        let result = &mut result[p * m * n..(p + 1) * m * n];
        if c.dtype.is_float() {
            let (da, dc) = (FloatDecoder::new(a.dtype), FloatDecoder::new(c.dtype));
            let va: Vec<f64> = la.iter().map(|&x| da.get(x) as f64).collect();
            // b transposed, so that both inner loops walk memory in order.
            let mut vbt = vec![0f64; k * n];
            for kk in 0..k {
                for j in 0..n {
                    vbt[j * k + kk] = da.get(lb[kk * n + j]) as f64;
                }
            }
            for i in 0..m {
                let row = &va[i * k..(i + 1) * k];
                for j in 0..n {
                    let col = &vbt[j * k..(j + 1) * k];
                    let mut sum = dc.get(lc[i * n + j]) as f64;
                    for (x, y) in row.iter().zip(col) {
                        sum += x * y;
                    }
                    result[i * n + j] = c.dtype.encode(sum as f32);
                }
            }
        } else {
            let (da, dc) = (IntDecoder::new(a.dtype), IntDecoder::new(c.dtype));
            for i in 0..m {
                for j in 0..n {
                    let mut sum = dc.get(lc[i * n + j]);
                    for kk in 0..k {
                        sum = sum.wrapping_add(
                            da.get(la[i * k + kk]).wrapping_mul(da.get(lb[kk * n + j])),
                        );
                    }
                    result[i * n + j] = num::wrap(c.dtype, sum);
                }
            }
        }
    }
    let codes = c
        .info
        .slot_element
        .iter()
        .map(|&element| result.get(element as usize).copied().unwrap_or(0))
        .collect();
    RegTensor {
        dtype: c.dtype,
        info: c.info.clone(),
        codes,
    }
}

/// `reduce_*(src, dim)` on logical values, into the layout `info` (`src`'s reduced; the
/// verifier saw `dim < rank`).
fn reduce(src: &RegTensor, op: ReduceOp, dim: usize, info: Rc<LayoutInfo>) -> RegTensor {
    let shape = &src.info.shape;
    let length = shape.get(dim).copied().unwrap_or(1);
    let inner: usize = shape.iter().skip(dim + 1).product();
    let outer: usize = shape.iter().take(dim).product();
    let dtype = src.dtype;
    let logical = |o: usize, r: usize, i: usize| {
        let element = (o * length + r) * inner + i;
        src.codes[src.info.first_owner[element] as usize]
    };
    let (float, int) = (FloatDecoder::new(dtype), IntDecoder::new(dtype));
    let mut values = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for i in 0..inner {
            let code = if dtype.is_float() {
                let decode = float;
                let row = (0..length).map(|r| decode.get(logical(o, r, i)));
                let value = match op {
                    ReduceOp::Sum => row.fold(-0.0f64, |sum, x| sum + f64::from(x)) as f32,
                    ReduceOp::Max => row.fold(f32::NAN, num::float_max),
                    ReduceOp::Min => row.fold(f32::NAN, num::float_min),
                };
                dtype.encode(value)
            } else {
                let decode = int;
                let row = (0..length).map(|r| decode.get(logical(o, r, i)));
                let value = match op {
                    ReduceOp::Sum => row.fold(0i64, i64::wrapping_add),
                    ReduceOp::Max => row.max().unwrap_or(0),
                    ReduceOp::Min => row.min().unwrap_or(0),
                };
                num::wrap(dtype, value)
            };
            values.push(code);
        }
    }
    // The result's elements are numbered row-major over the reduced shape: (o, 0, i) is o·inner + i.
    let codes = info
        .slot_element
        .iter()
        .map(|&element| values.get(element as usize).copied().unwrap_or(0))
        .collect();
    RegTensor { dtype, info, codes }
}

/// Each thread's codes (thread-major, `from`'s local order) in `to`'s local order; the
/// verifier proved that `to` only reorders each thread's elements.
fn reorder(codes: &[u32], from: &RegisterLayout, to: &RegisterLayout) -> Result<Vec<u32>, Fault> {
    let permutation = anybit_vm::local_permutation(from, to)
        .map_err(|reason| internal(format!("a cast's layout: {reason}")))?;
    let local_size = permutation.len().max(1);
    Ok(codes
        .chunks(local_size)
        .flat_map(|thread| permutation.iter().map(|&l| thread[l]))
        .collect())
}
