//! Shared layouts: offsets, swizzles, text form, and bank-conflict counting.

use std::collections::HashSet;

use anybit_layout::{
    register_read_wavefronts, shared_wavefronts, RegisterLayout, SharedLayout, Swizzle,
};
use proptest::prelude::*;

fn shared(text: &str) -> SharedLayout {
    match text.parse() {
        Ok(layout) => layout,
        Err(error) => panic!("{text}: {error}"),
    }
}

fn register(text: &str) -> RegisterLayout {
    match text.parse() {
        Ok(layout) => layout,
        Err(error) => panic!("{text}: {error}"),
    }
}

fn all_coordinates(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![vec![]];
    for &size in shape {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                (0..size).map(move |c| {
                    let mut next = prefix.clone();
                    next.push(c);
                    next
                })
            })
            .collect();
    }
    out
}

#[test]
fn offsets_of_basic_layouts() {
    let row = SharedLayout::row_major(&[4, 8]);
    assert_eq!(row.offset(&[2, 3]), 19);
    assert_eq!(row.span(), 32);
    let column = SharedLayout::column_major(&[4, 8]);
    assert_eq!(column.offset(&[2, 3]), 14);
    assert_eq!(column.span(), 32);
    // Eight contiguous 64x8 column blocks.
    let blocked = SharedLayout::strided(&[vec![(64, 8)], vec![(8, 512), (8, 1)]]).unwrap();
    assert_eq!(blocked.shape(), &[64, 64]);
    assert_eq!(blocked.offset(&[3, 17]), 2 * 512 + 3 * 8 + 1);
    assert_eq!(blocked.span(), 4096);
    // Padding: rows of 72 elements for a 64-wide tile.
    let padded = SharedLayout::strided(&[vec![(64, 72)], vec![(64, 1)]]).unwrap();
    assert_eq!(padded.span(), 63 * 72 + 64);
    assert_eq!(padded.checked_offset(&[1, 0]), Some(72));
    assert_eq!(padded.checked_offset(&[64, 0]), None);
    assert_eq!(padded.checked_offset(&[1]), None);
}

#[test]
fn swizzle_xors_chunk_index_with_row() {
    let swizzle = Swizzle::new(3, 3, 6).unwrap();
    let tile = SharedLayout::row_major(&[64, 64]).with_swizzle(swizzle);
    // Row 5, chunk 2 (columns 16..24) lands in chunk 2 ^ 5 = 7.
    assert_eq!(tile.offset(&[5, 17]), 5 * 64 + 7 * 8 + 1);
    assert_eq!(tile.offset(&[8, 0]), 8 * 64);
    assert_eq!(tile.span(), 4096);
    let offsets: HashSet<usize> = all_coordinates(&[64, 64])
        .iter()
        .map(|c| tile.offset(c))
        .collect();
    assert_eq!(offsets.len(), 4096);
    assert!(offsets.iter().all(|&o| o < 4096));
    assert_eq!(swizzle.apply(0b101_010_001), 0b101_111_001);
}

#[test]
fn swizzles_that_are_not_bijections_are_rejected() {
    assert_eq!(
        Swizzle::new(3, 3, 4).unwrap_err().to_string(),
        "swizzle(bits=3,base=3,shift=4): source bits 4..7 overlap destination bits 3..6, so it is not a bijection"
    );
    assert!(Swizzle::new(3, 30, 0).is_err());
    assert!(Swizzle::new(2, 4, 0).is_ok());
    assert!(Swizzle::new(0, 3, 3).is_ok());
}

#[test]
fn strided_validation() {
    assert_eq!(
        SharedLayout::strided(&[vec![(0, 1)]])
            .unwrap_err()
            .to_string(),
        "dimension 0 has a sub-dimension of size 0; sizes must be at least 1"
    );
    assert_eq!(
        SharedLayout::strided(&[vec![(3, usize::MAX)]])
            .unwrap_err()
            .to_string(),
        "the span of the layout overflows usize"
    );
    let scalar = SharedLayout::strided(&[vec![]]).unwrap();
    assert_eq!((scalar.shape(), scalar.span()), (&[1][..], 1));
}

