//! The [`DType`] enumeration: names, bit widths, and classification.
//!
//! Every type anybit computes with is one value of [`DType`]. Names parse and print
//! exactly as documented on [`DType`]; `parse(print(t)) == t` for every type.

use std::fmt;
use std::str::FromStr;

use crate::minifloat::MiniFloat;

/// A data type: an integer of 1–8, 16 or 32 bits, an IEEE or bfloat half, f32, or a small
/// float with any exponent/mantissa split.
///
/// | name            | meaning                                                        |
/// |-----------------|----------------------------------------------------------------|
/// | `u1`…`u8`, `u16`, `u32` | unsigned integer                                       |
/// | `i1`…`i8`, `i16`, `i32` | signed integer, two's complement                       |
/// | `f16`, `bf16`, `f32`    | IEEE binary16, bfloat16, IEEE binary32                 |
/// | `f{B}e{E}m{M}`          | small float: 1 sign bit, E ≥ 1 exponent bits, M ≥ 0 mantissa bits, B = 1+E+M ≤ 8 |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// Unsigned integer of the given width (1–8, 16 or 32 bits).
    Unsigned(u8),
    /// Two's-complement signed integer of the given width (1–8, 16 or 32 bits).
    Signed(u8),
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of an f32).
    Bf16,
    /// IEEE 754 binary32.
    F32,
    /// A small float `f{bits}e{E}m{M}`.
    MiniFloat(MiniFloat),
}

/// A type name that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown data type `{name}`: {reason}; valid names are u1..u8, u16, u32, i1..i8, i16, i32, \
     f16, bf16, f32, and f{{bits}}e{{E}}m{{M}} with E >= 1, M >= 0 and bits = 1+E+M <= 8 \
     (for example f4e2m1, f6e3m2, f8e4m3)"
)]
pub struct ParseDTypeError {
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

impl DType {
    /// Number of bits one element occupies.
    pub const fn bits(self) -> u32 {
        match self {
            DType::Unsigned(bits) | DType::Signed(bits) => bits as u32,
            DType::F16 | DType::Bf16 => 16,
            DType::F32 => 32,
            DType::MiniFloat(format) => format.bits(),
        }
    }

    /// True for `f16`, `bf16`, `f32` and every small float.
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DType::F16 | DType::Bf16 | DType::F32 | DType::MiniFloat(_)
        )
    }

    /// True for `u*` and `i*` types.
    pub const fn is_integer(self) -> bool {
        matches!(self, DType::Unsigned(_) | DType::Signed(_))
    }

    /// True for signed integers and every float type.
    pub const fn is_signed(self) -> bool {
        !matches!(self, DType::Unsigned(_))
    }

    /// Every type of at most 8 bits, in the order `anybit dtypes` lists them:
    /// `u1`…`u8`, `i1`…`i8`, then small floats by width, then exponent bits.
    pub fn all_small() -> Vec<DType> {
        let mut types = Vec::new();
        types.extend((1..=8).map(DType::Unsigned));
        types.extend((1..=8).map(DType::Signed));
        for bits in 2..=8u8 {
            for exponent_bits in 1..bits {
                let mantissa_bits = bits - 1 - exponent_bits;
                types.push(DType::MiniFloat(
                    MiniFloat::new(exponent_bits, mantissa_bits).expect("valid by construction"),
                ));
            }
        }
        types
    }

    /// Every type anybit knows: [`DType::all_small`] followed by the 16- and 32-bit types.
    pub fn all() -> Vec<DType> {
        let mut types = DType::all_small();
        types.extend([
            DType::Unsigned(16),
            DType::Unsigned(32),
            DType::Signed(16),
            DType::Signed(32),
            DType::F16,
            DType::Bf16,
            DType::F32,
        ]);
        types
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DType::Unsigned(bits) => write!(f, "u{bits}"),
            DType::Signed(bits) => write!(f, "i{bits}"),
            DType::F16 => f.write_str("f16"),
            DType::Bf16 => f.write_str("bf16"),
            DType::F32 => f.write_str("f32"),
            DType::MiniFloat(format) => write!(f, "{format}"),
        }
    }
}

fn parse_number(digits: &str) -> Option<u32> {
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl FromStr for DType {
    type Err = ParseDTypeError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| ParseDTypeError {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        match name {
            "f16" => return Ok(DType::F16),
            "bf16" => return Ok(DType::Bf16),
            "f32" => return Ok(DType::F32),
            _ => {}
        }
        let integer_width = |digits: &str| -> Result<u8, ParseDTypeError> {
            match parse_number(digits) {
                Some(bits @ (1..=8 | 16 | 32)) => Ok(bits as u8),
                Some(_) => Err(error("integer widths are 1 to 8, 16 and 32 bits")),
                None => Err(error("expected a bit width after the letter")),
            }
        };
        if let Some(digits) = name.strip_prefix('u') {
            return integer_width(digits).map(DType::Unsigned);
        }
        if let Some(digits) = name.strip_prefix('i') {
            return integer_width(digits).map(DType::Signed);
        }
        if let Some(rest) = name.strip_prefix('f') {
            let (bits, rest) = rest.split_once('e').ok_or_else(|| {
                error("floats other than f16 and f32 are written f{bits}e{E}m{M}")
            })?;
            let (exponent, mantissa) = rest
                .split_once('m')
                .ok_or_else(|| error("a small float name needs an `m{M}` part"))?;
            let (Some(bits), Some(exponent), Some(mantissa)) = (
                parse_number(bits),
                parse_number(exponent),
                parse_number(mantissa),
            ) else {
                return Err(error("bits, E and M must be decimal numbers"));
            };
            if exponent == 0 {
                return Err(error("a small float needs at least one exponent bit"));
            }
            if bits != 1 + exponent + mantissa {
                return Err(error(&format!(
                    "bits must equal 1 + E + M = {}",
                    1 + exponent + mantissa
                )));
            }
            if bits > 8 {
                return Err(error("small floats have at most 8 bits"));
            }
            let format = MiniFloat::new(exponent as u8, mantissa as u8)
                .map_err(|reason| error(&reason.to_string()))?;
            return Ok(DType::MiniFloat(format));
        }
        Err(error("a type name starts with u, i, f or bf"))
    }
}
