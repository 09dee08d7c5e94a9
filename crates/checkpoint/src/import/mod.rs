//! Importing GPTQ and AWQ checkpoints: their packed weights repacked into anybit's format
//! without changing a single dequantized value.
//!
//! Every linear layer `P` of the checkpoint (a tensor `P.qweight`, with `P.scales`, usually
//! `P.qzeros` and for GPTQ maybe `P.g_idx`) becomes the quantized weight `P.weight` of type
//! `u<bits>` with zero points, the group size of the checkpoint's configuration
//! ([`ImportConfig`]), and scales of the checkpoint's scale type, copied bit for bit. Codes and
//! zero points are unpacked from GPTQ's or AWQ's layout ([`gptq`], [`awq`]) and packed as anybit
//! packs them, with the weight `[N, K]` in PyTorch's orientation (GPTQ and AWQ store it
//! transposed). Every other tensor (embeddings, norms, biases, the head) is copied unchanged.
//!
//! **Act-order.** A GPTQ checkpoint quantized with `desc_act` gives each input column `k` the
//! group `g_idx[k]`, so a group's columns are scattered over K. The import sorts the columns by
//! group (stably), so that each group's columns are contiguous as anybit's groups are: column
//! `j` of the stored weight is column `perm[j]` of the original, and `perm` is stored as
//! `P.weight.perm` (`I32 [K]`, metadata `permuted: true`). A product `x · Wᵀ` with the stored
//! weight needs the activations gathered the same way, `x'[j] = x[perm[j]]` (once per
//! activation, before the kernel or in it); `dequantize_checkpoint` applies the inverse and
//! writes the weight in its original column order.
//!
//! The value of each element is unchanged: GPTQ's and AWQ's `(q − z) · s` is anybit's
//! `(code − zero) · scale` with the same code, zero point and scale. Like quantizing, importing
//! checks everything before anything is written, never writes the input and writes the output
//! atomically.

mod awq;
mod config;
mod gptq;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use config::{ImportConfig, ImportFormat, ZeroStorage};

use crate::checkpoint::Checkpoint;
use crate::format::{
    codes_name, codes_shape, metadata_key, perm_name, scales_name, zeros_name, QuantizedTensorInfo,
    FORMAT_VERSION, FORMAT_VERSION_KEY,
};
use crate::quantize::{
    copy_unchanged, worker_threads, CheckpointSummary, Progress, TensorOutcome, TensorSummary,
    BLOCK_ELEMENTS,
};
use crate::rewrite::{check_output, write_checkpoint, OutputFile};
use crate::tensor_file::{decode_floats, TensorDtype, TensorEntry, TensorFile};
use crate::writer::{FileLayout, PlannedTensor, TensorFileWriter};
use crate::CheckpointError;

/// The suffixes of the parts of a packed layer.
const QWEIGHT: &str = ".qweight";
const QZEROS: &str = ".qzeros";
const SCALES: &str = ".scales";
const G_IDX: &str = ".g_idx";

/// One packed layer, checked: where its parts are and what they hold.
struct PackedLayer<'a> {
    /// `P.weight`, the name of the quantized weight it becomes.
    name: String,
    config: ImportConfig,
    /// N (output features) and K (input features).
    rows: usize,
    cols: usize,
    group_size: usize,
    groups: usize,
    qweight: &'a [u8],
    /// Words per row of `qzeros`, and its bytes (absent: symmetric GPTQ without zeros).
    qzeros: Option<(usize, &'a [u8])>,
    scales: &'a [u8],
    scale_dtype: TensorDtype,
    /// Column `j` of the stored weight is column `permutation[j]` of the original.
    permutation: Option<Vec<u32>>,
    /// The input tensors it is made of, with their files.
    parts: Vec<(&'a TensorFile, &'a TensorEntry)>,
}

