//! The text form: golden printed programs (insta snapshots under `tests/snapshots/`), round trips
//! of programs, expressions and conditions, comments, and parse errors.

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout, Swizzle};
use anybit_vm::builder::{block_x, block_y, block_z, var, ProgramBuilder};
use anybit_vm::{
    examples, parse, print, verify, BinaryOp, CmpOp, Cond, Expr, ExprOp, Program, ReduceOp, Unroll,
};
use insta::assert_snapshot;

fn layout(text: &str) -> RegisterLayout {
    text.parse()
        .unwrap_or_else(|error| panic!("layout {text}: {error}"))
}

/// A program that uses every statement, every instruction, every kind of literal and every
/// header line (`blocks_per_sm` included).
fn kitchen_sink() -> Program {
    let mut b = ProgramBuilder::new("kitchen_sink");
    b.doc("Every statement and instruction of the IR.")
        .doc("")
        .doc("  (indented doc line)");
    let src = b.pointer("src", DType::F16);
    let packed = b.pointer("packed", DType::Unsigned(4));
    let dst = b.pointer("dst", DType::F32);
    let n = b.int_multiple_of("n", 16);
    let rows = b.int("rows");
    b.grid([n.clone().ceil_div(64), rows.clone().max(1), Expr::Const(2)])
        .threads(32)
        .blocks_per_sm(4);
    let tile = layout("spatial(8,4).local(1,2)");
    let base = b.let_("base", block_x() * 64 + block_z() * (n.clone() - -3));
    let row = b.let_("row", (block_y() % 4).min(&rows - 1));
    let gs = b.view_global("gs", &src, [rows.clone(), n.clone()], [n.clone(), 1.into()]);
    let gp = b.view_global(
        "gp",
        &packed,
        [rows.clone(), n.clone()],
        [n.clone(), 1.into()],
    );
    let gd = b.view_global("gd", &dst, [rows.clone(), n.clone()], [n.clone(), 1.into()]);
    let smem = b.alloc_shared(
        "smem",
        DType::F16,
        SharedLayout::row_major(&[8, 64]).with_swizzle(Swizzle::new(3, 3, 6).expect("swizzle")),
    );
    let acc = b.alloc_register(
        "acc",
        DType::F32,
        layout("spatial(8,4).local(2,2)"),
        Some(0.0.into()),
    );
    let ones = b.alloc_register("ones", DType::Signed(8), tile.clone(), Some((-1).into()));
    let low = b.alloc_register(
        "low",
        DType::F32,
        tile.clone(),
        Some(f64::NEG_INFINITY.into()),
    );
    let _ = b.alloc_register("scratch", DType::Bf16, tile.clone(), None);
    b.copy_async(&smem, &gs, [row.clone(), base.clone()]);
    b.commit_group();
    b.wait_group(0);
    b.barrier();
    b.for_("i", 0, 4, 1, Unroll::Full, |b, i| {
        let x = b.load_shared("x", &smem, [i * 2, Expr::Const(0)], tile.clone());
        let xf = b.cast("xf", &x, DType::F32);
        b.max("low", &low, &xf);
    });
    b.for_("j", base.clone(), &n + 0, 64, Unroll::Factor(2), |b, j| {
        let w = b.load_global(
            "w",
            &gp,
            [row.clone(), j],
            layout("spatial(8,4).local(1,4)"),
        );
        let bytes = b.view("bytes", &w, DType::Unsigned(8), tile.clone());
        let wide = b.cast("wide", &bytes, DType::Signed(8));
        // i3 codes split into a u2 and a u1 plane, the second in another local order.
        let lo = b.view("lo", &w, DType::Unsigned(2), layout("spatial(8,4).local(1,8)"));
        let hi = b.view_slice(
            "hi",
            &w,
            DType::Unsigned(1),
            layout("layout(shape=[8,32], modes=[[8],[4,2,4]], threads=[d0.0,d1.0], locals=[d1.2,d1.1])"),
            8,
        );
        let _ = b.cast_planes("planes", &[&lo, &hi], DType::Signed(3), DType::F16, None);
        let _ = b.cast_planes(
            "planes_bf16",
            &[&lo, &hi],
            DType::Signed(3),
            DType::Bf16,
            Some(layout("layout(shape=[8,32], modes=[[8],[4,2,4]], threads=[d0.0,d1.0], locals=[d1.2,d1.1])")),
        );
        b.add("wide", &wide, &ones);
        b.print(&wide);
    });
    b.if_else(
        (n.clone().gt(0) & !rows.clone().eq_(1)) | Cond::Bool(false),
        |b| {
            let x = b.load_global("x", &gs, [row.clone(), base.clone()], tile.clone());
            let neg = b.neg("neg", &x);
            let pos = b.abs("pos", &neg);
            let e = b.exp("e", &pos);
            let big = b.compare("big", CmpOp::Ge, &e, 1.5e-7);
            let picked = b.where_("picked", &big, &e, f64::NAN);
            for op in BinaryOp::ALL {
                b.binary("picked", op, &picked, 2);
            }
            b.binary("picked", BinaryOp::Mul, &picked, -0.0);
            b.compare("big", CmpOp::Lt, var("base"), &picked);
            let _ = b.compare("flags", CmpOp::Ne, &big, 1);
            let _ = b.cast("float_flags", &big, DType::F16);
            b.store_shared(&smem, [Expr::Const(0), Expr::Const(0)], &picked);
            b.print(&smem);
        },
        |b| {
            let _ = b.alloc_register(
                "x",
                DType::MiniFloat(mini(2, 1)),
                tile.clone(),
                Some(1.into()),
            );
        },
    );
    b.if_(rows.clone().lt(8), |_| {});
    let a = b.alloc_register(
        "a",
        DType::F16,
        layout("spatial(8,4).local(2,4)"),
        Some(0.5.into()),
    );
    let bb = b.alloc_register(
        "b",
        DType::F16,
        layout("local(8,1).spatial(1,4).local(1,2)")
            .compose(&RegisterLayout::replicate(2, 8))
            .expect("compose"),
        Some(0.25.into()),
    );
    let _ = bb.clone();
    let bt = b.alloc_register(
        "bt",
        DType::F16,
        layout("spatial(8,4).local(2,2)"),
        Some(1e300.into()),
    );
    let _ = b.dot("acc", &a, &bt, &acc);
    for op in ReduceOp::ALL {
        let _ = b.reduce(op.name(), op, &acc, 1);
    }
    b.store_global(&gd, [row, base], &acc);
    b.free_shared(&smem);
    b.finish()
}

