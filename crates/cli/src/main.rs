//! The `anybit` command: data types, environment checks, and (as the VM grows) compiling and
//! running programs. Each subcommand lives in its own module under `commands/`.

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dtypes => commands::dtype::list(),
        Command::Dtype { command } => commands::dtype::run(command),
        Command::Doctor => commands::doctor::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
