//! `anybit quantize` as a user runs it: a small sharded checkpoint made here (f16, bf16 and
//! f32 weights, a norm, an embedding, a head; the second shard larger than the first), the
//! printed statistics and sizes, the output read back, and the refused requests, each with the
//! input's bytes hashed before and after and no output left behind.

mod common;

use std::path::{Path, PathBuf};

use anybit_checkpoint::QuantizedCheckpoint;
use anybit_dtype::{quantize, DType, GroupSize, QuantizeOptions, Weights};
use common::{anybit, hashes, names};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Deterministic values in [-1, 1).
fn values(count: usize, seed: u32) -> Vec<f32> {
    (0..count as u32)
        .map(|index| {
            let mixed = (index.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(40_503)) % 2001;
            mixed as f32 / 1000.0 - 1.0
        })
        .collect()
}

struct Tensor {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl Tensor {
    fn new(name: &'static str, dtype: Dtype, shape: &[usize], seed: u32) -> Self {
        Tensor {
            name,
            dtype,
            shape: shape.to_vec(),
            values: values(shape.iter().product(), seed),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self.dtype {
            Dtype::F16 => self
                .values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            Dtype::BF16 => self
                .values
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => self.values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        }
    }

    /// The values as stored (rounded to the tensor's type).
    fn stored(&self) -> Vec<f32> {
        match self.dtype {
            Dtype::F16 => self
                .values
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect(),
            Dtype::BF16 => self
                .values
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect(),
            _ => self.values.clone(),
        }
    }
}

fn write_shard(path: &Path, tensors: &[&Tensor]) {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|tensor| tensor.bytes()).collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(tensor, bytes)| {
            (
                tensor.name,
                TensorView::new(tensor.dtype, tensor.shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

const SHARDS: [&str; 2] = [
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// A two-layer model in two shards; returns the index's path and the tensors.
fn sharded_model(directory: &Path) -> (PathBuf, Vec<Tensor>) {
    let tensors = vec![
        Tensor::new("model.embed_tokens.weight", Dtype::F16, &[16, 128], 1),
        Tensor::new(
            "model.layers.0.input_layernorm.weight",
            Dtype::F32,
            &[128],
            2,
        ),
        Tensor::new(
            "model.layers.0.self_attn.o_proj.weight",
            Dtype::F16,
            &[64, 128],
            3,
        ),
        Tensor::new(
            "model.layers.1.mlp.up_proj.weight",
            Dtype::BF16,
            &[96, 256],
            4,
        ),
        Tensor::new(
            "model.layers.1.mlp.down_proj.weight",
            Dtype::F32,
            &[128, 256],
            5,
        ),
        Tensor::new("model.norm.weight", Dtype::BF16, &[128], 6),
    ];
    let first: Vec<&Tensor> = tensors[..3].iter().collect();
    let second: Vec<&Tensor> = tensors[3..].iter().collect();
    write_shard(&directory.join(SHARDS[0]), &first);
    write_shard(&directory.join(SHARDS[1]), &second);
    let weight_map: serde_json::Map<String, serde_json::Value> = tensors
        .iter()
        .enumerate()
        .map(|(index, tensor)| {
            (
                tensor.name.to_string(),
                SHARDS[usize::from(index >= 3)].into(),
            )
        })
        .collect();
    let index = directory.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    (index, tensors)
}

/// SHA-256 of every file in `directory`, by name.
#[test]
fn quantizes_a_sharded_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (index, tensors) = sharded_model(&input);
    assert!(
        std::fs::metadata(input.join(SHARDS[1])).unwrap().len()
            > std::fs::metadata(input.join(SHARDS[0])).unwrap().len()
    );
    let before = hashes(&input);
    let output = root.path().join("out");
    let result = anybit(&[
        "quantize",
        index.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--dtype",
        "u4",
        "--group",
        "64",
    ]);
    let stdout = String::from_utf8(result.stdout).unwrap();
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert!(result.status.success(), "{stderr}");
    assert_eq!(hashes(&input), before, "the input is unchanged");
    assert!(
        stderr.is_empty(),
        "no progress bar off a terminal: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // One line per quantized weight, in the order written (each shard's tensors by offset).
    assert!(
        lines[0].starts_with("model.layers.0.self_attn.o_proj.weight  [64, 128] F16  max abs "),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("model.layers.1.mlp.down_proj.weight  [128, 256] F32  max abs "),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("model.layers.1.mlp.up_proj.weight  [96, 256] BF16  max abs "),
        "{stdout}"
    );
    assert_eq!(
        lines[3],
        "quantized 3 tensors to u4 (group 64, f16 scales, search none); copied 3 unchanged"
    );
    // 16·128·2 + 128·4 + 64·128·2 + 96·256·2 + 128·256·4 + 128·2 bytes in; the three weights
    // become half a byte per element plus 3 bytes per group of 64.
    let bytes_in = 4096 + 512 + 16384 + 49152 + 131072 + 256;
    let weights = 64 * 128 + 96 * 256 + 128 * 256;
    let bytes_out = 4096 + 512 + 256 + weights / 2 + weights / 64 * 3;
    assert_eq!(bytes_in, 201_472);
    assert_eq!(bytes_out, 40_704);
    assert_eq!(
        lines[4],
        "tensor data: 196.75 KiB -> 39.75 KiB (4.95x smaller)"
    );
    assert_eq!(
        lines[5],
        format!("wrote {}", output.join(SHARDS[0]).display())
    );
    assert_eq!(
        lines[7],
        format!(
            "wrote {}",
            output.join("model.safetensors.index.json").display()
        )
    );
    assert_eq!(
        names(&output),
        [SHARDS[0], SHARDS[1], "model.safetensors.index.json"]
    );
    assert_eq!(names(root.path()), ["in", "out"]);

    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    let options = QuantizeOptions {
        dtype: DType::Unsigned(4),
        group_size: GroupSize::Elements(64),
        scale_dtype: DType::F16,
    };
    for tensor in &tensors {
        if tensor.shape.len() == 2 && !tensor.name.contains("embed") {
            let stored = tensor.stored();
            let expected = quantize(
                Weights::F32(&stored),
                tensor.shape[0],
                tensor.shape[1],
                options,
            )
            .unwrap();
            assert_eq!(
                checkpoint.matrix(tensor.name).unwrap(),
                expected,
                "{}",
                tensor.name
            );
            // The printed max abs is the report of this quantization.
            let report = anybit_dtype::error_report(&stored, &expected.dequantize()).unwrap();
            let line = lines
                .iter()
                .find(|line| line.starts_with(tensor.name))
                .unwrap();
            assert!(
                line.contains(&format!("max abs {:.3e}", report.max_abs)),
                "{line}"
            );
        } else {
            let (file, entry) = checkpoint.checkpoint().find(tensor.name).unwrap();
            assert_eq!(file.data(entry), tensor.bytes(), "{} copied", tensor.name);
            let shard = if tensor.name.contains("layers.1") || tensor.name == "model.norm.weight" {
                SHARDS[1]
            } else {
                SHARDS[0]
            };
            assert!(file.path().ends_with(shard));
        }
    }
}

#[test]
fn quantizes_a_single_file_with_search_and_selection() {
    let root = tempfile::tempdir().unwrap();
    let (_, tensors) = sharded_model(root.path());
    let input = root.path().join("single.safetensors");
    write_shard(&input, &tensors.iter().collect::<Vec<_>>());
    let output = root.path().join("single-i3.safetensors");
    let result = anybit(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--dtype",
        "i3",
        "--group",
        "per-channel",
        "--scales",
        "bf16",
        "--search",
        "mse",
        "--include",
        "model.layers.*",
        "--include",
        "model.embed_tokens.weight",
        "--exclude",
        "*layernorm*",
        "--exclude",
        "*.o_proj.*",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(stdout.contains("quantized 3 tensors to i3 (group per-channel, bf16 scales, search mse); copied 3 unchanged"), "{stdout}");
    let checkpoint = QuantizedCheckpoint::open(&output).unwrap();
    assert_eq!(
        checkpoint.quantized_names().collect::<Vec<_>>(),
        [
            "model.embed_tokens.weight",
            "model.layers.1.mlp.down_proj.weight",
            "model.layers.1.mlp.up_proj.weight"
        ]
    );
    let info = checkpoint
        .info("model.layers.1.mlp.up_proj.weight")
        .unwrap();
    assert_eq!(
        (
            info.group_size,
            info.scale_dtype.as_str(),
            info.search.as_str(),
            info.zero_points
        ),
        (256, "bf16", "mse", false)
    );
}

#[test]
fn a_group_that_does_not_divide_k_quantizes_and_dequantizes() {
    // K = 576 in groups of 128: each row has four groups of 128 and a short one of 64.
    let root = tempfile::tempdir().unwrap();
    let weight = Tensor::new(
        "model.layers.0.self_attn.q_proj.weight",
        Dtype::F16,
        &[24, 576],
        9,
    );
    let input = root.path().join("model.safetensors");
    write_shard(&input, &[&weight]);
    let quantized = root.path().join("model-u4.safetensors");
    let result = anybit(&[
        "quantize",
        input.to_str().unwrap(),
        "-o",
        quantized.to_str().unwrap(),
        "--dtype",
        "u4",
        "--group",
        "128",
        "--search",
        "mse",
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(
        stdout.contains("quantized 1 tensors to u4 (group 128, f16 scales, search mse)"),
        "{stdout}"
    );
    let bytes = std::fs::read(&quantized).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let scales = file.tensor(&format!("{}.scales", weight.name)).unwrap();
    assert_eq!(scales.shape(), [24, 5]);
    let matrix = QuantizedCheckpoint::open(&quantized)
        .unwrap()
        .matrix(weight.name)
        .unwrap();
    assert_eq!((matrix.group_size, matrix.groups_per_row()), (128, 5));
    let plain = root.path().join("plain.safetensors");
    let result = anybit(&[
        "dequantize",
        quantized.to_str().unwrap(),
        "-o",
        plain.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(result.status.success());
    let bytes = std::fs::read(&plain).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(weight.name).unwrap();
    let expected: Vec<u8> = matrix
        .dequantize()
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    assert_eq!(view.data(), expected);
}

/// Runs a request that must fail: the message names what is wrong, the input directory's files
/// are unchanged and nothing new appears in it or in `root`.
fn refused(root: &Path, input_directory: &Path, arguments: &[&str], expected: &str) {
    let before = hashes(input_directory);
    let listing = (names(root), names(input_directory));
    let result = anybit(arguments);
    assert!(!result.status.success(), "{arguments:?} succeeded");
    let stderr = String::from_utf8(result.stderr).unwrap();
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "expected `{expected}` in `{stderr}`"
    );
    assert_eq!(hashes(input_directory), before, "the input is unchanged");
    assert_eq!(
        (names(root), names(input_directory)),
        listing,
        "no output, no temporary file"
    );
}

#[test]
fn refuses_bad_requests_without_writing() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (index, _) = sharded_model(&input);
    let index = index.to_str().unwrap().to_string();
    let out = root.path().join("out");
    let out = out.to_str().unwrap();
    let input_directory = input.to_str().unwrap();
    let quantize = |extra: &[&str]| {
        let mut arguments = vec!["quantize", index.as_str(), "--dtype", "u3"];
        arguments.extend_from_slice(extra);
        arguments
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<String>>()
    };
    let check = |extra: &[&str], expected: &str| {
        let arguments = quantize(extra);
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        refused(root.path(), &input, &arguments, expected);
    };
    check(
        &["-o", input_directory],
        "it is the directory of the input checkpoint, whose shards it would replace",
    );
    let shard = input.join(SHARDS[1]);
    check(&["-o", shard.to_str().unwrap()], "it is the input file");
    check(&["-o", out, "--include", "model.norm.weight"],
        "model-00002-of-00002.safetensors: tensor `model.norm.weight`: its shape is [128]; only 2-D weights [N, K] can be quantized");
    check(
        &["-o", out, "--group", "100"],
        "group `100`: use 16, 32, 64, 128, 256 or per-channel",
    );
    check(
        &["-o", out, "--scales", "u8"],
        "scales are stored as f16, bf16 or f32, not u8",
    );
    check(
        &["-o", out, "--include", "nothing"],
        "the pattern `nothing` matches no tensor",
    );

    // A truncated shard: the tensor whose data is cut is named.
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    check(
        &["-o", out],
        "model-00002-of-00002.safetensors: tensor `model.norm.weight`: its data ends at byte",
    );
    // A 2-D i64 tensor selected: its dtype is refused; by default it is copied.
    let i64_bytes: Vec<u8> = (0..256i64).flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::I64, vec![2, 128], &i64_bytes).unwrap();
    std::fs::write(
        &shard,
        safetensors::serialize(vec![("model.norm.weight", view)], None).unwrap(),
    )
    .unwrap();
    let mut weight_map = serde_json::Map::new();
    weight_map.insert("model.norm.weight".into(), SHARDS[1].into());
    weight_map.insert("model.embed_tokens.weight".into(), SHARDS[0].into());
    weight_map.insert(
        "model.layers.0.input_layernorm.weight".into(),
        SHARDS[0].into(),
    );
    weight_map.insert(
        "model.layers.0.self_attn.o_proj.weight".into(),
        SHARDS[0].into(),
    );
    std::fs::write(
        &index,
        serde_json::json!({"weight_map": weight_map}).to_string(),
    )
    .unwrap();
    check(
        &["-o", out, "--include", "model.norm.weight"],
        "tensor `model.norm.weight`: it is I64; only F16, BF16 and F32 tensors can be quantized",
    );
    let result = anybit(
        &quantize(&["-o", out])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let checkpoint = QuantizedCheckpoint::open(Path::new(out)).unwrap();
    let (file, entry) = checkpoint.checkpoint().find("model.norm.weight").unwrap();
    assert_eq!(
        (entry.dtype.name(), file.data(entry)),
        ("I64", i64_bytes.as_slice())
    );
}

#[test]
fn refuses_bad_files_and_outputs_without_writing() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (_, tensors) = sharded_model(&input);
    for shard in SHARDS {
        std::fs::remove_file(input.join(shard)).unwrap();
    }
    std::fs::remove_file(input.join("model.safetensors.index.json")).unwrap();
    let model = input.join("model.safetensors");
    write_shard(&model, &tensors.iter().collect::<Vec<_>>());
    let model_path = model.to_str().unwrap();
    let out = root.path().join("out.safetensors");
    let out = out.to_str().unwrap();
    let check = |arguments: &[&str], expected: &str| {
        refused(root.path(), &input, arguments, expected);
    };
    let quantize = ["quantize", model_path, "--dtype", "u3", "--group", "64"];
    let with = |extra: &[&str]| -> Vec<String> {
        quantize
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let run_check = |extra: &[&str], expected: &str| {
        let arguments = with(extra);
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        check(&arguments, expected);
    };

    // The output is the input: by the same path, through another spelling, or as a hard link.
    check(
        &["quantize", model_path, "-o", model_path, "--dtype", "u3"],
        "it is the input file",
    );
    let dotted = input.join(".").join("model.safetensors");
    check(
        &[
            "quantize",
            model_path,
            "-o",
            dotted.to_str().unwrap(),
            "--dtype",
            "u3",
        ],
        "it is the input file",
    );
    let link_root = tempfile::tempdir().unwrap();
    let link = link_root.path().join("link.safetensors");
    std::fs::hard_link(&model, &link).unwrap();
    check(
        &[
            "quantize",
            model_path,
            "-o",
            link.to_str().unwrap(),
            "--dtype",
            "u3",
        ],
        "it is the input file",
    );
    // Outputs that cannot be written.
    let nowhere = root.path().join("missing").join("out.safetensors");
    run_check(&["-o", nowhere.to_str().unwrap()], "does not exist");
    run_check(
        &["-o", input.to_str().unwrap()],
        "it is a directory; give the path of the output file",
    );
    // Options refused before the input is read.
    check(&["quantize", model_path, "-o", out, "--dtype", "u9"], "u9");
    check(
        &["quantize", model_path, "-o", out, "--dtype", "i1"],
        "cannot quantize to i1",
    );
    run_check(
        &["-o", out, "--include", "model.[layers"],
        "invalid tensor name pattern `model.[layers`",
    );

    // A weight that holds a NaN is found while writing: the error names it and its place, and
    // the half-written output is removed.
    let mut poisoned: Vec<Tensor> = tensors
        .iter()
        .map(|tensor| Tensor {
            name: tensor.name,
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
            values: tensor.values.clone(),
        })
        .collect();
    poisoned[4].values[3 * 256 + 7] = f32::NAN;
    write_shard(&model, &poisoned.iter().collect::<Vec<_>>());
    run_check(
        &["-o", out],
        "tensor `model.layers.1.mlp.down_proj.weight`: weight at row 3, column 7 is NaN",
    );

    // A corrupt header, and a header that promises more data than the file has.
    let good = {
        write_shard(&model, &tensors.iter().collect::<Vec<_>>());
        std::fs::read(&model).unwrap()
    };
    let mut corrupt = good.clone();
    corrupt[8] = b'[';
    std::fs::write(&model, &corrupt).unwrap();
    run_check(
        &["-o", out],
        "model.safetensors: not a valid safetensors file: the header is not valid JSON",
    );
    std::fs::write(&model, &good[..4]).unwrap();
    run_check(
        &["-o", out],
        "a safetensors file starts with an 8-byte header length",
    );
    let mut long_header = good.clone();
    long_header[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    std::fs::write(&model, &long_header).unwrap();
    run_check(&["-o", out], "(truncated?)");

    // An f8 weight: copied by default, refused when selected.
    let f8_bytes: Vec<u8> = (0..64 * 64).map(|index| (index % 251) as u8).collect();
    let f8 = TensorView::new(Dtype::F8_E4M3, vec![64, 64], &f8_bytes).unwrap();
    std::fs::write(
        &model,
        safetensors::serialize(vec![("model.layers.0.mlp.gate_proj.weight", f8)], None).unwrap(),
    )
    .unwrap();
    run_check(
        &["-o", out, "--include", "*gate_proj*"],
        "tensor `model.layers.0.mlp.gate_proj.weight`: it is F8_E4M3; only F16, BF16 and F32 tensors can be quantized",
    );
    let copied = anybit(
        &with(&["-o", out])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let checkpoint = QuantizedCheckpoint::open(Path::new(out)).unwrap();
    assert_eq!(checkpoint.quantized_names().count(), 0);
    let (file, entry) = checkpoint
        .checkpoint()
        .find("model.layers.0.mlp.gate_proj.weight")
        .unwrap();
    assert_eq!(
        (entry.dtype.name(), file.data(entry)),
        ("F8_E4M3", f8_bytes.as_slice())
    );
}

#[test]
fn dequantize_gives_back_the_library_dequantization() {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (index, tensors) = sharded_model(&input);
    let quantized = root.path().join("quantized");
    let result = anybit(&[
        "quantize",
        index.to_str().unwrap(),
        "-o",
        quantized.to_str().unwrap(),
        "--dtype",
        "u3",
        "--group",
        "32",
        "--search",
        "mse",
    ]);
    assert!(result.status.success());
    let checkpoint = QuantizedCheckpoint::open(&quantized).unwrap();
    for (dtype, argument) in [(None, None), (Some(Dtype::F32), Some("f32"))] {
        let output = root.path().join(format!("plain-{argument:?}"));
        let mut arguments = vec![
            "dequantize",
            quantized.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ];
        if let Some(argument) = argument {
            arguments.extend(["--dtype", argument]);
        }
        let result = anybit(&arguments);
        let stdout = String::from_utf8(result.stdout).unwrap();
        assert!(
            result.status.success(),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        let into = if dtype.is_some() {
            "to F32"
        } else {
            "to their original types"
        };
        assert!(
            stdout.starts_with(&format!(
                "dequantized 3 weights {into}; copied 3 unchanged\ntensor data: "
            )),
            "{stdout}"
        );
        assert_eq!(
            names(&output),
            [SHARDS[0], SHARDS[1], "model.safetensors.index.json"]
        );
        for tensor in &tensors {
            let shard = if tensor.name.contains("layers.1") || tensor.name == "model.norm.weight" {
                SHARDS[1]
            } else {
                SHARDS[0]
            };
            let bytes = std::fs::read(output.join(shard)).unwrap();
            let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let view = file.tensor(tensor.name).unwrap();
            assert_eq!(view.shape(), tensor.shape);
            match checkpoint.matrix(tensor.name) {
                Ok(matrix) => {
                    let values = matrix.dequantize();
                    let dtype = dtype.unwrap_or(tensor.dtype);
                    assert_eq!(view.dtype(), dtype, "{}", tensor.name);
                    let expected = Tensor {
                        name: tensor.name,
                        dtype,
                        shape: tensor.shape.clone(),
                        values,
                    };
                    assert_eq!(view.data(), expected.bytes(), "{}", tensor.name);
                }
                Err(_) => assert_eq!(view.data(), tensor.bytes(), "{} copied", tensor.name),
            }
        }
    }
    // A plain checkpoint is not an anybit one; the output cannot be the input.
    refused(
        root.path(),
        &input,
        &[
            "dequantize",
            index.to_str().unwrap(),
            "-o",
            root.path().join("again").to_str().unwrap(),
        ],
        "not an anybit quantized checkpoint (no `anybit.format_version` in its metadata)",
    );
    refused(
        root.path(),
        &quantized,
        &[
            "dequantize",
            quantized.to_str().unwrap(),
            "-o",
            quantized.to_str().unwrap(),
        ],
        "it is the directory of the input checkpoint",
    );
}
