//! Dequantizing an anybit quantized checkpoint back into a plain safetensors checkpoint.
//!
//! [`dequantize_checkpoint`] writes, for every quantized weight `NAME`, a tensor `NAME` of its
//! original shape `[N, K]` (in its original column order when it carries a permutation) whose
//! values are exactly those of `anybit_dtype::QuantizedMatrix::dequantize` (computed in f64,
//! rounded to f32), rounded once more to f16 or bf16 when that is the output type; every other
//! tensor is copied unchanged into the shard it came from. The `anybit.*` metadata is dropped,
//! other metadata kept. The output type is the one asked for, or by default each weight's
//! `source_dtype`.
//!
//! It promises what quantizing promises: everything (every weight's parts, the output's names and
//! path) is checked before anything is written, the input is never written, the output appears
//! whole or not at all, and memory stays small (rows are dequantized in blocks on every core and
//! written as they come).

use std::ops::Range;
use std::path::Path;

use anybit_dtype::DType;

use crate::format::{QuantizedCheckpoint, QuantizedParts, FORMAT_VERSION_KEY};
use crate::quantize::{
    copy_unchanged, row_blocks, worker_threads, CheckpointSummary, Progress, TensorOutcome,
    TensorSummary,
};
use crate::rewrite::{check_output, write_checkpoint, OutputFile};
use crate::tensor_file::TensorDtype;
use crate::writer::{FileLayout, PlannedTensor, TensorFileWriter};
use crate::CheckpointError;

/// How to dequantize a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DequantizeSettings {
    /// The type of the dequantized weights: `F16`, `BF16` or `F32`; `None` for each weight's
    /// original type (its metadata's `source_dtype`).
    pub dtype: Option<TensorDtype>,
}

/// What to do with one tensor of an input file, in the order of the input's data.
enum Action {
    /// Copy the input tensor at this position.
    Copy(usize),
    /// Dequantize this weight into this type.
    Dequantize {
        name: String,
        dtype: TensorDtype,
        /// The names of its parts in the input file.
        parts: Vec<String>,
    },
}

