//! Quantizing checkpoints: the round trip (quantize → write → read → dequantize equals the
//! in-memory result), the default and explicit selections, sharded checkpoints, and every
//! refused request: a clear error, no output, no temporary file left, the input's bytes
//! unchanged.

use std::path::{Path, PathBuf};

use anybit_checkpoint::{
    quantize_checkpoint, Progress, QuantizeSettings, QuantizedCheckpoint, Selection, TensorOutcome,
    FORMAT_VERSION_KEY,
};
use anybit_dtype::{
    error_report, quantize_with_search, DType, GroupSize, QuantizeOptions, ScaleSearch, Weights,
};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

/// Deterministic values in about [-1, 1) (xorshift), with a few larger ones.
fn values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..count)
        .map(|index| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
            if index % 97 == 0 {
                value * 4.0
            } else {
                value
            }
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
        Dtype::F32 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        other => panic!("no float encoding for {other:?}"),
    }
}

struct Tensor {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn float(name: &'static str, dtype: Dtype, shape: &[usize], seed: u64) -> Tensor {
    let count = shape.iter().product();
    Tensor {
        name,
        dtype,
        shape: shape.to_vec(),
        bytes: encode(dtype, &values(count, seed)),
    }
}

fn raw(name: &'static str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) -> Tensor {
    Tensor {
        name,
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

fn write_file(path: &Path, tensors: &[Tensor]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|tensor| {
            (
                tensor.name,
                TensorView::new(tensor.dtype, tensor.shape.clone(), &tensor.bytes).unwrap(),
            )
        })
        .collect();
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// A small model: three weights of each float type, an embedding, a head, a norm, a bias
/// and a step counter.
fn model() -> Vec<Tensor> {
    vec![
        float("model.embed_tokens.weight", Dtype::F16, &[10, 128], 1),
        float(
            "model.layers.0.self_attn.q_proj.weight",
            Dtype::F16,
            &[48, 256],
            2,
        ),
        float("model.layers.0.self_attn.q_proj.bias", Dtype::F16, &[48], 3),
        float(
            "model.layers.0.mlp.up_proj.weight",
            Dtype::BF16,
            &[32, 128],
            4,
        ),
        float(
            "model.layers.0.mlp.down_proj.weight",
            Dtype::F32,
            &[20, 256],
            5,
        ),
        float("model.norm.weight", Dtype::F32, &[128], 6),
        float("lm_head.weight", Dtype::BF16, &[10, 128], 7),
        raw("step", Dtype::I64, &[1], 42i64.to_le_bytes().to_vec()),
    ]
}

const QUANTIZED_BY_DEFAULT: [&str; 3] = [
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.self_attn.q_proj.weight",
];

fn settings(dtype: &str, group: GroupSize, scales: DType, search: ScaleSearch) -> QuantizeSettings {
    QuantizeSettings {
        options: QuantizeOptions {
            dtype: dtype.parse().unwrap(),
            group_size: group,
            scale_dtype: scales,
        },
        search,
        selection: Selection::new(&[], &[]).unwrap(),
    }
}

fn u3_g128() -> QuantizeSettings {
    settings(
        "u3",
        GroupSize::Elements(128),
        DType::F16,
        ScaleSearch::None,
    )
}

fn run(
    input: &Path,
    output: &Path,
    settings: &QuantizeSettings,
) -> Result<anybit_checkpoint::CheckpointSummary, String> {
    quantize_checkpoint(input, output, settings, &mut |_| {}).map_err(|error| error.to_string())
}

/// The in-memory quantization of a tensor of `tensors`.
fn expected(
    tensors: &[Tensor],
    name: &str,
    settings: &QuantizeSettings,
) -> (anybit_dtype::QuantizedMatrix, Vec<f32>) {
    let tensor = tensors.iter().find(|tensor| tensor.name == name).unwrap();
    let count: usize = tensor.shape.iter().product();
    let mut original = Vec::with_capacity(count);
    anybit_checkpoint::decode_floats(
        anybit_checkpoint::TensorDtype::from_name(&format!("{:?}", tensor.dtype)).unwrap(),
        &tensor.bytes,
        &mut original,
    )
    .unwrap();
    let matrix = quantize_with_search(
        Weights::F32(&original),
        tensor.shape[0],
        tensor.shape[1],
        settings.options,
        settings.search,
    )
    .unwrap();
    (matrix, original)
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
fn round_trip_of_a_single_file() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let output = directory.path().join("model-u3.safetensors");
    let tensors = model();
    write_file(&input, &tensors);
    let settings = u3_g128();
    let mut events = Vec::new();
    let summary = quantize_checkpoint(&input, &output, &settings, &mut |event| {
        events.push(match event {
            Progress::Planned { tensors, bytes } => format!("planned {tensors} {bytes}"),
            Progress::Read { bytes } => format!("read {bytes}"),
            Progress::Finished(tensor) => format!("finished {}", tensor.name),
        })
    })
    .unwrap();
    let input_bytes: usize = tensors.iter().map(|tensor| tensor.bytes.len()).sum();
    assert_eq!(events[0], format!("planned 8 {input_bytes}"));
    assert_eq!(
        events
            .iter()
            .filter(|event| event.starts_with("finished"))
            .count(),
        8
    );
    let read: u64 = events
        .iter()
        .filter_map(|event| event.strip_prefix("read "))
        .map(|bytes| bytes.parse::<u64>().unwrap())
        .sum();
    assert_eq!(read, input_bytes as u64);
    assert_eq!(summary.bytes_in, input_bytes as u64);
    assert_eq!(summary.files, std::slice::from_ref(&output));
    assert_eq!(
        entries(directory.path()),
        ["model-u3.safetensors", "model.safetensors"]
    );

    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    assert_eq!(
        checkpoint.quantized_names().collect::<Vec<_>>(),
        QUANTIZED_BY_DEFAULT
    );
    for name in QUANTIZED_BY_DEFAULT {
        let (in_memory, original) = expected(&tensors, name, &settings);
        let loaded = checkpoint.matrix(name).unwrap();
        assert_eq!(loaded, in_memory, "{name}");
        assert_eq!(loaded.dequantize(), in_memory.dequantize(), "{name}");
        let summary = summary
            .tensors
            .iter()
            .find(|tensor| tensor.name == name)
            .unwrap();
        // The blocks of every thread are summed separately: the whole's report up to rounding.
        let whole = error_report(&original, &in_memory.dequantize()).unwrap();
        let TensorOutcome::Quantized(report) = summary.outcome else {
            panic!("{name} is quantized");
        };
        assert_eq!(report.max_abs, whole.max_abs, "{name}");
        let difference = (report.relative_frobenius - whole.relative_frobenius).abs();
        assert!(difference <= 1e-9 * whole.relative_frobenius, "{name}");
        // Three bits of [N, K] plus an f16 scale and a u8 zero point per group of 128.
        let [rows, cols] = [summary.shape[0], summary.shape[1]];
        assert_eq!(
            summary.bytes_out as usize,
            rows * cols * 3 / 8 + rows * cols / 128 * 3
        );
        assert!(
            report.relative_frobenius > 0.01 && report.relative_frobenius < 0.3,
            "{report:?}"
        );
    }
    let info = checkpoint
        .info("model.layers.0.mlp.up_proj.weight")
        .unwrap();
    assert_eq!(
        (
            info.dtype.as_str(),
            info.group_size,
            info.shape,
            info.scale_dtype.as_str(),
            info.zero_points
        ),
        ("u3", 128, [32, 128], "f16", true)
    );
    assert_eq!(
        (info.source_dtype.as_str(), info.search.as_str()),
        ("BF16", "none")
    );

    // The reference reads the output; the tensors not quantized are there byte for byte.
    let bytes = std::fs::read(&output).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    let mut plain = checkpoint.plain_names();
    plain.sort();
    assert_eq!(
        plain,
        [
            "lm_head.weight",
            "model.embed_tokens.weight",
            "model.layers.0.self_attn.q_proj.bias",
            "model.norm.weight",
            "step"
        ]
    );
    for tensor in &tensors {
        if QUANTIZED_BY_DEFAULT.contains(&tensor.name) {
            assert!(reference.tensor(tensor.name).is_err());
            continue;
        }
        let view = reference.tensor(tensor.name).unwrap();
        assert_eq!(
            (view.dtype(), view.shape(), view.data()),
            (
                tensor.dtype,
                tensor.shape.as_slice(),
                tensor.bytes.as_slice()
            )
        );
    }
    let codes = reference
        .tensor("model.layers.0.self_attn.q_proj.weight.codes")
        .unwrap();
    assert_eq!(
        (codes.dtype(), codes.shape()),
        (Dtype::U8, &[48usize, 96][..])
    );
    let scales = reference
        .tensor("model.layers.0.self_attn.q_proj.weight.scales")
        .unwrap();
    assert_eq!(
        (scales.dtype(), scales.shape()),
        (Dtype::F16, &[48usize, 2][..])
    );
    let zeros = reference
        .tensor("model.layers.0.self_attn.q_proj.weight.zeros")
        .unwrap();
    assert_eq!(
        (zeros.dtype(), zeros.shape()),
        (Dtype::U8, &[48usize, 2][..])
    );
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().as_ref().unwrap();
    assert_eq!(metadata[FORMAT_VERSION_KEY], "1");
    assert_eq!(metadata["format"], "pt", "the input's metadata is kept");
    let described: serde_json::Value =
        serde_json::from_str(&metadata["anybit.model.layers.0.mlp.down_proj.weight"]).unwrap();
    assert_eq!(
        described,
        serde_json::json!({"dtype": "u3", "group_size": 128, "shape": [20, 256], "scale_dtype": "f16",
                           "zero_points": true, "source_dtype": "F32", "search": "none"})
    );
}

#[test]
fn round_trip_of_every_kind_of_weight_type_scale_and_search() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let tensors = model();
    write_file(&input, &tensors);
    let cases = [
        (
            "i4",
            GroupSize::Elements(64),
            DType::Bf16,
            ScaleSearch::None,
        ),
        (
            "f6e3m2",
            GroupSize::Elements(128),
            DType::F32,
            ScaleSearch::Mse,
        ),
        ("u2", GroupSize::Elements(32), DType::F16, ScaleSearch::Mse),
        ("u8", GroupSize::PerChannel, DType::F16, ScaleSearch::None),
        (
            "f4e2m1",
            GroupSize::Elements(16),
            DType::F16,
            ScaleSearch::None,
        ),
    ];
    for (dtype, group, scales, search) in cases {
        let output = directory.path().join(format!("{dtype}.safetensors"));
        let settings = settings(dtype, group, scales, search);
        run(&input, &output, &settings).unwrap();
        let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
        for name in QUANTIZED_BY_DEFAULT {
            let (in_memory, _) = expected(&tensors, name, &settings);
            let loaded = checkpoint.matrix(name).unwrap();
            assert_eq!(loaded.zero_points.is_some(), dtype.starts_with('u'));
            assert_eq!(loaded, in_memory, "{dtype} {name}");
            assert_eq!(loaded.dequantize(), in_memory.dequantize());
        }
        let search_name = if search == ScaleSearch::Mse {
            "mse"
        } else {
            "none"
        };
        assert_eq!(
            checkpoint.info(QUANTIZED_BY_DEFAULT[0]).unwrap().search,
            search_name
        );
    }
}

#[test]
fn a_group_that_does_not_divide_k_leaves_a_short_last_group() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    // K = 576 in groups of 128: four groups and one of 64 (SmolLM2-135M's Q/K/V/gate/up);
    // K = 100 at 3 bits: rows of 300 bits, not whole bytes; K = 256: whole groups.
    let tensors = vec![
        float("q.weight", Dtype::F16, &[40, 576], 21),
        float("odd.weight", Dtype::F32, &[9, 100], 22),
        float("down.weight", Dtype::BF16, &[12, 256], 23),
    ];
    write_file(&input, &tensors);
    for (dtype, search) in [
        ("u3", ScaleSearch::None),
        ("i4", ScaleSearch::Mse),
        ("f6e3m2", ScaleSearch::Mse),
    ] {
        let settings = settings(dtype, GroupSize::Elements(128), DType::F16, search);
        let output = directory.path().join(format!("{dtype}.safetensors"));
        let summary = run(&input, &output, &settings).unwrap();
        let bytes = std::fs::read(&output).unwrap();
        let reference = SafeTensors::deserialize(&bytes).unwrap();
        for (name, rows, groups) in [
            ("q.weight", 40, 5),
            ("odd.weight", 9, 1),
            ("down.weight", 12, 2),
        ] {
            let scales = reference.tensor(&format!("{name}.scales")).unwrap();
            assert_eq!(scales.shape(), [rows, groups], "{dtype} {name}");
            assert_eq!(
                reference.tensor(&format!("{name}.zeros")).is_ok(),
                dtype.starts_with('u')
            );
            if dtype.starts_with('u') {
                let zeros = reference.tensor(&format!("{name}.zeros")).unwrap();
                assert_eq!(zeros.shape(), [rows, groups]);
            }
        }
        let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
        for name in ["q.weight", "odd.weight", "down.weight"] {
            let (in_memory, original) = expected(&tensors, name, &settings);
            let loaded = checkpoint.matrix(name).unwrap();
            assert_eq!(loaded.group_size, 128);
            assert_eq!(loaded, in_memory, "{dtype} {name}");
            let report = summary
                .tensors
                .iter()
                .find(|tensor| tensor.name == name)
                .map(|tensor| tensor.outcome.clone())
                .unwrap();
            let whole = error_report(&original, &in_memory.dequantize()).unwrap();
            let TensorOutcome::Quantized(report) = report else {
                panic!("{name} is quantized");
            };
            assert_eq!(report.max_abs, whole.max_abs, "{name}");
        }
        let info = checkpoint.info("q.weight").unwrap();
        assert_eq!((info.group_size, info.shape), (128, [40, 576]));
    }
}

#[test]
fn weights_larger_than_a_block_and_rows_that_are_not_whole_bytes() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    // 1030 × 1024 is more than one block of a million elements; 3 × 5 u3 codes per channel
    // are 15 bits a row, so the codes are stored 1-D.
    let tensors = vec![
        float("big.weight", Dtype::F16, &[1030, 1024], 11),
        float("odd.weight", Dtype::F32, &[3, 5], 12),
    ];
    write_file(&input, &tensors);
    let per_channel = settings("u3", GroupSize::PerChannel, DType::F32, ScaleSearch::None);
    let output = directory.path().join("out.safetensors");
    let summary = run(&input, &output, &per_channel).unwrap();
    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    for name in ["big.weight", "odd.weight"] {
        let (in_memory, original) = expected(&tensors, name, &per_channel);
        assert_eq!(checkpoint.matrix(name).unwrap(), in_memory, "{name}");
        let TensorOutcome::Quantized(report) = &summary
            .tensors
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .outcome
        else {
            panic!("{name} is quantized");
        };
        // Blocks are summed separately: equal to the whole up to rounding (sums of a million
        // squares in f64 differ by up to about a million ulps).
        let whole = error_report(&original, &in_memory.dequantize()).unwrap();
        assert_eq!(report.max_abs, whole.max_abs);
        assert!(
            (report.relative_frobenius - whole.relative_frobenius).abs()
                <= 1e-9 * whole.relative_frobenius
        );
    }
    let odd = checkpoint.checkpoint().find("odd.weight.codes").unwrap().1;
    assert_eq!(odd.shape, [6]);
}

