//! Every schedule the library may tune or choose is a valid program: for one weight type of
//! every width (and two small floats), M across the token-tile counts and the benchmark shapes,
//! the heuristic and every tuning candidate (quick and thorough) generate a program the verifier
//! accepts and whose tiles fit the shared memory a block may take (more with a weight ring).

use anybit_dtype::DType;
use anybit_kernels::decode::{MAX_SHARED_BYTES, MAX_STAGED_SHARED_BYTES};
use anybit_kernels::prepared::steps_per_chunk;
use anybit_kernels::{Activation, DecodeKernel, DecodeSchedule, Group, QuantFormat};

#[test]
fn every_candidate_schedule_verifies() {
    let weights = [
        DType::Unsigned(1),
        DType::Signed(2),
        DType::Unsigned(3),
        DType::Signed(4),
        DType::Unsigned(5),
        DType::Signed(6),
        DType::Signed(7),
        DType::Signed(8),
    ];
    let all: Vec<DType> = weights
        .into_iter()
        .chain(["f6e3m2", "f8e4m3"].map(|name| name.parse().unwrap()))
        .collect();
    // Two threads, one per core of the CI machine.
    let checked: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = all
            .chunks(all.len().div_ceil(2))
            .map(|part| {
                scope.spawn(move || part.iter().map(|&weight| check(weight)).sum::<usize>())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert!(checked > 300, "only {checked} schedules checked");
}

/// Checks every candidate for `weight`; returns how many.
fn check(weight: DType) -> usize {
    let mut checked = 0;
    let format = QuantFormat::new(weight, Group::Elements(128));
    let chunk_cols = 16 * steps_per_chunk(weight.bits());
    for m in [1, 16, 64] {
        for (n, k) in [(57344, 8192), (8192, 8192)] {
            let heuristic = DecodeSchedule::heuristic(m, n, k, format, Activation::F16);
            let mut candidates = DecodeSchedule::candidates(m, n, k, format, Activation::F16);
            let quick = DecodeSchedule::quick_candidates(m, n, k, format, Activation::F16);
            assert_eq!(
                quick[0], heuristic,
                "the heuristic is the first quick candidate"
            );
            assert!(quick.len() <= 13, "{} quick candidates", quick.len());
            for schedule in quick {
                if !candidates.contains(&schedule) {
                    candidates.push(schedule);
                }
            }
            assert_eq!(
                candidates[0], heuristic,
                "the heuristic is the first candidate"
            );
            for schedule in candidates {
                let kernel = DecodeKernel {
                    format,
                    activation: Activation::F16,
                    scale_dtype: DType::F16,
                    bias: false,
                    schedule,
                };
                assert!(kernel.supports(k), "{} k {k}", kernel.name());
                assert!(schedule.max_tokens() >= m, "{}", kernel.name());
                let (bytes, limit) = if schedule.stages > 0 && schedule.shared_x {
                    let bytes = schedule.block_shared_bytes(chunk_cols, weight.bits());
                    (bytes, MAX_STAGED_SHARED_BYTES)
                } else {
                    (
                        schedule.shared_bytes(chunk_cols, weight.bits()),
                        MAX_SHARED_BYTES,
                    )
                };
                assert!(bytes <= limit, "{}: {bytes} bytes", kernel.name());
                let program = kernel.program().program;
                if let Err(errors) = anybit_vm::verify(&program) {
                    panic!("{}: {errors:?}", kernel.name());
                }
                checked += 1;
            }
        }
    }
    checked
}
