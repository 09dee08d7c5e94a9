//! A builder for [`Program`]s.
//!
//! What this module promises:
//! - [`ProgramBuilder`] appends statements in the order its methods are called; nested blocks
//!   (`for`, `if`) are built by closures. It checks nothing: call [`crate::verify()`] on the
//!   result.
//! - Handles ([`Tensor`], [`Pointer`], [`Expr`]) are just names; they stay valid as long as the
//!   program text would accept them.
//! - Scalar expressions get Rust operators (`+ - * / %`) and methods (`min`, `max`,
//!   `ceil_div`, `lt`, …); conditions get `&`, `|`, `!`.
//!
//! ```
//! use anybit_vm::builder::{block_x, ProgramBuilder};
//! use anybit_dtype::DType;
//!
//! let mut b = ProgramBuilder::new("copy");
//! let src = b.pointer("src", DType::F16);
//! let dst = b.pointer("dst", DType::F16);
//! let n = b.int_multiple_of("n", 8);
//! b.grid([n.clone().ceil_div(256)]);
//! b.threads(32);
//! let base = b.let_("base", block_x() * 256);
//! let gs = b.view_global("gs", &src, [n.clone()], [1]);
//! let gd = b.view_global("gd", &dst, [n], [1]);
//! # let _ = (base, gs, gd);
//! let program = b.finish();
//! assert_eq!(program.params.len(), 3);
//! ```

use std::ops::{Add, BitAnd, BitOr, Div, Mul, Not, Rem, Sub};

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout};

use crate::ir::{
    Axis, BinaryOp, CmpOp, Cond, Expr, ExprOp, FloatLit, ForLoop, Inst, Literal, Operand, Param,
    ParamKind, Program, ReduceOp, Span, Stmt, StmtKind, UnaryOp, Unroll,
};

/// A tensor variable (its name, without the `%` of the text form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tensor(pub String);

impl Tensor {
    /// The variable's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// A pointer parameter (its name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pointer(pub String);

/// `block.x`.
pub fn block_x() -> Expr {
    Expr::BlockIdx(Axis::X)
}

/// `block.y`.
pub fn block_y() -> Expr {
    Expr::BlockIdx(Axis::Y)
}

/// `block.z`.
pub fn block_z() -> Expr {
    Expr::BlockIdx(Axis::Z)
}

/// A scalar variable by name.
pub fn var(name: &str) -> Expr {
    Expr::Var(name.to_string())
}

impl From<i32> for Expr {
    fn from(value: i32) -> Expr {
        Expr::Const(value)
    }
}

impl From<&Expr> for Expr {
    fn from(value: &Expr) -> Expr {
        value.clone()
    }
}

impl Expr {
    fn binary(op: ExprOp, lhs: Expr, rhs: Expr) -> Expr {
        Expr::Binary(op, Box::new(lhs), Box::new(rhs))
    }

    /// `min(self, other)`.
    pub fn min(self, other: impl Into<Expr>) -> Expr {
        Expr::binary(ExprOp::Min, self, other.into())
    }

    /// `max(self, other)`.
    pub fn max(self, other: impl Into<Expr>) -> Expr {
        Expr::binary(ExprOp::Max, self, other.into())
    }

    /// `ceil_div(self, other)`.
    pub fn ceil_div(self, other: impl Into<Expr>) -> Expr {
        Expr::binary(ExprOp::CeilDiv, self, other.into())
    }

    fn compare(self, op: CmpOp, other: impl Into<Expr>) -> Cond {
        Cond::Compare(op, self, other.into())
    }

    /// `self < other`.
    pub fn lt(self, other: impl Into<Expr>) -> Cond {
        self.compare(CmpOp::Lt, other)
    }

    /// `self <= other`.
    pub fn le(self, other: impl Into<Expr>) -> Cond {
        self.compare(CmpOp::Le, other)
    }

    /// `self > other`.
    pub fn gt(self, other: impl Into<Expr>) -> Cond {
        self.compare(CmpOp::Gt, other)
    }

    /// `self >= other`.
    pub fn ge(self, other: impl Into<Expr>) -> Cond {
        self.compare(CmpOp::Ge, other)
    }

    /// `self == other`.
    pub fn eq_(self, other: impl Into<Expr>) -> Cond {
        self.compare(CmpOp::Eq, other)
    }

