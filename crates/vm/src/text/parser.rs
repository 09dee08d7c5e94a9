//! The parser: text → [`Program`].
//!
//! What this module promises:
//! - [`parse`] never panics, whatever the input (nesting deeper than [`MAX_DEPTH`] is an error,
//!   not a stack overflow), and runs in time roughly linear in the input.
//! - Errors give the 1-based line and column of the offending token and say what was expected.
//! - Parsing checks only syntax (and that dtype, layout and number tokens are valid); names,
//!   types and scopes are [`crate::verify()`]'s business.
//! - Every statement, parameter and the program get the span of their first token.
//!
//! The grammar is in `docs/vm-text.md`.

use std::str::FromStr;

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout};

use crate::ir::{
    is_identifier_char, is_identifier_start, Axis, BinaryOp, CmpOp, Cond, Expr, ExprOp, FloatLit,
    ForLoop, Inst, Literal, Operand, Param, ParamKind, Program, ReduceOp, Span, Stmt, StmtKind,
    UnaryOp, Unroll,
};

/// How deeply blocks, parentheses and conditions may nest.
pub const MAX_DEPTH: usize = 64;

/// Text that is not a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub column: u32,
    /// What is wrong, usually "expected X, found Y".
    pub message: String,
}

impl ParseError {
    /// Where the error is.
    pub fn span(&self) -> Span {
        Span::new(self.line, self.column)
    }
}

/// Parses the text form of one program.
pub fn parse(text: &str) -> Result<Program, ParseError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: Pos {
            index: 0,
            line: 1,
            column: 1,
        },
        depth: 0,
    };
    parser.program()
}

/// Keywords of the text form; scalar names and the program name may not be one of these.
pub const KEYWORDS: &[&str] = &[
    "program",
    "grid",
    "threads",
    "blocks_per_sm",
    "let",
    "for",
    "in",
    "step",
    "unroll",
    "if",
    "else",
    "true",
    "false",
    "block",
    "min",
    "max",
    "ceil_div",
    "ptr",
    "i32",
    "multiple_of",
    "inf",
    "nan",
];

#[derive(Clone, Copy, Debug)]
struct Pos {
    index: usize,
    line: u32,
    column: u32,
}

impl Pos {
    fn span(self) -> Span {
        Span::new(self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Tensor(String),
    /// Decimal digits, not yet converted (the context decides the range).
    Int(String),
    Float(f64),
    Punct(&'static str),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Tensor(name) => format!("`%{name}`"),
            Tok::Int(digits) => format!("`{digits}`"),
            Tok::Float(value) => format!("`{}`", FloatLit(*value)),
            Tok::Punct(punct) => format!("`{punct}`"),
            Tok::Eof => "end of input".to_string(),
        }
    }

    fn is_punct(&self, punct: &str) -> bool {
        matches!(self, Tok::Punct(p) if *p == punct)
    }

    fn is_ident(&self, word: &str) -> bool {
        matches!(self, Tok::Ident(name) if name == word)
    }
}

/// Two- and one-character punctuation, longest first.
const PUNCTS: &[&str] = &[
    "..", "&&", "||", "<=", ">=", "==", "!=", "(", ")", "[", "]", "{", "}", ",", ";", ":", "=",
    "<", ">", "!", "+", "-", "*", "/", "%", ".",
];

type Result<T, E = ParseError> = std::result::Result<T, E>;

struct Parser {
    chars: Vec<char>,
    pos: Pos,
    depth: usize,
}

impl Parser {
    // ---------------------------------------------------------------- characters and tokens

