//! Test cases: a program, fresh random arguments, which buffers are outputs, and how closely a
//! second implementation must agree with the interpreter on them.
//!
//! Inputs are random every time a case is made (from the caller's generator), never zeros;
//! output buffers start poisoned, so an element a kernel fails to write shows.

use anybit_dtype::{packed_bytes, quantize, DType, GroupSize, QuantizeOptions, Weights};
use anybit_vm::{examples, ParamKind, Program};
use rand::prelude::*;

use crate::random_programs::{random_program, Agreement};

/// The value of one parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Buffer(Vec<u8>),
    I32(i32),
}

/// A program with arguments, ready to run anywhere.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub program: Program,
    /// One value per parameter, in the program's order. Outputs hold their poison.
    pub values: Vec<Value>,
    /// Parameter positions of the outputs, with the number of elements to compare.
    pub outputs: Vec<(usize, usize)>,
    pub agreement: Agreement,
}

/// The byte every output buffer is filled with before a run: all-ones codes (NaN in most float
/// types, −1 or the maximum in integers). Runs compare whole buffers, so an unwritten element
/// differs from the interpreter's result unless the interpreter leaves it unwritten too.
pub const POISON: u8 = 0xff;

/// A random code of `dtype` with a finite value.
pub fn random_finite_code(dtype: DType, rng: &mut impl Rng) -> u32 {
    loop {
        let code = rng.random::<u32>() & dtype.code_mask();
        if dtype.decode(code).is_finite() {
            return code;
        }
    }
}

fn random_buffer(dtype: DType, count: usize, rng: &mut impl Rng) -> Vec<u8> {
    let mut bytes = vec![0; packed_bytes(count, dtype.bits())];
    for index in 0..count {
        anybit_dtype::write_code(
            &mut bytes,
            dtype.bits(),
            index,
            random_finite_code(dtype, rng),
        );
    }
    bytes
}

/// f16 values drawn uniformly from [-range, range].
fn random_f16_values(count: usize, range: f32, rng: &mut impl Rng) -> Vec<u8> {
    let codes: Vec<u32> = (0..count)
        .map(|_| DType::F16.encode(rng.random_range(-range..range)))
        .collect();
    anybit_dtype::pack(&codes, 16).expect("16-bit codes")
}

fn poison(dtype: DType, count: usize) -> Vec<u8> {
    vec![POISON; packed_bytes(count, dtype.bits())]
}

fn pointer_dtype(program: &Program, index: usize) -> DType {
    match program.params[index].kind {
        ParamKind::Pointer(dtype) => dtype,
        ParamKind::Int { .. } => DType::Signed(32),
    }
}

/// A random program of [`random_program`] with random sizes `m`, `n` (partial edge tiles).
pub fn random_program_case(rng: &mut impl Rng, index: usize) -> Case {
    let generated = random_program(rng, index);
    let layout_tile = |dim: usize| -> usize {
        // Tile sizes are in the grid expressions; recover them from a load's layout.
        generated
            .program
            .body
            .iter()
            .find_map(|stmt| match &stmt.kind {
                anybit_vm::StmtKind::Inst(anybit_vm::Inst::LoadGlobal { layout, .. }) => {
                    Some(layout.shape()[dim])
                }
                _ => None,
            })
            .unwrap_or(1)
    };
    let m = layout_tile(0) * rng.random_range(1..4) + rng.random_range(0..3);
    let n = layout_tile(1) * rng.random_range(1..3) + rng.random_range(0..5);
    let count = m * n;
    let values = vec![
        Value::Buffer(random_buffer(generated.input_dtype, count, rng)),
        Value::Buffer(random_buffer(generated.input_dtype, count, rng)),
        Value::Buffer(poison(generated.output_dtype, count)),
        Value::I32(m as i32),
        Value::I32(n as i32),
    ];
    Case {
        name: generated.description.clone(),
        program: generated.program,
        values,
        outputs: vec![(2, count)],
        agreement: generated.agreement,
    }
}

