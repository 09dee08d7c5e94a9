//! The printer: [`Program`] → canonical text.
//!
//! What this module promises: for every program the verifier accepts,
//! `parse(&print(p)) == Ok(p)` (spans aside), and the output is canonical:
//! `print(&parse(t)?) == t` for every `t` that `print` produced. The output is deterministic:
//! 4-space indentation, one statement per line, no comments except the program's `///` lines,
//! minimal parentheses, `step 1` and empty `else` blocks left out.

use std::fmt::{self, Write};

use crate::ir::{
    Cond, Expr, ExprOp, FloatLit, Inst, Literal, Operand, ParamKind, Program, Stmt, StmtKind,
    Unroll,
};

/// The canonical text of `program` (ends with a newline).
pub fn print(program: &Program) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = write_program(&mut out, program);
    out
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_expr(f, self, 0)
    }
}

impl fmt::Display for Cond {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_cond(f, self, 0)
    }
}

impl fmt::Display for FloatLit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value.is_nan() {
            f.write_str("nan")
        } else if value.is_infinite() {
            f.write_str(if value > 0.0 { "inf" } else { "-inf" })
        } else {
            // `{:?}` prints the shortest text that reads back to the same f64, and always
            // with a `.` or an exponent, so it never looks like an integer.
            write!(f, "{value:?}")
        }
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(value) => write!(f, "{value}"),
            Literal::Float(value) => write!(f, "{value}"),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Tensor(name) => write!(f, "%{name}"),
            Operand::Scalar(expr) => write!(f, "{expr}"),
            Operand::Float(value) => write!(f, "{value}"),
        }
    }
}

impl fmt::Display for Inst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_inst(f, self)
    }
}

fn write_program(out: &mut String, program: &Program) -> fmt::Result {
    for line in &program.doc {
        if line.is_empty() {
            out.push_str("///\n");
        } else {
            writeln!(out, "/// {line}")?;
        }
    }
    write!(out, "program {}(", program.name)?;
    for (index, param) in program.params.iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        match &param.kind {
            ParamKind::Pointer(dtype) => write!(out, "{}: ptr<{dtype}>", param.name)?,
            ParamKind::Int { multiple_of: None } => write!(out, "{}: i32", param.name)?,
            ParamKind::Int {
                multiple_of: Some(multiple),
            } => write!(out, "{}: i32 multiple_of {multiple}", param.name)?,
        }
    }
    out.push_str(")\ngrid(");
    write_list(out, &program.grid)?;
    writeln!(out, ")\nthreads({})", program.threads)?;
    if let Some(blocks) = program.blocks_per_sm {
        writeln!(out, "blocks_per_sm({blocks})")?;
    }
    out.push_str("{\n");
    write_block(out, &program.body, 1)?;
    out.push_str("}\n");
    Ok(())
}

fn write_list<T: fmt::Display>(out: &mut impl Write, items: &[T]) -> fmt::Result {
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.write_str(", ")?;
        }
        write!(out, "{item}")?;
    }
    Ok(())
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("    ");
    }
}

fn write_block(out: &mut String, body: &[Stmt], depth: usize) -> fmt::Result {
    for stmt in body {
        write_stmt(out, stmt, depth)?;
    }
    Ok(())
}

fn write_stmt(out: &mut String, stmt: &Stmt, depth: usize) -> fmt::Result {
    indent(out, depth);
    match &stmt.kind {
        StmtKind::Let { name, value } => writeln!(out, "let {name} = {value};"),
        StmtKind::For(looop) => {
            write!(out, "for {} in {}..{}", looop.var, looop.start, looop.end)?;
            if looop.step != Expr::Const(1) {
                write!(out, " step {}", looop.step)?;
            }
            match looop.unroll {
                Unroll::None => {}
                Unroll::Full => out.push_str(" unroll"),
                Unroll::Factor(factor) => write!(out, " unroll {factor}")?,
            }
            out.push_str(" {\n");
            write_block(out, &looop.body, depth + 1)?;
            indent(out, depth);
            out.push_str("}\n");
            Ok(())
        }
        StmtKind::If {
            cond,
            then_body,
            else_body,
        } => {
            writeln!(out, "if {cond} {{")?;
            write_block(out, then_body, depth + 1)?;
            indent(out, depth);
            if else_body.is_empty() {
                out.push_str("}\n");
            } else {
                out.push_str("} else {\n");
                write_block(out, else_body, depth + 1)?;
                indent(out, depth);
                out.push_str("}\n");
            }
            Ok(())
        }
        StmtKind::Inst(inst) => writeln!(out, "{inst};"),
    }
}

struct Offsets<'a>(&'a str, &'a [Expr]);

impl fmt::Display for Offsets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}[", self.0)?;
        write_list(f, self.1)?;
        f.write_str("]")
    }
}

struct List<'a>(&'a [Expr]);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        write_list(f, self.0)?;
        f.write_str("]")
    }
}

