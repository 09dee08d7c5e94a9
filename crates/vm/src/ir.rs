//! The IR data types: [`Program`], statements, scalar expressions and instructions.
//!
//! What this module promises:
//! - Every type here is plain data (`Clone`, `Debug`, `PartialEq`); nothing is checked when a
//!   value is built. [`crate::verify()`] decides whether a program is well formed.
//! - [`Span`]s never take part in equality: two programs that differ only in spans are equal.
//! - Floating-point literals ([`FloatLit`]) compare by bits (all NaNs equal), so
//!   `0.0 != -0.0`.
//!
//! The semantics of every construct are specified in `docs/vm.md` (also the crate docs).

use std::fmt;
use std::hash::{Hash, Hasher};

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout};

/// True when `name` is an identifier of the text form: `[A-Za-z_][A-Za-z0-9_]*` (ASCII only).
///
/// Program, parameter, scalar and tensor names must be identifiers; program, parameter and
/// scalar names must in addition not be keywords ([`crate::text::KEYWORDS`]). The verifier,
/// the parser and code generation all decide with this one function.
///
/// ```
/// use anybit_vm::is_identifier;
/// assert!(is_identifier("acc_2") && is_identifier("_x"));
/// assert!(!is_identifier("2acc") && !is_identifier("my var") && !is_identifier("") && !is_identifier("é"));
/// ```
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_identifier_start) && chars.all(is_identifier_char)
}

/// A character that may start an identifier.
pub(crate) fn is_identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// A character that may continue an identifier.
pub(crate) fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A position in the text form: 1-based line and column (in characters).
///
/// Programs made with the builder carry `Span::UNKNOWN` (0:0). Spans are for messages only:
/// `PartialEq` always returns `true` and `Hash` hashes nothing, so spans never change the
/// equality of the IR values that contain them. Compare `line` and `column` directly to test
/// spans.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column, counted in characters; 0 when unknown.
    pub column: u32,
}

impl Span {
    /// The span of IR that did not come from text.
    pub const UNKNOWN: Span = Span { line: 0, column: 0 };

    /// A span at `line:column`.
    pub const fn new(line: u32, column: u32) -> Span {
        Span { line, column }
    }

    /// True for [`Span::UNKNOWN`].
    pub const fn is_unknown(self) -> bool {
        self.line == 0
    }
}

impl PartialEq for Span {
    fn eq(&self, _other: &Span) -> bool {
        true
    }
}

impl Eq for Span {}

impl Hash for Span {
    fn hash<H: Hasher>(&self, _state: &mut H) {}
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The code of one thread block, launched over a grid of blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Documentation lines (the `///` lines before `program` in the text form, without the
    /// `///` and one following space).
    pub doc: Vec<String>,
    /// The program's name, an identifier.
    pub name: String,
    /// Parameters, in call order. Names are distinct.
    pub params: Vec<Param>,
    /// Number of blocks along x, y, z: 1 to 3 expressions over the integer parameters
    /// (missing dimensions are 1). They must not use `block.*`, loop or `let` variables.
    pub grid: Vec<Expr>,
    /// Threads per block (1 to 1024). Every register layout must span exactly this many threads.
    pub threads: u32,
    /// An occupancy hint, `blocks_per_sm(n)` after `threads`: at least `n` blocks should be
    /// resident on a multiprocessor at once, so code generation keeps each thread's registers
    /// within what that leaves (`__launch_bounds__(threads, n)`). It does not change what the
    /// program computes; executors without registers ignore it.
    pub blocks_per_sm: Option<u32>,
    /// The body, executed by every block.
    pub body: Vec<Stmt>,
    /// Where the `program` keyword is.
    pub span: Span,
}

/// A parameter of a program.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// An identifier, distinct from the other parameters.
    pub name: String,
    /// Pointer or integer.
    pub kind: ParamKind,
    /// Where the parameter's name is.
    pub span: Span,
}

/// The kind of a [`Param`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A pointer into global memory whose elements have the given type. Element `e` occupies
    /// bits `[e·n, (e+1)·n)` of the little-endian bit stream that starts at the pointer, where
    /// `n = dtype.bits()`; sub-byte types are therefore packed.
    Pointer(DType),
    /// A 32-bit signed integer. `multiple_of: Some(m)` promises that the value is a multiple of
    /// `m` (m ≥ 1); code generation may rely on it, the interpreter checks it at launch.
    Int {
        /// Divisibility promise, if any.
        multiple_of: Option<u32>,
    },
}

/// A grid axis, for `block.x`, `block.y`, `block.z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Axis {
    X,
    Y,
    Z,
}

