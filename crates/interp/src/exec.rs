//! The execution of blocks: scopes, statements and instructions.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;

use anybit_dtype::{read_code, write_code, DType};
use anybit_layout::SharedLayout;
use anybit_vm::{
    BinaryOp, CmpOp, Cond, Expr, ExprOp, Inst, Literal, Operand, ParamKind, Program, ReduceOp,
    Span, Stmt, StmtKind, TensorType,
};

use crate::args::Argument;
use crate::error::{invalid, Fault, RuntimeError};
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
    /// `None` while the grid is evaluated.
    index: Option<[i32; 3]>,
    scalars: Vec<(&'p str, i32)>,
    tensors: Vec<(&'p str, TensorVar<'p>)>,
    frames: Vec<Frame>,
    /// Shared allocations; `None` once freed.
    shared: Vec<Option<SharedAlloc<'p>>>,
    committed: VecDeque<Vec<PendingCopy<'p>>>,
    open: Vec<PendingCopy<'p>>,
}

impl<'p> BlockState<'p> {
    pub fn new(index: Option<[i32; 3]>) -> BlockState<'p> {
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

    fn tensor(&self, name: &str) -> Result<&TensorVar<'p>, Fault> {
        match self.tensors.iter().rev().find(|(n, _)| *n == name) {
            Some((_, var)) => Ok(var),
            None => invalid(format!("no tensor `%{name}` is visible here")),
        }
    }

    fn register(&self, name: &str) -> Result<&RegTensor, Fault> {
        match self.tensor(name)? {
            TensorVar::Register(tensor) => Ok(tensor),
            _ => invalid(format!("`%{name}` is not a register tensor")),
        }
    }

    fn global(&self, name: &str) -> Result<Rc<GlobalView<'p>>, Fault> {
        match self.tensor(name)? {
            TensorVar::Global(view) => Ok(view.clone()),
            _ => invalid(format!("`%{name}` is not a global tensor")),
        }
    }

    fn shared_id(&self, name: &str) -> Result<usize, Fault> {
        match self.tensor(name)? {
            TensorVar::Shared(id) if self.shared[*id].is_some() => Ok(*id),
            TensorVar::Shared(_) => invalid(format!("`%{name}` is used after it was freed")),
            _ => invalid(format!("`%{name}` is not a shared tensor")),
        }
    }

    fn shared(&self, name: &str) -> Result<&SharedAlloc<'p>, Fault> {
        let id = self.shared_id(name)?;
        match &self.shared[id] {
            Some(alloc) => Ok(alloc),
            None => invalid(format!("`%{name}` is used after it was freed")),
        }
    }

    /// Defines a new shared or global tensor variable.
    fn define(&mut self, name: &'p str, var: TensorVar<'p>) -> Result<(), Fault> {
        if self.tensors.iter().any(|(n, _)| *n == name) {
            return invalid(format!(
                "`%{name}` is already defined; only register tensors can be overwritten"
            ));
        }
        self.tensors.push((name, var));
        Ok(())
    }

    /// Defines register tensor `name`, or overwrites it when it is visible (its type must then
    /// be exactly the value's).
    fn assign(&mut self, name: &'p str, value: RegTensor) -> Result<(), Fault> {
        match self.tensors.iter_mut().rev().find(|(n, _)| *n == name) {
            None => {
                self.tensors.push((name, TensorVar::Register(value)));
                Ok(())
            }
            Some((_, TensorVar::Register(old))) => {
                if old.dtype != value.dtype || old.info.id != value.info.id {
                    return invalid(format!(
                        "`%{name}` has type register<{}, {}>, but the result has type \
                         register<{}, {}>",
                        old.dtype, old.info.layout, value.dtype, value.info.layout
                    ));
                }
                old.codes = value.codes;
                Ok(())
            }
            Some(_) => invalid(format!(
                "`%{name}` is a shared or global tensor and cannot be overwritten"
            )),
        }
    }
}

/// The result layout of an elementwise instruction, and for every tensor operand the map from
/// result slots to its slots (`None` when it has the result's layout).
type Broadcast = (Rc<LayoutInfo>, Vec<Option<Rc<[u32]>>>);

/// The operands of a binary instruction, in their dtype, one code per result slot.
struct TwoOperands<'s> {
    dtype: DType,
    info: Rc<LayoutInfo>,
    a: Cow<'s, [u32]>,
    b: Cow<'s, [u32]>,
}