#[test]
fn include_and_exclude_choose_the_weights() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let tensors = model();
    write_file(&input, &tensors);
    let output = directory.path().join("out.safetensors");
    let mut chosen = u3_g128();
    chosen.selection = Selection::new(
        &["*.weight".to_string()],
        &["*norm*".to_string(), "*.q_proj.*".to_string()],
    )
    .unwrap();
    run(&input, &output, &chosen).unwrap();
    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    assert_eq!(
        checkpoint.quantized_names().collect::<Vec<_>>(),
        [
            "lm_head.weight",
            "model.embed_tokens.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.0.mlp.up_proj.weight"
        ]
    );
    // Excluding from the default.
    let mut fewer = u3_g128();
    fewer.selection = Selection::new(&[], &["model.layers.0.mlp.*".to_string()]).unwrap();
    run(&input, &output, &fewer).unwrap();
    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    assert_eq!(
        checkpoint.quantized_names().collect::<Vec<_>>(),
        ["model.layers.0.self_attn.q_proj.weight"]
    );
}

/// Shards of one model: the second larger than the first.
fn write_sharded(directory: &Path) -> (PathBuf, Vec<Tensor>) {
    let tensors = model();
    let (first, second): (Vec<Tensor>, Vec<Tensor>) = tensors
        .into_iter()
        .partition(|tensor| tensor.name.contains("embed") || tensor.name.contains("q_proj"));
    write_file(&directory.join("model-00001-of-00002.safetensors"), &first);
    write_file(&directory.join("model-00002-of-00002.safetensors"), &second);
    let mut weight_map = serde_json::Map::new();
    for (tensors, shard) in [
        (&first, "model-00001-of-00002.safetensors"),
        (&second, "model-00002-of-00002.safetensors"),
    ] {
        for tensor in tensors.iter() {
            weight_map.insert(tensor.name.to_string(), shard.into());
        }
    }
    let total: usize = first
        .iter()
        .chain(&second)
        .map(|tensor| tensor.bytes.len())
        .sum();
    let index = serde_json::json!({"metadata": {"total_size": total, "note": "kept"}, "weight_map": weight_map});
    let path = directory.join("model.safetensors.index.json");
    std::fs::write(&path, index.to_string()).unwrap();
    (path, first.into_iter().chain(second).collect())
}

