//! Fast conversions of packed low-precision codes to f16 and bf16, described as data.
//!
//! What this module promises: a [`FastCast`] is a short recipe of 32-bit integer operations
//! and one packed fused multiply-add that converts two codes at once (element `2j` in the low
//! half, `2j + 1` in the high half of a 32-bit register). The same description is printed as a
//! CUDA device function ([`FastCast::device_function`]) and evaluated on the host
//! ([`FastCast::eval_pair`]) with the same arithmetic (u32 operations; the fma computed exactly
//! in f64 and rounded once, as `fma.rn` does), so the host tests in this module check every
//! code of every fast path against `anybit_dtype` without a GPU. [`FastCast::new`] returns a
//! recipe only for conversions it is exact for; everything else takes the generic path.
//!
//! The recipes:
//! - `uN → f16` (N ≤ 8): `x = code | 0x6400` (1024 + code, the f16 ulp at 1024 is 1), then
//!   `x - 1024`; `iN`: `code ^ 2^(N-1)` first (two's complement to offset binary) and subtract
//!   `1024 + 2^(N-1)`.
//! - `uN → bf16` (N ≤ 7): the same with `0x4300` (128.0); `u8`/`i8 → bf16`: `0x4b000000 | code`
//!   (2^23 + code in f32), subtract 2^23 (and 128 for signed), then `cvt.rn.bf16x2.f32`.
//! - small floats `f{1+E+M}eEmM → f16` (E ≤ 5) and `→ bf16` (every E ≤ 7): the sign moves to bit
//!   15, the exponent and mantissa bits to the top of the half's exponent/mantissa
//!   (shift `10 - M`, or `7 - M` for bf16), so the half holds the value times
//!   `2^(bias - 15)` (or `2^(bias - 127)`); one multiply by `2^(15 - bias)` (`2^(127 - bias)`)
//!   re-biases the exponent, exactly, subnormals included. Special codes are fixed afterwards:
//!   NaN of `f8e4m3`, infinity and NaN of `f8e5m2`, and the all-ones exponent of the finite
//!   E = 5 formats (which overflows f16 to infinity). `f8e4m3`'s lone NaN magnitude is found on
//!   the GPU by one packed f16 compare and a select ([`FastCast::nan_marker`]; a host test
//!   emulates it for every code) rather than a test per half.
//! - The integer recipes mask, flip and add the magic number with one LOP3 (inline PTX) for
//!   codes below 8 bits.

use anybit_dtype::{DType, SpecialValues};
use anybit_layout::RegisterLayout;
use anybit_vm::{builder::block_x, Program, ProgramBuilder};
use half::{bf16, f16};

/// A special code fixed after the arithmetic: when `code & mask == value`, the half becomes
/// `result`, with the code's sign bit copied to bit 15 when `keep_sign`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixup {
    pub mask: u32,
    pub value: u32,
    pub result: u16,
    pub keep_sign: bool,
}

/// How the two codes become two halves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recipe {
    /// `x = ((p << shift_a) & mask_a) | ((p << shift_b) & mask_b)`, `x = (x ^ xor) | or`,
    /// then `fma.rn.{f16x2,bf16x2}(x, mul, add)` with `mul` and `add` in both halves.
    Halves {
        shift_a: u32,
        mask_a: u32,
        shift_b: u32,
        mask_b: u32,
        xor: u32,
        or: u32,
        mul: u16,
        add: u16,
    },
    /// Per code: `f = as_f32(or | (code ^ xor)) - sub` (exact), then `cvt.rn.bf16x2.f32`.
    F32Magic { xor: u32, or: u32, sub: f32 },
}

/// A fast conversion from a type of at most 8 bits to f16 or bf16, two codes at a time.
///
/// The codes are at bits `offset..` and `16 + offset..` of the 32-bit input; every other bit
/// of the input is ignored (the recipes mask), so a register word shifted to bring a pair
/// there needs no further cleaning.
#[derive(Clone, Debug, PartialEq)]
pub struct FastCast {
    pub from: DType,
    pub to: DType,
    pub recipe: Recipe,
    pub fixups: Vec<Fixup>,
    /// Where in each half the code starts (0 for [`FastCast::new`]).
    pub offset: u32,
}

fn both(half: u32) -> u32 {
    half | (half << 16)
}

/// The value of a half of type `to` from its bits.
fn value_of(to: DType, bits: u16) -> f64 {
    if to == DType::F16 {
        f16::from_bits(bits).to_f64()
    } else {
        bf16::from_bits(bits).to_f64()
    }
}

fn half_bits(to: DType, value: f64) -> u16 {
    if to == DType::F16 {
        f16::from_f64(value).to_bits()
    } else {
        bf16::from_f64(value).to_bits()
    }
}