fn write_inst(f: &mut fmt::Formatter<'_>, inst: &Inst) -> fmt::Result {
    if let Some(dst) = inst.dst() {
        write!(f, "%{dst} = ")?;
    }
    let name = inst.mnemonic();
    match inst {
        Inst::AllocRegister {
            dtype,
            layout,
            init,
            ..
        } => match init {
            Some(value) => write!(f, "{name}({dtype}, {layout}, {value})"),
            None => write!(f, "{name}({dtype}, {layout})"),
        },
        Inst::AllocShared { dtype, layout, .. } => write!(f, "{name}({dtype}, {layout})"),
        Inst::FreeShared { tensor } => write!(f, "{name}(%{tensor})"),
        Inst::ViewGlobal {
            ptr,
            shape,
            strides,
            ..
        } => write!(f, "{name}({ptr}, {}, {})", List(shape), List(strides)),
        Inst::LoadGlobal {
            src,
            offsets,
            layout,
            ..
        }
        | Inst::LoadShared {
            src,
            offsets,
            layout,
            ..
        } => write!(f, "{name}({}, {layout})", Offsets(src, offsets)),
        Inst::StoreGlobal { dst, offsets, src } | Inst::StoreShared { dst, offsets, src } => {
            write!(f, "{name}({}, %{src})", Offsets(dst, offsets))
        }
        Inst::CopyAsync { dst, src, offsets } => {
            write!(f, "{name}(%{dst}, {})", Offsets(src, offsets))
        }
        Inst::CommitGroup | Inst::Barrier => write!(f, "{name}()"),
        Inst::WaitGroup { pending } => write!(f, "{name}({pending})"),
        Inst::View {
            src,
            dtype,
            layout,
            offset,
            ..
        } => match offset {
            None => write!(f, "{name}(%{src}, {dtype}, {layout})"),
            Some(offset) => write!(f, "{name}(%{src}, {dtype}, {layout}, {offset})"),
        },
        Inst::Cast {
            src, dtype, layout, ..
        } => match layout {
            None => write!(f, "{name}(%{src}, {dtype})"),
            Some(layout) => write!(f, "{name}(%{src}, {dtype}, {layout})"),
        },
        Inst::CastPlanes {
            planes,
            code,
            dtype,
            layout,
            ..
        } => {
            write!(f, "{name}(")?;
            for plane in planes {
                write!(f, "%{plane}, ")?;
            }
            match layout {
                None => write!(f, "{code}, {dtype})"),
                Some(layout) => write!(f, "{code}, {dtype}, {layout})"),
            }
        }
        Inst::Unary { src, .. } | Inst::Print { src } => write!(f, "{name}(%{src})"),
        Inst::Binary { lhs, rhs, .. } | Inst::Compare { lhs, rhs, .. } => {
            write!(f, "{name}({lhs}, {rhs})")
        }
        Inst::Where {
            cond,
            then,
            otherwise,
            ..
        } => write!(f, "{name}(%{cond}, {then}, {otherwise})"),
        Inst::Dot { a, b, c, .. } => write!(f, "{name}(%{a}, %{b}, %{c})"),
        Inst::Reduce { src, dim, .. } => write!(f, "{name}(%{src}, {dim})"),
    }
}

/// Binding strength of an expression: 1 for `+ -`, 2 for `* / %`, 3 for everything else.
fn expr_precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Binary(ExprOp::Add | ExprOp::Sub, ..) => 1,
        Expr::Binary(ExprOp::Mul | ExprOp::Div | ExprOp::Rem, ..) => 2,
        _ => 3,
    }
}

/// Writes `expr`, in parentheses if it binds less tightly than `min_precedence`.
fn write_expr(f: &mut impl Write, expr: &Expr, min_precedence: u8) -> fmt::Result {
    let precedence = expr_precedence(expr);
    if precedence < min_precedence {
        f.write_str("(")?;
        write_expr(f, expr, 0)?;
        return f.write_str(")");
    }
    match expr {
        Expr::Const(value) => write!(f, "{value}"),
        Expr::Var(name) => f.write_str(name),
        Expr::BlockIdx(axis) => write!(f, "block.{}", axis.name()),
        Expr::Binary(op @ (ExprOp::Min | ExprOp::Max | ExprOp::CeilDiv), lhs, rhs) => {
            write!(f, "{}(", op.symbol())?;
            write_expr(f, lhs, 0)?;
            f.write_str(", ")?;
            write_expr(f, rhs, 0)?;
            f.write_str(")")
        }
        Expr::Binary(op, lhs, rhs) => {
            // Left-associative: the right operand needs parentheses at equal precedence.
            write_expr(f, lhs, precedence)?;
            write!(f, " {} ", op.symbol())?;
            write_expr(f, rhs, precedence + 1)
        }
    }
}

/// Binding strength of a condition: 1 for `||`, 2 for `&&`, 3 for the rest.
fn cond_precedence(cond: &Cond) -> u8 {
    match cond {
        Cond::Or(..) => 1,
        Cond::And(..) => 2,
        _ => 3,
    }
}

fn write_cond(f: &mut impl Write, cond: &Cond, min_precedence: u8) -> fmt::Result {
    let precedence = cond_precedence(cond);
    if precedence < min_precedence {
        f.write_str("(")?;
        write_cond(f, cond, 0)?;
        return f.write_str(")");
    }
    match cond {
        Cond::Bool(value) => write!(f, "{value}"),
        Cond::Compare(op, lhs, rhs) => {
            write_expr(f, lhs, 0)?;
            write!(f, " {} ", op.symbol())?;
            write_expr(f, rhs, 0)
        }
        Cond::And(lhs, rhs) | Cond::Or(lhs, rhs) => {
            write_cond(f, lhs, precedence)?;
            f.write_str(if precedence == 2 { " && " } else { " || " })?;
            write_cond(f, rhs, precedence + 1)
        }
        Cond::Not(inner) => {
            f.write_str("!")?;
            match inner.as_ref() {
                Cond::Bool(_) | Cond::Not(_) => write_cond(f, inner, 0),
                _ => {
                    f.write_str("(")?;
                    write_cond(f, inner, 0)?;
                    f.write_str(")")
                }
            }
        }
    }
}
