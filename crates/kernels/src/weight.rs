//! Prepared weights on the host: codes in the fragment layout, scales and zero points per tile
//! and group, made once per weight matrix.
//!
//! What this module promises: a [`PreparedWeight`] always holds a format that
//! [`QuantFormat::check`] accepted and buffers of exactly the lengths its layouts give; every
//! constructor checks its inputs and names the problem, never panics on them.
//! [`PreparedWeight::dequantize`] gives back, in f64, exactly the weight the inputs describe.

use anybit_dtype::{
    packed_bytes, quantize, DType, GroupSize, QuantizeError, QuantizeOptions, QuantizedMatrix,
    Weights,
};

use crate::format::{FormatError, Group, QuantFormat, ZeroPoints};
use crate::prepared::{prepare_codes, FragmentLayout, GroupLayout};

/// Inputs that do not describe a weight.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Quantize(#[from] QuantizeError),
    #[error("{what} has {found} {unit}, but a {n}×{k} {format} weight needs {expected}")]
    Length {
        what: &'static str,
        found: usize,
        unit: &'static str,
        expected: usize,
        n: usize,
        k: usize,
        format: QuantFormat,
    },
    #[error("scales are stored as f16, bf16 or f32, not {0}")]
    ScaleType(DType),
    #[error("the format {0} needs zero points, and none were given")]
    MissingZeros(QuantFormat),
    #[error("zero points were given, but the format {0} has none")]
    UnexpectedZeros(QuantFormat),
    #[error("{what} of row {row}, group {group} is {value}, which is not finite")]
    NonFinite {
        what: &'static str,
        row: usize,
        group: usize,
        value: f32,
    },
}

/// A quantized weight `W[n, k]` in the layout the kernels read.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedWeight {
    pub format: QuantFormat,
    pub n: usize,
    pub k: usize,
    /// The type of `scales` and `zeros`.
    pub scale_dtype: DType,
    pub codes_layout: FragmentLayout,
    pub groups_layout: GroupLayout,
    /// Codes in the fragment layout, packed.
    pub codes: Vec<u8>,
    /// Scales in the group layout, each a code of `scale_dtype` (2 or 4 bytes, little-endian).
    pub scales: Vec<u8>,
    /// Zero points in code units (`(q − z) · s`; for [`ZeroPoints::Scaled`] `z / s`, rounded
    /// to `scale_dtype`), in the group layout.
    pub zeros: Option<Vec<u8>>,
}

fn encode_values(dtype: DType, values: &[f32]) -> Vec<u8> {
    let bytes = (dtype.bits() / 8) as usize;
    values
        .iter()
        .flat_map(|&value| {
            let code = dtype.encode(value);
            code.to_le_bytes().into_iter().take(bytes)
        })
        .collect()
}

pub(crate) fn decode_values(dtype: DType, bytes: &[u8]) -> Vec<f64> {
    let width = (dtype.bits() / 8) as usize;
    bytes
        .chunks_exact(width)
        .map(|chunk| {
            let mut code = [0u8; 4];
            code[..width].copy_from_slice(chunk);
            dtype.decode(u32::from_le_bytes(code))
        })
        .collect()
}

