//! What only code generation can find in a verified program gives a `CodegenError` naming the
//! statement and the reason: facts it derives itself (a loop step or a tile offset that its
//! divisibility facts make a constant) and the target's shared memory. Malformed programs are
//! the verifier's (`crates/vm/tests/verify_errors.rs`); they never reach `generate`.

use anybit_cuda::codegen::GridError;
use anybit_cuda::{generate, CodegenError, Target};

/// The code generation error of `text`, which must parse and verify.
fn error(text: &str) -> CodegenError {
    let program = anybit_vm::parse(text).unwrap_or_else(|e| panic!("{e}"));
    let verified = anybit_vm::verify(&program).unwrap_or_else(|e| panic!("{e}"));
    match generate(&verified, Target::Sm90a) {
        Ok(_) => panic!("generated:\n{text}"),
        Err(e) => e,
    }
}

fn unsupported(text: &str) -> (String, u32, u32, String) {
    match error(text) {
        CodegenError::Unsupported { inst, span, reason } => (inst, span.line, span.column, reason),
        other => panic!("{other}"),
    }
}

#[test]
fn a_loop_step_that_facts_make_zero_is_reported_at_the_loop() {
    // The verifier rejects only a literal step; `s` is 0 through `let`.
    let (inst, line, column, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    let s = 3 - 3;\n    for i in 0..n step s {\n    }\n}\n",
    );
    assert_eq!((inst.as_str(), line, column), ("for", 6, 5));
    assert_eq!(reason, "the loop step 0 is not positive");
}

#[test]
fn a_shared_tile_at_a_constant_offset_outside_the_tensor() {
    // The verifier checks literal offsets; `o` is 24 through `let`, and 24 + 16 > 32.
    let (inst, line, _, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %s = alloc_shared(f16, row_major(32));\n    let o = 8 * 3;\n    %x = load_shared(%s[o], spatial(16).replicate(2));\n}\n",
    );
    assert_eq!((inst.as_str(), line), ("load_shared", 7));
    assert_eq!(
        reason,
        "the tile at offset 24 of size 16 does not fit dimension 0 of size 32"
    );
}

#[test]
fn too_much_shared_memory() {
    let e = error(
        "program big(a: ptr<f32>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %s = alloc_shared(f32, row_major(256,256));\n}\n",
    );
    let CodegenError::SharedMemory { bytes, limit, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!((*bytes, *limit), (262144, 227 * 1024));
    assert!(
        e.to_string()
            .contains("needs 262144 bytes of shared memory"),
        "{e}"
    );
}

#[test]
fn error_messages_name_line_column_and_instruction() {
    let e = error(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    let s = 0;\n    for i in 0..n step s {\n    }\n}\n",
    );
    assert_eq!(e.to_string(), "6:5: `for`: the loop step 0 is not positive");
}

#[test]
fn grid_evaluation_checks_arguments() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/matmul_f16.anybit"),
    )
    .unwrap();
    let program = anybit_vm::parse(&text).unwrap();
    let k = generate(&anybit_vm::verify(&program).unwrap(), Target::Sm80).unwrap();
    assert_eq!(k.grid(&[100, 200, 64]), Ok([4, 2, 1]));
    assert_eq!(
        k.grid(&[100, 201, 64]),
        Err(GridError::NotMultiple {
            name: "n".into(),
            value: 201,
            multiple: 8
        })
    );
    assert!(matches!(k.grid(&[1]), Err(GridError::ArgumentCount { .. })));
    assert_eq!(k.params.len(), 6);
    assert_eq!(k.static_shared_bytes, 16384);
}