#[test]
fn text_form() {
    let cases = [
        ("row_major(64,32)", "row_major(64,32)"),
        ("column_major( 8 , 4 )", "column_major(8,4)"),
        ("strided([64:32],[32:1])", "row_major(64,32)"),
        ("strided([64:8],[8:512,8:1])", "strided([64:8],[8:512,8:1])"),
        (
            "row_major(64,64) . swizzle(bits=3, base=3, shift=6)",
            "row_major(64,64).swizzle(bits=3,base=3,shift=6)",
        ),
        ("strided([])", "strided([])"),
        ("row_major()", "row_major()"),
    ];
    for (text, printed) in cases {
        let layout = shared(text);
        assert_eq!(layout.to_string(), printed, "{text}");
        assert_eq!(shared(printed), layout);
    }
    let errors: &[(&str, usize, &str)] = &[
        ("row_mayor(4)", 0, "expected a shared layout (row_major, column_major or strided), found 'row_mayor'"),
        ("strided([4 1])", 11, "expected ':' between a size and its stride, found number 1"),
        ("row_major(4).swizzle(bits=3,base=3)", 34, "expected ',' before 'shift=', found ')'"),
        ("row_major(4).swizzle(bits=3,base=3,shift=4)", 13, "swizzle(bits=3,base=3,shift=4): source bits 4..7 overlap destination bits 3..6, so it is not a bijection"),
        ("row_major(4).swizzle(bits=4294967296,base=3,shift=4)", 26, "number too large"),
        ("row_major(4).twist(1)", 13, "expected 'swizzle' after '.', found 'twist'"),
        ("row_major(4) x", 13, "expected end of input, found 'x'"),
        ("strided([0:1])", 9, "sizes must be at least 1"),
    ];
    for &(text, position, message) in errors {
        let error = text.parse::<SharedLayout>().unwrap_err();
        assert_eq!(
            (error.position, error.message.as_str()),
            (position, message),
            "{text}"
        );
    }
}

#[test]
fn wavefronts_of_simple_warp_accesses() {
    let lanes = |f: &dyn Fn(u64) -> (u64, u32)| (0..32).map(f).collect::<Vec<_>>();
    // Consecutive 4-byte words: one wavefront.
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 4, 4))), 1);
    // Stride of two words: two lanes per bank.
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 8, 4))), 2);
    // Everybody in bank 0, different words: 32 wavefronts.
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 128, 4))), 32);
    // Everybody reading the same word: broadcast.
    assert_eq!(shared_wavefronts(&lanes(&|_| (64, 4))), 1);
    // Bytes of consecutive addresses share words.
    assert_eq!(shared_wavefronts(&lanes(&|i| (i, 1))), 1);
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 2, 2))), 1);
    // 8-byte and 16-byte vectors: half- and quarter-warp phases.
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 8, 8))), 2);
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 16, 16))), 4);
    // 16-byte rows of a row-major 64-wide f16 tile: all eight lanes of a phase on banks 0..3.
    assert_eq!(shared_wavefronts(&lanes(&|i| (i * 128, 16))), 32);
    // Inactive lanes cost nothing; no lanes, no wavefronts.
    assert_eq!(
        shared_wavefronts(&lanes(&|i| (i * 4, if i < 4 { 4 } else { 0 }))),
        1
    );
    assert_eq!(shared_wavefronts(&[]), 0);
    // Two warps.
    let two_warps: Vec<(u64, u32)> = (0..64).map(|i| (i * 4, 4)).collect();
    assert_eq!(shared_wavefronts(&two_warps), 2);
}

/// A warp reading a 64x64 f16 tile with ldmatrix.x4: lane `l` of each ldmatrix gives the
/// address of 16 bytes (8 f16) of a row of a 16x16 block (lanes 0..15 rows 0..15 at column 0,
/// lanes 16..31 the same rows at column 8), so the addresses follow
/// `column_spatial(16,2).local(1,8)`; sixteen such blocks tile the 64x64 tile.
#[test]
fn ldmatrix_on_row_major_f16_conflicts_and_a_swizzle_removes_it() {
    let addresses = register("local(4,4).column_spatial(16,2).local(1,8)");
    assert_eq!(addresses.shape(), &[64, 64]);
    let plain = SharedLayout::row_major(&[64, 64]);
    // Each of the 16 ldmatrix takes 4 phases of 8 rows, all eight in banks 0..3: 8 wavefronts.
    assert_eq!(
        register_read_wavefronts(&addresses, &plain, 16, 16).unwrap(),
        16 * 4 * 8
    );
    let swizzled = plain.clone().with_swizzle(Swizzle::new(3, 3, 6).unwrap());
    // Conflict-free: one wavefront per phase, the minimum for 512 bytes.
    assert_eq!(
        register_read_wavefronts(&addresses, &swizzled, 16, 16).unwrap(),
        16 * 4
    );
    // Padding rows to 72 elements (144 bytes) also removes the conflict.
    let padded = SharedLayout::strided(&[vec![(64, 72)], vec![(64, 1)]]).unwrap();
    assert_eq!(
        register_read_wavefronts(&addresses, &padded, 16, 16).unwrap(),
        16 * 4
    );
}

