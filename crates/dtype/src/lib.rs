//! Data types for anybit: every integer width from 1 to 8 bits (and 16, 32), f16, bf16, f32 and
//! small floats with any exponent/mantissa split.
//!
//! What this crate promises:
//! - [`DType`] names parse and print exactly (`parse(print(t)) == t`).
//! - [`DType::decode`] gives the exact value of every code as f64.
//! - [`DType::encode`] converts from f32 with round-to-nearest-even and saturation (see its docs
//!   for NaN, infinities and the 16-bit floats).
//! - [`pack`] stores n-bit codes little-endian, element i at bits `[i·n, (i+1)·n)`.
//! - [`quantize`] does group-wise quantization of matrices, with dequantization and error reports;
//!   [`quantize_with_search`] can search each group's scale for the least squared error.

mod convert;
mod dtype;
mod minifloat;
mod packing;
mod quantize;

pub use convert::EncodeError;
pub use dtype::{DType, ParseDTypeError};
pub use minifloat::{MiniFloat, MiniFloatError, SpecialValues};
pub use packing::{
    pack, pack_words, packed_bytes, packed_words, read_code, read_codes, unpack, unpack_words,
    write_code, write_codes, PackError,
};
pub use quantize::{
    error_report, quantize, quantize_with_search, ErrorReport, ErrorStatistics, GroupSize,
    QuantizeError, QuantizeOptions, QuantizedMatrix, ScaleSearch, Weights, MSE_SHRINK_FACTORS,
};
