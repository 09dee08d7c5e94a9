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
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
