//! `anybit compile FILE --arch sm_90a --emit cuda|ptx|cubin|sass [-o OUT]`.

use std::io::Write;
use std::path::Path;

use anybit_cuda::{disassemble, generate, KernelCache, Target};
use anyhow::{bail, Context, Result};

use super::program::{read_program, verify_program};
use super::write_atomically;

/// What `anybit compile` produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// The generated CUDA C++ source.
    Cuda,
    /// PTX, from NVRTC.
    Ptx,
    /// The cubin (machine code), from NVRTC; needs -o.
    Cubin,
    /// The cubin disassembled with cuobjdump.
    Sass,
}

pub fn run(file: &Path, arch: &str, emit: Emit, output: Option<&Path>) -> Result<()> {
    let target: Target = arch.parse()?;
    let program = read_program(file)?;
    let verified = verify_program(file, &program)?;
    let generated = generate(&verified, target)
        .map_err(|error| anyhow::anyhow!("{}:{error}", file.display()))?;
    let compile =
        || KernelCache::default_location().compile(&generated.source, &generated.name, target);
    let bytes = match emit {
        Emit::Cuda => generated.source.clone().into_bytes(),
        Emit::Ptx => compile()?.ptx.into_bytes(),
        Emit::Cubin => {
            if output.is_none() {
                bail!("--emit cubin writes machine code; name a file with -o");
            }
            compile()?.cubin
        }
        Emit::Sass => disassemble(&compile()?.cubin)?.into_bytes(),
    };
    match output {
        Some(path) => write_atomically(path, &bytes)?,
        None => std::io::stdout()
            .write_all(&bytes)
            .context("writing to standard output")?,
    }
    Ok(())
}
