//! Quantizing a checkpoint, tensor by tensor, into the anybit format.
//!
//! [`quantize_checkpoint`] reads a `.safetensors` file or a sharded checkpoint, quantizes the
//! selected weights with `anybit_dtype::quantize_with_search`, and writes every other tensor
//! unchanged. What it promises:
//! - **Nothing is written before everything that can be checked is**: the input's headers, the
//!   selection (each selected tensor 2-D, f16/bf16/f32, with K divisible by the group), the
//!   options, the output's names and the output path. Only a weight that cannot be quantized
//!   (a NaN, a scale beyond the scale type) is found while writing.
//! - **The input is never written**: an output that is an input file (by path, through links,
//!   or as another hard link), or the directory of a sharded input, is refused.
//! - **The output appears whole or not at all**: it is written under a temporary name in its
//!   directory and renamed into place; on any error the temporary file is removed.
//! - **Memory stays small**: the input is memory-mapped, a weight is quantized in blocks of rows
//!   (about a million elements each, one block per thread at a time), copied tensors are copied
//!   in 64 MiB pieces, and the pages of a finished tensor are released. Only a weight's scales
//!   and zero points are held whole until it is written.
//!
//! Tensors are chosen by [`Selection`]; the output is laid out by [`crate::FileLayout`] from
//! the shapes alone, so its header is written first and the data follows in any order.

use std::ops::Range;
use std::path::{Path, PathBuf};

use anybit_dtype::{
    quantize_with_search, ErrorReport, ErrorStatistics, GroupSize, QuantizeError, QuantizeOptions,
    ScaleSearch, Weights,
};
use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::checkpoint::Checkpoint;
use crate::format::{
    codes_name, codes_shape, metadata_key, scales_name, zeros_name, QuantizedTensorInfo,
    FORMAT_VERSION, FORMAT_VERSION_KEY,
};
use crate::rewrite::{check_output, write_checkpoint, OutputFile};
use crate::tensor_file::{decode_floats, TensorDtype, TensorEntry, TensorFile};
use crate::writer::{FileLayout, PlannedTensor, TensorFileWriter};
use crate::CheckpointError;

/// Elements of a weight quantized at once by one thread.
pub(crate) const BLOCK_ELEMENTS: usize = 1 << 20;

/// Bytes of an unchanged tensor copied at once.
const COPY_CHUNK_BYTES: usize = 64 << 20;

/// Which tensors to quantize.
///
/// Without `include` patterns, the default: every 2-D f16, bf16 or f32 tensor whose name does
/// not look like an embedding (see [`looks_like_embedding`]). With them, exactly the tensors
/// whose names match one (each must then be a 2-D f16, bf16 or f32 tensor, and each pattern must
/// match some tensor). Either way, tensors matching an `exclude` pattern are left out. Patterns
/// are globs on the whole name (`*` matches any characters, dots included):
/// `model.layers.*.mlp.*`, `lm_head.weight`.
#[derive(Clone, Debug)]
pub struct Selection {
    include: Vec<(String, GlobMatcher)>,
    exclude: GlobSet,
}

impl Selection {
    /// A selection from `include` patterns (none: the default rule) and `exclude` patterns.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, CheckpointError> {
        let glob = |pattern: &String| {
            Glob::new(pattern).map_err(|source| CheckpointError::Pattern {
                pattern: pattern.clone(),
                source,
            })
        };
        let include = include
            .iter()
            .map(|pattern| Ok((pattern.clone(), glob(pattern)?.compile_matcher())))
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        let mut builder = GlobSetBuilder::new();
        for pattern in exclude {
            builder.add(glob(pattern)?);
        }
        let exclude = builder.build().map_err(|source| CheckpointError::Pattern {
            pattern: exclude.join(", "),
            source,
        })?;
        Ok(Selection { include, exclude })
    }

    /// Whether `entry` is to be quantized (before checking that it can be).
    fn chooses(&self, entry: &TensorEntry) -> bool {
        if self.exclude.is_match(&entry.name) {
            return false;
        }
        if self.include.is_empty() {
            entry.shape.len() == 2
                && entry.dtype.as_weight_dtype().is_some()
                && !looks_like_embedding(&entry.name)
        } else {
            self.include
                .iter()
                .any(|(_, matcher)| matcher.is_match(&entry.name))
        }
    }
}