impl PreparedWeight {
    /// Prepares an already quantized weight: `codes` packed row-major (`anybit_dtype::pack` of
    /// the `[n, k]` codes), `scales` and `zeros` row-major `[n, groups]` (zero points as code
    /// values for [`ZeroPoints::Codes`], as floats after scaling for [`ZeroPoints::Scaled`]).
    /// Scales are stored as `scale_dtype` (f16, bf16 or f32; rounded to nearest).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        format: QuantFormat,
        n: usize,
        k: usize,
        codes: &[u8],
        scales: &[f32],
        zeros: Option<&[f32]>,
        scale_dtype: DType,
    ) -> Result<PreparedWeight, WeightError> {
        format.check(n, k)?;
        if !matches!(scale_dtype, DType::F16 | DType::Bf16 | DType::F32) {
            return Err(WeightError::ScaleType(scale_dtype));
        }
        let bits = format.weight.bits();
        let codes_layout = FragmentLayout::new(format.weight, n, k);
        let groups_layout = GroupLayout::new(&codes_layout, format.group.size(k));
        let groups = groups_layout.groups;
        let length = |what, found, unit, expected| WeightError::Length {
            what,
            found,
            unit,
            expected,
            n,
            k,
            format,
        };
        let code_bytes = packed_bytes(n * k, bits);
        if codes.len() != code_bytes {
            return Err(length("the code buffer", codes.len(), "bytes", code_bytes));
        }
        if scales.len() != n * groups {
            return Err(length("the scales", scales.len(), "values", n * groups));
        }
        let check_finite = |what, values: &[f32]| {
            values
                .iter()
                .position(|value| !value.is_finite())
                .map_or(Ok(()), |index| {
                    Err(WeightError::NonFinite {
                        what,
                        row: index / groups,
                        group: index % groups,
                        value: values[index],
                    })
                })
        };
        check_finite("the scale", scales)?;
        let zeros = match (format.zeros, zeros) {
            (ZeroPoints::None, None) => None,
            (ZeroPoints::None, Some(_)) => return Err(WeightError::UnexpectedZeros(format)),
            (_, None) => return Err(WeightError::MissingZeros(format)),
            (mode, Some(zeros)) => {
                if zeros.len() != n * groups {
                    return Err(length("the zero points", zeros.len(), "values", n * groups));
                }
                check_finite("the zero point", zeros)?;
                let code_units: Vec<f32> = match mode {
                    ZeroPoints::Scaled => zeros
                        .iter()
                        .zip(scales)
                        .map(|(&z, &s)| {
                            if s == 0.0 {
                                0.0
                            } else {
                                (z as f64 / s as f64) as f32
                            }
                        })
                        .collect(),
                    _ => zeros.to_vec(),
                };
                Some(encode_values(
                    scale_dtype,
                    &groups_layout.prepare(&code_units, 0.0),
                ))
            }
        };
        Ok(PreparedWeight {
            format,
            n,
            k,
            scale_dtype,
            codes: prepare_codes(&codes_layout, codes),
            scales: encode_values(scale_dtype, &groups_layout.prepare(scales, 0.0)),
            zeros,
            codes_layout,
            groups_layout,
        })
    }

    /// Prepares the output of `anybit_dtype::quantize` (zero points as codes for unsigned
    /// types); scales keep their type.
    pub fn from_quantized(matrix: &QuantizedMatrix) -> Result<PreparedWeight, WeightError> {
        let group = if matrix.group_size == matrix.cols {
            Group::PerChannel
        } else {
            Group::Elements(matrix.group_size)
        };
        let zeros: Option<Vec<f32>> = matrix
            .zero_points
            .as_ref()
            .map(|zeros| zeros.iter().map(|&z| z as f32).collect());
        let format = QuantFormat {
            weight: matrix.dtype,
            group,
            zeros: if zeros.is_some() {
                ZeroPoints::Codes
            } else {
                ZeroPoints::None
            },
        };
        PreparedWeight::from_parts(
            format,
            matrix.rows,
            matrix.cols,
            &matrix.codes,
            &matrix.scales,
            zeros.as_deref(),
            matrix.scale_dtype,
        )
    }

    /// Quantizes a row-major `[n, k]` matrix (round to nearest; unsigned types get zero points,
    /// see `anybit_dtype::quantize`) and prepares it.
    pub fn quantize(
        weights: Weights<'_>,
        n: usize,
        k: usize,
        weight: DType,
        group: Group,
        scale_dtype: DType,
    ) -> Result<PreparedWeight, WeightError> {
        QuantFormat::new(weight, group).check(n, k)?;
        let options = QuantizeOptions {
            dtype: weight,
            group_size: match group {
                Group::Elements(size) => GroupSize::Elements(size),
                Group::PerChannel => GroupSize::PerChannel,
            },
            scale_dtype,
        };
        PreparedWeight::from_quantized(&quantize(weights, n, k, options)?)
    }

    /// The weight as the kernels see it, row-major `[n, k]`, in f64: `(decode(q) − z) · s` with
    /// the stored (rounded) scales and zero points.
    pub fn dequantize(&self) -> Vec<f64> {
        (0..self.n)
            .flat_map(|row| self.dequantize_row(row))
            .collect()
    }

    /// Row `row` of [`PreparedWeight::dequantize`].
    pub fn dequantize_row(&self, row: usize) -> Vec<f64> {
        let value = |bytes: &[u8], group: usize| {
            let position = self.groups_layout.position(row, group);
            let width = (self.scale_dtype.bits() / 8) as usize;
            decode_values(
                self.scale_dtype,
                &bytes[position * width..(position + 1) * width],
            )[0]
        };
        let group_size = self.format.group.size(self.k);
        let weight = self.format.weight;
        (0..self.k)
            .map(|col| {
                let code = self.codes_layout.read(&self.codes, row, col);
                let group = col / group_size;
                let zero = self.zeros.as_ref().map_or(0.0, |zeros| value(zeros, group));
                (weight.decode(code) - zero) * value(&self.scales, group)
            })
            .collect()
    }

    /// Bytes the kernels read per product: codes, scales and zero points.
    pub fn bytes(&self) -> usize {
        self.codes.len() + self.scales.len() + self.zeros.as_ref().map_or(0, Vec::len)
    }
}
