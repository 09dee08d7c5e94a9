//! Writing a new checkpoint from an opened one: the checks on the output path, and the output
//! written as one file or as shards with an index, atomically.
//!
//! [`check_output`] refuses an output that is one of the input's files (by path, through links,
//! or as another hard link to it), the directory of a sharded input, a directory for a
//! single-file input, a file or a non-empty directory for a sharded one, or a path whose
//! directory does not exist. [`write_checkpoint`] writes the files an [`OutputFile`] list
//! describes (one per input file, with the input file's name when sharded) under a temporary
//! name, renamed onto the output when every file is complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::checkpoint::{Checkpoint, INDEX_SUFFIX};
use crate::output::{AtomicDir, AtomicFile};
use crate::tensor_file::TensorFile;
use crate::writer::{FileLayout, TensorFileWriter};
use crate::{CheckpointError, ShardIndex};

/// One file of the output: the input file it comes from and its layout.
pub(crate) struct OutputFile {
    /// Index into the input checkpoint's files.
    pub input: usize,
    /// The input file's name (the shard's name in a sharded output).
    pub file_name: String,
    pub layout: FileLayout,
}

impl OutputFile {
    /// The output file of input file `input` of `checkpoint`, laid out as `layout`.
    pub fn new(checkpoint: &Checkpoint, input: usize, layout: FileLayout) -> Self {
        let file_name = checkpoint.files()[input]
            .path()
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        OutputFile {
            input,
            file_name,
            layout,
        }
    }
}

/// Writes `files` to `output`: the one file itself for a single-file input, or a directory of
/// shards and an index (named as the input's) for a sharded one. `write` fills each file's
/// tensors; `index_metadata` edits the index's `metadata` (its `total_size` is set here).
/// Returns the paths written.
pub(crate) fn write_checkpoint(
    checkpoint: &Checkpoint,
    output: &Path,
    files: &[OutputFile],
    index_metadata: impl FnOnce(&mut Map<String, Value>),
    mut write: impl FnMut(&OutputFile, &mut TensorFileWriter<'_>) -> Result<(), CheckpointError>,
) -> Result<Vec<PathBuf>, CheckpointError> {
    match checkpoint.index() {
        None => {
            let file = files.first().ok_or_else(|| {
                CheckpointError::output(output, "the checkpoint has no file to write")
            })?;
            let mut atomic = AtomicFile::create(output)?;
            let temporary = atomic.temporary_path().to_path_buf();
            let mut writer = TensorFileWriter::new(atomic.file(), &temporary, file.layout.clone())?;
            write(file, &mut writer)?;
            writer.finish()?;
            atomic.commit()?;
            Ok(vec![output.to_path_buf()])
        }
        Some((index_path, index)) => {
            let directory = AtomicDir::create(output)?;
            let mut weight_map = BTreeMap::new();
            let mut written = Vec::new();
            for file in files {
                let path = directory.path().join(&file.file_name);
                let mut shard = std::fs::File::create(&path)
                    .map_err(|error| CheckpointError::io(&path, error))?;
                let mut writer = TensorFileWriter::new(&mut shard, &path, file.layout.clone())?;
                write(file, &mut writer)?;
                writer.finish()?;
                for entry in file.layout.tensors() {
                    weight_map.insert(entry.name.clone(), file.file_name.clone());
                }
                written.push(output.join(&file.file_name));
            }
            let mut metadata = index.metadata.clone();
            let total_size: usize = files.iter().map(|file| file.layout.data_len()).sum();
            metadata.insert("total_size".to_string(), total_size.into());
            index_metadata(&mut metadata);
            let new_index = ShardIndex {
                metadata,
                weight_map,
            };
            let index_name = index_path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("model{INDEX_SUFFIX}"));
            let path = directory.path().join(&index_name);
            std::fs::write(&path, new_index.to_json())
                .map_err(|error| CheckpointError::io(&path, error))?;
            directory.commit()?;
            written.push(output.join(index_name));
            Ok(written)
        }
    }
}

/// The canonical path `path` has or would have (its directory must exist).
fn resolve(path: &Path) -> Result<PathBuf, CheckpointError> {
    if path.exists() {
        return path
            .canonicalize()
            .map_err(|error| CheckpointError::io(path, error));
    }
    let name = path
        .file_name()
        .ok_or_else(|| CheckpointError::output(path, "it does not name a file or directory"))?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let parent = parent.canonicalize().map_err(|_| {
        CheckpointError::output(
            path,
            format!("its directory {} does not exist", parent.display()),
        )
    })?;
    Ok(parent.join(name))
}

/// Refuses an output that would overwrite or replace part of the input, or that cannot hold
/// the output.
pub(crate) fn check_output(output: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let sharded = checkpoint.index().is_some();
    let mut inputs: Vec<&Path> = checkpoint.files().iter().map(TensorFile::path).collect();
    inputs.extend(checkpoint.index().map(|(path, _)| path));
    let resolved = resolve(output)?;
    let existing = std::fs::metadata(output).ok();
    for input in &inputs {
        let same_path = input
            .canonicalize()
            .is_ok_and(|canonical| canonical == resolved);
        if same_path || existing.as_ref().is_some_and(|meta| same_file(meta, input)) {
            return Err(CheckpointError::output(
                output,
                format!("it is the input file {}", input.display()),
            ));
        }
    }
    match existing {
        Some(meta) if meta.is_dir() => {
            if !sharded {
                return Err(CheckpointError::output(
                    output,
                    "it is a directory; give the path of the output file",
                ));
            }
            for input in &inputs {
                let directory = input
                    .canonicalize()
                    .ok()
                    .and_then(|canonical| canonical.parent().map(Path::to_path_buf));
                if directory.is_some_and(|directory| directory == resolved) {
                    return Err(CheckpointError::output(
                        output,
                        "it is the directory of the input checkpoint, whose shards it would replace",
                    ));
                }
            }
            let mut entries =
                std::fs::read_dir(output).map_err(|error| CheckpointError::io(output, error))?;
            if entries.next().is_some() {
                return Err(CheckpointError::output(
                    output,
                    "the directory is not empty; a sharded checkpoint is written to a new or empty directory",
                ));
            }
        }
        Some(_) if sharded => {
            return Err(CheckpointError::output(
                output,
                "it is a file; a sharded checkpoint is written to a new or empty directory",
            ))
        }
        _ => {}
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(output: &std::fs::Metadata, input: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(input)
        .is_ok_and(|input| input.dev() == output.dev() && input.ino() == output.ino())
}

#[cfg(not(unix))]
fn same_file(_output: &std::fs::Metadata, _input: &Path) -> bool {
    false
}
