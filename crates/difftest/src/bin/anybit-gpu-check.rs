//! `anybit-gpu-check`: runs generated kernels on GPU 0 and compares every output element with
//! the CPU interpreter, on fresh random inputs, with outputs poisoned twice (all-ones bytes, then
//! zero bytes) so an element the kernel fails to write cannot pass.
//!
//! Cases: the example programs at sizes with partial tiles, the quantized matmul for every
//! weight type with group sizes 32 and 128, every code of every small type cast to f16 and
//! bf16 (1 and 8 elements per thread), tiles of many widths with 32 or 128 contiguous elements
//! per thread through global and shared memory and `copy_async` (vectorised accesses), every
//! run line of the program corpus (`--corpus`, the `zeros:` buffers as outputs), and random
//! programs. Prints one line per case and a closing `N passed, M failed, K skipped`; exits 1 if
//! anything failed.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use anybit_cuda::KernelCache;
use anybit_difftest::cases::all_cases;
use anybit_difftest::corpus::{corpus_paths, CorpusFile, GpuSpec};
use anybit_difftest::gpu::GpuRunner;
use anybit_difftest::{compare, run_on_interpreter, Case};
use anyhow::{Context, Result};
use clap::Parser;
use rand::prelude::*;

#[derive(Parser)]
#[command(about = "Compare GPU runs of generated kernels with the anybit interpreter")]
struct Options {
    /// Seed of the random inputs and programs (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of random programs.
    #[arg(long, default_value_t = 200)]
    random: usize,
    /// Only cases whose name contains one of these comma-separated texts.
    #[arg(long)]
    only: Option<String>,
    /// Also write the results as a Markdown table to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
    /// The program corpus: every `.anybit` file's run lines become cases.
    #[arg(long, default_value = "corpus")]
    corpus: std::path::PathBuf,
}

/// A case left out, with the reason.
struct Skipped {
    name: String,
    reason: String,
}

/// The corpus's cases, and the files it skips on the GPU.
fn corpus_cases(dir: &std::path::Path) -> Result<(Vec<Case>, Vec<Skipped>)> {
    let paths = corpus_paths(dir).with_context(|| {
        format!(
            "reading the corpus at {} (pass --corpus DIR; scripts/gpu-check bundles it)",
            dir.display()
        )
    })?;
    let (mut cases, mut skipped) = (Vec::new(), Vec::new());
    for path in paths {
        let file = CorpusFile::load(&path)?;
        match file.gpu() {
            GpuSpec::Agree(_) => cases.extend(file.cases()),
            GpuSpec::Skip(reason) => skipped.push(Skipped {
                name: format!("corpus {}", file.name()),
                reason: reason.clone(),
            }),
        }
    }
    Ok((cases, skipped))
}

/// Runs one case; `Ok(summary)` when it passed, `Err(reason)` otherwise.
fn check(runner: &mut GpuRunner, case: &Case) -> std::result::Result<String, String> {
    let mut worst = 0f64;
    for poison in [0xffu8, 0x00] {
        let expected = run_on_interpreter(case, poison).map_err(|e| format!("interpreter: {e}"))?;
        let actual = runner.run(case, poison).map_err(|e| format!("gpu: {e}"))?;
        for (position, (expected, actual)) in expected.iter().zip(&actual).enumerate() {
            let count = case.outputs[position].1;
            let comparison = compare(
                case.output_dtype(position),
                expected,
                actual,
                count,
                case.agreement,
            );
            worst = worst.max(comparison.max_abs_error);
            if let Some(mismatch) = comparison.first_mismatch {
                return Err(format!(
                    "{} of {} elements differ (poison {poison:#04x}); first at {}: interpreter {} (code {:#x}), gpu {} (code {:#x})",
                    comparison.mismatches, comparison.compared, mismatch.index, mismatch.expected,
                    mismatch.expected_code, mismatch.actual, mismatch.actual_code
                ));
            }
        }
    }
    Ok(format!("max abs error {worst:e}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool> {
    let options = Options::parse();
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut rng = StdRng::seed_from_u64(seed);
    let (corpus, mut skipped) = corpus_cases(&options.corpus)?;
    let mut cases = all_cases(&mut rng, options.random, corpus);
    if let Some(only) = &options.only {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        let selected = |name: &String| wanted.iter().any(|text| name.contains(text));
        cases.retain(|case| selected(&case.name));
        skipped.retain(|skip| selected(&skip.name));
    }
    let mut runner = GpuRunner::new(KernelCache::default_location()).context("opening GPU 0")?;
    let gpu = runner.gpu().info().clone();
    println!(
        "anybit-gpu-check: {} ({}.{}), seed {seed}, {} cases",
        gpu.name,
        gpu.compute_capability.0,
        gpu.compute_capability.1,
        cases.len()
    );
    let started = Instant::now();
    runner.prepare(&cases);
    println!(
        "compiled {} kernels in {:.1} s",
        runner.kernel_count(),
        started.elapsed().as_secs_f64()
    );
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut rows = Vec::new();
    for Skipped { name, reason } in &skipped {
        println!("skip {name}: {reason}");
        rows.push(format!("| skip | {name} | {} |", reason.replace('|', "/")));
    }
    for case in &cases {
        let outcome = check(&mut runner, case);
        let (status, detail) = match &outcome {
            Ok(detail) => ("pass", detail.clone()),
            Err(reason) => ("FAIL", reason.clone()),
        };
        if outcome.is_ok() {
            passed += 1
        } else {
            failed += 1
        }
        println!("{status} {}: {detail}", case.name);
        rows.push(format!(
            "| {status} | {} | {} |",
            case.name,
            detail.replace('|', "/")
        ));
    }
    if let Some(path) = &options.report {
        let mut file = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        writeln!(
            file,
            "GPU: {} ({}.{}), seed {seed}\n",
            gpu.name, gpu.compute_capability.0, gpu.compute_capability.1
        )?;
        writeln!(file, "| result | case | detail |\n|---|---|---|")?;
        for row in &rows {
            writeln!(file, "{row}")?;
        }
        writeln!(
            file,
            "\n{passed} passed, {failed} failed, {} skipped",
            skipped.len()
        )?;
    }
    println!(
        "{passed} passed, {failed} failed, {} skipped",
        skipped.len()
    );
    Ok(failed == 0)
}
