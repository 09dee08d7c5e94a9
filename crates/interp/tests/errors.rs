//! Run-time errors, launch errors and argument errors: what they say and where they point.
//! Ill-formed programs are refused before anything runs, never a panic.

mod common;

use std::io::{self, Write};

use anybit_interp::{
    run, run_with, Argument, ArgumentError, Arguments, Fault, RunError, RunOptions,
};
use common::{parse, parse_unverified, run_err};

fn error_of(text: &str, values: Vec<(&str, Argument)>) -> RunError {
    let program = parse(text);
    let mut args = Arguments::new(&program);
    for (name, value) in values {
        args.set(name, value).expect("argument");
    }
    run_err(&program, &mut args)
}

#[test]
fn scalar_overflow_names_the_block_and_the_line() {
    let error = error_of(
        "program p(n: i32) grid(8) threads(1) {
    let a = 1;
    if block.x == 3 {
        let b = n + 2147483647;
    }
}",
        vec![("n", Argument::Int(1))],
    );
    assert_eq!(
        error.to_string(),
        "block (3,0,0), line 4:9, let: i32 overflow in 1 + 2147483647"
    );
    let runtime = error.runtime().expect("a run-time error");
    assert_eq!((runtime.span.line, runtime.span.column), (4, 9));
    assert!(matches!(runtime.fault, Fault::Overflow { .. }));
}

#[test]
fn scalar_run_time_errors() {
    let cases = [
        ("let a = 1 / (n - 1);", "1 / 0: division by zero"),
        ("let a = 5 % (n - 1);", "5 % 0: division by zero"),
        (
            "let a = ceil_div(5, n - 2);",
            "ceil_div(5, -1): the divisor must be positive",
        ),
        (
            "for i in 0..4 step n - 1 { }",
            "the loop step is 0; it must be positive",
        ),
        (
            "let a = (0 - 2147483647 - n) / (0 - 1);",
            "i32 overflow in -2147483648 / -1",
        ),
        ("if 1 / (n - 1) == 0 || true { }", "1 / 0: division by zero"),
    ];
    for (statement, message) in cases {
        let text = format!("program p(n: i32) grid(1) threads(1) {{\n    {statement}\n}}");
        let error = error_of(&text, vec![("n", Argument::Int(1))]);
        let keyword = statement.split(' ').next().unwrap_or_default();
        assert_eq!(
            error.to_string(),
            format!("block (0,0,0), line 2:5, {keyword}: {message}"),
            "{statement}"
        );
    }
}

#[test]
fn global_element_outside_its_buffer() {
    let error = error_of(
        "program p(w: ptr<u4>) grid(1) threads(4) {
    %g = view_global(w, [16], [1]);
    %t = load_global(%g[0], spatial(4).local(4));
}",
        // 6 bytes hold 12 u4 elements.
        vec![("w", Argument::Buffer(vec![0; 6]))],
    );
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 3:5, load_global: global element 12 of `w` is outside its \
         12-element buffer (coordinates [12] of `%g`)"
    );
    // Negative strides can reach below the pointer.
    let error = error_of(
        "program p(w: ptr<f32>) grid(1) threads(2) {
    %g = view_global(w, [2], [-1]);
    %t = alloc_register(f32, spatial(2), 1.0);
    store_global(%g[0], %t);
}",
        vec![("w", Argument::Buffer(vec![0; 8]))],
    );
    assert!(matches!(
        error.fault(),
        Some(Fault::OutsideBuffer { element: -1, .. })
    ));
}

#[test]
fn negative_view_size() {
    let error = error_of(
        "program p(w: ptr<f32>, n: i32) grid(1) threads(1) {
    %g = view_global(w, [n], [1]);
}",
        vec![
            ("w", Argument::Buffer(vec![0; 8])),
            ("n", Argument::Int(-3)),
        ],
    );
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 2:5, view_global: size -3 of dimension 0 of `%g` is negative"
    );
}

#[test]
fn shared_tile_with_a_computed_offset_outside_its_tensor() {
    let error = error_of(
        "program p(n: i32) grid(1) threads(4) {
    %s = alloc_shared(f16, row_major(4, 8));
    %t = load_shared(%s[n, 0], spatial(4, 1).local(1, 8));
}",
        vec![("n", Argument::Int(1))],
    );
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 3:5, load_shared: the tile of shape [4, 8] at offsets [1, 0] does \
         not lie inside `%s` of shape [4, 8]"
    );
}

