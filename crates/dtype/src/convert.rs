//! Conversion between codes and numbers for every [`DType`].
//!
//! A *code* is the raw bit pattern of one element, held in the low `bits()` bits of a `u32`.
//! Decoding is exact (every value of every type is an f64). Encoding from f32 rounds to nearest,
//! ties to even, and saturates; the rules for NaN and infinities are on [`DType::encode`].

use half::{bf16, f16};

use crate::minifloat::MiniFloat;
use crate::DType;

/// A value that the type cannot hold in any form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error(
        "{dtype} has no NaN, so NaN cannot be encoded (finite-only types: every code is a number)"
    )]
    NaN { dtype: DType },
}

impl DType {
    /// Mask of the bits a code of this type occupies.
    pub const fn code_mask(self) -> u32 {
        if self.bits() == 32 {
            u32::MAX
        } else {
            (1 << self.bits()) - 1
        }
    }

    /// Number of distinct codes, 2^bits.
    pub const fn code_count(self) -> u64 {
        1 << self.bits()
    }

    /// Exact value of `code`. Bits above the type's width are ignored.
    pub fn decode(self, code: u32) -> f64 {
        let code = code & self.code_mask();
        match self {
            DType::Unsigned(_) => code as f64,
            DType::Signed(bits) => sign_extend(code, bits as u32) as f64,
            DType::F16 => f16::from_bits(code as u16).to_f64(),
            DType::Bf16 => bf16::from_bits(code as u16).to_f64(),
            DType::F32 => f32::from_bits(code) as f64,
            DType::MiniFloat(format) => format.decode(code),
        }
    }

    /// Encodes an f32, rounding to nearest even.
    ///
    /// - Integers: round half to even, then clamp to the type's range; NaN gives 0.
    /// - Small floats: see [`MiniFloat::encode`] (saturation to the largest finite value; NaN
    ///   gives +0 in finite-only types).
    /// - `f16` and `bf16` follow IEEE 754: overflow gives ±infinity, NaN stays NaN.
    /// - `f32` is the identity on bits.
    pub fn encode(self, value: f32) -> u32 {
        match self {
            DType::F32 => value.to_bits(),
            _ => self.encode_f64(value as f64),
        }
    }

    /// [`DType::encode`] for an f64 input, rounded once, for integers and small floats. The
    /// 16- and 32-bit floats go through f32 first, which can round twice; callers that need
    /// exact rounding to those types pass f32 values.
    pub(crate) fn encode_f64(self, value: f64) -> u32 {
        match self {
            DType::Unsigned(_) | DType::Signed(_) => {
                if value.is_nan() {
                    return 0;
                }
                let (lowest, highest) = self.integer_range();
                let rounded = round_ties_even(value).clamp(lowest, highest);
                (rounded as i64 as u32) & self.code_mask()
            }
            DType::F16 => f16::from_f32(value as f32).to_bits() as u32,
            DType::Bf16 => bf16::from_f32(value as f32).to_bits() as u32,
            DType::F32 => (value as f32).to_bits(),
            DType::MiniFloat(format) => format.encode_f64(value),
        }
    }

    /// Like [`DType::encode`], but NaN is an error for types that cannot represent it.
    pub fn try_encode(self, value: f32) -> Result<u32, EncodeError> {
        if value.is_nan() && !self.has_nan() {
            return Err(EncodeError::NaN { dtype: self });
        }
        Ok(self.encode(value))
    }

    /// Rounds `value` to the nearest value of this type (encode, then decode).
    pub fn round(self, value: f32) -> f64 {
        self.decode(self.encode(value))
    }

    /// True when some code decodes to NaN.
    pub fn has_nan(self) -> bool {
        match self {
            DType::F16 | DType::Bf16 | DType::F32 => true,
            DType::MiniFloat(format) => format.nan_code().is_some(),
            DType::Unsigned(_) | DType::Signed(_) => false,
        }
    }

    /// True when some code decodes to infinity.
    pub fn has_infinity(self) -> bool {
        match self {
            DType::F16 | DType::Bf16 | DType::F32 => true,
            DType::MiniFloat(format) => format.infinity_code().is_some(),
            DType::Unsigned(_) | DType::Signed(_) => false,
        }
    }

