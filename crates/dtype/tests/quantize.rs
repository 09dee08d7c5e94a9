//! Group-wise quantization: error within half a step, exact zero, every weight type, and clear
//! errors for bad requests.

use anybit_dtype::{
    error_report, quantize, quantize_with_search, DType, ErrorStatistics, GroupSize, QuantizeError,
    QuantizeOptions, QuantizedMatrix, ScaleSearch, Weights,
};
use half::{bf16, f16};
use proptest::prelude::*;

/// The largest distance from `code`'s value to a neighbouring value of the type, in units of
/// the type (1 for integers).
fn largest_gap_around(dtype: DType, code: u32) -> f64 {
    if dtype.is_integer() {
        return 1.0;
    }
    let value = dtype.decode(code);
    let mut values: Vec<f64> = (0..1u32 << dtype.bits())
        .map(|c| dtype.decode(c))
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let position = values.iter().position(|&v| v == value).unwrap();
    let below = position
        .checked_sub(1)
        .map(|p| value - values[p])
        .unwrap_or(0.0);
    let above = values.get(position + 1).map(|v| v - value).unwrap_or(0.0);
    below.max(above)
}

fn weight_types() -> Vec<DType> {
    DType::all_small()
        .into_iter()
        .filter(|&dtype| dtype != DType::Signed(1))
        .collect()
}

