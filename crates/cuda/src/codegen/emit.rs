//! The lowering of statements and instructions to CUDA C++.
//!
//! What this module promises: every construct of `docs/vm.md` is lowered; the generic lowering
//! of each instruction works for any layout, dtype and offset, and the selected fast paths
//! (see `select`) are used only when their preconditions are proven at generation time.
//! Malformed programs (unknown names, wrong spaces, mismatched types) give a
//! [`CodegenError`], never C++ that NVRTC would reject.

use std::collections::{BTreeMap, HashMap};

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::{
    BinaryOp, CmpOp, Cond, Expr, ForLoop, Inst, Literal, Operand, ParamKind, Program, ReduceOp,
    Span, Stmt, StmtKind, UnaryOp, Unroll,
};

use super::cast::FastCast;
use super::layout::{shared_offset_expr, Terms};
use super::scalar::{expr_c, gcd, scalar_name, Facts};
use super::{shared_memory_limit, CodegenError, STATIC_SHARED_LIMIT};
use crate::target::Target;

pub(crate) struct Output {
    pub name: String,
    pub kernel: String,
    pub static_shared: usize,
    pub dynamic_shared: usize,
    pub selections: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) struct Reg {
    pub dtype: DType,
    pub layout: RegisterLayout,
    pub cname: String,
}

impl Reg {
    pub fn words(&self) -> usize {
        words(self.layout.local_size(), self.dtype)
    }
}

pub(super) fn words(locals: usize, dtype: DType) -> usize {
    (locals * dtype.bits() as usize).div_ceil(32).max(1)
}

#[derive(Clone, Debug)]
pub(super) struct Shared {
    pub dtype: DType,
    pub layout: SharedLayout,
    pub cname: String,
    pub id: usize,
}

#[derive(Clone, Debug)]
pub(super) struct Global {
    pub dtype: DType,
    pub rank: usize,
    pub cname: String,
    pub size_div: Vec<u64>,
    pub stride_div: Vec<u64>,
    pub stride_const: Vec<Option<i64>>,
}

#[derive(Clone, Debug)]
pub(super) enum Var {
    Register(Reg),
    Shared(Shared),
    Global(Global),
}

#[derive(Default)]
struct Scope {
    tensors: HashMap<String, Var>,
    scalars: Vec<String>,
    shared: Vec<usize>,
}

/// Compute kinds: how element values are held while computing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Float,
    Signed,
    Unsigned,
}

pub(super) fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::Signed(_) => Kind::Signed,
        DType::Unsigned(_) => Kind::Unsigned,
        _ => Kind::Float,
    }
}

pub(super) fn ctype(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float",
        Kind::Signed => "i32",
        Kind::Unsigned => "u32",
    }
}

fn mask_hex(dtype: DType) -> String {
    format!("0x{:x}u", dtype.code_mask())
}

fn mini_params(dtype: DType) -> Option<String> {
    let f = dtype.as_mini_float()?;
    let spec = match f.special_values() {
        anybit_dtype::SpecialValues::FiniteOnly => 0,
        anybit_dtype::SpecialValues::NanOnly => 1,
        anybit_dtype::SpecialValues::Ieee => 2,
    };
    Some(format!(
        "{}, {}, {}",
        f.exponent_bits(),
        f.mantissa_bits(),
        spec
    ))
}

/// The value of a code (a `u32` C expression) in the compute type of `dtype`.
pub(super) fn decode(dtype: DType, code: &str) -> String {
    match dtype {
        DType::F16 => format!("ab_f16_dec({code})"),
        DType::Bf16 => format!("ab_bf16_dec({code})"),
        DType::F32 => format!("__uint_as_float({code})"),
        DType::MiniFloat(_) => format!(
            "ab_mf_dec<{}>({code})",
            mini_params(dtype).unwrap_or_default()
        ),
        DType::Signed(32) => format!("(i32)({code})"),
        DType::Signed(bits) => format!("ab_sext<{bits}>({code})"),
        DType::Unsigned(_) => code.to_string(),
    }
}

/// The code of a value of the compute type of `dtype`.
pub(super) fn encode(dtype: DType, value: &str) -> String {
    match dtype {
        DType::F16 => format!("ab_f16_enc({value})"),
        DType::Bf16 => format!("ab_bf16_enc({value})"),
        DType::F32 => format!("__float_as_uint({value})"),
        DType::MiniFloat(_) => format!(
            "ab_mf_enc<{}>({value})",
            mini_params(dtype).unwrap_or_default()
        ),
        DType::Signed(32) | DType::Unsigned(32) => format!("(u32)({value})"),
        _ => format!("((u32)({value}) & {})", mask_hex(dtype)),
    }
}

/// Converts a value of `from`'s compute type to `to`'s code, as `cast` does.
pub(super) fn convert_to_code(from: DType, to: DType, value: &str) -> String {
    match (kind(from), kind(to)) {
        (Kind::Float, Kind::Float) => encode(to, value),
        (Kind::Signed, Kind::Float) => encode(to, &format!("__int2float_rn({value})")),
        (Kind::Unsigned, Kind::Float) => encode(to, &format!("__uint2float_rn({value})")),
        (Kind::Float, k) => format!(
            "ab_f2i<{}, {}>({value})",
            to.bits(),
            if k == Kind::Signed { "true" } else { "false" }
        ),
        (_, _) => encode(to, value),
    }
}

/// `f32` bits of a float literal converted to `dtype` and back (the value the operand has).
fn float_literal_value(dtype: DType, value: f64) -> f32 {
    let code = dtype.encode(value as f32);
    dtype.decode(code) as f32
}

fn float_c(value: f32) -> String {
    format!("__uint_as_float(0x{:08x}u)", value.to_bits())
}

/// The code of literal `lit` in `dtype` (for `alloc_register`).
fn literal_code(dtype: DType, lit: &Literal) -> Option<u32> {
    match (lit, dtype.is_float()) {
        (Literal::Int(v), false) => Some((*v as u64 as u32) & dtype.code_mask()),
        (Literal::Int(v), true) => Some(dtype.encode(*v as f32)),
        (Literal::Float(f), true) => Some(dtype.encode(f.0 as f32)),
        (Literal::Float(_), false) => None,
    }
}

/// Packs `count` copies of `code` into 32-bit words.
fn splat_words(code: u32, bits: u32, count: usize) -> Vec<u32> {
    let mut out = vec![0u32; words(count, dtype_for_bits(bits))];
    for l in 0..count {
        let bit = l * bits as usize;
        let (w, s) = (bit / 32, bit % 32);
        out[w] |= code << s;
        if s + bits as usize > 32 {
            out[w + 1] |= code >> (32 - s);
        }
    }
    out
}

fn dtype_for_bits(bits: u32) -> DType {
    DType::Unsigned(bits as u8)
}