/// The vector-add example on a random length that is no multiple of its 1024-element tile.
pub fn vector_add_case(rng: &mut impl Rng) -> Case {
    let program = examples::vector_add().expect("example builds");
    let n = 8 * rng.random_range(200..700);
    Case {
        name: format!("vector_add n={n}"),
        values: vec![
            Value::Buffer(random_buffer(DType::F16, n, rng)),
            Value::Buffer(random_buffer(DType::F16, n, rng)),
            Value::Buffer(poison(DType::F16, n)),
            Value::I32(n as i32),
        ],
        outputs: vec![(2, n)],
        program,
        agreement: Agreement::BitExact,
    }
}

/// The tiled f16 matmul on random sizes with partial tiles in every dimension.
pub fn matmul_case(rng: &mut impl Rng) -> Case {
    let program = examples::matmul_f16().expect("example builds");
    let m = rng.random_range(1..150);
    let n = 8 * rng.random_range(1..20);
    let k = 8 * rng.random_range(1..40);
    Case {
        name: format!("matmul_f16 m={m} n={n} k={k}"),
        values: vec![
            Value::Buffer(random_f16_values(m * k, 1.0, rng)),
            Value::Buffer(random_f16_values(k * n, 1.0, rng)),
            Value::Buffer(poison(DType::F16, m * n)),
            Value::I32(m as i32),
            Value::I32(n as i32),
            Value::I32(k as i32),
        ],
        outputs: vec![(2, m * n)],
        program,
        agreement: Agreement::Close {
            ulps: 2,
            fraction_of_max: 1e-3,
        },
    }
}

/// Row softmax over rows of `row_len` (a multiple of 256) f16 values.
pub fn softmax_case(rng: &mut impl Rng, row_len: usize) -> Case {
    let program = examples::softmax(row_len).expect("example builds");
    let m = rng.random_range(1..40);
    Case {
        name: format!("softmax_{row_len} m={m}"),
        values: vec![
            Value::Buffer(random_f16_values(m * row_len, 8.0, rng)),
            Value::Buffer(poison(DType::F16, m * row_len)),
            Value::I32(m as i32),
        ],
        outputs: vec![(1, m * row_len)],
        program,
        agreement: Agreement::Close {
            ulps: 2,
            fraction_of_max: 1e-3,
        },
    }
}

/// The quantized matmul example for `weight` and `group_size`, with weights quantized by the
/// dtype crate from random f32 matrices (raw random codes for `i1`, which the quantizer
/// refuses), and sizes that leave partial tiles in m and n. `group_size` is one the quantizer
/// offers (32, 64, 128 or 256).
pub fn quantized_matmul_case(rng: &mut impl Rng, weight: DType, group_size: usize) -> Case {
    let program = examples::quantized_matmul(weight, group_size).expect("example builds");
    let m = rng.random_range(1..40);
    let n = 8 * rng.random_range(2..20);
    let k = group_size * rng.random_range(1..4);
    let groups = k / group_size;
    let (codes, scales, zeros) = if weight == DType::Signed(1) {
        let codes = random_buffer(weight, n * k, rng);
        let scales: Vec<f32> = (0..n * groups)
            .map(|_| rng.random_range(0.01..0.1))
            .collect();
        (codes, scales, None)
    } else {
        let original: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let options = QuantizeOptions {
            dtype: weight,
            group_size: GroupSize::Elements(group_size),
            scale_dtype: DType::F16,
        };
        let quantized = quantize(Weights::F32(&original), n, k, options)
            .expect("group sizes of the examples are ones the quantizer offers");
        let zeros = quantized.zero_points.clone();
        let scales = quantized.scales.clone();
        (quantized.codes, scales, zeros)
    };
    let scale_codes: Vec<u32> = scales
        .iter()
        .map(|&scale| DType::F16.encode(scale))
        .collect();
    let mut values = vec![
        Value::Buffer(random_f16_values(m * k, 1.0, rng)),
        Value::Buffer(codes),
        Value::Buffer(anybit_dtype::pack(&scale_codes, 16).expect("f16 codes")),
    ];
    if let Some(zeros) = zeros {
        values.push(Value::Buffer(
            anybit_dtype::pack(&zeros, weight.bits()).expect("codes fit"),
        ));
    }
    let y_index = values.len();
    values.push(Value::Buffer(poison(DType::F16, m * n)));
    values.extend([
        Value::I32(m as i32),
        Value::I32(n as i32),
        Value::I32(k as i32),
    ]);
    Case {
        name: format!("quantized_matmul {weight} g{group_size} m={m} n={n} k={k}"),
        values,
        outputs: vec![(y_index, m * n)],
        program,
        agreement: Agreement::Close {
            ulps: 2,
            fraction_of_max: 1e-3,
        },
    }
}

