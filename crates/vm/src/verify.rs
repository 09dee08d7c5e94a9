//! The verifier: decides whether a [`Program`] is well formed.
//!
//! What this module promises:
//! - [`verify`] accepts exactly the programs that follow the rules of `docs/vm.md` that can be
//!   checked without running them, and otherwise returns the first error in program order
//!   (parameters, grid, then the body statement by statement).
//! - Every error carries the [`Span`] of the statement, parameter or program at fault and says
//!   what is wrong; [`VerifyErrorKind`] has one variant per kind of mistake.
//! - It never panics, and its work is bounded by the program size times the register
//!   elements of the largest tensor (at most [`MAX_REGISTER_BITS`] bits).
//! - A program it accepts prints to text that parses back to an equal program.
//! - For a program it accepts it returns a [`Verified`]: the program with what the checks
//!   learned (the type of every tensor each statement defines, the operand maps of elementwise
//!   instructions), so that the interpreter and code generation need not derive it again.

use std::collections::HashMap;
use std::fmt;

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;

use crate::ir::{
    is_identifier, Cond, Expr, FloatLit, ForLoop, Inst, Literal, Operand, ParamKind, Program, Span,
    Stmt, StmtKind, TensorType, UnaryOp, Unroll,
};
use crate::text::KEYWORDS;
use crate::verified::{Definition, Elementwise, ElementwiseOperand, StmtInfo, Verified};

/// The most threads a block may have.
pub const MAX_THREADS: u32 = 1024;

/// The most blocks a `blocks_per_sm` hint may ask for: the resident blocks of one streaming
/// multiprocessor on sm_80 and sm_90.
pub const MAX_BLOCKS_PER_SM: u32 = 32;

/// The most threads one streaming multiprocessor holds at once on sm_80 and sm_90: a
/// `blocks_per_sm(n)` hint needs `threads · n` at most this.
pub const MAX_THREADS_PER_SM: u32 = 2048;

/// The most bits one register tensor may occupy over the whole block (256 KiB, the register
/// file of one streaming multiprocessor).
pub const MAX_REGISTER_BITS: u64 = 1 << 21;

/// A program that breaks a rule, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{span}: {kind}")]
pub struct VerifyError {
    /// The statement, parameter or program at fault (0:0 for programs built in Rust).
    pub span: Span,
    /// What is wrong (boxed to keep `Result<_, VerifyError>` small).
    pub kind: Box<VerifyErrorKind>,
}

/// A tensor shape, printed `[a, b]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (index, size) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{size}")?;
        }
        f.write_str("]")
    }
}

