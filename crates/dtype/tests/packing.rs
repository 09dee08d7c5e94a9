//! Packing round trips at every width and length, and the exact bit positions.

use anybit_dtype::{
    pack, pack_words, packed_bytes, read_code, read_codes, unpack, unpack_words, write_code,
    write_codes, PackError,
};
use proptest::prelude::*;

const WIDTHS: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32];

fn codes_of_width() -> impl Strategy<Value = (u32, Vec<u32>)> {
    proptest::sample::select(WIDTHS.to_vec()).prop_flat_map(|bits| {
        let max = if bits == 32 {
            u32::MAX
        } else {
            (1 << bits) - 1
        };
        (Just(bits), proptest::collection::vec(0..=max, 0..200))
    })
}

proptest! {
    #[test]
    fn bytes_round_trip((bits, codes) in codes_of_width()) {
        let bytes = pack(&codes, bits).unwrap();
        prop_assert_eq!(bytes.len(), packed_bytes(codes.len(), bits));
        prop_assert_eq!(unpack(&bytes, bits, codes.len()).unwrap(), codes.clone());
        // Unused high bits of the last byte are zero.
        let used = codes.len() * bits as usize;
        if !used.is_multiple_of(8) {
            prop_assert_eq!(bytes[bytes.len() - 1] >> (used % 8), 0);
        }
    }

    #[test]
    fn words_round_trip((bits, codes) in codes_of_width()) {
        let words = pack_words(&codes, bits).unwrap();
        prop_assert_eq!(words.len(), (codes.len() * bits as usize).div_ceil(32));
        prop_assert_eq!(unpack_words(&words, bits, codes.len()).unwrap(), codes.clone());
        // Words hold the same bit stream as bytes.
        let bytes = pack(&codes, bits).unwrap();
        let from_words: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        prop_assert_eq!(&from_words[..bytes.len()], &bytes[..]);
    }

    #[test]
    fn every_bit_is_where_the_rule_says((bits, codes) in codes_of_width()) {
        let bytes = pack(&codes, bits).unwrap();
        for (index, &code) in codes.iter().enumerate() {
            for bit in 0..bits as usize {
                let stream_bit = index * bits as usize + bit;
                let stored = (bytes[stream_bit / 8] >> (stream_bit % 8)) & 1;
                prop_assert_eq!(stored as u32, (code >> bit) & 1);
            }
        }
    }

    #[test]
    fn write_code_changes_only_its_field(
        (bits, codes) in codes_of_width(), index in 0usize..200, new in any::<u32>()
    ) {
        prop_assume!(!codes.is_empty());
        let index = index % codes.len();
        let mask = if bits == 32 { u32::MAX } else { (1 << bits) - 1 };
        let mut bytes = pack(&codes, bits).unwrap();
        write_code(&mut bytes, bits, index, new);
        let mut expected = codes.clone();
        expected[index] = new & mask;
        prop_assert_eq!(unpack(&bytes, bits, codes.len()).unwrap(), expected);
        prop_assert_eq!(read_code(&bytes, bits, index), new & mask);
    }
}

proptest! {
    /// A run written or read at any offset of a stream with other bits around it is what one
    /// code at a time gives, and the bits outside the run are kept.
    #[test]
    fn runs_match_one_code_at_a_time(
        (bits, codes) in codes_of_width(),
        first in 0usize..40,
        noise in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let length = packed_bytes(first + codes.len() + 3, bits);
        let stream: Vec<u8> = (0..length).map(|i| noise.get(i).copied().unwrap_or(i as u8 ^ 0xa5)).collect();
        let mut one_at_a_time = stream.clone();
        for (offset, &code) in codes.iter().enumerate() {
            write_code(&mut one_at_a_time, bits, first + offset, code);
        }
        let mut as_a_run = stream.clone();
        write_codes(&mut as_a_run, bits, first, &codes);
        prop_assert_eq!(&as_a_run, &one_at_a_time);

        let mut read = vec![0; codes.len()];
        read_codes(&stream, bits, first, &mut read);
        let expected: Vec<u32> = (0..codes.len()).map(|offset| read_code(&stream, bits, first + offset)).collect();
        prop_assert_eq!(read, expected);
    }
}

#[test]
fn three_bit_example_is_little_endian_low_bits_first() {
    // 1, 2, 3, 4, 5 as 3-bit codes: bits 001 010 011 100 101 from the low end.
    let bytes = pack(&[1, 2, 3, 4, 5], 3).unwrap();
    assert_eq!(bytes, vec![0b1101_0001, 0b0101_1000]);
    assert_eq!(pack(&[0xf, 0x1], 4).unwrap(), vec![0x1f]);
    assert_eq!(pack(&[1, 0, 1], 1).unwrap(), vec![0b101]);
    assert_eq!(pack(&[0x1234], 16).unwrap(), vec![0x34, 0x12]);
}

#[test]
fn bad_requests_are_errors() {
    assert_eq!(pack(&[1], 9), Err(PackError::UnsupportedWidth { bits: 9 }));
    assert_eq!(pack(&[1], 0), Err(PackError::UnsupportedWidth { bits: 0 }));
    assert_eq!(
        pack(&[3, 8], 3),
        Err(PackError::CodeTooWide {
            index: 1,
            code: 8,
            bits: 3
        })
    );
    let error = unpack(&[0u8; 2], 5, 4).unwrap_err();
    assert_eq!(
        error.to_string(),
        "4 codes of 5 bits need 3 bytes, but only 2 were given"
    );
    assert!(pack(&[1], 12)
        .unwrap_err()
        .to_string()
        .contains("1 to 8, 16 and 32"));
}
