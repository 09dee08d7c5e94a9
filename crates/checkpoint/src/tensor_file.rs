//! Reading safetensors files, memory-mapped.
//!
//! A safetensors file is an 8-byte little-endian header length `n`, `n` bytes of JSON (an
//! object from tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}`, plus an
//! optional `"__metadata__"` object of strings), then the tensor data, with offsets relative to
//! the end of the header. [`TensorFile::open`] checks all of it before any tensor is read: the
//! header's length and JSON, every dtype and shape, that the tensors' byte ranges follow each
//! other without gaps or overlaps from offset 0, that each range is as long as its shape needs,
//! and that the file ends exactly where the last tensor does. A file cut short names the first
//! tensor whose data is missing.
//!
//! The data is never copied: [`TensorFile::data`] borrows it from the memory map, and
//! [`TensorFile::release`] lets the operating system drop the pages of a tensor once it has
//! been used, so that streaming through a file larger than memory keeps little of it resident.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::Value;

use crate::CheckpointError;

/// Headers longer than this are refused (the limit of the reference implementation).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The element types a safetensors file can declare, with their names in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorDtype {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    Bf16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

impl TensorDtype {
    /// Every dtype, with its name in the file and its width in bits.
    const TABLE: [(TensorDtype, &'static str, u32); 22] = [
        (TensorDtype::Bool, "BOOL", 8),
        (TensorDtype::F4, "F4", 4),
        (TensorDtype::F6E2M3, "F6_E2M3", 6),
        (TensorDtype::F6E3M2, "F6_E3M2", 6),
        (TensorDtype::U8, "U8", 8),
        (TensorDtype::I8, "I8", 8),
        (TensorDtype::F8E5M2, "F8_E5M2", 8),
        (TensorDtype::F8E4M3, "F8_E4M3", 8),
        (TensorDtype::F8E8M0, "F8_E8M0", 8),
        (TensorDtype::F8E4M3Fnuz, "F8_E4M3FNUZ", 8),
        (TensorDtype::F8E5M2Fnuz, "F8_E5M2FNUZ", 8),
        (TensorDtype::I16, "I16", 16),
        (TensorDtype::U16, "U16", 16),
        (TensorDtype::F16, "F16", 16),
        (TensorDtype::Bf16, "BF16", 16),
        (TensorDtype::I32, "I32", 32),
        (TensorDtype::U32, "U32", 32),
        (TensorDtype::F32, "F32", 32),
        (TensorDtype::C64, "C64", 64),
        (TensorDtype::F64, "F64", 64),
        (TensorDtype::I64, "I64", 64),
        (TensorDtype::U64, "U64", 64),
    ];

    /// The dtype of a name as written in the file (`"F16"`, `"BF16"`, `"I64"`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::TABLE
            .iter()
            .find(|(_, known, _)| *known == name)
            .map(|(dtype, _, _)| *dtype)
    }

    /// The name as written in the file.
    pub fn name(self) -> &'static str {
        Self::TABLE[self as usize].1
    }

    /// Bits per element.
    pub fn bits(self) -> u32 {
        Self::TABLE[self as usize].2
    }

    /// The floating types anybit quantizes from, as an `anybit_dtype::DType`.
    pub fn as_weight_dtype(self) -> Option<anybit_dtype::DType> {
        match self {
            TensorDtype::F16 => Some(anybit_dtype::DType::F16),
            TensorDtype::Bf16 => Some(anybit_dtype::DType::Bf16),
            TensorDtype::F32 => Some(anybit_dtype::DType::F32),
            _ => None,
        }
    }

    /// The safetensors dtype scales of `dtype` (f16, bf16 or f32) are stored in.
    pub fn from_scale_dtype(dtype: anybit_dtype::DType) -> Option<Self> {
        match dtype {
            anybit_dtype::DType::F16 => Some(TensorDtype::F16),
            anybit_dtype::DType::Bf16 => Some(TensorDtype::Bf16),
            anybit_dtype::DType::F32 => Some(TensorDtype::F32),
            _ => None,
        }
    }
}

impl std::fmt::Display for TensorDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The number of bytes `shape` elements of `dtype` take, or `None` on overflow or when the
/// bits do not fill whole bytes.
pub fn byte_size(dtype: TensorDtype, shape: &[usize]) -> Option<usize> {
    let elements = shape
        .iter()
        .try_fold(1usize, |product, &dim| product.checked_mul(dim))?;
    let bits = elements.checked_mul(dtype.bits() as usize)?;
    bits.is_multiple_of(8).then_some(bits / 8)
}

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: TensorDtype,
    pub shape: Vec<usize>,
    /// Byte range of the data, relative to the end of the header.
    pub data_offsets: Range<usize>,
}

