//! How far a program's global views reach into each pointer argument, so that a launch whose
//! buffer is too small is refused before it runs (the interpreter refuses the same programs when
//! they touch an element outside a buffer; a GPU would read or write past it).
//!
//! What this module promises: [`view_extents`] lists every `view_global` of a program with its
//! sizes and strides written over the integer parameters only (`let` variables are substituted
//! by their definitions); a view whose sizes or strides depend on a loop variable or a block
//! index is marked [`ViewExtent::Unknown`] and not checked. [`ViewExtent::bytes`] is the number of
//! bytes from the pointer to the last element the view can reach: the view's whole box, not only
//! the elements a run touches.

use std::collections::HashMap;

use anybit_vm::{Expr, Inst, ParamKind, Program, Stmt, StmtKind};

use super::scalar::{eval, EvalError};

/// One `view_global` of a program.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewExtent {
    /// Sizes and strides over the integer parameters.
    Known {
        /// The pointer parameter.
        pointer: String,
        /// Bits of one element.
        bits: u32,
        sizes: Vec<Expr>,
        strides: Vec<Expr>,
    },
    /// The view depends on a loop variable or a block index.
    Unknown { pointer: String },
}

/// What the view of a pointer reaches, for given integer arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The view holds no element (a size is 0 or negative).
    Empty,
    /// The lowest and highest element index the view can address.
    Elements { lowest: i64, highest: i64 },
}

impl ViewExtent {
    /// The pointer parameter the view is of.
    pub fn pointer(&self) -> &str {
        match self {
            ViewExtent::Known { pointer, .. } | ViewExtent::Unknown { pointer } => pointer,
        }
    }

    /// The elements the view reaches for the integer arguments `lookup` gives; `None` for an
    /// unknown view.
    pub fn reach(&self, lookup: &dyn Fn(&str) -> Option<i32>) -> Option<Result<Reach, EvalError>> {
        let ViewExtent::Known { sizes, strides, .. } = self else {
            return None;
        };
        let result = (|| {
            let (mut lowest, mut highest) = (0i64, 0i64);
            for (size, stride) in sizes.iter().zip(strides) {
                let size = eval(size, lookup)? as i64;
                if size <= 0 {
                    return Ok(Reach::Empty);
                }
                let stride = eval(stride, lookup)? as i64;
                let span = (size - 1) * stride;
                if span < 0 {
                    lowest += span;
                } else {
                    highest += span;
                }
            }
            Ok(Reach::Elements { lowest, highest })
        })();
        Some(result)
    }

    /// Bits of one element of the view (0 for an unknown view).
    pub fn bits(&self) -> u32 {
        match self {
            ViewExtent::Known { bits, .. } => *bits,
            ViewExtent::Unknown { .. } => 0,
        }
    }
}

/// Every `view_global` of `program`, in program order.
pub fn view_extents(program: &Program) -> Vec<ViewExtent> {
    let pointers: HashMap<&str, u32> = program
        .params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Pointer(dtype) => Some((p.name.as_str(), dtype.bits())),
            ParamKind::Int { .. } => None,
        })
        .collect();
    let mut walk = Walk {
        pointers,
        lets: HashMap::new(),
        out: Vec::new(),
    };
    walk.block(&program.body);
    walk.out
}

struct Walk<'p> {
    pointers: HashMap<&'p str, u32>,
    /// `let` variables defined over integer parameters only, by their substituted value;
    /// `None` for those that depend on a loop variable or a block index.
    lets: HashMap<String, Option<Expr>>,
    out: Vec<ViewExtent>,
}

