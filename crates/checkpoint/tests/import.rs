//! Importing GPTQ and AWQ checkpoints: synthetic checkpoints packed here from the formats'
//! definitions (`W[n, k] = (q[k, n] − z[g, n]) · s[g, n]`; GPTQ's codes along K in 32-bit words,
//! 3-bit codes straddling words, zero points stored minus one in v1 checkpoints; AWQ's columns
//! interleaved 0, 2, 4, 6, 1, 3, 5, 7), imported, dequantized by anybit, and compared bit for bit
//! with the definition; act-order weights come back in their original column order. Refused
//! inputs leave the input unchanged and no output.

use std::collections::HashMap;
use std::path::Path;

use anybit_checkpoint::{
    dequantize_checkpoint, import_checkpoint, DequantizeSettings, ImportFormat, ImportSettings,
    QuantizedCheckpoint, TensorDtype, TensorFile, TensorOutcome,
};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sha2::{Digest, Sha256};

/// A small deterministic generator (xorshift).
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 32) % bound as u64) as u32
    }
}

/// A quantized linear layer in the terms of the definition.
struct Layer {
    bits: u32,
    rows: usize,
    cols: usize,
    group_size: usize,
    /// `q[k][n]`.
    codes: Vec<Vec<u32>>,
    /// `z[g][n]`.
    zeros: Vec<Vec<u32>>,
    /// `s[g][n]` as f16.
    scales: Vec<Vec<half::f16>>,
    /// The group of each input column.
    g_idx: Vec<i32>,
}

impl Layer {
    /// A layer of random codes, zero points (all `2^(bits-1)` when `symmetric`, else random
    /// with some 0 and some maximal) and scales; with `act_order`, columns are dealt to groups
    /// by a random permutation.
    fn new(
        bits: u32,
        rows: usize,
        cols: usize,
        group_size: usize,
        symmetric: bool,
        act_order: bool,
        seed: u64,
    ) -> Self {
        let mut random = Random(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // The last group is short when the group size does not divide K (GPTQ's
        // g_idx = k // group_size).
        let groups = cols.div_ceil(group_size);
        let levels = 1u32 << bits;
        let codes = (0..cols)
            .map(|_| (0..rows).map(|_| random.below(levels)).collect())
            .collect();
        let zeros = (0..groups)
            .map(|group| {
                (0..rows)
                    .map(|n| match (symmetric, (group + n) % 9) {
                        (true, _) => levels / 2,
                        (false, 0) => 0,
                        (false, 1) => levels - 1,
                        (false, _) => random.below(levels),
                    })
                    .collect()
            })
            .collect();
        let scales = (0..groups)
            .map(|_| {
                (0..rows)
                    .map(|_| half::f16::from_f32((1 + random.below(1000)) as f32 * 1.7e-5))
                    .collect()
            })
            .collect();
        let mut order: Vec<usize> = (0..cols).collect();
        if act_order {
            for index in (1..cols).rev() {
                let other = random.below(index as u32 + 1) as usize;
                order.swap(index, other);
            }
        }
        // The column at position i of `order` is in group i / group_size.
        let mut g_idx = vec![0i32; cols];
        for (position, &column) in order.iter().enumerate() {
            g_idx[column] = (position / group_size) as i32;
        }
        Layer {
            bits,
            rows,
            cols,
            group_size,
            codes,
            zeros,
            scales,
            g_idx,
        }
    }

    /// `W [N, K]` by the definition, in f32 (exact: a small integer times an f16).
    fn weight(&self) -> Vec<f32> {
        let mut weight = vec![0f32; self.rows * self.cols];
        for n in 0..self.rows {
            for k in 0..self.cols {
                let group = self.g_idx[k] as usize;
                let level = self.codes[k][n] as f32 - self.zeros[group][n] as f32;
                weight[n * self.cols + k] = level * self.scales[group][n].to_f32();
            }
        }
        weight
    }

    fn scale_bytes(&self) -> Vec<u8> {
        self.scales
            .iter()
            .flatten()
            .flat_map(|scale| scale.to_le_bytes())
            .collect()
    }
}

/// Packs a sequence of `bits`-bit values into 32-bit words the way GPTQ packs them along K
/// (and its zero points along N): whole codes from the lowest bits up for 2, 4 and 8 bits; for
/// 3 bits, each 32 values into 3 words, values 10 and 21 split across words.
fn gptq_pack(values: &[u32], bits: u32) -> Vec<u32> {
    let mut words = Vec::new();
    if bits == 3 {
        for chunk in values.chunks(32) {
            let mut w = [0u32; 3];
            for (i, &value) in chunk[..10].iter().enumerate() {
                w[0] |= value << (3 * i);
            }
            w[0] |= chunk[10] << 30;
            w[1] |= (chunk[10] >> 2) & 1;
            for (i, &value) in chunk[11..21].iter().enumerate() {
                w[1] |= value << (3 * i + 1);
            }
            w[1] |= chunk[21] << 31;
            w[2] |= (chunk[21] >> 1) & 3;
            for (i, &value) in chunk[22..32].iter().enumerate() {
                w[2] |= value << (3 * i + 2);
            }
            words.extend_from_slice(&w);
        }
    } else {
        let per_word = (32 / bits) as usize;
        for chunk in values.chunks(per_word) {
            let mut word = 0u32;
            for (i, &value) in chunk.iter().enumerate() {
                word |= value << (bits as usize * i);
            }
            words.push(word);
        }
    }
    words
}

fn word_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|word| word.to_le_bytes()).collect()
}

