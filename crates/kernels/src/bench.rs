//! Benchmarks of the quantized products on a GPU, done the honest way: every configuration is
//! checked against the f64 reference before it is timed; times are medians of CUDA-event timed
//! launches after warm-up; L2 is flushed by reading a buffer of several times its size before
//! every launch (outside the timed region); inputs are random, never zeros; the device-to-device
//! copy bandwidth is measured in the same run, so every figure comes with its fraction of it.

use std::time::Instant;

use anybit_cuda::{generate, DeviceBuffer, Gpu, KernelCache, RuntimeError};
use anybit_dtype::{DType, SpecialValues};
use anybit_vm::builder::{block_x, ProgramBuilder};
use anybit_vm::ReduceOp;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use crate::decode::{DecodeKernel, DecodeSchedule};
use crate::format::{Activation, Group, QuantFormat, ZeroPoints};
use crate::gpu::{DeviceWeight, Matmul, MatmulError};
use crate::prepared::{FragmentLayout, GroupLayout};
use crate::reference::relative_error;
use crate::tuning::{
    tuned_schedule, DeviceKey, TunedSchedule, TuningCache, TuningError, TuningKey,
};
use crate::weight::PreparedWeight;

/// Bytes read by the L2 flush before every timed launch (the H100 has 50 MB of L2).
pub const FLUSH_BYTES: usize = 256 << 20;
/// Output rows compared with the f64 reference in every configuration.
const CHECKED_ROWS: usize = 64;

/// What to benchmark.
#[derive(Clone, Debug)]
pub struct BenchRequest {
    pub weights: Vec<DType>,
    pub group: Group,
    /// Zero points (codes) for unsigned weight types.
    pub zeros: bool,
    pub activation: Activation,
    pub tokens: Vec<usize>,
    /// Weight shapes `(n, k)`.
    pub shapes: Vec<(usize, usize)>,
    /// Schedules to time; empty for the library's choice.
    pub schedules: Vec<DecodeSchedule>,
    /// Time candidate schedules briefly and report the fastest (when `schedules` is empty):
    /// [`DecodeSchedule::quick_candidates`], or every one of [`DecodeSchedule::candidates`].
    pub tune: Option<Tuning>,
    /// The tuning cache: without `tune`, the library's choice is its entry where it has one
    /// (else the heuristic); with `tune`, the winners are stored in it.
    pub cache: Option<TuningCache>,
    pub warmup: usize,
    pub repeats: usize,
    pub seed: u64,
}

/// How many candidates tuning times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuning {
    /// [`DecodeSchedule::quick_candidates`]: about a dozen per configuration.
    Quick,
    /// [`DecodeSchedule::candidates`]: several dozen per configuration.
    Thorough,
}

/// Where a configuration's schedule came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleSource {
    /// Asked for by the request.
    Given,
    /// The tuning cache's entry.
    TuningCache,
    /// The heuristic (nothing tuned).
    Heuristic,
    /// Tuned in this run.
    TunedNow,
}

/// One timed configuration.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub kernel: String,
    pub weight: String,
    pub group: String,
    pub activation: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub schedule: String,
    pub source: ScheduleSource,
    /// Median time in microseconds.
    pub us: f64,
    /// Codes, scales and zero points read.
    pub weight_bytes: usize,
    /// `weight_bytes` per second, in TB/s.
    pub tbps: f64,
    /// `tbps` over the copy bandwidth of the same run.
    pub copy_fraction: f64,
    /// ‖y − reference‖ / ‖reference‖ over the checked rows.
    pub relative_error: f64,
    /// Candidate schedules timed to choose this one (1 without tuning).
    pub candidates: usize,
    /// When tuning: every candidate's schedule and median time in microseconds (fewer
    /// repeats than the winner's final timing), fastest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<(String, f64)>,
}

/// A benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub device: String,
    /// Device-to-device copy bandwidth (bytes read + written per second), TB/s.
    pub copy_tbps: f64,
    pub rows: Vec<BenchRow>,
}

/// A benchmark that could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Matmul(#[from] MatmulError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{kernel}: m {m}, {n}×{k}: relative error {error:e} against the f64 reference (limit 1e-2){detail}")]
    Wrong {
        kernel: String,
        m: usize,
        n: usize,
        k: usize,
        error: f64,
        detail: String,
    },
    #[error("the L2 flush kernel: {0}")]
    Flush(String),
    #[error(transparent)]
    Tuning(#[from] TuningError),
}

/// A reading kernel over a large buffer: launched before every timed run, it leaves L2 full of
/// other data, without the write-back a zeroing flush would add to the next kernel.
struct Flush {
    kernel: anybit_cuda::Kernel,
    buffer: DeviceBuffer,
    sums: DeviceBuffer,
}