impl FastCast {
    /// The fast conversion from `from` to `to`, if there is one.
    pub fn new(from: DType, to: DType) -> Option<FastCast> {
        if !matches!(to, DType::F16 | DType::Bf16) || from.bits() > 8 {
            return None;
        }
        let f16_target = to == DType::F16;
        let n = from.bits();
        let code_mask = from.code_mask();
        match from {
            DType::Unsigned(_) | DType::Signed(_) => {
                let signed = matches!(from, DType::Signed(_));
                let offset = if signed { 1u32 << (n - 1) } else { 0 };
                if f16_target || n <= 7 {
                    let (magic_bits, magic) = if f16_target {
                        (0x6400u32, 1024.0)
                    } else {
                        (0x4300u32, 128.0)
                    };
                    Some(FastCast {
                        from,
                        to,
                        recipe: Recipe::Halves {
                            shift_a: 0,
                            mask_a: both(code_mask),
                            shift_b: 0,
                            mask_b: 0,
                            xor: both(offset),
                            or: both(magic_bits),
                            mul: half_bits(to, 1.0),
                            add: half_bits(to, -(magic + offset as f64)),
                        },
                        fixups: Vec::new(),
                        offset: 0,
                    })
                } else {
                    Some(FastCast {
                        from,
                        to,
                        recipe: Recipe::F32Magic {
                            xor: offset,
                            or: 0x4b00_0000,
                            sub: 8_388_608.0 + offset as f32,
                        },
                        fixups: Vec::new(),
                        offset: 0,
                    })
                }
            }
            DType::MiniFloat(format) => {
                let (e, m) = (format.exponent_bits(), format.mantissa_bits());
                let (mantissa_top, half_bias) = if f16_target { (10, 15) } else { (7, 127) };
                if f16_target && e > 5 {
                    return None;
                }
                let bias = format.bias();
                let shift_a = mantissa_top - m;
                let magnitude = (1u32 << (n - 1)) - 1;
                let mut fixups = Vec::new();
                let (nan, inf) = if f16_target {
                    (0x7e00, 0x7c00)
                } else {
                    (0x7fc0, 0x7f80)
                };
                let exponent_field = ((1u32 << e) - 1) << m;
                match format.special_values() {
                    SpecialValues::NanOnly => fixups.push(Fixup {
                        mask: magnitude,
                        value: magnitude,
                        result: nan,
                        keep_sign: false,
                    }),
                    SpecialValues::Ieee => {
                        fixups.push(Fixup {
                            mask: exponent_field,
                            value: exponent_field,
                            result: nan,
                            keep_sign: false,
                        });
                        fixups.push(Fixup {
                            mask: magnitude,
                            value: exponent_field,
                            result: inf,
                            keep_sign: true,
                        });
                    }
                    SpecialValues::FiniteOnly if f16_target && e == 5 => fixups.push(Fixup {
                        mask: exponent_field,
                        value: exponent_field,
                        result: inf,
                        keep_sign: true,
                    }),
                    SpecialValues::FiniteOnly => {}
                }
                Some(FastCast {
                    from,
                    to,
                    recipe: Recipe::Halves {
                        shift_a,
                        mask_a: both(magnitude << shift_a),
                        shift_b: 16 - n,
                        mask_b: both(0x8000),
                        xor: 0,
                        or: 0,
                        mul: half_bits(to, 2f64.powi(half_bias - bias)),
                        add: 0x8000,
                    },
                    fixups,
                    offset: 0,
                })
            }
            _ => None,
        }
    }

    /// The same conversion for codes at bit `offset` of each half, if the recipe allows it: the
    /// integer magic-number recipes do, as long as the code stays inside the half's mantissa
    /// (`offset + bits <= 10` for f16, `<= 7` for bf16). The magic number then holds
    /// `magic + code · 2^offset`, and the fma multiplies by `2^-offset` (exactly) and adds
    /// `-(magic · 2^-offset + code offset)`. A pair of 4-bit codes at bits 4 and 20 then needs
    /// no shift.
    pub fn at_offset(&self, offset: u32) -> Option<FastCast> {
        if offset == self.offset {
            return Some(self.clone());
        }
        let Recipe::Halves {
            shift_a: 0,
            mask_b: 0,
            or,
            ..
        } = self.recipe
        else {
            return None;
        };
        if or == 0 || self.offset != 0 {
            return None;
        }
        let n = self.from.bits();
        let (room, magic) = if self.to == DType::F16 {
            (10, 1024.0)
        } else {
            (7, 128.0)
        };
        if offset + n > room {
            return None;
        }
        let code_offset = if matches!(self.from, DType::Signed(_)) {
            1u32 << (n - 1)
        } else {
            0
        };
        let scale = 2f64.powi(-(offset as i32));
        Some(FastCast {
            recipe: Recipe::Halves {
                shift_a: 0,
                mask_a: both(self.from.code_mask() << offset),
                shift_b: 0,
                mask_b: 0,
                xor: both(code_offset << offset),
                or,
                mul: half_bits(self.to, scale),
                add: half_bits(self.to, -(magic * scale + code_offset as f64)),
            },
            offset,
            ..self.clone()
        })
    }

