//! The `anybit` command: data types, environment checks, and (as the VM grows) compiling and
//! running programs. Each subcommand lives in its own module under `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;

#[derive(Parser)]
#[command(
    name = "anybit",
    version,
    about = "GPU computation on data types of any bit width",
    long_about = "anybit: a virtual machine for GPU computation on data types of any bit width \
                  (1-8-bit integers, small floats such as f6e3m2), and kernels built on it.\n\n\
                  Start with `anybit doctor` (what this machine has) and `anybit dtypes`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every supported data type with its width, range and smallest subnormal.
    Dtypes,
    /// Inspect one data type.
    Dtype {
        #[command(subcommand)]
        command: commands::dtype::DtypeCommand,
    },
    /// Report the CUDA driver, GPUs, NVRTC and CUDA headers this machine has.
    Doctor,
    /// Parse and verify program files (`.anybit` text form); print every error with its
    /// line and column.
    Check {
        /// Program files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a program in canonical text form.
    Fmt {
        /// The program file.
        file: PathBuf,
        /// Rewrite the file in place instead of printing.
        #[arg(long, conflicts_with = "check")]
        write: bool,
        /// Only check that the file is canonical; exit 1 if it is not.
        #[arg(long)]
        check: bool,
    },
    /// Run a program on the CPU reference interpreter, or with --device gpu on GPU 0.
    ///
    /// Every parameter needs an --arg: `n=1024` for an i32; for a buffer `zeros:N`,
    /// `random:N`, `values:1,2.5,-3` or `file:PATH` (raw packed bytes). Example:
    /// anybit run examples/vector_add.anybit --arg n=1000 --arg a=random:1000
    /// --arg b=random:1000 --arg c=zeros:1000 --show c:8
    Run {
        /// The program file.
        file: PathBuf,
        /// A parameter's value, NAME=VALUE (repeat for each parameter).
        #[arg(long = "arg", value_name = "NAME=VALUE")]
        arguments: Vec<String>,
        /// Run this grid instead of the program's: X, X,Y or X,Y,Z.
        #[arg(long)]
        grid: Option<String>,
        /// After the run, print the values of buffer NAME (NAME:COUNT for the first COUNT).
        #[arg(long, value_name = "NAME[:COUNT]")]
        show: Vec<String>,
        /// After the run, write the bytes of buffer NAME to PATH.
        #[arg(long, value_name = "NAME=PATH")]
        save: Vec<String>,
        /// Seed of the random:N buffers.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where to run: the interpreter (cpu) or generated CUDA on GPU 0 (gpu).
        #[arg(long, value_enum, default_value_t = commands::run::Device::Cpu)]
        device: commands::run::Device,
    },
    /// Inspect the kernel library.
    Kernel {
        #[command(subcommand)]
        command: KernelCommand,
    },
    /// Benchmark the kernel library on GPU 0.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Quantize the weights of a safetensors checkpoint into anybit's format (docs/quantize.md).
    ///
    /// Quantizes every 2-D f16/bf16/f32 tensor whose name does not contain `embed` or `lm_head`
    /// (or, with --include, exactly the tensors that match), copies every other tensor
    /// unchanged, and prints the error of each quantized weight and the sizes before and after.
    /// Example: anybit quantize model.safetensors -o model-u3.safetensors --dtype u3 --group 128
    Quantize {
        /// The checkpoint: a .safetensors file, or a sharded checkpoint's
        /// *.safetensors.index.json (its shards are read from its directory).
        input: PathBuf,
        /// The output: a .safetensors file, or for a sharded input a new or empty directory
        /// that receives shards of the same names and the index. Written atomically; never the
        /// input.
        #[arg(short, long)]
        output: PathBuf,
        /// Weight type: u1..u8, i2..i8 or a small float such as f6e3m2 or f4e2m1.
        #[arg(long)]
        dtype: String,
        /// Group size along K (the last dimension): 16, 32, 64, 128, 256 or per-channel. When
        /// it does not divide K, the last group of each row is short (K mod group elements).
        #[arg(long, default_value = "128")]
        group: String,
        /// The type scales are stored in: f16, bf16 or f32.
        #[arg(long, default_value = "f16")]
        scales: String,
        /// Quantize exactly the tensors whose names match this glob (repeatable; `*` matches
        /// any characters), e.g. --include 'model.layers.*' --include lm_head.weight. Each
        /// must be a 2-D f16/bf16/f32 tensor.
        #[arg(long, value_name = "GLOB")]
        include: Vec<String>,
        /// Leave the tensors whose names match this glob unquantized (repeatable).
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// How each group's scale (and zero point) is chosen.
        #[arg(long, value_enum, default_value_t = commands::quantize::Search::None)]
        search: commands::quantize::Search,
    },
    /// Dequantize an anybit quantized checkpoint into a plain safetensors checkpoint.
    ///
    /// Every quantized weight becomes a tensor of its original name and shape (in its original
    /// column order) holding exactly the library's dequantized values; every other tensor is
    /// copied unchanged. Example: anybit dequantize model-u3.safetensors -o model-u3-f16.safetensors
    Dequantize {
        /// The quantized checkpoint: a .safetensors file, or a sharded checkpoint's index.
        input: PathBuf,
        /// The output: a .safetensors file, or for a sharded input a new or empty directory.
        /// Written atomically; never the input.
        #[arg(short, long)]
        output: PathBuf,
        /// The type of the dequantized weights (default: each weight's original type).
        #[arg(long, value_enum)]
        dtype: Option<commands::dequantize::OutputDtype>,
    },
    /// Import a GPTQ or AWQ checkpoint into anybit's format (docs/quantize.md, "Import").
    ///
    /// Every layer P with P.qweight becomes the anybit weight P.weight (u<bits> with zero
    /// points, the same scales), with exactly the same dequantized values; GPTQ act-order
    /// columns are permuted once (P.weight.perm). Every other tensor is copied unchanged. The
    /// bits and group size come from quantize_config.json or config.json beside the weights.
    /// Example: anybit import --from gptq model.safetensors -o model-anybit.safetensors
    Import {
        /// The format of the checkpoint.
        #[arg(long, value_enum)]
        from: commands::import::From,
        /// The checkpoint: a .safetensors file, or a sharded checkpoint's index.
        input: PathBuf,
        /// The output: a .safetensors file, or for a sharded input a new or empty directory.
        /// Written atomically; never the input.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Compile a program to CUDA C++, PTX, a cubin or SASS (no GPU needed).
    Compile {
        /// The program file.
        file: PathBuf,
        /// Target GPU architecture: sm_80, sm_86, sm_89, sm_90 or sm_90a.
        #[arg(long, default_value = "sm_90a")]
        arch: String,
        /// What to produce.
        #[arg(long, value_enum, default_value_t = commands::compile::Emit::Cuda)]
        emit: commands::compile::Emit,
        /// Write here instead of standard output (required for cubin).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KernelCommand {
    /// Print the anybit program the library launches for a quantized product
    /// y[m, n] = x[m, k] · dequant(W)[n, k]^T; `anybit check`, `compile` and `run` take it.
    Show {
        /// Weight type (u1..u8, i1..i8, small floats such as f6e3m2).
        #[arg(long)]
        wtype: String,
        /// Activation type: f16 or bf16.
        #[arg(long, default_value = "f16")]
        act: String,
        /// Group size along K: 16, 32, 64, 128, 256 or per-channel.
        #[arg(long, default_value = "128")]
        group: String,
        /// Tokens.
        #[arg(long, default_value_t = 1)]
        m: usize,
        /// Output features (rows of W).
        #[arg(long, default_value_t = 4096)]
        n: usize,
        /// Input features (columns of W).
        #[arg(long, default_value_t = 4096)]
        k: usize,
        /// Zero points (unsigned weight types).
        #[arg(long)]
        zeros: bool,
        /// A bias.
        #[arg(long)]
        bias: bool,
        /// The type of scales and zero points: f16, bf16 or f32.
        #[arg(long, default_value = "f16")]
        scales: String,
        /// A decode schedule instead of the library's choice, e.g. w4r1t1c2p.
        #[arg(long)]
        schedule: Option<String>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time quantized products y = x · dequant(W)^T: each configuration is first checked
    /// against an f64 reference, then timed (CUDA events, warm-up, median, L2 flushed by
    /// reading 256 MB before every launch) and reported with its weight bandwidth and its
    /// fraction of the device-to-device copy bandwidth measured in the same run.
    Matmul {
        /// Weight types, comma-separated (e.g. u3,i4,f6e3m2).
        #[arg(long, default_value = "i4")]
        wtype: String,
        /// Token counts M, comma-separated (1 to 64).
        #[arg(long, default_value = "1,16")]
        m: String,
        /// Weight shapes NxK, comma-separated (default: 8192x8192, 57344x8192, 8192x28672).
        #[arg(long)]
        shape: Vec<String>,
        /// N of one shape (with --k).
        #[arg(long)]
        n: Option<usize>,
        /// K of one shape (with --n).
        #[arg(long)]
        k: Option<usize>,
        /// Group size along K: 16, 32, 64, 128, 256 or per-channel.
        #[arg(long, default_value = "128")]
        group: String,
        /// Activation type: f16 or bf16.
        #[arg(long, default_value = "f16")]
        act: String,
        /// Zero points for unsigned weight types.
        #[arg(long)]
        zeros: bool,
        /// Decode schedules to time instead of the library's choice, e.g. w4k1r1t1c2,w2k8r2t1c1.
        #[arg(long)]
        schedule: Option<String>,
        /// Time candidate schedules for every configuration, report the fastest and keep it in
        /// the tuning cache (`--tune` or `--tune quick`: about a dozen candidates;
        /// `--tune thorough`: several dozen). Without it, the library's choice: the tuning
        /// cache's entry, else the heuristic.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "quick", conflicts_with = "schedule")]
        tune: Option<commands::bench::TuneMode>,
        /// Ignore the tuning cache and time the heuristic's schedule.
        #[arg(long, conflicts_with_all = ["schedule", "tune"])]
        heuristic: bool,
        /// Untimed launches before timing.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Timed launches (the median is reported).
        #[arg(long, default_value_t = 30)]
        repeats: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dtypes => commands::dtype::list(),
        Command::Dtype { command } => commands::dtype::run(command),
        Command::Doctor => commands::doctor::run(),
        Command::Compile {
            file,
            arch,
            emit,
            output,
        } => commands::compile::run(&file, &arch, emit, output.as_deref()),
        Command::Bench {
            command:
                BenchCommand::Matmul {
                    wtype,
                    m,
                    shape,
                    n,
                    k,
                    group,
                    act,
                    zeros,
                    schedule,
                    tune,
                    heuristic,
                    warmup,
                    repeats,
                    json,
                },
        } => commands::bench::matmul(commands::bench::MatmulBench {
            wtypes: wtype,
            tokens: m,
            shapes: shape,
            n,
            k,
            group,
            activation: act,
            zeros,
            schedules: schedule,
            tune: tune.map(Into::into),
            heuristic,
            warmup,
            repeats,
            json,
        }),
        Command::Kernel {
            command:
                KernelCommand::Show {
                    wtype,
                    act,
                    group,
                    m,
                    n,
                    k,
                    zeros,
                    bias,
                    scales,
                    schedule,
                },
        } => commands::kernel::show(commands::kernel::ShowKernel {
            wtype,
            activation: act,
            group,
            m,
            n,
            k,
            zeros,
            bias,
            scale_dtype: scales,
            schedule,
        }),
        Command::Quantize {
            input,
            output,
            dtype,
            group,
            scales,
            include,
            exclude,
            search,
        } => commands::quantize::run(commands::quantize::QuantizeRequest {
            input,
            output,
            dtype,
            group,
            scales,
            include,
            exclude,
            search,
        }),
        Command::Dequantize {
            input,
            output,
            dtype,
        } => commands::dequantize::run(input, output, dtype),
        Command::Import {
            from,
            input,
            output,
        } => commands::import::run(from, input, output),
        Command::Check { files } => commands::program::check(&files),
        Command::Fmt { file, write, check } => commands::program::format(&file, write, check),
        Command::Run {
            file,
            arguments,
            grid,
            show,
            save,
            seed,
            device,
        } => commands::run::run(commands::run::RunRequest {
            device,
            file,
            arguments,
            grid,
            show,
            save,
            seed,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`anybit dtypes | head`): nothing more to say.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// True when `error` comes from writing to a closed pipe.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