#[test]
fn sharded_checkpoints_keep_their_sharding() {
    let directory = tempfile::tempdir().unwrap();
    let input_directory = directory.path().join("in");
    std::fs::create_dir(&input_directory).unwrap();
    let (index, tensors) = write_sharded(&input_directory);
    let output = directory.path().join("out");
    let settings = u3_g128();
    let summary = run(&index, &output, &settings).unwrap();
    assert_eq!(
        entries(&output),
        [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors.index.json"
        ]
    );
    assert_eq!(summary.files.len(), 3);
    assert_eq!(
        entries(directory.path()),
        ["in", "out"],
        "no temporary left"
    );
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(output.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["metadata"]["note"], "kept");
    assert_eq!(written["metadata"]["total_size"], summary.bytes_out);
    assert_eq!(written["metadata"][FORMAT_VERSION_KEY], "1");
    let map = &written["weight_map"];
    assert_eq!(
        map["model.layers.0.self_attn.q_proj.weight.codes"],
        "model-00001-of-00002.safetensors"
    );
    assert_eq!(
        map["model.layers.0.mlp.up_proj.weight.zeros"],
        "model-00002-of-00002.safetensors"
    );
    assert_eq!(map["model.norm.weight"], "model-00002-of-00002.safetensors");
    assert!(map.get("model.layers.0.mlp.up_proj.weight").is_none());
    assert_eq!(map.as_object().unwrap().len(), 5 + 3 * 3);
    // Read back through the index and through the directory.
    for path in [output.join("model.safetensors.index.json"), output.clone()] {
        let checkpoint = QuantizedCheckpoint::open(&path).unwrap();
        assert_eq!(
            checkpoint.quantized_names().collect::<Vec<_>>(),
            QUANTIZED_BY_DEFAULT
        );
        for name in QUANTIZED_BY_DEFAULT {
            assert_eq!(
                checkpoint.matrix(name).unwrap(),
                expected(&tensors, name, &settings).0
            );
        }
    }
    // An existing empty directory is filled too.
    let empty = directory.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    run(&index, &empty, &settings).unwrap();
    assert_eq!(entries(&empty).len(), 3);
}

