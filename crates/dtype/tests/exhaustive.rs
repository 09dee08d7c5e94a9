//! Every code of every type up to 8 bits, checked against an independent definition.
//!
//! The reference here computes values from the textbook formula, written separately from the
//! crate's code: value = (-1)^s · 2^(e − bias) · (1 + m/2^M) for normal numbers and
//! (-1)^s · 2^(1 − bias) · m/2^M for subnormals. Rounding is checked against a table of sorted
//! neighbours: a midpoint goes to the neighbour that is an even multiple of the gap between the
//! two (IEEE roundTiesToEven), anything else to the nearer one.
//!
//! Conventions: `encode(decode(c)) == c` for every code except the NaN codes, which encode to
//! the canonical NaN (`f8e4m3`: 0x7f, `f8e5m2`: 0x7d); −0 keeps its sign.

use anybit_dtype::{DType, MiniFloat, SpecialValues};

fn reference_value(exponent_bits: u32, mantissa_bits: u32, code: u32) -> f64 {
    let bias = 2f64.powi(exponent_bits as i32 - 1) - 1.0;
    let sign = code >> (exponent_bits + mantissa_bits) & 1;
    let exponent = (code >> mantissa_bits) & ((1 << exponent_bits) - 1);
    let mantissa = (code & ((1 << mantissa_bits) - 1)) as f64;
    let fraction = mantissa / 2f64.powi(mantissa_bits as i32);
    let all_ones = (1 << exponent_bits) - 1;
    let is_e4m3 = exponent_bits == 4 && mantissa_bits == 3;
    let is_e5m2 = exponent_bits == 5 && mantissa_bits == 2;
    if is_e4m3 && exponent == all_ones && mantissa == 7.0 {
        return f64::NAN;
    }
    if is_e5m2 && exponent == all_ones {
        return if mantissa == 0.0 {
            if sign == 1 {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        } else {
            f64::NAN
        };
    }
    let magnitude = if exponent == 0 {
        2f64.powf(1.0 - bias) * fraction
    } else {
        2f64.powf(exponent as f64 - bias) * (1.0 + fraction)
    };
    if sign == 1 {
        -magnitude
    } else {
        magnitude
    }
}

fn mini_floats() -> Vec<MiniFloat> {
    DType::all_small()
        .into_iter()
        .filter_map(DType::as_mini_float)
        .collect()
}

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a == b && a.is_sign_negative() == b.is_sign_negative())
}

#[test]
fn every_small_float_code_decodes_to_the_formula() {
    for format in mini_floats() {
        let dtype = DType::MiniFloat(format);
        for code in 0..1u32 << format.bits() {
            let expected = reference_value(format.exponent_bits(), format.mantissa_bits(), code);
            let actual = dtype.decode(code);
            assert!(
                same(actual, expected),
                "{dtype} code {code}: {actual} != {expected}"
            );
        }
    }
}

