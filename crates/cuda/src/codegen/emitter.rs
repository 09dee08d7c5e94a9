//! The emitter: the state of code generation while one program is walked, and the services
//! every lowering uses.
//!
//! - Output: indented lines of C++, fresh names, the recorded instruction-selection decisions
//!   and the device helper functions the kernel needs.
//! - Names and scopes: the tensors (register, shared, global) visible at each point of the
//!   program, each with its C name, and the scalars whose divisibility facts end with a scope.
//! - The verifier's facts: [`Emitter::info`] finds the `StmtInfo` of a statement, and
//!   [`Emitter::result`] places the register tensor it defines or overwrites.
//! - Registers: where an instruction's result goes ([`Emitter::result`]), computed into a
//!   temporary and copied, so that overwrites and aliasing operands are correct.
//! - Shared memory: first-fit placement among the allocations live at once, and the scratch
//!   region of the generic lowerings: at the bottom where nothing is live (reserved from then
//!   on), else after every allocation.
//!
//! What this module promises: every error it returns names the instruction being lowered and
//! its span. The program is verified, so names, spaces and types are not checked again: a
//! lookup the verifier guarantees that fails anyway is [`CodegenError::Internal`], never a
//! panic. It imports no lowering (only `element`, `error`, `scalar` and the target), so every
//! lowering may use it.

use std::collections::{BTreeMap, HashMap};

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::{Definition, Expr, Program, Span, Stmt, StmtInfo, TensorType, Verified};

use super::element::words;
use super::error::CodegenError;
use super::scalar::{expr_c, Facts};
use crate::target::Target;

/// Shared memory a block may use without opting in to more (`cudaFuncSetAttribute`).
pub const STATIC_SHARED_LIMIT: usize = 48 * 1024;
/// The most shared memory a block may use on the supported GPUs (sm_80: 163 KiB, sm_86/89: 99
/// KiB, sm_90: 227 KiB); generation fails above the target's limit.
pub fn shared_memory_limit(target: Target) -> usize {
    match target {
        Target::Sm80 => 163 * 1024,
        Target::Sm86 | Target::Sm89 => 99 * 1024,
        Target::Sm90 | Target::Sm90a => 227 * 1024,
    }
}

/// The result of every lowering step.
pub(super) type R<T> = Result<T, CodegenError>;

/// A register tensor: every thread's codes as `u32 cname[words]`.
#[derive(Clone, Debug)]
pub(super) struct Reg {
    pub dtype: DType,
    pub layout: RegisterLayout,
    pub cname: String,
}

impl Reg {
    /// The number of 32-bit words of `cname`.
    pub fn words(&self) -> usize {
        words(self.layout.local_size(), self.dtype)
    }
}

/// A shared tensor: `cname` points at its first byte in `ab_smem`.
#[derive(Clone, Debug)]
pub(super) struct Shared {
    pub dtype: DType,
    pub layout: SharedLayout,
    pub cname: String,
    pub id: usize,
}

/// A global tensor: `cname` is the pointer, `cname_n{d}` and `cname_t{d}` its sizes and strides;
/// the divisibility facts of sizes and strides, and the strides that are constants.
#[derive(Clone, Debug)]
pub(super) struct Global {
    pub dtype: DType,
    pub rank: usize,
    pub cname: String,
    pub size_div: Vec<u64>,
    pub stride_div: Vec<u64>,
    pub stride_const: Vec<Option<i64>>,
}

/// What a tensor name stands for.
#[derive(Clone, Debug)]
pub(super) enum Var {
    Register(Reg),
    Shared(Shared),
    Global(Global),
}

/// The names one block of the program defines (tensors, and scalars with divisibility facts),
/// and the shared allocations it owns.
#[derive(Default)]
struct Scope {
    tensors: HashMap<String, Var>,
    scalars: Vec<String>,
    shared: Vec<usize>,
}

/// The emitter's state while walking one verified program.
pub(super) struct Emitter<'a> {
    pub program: &'a Program,
    /// What the verifier learned about `program`.
    verified: &'a Verified<'a>,
    out: String,
    indent: usize,
    scopes: Vec<Scope>,
    pub facts: Facts,
    /// Live shared allocations: (id, byte offset, bytes).
    live_shared: Vec<(usize, usize, usize)>,
    next_shared_id: usize,
    shared_peak: usize,
    /// Scratch bytes reserved at offset 0 for the rest of the kernel (see [`Emitter::scratch`]).
    scratch_bottom: usize,
    /// Loops the walk is inside.
    loops: usize,
    scratch_bytes: usize,
    counter: usize,
    selections: Vec<String>,
    span: Span,
    inst: String,
    pub threads: usize,
    /// Device functions the kernel needs (fast conversions), by name.
    helpers: BTreeMap<String, String>,
}

