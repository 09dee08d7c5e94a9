//! Element arithmetic on codes: decoding, the elementwise operations, casts and constants, all
//! through `anybit_dtype` (decode tables of small floats are built with [`DType::decode`]).

use std::sync::OnceLock;

use anybit_dtype::DType;
use anybit_vm::{BinaryOp, CmpOp, UnaryOp};

/// Decode tables of the small floats, indexed by `exponent_bits * 8 + mantissa_bits`.
fn small_float_table(dtype: DType) -> Option<&'static [f32]> {
    static TABLES: OnceLock<Vec<Option<Box<[f32]>>>> = OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        let mut tables: Vec<Option<Box<[f32]>>> = (0..64).map(|_| None).collect();
        for dtype in DType::all_small() {
            if let Some(format) = dtype.as_mini_float() {
                let index = (format.exponent_bits() * 8 + format.mantissa_bits()) as usize;
                // Every small-float value is an f32 exactly (the formats are subsets of f32).
                let values = (0..dtype.code_count() as u32)
                    .map(|code| dtype.decode(code) as f32)
                    .collect();
                tables[index] = Some(values);
            }
        }
        tables
    });
    let format = dtype.as_mini_float()?;
    let index = (format.exponent_bits() * 8 + format.mantissa_bits()) as usize;
    tables.get(index)?.as_deref()
}

/// Decodes float codes of one dtype to their exact f32 values.
#[derive(Clone, Copy)]
pub(crate) enum FloatDecoder {
    F32,
    Wide(DType),
    Table(&'static [f32]),
}

impl FloatDecoder {
    /// A decoder for a float dtype.
    pub fn new(dtype: DType) -> FloatDecoder {
        match dtype {
            DType::F32 => FloatDecoder::F32,
            _ => match small_float_table(dtype) {
                Some(table) => FloatDecoder::Table(table),
                None => FloatDecoder::Wide(dtype),
            },
        }
    }

    /// The exact value of `code`.
    #[inline]
    pub fn get(self, code: u32) -> f32 {
        match self {
            FloatDecoder::F32 => f32::from_bits(code),
            // f16 and bf16 values are f32 values exactly.
            FloatDecoder::Wide(dtype) => dtype.decode(code) as f32,
            FloatDecoder::Table(table) => table.get(code as usize).copied().unwrap_or(f32::NAN),
        }
    }
}

/// Reads integer codes of one dtype as values.
#[derive(Clone, Copy)]
pub(crate) struct IntDecoder {
    shift: u32,
    signed: bool,
}

impl IntDecoder {
    pub fn new(dtype: DType) -> IntDecoder {
        IntDecoder {
            shift: 64 - dtype.bits(),
            signed: matches!(dtype, DType::Signed(_)),
        }
    }

    /// The value of `code` (two's complement for signed types).
    #[inline]
    pub fn get(self, code: u32) -> i64 {
        if self.signed {
            (((code as u64) << self.shift) as i64) >> self.shift
        } else {
            code as i64
        }
    }
}

/// The code of integer `value` in an integer dtype: the value modulo 2^bits.
#[inline]
pub(crate) fn wrap(dtype: DType, value: i64) -> u32 {
    (value as u64 & dtype.code_mask() as u64) as u32
}

/// Decodes codes of any dtype, for printing.
pub(crate) enum Decoder {
    Float(FloatDecoder),
    Int(IntDecoder),
}

impl Decoder {
    pub fn new(dtype: DType) -> Decoder {
        if dtype.is_float() {
            Decoder::Float(FloatDecoder::new(dtype))
        } else {
            Decoder::Int(IntDecoder::new(dtype))
        }
    }
}

/// `T` value of an `i32`/`i64` constant, converted as by `cast` from an integer.
pub(crate) fn int_constant(dtype: DType, value: i64) -> u32 {
    if dtype.is_float() {
        // Rust's `as` rounds to nearest, ties to even.
        dtype.encode(value as f32)
    } else {
        wrap(dtype, value)
    }
}

/// `T` value of a float literal: rounded to f32 (nearest even), then encoded. (The verifier
/// allows float literals for float types only; for an integer type this rounds and saturates.)
pub(crate) fn float_constant(dtype: DType, value: f64) -> u32 {
    dtype.encode(value as f32)
}

/// `min` of two floats: a NaN operand gives the other one; `-0 < +0`.
#[inline]
pub(crate) fn float_min(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        b
    } else if b.is_nan() || a < b {
        a
    } else if b < a {
        b
    } else if a.is_sign_negative() {
        a
    } else {
        b
    }
}

