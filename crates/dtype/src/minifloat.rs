//! Small floats `f{bits}e{E}m{M}`: one sign bit, E exponent bits, M mantissa bits.

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
    TooWide { exponent_bits: u8, mantissa_bits: u8 },
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
