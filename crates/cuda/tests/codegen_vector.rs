//! Vectorised global and shared accesses for every element width: the selections and the SASS
//! of tiles whose threads hold 32 or 128 contiguous elements, and of tiles whose alignment
//! cannot be proven. Needs the toolkit that `scripts/install-cuda-wheels` installs.

use std::collections::BTreeMap;

use anybit_cuda::codegen::prelude::PRELUDE;
use anybit_cuda::{compile, disassemble, generate, sass_by_function, GeneratedKernel, Target};
use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout};
use anybit_vm::builder::{block_x, block_y};
use anybit_vm::{Program, ProgramBuilder};

/// Compiles the kernels as one module and returns the SASS of each function by name.
fn compile_together(kernels: &[GeneratedKernel], target: Target) -> BTreeMap<String, String> {
    let mut source = PRELUDE.to_string();
    for k in kernels {
        source.push_str(k.kernel_source());
    }
    let module = compile(&source, "vectors", target).unwrap_or_else(|e| panic!("{e}"));
    let sass = disassemble(&module.cubin).unwrap();
    sass_by_function(&sass)
}

/// Instructions of `opcode` (e.g. `LDG`) whose last modifier is the width `bits` (`.128`).
fn count_wide(sass: &str, opcode: &str, bits: u32) -> usize {
    let suffix = format!(".{bits}");
    sass.lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w.starts_with(&format!("{opcode}.")) && w.ends_with(&suffix))
        })
        .count()
}

/// How the tile travels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// load_global, store_global.
    Global,
    /// load_global, store_shared, barrier, load_shared, store_global.
    Shared,
    /// copy_async into a row-major shared tile, load_shared, store_global.
    CopyAsync,
}

/// 64 threads, each holding `per_thread` contiguous elements of a row of an `[m, n]` matrix with
/// row stride `ld` (`multiple_of 128` when `aligned`, and so is `n` for `copy_async`); the
/// column offset adds the plain parameter `k` (nothing known about it) when not `aligned`.
fn tile_program(dtype: DType, per_thread: usize, path: Path, aligned: bool) -> Program {
    let (rows, cols) = if per_thread == 128 { (16, 4) } else { (8, 8) };
    let run = RegisterLayout::local(&[1, per_thread]);
    let layout = RegisterLayout::spatial(&[rows, cols])
        .compose(&run)
        .unwrap();
    let (tile_m, tile_n) = (rows, cols * per_thread);
    let name = format!(
        "tile_{dtype}_x{per_thread}_{}{}",
        format!("{path:?}").to_lowercase(),
        if aligned { "" } else { "_unaligned" }
    );
    let mut b = ProgramBuilder::new(&name);
    let input = b.pointer("input", dtype);
    let output = b.pointer("output", dtype);
    let m = b.int("m");
    // copy_async of sub-byte elements needs whole chunks in bounds: n a multiple of them.
    let n = if aligned && path == Path::CopyAsync {
        b.int_multiple_of("n", 128)
    } else {
        b.int("n")
    };
    let ld = if aligned {
        b.int_multiple_of("ld", 128)
    } else {
        b.int("ld")
    };
    let k = b.int("k");
    b.grid([
        m.clone().ceil_div(tile_m as i32),
        n.clone().ceil_div(tile_n as i32),
    ])
    .threads(64);
    let r0 = b.let_("r0", block_x() * tile_m as i32);
    let c0 = if aligned {
        b.let_("c0", block_y() * tile_n as i32)
    } else {
        b.let_("c0", block_y() * tile_n as i32 + k)
    };
    let gi = b.view_global("gi", &input, [m.clone(), n.clone()], [ld.clone(), 1.into()]);
    let go = b.view_global("go", &output, [m, n], [ld, 1.into()]);
    let y = match path {
        Path::Global => b.load_global("x", &gi, [r0.clone(), c0.clone()], layout),
        Path::Shared => {
            let x = b.load_global("x", &gi, [r0.clone(), c0.clone()], layout.clone());
            let s = b.alloc_shared("s", dtype, SharedLayout::row_major(&[tile_m, tile_n]));
            b.store_shared(&s, [0, 0], &x);
            b.barrier();
            b.load_shared("y", &s, [0, 0], layout)
        }
        Path::CopyAsync => {
            let s = b.alloc_shared("s", dtype, SharedLayout::row_major(&[tile_m, tile_n]));
            b.copy_async(&s, &gi, [r0.clone(), c0.clone()]);
            b.commit_group();
            b.wait_group(0);
            b.barrier();
            b.load_shared("y", &s, [0, 0], layout)
        }
    };
    b.store_global(&go, [r0, c0], &y);
    b.finish()
}