/// True for names the default selection keeps unquantized: those that contain `embed` or
/// `lm_head` (any case), such as `model.embed_tokens.weight` and `lm_head.weight`.
pub fn looks_like_embedding(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("embed") || name.contains("lm_head")
}

/// How to quantize a checkpoint.
#[derive(Clone, Debug)]
pub struct QuantizeSettings {
    pub options: QuantizeOptions,
    pub search: ScaleSearch,
    pub selection: Selection,
}

/// What [`quantize_checkpoint`] reports while it works.
#[derive(Debug)]
pub enum Progress<'a> {
    /// Everything is checked; this many tensors and bytes of tensor data will be read.
    Planned { tensors: usize, bytes: u64 },
    /// This many more bytes of input have been read.
    Read { bytes: u64 },
    /// A tensor is written.
    Finished(&'a TensorSummary),
}

/// What happened to one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorOutcome {
    /// Quantized; the error of its dequantized values against the original.
    Quantized(ErrorReport),
    /// A quantized weight dequantized (it is named, typed and shaped as the weight).
    Dequantized,
    /// A weight of another quantized format repacked into anybit's (it is named as the weight).
    Imported,
    /// Copied unchanged.
    Copied,
}

/// One tensor and what became of it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSummary {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    /// Bytes of its data in the input (all its parts for a quantized weight).
    pub bytes_in: u64,
    /// Bytes of data it became in the output (all its parts for a quantized weight).
    pub bytes_out: u64,
    pub outcome: TensorOutcome,
}

/// What [`quantize_checkpoint`], `dequantize_checkpoint` or `import_checkpoint` did.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSummary {
    /// Every tensor, in the order they were written.
    pub tensors: Vec<TensorSummary>,
    /// Bytes of tensor data read.
    pub bytes_in: u64,
    /// Bytes of tensor data written (headers and the index not counted).
    pub bytes_out: u64,
    /// The files written: the output file, or the shards and the index in the output directory.
    pub files: Vec<PathBuf>,
}

impl CheckpointSummary {
    pub(crate) fn new(tensors: Vec<TensorSummary>, files: Vec<PathBuf>) -> Self {
        CheckpointSummary {
            bytes_in: tensors.iter().map(|tensor| tensor.bytes_in).sum(),
            bytes_out: tensors.iter().map(|tensor| tensor.bytes_out).sum(),
            tensors,
            files,
        }
    }
}

/// What to do with one input tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Copy,
    Quantize { rows: usize, cols: usize },
}

/// One output file: its input, its name and layout, and what to do with each input tensor.
struct FilePlan {
    input: usize,
    layout: FileLayout,
    /// Index into the input's tensors, and the action, in the input's order.
    actions: Vec<(usize, Action)>,
}

/// Quantizes the checkpoint at `input` (a `.safetensors` file or a `*.safetensors.index.json`
/// with its shards) into `output` (a file, or for a sharded input a new or empty directory that
/// receives shards of the same names and the index). See the module docs for the guarantees.
pub fn quantize_checkpoint(
    input: &Path,
    output: &Path,
    settings: &QuantizeSettings,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<CheckpointSummary, CheckpointError> {
    check_options(settings.options)?;
    let checkpoint = Checkpoint::open(input)?;
    for file in checkpoint.files() {
        if file.metadata().contains_key(FORMAT_VERSION_KEY) {
            return Err(CheckpointError::Format {
                path: file.path().to_path_buf(),
                reason: "this is already an anybit quantized checkpoint".to_string(),
            });
        }
    }
    check_output(output, &checkpoint)?;
    let plans = plan(&checkpoint, settings)?;
    let tensors = plans.iter().map(|plan| plan.actions.len()).sum();
    progress(Progress::Planned {
        tensors,
        bytes: checkpoint.data_len(),
    });
    let mut summaries = Vec::with_capacity(tensors);
    let outputs: Vec<OutputFile> = plans
        .iter()
        .map(|plan| OutputFile::new(&checkpoint, plan.input, plan.layout.clone()))
        .collect();
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
            write_file(
                input,
                &plans[file.input],
                writer,
                settings,
                progress,
                &mut summaries,
            )
        },
    )?;
    Ok(CheckpointSummary::new(summaries, files))
}