/// An elementwise operand, resolved.
enum Opnd<'a> {
    Tensor(&'a RegTensor),
    Int(i32),
    Float(f64),
}

/// What a run needs besides the state of a block.
pub(crate) struct Machine<'p, 'o> {
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
    let [x, y, z] = st.index.unwrap_or([0; 3]);
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
                let result = self.eval(st, value).and_then(|value| {
                    if self.scalar_visible(st, name) {
                        return invalid(format!("`{name}` is already defined"));
                    }
                    st.scalars.push((name, value));
                    Ok(())
                });
                result.map_err(|fault| located(st, stmt.span, "let", fault))
            }
            StmtKind::For(lp) => {
                let bounds = (|| {
                    let start = self.eval(st, &lp.start)?;
                    let end = self.eval(st, &lp.end)?;
                    let step = self.eval(st, &lp.step)?;
                    if step <= 0 {
                        return Err(Fault::NonPositiveStep(step));
                    }
                    if self.scalar_visible(st, &lp.var) {
                        return invalid(format!("`{}` is already defined", lp.var));
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
                .exec_inst(st, inst, stmt.span)
                .map_err(|fault| located(st, stmt.span, inst.mnemonic(), fault)),
        }
    }

    /// True when a parameter or a visible `let` or loop variable is called `name`.
    fn scalar_visible(&self, st: &BlockState, name: &str) -> bool {
        st.scalars.iter().any(|(n, _)| *n == name)
            || self.program.params.iter().any(|p| p.name == name)
    }

    fn scalar(&self, st: &BlockState, name: &str) -> Result<i32, Fault> {
        if let Some((_, value)) = st.scalars.iter().rev().find(|(n, _)| *n == name) {
            return Ok(*value);
        }
        match self.program.params.iter().position(|p| p.name == name) {
            Some(index) => match &self.args[index] {
                Argument::Int(value) => Ok(*value),
                Argument::Buffer(_) => {
                    invalid(format!("pointer `{name}` used in a scalar expression"))
                }
            },
            None => invalid(format!("no scalar `{name}` is visible here")),
        }
    }

    pub fn eval(&self, st: &BlockState, expr: &Expr) -> Result<i32, Fault> {
        match expr {
            Expr::Const(value) => Ok(*value),
            Expr::Var(name) => self.scalar(st, name),
            Expr::BlockIdx(axis) => match st.index {
                Some(index) => Ok(index[axis.index()]),
                None => invalid(format!("the grid uses block.{}", axis.name())),
            },
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

    fn layout(&mut self, layout: &anybit_layout::RegisterLayout) -> Result<Rc<LayoutInfo>, Fault> {
        let info = self.layouts.get(layout)?;
        let threads = self.program.threads as usize;
        if info.num_threads != threads {
            return invalid(format!(
                "the layout {layout} has {} threads, but the program has {threads}",
                info.num_threads
            ));
        }
        Ok(info)
    }

    fn exec_inst(
        &mut self,
        st: &mut BlockState<'p>,
        inst: &'p Inst,
        span: Span,
    ) -> Result<(), Fault> {
        match inst {
            Inst::AllocRegister {
                dst,
                dtype,
                layout,
                init,
            } => {
                let info = self.layout(layout)?;
                let code = match init {
                    Some(Literal::Int(value)) => num::int_constant(*dtype, *value),
                    Some(Literal::Float(value)) => match num::float_constant(*dtype, value.0) {
                        Some(code) => code,
                        None => return invalid(format!("float literal for {dtype}")),
                    },
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
                )
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
                let id = st.shared.len() - 1;
                st.define(dst, TensorVar::Shared(id))
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
                let Some((param, dtype)) =
                    self.program
                        .params
                        .iter()
                        .enumerate()
                        .find_map(|(index, p)| match p.kind {
                            ParamKind::Pointer(dtype) if p.name == *ptr => Some((index, dtype)),
                            _ => None,
                        })
                else {
                    return invalid(format!("`{ptr}` is not a pointer parameter"));
                };
                if shape.is_empty() || shape.len() != strides.len() {
                    return invalid(format!(
                        "view_global needs as many strides as sizes, at least one ({} and {})",
                        shape.len(),
                        strides.len()
                    ));
                }
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
                st.define(dst, TensorVar::Global(Rc::new(view)))
            }
            Inst::LoadGlobal {
                dst,
                src,
                offsets,
                layout,
            } => {
                let view = st.global(src)?;
                let offsets = self.offsets(st, offsets)?;
                let info = self.layout(layout)?;
                check_rank(&offsets, view.sizes.len(), info.rank(), src)?;
                let codes = self.load_global(&view, src, &offsets, &info)?;
                st.assign(
                    dst,
                    RegTensor {
                        dtype: view.dtype,
                        info,
                        codes,
                    },
                )
            }
            Inst::StoreGlobal { dst, offsets, src } => {
                let view = st.global(dst)?;
                let offsets = self.offsets(st, offsets)?;
                let tensor = st.register(src)?;
                check_rank(&offsets, view.sizes.len(), tensor.info.rank(), dst)?;
                check_dtype(tensor.dtype, view.dtype)?;
                self.store_global(&view, dst, &offsets, tensor)
            }
            Inst::LoadShared {
                dst,
                src,
                offsets,
                layout,
            } => {
                let offsets = self.offsets(st, offsets)?;
                let info = self.layout(layout)?;
                let alloc = st.shared(src)?;
                let positions = shared_tile(alloc.layout, src, &offsets, &info)?;
                let bits = alloc.dtype.bits();
                let codes = (0..info.num_slots())
                    .map(|slot| {
                        let index = positions[info.slot_element[slot] as usize];
                        read_code(&alloc.bytes, bits, index)
                    })
                    .collect();
                let dtype = alloc.dtype;
                st.assign(dst, RegTensor { dtype, info, codes })
            }
            Inst::StoreShared { dst, offsets, src } => {
                let offsets = self.offsets(st, offsets)?;
                let id = st.shared_id(dst)?;
                let tensor = st.register(src)?;
                let Some(alloc) = &st.shared[id] else {
                    return invalid(format!("`%{dst}` is used after it was freed"));
                };
                check_dtype(tensor.dtype, alloc.dtype)?;
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
                let alloc = st.shared(dst)?;
                check_rank(&offsets, view.sizes.len(), alloc.layout.rank(), src)?;
                check_dtype(alloc.dtype, view.dtype)?;
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
            } => {
                let info = self.layout(layout)?;
                let tensor = st.register(src)?;
                let codes = view_codes(tensor, *dtype, &info)?;
                st.assign(
                    dst,
                    RegTensor {
                        dtype: *dtype,
                        info,
                        codes,
                    },
                )
            }
            Inst::Cast { dst, src, dtype } => {
                let tensor = st.register(src)?;
                let codes = num::cast(tensor.dtype, *dtype, &tensor.codes);
                let info = tensor.info.clone();
                st.assign(
                    dst,
                    RegTensor {
                        dtype: *dtype,
                        info,
                        codes,
                    },
                )
            }
            Inst::Unary { dst, op, src } => {
                let tensor = st.register(src)?;
                let Some(codes) = num::unary(tensor.dtype, *op, &tensor.codes) else {
                    return invalid(format!("{} of {}", op.name(), tensor.dtype));
                };
                let result = RegTensor {
                    dtype: tensor.dtype,
                    info: tensor.info.clone(),
                    codes,
                };
                st.assign(dst, result)
            }
            Inst::Binary { dst, op, lhs, rhs } => {
                let result = self.binary(st, *op, lhs, rhs)?;
                st.assign(dst, result)
            }
            Inst::Compare { dst, op, lhs, rhs } => {
                let result = self.compare(st, *op, lhs, rhs)?;
                st.assign(dst, result)
            }
            Inst::Where {
                dst,
                cond,
                then,
                otherwise,
            } => {
                let result = self.select(st, cond, then, otherwise)?;
                st.assign(dst, result)
            }
            Inst::Dot { dst, a, b, c } => {
                let result = dot(st.register(a)?, st.register(b)?, st.register(c)?)?;
                st.assign(dst, result)
            }
            Inst::Reduce { dst, op, src, dim } => {
                let tensor = st.register(src)?;
                let dim = *dim as usize;
                if dim >= tensor.info.rank() {
                    return invalid(format!(
                        "cannot reduce dimension {dim} of a rank-{} tensor",
                        tensor.info.rank()
                    ));
                }
                let info = self.layouts.reduced(&tensor.info, dim)?;
                let result = reduce(tensor, *op, dim, info);
                st.assign(dst, result)
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
        for d in 0..offsets.len() {
            let c = offsets[d] + coords[d] as i64;
            if c < 0 || c >= view.sizes[d] {
                return Ok(None);
            }
            match c
                .checked_mul(view.strides[d])
                .and_then(|term| element.checked_add(term))
            {
                Some(sum) => element = sum,
                None => overflow = true,
            }
        }
        let capacity = match &self.args[view.param] {
            Argument::Buffer(bytes) => (bytes.len() as u64) * 8 / view.dtype.bits() as u64,
            Argument::Int(_) => 0,
        };
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
        match &self.args[param] {
            Argument::Buffer(bytes) => bytes,
            Argument::Int(_) => &[],
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
            if let Argument::Buffer(bytes) = &mut self.args[view.param] {
                write_code(bytes, bits, element, src.codes[slot]);
            }
        }
        Ok(())
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
                if offset >= capacity {
                    return invalid(format!(
                        "shared offset {offset} of `%{}` is outside its allocation",
                        copy.dst_name
                    ));
                }
                write_code(&mut alloc.bytes, bits, offset, code);
            }
        }
        Ok(())
    }

    fn operand<'s>(&self, st: &'s BlockState<'p>, operand: &Operand) -> Result<Opnd<'s>, Fault> {
        Ok(match operand {
            Operand::Tensor(name) => Opnd::Tensor(st.register(name)?),
            Operand::Scalar(expr) => Opnd::Int(self.eval(st, expr)?),
            Operand::Float(value) => Opnd::Float(value.0),
        })
    }

    /// The result layout of an elementwise instruction and, for every tensor operand, the map
    /// from result slots to its slots (`None` when it has the result's layout).
    fn broadcast(&mut self, tensors: &[&RegTensor]) -> Result<Broadcast, Fault> {
        let rank = tensors.first().map_or(0, |t| t.info.rank());
        if tensors.iter().any(|t| t.info.rank() != rank) {
            return invalid("tensor operands have different ranks");
        }
        let mut shape = vec![1usize; rank];
        for t in tensors {
            for (s, &size) in shape.iter_mut().zip(&t.info.shape) {
                *s = (*s).max(size);
            }
        }
        for t in tensors {
            if t.info
                .shape
                .iter()
                .zip(&shape)
                .any(|(&a, &s)| a != s && a != 1)
            {
                return invalid(format!(
                    "operand shapes {:?} and {shape:?} do not broadcast",
                    t.info.shape
                ));
            }
        }
        let Some(result) = tensors.iter().find(|t| t.info.shape == shape) else {
            return invalid(format!("no tensor operand has the result shape {shape:?}"));
        };
        let result = result.info.clone();
        let mut maps = Vec::with_capacity(tensors.len());
        for t in tensors {
            if t.info.id == result.id {
                maps.push(None);
            } else if t.info.shape == shape {
                return invalid(format!(
                    "operands of the same shape have different layouts: {} and {}",
                    result.layout, t.info.layout
                ));
            } else {
                maps.push(Some(self.layouts.broadcast(&result, &t.info)?));
            }
        }
        Ok((result, maps))
    }

    /// The codes of `operand` for every slot of the result, in `dtype`.
    fn aligned<'a>(
        operand: &Opnd<'a>,
        map: Option<&[u32]>,
        dtype: DType,
        slots: usize,
    ) -> Result<Cow<'a, [u32]>, Fault> {
        Ok(match operand {
            Opnd::Tensor(t) => match map {
                None => Cow::Borrowed(&t.codes),
                Some(map) => Cow::Owned(map.iter().map(|&s| t.codes[s as usize]).collect()),
            },
            Opnd::Int(value) => Cow::Owned(vec![num::int_constant(dtype, *value as i64); slots]),
            Opnd::Float(value) => match num::float_constant(dtype, *value) {
                Some(code) => Cow::Owned(vec![code; slots]),
                None => return invalid(format!("float literal {value} for {dtype}")),
            },
        })
    }

    /// Resolves the two operands of a binary or comparison instruction.
    fn two_operands<'s>(
        &mut self,
        st: &'s BlockState<'p>,
        lhs: &Operand,
        rhs: &Operand,
    ) -> Result<TwoOperands<'s>, Fault> {
        let ops = [self.operand(st, lhs)?, self.operand(st, rhs)?];
        let tensors: Vec<&RegTensor> = ops
            .iter()
            .filter_map(|op| match op {
                Opnd::Tensor(t) => Some(*t),
                _ => None,
            })
            .collect();
        let Some(first) = tensors.first() else {
            return invalid("at least one operand must be a tensor");
        };
        let dtype = first.dtype;
        if tensors.iter().any(|t| t.dtype != dtype) {
            return invalid(format!(
                "tensor operands have different dtypes ({} and {})",
                tensors[0].dtype,
                tensors[tensors.len() - 1].dtype
            ));
        }
        let (info, maps) = self.broadcast(&tensors)?;
        let mut maps = maps.into_iter();
        let mut aligned = Vec::with_capacity(2);
        for op in &ops {
            let map = match op {
                Opnd::Tensor(_) => maps.next().flatten(),
                _ => None,
            };
            aligned.push(Self::aligned(op, map.as_deref(), dtype, info.num_slots())?);
        }
        let b = aligned.pop().unwrap_or_default();
        let a = aligned.pop().unwrap_or_default();
        Ok(TwoOperands { dtype, info, a, b })
    }

    fn binary(
        &mut self,
        st: &BlockState<'p>,
        op: BinaryOp,
        lhs: &Operand,
        rhs: &Operand,
    ) -> Result<RegTensor, Fault> {
        let TwoOperands { dtype, info, a, b } = self.two_operands(st, lhs, rhs)?;
        match num::binary(dtype, op, &a, &b) {
            Ok(codes) => Ok(RegTensor { dtype, info, codes }),
            Err(slot) => Err(Fault::TensorDivisionByZero {
                coordinates: info.coords(slot).iter().map(|&c| c as usize).collect(),
            }),
        }
    }

    fn compare(
        &mut self,
        st: &BlockState<'p>,
        op: CmpOp,
        lhs: &Operand,
        rhs: &Operand,
    ) -> Result<RegTensor, Fault> {
        let TwoOperands { dtype, info, a, b } = self.two_operands(st, lhs, rhs)?;
        let codes = num::compare(dtype, op, &a, &b);
        Ok(RegTensor {
            dtype: DType::Unsigned(1),
            info,
            codes,
        })
    }

    fn select(
        &mut self,
        st: &BlockState<'p>,
        cond: &str,
        then: &Operand,
        otherwise: &Operand,
    ) -> Result<RegTensor, Fault> {
        let cond = st.register(cond)?;
        if cond.dtype != DType::Unsigned(1) {
            return invalid(format!("the condition of where is {}, not u1", cond.dtype));
        }
        let ops = [
            Opnd::Tensor(cond),
            self.operand(st, then)?,
            self.operand(st, otherwise)?,
        ];
        let tensors: Vec<&RegTensor> = ops
            .iter()
            .filter_map(|op| match op {
                Opnd::Tensor(t) => Some(*t),
                _ => None,
            })
            .collect();
        let Some(value_tensor) = tensors.get(1) else {
            return invalid(
                "where needs a tensor among its values to know the result dtype \
                 (both are scalars)",
            );
        };
        let dtype = value_tensor.dtype;
        if tensors[1..].iter().any(|t| t.dtype != dtype) {
            return invalid("the values of where have different dtypes");
        }
        let (info, maps) = self.broadcast(&tensors)?;
        let mut maps = maps.into_iter();
        let mut aligned = Vec::with_capacity(3);
        for (index, op) in ops.iter().enumerate() {
            let map = match op {
                Opnd::Tensor(_) => maps.next().flatten(),
                _ => None,
            };
            let op_dtype = if index == 0 {
                DType::Unsigned(1)
            } else {
                dtype
            };
            aligned.push(Self::aligned(
                op,
                map.as_deref(),
                op_dtype,
                info.num_slots(),
            )?);
        }
        let codes = aligned[0]
            .iter()
            .zip(aligned[1].iter().zip(aligned[2].iter()))
            .map(|(&c, (&a, &b))| if c != 0 { a } else { b })
            .collect();
        Ok(RegTensor { dtype, info, codes })
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
                return invalid(format!("cannot print global tensor `%{name}`"))
            }
        };
        let [x, y, z] = st.index.unwrap_or([0; 3]);
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

