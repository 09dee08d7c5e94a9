//! The example programs: their text files under `examples/` are exactly what the printer gives
//! for the builder's programs, they parse back to the same programs, and they verify.
//! Set `ANYBIT_BLESS=1` to rewrite the text files.

use std::path::PathBuf;

use anybit_vm::{examples, parse, print};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn example_files_match_the_builder() {
    let bless = std::env::var_os("ANYBIT_BLESS").is_some();
    for (file, program) in examples::all().expect("examples build") {
        let path = examples_dir().join(file);
        let text = print(&program);
        if bless {
            std::fs::write(&path, &text).expect("write example");
        }
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        assert_eq!(on_disk, text, "{file} differs from the builder's program");
        let parsed = parse(&on_disk).unwrap_or_else(|error| panic!("{file}:{error}"));
        assert_eq!(parsed, program, "{file} parses to another program");
        assert_eq!(
            print(&parsed),
            on_disk,
            "{file} does not print back the same"
        );
    }
}

#[test]
fn examples_verify() {
    for (file, program) in examples::all().expect("examples build") {
        if let Err(error) = anybit_vm::verify(&program) {
            panic!("{file}: {error}");
        }
    }
}

/// Every weight type of at most 8 bits (u1–u8, i1–i8 and every small float), group sizes 32 and
/// 128: build, print, parse back, compare, verify.
#[test]
fn quantized_matmul_for_every_weight_type() {
    let mut count = 0;
    for weight in anybit_dtype::DType::all_small() {
        for group_size in [32, 128] {
            let program = examples::quantized_matmul(weight, group_size)
                .unwrap_or_else(|error| panic!("{weight} g{group_size}: {error}"));
            let text = print(&program);
            let parsed = parse(&text).unwrap_or_else(|error| panic!("{weight}: {error}"));
            assert_eq!(parsed, program, "{weight} g{group_size}");
            assert_eq!(print(&parsed), text);
            if let Err(error) = anybit_vm::verify(&parsed) {
                panic!("{weight} g{group_size}: {error}\n{text}");
            }
            let has_zeros = text.contains("zeros: ptr<");
            assert_eq!(has_zeros, weight.is_integer() && !weight.is_signed());
            count += 1;
        }
    }
    // 8 unsigned + 8 signed + 28 small floats, two group sizes each.
    assert_eq!(count, 2 * (8 + 8 + 28));
}

#[test]
fn unsupported_example_parameters_are_errors() {
    use anybit_vm::examples::ExampleError;
    assert_eq!(
        examples::quantized_matmul(anybit_dtype::DType::Unsigned(4), 24),
        Err(ExampleError::GroupSize(24))
    );
    assert_eq!(examples::softmax(100), Err(ExampleError::RowLength(100)));
}
