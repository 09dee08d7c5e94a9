//! Group-wise quantization of weight matrices.
//!
//! A matrix `W` of shape `[rows, cols]` (N×K, row-major) is cut along K into groups of
//! `group_size` consecutive elements; each group gets one scale (and, for unsigned integer
//! types, one zero point). A row has ⌈K / group_size⌉ groups: when the group size does not
//! divide K, the last group of every row is short, holding the K mod group_size elements left
//! (as GPTQ's `g_idx = k // group_size` does). A short group is quantized exactly as the
//! same group padded with zeros to the full size would be, the padding then dropped: every
//! candidate range includes 0 and 0 is exact in every type, so zeros change neither a group's
//! range nor its squared error.
//!
//! | weight type      | scheme                              | dequantized value        |
//! |------------------|-------------------------------------|--------------------------|
//! | `i2`…`i8`        | symmetric: scale = max(max⁺/(2^(n-1)-1), max⁻/2^(n-1)) | `q · scale` |
//! | small floats     | symmetric: scale = max\|w\| / max finite | `decode(q) · scale` |
//! | `u1`…`u8`        | asymmetric over [min(w,0), max(w,0)]: scale = range/(2^n-1), zero = round(-min/scale) | `(q - zero) · scale` |
//!
//! Scales are stored as f16, bf16 or f32 and rounded *up* to the storage type, so that the
//! group's extreme values still fit and every element is within half a quantization step of
//! its original (times the scale). A group of zeros gets scale 1. `i1` (values −1 and 0) cannot
//! hold a symmetric range and is refused; use `u1`.
//!
//! [`quantize`] rounds every element to the nearest level of the scale that just covers its
//! group. [`quantize_with_search`] with [`ScaleSearch::Mse`] also tries that range shrunk by each
//! factor of [`MSE_SHRINK_FACTORS`] (extremes then saturate) and keeps, per group, the candidate
//! with the least squared error; the first candidate is the round-to-nearest one and a later one
//! must be strictly better, so the search is never worse than [`quantize`] on any group.

use half::{bf16, f16};

use crate::convert::round_ties_even;
use crate::minifloat::{exp2, floor_log2, ValueRounding};
use crate::packing::{packed_bytes, read_code, read_codes, write_codes};
use crate::DType;

/// Weights to quantize: a row-major matrix in one of the activation types.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl Weights<'_> {
    fn len(&self) -> usize {
        match self {
            Weights::F32(values) => values.len(),
            Weights::F16(values) => values.len(),
            Weights::Bf16(values) => values.len(),
        }
    }

    /// Copies elements `first..first + out.len()` into `out`, exactly.
    fn copy_to(&self, first: usize, out: &mut [f64]) {
        let range = first..first + out.len();
        match self {
            Weights::F32(values) => {
                for (slot, value) in out.iter_mut().zip(&values[range]) {
                    *slot = *value as f64;
                }
            }
            Weights::F16(values) => {
                for (slot, value) in out.iter_mut().zip(&values[range]) {
                    *slot = value.to_f64();
                }
            }
            Weights::Bf16(values) => {
                for (slot, value) in out.iter_mut().zip(&values[range]) {
                    *slot = value.to_f64();
                }
            }
        }
    }
}

/// How many consecutive elements along K share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupSize {
    /// Groups of 16, 32, 64, 128 or 256 elements; the last group of a row is short when the
    /// size does not divide K.
    Elements(usize),
    /// One group per row (the whole of K).
    PerChannel,
}

impl GroupSize {
    /// The group sizes [`GroupSize::Elements`] accepts.
    pub const VALID: [usize; 5] = [16, 32, 64, 128, 256];
}

impl std::fmt::Display for GroupSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupSize::Elements(size) => write!(f, "{size}"),
            GroupSize::PerChannel => f.write_str("per-channel"),
        }
    }
}

/// What to quantize to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuantizeOptions {
    /// The weight type: any type of at most 8 bits except `i1`.
    pub dtype: DType,
    pub group_size: GroupSize,
    /// The type scales are stored in: `f16`, `bf16` or `f32`.
    pub scale_dtype: DType,
}

