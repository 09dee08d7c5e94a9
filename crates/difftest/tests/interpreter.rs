//! Every kind of case runs on the interpreter, writes every output element it promises, and
//! compares equal with itself; the comparison catches a changed element.

use anybit_difftest::cases::{
    matmul_case, quantized_matmul_case, random_program_case, softmax_case, vector_add_case,
    weight_types,
};
use anybit_difftest::{compare, run_on_interpreter, Agreement, Case};
use rand::prelude::*;

fn check_runs(case: &Case) {
    let outputs = run_on_interpreter(case, anybit_difftest::POISON)
        .unwrap_or_else(|error| panic!("{}: {error}", case.name));
    for (position, bytes) in outputs.iter().enumerate() {
        let dtype = case.output_dtype(position);
        let count = case.outputs[position].1;
        let same = compare(dtype, bytes, bytes, count, Agreement::BitExact);
        assert!(same.passed() && same.compared == count, "{}", case.name);
    }
}

#[test]
fn random_programs_run_on_the_interpreter() {
    let mut rng = StdRng::seed_from_u64(11);
    for index in 0..150 {
        check_runs(&random_program_case(&mut rng, index));
    }
}

#[test]
fn examples_run_with_fresh_inputs() {
    let mut rng = StdRng::seed_from_u64(12);
    let vector = vector_add_case(&mut rng);
    check_runs(&vector);
    // Every element of the vector sum is written: no poison (NaN) is left.
    let out = &run_on_interpreter(&vector, anybit_difftest::POISON).unwrap()[0];
    let n = vector.outputs[0].1;
    assert!((0..n).all(|i| anybit_dtype::read_code(out, 16, i) != 0xffff));
    check_runs(&matmul_case(&mut rng));
    check_runs(&softmax_case(&mut rng, 256));
    for weight in weight_types() {
        check_runs(&quantized_matmul_case(&mut rng, weight, 32));
    }
}

#[test]
fn comparison_finds_changed_elements_and_honours_tolerances() {
    let dtype = anybit_dtype::DType::F16;
    let values = [1.0f32, 2.0, -3.0, 1000.0];
    let codes: Vec<u32> = values.iter().map(|&v| dtype.encode(v)).collect();
    let expected = anybit_dtype::pack(&codes, 16).unwrap();
    let mut actual = expected.clone();
    // One ulp up on element 3.
    anybit_dtype::write_code(&mut actual, 16, 3, codes[3] + 1);
    let exact = compare(dtype, &expected, &actual, 4, Agreement::BitExact);
    assert_eq!(exact.mismatches, 1);
    assert_eq!(exact.first_mismatch.as_ref().unwrap().index, 3);
    assert_eq!(exact.max_abs_error, 0.5);
    let close = Agreement::Close {
        ulps: 1,
        fraction_of_max: 0.0,
    };
    assert!(compare(dtype, &expected, &actual, 4, close).passed());
    anybit_dtype::write_code(&mut actual, 16, 0, dtype.encode(1.01));
    let loose = compare(dtype, &expected, &actual, 4, close);
    assert_eq!(loose.mismatches, 1, "1.01 is 10 ulps from 1");
    let by_magnitude = Agreement::Close {
        ulps: 0,
        fraction_of_max: 1e-3,
    };
    assert_eq!(
        compare(dtype, &expected, &actual, 4, by_magnitude).mismatches,
        0
    );
}

#[test]
fn cast_cases_convert_every_code() {
    let mut rng = StdRng::seed_from_u64(13);
    for source in anybit_dtype::DType::all_small() {
        for target in [anybit_dtype::DType::F16, anybit_dtype::DType::Bf16] {
            let case = anybit_difftest::cases::cast_case(&mut rng, source, target, 8);
            let output = &run_on_interpreter(&case, anybit_difftest::POISON).unwrap()[0];
            let input = match &case.values[0] {
                anybit_difftest::Value::Buffer(bytes) => bytes,
                _ => unreachable!(),
            };
            for index in 0..1024 {
                let code = anybit_dtype::read_code(input, source.bits(), index);
                let expected = target.encode(source.decode(code) as f32);
                let actual = anybit_dtype::read_code(output, 16, index);
                let both_nan = target.decode(expected).is_nan() && target.decode(actual).is_nan();
                assert!(expected == actual || both_nan, "{}: code {code}", case.name);
            }
        }
    }
}