/// `max` of two floats: a NaN operand gives the other one; `-0 < +0`.
#[inline]
pub(crate) fn float_max(a: f32, b: f32) -> f32 {
    if a.is_nan() {
        b
    } else if b.is_nan() || a > b {
        a
    } else if b > a || a.is_sign_negative() {
        // Equal values: +0 wins over -0.
        b
    } else {
        a
    }
}

/// Applies a unary operation to codes. `None` when the operation does not exist for the dtype.
pub(crate) fn unary(dtype: DType, op: UnaryOp, src: &[u32]) -> Vec<u32> {
    if dtype.is_float() {
        let decode = FloatDecoder::new(dtype);
        let f: fn(f32) -> f32 = match op {
            UnaryOp::Neg => |x| -x,
            UnaryOp::Abs => f32::abs,
            UnaryOp::Exp => |x| (x as f64).exp() as f32,
        };
        src.iter()
            .map(|&c| dtype.encode(f(decode.get(c))))
            .collect()
    } else {
        let decode = IntDecoder::new(dtype);
        match op {
            UnaryOp::Neg => src.iter().map(|&c| wrap(dtype, -decode.get(c))).collect(),
            UnaryOp::Abs => src
                .iter()
                .map(|&c| wrap(dtype, decode.get(c).abs()))
                .collect(),
            // The verifier allows `exp` on floats only; integers round and saturate.
            UnaryOp::Exp => src
                .iter()
                .map(|&c| dtype.encode((decode.get(c) as f64).exp() as f32))
                .collect(),
        }
    }
}

/// Applies a binary operation to codes. Integer division by zero gives `Err(index)`.
pub(crate) fn binary(dtype: DType, op: BinaryOp, a: &[u32], b: &[u32]) -> Result<Vec<u32>, usize> {
    if dtype.is_float() {
        let decode = FloatDecoder::new(dtype);
        let f: fn(f32, f32) -> f32 = match op {
            BinaryOp::Add => |x, y| x + y,
            BinaryOp::Sub => |x, y| x - y,
            BinaryOp::Mul => |x, y| x * y,
            BinaryOp::Div => |x, y| x / y,
            BinaryOp::Min => float_min,
            BinaryOp::Max => float_max,
        };
        Ok(a.iter()
            .zip(b)
            .map(|(&x, &y)| dtype.encode(f(decode.get(x), decode.get(y))))
            .collect())
    } else {
        let decode = IntDecoder::new(dtype);
        // Operand values have at most 32 bits, so wrapping i64 arithmetic reduced modulo
        // 2^bits is the exact result reduced modulo 2^bits.
        let f: fn(i64, i64) -> Option<i64> = match op {
            BinaryOp::Add => |x, y| Some(x.wrapping_add(y)),
            BinaryOp::Sub => |x, y| Some(x.wrapping_sub(y)),
            BinaryOp::Mul => |x, y| Some(x.wrapping_mul(y)),
            BinaryOp::Div => |x, y| x.checked_div(y),
            BinaryOp::Min => |x, y| Some(x.min(y)),
            BinaryOp::Max => |x, y| Some(x.max(y)),
        };
        a.iter()
            .zip(b)
            .enumerate()
            .map(|(index, (&x, &y))| {
                f(decode.get(x), decode.get(y))
                    .map(|value| wrap(dtype, value))
                    .ok_or(index)
            })
            .collect()
    }
}

