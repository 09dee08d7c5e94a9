//! `anybit import --from gptq|awq IN -o OUT`: repacks a GPTQ or AWQ checkpoint into anybit's
//! format without changing a dequantized value, through `anybit_checkpoint::import_checkpoint`
//! (docs/quantize.md, "Import").

use std::path::PathBuf;

use anybit_checkpoint::{import_checkpoint, ImportFormat, ImportSettings, TensorOutcome};
use anyhow::Result;

use super::quantize::{print_sizes, Reporter};

/// The format of the checkpoint to import (`--from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    Gptq,
    Awq,
}

pub fn run(from: From, input: PathBuf, output: PathBuf) -> Result<()> {
    let format = match from {
        From::Gptq => ImportFormat::Gptq,
        From::Awq => ImportFormat::Awq,
    };
    let mut reporter = Reporter::new()?;
    let summary = import_checkpoint(&input, &output, ImportSettings { format }, &mut |event| {
        reporter.report(event)
    });
    reporter.finish();
    let summary = summary?;
    let imported: Vec<_> = summary
        .tensors
        .iter()
        .filter(|tensor| tensor.outcome == TensorOutcome::Imported)
        .collect();
    let copied = summary.tensors.len() - imported.len();
    println!(
        "imported {} {} weights; copied {copied} unchanged",
        imported.len(),
        format.name()
    );
    print_sizes(&summary);
    Ok(())
}