impl Flush {
    fn new(gpu: &Gpu, cache: &KernelCache) -> Result<Flush, BenchError> {
        const PER_BLOCK: i32 = 4096;
        let mut b = ProgramBuilder::new("flush_l2");
        b.doc("Reads n u32 words (4096 per block) and stores one wrapped sum per block.");
        let buffer = b.pointer("buffer", DType::Unsigned(32));
        let sums = b.pointer("sums", DType::Unsigned(32));
        let n = b.int_multiple_of("n", PER_BLOCK as u32);
        b.grid([n.clone() / PER_BLOCK]);
        b.threads(256);
        let g = b.view_global("g", &buffer, [n.clone()], [1]);
        let layout = "spatial(256).local(16)"
            .parse()
            .map_err(|e| BenchError::Flush(format!("{e}")))?;
        let words = b.load_global("words", &g, [block_x() * PER_BLOCK], layout);
        let sum = b.reduce("sum", ReduceOp::Sum, &words, 0);
        let out = b.view_global("out", &sums, [n / PER_BLOCK], [1]);
        b.store_global(&out, [block_x()], &sum);
        let program = b.finish();
        let verified = anybit_vm::verify(&program).map_err(|e| BenchError::Flush(e.to_string()))?;
        let generated =
            generate(&verified, gpu.target()).map_err(|e| BenchError::Flush(e.to_string()))?;
        let module = cache
            .compile(&generated.source, &generated.name, gpu.target())
            .map_err(|e| BenchError::Flush(e.to_string()))?;
        Ok(Flush {
            kernel: gpu.load(&module, &generated.name)?,
            buffer: gpu.upload(&random_bytes(&mut StdRng::seed_from_u64(1), FLUSH_BYTES))?,
            sums: gpu.alloc_zeroed(FLUSH_BYTES / 4 / PER_BLOCK as usize * 4)?,
        })
    }

    fn run(&self, gpu: &Gpu) -> Result<(), RuntimeError> {
        let words = (FLUSH_BYTES / 4) as i32;
        gpu.enqueue_launch(
            &self.kernel,
            anybit_cuda::Launch {
                grid: [(words / 4096) as u32, 1, 1],
                block: [256, 1, 1],
                dynamic_shared_bytes: 0,
            },
            &[
                anybit_cuda::KernelArgument::Buffer(&self.buffer),
                anybit_cuda::KernelArgument::Buffer(&self.sums),
                anybit_cuda::KernelArgument::I32(words),
            ],
        )
    }
}

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// A weight of random codes (no special values), scales and zero points, made directly in the
/// prepared layout (the layout of random codes is random codes).
pub fn random_weight(
    format: QuantFormat,
    n: usize,
    k: usize,
    scale_dtype: DType,
    rng: &mut StdRng,
) -> Result<PreparedWeight, MatmulError> {
    format.check(n, k).map_err(|e| MatmulError::Mismatch {
        what: "takes the formats QuantFormat::check accepts".into(),
        call: e.to_string(),
    })?;
    let bits = format.weight.bits();
    let codes_layout = FragmentLayout::new(format.weight, n, k);
    let groups_layout = GroupLayout::new(&codes_layout, format.group.size(k));
    let mut codes = random_bytes(rng, codes_layout.bytes());
    if bits == 8 {
        if let DType::MiniFloat(minifloat) = format.weight {
            if minifloat.special_values() != SpecialValues::FiniteOnly {
                // Replace NaN and infinity codes by the largest finite magnitude.
                let max = minifloat.max_finite_code() as u8;
                for code in &mut codes {
                    if (*code & 0x7f) > max {
                        *code = (*code & 0x80) | max;
                    }
                }
            }
        }
    }
    // Scales as a quantizer would choose them for weights of magnitude about one.
    let magnitude = format.weight.max_value().max(-format.weight.min_value());
    let step = (1.0 / magnitude) as f32;
    let values = |rng: &mut StdRng, low: f32, high: f32| -> Vec<u8> {
        (0..groups_layout.len())
            .flat_map(|_| {
                let code = scale_dtype.encode(rng.random_range(low..high));
                code.to_le_bytes()
                    .into_iter()
                    .take((scale_dtype.bits() / 8) as usize)
            })
            .collect()
    };
    let scales = values(rng, 0.5 * step, 1.5 * step);
    let zeros = (format.zeros != ZeroPoints::None)
        .then(|| values(rng, 0.0, format.weight.max_value() as f32));
    Ok(PreparedWeight {
        format,
        n,
        k,
        scale_dtype,
        codes_layout,
        groups_layout,
        codes,
        scales,
        zeros,
    })
}

