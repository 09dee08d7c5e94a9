//! Reading and writing safetensors files: agreement with the reference implementation (the
//! `safetensors` crate) both ways, and a clear error naming the file and tensor for every kind
//! of damage, never a panic.

use std::collections::BTreeMap;
use std::path::Path;

use anybit_checkpoint::{
    parse_header, FileLayout, PlannedTensor, TensorDtype, TensorFile, TensorFileWriter,
};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A file made by the reference implementation: a 2-D f16, a 1-D f32, a 0-D i64 and bytes.
fn reference_file() -> Vec<u8> {
    let f16_data: Vec<u8> = (0..12u16)
        .flat_map(|i| half::f16::from_f32(i as f32 * 0.5).to_le_bytes())
        .collect();
    let f32_data: Vec<u8> = [1.5f32, -2.0, 3.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let i64_data = 7i64.to_le_bytes().to_vec();
    let u8_data = vec![1u8, 2, 3];
    let tensors = vec![
        (
            "weight",
            TensorView::new(Dtype::F16, vec![3, 4], &f16_data).unwrap(),
        ),
        (
            "norm",
            TensorView::new(Dtype::F32, vec![3], &f32_data).unwrap(),
        ),
        (
            "step",
            TensorView::new(Dtype::I64, vec![], &i64_data).unwrap(),
        ),
        (
            "bytes",
            TensorView::new(Dtype::U8, vec![3], &u8_data).unwrap(),
        ),
    ];
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(tensors, Some(metadata)).unwrap()
}

fn write_temp(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    (directory, path)
}

#[test]
fn reads_what_the_reference_writes() {
    let (_directory, path) = write_temp(&reference_file());
    let file = TensorFile::open(&path).unwrap();
    let names: Vec<&str> = file
        .tensors()
        .iter()
        .map(|entry| entry.name.as_str())
        .collect();
    // The reference orders by dtype (widest first), then by name.
    assert_eq!(names, ["step", "norm", "weight", "bytes"]);
    let weight = file.tensor("weight").unwrap();
    assert_eq!(weight.dtype, TensorDtype::F16);
    assert_eq!(weight.shape, [3, 4]);
    let mut values = Vec::new();
    anybit_checkpoint::decode_floats(weight.dtype, file.data(weight), &mut values).unwrap();
    assert_eq!(values[..3], [0.0, 0.5, 1.0]);
    assert_eq!(values[11], 5.5);
    assert_eq!(file.data(file.tensor("step").unwrap()), 7i64.to_le_bytes());
    assert_eq!(file.data(file.tensor("bytes").unwrap()), [1, 2, 3]);
    assert_eq!(file.metadata()["format"], "pt");
    assert_eq!(file.data_len(), 8 + 12 + 24 + 3);
    file.release(weight);
    assert_eq!(
        file.data(file.tensor("norm").unwrap()).len(),
        12,
        "release keeps the bytes readable"
    );
}

#[test]
fn the_reference_reads_what_we_write() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("out.safetensors");
    let planned = vec![
        PlannedTensor {
            name: "codes".into(),
            dtype: TensorDtype::U8,
            shape: vec![2, 3],
        },
        PlannedTensor {
            name: "scales".into(),
            dtype: TensorDtype::F16,
            shape: vec![2, 1],
        },
        PlannedTensor {
            name: "big \"name\"".into(),
            dtype: TensorDtype::F32,
            shape: vec![1],
        },
        PlannedTensor {
            name: "empty".into(),
            dtype: TensorDtype::Bf16,
            shape: vec![0, 5],
        },
    ];
    let metadata = BTreeMap::from([("anybit.format_version".to_string(), "1".to_string())]);
    let layout = FileLayout::new(&path, planned, &metadata).unwrap();
    // Widest first, then by name: every tensor starts at a multiple of its element size.
    let order: Vec<&str> = layout
        .tensors()
        .iter()
        .map(|entry| entry.name.as_str())
        .collect();
    assert_eq!(order, ["big \"name\"", "empty", "scales", "codes"]);
    for entry in layout.tensors() {
        assert_eq!(
            entry.data_offsets.start % (entry.dtype.bits() as usize / 8),
            0
        );
    }
    let mut file = std::fs::File::create(&path).unwrap();
    let mut writer = TensorFileWriter::new(&mut file, &path, layout).unwrap();
    // Any order, in pieces.
    writer.write("codes", 3, &[4, 5, 6]).unwrap();
    writer.write("scales", 0, &[0, 0x3c, 0, 0x40]).unwrap();
    writer.write("codes", 0, &[1, 2, 3]).unwrap();
    writer
        .write("big \"name\"", 0, &2.5f32.to_le_bytes())
        .unwrap();
    let error = writer.write("codes", 5, &[0, 0]).unwrap_err().to_string();
    assert!(
        error.contains("writing bytes [5, 7) of a tensor of 6 bytes"),
        "{error}"
    );
    writer.finish().unwrap();
    drop(file);
    let bytes = std::fs::read(&path).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let codes = reference.tensor("codes").unwrap();
    assert_eq!(codes.dtype(), Dtype::U8);
    assert_eq!(codes.shape(), [2, 3]);
    assert_eq!(codes.data(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        reference.tensor("scales").unwrap().data(),
        [0, 0x3c, 0, 0x40]
    );
    assert_eq!(
        reference.tensor("big \"name\"").unwrap().data(),
        2.5f32.to_le_bytes()
    );
    assert_eq!(reference.tensor("empty").unwrap().shape(), [0, 5]);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        header.metadata().as_ref().unwrap()["anybit.format_version"],
        "1"
    );
    // The header is padded to 8 bytes.
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
}

