//! Dequantizing checkpoints: quantize → dequantize gives exactly the library's dequantization
//! (`QuantizedMatrix::dequantize`, rounded to the output type), in the original column order
//! for permuted weights; other tensors and metadata are kept; damaged or foreign inputs are
//! refused before anything is written, the input unchanged.

use std::collections::HashMap;
use std::path::Path;

use anybit_checkpoint::{
    dequantize_checkpoint, quantize_checkpoint, DequantizeSettings, QuantizeSettings,
    QuantizedCheckpoint, Selection, TensorDtype, TensorFile, TensorOutcome, FORMAT_VERSION_KEY,
};
use anybit_dtype::{DType, GroupSize, QuantizeOptions, ScaleSearch};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sha2::{Digest, Sha256};

/// Deterministic values in about [-1, 1).
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn encode(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    match dtype {
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
    }
}

/// `(name, dtype, shape, bytes)` of a small model: weights of the three float types (one with
/// rows that are not whole bytes at 3 bits), an embedding, a bias, a step counter.
fn model() -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
    let float = |name, dtype, shape: &[usize], seed| {
        let count = shape.iter().product();
        (
            name,
            dtype,
            shape.to_vec(),
            encode(dtype, &values(count, seed)),
        )
    };
    vec![
        float("model.embed_tokens.weight", Dtype::F16, &[10, 64], 1),
        float("model.layers.0.attn.q.weight", Dtype::F16, &[24, 128], 2),
        float("model.layers.0.attn.q.bias", Dtype::F16, &[24], 3),
        float("model.layers.0.mlp.up.weight", Dtype::BF16, &[7, 48], 4),
        float("model.layers.0.mlp.down.weight", Dtype::F32, &[16, 256], 5),
        ("step", Dtype::I64, vec![1], 7i64.to_le_bytes().to_vec()),
    ]
}

fn write_file(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: HashMap<String, String>,
) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                *name,
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

fn settings(dtype: &str, group: GroupSize) -> QuantizeSettings {
    QuantizeSettings {
        options: QuantizeOptions {
            dtype: dtype.parse().unwrap(),
            group_size: group,
            scale_dtype: DType::F16,
        },
        search: ScaleSearch::Mse,
        selection: Selection::new(&[], &[]).unwrap(),
    }
}

fn dequantize(input: &Path, output: &Path, dtype: Option<TensorDtype>) -> Result<(), String> {
    dequantize_checkpoint(input, output, DequantizeSettings { dtype }, &mut |_| {})
        .map(drop)
        .map_err(|error| error.to_string())
}

/// The library's dequantization of `name`, in the original column order, as bytes of `dtype`.
fn expected_bytes(checkpoint: &QuantizedCheckpoint, name: &str, dtype: TensorDtype) -> Vec<u8> {
    let parts = checkpoint.parts(name).unwrap();
    let stored = parts.to_matrix().dequantize();
    let mut values = stored.clone();
    if let Some(permutation) = &parts.permutation {
        for row in 0..parts.rows {
            for (column, &original) in permutation.iter().enumerate() {
                values[row * parts.cols + original as usize] = stored[row * parts.cols + column];
            }
        }
    }
    let dtype = match dtype {
        TensorDtype::F16 => Dtype::F16,
        TensorDtype::Bf16 => Dtype::BF16,
        _ => Dtype::F32,
    };
    encode(dtype, &values)
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).unwrap()).to_vec()
}

