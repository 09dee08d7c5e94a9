//! The buffer check every GPU launch makes (`GeneratedKernel::check_buffers`) accepts every case
//! the GPU check runs, and refuses a buffer one byte short of what a view reaches. No GPU needed:
//! the check runs before any launch.

use anybit_cuda::{generate, BufferCheckError, Target};
use anybit_difftest::cases::{all_cases, Value};
use anybit_difftest::corpus::{corpus_paths, CorpusFile};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn ints_and_lengths(values: &[Value]) -> (Vec<i32>, Vec<usize>) {
    let mut ints = Vec::new();
    let mut lengths = Vec::new();
    for value in values {
        match value {
            Value::I32(number) => ints.push(*number),
            Value::Buffer(bytes) => lengths.push(bytes.len()),
        }
    }
    (ints, lengths)
}

#[test]
fn every_gpu_check_case_passes_the_buffer_check() {
    let corpus_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../corpus");
    let mut corpus = Vec::new();
    for path in corpus_paths(&corpus_dir).unwrap() {
        corpus.extend(CorpusFile::load(&path).unwrap().cases());
    }
    let cases = all_cases(&mut StdRng::seed_from_u64(5), 300, corpus);
    let mut refused = Vec::new();
    for case in &cases {
        let verified = anybit_vm::verify(&case.program).unwrap();
        let generated = generate(&verified, Target::Sm90a).unwrap();
        let (ints, lengths) = ints_and_lengths(&case.values);
        if let Err(error) = generated.check_buffers(&ints, &lengths) {
            refused.push(format!("{}: {error}", case.name));
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn a_buffer_one_byte_short_is_refused_with_what_it_needs() {
    let program = anybit_vm::parse(
        "program p(w: ptr<u4>, y: ptr<f16>, n: i32, k: i32 multiple_of 2)
         grid(1) threads(32) {
             %gw = view_global(w, [n, k], [k, 1]);
             %gy = view_global(y, [k, n], [1, k]);
         }",
    )
    .unwrap();
    let generated = generate(&anybit_vm::verify(&program).unwrap(), Target::Sm90a).unwrap();
    // w: 5 x 8 u4 = 20 bytes; y: 8 + 4 * 8 = 40 elements of f16 = 80 bytes.
    assert_eq!(generated.check_buffers(&[5, 8], &[20, 80]), Ok(()));
    assert_eq!(
        generated.check_buffers(&[5, 8], &[19, 80]),
        Err(BufferCheckError::TooSmall {
            pointer: "w".into(),
            found: 19,
            needed: 20,
            elements: 40,
            bits: 4,
        })
    );
    let message = generated
        .check_buffers(&[5, 8], &[20, 79])
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "buffer `y` holds 79 bytes, but the program's view of it reaches 80 bytes (40 elements of 16 bits) for these arguments"
    );
    // The multiple_of promise and the argument count are checked too.
    assert!(generated.check_buffers(&[5, 7], &[20, 80]).is_err());
    assert!(matches!(
        generated.check_buffers(&[5, 8], &[20]),
        Err(BufferCheckError::BufferCount {
            expected: 2,
            got: 1
        })
    ));
}
