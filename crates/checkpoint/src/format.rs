//! The anybit quantized checkpoint format (docs/quantize.md is its full description).
//!
//! A quantized weight `NAME` of shape `[N, K]` is stored in one safetensors file as
//! - `NAME.codes`: `U8`, the codes of the `[N, K]` matrix packed as `anybit_dtype::pack` packs
//!   them (element i at bits `[i·b, (i+1)·b)` of a little-endian bit stream), shape
//!   `[N, K·b/8]`, or `[⌈N·K·b/8⌉]` when a row does not end on a byte boundary;
//! - `NAME.scales`: `[N, ⌈K/group⌉]` in the scale type (`F16`, `BF16` or `F32`); when the
//!   group size does not divide K, the last group of each row is short (K mod group elements);
//! - `NAME.zeros`: `[N, ⌈K/group⌉]` `U8` zero-point codes, for unsigned weight types only;
//! - `NAME.perm`: `[K]` `I32`, only for weights imported with GPTQ's act-order: column `j` of
//!   the stored matrix is column `perm[j]` of the original weight (so the activations are
//!   gathered as `x[perm[j]]`);
//!
//! and the header's `__metadata__` holds `anybit.format_version` (`"1"`) and, for each quantized
//! weight, `anybit.NAME`: a JSON object (as a string) with `dtype`, `group_size`, `shape`,
//! `scale_dtype`, `zero_points`, `source_dtype`, `search` and, when `NAME.perm` exists,
//! `permuted`. Every other tensor is an ordinary
//! safetensors tensor. [`QuantizedCheckpoint`] reads the quantized weights back as
//! [`QuantizedMatrix`] values.

use std::collections::BTreeMap;
use std::path::Path;

use anybit_dtype::{packed_bytes, DType, QuantizedMatrix, ScaleSearch};
use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::tensor_file::{TensorDtype, TensorEntry, TensorFile};
use crate::CheckpointError;

/// The version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The metadata key of the format version.
pub const FORMAT_VERSION_KEY: &str = "anybit.format_version";

/// The metadata key that describes quantized weight `name`.
pub fn metadata_key(name: &str) -> String {
    format!("anybit.{name}")
}

/// The name of the packed codes of quantized weight `name`.
pub fn codes_name(name: &str) -> String {
    format!("{name}.codes")
}

/// The name of the scales of quantized weight `name`.
pub fn scales_name(name: &str) -> String {
    format!("{name}.scales")
}

/// The name of the zero points of quantized weight `name`.
pub fn zeros_name(name: &str) -> String {
    format!("{name}.zeros")
}

/// The name of the column permutation of quantized weight `name` (act-order imports).
pub fn perm_name(name: &str) -> String {
    format!("{name}.perm")
}

/// The shape of the codes tensor of an `[rows, cols]` matrix of `bits`-bit codes.
pub fn codes_shape(rows: usize, cols: usize, bits: u32) -> Vec<usize> {
    let row_bits = cols * bits as usize;
    if row_bits.is_multiple_of(8) {
        vec![rows, row_bits / 8]
    } else {
        vec![packed_bytes(rows * cols, bits)]
    }
}

/// What the metadata says about one quantized weight.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantizedTensorInfo {
    /// The weight type (`u3`, `i4`, `f6e3m2`, …).
    pub dtype: String,
    /// Elements per group along K (K itself for one group per row); the last group of a row
    /// is short when it does not divide K.
    pub group_size: usize,
    /// `[N, K]`.
    pub shape: [usize; 2],
    /// `f16`, `bf16` or `f32`.
    pub scale_dtype: String,
    /// Whether `NAME.zeros` exists (unsigned weight types).
    pub zero_points: bool,
    /// The safetensors dtype of the original weight (`F16`, `BF16` or `F32`).
    pub source_dtype: String,
    /// How scales were chosen: `none` (round to nearest) or `mse`; for imported weights the
    /// method of the source (`gptq`, `awq`).
    pub search: String,
    /// Whether `NAME.perm` exists: the stored columns are the original's permuted (GPTQ
    /// act-order). Absent in the metadata when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub permuted: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl QuantizedTensorInfo {
    /// The JSON text stored in the metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The name of a scale search as the metadata writes it.
    pub fn search_name(search: ScaleSearch) -> &'static str {
        match search {
            ScaleSearch::None => "none",
            ScaleSearch::Mse => "mse",
        }
    }
}

/// A quantized weight's metadata, checked and typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Description {
    dtype: DType,
    group_size: usize,
    rows: usize,
    cols: usize,
    scale_dtype: DType,
    zero_points: bool,
}