/// A quantization request that cannot be carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantizeError {
    #[error("the matrix has {len} values, but {rows}×{cols} = {expected} were expected")]
    ShapeMismatch {
        len: usize,
        rows: usize,
        cols: usize,
        expected: usize,
    },
    #[error("cannot compare {original} values with {approximation}: lengths differ")]
    LengthMismatch {
        original: usize,
        approximation: usize,
    },
    #[error("the matrix has no columns (K = 0), so a group per row (per-channel) has no elements")]
    NoColumns,
    #[error(
        "group size {0} is not supported; valid group sizes are 16, 32, 64, 128, 256 and per-channel"
    )]
    InvalidGroupSize(usize),
    #[error("cannot quantize to {0}: weight types are those of at most 8 bits (u1..u8, i2..i8, small floats)")]
    UnsupportedDType(DType),
    #[error("cannot quantize to i1: it holds only -1 and 0, so no symmetric range fits; use u1")]
    SignedOneBit,
    #[error("scales are stored as f16, bf16 or f32, not {0}")]
    InvalidScaleDType(DType),
    #[error("weight at row {row}, column {col} is {value}; only finite weights can be quantized")]
    NonFinite { row: usize, col: usize, value: f32 },
    #[error("the scale of row {row}, group {group} is {scale:e}, beyond the largest {scale_dtype} ({max:e}); store scales as f32")]
    ScaleOverflow {
        row: usize,
        group: usize,
        scale: f64,
        scale_dtype: DType,
        max: f64,
    },
}

/// How each group's scale (and zero point) is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleSearch {
    /// The scale that just covers the group's range: every element rounds to nearest.
    #[default]
    None,
    /// The candidate of [`MSE_SHRINK_FACTORS`] with the least squared error of the group.
    Mse,
}

/// The range shrink factors [`ScaleSearch::Mse`] tries, in this order: 1.0 (the
/// round-to-nearest scale), 0.95, …, 0.5. A factor f scales the group's range: the symmetric
/// scale becomes f·max|w| / max code, and for unsigned types the range [min, max] (which holds
/// 0) becomes [f·min, f·max], with the zero point recomputed from it.
pub const MSE_SHRINK_FACTORS: [f64; 11] =
    [1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5];

/// A quantized matrix: packed codes, one scale (and zero point) per group.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix {
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    /// Elements per group (K for per-channel); the last group of a row holds fewer when this
    /// does not divide K.
    pub group_size: usize,
    pub scale_dtype: DType,
    /// Codes of `dtype`, row-major, packed as [`crate::pack`] does (rows are not padded).
    pub codes: Vec<u8>,
    /// Scales `[rows, ⌈cols / group_size⌉]`, each exactly representable in `scale_dtype`.
    pub scales: Vec<f32>,
    /// Zero points `[rows, ⌈cols / group_size⌉]` as codes of `dtype`, for unsigned types.
    pub zero_points: Option<Vec<u32>>,
}

/// How far a dequantized matrix is from the original.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorReport {
    /// Largest absolute difference of one element.
    pub max_abs: f64,
    /// ‖original − approximation‖_F / ‖original‖_F (0 when the original is all zeros and so is
    /// the difference).
    pub relative_frobenius: f64,
}

/// Quantizes a row-major `[rows, cols]` matrix, rounding every element to nearest.
pub fn quantize(
    weights: Weights<'_>,
    rows: usize,
    cols: usize,
    options: QuantizeOptions,
) -> Result<QuantizedMatrix, QuantizeError> {
    quantize_with_search(weights, rows, cols, options, ScaleSearch::None)
}