/// What the walk leaves behind, for assembling the kernel.
pub(super) struct Finished {
    /// The kernel body's statements, indented one level.
    pub body: String,
    /// The end of the highest shared allocation, in bytes.
    pub shared_peak: usize,
    /// The scratch region the generic lowerings need, in bytes.
    pub scratch_bytes: usize,
    /// Device functions the kernel needs, in name order.
    pub helpers: Vec<String>,
    /// One line per instruction-selection decision.
    pub selections: Vec<String>,
}

/// `x` rounded up to a multiple of `a`.
pub(super) fn align(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

impl<'a> Emitter<'a> {
    /// An emitter at the start of the verified program's body (one open scope, indented one
    /// level).
    pub fn new(verified: &'a Verified<'a>) -> Self {
        let program = verified.program();
        Emitter {
            program,
            verified,
            out: String::new(),
            indent: 1,
            scopes: vec![Scope::default()],
            facts: Facts::default(),
            live_shared: Vec::new(),
            next_shared_id: 0,
            shared_peak: 0,
            scratch_bottom: 0,
            loops: 0,
            scratch_bytes: 0,
            counter: 0,
            selections: Vec::new(),
            span: program.span,
            inst: "program".to_string(),
            threads: program.threads as usize,
            helpers: BTreeMap::new(),
        }
    }

    /// Closes the outermost scope and hands over what was emitted.
    pub fn finish(mut self) -> Finished {
        self.end_scope();
        Finished {
            body: self.out,
            shared_peak: self.shared_peak,
            scratch_bytes: self.scratch_bytes,
            helpers: self.helpers.into_values().collect(),
            selections: self.selections,
        }
    }

    // ---------------------------------------------------------------- output helpers

    /// Appends `text` (one or more lines) at the current indentation.
    pub fn line(&mut self, text: &str) {
        for l in text.lines() {
            for _ in 0..self.indent {
                self.out.push_str("  ");
            }
            self.out.push_str(l);
            self.out.push('\n');
        }
    }

    /// Appends `text` and indents what follows (a C block opens).
    pub fn open(&mut self, text: &str) {
        self.line(text);
        self.indent += 1;
    }

    /// Unindents and appends `text` (a C block closes).
    pub fn close(&mut self, text: &str) {
        self.indent -= 1;
        self.line(text);
    }

    /// Indents what follows, after a line that both closes and opens a block.
    pub fn indent_in(&mut self) {
        self.indent += 1;
    }

    /// A C name made of `base` and a number used nowhere else in the kernel.
    pub fn fresh(&mut self, base: &str) -> String {
        self.counter += 1;
        format!("{base}{}", self.counter)
    }

    /// An error about the statement being lowered.
    pub fn err(&self, reason: impl Into<String>) -> CodegenError {
        CodegenError::Unsupported {
            inst: self.inst.clone(),
            span: self.span,
            reason: reason.into(),
        }
    }

    /// An error about the statement being lowered for a fact the verifier guarantees: a bug.
    pub fn internal(&self, reason: impl Into<String>) -> CodegenError {
        CodegenError::Internal {
            inst: self.inst.clone(),
            span: self.span,
            reason: reason.into(),
        }
    }

    /// Records an instruction-selection decision: a comment in the output and a line of the
    /// kernel's `selections`.
    pub fn note_selection(&mut self, what: impl AsRef<str>) {
        let text = format!("{} {}: {}", self.span, self.inst, what.as_ref());
        self.line(&format!("// selected: {}", what.as_ref()));
        self.selections.push(text);
    }

    /// Sets the statement that errors and selections are reported at.
    pub fn locate(&mut self, span: Span, inst: &str) {
        self.span = span;
        self.inst = inst.to_string();
    }

    /// Adds a device function the kernel needs (once per name; the kernel lists them in name
    /// order before itself).
    pub fn add_helper(&mut self, name: String, code: String) {
        self.helpers.insert(name, code);
    }

    // ---------------------------------------------------------------- names and scopes

    /// The verifier's facts about `stmt`, a statement of the program.
    pub fn info(&self, stmt: &Stmt) -> R<&'a StmtInfo> {
        let verified: &'a Verified<'a> = self.verified;
        verified
            .info(stmt)
            .ok_or_else(|| self.internal("the verifier recorded nothing for this statement"))
    }

    /// Scalar expression `e` as C (the verifier checked its names).
    pub fn scalar(&self, e: &Expr) -> String {
        expr_c(e)
    }

    /// The tensor `name` stands for in the innermost scope that defines it.
    pub fn lookup(&self, name: &str) -> Option<&Var> {
        self.scopes.iter().rev().find_map(|s| s.tensors.get(name))
    }

    /// The register tensor `name`.
    pub fn register(&self, name: &str) -> R<Reg> {
        match self.lookup(name) {
            Some(Var::Register(r)) => Ok(r.clone()),
            Some(_) => Err(self.internal(format!("%{name} is not a register tensor"))),
            None => Err(self.internal(format!("%{name} is not visible"))),
        }
    }

    /// The shared tensor `name`.
    pub fn shared(&self, name: &str) -> R<Shared> {
        match self.lookup(name) {
            Some(Var::Shared(s)) => Ok(s.clone()),
            Some(_) => Err(self.internal(format!("%{name} is not a shared tensor"))),
            None => Err(self.internal(format!("%{name} is not visible"))),
        }
    }

    /// The global tensor `name`.
    pub fn global(&self, name: &str) -> R<Global> {
        match self.lookup(name) {
            Some(Var::Global(g)) => Ok(g.clone()),
            Some(_) => Err(self.internal(format!("%{name} is not a global tensor"))),
            None => Err(self.internal(format!("%{name} is not visible"))),
        }
    }

    /// The tensor the instruction of `info` defines or overwrites, as the verifier recorded it.
    pub fn definition<'i>(&self, info: &'i StmtInfo) -> R<&'i Definition> {
        info.defines
            .as_ref()
            .ok_or_else(|| self.internal("the verifier recorded no result for this instruction"))
    }

    /// Where the register result of the instruction of `info` goes: a new register variable,
    /// or the visible one it overwrites (the verifier decided which, and that the types agree).
    /// Returns the register and whether it is new.
    pub fn result(&mut self, info: &StmtInfo) -> R<(Reg, bool)> {
        let Definition {
            name,
            ty: TensorType::Register { dtype, layout },
            overwrite,
        } = self.definition(info)?
        else {
            return Err(self.internal("the verifier recorded a result that is not a register"));
        };
        if *overwrite {
            return Ok((self.register(name)?, false));
        }
        let cname = self.fresh_tensor_name("r", name);
        Ok((
            Reg {
                dtype: *dtype,
                layout: layout.clone(),
                cname,
            },
            true,
        ))
    }

    /// A C name for tensor `name` with `prefix`, distinct from every visible one.
    pub fn fresh_tensor_name(&mut self, prefix: &str, name: &str) -> String {
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

    /// Defines `name` in the innermost scope.
    pub fn define(&mut self, name: &str, var: Var) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.tensors.insert(name.to_string(), var);
        }
    }

    /// Removes `name` from the innermost scope that defines it.
    pub fn undefine(&mut self, name: &str) {
        for scope in self.scopes.iter_mut().rev() {
            if scope.tensors.remove(name).is_some() {
                break;
            }
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

    /// Enters (`true`) or leaves the body of a loop.
    pub fn in_loop(&mut self, entering: bool) {
        if entering {
            self.loops += 1;
        } else {
            self.loops -= 1;
        }
    }

    /// Opens a scope (a block of the program).
    pub fn push_scope(&mut self) {
        self.scopes.push(Scope::default());
    }

    /// Closes the innermost scope: its shared allocations and scalar facts end with it.
    pub fn end_scope(&mut self) {
        if let Some(scope) = self.scopes.pop() {
            for id in scope.shared {
                self.live_shared.retain(|&(i, _, _)| i != id);
            }
            for name in scope.scalars {
                self.facts.forget(&name);
            }
        }
    }

    /// Makes scalar `name` visible in the innermost scope (its facts end with the scope).
    pub fn add_scalar(&mut self, name: &str) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.scalars.push(name.to_string());
        }
    }

    /// `offsets` (one per dimension of the tensor; the verifier checked the count) as C.
    pub fn offsets(&self, offsets: &[Expr]) -> Vec<String> {
        offsets.iter().map(|o| self.scalar(o)).collect()
    }

    // ---------------------------------------------------------------- shared memory

    /// Places `bytes` of shared memory first-fit among the live allocations (128-byte aligned)
    /// for the innermost scope; returns its id and byte offset.
    pub fn allocate_shared(&mut self, bytes: usize) -> (usize, usize) {
        let bytes = align(bytes.max(16), 16);
        let mut live: Vec<(usize, usize)> =
            self.live_shared.iter().map(|&(_, o, b)| (o, b)).collect();
        if self.scratch_bottom > 0 {
            live.push((0, self.scratch_bottom));
        }
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

    /// Ends shared allocation `id` (`free_shared`): its memory may be reused and `name` is gone.
    pub fn free_shared(&mut self, name: &str, id: usize) {
        self.live_shared.retain(|&(i, _, _)| i != id);
        self.undefine(name);
    }

    /// Reserves `bytes` of scratch shared memory for one instruction. Where no allocation is
    /// live and the instruction is in no loop, the scratch takes the bottom of shared memory,
    /// reusing what freed tensors took (so the lowering must wait for every copy and
    /// synchronise the block before writing it: `reused`), and stays reserved there for the
    /// rest of the kernel, so that later allocations go above it and never race with its last
    /// reads (in a loop, an allocation placed earlier in the body would run after it);
    /// otherwise it is the region after every allocation (`ab_scratch`).
    pub fn scratch(&mut self, bytes: usize) -> Scratch {
        let bytes = align(bytes, 16);
        if self.live_shared.is_empty() && self.loops == 0 {
            self.scratch_bottom = self.scratch_bottom.max(bytes);
            self.shared_peak = self.shared_peak.max(self.scratch_bottom);
            Scratch {
                pointer: "ab_smem",
                reused: true,
            }
        } else {
            self.scratch_bytes = self.scratch_bytes.max(bytes);
            Scratch {
                pointer: "ab_scratch",
                reused: false,
            }
        }
    }
}

