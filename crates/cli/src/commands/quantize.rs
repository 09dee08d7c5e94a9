//! `anybit quantize IN -o OUT --dtype u3 --group 128`: quantizes the weights of a safetensors
//! checkpoint into the anybit format (docs/quantize.md), through `anybit_checkpoint`. Prints one
//! line of error statistics per quantized weight and the sizes before and after; shows a
//! progress bar over the bytes read while standard error is a terminal.

use std::io::IsTerminal;
use std::path::PathBuf;

use anybit_checkpoint::{
    quantize_checkpoint, CheckpointSummary, Progress, QuantizeSettings, Selection, TensorOutcome,
};
use anybit_dtype::{DType, GroupSize, QuantizeOptions, ScaleSearch};
use anyhow::{anyhow, bail, Result};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// How each group's scale is chosen (`--search`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Search {
    /// Round to nearest with the scale that covers the group's range.
    None,
    /// Per group, the range shrunk by 1.0, 0.95, ..., 0.5 with the least squared error.
    Mse,
}

/// The options of `anybit quantize`.
pub struct QuantizeRequest {
    pub input: PathBuf,
    pub output: PathBuf,
    pub dtype: String,
    pub group: String,
    pub scales: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub search: Search,
}

/// Parses `--group`: a size or `per-channel`.
fn parse_group(text: &str) -> Result<GroupSize> {
    if text == "per-channel" {
        return Ok(GroupSize::PerChannel);
    }
    match text.parse::<usize>() {
        Ok(size) if GroupSize::VALID.contains(&size) => Ok(GroupSize::Elements(size)),
        _ => bail!("group `{text}`: use 16, 32, 64, 128, 256 or per-channel"),
    }
}

pub fn run(request: QuantizeRequest) -> Result<()> {
    let dtype: DType = request.dtype.parse().map_err(|error| anyhow!("{error}"))?;
    let scale_dtype: DType = request.scales.parse().map_err(|error| anyhow!("{error}"))?;
    let settings = QuantizeSettings {
        options: QuantizeOptions {
            dtype,
            group_size: parse_group(&request.group)?,
            scale_dtype,
        },
        search: match request.search {
            Search::None => ScaleSearch::None,
            Search::Mse => ScaleSearch::Mse,
        },
        selection: Selection::new(&request.include, &request.exclude)?,
    };
    let mut reporter = Reporter::new()?;
    let summary = quantize_checkpoint(&request.input, &request.output, &settings, &mut |event| {
        reporter.report(event)
    });
    reporter.finish();
    print_summary(&summary?, &settings);
    Ok(())
}

/// Shows progress on standard error while it is a terminal (nothing otherwise), and prints one
/// line of error statistics per quantized weight on standard output.
pub(crate) struct Reporter {
    bar: ProgressBar,
    tensors: usize,
    finished: usize,
}

impl Reporter {
    pub(crate) fn new() -> Result<Self> {
        let bar = if std::io::stderr().is_terminal() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {msg}",
            )
            .map_err(|error| anyhow!("progress bar: {error}"))?,
        );
        Ok(Reporter {
            bar,
            tensors: 0,
            finished: 0,
        })
    }

    pub(crate) fn report(&mut self, event: Progress<'_>) {
        match event {
            Progress::Planned { tensors, bytes } => {
                self.tensors = tensors;
                self.bar.set_length(bytes);
                self.bar.set_message(format!("tensor 0/{tensors}"));
            }
            Progress::Read { bytes } => self.bar.inc(bytes),
            Progress::Finished(tensor) => {
                self.finished += 1;
                self.bar
                    .set_message(format!("tensor {}/{}", self.finished, self.tensors));
                if let TensorOutcome::Quantized(report) = &tensor.outcome {
                    let line = format!(
                        "{}  {:?} {}  max abs {:.3e}  rel frobenius {:.3e}",
                        tensor.name,
                        tensor.shape,
                        tensor.dtype,
                        report.max_abs,
                        report.relative_frobenius
                    );
                    self.bar.suspend(|| println!("{line}"));
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Prints the bytes of tensor data before and after, and the files written.
pub(crate) fn print_sizes(summary: &CheckpointSummary) {
    let ratio = |a: u64, b: u64| if b > 0 { a as f64 / b as f64 } else { 1.0 };
    let change = if summary.bytes_out <= summary.bytes_in {
        format!("{:.2}x smaller", ratio(summary.bytes_in, summary.bytes_out))
    } else {
        format!("{:.2}x larger", ratio(summary.bytes_out, summary.bytes_in))
    };
    println!(
        "tensor data: {} -> {} ({change})",
        HumanBytes(summary.bytes_in),
        HumanBytes(summary.bytes_out)
    );
    for file in &summary.files {
        println!("wrote {}", file.display());
    }
}

fn print_summary(summary: &CheckpointSummary, settings: &QuantizeSettings) {
    let quantized = summary
        .tensors
        .iter()
        .filter(|tensor| matches!(tensor.outcome, TensorOutcome::Quantized(_)))
        .count();
    let copied = summary.tensors.len() - quantized;
    let options = settings.options;
    println!(
        "quantized {quantized} tensors to {} (group {}, {} scales, search {}); copied {copied} unchanged",
        options.dtype,
        options.group_size,
        options.scale_dtype,
        anybit_checkpoint::QuantizedTensorInfo::search_name(settings.search)
    );
    print_sizes(summary);
}
