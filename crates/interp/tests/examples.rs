//! The vm crate's example programs (vector add, softmax, tiled f16 matmul), run by the
//! interpreter and compared with f64 references, at sizes that leave partial tiles.

mod common;

use anybit_dtype::DType;
use anybit_interp::{pack_values, unpack_values, Arguments};
use anybit_vm::examples;
use common::{run_ok, Rng};

const F16: DType = DType::F16;

#[test]
fn vector_add_is_exactly_rounded_and_leaves_the_tail_alone() {
    let program = examples::vector_add()
        .map(common::verified)
        .expect("example builds");
    let n = 2000; // two blocks, the second one partial
    let mut rng = Rng::new(1);
    let a = rng.values(F16, n, 10.0);
    let b = rng.values(F16, n, 10.0);
    // c has room for 16 more elements, which the program must not touch.
    let sentinel = vec![7.0f32; n + 16];
    let mut args = Arguments::new(&program);
    args.set("a", pack_values(F16, &a))
        .and_then(|args| args.set("b", pack_values(F16, &b)))
        .and_then(|args| args.set("c", pack_values(F16, &sentinel)))
        .and_then(|args| args.set("n", n as i32))
        .expect("arguments");
    run_ok(&program, &mut args);
    let c = unpack_values(F16, args.buffer("c").expect("c"), n + 16);
    for i in 0..n {
        // f16 + f16 computed in f32 and rounded to f16 is the correctly rounded sum.
        let expected = F16.round((a[i] as f64 + b[i] as f64) as f32);
        assert_eq!(c[i], expected, "element {i}: {} + {}", a[i], b[i]);
    }
    assert!(c[n..].iter().all(|&v| v == 7.0), "elements past n changed");
}

/// `blocks_per_sm` is an occupancy hint for code generation: the interpreter computes the same
/// bytes with and without it, and refuses a hint the verifier refuses.
#[test]
fn a_blocks_per_sm_hint_changes_nothing() {
    let plain = examples::vector_add()
        .map(common::verified)
        .expect("example builds");
    let mut hinted = plain.clone();
    hinted.blocks_per_sm = Some(16);
    let hinted = common::verified(hinted);
    let n = 1496; // two blocks, the second one partial
    let mut rng = Rng::new(3);
    let a = pack_values(F16, &rng.values(F16, n, 10.0));
    let b = pack_values(F16, &rng.values(F16, n, 10.0));
    let outputs: Vec<Vec<u8>> = [&plain, &hinted]
        .into_iter()
        .map(|program| {
            let mut args = Arguments::new(program);
            args.set("a", a.clone())
                .and_then(|args| args.set("b", b.clone()))
                .and_then(|args| args.set("c", vec![0xff; n * 2]))
                .and_then(|args| args.set("n", n as i32))
                .expect("arguments");
            run_ok(program, &mut args);
            args.buffer("c").expect("c").to_vec()
        })
        .collect();
    assert_eq!(outputs[0], outputs[1]);
    let mut too_many = plain.clone();
    too_many.blocks_per_sm = Some(17);
    let mut args = Arguments::new(&too_many);
    args.set("a", a)
        .and_then(|args| args.set("b", b))
        .and_then(|args| args.set("c", vec![0; n * 2]))
        .and_then(|args| args.set("n", n as i32))
        .expect("arguments");
    let error = common::run_err(&too_many, &mut args).to_string();
    assert!(
        error.contains("`blocks_per_sm(17)` with 128 threads"),
        "{error}"
    );
}

#[test]
fn softmax_matches_f64() {
    let row_len = 1024;
    let program = examples::softmax(row_len)
        .map(common::verified)
        .expect("example builds");
    let m = 6; // two blocks of 4 rows; the second has 2 rows out of bounds
    let mut rng = Rng::new(2);
    let x = rng.values(F16, m * row_len, 3.0);
    let mut args = Arguments::new(&program);
    args.set("x", pack_values(F16, &x))
        .and_then(|args| args.set("y", vec![0u8; m * row_len * 2]))
        .and_then(|args| args.set("m", m as i32))
        .expect("arguments");
    run_ok(&program, &mut args);
    let y = unpack_values(F16, args.buffer("y").expect("y"), m * row_len);
    for row in 0..m {
        let xs = &x[row * row_len..(row + 1) * row_len];
        let top = xs.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let total: f64 = xs.iter().map(|&v| (v as f64 - top).exp()).sum();
        for (col, &v) in xs.iter().enumerate() {
            let expected = (v as f64 - top).exp() / total;
            let got = y[row * row_len + col];
            // f16 output rounding (2^-11 relative, 2^-25 absolute below the normal range) plus
            // a few f32 roundings of the exponential, the sum and the quotient.
            let tolerance = expected * (2f64.powi(-11) + 2f64.powi(-20)) + 2f64.powi(-25);
            assert!(
                (got - expected).abs() <= tolerance,
                "row {row}, column {col}: {got} vs {expected}"
            );
        }
    }
}

#[test]
fn f16_matmul_matches_f64_with_partial_tiles() {
    let program = examples::matmul_f16()
        .map(common::verified)
        .expect("example builds");
    // m, n and k are not multiples of the 64×64×32 tile (n and k must be multiples of 8).
    let (m, n, k) = (70, 72, 40);
    let mut rng = Rng::new(3);
    let a = rng.values(F16, m * k, 1.0);
    let b = rng.values(F16, k * n, 1.0);
    let mut args = Arguments::new(&program);
    args.set("a", pack_values(F16, &a))
        .and_then(|args| args.set("b", pack_values(F16, &b)))
        .and_then(|args| args.set("c", vec![0u8; m * n * 2]))
        .and_then(|args| args.set("m", m as i32))
        .and_then(|args| args.set("n", n as i32))
        .and_then(|args| args.set("k", k as i32))
        .expect("arguments");
    run_ok(&program, &mut args);
    let c = unpack_values(F16, args.buffer("c").expect("c"), m * n);
    for i in 0..m {
        for j in 0..n {
            let terms = (0..k).map(|l| a[i * k + l] as f64 * b[l * n + j] as f64);
            let expected: f64 = terms.clone().sum();
            let magnitude: f64 = terms.map(f64::abs).sum();
            // Each 32-wide k tile is accumulated exactly in f64 and rounded to f32 (2^-24 of
            // the partial sum, at most `magnitude`), then the result is rounded to f16.
            let tiles = k.div_ceil(32) as f64;
            let tolerance = expected.abs() * 2f64.powi(-11)
                + tiles * magnitude * 2f64.powi(-24) * (1.0 + 2f64.powi(-11))
                + 2f64.powi(-25);
            let got = c[i * n + j];
            assert!(
                (got - expected).abs() <= tolerance,
                "c[{i}, {j}] = {got}, expected {expected}"
            );
        }
    }
}