#[test]
fn integer_division_by_zero_in_a_tensor() {
    let error = error_of(
        "program p(n: i32) grid(1) threads(4) {
    %a = alloc_register(i8, spatial(4), 7);
    %b = div(%a, n);
}",
        vec![("n", Argument::Int(0))],
    );
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 3:5, div: integer division by zero (element [0] of the result)"
    );
}

#[test]
fn copy_async_destination_freed_before_the_wait() {
    let error = error_of(
        "program p(x: ptr<f32>) grid(1) threads(1) {
    %g = view_global(x, [4], [1]);
    for i in 0..1 {
        %s = alloc_shared(f32, row_major(4));
        copy_async(%s, %g[0]);
        commit_group();
    }
    wait_group(0);
}",
        vec![("x", Argument::Buffer(vec![0; 16]))],
    );
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 8:5, wait_group: the destination `%s` of a copy_async (line 5:9) \
         was freed before the copy completed"
    );
    // A fault of the copy itself is reported at the wait, naming the copy.
    let error = error_of(
        "program p(x: ptr<f32>) grid(1) threads(1) {
    %g = view_global(x, [8], [1]);
    %s = alloc_shared(f32, row_major(4));
    copy_async(%s, %g[2]);
    commit_group();
    wait_group(0);
}",
        vec![("x", Argument::Buffer(vec![0; 16]))],
    );
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 6:5, wait_group: completing the copy_async at line 4:5: global \
         element 4 of `x` is outside its 4-element buffer (coordinates [4] of `%g`)"
    );
}

#[test]
fn launch_errors() {
    let program =
        parse("program p(n: i32 multiple_of 8, m: i32) grid(ceil_div(n, 4), m) threads(32) { }");
    let launch = |n: i32, m: i32| {
        let mut args = Arguments::new(&program);
        args.set("n", n)
            .and_then(|a| a.set("m", m))
            .expect("arguments");
        run(&program, &mut args, &mut io::sink())
    };
    assert_eq!(
        launch(12, 1).map_err(|e| e.to_string()),
        Err("cannot launch `p`: `n` = 12 breaks its promise `multiple_of 8`".to_string())
    );
    assert_eq!(
        launch(16, -1).map_err(|e| e.to_string()),
        Err("cannot launch `p`: grid dimension 1 is -1; it must not be negative".to_string())
    );
    assert!(launch(16, 0).is_ok(), "a zero-size grid launches nothing");
    let mut args = Arguments::new(&program);
    args.set("n", 16)
        .and_then(|a| a.set("m", 1))
        .expect("arguments");
    let summary = run_with(
        &program,
        &mut args,
        &RunOptions {
            grid: Some([2, 3, 4]),
        },
        &mut io::sink(),
    )
    .expect("run");
    assert_eq!(summary.blocks, 24);
}

#[test]
fn argument_errors() {
    let program = parse("program p(x: ptr<f16>, n: i32) grid(1) threads(1) { }");
    let mut args = Arguments::new(&program);
    assert_eq!(
        args.set("y", 3).map(|_| ()).map_err(|e| e.to_string()),
        Err("`p` has no parameter `y` (its parameters are: x, n)".to_string())
    );
    assert_eq!(
        args.set("x", 3).map(|_| ()).map_err(|e| e.to_string()),
        Err("parameter `x` is a ptr<f16>, which takes a buffer, but an i32 was given".to_string())
    );
    assert!(matches!(
        args.set_at(2, 1),
        Err(ArgumentError::UnknownIndex { index: 2, .. })
    ));
    args.set_at(0, vec![0u8; 4]).expect("x");
    match run(&program, &mut args, &mut io::sink()) {
        Err(RunError::Argument(ArgumentError::Missing { name })) => assert_eq!(name, "n"),
        other => panic!("{other:?}"),
    }
    let other = parse("program q(x: ptr<f16>) grid(1) threads(1) { }");
    assert!(matches!(
        run(&other, &mut args, &mut io::sink()),
        Err(RunError::Argument(ArgumentError::OtherProgram { .. }))
    ));
    // The buffers come back after a run, failed or not.
    args.set("n", 1).expect("n");
    run(&program, &mut args, &mut io::sink()).expect("run");
    assert_eq!(args.buffer("x"), Some(&[0u8; 4][..]));
    assert_eq!(args.int("n"), Some(1));
    assert_eq!(args.take_buffer("x"), Some(vec![0u8; 4]));
    assert_eq!(args.buffer("x"), None);
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk full"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn print_output_errors_are_reported() {
    let program = parse(
        "program p() grid(1) threads(1) {
    %a = alloc_register(f16, local(2), 1);
    print(%a);
}",
    );
    let mut args = Arguments::new(&program);
    let error = run(&program, &mut args, &mut Broken).expect_err("print fails");
    assert_eq!(
        error.to_string(),
        "block (0,0,0), line 3:5, print: writing print output: disk full"
    );
}