    /// One line saying what the recipe does, for comments and selection reports.
    pub fn summary(&self) -> String {
        match self.recipe {
            Recipe::Halves { or, mul, add, .. } if or != 0 => format!(
                "magic number 0x{:04x}, fma(x, 0x{mul:04x}, 0x{add:04x})",
                or & 0xffff
            ),
            Recipe::Halves { mul, .. } => {
                format!("exponent re-bias: shift, mask, multiply by 0x{mul:04x}")
            }
            Recipe::F32Magic { or, sub, .. } => {
                format!("f32 magic number 0x{or:08x} minus {sub}, cvt.rn.bf16x2.f32")
            }
        }
    }

    /// The name of the device function.
    pub fn function_name(&self) -> String {
        if self.offset == 0 {
            format!("ab_cvt_{}_{}", self.from, self.to)
        } else {
            format!("ab_cvt_{}_{}_at{}", self.from, self.to, self.offset)
        }
    }

    /// The device function `u32 NAME(u32 p)`: `p` holds two codes (bits `offset..` and
    /// `16 + offset..`), the result the two converted halves.
    pub fn device_function(&self) -> String {
        let mut s = format!(
            "// {} -> {}: {}\n__device__ __forceinline__ u32 {}(u32 p) {{\n",
            self.from,
            self.to,
            self.summary(),
            self.function_name()
        );
        let fma = if self.to == DType::F16 {
            "ab_fma_f16x2"
        } else {
            "ab_fma_bf16x2"
        };
        match self.recipe {
            Recipe::Halves {
                shift_a,
                mask_a,
                shift_b,
                mask_b,
                xor,
                or,
                mul,
                add,
            } => {
                // Not for 8-bit codes: the constant's register made the 255-register M = 64
                // kernel of i8 spill, and i8 at M = 1 ran 0.89–1.05× as fast.
                if shift_a == 0 && mask_b == 0 && or != 0 && self.from.bits() < 8 {
                    // The integer recipes: the sign flip lies inside the mask and the magic
                    // number outside it, so `((p & mask) ^ xor) | or` is one LOP3 with the
                    // constant in a register (a LOP3 takes one immediate; written in C, ptxas
                    // keeps two LOP3s): `(~p & mask) | or` where the flip is the whole code (1
                    // bit: the constant is the same at every offset), else
                    // `(p & mask) ^ (xor | or)`.
                    debug_assert!(or & mask_a == 0 && xor & !mask_a == 0);
                    let (lut, constant) = if xor == mask_a {
                        (0xae, or)
                    } else {
                        (0x6a, xor | or)
                    };
                    s.push_str(&format!(
                        "  u32 x;\n  asm(\"lop3.b32 %0, %1, 0x{mask_a:08x}, %2, 0x{lut:02x};\" : \"=r\"(x) : \"r\"(p), \"r\"(0x{constant:08x}u));\n"
                    ));
                } else {
                    let mut x = if shift_a == 0 {
                        format!("(p & 0x{mask_a:08x}u)")
                    } else {
                        format!("((p << {shift_a}) & 0x{mask_a:08x}u)")
                    };
                    if mask_b != 0 {
                        x = format!("{x} | ((p << {shift_b}) & 0x{mask_b:08x}u)");
                    }
                    s.push_str(&format!("  u32 x = {x};\n"));
                    if xor != 0 {
                        s.push_str(&format!("  x ^= 0x{xor:08x}u;\n"));
                    }
                    if or != 0 {
                        s.push_str(&format!("  x |= 0x{or:08x}u;\n"));
                    }
                }
                s.push_str(&format!(
                    "  u32 y = {fma}(x, 0x{:08x}u, 0x{:08x}u);\n",
                    both(mul as u32),
                    both(add as u32)
                ));
            }
            Recipe::F32Magic { xor, or, sub } => {
                let m = self.from.code_mask();
                s.push_str(&format!(
                    "  const float lo = __fsub_rn(__uint_as_float(0x{or:08x}u | ((p & 0x{m:x}u) ^ 0x{xor:x}u)), {sub:.1}f);\n"
                ));
                s.push_str(&format!(
                    "  const float hi = __fsub_rn(__uint_as_float(0x{or:08x}u | (((p >> 16) & 0x{m:x}u) ^ 0x{xor:x}u)), {sub:.1}f);\n"
                ));
                s.push_str("  u32 y;\n  asm(\"cvt.rn.bf16x2.f32 %0, %1, %2;\\n\" : \"=r\"(y) : \"f\"(hi), \"f\"(lo));\n");
            }
        }
        if let (
            Some(marker),
            Recipe::Halves {
                shift_a, mask_a, ..
            },
        ) = (self.nan_marker(), self.recipe)
        {
            // The magnitude term is the recipe's own first term: ptxas computes it once.
            let nan = self.fixups[0].result as u32;
            s.push_str(&format!(
                "  u32 m;\n  asm(\"set.eq.u32.f16x2 %0, %1, %2;\" : \"=r\"(m) : \"r\"((p << {shift_a}) & 0x{mask_a:08x}u), \"r\"(0x{:08x}u));\n  asm(\"lop3.b32 %0, %1, %2, 0x{:08x}, 0xb8;\" : \"=r\"(y) : \"r\"(y), \"r\"(m));\n",
                both(marker as u32),
                both(nan)
            ));
        } else if !self.fixups.is_empty() {
            let m = self.from.code_mask();
            let sign_shift = 16 - self.from.bits();
            for (half, shift) in [(0, 0), (1, 16)] {
                s.push_str(&format!("  {{ const u32 c = (p >> {shift}) & 0x{m:x}u;\n"));
                for f in &self.fixups {
                    let value = if f.keep_sign {
                        format!("(0x{:04x}u | ((c << {sign_shift}) & 0x8000u))", f.result)
                    } else {
                        format!("0x{:04x}u", f.result)
                    };
                    let keep = if half == 0 {
                        "0xffff0000u"
                    } else {
                        "0x0000ffffu"
                    };
                    s.push_str(&format!(
                        "    if ((c & 0x{:x}u) == 0x{:x}u) y = (y & {keep}) | ({value} << {shift});\n",
                        f.mask, f.value
                    ));
                }
                s.push_str("  }\n");
            }
        }
        s.push_str("  return y;\n}\n");
        s
    }

