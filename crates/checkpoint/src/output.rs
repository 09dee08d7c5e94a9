//! Outputs that appear whole or not at all.
//!
//! An [`AtomicFile`] or [`AtomicDir`] is built under a temporary name in the directory of its
//! target and renamed onto the target by `commit`; dropped without `commit` (after an error),
//! the temporary file or directory is removed. Either way no reader ever sees a partial output,
//! and an existing file at the target is replaced only when the new one is complete.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::CheckpointError;

/// The directory a target lives in (`.` for a bare file name).
fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `.NAME.` for a target called NAME: temporary names are hidden and show what they become.
fn temporary_prefix(target: &Path) -> String {
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.")
}

/// A file written under a temporary name beside its target.
pub struct AtomicFile {
    temporary: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates the temporary file in the target's directory, readable as a new file would be
    /// (the process's umask applies).
    pub fn create(target: &Path) -> Result<Self, CheckpointError> {
        let prefix = temporary_prefix(target);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o666));
        }
        let temporary = builder
            .tempfile_in(parent_of(target))
            .map_err(|error| CheckpointError::io(target, error))?;
        Ok(AtomicFile {
            temporary,
            target: target.to_path_buf(),
        })
    }

    /// The file to write.
    pub fn file(&mut self) -> &mut File {
        self.temporary.as_file_mut()
    }

    /// Where the file is being written (for messages).
    pub fn temporary_path(&self) -> &Path {
        self.temporary.path()
    }

    /// Renames the file onto the target.
    pub fn commit(self) -> Result<(), CheckpointError> {
        let target = self.target;
        self.temporary
            .persist(&target)
            .map(drop)
            .map_err(|error| CheckpointError::io(&target, error.error))
    }
}

/// A directory filled under a temporary name beside its target.
pub struct AtomicDir {
    temporary: tempfile::TempDir,
    target: PathBuf,
}

impl AtomicDir {
    /// Creates the temporary directory beside the target. The target must not exist or be an
    /// empty directory (which the rename replaces).
    pub fn create(target: &Path) -> Result<Self, CheckpointError> {
        let prefix = temporary_prefix(target);
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(std::fs::Permissions::from_mode(0o777));
        }
        let temporary = builder
            .tempdir_in(parent_of(target))
            .map_err(|error| CheckpointError::io(target, error))?;
        Ok(AtomicDir {
            temporary,
            target: target.to_path_buf(),
        })
    }

    /// The temporary directory to fill.
    pub fn path(&self) -> &Path {
        self.temporary.path()
    }

    /// Renames the directory onto the target.
    pub fn commit(self) -> Result<(), CheckpointError> {
        std::fs::rename(self.temporary.path(), &self.target)
            .map_err(|error| CheckpointError::io(&self.target, error))?;
        // Renamed: there is nothing left at the temporary path to clean up.
        let _ = self.temporary.keep();
        Ok(())
    }
}
