//! The decode kernels on a GPU against the f64 reference: every weight type of at most 8 bits ×
//! {f16, bf16} × group {32, 128, per channel} × M ∈ {1, 7, 16, 33, 64}, on shapes whose N and K
//! are not multiples of 128 (K odd for per-channel), zero points for half the unsigned cases, a
//! bias for half the cases, K split over warps for some, x staged in shared memory for about half; fresh random data every run, outputs
//! poisoned before each launch and checked whole. Skipped (passes with a note) without a CUDA
//! driver, as in CI; `scripts/gpu-check` runs it. `ANYBIT_DECODE_TYPES=u4,i3` restricts the
//! weight types (for the sanitizer runs).

use anybit_cuda::{Gpu, RuntimeError};
use anybit_dtype::DType;
use anybit_kernels::bench::random_weight;
use anybit_kernels::decode::MAX_SHARED_BYTES;
use anybit_kernels::gpu::{DeviceWeight, Matmul};
use anybit_kernels::prepared::steps_per_chunk;
use anybit_kernels::reference::relative_error;
use anybit_kernels::{Activation, DecodeKernel, DecodeSchedule, Group, QuantFormat, ZeroPoints};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    kernel: DecodeKernel,
    m: usize,
    n: usize,
    k: usize,
}

fn cases() -> Vec<Case> {
    let only: Option<Vec<DType>> = std::env::var("ANYBIT_DECODE_TYPES").ok().map(|list| {
        list.split(',')
            .map(|name| name.trim().parse().expect("a dtype name"))
            .collect()
    });
    let mut cases = Vec::new();
    // Zero points, bias, the scale type and a K split vary per (type, activation, group), so
    // that the M values of one token-tile count share a kernel (fewer compiles).
    let mut index = 0usize;
    for weight in DType::all_small() {
        if only.as_ref().is_some_and(|only| !only.contains(&weight)) {
            continue;
        }
        for activation in Activation::ALL {
            for (group, k) in [
                (Group::Elements(32), 352),
                (Group::Elements(128), 384),
                (Group::PerChannel, 201),
            ] {
                index += 1;
                let zeros = if matches!(weight, DType::Unsigned(_)) && index.is_multiple_of(2) {
                    ZeroPoints::Codes
                } else {
                    ZeroPoints::None
                };
                let format = QuantFormat {
                    weight,
                    group,
                    zeros,
                };
                // Every third configuration splits K over two warps, where the shape allows;
                // another third of the group-128 ones has a short last group (K = 352: two
                // whole groups and one of 96).
                let split = index.is_multiple_of(3) && group != Group::Elements(128);
                let short_group = index % 3 == 1 && group == Group::Elements(128);
                let k = if split {
                    512
                } else if short_group {
                    352
                } else {
                    k
                };
                for m in [1, 7, 16, 33, 64] {
                    let mut schedule = DecodeSchedule::heuristic(m, 72, k, format, activation);
                    if split {
                        schedule.k_warps = 2;
                    }
                    // Half of the configurations stage x in shared memory, where it fits.
                    let chunk_cols = 16 * steps_per_chunk(weight.bits());
                    let shared_x = DecodeSchedule {
                        shared_x: true,
                        ..schedule
                    };
                    if index % 4 < 2
                        && shared_x.shared_bytes(chunk_cols, weight.bits()) <= MAX_SHARED_BYTES
                    {
                        schedule = shared_x;
                    }
                    let kernel = DecodeKernel {
                        format,
                        activation,
                        // f16 cannot hold the scales of the widest-range small floats.
                        scale_dtype: if index.is_multiple_of(5) || weight.max_value() > 1e6 {
                            DType::Bf16
                        } else {
                            DType::F16
                        },
                        bias: index % 2 == 1,
                        schedule,
                    };
                    assert!(kernel.supports(k), "{} k {k}", kernel.name());
                    cases.push(Case {
                        kernel,
                        m,
                        n: 72,
                        k,
                    });
                }
            }
        }
    }
    cases
}

#[test]
fn decode_kernels_match_the_f64_reference() {
    // The cases are made (and checked to be supported) with or without a GPU.
    let cases = cases();
    let gpu = match Gpu::open(0) {
        Ok(gpu) => gpu,
        Err(RuntimeError::NoDriver) => {
            eprintln!("no CUDA driver: decode GPU test skipped");
            return;
        }
        Err(error) => panic!("{error}"),
    };
    let mut matmul = Matmul::new(&gpu);
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let mut specs: Vec<DecodeKernel> = cases.iter().map(|case| case.kernel).collect();
    specs.sort_by_key(DecodeKernel::name);
    specs.dedup();
    matmul
        .precompile(&specs, threads)
        .unwrap_or_else(|e| panic!("{e}"));
    let seed: u64 = rand::rng().random();
    eprintln!(
        "{} cases, {} kernels, seed {seed}",
        cases.len(),
        specs.len()
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = Vec::new();
    for case in &cases {
        let Case { kernel, m, n, k } = case;
        let (m, n, k) = (*m, *n, *k);
        let act = kernel.activation.dtype();
        let weight = random_weight(kernel.format, n, k, kernel.scale_dtype, &mut rng)
            .unwrap_or_else(|e| panic!("{e}"));
        let device_weight = DeviceWeight::upload(&gpu, &weight).unwrap();
        let x: Vec<f64> = (0..m * k)
            .map(|_| act.decode(act.encode(rng.random_range(-1.0f32..1.0))))
            .collect();
        let bias: Vec<f64> = (0..n)
            .map(|_| act.decode(act.encode(rng.random_range(-1.0f32..1.0))))
            .collect();
        let bytes = |values: &[f64]| -> Vec<u8> {
            values
                .iter()
                .flat_map(|&v| (act.encode(v as f32) as u16).to_le_bytes())
                .collect()
        };
        let x_device = gpu.upload(&bytes(&x)).unwrap();
        let bias_device = gpu.upload(&bytes(&bias)).unwrap();
        let y = gpu.upload(&vec![0xff; m * n * 2]).unwrap();
        matmul
            .run(
                kernel,
                &x_device,
                m,
                &device_weight,
                kernel.bias.then_some(&bias_device),
                &y,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
        let out = gpu.download(&y).unwrap();
        let got: Vec<f64> = out
            .chunks_exact(2)
            .map(|c| act.decode(u16::from_le_bytes([c[0], c[1]]) as u32))
            .collect();
        let dequantized = weight.dequantize();
        let mut expected = vec![0.0; m * n];
        for token in 0..m {
            for row in 0..n {
                let dot: f64 = (0..k)
                    .map(|i| x[token * k + i] * dequantized[row * k + i])
                    .sum();
                expected[token * n + row] = dot + if kernel.bias { bias[row] } else { 0.0 };
            }
        }
        let error = relative_error(&got, &expected);
        // NaN fails too.
        if error.is_nan() || error > 1e-2 {
            failures.push(format!(
                "{} m {m} n {n} k {k}: relative error {error:e}",
                kernel.name()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail (seed {seed}):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} cases pass", cases.len());
}