    /// Host evaluation of the device function, with the same arithmetic: `p` holds two codes
    /// (at `offset` in each half).
    pub fn eval_pair(&self, p: u32) -> u32 {
        let mut y = self.arithmetic(p);
        let m = self.from.code_mask();
        let sign_shift = 16 - self.from.bits();
        for (half, shift) in [(0u32, 0u32), (1, 16)] {
            let c = (p >> shift) & m;
            for f in &self.fixups {
                if c & f.mask == f.value {
                    let mut v = f.result as u32;
                    if f.keep_sign {
                        v |= (c << sign_shift) & 0x8000;
                    }
                    let keep = if half == 0 { 0xffff_0000 } else { 0x0000_ffff };
                    y = (y & keep) | (v << shift);
                }
            }
        }
        y
    }

    /// The pair's halves from the recipe's arithmetic alone, before the fixups.
    fn arithmetic(&self, p: u32) -> u32 {
        match self.recipe {
            Recipe::Halves {
                shift_a,
                mask_a,
                shift_b,
                mask_b,
                xor,
                or,
                ..
            } => {
                let x = ((p << shift_a) & mask_a) | ((p << shift_b) & mask_b);
                self.fma_pair((x ^ xor) | or)
            }
            Recipe::F32Magic { xor, or, sub } => {
                let m = self.from.code_mask();
                let one = |c: u32| {
                    let f = f32::from_bits(or | ((c & m) ^ xor)) - sub;
                    bf16::from_f32(f).to_bits() as u32
                };
                one(p) | (one(p >> 16) << 16)
            }
        }
    }

    /// The halves recipe's packed fma of `x` (both halves), as `fma.rn` rounds it: exactly in
    /// f64, rounded once.
    fn fma_pair(&self, x: u32) -> u32 {
        let Recipe::Halves { mul, add, .. } = self.recipe else {
            unreachable!("only halves recipes end in an fma")
        };
        let half = |h: u16| {
            let v = value_of(self.to, h) * value_of(self.to, mul) + value_of(self.to, add);
            if v.is_nan() {
                0x7fff
            } else {
                half_bits(self.to, v)
            }
        };
        half(x as u16) as u32 | ((half((x >> 16) as u16) as u32) << 16)
    }

    /// For a lone fixup to NaN of every code with one magnitude (f8e4m3's all-ones code), in a
    /// recipe whose first term `(p << shift_a) & mask_a` is the magnitude alone: that term's
    /// bits for the NaN magnitude, if no other magnitude gives them and, read as f16, they are
    /// a finite nonzero number. A packed f16 compare of each half's term with it then finds the
    /// NaN codes (equal bits are equal f16 values there), and one select puts the NaN in: two
    /// instructions a pair instead of a test per half.
    pub fn nan_marker(&self) -> Option<u16> {
        let [fixup] = self.fixups.as_slice() else {
            return None;
        };
        let Recipe::Halves {
            shift_a, mask_a, ..
        } = self.recipe
        else {
            return None;
        };
        let magnitude = (1u32 << (self.from.bits() - 1)) - 1;
        let nan = if self.to == DType::F16 {
            0x7e00
        } else {
            0x7fc0
        };
        if fixup.keep_sign
            || fixup.mask != magnitude
            || fixup.value != magnitude
            || fixup.result != nan
            || mask_a != both(magnitude << shift_a)
        {
            return None;
        }
        let term = |code: u32| ((code << shift_a) & mask_a) as u16;
        let marker = term(fixup.value);
        let unique = (0..magnitude).all(|code| term(code) != marker);
        (unique && f16::from_bits(marker).is_finite() && marker != 0).then_some(marker)
    }
}