impl Description {
    fn parse(info: &QuantizedTensorInfo) -> Result<Self, String> {
        let dtype: DType = info.dtype.parse().map_err(|error| format!("{error}"))?;
        if dtype.bits() > 8 || dtype == DType::Signed(1) {
            return Err(format!("`{dtype}` is not a weight type"));
        }
        let scale_dtype: DType = info
            .scale_dtype
            .parse()
            .map_err(|error| format!("{error}"))?;
        if TensorDtype::from_scale_dtype(scale_dtype).is_none() {
            return Err(format!(
                "scales of type `{scale_dtype}`: only f16, bf16 and f32"
            ));
        }
        let [rows, cols] = info.shape;
        if info.group_size == 0 {
            return Err("group size 0: a group holds at least one element".to_string());
        }
        let unsigned = matches!(dtype, DType::Unsigned(_));
        if info.zero_points != unsigned {
            return Err(format!(
                "zero_points is {} for {dtype}; unsigned types have zero points, others none",
                info.zero_points
            ));
        }
        Ok(Description {
            dtype,
            group_size: info.group_size,
            rows,
            cols,
            scale_dtype,
            zero_points: info.zero_points,
        })
    }
}

/// A checkpoint written by `anybit quantize`: its quantized weights and its other tensors.
#[derive(Debug)]
pub struct QuantizedCheckpoint {
    checkpoint: Checkpoint,
    /// Quantized weight name → its metadata and the file (index into the checkpoint's files)
    /// whose header holds it.
    quantized: BTreeMap<String, (QuantizedTensorInfo, usize)>,
}

impl QuantizedCheckpoint {
    /// Opens a quantized checkpoint: a file, an index, or a directory (as [`Checkpoint::open`]).
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let checkpoint = Checkpoint::open(path)?;
        let mut quantized = BTreeMap::new();
        for (file_index, file) in checkpoint.files().iter().enumerate() {
            let format_error = |reason: String| CheckpointError::Format {
                path: file.path().to_path_buf(),
                reason,
            };
            let metadata = file.metadata();
            match metadata.get(FORMAT_VERSION_KEY) {
                Some(version) if *version == FORMAT_VERSION.to_string() => {}
                Some(version) => {
                    return Err(format_error(format!(
                        "anybit format version {version}; this anybit reads version {FORMAT_VERSION}"
                    )))
                }
                None => {
                    return Err(format_error(format!(
                        "not an anybit quantized checkpoint (no `{FORMAT_VERSION_KEY}` in its metadata)"
                    )))
                }
            }
            for (key, value) in metadata {
                let Some(name) = key.strip_prefix("anybit.") else {
                    continue;
                };
                if key == FORMAT_VERSION_KEY {
                    continue;
                }
                let info: QuantizedTensorInfo = serde_json::from_str(value).map_err(|error| {
                    CheckpointError::tensor(
                        file.path(),
                        name,
                        format!("its metadata `{key}` is not a valid description: {error}"),
                    )
                })?;
                quantized.insert(name.to_string(), (info, file_index));
            }
        }
        Ok(QuantizedCheckpoint {
            checkpoint,
            quantized,
        })
    }

    /// The underlying checkpoint (every tensor, quantized parts included).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The names of the quantized weights, sorted.
    pub fn quantized_names(&self) -> impl Iterator<Item = &str> {
        self.quantized.keys().map(String::as_str)
    }

    /// What the metadata says about quantized weight `name`.
    pub fn info(&self, name: &str) -> Option<&QuantizedTensorInfo> {
        self.quantized.get(name).map(|(info, _)| info)
    }

    /// The names of the tensors that make up quantized weight `name` (codes, scales, and zero
    /// points and permutation when it has them).
    pub fn part_names(info: &QuantizedTensorInfo, name: &str) -> Vec<String> {
        let mut parts = vec![codes_name(name), scales_name(name)];
        if info.zero_points {
            parts.push(zeros_name(name));
        }
        if info.permuted {
            parts.push(perm_name(name));
        }
        parts
    }

    /// The tensors that are not part of a quantized weight (copied unchanged), sorted by name.
    pub fn plain_names(&self) -> Vec<&str> {
        let parts: std::collections::BTreeSet<String> = self
            .quantized
            .iter()
            .flat_map(|(name, (info, _))| Self::part_names(info, name))
            .collect();
        self.checkpoint
            .names()
            .filter(|name| !parts.contains(*name))
            .collect()
    }

    /// The index (into the checkpoint's files) of the file whose header describes quantized
    /// weight `name`; its parts are in that file.
    pub fn file_index(&self, name: &str) -> Option<usize> {
        self.quantized.get(name).map(|&(_, file_index)| file_index)
    }

    /// Loads quantized weight `name`, checking its parts against its metadata. (Its column
    /// permutation, if it has one, is [`QuantizedParts::permutation`] of [`Self::parts`].)
    pub fn matrix(&self, name: &str) -> Result<QuantizedMatrix, CheckpointError> {
        Ok(self.parts(name)?.to_matrix())
    }

    /// The parts of quantized weight `name`, borrowed from the file, checked against its
    /// metadata: every part present with the dtype and shape it needs, scales finite, zero
    /// points within the weight type, the permutation (if any) one of `0..K`.
    pub fn parts(&self, name: &str) -> Result<QuantizedParts<'_>, CheckpointError> {
        let (info, file_index) =
            self.quantized
                .get(name)
                .ok_or_else(|| CheckpointError::Format {
                    path: self.checkpoint.files()[0].path().to_path_buf(),
                    reason: format!("no quantized weight `{name}` in the checkpoint"),
                })?;
        let file = &self.checkpoint.files()[*file_index];
        let description = Description::parse(info)
            .map_err(|reason| CheckpointError::tensor(file.path(), name, reason))?;
        let Description {
            dtype,
            group_size,
            rows,
            cols,
            scale_dtype,
            zero_points,
        } = description;
        let groups = rows * cols.div_ceil(group_size);
        let part = |part_name: String,
                    dtype: TensorDtype,
                    shapes: &[Vec<usize>]|
         -> Result<&[u8], CheckpointError> {
            let entry = file.tensor(&part_name).ok_or_else(|| {
                CheckpointError::tensor(file.path(), name, format!("`{part_name}` is missing"))
            })?;
            check_part(file, name, entry, dtype, shapes)?;
            Ok(file.data(entry))
        };
        let packed = packed_bytes(rows * cols, dtype.bits());
        let codes = part(
            codes_name(name),
            TensorDtype::U8,
            &[codes_shape(rows, cols, dtype.bits()), vec![packed]],
        )?;
        let scale_tensor_dtype = TensorDtype::from_scale_dtype(scale_dtype)
            .ok_or_else(|| CheckpointError::tensor(file.path(), name, "bad scale type"))?;
        let scale_shape = vec![rows, cols.div_ceil(group_size)];
        let scale_bytes = part(
            scales_name(name),
            scale_tensor_dtype,
            std::slice::from_ref(&scale_shape),
        )?;
        let mut scales = Vec::with_capacity(groups);
        crate::tensor_file::decode_floats(scale_tensor_dtype, scale_bytes, &mut scales);
        if let Some(bad) = scales.iter().position(|scale| !scale.is_finite()) {
            return Err(CheckpointError::tensor(
                file.path(),
                name,
                format!("scale {bad} is {}", scales[bad]),
            ));
        }
        let zero_points = if zero_points {
            let bytes = part(zeros_name(name), TensorDtype::U8, &[scale_shape])?;
            if let Some(bad) = bytes
                .iter()
                .position(|&zero| zero as f64 > dtype.max_value())
            {
                return Err(CheckpointError::tensor(
                    file.path(),
                    name,
                    format!(
                        "zero point {bad} is {}, beyond the largest {dtype} code",
                        bytes[bad]
                    ),
                ));
            }
            Some(bytes)
        } else {
            None
        };
        let permutation = if info.permuted {
            let bytes = part(perm_name(name), TensorDtype::I32, &[vec![cols]])?;
            let permutation: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32)
                .collect();
            let mut seen = vec![false; cols];
            for (position, &column) in permutation.iter().enumerate() {
                match seen.get_mut(column as usize) {
                    Some(seen) if !*seen => *seen = true,
                    _ => {
                        return Err(CheckpointError::tensor(
                            file.path(),
                            name,
                            format!(
                                "`{}` is not a permutation of 0..{cols}: entry {position} is {}",
                                perm_name(name),
                                column as i32
                            ),
                        ))
                    }
                }
            }
            Some(permutation)
        } else {
            None
        };
        Ok(QuantizedParts {
            rows,
            cols,
            dtype,
            group_size,
            scale_dtype,
            codes,
            scales,
            zero_points,
            permutation,
        })
    }
}