    /// `self != other`.
    pub fn ne_(self, other: impl Into<Expr>) -> Cond {
        self.compare(CmpOp::Ne, other)
    }
}

macro_rules! expr_operator {
    ($trait:ident, $method:ident, $op:expr) => {
        impl<T: Into<Expr>> $trait<T> for Expr {
            type Output = Expr;
            fn $method(self, rhs: T) -> Expr {
                Expr::binary($op, self, rhs.into())
            }
        }
        impl<T: Into<Expr>> $trait<T> for &Expr {
            type Output = Expr;
            fn $method(self, rhs: T) -> Expr {
                Expr::binary($op, self.clone(), rhs.into())
            }
        }
    };
}

expr_operator!(Add, add, ExprOp::Add);
expr_operator!(Sub, sub, ExprOp::Sub);
expr_operator!(Mul, mul, ExprOp::Mul);
expr_operator!(Div, div, ExprOp::Div);
expr_operator!(Rem, rem, ExprOp::Rem);

impl Cond {
    /// `self && other`.
    pub fn and(self, other: Cond) -> Cond {
        Cond::And(Box::new(self), Box::new(other))
    }

    /// `self || other`.
    pub fn or(self, other: Cond) -> Cond {
        Cond::Or(Box::new(self), Box::new(other))
    }
}

impl BitAnd for Cond {
    type Output = Cond;
    fn bitand(self, rhs: Cond) -> Cond {
        self.and(rhs)
    }
}

impl BitOr for Cond {
    type Output = Cond;
    fn bitor(self, rhs: Cond) -> Cond {
        self.or(rhs)
    }
}

impl Not for Cond {
    type Output = Cond;
    fn not(self) -> Cond {
        Cond::Not(Box::new(self))
    }
}

impl From<&Tensor> for Operand {
    fn from(tensor: &Tensor) -> Operand {
        Operand::Tensor(tensor.0.clone())
    }
}

impl From<Tensor> for Operand {
    fn from(tensor: Tensor) -> Operand {
        Operand::Tensor(tensor.0)
    }
}

impl From<Expr> for Operand {
    fn from(expr: Expr) -> Operand {
        Operand::Scalar(expr)
    }
}

impl From<i32> for Operand {
    fn from(value: i32) -> Operand {
        Operand::Scalar(Expr::Const(value))
    }
}

impl From<f64> for Operand {
    fn from(value: f64) -> Operand {
        Operand::Float(FloatLit(value))
    }
}

impl From<i64> for Literal {
    fn from(value: i64) -> Literal {
        Literal::Int(value)
    }
}

impl From<i32> for Literal {
    fn from(value: i32) -> Literal {
        Literal::Int(value.into())
    }
}

impl From<f64> for Literal {
    fn from(value: f64) -> Literal {
        Literal::Float(FloatLit(value))
    }
}

/// Builds a [`Program`] statement by statement.
#[derive(Debug)]
pub struct ProgramBuilder {
    program: Program,
    /// Open blocks; the last one receives new statements. Never empty.
    blocks: Vec<Vec<Stmt>>,
}

impl ProgramBuilder {
    /// A program named `name`, with no parameters, grid `[1]` and 32 threads.
    pub fn new(name: &str) -> ProgramBuilder {
        ProgramBuilder {
            program: Program {
                doc: Vec::new(),
                name: name.to_string(),
                params: Vec::new(),
                grid: vec![Expr::Const(1)],
                threads: 32,
                blocks_per_sm: None,
                body: Vec::new(),
                span: Span::UNKNOWN,
            },
            blocks: vec![Vec::new()],
        }
    }

    /// Adds a documentation line.
    pub fn doc(&mut self, line: &str) -> &mut Self {
        self.program.doc.push(line.to_string());
        self
    }

    /// Adds a pointer parameter.
    pub fn pointer(&mut self, name: &str, dtype: DType) -> Pointer {
        self.param(name, ParamKind::Pointer(dtype));
        Pointer(name.to_string())
    }

    /// Adds an `i32` parameter.
    pub fn int(&mut self, name: &str) -> Expr {
        self.param(name, ParamKind::Int { multiple_of: None });
        var(name)
    }

    /// Adds an `i32` parameter promised to be a multiple of `multiple`.
    pub fn int_multiple_of(&mut self, name: &str, multiple: u32) -> Expr {
        self.param(
            name,
            ParamKind::Int {
                multiple_of: Some(multiple),
            },
        );
        var(name)
    }

    fn param(&mut self, name: &str, kind: ParamKind) {
        self.program.params.push(Param {
            name: name.to_string(),
            kind,
            span: Span::UNKNOWN,
        });
    }

    /// Sets the grid (1 to 3 dimensions).
    pub fn grid<E: Into<Expr>>(&mut self, dims: impl IntoIterator<Item = E>) -> &mut Self {
        self.program.grid = dims.into_iter().map(Into::into).collect();
        self
    }

