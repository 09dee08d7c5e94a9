//! Scalar expressions: printing as C, evaluation on the host, and divisibility facts.
//!
//! What this module promises:
//! - [`expr_c`] prints an expression as C `int` arithmetic with the semantics of `docs/vm.md`
//!   (truncating division, `ceil_div` exact for a positive divisor) for every input that does
//!   not overflow.
//! - [`eval`] evaluates an expression on the host with checked `i32` arithmetic (used for the
//!   grid), reporting overflow and division by zero as errors.
//! - [`Facts::divisor`] returns a number that provably divides the value of the expression in
//!   every execution (0 when the value is provably 0); [`Facts::constant`] the value when it is
//!   a compile-time constant.

use std::collections::HashMap;

use anybit_vm::{Axis, Expr, ExprOp};

/// Largest divisor kept; larger products are reduced to a divisor of themselves.
const CAP: u64 = 1 << 40;

pub(crate) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn cap(x: u64) -> u64 {
    if x > CAP {
        gcd(x, CAP)
    } else {
        x
    }
}

/// What is known about scalar variables at a point of the program.
#[derive(Clone, Debug, Default)]
pub(crate) struct Facts {
    /// Known divisor of each variable (0: the variable is 0).
    divisors: HashMap<String, u64>,
    /// Compile-time values.
    constants: HashMap<String, i64>,
}

impl Facts {
    pub fn set_divisor(&mut self, name: &str, divisor: u64) {
        self.divisors.insert(name.to_string(), cap(divisor));
    }

    pub fn set_constant(&mut self, name: &str, value: i64) {
        self.constants.insert(name.to_string(), value);
    }

    /// Forgets everything about `name` (when it goes out of scope).
    pub fn forget(&mut self, name: &str) {
        self.divisors.remove(name);
        self.constants.remove(name);
    }

    /// The value of `e` when it is a compile-time constant that fits `i32` all the way.
    pub fn constant(&self, e: &Expr) -> Option<i64> {
        let v = match e {
            Expr::Const(c) => *c as i64,
            Expr::Var(name) => *self.constants.get(name)?,
            Expr::BlockIdx(_) => return None,
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.constant(a)?, self.constant(b)?);
                match op {
                    ExprOp::Add => a + b,
                    ExprOp::Sub => a - b,
                    ExprOp::Mul => a * b,
                    ExprOp::Div => {
                        if b == 0 {
                            return None;
                        }
                        a / b
                    }
                    ExprOp::Rem => {
                        if b == 0 {
                            return None;
                        }
                        a % b
                    }
                    ExprOp::Min => a.min(b),
                    ExprOp::Max => a.max(b),
                    ExprOp::CeilDiv => {
                        if b <= 0 {
                            return None;
                        }
                        a.div_euclid(b) + i64::from(a.rem_euclid(b) != 0)
                    }
                }
            }
        };
        (i32::MIN as i64..=i32::MAX as i64)
            .contains(&v)
            .then_some(v)
    }

    /// A number that divides the value of `e` (0 when `e` is provably 0).
    pub fn divisor(&self, e: &Expr) -> u64 {
        if let Some(c) = self.constant(e) {
            return cap(c.unsigned_abs());
        }
        match e {
            Expr::Const(c) => cap(c.unsigned_abs() as u64),
            Expr::Var(name) => self.divisors.get(name).copied().unwrap_or(1),
            Expr::BlockIdx(_) => 1,
            Expr::Binary(op, a, b) => {
                let (da, db) = (self.divisor(a), self.divisor(b));
                match op {
                    ExprOp::Add | ExprOp::Sub | ExprOp::Min | ExprOp::Max => gcd(da, db),
                    ExprOp::Mul => {
                        if da == 0 || db == 0 {
                            0
                        } else {
                            cap(da.saturating_mul(db))
                        }
                    }
                    ExprOp::Div => match self.constant(b) {
                        Some(c) if c != 0 && da != 0 && da % c.unsigned_abs() == 0 => {
                            da / c.unsigned_abs()
                        }
                        Some(c) if c != 0 && da == 0 => 0,
                        _ => 1,
                    },
                    ExprOp::Rem => match self.constant(b) {
                        Some(c) if c != 0 => gcd(da, c.unsigned_abs()),
                        _ => 1,
                    },
                    ExprOp::CeilDiv => 1,
                }
            }
        }
    }
}

/// How C names a scalar variable of the program.
pub(crate) fn scalar_name(name: &str) -> String {
    format!("s_{name}")
}

/// `e` as a C `int` expression.
pub(crate) fn expr_c(e: &Expr) -> String {
    expr_prec(e, 0)
}