/// A quantized weight's parts, checked, its codes and zero points borrowed from the file.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedParts<'a> {
    pub rows: usize,
    pub cols: usize,
    pub dtype: DType,
    pub group_size: usize,
    pub scale_dtype: DType,
    /// The packed codes of the stored `[rows, cols]` matrix.
    pub codes: &'a [u8],
    /// `[rows, ⌈cols / group_size⌉]`, exactly representable in `scale_dtype`.
    pub scales: Vec<f32>,
    /// `[rows, ⌈cols / group_size⌉]` zero-point codes, for unsigned types.
    pub zero_points: Option<&'a [u8]>,
    /// Column `j` of the stored matrix is column `permutation[j]` of the original weight.
    pub permutation: Option<Vec<u32>>,
}

impl QuantizedParts<'_> {
    /// The stored matrix (in stored column order) as a `QuantizedMatrix`.
    pub fn to_matrix(&self) -> QuantizedMatrix {
        QuantizedMatrix {
            rows: self.rows,
            cols: self.cols,
            dtype: self.dtype,
            group_size: self.group_size,
            scale_dtype: self.scale_dtype,
            codes: self.codes.to_vec(),
            scales: self.scales.clone(),
            zero_points: self
                .zero_points
                .map(|zeros| zeros.iter().map(|&zero| zero as u32).collect()),
        }
    }
}

/// Checks that a part of a quantized weight has the dtype and one of the shapes expected.
fn check_part(
    file: &TensorFile,
    name: &str,
    entry: &TensorEntry,
    dtype: TensorDtype,
    shapes: &[Vec<usize>],
) -> Result<(), CheckpointError> {
    if entry.dtype != dtype || !shapes.contains(&entry.shape) {
        return Err(CheckpointError::tensor(
            file.path(),
            name,
            format!(
                "`{}` is {} {:?}; expected {dtype} {:?}",
                entry.name, entry.dtype, entry.shape, shapes[0]
            ),
        ));
    }
    Ok(())
}