/// The kinds of verifier errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyErrorKind {
    #[error("`{name}` is not a valid {what} name: use an identifier [A-Za-z_][A-Za-z0-9_]*{}", if *.what == "tensor" { "" } else { " that is not a keyword" })]
    InvalidName { what: &'static str, name: String },
    #[error("documentation line {line} contains a line break")]
    InvalidDoc { line: usize },
    #[error("parameter `{name}` is declared twice")]
    DuplicateParam { name: String },
    #[error("parameter `{name}`: `multiple_of 0` promises nothing; use a positive number")]
    MultipleOfZero { name: String },
    #[error("the grid has {rank} dimensions; it must have 1 to 3")]
    GridRank { rank: usize },
    #[error("the grid may only use constants and integer parameters, not {found}")]
    GridExpr { found: String },
    #[error("{threads} threads per block; a block has 1 to {MAX_THREADS} threads")]
    ThreadCount { threads: u32 },
    #[error("`blocks_per_sm({blocks})` with {threads} threads per block: a multiprocessor holds at most {MAX_BLOCKS_PER_SM} blocks and {MAX_THREADS_PER_SM} threads, so the hint must be 1 to {max}")]
    BlocksPerSm { blocks: u32, threads: u32, max: u32 },
    #[error("`{name}` is not a defined scalar")]
    UndefinedScalar { name: String },
    #[error("`{name}` is a pointer; only `view_global` can use it")]
    PointerAsInteger { name: String },
    #[error("`view_global` needs a pointer parameter, and `{name}` is an i32")]
    NotAPointer { name: String },
    #[error("scalar `{name}` is already defined here (scalars cannot be shadowed)")]
    ScalarRedefined { name: String },
    #[error("`%{name}` is not a defined tensor")]
    UndefinedTensor { name: String },
    #[error("`{inst}` needs a {expected} tensor, and `%{name}` is a {found} tensor")]
    WrongSpace {
        inst: &'static str,
        name: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("`%{name}` is a {space} tensor and cannot be assigned again; only register tensors can be overwritten")]
    CannotOverwrite { name: String, space: &'static str },
    #[error("`%{name}` has type {old}, and `{inst}` gives {new}; an overwrite must keep the type")]
    OverwriteType {
        inst: &'static str,
        name: String,
        old: String,
        new: String,
    },
    #[error("`{inst}`: layout {layout} spans {found} threads, and the block has {threads}")]
    LayoutThreads {
        inst: &'static str,
        layout: String,
        found: usize,
        threads: u32,
    },
    #[error("`{inst}`: a register tensor of {dtype} with layout {layout} takes more than {MAX_REGISTER_BITS} bits")]
    RegisterTooLarge {
        inst: &'static str,
        dtype: DType,
        layout: String,
    },
    #[error("`{inst}`: {what} has rank {found}, expected {expected}")]
    RankMismatch {
        inst: &'static str,
        what: String,
        expected: usize,
        found: usize,
    },
    #[error("`view_global`: a global tensor needs at least one dimension")]
    EmptyShape,
    #[error("`{inst}`: {what} is {found}, expected {expected}")]
    DTypeMismatch {
        inst: &'static str,
        what: String,
        expected: DType,
        found: DType,
    },
    #[error("`{inst}` is not defined on {dtype}: {reason}")]
    DTypeNotAllowed {
        inst: &'static str,
        dtype: DType,
        reason: &'static str,
    },
    #[error("`{inst}`: the constant {value} does not fit {dtype}")]
    ConstantOutOfRange {
        inst: &'static str,
        value: i64,
        dtype: DType,
    },
    #[error("`{inst}`: the float literal {value} needs a float type, and the tensor is {dtype}")]
    FloatForInteger {
        inst: &'static str,
        value: FloatLit,
        dtype: DType,
    },
    #[error("`{inst}` needs a tensor operand{}", if *.inst == "where" { " besides the condition" } else { "" })]
    NoTensorOperand { inst: &'static str },
    #[error("`{inst}`: shapes {lhs} and {rhs} do not broadcast (sizes must be equal or 1)")]
    BroadcastShape {
        inst: &'static str,
        lhs: Shape,
        rhs: Shape,
    },
    #[error("`{inst}`: no operand has the result shape {shape}, so the result has no layout")]
    NoFullShapeOperand { inst: &'static str, shape: Shape },
    #[error("`{inst}`: `%{name}` has layout {found}, expected {expected} like the other operand of shape {shape}")]
    LayoutMismatch {
        inst: &'static str,
        name: String,
        shape: Shape,
        expected: String,
        found: String,
    },
    #[error("`{inst}`: thread {thread} needs element {coords} of `%{name}` for broadcasting, but layout {layout} does not give it to that thread")]
    BroadcastLayout {
        inst: &'static str,
        name: String,
        thread: usize,
        coords: Shape,
        layout: String,
    },
    #[error("`view` must keep the bits per thread: {from} bits ({from_local} x {from_dtype}) become {to} bits ({to_local} x {to_dtype})")]
    ViewBits {
        from: u64,
        from_local: usize,
        from_dtype: DType,
        to: u64,
        to_local: usize,
        to_dtype: DType,
    },
    #[error("`view` takes {to} bits from bit {offset} of each thread, beyond the {from} bits ({from_local} x {from_dtype}) it holds")]
    ViewSlice {
        offset: u32,
        to: u64,
        from: u64,
        from_local: usize,
        from_dtype: DType,
    },
    #[error("`{inst}` to layout {to} from {from}: {reason}")]
    CastLayout {
        inst: &'static str,
        from: String,
        to: String,
        reason: String,
    },
    #[error("`cast_planes`: plane `%{name}` is {dtype}; planes are unsigned integers (u1 .. u8)")]
    PlaneType { name: String, dtype: DType },
    #[error("`cast_planes`: the code type {code} must be an integer or small float type (at most 8 bits) of as many bits as the planes have together ({widths} = {sum} bits)")]
    PlaneWidths {
        code: DType,
        widths: String,
        sum: u32,
    },
    #[error("`cast_planes`: plane `%{name}` (layout {layout}) must hold the elements of the first plane ({first}) in every thread: {reason}")]
    PlaneLayout {
        name: String,
        layout: String,
        first: String,
        reason: String,
    },
    #[error("`dot` needs a [.., M, K], b [.., K, N], c [.., M, N] with the same leading (batch) dimensions; found a {a}, b {b}, c {c}")]
    DotShape { a: Shape, b: Shape, c: Shape },
    #[error("`dot`: {reason} (a is {a}, b is {b}, c is {c})")]
    DotDTypes {
        reason: &'static str,
        a: DType,
        b: DType,
        c: DType,
    },
    #[error("`{inst}`: dimension {dim} is out of range for rank {rank}")]
    ReduceDim {
        inst: &'static str,
        dim: u32,
        rank: usize,
    },
    #[error("`%{name}` is freed twice")]
    DoubleFree { name: String },
    #[error("`%{name}` is used after `free_shared`")]
    UseAfterFree { name: String },
    #[error("`%{name}` must be freed in the block that allocates it")]
    FreeInOtherBlock { name: String },
    #[error(
        "`{inst}`: the tile {tile} at offsets {offsets} does not fit in `%{name}` of shape {shape}"
    )]
    SharedTileOutOfBounds {
        inst: &'static str,
        name: String,
        tile: Shape,
        offsets: String,
        shape: Shape,
    },
    #[error("the loop step is {step}; it must be positive")]
    NonPositiveStep { step: i32 },
    #[error("`unroll 0` is not a factor; write `unroll` or a factor of at least 1")]
    UnrollZero,
}

/// Checks `program`; returns what was learned about it, or the first error in program order.
pub fn verify(program: &Program) -> Result<Verified<'_>, VerifyError> {
    let mut verifier = Verifier::new(program);
    verifier.program(program)?;
    Ok(Verified::new(program, verifier.statements))
}

type Result<T, E = VerifyError> = std::result::Result<T, E>;

use VerifyErrorKind as K;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scalar {
    Pointer(DType),
    Int,
}

#[derive(Clone, Debug)]
struct TensorVar {
    ty: TensorType,
    freed: bool,
}

#[derive(Default, Debug)]
struct Frame {
    scalars: HashMap<String, Scalar>,
    tensors: HashMap<String, TensorVar>,
}

struct Verifier<'p> {
    threads: u32,
    frames: Vec<Frame>,
    span: Span,
    /// The statements checked so far, in program order, with their facts.
    statements: Vec<(&'p Stmt, StmtInfo)>,
}

/// What an instruction defines, and its operand maps if it is elementwise.
type InstFacts = (Option<Definition>, Option<Elementwise>);

fn is_scalar_name(name: &str) -> bool {
    is_identifier(name) && !KEYWORDS.contains(&name)
}