/// Programs the verifier rejects are refused with the verifier's error before any block runs
/// (the interpreter only runs verified programs; `crates/vm/tests/verify_errors.rs` shows each
/// of these errors with its message).
#[test]
fn ill_formed_programs_are_refused_before_they_run() {
    let cases = [
        "%b = add(%nope, 1);",
        "%a = alloc_register(f16, spatial(8), 1);",
        "%a = alloc_register(f16, spatial(4), 1); %a = alloc_register(f32, spatial(4), 1);",
        "%a = alloc_register(f16, spatial(4), 1); %b = view(%a, f32, spatial(4));",
        "%a = alloc_register(f16, spatial(4), 1); %b = alloc_register(f16, spatial(4,1), 1); \
         %c = add(%a, %b);",
        "%a = alloc_register(f16, spatial(2,2), 1); %b = alloc_register(f16, local(2,1).replicate(2), 1); \
         %c = add(%a, %b);",
        "%a = alloc_register(f16, spatial(2,2), 1); %b = alloc_register(f16, local(2,2).replicate(4), 1); \
         %c = add(%a, %b);",
        "%a = alloc_register(i8, spatial(4), 1); %b = exp(%a);",
        "%a = alloc_register(i8, spatial(4), 1); %b = add(%a, 1.5);",
        "%a = alloc_register(u4, spatial(4), 1); %b = where(%a, 1, 2);",
        "%a = alloc_register(u1, spatial(4), 1); %b = where(%a, 1, 2);",
        "%a = alloc_register(f16, spatial(4), 1); %b = reduce_sum(%a, 1);",
        "%a = alloc_register(f16, spatial(4,1), 1); %b = dot(%a, %a, %a);",
        "%a = alloc_register(f16, spatial(4,1), 1); %c = alloc_register(i32, local(4,4).replicate(4), 1); \
         %b = dot(%a, %c, %c);",
        "%s = alloc_shared(f16, row_major(4)); free_shared(%s); free_shared(%s);",
        "%s = alloc_shared(f16, row_major(4)); %s = alloc_shared(f16, row_major(4));",
        "%s = alloc_shared(f16, row_major(4)); %t = load_shared(%s[0], spatial(4,1));",
        "%s = alloc_shared(f16, row_major(4)); %a = alloc_register(f32, spatial(4), 1); \
         store_shared(%s[0], %a);",
        "let x = 1; let x = 2;",
        "let y = z;",
        "let y = x;",
        "let x = 1;",
        "for x in 0..2 { }",
        "%g = view_global(x, [4], [1, 1]);",
        "%g = view_global(q, [4], [1]);",
        "print(%g);",
    ];
    for body in cases {
        let text = format!(
            "program p(x: ptr<f16>) grid(1) threads(4) {{\n    %g = view_global(x, [4], [1]);\n    {body}\n}}"
        );
        let program = parse_unverified(&text);
        let Err(expected) = anybit_vm::verify(&program) else {
            panic!("the verifier accepts {body}");
        };
        let mut args = Arguments::new(&program);
        args.set("x", vec![0x5a; 8]).expect("x");
        let mut printed = Vec::new();
        match run(&program, &mut args, &mut printed) {
            Err(RunError::Verify { program, error }) => {
                assert_eq!(program, "p");
                assert_eq!(error, expected, "{body}");
            }
            other => panic!("{body}: expected the verifier's error, got {other:?}"),
        }
        // Nothing ran: the buffer is as given and nothing was printed.
        assert_eq!(args.buffer("x"), Some(&[0x5a; 8][..]), "{body}");
        assert!(printed.is_empty(), "{body}");
    }
}