impl Axis {
    /// `x`, `y` or `z`.
    pub const fn name(self) -> &'static str {
        match self {
            Axis::X => "x",
            Axis::Y => "y",
            Axis::Z => "z",
        }
    }

    /// 0, 1 or 2.
    pub const fn index(self) -> usize {
        match self {
            Axis::X => 0,
            Axis::Y => 1,
            Axis::Z => 2,
        }
    }
}

/// A scalar `i32` expression. Its value is the same for every thread of a block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Expr {
    /// A constant.
    Const(i32),
    /// An integer parameter, a loop variable or a `let` variable.
    Var(String),
    /// The index of the block along an axis: `0 <= block.x < grid[0]`.
    BlockIdx(Axis),
    /// A binary operation.
    Binary(ExprOp, Box<Expr>, Box<Expr>),
}

/// A binary operation on [`Expr`]s. See `docs/vm.md` for overflow and division rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExprOp {
    Add,
    Sub,
    Mul,
    /// Division truncating toward zero (as in C and Rust).
    Div,
    /// Remainder with the sign of the dividend (as in C and Rust).
    Rem,
    Min,
    Max,
    /// `ceil(a / b)` for `b > 0`, computed exactly.
    CeilDiv,
}

/// A scalar condition, for `if`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Cond {
    /// `true` or `false`.
    Bool(bool),
    /// A comparison of two expressions.
    Compare(CmpOp, Expr, Expr),
    /// Logical and (both sides are evaluated; evaluation has no side effects).
    And(Box<Cond>, Box<Cond>),
    /// Logical or.
    Or(Box<Cond>, Box<Cond>),
    /// Logical not.
    Not(Box<Cond>),
}

/// A comparison, of scalars in [`Cond`] or of tensor elements in [`Inst::Compare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// A statement with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    /// What the statement does.
    pub kind: StmtKind,
    /// Where it starts in the text form.
    pub span: Span,
}

/// The statements.
#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `let name = value;` — an immutable scalar variable, visible until the end of the
    /// enclosing block.
    Let { name: String, value: Expr },
    /// A counted loop.
    For(ForLoop),
    /// `if cond { then_body } else { else_body }`.
    If {
        cond: Cond,
        then_body: Vec<Stmt>,
        else_body: Vec<Stmt>,
    },
    /// A collective instruction.
    Inst(Inst),
}

/// `for var in start..end step step unroll { body }`.
#[derive(Clone, Debug, PartialEq)]
pub struct ForLoop {
    /// The loop variable, an immutable scalar visible in `body` only.
    pub var: String,
    /// First value, evaluated once before the loop.
    pub start: Expr,
    /// Exclusive bound, evaluated once before the loop.
    pub end: Expr,
    /// Increment, evaluated once before the loop; must be positive.
    pub step: Expr,
    /// Unrolling hint for code generation; no effect on the meaning.
    pub unroll: Unroll,
    /// The loop body.
    pub body: Vec<Stmt>,
}

/// An unrolling hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Unroll {
    /// No hint.
    #[default]
    None,
    /// Unroll completely (the trip count should then be a compile-time constant).
    Full,
    /// Unroll by this factor (≥ 2).
    Factor(u32),
}

/// A floating-point literal. Equality and hashing are by bit pattern, except that all NaNs
/// are equal (the text form has one `nan`): `0.0 != -0.0`, `nan == nan`.
#[derive(Clone, Copy, Debug)]
pub struct FloatLit(pub f64);

impl FloatLit {
    fn key(self) -> u64 {
        if self.0.is_nan() {
            f64::NAN.to_bits()
        } else {
            self.0.to_bits()
        }
    }
}

impl PartialEq for FloatLit {
    fn eq(&self, other: &FloatLit) -> bool {
        self.key() == other.key()
    }
}

impl Eq for FloatLit {}

impl Hash for FloatLit {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

/// A constant that initialises a register tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Literal {
    /// An integer; for integer tensors it must be representable in the dtype.
    Int(i64),
    /// A float; only for float tensors.
    Float(FloatLit),
}

/// An operand of an elementwise instruction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A register tensor variable.
    Tensor(String),
    /// A scalar `i32` expression, broadcast to every element (converted to the tensor dtype
    /// like [`Inst::Cast`] from `i32`).
    Scalar(Expr),
    /// A float literal, broadcast to every element (float tensors only).
    Float(FloatLit),
}

/// Elementwise unary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
}

/// Elementwise binary arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// Reductions along one dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