/// Runs a request that must be refused: the message contains `expected`, the input files are
/// unchanged, nothing appeared in `directory` but what was there.
fn refused(input: &Path, output: &Path, settings: &QuantizeSettings, expected: &str) {
    let directory = output.parent().unwrap();
    let inputs: Vec<PathBuf> = std::fs::read_dir(input.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    let before: Vec<Vec<u8>> = inputs.iter().map(|path| sha256(path)).collect();
    let listing = entries(directory);
    let message = run(input, output, settings).unwrap_err();
    assert!(
        message.contains(expected),
        "expected `{expected}` in `{message}`"
    );
    let after: Vec<Vec<u8>> = inputs.iter().map(|path| sha256(path)).collect();
    assert_eq!(before, after, "the input is unchanged");
    assert_eq!(entries(directory), listing, "no output, no temporary file");
}

#[test]
fn tensors_that_cannot_be_quantized_are_refused_by_name() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let mut tensors = model();
    tensors.push(raw(
        "fp8.weight",
        Dtype::F8_E4M3,
        &[4, 128],
        vec![0x38; 512],
    ));
    write_file(&input, &tensors);
    let output = directory.path().join("out.safetensors");
    let including = |pattern: &str| {
        let mut settings = u3_g128();
        settings.selection = Selection::new(&[pattern.to_string()], &[]).unwrap();
        settings
    };
    refused(&input, &output, &including("model.norm.weight"),
        "tensor `model.norm.weight`: its shape is [128]; only 2-D weights [N, K] can be quantized; leave it out with --exclude or narrow --include");
    refused(
        &input,
        &output,
        &including("step"),
        "tensor `step`: it is I64; only F16, BF16 and F32 tensors can be quantized",
    );
    refused(
        &input,
        &output,
        &including("fp8.*"),
        "tensor `fp8.weight`: it is F8_E4M3; only F16, BF16 and F32",
    );
    refused(
        &input,
        &output,
        &including("nothing.*"),
        "the pattern `nothing.*` matches no tensor of the checkpoint",
    );
    let signed_one_bit = settings(
        "i1",
        GroupSize::Elements(128),
        DType::F16,
        ScaleSearch::None,
    );
    refused(&input, &output, &signed_one_bit, "cannot quantize to i1");
    let bad_group = settings(
        "u4",
        GroupSize::Elements(100),
        DType::F16,
        ScaleSearch::None,
    );
    refused(
        &input,
        &output,
        &bad_group,
        "group size 100 is not supported",
    );
    // By default the fp8 and i64 tensors are copied unchanged.
    run(&input, &output, &u3_g128()).unwrap();
    let bytes = std::fs::read(&output).unwrap();
    let reference = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        reference.tensor("fp8.weight").unwrap().dtype(),
        Dtype::F8_E4M3
    );
    assert_eq!(
        reference.tensor("fp8.weight").unwrap().data(),
        &[0x38; 512][..]
    );
}

