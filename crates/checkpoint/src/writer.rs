//! Writing safetensors files whose header is known before any data.
//!
//! [`FileLayout`] places every tensor from its name, dtype and shape alone: tensors are ordered
//! by element width (widest first), then by name, as the reference implementation orders them,
//! so that every tensor starts at a multiple of its element size (the header is padded with
//! spaces to a multiple of 8 bytes). [`TensorFileWriter`] writes that header, then accepts each
//! tensor's bytes in any order and in pieces, at their place in the file, and checks at
//! [`TensorFileWriter::finish`] that every byte was written exactly once. A writer works on a
//! file the caller provides; [`crate::AtomicFile`] and [`crate::AtomicDir`] make that a
//! temporary file renamed into place.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::tensor_file::{byte_size, TensorDtype, TensorEntry};
use crate::CheckpointError;

/// A tensor to be written: everything but its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
}

/// Where each tensor of a file goes, and the header bytes that say so.
#[derive(Clone, Debug)]
pub struct FileLayout {
    tensors: Vec<TensorEntry>,
    by_name: BTreeMap<String, usize>,
    /// The 8-byte length and the padded JSON.
    header: Vec<u8>,
}

impl FileLayout {
    /// Places `tensors` and builds the header with `metadata` as `__metadata__` (left out when
    /// empty). `path` names the file in messages.
    pub fn new(
        path: &Path,
        tensors: Vec<PlannedTensor>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self, CheckpointError> {
        let mut tensors = tensors;
        tensors.sort_by(|a, b| {
            b.dtype
                .bits()
                .cmp(&a.dtype.bits())
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut entries = Vec::with_capacity(tensors.len());
        let mut by_name = BTreeMap::new();
        let mut offset = 0usize;
        for tensor in tensors {
            if tensor.name == "__metadata__" {
                return Err(CheckpointError::tensor(
                    path,
                    &tensor.name,
                    "this name is reserved for the header's metadata",
                ));
            }
            let size = byte_size(tensor.dtype, &tensor.shape).ok_or_else(|| {
                CheckpointError::tensor(
                    path,
                    &tensor.name,
                    format!(
                        "shape {:?} of {} does not fill a whole number of bytes (or overflows)",
                        tensor.shape, tensor.dtype
                    ),
                )
            })?;
            if by_name.insert(tensor.name.clone(), entries.len()).is_some() {
                return Err(CheckpointError::tensor(
                    path,
                    &tensor.name,
                    "two tensors of the file would have this name",
                ));
            }
            let end = offset.checked_add(size).ok_or_else(|| {
                CheckpointError::tensor(path, &tensor.name, "the file is too large")
            })?;
            entries.push(TensorEntry {
                name: tensor.name,
                dtype: tensor.dtype,
                shape: tensor.shape,
                data_offsets: offset..end,
            });
            offset = end;
        }
        let mut json = String::from("{");
        let mut first = true;
        let mut separator = |json: &mut String| {
            if !first {
                json.push(',');
            }
            first = false;
        };
        if !metadata.is_empty() {
            separator(&mut json);
            json.push_str("\"__metadata__\":");
            json.push_str(&json_string_map(metadata));
        }
        for entry in &entries {
            separator(&mut json);
            json.push_str(&json_string(&entry.name));
            json.push_str(&format!(
                ":{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":[{},{}]}}",
                entry.dtype.name(),
                entry.shape,
                entry.data_offsets.start,
                entry.data_offsets.end
            ));
        }
        json.push('}');
        let padded_len = json.len().next_multiple_of(8);
        let mut header = Vec::with_capacity(8 + padded_len);
        header.extend_from_slice(&(padded_len as u64).to_le_bytes());
        header.extend_from_slice(json.as_bytes());
        header.resize(8 + padded_len, b' ');
        Ok(FileLayout {
            tensors: entries,
            by_name,
            header,
        })
    }

    /// The tensors in the order of their data.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).map(|&index| &self.tensors[index])
    }

    /// Bytes of tensor data.
    pub fn data_len(&self) -> usize {
        self.tensors
            .last()
            .map_or(0, |entry| entry.data_offsets.end)
    }

    /// Bytes of the whole file.
    pub fn file_len(&self) -> u64 {
        (self.header.len() + self.data_len()) as u64
    }
}

fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn json_string_map(map: &BTreeMap<String, String>) -> String {
    let object: serde_json::Map<String, serde_json::Value> = map
        .iter()
        .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// Writes one safetensors file laid out by a [`FileLayout`].
pub struct TensorFileWriter<'a> {
    file: &'a mut File,
    path: PathBuf,
    layout: FileLayout,
    /// Bytes written of each tensor, in layout order.
    written: Vec<usize>,
}

impl<'a> TensorFileWriter<'a> {
    /// Writes the header to `file` (empty, opened for writing) and sizes it to the whole file.
    /// `path` names the file in messages.
    pub fn new(
        file: &'a mut File,
        path: &Path,
        layout: FileLayout,
    ) -> Result<Self, CheckpointError> {
        let io = |error| CheckpointError::io(path, error);
        file.write_all(&layout.header).map_err(io)?;
        file.set_len(layout.file_len()).map_err(io)?;
        let written = vec![0; layout.tensors.len()];
        Ok(TensorFileWriter {
            file,
            path: path.to_path_buf(),
            layout,
            written,
        })
    }

    pub fn layout(&self) -> &FileLayout {
        &self.layout
    }

    /// Writes `bytes` at byte `offset` of the data of tensor `name`.
    pub fn write(
        &mut self,
        name: &str,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), CheckpointError> {
        let index = *self.layout.by_name.get(name).ok_or_else(|| {
            CheckpointError::tensor(&self.path, name, "no such tensor in the planned file")
        })?;
        let entry = &self.layout.tensors[index];
        if offset + bytes.len() > entry.byte_len() {
            return Err(CheckpointError::tensor(
                &self.path,
                name,
                format!(
                    "writing bytes [{offset}, {}) of a tensor of {} bytes",
                    offset + bytes.len(),
                    entry.byte_len()
                ),
            ));
        }
        let position = (self.layout.header.len() + entry.data_offsets.start + offset) as u64;
        let io = |error| CheckpointError::io(&self.path, error);
        self.file.seek(SeekFrom::Start(position)).map_err(io)?;
        self.file.write_all(bytes).map_err(io)?;
        self.written[index] += bytes.len();
        Ok(())
    }

    /// Checks that every tensor was written whole and flushes the file to disk.
    pub fn finish(self) -> Result<(), CheckpointError> {
        for (entry, &written) in self.layout.tensors.iter().zip(&self.written) {
            if written != entry.byte_len() {
                return Err(CheckpointError::tensor(
                    &self.path,
                    &entry.name,
                    format!("{written} of its {} bytes were written", entry.byte_len()),
                ));
            }
        }
        self.file
            .sync_all()
            .map_err(|error| CheckpointError::io(&self.path, error))
    }
}