/// Quantizes a row-major `[rows, cols]` matrix, choosing each group's scale as `search` says.
pub fn quantize_with_search(
    weights: Weights<'_>,
    rows: usize,
    cols: usize,
    options: QuantizeOptions,
    search: ScaleSearch,
) -> Result<QuantizedMatrix, QuantizeError> {
    let QuantizeOptions {
        dtype,
        group_size,
        scale_dtype,
    } = options;
    let expected = rows * cols;
    if weights.len() != expected {
        return Err(QuantizeError::ShapeMismatch {
            len: weights.len(),
            rows,
            cols,
            expected,
        });
    }
    if dtype.bits() > 8 {
        return Err(QuantizeError::UnsupportedDType(dtype));
    }
    if dtype == DType::Signed(1) {
        return Err(QuantizeError::SignedOneBit);
    }
    if !matches!(scale_dtype, DType::F16 | DType::Bf16 | DType::F32) {
        return Err(QuantizeError::InvalidScaleDType(scale_dtype));
    }
    let group_size = match group_size {
        GroupSize::PerChannel if cols == 0 => return Err(QuantizeError::NoColumns),
        GroupSize::PerChannel => cols,
        GroupSize::Elements(size) if GroupSize::VALID.contains(&size) => size,
        GroupSize::Elements(size) => return Err(QuantizeError::InvalidGroupSize(size)),
    };
    let groups_per_row = cols.div_ceil(group_size);
    let mut quantized = QuantizedMatrix {
        rows,
        cols,
        dtype,
        group_size,
        scale_dtype,
        codes: vec![0; packed_bytes(expected, dtype.bits())],
        scales: Vec::with_capacity(rows * groups_per_row),
        zero_points: matches!(dtype, DType::Unsigned(_)).then(Vec::new),
    };
    let grid = CodeGrid::new(dtype);
    let scale_type = ScaleType::new(scale_dtype);
    // The index in MSE_SHRINK_FACTORS the previous group chose.
    let mut guess = 0;
    let mut group_buffer = vec![0f64; group_size];
    let mut codes_buffer = vec![0u32; group_size];
    for row in 0..rows {
        for group_index in 0..groups_per_row {
            let start = group_index * group_size;
            let length = group_size.min(cols - start);
            let group = &mut group_buffer[..length];
            let codes = &mut codes_buffer[..length];
            let first = row * cols + start;
            weights.copy_to(first, group);
            if let Some(offset) = group.iter().position(|value| !value.is_finite()) {
                let col = start + offset;
                let value = group[offset] as f32;
                return Err(QuantizeError::NonFinite { row, col, value });
            }
            let range = GroupRange::of(group);
            let levels_for = |factor: f64| {
                GroupLevels::new(&grid, scale_type, range, factor).map_err(|scale| {
                    QuantizeError::ScaleOverflow {
                        row,
                        group: group_index,
                        scale,
                        scale_dtype,
                        max: scale_dtype.max_value(),
                    }
                })
            };
            // The whole range first (round to nearest; if any candidate's scale overflows, this
            // one's does). The search keeps the candidate of least squared error, the first of
            // them in MSE_SHRINK_FACTORS order on a tie, so a shrunk range must be strictly
            // better than the whole one.
            let mut levels = levels_for(1.0)?;
            if search == ScaleSearch::Mse {
                let mut least = levels.squared_error(&grid, group, f64::INFINITY);
                let mut best = 0;
                // The previous group's choice is tried next: neighbouring groups often choose
                // alike, and the sooner the best is known, the sooner the others stop (their
                // sums end once they reach it). The choice is the same in any order.
                let others = (1..MSE_SHRINK_FACTORS.len()).filter(|&index| index != guess);
                for index in (guess > 0).then_some(guess).into_iter().chain(others) {
                    let candidate = levels_for(MSE_SHRINK_FACTORS[index])?;
                    // A candidate before the best so far wins a tie as well.
                    let bound = if index < best { least.next_up() } else { least };
                    let error = candidate.squared_error(&grid, group, bound);
                    if error < bound {
                        (levels, least, best) = (candidate, error, index);
                    }
                }
                guess = best;
            }
            levels.codes(&grid, group, codes);
            write_codes(&mut quantized.codes, dtype.bits(), first, codes);
            quantized.scales.push(levels.scale as f32);
            if let (Some(zero_points), Some(zero)) = (&mut quantized.zero_points, levels.zero_point)
            {
                zero_points.push(zero as u32);
            }
        }
    }
    Ok(quantized)
}

/// A weight type as quantization uses it, worked out once per matrix: its extremes and the
/// value of every code. Asking [`DType`] per element (`max_value` and `decode` work the
/// values out from the format each time) made quantizing several times slower; the answers
/// are the same.
struct CodeGrid {
    dtype: DType,
    /// `dtype.decode(code)` for every code.
    values: Vec<f64>,
    max_value: f64,
    min_value: f64,
    /// For small floats: their values straight from an f64, without codes.
    rounding: Option<ValueRounding>,
}

