//! Golden tests of the generated CUDA (kernel part, without the fixed prelude) for the example
//! programs and a few fast paths. Accept changes with `INSTA_UPDATE=always`, review the diff.

use anybit_cuda::codegen::{cast_test_program, FastCast};
use anybit_cuda::{generate, Target};
use anybit_dtype::DType;

fn example(file: &str) -> anybit_vm::Program {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file);
    anybit_vm::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn golden(program: &anybit_vm::Program) -> String {
    let verified = anybit_vm::verify(program).unwrap_or_else(|e| panic!("{e}"));
    let k = generate(&verified, Target::Sm90a).unwrap();
    format!(
        "// threads {}, static shared {} B, dynamic shared {} B\n// selections:\n{}\n{}",
        k.threads,
        k.static_shared_bytes,
        k.dynamic_shared_bytes,
        k.selections
            .iter()
            .map(|s| format!("//   {s}"))
            .collect::<Vec<_>>()
            .join("\n"),
        k.kernel_source()
    )
}

#[test]
fn vector_add() {
    insta::assert_snapshot!(golden(&example("vector_add.anybit")));
}

#[test]
fn matmul_f16() {
    insta::assert_snapshot!(golden(&example("matmul_f16.anybit")));
}

#[test]
fn softmax() {
    insta::assert_snapshot!(golden(&example("softmax.anybit")));
}

#[test]
fn quantized_matmul_u4_g128() {
    insta::assert_snapshot!(golden(&example("quantized_matmul_u4_g128.anybit")));
}

/// `blocks_per_sm(n)` adds `n` to `__launch_bounds__` and changes nothing else.
#[test]
fn blocks_per_sm_is_the_second_launch_bound() {
    let mut program = example("vector_add.anybit");
    let plain = golden(&program);
    program.blocks_per_sm = Some(8);
    let hinted = golden(&program);
    let line = |text: &str| {
        text.lines()
            .find(|line| line.contains("__launch_bounds__"))
            .expect("a kernel")
            .to_string()
    };
    insta::assert_snapshot!(line(&plain), @r#"extern "C" __global__ void __launch_bounds__(128) vector_add(u8* p_a, u8* p_b, u8* p_c, const int s_n) {"#);
    insta::assert_snapshot!(line(&hinted), @r#"extern "C" __global__ void __launch_bounds__(128, 8) vector_add(u8* p_a, u8* p_b, u8* p_c, const int s_n) {"#);
    assert_eq!(
        hinted.replace("__launch_bounds__(128, 8)", "__launch_bounds__(128)"),
        plain
    );
}

#[test]
fn cast_test_f6e3m2() {
    insta::assert_snapshot!(golden(&cast_test_program("f6e3m2".parse().unwrap())));
}

#[test]
fn fast_cast_functions() {
    let mut out = String::new();
    for from in DType::all_small() {
        for to in [DType::F16, DType::Bf16] {
            match FastCast::new(from, to) {
                Some(fast) => out.push_str(&fast.device_function()),
                None => out.push_str(&format!("// {from} -> {to}: generic conversion\n")),
            }
        }
    }
    insta::assert_snapshot!(out);
}
