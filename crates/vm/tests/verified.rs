//! What `verify` records about the programs it accepts: the type of every tensor a statement
//! defines or overwrites, the operand maps of elementwise instructions, reduction layouts, and
//! the lookup of statements by address in program order.

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;
use anybit_vm::{
    examples, parse, verify, Definition, ElementwiseOperand, Program, Stmt, StmtKind, TensorType,
};

fn program(body: &str) -> Program {
    let text = format!("program p(a: ptr<f32>, n: i32)\ngrid(1)\nthreads(32)\n{{\n{body}}}\n");
    parse(&text).unwrap_or_else(|error| panic!("parse: {error}\n{text}"))
}

fn layout(text: &str) -> RegisterLayout {
    text.parse()
        .unwrap_or_else(|error| panic!("layout {text}: {error}"))
}

fn register(dtype: DType, text: &str) -> TensorType {
    TensorType::Register {
        dtype,
        layout: layout(text),
    }
}

/// Every statement of `body`, nested ones included, in program order (pre-order).
fn walk<'p>(body: &'p [Stmt], out: &mut Vec<&'p Stmt>) {
    for stmt in body {
        out.push(stmt);
        match &stmt.kind {
            StmtKind::For(lp) => walk(&lp.body, out),
            StmtKind::If {
                then_body,
                else_body,
                ..
            } => {
                walk(then_body, out);
                walk(else_body, out);
            }
            StmtKind::Let { .. } | StmtKind::Inst(_) => {}
        }
    }
}

#[test]
fn a_tensor_overwritten_in_a_loop_keeps_its_recorded_type() {
    let p = program(
        "    %acc = alloc_register(f32, spatial(8,4), 0.0);\n\
         \x20   for i in 0..n {\n\
         \x20       %x = alloc_register(f32, spatial(8,4), 1.0);\n\
         \x20       %acc = add(%acc, %x);\n\
         \x20   }\n\
         \x20   %s = reduce_sum(%acc, 1);\n",
    );
    let verified = verify(&p).expect("verifies");
    let mut stmts = Vec::new();
    walk(&p.body, &mut stmts);
    assert_eq!(stmts.len(), 5);
    let acc = register(DType::F32, "spatial(8,4)");
    let expected = [
        Some(("acc", &acc, false)),
        None,
        Some(("x", &acc, false)),
        Some(("acc", &acc, true)),
        None, // checked below: the reduction's layout
    ];
    for (index, (stmt, expected)) in stmts.iter().zip(expected).enumerate() {
        let info = verified.info(stmt).expect("every statement has facts");
        assert_eq!(info.index, index);
        if let Some((name, ty, overwrite)) = expected {
            assert_eq!(
                info.defines,
                Some(Definition {
                    name: name.to_string(),
                    ty: ty.clone(),
                    overwrite
                }),
                "statement {index}"
            );
        }
    }
    assert_eq!(verified.info(stmts[1]).expect("for").defines, None);
    // The reduced layout: spatial(8,4) summed over dimension 1 keeps 8 rows, each replicated
    // over the 4 threads that held its columns.
    let reduced = verified.info(stmts[4]).expect("reduce");
    let expected_layout = layout("spatial(8,4)").reduce(1);
    assert_eq!(expected_layout.shape(), &[8, 1]);
    assert_eq!(reduced.result_layout(), Some(&expected_layout));
    assert_eq!(
        reduced
            .defines
            .as_ref()
            .map(|d| (d.name.as_str(), d.overwrite)),
        Some(("s", false))
    );
    assert_eq!(reduced.elementwise, None);
}