impl CodeGrid {
    fn new(dtype: DType) -> Self {
        CodeGrid {
            dtype,
            values: (0..dtype.code_count() as u32)
                .map(|code| dtype.decode(code))
                .collect(),
            max_value: dtype.max_value(),
            min_value: dtype.min_value(),
            rounding: match dtype {
                DType::MiniFloat(format) => Some(ValueRounding::new(format)),
                _ => None,
            },
        }
    }

    fn value(&self, code: u32) -> f64 {
        self.values[code as usize]
    }
}

/// The extremes of one group, each including 0 (so that 0 is always representable).
#[derive(Clone, Copy)]
struct GroupRange {
    highest: f64,
    lowest: f64,
}

impl GroupRange {
    fn of(group: &[f64]) -> Self {
        GroupRange {
            highest: group.iter().copied().fold(0.0, f64::max),
            lowest: group.iter().copied().fold(0.0, f64::min),
        }
    }

    /// The exact (unrounded) scale that just covers the range.
    fn scale(self, grid: &CodeGrid) -> f64 {
        let GroupRange { highest, lowest } = self;
        let scale = match grid.dtype {
            DType::Unsigned(_) => (highest - lowest) / grid.max_value,
            DType::Signed(_) => (highest / grid.max_value).max(lowest / grid.min_value),
            _ => highest.max(-lowest) / grid.max_value,
        };
        if scale > 0.0 {
            scale
        } else {
            1.0
        }
    }
}

/// One group's scale (stored value) and zero point (unsigned types).
struct GroupLevels {
    scale: f64,
    zero_point: Option<f64>,
}

impl GroupLevels {
    /// The levels for the group's range shrunk by `factor` (1 for the whole range), or the
    /// exact scale that overflows `scale_dtype`.
    fn new(
        grid: &CodeGrid,
        scale_type: ScaleType,
        range: GroupRange,
        factor: f64,
    ) -> Result<Self, f64> {
        let exact_scale = range.scale(grid) * factor;
        let scale = scale_type.round_up(exact_scale).ok_or(exact_scale)?;
        let zero_point = matches!(grid.dtype, DType::Unsigned(_)).then(|| {
            let lowest = range.lowest * factor;
            round_ties_even(-lowest / scale).clamp(0.0, grid.max_value)
        });
        Ok(GroupLevels { scale, zero_point })
    }

    /// The code of `value`: round to nearest, saturating at the type's extremes.
    fn code(&self, grid: &CodeGrid, value: f64) -> u32 {
        match self.zero_point {
            Some(zero) => {
                let level = round_ties_even(value / self.scale) + zero;
                level.clamp(0.0, grid.max_value) as u32
            }
            None => match grid.rounding {
                Some(rounding) => rounding.encode(value / self.scale),
                None => grid.dtype.encode_f64(value / self.scale),
            },
        }
    }

    /// [`Self::code`] of every value, the form chosen once for the group (so that the integer
    /// forms vectorize): the same codes.
    fn codes(&self, grid: &CodeGrid, values: &[f64], out: &mut [u32]) {
        let scale = self.scale;
        let pairs = out.iter_mut().zip(values);
        match (self.zero_point, grid.dtype, grid.rounding) {
            (Some(zero), ..) => {
                let highest = grid.max_value;
                for (code, &value) in pairs {
                    let level = round_ties_even(value / scale) + zero;
                    *code = level.clamp(0.0, highest) as u32;
                }
            }
            (None, DType::Signed(_), _) => {
                // `encode_f64` of a signed type: round, saturate, two's complement (the value
                // is finite: never NaN).
                let (lowest, highest) = (grid.min_value, grid.max_value);
                let mask = grid.dtype.code_mask();
                for (code, &value) in pairs {
                    let level = round_ties_even(value / scale).clamp(lowest, highest);
                    *code = (level as i64 as u32) & mask;
                }
            }
            (None, _, Some(rounding)) => {
                for (code, &value) in pairs {
                    *code = rounding.encode(value / scale);
                }
            }
            (None, ..) => {
                for (code, &value) in pairs {
                    *code = grid.dtype.encode_f64(value / scale);
                }
            }
        }
    }

    /// The value `code` stands for, computed as [`QuantizedMatrix::dequantize_element`] does.
    fn value(&self, grid: &CodeGrid, code: u32) -> f64 {
        match self.zero_point {
            Some(zero) => (code as f64 - zero) * self.scale,
            None => grid.value(code) * self.scale,
        }
    }

