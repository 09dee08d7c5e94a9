//! AWQ's packing (AutoAWQ's GEMM layout, 4 bits).
//!
//! For a linear layer `P` with weight `[N, K]`:
//! - `P.qweight`: `I32 [K, N/8]`: word `c` of row `k` holds the codes of columns `8c … 8c+7`,
//!   interleaved: nibble `i` (bits `[4i, 4i+4)`) holds column `8c + ORDER[i]`, with
//!   `ORDER = [0, 2, 4, 6, 1, 3, 5, 7]`.
//! - `P.qzeros`: `I32 [G, N/8]`, the zero points packed the same way (stored as they are).
//! - `P.scales`: `[G, N]` (F16).
//!
//! The weight is `W[n, k] = (q[k, n] − z[k / group_size, n]) · s[k / group_size, n]`.

use super::gptq::word_at;

/// Column `8c + ORDER[i]` is stored in nibble `i` of word `c`.
pub(super) const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// The nibble of a word that holds column `8c + j`: the inverse of [`ORDER`].
const NIBBLE: [u32; 8] = {
    let mut nibble = [0u32; 8];
    let mut i = 0;
    while i < 8 {
        nibble[ORDER[i]] = i as u32;
        i += 1;
    }
    nibble
};

/// The 4-bit field of column `n` in row `row` of a tensor packed AWQ's way with `words` words per
/// row (`qweight` with row `k`, or `qzeros` with row `g`).
pub(super) fn field(packed: &[u8], words: usize, row: usize, n: usize) -> u32 {
    let word = word_at(packed, row * words + n / 8);
    (word >> (4 * NIBBLE[n % 8])) & 0xf
}
