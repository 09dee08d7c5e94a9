//! Acceptance test: the interpreter's quantized matmul `y = x · dequant(W)ᵀ` matches a plain
//! f64 reference for every weight type and group sizes 32 and 128, with partial tiles.
//!
//! # Tolerance
//! The reference dequantizes with `anybit_dtype` (`QuantizedMatrix::dequantize_element`, exact
//! in f64) and multiplies in f64. The program differs from it by exactly these roundings:
//! 1. the dequantized weight `(q − z)·s` is rounded to f16 (the cast of `q` and `z` to f16 and
//!    their difference are exact for every type tested: integers up to 255 and small floats
//!    with at most 5 exponent bits are f16 values): `|w̃ − w| ≤ 2⁻¹¹|w| + 2⁻²⁵`;
//! 2. each `dot` sums its k tile exactly in f64 (products of f16 values are exact) and rounds
//!    the accumulator to f32: at most `2⁻²⁴ · S` per tile, `S = Σ_k |x_k w_k|`;
//! 3. for f16 outputs, the final rounding to f16: `2⁻¹¹|y| + 2⁻²⁵`.
//!
//! So `|y − y_ref| ≤ 2⁻¹¹(1 + 2⁻¹⁰)·S + 2⁻²⁵·Σ_k|x_k| + tiles·2⁻²⁴·1.01·S` (+ `2⁻¹¹|y_ref| +
//! 2⁻²⁵` for f16 outputs). The bound is checked element by element.

mod common;

use std::time::Instant;

use anybit_dtype::{
    quantize, DType, GroupSize, MiniFloat, QuantizeOptions, QuantizedMatrix, Weights,
};
use anybit_interp::{pack_codes, pack_values, unpack_values, Arguments};
use anybit_layout::RegisterLayout;
use anybit_vm::builder::{block_x, block_y};
use anybit_vm::{examples, Program, ProgramBuilder, Unroll};
use common::{run_ok, Rng};

const F16: DType = DType::F16;

fn mini(exponent_bits: u8, mantissa_bits: u8) -> DType {
    DType::MiniFloat(MiniFloat::new(exponent_bits, mantissa_bits).expect("valid format"))
}

/// Every weight type of the acceptance test.
fn weight_types() -> Vec<DType> {
    let mut types: Vec<DType> = (1..=8).map(DType::Unsigned).collect();
    types.extend((1..=8).map(DType::Signed));
    types.extend([
        mini(1, 1),
        mini(2, 1),
        mini(1, 2),
        mini(2, 2),
        mini(3, 1),
        mini(3, 2),
        mini(2, 3),
        mini(4, 2),
        mini(4, 3),
        mini(5, 2),
    ]);
    types
}

/// Quantized weights `[n, k]`: the dtype crate's quantizer, or raw random codes with random
/// f16 scales for `i1`, which the quantizer refuses.
fn weights(rng: &mut Rng, dtype: DType, n: usize, k: usize, group: usize) -> QuantizedMatrix {
    if dtype == DType::Signed(1) {
        let codes: Vec<u32> = (0..n * k).map(|_| rng.code(dtype)).collect();
        let scales = (0..n * k / group)
            .map(|_| F16.round(rng.range(0.05, 0.5) as f32) as f32)
            .collect();
        return QuantizedMatrix {
            rows: n,
            cols: k,
            dtype,
            group_size: group,
            scale_dtype: F16,
            codes: pack_codes(dtype, &codes),
            scales,
            zero_points: None,
        };
    }
    let values: Vec<f32> = (0..n * k).map(|_| rng.normal() as f32).collect();
    let options = QuantizeOptions {
        dtype,
        group_size: GroupSize::Elements(group),
        scale_dtype: F16,
    };
    quantize(Weights::F32(&values), n, k, options).expect("quantize")
}

struct Problem {
    m: usize,
    n: usize,
    k: usize,
    x: Vec<f32>,
    w: QuantizedMatrix,
}

impl Problem {
    fn new(seed: u64, dtype: DType, group: usize, (m, n, k): (usize, usize, usize)) -> Problem {
        let mut rng = Rng::new(seed);
        let x = rng.values(F16, m * k, 1.0);
        let w = weights(&mut rng, dtype, n, k, group);
        Problem { m, n, k, x, w }
    }