    /// The sum of squared differences between the group and its dequantized codes; the search
    /// spends most of its time here. Every type takes a form without codes, the same sum:
    /// integers round and clamp in f64 (the level is the code's value, and the compiler
    /// vectorizes it), small floats round with [`ValueRounding`].
    ///
    /// A sum that reaches `bound` on the way may stop there: the result is then some value
    /// ≥ `bound` (never below it, so a comparison `< bound` decides as the whole sum would).
    fn squared_error(&self, grid: &CodeGrid, group: &[f64], bound: f64) -> f64 {
        let scale = self.scale;
        match (self.zero_point, grid.dtype) {
            (Some(zero), _) => {
                let highest = grid.max_value;
                sum_of_squares(group, bound, |value| {
                    let level = (round_ties_even(value / scale) + zero).clamp(0.0, highest);
                    (level - zero) * scale - value
                })
            }
            (None, DType::Signed(_)) => {
                let (lowest, highest) = (grid.min_value, grid.max_value);
                sum_of_squares(group, bound, |value| {
                    round_ties_even(value / scale).clamp(lowest, highest) * scale - value
                })
            }
            (None, _) => match grid.rounding {
                Some(rounding) => sum_of_squares(group, bound, |value| {
                    rounding.round(value / scale) * scale - value
                }),
                None => sum_of_squares(group, bound, |value| {
                    self.value(grid, self.code(grid, value)) - value
                }),
            },
        }
    }
}

/// Σ difference(v)² over `values`, in four partial sums (element i goes to sum i mod 4) so
/// that one addition need not wait for the previous; `(s0 + s1) + (s2 + s3)` at the end.
///
/// Every 8 elements the partial sums combined are compared with `bound`; once they reach it,
/// that value is returned. It is a lower bound of the whole sum: every term is ≥ 0, and adding
/// a non-negative number never lowers a sum in round-to-nearest arithmetic, nor does a larger
/// operand lower a rounded sum, so the whole sum would be ≥ `bound` too. (Used by the MSE
/// search, which only asks whether a candidate is strictly below the best so far; candidates
/// far from the best stop early. The sum of a candidate that does not stop is computed in the
/// same order as without a bound.)
#[inline(always)]
fn sum_of_squares(values: &[f64], bound: f64, difference: impl Fn(f64) -> f64) -> f64 {
    const CHECK: usize = 8;
    let mut sums = [0.0; 4];
    let combined = |sums: &[f64; 4]| (sums[0] + sums[1]) + (sums[2] + sums[3]);
    let blocks = values.chunks_exact(CHECK);
    let tail = blocks.remainder();
    for block in blocks {
        for chunk in block.chunks_exact(4) {
            for (sum, &value) in sums.iter_mut().zip(chunk) {
                let d = difference(value);
                *sum += d * d;
            }
        }
        let so_far = combined(&sums);
        if so_far >= bound {
            return so_far;
        }
    }
    let chunks = tail.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (sum, &value) in sums.iter_mut().zip(chunk) {
            let d = difference(value);
            *sum += d * d;
        }
    }
    for (sum, &value) in sums.iter_mut().zip(rest) {
        let d = difference(value);
        *sum += d * d;
    }
    combined(&sums)
}

/// A scale type (f16, bf16 or f32: binary floats of `mantissa_bits` stored bits) as the scales
/// are rounded up to it, worked out once per matrix.
#[derive(Clone, Copy, Debug)]
struct ScaleType {
    mantissa_bits: i32,
    /// The exponent of the smallest normal value (below it the spacing stays the same).
    min_exponent: i32,
    max_finite: f64,
}

impl ScaleType {
    fn new(dtype: DType) -> Self {
        let (mantissa_bits, min_exponent) = match dtype {
            DType::F16 => (10, -14),
            DType::Bf16 => (7, -126),
            _ => (23, -126),
        };
        ScaleType {
            mantissa_bits,
            min_exponent,
            max_finite: dtype.max_value(),
        }
    }

