//! Code generation: every example program generates CUDA that NVRTC compiles for sm_80 and
//! sm_90a, and the SASS holds what instruction selection promised; a `blocks_per_sm` hint bounds
//! the registers ptxas gives a thread. Needs the toolkit that
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

/// One more than the highest general register (`R0`..`R254`; not `RZ`, not the uniform `URn`)
/// the SASS names: at most the registers ptxas gave each thread.
fn registers_named(sass: &str) -> u32 {
    let mut most = 0;
    for word in sass.split(|c: char| !c.is_ascii_alphanumeric()) {
        if let Some(digits) = word.strip_prefix('R') {
            if let Ok(index) = digits.parse::<u32>() {
                most = most.max(index + 1);
            }
        }
    }
    most
}

/// `blocks_per_sm(n)` reaches ptxas: the kernel compiles for both targets, the PTX asks for `n`
/// blocks (`.minnctapersm n`), and each thread stays within 65536 / (threads · n) registers
/// (rounded down to the allocation unit, 8) where the program without the hint uses more.
#[test]
fn blocks_per_sm_bounds_the_registers() {
    let (_, matmul) = text_examples()
        .into_iter()
        .find(|(file, _)| file == "matmul_f16.anybit")
        .expect("matmul_f16.anybit");
    assert_eq!(matmul.threads, 128);
    let hints = [None, Some(8), Some(16)];
    std::thread::scope(|scope| {
        for target in TARGETS {
            let matmul = &matmul;
            scope.spawn(move || {
                let kernels: Vec<GeneratedKernel> = hints
                    .iter()
                    .map(|&blocks| {
                        let mut program = matmul.clone();
                        program.blocks_per_sm = blocks;
                        program.name = format!("matmul_f16_{}", blocks.unwrap_or(0));
                        verified_kernel(&program, target).unwrap_or_else(|e| panic!("{e}"))
                    })
                    .collect();
                let mut source = PRELUDE.to_string();
                for k in &kernels {
                    source.push_str(k.kernel_source());
                }
                let module = compile(&source, "together", target).unwrap_or_else(|e| panic!("{e}"));
                let sass = sass_by_function(&disassemble(&module.cubin).unwrap());
                let registers = |k: &GeneratedKernel| {
                    let body = sass
                        .get(&k.name)
                        .unwrap_or_else(|| panic!("{target}: no SASS for {}", k.name));
                    registers_named(body)
                };
                let free = registers(&kernels[0]);
                for (blocks, k) in hints.iter().zip(&kernels).skip(1) {
                    let blocks = blocks.expect("a hint");
                    let entry = module
                        .ptx
                        .split(".entry ")
                        .find(|entry| entry.starts_with(&k.name))
                        .unwrap_or_else(|| panic!("{target}: no PTX entry {}", k.name));
                    assert!(
                        entry.contains(&format!(".minnctapersm {blocks}")),
                        "{target} {}: no .minnctapersm {blocks}",
                        k.name
                    );
                    let limit = 65536 / (128 * blocks) / 8 * 8;
                    let used = registers(k);
                    assert!(
                        free > limit,
                        "{target}: without a hint {free} registers, within {limit} already"
                    );
                    assert!(
                        used <= limit,
                        "{target} {}: names {used} registers, the hint allows {limit}",
                        k.name
                    );
                }
            });
        }
    });
}

/// The generic reduction's scratch: after freed tiles at the top level it reuses their bytes
/// (the block needs the larger of the two, and waits for copies before the scratch is
/// written); in a loop whose body allocates a tile it lies above every allocation, since the
/// body's next iteration writes the tile while slow warps may still read the scratch.
#[test]
fn the_reduction_scratch_reuses_freed_tiles_outside_loops_only() {
    let program = |body: &str| {
        let text = format!(
            "program scratch(x: ptr<f32>, s: ptr<f32>, n: i32)\ngrid(1)\nthreads(64)\n{{\n\
             %g = view_global(x, [64, 4], [4, 1]);\n\
             %gs = view_global(s, [1, 4], [4, 1]);\n{body}\n}}\n"
        );
        anybit_vm::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    };
    let tile_then_reduce = "%tile = alloc_shared(f32, row_major(64, 16));\n\
         %t = load_global(%g[0, 0], spatial(64,1).local(1,4));\n\
         store_shared(%tile[0, 0], %t);\n\
         free_shared(%tile);\n\
         %sum = reduce_sum(%t, 0);\n\
         store_global(%gs[0, 0], %sum);";
    let top = verified_kernel(&program(tile_then_reduce), Target::Sm90a).unwrap();
    let source = top.kernel_source();
    assert!(
        source.contains("float* const s = (float*)ab_smem;"),
        "{source}"
    );
    assert!(
        source.contains("ab_wait_group<0>();\n    __syncthreads();"),
        "{source}"
    );
    // The 4 KB tile and the 1 KB scratch share their bytes.
    assert!(source.contains("u8 ab_smem[4096];"), "{source}");
    let in_loop = verified_kernel(
        &program(&format!("for i in 0..n {{\n{tile_then_reduce}\n}}")),
        Target::Sm90a,
    )
    .unwrap();
    let source = in_loop.kernel_source();
    assert!(
        source.contains("float* const s = (float*)ab_scratch;"),
        "{source}"
    );
    assert!(source.contains("u8 ab_smem[5120];"), "{source}");
    for kernel in [&top, &in_loop] {
        compile_together(std::slice::from_ref(kernel), Target::Sm90a);
    }
}