    /// Asks for at least `blocks` resident blocks per multiprocessor (an occupancy hint; see
    /// [`Program::blocks_per_sm`]).
    pub fn blocks_per_sm(&mut self, blocks: u32) -> &mut Self {
        self.program.blocks_per_sm = Some(blocks);
        self
    }

    /// Sets the number of threads per block.
    pub fn threads(&mut self, threads: u32) -> &mut Self {
        self.program.threads = threads;
        self
    }

    /// Appends a statement to the innermost open block.
    pub fn push(&mut self, kind: StmtKind) {
        if let Some(block) = self.blocks.last_mut() {
            block.push(Stmt {
                kind,
                span: Span::UNKNOWN,
            });
        }
    }

    /// Appends an instruction.
    pub fn inst(&mut self, inst: Inst) {
        self.push(StmtKind::Inst(inst));
    }

    fn block(&mut self, build: impl FnOnce(&mut Self)) -> Vec<Stmt> {
        self.blocks.push(Vec::new());
        build(self);
        self.blocks.pop().unwrap_or_default()
    }

    /// `let name = value;` — returns the variable.
    pub fn let_(&mut self, name: &str, value: impl Into<Expr>) -> Expr {
        self.push(StmtKind::Let {
            name: name.to_string(),
            value: value.into(),
        });
        var(name)
    }

    /// `for var in start..end step step unroll { body }`; `body` receives the loop variable.
    pub fn for_(
        &mut self,
        var_name: &str,
        start: impl Into<Expr>,
        end: impl Into<Expr>,
        step: impl Into<Expr>,
        unroll: Unroll,
        body: impl FnOnce(&mut Self, Expr),
    ) {
        let (start, end, step) = (start.into(), end.into(), step.into());
        let body = self.block(|b| body(b, var(var_name)));
        self.push(StmtKind::For(ForLoop {
            var: var_name.to_string(),
            start,
            end,
            step,
            unroll,
            body,
        }));
    }

    /// `if cond { then }`.
    pub fn if_(&mut self, cond: Cond, then: impl FnOnce(&mut Self)) {
        self.if_else(cond, then, |_| {});
    }

    /// `if cond { then } else { otherwise }`.
    pub fn if_else(
        &mut self,
        cond: Cond,
        then: impl FnOnce(&mut Self),
        otherwise: impl FnOnce(&mut Self),
    ) {
        let then_body = self.block(then);
        let else_body = self.block(otherwise);
        self.push(StmtKind::If {
            cond,
            then_body,
            else_body,
        });
    }

    /// `%dst = alloc_register(dtype, layout[, init]);`
    pub fn alloc_register(
        &mut self,
        dst: &str,
        dtype: DType,
        layout: RegisterLayout,
        init: Option<Literal>,
    ) -> Tensor {
        self.inst(Inst::AllocRegister {
            dst: dst.to_string(),
            dtype,
            layout,
            init,
        });
        Tensor(dst.to_string())
    }

    /// `%dst = alloc_shared(dtype, layout);`
    pub fn alloc_shared(&mut self, dst: &str, dtype: DType, layout: SharedLayout) -> Tensor {
        self.inst(Inst::AllocShared {
            dst: dst.to_string(),
            dtype,
            layout,
        });
        Tensor(dst.to_string())
    }

    /// `free_shared(%tensor);`
    pub fn free_shared(&mut self, tensor: &Tensor) {
        self.inst(Inst::FreeShared {
            tensor: tensor.0.clone(),
        });
    }