    /// The smallest value of the type that is ≥ `scale` (positive and finite), or `None` when
    /// that is beyond the largest finite value. Computed in f64: scaling by powers of two is
    /// exact, and in between the significand rounds up (the value the codes give: encode the
    /// scale, then step up through the codes while below it; a test holds the two together).
    fn round_up(self, scale: f64) -> Option<f64> {
        let exponent = floor_log2(scale).max(self.min_exponent);
        let significand = scale * exp2(self.mantissa_bits - exponent);
        let rounded = ceil(significand) * exp2(exponent - self.mantissa_bits);
        (rounded <= self.max_finite).then_some(rounded)
    }
}

/// The smallest integer ≥ `x`, for 0 ≤ x < 2^52, without a library call.
fn ceil(x: f64) -> f64 {
    let nearest = round_ties_even(x);
    if nearest < x {
        nearest + 1.0
    } else {
        nearest
    }
}

#[cfg(test)]
mod tests {
    use super::{DType, ScaleType};
    use proptest::prelude::*;

    /// Rounding up through the codes: encode, then the next code up while below.
    fn through_codes(scale: f64, dtype: DType) -> Option<f64> {
        let mut code = dtype.encode(scale as f32);
        while dtype.decode(code) < scale {
            code += 1;
        }
        let rounded = dtype.decode(code);
        rounded.is_finite().then_some(rounded)
    }

    fn check(scale: f64) {
        for dtype in [DType::F16, DType::Bf16, DType::F32] {
            let fast = ScaleType::new(dtype).round_up(scale).map(f64::to_bits);
            assert_eq!(
                fast,
                through_codes(scale, dtype).map(f64::to_bits),
                "{dtype} {scale:e}"
            );
        }
    }

    #[test]
    fn scales_round_up_as_through_the_codes() {
        for dtype in [DType::F16, DType::Bf16, DType::F32] {
            let max = dtype.max_value();
            for value in [
                1.0, 1e-40, 6e-8, 5.96e-8, 6.1e-5, max, 1e-300, 3e38, 3.5e38, 1e39,
            ] {
                check(value);
                check(f64::from_bits(value.to_bits() + 1));
                check(f64::from_bits(value.to_bits() - 1));
            }
        }
        // Every positive finite f16 and bf16 value and the f64 values right around it.
        let f16_values = (1..0x7c00u32).map(|code| DType::F16.decode(code));
        let bf16_values = (1..0x7f80u32).map(|code| DType::Bf16.decode(code));
        for value in f16_values.chain(bf16_values) {
            check(value);
            check(f64::from_bits(value.to_bits() + 1));
            check(f64::from_bits(value.to_bits() - 1));
            check(value * 1.0001);
        }
    }

    proptest! {
        #[test]
        fn any_positive_scale_rounds_up_as_through_the_codes(bits in 1u64..0x7ff0_0000_0000_0000) {
            check(f64::from_bits(bits));
        }
    }
}

impl QuantizedMatrix {
    /// Number of groups in one row: ⌈cols / group_size⌉ (the last one short when the group
    /// size does not divide K).
    pub fn groups_per_row(&self) -> usize {
        self.cols.div_ceil(self.group_size)
    }

    /// The code at (row, col).
    pub fn code(&self, row: usize, col: usize) -> u32 {
        read_code(&self.codes, self.dtype.bits(), row * self.cols + col)
    }

    /// The dequantized value at (row, col), computed in f64.
    pub fn dequantize_element(&self, row: usize, col: usize) -> f64 {
        let group = row * self.groups_per_row() + col / self.group_size;
        let scale = self.scales[group] as f64;
        let code = self.code(row, col);
        match &self.zero_points {
            Some(zero_points) => (code as f64 - zero_points[group] as f64) * scale,
            None => self.dtype.decode(code) * scale,
        }
    }

    /// The dequantized matrix, row-major, rounded to f32: [`Self::dequantize_element`] of
    /// every element, a group at a time.
    pub fn dequantize(&self) -> Vec<f32> {
        let grid = CodeGrid::new(self.dtype);
        let mut out = Vec::with_capacity(self.rows * self.cols);
        let mut buffer = vec![0u32; self.group_size.min(self.cols)];
        let groups_per_row = self.groups_per_row();
        for row in 0..self.rows {
            for group_in_row in 0..groups_per_row {
                let start = group_in_row * self.group_size;
                let codes = &mut buffer[..self.group_size.min(self.cols - start)];
                read_codes(
                    &self.codes,
                    self.dtype.bits(),
                    row * self.cols + start,
                    codes,
                );
                let group = row * groups_per_row + group_in_row;
                let scale = self.scales[group] as f64;
                match &self.zero_points {
                    Some(zero_points) => {
                        let zero = zero_points[group] as f64;
                        out.extend(
                            codes
                                .iter()
                                .map(|&code| ((code as f64 - zero) * scale) as f32),
                        );
                    }
                    None => out.extend(codes.iter().map(|&code| (grid.value(code) * scale) as f32)),
                }
            }
        }
        out
    }
}