fn entries(directory: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn dequantized_weights_are_the_libraries_dequantization() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_file(&input, &model(), metadata);
    // Groups of 32 leave the [7, 48] weight a short last group of 16; groups of 128 are one
    // short group of 48 there and of 128 elsewhere.
    for (weight_type, group) in [
        ("u3", GroupSize::Elements(16)),
        ("i4", GroupSize::PerChannel),
        ("f6e3m2", GroupSize::Elements(16)),
        ("u8", GroupSize::Elements(16)),
        ("u3", GroupSize::Elements(32)),
        ("i5", GroupSize::Elements(128)),
        ("f4e2m1", GroupSize::Elements(32)),
    ] {
        let quantized = directory.path().join(format!("{weight_type}.safetensors"));
        quantize_checkpoint(
            &input,
            &quantized,
            &settings(weight_type, group),
            &mut |_| {},
        )
        .unwrap();
        let checkpoint = QuantizedCheckpoint::open(&quantized).unwrap();
        assert_eq!(checkpoint.quantized_names().count(), 3);
        for dtype in [
            None,
            Some(TensorDtype::F32),
            Some(TensorDtype::F16),
            Some(TensorDtype::Bf16),
        ] {
            let output = directory.path().join("dequantized.safetensors");
            let mut events = Vec::new();
            let summary = dequantize_checkpoint(
                &quantized,
                &output,
                DequantizeSettings { dtype },
                &mut |event| events.push(format!("{event:?}")),
            )
            .unwrap();
            assert!(events[0].starts_with("Planned { tensors: 6"), "{events:?}");
            let file = TensorFile::open(&output).unwrap();
            assert_eq!(
                file.metadata().iter().collect::<Vec<_>>(),
                [(&"format".to_string(), &"pt".to_string())],
                "the anybit metadata is dropped, the rest kept"
            );
            let mut names: Vec<&str> = file
                .tensors()
                .iter()
                .map(|entry| entry.name.as_str())
                .collect();
            names.sort_unstable();
            let mut expected_names: Vec<&str> = model().iter().map(|(name, ..)| *name).collect();
            expected_names.sort_unstable();
            assert_eq!(names, expected_names);
            for (name, source, shape, bytes) in model() {
                let entry = file.tensor(name).unwrap();
                assert_eq!(entry.shape, shape, "{name}");
                let summary = summary.tensors.iter().find(|t| t.name == name).unwrap();
                if checkpoint.info(name).is_some() {
                    let source = TensorDtype::from_name(&format!("{source:?}")).unwrap();
                    let dtype = dtype.unwrap_or(source);
                    assert_eq!(entry.dtype, dtype, "{name}");
                    assert_eq!(
                        file.data(entry),
                        expected_bytes(&checkpoint, name, dtype),
                        "{weight_type} {name} as {dtype}"
                    );
                    assert_eq!(summary.outcome, TensorOutcome::Dequantized);
                    assert_eq!(summary.bytes_out, entry.byte_len() as u64);
                } else {
                    assert_eq!(file.data(entry), bytes, "{name} copied");
                    assert_eq!(summary.outcome, TensorOutcome::Copied);
                }
            }
        }
    }
}

/// Writes a quantized checkpoint by hand: one u4 weight [2, 32] with groups of 16 and the
/// permutation `permutation` (as I32 bytes), and a plain tensor.
fn write_permuted(path: &Path, permutation: &[u8], permutation_shape: usize) {
    let codes: Vec<u8> = (0..32u8).map(|byte| byte.wrapping_mul(37)).collect();
    let scales = encode(Dtype::F16, &[0.5, 0.25, 1.0, 0.125]);
    let zeros = vec![8u8, 7, 0, 15];
    let info = r#"{"dtype":"u4","group_size":16,"shape":[2,32],"scale_dtype":"f16","zero_points":true,"source_dtype":"F16","search":"gptq","permuted":true}"#;
    let metadata = HashMap::from([
        (FORMAT_VERSION_KEY.to_string(), "1".to_string()),
        ("anybit.w".to_string(), info.to_string()),
    ]);
    write_file(
        path,
        &[
            ("w.codes", Dtype::U8, vec![2, 16], codes),
            ("w.scales", Dtype::F16, vec![2, 2], scales),
            ("w.zeros", Dtype::U8, vec![2, 2], zeros),
            (
                "w.perm",
                Dtype::I32,
                vec![permutation_shape],
                permutation.to_vec(),
            ),
            ("bias", Dtype::F32, vec![2], encode(Dtype::F32, &[1.0, 2.0])),
        ],
        metadata,
    );
}

