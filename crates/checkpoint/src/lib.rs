//! Checkpoints for anybit: safetensors files read memory-mapped and written atomically, and the
//! anybit quantized checkpoint format.
//!
//! - [`TensorFile`] opens and checks one safetensors file (header, dtypes, shapes, offsets, the
//!   file's length) and lends each tensor's bytes from a memory map; [`Checkpoint`] is one file
//!   or the shards of a `*.safetensors.index.json` ([`ShardIndex`]).
//! - [`FileLayout`] and [`TensorFileWriter`] write a safetensors file whose header is computed
//!   from the tensors' shapes before any data, so data can be streamed in; [`AtomicFile`] and
//!   [`AtomicDir`] make an output appear whole (rename) or not at all.
//! - [`quantize_checkpoint`] quantizes the selected weights of a checkpoint tensor by tensor
//!   into the anybit format ([`format`]), and [`QuantizedCheckpoint`] reads that format back
//!   into `anybit_dtype::QuantizedMatrix` values.
//!
//! What it promises: no panics on any file (every problem is a [`CheckpointError`] naming the
//! file and, where one is at fault, the tensor); an input is never written; an output is never
//! left half-written. docs/quantize.md describes the format and the command built on this.

mod checkpoint;
mod dequantize;
mod error;
pub mod format;
pub mod import;
mod index;
mod output;
mod quantize;
mod rewrite;
mod tensor_file;
mod writer;

pub use checkpoint::{Checkpoint, INDEX_SUFFIX};
pub use dequantize::{dequantize_checkpoint, DequantizeSettings};
pub use error::CheckpointError;
pub use format::{
    QuantizedCheckpoint, QuantizedParts, QuantizedTensorInfo, FORMAT_VERSION, FORMAT_VERSION_KEY,
};
pub use import::{import_checkpoint, ImportConfig, ImportFormat, ImportSettings, ZeroStorage};
pub use index::ShardIndex;
pub use output::{AtomicDir, AtomicFile};
pub use quantize::{
    looks_like_embedding, quantize_checkpoint, CheckpointSummary, Progress, QuantizeSettings,
    Selection, TensorOutcome, TensorSummary,
};
pub use tensor_file::{
    byte_size, decode_floats, parse_header, Header, TensorDtype, TensorEntry, TensorFile,
    MAX_HEADER_BYTES,
};
pub use writer::{FileLayout, PlannedTensor, TensorFileWriter};