impl PackedLayer<'_> {
    /// The code of input column `k`, output row `n`.
    fn code(&self, k: usize, n: usize) -> u32 {
        match self.config.format {
            ImportFormat::Gptq => gptq::code(self.qweight, self.rows, self.config.bits, k, n),
            ImportFormat::Awq => awq::field(self.qweight, self.rows / 8, k, n),
        }
    }

    /// The zero point of group `group`, output row `n`.
    fn zero(&self, group: usize, n: usize) -> u32 {
        let bits = self.config.bits;
        let Some((words, qzeros)) = self.qzeros else {
            return 1 << (bits - 1);
        };
        match self.config.format {
            ImportFormat::Gptq => {
                let stored = gptq::stored_zero(qzeros, words, bits, group, n);
                match self.config.zeros {
                    ZeroStorage::MinusOne => (stored + 1) & ((1 << bits) - 1),
                    ZeroStorage::AsIs => stored,
                }
            }
            ImportFormat::Awq => awq::field(qzeros, words, group, n),
        }
    }

    /// The packed anybit codes of output rows `block` (rows are whole bytes: K·bits is a
    /// multiple of 8 for every layout accepted).
    fn codes(&self, block: Range<usize>) -> Vec<u8> {
        let bits = self.config.bits;
        let row_bytes = self.cols * bits as usize / 8;
        let mut bytes = vec![0u8; block.len() * row_bytes];
        for (index, n) in block.enumerate() {
            let row = &mut bytes[index * row_bytes..(index + 1) * row_bytes];
            for j in 0..self.cols {
                let k = self
                    .permutation
                    .as_ref()
                    .map_or(j, |permutation| permutation[j] as usize);
                anybit_dtype::write_code(row, bits, j, self.code(k, n));
            }
        }
        bytes
    }

    /// The scales `[N, G]` (the input's `[G, N]` transposed, bytes unchanged).
    fn scales(&self) -> Vec<u8> {
        let size = self.scale_dtype.bits() as usize / 8;
        let mut bytes = Vec::with_capacity(self.rows * self.groups * size);
        for n in 0..self.rows {
            for group in 0..self.groups {
                let start = (group * self.rows + n) * size;
                bytes.extend_from_slice(&self.scales[start..start + size]);
            }
        }
        bytes
    }

    /// The zero points `[N, G]`, one byte each.
    fn zeros(&self) -> Vec<u8> {
        (0..self.rows)
            .flat_map(|n| (0..self.groups).map(move |group| self.zero(group, n) as u8))
            .collect()
    }

    fn info(&self) -> QuantizedTensorInfo {
        QuantizedTensorInfo {
            dtype: format!("u{}", self.config.bits),
            group_size: self.group_size,
            shape: [self.rows, self.cols],
            scale_dtype: self
                .scale_dtype
                .as_weight_dtype()
                .map(|dtype| dtype.to_string())
                .unwrap_or_default(),
            zero_points: true,
            source_dtype: self.scale_dtype.name().to_string(),
            search: self.config.format.name().to_string(),
            permuted: self.permutation.is_some(),
        }
    }

    fn planned(&self) -> Vec<PlannedTensor> {
        let scale_shape = vec![self.rows, self.groups];
        let mut planned = vec![
            PlannedTensor {
                name: codes_name(&self.name),
                dtype: TensorDtype::U8,
                shape: codes_shape(self.rows, self.cols, self.config.bits),
            },
            PlannedTensor {
                name: scales_name(&self.name),
                dtype: self.scale_dtype,
                shape: scale_shape.clone(),
            },
            PlannedTensor {
                name: zeros_name(&self.name),
                dtype: TensorDtype::U8,
                shape: scale_shape,
            },
        ];
        if self.permutation.is_some() {
            planned.push(PlannedTensor {
                name: perm_name(&self.name),
                dtype: TensorDtype::I32,
                shape: vec![self.cols],
            });
        }
        planned
    }
}

/// How to import a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportSettings {
    pub format: ImportFormat,
}