/// Dequantizes the anybit checkpoint at `input` (a file, an index or a directory) into
/// `output` (a file, or for a sharded input a new or empty directory). See the module docs.
pub fn dequantize_checkpoint(
    input: &Path,
    output: &Path,
    settings: DequantizeSettings,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CheckpointSummary, CheckpointError> {
    if let Some(dtype) = settings.dtype {
        if dtype.as_weight_dtype().is_none() {
            return Err(CheckpointError::Request(format!(
                "weights are dequantized to F16, BF16 or F32, not {dtype}"
            )));
        }
    }
    let quantized = QuantizedCheckpoint::open(input)?;
    let checkpoint = quantized.checkpoint();
    check_output(output, checkpoint)?;
    let plans = plan(&quantized, settings)?;
    let tensors = plans.iter().map(|(_, actions)| actions.len()).sum();
    progress(Progress::Planned {
        tensors,
        bytes: checkpoint.data_len(),
    });
    let mut summaries = Vec::with_capacity(tensors);
    let outputs: Vec<OutputFile> = plans
        .iter()
        .enumerate()
        .map(|(index, (layout, _))| OutputFile::new(checkpoint, index, layout.clone()))
        .collect();
    let files = write_checkpoint(
        checkpoint,
        output,
        &outputs,
        |metadata| {
            metadata.remove(FORMAT_VERSION_KEY);
        },
        |file, writer| {
            let input = &checkpoint.files()[file.input];
            for action in &plans[file.input].1 {
                let summary = match action {
                    Action::Copy(position) => {
                        copy_unchanged(input, &input.tensors()[*position], writer, progress)?
                    }
                    Action::Dequantize { name, dtype, parts } => {
                        let weight = quantized.parts(name)?;
                        let summary = dequantize_weight(name, &weight, *dtype, writer, progress)?;
                        let mut bytes_in = 0;
                        for part in parts.iter().filter_map(|part| input.tensor(part)) {
                            bytes_in += part.byte_len() as u64;
                            input.release(part);
                        }
                        TensorSummary {
                            bytes_in,
                            ..summary
                        }
                    }
                };
                progress(Progress::Finished(&summary));
                summaries.push(summary);
            }
            Ok(())
        },
    )?;
    Ok(CheckpointSummary::new(summaries, files))
}

/// Checks every quantized weight and lays out every output file.
fn plan(
    quantized: &QuantizedCheckpoint,
    settings: DequantizeSettings,
) -> Result<Vec<(FileLayout, Vec<Action>)>, CheckpointError> {
    let checkpoint = quantized.checkpoint();
    let mut plans = Vec::with_capacity(checkpoint.files().len());
    for (file_index, file) in checkpoint.files().iter().enumerate() {
        // The weights described in this file, by the position of their codes in its data.
        let mut weights: Vec<(usize, String, TensorDtype, Vec<String>)> = Vec::new();
        let mut parts = std::collections::BTreeSet::new();
        for name in quantized.quantized_names() {
            if quantized.file_index(name) != Some(file_index) {
                continue;
            }
            let info = quantized.info(name).ok_or_else(|| {
                CheckpointError::tensor(file.path(), name, "its metadata is missing")
            })?;
            // Every part is checked now, so that nothing is written for a damaged weight.
            quantized.parts(name)?;
            if checkpoint.find(name).is_some() {
                return Err(CheckpointError::tensor(
                    file.path(),
                    name,
                    "the checkpoint also has a plain tensor of this name, which the dequantized weight would replace",
                ));
            }
            let dtype = match settings.dtype {
                Some(dtype) => dtype,
                None => TensorDtype::from_name(&info.source_dtype)
                    .filter(|dtype| dtype.as_weight_dtype().is_some())
                    .ok_or_else(|| {
                        CheckpointError::tensor(
                            file.path(),
                            name,
                            format!(
                                "its source_dtype `{}` is not F16, BF16 or F32; choose the output type",
                                info.source_dtype
                            ),
                        )
                    })?,
            };
            let part_names = QuantizedCheckpoint::part_names(info, name);
            let codes = file
                .tensors()
                .iter()
                .position(|entry| entry.name == part_names[0])
                .unwrap_or(0);
            parts.extend(part_names.iter().cloned());
            weights.push((codes, name.to_string(), dtype, part_names));
        }
        let mut planned = Vec::new();
        let mut actions: Vec<(usize, Action)> = Vec::new();
        for (position, entry) in file.tensors().iter().enumerate() {
            if parts.contains(&entry.name) {
                continue;
            }
            planned.push(PlannedTensor {
                name: entry.name.clone(),
                dtype: entry.dtype,
                shape: entry.shape.clone(),
            });
            actions.push((position, Action::Copy(position)));
        }
        for (codes, name, dtype, part_names) in weights {
            let info = quantized.info(&name).ok_or_else(|| {
                CheckpointError::tensor(file.path(), &name, "its metadata is missing")
            })?;
            planned.push(PlannedTensor {
                name: name.clone(),
                dtype,
                shape: info.shape.to_vec(),
            });
            actions.push((
                codes,
                Action::Dequantize {
                    name,
                    dtype,
                    parts: part_names,
                },
            ));
        }
        actions.sort_by_key(|(position, _)| *position);
        let metadata = file
            .metadata()
            .iter()
            .filter(|(key, _)| !key.starts_with("anybit."))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let layout = FileLayout::new(file.path(), planned, &metadata)?;
        plans.push((
            layout,
            actions.into_iter().map(|(_, action)| action).collect(),
        ));
    }
    Ok(plans)
}

/// Dequantizes one weight in blocks of rows, each written as soon as it is done (the summary's
/// `bytes_in` is left for the caller).
fn dequantize_weight(
    name: &str,
    parts: &QuantizedParts<'_>,
    dtype: TensorDtype,
    writer: &mut TensorFileWriter<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TensorSummary, CheckpointError> {
    let (rows, cols) = (parts.rows, parts.cols);
    let element_bytes = dtype.bits() as usize / 8;
    let blocks = row_blocks(rows, cols, worker_threads());
    let values = CodeValues::new(parts.dtype);
    let code_bytes_per_row = cols as f64 * parts.dtype.bits() as f64 / 8.0;
    for batch in blocks.chunks(worker_threads()) {
        let results: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|block| {
                    let values = &values;
                    scope.spawn(move || dequantize_rows(parts, values, block.clone(), dtype))
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        for (block, bytes) in batch.iter().zip(results) {
            writer.write(name, block.start * cols * element_bytes, &bytes)?;
            progress(Progress::Read {
                bytes: (block.len() as f64 * code_bytes_per_row) as u64,
            });
        }
    }
    Ok(TensorSummary {
        name: name.to_string(),
        dtype,
        shape: vec![rows, cols],
        bytes_in: 0,
        bytes_out: (rows * cols * element_bytes) as u64,
        outcome: TensorOutcome::Dequantized,
    })
}

/// The value of each code of a weight type before scaling (`q` for unsigned types, from which
/// the zero point is subtracted; the decoded value otherwise), exact in f64.
struct CodeValues(Vec<f64>);

impl CodeValues {
    fn new(dtype: DType) -> Self {
        let codes = 1u32 << dtype.bits();
        CodeValues(
            (0..codes)
                .map(|code| match dtype {
                    DType::Unsigned(_) => code as f64,
                    _ => dtype.decode(code),
                })
                .collect(),
        )
    }
}

/// Rows `block` of the weight in its original column order, as little-endian bytes of `dtype`.
/// Each value is computed as `QuantizedMatrix::dequantize_element` computes it (in f64, then
/// rounded to f32), then rounded to `dtype`. A group at a time, with the choices (zero points,
/// permutation) made outside the loops over its elements.
fn dequantize_rows(
    parts: &QuantizedParts<'_>,
    values: &CodeValues,
    block: Range<usize>,
    dtype: TensorDtype,
) -> Vec<u8> {
    let cols = parts.cols;
    let bits = parts.dtype.bits();
    let group_size = parts.group_size;
    let groups_per_row = cols.div_ceil(group_size);
    let element_bytes = dtype.bits() as usize / 8;
    let mut bytes = vec![0u8; block.len() * cols * element_bytes];
    let mut stored = vec![0f32; cols];
    let mut original = vec![0f32; if parts.permutation.is_some() { cols } else { 0 }];
    let mut row_codes = vec![0u32; cols];
    let levels = values.0.as_slice();
    for (row_in_block, row) in block.enumerate() {
        anybit_dtype::read_codes(parts.codes, bits, row * cols, &mut row_codes);
        // The last group of a row is short when the group size does not divide K.
        let groups = row_codes
            .chunks(group_size)
            .zip(stored.chunks_mut(group_size));
        for (group_in_row, (codes, out)) in groups.enumerate() {
            let group = row * groups_per_row + group_in_row;
            let scale = parts.scales[group] as f64;
            match parts.zero_points {
                Some(zeros) => {
                    let zero = zeros[group] as f64;
                    for (value, &code) in out.iter_mut().zip(codes) {
                        *value = ((levels[code as usize] - zero) * scale) as f32;
                    }
                }
                None => {
                    for (value, &code) in out.iter_mut().zip(codes) {
                        *value = (levels[code as usize] * scale) as f32;
                    }
                }
            }
        }
        // Column `col` of the stored matrix is column `permutation[col]` of the weight.
        let row_values = match &parts.permutation {
            Some(permutation) => {
                for (&value, &column) in stored.iter().zip(permutation) {
                    original[column as usize] = value;
                }
                &original
            }
            None => &stored,
        };
        let row_bytes = &mut bytes[row_in_block * cols * element_bytes..][..cols * element_bytes];
        encode_row(row_values, dtype, row_bytes);
    }
    bytes
}

/// Writes `values` as little-endian `dtype` (F32, F16 or BF16, rounding to nearest even).
fn encode_row(values: &[f32], dtype: TensorDtype, out: &mut [u8]) {
    match dtype {
        TensorDtype::F16 => {
            for (value, bytes) in values.iter().zip(out.chunks_exact_mut(2)) {
                bytes.copy_from_slice(&half::f16::from_f32(*value).to_le_bytes());
            }
        }
        TensorDtype::Bf16 => {
            for (value, bytes) in values.iter().zip(out.chunks_exact_mut(2)) {
                bytes.copy_from_slice(&half::bf16::from_f32(*value).to_le_bytes());
            }
        }
        _ => {
            for (value, bytes) in values.iter().zip(out.chunks_exact_mut(4)) {
                bytes.copy_from_slice(&value.to_le_bytes());
            }
        }
    }
}