const CPP_KEYWORDS: &[&str] = &[
    "alignas",
    "alignof",
    "asm",
    "auto",
    "bool",
    "break",
    "case",
    "catch",
    "char",
    "class",
    "const",
    "constexpr",
    "continue",
    "decltype",
    "default",
    "delete",
    "do",
    "double",
    "else",
    "enum",
    "explicit",
    "export",
    "extern",
    "false",
    "float",
    "for",
    "friend",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "main",
    "mutable",
    "namespace",
    "new",
    "noexcept",
    "nullptr",
    "operator",
    "private",
    "protected",
    "public",
    "register",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "template",
    "this",
    "throw",
    "true",
    "try",
    "typedef",
    "typeid",
    "typename",
    "union",
    "unsigned",
    "using",
    "virtual",
    "void",
    "volatile",
    "while",
    "min",
    "max",
    "threadIdx",
    "blockIdx",
    "blockDim",
    "gridDim",
];

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The emitter's state while walking one program.
pub(super) struct Emitter<'a> {
    pub program: &'a Program,
    out: String,
    indent: usize,
    scopes: Vec<Scope>,
    pub facts: Facts,
    pointers: HashMap<String, DType>,
    /// Live shared allocations: (id, byte offset, bytes).
    live_shared: Vec<(usize, usize, usize)>,
    next_shared_id: usize,
    shared_peak: usize,
    pub scratch_bytes: usize,
    counter: usize,
    pub selections: Vec<String>,
    span: Span,
    inst: String,
    pub threads: usize,
    /// Device functions the kernel needs (fast conversions), by name.
    helpers: BTreeMap<String, String>,
}

pub(crate) fn emit_program(program: &Program, target: Target) -> Result<Output, CodegenError> {
    let mut e = Emitter {
        program,
        out: String::new(),
        indent: 1,
        scopes: vec![Scope::default()],
        facts: Facts::default(),
        pointers: HashMap::new(),
        live_shared: Vec::new(),
        next_shared_id: 0,
        shared_peak: 0,
        scratch_bytes: 0,
        counter: 0,
        selections: Vec::new(),
        span: program.span,
        inst: "program".to_string(),
        threads: program.threads as usize,
        helpers: BTreeMap::new(),
    };
    e.check_header()?;
    let name = if CPP_KEYWORDS.contains(&program.name.as_str()) || program.name.starts_with("ab_") {
        format!("anybit_{}", program.name)
    } else {
        program.name.clone()
    };
    e.block(&program.body)?;
    e.end_scope();

    let scratch_offset = align(e.shared_peak, 128);
    let total = scratch_offset + e.scratch_bytes;
    let limit = shared_memory_limit(target);
    if total > limit {
        return Err(CodegenError::SharedMemory {
            program: program.name.clone(),
            span: program.span,
            bytes: total,
            limit,
            target,
        });
    }
    let (static_shared, dynamic_shared) = if total == 0 {
        (0, 0)
    } else if total <= STATIC_SHARED_LIMIT {
        (total, 0)
    } else {
        (0, total)
    };

    let mut k = String::new();
    for helper in e.helpers.values() {
        k.push('\n');
        k.push_str(helper);
    }
    k.push_str("\n// ---- generated by anybit from program `");
    k.push_str(&program.name);
    k.push_str("` ----\n");
    for line in &program.doc {
        k.push_str(&format!("// {line}\n"));
    }
    let params: Vec<String> = program
        .params
        .iter()
        .map(|p| match &p.kind {
            ParamKind::Pointer(_) => format!("u8* p_{}", p.name),
            ParamKind::Int { .. } => format!("const int {}", scalar_name(&p.name)),
        })
        .collect();
    k.push_str(&format!(
        "extern \"C\" __global__ void __launch_bounds__({}) {name}({}) {{\n",
        program.threads,
        params.join(", ")
    ));
    if static_shared > 0 {
        k.push_str(&format!(
            "  __shared__ __align__(128) u8 ab_smem[{static_shared}];\n"
        ));
    } else if dynamic_shared > 0 {
        k.push_str("  extern __shared__ __align__(128) u8 ab_smem[];\n");
    }
    if e.scratch_bytes > 0 {
        k.push_str(&format!(
            "  u8* const ab_scratch = ab_smem + {scratch_offset};\n"
        ));
    }
    k.push_str("  const int tid = threadIdx.x;\n");
    k.push_str(&e.out);
    k.push_str("}\n");
    Ok(Output {
        name,
        kernel: k,
        static_shared,
        dynamic_shared,
        selections: e.selections,
    })
}