/// What to do with one tensor of an input file, in the order of the input's data.
enum Action {
    Copy(usize),
    /// Repack the layer at this index of the plan's layers.
    Repack(usize),
}

/// Imports the GPTQ or AWQ checkpoint at `input` (a `.safetensors` file, an index, or a
/// directory) into `output` in anybit's format. The configuration is read from the input's
/// directory ([`ImportConfig::find`]). See the module docs.
pub fn import_checkpoint(
    input: &Path,
    output: &Path,
    settings: ImportSettings,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CheckpointSummary, CheckpointError> {
    let checkpoint = Checkpoint::open(input)?;
    for file in checkpoint.files() {
        if file.metadata().contains_key(FORMAT_VERSION_KEY) {
            return Err(CheckpointError::Format {
                path: file.path().to_path_buf(),
                reason: "this is already an anybit quantized checkpoint".to_string(),
            });
        }
    }
    let directory = checkpoint
        .files()
        .first()
        .and_then(|file| file.path().parent())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let directory = if directory.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        directory
    };
    let config = ImportConfig::find(&directory, settings.format)?;
    check_output(output, &checkpoint)?;
    let layers = find_layers(&checkpoint, config)?;
    let plans = plan(&checkpoint, &layers)?;
    let tensors = plans.iter().map(|(_, actions)| actions.len()).sum();
    progress(Progress::Planned {
        tensors,
        bytes: checkpoint.data_len(),
    });
    let outputs: Vec<OutputFile> = plans
        .iter()
        .enumerate()
        .map(|(index, (layout, _))| OutputFile::new(&checkpoint, index, layout.clone()))
        .collect();
    let mut summaries = Vec::with_capacity(tensors);
    let files = write_checkpoint(
        &checkpoint,
        output,
        &outputs,
        |metadata| {
            metadata.insert(
                FORMAT_VERSION_KEY.to_string(),
                FORMAT_VERSION.to_string().into(),
            );
        },
        |file, writer| {
            let input = &checkpoint.files()[file.input];
            for action in &plans[file.input].1 {
                let summary = match action {
                    Action::Copy(position) => {
                        copy_unchanged(input, &input.tensors()[*position], writer, progress)?
                    }
                    Action::Repack(layer) => repack(&layers[*layer], writer, progress)?,
                };
                progress(Progress::Finished(&summary));
                summaries.push(summary);
            }
            Ok(())
        },
    )?;
    Ok(CheckpointSummary::new(summaries, files))
}

/// Finds and checks every packed layer of the checkpoint.
fn find_layers(
    checkpoint: &Checkpoint,
    config: ImportConfig,
) -> Result<Vec<PackedLayer<'_>>, CheckpointError> {
    let mut layers = Vec::new();
    for name in checkpoint.names() {
        if let Some(prefix) = name.strip_suffix(QWEIGHT) {
            layers.push(check_layer(checkpoint, prefix, config)?);
        }
    }
    if layers.is_empty() {
        let path = checkpoint
            .files()
            .first()
            .map_or_else(PathBuf::new, |file| file.path().to_path_buf());
        return Err(CheckpointError::Format {
            path,
            reason: format!(
                "no `*{QWEIGHT}` tensors: not a {} checkpoint",
                config.format.name()
            ),
        });
    }
    Ok(layers)
}

