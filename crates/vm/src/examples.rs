//! Example programs, built with the [`ProgramBuilder`]: vector add, a tiled f16 matmul on
//! tensor-core layouts, a row softmax, and a quantized matmul for any weight type.
//!
//! What this module promises: every function returns a program that the verifier accepts, and
//! whose text is in `examples/*.anybit` at the repository root for the instance named there
//! (tests check both). They are the reference programs for the interpreter and code generation.

use anybit_dtype::DType;
use anybit_layout::fragments::{mma_m16n8k16_a, mma_m16n8k16_b, mma_m16n8k16_c};
use anybit_layout::{LayoutError, RegisterLayout, SharedLayout};

use crate::builder::{block_x, block_y, ProgramBuilder};
use crate::ir::{Expr, Program, ReduceOp, Unroll};

/// A parameter of an example generator that it does not support.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExampleError {
    /// The group size of [`quantized_matmul`] is not a positive multiple of 16.
    #[error("group size {0} is not a positive multiple of 16")]
    GroupSize(usize),
    /// The row length of [`softmax`] is not a positive multiple of 256.
    #[error("row length {0} is not a positive multiple of 256")]
    RowLength(usize),
    /// A size does not fit the `i32` of scalar expressions.
    #[error("{0} does not fit i32")]
    TooLarge(usize),
    /// Building a layout failed.
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
}

fn int(value: usize) -> Result<i32, ExampleError> {
    i32::try_from(value).map_err(|_| ExampleError::TooLarge(value))
}

/// `parts[0].compose(parts[1]).compose(...)`.
fn chain(parts: &[RegisterLayout]) -> Result<RegisterLayout, LayoutError> {
    let mut layouts = parts.iter();
    let Some(first) = layouts.next() else {
        return Err(LayoutError("empty chain".to_string()));
    };
    layouts.try_fold(first.clone(), |outer, inner| outer.compose(inner))
}

/// `c = a + b` for f16 vectors of length `n`: 128 threads, 8 contiguous elements per thread,
/// 1024 elements per block.
pub fn vector_add() -> Result<Program, ExampleError> {
    let mut b = ProgramBuilder::new("vector_add");
    b.doc("c = a + b for f16 vectors of length n; each block adds 1024 elements.");
    let a = b.pointer("a", DType::F16);
    let bp = b.pointer("b", DType::F16);
    let c = b.pointer("c", DType::F16);
    let n = b.int_multiple_of("n", 8);
    b.grid([n.clone().ceil_div(1024)]).threads(128);
    let base = b.let_("base", block_x() * 1024);
    let ga = b.view_global("ga", &a, [n.clone()], [1]);
    let gb = b.view_global("gb", &bp, [n.clone()], [1]);
    let gc = b.view_global("gc", &c, [n], [1]);
    let tile = RegisterLayout::spatial(&[128]).compose(&RegisterLayout::local(&[8]))?;
    let x = b.load_global("x", &ga, [base.clone()], tile.clone());
    let y = b.load_global("y", &gb, [base.clone()], tile);
    let z = b.add("z", &x, &y);
    b.store_global(&gc, [base], &z);
    Ok(b.finish())
}

