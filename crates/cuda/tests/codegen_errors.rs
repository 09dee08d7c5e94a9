//! Programs the backend cannot lower give a `CodegenError` naming the statement and the reason.

use anybit_cuda::codegen::GridError;
use anybit_cuda::{generate, CodegenError, Target};

fn error(text: &str) -> CodegenError {
    let program = anybit_vm::parse(text).unwrap_or_else(|e| panic!("{e}"));
    generate(&program, Target::Sm90a).unwrap_err()
}

fn unsupported(text: &str) -> (String, u32, u32, String) {
    match error(text) {
        CodegenError::Unsupported { inst, span, reason } => (inst, span.line, span.column, reason),
        other => panic!("{other}"),
    }
}

#[test]
fn unknown_tensor_is_reported_with_its_span() {
    let (inst, line, column, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %x = neg(%y);\n}\n",
    );
    assert_eq!((inst.as_str(), line, column), ("neg", 5, 5));
    assert!(reason.contains("unknown tensor %y"), "{reason}");
}

#[test]
fn layout_with_the_wrong_thread_count() {
    let (inst, _, _, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(64)\n{\n    %g = view_global(a, [n], [1]);\n    %x = load_global(%g[0], spatial(32).local(2));\n}\n",
    );
    assert_eq!(inst, "load_global");
    assert!(
        reason.contains("spans 32 threads; the program has 64"),
        "{reason}"
    );
}

#[test]
fn mismatched_overwrite() {
    let (inst, line, _, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %x = alloc_register(f16, spatial(32), 0);\n    %x = alloc_register(f32, spatial(32), 0);\n}\n",
    );
    assert_eq!((inst.as_str(), line), ("alloc_register", 6));
    assert!(reason.contains("cannot be overwritten"), "{reason}");
}

#[test]
fn broadcast_operand_not_held_by_the_right_threads() {
    let (inst, _, _, reason) = unsupported(
        "program p(a: ptr<f32>, n: i32)\ngrid(1)\nthreads(4)\n{\n    %x = alloc_register(f32, spatial(2,2), 0);\n    %y = alloc_register(f32, spatial(1,2).replicate(2), 1);\n    %z = add(%x, %y);\n}\n",
    );
    assert_eq!(inst, "add");
    assert!(reason.contains("operand"), "{reason}");
}

#[test]
fn dot_shapes_must_match() {
    let (inst, _, _, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %a = alloc_register(f16, spatial(8,4).local(1,2), 0);\n    %b = alloc_register(f16, spatial(8,4).local(2,2), 0);\n    %c = alloc_register(f32, spatial(8,4).local(1,2), 0);\n    %c = dot(%a, %b, %c);\n}\n",
    );
    assert_eq!(inst, "dot");
    assert!(reason.contains("do not match"), "{reason}");
}

#[test]
fn pointer_used_as_integer() {
    let (inst, _, _, reason) = unsupported(
        "program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    let x = a + 1;\n}\n",
    );
    assert_eq!(inst, "let");
    assert!(reason.contains("pointer `a`"), "{reason}");
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
    let e =
        error("program p(a: ptr<f16>, n: i32)\ngrid(1)\nthreads(32)\n{\n    %x = exp(%y);\n}\n");
    assert_eq!(e.to_string(), "5:5: `exp`: unknown tensor %y");
}

#[test]
fn grid_evaluation_checks_arguments() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/matmul_f16.anybit"),
    )
    .unwrap();
    let k = generate(&anybit_vm::parse(&text).unwrap(), Target::Sm80).unwrap();
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