/// Checks the parts of layer `prefix` against each other and the configuration.
fn check_layer<'a>(
    checkpoint: &'a Checkpoint,
    prefix: &str,
    config: ImportConfig,
) -> Result<PackedLayer<'a>, CheckpointError> {
    let qweight_name = format!("{prefix}{QWEIGHT}");
    let (qweight_file, qweight) = checkpoint.find(&qweight_name).ok_or_else(|| {
        CheckpointError::tensor(Path::new(""), &qweight_name, "missing from the checkpoint")
    })?;
    let refuse = |file: &TensorFile, tensor: &str, reason: String| {
        Err(CheckpointError::tensor(file.path(), tensor, reason))
    };
    let bits = config.bits as usize;
    let format = config.format.name();
    let &[packed_rows, packed_cols] = qweight.shape.as_slice() else {
        return refuse(
            qweight_file,
            &qweight_name,
            format!("its shape is {:?}; {format} qweight is 2-D", qweight.shape),
        );
    };
    if qweight.dtype != TensorDtype::I32 {
        return refuse(
            qweight_file,
            &qweight_name,
            format!("it is {}; {format} qweight is I32", qweight.dtype),
        );
    }
    let (rows, cols) = match config.format {
        ImportFormat::Gptq => {
            if !(packed_rows * 32).is_multiple_of(bits) {
                return refuse(
                    qweight_file,
                    &qweight_name,
                    format!(
                        "{packed_rows} rows of 32-bit words do not hold a whole number of {bits}-bit codes"
                    ),
                );
            }
            (packed_cols, packed_rows * 32 / bits)
        }
        ImportFormat::Awq => (packed_cols * 8, packed_rows),
    };
    let mut parts = vec![(qweight_file, qweight)];
    let scales_part = format!("{prefix}{SCALES}");
    let Some((scales_file, scales)) = checkpoint.find(&scales_part) else {
        return refuse(
            qweight_file,
            &qweight_name,
            format!("`{scales_part}` is missing"),
        );
    };
    parts.push((scales_file, scales));
    if scales.dtype.as_weight_dtype().is_none() {
        return refuse(
            scales_file,
            &scales_part,
            format!("it is {}; scales are F16, BF16 or F32", scales.dtype),
        );
    }
    let &[groups, scale_cols] = scales.shape.as_slice() else {
        return refuse(
            scales_file,
            &scales_part,
            format!("its shape is {:?}; expected [groups, {rows}]", scales.shape),
        );
    };
    // A group size that does not divide K leaves each row a short last group (GPTQ's
    // `g_idx = k // group_size`): ⌈K/group⌉ groups.
    let group_size = config.group_size.unwrap_or(cols);
    if group_size == 0 {
        return refuse(
            qweight_file,
            &qweight_name,
            "the group size is 0".to_string(),
        );
    }
    if scale_cols != rows || groups != cols.div_ceil(group_size) {
        return refuse(
            scales_file,
            &scales_part,
            format!(
                "its shape is {:?}; a weight of N = {rows}, K = {cols} in groups of {group_size} has [{}, {rows}]",
                scales.shape,
                cols.div_ceil(group_size)
            ),
        );
    }
    let scale_bytes = scales_file.data(scales);
    let mut scale_values = Vec::with_capacity(groups * rows);
    decode_floats(scales.dtype, scale_bytes, &mut scale_values);
    if let Some(bad) = scale_values.iter().position(|scale| !scale.is_finite()) {
        return refuse(
            scales_file,
            &scales_part,
            format!(
                "the scale of group {}, column {} is {}",
                bad / rows,
                bad % rows,
                scale_values[bad]
            ),
        );
    }
    let zeros_part = format!("{prefix}{QZEROS}");
    let qzeros = match checkpoint.find(&zeros_part) {
        Some((zeros_file, zeros)) => {
            parts.push((zeros_file, zeros));
            let words = match config.format {
                ImportFormat::Gptq if (rows * bits).is_multiple_of(32) => rows * bits / 32,
                ImportFormat::Awq if rows.is_multiple_of(8) => rows / 8,
                _ => {
                    return refuse(
                        zeros_file,
                        &zeros_part,
                        format!("N = {rows} columns do not fill whole 32-bit words"),
                    )
                }
            };
            if zeros.dtype != TensorDtype::I32 || zeros.shape != [groups, words] {
                return refuse(
                    zeros_file,
                    &zeros_part,
                    format!(
                        "it is {} {:?}; expected I32 [{groups}, {words}]",
                        zeros.dtype, zeros.shape
                    ),
                );
            }
            Some((words, zeros_file.data(zeros)))
        }
        None if config.format == ImportFormat::Gptq && config.sym => None,
        None => {
            return refuse(
                qweight_file,
                &qweight_name,
                format!("`{zeros_part}` is missing (only symmetric GPTQ can go without it)"),
            )
        }
    };
    let g_idx_name = format!("{prefix}{G_IDX}");
    let permutation = match checkpoint.find(&g_idx_name) {
        Some((g_idx_file, g_idx)) if config.format == ImportFormat::Gptq => {
            parts.push((g_idx_file, g_idx));
            if g_idx.dtype != TensorDtype::I32 || g_idx.shape != [cols] {
                return refuse(
                    g_idx_file,
                    &g_idx_name,
                    format!(
                        "it is {} {:?}; expected I32 [{cols}]",
                        g_idx.dtype, g_idx.shape
                    ),
                );
            }
            let groups_of: Vec<i32> = g_idx_file
                .data(g_idx)
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            group_permutation(&groups_of, group_size, groups).map_err(|reason| {
                CheckpointError::tensor(qweight_file.path(), &g_idx_name, reason)
            })?
        }
        Some(_) => None,
        None if config.desc_act => {
            return refuse(
                qweight_file,
                &qweight_name,
                format!(
                    "the configuration says desc_act (act-order) but `{g_idx_name}` is missing"
                ),
            )
        }
        None => None,
    };
    let name = format!("{prefix}.weight");
    for taken in [
        name.clone(),
        codes_name(&name),
        scales_name(&name),
        zeros_name(&name),
        perm_name(&name),
    ] {
        if checkpoint.find(&taken).is_some() {
            return refuse(
                qweight_file,
                &qweight_name,
                format!("its anybit form would be written as `{taken}`, but the checkpoint already has a tensor of that name"),
            );
        }
    }
    if !(cols * bits).is_multiple_of(8) {
        return refuse(
            qweight_file,
            &qweight_name,
            format!("K = {cols} codes of {bits} bits do not fill whole bytes"),
        );
    }
    Ok(PackedLayer {
        name,
        config,
        rows,
        cols,
        group_size,
        groups,
        qweight: qweight_file.data(qweight),
        qzeros,
        scales: scale_bytes,
        scale_dtype: scales.dtype,
        permutation,
        parts,
    })
}