    /// `%dst = view_global(ptr, [shape], [strides]);`
    pub fn view_global<S: Into<Expr>, T: Into<Expr>>(
        &mut self,
        dst: &str,
        ptr: &Pointer,
        shape: impl IntoIterator<Item = S>,
        strides: impl IntoIterator<Item = T>,
    ) -> Tensor {
        self.inst(Inst::ViewGlobal {
            dst: dst.to_string(),
            ptr: ptr.0.clone(),
            shape: shape.into_iter().map(Into::into).collect(),
            strides: strides.into_iter().map(Into::into).collect(),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = load_global(%src[offsets], layout);`
    pub fn load_global<E: Into<Expr>>(
        &mut self,
        dst: &str,
        src: &Tensor,
        offsets: impl IntoIterator<Item = E>,
        layout: RegisterLayout,
    ) -> Tensor {
        self.inst(Inst::LoadGlobal {
            dst: dst.to_string(),
            src: src.0.clone(),
            offsets: offsets.into_iter().map(Into::into).collect(),
            layout,
        });
        Tensor(dst.to_string())
    }

    /// `store_global(%dst[offsets], %src);`
    pub fn store_global<E: Into<Expr>>(
        &mut self,
        dst: &Tensor,
        offsets: impl IntoIterator<Item = E>,
        src: &Tensor,
    ) {
        self.inst(Inst::StoreGlobal {
            dst: dst.0.clone(),
            offsets: offsets.into_iter().map(Into::into).collect(),
            src: src.0.clone(),
        });
    }

    /// `%dst = load_shared(%src[offsets], layout);`
    pub fn load_shared<E: Into<Expr>>(
        &mut self,
        dst: &str,
        src: &Tensor,
        offsets: impl IntoIterator<Item = E>,
        layout: RegisterLayout,
    ) -> Tensor {
        self.inst(Inst::LoadShared {
            dst: dst.to_string(),
            src: src.0.clone(),
            offsets: offsets.into_iter().map(Into::into).collect(),
            layout,
        });
        Tensor(dst.to_string())
    }

    /// `store_shared(%dst[offsets], %src);`
    pub fn store_shared<E: Into<Expr>>(
        &mut self,
        dst: &Tensor,
        offsets: impl IntoIterator<Item = E>,
        src: &Tensor,
    ) {
        self.inst(Inst::StoreShared {
            dst: dst.0.clone(),
            offsets: offsets.into_iter().map(Into::into).collect(),
            src: src.0.clone(),
        });
    }

    /// `copy_async(%dst, %src[offsets]);`
    pub fn copy_async<E: Into<Expr>>(
        &mut self,
        dst: &Tensor,
        src: &Tensor,
        offsets: impl IntoIterator<Item = E>,
    ) {
        self.inst(Inst::CopyAsync {
            dst: dst.0.clone(),
            src: src.0.clone(),
            offsets: offsets.into_iter().map(Into::into).collect(),
        });
    }

    /// `commit_group();`
    pub fn commit_group(&mut self) {
        self.inst(Inst::CommitGroup);
    }

    /// `wait_group(pending);`
    pub fn wait_group(&mut self, pending: u32) {
        self.inst(Inst::WaitGroup { pending });
    }

    /// `barrier();`
    pub fn barrier(&mut self) {
        self.inst(Inst::Barrier);
    }

    /// `%dst = view(%src, dtype, layout);`
    pub fn view(
        &mut self,
        dst: &str,
        src: &Tensor,
        dtype: DType,
        layout: RegisterLayout,
    ) -> Tensor {
        self.inst(Inst::View {
            dst: dst.to_string(),
            src: src.0.clone(),
            dtype,
            layout,
            offset: None,
        });
        Tensor(dst.to_string())
    }

    /// `%dst = view(%src, dtype, layout, offset);` — the bits of each thread from `offset` on.
    pub fn view_slice(
        &mut self,
        dst: &str,
        src: &Tensor,
        dtype: DType,
        layout: RegisterLayout,
        offset: u32,
    ) -> Tensor {
        self.inst(Inst::View {
            dst: dst.to_string(),
            src: src.0.clone(),
            dtype,
            layout,
            offset: Some(offset),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = cast(%src, dtype);`
    pub fn cast(&mut self, dst: &str, src: &Tensor, dtype: DType) -> Tensor {
        self.inst(Inst::Cast {
            dst: dst.to_string(),
            src: src.0.clone(),
            dtype,
            layout: None,
        });
        Tensor(dst.to_string())
    }

    /// `%dst = cast(%src, dtype, layout);` — converted and put in `layout`'s local order.
    pub fn cast_to(
        &mut self,
        dst: &str,
        src: &Tensor,
        dtype: DType,
        layout: RegisterLayout,
    ) -> Tensor {
        self.inst(Inst::Cast {
            dst: dst.to_string(),
            src: src.0.clone(),
            dtype,
            layout: Some(layout),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = cast_planes(%p0, %p1, .., code, dtype[, layout]);` — the codes of type `code` whose
    /// bits are split into `planes` (low bits first), put together and converted to `dtype`.
    pub fn cast_planes(
        &mut self,
        dst: &str,
        planes: &[&Tensor],
        code: DType,
        dtype: DType,
        layout: Option<RegisterLayout>,
    ) -> Tensor {
        self.inst(Inst::CastPlanes {
            dst: dst.to_string(),
            planes: planes.iter().map(|plane| plane.0.clone()).collect(),
            code,
            dtype,
            layout,
        });
        Tensor(dst.to_string())
    }

    /// `%dst = neg|abs|exp(%src);`
    pub fn unary(&mut self, dst: &str, op: UnaryOp, src: &Tensor) -> Tensor {
        self.inst(Inst::Unary {
            dst: dst.to_string(),
            op,
            src: src.0.clone(),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = neg(%src);`
    pub fn neg(&mut self, dst: &str, src: &Tensor) -> Tensor {
        self.unary(dst, UnaryOp::Neg, src)
    }

    /// `%dst = abs(%src);`
    pub fn abs(&mut self, dst: &str, src: &Tensor) -> Tensor {
        self.unary(dst, UnaryOp::Abs, src)
    }

    /// `%dst = exp(%src);`
    pub fn exp(&mut self, dst: &str, src: &Tensor) -> Tensor {
        self.unary(dst, UnaryOp::Exp, src)
    }

    /// `%dst = add|sub|mul|div|min|max(lhs, rhs);`
    pub fn binary(
        &mut self,
        dst: &str,
        op: BinaryOp,
        lhs: impl Into<Operand>,
        rhs: impl Into<Operand>,
    ) -> Tensor {
        self.inst(Inst::Binary {
            dst: dst.to_string(),
            op,
            lhs: lhs.into(),
            rhs: rhs.into(),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = add(lhs, rhs);`
    pub fn add(&mut self, dst: &str, lhs: impl Into<Operand>, rhs: impl Into<Operand>) -> Tensor {
        self.binary(dst, BinaryOp::Add, lhs, rhs)
    }

    /// `%dst = sub(lhs, rhs);`
    pub fn sub(&mut self, dst: &str, lhs: impl Into<Operand>, rhs: impl Into<Operand>) -> Tensor {
        self.binary(dst, BinaryOp::Sub, lhs, rhs)
    }

    /// `%dst = mul(lhs, rhs);`
    pub fn mul(&mut self, dst: &str, lhs: impl Into<Operand>, rhs: impl Into<Operand>) -> Tensor {
        self.binary(dst, BinaryOp::Mul, lhs, rhs)
    }

    /// `%dst = div(lhs, rhs);`
    pub fn div(&mut self, dst: &str, lhs: impl Into<Operand>, rhs: impl Into<Operand>) -> Tensor {
        self.binary(dst, BinaryOp::Div, lhs, rhs)
    }

    /// `%dst = min(lhs, rhs);`
    pub fn min(&mut self, dst: &str, lhs: impl Into<Operand>, rhs: impl Into<Operand>) -> Tensor {
        self.binary(dst, BinaryOp::Min, lhs, rhs)
    }

    /// `%dst = max(lhs, rhs);`
    pub fn max(&mut self, dst: &str, lhs: impl Into<Operand>, rhs: impl Into<Operand>) -> Tensor {
        self.binary(dst, BinaryOp::Max, lhs, rhs)
    }

    /// `%dst = lt|le|gt|ge|eq|ne(lhs, rhs);`
    pub fn compare(
        &mut self,
        dst: &str,
        op: CmpOp,
        lhs: impl Into<Operand>,
        rhs: impl Into<Operand>,
    ) -> Tensor {
        self.inst(Inst::Compare {
            dst: dst.to_string(),
            op,
            lhs: lhs.into(),
            rhs: rhs.into(),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = where(%cond, then, otherwise);`
    pub fn where_(
        &mut self,
        dst: &str,
        cond: &Tensor,
        then: impl Into<Operand>,
        otherwise: impl Into<Operand>,
    ) -> Tensor {
        self.inst(Inst::Where {
            dst: dst.to_string(),
            cond: cond.0.clone(),
            then: then.into(),
            otherwise: otherwise.into(),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = dot(%a, %b, %c);`
    pub fn dot(&mut self, dst: &str, a: &Tensor, b: &Tensor, c: &Tensor) -> Tensor {
        self.inst(Inst::Dot {
            dst: dst.to_string(),
            a: a.0.clone(),
            b: b.0.clone(),
            c: c.0.clone(),
        });
        Tensor(dst.to_string())
    }

    /// `%dst = reduce_sum|reduce_max|reduce_min(%src, dim);`
    pub fn reduce(&mut self, dst: &str, op: ReduceOp, src: &Tensor, dim: u32) -> Tensor {
        self.inst(Inst::Reduce {
            dst: dst.to_string(),
            op,
            src: src.0.clone(),
            dim,
        });
        Tensor(dst.to_string())
    }

    /// `print(%src);`
    pub fn print(&mut self, src: &Tensor) {
        self.inst(Inst::Print { src: src.0.clone() });
    }

    /// The program, unchecked.
    pub fn finish(mut self) -> Program {
        // Blocks are only open inside `for_`/`if_else` closures, so exactly one is left.
        self.program.body = self.blocks.pop().unwrap_or_default();
        self.program
    }
}