/// The GPTQ tensors of `layer` under `prefix`: qweight, qzeros (stored minus one unless
/// `v2`), scales and, when `with_g_idx`, g_idx.
fn gptq_tensors(
    prefix: &str,
    layer: &Layer,
    v2: bool,
    with_g_idx: bool,
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bits = layer.bits;
    let mask = (1u32 << bits) - 1;
    // qweight [K·b/32, N]: column n is the packed codes of k = 0..K.
    let columns: Vec<Vec<u32>> = (0..layer.rows)
        .map(|n| {
            let column: Vec<u32> = (0..layer.cols).map(|k| layer.codes[k][n]).collect();
            gptq_pack(&column, bits)
        })
        .collect();
    let packed_rows = columns[0].len();
    let qweight: Vec<u32> = (0..packed_rows)
        .flat_map(|row| columns.iter().map(move |column| column[row]))
        .collect();
    let qzeros: Vec<u32> = layer
        .zeros
        .iter()
        .flat_map(|row| {
            let stored: Vec<u32> = row
                .iter()
                .map(|&zero| {
                    if v2 {
                        zero
                    } else {
                        zero.wrapping_sub(1) & mask
                    }
                })
                .collect();
            gptq_pack(&stored, bits)
        })
        .collect();
    let groups = layer.zeros.len();
    let mut tensors = vec![
        (
            format!("{prefix}.qweight"),
            Dtype::I32,
            vec![packed_rows, layer.rows],
            word_bytes(&qweight),
        ),
        (
            format!("{prefix}.qzeros"),
            Dtype::I32,
            vec![groups, qzeros.len() / groups],
            word_bytes(&qzeros),
        ),
        (
            format!("{prefix}.scales"),
            Dtype::F16,
            vec![groups, layer.rows],
            layer.scale_bytes(),
        ),
    ];
    if with_g_idx {
        tensors.push((
            format!("{prefix}.g_idx"),
            Dtype::I32,
            vec![layer.cols],
            layer.g_idx.iter().flat_map(|g| g.to_le_bytes()).collect(),
        ));
    }
    tensors
}

/// AWQ's interleave: nibble i of a word holds column 8c + ORDER[i].
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Packs `[rows][N]` 4-bit values AWQ's way into `[rows][N/8]` words.
fn awq_pack(values: &[Vec<u32>]) -> Vec<u32> {
    values
        .iter()
        .flat_map(|row| {
            row.chunks(8).map(|eight| {
                AWQ_ORDER
                    .iter()
                    .enumerate()
                    .fold(0u32, |word, (i, &column)| word | (eight[column] << (4 * i)))
            })
        })
        .collect()
}