fn mini(exponent: u8, mantissa: u8) -> anybit_dtype::MiniFloat {
    anybit_dtype::MiniFloat::new(exponent, mantissa).expect("format")
}

#[test]
fn kitchen_sink_verifies_prints_and_round_trips() {
    let program = kitchen_sink();
    if let Err(error) = verify(&program) {
        panic!("{error}\n{program}");
    }
    let text = print(&program);
    assert_snapshot!("kitchen_sink", text);
    let parsed = parse(&text).unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(parsed, program);
    assert_eq!(print(&parsed), text);
    assert!(verify(&parsed).is_ok());
}

#[test]
fn examples_print_as_snapshots() {
    for (file, program) in examples::all().expect("examples") {
        let name = file.trim_end_matches(".anybit");
        assert_snapshot!(name, print(&program));
    }
}

#[test]
fn parsed_spans_point_at_statements() {
    let text = print(&kitchen_sink());
    let program = parse(&text).expect("parses");
    assert_eq!((program.span.line, program.span.column), (4, 1));
    assert_eq!(
        (program.params[1].span.line, program.params[1].span.column),
        (4, 37)
    );
    let first = &program.body[0];
    assert_eq!((first.span.line, first.span.column), (9, 5));
}

#[test]
fn comments_and_whitespace_are_ignored() {
    let canonical = print(&examples::vector_add().expect("example"));
    let messy = canonical
        .replace("{\n", "{ // opening\n\n")
        .replace(";\n", " ;   // done\n")
        .replace(", ", " ,\n\t ")
        .replace("program", "// leading comment\nprogram");
    let parsed = parse(&messy).unwrap_or_else(|error| panic!("{error}\n{messy}"));
    assert_eq!(print(&parsed), canonical);
}