/// `C = A·B` with `A: [M, K]`, `B: [K, N]`, `C: [M, N]` row-major f16, f32 accumulation.
///
/// 128 threads (4 warps, 2×2) compute a 64×64 tile of C; each warp owns 32×32, that is 2×4
/// `mma.m16n8k16` tiles. The K loop streams 64×32 tiles of A and 32×64 tiles of B into shared
/// memory with `copy_async`, double-buffered (two groups in flight), and loads them into the
/// tensor-core operand layouts. Out-of-bounds tiles read zeros, so any M, N, K work.
pub fn matmul_f16() -> Result<Program, ExampleError> {
    let warps_a = chain(&[
        RegisterLayout::spatial(&[2, 1]),
        RegisterLayout::replicate(2, 2),
        RegisterLayout::local(&[2, 2]),
        mma_m16n8k16_a(),
    ])?;
    let warps_b = chain(&[
        RegisterLayout::replicate(2, 2),
        RegisterLayout::spatial(&[1, 2]),
        RegisterLayout::local(&[2, 4]),
        mma_m16n8k16_b(),
    ])?;
    let warps_c = chain(&[
        RegisterLayout::spatial(&[2, 2]),
        RegisterLayout::local(&[2, 4]),
        mma_m16n8k16_c(),
    ])?;
    let (bm, bn, bk) = (64, 64, 32);

    let mut b = ProgramBuilder::new("matmul_f16");
    b.doc("C = A B for row-major f16 matrices A [m, k], B [k, n], C [m, n]; f32 accumulation.")
        .doc("Each block computes a 64x64 tile of C with 4 warps (2x2) of mma.m16n8k16 tiles;")
        .doc("tiles of A and B stream through shared memory with double-buffered copy_async.");
    let pa = b.pointer("a", DType::F16);
    let pb = b.pointer("b", DType::F16);
    let pc = b.pointer("c", DType::F16);
    let m = b.int("m");
    let n = b.int_multiple_of("n", 8);
    let k = b.int_multiple_of("k", 8);
    b.grid([n.clone().ceil_div(bn), m.clone().ceil_div(bm)])
        .threads(128);
    let m0 = b.let_("m0", block_y() * bm);
    let n0 = b.let_("n0", block_x() * bn);
    let ga = b.view_global("ga", &pa, [m.clone(), k.clone()], [k.clone(), 1.into()]);
    let gb = b.view_global("gb", &pb, [k.clone(), n.clone()], [n.clone(), 1.into()]);
    let gc = b.view_global("gc", &pc, [m, n.clone()], [n, 1.into()]);
    let tile_a = SharedLayout::row_major(&[bm as usize, bk as usize]);
    let tile_b = SharedLayout::row_major(&[bk as usize, bn as usize]);
    let as0 = b.alloc_shared("as0", DType::F16, tile_a.clone());
    let bs0 = b.alloc_shared("bs0", DType::F16, tile_b.clone());
    let as1 = b.alloc_shared("as1", DType::F16, tile_a);
    let bs1 = b.alloc_shared("bs1", DType::F16, tile_b);
    let acc = b.alloc_register("acc", DType::F32, warps_c, Some(0.0.into()));
    b.copy_async(&as0, &ga, [m0.clone(), 0.into()]);
    b.copy_async(&bs0, &gb, [0.into(), n0.clone()]);
    b.commit_group();
    b.for_("k0", 0, k, 2 * bk, Unroll::None, |b, k0| {
        // Stage 1 loads while stage 0 computes, then the other way round.
        let stages = [
            (&as0, &bs0, &as1, &bs1, bk),
            (&as1, &bs1, &as0, &bs0, 2 * bk),
        ];
        for (compute_a, compute_b, load_a, load_b, ahead) in stages {
            b.copy_async(load_a, &ga, [m0.clone(), &k0 + ahead]);
            b.copy_async(load_b, &gb, [&k0 + ahead, n0.clone()]);
            b.commit_group();
            b.wait_group(1);
            b.barrier();
            let a = b.load_shared("a", compute_a, [0, 0], warps_a.clone());
            let bb = b.load_shared("b", compute_b, [0, 0], warps_b.clone());
            b.dot("acc", &a, &bb, &acc);
            b.barrier();
        }
    });
    b.wait_group(0);
    for tile in [&as0, &bs0, &as1, &bs1] {
        b.free_shared(tile);
    }
    let out = b.cast("out", &acc, DType::F16);
    b.store_global(&gc, [m0, n0], &out);
    Ok(b.finish())
}

/// Softmax over each row of an f16 matrix `x: [m, row_len]` (row-major) into `y`, computed in
/// f32. Each block handles 4 rows, one warp per row; every thread holds 8 contiguous elements in
/// each of `row_len / 256` chunks. `row_len` must be a multiple of 256: the IR has no index
/// tensors, so a partial row could not be masked with `-inf` (out-of-bounds loads read 0).
pub fn softmax(row_len: usize) -> Result<Program, ExampleError> {
    if row_len == 0 || !row_len.is_multiple_of(256) {
        return Err(ExampleError::RowLength(row_len));
    }
    let len = Expr::Const(int(row_len)?);
    let rows = chain(&[
        RegisterLayout::spatial(&[4, 1]),
        RegisterLayout::local(&[1, row_len / 256]),
        RegisterLayout::spatial(&[1, 32]),
        RegisterLayout::local(&[1, 8]),
    ])?;
    let mut b = ProgramBuilder::new(&format!("softmax_{row_len}"));
    b.doc(&format!(
        "y = softmax(x) over each row of x [m, {row_len}] (f16, computed in f32)."
    ))
    .doc("Each block handles 4 rows, one warp per row.");
    let px = b.pointer("x", DType::F16);
    let py = b.pointer("y", DType::F16);
    let m = b.int("m");
    b.grid([m.clone().ceil_div(4)]).threads(128);
    let row = b.let_("row", block_x() * 4);
    let gx = b.view_global("gx", &px, [m.clone(), len.clone()], [len.clone(), 1.into()]);
    let gy = b.view_global("gy", &py, [m, len.clone()], [len, 1.into()]);
    let x = b.load_global("x", &gx, [row.clone(), 0.into()], rows);
    let xf = b.cast("xf", &x, DType::F32);
    let top = b.reduce("top", ReduceOp::Max, &xf, 1);
    let shifted = b.sub("shifted", &xf, &top);
    let e = b.exp("e", &shifted);
    let total = b.reduce("total", ReduceOp::Sum, &e, 1);
    let p = b.div("p", &e, &total);
    let out = b.cast("out", &p, DType::F16);
    b.store_global(&gy, [row, 0.into()], &out);
    Ok(b.finish())
}