fn awq_tensors(prefix: &str, layer: &Layer) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let groups = layer.zeros.len();
    vec![
        (
            format!("{prefix}.qweight"),
            Dtype::I32,
            vec![layer.cols, layer.rows / 8],
            word_bytes(&awq_pack(&layer.codes)),
        ),
        (
            format!("{prefix}.qzeros"),
            Dtype::I32,
            vec![groups, layer.rows / 8],
            word_bytes(&awq_pack(&layer.zeros)),
        ),
        (
            format!("{prefix}.scales"),
            Dtype::F16,
            vec![groups, layer.rows],
            layer.scale_bytes(),
        ),
    ]
}

fn write_file(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// A plain tensor every checkpoint carries (copied unchanged).
fn norm() -> (String, Dtype, Vec<usize>, Vec<u8>) {
    let bytes = (0..64u16)
        .flat_map(|i| half::f16::from_f32(i as f32 / 8.0).to_le_bytes())
        .collect();
    ("model.norm.weight".to_string(), Dtype::F16, vec![64], bytes)
}

/// Imports `input`, dequantizes the result to f32, and checks every layer against its
/// definition bit for bit, the stored codes against the definition's (in stored order), and
/// the norm copied.
fn check_import(
    directory: &Path,
    input: &Path,
    format: ImportFormat,
    layers: &[(&str, &Layer)],
    expect_permuted: &[bool],
) {
    let imported = directory.join("imported.safetensors");
    let _ = std::fs::remove_file(&imported);
    let summary = import_checkpoint(input, &imported, ImportSettings { format }, &mut |_| {})
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(
        summary
            .tensors
            .iter()
            .filter(|tensor| tensor.outcome == TensorOutcome::Imported)
            .count(),
        layers.len()
    );
    let checkpoint = QuantizedCheckpoint::open(&imported).unwrap();
    for ((prefix, layer), &permuted) in layers.iter().zip(expect_permuted) {
        let name = format!("{prefix}.weight");
        let info = checkpoint.info(&name).unwrap();
        assert_eq!(
            (
                info.dtype.clone(),
                info.group_size,
                info.shape,
                info.permuted
            ),
            (
                format!("u{}", layer.bits),
                layer.group_size,
                [layer.rows, layer.cols],
                permuted
            ),
            "{name}"
        );
        let parts = checkpoint.parts(&name).unwrap();
        let matrix = parts.to_matrix();
        for n in 0..layer.rows {
            for j in 0..layer.cols {
                let k = parts
                    .permutation
                    .as_ref()
                    .map_or(j, |permutation| permutation[j] as usize);
                assert_eq!(
                    matrix.code(n, j),
                    layer.codes[k][n],
                    "{name} code ({n}, {j})"
                );
                // Stored groups are contiguous: stored column j is in group j / group_size.
                assert_eq!(layer.g_idx[k] as usize, j / layer.group_size);
            }
        }
    }
    let dequantized = directory.join("dequantized.safetensors");
    let _ = std::fs::remove_file(&dequantized);
    dequantize_checkpoint(
        &imported,
        &dequantized,
        DequantizeSettings {
            dtype: Some(TensorDtype::F32),
        },
        &mut |_| {},
    )
    .unwrap();
    let file = TensorFile::open(&dequantized).unwrap();
    for (prefix, layer) in layers {
        let entry = file.tensor(&format!("{prefix}.weight")).unwrap();
        assert_eq!(entry.shape, [layer.rows, layer.cols]);
        let expected: Vec<u8> = layer
            .weight()
            .iter()
            .flat_map(|value| value.to_le_bytes())
            .collect();
        assert!(
            file.data(entry) == expected.as_slice(),
            "{prefix}: the dequantized weight differs from the definition's"
        );
    }
    let (name, _, _, bytes) = norm();
    assert_eq!(file.data(file.tensor(&name).unwrap()), bytes);
    assert!(file.tensor("model.layers.0.mlp.up_proj.qweight").is_none());
}

fn gptq_config(directory: &Path, bits: u32, group: i64, desc_act: bool, sym: bool, v2: bool) {
    let mut config = serde_json::json!({
        "bits": bits, "group_size": group, "desc_act": desc_act, "sym": sym,
        "quant_method": "gptq",
    });
    if v2 {
        config["checkpoint_format"] = "gptq_v2".into();
    }
    std::fs::write(directory.join("quantize_config.json"), config.to_string()).unwrap();
}

#[test]
fn gptq_layers_of_every_width_import_exactly() {
    for bits in [2u32, 3, 4, 8] {
        for (case, (symmetric, act_order, v2, group)) in [
            (true, false, false, 32i64),
            (false, true, false, 32),
            (false, false, true, -1),
            (true, true, true, 64),
        ]
        .into_iter()
        .enumerate()
        {
            let directory = tempfile::tempdir().unwrap();
            let (rows, cols) = (64, 128);
            let group_size = if group < 0 { cols } else { group as usize };
            let up = Layer::new(bits, rows, cols, group_size, symmetric, act_order, 1);
            // A second layer whose g_idx is stored though it is in order: no permutation.
            let down = Layer::new(bits, rows, cols, group_size, symmetric, false, 2);
            let mut tensors = gptq_tensors(
                "model.layers.0.mlp.up_proj",
                &up,
                v2,
                act_order || case == 0,
            );
            tensors.extend(gptq_tensors(
                "model.layers.0.mlp.down_proj",
                &down,
                v2,
                true,
            ));
            tensors.push(norm());
            let input = directory.path().join("model.safetensors");
            write_file(&input, &tensors);
            gptq_config(directory.path(), bits, group, act_order, symmetric, v2);
            check_import(
                directory.path(),
                &input,
                ImportFormat::Gptq,
                &[
                    ("model.layers.0.mlp.up_proj", &up),
                    ("model.layers.0.mlp.down_proj", &down),
                ],
                &[act_order, false],
            );
        }
    }
}

#[test]
fn gptq_layers_with_a_short_last_group_import_exactly() {
    // K = 576 in groups of 128 (SmolLM2-135M's Q/K/V/gate/up): four groups of 128 and one of
    // 64, as GPTQ quantizes them; with and without act-order.
    for bits in [2u32, 3, 4, 8] {
        for act_order in [false, true] {
            let directory = tempfile::tempdir().unwrap();
            let layer = Layer::new(bits, 32, 576, 128, false, act_order, 8 + bits as u64);
            assert_eq!(layer.scales.len(), 5);
            let mut tensors = gptq_tensors("model.layers.0.mlp.up_proj", &layer, false, true);
            tensors.push(norm());
            let input = directory.path().join("model.safetensors");
            write_file(&input, &tensors);
            gptq_config(directory.path(), bits, 128, act_order, false, false);
            check_import(
                directory.path(),
                &input,
                ImportFormat::Gptq,
                &[("model.layers.0.mlp.up_proj", &layer)],
                &[act_order],
            );
            let imported =
                QuantizedCheckpoint::open(&directory.path().join("imported.safetensors")).unwrap();
            let parts = imported.parts("model.layers.0.mlp.up_proj.weight").unwrap();
            assert_eq!(parts.scales.len(), 32 * 5);
        }
    }
    // A g_idx whose short last group has the wrong number of columns is refused.
    let directory = tempfile::tempdir().unwrap();
    let layer = Layer::new(4, 32, 576, 128, false, true, 3);
    let mut tensors = gptq_tensors("layer", &layer, false, true);
    let mut g_idx: Vec<i32> = (0..576).map(|k| k / 128).collect();
    g_idx[520] = 3;
    tensors[3].3 = g_idx.iter().flat_map(|g| g.to_le_bytes()).collect();
    let input = directory.path().join("model.safetensors");
    write_file(&input, &tensors);
    gptq_config(directory.path(), 4, 128, true, false, false);
    refused(
        &input,
        &directory.path().join("out.safetensors"),
        ImportFormat::Gptq,
        "tensor `layer.g_idx`: group 3 has 129 columns, not 128; only groups of 128 columns (the last of the 64 left of K = 576) are supported",
    );
}

#[test]
fn symmetric_gptq_without_zero_points_and_config_json() {
    let directory = tempfile::tempdir().unwrap();
    let layer = Layer::new(4, 32, 64, 32, true, false, 3);
    let mut tensors = gptq_tensors("layer", &layer, false, false);
    tensors.retain(|(name, ..)| !name.ends_with(".qzeros"));
    tensors.push(norm());
    let input = directory.path().join("model.safetensors");
    write_file(&input, &tensors);
    std::fs::write(
        directory.path().join("config.json"),
        serde_json::json!({"model_type": "llama", "quantization_config":
            {"quant_method": "gptq", "bits": 4, "group_size": 32, "sym": true}})
        .to_string(),
    )
    .unwrap();
    check_import(
        directory.path(),
        &input,
        ImportFormat::Gptq,
        &[("layer", &layer)],
        &[false],
    );
}

#[test]
fn awq_layers_import_exactly() {
    // K = 256 in groups of 32 and 128, and K = 320 in groups of 128 (the last of 64).
    for (group, cols) in [(32usize, 256), (128, 256), (128, 320)] {
        let directory = tempfile::tempdir().unwrap();
        let q = Layer::new(4, 64, cols, group, false, false, 4);
        let o = Layer::new(4, 128, cols, group, false, false, 5);
        let mut tensors = awq_tensors("model.layers.0.self_attn.q_proj", &q);
        tensors.extend(awq_tensors("model.layers.0.self_attn.o_proj", &o));
        tensors.push(norm());
        let input = directory.path().join("model.safetensors");
        write_file(&input, &tensors);
        std::fs::write(
            directory.path().join("config.json"),
            serde_json::json!({"quantization_config": {"quant_method": "awq", "bits": 4,
                "group_size": group, "zero_point": true, "version": "gemm"}})
            .to_string(),
        )
        .unwrap();
        check_import(
            directory.path(),
            &input,
            ImportFormat::Awq,
            &[
                ("model.layers.0.self_attn.q_proj", &q),
                ("model.layers.0.self_attn.o_proj", &o),
            ],
            &[false, false],
        );
    }
}

#[test]
fn sharded_gptq_with_parts_in_other_shards() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let layer = Layer::new(3, 32, 64, 32, false, true, 6);
    let tensors = gptq_tensors("layer", &layer, false, true);
    // qweight and g_idx in the first shard, qzeros and scales in the second, with the norm.
    let first = vec![tensors[0].clone(), tensors[3].clone()];
    let second = vec![tensors[1].clone(), tensors[2].clone(), norm()];
    write_file(&input.join("a.safetensors"), &first);
    write_file(&input.join("b.safetensors"), &second);
    let mut weight_map = serde_json::Map::new();
    for (name, ..) in &first {
        weight_map.insert(name.clone(), "a.safetensors".into());
    }
    for (name, ..) in &second {
        weight_map.insert(name.clone(), "b.safetensors".into());
    }
    let index = input.join("model.safetensors.index.json");
    std::fs::write(
        &index,
        serde_json::json!({"weight_map": weight_map}).to_string(),
    )
    .unwrap();
    gptq_config(&input, 3, 32, true, false, false);
    let output = directory.path().join("out");
    import_checkpoint(
        &index,
        &output,
        ImportSettings {
            format: ImportFormat::Gptq,
        },
        &mut |_| {},
    )
    .unwrap();
    let a = TensorFile::open(&output.join("a.safetensors")).unwrap();
    let mut names: Vec<&str> = a.tensors().iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "layer.weight.codes",
            "layer.weight.perm",
            "layer.weight.scales",
            "layer.weight.zeros"
        ]
    );
    let b = TensorFile::open(&output.join("b.safetensors")).unwrap();
    assert_eq!(
        b.tensors()
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        ["model.norm.weight"]
    );
    let plain = directory.path().join("plain");
    dequantize_checkpoint(
        &output.join("model.safetensors.index.json"),
        &plain,
        DequantizeSettings {
            dtype: Some(TensorDtype::F32),
        },
        &mut |_| {},
    )
    .unwrap();
    let a = TensorFile::open(&plain.join("a.safetensors")).unwrap();
    let expected: Vec<u8> = layer
        .weight()
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect();
    assert!(a.data(a.tensor("layer.weight").unwrap()) == expected.as_slice());
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