/// A collective instruction: every thread of the block executes it together.
///
/// `dst` fields name the variable the instruction defines or overwrites; other `String`
/// fields name existing tensor variables (`ptr` names a pointer parameter).
#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    /// `%dst = alloc_register(dtype, layout[, init]);`
    AllocRegister {
        dst: String,
        dtype: DType,
        layout: RegisterLayout,
        init: Option<Literal>,
    },
    /// `%dst = alloc_shared(dtype, layout);`
    AllocShared {
        dst: String,
        dtype: DType,
        layout: SharedLayout,
    },
    /// `free_shared(%tensor);`
    FreeShared { tensor: String },
    /// `%dst = view_global(ptr, [shape..], [strides..]);`
    ViewGlobal {
        dst: String,
        ptr: String,
        shape: Vec<Expr>,
        strides: Vec<Expr>,
    },
    /// `%dst = load_global(%src[offsets..], layout);`
    LoadGlobal {
        dst: String,
        src: String,
        offsets: Vec<Expr>,
        layout: RegisterLayout,
    },
    /// `store_global(%dst[offsets..], %src);`
    StoreGlobal {
        dst: String,
        offsets: Vec<Expr>,
        src: String,
    },
    /// `%dst = load_shared(%src[offsets..], layout);`
    LoadShared {
        dst: String,
        src: String,
        offsets: Vec<Expr>,
        layout: RegisterLayout,
    },
    /// `store_shared(%dst[offsets..], %src);`
    StoreShared {
        dst: String,
        offsets: Vec<Expr>,
        src: String,
    },
    /// `copy_async(%dst, %src[offsets..]);` — shared `dst` ← global tile of `dst`'s shape.
    CopyAsync {
        dst: String,
        src: String,
        offsets: Vec<Expr>,
    },
    /// `commit_group();`
    CommitGroup,
    /// `wait_group(pending);`
    WaitGroup { pending: u32 },
    /// `barrier();`
    Barrier,
    /// `%dst = view(%src, dtype, layout[, offset]);` — without an offset the result keeps
    /// every bit of each thread; with one it takes the bits from `offset` on (a slice).
    View {
        dst: String,
        src: String,
        dtype: DType,
        layout: RegisterLayout,
        /// Bit offset into each thread's register stream, for a slice.
        offset: Option<u32>,
    },
    /// `%dst = cast(%src, dtype[, layout]);` — with a layout, each thread's elements are
    /// also put in that layout's local order (the same threads hold the same elements).
    Cast {
        dst: String,
        src: String,
        dtype: DType,
        layout: Option<RegisterLayout>,
    },
    /// `%dst = cast_planes(%p0, %p1, .., code, dtype[, layout]);` — element by element, the
    /// planes' unsigned codes put together, low bits first (plane `i` shifted by the widths of
    /// the planes before it), read as `code` (an integer or small float type of at most 8
    /// bits) and converted to `dtype`; with a layout, put in that layout's local order. The
    /// planes hold the same elements in every thread, each plane in its own local order.
    CastPlanes {
        dst: String,
        planes: Vec<String>,
        code: DType,
        dtype: DType,
        layout: Option<RegisterLayout>,
    },
    /// `%dst = neg(%src);` and so on.
    Unary {
        dst: String,
        op: UnaryOp,
        src: String,
    },
    /// `%dst = add(lhs, rhs);` and so on.
    Binary {
        dst: String,
        op: BinaryOp,
        lhs: Operand,
        rhs: Operand,
    },
    /// `%dst = lt(lhs, rhs);` and so on; the result is `u1`.
    Compare {
        dst: String,
        op: CmpOp,
        lhs: Operand,
        rhs: Operand,
    },
    /// `%dst = where(%cond, then, otherwise);` — `cond` is a `u1` register tensor.
    Where {
        dst: String,
        cond: String,
        then: Operand,
        otherwise: Operand,
    },
    /// `%dst = dot(%a, %b, %c);` — `d = a·b + c` over the last two dimensions, batched over
    /// the leading ones.
    Dot {
        dst: String,
        a: String,
        b: String,
        c: String,
    },
    /// `%dst = reduce_sum(%src, dim);` and so on.
    Reduce {
        dst: String,
        op: ReduceOp,
        src: String,
        dim: u32,
    },
    /// `print(%src);`
    Print { src: String },
}

impl Inst {
    /// The variable this instruction defines or overwrites, if any.
    pub fn dst(&self) -> Option<&str> {
        match self {
            Inst::AllocRegister { dst, .. }
            | Inst::AllocShared { dst, .. }
            | Inst::ViewGlobal { dst, .. }
            | Inst::LoadGlobal { dst, .. }
            | Inst::LoadShared { dst, .. }
            | Inst::View { dst, .. }
            | Inst::Cast { dst, .. }
            | Inst::CastPlanes { dst, .. }
            | Inst::Unary { dst, .. }
            | Inst::Binary { dst, .. }
            | Inst::Compare { dst, .. }
            | Inst::Where { dst, .. }
            | Inst::Dot { dst, .. }
            | Inst::Reduce { dst, .. } => Some(dst),
            Inst::FreeShared { .. }
            | Inst::StoreGlobal { .. }
            | Inst::StoreShared { .. }
            | Inst::CopyAsync { .. }
            | Inst::CommitGroup
            | Inst::WaitGroup { .. }
            | Inst::Barrier
            | Inst::Print { .. } => None,
        }
    }