fn check_rank(offsets: &[i64], rank: usize, tile_rank: usize, tensor: &str) -> Result<(), Fault> {
    if offsets.len() != rank || tile_rank != rank {
        return invalid(format!(
            "`%{tensor}` has rank {rank}, but the offsets have {} and the tile {tile_rank} \
             dimensions",
            offsets.len()
        ));
    }
    Ok(())
}

fn check_dtype(register: DType, memory: DType) -> Result<(), Fault> {
    if register != memory {
        return invalid(format!(
            "the register tensor is {register}, but memory holds {memory}"
        ));
    }
    Ok(())
}

/// Element offsets in the shared allocation of every element of a tile at `offsets`.
fn shared_tile(
    layout: &SharedLayout,
    tensor: &str,
    offsets: &[i64],
    tile: &LayoutInfo,
) -> Result<Vec<usize>, Fault> {
    check_rank(offsets, layout.rank(), tile.rank(), tensor)?;
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
        if offset >= span {
            return invalid(format!(
                "shared offset {offset} of `%{tensor}` is outside its span {span}"
            ));
        }
        positions.push(offset);
    }
    Ok(positions)
}

/// `view`: every thread's register bits, reread as `dtype` in the layout of `info`.
fn view_codes(src: &RegTensor, dtype: DType, info: &LayoutInfo) -> Result<Vec<u32>, Fault> {
    let (n, m) = (src.dtype.bits(), dtype.bits());
    let (src_local, dst_local) = (src.info.local_size, info.local_size);
    if src.info.num_threads != info.num_threads || src_local * n as usize != dst_local * m as usize
    {
        return invalid(format!(
            "view keeps the bits of each thread: {src_local} × {} is {} bits, but {dst_local} × \
             {dtype} is {} bits",
            src.dtype,
            src_local * n as usize,
            dst_local * m as usize
        ));
    }
    let mask = dtype.code_mask() as u64;
    let mut codes = Vec::with_capacity(info.num_slots());
    for thread in 0..info.num_threads {
        let mut source = src.codes[thread * src_local..(thread + 1) * src_local].iter();
        let (mut acc, mut have) = (0u64, 0u32);
        for _ in 0..dst_local {
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
    Ok(codes)
}

/// `dot(a, b, c)` on logical values.
fn dot(a: &RegTensor, b: &RegTensor, c: &RegTensor) -> Result<RegTensor, Fault> {
    let (sa, sb, sc) = (&a.info.shape, &b.info.shape, &c.info.shape);
    if sa.len() != 2
        || sb.len() != 2
        || sc.len() != 2
        || sa[1] != sb[0]
        || sa[0] != sc[0]
        || sb[1] != sc[1]
    {
        return invalid(format!(
            "dot needs shapes [M, K], [K, N], [M, N], not {sa:?}, {sb:?}, {sc:?}"
        ));
    }
    if a.dtype != b.dtype || a.dtype.is_float() != c.dtype.is_float() {
        return invalid(format!(
            "dot of {} and {} into {}: the inputs must have one dtype, and the inputs and the \
             accumulator must both be floats or both integers",
            a.dtype, b.dtype, c.dtype
        ));
    }
    let (m, k, n) = (sa[0], sa[1], sb[1]);
    let logical = |t: &RegTensor| -> Vec<u32> {
        t.info
            .first_owner
            .iter()
            .map(|&slot| t.codes[slot as usize])
            .collect()
    };
    let (la, lb, lc) = (logical(a), logical(b), logical(c));
    let mut result = vec![0u32; m * n];
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
                    sum = sum
                        .wrapping_add(da.get(la[i * k + kk]).wrapping_mul(da.get(lb[kk * n + j])));
                }
                result[i * n + j] = num::wrap(c.dtype, sum);
            }
        }
    }
    let codes = c
        .info
        .slot_element
        .iter()
        .map(|&element| result[element as usize])
        .collect();
    Ok(RegTensor {
        dtype: c.dtype,
        info: c.info.clone(),
        codes,
    })
}

/// `reduce_*(src, dim)` on logical values, into the layout `info` (`src`'s reduced).
fn reduce(src: &RegTensor, op: ReduceOp, dim: usize, info: Rc<LayoutInfo>) -> RegTensor {
    let shape = &src.info.shape;
    let length = shape[dim];
    let inner: usize = shape[dim + 1..].iter().product();
    let outer: usize = shape[..dim].iter().product();
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
        .map(|&element| values[element as usize])
        .collect();
    RegTensor { dtype, info, codes }
}