/// `y = x · dequant(W)ᵀ` for `x: [m, k]` f16 and weights `W: [n, k]` of type `weight`, packed
/// row-major (a `ptr<weight>`), with group-wise scales `[n, k / group_size]` (f16) and, for
/// unsigned weight types, zero points `[n, k / group_size]` of type `weight`:
/// `dequant(W)[j, i] = (W[j, i] - zero[j, i / g]) · scale[j, i / g]`, with the subtraction and
/// the product in f16.
///
/// 128 threads (4 warps side by side along n) compute a 16×64 tile of y with
/// `mma.m16n8k16` layouts; the K loop takes `gcd(group_size, 64)` columns at a time, loads the
/// weight tile straight into the B-operand layout (W is viewed transposed, `[k, n]` with strides
/// `[1, k]`), converts it to f16, applies zero points and scales broadcast along k, and
/// accumulates in f32. `k` must be a multiple of the group size. `group_size` must be a
/// positive multiple of 16.
pub fn quantized_matmul(weight: DType, group_size: usize) -> Result<Program, ExampleError> {
    if group_size == 0 || !group_size.is_multiple_of(16) {
        return Err(ExampleError::GroupSize(group_size));
    }
    let group = int(group_size)?;
    let bk = gcd(group_size, 64);
    let (bm, bn) = (16, 64);
    let layout_x = chain(&[
        RegisterLayout::replicate(2, 4),
        RegisterLayout::local(&[1, bk / 16]),
        mma_m16n8k16_a(),
    ])?;
    let layout_w = chain(&[
        RegisterLayout::spatial(&[1, 4]),
        RegisterLayout::local(&[bk / 16, 2]),
        mma_m16n8k16_b(),
    ])?;
    let layout_group = layout_w.reduce(0);
    let layout_y = chain(&[
        RegisterLayout::spatial(&[1, 4]),
        RegisterLayout::local(&[1, 2]),
        mma_m16n8k16_c(),
    ])?;
    let with_zeros = matches!(weight, DType::Unsigned(_));

    let mut b = ProgramBuilder::new(&format!("quantized_matmul_{weight}_g{group_size}"));
    b.doc(&format!(
        "y = x dequant(w)^T: x [m, k] f16, w [n, k] {weight} packed row-major,"
    ))
    .doc(&format!(
        "scales [n, k/{group_size}] f16{}; y [m, n] f16, f32 accumulation.",
        if with_zeros {
            format!(", zero points [n, k/{group_size}] {weight}")
        } else {
            String::new()
        }
    ))
    .doc("Each block computes a 16x64 tile of y with 4 warps of mma.m16n8k16 tiles.");
    let px = b.pointer("x", DType::F16);
    let pw = b.pointer("w", weight);
    let ps = b.pointer("scales", DType::F16);
    let pz = with_zeros.then(|| b.pointer("zeros", weight));
    let py = b.pointer("y", DType::F16);
    let m = b.int("m");
    let n = b.int_multiple_of("n", 8);
    let k = b.int_multiple_of("k", group_size as u32);
    b.grid([n.clone().ceil_div(bn), m.clone().ceil_div(bm)])
        .threads(128);
    let m0 = b.let_("m0", block_y() * bm);
    let n0 = b.let_("n0", block_x() * bn);
    let groups = b.let_("groups", &k / group);
    let gx = b.view_global("gx", &px, [m.clone(), k.clone()], [k.clone(), 1.into()]);
    let gw = b.view_global("gw", &pw, [k.clone(), n.clone()], [1.into(), k.clone()]);
    let gs = b.view_global(
        "gs",
        &ps,
        [groups.clone(), n.clone()],
        [1.into(), groups.clone()],
    );
    let gz = pz.map(|pz| {
        b.view_global(
            "gz",
            &pz,
            [groups.clone(), n.clone()],
            [1.into(), groups.clone()],
        )
    });
    let acc = b.alloc_register("acc", DType::F32, layout_y, Some(0.0.into()));
    b.for_("k0", 0, k, int(bk)?, Unroll::None, |b, k0| {
        let g = b.let_("g", &k0 / group);
        let xa = b.load_global("xa", &gx, [m0.clone(), k0.clone()], layout_x);
        let wq = b.load_global("wq", &gw, [k0, n0.clone()], layout_w);
        let wf = b.cast("wf", &wq, DType::F16);
        if let Some(gz) = &gz {
            let zq = b.load_global("zq", gz, [g.clone(), n0.clone()], layout_group.clone());
            let zf = b.cast("zf", &zq, DType::F16);
            b.sub("wf", &wf, &zf);
        }
        let scale = b.load_global("scale", &gs, [g, n0.clone()], layout_group);
        b.mul("wf", &wf, &scale);
        b.dot("acc", &xa, &wf, &acc);
    });
    let out = b.cast("out", &acc, DType::F16);
    let gy = b.view_global("gy", &py, [m, n.clone()], [n, 1.into()]);
    b.store_global(&gy, [m0, n0], &out);
    Ok(b.finish())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Every example with the name of its text file under `examples/`.
pub fn all() -> Result<Vec<(&'static str, Program)>, ExampleError> {
    Ok(vec![
        ("vector_add.anybit", vector_add()?),
        ("matmul_f16.anybit", matmul_f16()?),
        ("softmax.anybit", softmax(1024)?),
        (
            "quantized_matmul_u4_g128.anybit",
            quantized_matmul(DType::Unsigned(4), 128)?,
        ),
    ])
}