/// Compares codes; the result is `u1` codes (0 or 1).
pub(crate) fn compare(dtype: DType, op: CmpOp, a: &[u32], b: &[u32]) -> Vec<u32> {
    fn apply<T: PartialOrd>(op: CmpOp, x: T, y: T) -> bool {
        match op {
            CmpOp::Lt => x < y,
            CmpOp::Le => x <= y,
            CmpOp::Gt => x > y,
            CmpOp::Ge => x >= y,
            CmpOp::Eq => x == y,
            CmpOp::Ne => x != y,
        }
    }
    if dtype.is_float() {
        let decode = FloatDecoder::new(dtype);
        a.iter()
            .zip(b)
            .map(|(&x, &y)| apply(op, decode.get(x), decode.get(y)) as u32)
            .collect()
    } else {
        let decode = IntDecoder::new(dtype);
        a.iter()
            .zip(b)
            .map(|(&x, &y)| apply(op, decode.get(x), decode.get(y)) as u32)
            .collect()
    }
}

/// Converts codes of `from` to codes of `to` by the rules of `cast`.
pub(crate) fn cast(from: DType, to: DType, src: &[u32]) -> Vec<u32> {
    match (from.is_float(), to.is_float()) {
        (true, true) => {
            let decode = FloatDecoder::new(from);
            src.iter().map(|&c| to.encode(decode.get(c))).collect()
        }
        (false, true) => {
            let decode = IntDecoder::new(from);
            src.iter()
                .map(|&c| to.encode(decode.get(c) as f32))
                .collect()
        }
        (true, false) => {
            let decode = FloatDecoder::new(from);
            let (lowest, highest) = int_range(to);
            src.iter()
                .map(|&c| {
                    let value = decode.get(c);
                    let value = if value.is_nan() {
                        0
                    } else {
                        (value as f64).trunc().clamp(lowest as f64, highest as f64) as i64
                    };
                    wrap(to, value)
                })
                .collect()
        }
        (false, false) => {
            let decode = IntDecoder::new(from);
            src.iter().map(|&c| wrap(to, decode.get(c))).collect()
        }
    }
}

/// (lowest, highest) value of an integer dtype.
pub(crate) fn int_range(dtype: DType) -> (i64, i64) {
    let bits = dtype.bits();
    match dtype {
        DType::Signed(_) => (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1),
        _ => (0, (1i64 << bits) - 1),
    }
}

/// Formats the value of a code for `print`: floats as the shortest decimal that reads back as
/// the exact value (`NaN`, `inf`, `-inf`, `-0` included), integers in decimal.
pub(crate) fn format_value(decoder: &Decoder, code: u32) -> String {
    match decoder {
        Decoder::Float(decoder) => format!("{}", decoder.get(code) as f64),
        Decoder::Int(decoder) => format!("{}", decoder.get(code)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_follow_the_nan_and_signed_zero_rules() {
        assert_eq!(float_min(f32::NAN, 2.0), 2.0);
        assert_eq!(float_max(3.0, f32::NAN), 3.0);
        assert!(float_min(0.0, -0.0).is_sign_negative());
        assert!(float_min(-0.0, 0.0).is_sign_negative());
        assert!(float_max(-0.0, 0.0).is_sign_positive());
        assert!(float_max(0.0, -0.0).is_sign_positive());
        assert!(float_max(f32::NAN, f32::NAN).is_nan());
    }

    #[test]
    fn integer_wrapping() {
        let i8t = DType::Signed(8);
        assert_eq!(unary(i8t, UnaryOp::Abs, &[0x80]), vec![0x80]);
        assert_eq!(unary(DType::Unsigned(4), UnaryOp::Neg, &[3]), vec![13]);
        assert_eq!(binary(i8t, BinaryOp::Div, &[0x80], &[0xff]), Ok(vec![0x80]));
        assert_eq!(binary(i8t, BinaryOp::Div, &[7], &[0]), Err(0));
        let u32t = DType::Unsigned(32);
        assert_eq!(
            binary(u32t, BinaryOp::Mul, &[u32::MAX], &[u32::MAX]),
            Ok(vec![1])
        );
    }

    #[test]
    fn small_float_tables_match_decode() {
        for dtype in DType::all_small().into_iter().filter(|t| t.is_float()) {
            let decoder = FloatDecoder::new(dtype);
            for code in 0..dtype.code_count() as u32 {
                let exact = dtype.decode(code);
                let got = decoder.get(code) as f64;
                assert!(
                    got == exact || (got.is_nan() && exact.is_nan()),
                    "{dtype} {code}"
                );
            }
        }
    }
}