    fn arguments(&self, program: &Program, output: DType) -> Arguments {
        let mut args = Arguments::new(program);
        let zeros = self.w.zero_points.as_ref();
        let set = |args: &mut Arguments| -> Result<(), anybit_interp::ArgumentError> {
            args.set("x", pack_values(F16, &self.x))?
                .set("w", self.w.codes.clone())?
                .set("scales", pack_values(F16, &self.w.scales))?
                .set("y", vec![0u8; self.m * self.n * output.bits() as usize / 8])?
                .set("m", self.m as i32)?
                .set("n", self.n as i32)?
                .set("k", self.k as i32)?;
            if let Some(zeros) = zeros {
                args.set("zeros", pack_codes(self.w.dtype, zeros))?;
            }
            Ok(())
        };
        set(&mut args).expect("arguments");
        args
    }

    /// Runs `program` and checks every output against the f64 reference; returns the largest
    /// error as a fraction of its tolerance.
    fn check(&self, program: &Program, output: DType, tile_k: usize) -> f64 {
        let mut args = self.arguments(program, output);
        run_ok(program, &mut args);
        let y = unpack_values(output, args.buffer("y").expect("y"), self.m * self.n);
        let tiles = self.k.div_ceil(tile_k) as f64;
        let mut worst: f64 = 0.0;
        let mut nonzero = 0;
        for i in 0..self.m {
            for j in 0..self.n {
                let (mut reference, mut magnitude, mut x_sum) = (0.0, 0.0, 0.0);
                for l in 0..self.k {
                    let x = self.x[i * self.k + l] as f64;
                    let term = x * self.w.dequantize_element(j, l);
                    reference += term;
                    magnitude += term.abs();
                    x_sum += x.abs();
                }
                let mut tolerance = 2f64.powi(-11) * (1.0 + 2f64.powi(-10)) * magnitude
                    + 2f64.powi(-25) * x_sum
                    + tiles * 2f64.powi(-24) * 1.01 * magnitude;
                if output == F16 {
                    tolerance += 2f64.powi(-11) * reference.abs() + 2f64.powi(-25);
                }
                let got = y[i * self.n + j];
                let error = (got - reference).abs();
                assert!(
                    error <= tolerance,
                    "{}: y[{i}, {j}] = {got}, reference {reference}, error {error:e} > {tolerance:e}",
                    program.name
                );
                worst = worst.max(error / tolerance);
                nonzero += usize::from(got != 0.0);
            }
        }
        assert!(
            nonzero > self.m * self.n / 2,
            "{}: mostly zeros",
            program.name
        );
        worst
    }
}

/// The vm crate's example for every weight type, group sizes 32 and 128; m and n are not
/// multiples of the 16×64 tile (its k tile always divides k, since k is a multiple of the
/// group size).
#[test]
fn example_matches_f64_for_every_weight_type() {
    for (index, dtype) in weight_types().into_iter().enumerate() {
        for group in [32, 128] {
            let program = examples::quantized_matmul(dtype, group)
                .map(common::verified)
                .expect("example builds");
            let problem = Problem::new(100 + index as u64, dtype, group, (20, 72, 2 * group));
            let worst = problem.check(&program, F16, group.min(64));
            eprintln!("{dtype} g{group}: worst error {worst:.3} of the tolerance");
            assert!(worst < 1.0);
        }
    }
}

