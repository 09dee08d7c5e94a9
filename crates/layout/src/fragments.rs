//! The register layouts of tensor-core and `ldmatrix` fragments: the atoms that instruction
//! selection divides layouts by.
//!
//! What this module promises: each constructor returns the layout that the named PTX ISA figure
//! draws (section "Matrix Fragments for mma.m16n8k16 with floating point type", and for
//! `ldmatrix` section "Warp-level matrix load instruction: ldmatrix"), over one warp of 32
//! lanes; `tests/fragments.rs` checks every lane and register against those tables. Code
//! generation uses exactly these values, so what the tests check is what it emits.
//!
//! Notation of the tables: for lane `l`, `g = l / 4` (groupID) and `t = l % 4`
//! (threadID_in_group).

use crate::RegisterLayout;

/// `outer` tiles of `inner`. Every fragment below composes rank-2 layouts of at most 32 threads
/// and 8 local slots, which cannot fail (composition fails only on different ranks or on sizes
/// that overflow `usize`).
fn tiled(outer: RegisterLayout, inner: &RegisterLayout) -> RegisterLayout {
    match outer.compose(inner) {
        Ok(layout) => layout,
        Err(error) => panic!("fragment layouts are fixed and compose: {error}"),
    }
}

/// The A operand of `mma.sync.aligned.m16n8k16` with 16-bit inputs (f16, bf16), 16×16 (m × k):
/// registers a0,a1 at row `g`, columns `2t + {0,1}`; a2,a3 at row `g + 8`; a4,a5 at column
/// `+ 8`; a6,a7 at row `g + 8`, column `+ 8` (PTX ISA figure "MMA .m16n8k16 fragment layout for
/// matrix A with .f16/.bf16 type"). It is also what `ldmatrix.x4` returns when lanes 0–15
/// point at rows 0–15 of columns 0–7 and lanes 16–31 at rows 0–15 of columns 8–15.
///
/// `column_local(2,2).spatial(8,4).local(1,2)`: 32 threads, 8 slots.
pub fn mma_m16n8k16_a() -> RegisterLayout {
    let quadrants = tiled(
        RegisterLayout::column_local(&[2, 2]),
        &RegisterLayout::spatial(&[8, 4]),
    );
    tiled(quadrants, &RegisterLayout::local(&[1, 2]))
}

/// The B operand of `mma.sync.aligned.m16n8k16` with 16-bit inputs, 16×8 (k × n): registers
/// b0,b1 at k `2t + {0,1}`, n `g`; b2,b3 at k `+ 8` (PTX ISA figure "MMA .m16n8k16 fragment
/// layout for matrix B with .f16/.bf16 type").
///
/// `local(2,1).column_spatial(4,8).local(2,1)`: 32 threads, 4 slots.
pub fn mma_m16n8k16_b() -> RegisterLayout {
    let halves = tiled(
        RegisterLayout::local(&[2, 1]),
        &RegisterLayout::column_spatial(&[4, 8]),
    );
    tiled(halves, &RegisterLayout::local(&[2, 1]))
}

/// The C and D operands (accumulator and result) of `mma.sync.aligned.m16n8k16` with f32
/// accumulators, 16×8 (m × n): registers c0,c1 at row `g`, columns `2t + {0,1}`; c2,c3 at row
/// `g + 8` (PTX ISA figure "MMA .m16n8k16 fragment layout for accumulator matrix C/D with .f32
/// type").
///
/// `local(2,1).spatial(8,4).local(1,2)`: 32 threads, 4 slots.
pub fn mma_m16n8k16_c() -> RegisterLayout {
    let halves = tiled(
        RegisterLayout::local(&[2, 1]),
        &RegisterLayout::spatial(&[8, 4]),
    );
    tiled(halves, &RegisterLayout::local(&[1, 2]))
}

/// Two B operands of `mma.sync.aligned.m16n8k16` side by side along n, 16×16 (k × n): slots
/// 0–3 are the B fragment of columns 0–7, slots 4–7 that of columns 8–15. It is what
/// `ldmatrix.x4.trans` returns from a row-major k × n tile when lanes 0–15 point at rows 0–15
/// of columns 0–7 and lanes 16–31 at rows 0–15 of columns 8–15 (PTX ISA figure "ldmatrix
/// fragment layout", transposed: lane `l` receives row `2t + {0,1}`, column `g` of each 8×8
/// matrix).
///
/// `column_local(2,2).column_spatial(4,8).local(2,1)`: 32 threads, 8 slots.
pub fn mma_m16n8k16_b_pair() -> RegisterLayout {
    tiled(RegisterLayout::local(&[1, 2]), &mma_m16n8k16_b())
}
