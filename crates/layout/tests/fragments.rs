//! Tensor-core and ldmatrix fragments checked against the PTX ISA fragment tables.

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
    let a = parse("column_local(2,2).spatial(8,4).local(1,2)");
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
}

/// B (16×8, k×n): b0,b1 k=2t+{0,1} n=g; b2,b3 k+8.
#[test]
fn mma_m16n8k16_b_fragment_matches_ptx_table() {
    let b = parse("local(2,1).column_spatial(4,8).local(2,1)");
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
}

/// C/D (16×8 f32): c0,c1 row=g col=2t+{0,1}; c2,c3 row+8.
#[test]
fn mma_m16n8k16_c_fragment_matches_ptx_table() {
    let c = parse("local(2,1).spatial(8,4).local(1,2)");
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

/// ldmatrix.x4 (16-bit elements): lanes 8m..8m+7 give the addresses of the eight 16-byte rows of
/// matrix m; lane l then receives in register m the two elements at row l/4, columns
/// 2*(l%4)+{0,1} of matrix m. With lane addresses following `column_spatial(16,2).local(1,8)`
/// over a 16x16 block (matrices: rows 0-7/8-15 × columns 0-7/8-15, column block outer), the
/// result is exactly the mma A fragment.
#[test]
fn ldmatrix_x4_result_is_the_a_fragment() {
    let addresses = parse("column_spatial(16,2).local(1,8)");
    assert_eq!((addresses.num_threads(), addresses.local_size()), (32, 8));
    let a = parse("column_local(2,2).spatial(8,4).local(1,2)");
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
    // Rows of one address are 8 consecutive elements of a row.
    for lane in 0..32 {
        let start = addresses.coordinates(lane, 0);
        assert_eq!(start, vec![lane % 16, 8 * (lane / 16)]);
        for k in 0..8 {
            assert_eq!(addresses.coordinates(lane, k), vec![start[0], start[1] + k]);
        }
    }
}

/// Two B atoms side by side along n: the B operand of a 16x16 (k x n) tile for two n8 mma.
#[test]
fn b_fragments_side_by_side() {
    let b = parse("local(2,1).column_spatial(4,8).local(2,1)");
    let two = parse("local(1,2)").compose(&b).unwrap();
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
}