/// An import that must fail: its message, the input and its directory unchanged.
fn refused(input: &Path, output: &Path, format: ImportFormat, expected: &str) {
    let directory = input.parent().unwrap();
    let before = (sha256(input), entries(directory));
    let error = import_checkpoint(input, output, ImportSettings { format }, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(expected),
        "expected `{expected}` in `{error}`"
    );
    assert_eq!((sha256(input), entries(directory)), before);
}

#[test]
fn bad_checkpoints_and_configurations_are_refused() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let output = directory.path().join("out.safetensors");
    let layer = Layer::new(4, 32, 64, 32, false, true, 7);
    let mut tensors = gptq_tensors("layer", &layer, false, true);
    tensors.push(norm());
    write_file(&input, &tensors);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "no quantize_config.json, quant_config.json or config.json",
    );
    let config = directory.path().join("quantize_config.json");
    gptq_config(directory.path(), 5, 32, true, false, false);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "quantize_config.json: 5-bit gptq checkpoints are not supported (only 2-bit, 3-bit, 4-bit, 8-bit)",
    );
    gptq_config(directory.path(), 4, 32, true, false, false);
    refused(
        &input,
        &output,
        ImportFormat::Awq,
        "`quant_method` is `gptq`, not `awq`",
    );
    refused(&input, &input, ImportFormat::Gptq, "it is the input file");
    gptq_config(directory.path(), 4, 16, true, false, false);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "tensor `layer.scales`: its shape is [2, 32]; a weight of N = 32, K = 64 in groups of 16 has [4, 32]",
    );
    std::fs::remove_file(&config).unwrap();

    // Groups of unequal sizes in g_idx.
    gptq_config(directory.path(), 4, 32, true, false, false);
    let mut unequal = tensors.clone();
    let mut g_idx = vec![0i32; 64];
    g_idx[40..].fill(1);
    unequal[3].3 = g_idx.iter().flat_map(|g| g.to_le_bytes()).collect();
    write_file(&input, &unequal);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "tensor `layer.g_idx`: group 0 has 40 columns, not 32; only groups of 32 columns each are supported",
    );
    // Act-order without g_idx.
    let without: Vec<_> = tensors
        .iter()
        .filter(|(name, ..)| !name.ends_with(".g_idx"))
        .cloned()
        .collect();
    write_file(&input, &without);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "the configuration says desc_act (act-order) but `layer.g_idx` is missing",
    );
    // Asymmetric without zero points.
    let no_zeros: Vec<_> = tensors
        .iter()
        .filter(|(name, ..)| !name.ends_with(".qzeros"))
        .cloned()
        .collect();
    write_file(&input, &no_zeros);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "`layer.qzeros` is missing (only symmetric GPTQ can go without it)",
    );
    // A NaN scale.
    let mut nan = tensors.clone();
    nan[2].3[6..8].copy_from_slice(&half::f16::NAN.to_le_bytes());
    write_file(&input, &nan);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "tensor `layer.scales`: the scale of group 0, column 3 is NaN",
    );
    // Not a quantized checkpoint at all.
    write_file(&input, &[norm()]);
    refused(
        &input,
        &output,
        ImportFormat::Gptq,
        "no `*.qweight` tensors: not a gptq checkpoint",
    );
    // AWQ's GEMV layout.
    std::fs::remove_file(directory.path().join("quantize_config.json")).unwrap();
    std::fs::write(
        directory.path().join("config.json"),
        serde_json::json!({"quantization_config": {"quant_method": "awq", "bits": 4,
            "group_size": 32, "version": "gemv"}})
        .to_string(),
    )
    .unwrap();
    refused(
        &input,
        &output,
        ImportFormat::Awq,
        "AWQ `version` `gemv` is not supported",
    );
}
