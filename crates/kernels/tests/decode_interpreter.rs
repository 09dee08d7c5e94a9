//! The decode programs on the CPU interpreter against the f64 reference: every weight width,
//! integers and small floats, with and without zero points, groups 16 to per-channel, both
//! activation types, shapes that are not multiples of the tiles, and bias.

use anybit_dtype::{DType, Weights};
use anybit_interp::{pack_values, run, unpack_values, Arguments};
use anybit_kernels::reference::{matmul_reference, relative_error};
use anybit_kernels::{
    Activation, DecodeKernel, DecodeSchedule, Group, PreparedWeight, QuantFormat, ZeroPoints,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    weight: DType,
    group: Group,
    activation: Activation,
    scale_dtype: DType,
    m: usize,
    n: usize,
    k: usize,
    bias: bool,
    schedule: DecodeSchedule,
}

const SMALL: DecodeSchedule = DecodeSchedule {
    warps: 2,
    k_warps: 1,
    tiles_per_warp: 1,
    token_tiles: 1,
    chunks_per_step: 1,
    prefetch: false,
    stages: 0,
    shared_x: false,
    blocks_per_sm: 0,
};

fn run_case(case: &Case, seed: u64) -> f64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let Case { m, n, k, .. } = *case;
    assert!(
        m <= case.schedule.max_tokens(),
        "the test asks for more tokens than the schedule takes"
    );
    let w: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let prepared = PreparedWeight::quantize(
        Weights::F32(&w),
        n,
        k,
        case.weight,
        case.group,
        case.scale_dtype,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.weight));
    let act = case.activation.dtype();
    let x: Vec<f32> = (0..m * k)
        .map(|_| act.decode(act.encode(rng.random_range(-1.0f32..1.0))) as f32)
        .collect();
    let bias: Vec<f32> = (0..n)
        .map(|_| act.decode(act.encode(rng.random_range(-1.0f32..1.0))) as f32)
        .collect();
    let kernel = DecodeKernel {
        format: prepared.format,
        activation: case.activation,
        scale_dtype: prepared.scale_dtype,
        bias: case.bias,
        schedule: case.schedule,
    };
    assert!(
        kernel.supports(k),
        "{} does not support k = {k}",
        kernel.name()
    );
    let program = kernel.program().program;
    anybit_vm::verify(&program)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", kernel.name(), anybit_vm::print(&program)));
    let mut args = Arguments::new(&program);
    args.set("x", pack_values(act, &x)).unwrap();
    args.set("w", prepared.codes.clone()).unwrap();
    args.set("scales", prepared.scales.clone()).unwrap();
    if let Some(zeros) = &prepared.zeros {
        args.set("zeros", zeros.clone()).unwrap();
    }
    if case.bias {
        args.set("bias", pack_values(act, &bias)).unwrap();
    }
    // Poison: every output element must be written.
    args.set("y", vec![0xff; m * n * 2]).unwrap();
    args.set("m", m as i32).unwrap();
    args.set("n", n as i32).unwrap();
    args.set("k", k as i32).unwrap();
    run(&program, &mut args, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
    let got = unpack_values(act, args.buffer("y").unwrap(), m * n);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let b64: Vec<f64> = bias.iter().map(|&v| v as f64).collect();
    let expected = matmul_reference(&x64, m, &prepared, case.bias.then_some(&b64[..]));
    let bad: Vec<usize> = (0..got.len()).filter(|&i| !got[i].is_finite()).collect();
    if !bad.is_empty() {
        eprintln!(
            "non-finite at {} places, first {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
    let error = relative_error(&got, &expected);
    assert!(
        error < 1e-2,
        "{}: relative error {error} (m {m}, n {n}, k {k})",
        kernel.name()
    );
    error
}

#[test]
fn every_integer_width_with_f16() {
    for bits in 1..=8u8 {
        for weight in [DType::Unsigned(bits), DType::Signed(bits)] {
            if weight == DType::Signed(1) {
                continue;
            }
            run_case(
                &Case {
                    weight,
                    group: Group::Elements(32),
                    activation: Activation::F16,
                    scale_dtype: DType::F16,
                    m: 3,
                    n: 40,
                    k: 288,
                    bias: false,
                    schedule: SMALL,
                },
                bits as u64,
            );
        }
    }
}

#[test]
fn small_floats_with_bf16_and_bias() {
    for name in [
        "f4e2m1", "f3e1m1", "f5e2m2", "f6e3m2", "f6e2m3", "f8e4m3", "f8e5m2", "f7e5m1", "f8e6m1",
    ] {
        let weight: DType = name.parse().unwrap();
        for activation in Activation::ALL {
            run_case(
                &Case {
                    weight,
                    group: Group::Elements(64),
                    activation,
                    scale_dtype: DType::F16,
                    m: 2,
                    n: 33,
                    k: 256,
                    bias: true,
                    schedule: SMALL,
                },
                7,
            );
        }
    }
}

#[test]
fn groups_from_16_to_per_channel() {
    for group in [
        Group::Elements(16),
        Group::Elements(128),
        Group::Elements(256),
        Group::PerChannel,
    ] {
        for weight in [DType::Unsigned(4), DType::Signed(3)] {
            run_case(
                &Case {
                    weight,
                    group,
                    activation: Activation::F16,
                    scale_dtype: DType::Bf16,
                    m: 5,
                    n: 17,
                    k: 512,
                    bias: false,
                    schedule: SMALL,
                },
                11,
            );
        }
    }
}

#[test]
fn groups_that_do_not_divide_k_leave_a_short_last_group() {
    // (K, group): SmolLM2's K = 576 with groups of 128 (a last group of 64), a last group of
    // 16, and one short group that is the whole row.
    let shapes = [(576, 128), (80, 64), (48, 256)];
    let schedules = [
        SMALL,
        "w2k1r1t1c2p".parse().unwrap(),
        "w1k1r2t2c1x".parse().unwrap(),
    ];
    for (k, group) in shapes {
        // i3 (bit planes: one chunk of one row tile per step) takes the first schedule.
        for (i, weight) in ["u4", "u8", "f6e3m2", "i3"].into_iter().enumerate() {
            let schedule = schedules[i % schedules.len()];
            run_case(
                &Case {
                    weight: weight.parse().unwrap(),
                    group: Group::Elements(group),
                    activation: if i % 2 == 0 {
                        Activation::F16
                    } else {
                        Activation::Bf16
                    },
                    scale_dtype: DType::F16,
                    m: schedule.max_tokens().min(9),
                    n: 24,
                    k,
                    bias: i == 1,
                    schedule,
                },
                k as u64 + i as u64,
            );
        }
    }
}

#[test]
fn schedules_with_several_tiles_chunks_prefetch_split_k_stages_and_shared_x() {
    for (tag, k) in [
        ("w1k1r2t2c2p", 448),
        ("w4k1r1t1c1p", 448),
        ("w2k1r2t2c1", 448),
        ("w2k2r1t1c1p", 512),
        ("w1k4r1t2c1", 512),
        ("w2k2r2t1c2p", 1024),
        ("w1k1r2t1c1s3", 448),
        ("w2k2r1t2c2s2", 1024),
        ("w1k1r2t4c1", 512),
        ("w2k2r1t8c2", 1024),
        ("w1k1r2t2c2px", 448),
        ("w2k2r1t2c1x", 512),
        ("w2k1r2t1c1x", 448),
        ("w1k4r1t4c1px", 1024),
        ("w2k2r1t8c2x", 1024),
        ("w1k1r2t2c1s3x", 448),
        ("w2k2r1t8c2s2x", 1024),
    ] {
        let schedule: DecodeSchedule = tag.parse().unwrap();
        for (weight, group) in [
            (DType::Unsigned(4), Group::Elements(64)),
            (DType::Signed(2), Group::Elements(16)),
            (DType::Signed(8), Group::PerChannel),
            (DType::Signed(3), Group::Elements(32)),
            (DType::Unsigned(5), Group::Elements(128)),
            (DType::Signed(6), Group::Elements(64)),
        ] {
            let format = QuantFormat::new(weight, group);
            let kernel = DecodeKernel {
                format,
                activation: Activation::F16,
                scale_dtype: DType::F16,
                bias: false,
                schedule,
            };
            if !kernel.supports(k) {
                continue; // the K split does not fit this width's chunks
            }
            run_case(
                &Case {
                    weight,
                    group,
                    activation: Activation::F16,
                    scale_dtype: DType::F16,
                    m: schedule.max_tokens().min(11),
                    n: 70,
                    k,
                    bias: true,
                    schedule,
                },
                13,
            );
        }
    }
}

#[test]
fn scaled_zero_points() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, k) = (20, 128);
    let codes: Vec<u32> = (0..n * k).map(|_| rng.random_range(0..16)).collect();
    let scales: Vec<f32> = (0..n * 2).map(|_| rng.random_range(0.01f32..0.1)).collect();
    let zeros: Vec<f32> = (0..n * 2).map(|_| rng.random_range(0.0f32..1.0)).collect();
    let format = QuantFormat {
        weight: DType::Unsigned(4),
        group: Group::Elements(64),
        zeros: ZeroPoints::Scaled,
    };
    let packed = anybit_dtype::pack(&codes, 4).unwrap();
    let prepared =
        PreparedWeight::from_parts(format, n, k, &packed, &scales, Some(&zeros), DType::F32)
            .unwrap();
    // The dequantized weight is q·s − z up to the rounding of z/s to the scale type.
    let w = prepared.dequantize();
    for row in 0..n {
        for col in 0..k {
            let g = row * 2 + col / 64;
            let exact = codes[row * k + col] as f64 * scales[g] as f64 - zeros[g] as f64;
            assert!((w[row * k + col] - exact).abs() < 1e-6, "({row}, {col})");
        }
    }
}