/// A variant whose k tile spans two groups, so that k (an odd number of groups) is not a
/// multiple of it: the last tile is half out of bounds and must read zeros. The weight tile is
/// loaded as `[2, group, 64]` so that scales broadcast along the group, then viewed as the
/// `[2·group, 64]` operand of `dot`. The output is f32.
fn quantized_matmul_masked_k(weight: DType, group: usize) -> Program {
    let g = group as i32;
    let (bm, bn, bk) = (16, 64, 2 * group);
    let l3 = RegisterLayout::spatial(&[2, 1, bn])
        .compose(&RegisterLayout::local(&[1, group, 1]))
        .expect("layout");
    let l2 = RegisterLayout::spatial(&[2, bn])
        .compose(&RegisterLayout::local(&[group, 1]))
        .expect("layout");
    let lg = l3.reduce(1);
    let lx = RegisterLayout::spatial(&[bm, 8])
        .compose(&RegisterLayout::local(&[1, bk / 8]))
        .expect("layout");
    let ly = RegisterLayout::spatial(&[bm, 8])
        .compose(&RegisterLayout::local(&[1, bn / 8]))
        .expect("layout");
    let unsigned = matches!(weight, DType::Unsigned(_));

    let mut b = ProgramBuilder::new(&format!("qmm_masked_k_{weight}_g{group}"));
    let px = b.pointer("x", F16);
    let pw = b.pointer("w", weight);
    let ps = b.pointer("scales", F16);
    let pz = unsigned.then(|| b.pointer("zeros", weight));
    let py = b.pointer("y", DType::F32);
    let m = b.int("m");
    let n = b.int("n");
    let k = b.int("k");
    b.grid([n.clone().ceil_div(bn as i32), m.clone().ceil_div(bm as i32)])
        .threads(128);
    let m0 = b.let_("m0", block_y() * bm as i32);
    let n0 = b.let_("n0", block_x() * bn as i32);
    let groups = b.let_("groups", &k / g);
    let gx = b.view_global("gx", &px, [m.clone(), k.clone()], [k.clone(), 1.into()]);
    let gw = b.view_global(
        "gw",
        &pw,
        [groups.clone(), g.into(), n.clone()],
        [g.into(), 1.into(), k.clone()],
    );
    let group_view = [groups.clone(), 1.into(), n.clone()];
    let group_strides = [1.into(), 0.into(), groups.clone()];
    let gs = b.view_global("gs", &ps, group_view.clone(), group_strides.clone());
    let gz = pz.map(|pz| b.view_global("gz", &pz, group_view, group_strides));
    let gy = b.view_global("gy", &py, [m, n.clone()], [n, 1.into()]);
    let acc = b.alloc_register("acc", DType::F32, ly, Some(0.0.into()));
    b.for_("k0", 0, k, bk as i32, Unroll::None, |b, k0| {
        let g0 = b.let_("g0", &k0 / g);
        let xa = b.load_global("xa", &gx, [m0.clone(), k0], lx);
        let wq = b.load_global("wq", &gw, [g0.clone(), 0.into(), n0.clone()], l3);
        let wf = b.cast("wf", &wq, F16);
        if let Some(gz) = &gz {
            let zq = b.load_global("zq", gz, [g0.clone(), 0.into(), n0.clone()], lg.clone());
            let zf = b.cast("zf", &zq, F16);
            b.sub("wf", &wf, &zf);
        }
        let scale = b.load_global("scale", &gs, [g0, 0.into(), n0.clone()], lg);
        b.mul("wf", &wf, &scale);
        let w2 = b.view("w2", &wf, F16, l2);
        b.dot("acc", &xa, &w2, &acc);
    });
    b.store_global(&gy, [m0, n0], &acc);
    b.finish()
}

#[test]
fn masked_k_tiles_match_f64_for_every_weight_type() {
    for (index, dtype) in weight_types().into_iter().enumerate() {
        for group in [32, 128] {
            let program = common::verified(quantized_matmul_masked_k(dtype, group));
            // k = 3 groups: one full tile of two groups, then one half out of bounds.
            let problem = Problem::new(300 + index as u64, dtype, group, (18, 100, 3 * group));
            let worst = problem.check(&program, DType::F32, 2 * group);
            eprintln!("{dtype} g{group}: worst error {worst:.3} of the tolerance");
            assert!(worst < 1.0);
        }
    }
}

/// The 64×256 · 256×64 quantized matmul of the vm crate's example must run well under a second
/// in a test build.
#[test]
fn example_64x256x64_is_fast() {
    for group in [32, 128] {
        let dtype = DType::Unsigned(4);
        let program = examples::quantized_matmul(dtype, group)
            .map(common::verified)
            .expect("example builds");
        let problem = Problem::new(7, dtype, group, (64, 64, 256));
        let mut args = problem.arguments(&program, F16);
        let start = Instant::now();
        run_ok(&program, &mut args);
        let elapsed = start.elapsed();
        eprintln!("quantized matmul 64x256x64, u4, group {group}: {elapsed:?}");
        assert!(
            elapsed.as_secs_f64() < 0.5,
            "64x256x64 quantized matmul took {elapsed:?}"
        );
        problem.check(&program, F16, group.min(64));
    }
}