#[test]
fn a_writer_refuses_to_finish_with_bytes_missing() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("out.safetensors");
    let planned = vec![PlannedTensor {
        name: "a".into(),
        dtype: TensorDtype::U8,
        shape: vec![4],
    }];
    let layout = FileLayout::new(&path, planned, &BTreeMap::new()).unwrap();
    let mut file = std::fs::File::create(&path).unwrap();
    let mut writer = TensorFileWriter::new(&mut file, &path, layout).unwrap();
    writer.write("a", 0, &[1, 2]).unwrap();
    let error = writer.finish().unwrap_err().to_string();
    assert!(
        error.contains("tensor `a`: 2 of its 4 bytes were written"),
        "{error}"
    );
    let duplicate = vec![
        PlannedTensor {
            name: "a".into(),
            dtype: TensorDtype::U8,
            shape: vec![4],
        },
        PlannedTensor {
            name: "a".into(),
            dtype: TensorDtype::F16,
            shape: vec![4],
        },
    ];
    let error = FileLayout::new(&path, duplicate, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("tensor `a`: two tensors of the file would have this name"),
        "{error}"
    );
}

/// A file with a hand-written header and `data_len` bytes of data.
fn with_header(header: &str, data_len: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.resize(bytes.len() + data_len, 0);
    bytes
}

fn open_error(bytes: &[u8]) -> String {
    let (_directory, path) = write_temp(bytes);
    let message = TensorFile::open(&path).unwrap_err().to_string();
    assert!(
        message.contains("model.safetensors"),
        "names the file: {message}"
    );
    message
}

#[test]
fn damaged_files_are_clear_errors_naming_the_tensor() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "the file has 3 bytes; a safetensors file starts with an 8-byte header length"),
        (u64::MAX.to_le_bytes().to_vec(), "more than the 100000000 allowed"),
        (with_header("{}", 0)[..9].to_vec(), "the header needs 10 bytes but the file has 9 (truncated?)"),
        (with_header("{\"a\": ", 0), "the header is not valid JSON"),
        (with_header("[1]", 0), "the header is not a JSON object"),
        (
            with_header(r#"{"w":{"dtype":"F7","shape":[2],"data_offsets":[0,2]}}"#, 2),
            "tensor `w`: unknown dtype `F7`",
        ),
        (
            with_header(r#"{"w":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}}"#, 4),
            "tensor `w`: shape [3] of F16 needs 6 bytes, but its data_offsets [0, 4] hold 4",
        ),
        (
            with_header(r#"{"w":{"dtype":"F16","shape":[-1],"data_offsets":[0,4]}}"#, 4),
            "tensor `w`: its `shape` is not a list of non-negative integers",
        ),
        (
            with_header(r#"{"w":{"dtype":"U8","shape":[2]}}"#, 2),
            "tensor `w`: its `data_offsets` is not a pair",
        ),
        (
            with_header(
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                3,
            ),
            "tensor `b`: data_offsets [1, 3] overlaps the tensor before it (which ends at 2)",
        ),
        (
            with_header(
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}"#,
                5,
            ),
            "tensor `b`: data_offsets [3, 5] leaves a gap",
        ),
        (
            with_header(
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"F32","shape":[4],"data_offsets":[2,18]}}"#,
                10,
            ),
            "tensor `b`: its data ends at byte 133 of the file, but the file has only 125 bytes (truncated?)",
        ),
        (
            with_header(r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#, 5),
            "3 bytes follow the last tensor's data",
        ),
        (
            with_header(r#"{"__metadata__":{"k":1}}"#, 0),
            "`__metadata__` entry `k` is not a string",
        ),
    ];
    for (bytes, expected) in cases {
        let message = open_error(&bytes);
        assert!(
            message.contains(expected),
            "expected `{expected}` in `{message}`"
        );
    }
}

#[test]
fn a_reference_file_cut_anywhere_is_an_error() {
    let bytes = reference_file();
    let (_directory, path) = write_temp(&bytes);
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).unwrap();
        assert!(TensorFile::open(&path).is_err(), "cut at {len}");
    }
    // Cut in the data of the last tensor: the message names it.
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let message = TensorFile::open(&path).unwrap_err().to_string();
    assert!(
        message.contains("tensor `bytes`: its data ends at byte"),
        "{message}"
    );
}

proptest! {
    /// Any bytes, and any damage to a valid file, give an answer, never a panic; what the
    /// reference accepts, we accept, with the same tensors.
    #[test]
    fn no_panics_on_damaged_headers(flips in proptest::collection::vec((0usize..400, any::<u8>()), 1..4)) {
        let mut bytes = reference_file();
        for (position, value) in flips {
            let position = position % bytes.len();
            bytes[position] = value;
        }
        let ours = parse_header(Path::new("damaged.safetensors"), &bytes, bytes.len() as u64);
        if let Ok(reference) = SafeTensors::deserialize(&bytes) {
            let ours = ours.expect("a file the reference accepts");
            prop_assert_eq!(ours.tensors.len(), reference.len());
            for entry in &ours.tensors {
                let view = reference.tensor(&entry.name).unwrap();
                prop_assert_eq!(view.shape(), entry.shape.as_slice());
                prop_assert_eq!(format!("{:?}", view.dtype()), entry.dtype.name());
            }
        }
    }
}