/// Compares an approximation with the original, element by element.
pub fn error_report(original: &[f32], approximation: &[f32]) -> Result<ErrorReport, QuantizeError> {
    let mut statistics = ErrorStatistics::default();
    statistics.add(original, approximation)?;
    Ok(statistics.report())
}

/// Sums for an [`ErrorReport`] of a matrix compared in parts (for example row blocks), so that
/// neither the whole original nor the whole approximation needs to be in memory at once. Adding
/// the parts in order gives the same report as [`error_report`] on the whole.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStatistics {
    max_abs: f64,
    difference_squared: f64,
    original_squared: f64,
}

impl ErrorStatistics {
    /// Adds one part: equally long slices of the original and its approximation.
    pub fn add(&mut self, original: &[f32], approximation: &[f32]) -> Result<(), QuantizeError> {
        if original.len() != approximation.len() {
            return Err(QuantizeError::LengthMismatch {
                original: original.len(),
                approximation: approximation.len(),
            });
        }
        for (&a, &b) in original.iter().zip(approximation) {
            let difference = (a as f64 - b as f64).abs();
            self.max_abs = self.max_abs.max(difference);
            self.difference_squared += difference * difference;
            self.original_squared += (a as f64) * (a as f64);
        }
        Ok(())
    }

    /// Adds `original` compared with the dequantization of `quantized` (row-major, the same
    /// length): the same sums as `add(original, &quantized.dequantize())`, element by element in
    /// the same order, without making the dequantized copy.
    pub fn add_quantized(
        &mut self,
        original: &[f32],
        quantized: &QuantizedMatrix,
    ) -> Result<(), QuantizeError> {
        let count = quantized.rows * quantized.cols;
        if original.len() != count {
            return Err(QuantizeError::LengthMismatch {
                original: original.len(),
                approximation: count,
            });
        }
        let grid = CodeGrid::new(quantized.dtype);
        let (cols, group_size) = (quantized.cols, quantized.group_size);
        let groups_per_row = quantized.groups_per_row();
        let mut buffer = vec![0u32; group_size.min(cols)];
        let mut values = vec![0f32; group_size.min(cols)];
        for row in 0..quantized.rows {
            for group_in_row in 0..groups_per_row {
                let start = group_in_row * group_size;
                let length = group_size.min(cols - start);
                let first = row * cols + start;
                let codes = &mut buffer[..length];
                read_codes(&quantized.codes, quantized.dtype.bits(), first, codes);
                let group = row * groups_per_row + group_in_row;
                let scale = quantized.scales[group] as f64;
                let approximation = &mut values[..length];
                match &quantized.zero_points {
                    Some(zero_points) => {
                        let zero = zero_points[group] as f64;
                        for (value, &code) in approximation.iter_mut().zip(codes.iter()) {
                            *value = ((code as f64 - zero) * scale) as f32;
                        }
                    }
                    None => {
                        for (value, &code) in approximation.iter_mut().zip(codes.iter()) {
                            *value = (grid.value(code) * scale) as f32;
                        }
                    }
                }
                self.add(&original[first..first + length], approximation)?;
            }
        }
        Ok(())
    }

    /// Adds the sums of another part (compared separately), as if its elements followed.
    pub fn merge(&mut self, other: &ErrorStatistics) {
        self.max_abs = self.max_abs.max(other.max_abs);
        self.difference_squared += other.difference_squared;
        self.original_squared += other.original_squared;
    }

    /// The report of everything added so far.
    pub fn report(&self) -> ErrorReport {
        let relative_frobenius = if self.original_squared > 0.0 {
            (self.difference_squared / self.original_squared).sqrt()
        } else if self.difference_squared > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        ErrorReport {
            max_abs: self.max_abs,
            relative_frobenius,
        }
    }
}