#[test]
fn a_weight_that_fails_while_writing_leaves_no_output() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let mut tensors = model();
    // A NaN in a weight read after the first tensor is written; then a group whose scale f16
    // cannot hold.
    let mut down = values(20 * 256, 5);
    down[3 * 256 + 5] = f32::NAN;
    tensors[4].bytes = encode(Dtype::F32, &down);
    write_file(&input, &tensors);
    let output = directory.path().join("out.safetensors");
    refused(
        &input,
        &output,
        &u3_g128(),
        "tensor `model.layers.0.mlp.down_proj.weight`: weight at row 3, column 5 is NaN",
    );
    // An existing output is left as it was.
    std::fs::write(&output, b"previous").unwrap();
    refused(&input, &output, &u3_g128(), "is NaN");
    assert_eq!(std::fs::read(&output).unwrap(), b"previous");
    let mut huge = values(20 * 256, 5);
    huge[7 * 256 + 200] = 1e9;
    tensors[4].bytes = encode(Dtype::F32, &huge);
    write_file(&input, &tensors);
    refused(&input, &output, &settings("u1", GroupSize::Elements(128), DType::F16, ScaleSearch::None),
        "tensor `model.layers.0.mlp.down_proj.weight`: the scale of row 7, group 1 is 1.0000000010584283e9, beyond the largest f16 (6.5504e4); store scales as f32");
}

