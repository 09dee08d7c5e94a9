//! Small floats `f{bits}e{E}m{M}`: one sign bit, E exponent bits, M mantissa bits.

use crate::convert::round_ties_even;
use std::fmt;

/// The format of a small float: exponent and mantissa widths (the sign bit is implied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MiniFloat {
    exponent_bits: u8,
    mantissa_bits: u8,
}

/// A small-float format that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MiniFloatError {
    #[error("a small float needs at least one exponent bit")]
    NoExponent,
    #[error("a small float has at most 8 bits, and 1 + {exponent_bits} + {mantissa_bits} is more")]
    TooWide {
        exponent_bits: u8,
        mantissa_bits: u8,
    },
}

impl MiniFloat {
    /// The format with `exponent_bits` ≥ 1 and `1 + exponent_bits + mantissa_bits` ≤ 8.
    pub const fn new(exponent_bits: u8, mantissa_bits: u8) -> Result<Self, MiniFloatError> {
        if exponent_bits == 0 {
            return Err(MiniFloatError::NoExponent);
        }
        if 1 + exponent_bits as u32 + mantissa_bits as u32 > 8 {
            return Err(MiniFloatError::TooWide {
                exponent_bits,
                mantissa_bits,
            });
        }
        Ok(MiniFloat {
            exponent_bits,
            mantissa_bits,
        })
    }

    pub const fn exponent_bits(self) -> u32 {
        self.exponent_bits as u32
    }

    pub const fn mantissa_bits(self) -> u32 {
        self.mantissa_bits as u32
    }

    /// Total width: sign + exponent + mantissa.
    pub const fn bits(self) -> u32 {
        1 + self.exponent_bits as u32 + self.mantissa_bits as u32
    }
}

impl fmt::Display for MiniFloat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "f{}e{}m{}",
            self.bits(),
            self.exponent_bits,
            self.mantissa_bits
        )
    }
}

/// How a small float uses its all-ones exponent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialValues {
    /// Every code is a finite number (all small floats except the two 8-bit OCP formats).
    FiniteOnly,
    /// OCP E4M3FN (`f8e4m3`): only S.1111.111 is NaN, no infinity.
    NanOnly,
    /// IEEE-like (`f8e5m2`): exponent all ones is infinity (mantissa 0) or NaN.
    Ieee,
}

impl MiniFloat {
    /// Exponent bias, 2^(E-1) - 1.
    pub const fn bias(self) -> i32 {
        (1 << (self.exponent_bits - 1)) - 1
    }

    /// Which special values the format has: `f8e4m3` is OCP E4M3FN, `f8e5m2` is IEEE-like, and
    /// every other small float is finite-only.
    pub const fn special_values(self) -> SpecialValues {
        match (self.exponent_bits, self.mantissa_bits) {
            (4, 3) => SpecialValues::NanOnly,
            (5, 2) => SpecialValues::Ieee,
            _ => SpecialValues::FiniteOnly,
        }
    }

    const fn sign_mask(self) -> u32 {
        1 << (self.exponent_bits + self.mantissa_bits)
    }

    const fn exponent_field_max(self) -> u32 {
        (1 << self.exponent_bits) - 1
    }

    const fn mantissa_mask(self) -> u32 {
        (1 << self.mantissa_bits) - 1
    }

    /// The code (sign bit clear) of the largest finite value.
    pub const fn max_finite_code(self) -> u32 {
        let all_ones = self.sign_mask() - 1;
        match self.special_values() {
            SpecialValues::FiniteOnly => all_ones,
            SpecialValues::NanOnly => all_ones - 1,
            SpecialValues::Ieee => all_ones - self.mantissa_mask() - 1,
        }
    }

    /// The canonical NaN code (sign bit clear), for formats that have one.
    pub const fn nan_code(self) -> Option<u32> {
        match self.special_values() {
            SpecialValues::FiniteOnly => None,
            SpecialValues::NanOnly => Some(self.sign_mask() - 1),
            SpecialValues::Ieee => Some((self.exponent_field_max() << self.mantissa_bits) | 1),
        }
    }

    /// The code of +infinity, for the format that has one.
    pub const fn infinity_code(self) -> Option<u32> {
        match self.special_values() {
            SpecialValues::Ieee => Some(self.exponent_field_max() << self.mantissa_bits),
            _ => None,
        }
    }

    /// Smallest exponent of a normal number, 1 - bias.
    const fn min_normal_exponent(self) -> i32 {
        1 - self.bias()
    }

    /// Exact value of `code` (bits above the format's width are ignored).
    pub fn decode(self, code: u32) -> f64 {
        let code = code & (self.sign_mask() * 2 - 1);
        let sign = if code & self.sign_mask() != 0 {
            -1.0
        } else {
            1.0
        };
        let exponent_field = (code >> self.mantissa_bits) & self.exponent_field_max();
        let mantissa = code & self.mantissa_mask();
        let magnitude_code = code & (self.sign_mask() - 1);
        match self.special_values() {
            SpecialValues::NanOnly if magnitude_code == self.sign_mask() - 1 => return f64::NAN,
            SpecialValues::Ieee if exponent_field == self.exponent_field_max() => {
                return if mantissa == 0 {
                    sign * f64::INFINITY
                } else {
                    f64::NAN
                };
            }
            _ => {}
        }
        let mantissa_bits = self.mantissa_bits as i32;
        let magnitude = if exponent_field == 0 {
            mantissa as f64 * exp2(self.min_normal_exponent() - mantissa_bits)
        } else {
            let significand = (1u32 << self.mantissa_bits) + mantissa;
            significand as f64 * exp2(exponent_field as i32 - self.bias() - mantissa_bits)
        };
        sign * magnitude
    }

