//! `anybit run FILE`: runs a program on the CPU reference interpreter.
//!
//! Arguments are given as `--arg NAME=VALUE`, one per parameter:
//!
//! | parameter  | VALUE            | meaning                                                  |
//! |------------|------------------|----------------------------------------------------------|
//! | `i32`      | `1024`, `-3`     | the integer                                              |
//! | `ptr<T>`   | `zeros:N`        | N elements of T, all codes 0                             |
//! | `ptr<T>`   | `random:N`       | N random codes of T (finite values for floats; `--seed`) |
//! | `ptr<T>`   | `values:1,2.5,-3`| the numbers, encoded to T (round to nearest even)        |
//! | `ptr<T>`   | `file:PATH`      | the raw bytes of PATH, packed as anybit packs T          |
//!
//! After the run, `--show NAME` prints a buffer's values and `--save NAME=PATH` writes its
//! bytes (to a temporary file renamed into place).
//!
//! `--device gpu` runs the same program as generated CUDA on GPU 0 instead (compiled through
//! NVRTC, cached on disk); the arguments and outputs are the same. The program is verified
//! once, and the one verified program goes to the interpreter or to code generation.

use std::path::{Path, PathBuf};

use anybit_cuda::{generate, Gpu, KernelArgument, KernelCache, Launch};
use anybit_dtype::{packed_bytes, DType};
use anybit_interp::{
    pack_codes, pack_values, run_verified, unpack_values, Argument, Arguments, RunOptions,
};
use anybit_vm::{ParamKind, Program, Verified};
use anyhow::{anyhow, bail, Context, Result};
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::program::{read_program, verify_program};
use super::write_atomically;

/// Where a program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU reference interpreter.
    Cpu,
    /// Generated CUDA on GPU 0.
    Gpu,
}

/// Everything `anybit run` was asked to do.
pub struct RunRequest {
    pub device: Device,
    pub file: PathBuf,
    pub arguments: Vec<String>,
    pub grid: Option<String>,
    pub show: Vec<String>,
    pub save: Vec<String>,
    pub seed: u64,
}

pub fn run(request: RunRequest) -> Result<()> {
    let program = read_program(&request.file)?;
    let verified = verify_program(&request.file, &program)?;
    let mut rng = StdRng::seed_from_u64(request.seed);
    let mut arguments = Arguments::new(&program);
    for assignment in &request.arguments {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| anyhow!("--arg `{assignment}` must be NAME=VALUE"))?;
        let param = program
            .params
            .iter()
            .find(|param| param.name == name)
            .ok_or_else(|| {
                anyhow!(
                    "{} has no parameter `{name}`; its parameters are {}",
                    program.name,
                    parameter_list(&program)
                )
            })?;
        match &param.kind {
            ParamKind::Int { .. } => {
                let value: i32 = value
                    .parse()
                    .map_err(|_| anyhow!("`{name}` is an i32, but `{value}` is not an integer"))?;
                arguments.set(name, value)?;
            }
            ParamKind::Pointer(dtype) => {
                let bytes = buffer_value(*dtype, name, value, &mut rng)?;
                arguments.set(name, bytes)?;
            }
        }
    }
    let grid = request.grid.as_deref().map(parse_grid).transpose()?;
    match request.device {
        Device::Cpu => {
            let options = RunOptions { grid };
            let mut stdout = std::io::stdout().lock();
            let summary = run_verified(&verified, &mut arguments, &options, &mut stdout)?;
            drop(stdout);
            eprintln!(
                "ran {} on the interpreter, grid {}x{}x{} ({} blocks)",
                program.name, summary.grid[0], summary.grid[1], summary.grid[2], summary.blocks
            );
        }
        Device::Gpu => run_on_gpu(&verified, &mut arguments, grid)?,
    }
    for name in &request.show {
        let (name, limit) =
            match name.split_once(':') {
                Some((name, count)) => (
                    name,
                    Some(count.parse::<usize>().map_err(|_| {
                        anyhow!("--show {name}:{count}: the count must be a number")
                    })?),
                ),
                None => (name.as_str(), None),
            };
        let dtype = pointer_dtype(&program, name)?;
        let bytes = arguments.buffer(name).unwrap_or_default();
        let available = bytes.len() * 8 / dtype.bits() as usize;
        let values = unpack_values(dtype, bytes, limit.unwrap_or(available));
        let text: Vec<String> = values.iter().map(ToString::to_string).collect();
        println!(
            "{name} ({dtype}, {} elements): {}",
            values.len(),
            text.join(" ")
        );
    }
    for assignment in &request.save {
        let (name, path) = assignment
            .split_once('=')
            .ok_or_else(|| anyhow!("--save `{assignment}` must be NAME=PATH"))?;
        pointer_dtype(&program, name)?;
        write_atomically(Path::new(path), arguments.buffer(name).unwrap_or_default())?;
    }
    Ok(())
}