fn case() -> impl Strategy<Value = (DType, usize, usize, usize, DType, Vec<f32>)> {
    (
        proptest::sample::select(weight_types()),
        proptest::sample::select(vec![32usize, 64, 128, 256]),
        1usize..4,
        1usize..3,
        proptest::sample::select(vec![DType::F16, DType::Bf16, DType::F32]),
        -8i32..8,
    )
        .prop_flat_map(|(dtype, group, rows, groups, scale_dtype, exponent)| {
            let magnitude = 2f32.powi(exponent);
            let values = proptest::collection::vec(-magnitude..magnitude, rows * group * groups);
            (
                Just(dtype),
                Just(group),
                Just(rows),
                Just(group * groups),
                Just(scale_dtype),
                values,
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_element_is_within_half_a_step(
        (dtype, group, rows, cols, scale_dtype, values) in case()
    ) {
        let options = QuantizeOptions {
            dtype,
            group_size: GroupSize::Elements(group),
            scale_dtype,
        };
        let quantized = quantize(Weights::F32(&values), rows, cols, options).unwrap();
        prop_assert_eq!(quantized.scales.len(), rows * cols / group);
        for row in 0..rows {
            for col in 0..cols {
                let scale = quantized.scales[row * (cols / group) + col / group] as f64;
                prop_assert_eq!(scale_dtype.round(scale as f32), scale, "scale representable");
                let original = values[row * cols + col] as f64;
                let restored = quantized.dequantize_element(row, col);
                let step = largest_gap_around(dtype, quantized.code(row, col)) * scale;
                prop_assert!(
                    (original - restored).abs() <= step / 2.0 * (1.0 + 1e-9),
                    "{} at ({}, {}): {} -> {} (step {})", dtype, row, col, original, restored, step
                );
            }
        }
    }
}

#[test]
fn zero_is_exact_and_zero_groups_are_harmless() {
    for dtype in weight_types() {
        let mut values = vec![0f32; 64];
        values[32..]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = i as f32 - 10.0);
        values[40] = 0.0;
        let options = QuantizeOptions {
            dtype,
            group_size: GroupSize::Elements(32),
            scale_dtype: DType::F16,
        };
        let quantized = quantize(Weights::F32(&values), 1, 64, options).unwrap();
        let restored = quantized.dequantize();
        assert!(restored[..32].iter().all(|&v| v == 0.0), "{dtype}");
        assert_eq!(quantized.scales[0], 1.0, "all-zero group gets scale 1");
        assert_eq!(restored[40], 0.0, "{dtype}: zero inside a group");
    }
}

#[test]
fn known_example_four_bit_unsigned() {
    // One group of 32: values -1.5 .. 14 in steps of 0.5: range 15.5 over 15 levels.
    let values: Vec<f32> = (0..32).map(|i| i as f32 * 0.5 - 1.5).collect();
    let options = QuantizeOptions {
        dtype: DType::Unsigned(4),
        group_size: GroupSize::PerChannel,
        scale_dtype: DType::F32,
    };
    let quantized = quantize(Weights::F32(&values), 1, 32, options).unwrap();
    assert_eq!(quantized.group_size, 32);
    let scale = quantized.scales[0];
    // The scale is 15.5 / 15 rounded up to the next f32.
    assert!(scale as f64 >= 15.5 / 15.0 && (scale.next_down() as f64) < 15.5 / 15.0);
    // zero point = round(1.5 / scale) = 1
    assert_eq!(quantized.zero_points, Some(vec![1]));
    assert_eq!(quantized.code(0, 0), 0);
    assert_eq!(quantized.code(0, 31), 15);
    let report = error_report(&values, &quantized.dequantize()).unwrap();
    assert!(report.max_abs <= scale as f64 / 2.0 + 1e-6, "{report:?}");
    assert!(report.relative_frobenius > 0.0 && report.relative_frobenius < 0.1);
}

#[test]
fn half_precision_inputs_and_per_channel_groups() {
    let values: Vec<f32> = (0..96)
        .map(|i| ((i * 37) % 19) as f32 / 4.0 - 2.0)
        .collect();
    let as_f16: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
    let as_bf16: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
    let options = QuantizeOptions {
        dtype: "f6e3m2".parse().unwrap(),
        group_size: GroupSize::PerChannel,
        scale_dtype: DType::Bf16,
    };
    let from_f32 = quantize(Weights::F32(&values), 2, 48, options).unwrap();
    let from_f16 = quantize(Weights::F16(&as_f16), 2, 48, options).unwrap();
    let from_bf16 = quantize(Weights::Bf16(&as_bf16), 2, 48, options).unwrap();
    // These values are exact in f16 and bf16, so all three agree.
    assert_eq!(from_f32, from_f16);
    assert_eq!(from_f32, from_bf16);
    assert_eq!(from_f32.scales.len(), 2);
    assert!(from_f32.zero_points.is_none());
}

#[test]
fn error_report_values() {
    let report = error_report(&[3.0, 4.0], &[3.0, 3.0]).unwrap();
    assert_eq!(report.max_abs, 1.0);
    assert_eq!(report.relative_frobenius, 0.2);
    assert_eq!(
        error_report(&[0.0], &[0.0]).unwrap().relative_frobenius,
        0.0
    );
    assert!(error_report(&[1.0], &[]).is_err());
}

#[test]
fn bad_requests_are_clear_errors() {
    let values = vec![1.0f32; 96];
    let options = |dtype: &str, group_size, scale: DType| QuantizeOptions {
        dtype: dtype.parse().unwrap(),
        group_size,
        scale_dtype: scale,
    };
    let message = |result: Result<_, QuantizeError>| result.unwrap_err().to_string();
    let u4_32 = options("u4", GroupSize::Elements(32), DType::F16);
    assert_eq!(
        message(quantize(
            Weights::F32(&[]),
            2,
            0,
            options("u4", GroupSize::PerChannel, DType::F16)
        )),
        "the matrix has no columns (K = 0), so a group per row (per-channel) has no elements"
    );
    assert!(message(quantize(
        Weights::F32(&values),
        1,
        96,
        options("u4", GroupSize::Elements(48), DType::F16)
    ))
    .contains("valid group sizes are 16, 32, 64, 128, 256 and per-channel"));
    assert!(message(quantize(Weights::F32(&values), 3, 48, u4_32))
        .contains("96 values, but 3×48 = 144 were expected"));
    assert!(message(quantize(
        Weights::F32(&values),
        1,
        96,
        options("i1", GroupSize::PerChannel, DType::F16)
    ))
    .contains("use u1"));
    assert!(message(quantize(
        Weights::F32(&values),
        1,
        96,
        options("u16", GroupSize::PerChannel, DType::F16)
    ))
    .contains("at most 8 bits"));
    assert!(message(quantize(
        Weights::F32(&values),
        1,
        96,
        options("u4", GroupSize::PerChannel, DType::Unsigned(8))
    ))
    .contains("f16, bf16 or f32, not u8"));
    let mut with_nan = values.clone();
    with_nan[50] = f32::NAN;
    assert!(message(quantize(
        Weights::F32(&with_nan),
        2,
        48,
        options("u4", GroupSize::PerChannel, DType::F16)
    ))
    .contains("row 1, column 2 is NaN"));
    let huge = vec![1e30f32; 32];
    assert!(message(quantize(
        Weights::F32(&huge),
        1,
        32,
        options("u8", GroupSize::PerChannel, DType::F16)
    ))
    .contains("beyond the largest f16"));
}

/// The squared error of each group, computed from the dequantized elements in f64.
fn group_squared_errors(quantized: &QuantizedMatrix, values: &[f32]) -> Vec<f64> {
    let groups = quantized.groups_per_row();
    let mut errors = vec![0f64; quantized.rows * groups];
    for row in 0..quantized.rows {
        for col in 0..quantized.cols {
            let difference =
                quantized.dequantize_element(row, col) - values[row * quantized.cols + col] as f64;
            errors[row * groups + col / quantized.group_size] += difference * difference;
        }
    }
    errors
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// The search starts from the round-to-nearest levels and only takes strictly better ones,
    /// so no group ends up worse, for every weight type, group size and scale type.
    #[test]
    fn mse_search_is_never_worse_than_round_to_nearest(
        (dtype, group, rows, cols, scale_dtype, values) in case(),
        outlier in proptest::option::of((0usize..1024, -64f32..64.0)),
    ) {
        let mut values = values;
        if let Some((index, factor)) = outlier {
            // A large weight in one group is where shrinking the range pays off.
            let index = index % values.len();
            values[index] *= factor;
        }
        let options = QuantizeOptions {
            dtype,
            group_size: GroupSize::Elements(group),
            scale_dtype,
        };
        let nearest = quantize(Weights::F32(&values), rows, cols, options).unwrap();
        let searched =
            quantize_with_search(Weights::F32(&values), rows, cols, options, ScaleSearch::Mse)
                .unwrap();
        prop_assert_eq!(searched.scales.len(), nearest.scales.len());
        let nearest_errors = group_squared_errors(&nearest, &values);
        let searched_errors = group_squared_errors(&searched, &values);
        for (group, (searched, nearest)) in searched_errors.iter().zip(&nearest_errors).enumerate() {
            prop_assert!(searched <= nearest, "{}: group {}: {} > {}", dtype, group, searched, nearest);
        }
    }
}

#[test]
fn search_none_is_round_to_nearest() {
    let values: Vec<f32> = (0..256)
        .map(|i| ((i * 53) % 97) as f32 / 13.0 - 3.5)
        .collect();
    for dtype in ["u3", "i4", "f6e3m2"] {
        let options = QuantizeOptions {
            dtype: dtype.parse().unwrap(),
            group_size: GroupSize::Elements(64),
            scale_dtype: DType::F16,
        };
        let nearest = quantize(Weights::F32(&values), 2, 128, options).unwrap();
        let none = quantize_with_search(Weights::F32(&values), 2, 128, options, ScaleSearch::None)
            .unwrap();
        assert_eq!(nearest, none, "{dtype}");
    }
}

#[test]
fn mse_search_shrinks_the_range_around_an_outlier() {
    // One group of 32: small values (0 to 1.75) and one outlier of 10. At u2 the
    // round-to-nearest scale 10/3 leaves the small values only the levels 0 and 3.33; a shrunk
    // range gives them finer steps at the outlier's expense, with less error overall.
    let mut values: Vec<f32> = (0..32).map(|i| (i % 8) as f32 * 0.25).collect();
    values[5] = 10.0;
    let options = QuantizeOptions {
        dtype: DType::Unsigned(2),
        group_size: GroupSize::PerChannel,
        scale_dtype: DType::F32,
    };
    let nearest = quantize(Weights::F32(&values), 1, 32, options).unwrap();
    let searched =
        quantize_with_search(Weights::F32(&values), 1, 32, options, ScaleSearch::Mse).unwrap();
    let nearest_error = group_squared_errors(&nearest, &values)[0];
    let searched_error = group_squared_errors(&searched, &values)[0];
    assert!(
        searched_error < nearest_error * 0.9,
        "{searched_error} vs {nearest_error}"
    );
    assert!(searched.scales[0] < nearest.scales[0]);
    // The round-to-nearest scale is 10/3 rounded up to f32: [0, 10] in 3 steps.
    let scale = nearest.scales[0];
    assert!(scale as f64 >= 10.0 / 3.0 && (scale.next_down() as f64) < 10.0 / 3.0);
    assert_eq!(nearest.zero_points, Some(vec![0]));
}

#[test]
fn error_statistics_in_parts_equal_the_whole() {
    let original: Vec<f32> = (0..100).map(|i| i as f32 * 0.37 - 11.0).collect();
    let approximation: Vec<f32> = original.iter().map(|v| (v * 2.0).round() / 2.0).collect();
    let whole = error_report(&original, &approximation).unwrap();
    let mut statistics = ErrorStatistics::default();
    for (part, approximate_part) in original.chunks(30).zip(approximation.chunks(30)) {
        statistics.add(part, approximate_part).unwrap();
    }
    assert_eq!(statistics.report(), whole);
    assert!(whole.max_abs > 0.2 && whole.max_abs <= 0.25, "{whole:?}");
    assert!(statistics.add(&[1.0], &[]).is_err());
}

/// The codes of a quantized matrix, one per element, row-major.
fn all_codes(quantized: &QuantizedMatrix) -> Vec<u32> {
    (0..quantized.rows)
        .flat_map(|row| (0..quantized.cols).map(move |col| quantized.code(row, col)))
        .collect()
}

/// A `[rows, cols]` matrix with a short last group (cols = whole groups + a remainder of 1 to
/// group − 1), its search, and an optional outlier (where a shrunk range pays).
#[allow(clippy::type_complexity)]
fn short_group_case(
) -> impl Strategy<Value = (DType, usize, usize, usize, DType, ScaleSearch, Vec<f32>)> {
    (
        proptest::sample::select(weight_types()),
        proptest::sample::select(GroupSize::VALID.to_vec()),
        1usize..4,
        0usize..3,
        proptest::sample::select(vec![DType::F16, DType::Bf16, DType::F32]),
        proptest::sample::select(vec![ScaleSearch::None, ScaleSearch::Mse]),
        -8i32..8,
        any::<prop::sample::Index>(),
    )
        .prop_flat_map(
            |(dtype, group, rows, whole, scale_dtype, search, exponent, remainder)| {
                let cols = whole * group + 1 + remainder.index(group - 1);
                let magnitude = 2f32.powi(exponent);
                let values = proptest::collection::vec(-magnitude..magnitude, rows * cols);
                (
                    Just(dtype),
                    Just(group),
                    Just(rows),
                    Just(cols),
                    Just(scale_dtype),
                    Just(search),
                    values,
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    /// A short last group quantizes exactly as the same group padded with zeros to the full
    /// size, the padding then dropped: the same scales and zero points bit for bit, the same
    /// codes, the same dequantized values; for every weight type (signed, unsigned with zero
    /// points, small floats), group size, scale type and both searches.
    #[test]
    fn a_short_last_group_is_the_group_padded_with_zeros(
        (dtype, group, rows, cols, scale_dtype, search, values) in short_group_case(),
        outlier in proptest::option::of((0usize..4096, -64f32..64.0)),
    ) {
        let mut values = values;
        if let Some((index, factor)) = outlier {
            let index = index % values.len();
            values[index] *= factor;
        }
        let padded_cols = cols.div_ceil(group) * group;
        let mut padded = vec![0f32; rows * padded_cols];
        for row in 0..rows {
            padded[row * padded_cols..][..cols].copy_from_slice(&values[row * cols..][..cols]);
        }
        let options = QuantizeOptions {
            dtype,
            group_size: GroupSize::Elements(group),
            scale_dtype,
        };
        let short = quantize_with_search(Weights::F32(&values), rows, cols, options, search)
            .unwrap();
        let whole = quantize_with_search(Weights::F32(&padded), rows, padded_cols, options, search)
            .unwrap();
        prop_assert_eq!(short.groups_per_row(), padded_cols / group);
        prop_assert_eq!(short.scales.len(), rows * cols.div_ceil(group));
        let bits = |scales: &[f32]| scales.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&short.scales), bits(&whole.scales));
        prop_assert_eq!(&short.zero_points, &whole.zero_points);
        let dropped = |all: Vec<u32>| -> Vec<u32> {
            all.chunks(padded_cols).flat_map(|row| row[..cols].to_vec()).collect()
        };
        prop_assert_eq!(all_codes(&short), dropped(all_codes(&whole)));
        let restored = short.dequantize();
        let whole_restored = whole.dequantize();
        let whole_dropped: Vec<f32> = whole_restored
            .chunks(padded_cols)
            .flat_map(|row| row[..cols].to_vec())
            .collect();
        prop_assert_eq!(bits(&restored), bits(&whole_dropped));
        for row in 0..rows {
            for col in 0..cols {
                prop_assert_eq!(
                    restored[row * cols + col],
                    short.dequantize_element(row, col) as f32
                );
            }
        }
    }
}

#[test]
fn a_short_last_group_of_eight_unsigned() {
    // K = 40 in groups of 32: two groups per row, the second of 8 elements.
    let first: Vec<f32> = (0..32).map(|i| i as f32 * 0.5 - 1.5).collect();
    let last = [-2.0f32, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    let row: Vec<f32> = first.iter().chain(&last).copied().collect();
    // Row 1 is row 0 negated: its groups' ranges are [-14, 1.5] and [-5, 2].
    let values: Vec<f32> = row
        .iter()
        .chain(&row)
        .enumerate()
        .map(|(i, &v)| if i < 40 { v } else { -v })
        .collect();
    let options = QuantizeOptions {
        dtype: DType::Unsigned(4),
        group_size: GroupSize::Elements(32),
        scale_dtype: DType::F32,
    };
    let quantized = quantize(Weights::F32(&values), 2, 40, options).unwrap();
    assert_eq!((quantized.group_size, quantized.groups_per_row()), (32, 2));
    assert_eq!(quantized.scales.len(), 4);
    // Each scale is the group's range over 15 levels, rounded up to the next f32.
    for (scale, range) in quantized.scales.iter().zip([15.5, 7.0, 15.5, 7.0]) {
        let exact = range / 15.0;
        assert!(
            *scale as f64 >= exact && (scale.next_down() as f64) < exact,
            "{scale} for {range}"
        );
    }
    // Zero points round(-min / scale): 1.5/(15.5/15) → 1, 2/(7/15) → 4, 14/(15.5/15) → 14,
    // 5/(7/15) → 11.
    assert_eq!(quantized.zero_points, Some(vec![1, 4, 14, 11]));
    let codes: Vec<u32> = (32..40).map(|col| quantized.code(0, col)).collect();
    // round(v / (7/15)) + 4 for v = -2..5.
    assert_eq!(codes, [0, 2, 4, 6, 8, 10, 13, 15]);
    let codes: Vec<u32> = (32..40).map(|col| quantized.code(1, col)).collect();
    // round(v / (7/15)) + 11 for v = 2, 1, …, -5: 4.29 → 4, -6.43 → -6, -10.71 → -11.
    assert_eq!(codes, [15, 13, 11, 9, 7, 5, 2, 0]);
    let restored = quantized.dequantize();
    let scale = quantized.scales[1] as f64;
    assert_eq!(restored[32], ((0.0 - 4.0) * scale) as f32);
    assert_eq!(restored[39], ((15.0 - 4.0) * scale) as f32);
    assert_eq!(
        restored[79],
        ((0.0 - 11.0) * quantized.scales[3] as f64) as f32
    );
    for (index, (&original, &value)) in values.iter().zip(&restored).enumerate() {
        let scale = quantized.scales[index / 40 * 2 + index % 40 / 32];
        assert!(
            (original - value).abs() <= scale / 2.0 * (1.0 + 1e-6),
            "{index}: {original} -> {value}"
        );
    }
}

#[test]
fn a_short_last_group_of_signed_and_float_types() {
    // K = 40, group 32: the last group [-2, 5] is scaled on its own.
    let mut values: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    values.extend([-2.0f32, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let options = |dtype: &str| QuantizeOptions {
        dtype: dtype.parse().unwrap(),
        group_size: GroupSize::Elements(32),
        scale_dtype: DType::F32,
    };
    let i4 = quantize(Weights::F32(&values), 1, 40, options("i4")).unwrap();
    // i4 levels -8..7: the scale covers max(5/7, 2/8) = 5/7 (rounded up); the first group's
    // covers max(15/7, 16/8) = 15/7.
    assert!(i4.scales[1] as f64 >= 5.0 / 7.0 && (i4.scales[1].next_down() as f64) < 5.0 / 7.0);
    assert!(i4.scales[0] as f64 >= 15.0 / 7.0);
    let codes: Vec<i32> = (32..40)
        .map(|col| i4.dtype.decode(i4.code(0, col)) as i32)
        .collect();
    // round(v · 7/5): -2.8, -1.4, 0, 1.4, 2.8, 4.2, 5.6, 7 (ties none; the scale is a hair above
    // 5/7, so 5 gives just under 7 and rounds to 7).
    assert_eq!(codes, [-3, -1, 0, 1, 3, 4, 6, 7]);
    let e2m1 = quantize(Weights::F32(&values), 1, 40, options("f4e2m1")).unwrap();
    // f4e2m1's largest value is 6: the scale is 5/6, and 5 is the top code.
    assert!(e2m1.scales[1] as f64 >= 5.0 / 6.0 && (e2m1.scales[1].next_down() as f64) < 5.0 / 6.0);
    let restored = e2m1.dequantize();
    assert_eq!(restored[39], (6.0 * e2m1.scales[1] as f64) as f32);
    assert_eq!(restored[34], 0.0);
}

#[test]
fn a_group_larger_than_the_row_is_one_short_group() {
    // K = 40 in a group of 64: one group of 40, the same codes and scales as per channel.
    let values: Vec<f32> = (0..120)
        .map(|i| ((i * 29) % 23) as f32 / 7.0 - 1.5)
        .collect();
    for dtype in ["u3", "i5", "f6e3m2"] {
        let options = |group_size| QuantizeOptions {
            dtype: dtype.parse().unwrap(),
            group_size,
            scale_dtype: DType::F16,
        };
        for search in [ScaleSearch::None, ScaleSearch::Mse] {
            let short = quantize_with_search(
                Weights::F32(&values),
                3,
                40,
                options(GroupSize::Elements(64)),
                search,
            )
            .unwrap();
            let per_channel = quantize_with_search(
                Weights::F32(&values),
                3,
                40,
                options(GroupSize::PerChannel),
                search,
            )
            .unwrap();
            assert_eq!(short.groups_per_row(), 1);
            assert_eq!(short.group_size, 64);
            assert_eq!(
                QuantizedMatrix {
                    group_size: 40,
                    ..short.clone()
                },
                per_channel,
                "{dtype} {search:?}"
            );
            assert_eq!(short.dequantize(), per_channel.dequantize());
        }
    }
}

#[test]
fn mse_search_ties_go_to_the_first_candidate() {
    // A group whose best range is shrunk (small values and one outlier) and then a group of
    // zeros: every candidate of the zeros has error 0, so the first (the whole range, scale 1)
    // is kept, whichever candidate the group before chose.
    let mut values: Vec<f32> = (0..32).map(|i| (i % 8) as f32 * 0.25).collect();
    values[5] = 10.0;
    values.extend([0.0f32; 32]);
    for dtype in ["u2", "i3", "f4e2m1"] {
        let options = QuantizeOptions {
            dtype: dtype.parse().unwrap(),
            group_size: GroupSize::Elements(32),
            scale_dtype: DType::F32,
        };
        let nearest = quantize(Weights::F32(&values), 1, 64, options).unwrap();
        let searched =
            quantize_with_search(Weights::F32(&values), 1, 64, options, ScaleSearch::Mse).unwrap();
        assert!(
            searched.scales[0] < nearest.scales[0],
            "{dtype}: the outlier group shrinks"
        );
        assert_eq!(
            searched.scales[1], 1.0,
            "{dtype}: zeros keep the first candidate"
        );
    }
}

#[test]
fn error_statistics_of_a_quantized_matrix_are_those_of_its_dequantization() {
    // K = 40 in groups of 32 (a short last group), every kind of type.
    let values: Vec<f32> = (0..3 * 40)
        .map(|i| ((i * 37) % 29) as f32 / 5.0 - 2.7)
        .collect();
    for dtype in ["u3", "i5", "f6e3m2", "u8"] {
        let options = QuantizeOptions {
            dtype: dtype.parse().unwrap(),
            group_size: GroupSize::Elements(32),
            scale_dtype: DType::F16,
        };
        let quantized = quantize(Weights::F32(&values), 3, 40, options).unwrap();
        let mut fused = ErrorStatistics::default();
        fused.add_quantized(&values, &quantized).unwrap();
        let mut plain = ErrorStatistics::default();
        plain.add(&values, &quantized.dequantize()).unwrap();
        assert_eq!(fused, plain, "{dtype}");
        assert!(fused.report().relative_frobenius > 0.0);
        assert!(fused.add_quantized(&values[1..], &quantized).is_err());
    }
}
