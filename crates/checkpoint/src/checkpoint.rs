//! A checkpoint: one safetensors file, or the shards a `*.safetensors.index.json` names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::index::ShardIndex;
use crate::tensor_file::{TensorEntry, TensorFile};
use crate::CheckpointError;

/// The suffix of a sharded checkpoint's index file.
pub const INDEX_SUFFIX: &str = ".safetensors.index.json";

/// An opened checkpoint: every file checked and mapped, every tensor name unique.
#[derive(Debug)]
pub struct Checkpoint {
    files: Vec<TensorFile>,
    index: Option<(PathBuf, ShardIndex)>,
    /// Tensor name → (file, position in the file's tensors).
    locations: BTreeMap<String, (usize, usize)>,
}

impl Checkpoint {
    /// Opens a `.safetensors` file, an index (a `.json` file: its shards are opened, in the
    /// index's directory), or a directory that holds exactly one index or, without one, exactly
    /// one `.safetensors` file.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let metadata = std::fs::metadata(path).map_err(|error| CheckpointError::io(path, error))?;
        if metadata.is_dir() {
            return Self::open(&Self::find_in_directory(path)?);
        }
        let is_index = path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().ends_with(".json"));
        if !is_index {
            let file = TensorFile::open(path)?;
            return Self::from_files(vec![file], None);
        }
        let index = ShardIndex::read(path)?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let files = index
            .shards()
            .into_iter()
            .map(|shard| TensorFile::open(&directory.join(shard)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_files(files, Some((path.to_path_buf(), index)))
    }

    fn find_in_directory(directory: &Path) -> Result<PathBuf, CheckpointError> {
        let entries =
            std::fs::read_dir(directory).map_err(|error| CheckpointError::io(directory, error))?;
        let mut indexes = Vec::new();
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|error| CheckpointError::io(directory, error))?
                .path();
            let name = path
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                continue;
            }
            if name.ends_with(INDEX_SUFFIX) {
                indexes.push(path);
            } else if name.ends_with(".safetensors") {
                files.push(path);
            }
        }
        match (indexes.as_slice(), files.as_slice()) {
            ([index], _) => Ok(index.clone()),
            ([], [file]) => Ok(file.clone()),
            _ => Err(CheckpointError::Index {
                path: directory.to_path_buf(),
                reason: format!(
                    "the directory holds {} index files (*{INDEX_SUFFIX}) and {} .safetensors files; name the file to open",
                    indexes.len(),
                    files.len()
                ),
            }),
        }
    }

    fn from_files(
        files: Vec<TensorFile>,
        index: Option<(PathBuf, ShardIndex)>,
    ) -> Result<Self, CheckpointError> {
        let mut locations = BTreeMap::new();
        for (file_index, file) in files.iter().enumerate() {
            for (position, entry) in file.tensors().iter().enumerate() {
                if let Some((other, _)) =
                    locations.insert(entry.name.clone(), (file_index, position))
                {
                    return Err(CheckpointError::tensor(
                        file.path(),
                        &entry.name,
                        format!("the tensor is also in {}", files[other].path().display()),
                    ));
                }
            }
        }
        if let Some((index_path, shard_index)) = &index {
            for (tensor, shard) in &shard_index.weight_map {
                let held_there = locations.get(tensor).is_some_and(|&(file_index, _)| {
                    files[file_index]
                        .path()
                        .file_name()
                        .is_some_and(|name| name.to_string_lossy() == shard.as_str())
                });
                if !held_there {
                    return Err(CheckpointError::Index {
                        path: index_path.clone(),
                        reason: format!("the index puts tensor `{tensor}` in shard `{shard}`, which does not hold it"),
                    });
                }
            }
        }
        Ok(Checkpoint {
            files,
            index,
            locations,
        })
    }

    /// The files: one, or the shards in the order of their names.
    pub fn files(&self) -> &[TensorFile] {
        &self.files
    }

    /// The index and its path, for a sharded checkpoint.
    pub fn index(&self) -> Option<(&Path, &ShardIndex)> {
        self.index
            .as_ref()
            .map(|(path, index)| (path.as_path(), index))
    }

    /// The file that holds tensor `name`, and its entry.
    pub fn find(&self, name: &str) -> Option<(&TensorFile, &TensorEntry)> {
        let &(file_index, position) = self.locations.get(name)?;
        let file = &self.files[file_index];
        Some((file, &file.tensors()[position]))
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.locations.keys().map(String::as_str)
    }

    /// Bytes of tensor data over all files.
    pub fn data_len(&self) -> u64 {
        self.files.iter().map(|file| file.data_len() as u64).sum()
    }
}