/// Expressions and conditions print with the fewest parentheses and parse back to the same tree.
#[test]
fn expressions_and_conditions_round_trip() {
    let (a, b, c) = (var("a"), var("b"), var("c"));
    let exprs = [
        &a - (&b - &c),
        (&a - &b) - &c,
        (&a + &b) * &c,
        &a * (&b / &c),
        (&a * &b) / &c,
        &a % (&b % 3),
        a.clone().min(&b + 1).ceil_div(4) % 3,
        Expr::Const(-5) * &a,
        &a - -5,
        Expr::Const(i32::MIN) + i32::MAX,
        Expr::Binary(ExprOp::Max, Box::new(block_x()), Box::new(&a - &b)),
    ];
    let conds = [
        a.clone().lt(&b),
        a.clone().le(1) & b.clone().gt(2) | c.clone().ge(3),
        a.clone().eq_(1) & (b.clone().ne_(2) | c.clone().lt(3)),
        !(a.clone().lt(1) & Cond::Bool(true)),
        !!Cond::Bool(false),
        (a.clone() + 1).lt(&b * 2) | (Cond::Bool(true) | Cond::Bool(false)),
    ];
    let mut lines = Vec::new();
    for expr in &exprs {
        let text = format!(
            "program p(a: i32, b: i32, c: i32)\ngrid(1)\nthreads(1)\n{{\n    let x = {expr};\n}}\n"
        );
        let program = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        let anybit_vm::StmtKind::Let { value, .. } = &program.body[0].kind else {
            panic!("not a let");
        };
        assert_eq!(value, expr, "{expr}");
        lines.push(expr.to_string());
    }
    for cond in &conds {
        let text =
            format!("program p(a: i32, b: i32, c: i32)\ngrid(1)\nthreads(1)\n{{\n    if {cond} {{\n    }}\n}}\n");
        let program = parse(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        let anybit_vm::StmtKind::If { cond: parsed, .. } = &program.body[0].kind else {
            panic!("not an if");
        };
        assert_eq!(parsed, cond, "{cond}");
        lines.push(cond.to_string());
    }
    assert_snapshot!(lines.join("\n"), @r#"a - (b - c)
a - b - c
(a + b) * c
a * (b / c)
a * b / c
a % (b % 3)
ceil_div(min(a, b + 1), 4) % 3
-5 * a
a - -5
-2147483648 + 2147483647
max(block.x, a - b)
a < b
a <= 1 && b > 2 || c >= 3
a == 1 && (b != 2 || c < 3)
!(a < 1 && true)
!!false
a + 1 < b * 2 || (true || false)"#);
}

/// Parse errors give line:column and what was expected.
#[test]
fn parse_errors() {
    let header = "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n";
    let cases = [
        "".to_string(),
        "program".to_string(),
        "program let()".to_string(),
        "program p(a: ptr<f17>)".to_string(),
        "program p(a: float)".to_string(),
        "program p(n: i32) grid(1) threads(99999999999) {}".to_string(),
        "program p() grid(1) threads(32) {} extra".to_string(),
        format!("{header}    let x = 1 +;\n}}\n"),
        format!("{header}    let x = 99999999999;\n}}\n"),
        format!("{header}    let x = -n;\n}}\n"),
        format!("{header}    let x = n\n}}\n"),
        format!("{header}    for i in 0..n step {{\n    }}\n}}\n"),
        format!("{header}    if (n < 1 {{\n    }}\n}}\n"),
        format!("{header}    if n {{\n    }}\n}}\n"),
        format!("{header}    %x = frobnicate(%y);\n}}\n"),
        format!("{header}    barrier;\n}}\n"),
        format!("{header}    %x = barrier();\n}}\n"),
        format!("{header}    add(%x, %y);\n}}\n"),
        format!("{header}    %x = alloc_register(f16, spatial(8,4).lokal(1,2));\n}}\n"),
        format!("{header}    %x = alloc_register(f16, );\n}}\n"),
        format!("{header}    %x = alloc_shared(f16, row_major(8,,8));\n}}\n"),
        format!("{header}    %x = add(%y, 1.5.5);\n}}\n"),
        format!("{header}    %x = add(%y, -nan);\n}}\n"),
        format!("{header}    %x = load_global(%g, spatial(32));\n}}\n"),
        format!("{header}    %x = reduce_sum(%y, -1);\n}}\n"),
        format!("{header}    let x = 1 @ 2;\n}}\n"),
        format!("{header}    let x = 12abc;\n}}\n"),
        format!("{header}    let x = 1;\n"),
        format!("{header}{}\n}}\n", "if true {".repeat(100)),
        format!(
            "{header}    let x = {}1{};\n}}\n",
            "(".repeat(100),
            ")".repeat(100)
        ),
    ];
    let messages: Vec<String> = cases
        .iter()
        .map(|text| match parse(text) {
            Ok(program) => panic!("parsed:\n{program}"),
            Err(error) => error.to_string(),
        })
        .collect();
    assert_snapshot!(messages.join("\n"), @r#"1:1: expected `program`, found end of input
1:8: expected the program name, found end of input
1:9: expected the program name, found the keyword `let`
1:18: unknown data type `f17`: floats other than f16 and f32 are written f{bits}e{E}m{M}; valid names are u1..u8, u16, u32, i1..i8, i16, i32, f16, bf16, f32, and f{bits}e{E}m{M} with E >= 1, M >= 0 and bits = 1+E+M <= 8 (for example f4e2m1, f6e3m2, f8e4m3)
1:14: expected a parameter type (`ptr<dtype>` or `i32`), found `float`
1:35: the number of threads `99999999999` is too large
1:36: expected end of input after the program, found `extra`
5:16: expected an expression, found `;`
5:13: `99999999999` does not fit i32
5:14: expected a number after `-` (write `0 - x` to negate), found `n`
6:1: expected `;`, found `}`
5:24: expected an expression, found `{`
5:15: expected `)`, found `{`
5:10: expected a comparison (`<`, `<=`, `>`, `>=`, `==`, `!=`), found `{`
5:10: expected an instruction or a statement, found `frobnicate`
5:12: expected `(`, found `;`
5:10: `barrier` has no result
5:5: `add` has a result: write `%name = add(...)`
5:43: bad register layout `spatial(8,4).lokal(1,2)`: expected a layout (local, spatial, column_local, column_spatial, replicate or layout), found 'lokal'
5:30: expected a register layout
5:40: bad shared layout `row_major(8,,8)`: expected a size (a number at least 1), found ','
5:21: expected `)`, found `.`
5:19: expected a number after `-` (write `0 - x` to negate), found `nan`
5:24: expected `[`, found `,`
5:25: expected a dimension, found `-`
5:15: unexpected character `@`
5:13: a number must not run into a name
6:1: expected a statement or `}`, found end of input
5:571: nesting deeper than 64 levels
5:76: nesting deeper than 64 levels"#);
}

/// `blocks_per_sm(N)` follows `threads(N)` when set and is left out otherwise; both round-trip.
#[test]
fn blocks_per_sm_round_trips_with_and_without() {
    let without = "program p(a: ptr<f16>)\ngrid(4)\nthreads(128)\n{\n    %g = view_global(a, [128], [1]);\n}\n";
    let with = without.replace("threads(128)\n", "threads(128)\nblocks_per_sm(4)\n");
    let program = parse(without).expect("parses");
    assert_eq!(program.blocks_per_sm, None);
    assert_eq!(print(&program), without);
    let hinted = parse(&with).expect("parses");
    assert_eq!(hinted.blocks_per_sm, Some(4));
    verify(&hinted).expect("verifies");
    assert_eq!(print(&hinted), with);
    assert_eq!(parse(&print(&hinted)).expect("reparses"), hinted);
    // The hint is the only difference.
    let mut unhinted = hinted.clone();
    unhinted.blocks_per_sm = None;
    assert_eq!(unhinted, program);
    // Built in Rust, it prints the same line.
    let mut b = ProgramBuilder::new("p");
    b.threads(128).blocks_per_sm(4);
    assert_snapshot!(print(&b.finish()), @"
    program p()
    grid(1)
    threads(128)
    blocks_per_sm(4)
    {
    }
    ");
}

#[test]
fn blocks_per_sm_parse_errors() {
    let cases = [
        "threads(128) blocks_per_sm {}",
        "threads(128) blocks_per_sm() {}",
        "threads(128) blocks_per_sm(-1) {}",
        "threads(128) blocks_per_sm(x) {}",
        "threads(128) blocks_per_sm(99999999999) {}",
        "threads(128) blocks_per_sm(2 {}",
        "threads(128) blocks_per_sm(2) blocks_per_sm(2) {}",
        "threads(128) blocks(2) {}",
        "blocks_per_sm(2) threads(128) {}",
    ];
    let messages: Vec<String> = cases
        .iter()
        .map(|header| {
            let text = format!("program p() grid(1) {header}");
            match parse(&text) {
                Ok(program) => panic!("parsed:\n{program}"),
                Err(error) => error.to_string(),
            }
        })
        .collect();
    assert_snapshot!(messages.join("\n"), @"
    1:48: expected `(`, found `{`
    1:48: expected the number of blocks per multiprocessor, found `)`
    1:48: expected the number of blocks per multiprocessor, found `-`
    1:48: expected the number of blocks per multiprocessor, found `x`
    1:48: the number of blocks per multiprocessor `99999999999` is too large
    1:50: expected `)`, found `{`
    1:51: expected `{`, found `blocks_per_sm`
    1:34: expected `blocks_per_sm(N)` or `{`, found `blocks`
    1:21: expected `threads`, found `blocks_per_sm`
    ");
    // A keyword now, so not a scalar name.
    let text = "program p(blocks_per_sm: i32) grid(1) threads(32) {}";
    assert_eq!(
        parse(text).expect_err("keyword").to_string(),
        "1:11: expected a parameter name, found the keyword `blocks_per_sm`"
    );
}

#[test]
fn slices_casts_to_a_layout_and_batched_dots_round_trip() {
    let text = "program p(x: ptr<u8>)
grid(1)
threads(32)
{
    %gx = view_global(x, [32, 4], [4, 1]);
    %b = load_global(%gx[0, 0], spatial(32,1).local(1,4));
    %n = view(%b, u4, spatial(32,1).local(1,4), 16);
    %h = cast(%n, f16, spatial(32,1).column_local(1,4));
    %a = alloc_register(f16, spatial(2,8,2).local(1,2,8), 0.0);
    %w = alloc_register(f16, spatial(2,8,2).local(1,2,4), 0.0);
    %c = alloc_register(f32, spatial(2,8,2).local(1,2,4), 0.0);
    %c = dot(%a, %w, %c);
}
";
    let program = anybit_vm::parse(text).expect("parses");
    anybit_vm::verify(&program).expect("verifies");
    let printed = anybit_vm::print(&program);
    assert_eq!(anybit_vm::parse(&printed).expect("reparses"), program);
    assert!(
        printed.contains("view(%b, u4, local(1,4).spatial(32,1), 16)"),
        "{printed}"
    );
    assert!(printed.contains("cast(%n, f16, "), "{printed}");
}

#[test]
fn cast_planes_round_trips_with_and_without_a_layout() {
    let text = "program p(x: ptr<u8>)
grid(1)
threads(32)
{
    %gx = view_global(x, [32, 4], [4, 1]);
    %b = load_global(%gx[0, 0], spatial(32,1).local(1,4));
    %lo = view(%b, u4, spatial(32,1).local(1,4), 0);
    %hi = view(%b, u1, spatial(32,1).column_local(1,4), 16);
    %one = view(%b, u2, spatial(32,1).local(1,4), 24);
    %f = cast_planes(%lo, %hi, u5, f32);
    %h = cast_planes(%lo, %hi, %one, i7, f16, layout(shape=[32,4], modes=[[32],[2,2]], threads=[d0.0], locals=[d1.1,d1.0]));
    %s = cast_planes(%one, i2, i8);
}
";
    let program = parse(text).expect("parses");
    verify(&program).expect("verifies");
    let printed = print(&program);
    assert_eq!(parse(&printed).expect("reparses"), program);
    assert_eq!(print(&parse(&printed).expect("reparses")), printed);
    let lines: Vec<&str> = printed
        .lines()
        .filter(|line| line.contains("cast_planes"))
        .collect();
    assert_snapshot!(lines.join("\n"), @"
    %f = cast_planes(%lo, %hi, u5, f32);
    %h = cast_planes(%lo, %hi, %one, i7, f16, layout(shape=[32,4], modes=[[32],[2,2]], threads=[d0.0], locals=[d1.1,d1.0]));
    %s = cast_planes(%one, i2, i8);
    ");
}

#[test]
fn cast_planes_parse_errors() {
    let header = "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n";
    let cases = [
        "%y = cast_planes(u3, f16);",
        "%y = cast_planes(%a %b, u3, f16);",
        "%y = cast_planes(%a, %b);",
        "%y = cast_planes(%a, %b, u3);",
        "%y = cast_planes(%a, %b, u3, f16, spatial(32), 4);",
        "cast_planes(%a, u3, f16);",
    ];
    let messages: Vec<String> = cases
        .iter()
        .map(|inst| {
            let text = format!("{header}    {inst}\n}}\n");
            match parse(&text) {
                Ok(program) => panic!("parsed:\n{program}"),
                Err(error) => error.to_string(),
            }
        })
        .collect();
    assert_snapshot!(messages.join("\n"), @"
    5:22: expected a tensor variable `%name`, found `u3`
    5:25: expected `,`, found `%b`
    5:28: expected `,`, found `)`
    5:32: expected `,`, found `)`
    5:50: expected `)`, found `,`
    5:5: `cast_planes` has a result: write `%name = cast_planes(...)`
    ");
}