/// Writes a quantized checkpoint by hand: one u4 weight [2, 40] in groups of 32 (the last of 8
/// columns), its scales of shape `scale_shape`.
fn write_short_group(path: &Path, scale_shape: [usize; 2]) {
    let codes: Vec<u8> = (0..40u8).map(|byte| byte.wrapping_mul(53)).collect();
    let scale_values = [0.5, 0.25, 1.0, 0.125];
    let scales = encode(Dtype::F16, &scale_values[..scale_shape[0] * scale_shape[1]]);
    let zeros = vec![8u8, 7, 0, 15][..scale_shape[0] * scale_shape[1]].to_vec();
    let info = r#"{"dtype":"u4","group_size":32,"shape":[2,40],"scale_dtype":"f16","zero_points":true,"source_dtype":"F16","search":"none"}"#;
    let metadata = HashMap::from([
        (FORMAT_VERSION_KEY.to_string(), "1".to_string()),
        ("anybit.w".to_string(), info.to_string()),
    ]);
    write_file(
        path,
        &[
            ("w.codes", Dtype::U8, vec![2, 20], codes),
            ("w.scales", Dtype::F16, scale_shape.to_vec(), scales),
            ("w.zeros", Dtype::U8, scale_shape.to_vec(), zeros),
        ],
        metadata,
    );
}

#[test]
fn a_short_last_group_has_its_own_scale_and_zero_point() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("short.safetensors");
    write_short_group(&input, [2, 2]);
    let checkpoint = QuantizedCheckpoint::open(&input).unwrap();
    let matrix = checkpoint.matrix("w").unwrap();
    assert_eq!((matrix.group_size, matrix.groups_per_row()), (32, 2));
    let output = directory.path().join("plain.safetensors");
    dequantize(&input, &output, Some(TensorDtype::F32)).unwrap();
    let file = TensorFile::open(&output).unwrap();
    let values: Vec<f32> = file
        .data(file.tensor("w").unwrap())
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for row in 0..2 {
        for column in 0..40 {
            // Columns 32..40 are the short group: scale and zero point 1 of their row.
            let group = row * 2 + column / 32;
            let code = matrix.code(row, column) as f64;
            let zero = [8.0, 7.0, 0.0, 15.0][group];
            let scale = [0.5, 0.25, 1.0, 0.125][group];
            assert_eq!(
                values[row * 40 + column],
                ((code - zero) * scale) as f32,
                "row {row}, column {column}"
            );
        }
    }
    // Scales of one group per row (K / 32 rounded down) are the wrong shape.
    write_short_group(&input, [2, 1]);
    refused(
        &input,
        &output,
        None,
        "tensor `w`: `w.scales` is F16 [2, 1]; expected F16 [2, 2]",
    );
}

#[test]
fn permuted_weights_come_back_in_their_original_column_order() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("permuted.safetensors");
    // Column j of the stored matrix is column (7·j + 3) mod 32 of the weight.
    let permutation: Vec<i32> = (0..32).map(|j| (7 * j + 3) % 32).collect();
    let bytes: Vec<u8> = permutation.iter().flat_map(|p| p.to_le_bytes()).collect();
    write_permuted(&input, &bytes, 32);
    let checkpoint = QuantizedCheckpoint::open(&input).unwrap();
    let parts = checkpoint.parts("w").unwrap();
    assert_eq!(
        parts.permutation.as_deref(),
        Some(&permutation.iter().map(|&p| p as u32).collect::<Vec<_>>()[..])
    );
    assert_eq!(checkpoint.plain_names(), ["bias"]);
    let output = directory.path().join("plain.safetensors");
    dequantize(&input, &output, Some(TensorDtype::F32)).unwrap();
    let file = TensorFile::open(&output).unwrap();
    let entry = file.tensor("w").unwrap();
    let values: Vec<f32> = file
        .data(entry)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let matrix = parts.to_matrix();
    for row in 0..2 {
        for (column, &original) in permutation.iter().enumerate() {
            // Written out: (code − zero) · scale of stored column `column`.
            let group = row * 2 + column / 16;
            let code = matrix.code(row, column) as f64;
            let zero = [8.0, 7.0, 0.0, 15.0][group];
            let scale = [0.5, 0.25, 1.0, 0.125][group];
            assert_eq!(
                values[row * 32 + original as usize],
                ((code - zero) * scale) as f32,
                "row {row}, stored column {column}"
            );
        }
    }
    assert_eq!(
        file.data(file.tensor("bias").unwrap()),
        encode(Dtype::F32, &[1.0, 2.0])
    );
}