/// Every weight type the quantized matmul is checked with.
pub fn weight_types() -> Vec<DType> {
    let mut types: Vec<DType> = (1..=8).map(DType::Unsigned).collect();
    types.extend((1..=8).map(DType::Signed));
    for name in [
        "f3e1m1", "f4e2m1", "f4e1m2", "f5e2m2", "f5e3m1", "f6e3m2", "f6e2m3", "f7e4m2", "f8e4m3",
        "f8e5m2",
    ] {
        types.push(name.parse().expect("valid name"));
    }
    types
}

impl Case {
    /// The case's values with every output buffer refilled with `poison`.
    pub fn with_poison(&self, poison: u8) -> Vec<Value> {
        let mut values = self.values.clone();
        for &(index, _) in &self.outputs {
            if let Value::Buffer(bytes) = &mut values[index] {
                bytes.fill(poison);
            }
        }
        values
    }

    /// The dtype of output `index` (a position in [`Case::outputs`]).
    pub fn output_dtype(&self, index: usize) -> DType {
        pointer_dtype(&self.program, self.outputs[index].0)
    }
}

/// Every code of `source` (repeated to fill 1024 elements, in shuffled order) cast to `target`:
/// an exhaustive check of one conversion. `elements_per_thread` (1, 2, 4 or 8 contiguous
/// elements) decides whether code generation can convert several values per register.
pub fn cast_case(
    rng: &mut impl Rng,
    source: DType,
    target: DType,
    elements_per_thread: usize,
) -> Case {
    const COUNT: usize = 1024;
    let threads = COUNT / elements_per_thread;
    let mut b = anybit_vm::ProgramBuilder::new(&format!(
        "cast_{source}_to_{target}_x{elements_per_thread}"
    ));
    let input = b.pointer("input", source);
    let output = b.pointer("output", target);
    b.grid([1]).threads(threads as u32);
    let gi = b.view_global("gi", &input, [COUNT as i32], [1]);
    let go = b.view_global("go", &output, [COUNT as i32], [1]);
    let layout = anybit_layout::RegisterLayout::spatial(&[threads])
        .compose(&anybit_layout::RegisterLayout::local(&[
            elements_per_thread,
        ]))
        .expect("rank 1");
    let codes = b.load_global("codes", &gi, [0], layout);
    let converted = b.cast("converted", &codes, target);
    b.store_global(&go, [0], &converted);
    let program = b.finish();
    let mut codes: Vec<u32> = (0..COUNT as u32).map(|i| i & source.code_mask()).collect();
    codes.shuffle(rng);
    Case {
        name: format!("cast {source} -> {target}, {elements_per_thread} per thread"),
        values: vec![
            Value::Buffer(anybit_dtype::pack(&codes, source.bits()).expect("codes fit")),
            Value::Buffer(poison(target, COUNT)),
        ],
        outputs: vec![(1, COUNT)],
        program,
        agreement: Agreement::BitExact,
    }
}

/// The register layouts of [`vector_width_case`]: `elements_per_thread` (32 or 128) contiguous
/// elements of a row per thread over 64 threads, thread index row-major (for the global load)
/// and column-major (for the shared load, so data changes threads on the way).
fn vector_width_layouts(
    elements_per_thread: usize,
) -> (anybit_layout::RegisterLayout, anybit_layout::RegisterLayout) {
    use anybit_layout::RegisterLayout;
    let (rows, cols) = match elements_per_thread {
        32 => (8, 8),
        128 => (16, 4),
        other => panic!("vector_width_case takes 32 or 128 elements per thread, not {other}"),
    };
    let run = RegisterLayout::local(&[1, elements_per_thread]);
    let by_rows = RegisterLayout::spatial(&[rows, cols])
        .compose(&run)
        .expect("rank 2");
    let by_columns = RegisterLayout::column_spatial(&[rows, cols])
        .compose(&run)
        .expect("rank 2");
    (by_rows, by_columns)
}

