//! What the verifier learned about a program it accepted: [`Verified`].
//!
//! What this module promises:
//! - A [`Verified`] exists only for a program that passed [`crate::verify()`]; it borrows the
//!   program, so the program cannot change (or move) while the facts about it are in use.
//! - For every statement it records a [`StmtInfo`]: the statement's position in program order,
//!   the tensor it defines or overwrites with that tensor's [`TensorType`], and for elementwise
//!   instructions (`add` … `max`, `lt` … `ne`, `where`) the result layout and how each operand
//!   maps onto it ([`Elementwise`]). Consumers look these up instead of deriving them again.
//! - Statements are keyed by their address inside the borrowed program: [`Verified::info`]
//!   takes a `&Stmt` reached by walking [`Verified::program`] and finds its facts in constant
//!   time; a statement of any other program (even an equal clone) finds nothing. Program order
//!   is a pre-order walk: the body in order, a statement before the statements nested in it,
//!   `then` before `else`; [`Verified::statements`] lists the statements in that order.
//!
//! The shape follows naga's `ModuleInfo`: validation returns the analysis a backend needs, so
//! that no backend re-derives it.

use std::collections::HashMap;

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;

use crate::ir::{Program, Stmt, TensorType};

/// A program that [`crate::verify()`] accepted, with what the verifier learned about it.
#[derive(Clone, Debug)]
pub struct Verified<'p> {
    program: &'p Program,
    /// Every statement with its facts, in program order.
    statements: Vec<(&'p Stmt, StmtInfo)>,
    /// Statement address → position in `statements`.
    positions: HashMap<usize, usize>,
}

/// The facts about one statement.
#[derive(Clone, Debug, PartialEq)]
pub struct StmtInfo {
    /// The statement's position in program order (0 for the first statement of the body).
    pub index: usize,
    /// The tensor the statement defines or overwrites, if any (instructions with a destination
    /// only; `let` and loop variables are scalars).
    pub defines: Option<Definition>,
    /// How the operands of an elementwise instruction map onto its result; `None` for other
    /// statements.
    pub elementwise: Option<Elementwise>,
}

/// The tensor an instruction defines or overwrites.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    /// The variable's name (without `%`).
    pub name: String,
    /// Its type after the instruction: for a register result, its dtype and layout (the layout
    /// of a reduction's result is the source layout reduced along `dim`).
    pub ty: TensorType,
    /// True when the instruction overwrites a visible register tensor (of this same type)
    /// instead of defining a new variable.
    pub overwrite: bool,
}

/// The operands of an elementwise instruction, aligned with its result.
#[derive(Clone, Debug, PartialEq)]
pub struct Elementwise {
    /// The element type the operation reads: the dtype of the value operands (for a
    /// comparison the result is `u1`; for `where` the condition is `u1` and the result has
    /// this dtype).
    pub dtype: DType,
    /// The result's layout: the layout of every tensor operand that has the result's shape.
    pub layout: RegisterLayout,
    /// One entry per operand, in argument order (for `where`: the condition, `then`,
    /// `otherwise`).
    pub operands: Vec<ElementwiseOperand>,
}

/// How one operand of an elementwise instruction maps onto the result.
#[derive(Clone, Debug, PartialEq)]
pub enum ElementwiseOperand {
    /// A scalar expression or float literal: one value for every element.
    Scalar,
    /// A tensor with the result's shape and therefore its layout: each thread reads its own
    /// local element `l` for the result's local element `l`.
    Full,
    /// A tensor of size 1 along `dims` (the dimensions, in increasing order, where the result
    /// is larger) and of the result's size elsewhere. For each result element a thread holds,
    /// it holds the operand element with the `dims` coordinates set to 0 (the verifier checked
    /// this for every thread and element).
    Broadcast {
        /// The broadcast dimensions; never empty.
        dims: Vec<usize>,
        /// The operand's layout (boxed: a layout is large, and most operands are full).
        layout: Box<RegisterLayout>,
    },
}

impl StmtInfo {
    /// The layout of the register tensor the statement defines or overwrites (the result
    /// layout of an elementwise instruction, a reduction, a load, …).
    pub fn result_layout(&self) -> Option<&RegisterLayout> {
        match &self.defines {
            Some(Definition {
                ty: TensorType::Register { layout, .. },
                ..
            }) => Some(layout),
            _ => None,
        }
    }
}

impl<'p> Verified<'p> {
    /// Assembles the verifier's result; `statements` are in program order.
    pub(crate) fn new(program: &'p Program, statements: Vec<(&'p Stmt, StmtInfo)>) -> Self {
        let positions = statements
            .iter()
            .enumerate()
            .map(|(position, (stmt, _))| (address(stmt), position))
            .collect();
        Verified {
            program,
            statements,
            positions,
        }
    }

    /// The verified program.
    pub fn program(&self) -> &'p Program {
        self.program
    }

    /// The facts about `stmt`, a statement of [`Verified::program`]; `None` for a statement
    /// of another program.
    pub fn info(&self, stmt: &Stmt) -> Option<&StmtInfo> {
        let position = *self.positions.get(&address(stmt))?;
        self.statements.get(position).map(|(_, info)| info)
    }

    /// Every statement with its facts, in program order.
    pub fn statements(&self) -> impl ExactSizeIterator<Item = (&'p Stmt, &StmtInfo)> + '_ {
        self.statements.iter().map(|(stmt, info)| (*stmt, info))
    }
}

fn address(stmt: &Stmt) -> usize {
    std::ptr::from_ref(stmt) as usize
}