impl TensorEntry {
    /// Bytes of data.
    pub fn byte_len(&self) -> usize {
        self.data_offsets.len()
    }
}

/// A parsed and checked header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The tensors, in the order of their data.
    pub tensors: Vec<TensorEntry>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
    /// Where the data starts in the file: 8 + the header's length.
    pub data_start: usize,
    /// Bytes of data (the end of the last tensor).
    pub data_len: usize,
}

/// Parses and checks the header of a file of `file_len` bytes that starts with `prefix` (at
/// least the header; the data need not be there). `path` is for the messages.
pub fn parse_header(path: &Path, prefix: &[u8], file_len: u64) -> Result<Header, CheckpointError> {
    let header_error = |reason: String| CheckpointError::Header {
        path: path.to_path_buf(),
        reason,
    };
    let length_bytes: [u8; 8] = prefix
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| {
            header_error(format!(
                "the file has {file_len} bytes; a safetensors file starts with an 8-byte header length"
            ))
        })?;
    let header_len = u64::from_le_bytes(length_bytes);
    if header_len > MAX_HEADER_BYTES {
        return Err(header_error(format!(
            "the header length is {header_len} bytes, more than the {MAX_HEADER_BYTES} allowed"
        )));
    }
    if 8 + header_len > file_len {
        return Err(header_error(format!(
            "the header needs {} bytes but the file has {file_len} (truncated?)",
            8 + header_len
        )));
    }
    let data_start = 8 + header_len as usize;
    let text = prefix
        .get(8..data_start)
        .ok_or_else(|| header_error("the header is cut short".to_string()))?;
    let text = std::str::from_utf8(text)
        .map_err(|error| header_error(format!("the header is not UTF-8: {error}")))?;
    let json: Value = serde_json::from_str(text)
        .map_err(|error| header_error(format!("the header is not valid JSON: {error}")))?;
    let Value::Object(object) = json else {
        return Err(header_error("the header is not a JSON object".to_string()));
    };
    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::with_capacity(object.len());
    for (name, value) in object {
        if name == "__metadata__" {
            let Value::Object(entries) = value else {
                return Err(header_error("`__metadata__` is not an object".to_string()));
            };
            for (key, value) in entries {
                let Value::String(value) = value else {
                    return Err(header_error(format!(
                        "`__metadata__` entry `{key}` is not a string"
                    )));
                };
                metadata.insert(key, value);
            }
            continue;
        }
        let entry = parse_entry(&name, &value)
            .map_err(|reason| CheckpointError::tensor(path, &name, reason))?;
        tensors.push(entry);
    }
    tensors.sort_by_key(|entry| (entry.data_offsets.start, entry.data_offsets.end));
    let mut end = 0usize;
    for entry in &tensors {
        if entry.data_offsets.start != end {
            let what = if entry.data_offsets.start < end {
                "overlaps the tensor before it"
            } else {
                "leaves a gap after the tensor before it"
            };
            return Err(CheckpointError::tensor(
                path,
                &entry.name,
                format!(
                    "data_offsets [{}, {}] {what} (which ends at {end}); tensors must follow each other from offset 0",
                    entry.data_offsets.start, entry.data_offsets.end
                ),
            ));
        }
        end = entry.data_offsets.end;
    }
    let available = file_len - data_start as u64;
    if let Some(cut) = tensors
        .iter()
        .find(|entry| entry.data_offsets.end as u64 > available)
    {
        return Err(CheckpointError::tensor(
            path,
            &cut.name,
            format!(
                "its data ends at byte {} of the file, but the file has only {file_len} bytes (truncated?)",
                data_start + cut.data_offsets.end
            ),
        ));
    }
    if (end as u64) < available {
        return Err(header_error(format!(
            "{} bytes follow the last tensor's data (the data should end at byte {} of the file, which has {file_len})",
            available - end as u64,
            data_start + end
        )));
    }
    Ok(Header {
        tensors,
        metadata,
        data_start,
        data_len: end,
    })
}

