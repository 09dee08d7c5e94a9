//! `anybit bench matmul`: times the quantized products against the copy bandwidth of the same
//! run (see `anybit_kernels::bench` for the method).

use std::path::PathBuf;

use anybit_cuda::Gpu;
use anybit_dtype::DType;
use anybit_kernels::bench::{self, BenchRequest, Tuning};
use anybit_kernels::tuning::TuningCache;
use anybit_kernels::{Activation, DecodeSchedule, Group};
use anyhow::{anyhow, bail, Context, Result};

use super::write_atomically;

/// The options of `anybit bench matmul`.
pub struct MatmulBench {
    pub wtypes: String,
    pub tokens: String,
    pub shapes: Vec<String>,
    pub n: Option<usize>,
    pub k: Option<usize>,
    pub group: String,
    pub activation: String,
    pub zeros: bool,
    pub schedules: Option<String>,
    /// Tune (and store the winners in the tuning cache) instead of taking the library's choice.
    pub tune: Option<Tuning>,
    /// Ignore the tuning cache: the heuristic's schedule (when not tuning).
    pub heuristic: bool,
    pub warmup: usize,
    pub repeats: usize,
    pub json: Option<PathBuf>,
}

fn list<T>(text: &str, what: &str, parse: impl Fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let items: Vec<T> = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(&parse)
        .collect::<Result<_>>()
        .with_context(|| format!("in the list of {what} `{text}`"))?;
    if items.is_empty() {
        bail!("the list of {what} is empty");
    }
    Ok(items)
}

/// Parses a group: a size or `per-channel`.
pub fn parse_group(text: &str) -> Result<Group> {
    if text == "per-channel" || text == "pc" {
        return Ok(Group::PerChannel);
    }
    let size: usize = text
        .parse()
        .map_err(|_| anyhow!("group `{text}`: use 16, 32, 64, 128, 256 or per-channel"))?;
    if !Group::SIZES.contains(&size) {
        bail!("group {size}: use 16, 32, 64, 128, 256 or per-channel");
    }
    Ok(Group::Elements(size))
}

/// Parses an activation type.
pub fn parse_activation(text: &str) -> Result<Activation> {
    text.parse::<DType>()
        .ok()
        .and_then(Activation::from_dtype)
        .ok_or_else(|| anyhow!("activation `{text}`: use f16 or bf16"))
}

fn parse_shape(text: &str) -> Result<(usize, usize)> {
    let (n, k) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| anyhow!("shape `{text}`: write NxK, e.g. 57344x8192"))?;
    let size = |s: &str| {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| anyhow!("shape `{text}`: sizes are positive integers"))
    };
    Ok((size(n)?, size(k)?))
}

pub fn matmul(options: MatmulBench) -> Result<()> {
    let weights = list(&options.wtypes, "weight types", |t| {
        let dtype: DType = t.parse().map_err(|e| anyhow!("{e}"))?;
        if dtype.bits() > 8 {
            bail!("weight type {dtype}: use a type of at most 8 bits");
        }
        Ok(dtype)
    })?;
    let tokens = list(&options.tokens, "token counts", |t| {
        t.parse::<usize>()
            .ok()
            .filter(|&m| (1..=64).contains(&m))
            .ok_or_else(|| anyhow!("M = `{t}`: the decode kernels take 1 to 64 tokens"))
    })?;
    let mut shapes = Vec::new();
    for text in &options.shapes {
        shapes.extend(list(text, "shapes", parse_shape)?);
    }
    match (options.n, options.k) {
        (Some(n), Some(k)) => shapes.push((n, k)),
        (None, None) => {}
        _ => bail!("give --n and --k together (or --shape NxK)"),
    }
    if shapes.is_empty() {
        shapes = vec![(8192, 8192), (57344, 8192), (8192, 28672)];
    }
    let schedules = match &options.schedules {
        Some(text) => list(text, "schedules", |t| {
            t.parse::<DecodeSchedule>().map_err(|e| anyhow!("{e}"))
        })?,
        None => Vec::new(),
    };
    let request = BenchRequest {
        weights,
        group: parse_group(&options.group)?,
        zeros: options.zeros,
        activation: parse_activation(&options.activation)?,
        tokens,
        shapes,
        schedules,
        tune: options.tune,
        cache: (!options.heuristic).then(TuningCache::default_location),
        warmup: options.warmup,
        repeats: options.repeats.max(1),
        seed: 0,
    };
    let gpu = Gpu::open(0)?;
    let configurations = request.shapes.len() * request.weights.len() * request.tokens.len();
    // A bar over configurations on a terminal; plain lines otherwise.
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        let bar = indicatif::ProgressBar::new(configurations as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} configurations {msg}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let report = bench::run(&gpu, &request, &mut |line| match &bar {
        Some(bar) => {
            bar.println(line);
            if line.contains(" us ") {
                bar.inc(1);
            }
        }
        None => eprintln!("{line}"),
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    println!(
        "{:<10} {:>4} {:>13} {:<14} {:<13} {:>9} {:>7} {:>7} {:>6}",
        "weight", "m", "n x k", "schedule", "from", "us", "TB/s", "% copy", "tried"
    );
    for row in &report.rows {
        println!(
            "{:<10} {:>4} {:>13} {:<14} {:<13} {:>9.1} {:>7.2} {:>6.1}% {:>6}",
            row.weight,
            row.m,
            format!("{}x{}", row.n, row.k),
            row.schedule,
            match row.source {
                bench::ScheduleSource::Given => "given",
                bench::ScheduleSource::TuningCache => "tuning cache",
                bench::ScheduleSource::Heuristic => "heuristic",
                bench::ScheduleSource::TunedNow => "tuned now",
            },
            row.us,
            row.tbps,
            100.0 * row.copy_fraction,
            row.candidates
        );
    }
    println!(
        "{}, copy bandwidth {:.2} TB/s (bytes read + written)",
        report.device, report.copy_tbps
    );
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&report)?;
        write_atomically(path, text.as_bytes())?;
    }
    if request.tune.is_some() {
        if let Some(cache) = &request.cache {
            println!("tuned schedules stored in {}", cache.path().display());
        }
    }
    Ok(())
}

/// `--tune quick|thorough`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TuneMode {
    /// About a dozen candidates per configuration (seconds per layer shape).
    Quick,
    /// Several dozen candidates per configuration.
    Thorough,
}

impl From<TuneMode> for Tuning {
    fn from(mode: TuneMode) -> Tuning {
        match mode {
            TuneMode::Quick => Tuning::Quick,
            TuneMode::Thorough => Tuning::Thorough,
        }
    }
}