fn int_range(dtype: DType) -> Option<(i64, i64)> {
    match dtype {
        DType::Unsigned(bits) => Some((0, (1i64 << bits.min(62)) - 1)),
        DType::Signed(bits) => {
            let bits = bits.clamp(1, 62);
            Some((-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1))
        }
        _ => None,
    }
}

/// The local permutation `π` with `to.coordinates(t, l) == from.coordinates(t, π[l])` for
/// every thread `t`, the same in every thread (what `cast` to another local order needs).
pub fn local_permutation(
    from: &RegisterLayout,
    to: &RegisterLayout,
) -> std::result::Result<Vec<usize>, String> {
    if from.shape() != to.shape() {
        return Err(format!(
            "the shapes differ ({} and {})",
            Shape(from.shape().to_vec()),
            Shape(to.shape().to_vec())
        ));
    }
    if from.num_threads() != to.num_threads() || from.local_size() != to.local_size() {
        return Err(format!(
            "the layouts must have the same threads and elements per thread ({} x {} and {} x {})",
            from.num_threads(),
            from.local_size(),
            to.num_threads(),
            to.local_size()
        ));
    }
    let mut permutation = Vec::with_capacity(to.local_size());
    let mut coords = vec![0; to.rank()];
    for local in 0..to.local_size() {
        to.coordinates_into(0, local, &mut coords);
        match from.local_index_of(0, &coords) {
            Some(source) => permutation.push(source),
            None => {
                return Err(format!(
                    "thread 0 holds element {} in the new layout but not in the old; a cast only reorders each thread's own elements",
                    Shape(coords.clone())
                ))
            }
        }
    }
    // Both layouts passed `check_layout`, so this walk is bounded by MAX_REGISTER_BITS.
    for thread in 1..to.num_threads() {
        for (local, &source) in permutation.iter().enumerate() {
            to.coordinates_into(thread, local, &mut coords);
            if from.local_index_of(thread, &coords) != Some(source) {
                return Err(format!(
                    "thread {thread} orders its elements differently from thread 0 (element {}); the reordering must be the same in every thread",
                    Shape(coords.clone())
                ));
            }
        }
    }
    Ok(permutation)
}

fn offsets_text(offsets: &[Expr]) -> String {
    let items: Vec<String> = offsets.iter().map(ToString::to_string).collect();
    format!("[{}]", items.join(", "))
}

