//! Quantization's output is fixed: the codes, scales and zero points of a set of weights (every
//! kind of type, both searches, groups and per channel, heavy-tailed values) hash to the values
//! recorded when they were first computed. A speed change that moves a single code fails here.
//! A change meant to alter the output records new values: run this test with
//! `ANYBIT_PRINT_FINGERPRINTS=1` and `--nocapture` to print them.

use anybit_dtype::{quantize_with_search, DType, GroupSize, QuantizeOptions, ScaleSearch, Weights};

/// A heavy-tailed, deterministic [rows, cols] matrix (a Cauchy-like ratio of two uniforms).
fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..rows * cols)
        .map(|_| {
            let (a, b) = (uniform() - 0.5, uniform() + 0.05);
            (0.02 * a / b) as f32
        })
        .collect()
}

/// FNV-1a over everything a quantized matrix stores.
fn fingerprint(dtype: &str, group: GroupSize, search: ScaleSearch) -> u64 {
    let (rows, cols) = (24, 256);
    let weights = matrix(rows, cols, dtype.len() as u64 * 31 + cols as u64);
    let options = QuantizeOptions {
        dtype: dtype.parse::<DType>().unwrap(),
        group_size: group,
        scale_dtype: DType::F16,
    };
    let q = quantize_with_search(Weights::F32(&weights), rows, cols, options, search).unwrap();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |byte: u8| {
        hash ^= byte as u64;
        hash = hash.wrapping_mul(0x100_0000_01b3);
    };
    q.codes.iter().for_each(|&b| eat(b));
    q.scales
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .for_each(&mut eat);
    q.zero_points
        .iter()
        .flatten()
        .flat_map(|z| z.to_le_bytes())
        .for_each(&mut eat);
    hash
}

const TYPES: [&str; 10] = [
    "u1", "u3", "i2", "i4", "i7", "u8", "f4e2m1", "f6e3m2", "f8e4m3", "f8e5m2",
];

#[test]
fn quantized_output_is_what_it_always_was() {
    let mut fingerprints = Vec::new();
    for dtype in TYPES {
        for group in [GroupSize::Elements(32), GroupSize::PerChannel] {
            for search in [ScaleSearch::None, ScaleSearch::Mse] {
                fingerprints.push(format!("{:016x}", fingerprint(dtype, group, search)));
            }
        }
    }
    if std::env::var_os("ANYBIT_PRINT_FINGERPRINTS").is_some() {
        println!("{}", fingerprints.join(" "));
    }
    let expected: Vec<&str> = EXPECTED.split_whitespace().collect();
    assert_eq!(fingerprints, expected);
}

/// Recorded from the implementation of commit 2380981, before the speed changes: one line per
/// type of `TYPES`, with group 32 then per channel, round to nearest then the MSE search.
const EXPECTED: &str = "
a8aa11aa758126f8 66a4f92ce8da9be8 31a9accdb2efc8b0 8fe58b9771e458d7
de6db2a7a139e708 3944eee0f14ea917 4622da5b8120faaf 181879a4cf9aebdb
abd777b36f31baca f9b4d1502cef3225 b6117bc0d4bc5d44 348c3082bbf2ef21
7e6544683d604e18 0e90b8ef1afce4ae 85c99bcefb6ce937 4e82d0a862f07c59
28a08decb324333d 28a08decb324333d ebd11c466708098c ebd11c466708098c
5958d861f4e61b54 5958d861f4e61b54 6959245744a32170 6959245744a32170
622afb3b48ed531b c3930daf1f6f8406 67ef428a3bffe4f1 b62b86bafa7369b0
4dd050de21956779 0a9acad626b06a1b 975298a5a5f30e98 74f823132963b0cb
3144e0493e6c4deb 696726c2e8b21e12 ef4e0c4b97561b1d b6558f7e8d25ba43
6c633f4f4dab02ff f7096bfca5829126 2d9da875caca24c9 8a31c6d7e1a6e0e2
";
