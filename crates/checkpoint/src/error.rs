//! The one error type of this crate. Every message names the file and, where one is at fault,
//! the tensor.

use std::path::{Path, PathBuf};

use anybit_dtype::QuantizeError;

/// Something about a checkpoint, or a request to read or write one, that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The operating system refused a read, write, rename or memory map.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a well-formed safetensors file (before any tensor can be named).
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Header { path: PathBuf, reason: String },
    /// One tensor of a file is described wrongly, lies beyond the end of the file, or cannot be
    /// used as asked.
    #[error("{}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// The quantization options themselves are refused (weight type, group size, scale type).
    #[error("{0}")]
    Options(#[source] QuantizeError),
    /// A tensor could not be quantized.
    #[error("{}: tensor `{tensor}`: {source}", path.display())]
    Quantize {
        path: PathBuf,
        tensor: String,
        source: QuantizeError,
    },
    /// The index of a sharded checkpoint (`*.safetensors.index.json`) is malformed or names
    /// shards that do not match.
    #[error("{}: {reason}", path.display())]
    Index { path: PathBuf, reason: String },
    /// An anybit quantized checkpoint's metadata is missing, malformed or of another version.
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    /// The quantization settings of a checkpoint to import are missing, malformed or not
    /// supported.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// A glob pattern of `--include`/`--exclude` does not parse.
    #[error("invalid tensor name pattern `{pattern}`: {source}")]
    Pattern {
        pattern: String,
        source: globset::Error,
    },
    /// An `--include` pattern selects no tensor: most likely a typo.
    #[error("the pattern `{pattern}` matches no tensor of the checkpoint")]
    UnmatchedPattern { pattern: String },
    /// A request that cannot be carried out whatever the checkpoint (an option out of range).
    #[error("{0}")]
    Request(String),
    /// The request is refused before anything is written (the output would overwrite the input,
    /// or is a kind of path that cannot hold the output).
    #[error("refusing to write {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
}

impl CheckpointError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn tensor(path: &Path, tensor: &str, reason: impl Into<String>) -> Self {
        CheckpointError::Tensor {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn output(path: &Path, reason: impl Into<String>) -> Self {
        CheckpointError::Output {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