fn align(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

type R<T> = Result<T, CodegenError>;

impl<'a> Emitter<'a> {
    // ---------------------------------------------------------------- output helpers

    pub fn line(&mut self, text: &str) {
        for l in text.lines() {
            for _ in 0..self.indent {
                self.out.push_str("  ");
            }
            self.out.push_str(l);
            self.out.push('\n');
        }
    }

    pub fn open(&mut self, text: &str) {
        self.line(text);
        self.indent += 1;
    }

    pub fn close(&mut self, text: &str) {
        self.indent -= 1;
        self.line(text);
    }

    pub fn indent_in(&mut self) {
        self.indent += 1;
    }

    pub fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}{}", self.counter)
    }

    pub fn err(&self, reason: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            inst: self.inst.clone(),
            span: self.span,
            reason: reason.into(),
        }
    }

    pub fn select(&mut self, what: impl AsRef<str>) {
        let text = format!("{} {}: {}", self.span, self.inst, what.as_ref());
        self.line(&format!("// selected: {}", what.as_ref()));
        self.selections.push(text);
    }

    // ---------------------------------------------------------------- names and scopes

    fn check_header(&mut self) -> R<()> {
        let p = self.program;
        if !is_identifier(&p.name) {
            return Err(self.err(format!("`{}` is not an identifier", p.name)));
        }
        if p.threads == 0 || p.threads > 1024 {
            return Err(self.err(format!("threads({}) is outside 1..=1024", p.threads)));
        }
        if p.grid.is_empty() || p.grid.len() > 3 {
            return Err(self.err(format!(
                "the grid has {} dimensions; 1 to 3 are allowed",
                p.grid.len()
            )));
        }
        for param in &p.params {
            self.span = param.span;
            if !is_identifier(&param.name) {
                return Err(self.err(format!("parameter `{}` is not an identifier", param.name)));
            }
            if self.pointers.contains_key(&param.name) || self.scalar_visible(&param.name) {
                return Err(self.err(format!("parameter `{}` is declared twice", param.name)));
            }
            match &param.kind {
                ParamKind::Pointer(dtype) => {
                    self.pointers.insert(param.name.clone(), *dtype);
                }
                ParamKind::Int { multiple_of } => {
                    if let Some(scope) = self.scopes.last_mut() {
                        scope.scalars.push(param.name.clone());
                    }
                    self.facts
                        .set_divisor(&param.name, multiple_of.unwrap_or(1).max(1) as u64);
                }
            }
        }
        self.span = p.span;
        for g in &p.grid {
            self.check_expr_no_block(g)?;
        }
        Ok(())
    }

    fn check_expr_no_block(&self, e: &Expr) -> R<()> {
        match e {
            Expr::BlockIdx(_) => Err(self.err("the grid cannot use block indices")),
            Expr::Var(n) => {
                let is_int_param = self
                    .program
                    .params
                    .iter()
                    .any(|p| p.name == *n && matches!(p.kind, ParamKind::Int { .. }));
                if is_int_param {
                    Ok(())
                } else {
                    Err(self.err(format!(
                        "the grid uses `{n}`, which is not an integer parameter"
                    )))
                }
            }
            Expr::Const(_) => Ok(()),
            Expr::Binary(_, a, b) => {
                self.check_expr_no_block(a)?;
                self.check_expr_no_block(b)
            }
        }
    }

    fn scalar_visible(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s.scalars.iter().any(|n| n == name))
    }

    pub fn check_expr(&self, e: &Expr) -> R<()> {
        match e {
            Expr::Var(n) => {
                if self.scalar_visible(n) {
                    Ok(())
                } else if self.pointers.contains_key(n) {
                    Err(self.err(format!(
                        "pointer `{n}` is used as an integer; pointers may only be viewed with view_global"
                    )))
                } else {
                    Err(self.err(format!("unknown scalar `{n}`")))
                }
            }
            Expr::Const(_) | Expr::BlockIdx(_) => Ok(()),
            Expr::Binary(_, a, b) => {
                self.check_expr(a)?;
                self.check_expr(b)
            }
        }
    }

    pub fn scalar(&self, e: &Expr) -> R<String> {
        self.check_expr(e)?;
        Ok(expr_c(e))
    }

    fn cond(&self, c: &Cond) -> R<String> {
        Ok(match c {
            Cond::Bool(b) => b.to_string(),
            Cond::Compare(op, a, b) => {
                format!("({} {} {})", self.scalar(a)?, op.symbol(), self.scalar(b)?)
            }
            // Both sides are evaluated (no side effects), so C's short circuit is fine.
            Cond::And(a, b) => format!("({} && {})", self.cond(a)?, self.cond(b)?),
            Cond::Or(a, b) => format!("({} || {})", self.cond(a)?, self.cond(b)?),
            Cond::Not(a) => format!("!{}", self.cond(a)?),
        })
    }

    fn lookup(&self, name: &str) -> Option<&Var> {
        self.scopes.iter().rev().find_map(|s| s.tensors.get(name))
    }

    pub fn register(&self, name: &str) -> R<Reg> {
        match self.lookup(name) {
            Some(Var::Register(r)) => Ok(r.clone()),
            Some(Var::Shared(_)) => {
                Err(self.err(format!("%{name} is a shared tensor, not a register tensor")))
            }
            Some(Var::Global(_)) => {
                Err(self.err(format!("%{name} is a global tensor, not a register tensor")))
            }
            None => Err(self.err(format!("unknown tensor %{name}"))),
        }
    }

    pub fn shared(&self, name: &str) -> R<Shared> {
        match self.lookup(name) {
            Some(Var::Shared(s)) => Ok(s.clone()),
            Some(_) => Err(self.err(format!("%{name} is not a shared tensor"))),
            None => Err(self.err(format!("unknown tensor %{name} (or it was freed)"))),
        }
    }

    pub fn global(&self, name: &str) -> R<Global> {
        match self.lookup(name) {
            Some(Var::Global(g)) => Ok(g.clone()),
            Some(_) => Err(self.err(format!("%{name} is not a global tensor"))),
            None => Err(self.err(format!("unknown tensor %{name}"))),
        }
    }

    /// Where the result of an instruction goes: a new register variable, or the visible one it
    /// overwrites (whose type must match). Returns the C name and whether it is new.
    pub fn result(&mut self, dst: &str, dtype: DType, layout: &RegisterLayout) -> R<(Reg, bool)> {
        if layout.num_threads() != self.threads {
            return Err(self.err(format!(
                "the result layout {layout} spans {} threads; the program has {}",
                layout.num_threads(),
                self.threads
            )));
        }
        match self.lookup(dst) {
            Some(Var::Register(r)) => {
                if r.dtype != dtype || r.layout != *layout {
                    return Err(self.err(format!(
                        "%{dst} is register<{}, {}> and cannot be overwritten with register<{dtype}, {layout}>",
                        r.dtype, r.layout
                    )));
                }
                Ok((r.clone(), false))
            }
            Some(_) => Err(self.err(format!(
                "%{dst} is a shared or global tensor and cannot be overwritten"
            ))),
            None => {
                let cname = self.fresh_tensor_name("r", dst);
                Ok((
                    Reg {
                        dtype,
                        layout: layout.clone(),
                        cname,
                    },
                    true,
                ))
            }
        }
    }

    fn fresh_tensor_name(&mut self, prefix: &str, name: &str) -> String {
        // Names are unique per scope in C++ too; a counter keeps redefinitions in sibling
        // scopes apart without shadowing surprises.
        let taken = self.scopes.iter().any(|s| {
            s.tensors.values().any(|v| match v {
                Var::Register(r) => r.cname == format!("{prefix}_{name}"),
                Var::Shared(sh) => sh.cname == format!("{prefix}_{name}"),
                Var::Global(g) => g.cname == format!("{prefix}_{name}"),
            })
        });
        if taken {
            self.fresh(&format!("{prefix}_{name}_"))
        } else {
            format!("{prefix}_{name}")
        }
    }

    pub fn define(&mut self, name: &str, var: Var) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.tensors.insert(name.to_string(), var);
        }
    }

    /// Declares a new register variable (when `new`), computes into a temporary with `body`
    /// and copies the temporary into the destination.
    pub fn with_result(
        &mut self,
        dst: &str,
        reg: &Reg,
        new: bool,
        body: impl FnOnce(&mut Self, &str) -> R<()>,
    ) -> R<()> {
        let w = reg.words();
        if new {
            self.line(&format!("u32 {}[{w}];", reg.cname));
        }
        self.open("{");
        self.line(&format!("u32 t[{w}] = {{}};"));
        body(self, "t")?;
        self.line(&format!(
            "#pragma unroll\nfor (int i = 0; i < {w}; ++i) {}[i] = t[i];",
            reg.cname
        ));
        self.close("}");
        if new {
            self.define(dst, Var::Register(reg.clone()));
        }
        Ok(())
    }

    /// Declares a new result variable now (before an enclosing C++ block opens), so that a
    /// later [`Emitter::with_result`] with `new = false` fills it.
    pub fn declare(&mut self, dst: &str, reg: &Reg, new: bool) {
        if new {
            self.line(&format!("u32 {}[{}];", reg.cname, reg.words()));
            self.define(dst, Var::Register(reg.clone()));
        }
    }

    fn end_scope(&mut self) {
        if let Some(scope) = self.scopes.pop() {
            for id in scope.shared {
                self.live_shared.retain(|&(i, _, _)| i != id);
            }
            for name in scope.scalars {
                self.facts.forget(&name);
            }
        }
    }

    // ---------------------------------------------------------------- shared memory

    fn allocate_shared(&mut self, bytes: usize) -> (usize, usize) {
        let bytes = align(bytes.max(16), 16);
        let mut live: Vec<(usize, usize)> =
            self.live_shared.iter().map(|&(_, o, b)| (o, b)).collect();
        live.sort_unstable();
        let mut offset = 0;
        for (o, b) in live {
            if offset + bytes <= o {
                break;
            }
            offset = offset.max(align(o + b, 128));
        }
        let id = self.next_shared_id;
        self.next_shared_id += 1;
        self.live_shared.push((id, offset, bytes));
        self.shared_peak = self.shared_peak.max(offset + bytes);
        if let Some(scope) = self.scopes.last_mut() {
            scope.shared.push(id);
        }
        (id, offset)
    }

    /// Reserves `bytes` of scratch shared memory for one instruction; returns nothing: the
    /// scratch region starts at `ab_scratch`, after every user allocation.
    pub fn need_scratch(&mut self, bytes: usize) {
        self.scratch_bytes = self.scratch_bytes.max(align(bytes, 16));
    }

    // ---------------------------------------------------------------- statements

    fn block(&mut self, stmts: &[Stmt]) -> R<()> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn scoped_block(&mut self, stmts: &[Stmt]) -> R<()> {
        self.scopes.push(Scope::default());
        let r = self.block(stmts);
        self.end_scope();
        r
    }

    fn stmt(&mut self, s: &Stmt) -> R<()> {
        self.span = s.span;
        match &s.kind {
            StmtKind::Let { name, value } => {
                self.inst = "let".into();
                self.new_scalar(name)?;
                let c = self.scalar(value)?;
                self.line(&format!("const int {} = {c};", scalar_name(name)));
                let d = self.facts.divisor(value);
                let k = self.facts.constant(value);
                self.facts.set_divisor(name, d);
                if let Some(k) = k {
                    self.facts.set_constant(name, k);
                }
                self.add_scalar(name);
                Ok(())
            }
            StmtKind::For(f) => self.for_loop(f),
            StmtKind::If {
                cond,
                then_body,
                else_body,
            } => {
                self.inst = "if".into();
                let c = self.cond(cond)?;
                self.open(&format!("if ({c}) {{"));
                self.scoped_block(then_body)?;
                if else_body.is_empty() {
                    self.close("}");
                } else {
                    self.close("} else {");
                    self.indent += 1;
                    self.scoped_block(else_body)?;
                    self.close("}");
                }
                Ok(())
            }
            StmtKind::Inst(inst) => {
                self.inst = inst.mnemonic().to_string();
                self.instruction(inst)
            }
        }
    }

    fn new_scalar(&self, name: &str) -> R<()> {
        if !is_identifier(name) {
            return Err(self.err(format!("`{name}` is not an identifier")));
        }
        if self.scalar_visible(name) || self.pointers.contains_key(name) {
            return Err(self.err(format!("`{name}` is already defined")));
        }
        Ok(())
    }

    fn add_scalar(&mut self, name: &str) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.scalars.push(name.to_string());
        }
    }

    fn for_loop(&mut self, f: &ForLoop) -> R<()> {
        self.inst = "for".into();
        self.new_scalar(&f.var)?;
        let (start, end, step) = (
            self.scalar(&f.start)?,
            self.scalar(&f.end)?,
            self.scalar(&f.step)?,
        );
        if let Some(s) = self.facts.constant(&f.step) {
            if s <= 0 {
                return Err(self.err(format!("the loop step {s} is not positive")));
            }
        }
        let n = self.fresh("");
        let (lo, hi, st) = (format!("lo{n}"), format!("hi{n}"), format!("step{n}"));
        self.open("{");
        self.line(&format!(
            "const int {lo} = {start}, {hi} = {end}, {st} = {step};"
        ));
        match f.unroll {
            Unroll::None => {}
            Unroll::Full => self.line("#pragma unroll"),
            Unroll::Factor(k) => self.line(&format!("#pragma unroll {k}")),
        }
        let v = scalar_name(&f.var);
        self.open(&format!("for (int {v} = {lo}; {v} < {hi}; {v} += {st}) {{"));
        self.scopes.push(Scope::default());
        let d = gcd(self.facts.divisor(&f.start), self.facts.divisor(&f.step));
        self.facts.set_divisor(&f.var, d);
        self.add_scalar(&f.var);
        let r = self.block(&f.body);
        self.end_scope();
        r?;
        self.close("}");
        self.close("}");
        Ok(())
    }

    // ---------------------------------------------------------------- instructions

    fn instruction(&mut self, inst: &Inst) -> R<()> {
        let text = describe(inst);
        self.line(&format!("// {text}"));
        match inst {
            Inst::AllocRegister {
                dst,
                dtype,
                layout,
                init,
            } => self.alloc_register(dst, *dtype, layout, init.as_ref()),
            Inst::AllocShared { dst, dtype, layout } => {
                if self.lookup(dst).is_some() {
                    return Err(self.err(format!("%{dst} is already defined")));
                }
                let span = layout.span();
                let bits = span
                    .checked_mul(dtype.bits() as usize)
                    .ok_or_else(|| self.err("the shared tensor is too large"))?;
                let (id, offset) = self.allocate_shared(bits.div_ceil(8));
                let cname = self.fresh_tensor_name("sh", dst);
                self.line(&format!("u8* const {cname} = ab_smem + {offset};"));
                self.define(
                    dst,
                    Var::Shared(Shared {
                        dtype: *dtype,
                        layout: layout.clone(),
                        cname,
                        id,
                    }),
                );
                Ok(())
            }
            Inst::FreeShared { tensor } => {
                let sh = self.shared(tensor)?;
                self.live_shared.retain(|&(i, _, _)| i != sh.id);
                for scope in self.scopes.iter_mut().rev() {
                    if scope.tensors.remove(tensor).is_some() {
                        break;
                    }
                }
                Ok(())
            }
            Inst::ViewGlobal {
                dst,
                ptr,
                shape,
                strides,
            } => self.view_global(dst, ptr, shape, strides),
            Inst::LoadGlobal {
                dst,
                src,
                offsets,
                layout,
            } => self.load_global(dst, src, offsets, layout),
            Inst::StoreGlobal { dst, offsets, src } => self.store_global(dst, offsets, src),
            Inst::LoadShared {
                dst,
                src,
                offsets,
                layout,
            } => self.load_shared(dst, src, offsets, layout),
            Inst::StoreShared { dst, offsets, src } => self.store_shared(dst, offsets, src),
            Inst::CopyAsync { dst, src, offsets } => self.copy_async(dst, src, offsets),
            Inst::CommitGroup => {
                self.line("ab_commit_group();");
                Ok(())
            }
            Inst::WaitGroup { pending } => {
                self.line(&format!("ab_wait_group<{pending}>();"));
                Ok(())
            }
            Inst::Barrier => {
                self.line("__syncthreads();");
                Ok(())
            }
            Inst::View {
                dst,
                src,
                dtype,
                layout,
            } => {
                let x = self.register(src)?;
                let bits_in = x.layout.local_size() * x.dtype.bits() as usize;
                let bits_out = layout.local_size() * dtype.bits() as usize;
                if bits_in != bits_out {
                    return Err(self.err(format!(
                        "view keeps {bits_in} bits per thread but register<{dtype}, {layout}> has {bits_out}"
                    )));
                }
                let (reg, new) = self.result(dst, *dtype, layout)?;
                let w = reg.words();
                let xname = x.cname.clone();
                self.with_result(dst, &reg, new, |e, t| {
                    e.line(&format!(
                        "#pragma unroll\nfor (int i = 0; i < {w}; ++i) {t}[i] = {xname}[i];"
                    ));
                    Ok(())
                })
            }
            Inst::Cast { dst, src, dtype } => self.cast(dst, src, *dtype),
            Inst::Unary { dst, op, src } => self.unary(dst, *op, src),
            Inst::Binary { dst, op, lhs, rhs } => self.binary(dst, *op, lhs, rhs),
            Inst::Compare { dst, op, lhs, rhs } => self.compare(dst, *op, lhs, rhs),
            Inst::Where {
                dst,
                cond,
                then,
                otherwise,
            } => self.where_(dst, cond, then, otherwise),
            Inst::Dot { dst, a, b, c } => self.dot(dst, a, b, c),
            Inst::Reduce { dst, op, src, dim } => self.reduce(dst, *op, src, *dim as usize),
            Inst::Print { src } => {
                if self.lookup(src).is_none() {
                    return Err(self.err(format!("unknown tensor %{src}")));
                }
                self.line("// (print is ignored by generated code)");
                Ok(())
            }
        }
    }

    fn alloc_register(
        &mut self,
        dst: &str,
        dtype: DType,
        layout: &RegisterLayout,
        init: Option<&Literal>,
    ) -> R<()> {
        let (reg, new) = self.result(dst, dtype, layout)?;
        let w = reg.words();
        let code = match init {
            None => 0,
            Some(lit) => literal_code(dtype, lit)
                .ok_or_else(|| self.err(format!("a float literal cannot initialise {dtype}")))?,
        };
        let pattern = splat_words(code, dtype.bits(), layout.local_size());
        if new {
            self.line(&format!("u32 {}[{w}];", reg.cname));
            self.define(dst, Var::Register(reg.clone()));
        }
        if pattern.iter().all(|&p| p == pattern[0]) {
            self.line(&format!(
                "#pragma unroll\nfor (int i = 0; i < {w}; ++i) {}[i] = 0x{:x}u;",
                reg.cname, pattern[0]
            ));
        } else {
            for (i, p) in pattern.iter().enumerate() {
                self.line(&format!("{}[{i}] = 0x{p:x}u;", reg.cname));
            }
        }
        Ok(())
    }

    fn view_global(&mut self, dst: &str, ptr: &str, shape: &[Expr], strides: &[Expr]) -> R<()> {
        if self.lookup(dst).is_some() {
            return Err(self.err(format!("%{dst} is already defined")));
        }
        let dtype = *self
            .pointers
            .get(ptr)
            .ok_or_else(|| self.err(format!("`{ptr}` is not a pointer parameter")))?;
        if shape.len() != strides.len() || shape.is_empty() {
            return Err(self.err(format!(
                "view_global needs as many strides as sizes, at least one ({} sizes, {} strides)",
                shape.len(),
                strides.len()
            )));
        }
        let cname = self.fresh_tensor_name("g", dst);
        self.line(&format!("u8* const {cname} = p_{ptr};"));
        let mut decl = Vec::new();
        for (i, (s, t)) in shape.iter().zip(strides).enumerate() {
            decl.push(format!("{cname}_n{i} = {}", self.scalar(s)?));
            decl.push(format!("{cname}_t{i} = {}", self.scalar(t)?));
        }
        self.line(&format!("const int {};", decl.join(", ")));
        let g = Global {
            dtype,
            rank: shape.len(),
            cname,
            size_div: shape.iter().map(|s| self.facts.divisor(s)).collect(),
            stride_div: strides.iter().map(|s| self.facts.divisor(s)).collect(),
            stride_const: strides.iter().map(|s| self.facts.constant(s)).collect(),
        };
        self.define(dst, Var::Global(g));
        Ok(())
    }

    pub fn offsets(&self, offsets: &[Expr], rank: usize) -> R<Vec<String>> {
        if offsets.len() != rank {
            return Err(self.err(format!(
                "{} offsets for a tensor of rank {rank}",
                offsets.len()
            )));
        }
        offsets.iter().map(|o| self.scalar(o)).collect()
    }

    fn check_threads(&self, layout: &RegisterLayout) -> R<()> {
        if layout.num_threads() != self.threads {
            return Err(self.err(format!(
                "layout {layout} spans {} threads; the program has {}",
                layout.num_threads(),
                self.threads
            )));
        }
        Ok(())
    }

    /// Declares `base{d}` = offset + thread part of coordinate d, for every dimension.
    pub fn thread_bases(&mut self, terms: &Terms, offsets: &[String]) -> Vec<String> {
        let mut names = Vec::new();
        let mut decl = Vec::new();
        for (d, o) in offsets.iter().enumerate() {
            let name = format!("base{d}");
            let tc = terms.thread_coord_expr(d, "tid");
            let value = match (o.as_str(), tc.as_str()) {
                (o, "0") => o.to_string(),
                ("0", tc) => tc.to_string(),
                (o, tc) => format!("{o} + {tc}"),
            };
            decl.push(format!("{name} = {value}"));
            names.push(name);
        }
        self.line(&format!("const int {};", decl.join(", ")));
        names
    }

    fn load_global(
        &mut self,
        dst: &str,
        src: &str,
        offsets: &[Expr],
        layout: &RegisterLayout,
    ) -> R<()> {
        let g = self.global(src)?;
        self.check_threads(layout)?;
        if layout.rank() != g.rank {
            return Err(self.err(format!(
                "layout {layout} has rank {}, the global tensor rank {}",
                layout.rank(),
                g.rank
            )));
        }
        let o = self.offsets(offsets, g.rank)?;
        let (reg, new) = self.result(dst, g.dtype, layout)?;
        let offsets = offsets.to_vec();
        self.with_result(dst, &reg, new, |e, t| {
            let terms = Terms::new(layout);
            let bases = e.thread_bases(&terms, &o);
            let plan = super::vector::plan_global(e, &g, &offsets, layout, &terms);
            super::vector::emit_load_global(e, &g, layout, &terms, &bases, &plan, t);
            Ok(())
        })
    }

    fn store_global(&mut self, dst: &str, offsets: &[Expr], src: &str) -> R<()> {
        let g = self.global(dst)?;
        let x = self.register(src)?;
        if x.dtype != g.dtype {
            return Err(self.err(format!(
                "storing {} into a global tensor of {}",
                x.dtype, g.dtype
            )));
        }
        if x.layout.rank() != g.rank {
            return Err(self.err("the register tensor's rank differs from the global tensor's"));
        }
        let o = self.offsets(offsets, g.rank)?;
        let terms = Terms::new(&x.layout);
        self.open("{");
        let bases = self.thread_bases(&terms, &o);
        let owner = terms.first_owner_cond("tid");
        if let Some(c) = &owner {
            self.line("// replicated: the first owner of each element stores it");
            self.open(&format!("if ({c}) {{"));
        }
        let plan = super::vector::plan_global(self, &g, offsets, &x.layout, &terms);
        super::vector::emit_store_global(self, &g, &x, &terms, &bases, &plan);
        if owner.is_some() {
            self.close("}");
        }
        self.close("}");
        Ok(())
    }

    /// Checks a shared tile access and returns the offsets as C.
    fn shared_tile(
        &self,
        sh: &Shared,
        offsets: &[Expr],
        layout: &RegisterLayout,
    ) -> R<Vec<String>> {
        if layout.rank() != sh.layout.rank() {
            return Err(self.err(format!(
                "layout {layout} has rank {}, the shared tensor rank {}",
                layout.rank(),
                sh.layout.rank()
            )));
        }
        for (d, o) in offsets.iter().enumerate() {
            if let Some(c) = self.facts.constant(o) {
                if c < 0 || c as usize + layout.shape()[d] > sh.layout.shape()[d] {
                    return Err(self.err(format!(
                        "the tile at offset {c} of size {} does not fit dimension {d} of size {}",
                        layout.shape()[d],
                        sh.layout.shape()[d]
                    )));
                }
            }
        }
        self.offsets(offsets, layout.rank())
    }

    fn load_shared(
        &mut self,
        dst: &str,
        src: &str,
        offsets: &[Expr],
        layout: &RegisterLayout,
    ) -> R<()> {
        let sh = self.shared(src)?;
        self.check_threads(layout)?;
        let o = self.shared_tile(&sh, offsets, layout)?;
        let (reg, new) = self.result(dst, sh.dtype, layout)?;
        let offsets = offsets.to_vec();
        self.with_result(dst, &reg, new, |e, t| {
            if super::select::try_ldmatrix(e, &sh, &offsets, layout, t)? {
                return Ok(());
            }
            let terms = Terms::new(layout);
            let bases = e.thread_bases(&terms, &o);
            let plan = super::vector::plan_shared(
                e,
                &sh.layout,
                sh.dtype.bits() as usize,
                &offsets,
                &terms,
            );
            super::vector::emit_load_shared(e, &sh, layout, &terms, &bases, &plan, t);
            Ok(())
        })
    }

    fn store_shared(&mut self, dst: &str, offsets: &[Expr], src: &str) -> R<()> {
        let sh = self.shared(dst)?;
        let x = self.register(src)?;
        if x.dtype != sh.dtype {
            return Err(self.err(format!(
                "storing {} into a shared tensor of {}",
                x.dtype, sh.dtype
            )));
        }
        let o = self.shared_tile(&sh, offsets, &x.layout)?;
        let terms = Terms::new(&x.layout);
        self.open("{");
        let bases = self.thread_bases(&terms, &o);
        let owner = terms.first_owner_cond("tid");
        if let Some(c) = &owner {
            self.open(&format!("if ({c}) {{"));
        }
        let plan =
            super::vector::plan_shared(self, &sh.layout, sh.dtype.bits() as usize, offsets, &terms);
        super::vector::emit_store_shared(self, &sh, &x, &terms, &bases, &plan);
        if owner.is_some() {
            self.close("}");
        }
        self.close("}");
        Ok(())
    }

    fn copy_async(&mut self, dst: &str, src: &str, offsets: &[Expr]) -> R<()> {
        let sh = self.shared(dst)?;
        let g = self.global(src)?;
        if sh.dtype != g.dtype {
            return Err(self.err(format!(
                "copying {} into a shared tensor of {}",
                g.dtype, sh.dtype
            )));
        }
        if sh.layout.rank() != g.rank {
            return Err(self.err("the shared tensor's rank differs from the global tensor's"));
        }
        let o = self.offsets(offsets, g.rank)?;
        self.open("{");
        if super::select::try_cp_async(self, &sh, &g, offsets, &o)? {
            self.close("}");
            return Ok(());
        }
        // Generic: each thread copies elements tid, tid + T, ... of the tile (row-major),
        // synchronously; the copy is complete before any later wait_group returns.
        let shape = sh.layout.shape().to_vec();
        let total: usize = shape.iter().product();
        let n = g.dtype.bits();
        self.open(&format!(
            "for (int i = tid; i < {total}; i += {}) {{",
            self.threads
        ));
        let mut coords = Vec::new();
        let mut inner = 1usize;
        let mut decl = Vec::new();
        for d in (0..shape.len()).rev() {
            let mut c = if inner == 1 {
                "i".to_string()
            } else {
                format!("i / {inner}")
            };
            if d != 0 {
                c = if inner == 1 {
                    format!("i % {}", shape[d])
                } else {
                    format!("({c}) % {}", shape[d])
                };
            }
            decl.push((d, c));
            inner *= shape[d];
        }
        decl.sort();
        for (d, c) in decl {
            self.line(&format!("const int c{d} = {c};"));
            coords.push(format!("c{d}"));
        }
        let in_bounds: Vec<String> = (0..g.rank)
            .map(|d| format!("ab_in({} + c{d}, {}_n{d})", o[d], g.cname))
            .collect();
        let address: Vec<String> = (0..g.rank)
            .map(|d| format!("(i64)({} + c{d}) * {}_t{d}", o[d], g.cname))
            .collect();
        let off = shared_offset_expr(&sh.layout, &coords);
        self.line(&format!(
            "const u32 v = ({}) ? ab_ld<{n}>({}, {}) : 0u;",
            in_bounds.join(" && "),
            g.cname,
            address.join(" + ")
        ));
        self.line(&format!("ab_st<{n}>({}, {off}, v);", sh.cname));
        self.close("}");
        self.close("}");
        Ok(())
    }

    // ---------------------------------------------------------------- elementwise

    /// C expression for the local index, in the operand's registers, of the element that local
    /// index `l` (a C variable) of the result reads; `None` when a broadcast operand is not held
    /// by the right threads.
    pub fn operand_index(
        &self,
        op: &RegisterLayout,
        res: &RegisterLayout,
        lvar: &str,
    ) -> R<OperandIndex> {
        if op == res {
            return Ok(OperandIndex::Same);
        }
        if op.rank() != res.rank() {
            return Err(self.err(format!(
                "operand layout {op} and result layout {res} have different ranks"
            )));
        }
        for d in 0..op.rank() {
            if op.shape()[d] != res.shape()[d] && op.shape()[d] != 1 {
                return Err(self.err(format!(
                    "operand shape {:?} does not broadcast to {:?}",
                    op.shape(),
                    res.shape()
                )));
            }
        }
        if op.shape() == res.shape() {
            return Err(self.err(format!(
                "operand layout {op} differs from the result layout {res}"
            )));
        }
        let broadcast: Vec<bool> = (0..op.rank())
            .map(|d| op.shape()[d] == 1 && res.shape()[d] != 1)
            .collect();
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
                    return Err(self.err(format!(
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

    /// C expression of the code of register operand `reg` at result local index `lvar`.
    pub fn operand_code(&self, reg: &Reg, res: &RegisterLayout, lvar: &str) -> R<String> {
        let n = reg.dtype.bits();
        Ok(match self.operand_index(&reg.layout, res, lvar)? {
            OperandIndex::Same => format!("ab_get<{n}>({}, {lvar})", reg.cname),
            OperandIndex::Static(i) => format!("ab_get<{n}>({}, {i})", reg.cname),
            OperandIndex::Dynamic(i) => format!(
                "ab_get_dyn<{n}, {}>({}, {i})",
                reg.layout.local_size(),
                reg.cname
            ),
        })
    }

    /// The value (compute type of `dtype`) of an operand at result local index `lvar`.
    fn operand_value(
        &self,
        op: &Operand,
        dtype: DType,
        res: &RegisterLayout,
        lvar: &str,
    ) -> R<String> {
        match op {
            Operand::Tensor(name) => {
                let r = self.register(name)?;
                if r.dtype != dtype {
                    return Err(
                        self.err(format!("operand %{name} is {}, expected {dtype}", r.dtype))
                    );
                }
                Ok(decode(dtype, &self.operand_code(&r, res, lvar)?))
            }
            Operand::Scalar(e) => {
                let s = self.scalar(e)?;
                Ok(match kind(dtype) {
                    Kind::Float if dtype == DType::F32 => format!("__int2float_rn({s})"),
                    Kind::Float => decode(dtype, &encode(dtype, &format!("__int2float_rn({s})"))),
                    _ => decode(dtype, &format!("((u32)({s}) & {})", mask_hex(dtype))),
                })
            }
            Operand::Float(f) => {
                if !dtype.is_float() {
                    return Err(self.err(format!("a float literal cannot be a {dtype} operand")));
                }
                Ok(float_c(float_literal_value(dtype, f.0)))
            }
        }
    }

    /// The code (in `dtype`) of an operand at result local index `lvar`.
    fn operand_code_of(
        &self,
        op: &Operand,
        dtype: DType,
        res: &RegisterLayout,
        lvar: &str,
    ) -> R<String> {
        match op {
            Operand::Tensor(name) => {
                let r = self.register(name)?;
                if r.dtype != dtype {
                    return Err(
                        self.err(format!("operand %{name} is {}, expected {dtype}", r.dtype))
                    );
                }
                self.operand_code(&r, res, lvar)
            }
            Operand::Scalar(e) => {
                let s = self.scalar(e)?;
                Ok(match kind(dtype) {
                    Kind::Float => encode(dtype, &format!("__int2float_rn({s})")),
                    _ => format!("((u32)({s}) & {})", mask_hex(dtype)),
                })
            }
            Operand::Float(f) => {
                if !dtype.is_float() {
                    return Err(self.err(format!("a float literal cannot be a {dtype} operand")));
                }
                Ok(format!("0x{:x}u", dtype.encode(f.0 as f32)))
            }
        }
    }

    /// The result layout and dtype of elementwise operands (first full-shape tensor).
    fn elementwise_type(
        &self,
        tensors: &[&Operand],
        dtype_from: &[&Operand],
    ) -> R<(DType, RegisterLayout)> {
        let regs: Vec<Reg> = tensors
            .iter()
            .filter_map(|o| match o {
                Operand::Tensor(n) => Some(self.register(n)),
                _ => None,
            })
            .collect::<R<_>>()?;
        if regs.is_empty() {
            return Err(self.err("at least one operand must be a tensor"));
        }
        let rank = regs[0].layout.rank();
        if regs.iter().any(|r| r.layout.rank() != rank) {
            return Err(self.err("tensor operands have different ranks"));
        }
        let shape: Vec<usize> = (0..rank)
            .map(|d| regs.iter().map(|r| r.layout.shape()[d]).max().unwrap_or(1))
            .collect();
        let layout = regs
            .iter()
            .find(|r| r.layout.shape() == shape.as_slice())
            .map(|r| r.layout.clone())
            .ok_or_else(|| self.err(format!("no tensor operand has the result shape {shape:?}")))?;
        let dtype = dtype_from
            .iter()
            .find_map(|o| match o {
                Operand::Tensor(n) => self.register(n).ok().map(|r| r.dtype),
                _ => None,
            })
            .ok_or_else(|| {
                self.err("the value operands must include a tensor, or the dtype is unknown")
            })?;
        Ok((dtype, layout))
    }

    fn unary(&mut self, dst: &str, op: UnaryOp, src: &str) -> R<()> {
        let x = self.register(src)?;
        let dtype = x.dtype;
        if op == UnaryOp::Exp && !dtype.is_float() {
            return Err(self.err(format!("exp needs a float tensor, %{src} is {dtype}")));
        }
        let (reg, new) = self.result(dst, dtype, &x.layout)?;
        let n = dtype.bits();
        let l = x.layout.local_size();
        self.with_result(dst, &reg, new, |e, t| {
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

    fn binary(&mut self, dst: &str, op: BinaryOp, lhs: &Operand, rhs: &Operand) -> R<()> {
        let (dtype, layout) = self.elementwise_type(&[lhs, rhs], &[lhs, rhs])?;
        let (reg, new) = self.result(dst, dtype, &layout)?;
        let n = dtype.bits();
        let l = layout.local_size();
        if super::select::try_packed_binary(self, dst, &reg, new, op, lhs, rhs)? {
            return Ok(());
        }
        let a = self.operand_value(lhs, dtype, &layout, "l")?;
        let b = self.operand_value(rhs, dtype, &layout, "l")?;
        self.with_result(dst, &reg, new, |e, t| {
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

    fn compare(&mut self, dst: &str, op: CmpOp, lhs: &Operand, rhs: &Operand) -> R<()> {
        let (dtype, layout) = self.elementwise_type(&[lhs, rhs], &[lhs, rhs])?;
        let (reg, new) = self.result(dst, DType::Unsigned(1), &layout)?;
        let a = self.operand_value(lhs, dtype, &layout, "l")?;
        let b = self.operand_value(rhs, dtype, &layout, "l")?;
        let l = layout.local_size();
        self.with_result(dst, &reg, new, |e, t| {
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

    fn where_(&mut self, dst: &str, cond: &str, then: &Operand, otherwise: &Operand) -> R<()> {
        let c = self.register(cond)?;
        if c.dtype != DType::Unsigned(1) {
            return Err(self.err(format!("the condition %{cond} is {}, not u1", c.dtype)));
        }
        let cop = Operand::Tensor(cond.to_string());
        let (_, layout) = self.elementwise_type(&[&cop, then, otherwise], &[then, otherwise])?;
        let (dtype, _) = self.elementwise_type(&[&cop, then, otherwise], &[then, otherwise])?;
        let (reg, new) = self.result(dst, dtype, &layout)?;
        let cc = self.operand_code(&c, &layout, "l")?;
        let a = self.operand_code_of(then, dtype, &layout, "l")?;
        let b = self.operand_code_of(otherwise, dtype, &layout, "l")?;
        let n = dtype.bits();
        let l = layout.local_size();
        self.with_result(dst, &reg, new, |e, t| {
            e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
            e.line(&format!("ab_set<{n}>({t}, l, {cc} != 0u ? {a} : {b});"));
            e.close("}");
            Ok(())
        })
    }

    fn cast(&mut self, dst: &str, src: &str, to: DType) -> R<()> {
        let x = self.register(src)?;
        let (reg, new) = self.result(dst, to, &x.layout)?;
        let from = x.dtype;
        let l = x.layout.local_size();
        if let Some(fast) = FastCast::new(from, to) {
            if l % 2 == 0 {
                self.select(format!(
                    "packed conversion {from} -> {to}, two per 32-bit register ({})",
                    fast.summary()
                ));
                let fname = fast.function_name();
                let xname = x.cname.clone();
                let guard = fname.to_uppercase();
                self.helpers.insert(
                    fname.clone(),
                    format!(
                        "#ifndef {guard}\n#define {guard}\n{}#endif\n",
                        fast.device_function()
                    ),
                );
                return self.with_result(dst, &reg, new, |e, t| {
                    e.line(&format!(
                        "#pragma unroll\nfor (int j = 0; j < {}; ++j) {t}[j] = {fname}(ab_pair<{}>({xname}, 2 * j));",
                        l / 2,
                        from.bits()
                    ));
                    Ok(())
                });
            }
        }
        let (n1, n2) = (from.bits(), to.bits());
        self.with_result(dst, &reg, new, |e, t| {
            e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
            let v = decode(from, &format!("ab_get<{n1}>({}, l)", x.cname));
            e.line(&format!(
                "ab_set<{n2}>({t}, l, {});",
                convert_to_code(from, to, &v)
            ));
            e.close("}");
            Ok(())
        })
    }

    // ---------------------------------------------------------------- dot and reduce

    fn dot(&mut self, dst: &str, a: &str, b: &str, c: &str) -> R<()> {
        let (ra, rb, rc) = (self.register(a)?, self.register(b)?, self.register(c)?);
        if ra.dtype != rb.dtype {
            return Err(self.err(format!(
                "dot operands have different dtypes ({} and {})",
                ra.dtype, rb.dtype
            )));
        }
        if ra.dtype.is_float() != rc.dtype.is_float() {
            return Err(self.err(
                "dot needs float inputs with a float accumulator, or integers with integers",
            ));
        }
        let (sa, sb, sc) = (ra.layout.shape(), rb.layout.shape(), rc.layout.shape());
        if sa.len() != 2
            || sb.len() != 2
            || sc.len() != 2
            || sa[1] != sb[0]
            || sa[0] != sc[0]
            || sb[1] != sc[1]
        {
            return Err(self.err(format!("dot shapes {sa:?} x {sb:?} + {sc:?} do not match")));
        }
        let (m, k, n) = (sa[0], sa[1], sb[1]);
        let (reg, new) = self.result(dst, rc.dtype, &rc.layout)?;
        if super::select::try_mma(self, dst, &reg, new, &ra, &rb, &rc)? {
            return Ok(());
        }
        // Generic: logical values of a and b through shared memory, then every holder of an
        // element of c computes it.
        self.select(format!(
            "generic dot through shared memory ({m}x{k} by {k}x{n})"
        ));
        let float = ra.dtype.is_float();
        self.need_scratch(4 * (m * k + k * n));
        let vt = if float { "float" } else { "u32" };
        self.declare(dst, &reg, new);
        self.open("{");
        self.line(&format!("{vt}* const sa = ({vt}*)ab_scratch;"));
        self.line(&format!("{vt}* const sb = sa + {};", m * k));
        self.line("__syncthreads();");
        for (r, stride, arr) in [(&ra, k, "sa"), (&rb, n, "sb")] {
            let terms = Terms::new(&r.layout);
            let owner = terms.first_owner_cond("tid");
            self.open("{");
            if let Some(cnd) = &owner {
                self.open(&format!("if ({cnd}) {{"));
            }
            let t0 = terms.thread_coord_expr(0, "tid");
            let t1 = terms.thread_coord_expr(1, "tid");
            self.open(&format!(
                "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
                r.layout.local_size()
            ));
            let v = decode(
                r.dtype,
                &format!("ab_get<{}>({}, l)", r.dtype.bits(), r.cname),
            );
            let v = if float { v } else { format!("(u32)({v})") };
            self.line(&format!(
                "{arr}[({t0} + {}) * {stride} + {t1} + {}] = {v};",
                terms.local_coord_expr(0, "l"),
                terms.local_coord_expr(1, "l")
            ));
            self.close("}");
            if owner.is_some() {
                self.close("}");
            }
            self.close("}");
        }
        self.line("__syncthreads();");
        let cname = rc.cname.clone();
        let ct = rc.dtype;
        self.with_result(dst, &reg, false, |e, t| {
            let terms = Terms::new(&rc.layout);
            let t0 = terms.thread_coord_expr(0, "tid");
            let t1 = terms.thread_coord_expr(1, "tid");
            e.open(&format!(
                "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
                rc.layout.local_size()
            ));
            e.line(&format!(
                "const int i = {t0} + {}, j = {t1} + {};",
                terms.local_coord_expr(0, "l"),
                terms.local_coord_expr(1, "l")
            ));
            let cv = decode(ct, &format!("ab_get<{}>({cname}, l)", ct.bits()));
            if float {
                e.line(&format!("float acc = {cv};"));
                e.line(&format!(
                    "for (int kk = 0; kk < {k}; ++kk) acc = fmaf(sa[i * {k} + kk], sb[kk * {n} + j], acc);"
                ));
            } else {
                e.line(&format!("u32 acc = (u32)({cv});"));
                e.line(&format!(
                    "for (int kk = 0; kk < {k}; ++kk) acc += sa[i * {k} + kk] * sb[kk * {n} + j];"
                ));
            }
            let res = encode(ct, "acc");
            e.line(&format!("ab_set<{}>({t}, l, {res});", ct.bits()));
            e.close("}");
            Ok(())
        })?;
        self.close("}");
        Ok(())
    }

    fn reduce(&mut self, dst: &str, op: ReduceOp, src: &str, dim: usize) -> R<()> {
        let x = self.register(src)?;
        if dim >= x.layout.rank() {
            return Err(self.err(format!(
                "dimension {dim} does not exist in a tensor of rank {}",
                x.layout.rank()
            )));
        }
        let out_layout = x.layout.reduce(dim);
        let (reg, new) = self.result(dst, x.dtype, &out_layout)?;
        if super::select::try_reduce_in_warp(self, dst, &reg, new, op, &x, dim)? {
            return Ok(());
        }
        self.select("generic reduction through shared memory");
        let dtype = x.dtype;
        let float = dtype.is_float();
        let shape = x.layout.shape().to_vec();
        let total: usize = shape.iter().product();
        self.need_scratch(4 * total);
        let vt = if float { "float" } else { ctype(kind(dtype)) };
        self.declare(dst, &reg, new);
        self.open("{");
        self.line(&format!("{vt}* const s = ({vt}*)ab_scratch;"));
        self.line("__syncthreads();");
        let terms = Terms::new(&x.layout);
        let owner = terms.first_owner_cond("tid");
        if let Some(cnd) = &owner {
            self.open(&format!("if ({cnd}) {{"));
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
        self.open(&format!(
            "#pragma unroll\nfor (int l = 0; l < {}; ++l) {{",
            x.layout.local_size()
        ));
        self.line(&format!(
            "s[{}] = {};",
            flat(&coords),
            decode(dtype, &format!("ab_get<{}>({}, l)", dtype.bits(), x.cname))
        ));
        self.close("}");
        if owner.is_some() {
            self.close("}");
        }
        self.line("__syncthreads();");
        let oterms = Terms::new(&out_layout);
        let len = shape[dim];
        let step: usize = shape[dim + 1..].iter().product();
        let combine = reduce_combine(op, kind(dtype));
        self.with_result(dst, &reg, false, |e, t| {
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
        self.close("}");
        Ok(())
    }
}

/// How a reduction combines two values of the compute type.
pub(super) fn reduce_combine(op: ReduceOp, k: Kind) -> impl Fn(&str, &str) -> String {
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

/// Where an operand's element is, relative to the result's local index.
pub(super) enum OperandIndex {
    /// The same local index.
    Same,
    /// A compile-time function of the result's local index (a C expression of it).
    Static(String),
    /// A run-time value (a C expression of the local index and `tid`).
    Dynamic(String),
}

/// One line describing an instruction, for comments in the output.
fn describe(inst: &Inst) -> String {
    let text = anybit_vm::print(&Program {
        doc: Vec::new(),
        name: "x".into(),
        params: Vec::new(),
        grid: vec![Expr::Const(1)],
        threads: 1,
        body: vec![Stmt {
            kind: StmtKind::Inst(inst.clone()),
            span: Span::UNKNOWN,
        }],
        span: Span::UNKNOWN,
    });
    text.lines()
        .map(str::trim)
        .find(|l| l.ends_with(';'))
        .unwrap_or(inst.mnemonic())
        .to_string()
}
