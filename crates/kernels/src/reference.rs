//! The f64 reference of the quantized product, and the comparison the tests and benchmarks use.

use crate::weight::PreparedWeight;

/// `y[m, n] = Σ_k x[m, k] · W[n, k] (+ bias[n])` in f64, with `W` the dequantized weight
/// (row-major `[n, k]`), `x` row-major `[m, k]`.
pub fn matmul_reference(
    x: &[f64],
    m: usize,
    weight: &PreparedWeight,
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let (n, k) = (weight.n, weight.k);
    let w = weight.dequantize();
    let mut y = vec![0.0; m * n];
    for row in 0..m {
        for col in 0..n {
            let dot: f64 = (0..k).map(|i| x[row * k + i] * w[col * k + i]).sum();
            y[row * n + col] = dot + bias.map_or(0.0, |b| b[col]);
        }
    }
    y
}

/// ‖got − expected‖ / ‖expected‖ (the difference's norm when `expected` is zero); NaN in `got`
/// gives infinity.
pub fn relative_error(got: &[f64], expected: &[f64]) -> f64 {
    let mut diff = 0.0;
    let mut norm = 0.0;
    for (&g, &e) in got.iter().zip(expected) {
        if !g.is_finite() {
            return f64::INFINITY;
        }
        diff += (g - e) * (g - e);
        norm += e * e;
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}
