//! Code generation: every example program generates CUDA that NVRTC compiles for sm_80 and
//! sm_90a, and the SASS holds what instruction selection promised. Needs the toolkit that
//! `scripts/install-cuda-wheels` installs.

use std::collections::BTreeMap;

use anybit_cuda::codegen::prelude::PRELUDE;
use anybit_cuda::{compile, disassemble, generate, sass_by_function, GeneratedKernel, Target};
use anybit_dtype::DType;
use anybit_vm::{examples, Program};

const TARGETS: [Target; 2] = [Target::Sm80, Target::Sm90a];

/// Compiles several kernels as one module (one NVRTC call) and returns the SASS of each
/// function by name.
fn compile_together(kernels: &[GeneratedKernel], target: Target) -> BTreeMap<String, String> {
    let mut source = PRELUDE.to_string();
    for k in kernels {
        source.push_str(k.kernel_source());
    }
    let module = compile(&source, "together", target).unwrap_or_else(|e| panic!("{e}"));
    let sass = disassemble(&module.cubin).unwrap();
    sass_by_function(&sass)
}

/// The kernel of `program`, verified first (the verifier's or code generation's error as text).
fn verified_kernel(program: &Program, target: Target) -> Result<GeneratedKernel, String> {
    let verified = anybit_vm::verify(program).map_err(|e| e.to_string())?;
    generate(&verified, target).map_err(|e| e.to_string())
}

fn text_examples() -> Vec<(String, Program)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "anybit"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let program =
                anybit_vm::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                program,
            )
        })
        .collect()
}

fn quantized_programs() -> Vec<Program> {
    let mut out = Vec::new();
    for dtype in DType::all_small() {
        for group in [32, 128] {
            out.push(examples::quantized_matmul(dtype, group).unwrap());
        }
    }
    out
}

fn count(sass: &str, opcode: &str) -> usize {
    sass.lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w == opcode || w.starts_with(&format!("{opcode}.")))
        })
        .count()
}

#[test]
fn examples_compile_for_sm80_and_sm90a() {
    let programs = text_examples();
    std::thread::scope(|scope| {
        for target in TARGETS {
            let programs = &programs;
            scope.spawn(move || {
                let kernels: Vec<GeneratedKernel> = programs
                    .iter()
                    .map(|(file, p)| {
                        verified_kernel(p, target).unwrap_or_else(|e| panic!("{file}: {e}"))
                    })
                    .collect();
                let sass = compile_together(&kernels, target);
                for k in &kernels {
                    let body = sass
                        .get(&k.name)
                        .unwrap_or_else(|| panic!("{target}: no SASS for {}", k.name));
                    check_promises(k, body, target);
                }
            });
        }
    });
}

#[test]
fn quantized_matmul_compiles_for_every_weight_type() {
    let programs = quantized_programs();
    std::thread::scope(|scope| {
        for target in TARGETS {
            let programs = &programs;
            scope.spawn(move || {
                let kernels: Vec<GeneratedKernel> = programs
                    .iter()
                    .map(|p| {
                        verified_kernel(p, target).unwrap_or_else(|e| panic!("{}: {e}", p.name))
                    })
                    .collect();
                let sass = compile_together(&kernels, target);
                for k in &kernels {
                    let body = sass
                        .get(&k.name)
                        .unwrap_or_else(|| panic!("{target}: no SASS for {}", k.name));
                    check_promises(k, body, target);
                }
            });
        }
    });
}

/// The SASS has what the selections say.
fn check_promises(k: &GeneratedKernel, sass: &str, target: Target) {
    let says = |what: &str| k.selections.iter().any(|s| s.contains(what));
    let context = || format!("{target} {}:\n{}\n", k.name, k.selections.join("\n"));
    if says("mma.sync") {
        assert!(count(sass, "HMMA") > 0, "{}no HMMA", context());
    }
    if says("ldmatrix") {
        assert!(count(sass, "LDSM") > 0, "{}no LDSM", context());
    }
    if says("cp.async") {
        assert!(count(sass, "LDGSTS") > 0, "{}no LDGSTS", context());
    }
    if says("16-byte global loads") {
        assert!(
            sass.contains("LDG.E.128") || sass.contains("LDG.E.ENL2.128") || sass.contains(".128"),
            "{}no 128-bit global load",
            context()
        );
    }
    // Register arrays are indexed with constants only: at most a few spill slots.
    let local = count(sass, "LDL") + count(sass, "STL");
    assert!(local <= 8, "{}{local} local-memory accesses", context());
}

#[test]
fn cast_test_kernels_compile_for_every_small_type() {
    use anybit_cuda::codegen::{cast_test_kernel, FastCast};
    std::thread::scope(|scope| {
        for target in TARGETS {
            scope.spawn(move || {
                let kernels: Vec<GeneratedKernel> = DType::all_small()
                    .into_iter()
                    .map(|d| cast_test_kernel(d, target).unwrap_or_else(|e| panic!("{d}: {e}")))
                    .collect();
                for (dtype, k) in DType::all_small().into_iter().zip(&kernels) {
                    for to in [DType::F16, DType::Bf16] {
                        let fast = FastCast::new(dtype, to).is_some();
                        let selected = k
                            .selections
                            .iter()
                            .any(|s| s.contains(&format!("packed conversion {dtype} -> {to}")));
                        assert_eq!(fast, selected, "{dtype} -> {to}: {:?}", k.selections);
                    }
                }
                let sass = compile_together(&kernels, target);
                for k in &kernels {
                    let body = sass
                        .get(&k.name)
                        .unwrap_or_else(|| panic!("no SASS for {}", k.name));
                    check_promises(k, body, target);
                }
            });
        }
    });
}