    /// Largest finite value.
    pub fn max_finite(self) -> f64 {
        self.decode(self.max_finite_code())
    }

    /// Smallest positive subnormal value, or `None` when the format has no mantissa bits (its
    /// only subnormal is zero).
    pub fn smallest_subnormal(self) -> Option<f64> {
        (self.mantissa_bits > 0).then(|| self.decode(1))
    }

    /// Smallest positive normal value.
    pub fn smallest_normal(self) -> f64 {
        exp2(self.min_normal_exponent())
    }

    /// Encodes `value` with round-to-nearest-even and saturation.
    ///
    /// - Finite values beyond the largest finite magnitude saturate to ±max (also in `f8e5m2`).
    /// - ±infinity becomes ±infinity in `f8e5m2` and ±max elsewhere.
    /// - NaN becomes the canonical NaN where the format has one; finite-only formats have no NaN
    ///   and get +0 (use [`crate::DType::try_encode`] to be told instead).
    /// - Ties go to the neighbour whose integer significand is even (for M ≥ 1 the even code;
    ///   for M = 0 the larger power of two), exactly as IEEE 754 roundTiesToEven does.
    /// - Results that round to zero keep the sign (-0).
    pub fn encode(self, value: f32) -> u32 {
        self.encode_f64(value as f64)
    }

    /// [`MiniFloat::encode`] for an f64 input, rounded once (no double rounding through f32).
    pub fn encode_f64(self, value: f64) -> u32 {
        if value.is_nan() {
            return self.nan_code().unwrap_or(0);
        }
        let sign = if value.is_sign_negative() {
            self.sign_mask()
        } else {
            0
        };
        if value.is_infinite() {
            return sign | self.infinity_code().unwrap_or(self.max_finite_code());
        }
        let magnitude = value.abs();
        if magnitude >= self.max_finite() {
            return sign | self.max_finite_code();
        }
        sign | self.encode_magnitude(magnitude)
    }

    /// Code of a finite magnitude below the largest finite value, rounding to nearest even.
    fn encode_magnitude(self, magnitude: f64) -> u32 {
        if magnitude == 0.0 {
            return 0;
        }
        let mantissa_bits = self.mantissa_bits as i32;
        // The binade of the value, clamped to the subnormal range: below the smallest normal
        // the spacing stays that of the first normal binade.
        let exponent = floor_log2(magnitude).max(self.min_normal_exponent());
        let quantum = exp2(exponent - mantissa_bits);
        // Exact: dividing by a power of two only changes the f64 exponent.
        let significand = round_ties_even(magnitude / quantum) as u32;
        // significand lies in [0, 2^(M+1)]; 2^(M+1) carries into the next binade, which the
        // code arithmetic below handles because codes of consecutive binades are consecutive.
        if exponent == self.min_normal_exponent() && significand < (1 << self.mantissa_bits) {
            return significand; // subnormal (or zero): exponent field 0
        }
        let exponent_field = (exponent + self.bias()) as u32;
        (exponent_field << self.mantissa_bits) + (significand - (1 << self.mantissa_bits))
    }
}

/// Encodes and rounds finite f64 values with a format's constants worked out once (quantization
/// calls these for every element and candidate scale): `encode(y)` is [`MiniFloat::encode_f64`],
/// and `round(y)` is bit for bit `decode(encode_f64(y))` (saturation and the sign of zero
/// included) without going through codes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueRounding {
    min_normal_exponent: i64,
    mantissa_bits: i64,
    max_finite: f64,
    sign_mask: u32,
    max_finite_code: u32,
}

impl ValueRounding {
    pub(crate) fn new(format: MiniFloat) -> Self {
        ValueRounding {
            min_normal_exponent: format.min_normal_exponent() as i64,
            mantissa_bits: format.mantissa_bits as i64,
            max_finite: format.max_finite(),
            sign_mask: format.sign_mask(),
            max_finite_code: format.max_finite_code(),
        }
    }