/// The permutation that makes each group's columns contiguous (stable: in a group, columns keep
/// their order), or `None` when `g_idx[k]` is already `k / group_size`. Each of the `groups`
/// groups must have exactly `group_size` columns, the last the K mod group_size left when the
/// group size does not divide K (as GPTQ's act-order assigns them).
fn group_permutation(
    g_idx: &[i32],
    group_size: usize,
    groups: usize,
) -> Result<Option<Vec<u32>>, String> {
    let mut counts = vec![0usize; groups];
    for (column, &group) in g_idx.iter().enumerate() {
        match usize::try_from(group)
            .ok()
            .and_then(|group| counts.get_mut(group))
        {
            Some(count) => *count += 1,
            None => {
                return Err(format!(
                    "column {column} is in group {group}, but there are {groups} groups"
                ))
            }
        }
    }
    let expected = |group: usize| group_size.min(g_idx.len().saturating_sub(group * group_size));
    if let Some(group) = (0..groups).find(|&group| counts[group] != expected(group)) {
        let cols = g_idx.len();
        let sizes = if cols.is_multiple_of(group_size) {
            format!("groups of {group_size} columns each")
        } else {
            format!(
                "groups of {group_size} columns (the last of the {} left of K = {cols})",
                cols % group_size
            )
        };
        return Err(format!(
            "group {group} has {} columns, not {}; only {sizes} are supported",
            counts[group],
            expected(group)
        ));
    }
    let in_order = g_idx
        .iter()
        .enumerate()
        .all(|(column, &group)| group as usize == column / group_size);
    if in_order {
        return Ok(None);
    }
    let mut permutation: Vec<u32> = (0..g_idx.len() as u32).collect();
    permutation.sort_by_key(|&column| g_idx[column as usize]);
    Ok(Some(permutation))
}