/// Where a generic lowering's scratch lies ([`Emitter::scratch`]).
pub(super) struct Scratch {
    /// The C pointer (bytes) to its start.
    pub pointer: &'static str,
    /// Whether it may overlap memory of freed tensors: then wait for every `cp.async` before
    /// the barrier that precedes its first write.
    pub reused: bool,
}

impl Scratch {
    /// The lines that make the scratch safe to write: every copy landed (where it reuses
    /// freed memory) and the whole block past its earlier uses.
    pub fn fence(&self) -> &'static str {
        if self.reused {
            "ab_wait_group<0>();\n__syncthreads();"
        } else {
            "__syncthreads();"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %x = alloc_register(f16, spatial(32), 0.0);\n    %x = alloc_register(f16, spatial(32), 1.0);\n    barrier();\n}\n";

    fn program() -> Program {
        anybit_vm::parse(TEXT).expect("the test program parses")
    }

    #[test]
    fn a_lookup_the_verifier_guarantees_is_an_internal_error_when_it_fails() {
        let program = program();
        let verified = anybit_vm::verify(&program).expect("the test program verifies");
        let mut e = Emitter::new(&verified);
        e.locate(Span { line: 6, column: 5 }, "neg");
        let error = e.register("y").unwrap_err();
        assert_eq!(
            error.to_string(),
            "6:5: `neg`: internal error in code generation (a bug): %y is not visible"
        );
        assert!(matches!(e.shared("y"), Err(CodegenError::Internal { .. })));
        assert!(matches!(e.global("y"), Err(CodegenError::Internal { .. })));
    }

