//! `anybit import` as a user runs it: a 4-bit GPTQ checkpoint with act-order and an AWQ one,
//! packed here from the formats' definitions, imported and dequantized through the binary and
//! compared bit for bit with `W[n, k] = (q[k, n] − z[g, n]) · s[g, n]`; refused requests leave
//! the input's bytes (hashed) and directory unchanged.

mod common;

use std::path::Path;

use common::{anybit, hashes};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

const ROWS: usize = 16;
const COLS: usize = 64;
const GROUP: usize = 32;

/// Codes `q[k][n]`, zero points `z[g][n]`, scales `s[g][n]` and the group of each column
/// (columns dealt to groups out of order: even columns to group 0, odd ones to group 1).
struct Layer {
    codes: Vec<Vec<u32>>,
    zeros: Vec<Vec<u32>>,
    scales: Vec<Vec<half::f16>>,
    g_idx: Vec<usize>,
}

fn layer(act_order: bool) -> Layer {
    Layer {
        codes: (0..COLS)
            .map(|k| (0..ROWS).map(|n| ((k * 7 + n * 3) % 16) as u32).collect())
            .collect(),
        zeros: (0..COLS / GROUP)
            .map(|g| (0..ROWS).map(|n| ((g * 5 + n) % 15 + 1) as u32).collect())
            .collect(),
        scales: (0..COLS / GROUP)
            .map(|g| {
                (0..ROWS)
                    .map(|n| half::f16::from_f32(0.001 * (1 + g + 2 * n) as f32))
                    .collect()
            })
            .collect(),
        g_idx: (0..COLS)
            .map(|k| if act_order { k % 2 } else { k / GROUP })
            .collect(),
    }
}

/// The weight `[N, K]` as f32 bytes, by the definition.
fn weight_bytes(layer: &Layer) -> Vec<u8> {
    (0..ROWS)
        .flat_map(|n| {
            (0..COLS).map(move |k| {
                let g = layer.g_idx[k];
                (layer.codes[k][n] as f32 - layer.zeros[g][n] as f32) * layer.scales[g][n].to_f32()
            })
        })
        .flat_map(f32::to_le_bytes)
        .collect()
}

fn words(values: impl Iterator<Item = u32>) -> Vec<u8> {
    values.flat_map(|word| word.to_le_bytes()).collect()
}

fn scale_bytes(layer: &Layer) -> Vec<u8> {
    layer
        .scales
        .iter()
        .flatten()
        .flat_map(|scale| scale.to_le_bytes())
        .collect()
}

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// GPTQ: qweight [K/8, N] with code k at bits 4(k mod 8) of row k/8; qzeros [G, N/8] with zero
/// points stored minus one; scales [G, N]; g_idx [K].
fn gptq(layer: &Layer) -> Tensors {
    let qweight = (0..COLS / 8).flat_map(|row| {
        (0..ROWS).map(move |n| {
            (0..8).fold(0u32, |word, i| {
                word | (layer.codes[row * 8 + i][n] << (4 * i))
            })
        })
    });
    let qzeros = layer.zeros.iter().flat_map(|zeros| {
        zeros
            .chunks(8)
            .map(|eight| (0..8).fold(0u32, |word, i| word | ((eight[i] - 1) << (4 * i))))
    });
    vec![
        (
            "proj.qweight".into(),
            Dtype::I32,
            vec![COLS / 8, ROWS],
            words(qweight),
        ),
        (
            "proj.qzeros".into(),
            Dtype::I32,
            vec![COLS / GROUP, ROWS / 8],
            words(qzeros),
        ),
        (
            "proj.scales".into(),
            Dtype::F16,
            vec![COLS / GROUP, ROWS],
            scale_bytes(layer),
        ),
        (
            "proj.g_idx".into(),
            Dtype::I32,
            vec![COLS],
            layer
                .g_idx
                .iter()
                .flat_map(|&g| (g as i32).to_le_bytes())
                .collect(),
        ),
    ]
}

/// AWQ: qweight [K, N/8], nibble i of word c holding column 8c + [0, 2, 4, 6, 1, 3, 5, 7][i];
/// qzeros [G, N/8] the same way; scales [G, N].
fn awq(layer: &Layer) -> Tensors {
    const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
    let pack = |row: &Vec<u32>| -> Vec<u32> {
        row.chunks(8)
            .map(|eight| (0..8).fold(0u32, |word, i| word | (eight[ORDER[i]] << (4 * i))))
            .collect()
    };
    vec![
        (
            "proj.qweight".into(),
            Dtype::I32,
            vec![COLS, ROWS / 8],
            words(layer.codes.iter().flat_map(pack)),
        ),
        (
            "proj.qzeros".into(),
            Dtype::I32,
            vec![COLS / GROUP, ROWS / 8],
            words(layer.zeros.iter().flat_map(pack)),
        ),
        (
            "proj.scales".into(),
            Dtype::F16,
            vec![COLS / GROUP, ROWS],
            scale_bytes(layer),
        ),
    ]
}