/// A random `[m, n]` matrix of `dtype` (row stride `ld`, a multiple of 128, `n <= ld`) loaded
/// in tiles where every thread holds `elements_per_thread` (32 or 128) contiguous elements of a
/// row, optionally passed through shared memory (`store_shared`, `barrier`, `load_shared` in
/// another thread order), then stored raw to a second `dtype` matrix and cast to f16 into a
/// third. Sizes leave partial tiles in both dimensions and, when `n < ld`, partial runs at the
/// row ends; the columns `n..ld` of the outputs must keep their poison. Code generation
/// vectorises every access of these tiles for every width (several words per run for 3-, 5-,
/// 6- and 7-bit types).
pub fn vector_width_case(
    rng: &mut impl Rng,
    dtype: DType,
    elements_per_thread: usize,
    with_shared: bool,
) -> Case {
    use anybit_vm::builder::{block_x, block_y};
    let (by_rows, by_columns) = vector_width_layouts(elements_per_thread);
    let (tile_m, tile_n) = (by_rows.shape()[0], by_rows.shape()[1]);
    let through = if with_shared { "_shared" } else { "" };
    let mut b = anybit_vm::ProgramBuilder::new(&format!(
        "vector_width_{dtype}_x{elements_per_thread}{through}"
    ));
    let input = b.pointer("input", dtype);
    let half = b.pointer("half", DType::F16);
    let raw = b.pointer("raw", dtype);
    let m = b.int("m");
    let n = b.int("n");
    let ld = b.int_multiple_of("ld", 128);
    b.grid([
        m.clone().ceil_div(tile_m as i32),
        n.clone().ceil_div(tile_n as i32),
    ])
    .threads(64);
    let r0 = b.let_("r0", block_x() * tile_m as i32);
    let c0 = b.let_("c0", block_y() * tile_n as i32);
    let shape = [m.clone(), n.clone()];
    let strides = [ld.clone(), 1.into()];
    let gi = b.view_global("gi", &input, shape.clone(), strides.clone());
    let gh = b.view_global("gh", &half, shape.clone(), strides.clone());
    let gr = b.view_global("gr", &raw, shape, strides);
    let x = b.load_global("x", &gi, [r0.clone(), c0.clone()], by_rows);
    let y = if with_shared {
        let s = b.alloc_shared(
            "s",
            dtype,
            anybit_layout::SharedLayout::row_major(&[tile_m, tile_n]),
        );
        b.store_shared(&s, [0, 0], &x);
        b.barrier();
        b.load_shared("y", &s, [0, 0], by_columns)
    } else {
        x
    };
    let h = b.cast("h", &y, DType::F16);
    b.store_global(&gh, [r0.clone(), c0.clone()], &h);
    b.store_global(&gr, [r0, c0], &y);
    let program = b.finish();
    let rows = tile_m * rng.random_range(1..3) + rng.random_range(0..tile_m);
    let ld = 128 * rng.random_range(1..6);
    let cols = if rng.random_bool(0.5) {
        ld
    } else {
        ld - rng.random_range(1..100)
    };
    let count = rows * ld;
    Case {
        name: format!(
            "vector_width {dtype} x{elements_per_thread}{} m={rows} n={cols} ld={ld}",
            if with_shared { " shared" } else { "" }
        ),
        values: vec![
            Value::Buffer(random_buffer(dtype, count, rng)),
            Value::Buffer(poison(DType::F16, count)),
            Value::Buffer(poison(dtype, count)),
            Value::I32(rows as i32),
            Value::I32(cols as i32),
            Value::I32(ld as i32),
        ],
        outputs: vec![(1, count), (2, count)],
        program,
        agreement: Agreement::BitExact,
    }
}

