//! Random small programs for differential testing (interpreter vs GPU).
//!
//! Every program has the same interface, so one harness can run any of them:
//! `program NAME(x: ptr<A>, y: ptr<A>, out: ptr<B>, m: i32, n: i32)` reads two `[m, n]`
//! row-major tensors and writes one `[m, n]` tensor, one tile per block, the grid covering
//! `[m, n]` with partial tiles at the edges. What happens in between is drawn at random: casts
//! between any types, float and integer arithmetic, comparisons and `where`, a `view` round trip
//! through bytes, a row reduction with broadcasting. Layouts are random compositions of the
//! layout primitives, with replication.
//!
//! Promise: every generated program passes `anybit_vm::verify` (tested over many seeds).

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;
use anybit_vm::builder::{block_x, block_y, ProgramBuilder};
use anybit_vm::{BinaryOp, CmpOp, Program, ReduceOp};
use rand::prelude::*;

/// How GPU results of a program must relate to the interpreter's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Agreement {
    /// Every output code is identical (NaN matches any NaN).
    BitExact,
    /// Sums in another order or approximate `exp`: an element passes when it is within `ulps`
    /// steps of the output type from the interpreter's value, or within `fraction_of_max` of the
    /// largest magnitude of the interpreter's output (cancellation makes small results
    /// arbitrarily many ulps off while the absolute error stays tiny).
    Close { ulps: u32, fraction_of_max: f64 },
}

/// A generated program and what it exercises.
#[derive(Clone, Debug)]
pub struct RandomProgram {
    pub program: Program,
    /// One line: dtypes, layout and operations, for reports.
    pub description: String,
    pub input_dtype: DType,
    pub output_dtype: DType,
    pub agreement: Agreement,
}

fn small_types() -> Vec<DType> {
    let mut types = DType::all_small();
    types.retain(|dtype| dtype.bits() >= 2 || dtype.is_integer());
    types
}

fn all_types() -> Vec<DType> {
    let mut types = small_types();
    types.extend([DType::F16, DType::Bf16, DType::F32]);
    types
}

/// A random rank-2 register layout over exactly `threads` threads (a power of two).
pub fn random_layout(rng: &mut impl Rng, threads: usize) -> RegisterLayout {
    let replication = if rng.random_bool(0.2) { 2 } else { 1 };
    let spatial_threads = threads / replication;
    let log = spatial_threads.trailing_zeros();
    let rows_log = rng.random_range(0..=log);
    let spatial_shape = [1usize << rows_log, 1usize << (log - rows_log)];
    let spatial = if rng.random_bool(0.5) {
        RegisterLayout::spatial(&spatial_shape)
    } else {
        RegisterLayout::column_spatial(&spatial_shape)
    };
    let local = |rng: &mut dyn RngCore| -> RegisterLayout {
        let shape = [
            [1usize, 1, 2][rng.random_range(0..3)],
            [1usize, 2, 4][rng.random_range(0..3)],
        ];
        if rng.random_bool(0.5) {
            RegisterLayout::local(&shape)
        } else {
            RegisterLayout::column_local(&shape)
        }
    };
    let outer = local(rng);
    let inner = local(rng);
    let mut layout = outer.compose(&spatial).expect("same rank");
    if replication > 1 {
        let replicate = RegisterLayout::replicate(2, replication);
        layout = if rng.random_bool(0.5) {
            replicate.compose(&layout)
        } else {
            layout.compose(&replicate)
        }
        .expect("same rank");
    }
    layout.compose(&inner).expect("same rank")
}

/// The operations a program can apply between its loads and its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Body {
    Cast,
    FloatArithmetic(BinaryOp),
    IntegerArithmetic(BinaryOp),
    CompareWhere(CmpOp),
    ViewRoundTrip,
    RowMaxSubtract,
    RowSum,
}