#[test]
fn reading_the_mma_c_fragment_from_shared() {
    let c = register("local(2,1).spatial(8,4).local(1,2)");
    let tile = SharedLayout::row_major(&[16, 8]);
    // f32, one element per access: rows g and g+4 share banks (row = 8 words), 2 wavefronts each.
    assert_eq!(register_read_wavefronts(&c, &tile, 32, 4).unwrap(), 4 * 2);
    // Two f32 per 8-byte access: half-warps cover rows 0..3 and 4..7, one wavefront each.
    assert_eq!(register_read_wavefronts(&c, &tile, 32, 8).unwrap(), 2 * 2);
    // f16 pairs as one 4-byte access: rows are 16 bytes, so eight rows fit the 32 banks.
    assert_eq!(register_read_wavefronts(&c, &tile, 16, 4).unwrap(), 2);
    // 4-bit elements: the pair is one byte; lanes of a quad share a word.
    assert_eq!(register_read_wavefronts(&c, &tile, 4, 1).unwrap(), 2);
}

#[test]
fn register_read_wavefronts_rejects_mismatches() {
    let c = register("local(2,1).spatial(8,4).local(1,2)");
    let error = |shared: &SharedLayout, bits, bytes| {
        register_read_wavefronts(&c, shared, bits, bytes)
            .unwrap_err()
            .to_string()
    };
    let tile = SharedLayout::row_major(&[16, 8]);
    assert_eq!(
        error(&SharedLayout::row_major(&[16, 16]), 16, 4),
        "register layout local(2,1).spatial(8,4).local(1,2) has shape [16, 8] but shared layout row_major(16,16) has shape [16, 16]"
    );
    assert_eq!(
        error(&tile, 3, 1),
        "an access of 1 bytes does not hold a whole number of 3-bit elements"
    );
    assert_eq!(
        error(&tile, 16, 16),
        "local(2,1).spatial(8,4).local(1,2) holds 4 elements per thread, not a multiple of the 8 read per access"
    );
    assert_eq!(
        error(&SharedLayout::column_major(&[16, 8]), 16, 4),
        "local elements 0..2 of thread 0 are not contiguous in column_major(16,8)"
    );
    let odd = SharedLayout::strided(&[vec![(16, 9)], vec![(8, 1)]]).unwrap();
    assert_eq!(
        error(&odd, 16, 4),
        "the access of thread 4 at element offset 9 is not aligned to 4 bytes"
    );
}

fn strided_layout() -> impl Strategy<Value = SharedLayout> {
    let sub = (1usize..=4, 0usize..=64);
    let dims = prop::collection::vec(prop::collection::vec(sub, 0..=2), 0..=3);
    let swizzle = prop::option::of(
        (0u32..=3, 0u32..=4, 0u32..=4).prop_filter_map("bijective swizzle", |(bits, base, gap)| {
            Swizzle::new(bits, base, base + bits + gap).ok()
        }),
    );
    (dims, swizzle).prop_map(|(dims, swizzle)| {
        let layout = SharedLayout::strided(&dims).unwrap();
        match swizzle {
            Some(swizzle) => layout.with_swizzle(swizzle),
            None => layout,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn shared_text_round_trips(layout in strided_layout()) {
        let text = layout.to_string();
        let parsed: SharedLayout = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(parsed, layout);
    }

    #[test]
    fn offsets_stay_below_the_span(layout in strided_layout()) {
        for coords in all_coordinates(layout.shape()) {
            prop_assert!(layout.offset(&coords) < layout.span(), "{:?} in {}", coords, layout);
        }
    }

    #[test]
    fn swizzles_permute_compact_layouts(shape in prop::collection::vec(1usize..=8, 1..=3), bits in 0u32..=3, base in 0u32..=3) {
        let swizzle = Swizzle::new(bits, base, base + bits).unwrap();
        let layout = SharedLayout::row_major(&shape).with_swizzle(swizzle);
        let offsets: HashSet<usize> = all_coordinates(&shape).iter().map(|c| layout.offset(c)).collect();
        prop_assert_eq!(offsets.len(), layout.num_elements());
        prop_assert!(offsets.iter().all(|&o| o < layout.span()));
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC{0,40}") {
        let _ = text.parse::<SharedLayout>();
    }

    #[test]
    fn parsing_damaged_layouts_never_panics(layout in strided_layout(), cut in any::<usize>(), insert in "\\PC{0,3}") {
        let text = layout.to_string();
        let at = cut % (text.len() + 1);
        let _ = format!("{}{}{}", &text[..at], insert, &text[at..]).parse::<SharedLayout>();
        let _ = text[..at].parse::<SharedLayout>();
    }
}
