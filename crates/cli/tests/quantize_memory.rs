//! Peak memory of `anybit quantize` on a checkpoint of about 2 GB (f16), measured with
//! `/usr/bin/time`. Manual (it writes 2 GB to the temporary directory and takes minutes):
//!
//! `cargo test --release -p anybit-cli --test quantize_memory -- --ignored --nocapture`
//!
//! The checkpoint is written with `anybit_checkpoint`'s streaming writer, so making it holds one
//! row block in memory. The result is recorded in docs/quantize.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anybit_checkpoint::{FileLayout, PlannedTensor, TensorDtype, TensorFileWriter};

/// Weights of `[ROWS, COLS]` f16: 128 MiB each.
const ROWS: usize = 4096;
const COLS: usize = 16384;
const WEIGHTS: usize = 15;

/// Writes a checkpoint of `WEIGHTS` weights, an embedding of the same size and a norm; its bytes.
fn write_checkpoint(path: &Path) -> u64 {
    let mut planned: Vec<PlannedTensor> = (0..WEIGHTS)
        .map(|layer| PlannedTensor {
            name: format!("model.layers.{layer}.mlp.up_proj.weight"),
            dtype: TensorDtype::F16,
            shape: vec![ROWS, COLS],
        })
        .collect();
    planned.push(PlannedTensor {
        name: "model.embed_tokens.weight".to_string(),
        dtype: TensorDtype::F16,
        shape: vec![COLS, ROWS],
    });
    planned.push(PlannedTensor {
        name: "model.norm.weight".to_string(),
        dtype: TensorDtype::F16,
        shape: vec![ROWS],
    });
    let layout = FileLayout::new(path, planned, &BTreeMap::new()).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    let mut writer = TensorFileWriter::new(&mut file, path, layout.clone()).unwrap();
    let mut state = 0x2545_f491_u32;
    let mut row = Vec::with_capacity(COLS * 2);
    for entry in layout.tensors() {
        let len = entry.byte_len();
        let mut offset = 0;
        while offset < len {
            row.clear();
            for _ in 0..(COLS * 2).min(len - offset) / 2 {
                // xorshift: values in about [-0.05, 0.05), like a trained weight's.
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let value = (state as f32 / u32::MAX as f32 - 0.5) * 0.1;
                row.extend_from_slice(&half::f16::from_f32(value).to_le_bytes());
            }
            writer.write(&entry.name, offset, &row).unwrap();
            offset += row.len();
        }
    }
    writer.finish().unwrap();
    layout.file_len()
}

#[test]
#[ignore = "writes 2 GB and takes minutes; run by hand to measure peak memory"]
fn peak_memory_on_a_two_gigabyte_checkpoint() {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("model.safetensors");
    let output = directory.path().join("model-u4.safetensors");
    let size = write_checkpoint(&input);
    let largest = (ROWS * COLS * 2) as u64;
    for search in ["none", "mse"] {
        let _ = std::fs::remove_file(&output);
        let result = Command::new("/usr/bin/time")
            .arg("-f")
            .arg("peak-rss-kib %M wall-s %e")
            .arg(env!("CARGO_BIN_EXE_anybit"))
            .args(["quantize", input.to_str().unwrap(), "-o"])
            .arg(&output)
            .args(["--dtype", "u4", "--group", "128", "--search", search])
            .output()
            .expect("/usr/bin/time runs");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "{stderr}");
        let line = stderr
            .lines()
            .find(|line| line.starts_with("peak-rss-kib"))
            .expect("time prints its line");
        let peak_kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let peak = peak_kib * 1024;
        println!(
            "search {search}: input {size} bytes, largest tensor {largest} bytes, {line}; peak beyond the largest tensor: {} MiB",
            peak.saturating_sub(largest) >> 20
        );
        assert!(
            peak < largest + (1 << 30),
            "peak {peak} bytes is more than 1 GiB beyond the largest tensor"
        );
    }
}