/// Draws program number `index` from `rng`.
pub fn random_program(rng: &mut impl Rng, index: usize) -> RandomProgram {
    let threads = [32usize, 64, 128][rng.random_range(0..3)];
    let layout = random_layout(rng, threads);
    let input_dtype = *all_types().choose(rng).expect("not empty");
    let output_dtype = *all_types().choose(rng).expect("not empty");
    let arithmetic = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Min,
        BinaryOp::Max,
    ];
    let mut bodies = vec![
        Body::Cast,
        Body::FloatArithmetic(*arithmetic.choose(rng).expect("not empty")),
        Body::CompareWhere(*CmpOp::ALL.choose(rng).expect("not empty")),
        Body::RowMaxSubtract,
        Body::RowSum,
    ];
    if input_dtype.is_integer() {
        bodies.push(Body::IntegerArithmetic(
            *arithmetic.choose(rng).expect("not empty"),
        ));
    }
    let bits_per_thread = layout.local_size() * input_dtype.bits() as usize;
    if bits_per_thread.is_multiple_of(8) && layout.is_injective() {
        bodies.push(Body::ViewRoundTrip);
    }
    let body = *bodies.choose(rng).expect("not empty");
    // CompareWhere and ViewRoundTrip keep the input type.
    let output_dtype = match body {
        Body::CompareWhere(_) | Body::ViewRoundTrip | Body::IntegerArithmetic(_) => input_dtype,
        _ => output_dtype,
    };
    let name = format!("random_{index}");
    let mut b = ProgramBuilder::new(&name);
    let x = b.pointer("x", input_dtype);
    let y = b.pointer("y", input_dtype);
    let out = b.pointer("out", output_dtype);
    let m = b.int("m");
    let n = b.int("n");
    let [tile_rows, tile_cols] = [layout.shape()[0] as i32, layout.shape()[1] as i32];
    b.grid([n.clone().ceil_div(tile_cols), m.clone().ceil_div(tile_rows)]);
    b.threads(threads as u32);
    let row0 = b.let_("row0", block_y() * tile_rows);
    let col0 = b.let_("col0", block_x() * tile_cols);
    let gx = b.view_global("gx", &x, [m.clone(), n.clone()], [n.clone(), 1.into()]);
    let gy = b.view_global("gy", &y, [m.clone(), n.clone()], [n.clone(), 1.into()]);
    let gout = b.view_global("gout", &out, [m, n.clone()], [n, 1.into()]);
    let offsets = [row0, col0];
    let a = b.load_global("a", &gx, offsets.clone(), layout.clone());
    let other = b.load_global("b", &gy, offsets.clone(), layout.clone());
    let mut agreement = Agreement::BitExact;
    let result = match body {
        Body::Cast => b.cast("result", &a, output_dtype),
        Body::FloatArithmetic(op) => {
            let fa = b.cast("fa", &a, DType::F32);
            let fb = b.cast("fb", &other, DType::F32);
            let combined = b.binary("combined", op, &fa, &fb);
            let scaled = b.mul("scaled", &combined, 0.75);
            b.cast("result", &scaled, output_dtype)
        }
        Body::IntegerArithmetic(op) => {
            let combined = b.binary("combined", op, &a, &other);
            // i1 holds only -1 and 0.
            let step = if input_dtype.max_value() >= 1.0 {
                1
            } else {
                -1
            };
            b.add("result", &combined, step)
        }
        Body::CompareWhere(op) => {
            let condition = b.compare("condition", op, &a, &other);
            b.where_("result", &condition, &a, &other)
        }
        Body::ViewRoundTrip => {
            let bytes_layout = byte_layout(&layout, input_dtype);
            let bytes = b.view("bytes", &a, DType::Unsigned(8), bytes_layout);
            let bumped = b.add("bumped", &bytes, 3);
            b.view("result", &bumped, input_dtype, layout.clone())
        }
        Body::RowMaxSubtract => {
            let fa = b.cast("fa", &a, DType::F32);
            let row_max = b.reduce("row_max", ReduceOp::Max, &fa, 1);
            let shifted = b.sub("shifted", &fa, &row_max);
            b.cast("result", &shifted, output_dtype)
        }
        Body::RowSum => {
            agreement = Agreement::Close {
                ulps: 2,
                fraction_of_max: 1e-5,
            };
            let fa = b.cast("fa", &a, DType::F32);
            // Scaled by 2^-16 (exactly) so that sums of values near the f32 maximum stay
            // finite in any summation order.
            let scaled = b.mul("scaled", &fa, 1.0 / 65536.0);
            let row_sum = b.reduce("row_sum", ReduceOp::Sum, &scaled, 1);
            let total = b.add("total", &scaled, &row_sum);
            b.cast("result", &total, output_dtype)
        }
    };
    b.store_global(&gout, offsets, &result);
    RandomProgram {
        program: b.finish(),
        description: format!(
            "{name}: {input_dtype} -> {output_dtype}, {threads} threads, layout {layout}, {body:?}"
        ),
        input_dtype,
        output_dtype,
        agreement,
    }
}

/// A layout holding the same bits per thread as `layout` of `dtype`, as bytes: one thread's
/// bytes are local elements of a `[threads, bytes]` tensor.
fn byte_layout(layout: &RegisterLayout, dtype: DType) -> RegisterLayout {
    let bytes = layout.local_size() * dtype.bits() as usize / 8;
    RegisterLayout::spatial(&[layout.num_threads(), 1])
        .compose(&RegisterLayout::local(&[1, bytes]))
        .expect("same rank")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_programs_verify() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut bodies = std::collections::HashSet::new();
        for index in 0..400 {
            let generated = random_program(&mut rng, index);
            if let Err(error) = anybit_vm::verify(&generated.program) {
                panic!(
                    "{}\n{}\n{error}",
                    generated.description,
                    anybit_vm::print(&generated.program)
                );
            }
            let text = anybit_vm::print(&generated.program);
            assert_eq!(anybit_vm::parse(&text).unwrap(), generated.program);
            bodies.insert(
                generated
                    .description
                    .rsplit(", ")
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
        assert!(bodies.len() >= 10, "{bodies:?}");
    }
}
