//! `anybit doctor`: what this machine offers anybit. Always exits 0; it reports, it does not
//! judge.

use anybit_cuda::{locate_toolkit, nvrtc_version, probe_driver, DriverStatus, KernelCache};
use anyhow::Result;

pub fn run() -> Result<()> {
    println!("anybit {}", env!("CARGO_PKG_VERSION"));
    match probe_driver() {
        DriverStatus::NotInstalled => println!(
            "CUDA driver: not installed (libcuda.so could not be loaded); GPU runs are \
             unavailable, compiling and the CPU interpreter still work"
        ),
        DriverStatus::Failed(reason) => println!("CUDA driver: present but failed: {reason}"),
        DriverStatus::Available { version, gpus } => {
            println!("CUDA driver: supports CUDA {}.{}", version.0, version.1);
            if gpus.is_empty() {
                println!("GPUs: none");
            }
            for gpu in gpus {
                println!(
                    "GPU {}: {}, compute capability {}.{}, {:.1} GiB",
                    gpu.ordinal,
                    gpu.name,
                    gpu.compute_capability.0,
                    gpu.compute_capability.1,
                    gpu.memory_bytes as f64 / (1u64 << 30) as f64
                );
            }
        }
    }
    match locate_toolkit() {
        Err(error) => println!("CUDA toolkit: {error}"),
        Ok(toolkit) => {
            println!(
                "CUDA toolkit: {} (found by {})",
                toolkit.root.display(),
                toolkit.found_by
            );
            match nvrtc_version() {
                Ok((major, minor)) => println!(
                    "NVRTC: {major}.{minor} at {}",
                    toolkit.nvrtc_library.display()
                ),
                Err(error) => println!("NVRTC: unusable: {error}"),
            }
            println!("CUDA headers: {}", toolkit.include_dir.display());
            match &toolkit.bin_dir {
                Some(bin) => println!("SASS tools: cuobjdump and nvdisasm in {}", bin.display()),
                None => println!("SASS tools: not found beside the toolkit"),
            }
        }
    }
    println!(
        "Kernel cache: {}",
        KernelCache::default_location().directory().display()
    );
    Ok(())
}