#[test]
fn sharded_checkpoints_keep_their_shards() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let tensors = model();
    write_file(&input.join("a.safetensors"), &tensors[..3], HashMap::new());
    write_file(&input.join("b.safetensors"), &tensors[3..], HashMap::new());
    let weight_map: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .enumerate()
        .map(|(index, (name, ..))| {
            let shard = if index < 3 { "a" } else { "b" };
            (name.to_string(), format!("{shard}.safetensors").into())
        })
        .collect();
    let index = input.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        serde_json::json!({"metadata": {"total_size": 1}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let quantized = directory.path().join("quantized");
    quantize_checkpoint(
        &index,
        &quantized,
        &settings("u4", GroupSize::Elements(16)),
        &mut |_| {},
    )
    .unwrap();
    let output = directory.path().join("plain");
    dequantize(
        &quantized.join("model.safetensors.index.json"),
        &output,
        None,
    )
    .unwrap();
    assert_eq!(
        entries(&output),
        [
            "a.safetensors",
            "b.safetensors",
            "model.safetensors.index.json"
        ]
    );
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["weight_map"], serde_json::Value::Object(weight_map));
    assert!(written["metadata"].get(FORMAT_VERSION_KEY).is_none());
    let checkpoint = QuantizedCheckpoint::open(&quantized).unwrap();
    let b = TensorFile::open(&output.join("b.safetensors")).unwrap();
    let down = b.tensor("model.layers.0.mlp.down.weight").unwrap();
    assert_eq!(
        b.data(down),
        expected_bytes(
            &checkpoint,
            "model.layers.0.mlp.down.weight",
            TensorDtype::F32
        )
    );
    assert_eq!(
        written["metadata"]["total_size"],
        TensorFile::open(&output.join("a.safetensors"))
            .unwrap()
            .data_len()
            + b.data_len()
    );
}

/// A request that must fail: its message, the input unchanged, nothing new in the directory.
fn refused(input: &Path, output: &Path, dtype: Option<TensorDtype>, expected: &str) {
    let directory = input.parent().unwrap();
    let before = (sha256(input), entries(directory));
    let error = dequantize(input, output, dtype).unwrap_err();
    assert!(
        error.contains(expected),
        "expected `{expected}` in `{error}`"
    );
    assert_eq!((sha256(input), entries(directory)), before);
}

#[test]
fn bad_inputs_and_requests_are_refused_without_writing() {
    let directory = tempfile::tempdir().unwrap();
    let plain = directory.path().join("plain.safetensors");
    write_file(&plain, &model(), HashMap::new());
    let output = directory.path().join("out.safetensors");
    refused(
        &plain,
        &output,
        None,
        "not an anybit quantized checkpoint (no `anybit.format_version` in its metadata)",
    );
    let quantized = directory.path().join("quantized.safetensors");
    quantize_checkpoint(
        &plain,
        &quantized,
        &settings("u3", GroupSize::Elements(16)),
        &mut |_| {},
    )
    .unwrap();
    refused(&quantized, &quantized, None, "it is the input file");
    refused(
        &quantized,
        &output,
        Some(TensorDtype::I64),
        "weights are dequantized to F16, BF16 or F32, not I64",
    );

    let permuted = directory.path().join("permuted.safetensors");
    let mut duplicate: Vec<u8> = (0..32i32).flat_map(|p| p.to_le_bytes()).collect();
    duplicate[4..8].copy_from_slice(&0i32.to_le_bytes());
    write_permuted(&permuted, &duplicate, 32);
    refused(
        &permuted,
        &output,
        None,
        "tensor `w`: `w.perm` is not a permutation of 0..32: entry 1 is 0",
    );
    let short: Vec<u8> = (0..16i32).flat_map(|p| p.to_le_bytes()).collect();
    write_permuted(&permuted, &short, 16);
    refused(
        &permuted,
        &output,
        None,
        "tensor `w`: `w.perm` is I32 [16]; expected I32 [32]",
    );
}