#[test]
fn groups_smaller_than_a_step_scale_partial_sums_or_codes() {
    // A step of 256 columns (3-, 5-bit: one chunk; 4-bit: four chunks; 6-bit: two) holds
    // several groups of 64 or 128: at one and two token tiles each group's partial sums are
    // scaled (zero points still per code: u3, u5), at four every code is.
    for (tag, groups) in [
        ("w2k1r1t1c1p", [64, 128]),
        ("w1k2r2t2c1x", [64, 128]),
        ("w2k1r1t4c1", [64, 128]),
        ("w1k1r1t1c4px", [64, 128]),
    ] {
        let schedule: DecodeSchedule = tag.parse().unwrap();
        for group in groups {
            for weight in ["u3", "u5", "i6", "i4"] {
                let weight: DType = weight.parse().unwrap();
                let case = Case {
                    weight,
                    group: Group::Elements(group),
                    activation: Activation::F16,
                    scale_dtype: DType::F16,
                    m: schedule.max_tokens().min(9),
                    n: 40,
                    k: 512,
                    bias: weight == DType::Signed(6),
                    schedule,
                };
                let kernel = DecodeKernel {
                    format: QuantFormat::new(weight, Group::Elements(group)),
                    activation: Activation::F16,
                    scale_dtype: DType::F16,
                    bias: false,
                    schedule,
                };
                if kernel.supports(512) {
                    run_case(&case, group as u64 + weight.bits() as u64);
                }
            }
        }
    }
}
