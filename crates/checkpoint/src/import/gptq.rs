//! GPTQ's packing, as AutoGPTQ and GPTQModel write it.
//!
//! For a linear layer `P` with weight `[N, K]` (`out_features`, `in_features`) and `b`-bit codes:
//! - `P.qweight`: `I32 [K·b/32, N]`. Column `n` is a little-endian bit stream of the codes of
//!   `k = 0, 1, …, K-1` along the rows: code `k` occupies bits `[k·b, (k+1)·b)` of the stream
//!   made of the words `qweight[0][n], qweight[1][n], …` (bit `i` of the stream is bit `i mod 32`
//!   of word `⌊i/32⌋`). For 2, 4 and 8 bits a word holds `32/b` whole codes; for 3 bits 32 codes
//!   fill 3 words and codes 10 and 21 of each 32 straddle two words.
//! - `P.qzeros`: `I32 [G, N·b/32]`: row `g` is the same kind of stream of the zero points of the
//!   `N` columns of group `g`, each stored minus one in `gptq` (v1) checkpoints (stored `v` is
//!   `z = (v + 1) mod 2^b`) and as it is in `gptq_v2` ones.
//! - `P.scales`: `[G, N]` (F16): the scale of group `g`, column `n`.
//! - `P.g_idx`: `I32 [K]` (optional): the group of input column `k`; `k / group_size` unless the
//!   checkpoint was quantized with act-order (`desc_act`).
//!
//! The weight is `W[n, k] = (q[k, n] − z[g_idx[k], n]) · s[g_idx[k], n]`.

/// Reads code `index` of the little-endian bit stream made of `count` words, `word(i)` being the
/// i-th; `bits` ≤ 8. Codes may straddle two words (3-bit packing).
pub(super) fn stream_code(word: impl Fn(usize) -> u32, bits: u32, index: usize) -> u32 {
    let first_bit = index * bits as usize;
    let position = first_bit / 32;
    let shift = (first_bit % 32) as u32;
    let mut value = (word(position) as u64) >> shift;
    if shift + bits > 32 {
        value |= (word(position + 1) as u64) << (32 - shift);
    }
    (value & ((1u64 << bits) - 1)) as u32
}

/// The little-endian i32 word at `index` of `bytes` (as u32).
pub(super) fn word_at(bytes: &[u8], index: usize) -> u32 {
    let start = index * 4;
    u32::from_le_bytes([
        bytes[start],
        bytes[start + 1],
        bytes[start + 2],
        bytes[start + 3],
    ])
}

/// Code `k` of column `n` of a `qweight` of `columns` (= N) columns.
pub(super) fn code(qweight: &[u8], columns: usize, bits: u32, k: usize, n: usize) -> u32 {
    stream_code(|row| word_at(qweight, row * columns + n), bits, k)
}

/// The stored zero-point field of column `n` of group `group` in a `qzeros` of `words` words per
/// row (before the v1 "plus one").
pub(super) fn stored_zero(qzeros: &[u8], words: usize, bits: u32, group: usize, n: usize) -> u32 {
    stream_code(|word| word_at(qzeros, group * words + word), bits, n)
}