    /// Largest finite value.
    pub fn max_value(self) -> f64 {
        match self {
            DType::Unsigned(_) | DType::Signed(_) => self.integer_range().1,
            DType::F16 => f16::MAX.to_f64(),
            DType::Bf16 => bf16::MAX.to_f64(),
            DType::F32 => f32::MAX as f64,
            DType::MiniFloat(format) => format.max_finite(),
        }
    }

    /// Smallest (most negative) finite value.
    pub fn min_value(self) -> f64 {
        match self {
            DType::Unsigned(_) | DType::Signed(_) => self.integer_range().0,
            _ => -self.max_value(),
        }
    }

    /// Smallest positive subnormal value of a float type; `None` for integers and for small
    /// floats without mantissa bits (whose only subnormal is zero).
    pub fn smallest_subnormal(self) -> Option<f64> {
        match self {
            DType::F16 => Some(f16::from_bits(1).to_f64()),
            DType::Bf16 => Some(bf16::from_bits(1).to_f64()),
            DType::F32 => Some(f32::from_bits(1) as f64),
            DType::MiniFloat(format) => format.smallest_subnormal(),
            DType::Unsigned(_) | DType::Signed(_) => None,
        }
    }

    /// The small-float format, if this is one.
    pub fn as_mini_float(self) -> Option<MiniFloat> {
        match self {
            DType::MiniFloat(format) => Some(format),
            _ => None,
        }
    }

    /// (lowest, highest) representable integer, for integer types; (−max, max) otherwise.
    fn integer_range(self) -> (f64, f64) {
        match self {
            DType::Unsigned(bits) => (0.0, ((1u64 << bits) - 1) as f64),
            DType::Signed(bits) => (
                -((1u64 << (bits - 1)) as f64),
                ((1u64 << (bits - 1)) - 1) as f64,
            ),
            _ => (self.min_value(), self.max_value()),
        }
    }
}

/// `x.round_ties_even()`, without the library call that `f64::round_ties_even` becomes where the
/// target has no rounding instruction (x86-64 before SSE4.1, the default target): adding 2^52
/// to a smaller magnitude leaves no fraction bits, so the addition itself rounds to nearest,
/// ties to even. From 2^52 up every f64 is an integer; NaN and infinities pass unchanged.
#[inline]
pub(crate) fn round_ties_even(x: f64) -> f64 {
    const TWO_TO_52: f64 = 4_503_599_627_370_496.0;
    let magnitude = x.abs();
    if magnitude < TWO_TO_52 {
        ((magnitude + TWO_TO_52) - TWO_TO_52).copysign(x)
    } else {
        x
    }
}

/// Two's-complement value of the low `bits` bits of `code`.
pub(crate) fn sign_extend(code: u32, bits: u32) -> i64 {
    let shift = 64 - bits;
    (((code as u64) << shift) as i64) >> shift
}

#[cfg(test)]
mod tests {
    use super::round_ties_even;
    use proptest::prelude::*;

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn rounding_matches_the_standard_library_on_ties_and_extremes() {
        let two_to_52 = 4_503_599_627_370_496.0;
        let cases = [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            1e-300,
            -1e-300,
            7.5,
            8.5,
            two_to_52 - 0.5,
            two_to_52 - 1.5,
            two_to_52,
            two_to_52 + 1.0,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::MIN_POSITIVE,
            4_503_599_627_370_495.5,
        ];
        for x in cases {
            assert!(same(round_ties_even(x), x.round_ties_even()), "{x:e}");
        }
    }

    proptest! {
        #[test]
        fn rounding_matches_the_standard_library(bits in any::<u64>(), half in -1000i64..1000) {
            let x = f64::from_bits(bits);
            prop_assert!(same(round_ties_even(x), x.round_ties_even()), "{:e}", x);
            let tie = half as f64 + 0.5;
            prop_assert_eq!(round_ties_even(tie).to_bits(), tie.round_ties_even().to_bits());
        }
    }
}