/// Lays out every output file: packed layers become their anybit parts in the file of their
/// `qweight`; their other parts are consumed; every other tensor is copied.
fn plan(
    checkpoint: &Checkpoint,
    layers: &[PackedLayer<'_>],
) -> Result<Vec<(FileLayout, Vec<Action>)>, CheckpointError> {
    let consumed: BTreeSet<&str> = layers
        .iter()
        .flat_map(|layer| layer.parts.iter().map(|(_, entry)| entry.name.as_str()))
        .collect();
    let by_qweight: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(index, layer)| (layer.parts[0].1.name.as_str(), index))
        .collect();
    let mut plans = Vec::with_capacity(checkpoint.files().len());
    for file in checkpoint.files() {
        let mut planned = Vec::new();
        let mut actions = Vec::new();
        let mut metadata: BTreeMap<String, String> = file.metadata().clone();
        metadata.insert(FORMAT_VERSION_KEY.to_string(), FORMAT_VERSION.to_string());
        for (position, entry) in file.tensors().iter().enumerate() {
            if let Some(&index) = by_qweight.get(entry.name.as_str()) {
                let layer = &layers[index];
                planned.extend(layer.planned());
                metadata.insert(metadata_key(&layer.name), layer.info().to_json());
                actions.push(Action::Repack(index));
            } else if !consumed.contains(entry.name.as_str()) {
                planned.push(PlannedTensor {
                    name: entry.name.clone(),
                    dtype: entry.dtype,
                    shape: entry.shape.clone(),
                });
                actions.push(Action::Copy(position));
            }
        }
        plans.push((FileLayout::new(file.path(), planned, &metadata)?, actions));
    }
    Ok(plans)
}

/// Writes one layer's anybit parts: codes in blocks of rows on every core, then scales, zero
/// points and the permutation.
fn repack(
    layer: &PackedLayer<'_>,
    writer: &mut TensorFileWriter<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TensorSummary, CheckpointError> {
    let row_bytes = layer.cols * layer.config.bits as usize / 8;
    let block_rows = (BLOCK_ELEMENTS / layer.cols.max(1)).max(1);
    let blocks: Vec<Range<usize>> = (0..layer.rows)
        .step_by(block_rows)
        .map(|first| first..(first + block_rows).min(layer.rows))
        .collect();
    let codes = codes_name(&layer.name);
    let qweight_per_row = layer.qweight.len() as u64 / layer.rows.max(1) as u64;
    for batch in blocks.chunks(worker_threads()) {
        let results: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|block| scope.spawn(move || layer.codes(block.clone())))
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
            writer.write(&codes, block.start * row_bytes, &bytes)?;
            progress(Progress::Read {
                bytes: block.len() as u64 * qweight_per_row,
            });
        }
    }
    let scales = layer.scales();
    writer.write(&scales_name(&layer.name), 0, &scales)?;
    let zeros = layer.zeros();
    writer.write(&zeros_name(&layer.name), 0, &zeros)?;
    let mut bytes_out = (layer.rows * row_bytes + scales.len() + zeros.len()) as u64;
    if let Some(permutation) = &layer.permutation {
        let bytes: Vec<u8> = permutation
            .iter()
            .flat_map(|&column| (column as i32).to_le_bytes())
            .collect();
        writer.write(&perm_name(&layer.name), 0, &bytes)?;
        bytes_out += bytes.len() as u64;
    }
    let mut bytes_in = 0;
    for (file, entry) in &layer.parts {
        bytes_in += entry.byte_len() as u64;
        file.release(entry);
    }
    Ok(TensorSummary {
        name: layer.name.clone(),
        dtype: layer.scale_dtype,
        shape: vec![layer.rows, layer.cols],
        bytes_in,
        bytes_out,
        outcome: TensorOutcome::Imported,
    })
}