/// A packed conversion of codes whose bits are split into planes (`cast_planes`): each field
/// is a run of one plane's bits that the recipe puts in one place of a half. A field's
/// register brings its two copies (the low member's at the field's place `to` of the low
/// half, the high member's 16 bits above); the recipe masks each field out of its register,
/// ORs them together and finishes the conversion. The masks and the OR become `LOP3`s (the
/// constant OR and the sign flip of an integer's top plane fold into them), so a pair costs
/// one `LOP3` per field and one fused multiply-add, plus the shifts that bring each field into
/// place.
///
/// Integer codes have one field per plane, the code at `offset` of each half as the integer
/// recipe there takes it. Small floats (recipes without fixups) have one field per plane, or
/// two where a plane holds the top magnitude bits and the sign: the magnitude's bits go from
/// the recipe's `shift_a` up, the sign to bit 15.
#[derive(Clone, Debug, PartialEq)]
pub struct PlaneCast {
    /// The code type's recipe (integers: at the code's offset).
    pub base: FastCast,
    /// The planes' widths, low bits first.
    pub widths: Vec<u32>,
    /// The fields, in the order of the device function's parameters.
    pub fields: Vec<PlaneField>,
}

/// A run of a plane's bits that one `LOP3` places: bits `start .. start + width` of plane
/// `plane` go to bits `to ..` of each half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlaneField {
    pub plane: usize,
    pub start: u32,
    pub width: u32,
    pub to: u32,
}

impl PlaneField {
    /// The field's two copies (both halves) in a register.
    fn mask(&self) -> u32 {
        both(((1 << self.width) - 1) << self.to)
    }
}

impl PlaneCast {
    /// The conversion of `code` to `to`, put together from planes of `widths` bits (low bits
    /// first, adding up to the code's width). Integer codes: for codes at bit `offset` of each
    /// half, if the integer recipe takes that offset. Small floats (`offset` unused): if their
    /// recipe needs no fixups.
    pub fn new(code: DType, to: DType, widths: &[u32], offset: u32) -> Option<PlaneCast> {
        if widths.iter().sum::<u32>() != code.bits() {
            return None;
        }
        // Each plane's first bit within the code.
        let starts: Vec<u32> = widths
            .iter()
            .scan(0, |start, &width| {
                *start += width;
                Some(*start - width)
            })
            .collect();
        let planes = widths.iter().zip(&starts).enumerate();
        let (base, fields) = match code {
            DType::Unsigned(_) | DType::Signed(_) => {
                let base = FastCast::new(code, to)?.at_offset(offset)?;
                let Recipe::Halves {
                    shift_a: 0,
                    mask_b: 0,
                    ..
                } = base.recipe
                else {
                    return None;
                };
                let fields = planes
                    .map(|(plane, (&width, &start))| PlaneField {
                        plane,
                        start: 0,
                        width,
                        to: offset + start,
                    })
                    .collect();
                (base, fields)
            }
            DType::MiniFloat(_) => {
                let base = FastCast::new(code, to)?;
                let sign = code.bits() - 1;
                let Recipe::Halves {
                    shift_a,
                    shift_b,
                    mask_b: 0x8000_8000,
                    xor: 0,
                    or: 0,
                    ..
                } = base.recipe
                else {
                    return None;
                };
                if !base.fixups.is_empty() || shift_b + sign != 15 {
                    return None;
                }
                let mut fields = Vec::new();
                for (plane, (&width, &start)) in planes {
                    let magnitude = width.min(sign.saturating_sub(start));
                    if magnitude > 0 {
                        fields.push(PlaneField {
                            plane,
                            start: 0,
                            width: magnitude,
                            to: shift_a + start,
                        });
                    }
                    if magnitude < width {
                        fields.push(PlaneField {
                            plane,
                            start: magnitude,
                            width: 1,
                            to: 15,
                        });
                    }
                }
                (base, fields)
            }
            _ => return None,
        };
        Some(PlaneCast {
            base,
            widths: widths.to_vec(),
            fields,
        })
    }

    /// The name of the device function.
    pub fn function_name(&self) -> String {
        let widths: Vec<String> = self.widths.iter().map(ToString::to_string).collect();
        format!(
            "ab_cvt_planes_{}_{}_{}_at{}",
            self.base.from,
            self.base.to,
            widths.join("_"),
            self.base.offset
        )
    }

