//! The prepared layout: a bijection, and prepare/unprepare are inverses for every width and
//! for shapes that are not multiples of the tile or the chunk.

use anybit_dtype::{pack, DType};
use anybit_kernels::prepared::{prepare_codes, unprepare_codes, FragmentLayout, GroupLayout};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn codes_round_trip(index in 0usize..24, n in 1usize..70, k in 1usize..300, seed: u64) {
        let dtype = dtypes()[index];
        let bits = dtype.bits();
        let mask = (1u64 << bits) - 1;
        let codes: Vec<u32> = (0..n * k)
            .map(|i| ((seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407))) >> 17 & mask) as u32)
            .collect();
        let plain = pack(&codes, bits).unwrap();
        let layout = FragmentLayout::new(dtype, n, k);
        let prepared = prepare_codes(&layout, &plain);
        prop_assert_eq!(prepared.len(), layout.bytes());
        prop_assert_eq!(unprepare_codes(&layout, &prepared), plain);
    }

    #[test]
    fn groups_round_trip(n in 1usize..70, groups in 1usize..9) {
        let layout = FragmentLayout::new(DType::Unsigned(4), n, groups * 32);
        let group_layout = GroupLayout::new(&layout, 32);
        let values: Vec<u32> = (0..n * groups).map(|i| i as u32 + 1).collect();
        let prepared = group_layout.prepare(&values, 0);
        prop_assert_eq!(group_layout.unprepare(&prepared), values);
    }
}

/// Every integer type and one small float of each width from 3 bits on.
fn dtypes() -> Vec<DType> {
    let mut dtypes: Vec<DType> = (1..=8)
        .flat_map(|bits| [DType::Unsigned(bits), DType::Signed(bits)])
        .collect();
    for name in [
        "f3e1m1", "f4e2m1", "f5e2m2", "f6e3m2", "f6e2m3", "f7e3m3", "f8e4m3", "f8e5m2",
    ] {
        dtypes.push(name.parse().unwrap());
    }
    dtypes
}

#[test]
fn fields_are_a_bijection_onto_the_bits_of_the_stream() {
    for dtype in dtypes() {
        let bits = dtype.bits();
        let layout = FragmentLayout::new(dtype, 37, 300);
        let mut seen = vec![false; layout.len() * bits as usize];
        for row in 0..layout.padded_n() {
            for col in 0..layout.padded_k() {
                let mut code_bits = 0;
                for field in layout.fields(row, col) {
                    assert_eq!(field.shift, code_bits, "{dtype}: planes low bits first");
                    code_bits += field.width;
                    let first = field.index * field.width as usize;
                    for (bit, used) in seen
                        .iter_mut()
                        .enumerate()
                        .skip(first)
                        .take(field.width as usize)
                    {
                        assert!(!*used, "{dtype}: ({row}, {col}) collides at bit {bit}");
                        *used = true;
                    }
                }
                assert_eq!(code_bits, bits, "{dtype}: the planes hold the whole code");
            }
        }
        assert!(
            seen.iter().all(|&s| s),
            "{dtype}: every bit of the stream is used"
        );
        assert_eq!(layout.padded_k() % layout.chunk_cols(), 0);
        // Each lane's bits per chunk, and each plane's, are whole 16-byte loads.
        for width in &layout.planes {
            assert_eq!(layout.lane_elements() * *width as usize % 128, 0, "{dtype}");
        }
    }
}