/// One tensor's header entry, or why it is wrong.
fn parse_entry(name: &str, value: &Value) -> Result<TensorEntry, String> {
    let Value::Object(fields) = value else {
        return Err("its header entry is not an object".to_string());
    };
    let dtype_name = fields
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("its header entry has no `dtype` string")?;
    let dtype = TensorDtype::from_name(dtype_name)
        .ok_or_else(|| format!("unknown dtype `{dtype_name}`"))?;
    let shape = fields
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("its header entry has no `shape` list")?
        .iter()
        .map(|dim| dim.as_u64().and_then(|dim| usize::try_from(dim).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or("its `shape` is not a list of non-negative integers")?;
    let offsets = fields
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|offsets| {
            offsets
                .iter()
                .map(|offset| {
                    offset
                        .as_u64()
                        .and_then(|offset| usize::try_from(offset).ok())
                })
                .collect::<Option<Vec<usize>>>()
        })
        .filter(|offsets| offsets.len() == 2)
        .ok_or("its `data_offsets` is not a pair of non-negative integers")?;
    let (begin, end) = (offsets[0], offsets[1]);
    if end < begin {
        return Err(format!(
            "its data_offsets [{begin}, {end}] end before they begin"
        ));
    }
    let needed = byte_size(dtype, &shape).ok_or_else(|| {
        format!("shape {shape:?} of {dtype} does not fill a whole number of bytes (or overflows)")
    })?;
    if needed != end - begin {
        return Err(format!(
            "shape {shape:?} of {dtype} needs {needed} bytes, but its data_offsets [{begin}, {end}] hold {}",
            end - begin
        ));
    }
    Ok(TensorEntry {
        name: name.to_string(),
        dtype,
        shape,
        data_offsets: begin..end,
    })
}

/// A safetensors file, checked and memory-mapped.
///
/// The file must not be changed by another process while it is open (as with any memory map,
/// its bytes would change under the borrowed slices).
pub struct TensorFile {
    path: PathBuf,
    map: Mmap,
    header: Header,
    by_name: BTreeMap<String, usize>,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl TensorFile {
    /// Opens, maps and checks a file (see the module docs for what is checked).
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let file = File::open(path).map_err(|error| CheckpointError::io(path, error))?;
        let file_len = file
            .metadata()
            .map_err(|error| CheckpointError::io(path, error))?
            .len();
        if file_len < 8 {
            return Err(CheckpointError::Header {
                path: path.to_path_buf(),
                reason: format!(
                    "the file has {file_len} bytes; a safetensors file starts with an 8-byte header length"
                ),
            });
        }
        // SAFETY: the map is read-only; the documented contract is that the file is not
        // modified while it is open.
        let map = unsafe { Mmap::map(&file) }.map_err(|error| CheckpointError::io(path, error))?;
        let header = parse_header(path, &map, file_len)?;
        let by_name = header
            .tensors
            .iter()
            .enumerate()
            .map(|(index, entry)| (entry.name.clone(), index))
            .collect();
        Ok(TensorFile {
            path: path.to_path_buf(),
            map,
            header,
            by_name,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors, in the order of their data.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.header.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name
            .get(name)
            .map(|&index| &self.header.tensors[index])
    }

    /// The `__metadata__` strings.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.header.metadata
    }

    /// Bytes of tensor data in the file.
    pub fn data_len(&self) -> usize {
        self.header.data_len
    }

    /// The bytes of a tensor of this file.
    pub fn data(&self, entry: &TensorEntry) -> &[u8] {
        let start = self.header.data_start + entry.data_offsets.start;
        &self.map[start..start + entry.byte_len()]
    }

    /// Tells the operating system that the pages of `entry` will not be needed soon, so they
    /// need not stay resident. Later reads of them still see the file's bytes.
    pub fn release(&self, entry: &TensorEntry) {
        #[cfg(unix)]
        {
            let start = self.header.data_start + entry.data_offsets.start;
            // SAFETY: the map is a read-only shared mapping of a file. MADV_DONTNEED drops this
            // process's pages of it; the next access maps the file's pages again, so no slice
            // ever sees other bytes than the file's. Failure only costs memory, so it is ignored.
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start,
                    entry.byte_len(),
                )
            };
        }
        #[cfg(not(unix))]
        let _ = entry;
    }
}

/// Decodes little-endian f16, bf16 or f32 bytes to f32 (exact), appending to `out`; `None` for
/// other dtypes.
pub fn decode_floats(dtype: TensorDtype, bytes: &[u8], out: &mut Vec<f32>) -> Option<()> {
    match dtype {
        TensorDtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        TensorDtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        TensorDtype::Bf16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dtype_table_follows_the_enum() {
        for (index, (dtype, name, _)) in TensorDtype::TABLE.iter().enumerate() {
            assert_eq!(*dtype as usize, index);
            assert_eq!(TensorDtype::from_name(name), Some(*dtype));
        }
        assert_eq!(TensorDtype::Bf16.name(), "BF16");
        assert_eq!(TensorDtype::F6E3M2.bits(), 6);
        assert_eq!(
            TensorDtype::from_name("f16"),
            None,
            "names are case-sensitive"
        );
    }
}