#[test]
fn damaged_inputs_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    write_file(&input, &model());
    let output = directory.path().join("out.safetensors");
    let bytes = std::fs::read(&input).unwrap();
    std::fs::write(&input, &bytes[..bytes.len() - 100]).unwrap();
    refused(
        &input,
        &output,
        &u3_g128(),
        "tensor `model.layers.0.self_attn.q_proj.weight`: its data ends at byte 59728 of the file, but the file has only 59628 bytes",
    );
    std::fs::write(&input, &bytes[..5]).unwrap();
    refused(
        &input,
        &output,
        &u3_g128(),
        "not a valid safetensors file: the file has 5 bytes",
    );
    std::fs::write(
        &input,
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":\"b\"}       ",
    )
    .unwrap();
    refused(
        &input,
        &output,
        &u3_g128(),
        "tensor `a`: its header entry is not an object",
    );
    let missing = directory.path().join("missing.safetensors");
    let message = run(&missing, &output, &u3_g128()).unwrap_err();
    assert!(
        message.contains("missing.safetensors: No such file"),
        "{message}"
    );
    assert!(!output.exists());
}

#[test]
fn damaged_indexes_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let (index, _) = write_sharded(directory.path());
    let output = directory.path().join("out");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(
        &index,
        text.replace(
            "model-00002-of-00002.safetensors",
            "model-00003-of-00002.safetensors",
        ),
    )
    .unwrap();
    let message = run(&index, &output, &u3_g128()).unwrap_err();
    assert!(
        message.contains("model-00003-of-00002.safetensors: No such file"),
        "{message}"
    );
    let moved = text.replacen(
        "\"model.norm.weight\":\"model-00002-of-00002.safetensors\"",
        "\"model.norm.weight\":\"model-00001-of-00002.safetensors\"",
        1,
    );
    assert_ne!(moved, text);
    std::fs::write(&index, moved).unwrap();
    refused(&index, &output, &u3_g128(),
        "the index puts tensor `model.norm.weight` in shard `model-00001-of-00002.safetensors`, which does not hold it");
    std::fs::write(&index, "{\"weight_map\": 3}").unwrap();
    refused(
        &index,
        &output,
        &u3_g128(),
        "the index has no `weight_map` object",
    );
}