fn odd_types() -> Vec<DType> {
    ["u3", "u5", "u6", "u7", "f6e3m2", "f5e2m2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
}

/// The sm_90a kernel of `program`, verified first.
fn kernel(program: &anybit_vm::Program) -> GeneratedKernel {
    let verified = anybit_vm::verify(program).unwrap_or_else(|e| panic!("{e}"));
    generate(&verified, Target::Sm90a).unwrap_or_else(|e| panic!("{e}"))
}

fn selected(k: &GeneratedKernel, what: &str) -> bool {
    k.selections.iter().any(|s| s.contains(what))
}

#[test]
fn odd_width_tiles_use_wide_accesses() {
    let mut kernels = Vec::new();
    for dtype in odd_types() {
        for per_thread in [32, 128] {
            for path in [Path::Global, Path::Shared, Path::CopyAsync] {
                let p = tile_program(dtype, per_thread, path, true);
                kernels.push((dtype, per_thread, path, kernel(&p)));
            }
        }
    }
    let all: Vec<GeneratedKernel> = kernels.iter().map(|k| k.3.clone()).collect();
    let sass = compile_together(&all, Target::Sm90a);
    for (dtype, per_thread, path, k) in &kernels {
        let body = &sass[&k.name];
        let context = format!("{}:\n{}\n", k.name, k.selections.join("\n"));
        let bits = dtype.bits();
        // Widest access whose group divides the run: 128 elements are a whole number of
        // 16-byte vectors for every width; 32 elements of a 6-bit type are three 8-byte
        // words, of a 3-, 5- or 7-bit type three, five or seven 4-byte words.
        let width = match (per_thread, bits) {
            (128, _) => 128,
            (_, 6) => 64,
            _ => 32,
        };
        let bytes = width / 8;
        assert!(
            selected(k, &format!("{bytes}-byte global stores")),
            "{context}"
        );
        if width > 32 {
            assert!(
                count_wide(body, "STG", width) > 0,
                "{context}no STG.{width}"
            );
        }
        match path {
            Path::Global | Path::Shared => {
                assert!(
                    selected(k, &format!("{bytes}-byte global loads")),
                    "{context}"
                );
                if width > 32 {
                    assert!(
                        count_wide(body, "LDG", width) > 0,
                        "{context}no LDG.{width}"
                    );
                }
            }
            Path::CopyAsync => {
                assert!(selected(k, "cp.async 16 bytes"), "{context}");
                assert!(
                    body.contains("LDGSTS.E.BYPASS.128"),
                    "{context}no LDGSTS.128"
                );
            }
        }
        if *path != Path::Global {
            assert!(
                selected(k, &format!("{bytes}-byte shared loads")),
                "{context}"
            );
            if width > 32 {
                assert!(
                    count_wide(body, "LDS", width) > 0,
                    "{context}no LDS.{width}"
                );
            }
        }
        if *path == Path::Shared {
            assert!(
                selected(k, &format!("{bytes}-byte shared stores")),
                "{context}"
            );
            if width > 32 {
                assert!(
                    count_wide(body, "STS", width) > 0,
                    "{context}no STS.{width}"
                );
            }
        }
        // Register arrays stay in registers.
        let local = body.matches("LDL").count() + body.matches("STL").count();
        assert!(local <= 8, "{context}{local} local-memory accesses");
    }
}

#[test]
fn unaligned_tiles_use_no_wide_accesses() {
    let mut kernels = Vec::new();
    for dtype in odd_types() {
        for path in [Path::Global, Path::CopyAsync] {
            let p = tile_program(dtype, 128, path, false);
            kernels.push(kernel(&p));
        }
    }
    let sass = compile_together(&kernels, Target::Sm90a);
    for k in &kernels {
        let body = &sass[&k.name];
        let context = format!("{}:\n{}\n", k.name, k.selections.join("\n"));
        assert!(!selected(k, "global loads"), "{context}");
        assert!(!selected(k, "global stores"), "{context}");
        assert!(!selected(k, "cp.async"), "{context}");
        for op in ["LDG", "STG"] {
            for width in [64, 128] {
                assert_eq!(count_wide(body, op, width), 0, "{context}{op}.{width}");
            }
        }
        assert_eq!(body.matches("LDGSTS").count(), 0, "{context}");
    }
}

/// A shared tile read at an offset that is not provably aligned, or through a swizzle that
/// breaks the runs, is read element by element.
#[test]
fn shared_accesses_need_aligned_unswizzled_runs() {
    let dtype: DType = "u5".parse().unwrap();
    let layout = RegisterLayout::spatial(&[16, 4])
        .compose(&RegisterLayout::local(&[1, 128]))
        .unwrap();
    let build = |name: &str, shared: SharedLayout, column: Option<&str>| {
        let mut b = ProgramBuilder::new(name);
        let output = b.pointer("output", dtype);
        let k = b.int("k");
        b.grid([1]).threads(64);
        let go = b.view_global("go", &output, [16, 512], [512, 1]);
        let s = b.alloc_shared("s", dtype, shared);
        let x = b.alloc_register("x", dtype, layout.clone(), Some(anybit_vm::Literal::Int(3)));
        let c = match column {
            Some(_) => k.clone(),
            None => 0.into(),
        };
        b.store_shared(&s, [0.into(), c.clone()], &x);
        b.barrier();
        let y = b.load_shared("y", &s, [0.into(), c], layout.clone());
        b.store_global(&go, [0, 0], &y);
        b.finish()
    };
    let aligned = kernel(&build(
        "shared_ok",
        SharedLayout::row_major(&[16, 640]),
        None,
    ));
    let unaligned = kernel(&build(
        "shared_unaligned",
        SharedLayout::row_major(&[16, 640]),
        Some("k"),
    ));
    let swizzle = anybit_layout::Swizzle::new(3, 3, 7).unwrap();
    let swizzled = kernel(&build(
        "shared_swizzled",
        SharedLayout::row_major(&[16, 640]).with_swizzle(swizzle),
        None,
    ));
    let coarse = anybit_layout::Swizzle::new(2, 7, 10).unwrap();
    let coarse_swizzle = kernel(&build(
        "shared_coarse_swizzle",
        SharedLayout::row_major(&[16, 640]).with_swizzle(coarse),
        None,
    ));
    let kernels = [aligned, unaligned, swizzled, coarse_swizzle];
    let sass = compile_together(&kernels, Target::Sm90a);
    for (k, wide) in kernels.iter().zip([true, false, false, true]) {
        let body = &sass[&k.name];
        let context = format!("{}:\n{}\n", k.name, k.selections.join("\n"));
        assert_eq!(selected(k, "16-byte shared loads"), wide, "{context}");
        assert_eq!(selected(k, "16-byte shared stores"), wide, "{context}");
        assert_eq!(count_wide(body, "LDS", 128) > 0, wide, "{context}");
        assert_eq!(count_wide(body, "STS", 128) > 0, wide, "{context}");
    }
}