    fn char_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos.index + offset).copied()
    }

    fn advance(&mut self) {
        if let Some(c) = self.char_at(0) {
            self.pos.index += 1;
            if c == '\n' {
                self.pos.line = self.pos.line.saturating_add(1);
                self.pos.column = 1;
            } else {
                self.pos.column = self.pos.column.saturating_add(1);
            }
        }
    }

    fn rest_starts_with(&self, text: &str) -> bool {
        text.chars()
            .enumerate()
            .all(|(offset, c)| self.char_at(offset) == Some(c))
    }

    /// Skips whitespace and `//` comments (including `///` ones: doc lines are only read
    /// before `program`, by [`Parser::program`]).
    fn skip_trivia(&mut self) {
        loop {
            match self.char_at(0) {
                Some(c) if c.is_whitespace() => self.advance(),
                Some('/') if self.char_at(1) == Some('/') => {
                    while let Some(c) = self.char_at(0) {
                        if c == '\n' {
                            break;
                        }
                        self.advance();
                    }
                }
                _ => return,
            }
        }
    }

    fn error_at(&self, pos: Pos, message: impl Into<String>) -> ParseError {
        ParseError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }

    /// Lexes one token, returning it with the position of its first character.
    fn lex(&mut self) -> Result<(Tok, Pos)> {
        self.skip_trivia();
        let start = self.pos;
        let Some(c) = self.char_at(0) else {
            return Ok((Tok::Eof, start));
        };
        if is_identifier_start(c) {
            return Ok((Tok::Ident(self.take_ident()), start));
        }
        if c == '%' && self.char_at(1).is_some_and(is_identifier_char) {
            self.advance();
            return Ok((Tok::Tensor(self.take_ident()), start));
        }
        if c.is_ascii_digit() {
            return self.lex_number(start);
        }
        for punct in PUNCTS {
            if self.rest_starts_with(punct) {
                for _ in 0..punct.len() {
                    self.advance();
                }
                return Ok((Tok::Punct(punct), start));
            }
        }
        Err(self.error_at(
            start,
            format!("unexpected character `{}`", c.escape_debug()),
        ))
    }

    fn take_ident(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.char_at(0).filter(|&c| is_identifier_char(c)) {
            name.push(c);
            self.advance();
        }
        name
    }

    fn take_digits(&mut self, text: &mut String) {
        while let Some(c) = self.char_at(0).filter(char::is_ascii_digit) {
            text.push(c);
            self.advance();
        }
    }

    fn lex_number(&mut self, start: Pos) -> Result<(Tok, Pos)> {
        let mut text = String::new();
        self.take_digits(&mut text);
        let mut is_float = false;
        if self.char_at(0) == Some('.') && self.char_at(1).is_some_and(|c| c.is_ascii_digit()) {
            is_float = true;
            text.push('.');
            self.advance();
            self.take_digits(&mut text);
        }
        if matches!(self.char_at(0), Some('e' | 'E')) {
            let digit_at = match self.char_at(1) {
                Some('+' | '-') => 2,
                _ => 1,
            };
            if self.char_at(digit_at).is_some_and(|c| c.is_ascii_digit()) {
                is_float = true;
                for _ in 0..digit_at {
                    if let Some(c) = self.char_at(0) {
                        text.push(c);
                    }
                    self.advance();
                }
                self.take_digits(&mut text);
            }
        }
        if self.char_at(0).is_some_and(is_identifier_char) {
            return Err(self.error_at(start, "a number must not run into a name"));
        }
        if is_float {
            match text.parse::<f64>() {
                Ok(value) => Ok((Tok::Float(value), start)),
                Err(_) => Err(self.error_at(start, format!("`{text}` is not a number"))),
            }
        } else {
            Ok((Tok::Int(text), start))
        }
    }

    fn peek(&mut self) -> Result<(Tok, Pos)> {
        let saved = self.pos;
        let token = self.lex();
        self.pos = saved;
        token
    }

    fn peek_tok(&mut self) -> Result<Tok> {
        Ok(self.peek()?.0)
    }

    /// The position of the next token.
    fn here(&mut self) -> Pos {
        self.skip_trivia();
        self.pos
    }

    fn expected(&mut self, what: &str) -> ParseError {
        match self.peek() {
            Ok((token, pos)) => {
                self.error_at(pos, format!("expected {what}, found {}", token.describe()))
            }
            Err(error) => error,
        }
    }

    fn eat_punct(&mut self, punct: &str) -> Result<bool> {
        if self.peek_tok()?.is_punct(punct) {
            self.lex()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect_punct(&mut self, punct: &str) -> Result<()> {
        if self.eat_punct(punct)? {
            Ok(())
        } else {
            Err(self.expected(&format!("`{punct}`")))
        }
    }

    fn eat_keyword(&mut self, word: &str) -> Result<bool> {
        if self.peek_tok()?.is_ident(word) {
            self.lex()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<()> {
        if self.eat_keyword(word)? {
            Ok(())
        } else {
            Err(self.expected(&format!("`{word}`")))
        }
    }

    /// An identifier that is not a keyword.
    fn name(&mut self, what: &str) -> Result<(String, Pos)> {
        match self.peek()? {
            (Tok::Ident(name), pos) if !KEYWORDS.contains(&name.as_str()) => {
                self.lex()?;
                Ok((name, pos))
            }
            (Tok::Ident(name), pos) => {
                Err(self.error_at(pos, format!("expected {what}, found the keyword `{name}`")))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn tensor(&mut self) -> Result<String> {
        match self.peek_tok()? {
            Tok::Tensor(name) => {
                self.lex()?;
                Ok(name)
            }
            _ => Err(self.expected("a tensor variable `%name`")),
        }
    }

    /// An unsigned decimal number that fits `u32`.
    fn small_number(&mut self, what: &str) -> Result<u32> {
        match self.peek()? {
            (Tok::Int(digits), pos) => {
                self.lex()?;
                digits
                    .parse::<u32>()
                    .map_err(|_| self.error_at(pos, format!("{what} `{digits}` is too large")))
            }
            _ => Err(self.expected(what)),
        }
    }

    fn dtype(&mut self) -> Result<DType> {
        match self.peek()? {
            (Tok::Ident(name), pos) => {
                self.lex()?;
                DType::from_str(&name).map_err(|error| self.error_at(pos, error.to_string()))
            }
            _ => Err(self.expected("a data type (u4, i8, f16, f6e3m2, ...)")),
        }
    }

    /// `, LAYOUT` at the end of a conversion (`cast`, `cast_planes`), if there is one.
    fn optional_layout(&mut self) -> Result<Option<RegisterLayout>> {
        if self.eat_punct(",")? {
            Ok(Some(self.register_layout()?))
        } else {
            Ok(None)
        }
    }

    fn enter(&mut self) -> Result<()> {
        if self.depth >= MAX_DEPTH {
            let pos = self.here();
            return Err(self.error_at(pos, format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// The raw text of a layout argument: everything up to the `,` or `)` that closes it at
    /// bracket depth 0. Returns the trimmed text and its start.
    fn layout_text(&mut self, what: &str) -> Result<(String, Pos)> {
        let start = self.here();
        let mut text = String::new();
        let mut depth = 0usize;
        while let Some(c) = self.char_at(0) {
            match c {
                '(' | '[' | '{' | '<' => depth += 1,
                ')' | ']' | '}' | '>' if depth > 0 => depth -= 1,
                ',' | ')' | ';' | '\n' if depth == 0 => break,
                _ => {}
            }
            text.push(c);
            self.advance();
        }
        let text = text.trim_end().to_string();
        if text.is_empty() {
            return Err(self.error_at(start, format!("expected {what}")));
        }
        Ok((text, start))
    }

    /// Position of the `offset`-th byte of `text`, which starts at `start` (one line).
    fn offset_pos(start: Pos, text: &str, offset: usize) -> Pos {
        let chars = text
            .char_indices()
            .take_while(|&(byte, _)| byte < offset)
            .count();
        Pos {
            index: start.index + chars,
            line: start.line,
            column: start.column.saturating_add(chars as u32),
        }
    }

    fn register_layout(&mut self) -> Result<RegisterLayout> {
        let (text, start) = self.layout_text("a register layout")?;
        RegisterLayout::from_str(&text).map_err(|error| {
            let pos = Self::offset_pos(start, &text, error.position);
            self.error_at(
                pos,
                format!("bad register layout `{text}`: {}", error.message),
            )
        })
    }

    fn shared_layout(&mut self) -> Result<SharedLayout> {
        let (text, start) = self.layout_text("a shared layout")?;
        SharedLayout::from_str(&text).map_err(|error| {
            let pos = Self::offset_pos(start, &text, error.position);
            self.error_at(
                pos,
                format!("bad shared layout `{text}`: {}", error.message),
            )
        })
    }

    // ---------------------------------------------------------------- program

    fn program(&mut self) -> Result<Program> {
        let mut doc = Vec::new();
        loop {
            self.skip_whitespace_only();
            if self.rest_starts_with("///") {
                for _ in 0..3 {
                    self.advance();
                }
                if self.char_at(0) == Some(' ') {
                    self.advance();
                }
                let mut line = String::new();
                while let Some(c) = self.char_at(0).filter(|&c| c != '\n') {
                    line.push(c);
                    self.advance();
                }
                if line.ends_with('\r') {
                    line.pop();
                }
                doc.push(line);
            } else if self.rest_starts_with("//") {
                while self.char_at(0).is_some_and(|c| c != '\n') {
                    self.advance();
                }
            } else {
                break;
            }
        }
        let span = self.here().span();
        self.expect_keyword("program")?;
        let (name, _) = self.name("the program name")?;
        self.expect_punct("(")?;
        let mut params = Vec::new();
        if !self.eat_punct(")")? {
            loop {
                params.push(self.param()?);
                if self.eat_punct(")")? {
                    break;
                }
                if !self.eat_punct(",")? {
                    return Err(self.expected("`,` or `)`"));
                }
            }
        }
        self.expect_keyword("grid")?;
        self.expect_punct("(")?;
        let grid = self.expr_list(")")?;
        self.expect_keyword("threads")?;
        self.expect_punct("(")?;
        let threads = self.small_number("the number of threads")?;
        self.expect_punct(")")?;
        let blocks_per_sm = if self.eat_keyword("blocks_per_sm")? {
            self.expect_punct("(")?;
            let blocks = self.small_number("the number of blocks per multiprocessor")?;
            self.expect_punct(")")?;
            Some(blocks)
        } else if self.peek_tok()?.is_punct("{") {
            None
        } else {
            return Err(self.expected("`blocks_per_sm(N)` or `{`"));
        };
        let body = self.block()?;
        if self.peek_tok()? != Tok::Eof {
            return Err(self.expected("end of input after the program"));
        }
        Ok(Program {
            doc,
            name,
            params,
            grid,
            threads,
            blocks_per_sm,
            body,
            span,
        })
    }

    fn skip_whitespace_only(&mut self) {
        while self.char_at(0).is_some_and(char::is_whitespace) {
            self.advance();
        }
    }

    fn param(&mut self) -> Result<Param> {
        let (name, pos) = self.name("a parameter name")?;
        self.expect_punct(":")?;
        let kind = if self.eat_keyword("ptr")? {
            self.expect_punct("<")?;
            let dtype = self.dtype()?;
            self.expect_punct(">")?;
            ParamKind::Pointer(dtype)
        } else if self.eat_keyword("i32")? {
            let multiple_of = if self.eat_keyword("multiple_of")? {
                Some(self.small_number("a number after `multiple_of`")?)
            } else {
                None
            };
            ParamKind::Int { multiple_of }
        } else {
            return Err(self.expected("a parameter type (`ptr<dtype>` or `i32`)"));
        };
        Ok(Param {
            name,
            kind,
            span: pos.span(),
        })
    }

    // ---------------------------------------------------------------- statements

    fn block(&mut self) -> Result<Vec<Stmt>> {
        self.expect_punct("{")?;
        self.enter()?;
        let mut body = Vec::new();
        while !self.eat_punct("}")? {
            if self.peek_tok()? == Tok::Eof {
                self.leave();
                return Err(self.expected("a statement or `}`"));
            }
            match self.stmt() {
                Ok(stmt) => body.push(stmt),
                Err(error) => {
                    self.leave();
                    return Err(error);
                }
            }
        }
        self.leave();
        Ok(body)
    }

    fn stmt(&mut self) -> Result<Stmt> {
        let (token, pos) = self.peek()?;
        let span = pos.span();
        let kind = match token {
            Tok::Ident(word) if word == "let" => {
                self.lex()?;
                let (name, _) = self.name("a variable name")?;
                self.expect_punct("=")?;
                let value = self.expr()?;
                self.expect_punct(";")?;
                StmtKind::Let { name, value }
            }
            Tok::Ident(word) if word == "for" => {
                self.lex()?;
                let (var, _) = self.name("a loop variable")?;
                self.expect_keyword("in")?;
                let start = self.expr()?;
                self.expect_punct("..")?;
                let end = self.expr()?;
                let step = if self.eat_keyword("step")? {
                    self.expr()?
                } else {
                    Expr::Const(1)
                };
                let unroll = if self.eat_keyword("unroll")? {
                    if matches!(self.peek_tok()?, Tok::Int(_)) {
                        Unroll::Factor(self.small_number("an unroll factor")?)
                    } else {
                        Unroll::Full
                    }
                } else {
                    Unroll::None
                };
                let body = self.block()?;
                StmtKind::For(ForLoop {
                    var,
                    start,
                    end,
                    step,
                    unroll,
                    body,
                })
            }
            Tok::Ident(word) if word == "if" => {
                self.lex()?;
                let cond = self.cond()?;
                let then_body = self.block()?;
                let else_body = if self.eat_keyword("else")? {
                    self.block()?
                } else {
                    Vec::new()
                };
                StmtKind::If {
                    cond,
                    then_body,
                    else_body,
                }
            }
            Tok::Tensor(dst) => {
                self.lex()?;
                self.expect_punct("=")?;
                let inst = self.inst(Some(dst))?;
                self.expect_punct(";")?;
                StmtKind::Inst(inst)
            }
            Tok::Ident(_) => {
                let inst = self.inst(None)?;
                self.expect_punct(";")?;
                StmtKind::Inst(inst)
            }
            _ => return Err(self.expected("a statement")),
        };
        Ok(Stmt { kind, span })
    }

    fn inst(&mut self, dst: Option<String>) -> Result<Inst> {
        let (mnemonic, pos) = match self.peek()? {
            (Tok::Ident(word), pos) => (word, pos),
            _ => return Err(self.expected("an instruction name")),
        };
        let at = |message: String| ParseError {
            line: pos.line,
            column: pos.column,
            message,
        };
        let with_result = |dst: Option<String>| -> Result<String> {
            dst.ok_or_else(|| {
                at(format!(
                    "`{mnemonic}` has a result: write `%name = {mnemonic}(...)`"
                ))
            })
        };
        let without_result = |dst: &Option<String>| -> Result<()> {
            match dst {
                Some(_) => Err(at(format!("`{mnemonic}` has no result"))),
                None => Ok(()),
            }
        };
        let unary = UnaryOp::ALL.into_iter().find(|op| op.name() == mnemonic);
        let binary = BinaryOp::ALL.into_iter().find(|op| op.name() == mnemonic);
        let compare = CmpOp::ALL.into_iter().find(|op| op.name() == mnemonic);
        let reduce = ReduceOp::ALL.into_iter().find(|op| op.name() == mnemonic);
        let known = [
            "alloc_register",
            "alloc_shared",
            "free_shared",
            "view_global",
            "load_global",
            "store_global",
            "load_shared",
            "store_shared",
            "copy_async",
            "commit_group",
            "wait_group",
            "barrier",
            "view",
            "cast",
            "cast_planes",
            "where",
            "dot",
            "print",
        ];
        if unary.is_none()
            && binary.is_none()
            && compare.is_none()
            && reduce.is_none()
            && !known.contains(&mnemonic.as_str())
        {
            return Err(self.error_at(
                pos,
                format!("expected an instruction or a statement, found `{mnemonic}`"),
            ));
        }
        self.lex()?;
        self.expect_punct("(")?;
        let inst = if let Some(op) = unary {
            let dst = with_result(dst)?;
            let src = self.tensor()?;
            Inst::Unary { dst, op, src }
        } else if let Some(op) = binary {
            let dst = with_result(dst)?;
            let lhs = self.operand()?;
            self.expect_punct(",")?;
            let rhs = self.operand()?;
            Inst::Binary { dst, op, lhs, rhs }
        } else if let Some(op) = compare {
            let dst = with_result(dst)?;
            let lhs = self.operand()?;
            self.expect_punct(",")?;
            let rhs = self.operand()?;
            Inst::Compare { dst, op, lhs, rhs }
        } else if let Some(op) = reduce {
            let dst = with_result(dst)?;
            let src = self.tensor()?;
            self.expect_punct(",")?;
            let dim = self.small_number("a dimension")?;
            Inst::Reduce { dst, op, src, dim }
        } else {
            match mnemonic.as_str() {
                "alloc_register" => {
                    let dst = with_result(dst)?;
                    let dtype = self.dtype()?;
                    self.expect_punct(",")?;
                    let layout = self.register_layout()?;
                    let init = if self.eat_punct(",")? {
                        Some(self.literal()?)
                    } else {
                        None
                    };
                    Inst::AllocRegister {
                        dst,
                        dtype,
                        layout,
                        init,
                    }
                }
                "alloc_shared" => {
                    let dst = with_result(dst)?;
                    let dtype = self.dtype()?;
                    self.expect_punct(",")?;
                    let layout = self.shared_layout()?;
                    Inst::AllocShared { dst, dtype, layout }
                }
                "free_shared" => {
                    without_result(&dst)?;
                    Inst::FreeShared {
                        tensor: self.tensor()?,
                    }
                }
                "view_global" => {
                    let dst = with_result(dst)?;
                    let (ptr, _) = self.name("a pointer parameter")?;
                    self.expect_punct(",")?;
                    self.expect_punct("[")?;
                    let shape = self.expr_list("]")?;
                    self.expect_punct(",")?;
                    self.expect_punct("[")?;
                    let strides = self.expr_list("]")?;
                    Inst::ViewGlobal {
                        dst,
                        ptr,
                        shape,
                        strides,
                    }
                }
                "load_global" | "load_shared" => {
                    let dst = with_result(dst)?;
                    let (src, offsets) = self.indexed()?;
                    self.expect_punct(",")?;
                    let layout = self.register_layout()?;
                    if mnemonic == "load_global" {
                        Inst::LoadGlobal {
                            dst,
                            src,
                            offsets,
                            layout,
                        }
                    } else {
                        Inst::LoadShared {
                            dst,
                            src,
                            offsets,
                            layout,
                        }
                    }
                }
                "store_global" | "store_shared" => {
                    without_result(&dst)?;
                    let (dst, offsets) = self.indexed()?;
                    self.expect_punct(",")?;
                    let src = self.tensor()?;
                    if mnemonic == "store_global" {
                        Inst::StoreGlobal { dst, offsets, src }
                    } else {
                        Inst::StoreShared { dst, offsets, src }
                    }
                }
                "copy_async" => {
                    without_result(&dst)?;
                    let dst = self.tensor()?;
                    self.expect_punct(",")?;
                    let (src, offsets) = self.indexed()?;
                    Inst::CopyAsync { dst, src, offsets }
                }
                "commit_group" => {
                    without_result(&dst)?;
                    Inst::CommitGroup
                }
                "barrier" => {
                    without_result(&dst)?;
                    Inst::Barrier
                }
                "wait_group" => {
                    without_result(&dst)?;
                    Inst::WaitGroup {
                        pending: self.small_number("the number of pending groups")?,
                    }
                }
                "view" => {
                    let dst = with_result(dst)?;
                    let src = self.tensor()?;
                    self.expect_punct(",")?;
                    let dtype = self.dtype()?;
                    self.expect_punct(",")?;
                    let layout = self.register_layout()?;
                    let offset = if self.eat_punct(",")? {
                        Some(self.small_number("the bit offset")?)
                    } else {
                        None
                    };
                    Inst::View {
                        dst,
                        src,
                        dtype,
                        layout,
                        offset,
                    }
                }
                "cast" => {
                    let dst = with_result(dst)?;
                    let src = self.tensor()?;
                    self.expect_punct(",")?;
                    let dtype = self.dtype()?;
                    let layout = self.optional_layout()?;
                    Inst::Cast {
                        dst,
                        src,
                        dtype,
                        layout,
                    }
                }
                "cast_planes" => {
                    let dst = with_result(dst)?;
                    // One or more planes, then the code type and the result type.
                    let mut planes = vec![self.tensor()?];
                    self.expect_punct(",")?;
                    while matches!(self.peek_tok()?, Tok::Tensor(_)) {
                        planes.push(self.tensor()?);
                        self.expect_punct(",")?;
                    }
                    let code = self.dtype()?;
                    self.expect_punct(",")?;
                    let dtype = self.dtype()?;
                    let layout = self.optional_layout()?;
                    Inst::CastPlanes {
                        dst,
                        planes,
                        code,
                        dtype,
                        layout,
                    }
                }
                "where" => {
                    let dst = with_result(dst)?;
                    let cond = self.tensor()?;
                    self.expect_punct(",")?;
                    let then = self.operand()?;
                    self.expect_punct(",")?;
                    let otherwise = self.operand()?;
                    Inst::Where {
                        dst,
                        cond,
                        then,
                        otherwise,
                    }
                }
                "dot" => {
                    let dst = with_result(dst)?;
                    let a = self.tensor()?;
                    self.expect_punct(",")?;
                    let b = self.tensor()?;
                    self.expect_punct(",")?;
                    let c = self.tensor()?;
                    Inst::Dot { dst, a, b, c }
                }
                _ => {
                    // "print", the only name left in `known`.
                    without_result(&dst)?;
                    Inst::Print {
                        src: self.tensor()?,
                    }
                }
            }
        };
        self.expect_punct(")")?;
        Ok(inst)
    }

    /// `%name[e, e, ...]`.
    fn indexed(&mut self) -> Result<(String, Vec<Expr>)> {
        let name = self.tensor()?;
        self.expect_punct("[")?;
        let offsets = self.expr_list("]")?;
        Ok((name, offsets))
    }

    /// Expressions separated by `,` up to `close` (consumed); may be empty.
    fn expr_list(&mut self, close: &str) -> Result<Vec<Expr>> {
        let mut items = Vec::new();
        if self.eat_punct(close)? {
            return Ok(items);
        }
        loop {
            items.push(self.expr()?);
            if self.eat_punct(close)? {
                return Ok(items);
            }
            if !self.eat_punct(",")? {
                return Err(self.expected(&format!("`,` or `{close}`")));
            }
        }
    }

    /// A float literal: `1.5`, `-2e-3`, `inf`, `-inf`, `nan`. Returns `None` (consuming
    /// nothing) if the next tokens are not one.
    fn float_literal(&mut self) -> Result<Option<f64>> {
        let saved = self.pos;
        let negative = self.eat_punct("-")?;
        let value = match self.peek_tok()? {
            Tok::Float(value) => value,
            Tok::Ident(word) if word == "inf" => f64::INFINITY,
            Tok::Ident(word) if word == "nan" && !negative => f64::NAN,
            _ => {
                self.pos = saved;
                return Ok(None);
            }
        };
        self.lex()?;
        Ok(Some(if negative { -value } else { value }))
    }

    fn operand(&mut self) -> Result<Operand> {
        if let Tok::Tensor(name) = self.peek_tok()? {
            self.lex()?;
            return Ok(Operand::Tensor(name));
        }
        if let Some(value) = self.float_literal()? {
            return Ok(Operand::Float(FloatLit(value)));
        }
        Ok(Operand::Scalar(self.expr()?))
    }

    fn literal(&mut self) -> Result<Literal> {
        if let Some(value) = self.float_literal()? {
            return Ok(Literal::Float(FloatLit(value)));
        }
        let negative = self.eat_punct("-")?;
        match self.peek()? {
            (Tok::Int(digits), pos) => {
                self.lex()?;
                let text = if negative {
                    format!("-{digits}")
                } else {
                    digits
                };
                text.parse::<i64>()
                    .map(Literal::Int)
                    .map_err(|_| self.error_at(pos, format!("`{text}` does not fit 64 bits")))
            }
            _ => Err(self.expected("a number, `inf` or `nan`")),
        }
    }

    // ---------------------------------------------------------------- expressions

    fn expr(&mut self) -> Result<Expr> {
        self.enter()?;
        let result = self.additive();
        self.leave();
        result
    }

    fn additive(&mut self) -> Result<Expr> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek_tok()? {
                Tok::Punct("+") => ExprOp::Add,
                Tok::Punct("-") => ExprOp::Sub,
                _ => return Ok(lhs),
            };
            self.lex()?;
            let rhs = self.multiplicative()?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr> {
        let mut lhs = self.primary()?;
        loop {
            let op = match self.peek_tok()? {
                Tok::Punct("*") => ExprOp::Mul,
                Tok::Punct("/") => ExprOp::Div,
                Tok::Punct("%") => ExprOp::Rem,
                _ => return Ok(lhs),
            };
            self.lex()?;
            let rhs = self.primary()?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
    }

    fn int_const(&mut self, digits: &str, negative: bool, pos: Pos) -> Result<Expr> {
        let text = if negative {
            format!("-{digits}")
        } else {
            digits.to_string()
        };
        text.parse::<i32>()
            .map(Expr::Const)
            .map_err(|_| self.error_at(pos, format!("`{text}` does not fit i32")))
    }

    fn primary(&mut self) -> Result<Expr> {
        let (token, pos) = self.peek()?;
        match token {
            Tok::Int(digits) => {
                self.lex()?;
                self.int_const(&digits, false, pos)
            }
            Tok::Punct("-") => {
                self.lex()?;
                match self.peek()? {
                    (Tok::Int(digits), _) => {
                        self.lex()?;
                        self.int_const(&digits, true, pos)
                    }
                    _ => Err(self.expected("a number after `-` (write `0 - x` to negate)")),
                }
            }
            Tok::Punct("(") => {
                self.lex()?;
                let inner = self.expr()?;
                self.expect_punct(")")?;
                Ok(inner)
            }
            Tok::Ident(word) => match word.as_str() {
                "block" => {
                    self.lex()?;
                    self.expect_punct(".")?;
                    let axis = match self.peek_tok()? {
                        Tok::Ident(axis) if axis == "x" => Axis::X,
                        Tok::Ident(axis) if axis == "y" => Axis::Y,
                        Tok::Ident(axis) if axis == "z" => Axis::Z,
                        _ => return Err(self.expected("`x`, `y` or `z`")),
                    };
                    self.lex()?;
                    Ok(Expr::BlockIdx(axis))
                }
                "min" | "max" | "ceil_div" => {
                    let op = match word.as_str() {
                        "min" => ExprOp::Min,
                        "max" => ExprOp::Max,
                        _ => ExprOp::CeilDiv,
                    };
                    self.lex()?;
                    self.expect_punct("(")?;
                    let lhs = self.expr()?;
                    self.expect_punct(",")?;
                    let rhs = self.expr()?;
                    self.expect_punct(")")?;
                    Ok(Expr::Binary(op, Box::new(lhs), Box::new(rhs)))
                }
                _ if KEYWORDS.contains(&word.as_str()) => Err(self.error_at(
                    pos,
                    format!("expected an expression, found the keyword `{word}`"),
                )),
                _ => {
                    self.lex()?;
                    Ok(Expr::Var(word))
                }
            },
            _ => Err(self.expected("an expression")),
        }
    }

    // ---------------------------------------------------------------- conditions

    fn cond(&mut self) -> Result<Cond> {
        self.enter()?;
        let result = self.or_cond();
        self.leave();
        result
    }

    fn or_cond(&mut self) -> Result<Cond> {
        let mut lhs = self.and_cond()?;
        while self.eat_punct("||")? {
            let rhs = self.and_cond()?;
            lhs = Cond::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn and_cond(&mut self) -> Result<Cond> {
        let mut lhs = self.not_cond()?;
        while self.eat_punct("&&")? {
            let rhs = self.not_cond()?;
            lhs = Cond::And(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn not_cond(&mut self) -> Result<Cond> {
        if self.eat_punct("!")? {
            self.enter()?;
            let inner = self.not_cond();
            self.leave();
            return Ok(Cond::Not(Box::new(inner?)));
        }
        self.atom_cond()
    }

    fn atom_cond(&mut self) -> Result<Cond> {
        let token = self.peek_tok()?;
        if token.is_ident("true") || token.is_ident("false") {
            self.lex()?;
            return Ok(Cond::Bool(token.is_ident("true")));
        }
        let saved = self.pos;
        let comparison_error = match self.comparison() {
            Ok(cond) => return Ok(cond),
            Err(error) => error,
        };
        self.pos = saved;
        if !token.is_punct("(") {
            return Err(comparison_error);
        }
        // `( cond )`: the comparison failed, so the parentheses may hold a condition.
        self.lex()?;
        match self.cond().and_then(|cond| {
            self.expect_punct(")")?;
            Ok(cond)
        }) {
            Ok(cond) => Ok(cond),
            // Report whichever reading got further.
            Err(error)
                if (error.line, error.column)
                    >= (comparison_error.line, comparison_error.column) =>
            {
                Err(error)
            }
            Err(_) => Err(comparison_error),
        }
    }

    fn comparison(&mut self) -> Result<Cond> {
        let lhs = self.expr()?;
        let op = match self.peek_tok()? {
            Tok::Punct("<") => CmpOp::Lt,
            Tok::Punct("<=") => CmpOp::Le,
            Tok::Punct(">") => CmpOp::Gt,
            Tok::Punct(">=") => CmpOp::Ge,
            Tok::Punct("==") => CmpOp::Eq,
            Tok::Punct("!=") => CmpOp::Ne,
            _ => return Err(self.expected("a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`)")),
        };
        self.lex()?;
        let rhs = self.expr()?;
        Ok(Cond::Compare(op, lhs, rhs))
    }
}