fn write(path: &Path, mut tensors: Tensors) {
    tensors.push((
        "proj.bias".into(),
        Dtype::F32,
        vec![ROWS],
        words((0..ROWS as u32).map(|n| (n as f32).to_bits())),
    ));
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Imports and dequantizes through the binary; the printed summary and the dequantized bytes.
fn import_and_dequantize(directory: &Path, from: &str) -> (String, Vec<u8>, Vec<u8>) {
    let input = directory.join("model.safetensors");
    let imported = directory.join("imported.safetensors");
    let result = anybit(&[
        "import",
        "--from",
        from,
        input.to_str().unwrap(),
        "-o",
        imported.to_str().unwrap(),
    ]);
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let plain = directory.join("plain.safetensors");
    let result = anybit(&[
        "dequantize",
        imported.to_str().unwrap(),
        "-o",
        plain.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(result.status.success());
    let bytes = std::fs::read(&plain).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let weight = file.tensor("proj.weight").unwrap();
    assert_eq!(weight.shape(), [ROWS, COLS]);
    let bias = file.tensor("proj.bias").unwrap().data().to_vec();
    (
        String::from_utf8(result.stdout).unwrap(),
        weight.data().to_vec(),
        bias,
    )
}

#[test]
fn gptq_with_act_order_and_awq_import_exactly() {
    let directory = tempfile::tempdir().unwrap();
    let act_order = layer(true);
    write(
        &directory.path().join("model.safetensors"),
        gptq(&act_order),
    );
    std::fs::write(
        directory.path().join("quantize_config.json"),
        r#"{"bits": 4, "group_size": 32, "desc_act": true, "sym": false}"#,
    )
    .unwrap();
    let (_, weight, bias) = import_and_dequantize(directory.path(), "gptq");
    assert!(weight == weight_bytes(&act_order), "gptq weight differs");
    assert_eq!(bias, words((0..ROWS as u32).map(|n| (n as f32).to_bits())));

    let directory = tempfile::tempdir().unwrap();
    let in_order = layer(false);
    write(&directory.path().join("model.safetensors"), awq(&in_order));
    std::fs::write(
        directory.path().join("config.json"),
        r#"{"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 32, "version": "gemm", "zero_point": true}}"#,
    )
    .unwrap();
    let input = directory.path().join("model.safetensors");
    let output = directory.path().join("out.safetensors");
    let result = anybit(&[
        "import",
        "--from",
        "awq",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8(result.stdout).unwrap();
    assert!(
        stdout.starts_with("imported 1 awq weights; copied 1 unchanged\ntensor data: "),
        "{stdout}"
    );
    let (_, weight, _) = import_and_dequantize(directory.path(), "awq");
    assert!(weight == weight_bytes(&in_order), "awq weight differs");
}

#[test]
fn refused_imports_leave_everything_as_it_was() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    write(&input, gptq(&layer(true)));
    let input = input.to_str().unwrap();
    let output = directory.path().join("out.safetensors");
    let output = output.to_str().unwrap();
    let check = |arguments: &[&str], expected: &str| {
        let before = hashes(directory.path());
        let result = anybit(arguments);
        assert!(!result.status.success());
        let stderr = String::from_utf8(result.stderr).unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "expected `{expected}` in `{stderr}`"
        );
        assert_eq!(hashes(directory.path()), before);
    };
    check(
        &["import", "--from", "gptq", input, "-o", output],
        "no quantize_config.json, quant_config.json or config.json with a `quantization_config`",
    );
    std::fs::write(
        directory.path().join("quantize_config.json"),
        r#"{"bits": 4, "group_size": 32, "desc_act": true, "sym": false}"#,
    )
    .unwrap();
    check(
        &["import", "--from", "gptq", input, "-o", input],
        "it is the input file",
    );
    check(
        &["import", "--from", "awq", input, "-o", output],
        "tensor `proj.scales`: its shape is [2, 16]; a weight of N = 128, K = 8 in groups of 32 has [1, 128]",
    );
}