/// A random `[m, n]` matrix of `dtype` (`n` a multiple of 128) copied tile by tile with
/// `copy_async` into a row-major `[16, 256]` shared tile (rows of 256 elements are whole
/// 16-byte chunks for every width), read back with 64 contiguous elements per thread and
/// stored raw. Sizes leave partial tiles in both dimensions (zero-filled chunks).
pub fn copy_async_width_case(rng: &mut impl Rng, dtype: DType) -> Case {
    use anybit_layout::RegisterLayout;
    use anybit_vm::builder::{block_x, block_y};
    let (tile_m, tile_n) = (16usize, 256usize);
    let mut b = anybit_vm::ProgramBuilder::new(&format!("copy_async_width_{dtype}"));
    let input = b.pointer("input", dtype);
    let raw = b.pointer("raw", dtype);
    let m = b.int("m");
    let n = b.int_multiple_of("n", 128);
    b.grid([
        m.clone().ceil_div(tile_m as i32),
        n.clone().ceil_div(tile_n as i32),
    ])
    .threads(64);
    let r0 = b.let_("r0", block_x() * tile_m as i32);
    let c0 = b.let_("c0", block_y() * tile_n as i32);
    let shape = [m.clone(), n.clone()];
    let strides = [n.clone(), 1.into()];
    let gi = b.view_global("gi", &input, shape.clone(), strides.clone());
    let gr = b.view_global("gr", &raw, shape, strides);
    let s = b.alloc_shared(
        "s",
        dtype,
        anybit_layout::SharedLayout::row_major(&[tile_m, tile_n]),
    );
    b.copy_async(&s, &gi, [r0.clone(), c0.clone()]);
    b.commit_group();
    b.wait_group(0);
    b.barrier();
    let layout = RegisterLayout::spatial(&[16, 4])
        .compose(&RegisterLayout::local(&[1, 64]))
        .expect("rank 2");
    let y = b.load_shared("y", &s, [0, 0], layout);
    b.store_global(&gr, [r0, c0], &y);
    let program = b.finish();
    let rows = tile_m * rng.random_range(1..3) + rng.random_range(0..tile_m);
    let cols = 128 * rng.random_range(1..6);
    let count = rows * cols;
    Case {
        name: format!("copy_async_width {dtype} m={rows} n={cols}"),
        values: vec![
            Value::Buffer(random_buffer(dtype, count, rng)),
            Value::Buffer(poison(dtype, count)),
            Value::I32(rows as i32),
            Value::I32(cols as i32),
        ],
        outputs: vec![(1, count)],
        program,
        agreement: Agreement::BitExact,
    }
}

/// The dtypes the vector-width cases are checked with: every integer width, and small floats
/// of odd and even widths.
pub fn vector_width_types() -> Vec<DType> {
    let mut types: Vec<DType> = (1..=8).map(DType::Unsigned).collect();
    types.extend([3, 5, 7].map(DType::Signed));
    for name in ["f5e2m2", "f6e3m2", "f7e4m2", "f4e2m1", "f8e4m3"] {
        types.push(name.parse().expect("valid name"));
    }
    types
}

/// The cases `anybit-gpu-check` runs, in its order: the examples, the quantized matmul of every
/// weight type, every cast, the vector-width cases, `corpus`, then `random` random programs.
pub fn all_cases(rng: &mut impl Rng, random: usize, corpus: Vec<Case>) -> Vec<Case> {
    let mut cases = vec![vector_add_case(rng)];
    cases.extend((0..3).map(|_| matmul_case(rng)));
    cases.push(softmax_case(rng, 256));
    cases.push(softmax_case(rng, 1024));
    for weight in weight_types() {
        for group in [32, 128] {
            cases.push(quantized_matmul_case(rng, weight, group));
        }
    }
    for source in DType::all_small() {
        for target in [DType::F16, DType::Bf16] {
            for per_thread in [1, 8] {
                cases.push(cast_case(rng, source, target, per_thread));
            }
        }
    }
    for dtype in vector_width_types() {
        for per_thread in [32, 128] {
            for with_shared in [false, true] {
                cases.push(vector_width_case(rng, dtype, per_thread, with_shared));
            }
        }
        cases.push(copy_async_width_case(rng, dtype));
    }
    cases.extend(corpus);
    cases.extend((0..random).map(|index| random_program_case(rng, index)));
    cases
}
