//! `anybit kernel show`: prints the anybit program the library launches for a product, so that
//! any kernel can be read, checked, compiled and run with the other commands.

use anybit_dtype::DType;
use anybit_kernels::{DecodeKernel, DecodeSchedule, QuantFormat, ZeroPoints};
use anyhow::{anyhow, bail, Result};

use super::bench::{parse_activation, parse_group};

/// The options of `anybit kernel show`.
pub struct ShowKernel {
    pub wtype: String,
    pub activation: String,
    pub group: String,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub zeros: bool,
    pub bias: bool,
    pub scale_dtype: String,
    pub schedule: Option<String>,
}

pub fn show(options: ShowKernel) -> Result<()> {
    let weight: DType = options.wtype.parse().map_err(|e| anyhow!("{e}"))?;
    let format = QuantFormat {
        weight,
        group: parse_group(&options.group)?,
        zeros: if options.zeros {
            ZeroPoints::Codes
        } else {
            ZeroPoints::None
        },
    };
    format.check(options.n, options.k)?;
    if !(1..=64).contains(&options.m) {
        bail!("M = {}: the decode kernels take 1 to 64 tokens", options.m);
    }
    let scale_dtype: DType = options.scale_dtype.parse().map_err(|e| anyhow!("{e}"))?;
    if !matches!(scale_dtype, DType::F16 | DType::Bf16 | DType::F32) {
        bail!("scale type {scale_dtype}: use f16, bf16 or f32");
    }
    let schedule = match &options.schedule {
        Some(text) => text.parse::<DecodeSchedule>().map_err(|e| anyhow!("{e}"))?,
        None => DecodeSchedule::heuristic(
            options.m,
            options.n,
            options.k,
            format,
            parse_activation(&options.activation)?,
        ),
    };
    if schedule.max_tokens() < options.m {
        bail!(
            "schedule {} takes at most {} tokens, and M = {}",
            schedule.tag(),
            schedule.max_tokens(),
            options.m
        );
    }
    let kernel = DecodeKernel {
        format,
        activation: parse_activation(&options.activation)?,
        scale_dtype,
        bias: options.bias,
        schedule,
    };
    if !kernel.supports(options.k) {
        let splits: Vec<String> = (1..=16)
            .filter(|&k_warps| {
                DecodeKernel {
                    schedule: DecodeSchedule {
                        k_warps,
                        ..schedule
                    },
                    ..kernel
                }
                .supports(options.k)
            })
            .map(|k_warps| k_warps.to_string())
            .collect();
        bail!(
            "schedule {} splits K = {} over {} warps: each slice must be whole chunks of {} columns \
             and whole groups; K splits that work here: {}",
            schedule.tag(),
            options.k,
            schedule.k_warps,
            kernel.chunk_cols(),
            splits.join(", ")
        );
    }
    print!("{}", anybit_vm::print(&kernel.program().program));
    Ok(())
}