    /// The instruction's name in the text form (`load_global`, `add`, `reduce_max`, …).
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Inst::AllocRegister { .. } => "alloc_register",
            Inst::AllocShared { .. } => "alloc_shared",
            Inst::FreeShared { .. } => "free_shared",
            Inst::ViewGlobal { .. } => "view_global",
            Inst::LoadGlobal { .. } => "load_global",
            Inst::StoreGlobal { .. } => "store_global",
            Inst::LoadShared { .. } => "load_shared",
            Inst::StoreShared { .. } => "store_shared",
            Inst::CopyAsync { .. } => "copy_async",
            Inst::CommitGroup => "commit_group",
            Inst::WaitGroup { .. } => "wait_group",
            Inst::Barrier => "barrier",
            Inst::View { .. } => "view",
            Inst::Cast { .. } => "cast",
            Inst::CastPlanes { .. } => "cast_planes",
            Inst::Unary { op, .. } => op.name(),
            Inst::Binary { op, .. } => op.name(),
            Inst::Compare { op, .. } => op.name(),
            Inst::Where { .. } => "where",
            Inst::Dot { .. } => "dot",
            Inst::Reduce { op, .. } => op.name(),
            Inst::Print { .. } => "print",
        }
    }
}

impl UnaryOp {
    /// `neg`, `abs`, `exp`.
    pub const fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
        }
    }

    /// All unary operations.
    pub const ALL: [UnaryOp; 3] = [UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Exp];
}

impl BinaryOp {
    /// `add`, `sub`, `mul`, `div`, `min`, `max`.
    pub const fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
        }
    }

    /// All binary operations.
    pub const ALL: [BinaryOp; 6] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Min,
        BinaryOp::Max,
    ];
}

impl CmpOp {
    /// `lt`, `le`, `gt`, `ge`, `eq`, `ne` (the instruction names).
    pub const fn name(self) -> &'static str {
        match self {
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
        }
    }

    /// `<`, `<=`, `>`, `>=`, `==`, `!=` (the operators in conditions).
    pub const fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    /// All comparisons.
    pub const ALL: [CmpOp; 6] = [
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
        CmpOp::Eq,
        CmpOp::Ne,
    ];
}

impl ReduceOp {
    /// `reduce_sum`, `reduce_max`, `reduce_min`.
    pub const fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "reduce_sum",
            ReduceOp::Max => "reduce_max",
            ReduceOp::Min => "reduce_min",
        }
    }

    /// All reductions.
    pub const ALL: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min];
}

impl ExprOp {
    /// The operator or function name in the text form.
    pub const fn symbol(self) -> &'static str {
        match self {
            ExprOp::Add => "+",
            ExprOp::Sub => "-",
            ExprOp::Mul => "*",
            ExprOp::Div => "/",
            ExprOp::Rem => "%",
            ExprOp::Min => "min",
            ExprOp::Max => "max",
            ExprOp::CeilDiv => "ceil_div",
        }
    }
}

/// The type of a tensor variable.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorType {
    /// Distributed over the threads by `layout`, whose shape is the tensor's shape.
    Register {
        dtype: DType,
        layout: RegisterLayout,
    },
    /// In the block's shared memory; `layout` gives the static shape and element offsets.
    Shared { dtype: DType, layout: SharedLayout },
    /// A view of global memory; the shape and strides are run-time values.
    Global { dtype: DType, rank: usize },
}

impl TensorType {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            TensorType::Register { dtype, .. }
            | TensorType::Shared { dtype, .. }
            | TensorType::Global { dtype, .. } => *dtype,
        }
    }

    /// `register`, `shared` or `global`.
    pub fn space(&self) -> &'static str {
        match self {
            TensorType::Register { .. } => "register",
            TensorType::Shared { .. } => "shared",
            TensorType::Global { .. } => "global",
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorType::Register { dtype, layout } => write!(f, "register<{dtype}, {layout}>"),
            TensorType::Shared { dtype, layout } => write!(f, "shared<{dtype}, {layout}>"),
            TensorType::Global { dtype, rank } => write!(f, "global<{dtype}, rank {rank}>"),
        }
    }
}
