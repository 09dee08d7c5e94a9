//! Cross-check against the `ml_dtypes` package: decode tables and f32 rounding for f8e4m3,
//! f8e5m2, f6e3m2, f6e2m3 and f4e2m1 (data from `scripts/ml-dtypes-reference.py`).

use anybit_dtype::DType;

const REFERENCE: &str = include_str!("data/ml_dtypes_reference.txt");

#[test]
fn decode_and_rounding_match_ml_dtypes() {
    let mut decoded = 0;
    let mut encoded = 0;
    for line in REFERENCE.lines().filter(|line| !line.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dtype: DType = fields[1].parse().unwrap();
        match fields[0] {
            "decode" => {
                let code: u32 = fields[2].parse().unwrap();
                let expected: f64 = fields[3].parse().unwrap();
                let actual = dtype.decode(code);
                let same = (actual.is_nan() && expected.is_nan())
                    || (actual == expected
                        && actual.is_sign_negative() == expected.is_sign_negative());
                assert!(
                    same,
                    "{dtype} code {code}: {actual} vs ml_dtypes {expected}"
                );
                decoded += 1;
            }
            "encode" => {
                let bits = u32::from_str_radix(fields[2].trim_start_matches("0x"), 16).unwrap();
                let expected: u32 = fields[3].parse().unwrap();
                let input = f32::from_bits(bits);
                assert_eq!(dtype.encode(input), expected, "{dtype} at {input}");
                encoded += 1;
            }
            other => panic!("unknown line kind {other}"),
        }
    }
    assert_eq!(decoded, 256 + 256 + 64 + 64 + 16);
    assert!(encoded > 5000, "{encoded}");
}