#[test]
fn outputs_that_would_touch_the_input_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    write_file(&input, &model());
    let settings = u3_g128();
    refused(&input, &input, &settings, "refusing to write");
    refused(
        &input,
        &directory.path().join("./model.safetensors"),
        &settings,
        "it is the input file",
    );
    #[cfg(unix)]
    {
        let link = directory.path().join("link.safetensors");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        refused(&input, &link, &settings, "it is the input file");
        std::fs::remove_file(&link).unwrap();
        let hard = directory.path().join("hard.safetensors");
        std::fs::hard_link(&input, &hard).unwrap();
        refused(&input, &hard, &settings, "it is the input file");
        std::fs::remove_file(&hard).unwrap();
    }
    let subdirectory = directory.path().join("sub");
    std::fs::create_dir(&subdirectory).unwrap();
    refused(
        &input,
        &subdirectory,
        &settings,
        "it is a directory; give the path of the output file",
    );
    let message = run(
        &input,
        &directory.path().join("nowhere/out.safetensors"),
        &settings,
    )
    .unwrap_err();
    assert!(message.contains("does not exist"), "{message}");

    // The checkpoint's directory sits in a private one: `refused` lists the output's parent,
    // which must not be a directory other processes write to.
    let private = tempfile::tempdir().unwrap();
    let sharded = private.path().join("checkpoint");
    std::fs::create_dir(&sharded).unwrap();
    let (index, _) = write_sharded(&sharded);
    refused(
        &index,
        &sharded,
        &settings,
        "it is the directory of the input checkpoint",
    );
    refused(
        &index,
        &sharded.join("model-00001-of-00002.safetensors"),
        &settings,
        "it is the input file",
    );
    let full = sharded.join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("x"), b"x").unwrap();
    refused(
        &index,
        &full.join("x"),
        &settings,
        "it is a file; a sharded checkpoint is written to a new or empty directory",
    );
    refused(&index, &full, &settings, "the directory is not empty");
}

