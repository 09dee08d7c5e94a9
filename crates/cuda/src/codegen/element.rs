//! Element values as C: how each dtype's codes are held while computing (compute kinds),
//! decoding codes to values and encoding values to codes, literals, and packing codes into
//! 32-bit register words.
//!
//! What this module promises: `decode` is exact (every code's value in the compute type: f32
//! for floats, sign-extended `i32` or plain `u32` for integers), `encode` rounds to nearest even
//! and saturates as `anybit_dtype` does, and the words of a register tensor hold its codes as
//! the little-endian bit stream of `docs/codegen.md`. It imports nothing else of code
//! generation, so every other part may use it.

use anybit_dtype::DType;
use anybit_vm::Literal;

/// The number of 32-bit words that hold `locals` codes of `dtype` (at least one).
pub(super) fn words(locals: usize, dtype: DType) -> usize {
    (locals * dtype.bits() as usize).div_ceil(32).max(1)
}

/// Compute kinds: how element values are held while computing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Float,
    Signed,
    Unsigned,
}

/// The compute kind of `dtype`'s values.
pub(super) fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::Signed(_) => Kind::Signed,
        DType::Unsigned(_) => Kind::Unsigned,
        _ => Kind::Float,
    }
}

/// The C type that holds values of a compute kind.
pub(super) fn ctype(kind: Kind) -> &'static str {
    match kind {
        Kind::Float => "float",
        Kind::Signed => "i32",
        Kind::Unsigned => "u32",
    }
}

/// The mask of `dtype`'s code bits, as a C literal.
pub(super) fn mask_hex(dtype: DType) -> String {
    format!("0x{:x}u", dtype.code_mask())
}

/// The template arguments `E, M, SPEC` of the small-float helpers, for small floats.
fn mini_params(dtype: DType) -> Option<String> {
    let f = dtype.as_mini_float()?;
    let spec = match f.special_values() {
        anybit_dtype::SpecialValues::FiniteOnly => 0,
        anybit_dtype::SpecialValues::NanOnly => 1,
        anybit_dtype::SpecialValues::Ieee => 2,
    };
    Some(format!(
        "{}, {}, {}",
        f.exponent_bits(),
        f.mantissa_bits(),
        spec
    ))
}

/// The value of a code (a `u32` C expression) in the compute type of `dtype`.
pub(super) fn decode(dtype: DType, code: &str) -> String {
    match dtype {
        DType::F16 => format!("ab_f16_dec({code})"),
        DType::Bf16 => format!("ab_bf16_dec({code})"),
        DType::F32 => format!("__uint_as_float({code})"),
        DType::MiniFloat(_) => format!(
            "ab_mf_dec<{}>({code})",
            mini_params(dtype).unwrap_or_default()
        ),
        DType::Signed(32) => format!("(i32)({code})"),
        DType::Signed(bits) => format!("ab_sext<{bits}>({code})"),
        DType::Unsigned(_) => code.to_string(),
    }
}

/// The code of a value of the compute type of `dtype`.
pub(super) fn encode(dtype: DType, value: &str) -> String {
    match dtype {
        DType::F16 => format!("ab_f16_enc({value})"),
        DType::Bf16 => format!("ab_bf16_enc({value})"),
        DType::F32 => format!("__float_as_uint({value})"),
        DType::MiniFloat(_) => format!(
            "ab_mf_enc<{}>({value})",
            mini_params(dtype).unwrap_or_default()
        ),
        DType::Signed(32) | DType::Unsigned(32) => format!("(u32)({value})"),
        _ => format!("((u32)({value}) & {})", mask_hex(dtype)),
    }
}

/// Converts a value of `from`'s compute type to `to`'s code, as `cast` does.
pub(super) fn convert_to_code(from: DType, to: DType, value: &str) -> String {
    match (kind(from), kind(to)) {
        (Kind::Float, Kind::Float) => encode(to, value),
        (Kind::Signed, Kind::Float) => encode(to, &format!("__int2float_rn({value})")),
        (Kind::Unsigned, Kind::Float) => encode(to, &format!("__uint2float_rn({value})")),
        (Kind::Float, k) => format!(
            "ab_f2i<{}, {}>({value})",
            to.bits(),
            if k == Kind::Signed { "true" } else { "false" }
        ),
        (_, _) => encode(to, value),
    }
}

/// `f32` bits of a float literal converted to `dtype` and back (the value the operand has).
pub(super) fn float_literal_value(dtype: DType, value: f64) -> f32 {
    let code = dtype.encode(value as f32);
    dtype.decode(code) as f32
}

/// An f32 value as an exact C expression (its bits).
pub(super) fn float_c(value: f32) -> String {
    format!("__uint_as_float(0x{:08x}u)", value.to_bits())
}

/// The code of literal `lit` in `dtype` (for `alloc_register`).
pub(super) fn literal_code(dtype: DType, lit: &Literal) -> Option<u32> {
    match (lit, dtype.is_float()) {
        (Literal::Int(v), false) => Some((*v as u64 as u32) & dtype.code_mask()),
        (Literal::Int(v), true) => Some(dtype.encode(*v as f32)),
        (Literal::Float(f), true) => Some(dtype.encode(f.0 as f32)),
        (Literal::Float(_), false) => None,
    }
}

/// Packs `count` copies of `code` into 32-bit words.
pub(super) fn splat_words(code: u32, bits: u32, count: usize) -> Vec<u32> {
    let mut out = vec![0u32; words(count, dtype_for_bits(bits))];
    for l in 0..count {
        let bit = l * bits as usize;
        let (w, s) = (bit / 32, bit % 32);
        out[w] |= code << s;
        if s + bits as usize > 32 {
            out[w + 1] |= code >> (32 - s);
        }
    }
    out
}

/// An unsigned type of `bits` bits, to size packed words.
fn dtype_for_bits(bits: u32) -> DType {
    DType::Unsigned(bits as u8)
}