    /// The device function `u32 NAME(u32 p0, u32 p1, ..)`: field `i`'s two copies in `p_i`
    /// (every other bit ignored), the result the two converted halves.
    pub fn device_function(&self) -> String {
        let Recipe::Halves {
            xor, or, mul, add, ..
        } = self.base.recipe
        else {
            unreachable!("PlaneCast::new keeps halves recipes only")
        };
        let params: Vec<String> = (0..self.fields.len())
            .map(|i| format!("u32 p{i}"))
            .collect();
        let masks: Vec<u32> = self.fields.iter().map(PlaneField::mask).collect();
        let fma = if self.base.to == DType::F16 {
            "ab_fma_f16x2"
        } else {
            "ab_fma_bf16x2"
        };
        let mut s = format!(
            "// {} from planes of {:?} bits at {} -> {}: {}\n__device__ __forceinline__ u32 {}({}) {{\n",
            self.base.from,
            self.widths,
            self.base.offset,
            self.base.to,
            self.base.summary(),
            self.function_name(),
            params.join(", ")
        );
        let top = masks.len() - 1;
        if xor == 0 || xor == masks[top] {
            // One LOP3 per field: `x = (p & mask) | x`, starting from the magic number (a
            // register: a LOP3 takes one immediate), the top field inverted where the code's
            // sign is flipped (its field is the sign bit).
            s.push_str(&format!("  u32 x = 0x{or:08x}u;\n"));
            for (i, mask) in masks.iter().enumerate() {
                let lut = if i == top && xor != 0 { "0xae" } else { "0xea" };
                s.push_str(&format!(
                    "  asm(\"lop3.b32 %0, %1, 0x{mask:08x}, %2, {lut};\" : \"=r\"(x) : \"r\"(p{i}), \"r\"(x));\n"
                ));
            }
        } else {
            let fields: Vec<String> = masks
                .iter()
                .enumerate()
                .map(|(i, mask)| format!("(p{i} & 0x{mask:08x}u)"))
                .collect();
            s.push_str(&format!(
                "  u32 x = {};\n  x ^= 0x{xor:08x}u;\n  x |= 0x{or:08x}u;\n",
                fields.join(" | ")
            ));
        }
        s.push_str(&format!(
            "  return {fma}(x, 0x{:08x}u, 0x{:08x}u);\n}}\n",
            both(mul as u32),
            both(add as u32)
        ));
        s
    }

    /// Host evaluation of the device function, from one register per field.
    pub fn eval(&self, registers: &[u32]) -> u32 {
        let x = registers
            .iter()
            .zip(&self.fields)
            .fold(0, |x, (register, field)| x | (register & field.mask()));
        match self.base.from {
            // The fields are already where the recipe puts the bits: only its fma is left.
            DType::MiniFloat(_) => self.base.fma_pair(x),
            _ => self.base.eval_pair(x),
        }
    }
}

/// What `cast` gives for one code: `to.encode(from.decode(code) as f32)`.
pub fn reference_cast(from: DType, to: DType, code: u32) -> u32 {
    to.encode(from.decode(code) as f32)
}