impl<'p> Verifier<'p> {
    fn new(program: &Program) -> Verifier<'p> {
        Verifier {
            threads: program.threads,
            frames: vec![Frame::default()],
            span: program.span,
            statements: Vec::new(),
        }
    }

    fn fail<T>(&self, kind: VerifyErrorKind) -> Result<T> {
        Err(VerifyError {
            span: self.span,
            kind: Box::new(kind),
        })
    }

    fn frame(&mut self) -> &mut Frame {
        if self.frames.is_empty() {
            self.frames.push(Frame::default());
        }
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    // ---------------------------------------------------------------- program

    fn program(&mut self, program: &'p Program) -> Result<()> {
        for (index, line) in program.doc.iter().enumerate() {
            if line.contains(['\n', '\r']) {
                return self.fail(K::InvalidDoc { line: index + 1 });
            }
        }
        if !is_scalar_name(&program.name) {
            return self.fail(K::InvalidName {
                what: "program",
                name: program.name.clone(),
            });
        }
        for param in &program.params {
            self.span = param.span;
            if !is_scalar_name(&param.name) {
                return self.fail(K::InvalidName {
                    what: "parameter",
                    name: param.name.clone(),
                });
            }
            if self.frame().scalars.contains_key(&param.name) {
                return self.fail(K::DuplicateParam {
                    name: param.name.clone(),
                });
            }
            let scalar = match param.kind {
                ParamKind::Pointer(dtype) => Scalar::Pointer(dtype),
                ParamKind::Int {
                    multiple_of: Some(0),
                } => {
                    return self.fail(K::MultipleOfZero {
                        name: param.name.clone(),
                    })
                }
                ParamKind::Int { .. } => Scalar::Int,
            };
            self.frame().scalars.insert(param.name.clone(), scalar);
        }
        self.span = program.span;
        if program.grid.is_empty() || program.grid.len() > 3 {
            return self.fail(K::GridRank {
                rank: program.grid.len(),
            });
        }
        for dim in &program.grid {
            self.grid_expr(dim)?;
        }
        if program.threads == 0 || program.threads > MAX_THREADS {
            return self.fail(K::ThreadCount {
                threads: program.threads,
            });
        }
        if let Some(blocks) = program.blocks_per_sm {
            let max = MAX_BLOCKS_PER_SM.min(MAX_THREADS_PER_SM / program.threads);
            if blocks == 0 || blocks > max {
                return self.fail(K::BlocksPerSm {
                    blocks,
                    threads: program.threads,
                    max,
                });
            }
        }
        self.block(&program.body)
    }

    fn grid_expr(&self, expr: &Expr) -> Result<()> {
        match expr {
            Expr::Const(_) => Ok(()),
            Expr::BlockIdx(axis) => self.fail(K::GridExpr {
                found: format!("`block.{}`", axis.name()),
            }),
            Expr::Var(_) => self.expr(expr),
            Expr::Binary(_, lhs, rhs) => {
                self.grid_expr(lhs)?;
                self.grid_expr(rhs)
            }
        }
    }

    // ---------------------------------------------------------------- scopes

    fn scalar(&self, name: &str) -> Option<Scalar> {
        self.frames
            .iter()
            .rev()
            .find_map(|frame| frame.scalars.get(name).copied())
    }

    /// The frame index and variable of a visible tensor.
    fn tensor_var(&self, name: &str) -> Option<(usize, &TensorVar)> {
        self.frames
            .iter()
            .enumerate()
            .rev()
            .find_map(|(index, frame)| frame.tensors.get(name).map(|var| (index, var)))
    }

    /// A visible, not freed tensor.
    fn tensor(&self, name: &str) -> Result<&TensorType> {
        match self.tensor_var(name) {
            None => self.fail(K::UndefinedTensor {
                name: name.to_string(),
            }),
            Some((_, var)) if var.freed => self.fail(K::UseAfterFree {
                name: name.to_string(),
            }),
            Some((_, var)) => Ok(&var.ty),
        }
    }

    fn wrong_space<T>(&self, inst: &Inst, name: &str, expected: &'static str) -> Result<T> {
        let found = self.tensor(name)?.space();
        self.fail(K::WrongSpace {
            inst: inst.mnemonic(),
            name: name.to_string(),
            expected,
            found,
        })
    }

    fn register_tensor(&self, inst: &Inst, name: &str) -> Result<(DType, RegisterLayout)> {
        match self.tensor(name)? {
            TensorType::Register { dtype, layout } => Ok((*dtype, layout.clone())),
            _ => self.wrong_space(inst, name, "register"),
        }
    }

    fn shared_tensor(&self, inst: &Inst, name: &str) -> Result<(DType, Vec<usize>)> {
        match self.tensor(name)? {
            TensorType::Shared { dtype, layout } => Ok((*dtype, layout.shape().to_vec())),
            _ => self.wrong_space(inst, name, "shared"),
        }
    }

    fn global_tensor(&self, inst: &Inst, name: &str) -> Result<(DType, usize)> {
        match self.tensor(name)? {
            TensorType::Global { dtype, rank } => Ok((*dtype, *rank)),
            _ => self.wrong_space(inst, name, "global"),
        }
    }

    fn define_scalar(&mut self, name: &str, what: &'static str) -> Result<()> {
        if !is_scalar_name(name) {
            return self.fail(K::InvalidName {
                what,
                name: name.to_string(),
            });
        }
        if self.scalar(name).is_some() {
            return self.fail(K::ScalarRedefined {
                name: name.to_string(),
            });
        }
        self.frame().scalars.insert(name.to_string(), Scalar::Int);
        Ok(())
    }

    /// Defines `%name` with type `ty`, or overwrites it if visible (same register type only).
    fn define_tensor(&mut self, inst: &Inst, name: &str, ty: TensorType) -> Result<Definition> {
        if !is_identifier(name) {
            return self.fail(K::InvalidName {
                what: "tensor",
                name: name.to_string(),
            });
        }
        if let TensorType::Register { dtype, layout } = &ty {
            self.check_layout(inst, *dtype, layout)?;
        }
        let definition = |overwrite| Definition {
            name: name.to_string(),
            ty: ty.clone(),
            overwrite,
        };
        match self.tensor_var(name) {
            None => {
                let defined = definition(false);
                self.frame()
                    .tensors
                    .insert(name.to_string(), TensorVar { ty, freed: false });
                Ok(defined)
            }
            Some((_, var)) => match &var.ty {
                TensorType::Register { .. } if var.ty == ty => Ok(definition(true)),
                TensorType::Register { .. } => self.fail(K::OverwriteType {
                    inst: inst.mnemonic(),
                    name: name.to_string(),
                    old: var.ty.to_string(),
                    new: ty.to_string(),
                }),
                other => self.fail(K::CannotOverwrite {
                    name: name.to_string(),
                    space: other.space(),
                }),
            },
        }
    }

    /// Defines the result of a `cast` or `cast_planes` from elements in layout `from`: in `to`
    /// where given (which must only reorder each thread's elements), else in `from`.
    fn define_cast(
        &mut self,
        inst: &Inst,
        dst: &str,
        dtype: DType,
        from: RegisterLayout,
        to: Option<&RegisterLayout>,
    ) -> Result<InstFacts> {
        let layout = match to {
            None => from,
            Some(to) => {
                self.check_layout(inst, dtype, to)?;
                if let Err(reason) = local_permutation(&from, to) {
                    return self.fail(K::CastLayout {
                        inst: inst.mnemonic(),
                        from: from.to_string(),
                        to: to.to_string(),
                        reason,
                    });
                }
                to.clone()
            }
        };
        self.define(inst, dst, TensorType::Register { dtype, layout })
    }

    fn check_layout(&self, inst: &Inst, dtype: DType, layout: &RegisterLayout) -> Result<()> {
        if layout.num_threads() != self.threads as usize {
            return self.fail(K::LayoutThreads {
                inst: inst.mnemonic(),
                layout: layout.to_string(),
                found: layout.num_threads(),
                threads: self.threads,
            });
        }
        let bits = (layout.num_threads() as u64)
            .checked_mul(layout.local_size() as u64)
            .and_then(|slots| slots.checked_mul(u64::from(dtype.bits())));
        if bits.is_none_or(|bits| bits > MAX_REGISTER_BITS) {
            return self.fail(K::RegisterTooLarge {
                inst: inst.mnemonic(),
                dtype,
                layout: layout.to_string(),
            });
        }
        Ok(())
    }

    // ---------------------------------------------------------------- scalars

    fn expr(&self, expr: &Expr) -> Result<()> {
        match expr {
            Expr::Const(_) | Expr::BlockIdx(_) => Ok(()),
            Expr::Var(name) => match self.scalar(name) {
                Some(Scalar::Int) => Ok(()),
                Some(Scalar::Pointer(_)) => self.fail(K::PointerAsInteger { name: name.clone() }),
                None => self.fail(K::UndefinedScalar { name: name.clone() }),
            },
            Expr::Binary(_, lhs, rhs) => {
                self.expr(lhs)?;
                self.expr(rhs)
            }
        }
    }

    fn exprs(&self, exprs: &[Expr]) -> Result<()> {
        exprs.iter().try_for_each(|expr| self.expr(expr))
    }

    fn cond(&self, cond: &Cond) -> Result<()> {
        match cond {
            Cond::Bool(_) => Ok(()),
            Cond::Compare(_, lhs, rhs) => {
                self.expr(lhs)?;
                self.expr(rhs)
            }
            Cond::And(lhs, rhs) | Cond::Or(lhs, rhs) => {
                self.cond(lhs)?;
                self.cond(rhs)
            }
            Cond::Not(inner) => self.cond(inner),
        }
    }

    // ---------------------------------------------------------------- statements

    fn block(&mut self, body: &'p [Stmt]) -> Result<()> {
        body.iter().try_for_each(|stmt| self.stmt(stmt))
    }

    fn nested(&mut self, body: &'p [Stmt], loop_var: Option<&str>) -> Result<()> {
        self.frames.push(Frame::default());
        let result = match loop_var {
            Some(var) => self
                .define_scalar(var, "loop variable")
                .and_then(|()| self.block(body)),
            None => self.block(body),
        };
        self.frames.pop();
        result
    }

    /// Records the facts about `stmt`, in program order.
    fn record(&mut self, stmt: &'p Stmt, facts: InstFacts) {
        let (defines, elementwise) = facts;
        let info = StmtInfo {
            index: self.statements.len(),
            defines,
            elementwise,
        };
        self.statements.push((stmt, info));
    }

    fn stmt(&mut self, stmt: &'p Stmt) -> Result<()> {
        self.span = stmt.span;
        match &stmt.kind {
            StmtKind::Let { name, value } => {
                self.expr(value)?;
                self.define_scalar(name, "variable")?;
                self.record(stmt, (None, None));
                Ok(())
            }
            StmtKind::For(ForLoop {
                var,
                start,
                end,
                step,
                unroll,
                body,
            }) => {
                self.exprs(&[start.clone(), end.clone(), step.clone()])?;
                if let Expr::Const(step) = step {
                    if *step <= 0 {
                        return self.fail(K::NonPositiveStep { step: *step });
                    }
                }
                if *unroll == Unroll::Factor(0) {
                    return self.fail(K::UnrollZero);
                }
                // Before the body: a statement comes before the statements nested in it.
                self.record(stmt, (None, None));
                self.nested(body, Some(var))
            }
            StmtKind::If {
                cond,
                then_body,
                else_body,
            } => {
                self.cond(cond)?;
                self.record(stmt, (None, None));
                self.nested(then_body, None)?;
                self.span = stmt.span;
                self.nested(else_body, None)
            }
            StmtKind::Inst(inst) => {
                let facts = self.inst(inst)?;
                self.record(stmt, facts);
                Ok(())
            }
        }
    }

    // ---------------------------------------------------------------- instructions

    fn rank_check(&self, inst: &Inst, what: &str, expected: usize, found: usize) -> Result<()> {
        if expected == found {
            Ok(())
        } else {
            self.fail(K::RankMismatch {
                inst: inst.mnemonic(),
                what: what.to_string(),
                expected,
                found,
            })
        }
    }

    fn dtype_check(&self, inst: &Inst, what: &str, expected: DType, found: DType) -> Result<()> {
        if expected == found {
            Ok(())
        } else {
            self.fail(K::DTypeMismatch {
                inst: inst.mnemonic(),
                what: what.to_string(),
                expected,
                found,
            })
        }
    }

    /// A register tile of shape `tile` at `offsets` in the shared tensor `%name`.
    fn shared_tile(
        &self,
        inst: &Inst,
        name: &str,
        shape: &[usize],
        offsets: &[Expr],
        tile: &[usize],
    ) -> Result<()> {
        let fits = shape.iter().zip(tile).zip(offsets).all(|((&size, &t), o)| {
            let offset = match o {
                Expr::Const(value) => i64::from(*value),
                _ => 0,
            };
            offset >= 0 && offset as u64 + t as u64 <= size as u64
        });
        if fits {
            Ok(())
        } else {
            self.fail(K::SharedTileOutOfBounds {
                inst: inst.mnemonic(),
                name: name.to_string(),
                tile: Shape(tile.to_vec()),
                offsets: offsets_text(offsets),
                shape: Shape(shape.to_vec()),
            })
        }
    }

    /// [`Verifier::define_tensor`], as the facts of an instruction that is not elementwise.
    fn define(&mut self, inst: &Inst, name: &str, ty: TensorType) -> Result<InstFacts> {
        Ok((Some(self.define_tensor(inst, name, ty)?), None))
    }

    /// Defines the register result (of dtype `dtype`) of an elementwise instruction.
    fn define_elementwise(
        &mut self,
        inst: &Inst,
        name: &str,
        dtype: DType,
        elementwise: Elementwise,
    ) -> Result<InstFacts> {
        let layout = elementwise.layout.clone();
        let defined = self.define_tensor(inst, name, TensorType::Register { dtype, layout })?;
        Ok((Some(defined), Some(elementwise)))
    }

    fn inst(&mut self, inst: &Inst) -> Result<InstFacts> {
        let name = inst.mnemonic();
        match inst {
            Inst::AllocRegister {
                dst,
                dtype,
                layout,
                init,
            } => {
                match init {
                    Some(Literal::Int(value)) => self.int_constant(inst, *value, *dtype)?,
                    Some(Literal::Float(value)) => self.float_constant(inst, *value, *dtype)?,
                    None => {}
                }
                self.define(
                    inst,
                    dst,
                    TensorType::Register {
                        dtype: *dtype,
                        layout: layout.clone(),
                    },
                )
            }
            Inst::AllocShared { dst, dtype, layout } => self.define(
                inst,
                dst,
                TensorType::Shared {
                    dtype: *dtype,
                    layout: layout.clone(),
                },
            ),
            Inst::FreeShared { tensor } => {
                let depth = self.frames.len().saturating_sub(1);
                match self.tensor_var(tensor) {
                    None => self.fail(K::UndefinedTensor {
                        name: tensor.clone(),
                    }),
                    Some((_, var)) if !matches!(var.ty, TensorType::Shared { .. }) => {
                        let found = var.ty.space();
                        self.fail(K::WrongSpace {
                            inst: name,
                            name: tensor.clone(),
                            expected: "shared",
                            found,
                        })
                    }
                    Some((_, var)) if var.freed => self.fail(K::DoubleFree {
                        name: tensor.clone(),
                    }),
                    Some((frame, _)) if frame != depth => self.fail(K::FreeInOtherBlock {
                        name: tensor.clone(),
                    }),
                    Some(_) => {
                        if let Some(var) = self.frame().tensors.get_mut(tensor) {
                            var.freed = true;
                        }
                        Ok((None, None))
                    }
                }
            }
            Inst::ViewGlobal {
                dst,
                ptr,
                shape,
                strides,
            } => {
                let dtype = match self.scalar(ptr) {
                    Some(Scalar::Pointer(dtype)) => dtype,
                    Some(Scalar::Int) => return self.fail(K::NotAPointer { name: ptr.clone() }),
                    None => return self.fail(K::UndefinedScalar { name: ptr.clone() }),
                };
                self.exprs(shape)?;
                self.exprs(strides)?;
                if shape.is_empty() {
                    return self.fail(K::EmptyShape);
                }
                self.rank_check(inst, "the list of strides", shape.len(), strides.len())?;
                self.define(
                    inst,
                    dst,
                    TensorType::Global {
                        dtype,
                        rank: shape.len(),
                    },
                )
            }
            Inst::LoadGlobal {
                dst,
                src,
                offsets,
                layout,
            } => {
                let (dtype, rank) = self.global_tensor(inst, src)?;
                self.exprs(offsets)?;
                self.rank_check(inst, "the list of offsets", rank, offsets.len())?;
                self.rank_check(inst, "the layout", rank, layout.rank())?;
                self.define(
                    inst,
                    dst,
                    TensorType::Register {
                        dtype,
                        layout: layout.clone(),
                    },
                )
            }
            Inst::StoreGlobal { dst, offsets, src } => {
                let (dtype, rank) = self.global_tensor(inst, dst)?;
                self.exprs(offsets)?;
                self.rank_check(inst, "the list of offsets", rank, offsets.len())?;
                let (value_dtype, layout) = self.register_tensor(inst, src)?;
                self.rank_check(inst, &format!("`%{src}`"), rank, layout.rank())?;
                self.dtype_check(inst, &format!("the dtype of `%{src}`"), dtype, value_dtype)?;
                Ok((None, None))
            }
            Inst::LoadShared {
                dst,
                src,
                offsets,
                layout,
            } => {
                let (dtype, shape) = self.shared_tensor(inst, src)?;
                self.exprs(offsets)?;
                self.rank_check(inst, "the list of offsets", shape.len(), offsets.len())?;
                self.rank_check(inst, "the layout", shape.len(), layout.rank())?;
                self.shared_tile(inst, src, &shape, offsets, layout.shape())?;
                self.define(
                    inst,
                    dst,
                    TensorType::Register {
                        dtype,
                        layout: layout.clone(),
                    },
                )
            }
            Inst::StoreShared { dst, offsets, src } => {
                let (dtype, shape) = self.shared_tensor(inst, dst)?;
                self.exprs(offsets)?;
                self.rank_check(inst, "the list of offsets", shape.len(), offsets.len())?;
                let (value_dtype, layout) = self.register_tensor(inst, src)?;
                self.rank_check(inst, &format!("`%{src}`"), shape.len(), layout.rank())?;
                self.dtype_check(inst, &format!("the dtype of `%{src}`"), dtype, value_dtype)?;
                self.shared_tile(inst, dst, &shape, offsets, layout.shape())?;
                Ok((None, None))
            }
            Inst::CopyAsync { dst, src, offsets } => {
                let (shared_dtype, shape) = self.shared_tensor(inst, dst)?;
                let (global_dtype, rank) = self.global_tensor(inst, src)?;
                self.exprs(offsets)?;
                self.rank_check(inst, "the list of offsets", rank, offsets.len())?;
                self.rank_check(inst, &format!("`%{dst}`"), rank, shape.len())?;
                self.dtype_check(
                    inst,
                    &format!("the dtype of `%{dst}`"),
                    global_dtype,
                    shared_dtype,
                )?;
                Ok((None, None))
            }
            Inst::CommitGroup | Inst::WaitGroup { .. } | Inst::Barrier => Ok((None, None)),
            Inst::View {
                dst,
                src,
                dtype,
                layout,
                offset,
            } => {
                let (from_dtype, from_layout) = self.register_tensor(inst, src)?;
                self.check_layout(inst, *dtype, layout)?;
                let from = from_layout.local_size() as u64 * u64::from(from_dtype.bits());
                let to = layout.local_size() as u64 * u64::from(dtype.bits());
                match offset {
                    None if from != to => {
                        return self.fail(K::ViewBits {
                            from,
                            from_local: from_layout.local_size(),
                            from_dtype,
                            to,
                            to_local: layout.local_size(),
                            to_dtype: *dtype,
                        })
                    }
                    Some(offset) if u64::from(*offset) + to > from => {
                        return self.fail(K::ViewSlice {
                            offset: *offset,
                            to,
                            from,
                            from_local: from_layout.local_size(),
                            from_dtype,
                        })
                    }
                    _ => {}
                }
                self.define(
                    inst,
                    dst,
                    TensorType::Register {
                        dtype: *dtype,
                        layout: layout.clone(),
                    },
                )
            }
            Inst::Cast {
                dst,
                src,
                dtype,
                layout: to,
            } => {
                let (_, from) = self.register_tensor(inst, src)?;
                self.define_cast(inst, dst, *dtype, from, to.as_ref())
            }
            Inst::CastPlanes {
                dst,
                planes,
                code,
                dtype,
                layout: to,
            } => {
                let mut widths = Vec::with_capacity(planes.len());
                let mut first: Option<RegisterLayout> = None;
                for plane in planes {
                    let (plane_type, layout) = self.register_tensor(inst, plane)?;
                    let DType::Unsigned(width @ 1..=8) = plane_type else {
                        return self.fail(K::PlaneType {
                            name: plane.clone(),
                            dtype: plane_type,
                        });
                    };
                    widths.push(u32::from(width));
                    match &first {
                        None => first = Some(layout),
                        Some(first) => {
                            if let Err(reason) = local_permutation(&layout, first) {
                                return self.fail(K::PlaneLayout {
                                    name: plane.clone(),
                                    layout: layout.to_string(),
                                    first: first.to_string(),
                                    reason,
                                });
                            }
                        }
                    }
                }
                let sum: u32 = widths.iter().sum();
                let small = matches!(
                    code,
                    DType::Unsigned(_) | DType::Signed(_) | DType::MiniFloat(_)
                ) && code.bits() <= 8;
                if !small || code.bits() != sum {
                    let widths: Vec<String> = widths.iter().map(ToString::to_string).collect();
                    let widths = if widths.is_empty() {
                        "no planes".to_string()
                    } else {
                        widths.join(" + ")
                    };
                    return self.fail(K::PlaneWidths {
                        code: *code,
                        widths,
                        sum,
                    });
                }
                let from = first.expect("the parser and the builder give at least one plane");
                self.define_cast(inst, dst, *dtype, from, to.as_ref())
            }
            Inst::Unary { dst, op, src } => {
                let (dtype, layout) = self.register_tensor(inst, src)?;
                if *op == UnaryOp::Exp && !dtype.is_float() {
                    return self.fail(K::DTypeNotAllowed {
                        inst: name,
                        dtype,
                        reason: "it needs a float type",
                    });
                }
                self.define(inst, dst, TensorType::Register { dtype, layout })
            }
            Inst::Binary { dst, lhs, rhs, .. } => {
                let elementwise = self.elementwise(inst, None, &[lhs, rhs])?;
                self.define_elementwise(inst, dst, elementwise.dtype, elementwise)
            }
            Inst::Compare { dst, lhs, rhs, .. } => {
                let elementwise = self.elementwise(inst, None, &[lhs, rhs])?;
                self.define_elementwise(inst, dst, DType::Unsigned(1), elementwise)
            }
            Inst::Where {
                dst,
                cond,
                then,
                otherwise,
            } => {
                let elementwise = self.elementwise(inst, Some(cond), &[then, otherwise])?;
                self.define_elementwise(inst, dst, elementwise.dtype, elementwise)
            }
            Inst::Dot { dst, a, b, c } => {
                let (a_dtype, a_layout) = self.register_tensor(inst, a)?;
                let (b_dtype, b_layout) = self.register_tensor(inst, b)?;
                let (c_dtype, c_layout) = self.register_tensor(inst, c)?;
                let (sa, sb, sc) = (a_layout.shape(), b_layout.shape(), c_layout.shape());
                let rank = sa.len();
                let shapes_ok = rank >= 2
                    && sb.len() == rank
                    && sc.len() == rank
                    && sa[..rank - 2] == sb[..rank - 2]
                    && sa[..rank - 2] == sc[..rank - 2]
                    && sa[rank - 1] == sb[rank - 2]
                    && sa[rank - 2] == sc[rank - 2]
                    && sb[rank - 1] == sc[rank - 1];
                if !shapes_ok {
                    return self.fail(K::DotShape {
                        a: Shape(sa.to_vec()),
                        b: Shape(sb.to_vec()),
                        c: Shape(sc.to_vec()),
                    });
                }
                let reason = if a_dtype != b_dtype {
                    Some("a and b must have the same dtype")
                } else if a_dtype.is_float() != c_dtype.is_float() {
                    Some("the inputs and the accumulator must be both floats or both integers")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return self.fail(K::DotDTypes {
                        reason,
                        a: a_dtype,
                        b: b_dtype,
                        c: c_dtype,
                    });
                }
                self.define(
                    inst,
                    dst,
                    TensorType::Register {
                        dtype: c_dtype,
                        layout: c_layout,
                    },
                )
            }
            Inst::Reduce { dst, src, dim, .. } => {
                let (dtype, layout) = self.register_tensor(inst, src)?;
                if *dim as usize >= layout.rank() {
                    return self.fail(K::ReduceDim {
                        inst: name,
                        dim: *dim,
                        rank: layout.rank(),
                    });
                }
                let layout = layout.reduce(*dim as usize);
                self.define(inst, dst, TensorType::Register { dtype, layout })
            }
            Inst::Print { src } => match self.tensor(src)? {
                TensorType::Register { .. } | TensorType::Shared { .. } => Ok((None, None)),
                TensorType::Global { .. } => self.wrong_space(inst, src, "register or shared"),
            },
        }
    }

    fn int_constant(&self, inst: &Inst, value: i64, dtype: DType) -> Result<()> {
        match int_range(dtype) {
            Some((low, high)) if value < low || value > high => self.fail(K::ConstantOutOfRange {
                inst: inst.mnemonic(),
                value,
                dtype,
            }),
            _ => Ok(()),
        }
    }

    fn float_constant(&self, inst: &Inst, value: FloatLit, dtype: DType) -> Result<()> {
        if dtype.is_float() {
            Ok(())
        } else {
            self.fail(K::FloatForInteger {
                inst: inst.mnemonic(),
                value,
                dtype,
            })
        }
    }

    /// Checks the operands of an elementwise instruction (with `cond` for `where`) and returns
    /// the dtype of the value operands, the result layout and how each operand maps onto it.
    fn elementwise(
        &self,
        inst: &Inst,
        cond: Option<&String>,
        values: &[&Operand],
    ) -> Result<Elementwise> {
        let name = inst.mnemonic();
        // Tensor operands in argument order: (name, dtype, layout).
        let mut tensors: Vec<(String, DType, RegisterLayout)> = Vec::new();
        // Every operand in argument order: its position in `tensors`, `None` for a scalar.
        let mut positions: Vec<Option<usize>> = Vec::new();
        if let Some(cond) = cond {
            positions.push(Some(tensors.len()));
            let (dtype, layout) = self.register_tensor(inst, cond)?;
            self.dtype_check(
                inst,
                &format!("the condition `%{cond}`"),
                DType::Unsigned(1),
                dtype,
            )?;
            tensors.push((cond.clone(), dtype, layout));
        }
        let mut value_dtype: Option<DType> = None;
        for operand in values {
            if let Operand::Tensor(tensor) = operand {
                let (dtype, layout) = self.register_tensor(inst, tensor)?;
                match value_dtype {
                    None => value_dtype = Some(dtype),
                    Some(expected) => self.dtype_check(
                        inst,
                        &format!("the dtype of `%{tensor}`"),
                        expected,
                        dtype,
                    )?,
                }
                positions.push(Some(tensors.len()));
                tensors.push((tensor.clone(), dtype, layout));
            } else {
                positions.push(None);
            }
        }
        let Some(dtype) = value_dtype else {
            return self.fail(K::NoTensorOperand { inst: name });
        };
        for operand in values {
            match operand {
                Operand::Tensor(_) => {}
                Operand::Scalar(expr) => {
                    self.expr(expr)?;
                    if let Expr::Const(value) = expr {
                        self.int_constant(inst, i64::from(*value), dtype)?;
                    }
                }
                Operand::Float(value) => self.float_constant(inst, *value, dtype)?,
            }
        }
        // Broadcasting: equal ranks, then sizes equal or 1.
        let rank = tensors[0].2.rank();
        for (tensor, _, layout) in &tensors {
            self.rank_check(inst, &format!("`%{tensor}`"), rank, layout.rank())?;
        }
        let mut shape = tensors[0].2.shape().to_vec();
        for (_, _, layout) in &tensors[1..] {
            let fits = shape
                .iter()
                .zip(layout.shape())
                .all(|(&a, &b)| a == b || a == 1 || b == 1);
            if !fits {
                return self.fail(K::BroadcastShape {
                    inst: name,
                    lhs: Shape(shape),
                    rhs: Shape(layout.shape().to_vec()),
                });
            }
            for (size, &other) in shape.iter_mut().zip(layout.shape()) {
                *size = (*size).max(other);
            }
        }
        let Some((_, _, result)) = tensors.iter().find(|(_, _, l)| l.shape() == shape) else {
            return self.fail(K::NoFullShapeOperand {
                inst: name,
                shape: Shape(shape),
            });
        };
        let result = result.clone();
        for (tensor, _, layout) in &tensors {
            if layout.shape() == shape {
                if *layout != result {
                    return self.fail(K::LayoutMismatch {
                        inst: name,
                        name: tensor.clone(),
                        shape: Shape(shape),
                        expected: result.to_string(),
                        found: layout.to_string(),
                    });
                }
            } else {
                self.broadcast_layout(inst, tensor, layout, &result)?;
            }
        }
        let operands = positions
            .iter()
            .map(|position| match position.and_then(|p| tensors.get(p)) {
                None => ElementwiseOperand::Scalar,
                Some((_, _, layout)) => {
                    let dims: Vec<usize> = (0..shape.len())
                        .filter(|&d| layout.shape().get(d) != shape.get(d))
                        .collect();
                    if dims.is_empty() {
                        ElementwiseOperand::Full
                    } else {
                        ElementwiseOperand::Broadcast {
                            dims,
                            layout: Box::new(layout.clone()),
                        }
                    }
                }
            })
            .collect();
        Ok(Elementwise {
            dtype,
            layout: result,
            operands,
        })
    }

    /// Every thread holds, in `layout`, the elements it needs to broadcast into `result`.
    fn broadcast_layout(
        &self,
        inst: &Inst,
        tensor: &str,
        layout: &RegisterLayout,
        result: &RegisterLayout,
    ) -> Result<()> {
        // Both layouts passed `check_layout`, so this loop is bounded by MAX_REGISTER_BITS.
        let mut coords = vec![0; result.rank()];
        for thread in 0..result.num_threads() {
            for local in 0..result.local_size() {
                result.coordinates_into(thread, local, &mut coords);
                for (c, &size) in coords.iter_mut().zip(layout.shape()) {
                    if size == 1 {
                        *c = 0;
                    }
                }
                if layout.local_index_of(thread, &coords).is_none() {
                    return self.fail(K::BroadcastLayout {
                        inst: inst.mnemonic(),
                        name: tensor.to_string(),
                        thread,
                        coords: Shape(coords),
                        layout: layout.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}