/// Runs the program as generated CUDA on GPU 0; output buffers replace the arguments' buffers.
fn run_on_gpu(
    verified: &Verified<'_>,
    arguments: &mut Arguments,
    grid: Option<[u32; 3]>,
) -> Result<()> {
    let program = verified.program();
    let gpu = Gpu::open(0)?;
    let generated = generate(verified, gpu.target())?;
    let module = KernelCache::default_location().compile(
        &generated.source,
        &generated.name,
        gpu.target(),
    )?;
    let kernel = gpu.load(&module, &generated.name)?;
    // Refuse buffers smaller than the program's views reach before anything runs.
    let mut ints = Vec::new();
    let mut lengths = Vec::new();
    for index in 0..program.params.len() {
        match arguments.get_at(index) {
            Some(Argument::Buffer(bytes)) => lengths.push(bytes.len()),
            Some(Argument::Int(value)) => ints.push(*value),
            None => bail!("parameter `{}` has no --arg", program.params[index].name),
        }
    }
    generated
        .check_buffers(&ints, &lengths)
        .context("the GPU launch is refused")?;
    let mut values = Vec::new();
    for index in 0..program.params.len() {
        match arguments.get_at(index) {
            Some(Argument::Buffer(bytes)) => values.push((Some(gpu.upload(bytes)?), 0)),
            Some(Argument::Int(value)) => values.push((None, *value)),
            None => bail!("parameter `{}` has no --arg", program.params[index].name),
        }
    }
    let ints: Vec<i32> = values
        .iter()
        .filter(|(buffer, _)| buffer.is_none())
        .map(|(_, value)| *value)
        .collect();
    let grid = match grid {
        Some(grid) => grid,
        None => generated.grid(&ints)?,
    };
    let kernel_arguments: Vec<KernelArgument<'_>> = values
        .iter()
        .map(|(buffer, value)| match buffer {
            Some(buffer) => KernelArgument::Buffer(buffer),
            None => KernelArgument::I32(*value),
        })
        .collect();
    let launch = Launch {
        grid,
        block: [generated.threads, 1, 1],
        dynamic_shared_bytes: generated.dynamic_shared_bytes as u32,
    };
    gpu.launch(&kernel, launch, &kernel_arguments)?;
    for (index, (buffer, _)) in values.iter().enumerate() {
        if let Some(buffer) = buffer {
            arguments.set_at(index, gpu.download(buffer)?)?;
        }
    }
    eprintln!(
        "ran {} on {} ({}), grid {}x{}x{}",
        program.name,
        gpu.info().name,
        gpu.target(),
        grid[0],
        grid[1],
        grid[2]
    );
    Ok(())
}

fn parameter_list(program: &Program) -> String {
    let names: Vec<&str> = program
        .params
        .iter()
        .map(|param| param.name.as_str())
        .collect();
    names.join(", ")
}

fn pointer_dtype(program: &Program, name: &str) -> Result<DType> {
    match program.params.iter().find(|param| param.name == name) {
        Some(param) => match param.kind {
            ParamKind::Pointer(dtype) => Ok(dtype),
            ParamKind::Int { .. } => bail!("`{name}` is an i32 parameter, not a buffer"),
        },
        None => bail!(
            "{} has no parameter `{name}`; its parameters are {}",
            program.name,
            parameter_list(program)
        ),
    }
}

/// The largest buffer `--arg` makes (packed bytes).
const MAX_BUFFER_BYTES: usize = 4 << 30;

fn buffer_value(dtype: DType, name: &str, value: &str, rng: &mut StdRng) -> Result<Vec<u8>> {
    // An element count whose buffer `anybit run` can make: at most MAX_BUFFER_BYTES, and
    // memory the machine gives (asked for without aborting on failure).
    let count = |text: &str| -> Result<usize> {
        let count: usize = text
            .parse()
            .map_err(|_| anyhow!("`{name}={value}`: `{text}` is not an element count"))?;
        let bytes = (count as u128 * dtype.bits() as u128).div_ceil(8);
        if bytes > MAX_BUFFER_BYTES as u128 {
            bail!(
                "`{name}={value}`: {count} elements of {dtype} take {bytes} bytes; `anybit run` makes buffers of at most {} GiB",
                MAX_BUFFER_BYTES >> 30
            );
        }
        let mut probe: Vec<u32> = Vec::new();
        probe.try_reserve_exact(count).map_err(|_| {
            anyhow!("`{name}={value}`: not enough memory for {count} elements of {dtype}")
        })?;
        Ok(count)
    };
    if let Some(text) = value.strip_prefix("zeros:") {
        return Ok(vec![0; packed_bytes(count(text)?, dtype.bits())]);
    }
    if let Some(text) = value.strip_prefix("random:") {
        let codes: Vec<u32> = (0..count(text)?).map(|_| random_code(dtype, rng)).collect();
        return Ok(pack_codes(dtype, &codes));
    }
    if let Some(text) = value.strip_prefix("values:") {
        let numbers = text
            .split(',')
            .map(|number| {
                number
                    .trim()
                    .parse::<f32>()
                    .map_err(|_| anyhow!("`{name}`: `{number}` is not a number"))
            })
            .collect::<Result<Vec<f32>>>()?;
        return Ok(pack_values(dtype, &numbers));
    }
    if let Some(path) = value.strip_prefix("file:") {
        return std::fs::read(path).with_context(|| format!("cannot read {path} for `{name}`"));
    }
    bail!("`{name}={value}`: a buffer is given as zeros:N, random:N, values:1,2,3 or file:PATH")
}

/// A random code of `dtype` that decodes to a finite number.
fn random_code(dtype: DType, rng: &mut StdRng) -> u32 {
    loop {
        let code = rng.random::<u32>() & dtype.code_mask();
        if dtype.decode(code).is_finite() {
            return code;
        }
    }
}

fn parse_grid(text: &str) -> Result<[u32; 3]> {
    let sizes = text
        .split([',', 'x'])
        .map(|size| size.trim().parse::<u32>())
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| anyhow!("--grid `{text}` must be 1 to 3 sizes such as 4 or 8,2"))?;
    if sizes.is_empty() || sizes.len() > 3 {
        bail!("--grid `{text}` must be 1 to 3 sizes such as 4 or 8,2");
    }
    let mut grid = [1; 3];
    grid[..sizes.len()].copy_from_slice(&sizes);
    Ok(grid)
}