#[test]
fn quantized_checkpoints_are_not_quantized_again_and_names_do_not_collide() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    write_file(&input, &model());
    let once = directory.path().join("once.safetensors");
    run(&input, &once, &u3_g128()).unwrap();
    refused(
        &once,
        &directory.path().join("twice.safetensors"),
        &u3_g128(),
        "already an anybit quantized checkpoint",
    );
    let colliding = directory.path().join("colliding");
    std::fs::create_dir(&colliding).unwrap();
    let input = colliding.join("model.safetensors");
    write_file(
        &input,
        &[
            float("w", Dtype::F16, &[4, 128], 1),
            float("w.scales", Dtype::F16, &[4], 2),
        ],
    );
    refused(&input, &colliding.join("out.safetensors"), &u3_g128(),
        "tensor `w`: its quantized form would be written as `w.scales`, but the checkpoint already has a tensor of that name");
    let message = Selection::new(&["[".to_string()], &[])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("invalid tensor name pattern `[`"),
        "{message}"
    );
}

#[test]
fn the_reader_refuses_files_that_are_not_quantized_checkpoints() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    write_file(&input, &model());
    let message = QuantizedCheckpoint::open(&input).unwrap_err().to_string();
    assert!(
        message.contains("not an anybit quantized checkpoint (no `anybit.format_version`"),
        "{message}"
    );
    // A description that does not match the stored parts.
    let output = directory.path().join("out.safetensors");
    run(&input, &output, &u3_g128()).unwrap();
    let bytes = std::fs::read(&output).unwrap();
    let lied = replace_in_header(&bytes, "\\\"shape\\\":[32,128]", "\\\"shape\\\":[16,256]");
    std::fs::write(&output, lied).unwrap();
    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    let message = checkpoint
        .matrix("model.layers.0.mlp.up_proj.weight")
        .unwrap_err()
        .to_string();
    assert!(
        message.contains(
            "`model.layers.0.mlp.up_proj.weight.codes` is U8 [32, 48]; expected U8 [16, 96]"
        ),
        "{message}"
    );
    let versioned = replace_in_header(
        &bytes,
        "\"anybit.format_version\":\"1\"",
        "\"anybit.format_version\":\"9\"",
    );
    std::fs::write(&output, versioned).unwrap();
    let message = QuantizedCheckpoint::open(&output).unwrap_err().to_string();
    assert!(
        message.contains("anybit format version 9; this anybit reads version 1"),
        "{message}"
    );
}

/// `bytes` with the first `from` in the header replaced by `to` (of the same length).
fn replace_in_header(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..header_end]).unwrap();
    assert!(header.contains(from), "{from} in {header}");
    let mut changed = bytes.to_vec();
    changed[8..header_end].copy_from_slice(header.replacen(from, to, 1).as_bytes());
    changed
}