fn expr_prec(e: &Expr, parent: u8) -> String {
    match e {
        Expr::Const(c) => {
            if *c < 0 {
                if *c == i32::MIN {
                    "(-2147483647 - 1)".to_string()
                } else {
                    format!("({c})")
                }
            } else {
                c.to_string()
            }
        }
        Expr::Var(name) => scalar_name(name),
        Expr::BlockIdx(axis) => format!("(int)blockIdx.{}", axis.name()),
        Expr::Binary(op, a, b) => {
            let (prec, sym) = match op {
                ExprOp::Add => (1, "+"),
                ExprOp::Sub => (1, "-"),
                ExprOp::Mul => (2, "*"),
                ExprOp::Div => (2, "/"),
                ExprOp::Rem => (2, "%"),
                ExprOp::Min => {
                    return format!("min({}, {})", expr_prec(a, 0), expr_prec(b, 0));
                }
                ExprOp::Max => {
                    return format!("max({}, {})", expr_prec(a, 0), expr_prec(b, 0));
                }
                ExprOp::CeilDiv => {
                    return format!("ab_ceil_div({}, {})", expr_prec(a, 0), expr_prec(b, 0));
                }
            };
            // Left-associative: the right operand needs brackets at equal precedence.
            let text = format!("{} {sym} {}", expr_prec(a, prec), expr_prec(b, prec + 1));
            if prec < parent {
                format!("({text})")
            } else {
                text
            }
        }
    }
}

/// A scalar expression could not be evaluated on the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("unknown integer parameter `{0}`")]
    Unknown(String),
    #[error("`{0}` overflows i32")]
    Overflow(String),
    #[error("division by zero in `{0}`")]
    DivisionByZero(String),
    #[error("ceil_div by a non-positive number in `{0}`")]
    CeilDivByNonPositive(String),
    #[error("`block.{0}` cannot be used here")]
    BlockIndex(&'static str),
}

/// Evaluates `e` with checked `i32` arithmetic; `lookup` gives the values of variables.
pub(crate) fn eval(e: &Expr, lookup: &dyn Fn(&str) -> Option<i32>) -> Result<i32, EvalError> {
    match e {
        Expr::Const(c) => Ok(*c),
        Expr::Var(name) => lookup(name).ok_or_else(|| EvalError::Unknown(name.clone())),
        Expr::BlockIdx(axis) => Err(EvalError::BlockIndex(match axis {
            Axis::X => "x",
            Axis::Y => "y",
            Axis::Z => "z",
        })),
        Expr::Binary(op, a, b) => {
            let (x, y) = (eval(a, lookup)?, eval(b, lookup)?);
            let text = || expr_c(e);
            let overflow = || EvalError::Overflow(text());
            match op {
                ExprOp::Add => x.checked_add(y).ok_or_else(overflow),
                ExprOp::Sub => x.checked_sub(y).ok_or_else(overflow),
                ExprOp::Mul => x.checked_mul(y).ok_or_else(overflow),
                ExprOp::Div | ExprOp::Rem if y == 0 => Err(EvalError::DivisionByZero(text())),
                ExprOp::Div => x.checked_div(y).ok_or_else(overflow),
                ExprOp::Rem => x.checked_rem(y).ok_or_else(overflow),
                ExprOp::Min => Ok(x.min(y)),
                ExprOp::Max => Ok(x.max(y)),
                ExprOp::CeilDiv => {
                    if y <= 0 {
                        return Err(EvalError::CeilDivByNonPositive(text()));
                    }
                    let q = x.div_euclid(y) as i64 + i64::from(x.rem_euclid(y) != 0);
                    i32::try_from(q).map_err(|_| overflow())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anybit_vm::builder::var;

    #[test]
    fn divisors_follow_the_arithmetic() {
        let mut facts = Facts::default();
        facts.set_divisor("k", 8);
        facts.set_divisor("k0", 64);
        assert_eq!(facts.divisor(&(var("k0") + 32)), 32);
        assert_eq!(facts.divisor(&(var("k") * 4)), 32);
        assert_eq!(facts.divisor(&(Expr::BlockIdx(Axis::X) * 1024)), 1024);
        assert_eq!(facts.divisor(&(var("k0") / 16)), 4);
        assert_eq!(facts.divisor(&Expr::Const(0)), 0);
        facts.set_constant("c", 12);
        assert_eq!(facts.constant(&(var("c") * 2 + 1)), Some(25));
    }

    #[test]
    fn printing_keeps_precedence() {
        let e = (var("a") - (var("b") - var("c"))) * 2;
        assert_eq!(expr_c(&e), "(s_a - (s_b - s_c)) * 2");
    }

    #[test]
    fn evaluation_is_checked() {
        let e = var("n").ceil_div(64);
        let lookup = |n: &str| (n == "n").then_some(130);
        assert_eq!(eval(&e, &lookup), Ok(3));
        let lookup = |n: &str| (n == "n").then_some(-130);
        assert_eq!(eval(&e, &lookup), Ok(-2));
        let big = var("n") * 1_000_000;
        let lookup = |_: &str| Some(1_000_000);
        assert!(matches!(eval(&big, &lookup), Err(EvalError::Overflow(_))));
    }
}