/// Runs the benchmark; `progress` receives one line per configuration.
pub fn run(
    gpu: &Gpu,
    request: &BenchRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, BenchError> {
    let cache = KernelCache::default_location();
    let flush = Flush::new(gpu, &cache)?;
    let flush_l2 = || flush.run(gpu);
    // Copy bandwidth: 1 GiB device to device, bytes read + written.
    let copy_bytes = 1usize << 30;
    let source = gpu.upload(&random_bytes(&mut StdRng::seed_from_u64(2), copy_bytes))?;
    let mut destination = gpu.alloc_zeroed(copy_bytes)?;
    let copy_ms = gpu.time_copy(&source, &mut destination, 3, 20)?;
    drop((source, destination));
    let copy_tbps = 2.0 * copy_bytes as f64 / (copy_ms * 1e-3) / 1e12;
    progress(&format!(
        "{}: device-to-device copy {copy_tbps:.2} TB/s",
        gpu.info().name
    ));
    let mut matmul = Matmul::new(gpu);
    let mut rng = StdRng::seed_from_u64(request.seed);
    let act = request.activation.dtype();
    let format_of = |weight: DType| QuantFormat {
        weight,
        group: request.group,
        zeros: if request.zeros && matches!(weight, DType::Unsigned(_)) {
            ZeroPoints::Codes
        } else {
            ZeroPoints::None
        },
    };
    let spec_of = |format: QuantFormat, schedule: DecodeSchedule| DecodeKernel {
        format,
        activation: request.activation,
        scale_dtype: DType::F16,
        bias: false,
        schedule,
    };
    let device = DeviceKey::of(gpu);
    let tuned = match (&request.cache, request.tune) {
        (Some(cache), None) => cache.load(&device)?,
        _ => Default::default(),
    };
    let key_of = |format: QuantFormat, n: usize, k: usize, m: usize| {
        TuningKey::new(format, request.activation, DType::F16, n, k, m)
    };
    let schedules_for = |m: usize,
                         n: usize,
                         k: usize,
                         format: QuantFormat|
     -> (Vec<DecodeSchedule>, ScheduleSource) {
        if !request.schedules.is_empty() {
            let given = request
                .schedules
                .iter()
                .copied()
                .filter(|s| s.max_tokens() >= m && spec_of(format, *s).supports(k))
                .collect();
            return (given, ScheduleSource::Given);
        }
        match request.tune {
            Some(Tuning::Quick) => (
                DecodeSchedule::quick_candidates(m, n, k, format, request.activation),
                ScheduleSource::TunedNow,
            ),
            Some(Tuning::Thorough) => (
                DecodeSchedule::candidates(m, n, k, format, request.activation),
                ScheduleSource::TunedNow,
            ),
            None => match tuned_schedule(&tuned, format, request.activation, DType::F16, n, k, m) {
                Some(schedule) => (vec![schedule], ScheduleSource::TuningCache),
                None => (
                    vec![DecodeSchedule::heuristic(
                        m,
                        n,
                        k,
                        format,
                        request.activation,
                    )],
                    ScheduleSource::Heuristic,
                ),
            },
        }
    };
    // Every kernel of the run, compiled in parallel before anything is timed.
    let mut specs = Vec::new();
    for &(n, k) in &request.shapes {
        for &weight in &request.weights {
            for &m in &request.tokens {
                let format = format_of(weight);
                for schedule in schedules_for(m, n, k, format).0 {
                    specs.push(spec_of(format, schedule));
                }
            }
        }
    }
    specs.sort_by_key(DecodeKernel::name);
    specs.dedup();
    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    matmul.precompile(&specs, threads)?;
    progress(&format!(
        "compiled {} kernels in {:.1} s",
        specs.len(),
        started.elapsed().as_secs_f64()
    ));
    let mut rows = Vec::new();
    for &(n, k) in &request.shapes {
        for &weight in &request.weights {
            let format = format_of(weight);
            let started = Instant::now();
            let prepared = random_weight(format, n, k, DType::F16, &mut rng)?;
            let device_weight = DeviceWeight::upload(gpu, &prepared)?;
            let checked: Vec<usize> = (0..CHECKED_ROWS.min(n))
                .map(|i| i * n / CHECKED_ROWS.min(n))
                .collect();
            let reference_rows: Vec<Vec<f64>> = checked
                .iter()
                .map(|&row| prepared.dequantize_row(row))
                .collect();
            for &m in &request.tokens {
                let x: Vec<f32> = (0..m * k)
                    .map(|_| act.decode(act.encode(rng.random_range(-1.0f32..1.0))) as f32)
                    .collect();
                let x_bytes: Vec<u8> = x
                    .iter()
                    .flat_map(|&v| (act.encode(v) as u16).to_le_bytes())
                    .collect();
                let x_device = gpu.upload(&x_bytes)?;
                let mut expected = Vec::new();
                for token in 0..m {
                    for reference in &reference_rows {
                        expected.push(
                            (0..k)
                                .map(|i| x[token * k + i] as f64 * reference[i])
                                .sum::<f64>(),
                        );
                    }
                }
                let (schedules, source) = schedules_for(m, n, k, format);
                let tuning = source == ScheduleSource::TunedNow;
                let mut timed = Vec::new();
                for schedule in &schedules {
                    let spec = spec_of(format, *schedule);
                    // Poisoned output: every element must be written.
                    let y = gpu.upload(&vec![0xff; m * n * 2])?;
                    matmul.run(&spec, &x_device, m, &device_weight, None, &y)?;
                    let out = gpu.download(&y)?;
                    let got: Vec<f64> = out
                        .chunks_exact(2)
                        .map(|c| act.decode(u16::from_le_bytes([c[0], c[1]]) as u32))
                        .collect();
                    let unwritten = got.iter().filter(|v| !v.is_finite()).count();
                    let got_rows: Vec<f64> = (0..m)
                        .flat_map(|token| checked.iter().map(move |&row| (token, row)))
                        .map(|(token, row)| got[token * n + row])
                        .collect();
                    let error = relative_error(&got_rows, &expected);
                    if unwritten > 0 || error > 1e-2 {
                        return Err(BenchError::Wrong {
                            kernel: spec.name(),
                            m,
                            n,
                            k,
                            error,
                            detail: if unwritten > 0 {
                                format!("; {unwritten} outputs not finite (unwritten?)")
                            } else {
                                String::new()
                            },
                        });
                    }
                    let repeats = if tuning {
                        (request.repeats / 3).max(5)
                    } else {
                        request.repeats
                    };
                    let ms = matmul.time(
                        &spec,
                        &x_device,
                        m,
                        &device_weight,
                        None,
                        &y,
                        request.warmup,
                        repeats,
                        flush_l2,
                    )?;
                    timed.push((ms, spec, error));
                }
                timed.sort_by(|a, b| a.0.total_cmp(&b.0));
                let tried: Vec<(String, f64)> = if tuning {
                    timed
                        .iter()
                        .map(|(ms, spec, _)| (spec.schedule.tag(), ms * 1e3))
                        .collect()
                } else {
                    Vec::new()
                };
                let reported: Vec<(f64, DecodeKernel, f64)> = if tuning {
                    // The winner, timed again in full.
                    let (_, spec, error) = timed[0];
                    let y = gpu.upload(&vec![0xff; m * n * 2])?;
                    let ms = matmul.time(
                        &spec,
                        &x_device,
                        m,
                        &device_weight,
                        None,
                        &y,
                        request.warmup,
                        request.repeats,
                        flush_l2,
                    )?;
                    vec![(ms, spec, error)]
                } else {
                    timed
                };
                for (ms, spec, error) in reported {
                    let us = ms * 1e3;
                    let weight_bytes = device_weight.bytes();
                    let tbps = weight_bytes as f64 / (us * 1e-6) / 1e12;
                    let row = BenchRow {
                        kernel: spec.name(),
                        weight: weight.to_string(),
                        group: request.group.to_string(),
                        activation: request.activation.to_string(),
                        m,
                        n,
                        k,
                        schedule: spec.schedule.tag(),
                        source,
                        us,
                        weight_bytes,
                        tbps,
                        copy_fraction: tbps / copy_tbps,
                        relative_error: error,
                        candidates: if tuning { schedules.len() } else { 1 },
                        tried: tried.clone(),
                    };
                    progress(&format!(
                        "{:>8} m {:>3} {:>6}x{:<6} {:<14} {:>9.1} us {:>6.2} TB/s {:>5.1}% of copy  err {:.1e}  ({:.1} s)",
                        row.weight,
                        m,
                        n,
                        k,
                        row.schedule,
                        us,
                        tbps,
                        100.0 * row.copy_fraction,
                        error,
                        started.elapsed().as_secs_f64()
                    ));
                    if tuning {
                        if let Some(cache) = &request.cache {
                            cache.store(
                                &device,
                                [(
                                    key_of(format, n, k, m),
                                    TunedSchedule {
                                        schedule: row.schedule.clone(),
                                        us,
                                        candidates: schedules.len(),
                                    },
                                )],
                            )?;
                        }
                    }
                    rows.push(row);
                }
            }
        }
    }
    Ok(BenchReport {
        device: gpu.info().name.clone(),
        copy_tbps,
        rows,
    })
}