/// Refuses options the dtype crate refuses, before anything is read.
fn check_options(options: QuantizeOptions) -> Result<(), CheckpointError> {
    // An empty matrix with one whole group per row checks the weight type, the group size and
    // the scale type without quantizing anything.
    let cols = match options.group_size {
        GroupSize::Elements(size) => size,
        GroupSize::PerChannel => 1,
    };
    quantize_with_search(Weights::F32(&[]), 0, cols, options, ScaleSearch::None)
        .map(drop)
        .map_err(CheckpointError::Options)
}

/// Chooses, checks and lays out every tensor of every file.
fn plan(
    checkpoint: &Checkpoint,
    settings: &QuantizeSettings,
) -> Result<Vec<FilePlan>, CheckpointError> {
    let options = settings.options;
    let mut matched = vec![false; settings.selection.include.len()];
    let mut plans = Vec::with_capacity(checkpoint.files().len());
    for (input_index, file) in checkpoint.files().iter().enumerate() {
        let mut actions = Vec::with_capacity(file.tensors().len());
        let mut planned = Vec::new();
        let mut metadata = file.metadata().clone();
        metadata.insert(FORMAT_VERSION_KEY.to_string(), FORMAT_VERSION.to_string());
        for (position, entry) in file.tensors().iter().enumerate() {
            for ((_, matcher), matched) in settings.selection.include.iter().zip(&mut matched) {
                *matched |= matcher.is_match(&entry.name);
            }
            if !settings.selection.chooses(entry) {
                actions.push((position, Action::Copy));
                planned.push(PlannedTensor {
                    name: entry.name.clone(),
                    dtype: entry.dtype,
                    shape: entry.shape.clone(),
                });
                continue;
            }
            let (rows, cols) = check_selected(file, entry)?;
            for part in [
                codes_name(&entry.name),
                scales_name(&entry.name),
                zeros_name(&entry.name),
            ] {
                if checkpoint.find(&part).is_some() {
                    return Err(CheckpointError::tensor(
                        file.path(),
                        &entry.name,
                        format!("its quantized form would be written as `{part}`, but the checkpoint already has a tensor of that name"),
                    ));
                }
            }
            let unsigned = matches!(options.dtype, anybit_dtype::DType::Unsigned(_));
            let group_size = match options.group_size {
                GroupSize::Elements(size) => size,
                GroupSize::PerChannel => cols,
            };
            let scale_dtype = TensorDtype::from_scale_dtype(options.scale_dtype).ok_or(
                CheckpointError::Options(QuantizeError::InvalidScaleDType(options.scale_dtype)),
            )?;
            planned.push(PlannedTensor {
                name: codes_name(&entry.name),
                dtype: TensorDtype::U8,
                shape: codes_shape(rows, cols, options.dtype.bits()),
            });
            planned.push(PlannedTensor {
                name: scales_name(&entry.name),
                dtype: scale_dtype,
                shape: vec![rows, cols.div_ceil(group_size)],
            });
            if unsigned {
                planned.push(PlannedTensor {
                    name: zeros_name(&entry.name),
                    dtype: TensorDtype::U8,
                    shape: vec![rows, cols.div_ceil(group_size)],
                });
            }
            let info = QuantizedTensorInfo {
                dtype: options.dtype.to_string(),
                group_size,
                shape: [rows, cols],
                scale_dtype: options.scale_dtype.to_string(),
                zero_points: unsigned,
                source_dtype: entry.dtype.name().to_string(),
                search: QuantizedTensorInfo::search_name(settings.search).to_string(),
                permuted: false,
            };
            metadata.insert(metadata_key(&entry.name), info.to_json());
            actions.push((position, Action::Quantize { rows, cols }));
        }
        plans.push(FilePlan {
            input: input_index,
            layout: FileLayout::new(file.path(), planned, &metadata)?,
            actions,
        });
    }
    if let Some(((pattern, _), _)) = settings
        .selection
        .include
        .iter()
        .zip(&matched)
        .find(|(_, matched)| !**matched)
    {
        return Err(CheckpointError::UnmatchedPattern {
            pattern: pattern.clone(),
        });
    }
    Ok(plans)
}

