//! `anybit dtypes` and `anybit dtype show NAME`.

use std::io::Write;

use anybit_dtype::DType;
use anyhow::{bail, Context, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DtypeCommand {
    /// Print every code point of a type of at most 8 bits, one `<code> <value>` line each, in
    /// code order (e.g. `anybit dtype show f4e2m1`).
    Show {
        /// A type name such as u4, i3, f6e3m2 or f8e4m3.
        name: String,
    },
}

pub fn run(command: DtypeCommand) -> Result<()> {
    match command {
        DtypeCommand::Show { name } => show(&name),
    }
}

fn show(name: &str) -> Result<()> {
    let dtype: DType = name.parse()?;
    if dtype.bits() > 8 {
        bail!(
            "`dtype show` prints every code of a type of at most 8 bits; {dtype} has {} codes",
            dtype.code_count()
        );
    }
    let mut out = std::io::stdout().lock();
    for code in 0..dtype.code_count() as u32 {
        writeln!(out, "{code} {}", dtype.decode(code)).context("writing to standard output")?;
    }
    Ok(())
}

fn kind(dtype: DType) -> &'static str {
    match dtype {
        DType::Unsigned(_) => "unsigned integer",
        DType::Signed(_) => "signed integer",
        DType::F16 | DType::Bf16 | DType::F32 => "IEEE-style float",
        DType::MiniFloat(format) => match format.special_values() {
            anybit_dtype::SpecialValues::FiniteOnly => "float, finite-only",
            anybit_dtype::SpecialValues::NanOnly => "float, NaN, no inf (OCP E4M3FN)",
            anybit_dtype::SpecialValues::Ieee => "float, inf and NaN",
        },
    }
}

pub fn list() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8} {:>4}  {:>14} {:>14}  {:>16}  kind",
        "name", "bits", "min", "max", "min subnormal"
    )?;
    for dtype in DType::all() {
        let subnormal = dtype
            .smallest_subnormal()
            .map_or_else(|| "-".to_string(), |value| format!("{value:e}"));
        writeln!(
            out,
            "{:<8} {:>4}  {:>14} {:>14}  {:>16}  {}",
            dtype.to_string(),
            dtype.bits(),
            format_limit(dtype.min_value()),
            format_limit(dtype.max_value()),
            subnormal,
            kind(dtype)
        )?;
    }
    Ok(())
}

/// Plain numbers while they are short, scientific notation for the 16- and 32-bit extremes.
fn format_limit(value: f64) -> String {
    let plain = value.to_string();
    if plain.len() <= 14 {
        plain
    } else {
        format!("{value:e}")
    }
}