#[test]
fn elementwise_operands_are_full_broadcast_or_scalar() {
    let p = program(
        "    %x = alloc_register(f16, spatial(8,4), 0.0);\n\
         \x20   %row = reduce_max(%x, 1);\n\
         \x20   %y = sub(%x, %row);\n\
         \x20   %m = lt(%y, 0.5);\n\
         \x20   %z = where(%m, n, %row);\n",
    );
    let verified = verify(&p).expect("verifies");
    let infos: Vec<_> = p
        .body
        .iter()
        .map(|stmt| verified.info(stmt).expect("facts"))
        .collect();
    let full = layout("spatial(8,4)");
    let row = full.reduce(1);

    let sub = infos[2].elementwise.as_ref().expect("sub is elementwise");
    assert_eq!(sub.dtype, DType::F16);
    assert_eq!(sub.layout, full);
    assert_eq!(
        sub.operands,
        [
            ElementwiseOperand::Full,
            ElementwiseOperand::Broadcast {
                dims: vec![1],
                layout: Box::new(row.clone())
            }
        ]
    );
    assert_eq!(infos[2].result_layout(), Some(&full));

    // A comparison reads f16 and gives u1.
    let lt = infos[3].elementwise.as_ref().expect("lt is elementwise");
    assert_eq!(lt.dtype, DType::F16);
    assert_eq!(
        lt.operands,
        [ElementwiseOperand::Full, ElementwiseOperand::Scalar]
    );
    assert_eq!(
        infos[3].defines.as_ref().map(|d| &d.ty),
        Some(&TensorType::Register {
            dtype: DType::Unsigned(1),
            layout: full.clone()
        })
    );

    // `where`: the condition first; the result takes the values' dtype and the condition's
    // layout (the only full-shape operand).
    let select = infos[4].elementwise.as_ref().expect("where is elementwise");
    assert_eq!(select.dtype, DType::F16);
    assert_eq!(select.layout, full);
    assert_eq!(
        select.operands,
        [
            ElementwiseOperand::Full,
            ElementwiseOperand::Scalar,
            ElementwiseOperand::Broadcast {
                dims: vec![1],
                layout: Box::new(row)
            }
        ]
    );
    for info in &infos[..2] {
        assert_eq!(info.elementwise, None);
    }
}

#[test]
fn statements_are_listed_in_program_order_then_before_else() {
    let p = program(
        "    if n > 0 {\n\
         \x20       %x = alloc_register(f32, spatial(32), 1.0);\n\
         \x20   } else {\n\
         \x20       %x = alloc_register(i8, spatial(32), 1);\n\
         \x20   }\n\
         \x20   %g = view_global(a, [n], [1]);\n",
    );
    let verified = verify(&p).expect("verifies");
    let mut stmts = Vec::new();
    walk(&p.body, &mut stmts);
    let listed: Vec<&Stmt> = verified.statements().map(|(stmt, _)| stmt).collect();
    assert_eq!(listed.len(), 4);
    for (walked, listed) in stmts.iter().zip(&listed) {
        assert!(std::ptr::eq(*walked, *listed));
    }
    // Each branch has its own %x, so the two types differ.
    let types: Vec<Option<TensorType>> = verified
        .statements()
        .map(|(_, info)| info.defines.as_ref().map(|d| d.ty.clone()))
        .collect();
    assert_eq!(
        types,
        [
            None,
            Some(register(DType::F32, "spatial(32)")),
            Some(register(DType::Signed(8), "spatial(32)")),
            Some(TensorType::Global {
                dtype: DType::F32,
                rank: 1
            }),
        ]
    );
}

#[test]
fn statements_of_another_program_have_no_facts() {
    let p = program("    %x = alloc_register(f32, spatial(32), 1.0);\n");
    let copy = p.clone();
    let verified = verify(&p).expect("verifies");
    assert!(std::ptr::eq(verified.program(), &p));
    assert!(verified.info(&p.body[0]).is_some());
    assert_eq!(copy, p);
    assert!(verified.info(&copy.body[0]).is_none());
}

#[test]
fn every_statement_of_the_examples_has_facts() {
    for (name, program) in examples::all().expect("examples") {
        let verified = verify(&program).unwrap_or_else(|error| panic!("{name}: {error}"));
        let mut stmts = Vec::new();
        walk(&program.body, &mut stmts);
        assert_eq!(verified.statements().len(), stmts.len(), "{name}");
        for (index, stmt) in stmts.iter().enumerate() {
            let info = verified.info(stmt).expect("facts");
            assert_eq!(info.index, index, "{name}");
            // Exactly the instructions with a destination define a tensor, under that name.
            let dst = match &stmt.kind {
                StmtKind::Inst(inst) => inst.dst(),
                _ => None,
            };
            assert_eq!(
                info.defines.as_ref().map(|d| d.name.as_str()),
                dst,
                "{name}: statement {index}"
            );
        }
    }
}