/// Checks that a selected tensor can be quantized; its rows and columns. Any group size fits
/// any K ≥ 1: when it does not divide K, each row's last group is short (the format's scales
/// are `[N, ⌈K/group⌉]`).
fn check_selected(
    file: &TensorFile,
    entry: &TensorEntry,
) -> Result<(usize, usize), CheckpointError> {
    let refuse = |reason: String| {
        Err(CheckpointError::tensor(
            file.path(),
            &entry.name,
            format!("{reason}; leave it out with --exclude or narrow --include"),
        ))
    };
    if entry.dtype.as_weight_dtype().is_none() {
        return refuse(format!(
            "it is {}; only F16, BF16 and F32 tensors can be quantized",
            entry.dtype
        ));
    }
    let &[rows, cols] = entry.shape.as_slice() else {
        return refuse(format!(
            "its shape is {:?}; only 2-D weights [N, K] can be quantized",
            entry.shape
        ));
    };
    if cols == 0 {
        return refuse("it has no columns".to_string());
    }
    Ok((rows, cols))
}

/// Writes the tensors of one input file.
fn write_file(
    input: &TensorFile,
    plan: &FilePlan,
    writer: &mut TensorFileWriter<'_>,
    settings: &QuantizeSettings,
    progress: &mut dyn FnMut(Progress<'_>),
    summaries: &mut Vec<TensorSummary>,
) -> Result<(), CheckpointError> {
    for &(position, action) in &plan.actions {
        let entry = &input.tensors()[position];
        let (bytes_out, outcome) = match action {
            Action::Copy => {
                copy_tensor(input, entry, writer, progress)?;
                (entry.byte_len() as u64, TensorOutcome::Copied)
            }
            Action::Quantize { rows, cols } => {
                let (bytes_out, report) =
                    quantize_tensor(input, entry, rows, cols, writer, settings, progress)?;
                (bytes_out, TensorOutcome::Quantized(report))
            }
        };
        input.release(entry);
        let summary = TensorSummary {
            name: entry.name.clone(),
            dtype: entry.dtype,
            shape: entry.shape.clone(),
            bytes_in: entry.byte_len() as u64,
            bytes_out,
            outcome,
        };
        progress(Progress::Finished(&summary));
        summaries.push(summary);
    }
    Ok(())
}

/// Copies tensor `entry` of `input` unchanged, in pieces, under its own name.
pub(crate) fn copy_tensor(
    input: &TensorFile,
    entry: &TensorEntry,
    writer: &mut TensorFileWriter<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(), CheckpointError> {
    let data = input.data(entry);
    for (chunk_index, chunk) in data.chunks(COPY_CHUNK_BYTES).enumerate() {
        writer.write(&entry.name, chunk_index * COPY_CHUNK_BYTES, chunk)?;
        progress(Progress::Read {
            bytes: chunk.len() as u64,
        });
    }
    Ok(())
}

/// Copies tensor `entry` of `input` unchanged (as [`copy_tensor`]), releases its pages and
/// returns its summary.
pub(crate) fn copy_unchanged(
    input: &TensorFile,
    entry: &TensorEntry,
    writer: &mut TensorFileWriter<'_>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<TensorSummary, CheckpointError> {
    copy_tensor(input, entry, writer, progress)?;
    input.release(entry);
    Ok(TensorSummary {
        name: entry.name.clone(),
        dtype: entry.dtype,
        shape: entry.shape.clone(),
        bytes_in: entry.byte_len() as u64,
        bytes_out: entry.byte_len() as u64,
        outcome: TensorOutcome::Copied,
    })
}

/// A weight's rows cut into blocks for the worker threads: about [`BLOCK_ELEMENTS`] each, and
/// at least one per thread while there are rows (a small weight still keeps every thread busy).
pub(crate) fn row_blocks(rows: usize, cols: usize, threads: usize) -> Vec<Range<usize>> {
    let block_rows = (BLOCK_ELEMENTS / cols.max(1))
        .min(rows.div_ceil(threads.max(1)))
        .max(1);
    (0..rows)
        .step_by(block_rows)
        .map(|first| first..(first + block_rows).min(rows))
        .collect()
}

/// The number of threads that work on one weight's row blocks at once.
pub(crate) fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |threads| threads.get().min(16))
}