    /// The code of the finite `value`: round to nearest even, saturating; the same code as
    /// [`MiniFloat::encode_f64`], without its division and branches (quantization's last step,
    /// once per element). The significand is rounded as in [`Self::round`]; the code is then
    /// `(binade − first normal binade) · 2^M + significand`, which is the exponent field and
    /// mantissa for normal values (field 1 in the first normal binade), the mantissa alone for
    /// subnormals, and carries into the next binade when the significand rounds up to 2^(M+1).
    #[inline(always)]
    pub(crate) fn encode(self, value: f64) -> u32 {
        debug_assert!(value.is_finite());
        let sign = if value.is_sign_negative() {
            self.sign_mask
        } else {
            0
        };
        let magnitude = value.abs();
        if magnitude >= self.max_finite {
            return sign | self.max_finite_code;
        }
        let biased = ((magnitude.to_bits() >> 52) & 0x7ff) as i64;
        let exponent = (biased - 1023).max(self.min_normal_exponent);
        let up = f64::from_bits(((self.mantissa_bits - exponent + 1023) as u64) << 52);
        let significand = round_ties_even(magnitude * up) as u32;
        let binade = (exponent - self.min_normal_exponent) as u32;
        sign | ((binade << self.mantissa_bits) + significand)
    }

    /// The format's value nearest to the finite `value` (ties to even), saturating.
    #[inline(always)]
    pub(crate) fn round(self, value: f64) -> f64 {
        debug_assert!(value.is_finite());
        let magnitude = value.abs();
        // The binade, clamped to the subnormal range as in `encode_magnitude` (0 lands there).
        let biased = ((magnitude.to_bits() >> 52) & 0x7ff) as i64;
        let exponent = (biased - 1023).max(self.min_normal_exponent);
        // Scaling by 2^(M - exponent) and back is exact; in between, the significand rounds.
        let up = f64::from_bits(((self.mantissa_bits - exponent + 1023) as u64) << 52);
        let down = f64::from_bits(((exponent - self.mantissa_bits + 1023) as u64) << 52);
        let rounded = round_ties_even(magnitude * up) * down;
        let rounded = if magnitude >= self.max_finite {
            self.max_finite
        } else {
            rounded
        };
        rounded.copysign(value)
    }
}

/// 2^exponent as f64, exactly. In f64's normal range (every exponent a small float uses) it is
/// built from its bits: `powi` there made decoding and encoding the hot spot of quantization.
pub(crate) fn exp2(exponent: i32) -> f64 {
    if (-1022..=1023).contains(&exponent) {
        f64::from_bits(((exponent + 1023) as u64) << 52)
    } else {
        exp2_outside_normal_range(exponent)
    }
}

/// Kept out of line: inlined, the compiler computed `powi` on every call and then chose.
#[cold]
#[inline(never)]
fn exp2_outside_normal_range(exponent: i32) -> f64 {
    2f64.powi(exponent)
}

/// floor(log2(x)) for a positive finite x, exactly.
pub(crate) fn floor_log2(x: f64) -> i32 {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // f64 subnormal: never produced from f32 inputs, but stay exact anyway.
        let mantissa = bits & ((1 << 52) - 1);
        -1074 + (63 - mantissa.leading_zeros() as i32)
    } else {
        biased - 1023
    }
}

#[cfg(test)]
mod tests {
    use super::{exp2, MiniFloat, ValueRounding};
    use proptest::prelude::*;

    fn every_format() -> Vec<MiniFloat> {
        (1..=7u8)
            .flat_map(|e| (0..=7 - e).map(move |m| MiniFloat::new(e, m).unwrap()))
            .collect()
    }

    /// Values near every code: the code's value, the midpoints to its neighbours, one f64 step
    /// either side of each, and beyond the largest finite value.
    fn probes(format: MiniFloat) -> Vec<f64> {
        let finite: Vec<f64> = (0..=format.max_finite_code())
            .map(|c| format.decode(c))
            .collect();
        let mut values = vec![0.0, format.max_finite() * 1.5, 1e300];
        for pair in finite.windows(2) {
            let middle = (pair[0] + pair[1]) / 2.0;
            for v in [pair[0], middle, pair[1]] {
                values.extend([v, f64::from_bits(v.to_bits() + 1)]);
                if v > 0.0 {
                    values.push(f64::from_bits(v.to_bits() - 1));
                }
            }
        }
        values.iter().flat_map(|&v| [v, -v]).collect()
    }

    #[test]
    fn value_rounding_is_decode_of_encode_near_every_code_of_every_format() {
        for format in every_format() {
            let rounding = ValueRounding::new(format);
            for y in probes(format) {
                let code = format.encode_f64(y);
                assert_eq!(rounding.encode(y), code, "{format} {y:e}");
                let expected = format.decode(code);
                assert_eq!(
                    rounding.round(y).to_bits(),
                    expected.to_bits(),
                    "{format} {y:e}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn value_rounding_is_decode_of_encode(bits in any::<u64>(), pick in 0usize..28) {
            let y = f64::from_bits(bits);
            prop_assume!(y.is_finite());
            let format = every_format()[pick % every_format().len()];
            let code = format.encode_f64(y);
            prop_assert_eq!(ValueRounding::new(format).encode(y), code);
            let expected = format.decode(code);
            prop_assert_eq!(ValueRounding::new(format).round(y).to_bits(), expected.to_bits());
        }
    }

    #[test]
    fn powers_of_two_are_exact_over_the_whole_exponent_range() {
        for exponent in -1100..=1100 {
            assert_eq!(
                exp2(exponent).to_bits(),
                2f64.powi(exponent).to_bits(),
                "2^{exponent}"
            );
        }
    }
}