    #[test]
    fn facts_are_found_for_the_program_s_statements_only() {
        let program = program();
        let other = program.clone();
        let verified = anybit_vm::verify(&program).expect("the test program verifies");
        let e = Emitter::new(&verified);
        let info = e
            .info(&program.body[0])
            .expect("facts of the first statement");
        assert_eq!(info.index, 0);
        assert!(matches!(
            e.info(&other.body[0]),
            Err(CodegenError::Internal { .. })
        ));
    }

    #[test]
    fn result_places_a_new_register_or_the_one_it_overwrites() {
        let program = program();
        let verified = anybit_vm::verify(&program).expect("the test program verifies");
        let mut e = Emitter::new(&verified);
        let info = e.info(&program.body[0]).expect("facts of alloc_register");
        let (reg, new) = e.result(info).expect("a register result");
        assert!(new);
        assert_eq!(
            (reg.cname.as_str(), reg.dtype, reg.words()),
            ("r_x", DType::F16, 1)
        );
        e.define("x", Var::Register(reg));
        // The verifier decided that the second `alloc_register` overwrites %x.
        let overwrite = e.info(&program.body[1]).expect("facts of the overwrite");
        let (reg, new) = e.result(overwrite).expect("the register it overwrites");
        assert!(!new);
        assert_eq!(reg.cname, "r_x");
        // An instruction without a result has no definition to place.
        let barrier = e.info(&program.body[2]).expect("facts of barrier");
        assert!(matches!(
            e.result(barrier),
            Err(CodegenError::Internal { .. })
        ));
    }
}
