//! The prepared layout: a bijection, and prepare/unprepare are inverses for every width and
//! for shapes that are not multiples of the tile or the chunk.

use anybit_dtype::pack;
use anybit_kernels::prepared::{prepare_codes, unprepare_codes, FragmentLayout, GroupLayout};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn codes_round_trip(bits in 1u32..=8, n in 1usize..70, k in 1usize..300, seed: u64) {
        let mask = (1u64 << bits) - 1;
        let codes: Vec<u32> = (0..n * k)
            .map(|i| ((seed.wrapping_mul(6364136223846793005).wrapping_add((i as u64).wrapping_mul(1442695040888963407))) >> 17 & mask) as u32)
            .collect();
        let plain = pack(&codes, bits).unwrap();
        let layout = FragmentLayout::new(bits, n, k);
        let prepared = prepare_codes(&layout, &plain);
        prop_assert_eq!(prepared.len(), layout.bytes());
        prop_assert_eq!(unprepare_codes(&layout, &prepared), plain);
    }

    #[test]
    fn groups_round_trip(n in 1usize..70, groups in 1usize..9) {
        let layout = FragmentLayout::new(4, n, groups * 32);
        let group_layout = GroupLayout::new(&layout, 32);
        let values: Vec<u32> = (0..n * groups).map(|i| i as u32 + 1).collect();
        let prepared = group_layout.prepare(&values, 0);
        prop_assert_eq!(group_layout.unprepare(&prepared), values);
    }
}

#[test]
fn positions_are_a_bijection_onto_the_stream() {
    for bits in 1..=8 {
        let layout = FragmentLayout::new(bits, 37, 300);
        let mut seen = vec![false; layout.len()];
        for row in 0..layout.padded_n() {
            for col in 0..layout.padded_k() {
                let position = layout.position(row, col);
                assert!(!seen[position], "{bits} bits: ({row}, {col}) collides");
                seen[position] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(layout.padded_k() % layout.chunk_cols(), 0);
        // Each lane's bits per chunk are whole 16-byte loads.
        assert_eq!(layout.lane_elements() * bits as usize % 128, 0);
    }
}