/// Quantizes one weight in blocks of rows, writing its codes as they come and its scales and
/// zero points at the end; the bytes written and the error report.
fn quantize_tensor(
    input: &TensorFile,
    entry: &TensorEntry,
    rows: usize,
    cols: usize,
    writer: &mut TensorFileWriter<'_>,
    settings: &QuantizeSettings,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(u64, ErrorReport), CheckpointError> {
    let options = settings.options;
    let bits = options.dtype.bits() as usize;
    let threads = worker_threads();
    // Blocks must start on a byte of the packed codes: split only when rows are whole bytes.
    let blocks = if (cols * bits).is_multiple_of(8) {
        row_blocks(rows, cols, threads)
    } else {
        (rows > 0).then_some(0..rows).into_iter().collect()
    };
    let data = input.data(entry);
    let element_bytes = entry.dtype.bits() as usize / 8;
    let codes = codes_name(&entry.name);
    let mut code_offset = 0;
    let mut scales = Vec::new();
    let mut zeros = Vec::new();
    let mut statistics = ErrorStatistics::default();
    for batch in blocks.chunks(threads) {
        let results: Vec<Result<_, CheckpointError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|block| {
                    let bytes =
                        &data[block.start * cols * element_bytes..block.end * cols * element_bytes];
                    scope.spawn(move || {
                        quantize_block(input, entry, bytes, block.clone(), cols, settings)
                    })
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
        for (block, result) in batch.iter().zip(results) {
            let (matrix, block_statistics) = result?;
            writer.write(&codes, code_offset, &matrix.codes)?;
            code_offset += matrix.codes.len();
            scales.extend_from_slice(&matrix.scales);
            if let Some(zero_points) = &matrix.zero_points {
                zeros.extend(zero_points.iter().map(|&zero| zero as u8));
            }
            statistics.merge(&block_statistics);
            progress(Progress::Read {
                bytes: (block.len() * cols * element_bytes) as u64,
            });
        }
    }
    let scale_bytes = encode_scales(&scales, options.scale_dtype);
    writer.write(&scales_name(&entry.name), 0, &scale_bytes)?;
    let mut bytes_out = code_offset + scale_bytes.len();
    if matches!(options.dtype, anybit_dtype::DType::Unsigned(_)) {
        writer.write(&zeros_name(&entry.name), 0, &zeros)?;
        bytes_out += zeros.len();
    }
    Ok((bytes_out as u64, statistics.report()))
}

/// Quantizes rows `block` of a weight (`bytes` are theirs) and compares the result with them.
fn quantize_block(
    input: &TensorFile,
    entry: &TensorEntry,
    bytes: &[u8],
    block: Range<usize>,
    cols: usize,
    settings: &QuantizeSettings,
) -> Result<(anybit_dtype::QuantizedMatrix, ErrorStatistics), CheckpointError> {
    let mut values = Vec::with_capacity(block.len() * cols);
    decode_floats(entry.dtype, bytes, &mut values).ok_or_else(|| {
        CheckpointError::tensor(input.path(), &entry.name, "not a floating-point tensor")
    })?;
    let matrix = quantize_with_search(
        Weights::F32(&values),
        block.len(),
        cols,
        settings.options,
        settings.search,
    )
    .map_err(|error| CheckpointError::Quantize {
        path: input.path().to_path_buf(),
        tensor: entry.name.clone(),
        source: shift_rows(error, block.start),
    })?;
    let mut statistics = ErrorStatistics::default();
    statistics
        .add_quantized(&values, &matrix)
        .map_err(|source| CheckpointError::Quantize {
            path: input.path().to_path_buf(),
            tensor: entry.name.clone(),
            source,
        })?;
    Ok((matrix, statistics))
}

/// An error of a block of rows, with its row numbers made those of the whole weight.
fn shift_rows(error: QuantizeError, first_row: usize) -> QuantizeError {
    match error {
        QuantizeError::NonFinite { row, col, value } => QuantizeError::NonFinite {
            row: row + first_row,
            col,
            value,
        },
        QuantizeError::ScaleOverflow {
            row,
            group,
            scale,
            scale_dtype,
            max,
        } => QuantizeError::ScaleOverflow {
            row: row + first_row,
            group,
            scale,
            scale_dtype,
            max,
        },
        other => other,
    }
}

/// Scales (each exactly representable in `scale_dtype`) as little-endian bytes of that type.
fn encode_scales(scales: &[f32], scale_dtype: anybit_dtype::DType) -> Vec<u8> {
    match scale_dtype {
        anybit_dtype::DType::F16 => scales
            .iter()
            .flat_map(|&scale| half::f16::from_f32(scale).to_le_bytes())
            .collect(),
        anybit_dtype::DType::Bf16 => scales
            .iter()
            .flat_map(|&scale| half::bf16::from_f32(scale).to_le_bytes())
            .collect(),
        _ => scales
            .iter()
            .flat_map(|&scale| scale.to_le_bytes())
            .collect(),
    }
}