/// A program that converts `n` codes of `dtype` (packed, from `codes`) to f16 (`out_f16`) and
/// bf16 (`out_bf16`), 8 per thread: run it over all `2^bits` codes and compare with
/// [`reference_cast`] (or the interpreter). Even local sizes use the fast paths where
/// [`FastCast::new`] has one.
pub fn cast_test_program(dtype: DType) -> Program {
    let mut b = ProgramBuilder::new(&format!("cast_test_{dtype}"));
    b.doc(&format!(
        "Converts n codes of {dtype} to f16 and bf16, 8 per thread."
    ));
    let codes = b.pointer("codes", dtype);
    let out_f16 = b.pointer("out_f16", DType::F16);
    let out_bf16 = b.pointer("out_bf16", DType::Bf16);
    let n = b.int("n");
    b.grid([n.clone().ceil_div(256)]).threads(32);
    let base = b.let_("base", block_x() * 256);
    let layout = RegisterLayout::spatial(&[32])
        .compose(&RegisterLayout::local(&[8]))
        .unwrap_or_else(|_| RegisterLayout::local(&[8]));
    let g = b.view_global("g", &codes, [n.clone()], [1]);
    let gh = b.view_global("gh", &out_f16, [n.clone()], [1]);
    let gb = b.view_global("gb", &out_bf16, [n], [1]);
    let x = b.load_global("x", &g, [base.clone()], layout);
    let h = b.cast("h", &x, DType::F16);
    let bf = b.cast("bf", &x, DType::Bf16);
    b.store_global(&gh, [base.clone()], &h);
    b.store_global(&gb, [base], &bf);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fast path, every pair of codes, against `anybit_dtype`.
    #[test]
    fn fast_paths_are_exact_for_every_code() {
        let mut checked = 0;
        for from in DType::all_small() {
            for to in [DType::F16, DType::Bf16] {
                let Some(fast) = FastCast::new(from, to) else {
                    continue;
                };
                let count = 1u32 << from.bits();
                for lo in 0..count {
                    for hi in [0, 1, count / 2, count - 1, lo] {
                        let got = fast.eval_pair(lo | (hi << 16));
                        let want_lo = reference_cast(from, to, lo);
                        let want_hi = reference_cast(from, to, hi);
                        assert_eq!(
                            (got & 0xffff, got >> 16),
                            (want_lo, want_hi),
                            "{from} -> {to}: codes {lo:#x}, {hi:#x} ({})",
                            fast.summary()
                        );
                    }
                }
                checked += 1;
            }
        }
        // u1..u8, i1..i8 and the small floats with E <= 5 to f16, everything to bf16.
        assert!(checked >= 60, "only {checked} fast paths");
    }

    /// Bits outside the two codes do not matter, and the integer recipes take codes at any
    /// offset they accept: every code, with every other bit set.
    #[test]
    fn offsets_and_other_bits_are_exact_for_every_code() {
        let mut checked = 0;
        for from in DType::all_small() {
            for to in [DType::F16, DType::Bf16] {
                let Some(base) = FastCast::new(from, to) else {
                    continue;
                };
                let n = from.bits();
                for offset in 0..16 - n {
                    let Some(fast) = base.at_offset(offset) else {
                        assert!(offset > 0, "{from} -> {to}: offset 0 must be accepted");
                        continue;
                    };
                    let code_bits = both(from.code_mask() << offset);
                    let count = 1u32 << n;
                    for lo in 0..count {
                        for hi in [0, count - 1, lo] {
                            let p = (lo << offset) | (hi << (16 + offset));
                            let noisy = p | !code_bits;
                            let want = (reference_cast(from, to, lo), reference_cast(from, to, hi));
                            for input in [p, noisy] {
                                let got = fast.eval_pair(input);
                                assert_eq!(
                                    (got & 0xffff, got >> 16),
                                    want,
                                    "{from} -> {to} at {offset}: codes {lo:#x}, {hi:#x}, input {input:#010x}"
                                );
                            }
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 100, "only {checked} recipes");
        let i4 = FastCast::new(DType::Signed(4), DType::F16)
            .unwrap()
            .at_offset(4)
            .unwrap();
        let Recipe::Halves {
            mask_a,
            xor,
            mul,
            add,
            ..
        } = i4.recipe
        else {
            panic!()
        };
        // x = 1024 + 16·(c ^ 8); x / 16 − 72 = c.
        assert_eq!(
            (mask_a, xor, mul, add),
            (0x00f0_00f0, 0x0080_0080, 0x2c00, 0xd480)
        );
        assert!(FastCast::new(DType::Signed(4), DType::Bf16)
            .unwrap()
            .at_offset(4)
            .is_none());
    }

    /// Asserts that `cast` converts the pair of codes `lo` and `hi` as `reference_cast` does,
    /// from one register per field: the field's bits of `lo` at its place `to`, those of `hi`
    /// 16 bits above, every other bit set.
    fn assert_exact_pair(cast: &PlaneCast, lo: u32, hi: u32, context: &str) {
        let registers: Vec<u32> = cast
            .fields
            .iter()
            .map(|field| {
                let shift = cast.widths[..field.plane].iter().sum::<u32>() + field.start;
                let bits = |code: u32| (code >> shift) & ((1 << field.width) - 1);
                (bits(lo) << field.to | bits(hi) << (field.to + 16)) | !field.mask()
            })
            .collect();
        let got = cast.eval(&registers);
        let (code, to) = (cast.base.from, cast.base.to);
        assert_eq!(
            (got & 0xffff, got >> 16),
            (reference_cast(code, to, lo), reference_cast(code, to, hi)),
            "{code} -> {to} from planes {:?}{context}: codes {lo:#x}, {hi:#x}",
            cast.widths
        );
    }

    /// Every code of every integer type up to 8 bits, split into planes in several ways, at
    /// every offset the recipe takes, with every bit outside the planes' fields set.
    #[test]
    fn plane_casts_are_exact_for_every_code() {
        let splits: [&[u32]; 8] = [
            &[2, 1],
            &[1, 2],
            &[4, 1],
            &[4, 2],
            &[4, 2, 1],
            &[1, 1, 1],
            &[2, 2],
            &[4, 4],
        ];
        let mut checked = 0;
        for split in splits {
            let bits: u32 = split.iter().sum();
            for code in [DType::Unsigned(bits as u8), DType::Signed(bits as u8)] {
                for to in [DType::F16, DType::Bf16] {
                    for offset in 0..16 {
                        let Some(cast) = PlaneCast::new(code, to, split, offset) else {
                            continue;
                        };
                        for lo in 0..1u32 << bits {
                            for hi in [0, (1 << bits) - 1, lo ^ 1] {
                                assert_exact_pair(&cast, lo, hi, &format!(" at {offset}"));
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 60, "only {checked} plane casts");
        // i3 from 2 + 1 bits at offset 2 into f16: the 2-bit field at bits 2..4, the 1-bit
        // field at bit 4 (the sign, flipped by the xor).
        let i3 = PlaneCast::new(DType::Signed(3), DType::F16, &[2, 1], 2).unwrap();
        let masks: Vec<u32> = i3.fields.iter().map(PlaneField::mask).collect();
        assert_eq!(masks, [0x000c_000c, 0x0010_0010]);
        assert!(PlaneCast::new(DType::Signed(7), DType::F16, &[4, 2, 1], 4).is_none());
        assert!(PlaneCast::new(DType::Signed(3), DType::F16, &[2, 2], 0).is_none());
    }

    /// The device's NaN test of f8e4m3 (a packed f16 compare of the magnitude term with the
    /// marker, then a select) gives what the fixup says for every code; other formats keep
    /// their per-half tests.
    #[test]
    fn nan_markers_find_exactly_the_nan_codes() {
        let mut with_marker = Vec::new();
        for from in DType::all_small() {
            for to in [DType::F16, DType::Bf16] {
                let Some(fast) = FastCast::new(from, to) else {
                    continue;
                };
                let Some(marker) = fast.nan_marker() else {
                    continue;
                };
                with_marker.push((from.to_string(), to.to_string(), marker));
                let Recipe::Halves {
                    shift_a, mask_a, ..
                } = fast.recipe
                else {
                    panic!("{from} -> {to}: a marker needs a halves recipe")
                };
                for code in 0..1u32 << from.bits() {
                    let term = ((code << shift_a) & mask_a) as u16;
                    let hit = f16::from_bits(term) == f16::from_bits(marker);
                    let device = if hit {
                        fast.fixups[0].result as u32
                    } else {
                        fast.arithmetic(code) & 0xffff
                    };
                    assert_eq!(
                        device,
                        fast.eval_pair(code) & 0xffff,
                        "{from} -> {to}: code {code:#x}"
                    );
                }
            }
        }
        assert_eq!(
            with_marker,
            [
                ("f8e4m3".to_string(), "f16".to_string(), 0x3f80),
                ("f8e4m3".to_string(), "bf16".to_string(), 0x07f0)
            ]
        );
    }

    /// Every code of every small float without fixups, split into planes in several ways (the
    /// sign alone, or sharing a plane with the top magnitude bits), with every bit outside the
    /// fields set: each field is placed where the float recipe puts those bits.
    #[test]
    fn float_plane_casts_are_exact_for_every_code() {
        let mut checked = 0;
        for code in DType::all_small() {
            let DType::MiniFloat(_) = code else {
                continue;
            };
            let n = code.bits();
            let magnitude = n - 1;
            let mut splits = vec![vec![magnitude, 1], vec![1, magnitude]];
            if magnitude >= 2 {
                splits.push(vec![magnitude - 1, 1, 1]);
                splits.push(vec![1, magnitude - 1, 1]);
                splits.push(vec![magnitude - 1, 2]);
            }
            for to in [DType::F16, DType::Bf16] {
                for split in &splits {
                    let Some(cast) = PlaneCast::new(code, to, split, 0) else {
                        assert!(
                            FastCast::new(code, to).is_none_or(|f| !f.fixups.is_empty()),
                            "{code} -> {to}: planes {split:?} refused"
                        );
                        continue;
                    };
                    let last = cast.fields.last().map(|field| field.to);
                    assert_eq!(last, Some(15), "{code}: the sign goes to bit 15");
                    for lo in 0..1u32 << n {
                        assert_exact_pair(&cast, lo, lo ^ 0b101, "");
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 60, "only {checked} float plane casts");
        // f6e3m2 into f16 from 4 + 2: the low four bits at 8..12; the 2-bit plane is two
        // fields, its low bit (the top exponent bit) at 12 and its high bit (the sign) at 15.
        let f6e3m2 = "f6e3m2".parse::<DType>().unwrap();
        let cast = PlaneCast::new(f6e3m2, DType::F16, &[4, 2], 0).unwrap();
        let places: Vec<_> = cast
            .fields
            .iter()
            .map(|field| (field.plane, field.start, field.width, field.to))
            .collect();
        assert_eq!(places, [(0, 0, 4, 8), (1, 0, 1, 12), (1, 1, 1, 15)]);
        let f8e4m3 = "f8e4m3".parse::<DType>().unwrap();
        assert!(PlaneCast::new(f8e4m3, DType::F16, &[4, 2, 1, 1], 0).is_none());
    }

    #[test]
    fn required_fast_paths_exist() {
        let names = [
            "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "i1", "i2", "i3", "i4", "i5", "i6",
            "i7", "i8", "f6e3m2", "f6e2m3", "f5e2m2", "f4e2m1", "f3e1m1", "f8e4m3", "f8e5m2",
        ];
        for name in names {
            let from: DType = name.parse().unwrap();
            for to in [DType::F16, DType::Bf16] {
                assert!(FastCast::new(from, to).is_some(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn known_constants() {
        let u4 = FastCast::new(DType::Unsigned(4), DType::F16).unwrap();
        assert_eq!(
            u4.recipe,
            Recipe::Halves {
                shift_a: 0,
                mask_a: 0x000f_000f,
                shift_b: 0,
                mask_b: 0,
                xor: 0,
                or: 0x6400_6400,
                mul: 0x3c00,
                add: 0xe400,
            }
        );
        let i4 = FastCast::new(DType::Signed(4), DType::F16).unwrap();
        let Recipe::Halves { xor, add, .. } = i4.recipe else {
            panic!()
        };
        assert_eq!((xor, add), (0x0008_0008, 0xe408)); // -1032
        let e2m1 = FastCast::new("f4e2m1".parse().unwrap(), DType::F16).unwrap();
        let Recipe::Halves { shift_a, mul, .. } = e2m1.recipe else {
            panic!()
        };
        assert_eq!((shift_a, mul), (9, 0x7400)); // 2^(15 - 1) = 16384
    }
}