#[test]
fn vector_width_cases_run_and_keep_the_padding() {
    let mut rng = StdRng::seed_from_u64(14);
    for dtype in anybit_difftest::cases::vector_width_types() {
        for per_thread in [32, 128] {
            for with_shared in [false, true] {
                let case = anybit_difftest::cases::vector_width_case(
                    &mut rng,
                    dtype,
                    per_thread,
                    with_shared,
                );
                check_runs(&case);
                let (input, rows, cols, ld) = match &case.values[..] {
                    [anybit_difftest::Value::Buffer(input), _, _, anybit_difftest::Value::I32(m), anybit_difftest::Value::I32(n), anybit_difftest::Value::I32(ld)] => {
                        (input, *m as usize, *n as usize, *ld as usize)
                    }
                    _ => unreachable!(),
                };
                let outputs = run_on_interpreter(&case, anybit_difftest::POISON).unwrap();
                let bits = dtype.bits();
                for row in 0..rows {
                    for col in 0..ld {
                        let index = row * ld + col;
                        let raw = anybit_dtype::read_code(&outputs[1], bits, index);
                        let half = anybit_dtype::read_code(&outputs[0], 16, index);
                        if col < cols {
                            let code = anybit_dtype::read_code(input, bits, index);
                            assert_eq!(raw, code, "{}: raw ({row}, {col})", case.name);
                            let value = anybit_dtype::DType::F16.encode(dtype.decode(code) as f32);
                            assert_eq!(half, value, "{}: half ({row}, {col})", case.name);
                        } else {
                            assert_eq!(raw, dtype.code_mask(), "{}: padding", case.name);
                            assert_eq!(half, 0xffff, "{}: padding", case.name);
                        }
                    }
                }
            }
        }
        let case = anybit_difftest::cases::copy_async_width_case(&mut rng, dtype);
        check_runs(&case);
        let input = match &case.values[0] {
            anybit_difftest::Value::Buffer(bytes) => bytes,
            _ => unreachable!(),
        };
        let output = &run_on_interpreter(&case, anybit_difftest::POISON).unwrap()[0];
        assert_eq!(input, output, "{}: the copy is exact", case.name);
    }
}

#[test]
fn vector_width_cases_select_vector_accesses() {
    let mut rng = StdRng::seed_from_u64(15);
    for dtype in anybit_difftest::cases::vector_width_types() {
        for per_thread in [32, 128] {
            for with_shared in [false, true] {
                let case = anybit_difftest::cases::vector_width_case(
                    &mut rng,
                    dtype,
                    per_thread,
                    with_shared,
                );
                let verified = anybit_vm::verify(&case.program).unwrap();
                let kernel = anybit_cuda::generate(&verified, anybit_cuda::Target::Sm90a).unwrap();
                let says = |what: &str| kernel.selections.iter().any(|s| s.contains(what));
                assert!(
                    says("global loads"),
                    "{}: {:?}",
                    case.name,
                    kernel.selections
                );
                assert!(
                    says("global stores"),
                    "{}: {:?}",
                    case.name,
                    kernel.selections
                );
                if with_shared {
                    assert!(
                        says("shared stores"),
                        "{}: {:?}",
                        case.name,
                        kernel.selections
                    );
                    assert!(
                        says("shared loads"),
                        "{}: {:?}",
                        case.name,
                        kernel.selections
                    );
                }
            }
        }
        let case = anybit_difftest::cases::copy_async_width_case(&mut rng, dtype);
        let verified = anybit_vm::verify(&case.program).unwrap();
        let kernel = anybit_cuda::generate(&verified, anybit_cuda::Target::Sm90a).unwrap();
        let says = |what: &str| kernel.selections.iter().any(|s| s.contains(what));
        assert!(
            says("cp.async 16 bytes"),
            "{}: {:?}",
            case.name,
            kernel.selections
        );
        assert!(
            says("shared loads"),
            "{}: {:?}",
            case.name,
            kernel.selections
        );
    }
}