#[test]
fn known_values_of_common_formats() {
    let values = |name: &str| -> Vec<f64> {
        let dtype: DType = name.parse().unwrap();
        (0..1 << dtype.bits())
            .map(|code| dtype.decode(code))
            .collect()
    };
    assert_eq!(
        values("f4e2m1")[..8],
        [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    );
    // E = 1 gives bias 0: subnormals 0 and 1, normals 2 and 3.
    assert_eq!(values("f3e1m1")[..4], [0.0, 1.0, 2.0, 3.0]);
    let max = |name: &str| name.parse::<DType>().unwrap().max_value();
    assert_eq!(max("f8e4m3"), 448.0);
    assert_eq!(max("f8e5m2"), 57344.0);
    assert_eq!(max("f6e3m2"), 28.0);
    assert_eq!(max("f6e2m3"), 7.5);
    assert_eq!(max("f4e2m1"), 6.0);
    assert_eq!(max("f5e2m2"), 7.0);
    let tiny = |name: &str| name.parse::<DType>().unwrap().smallest_subnormal();
    assert_eq!(tiny("f8e4m3"), Some(2f64.powi(-9)));
    assert_eq!(tiny("f8e5m2"), Some(2f64.powi(-16)));
    assert_eq!(tiny("f6e3m2"), Some(0.0625));
    assert_eq!(tiny("f8e7m0"), None);
    assert!(values("f8e4m3")[0x7f].is_nan());
    assert_eq!(values("f8e4m3")[0x7e], 448.0);
    assert_eq!(values("f8e5m2")[0x7c], f64::INFINITY);
    assert_eq!(values("f8e5m2")[0xfc], f64::NEG_INFINITY);
    assert!(values("f8e5m2")[0x7d].is_nan());
    // Finite-only: the all-ones exponent holds ordinary numbers.
    assert_eq!(values("f6e3m2")[0x1f], 28.0);
    assert!(values("f4e2m1")[8].is_sign_negative() && values("f4e2m1")[8] == 0.0);
}

#[test]
fn special_value_conventions() {
    for format in mini_floats() {
        let expected = match (format.exponent_bits(), format.mantissa_bits()) {
            (4, 3) => SpecialValues::NanOnly,
            (5, 2) => SpecialValues::Ieee,
            _ => SpecialValues::FiniteOnly,
        };
        assert_eq!(format.special_values(), expected, "{format}");
        let dtype = DType::MiniFloat(format);
        let codes = 0..1u32 << format.bits();
        let nans = codes.clone().filter(|&c| dtype.decode(c).is_nan()).count();
        let infinities = codes.filter(|&c| dtype.decode(c).is_infinite()).count();
        let (expected_nans, expected_infinities) = match expected {
            SpecialValues::FiniteOnly => (0, 0),
            SpecialValues::NanOnly => (2, 0),
            SpecialValues::Ieee => (6, 2),
        };
        assert_eq!(
            (nans, infinities),
            (expected_nans, expected_infinities),
            "{format}"
        );
    }
}

#[test]
fn encode_inverts_decode_for_every_code() {
    for dtype in DType::all_small() {
        for code in 0..1u32 << dtype.bits() {
            let value = dtype.decode(code);
            let encoded = dtype.encode(value as f32);
            if value.is_nan() {
                let format = dtype.as_mini_float().unwrap();
                assert_eq!(Some(encoded), format.nan_code(), "{dtype} code {code}");
            } else {
                assert_eq!(encoded, code, "{dtype}: code {code} value {value}");
            }
        }
    }
}

/// Sorted non-negative finite values of a type, with their codes.
fn positive_table(dtype: DType) -> Vec<(f64, u32)> {
    let mut table: Vec<(f64, u32)> = (0..1u32 << dtype.bits())
        .map(|code| (dtype.decode(code), code))
        .filter(|(value, _)| value.is_finite() && *value >= 0.0 && !value.is_sign_negative())
        .collect();
    table.sort_by(|a, b| a.0.total_cmp(&b.0));
    table
}

/// The code that `value` (strictly between `lower` and `upper`) must round to.
fn expected_rounding(value: f64, lower: (f64, u32), upper: (f64, u32)) -> u32 {
    let middle = (lower.0 + upper.0) / 2.0;
    if value < middle {
        lower.1
    } else if value > middle {
        upper.1
    } else {
        let gap = upper.0 - lower.0;
        if (lower.0 / gap).rem_euclid(2.0) == 0.0 {
            lower.1
        } else {
            upper.1
        }
    }
}

#[test]
fn midpoints_round_to_even_and_neighbours_to_nearest() {
    for dtype in DType::all_small() {
        let table = positive_table(dtype);
        let sign_code = match dtype {
            DType::Unsigned(_) => None,
            DType::Signed(_) => None,
            _ => Some(1u32 << (dtype.bits() - 1)),
        };
        for pair in table.windows(2) {
            let (lower, upper) = (pair[0], pair[1]);
            let middle = ((lower.0 + upper.0) / 2.0) as f32;
            assert_eq!(
                middle as f64,
                (lower.0 + upper.0) / 2.0,
                "midpoint exact in f32"
            );
            for probe in [middle, middle.next_down(), middle.next_up()] {
                let expected = expected_rounding(probe as f64, lower, upper);
                assert_eq!(dtype.encode(probe), expected, "{dtype} at {probe}");
                if let Some(sign) = sign_code {
                    assert_eq!(dtype.encode(-probe), expected | sign, "{dtype} at -{probe}");
                }
            }
        }
    }
}

#[test]
fn midpoints_of_signed_integers_round_to_even() {
    for bits in 2..=8u8 {
        let dtype = DType::Signed(bits);
        let lowest = dtype.min_value() as i64;
        let highest = dtype.max_value() as i64;
        for k in lowest..highest {
            let middle = k as f32 + 0.5;
            let expected = if k.rem_euclid(2) == 0 { k } else { k + 1 };
            let code = dtype.encode(middle);
            assert_eq!(dtype.decode(code), expected as f64, "{dtype} at {middle}");
        }
    }
}

#[test]
fn values_beyond_the_range_saturate() {
    for dtype in DType::all_small() {
        let max = dtype.max_value();
        let min = dtype.min_value();
        for beyond in [max * 1.5 + 1.0, max + 0.75, 1e30, f32::MAX as f64] {
            let code = dtype.encode(beyond as f32);
            assert_eq!(dtype.decode(code), max, "{dtype} at {beyond}");
        }
        for beyond in [min * 1.5 - 1.0, min - 0.75, -1e30, f32::MIN as f64] {
            let code = dtype.encode(beyond as f32);
            assert_eq!(dtype.decode(code), min, "{dtype} at {beyond}");
        }
        let expected_infinity = if dtype.has_infinity() {
            f64::INFINITY
        } else {
            max
        };
        assert_eq!(
            dtype.decode(dtype.encode(f32::INFINITY)),
            expected_infinity,
            "{dtype}"
        );
        let negative_infinity = dtype.decode(dtype.encode(f32::NEG_INFINITY));
        let expected = if dtype.has_infinity() {
            f64::NEG_INFINITY
        } else {
            min
        };
        assert_eq!(negative_infinity, expected, "{dtype}");
    }
}

#[test]
fn nan_is_nan_where_the_type_has_one_and_an_error_elsewhere() {
    for dtype in DType::all() {
        let checked = dtype.try_encode(f32::NAN);
        if dtype.has_nan() {
            assert!(dtype.decode(checked.unwrap()).is_nan(), "{dtype}");
        } else {
            let message = checked.unwrap_err().to_string();
            assert!(
                message.contains(&format!("{dtype} has no NaN")),
                "{message}"
            );
            assert_eq!(
                dtype.encode(f32::NAN),
                0,
                "{dtype}: unchecked NaN gives code 0"
            );
        }
    }
}

#[test]
fn tiny_values_round_to_signed_zero() {
    for format in mini_floats() {
        let dtype = DType::MiniFloat(format);
        let tiny = 1e-30f32;
        assert_eq!(dtype.encode(tiny), 0, "{dtype}");
        assert_eq!(dtype.encode(-tiny), 1 << (format.bits() - 1), "{dtype}");
    }
}

#[test]
fn integers_decode_as_twos_complement_and_clamp() {
    for bits in 1..=8u8 {
        let unsigned = DType::Unsigned(bits);
        let signed = DType::Signed(bits);
        for code in 0..1u32 << bits {
            assert_eq!(unsigned.decode(code), code as f64);
            let expected = if code >= 1 << (bits - 1) {
                code as f64 - 2f64.powi(bits as i32)
            } else {
                code as f64
            };
            assert_eq!(signed.decode(code), expected, "{signed} code {code}");
        }
        assert_eq!(unsigned.encode(-3.0), 0);
        assert_eq!(unsigned.encode(1000.0), (1 << bits) - 1);
        assert_eq!(
            signed.decode(signed.encode(-1000.0)),
            -(2f64.powi(bits as i32 - 1))
        );
    }
    assert_eq!(
        DType::Signed(16).decode(DType::Signed(16).encode(-2.5)),
        -2.0
    );
    assert_eq!(
        DType::Signed(32).decode(DType::Signed(32).encode(3e9)),
        i32::MAX as f64
    );
    assert_eq!(
        DType::Unsigned(32).decode(DType::Unsigned(32).encode(3e9)),
        3e9
    );
}

#[test]
fn sixteen_bit_floats_round_trip_every_number() {
    for dtype in [DType::F16, DType::Bf16] {
        for code in 0..=u16::MAX as u32 {
            let value = dtype.decode(code);
            if !value.is_nan() {
                assert_eq!(dtype.encode(value as f32), code, "{dtype} code {code}");
            }
        }
    }
    assert_eq!(DType::F16.max_value(), 65504.0);
    assert_eq!(DType::F16.smallest_subnormal(), Some(2f64.powi(-24)));
    assert_eq!(DType::F32.decode(1.5f32.to_bits()), 1.5);
}