impl Walk<'_> {
    fn block(&mut self, stmts: &[Stmt]) {
        for stmt in stmts {
            match &stmt.kind {
                StmtKind::Let { name, value } => {
                    let value = self.substitute(value);
                    self.lets.insert(name.clone(), value);
                }
                StmtKind::For(lp) => {
                    // The loop variable is unknown inside the body.
                    self.lets.insert(lp.var.clone(), None);
                    self.block(&lp.body);
                }
                StmtKind::If {
                    then_body,
                    else_body,
                    ..
                } => {
                    self.block(then_body);
                    self.block(else_body);
                }
                StmtKind::Inst(Inst::ViewGlobal {
                    ptr,
                    shape,
                    strides,
                    ..
                }) => {
                    let Some(&bits) = self.pointers.get(ptr.as_str()) else {
                        continue;
                    };
                    let sizes: Option<Vec<Expr>> =
                        shape.iter().map(|e| self.substitute(e)).collect();
                    let strides: Option<Vec<Expr>> =
                        strides.iter().map(|e| self.substitute(e)).collect();
                    self.out.push(match (sizes, strides) {
                        (Some(sizes), Some(strides)) => ViewExtent::Known {
                            pointer: ptr.clone(),
                            bits,
                            sizes,
                            strides,
                        },
                        _ => ViewExtent::Unknown {
                            pointer: ptr.clone(),
                        },
                    });
                }
                StmtKind::Inst(_) => {}
            }
        }
    }

    /// `e` over integer parameters only, or `None` when it depends on a loop variable or a
    /// block index.
    fn substitute(&self, e: &Expr) -> Option<Expr> {
        match e {
            Expr::Const(_) => Some(e.clone()),
            Expr::BlockIdx(_) => None,
            Expr::Var(name) => match self.lets.get(name) {
                Some(value) => value.clone(),
                // A parameter (the verifier saw every name defined).
                None => Some(e.clone()),
            },
            Expr::Binary(op, a, b) => Some(Expr::Binary(
                *op,
                Box::new(self.substitute(a)?),
                Box::new(self.substitute(b)?),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(values: &'a [(&'a str, i32)]) -> impl Fn(&str) -> Option<i32> + 'a {
        move |name| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    #[test]
    fn lets_are_substituted_and_loop_views_are_unknown() {
        let program = anybit_vm::parse(
            "program p(a: ptr<u4>, b: ptr<f16>, n: i32, k: i32)
             grid(1) threads(32) {
                 let rows = ceil_div(n, 16);
                 %ga = view_global(a, [rows, k * 2], [k * 2, 1]);
                 %gt = view_global(b, [k, n], [1, k]);
                 for i in 0..n {
                     %gl = view_global(b, [i + 1], [1]);
                 }
                 %gb = view_global(b, [block.x + 1], [1]);
             }",
        )
        .unwrap();
        let views = view_extents(&program);
        assert_eq!(views.len(), 4);
        let values = [("n", 40), ("k", 8)];
        let reach = |v: &ViewExtent| v.reach(&lookup(&values));
        // rows = 3: (3 - 1) * 16 + (16 - 1) = 47.
        assert_eq!(
            reach(&views[0]),
            Some(Ok(Reach::Elements {
                lowest: 0,
                highest: 47
            }))
        );
        assert_eq!(views[0].bits(), 4);
        // [k, n] with strides [1, k]: (8 - 1) + (40 - 1) * 8 = 319.
        assert_eq!(
            reach(&views[1]),
            Some(Ok(Reach::Elements {
                lowest: 0,
                highest: 319
            }))
        );
        assert_eq!(reach(&views[2]), None);
        assert_eq!(reach(&views[3]), None);
        assert_eq!(views[3].pointer(), "b");
    }

    #[test]
    fn negative_strides_reach_below_the_pointer_and_empty_views_nothing() {
        let program = anybit_vm::parse(
            "program p(a: ptr<f32>, n: i32) grid(1) threads(32) {
                 %g = view_global(a, [n, 4], [-4, 1]);
             }",
        )
        .unwrap();
        let views = view_extents(&program);
        assert_eq!(
            views[0].reach(&lookup(&[("n", 3)])),
            Some(Ok(Reach::Elements {
                lowest: -8,
                highest: 3
            }))
        );
        assert_eq!(views[0].reach(&lookup(&[("n", 0)])), Some(Ok(Reach::Empty)));
    }
}
