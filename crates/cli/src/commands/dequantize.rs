//! `anybit dequantize IN -o OUT [--dtype f32|f16|bf16]`: turns an anybit quantized checkpoint
//! back into a plain safetensors checkpoint (every quantized weight dequantized under its own
//! name and shape, every other tensor copied), through `anybit_checkpoint`.

use std::path::PathBuf;

use anybit_checkpoint::{dequantize_checkpoint, DequantizeSettings, TensorDtype, TensorOutcome};
use anyhow::Result;

use super::quantize::{print_sizes, Reporter};

/// The type of the dequantized weights (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputDtype {
    F32,
    F16,
    Bf16,
}

pub fn run(input: PathBuf, output: PathBuf, dtype: Option<OutputDtype>) -> Result<()> {
    let settings = DequantizeSettings {
        dtype: dtype.map(|dtype| match dtype {
            OutputDtype::F32 => TensorDtype::F32,
            OutputDtype::F16 => TensorDtype::F16,
            OutputDtype::Bf16 => TensorDtype::Bf16,
        }),
    };
    let mut reporter = Reporter::new()?;
    let summary = dequantize_checkpoint(&input, &output, settings, &mut |event| {
        reporter.report(event)
    });
    reporter.finish();
    let summary = summary?;
    let dequantized = summary
        .tensors
        .iter()
        .filter(|tensor| tensor.outcome == TensorOutcome::Dequantized)
        .count();
    let copied = summary.tensors.len() - dequantized;
    let into = match settings.dtype {
        Some(dtype) => format!("to {dtype}"),
        None => "to their original types".to_string(),
    };
    println!("dequantized {dequantized} weights {into}; copied {copied} unchanged");
    print_sizes(&summary);
    Ok(())
}
