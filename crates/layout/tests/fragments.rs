//! Tensor-core and ldmatrix fragments checked against the PTX ISA fragment tables: the
//! constructors of `anybit_layout::fragments`, which code generation divides layouts by.

use anybit_layout::fragments::{
    mma_m16n8k16_a, mma_m16n8k16_b, mma_m16n8k16_b_pair, mma_m16n8k16_c,
};
use anybit_layout::RegisterLayout;

fn parse(text: &str) -> RegisterLayout {
    match text.parse() {
        Ok(layout) => layout,
        Err(error) => panic!("{text}: {error}"),
    }
}

/// mma.m16n8k16 A (16×16 f16, row-major): a0,a1 row=g col=2t+{0,1}; a2,a3 row+8; a4,a5 col+8;
/// a6,a7 row+8 col+8, with g = lane / 4 and t = lane % 4.
#[test]
fn mma_m16n8k16_a_fragment_matches_ptx_table() {
    let a = mma_m16n8k16_a();
    assert_eq!(a.shape(), &[16, 16]);
    assert_eq!(a.num_threads(), 32);
    assert_eq!(a.local_size(), 8);
    for lane in 0..32 {
        let (group, tig) = (lane / 4, lane % 4);
        for reg in 0..8 {
            let row = group + if reg % 4 >= 2 { 8 } else { 0 };
            let col = tig * 2 + reg % 2 + if reg >= 4 { 8 } else { 0 };
            assert_eq!(
                a.coordinates(lane, reg),
                vec![row, col],
                "lane {lane} a{reg}"
            );
            assert_eq!(a.local_index_of(lane, &[row, col]), Some(reg));
        }
    }
    assert_eq!(a.to_string(), "column_local(2,2).spatial(8,4).local(1,2)");
}

/// B (16×8, k×n): b0,b1 k=2t+{0,1} n=g; b2,b3 k+8.
#[test]
fn mma_m16n8k16_b_fragment_matches_ptx_table() {
    let b = mma_m16n8k16_b();
    assert_eq!(b.shape(), &[16, 8]);
    assert_eq!((b.num_threads(), b.local_size()), (32, 4));
    for lane in 0..32 {
        let (group, tig) = (lane / 4, lane % 4);
        for reg in 0..4 {
            let k = tig * 2 + reg % 2 + if reg >= 2 { 8 } else { 0 };
            assert_eq!(
                b.coordinates(lane, reg),
                vec![k, group],
                "lane {lane} b{reg}"
            );
        }
    }
    assert_eq!(b.to_string(), "local(2,1).column_spatial(4,8).local(2,1)");
}

/// C/D (16×8 f32): c0,c1 row=g col=2t+{0,1}; c2,c3 row+8.
#[test]
fn mma_m16n8k16_c_fragment_matches_ptx_table() {
    let c = mma_m16n8k16_c();
    assert_eq!(c.shape(), &[16, 8]);
    assert_eq!((c.num_threads(), c.local_size()), (32, 4));
    for lane in 0..32 {
        let (group, tig) = (lane / 4, lane % 4);
        for reg in 0..4 {
            let row = group + if reg >= 2 { 8 } else { 0 };
            let col = tig * 2 + reg % 2;
            assert_eq!(
                c.coordinates(lane, reg),
                vec![row, col],
                "lane {lane} c{reg}"
            );
        }
    }
    assert_eq!(c.to_string(), "local(2,1).spatial(8,4).local(1,2)");
}

/// The lane addresses code generation gives `ldmatrix.x4` and `ldmatrix.x4.trans` over a 16x16
/// block: lanes 8m..8m+7 address the eight rows of matrix m (rows 0-7/8-15 × columns 0-7/8-15,
/// column block outer), each row 8 consecutive elements.
fn ldmatrix_addresses() -> RegisterLayout {
    let addresses = parse("column_spatial(16,2).local(1,8)");
    assert_eq!((addresses.num_threads(), addresses.local_size()), (32, 8));
    for lane in 0..32 {
        let start = addresses.coordinates(lane, 0);
        assert_eq!(start, vec![lane % 16, 8 * (lane / 16)]);
        for k in 0..8 {
            assert_eq!(addresses.coordinates(lane, k), vec![start[0], start[1] + k]);
        }
    }
    addresses
}

/// ldmatrix.x4 (16-bit elements): lanes 8m..8m+7 give the addresses of the eight 16-byte rows of
/// matrix m; lane l then receives in register m the two elements at row l/4, columns
/// 2*(l%4)+{0,1} of matrix m. With the lane addresses above, the result is exactly the mma A
/// fragment.
#[test]
fn ldmatrix_x4_result_is_the_a_fragment() {
    let addresses = ldmatrix_addresses();
    let a = mma_m16n8k16_a();
    for lane in 0..32 {
        for matrix in 0..4 {
            // The row address this lane's data comes from, and the row's first element.
            let source_lane = 8 * matrix + lane / 4;
            let row_start = addresses.coordinates(source_lane, 0);
            for half in 0..2 {
                let column = row_start[1] + 2 * (lane % 4) + half;
                assert_eq!(
                    a.coordinates(lane, 2 * matrix + half),
                    vec![row_start[0], column],
                    "lane {lane} matrix {matrix} half {half}"
                );
            }
        }
    }
}

/// ldmatrix.x4.trans: each 8x8 matrix arrives transposed, so lane l receives in register m the
/// elements at rows 2*(l%4)+{0,1}, column l/4 of matrix m. With the same lane addresses over a
/// row-major k × n tile, the result is two B fragments side by side along n.
#[test]
fn ldmatrix_x4_trans_result_is_two_b_fragments() {
    let addresses = ldmatrix_addresses();
    let pair = mma_m16n8k16_b_pair();
    assert_eq!(pair.shape(), &[16, 16]);
    assert_eq!((pair.num_threads(), pair.local_size()), (32, 8));
    for lane in 0..32 {
        for matrix in 0..4 {
            // Matrix m's first row, from lane 8m; its rows follow from lanes 8m+1..8m+7.
            let origin = addresses.coordinates(8 * matrix, 0);
            for half in 0..2 {
                let row = origin[0] + 2 * (lane % 4) + half;
                let column = origin[1] + lane / 4;
                assert_eq!(
                    addresses.coordinates(8 * matrix + 2 * (lane % 4) + half, 0),
                    vec![row, origin[1]],
                    "lane {lane} matrix {matrix} half {half}: the row's address"
                );
                assert_eq!(
                    pair.coordinates(lane, 2 * matrix + half),
                    vec![row, column],
                    "lane {lane} matrix {matrix} half {half}"
                );
            }
        }
    }
}

/// Two B atoms side by side along n: the B operand of a 16x16 (k x n) tile for two n8 mma.
#[test]
fn b_fragments_side_by_side() {
    let b = mma_m16n8k16_b();
    let two = mma_m16n8k16_b_pair();
    assert_eq!(two.shape(), &[16, 16]);
    assert_eq!(two.divide(&b), Some(parse("local(1,2)")));
    for lane in 0..32 {
        for reg in 0..8 {
            let (group, tig) = (lane / 4, lane % 4);
            let (atom, r) = (reg / 4, reg % 4);
            let k = tig * 2 + r % 2 + if r >= 2 { 8 } else { 0 };
            assert_eq!(two.coordinates(lane, reg), vec![k, 8 * atom + group]);
        }
    }
    assert_eq!(
        two.to_string(),
        "column_local(2,2).column_spatial(4,8).local(2,1)"
    );
}
