//! The prepared weight layout: where every code, scale and zero point of an `[N, K]` weight
//! matrix sits in the buffers the kernels read.
//!
//! The kernels compute `yᵀ = dequant(W) · xᵀ` with the weight as the **A operand** of the tensor
//! cores. One A fragment of `mma.m16n8k16` covers 16 rows × 16 columns (a *k step*); lane
//! `l` of a warp holds its 8 elements (`anybit_layout` names the atom
//! `column_local(2,2).spatial(8,4).local(1,2)`). The prepared layout stores, for every tile of
//! 16 rows and every *chunk* of `S` consecutive k steps, each lane's `8·S` elements one after
//! the other, so a lane reads its fragments with 16-byte loads and `view`s the bits as
//! fragments:
//!
//! ```text
//! element (row, col) of W  →  ((tile · chunks + chunk) · 32 + lane) · 8S + lane_position(step, slot)
//!   tile = row / 16, chunk = (col / 16) / S, step = (col / 16) % S,
//!   (lane, slot) = the A-fragment position of (row % 16, col % 16)
//! ```
//!
//! Within a lane's chunk, widths that divide 32 (1, 2, 4, 8 bits) interleave each 32-bit word:
//! the word holds `P = 16 / bits` pairs of fragment slots `(2q, 2q + 1)` (in step, slot order),
//! the first members in its low half and the second members in its high half, so the two codes
//! a packed f16x2 conversion needs sit exactly 16 bits apart (one mask gives both). Other widths
//! keep the plain order (`step · 8 + slot`). [`lane_position`] is this order.
//!
//! `S = 16 / gcd(bits, 16)` is the fewest k steps whose `8·S·bits` bits per lane are a whole
//! number of 16-byte loads (4-bit: 4 steps = one load; 3-bit: 16 steps = three loads). Rows are
//! padded to a multiple of 16 and columns to a multiple of `16·S`, with code 0. The same layout
//! serves every batch size: a warp of a `wgmma` warpgroup holds exactly this A fragment.
//!
//! Scales and zero points (one value per row and group) are stored per tile and group, the two
//! rows a lane needs (`r` and `r + 8`) next to each other:
//! `((tile · groups + group) · 8 + r % 8) · 2 + r / 8`.
//!
//! What this module promises: [`FragmentLayout::position`] is a bijection from the padded
//! matrix onto the prepared stream, and [`prepare_codes`] / [`unprepare_codes`] are inverses on
//! the unpadded matrix (a property test checks every width).

use anybit_dtype::{packed_bytes, read_code, write_code};
use anybit_layout::RegisterLayout;

/// Rows of one tile: the M of `mma.m16n8k16` (the weight is the A operand).
pub const TILE_ROWS: usize = 16;
/// Columns of one k step: the K of `mma.m16n8k16`.
pub const STEP_COLS: usize = 16;
/// Lanes of a warp.
pub const LANES: usize = 32;
/// Elements of one lane's A fragment.
pub const FRAGMENT_SLOTS: usize = 8;

/// The A operand of `mma.m16n8k16`: lane and slot → (row, column) of a 16×16 tile.
pub fn fragment_atom() -> RegisterLayout {
    "column_local(2,2).spatial(8,4).local(1,2)"
        .parse()
        .expect("the A fragment atom is valid layout text")
}

/// Where (lane, slot) of the A fragment holds element (row, col) of a 16×16 tile.
fn fragment_positions() -> [[(u8, u8); STEP_COLS]; TILE_ROWS] {
    let atom = fragment_atom();
    let mut table = [[(0u8, 0u8); STEP_COLS]; TILE_ROWS];
    for lane in 0..LANES {
        for slot in 0..FRAGMENT_SLOTS {
            let c = atom.coordinates(lane, slot);
            table[c[0]][c[1]] = (lane as u8, slot as u8);
        }
    }
    table
}

/// Where slot `slot` of k step `step` sits in a lane's stream of `bits`-bit codes (see the
/// module docs): interleaved words for widths that divide 32, plain order otherwise.
pub const fn lane_position(bits: u32, step: usize, slot: usize) -> usize {
    if 32 % bits != 0 {
        return step * FRAGMENT_SLOTS + slot;
    }
    let pairs_per_word = 16 / bits as usize;
    let pair = step * (FRAGMENT_SLOTS / 2) + slot / 2;
    let (word, index) = (pair / pairs_per_word, pair % pairs_per_word);
    word * 2 * pairs_per_word + (slot % 2) * pairs_per_word + index
}

/// The prepared layout of the codes of an `[n, k]` weight of `bits`-bit elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentLayout {
    pub bits: u32,
    pub n: usize,
    pub k: usize,
    /// k steps per chunk (`S`).
    pub steps_per_chunk: usize,
    positions: [[(u8, u8); STEP_COLS]; TILE_ROWS],
}

/// The k steps per chunk for `bits`-bit elements: the fewest whose `8·S·bits` bits per lane are
/// a whole number of 16-byte loads.
pub const fn steps_per_chunk(bits: u32) -> usize {
    let mut a = bits as usize;
    let mut b = 16usize;
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    16 / a
}

impl FragmentLayout {
    /// The layout of an `[n, k]` matrix of `bits`-bit codes (1 ≤ bits ≤ 8).
    pub fn new(bits: u32, n: usize, k: usize) -> FragmentLayout {
        FragmentLayout {
            bits,
            n,
            k,
            steps_per_chunk: steps_per_chunk(bits),
            positions: fragment_positions(),
        }
    }

    /// Columns of one chunk (`16·S`).
    pub fn chunk_cols(&self) -> usize {
        STEP_COLS * self.steps_per_chunk
    }

    /// Rows after padding: a multiple of 16.
    pub fn padded_n(&self) -> usize {
        self.n.div_ceil(TILE_ROWS) * TILE_ROWS
    }

    /// Columns after padding: a multiple of the chunk.
    pub fn padded_k(&self) -> usize {
        self.k.div_ceil(self.chunk_cols()) * self.chunk_cols()
    }

    /// Number of row tiles.
    pub fn tiles(&self) -> usize {
        self.padded_n() / TILE_ROWS
    }

    /// Number of chunks in a row tile.
    pub fn chunks(&self) -> usize {
        self.padded_k() / self.chunk_cols()
    }

    /// Elements of one lane in one chunk (`8·S`).
    pub fn lane_elements(&self) -> usize {
        FRAGMENT_SLOTS * self.steps_per_chunk
    }

    /// Elements in the prepared stream (padding included).
    pub fn len(&self) -> usize {
        self.padded_n() * self.padded_k()
    }

    /// True when the padded matrix is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the prepared stream.
    pub fn bytes(&self) -> usize {
        packed_bytes(self.len(), self.bits)
    }

    /// The index in the prepared stream of element (row, col) of the padded matrix.
    pub fn position(&self, row: usize, col: usize) -> usize {
        let (tile, r) = (row / TILE_ROWS, row % TILE_ROWS);
        let (step, c) = (col / STEP_COLS, col % STEP_COLS);
        let (chunk, step) = (step / self.steps_per_chunk, step % self.steps_per_chunk);
        let (lane, slot) = self.positions[r][c];
        ((tile * self.chunks() + chunk) * LANES + lane as usize) * self.lane_elements()
            + lane_position(self.bits, step, slot as usize)
    }
}

/// Rearranges plainly packed row-major codes (`anybit_dtype::pack` of the `[n, k]` matrix)
/// into the prepared layout; padding holds code 0.
///
/// Panics if `plain` is shorter than the packed matrix; [`crate::PreparedWeight`] checks
/// lengths before calling it.
pub fn prepare_codes(layout: &FragmentLayout, plain: &[u8]) -> Vec<u8> {
    let bits = layout.bits;
    let mut prepared = vec![0u8; layout.bytes()];
    for row in 0..layout.n {
        for col in 0..layout.k {
            let code = read_code(plain, bits, row * layout.k + col);
            write_code(&mut prepared, bits, layout.position(row, col), code);
        }
    }
    prepared
}

/// The inverse of [`prepare_codes`]: plainly packed row-major codes of the `[n, k]` matrix.
pub fn unprepare_codes(layout: &FragmentLayout, prepared: &[u8]) -> Vec<u8> {
    let bits = layout.bits;
    let mut plain = vec![0u8; packed_bytes(layout.n * layout.k, bits)];
    for row in 0..layout.n {
        for col in 0..layout.k {
            let code = read_code(prepared, bits, layout.position(row, col));
            write_code(&mut plain, bits, row * layout.k + col, code);
        }
    }
    plain
}

/// The prepared layout of per-group values (scales, zero points) of an `[n, k]` weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLayout {
    pub n: usize,
    /// Groups per row (1 for per-channel).
    pub groups: usize,
    /// Groups per row after the columns are padded to whole chunks.
    pub padded_groups: usize,
}

impl GroupLayout {
    /// The group layout of `codes` with `group_size` elements per group (`k` for per-channel).
    pub fn new(codes: &FragmentLayout, group_size: usize) -> GroupLayout {
        let per_channel = group_size >= codes.k;
        GroupLayout {
            n: codes.n,
            // The last group of a row may be short (a group size that does not divide K).
            groups: if per_channel {
                1
            } else {
                codes.k.div_ceil(group_size)
            },
            padded_groups: if per_channel {
                1
            } else {
                codes.padded_k().div_ceil(group_size)
            },
        }
    }

    /// Values in the prepared buffer (padding included).
    pub fn len(&self) -> usize {
        self.n.div_ceil(TILE_ROWS) * TILE_ROWS * self.padded_groups
    }

    /// True when there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index of the value of (row, group).
    pub fn position(&self, row: usize, group: usize) -> usize {
        let (tile, r) = (row / TILE_ROWS, row % TILE_ROWS);
        ((tile * self.padded_groups + group) * 8 + r % 8) * 2 + r / 8
    }

    /// Rearranges row-major `[n, groups]` values into the prepared order, padding with `pad`.
    pub fn prepare<T: Copy>(&self, plain: &[T], pad: T) -> Vec<T> {
        let mut prepared = vec![pad; self.len()];
        for row in 0..self.n {
            for group in 0..self.groups {
                prepared[self.position(row, group)] = plain[row * self.groups + group];
            }
        }
        prepared
    }

    /// The inverse of [`GroupLayout::prepare`].
    pub fn unprepare<T: Copy>(&self, prepared: &[T]) -> Vec<T> {
        (0..self.n)
            .flat_map(|row| (0..self.groups).map(move |group| (row, group)))
            .map(|(row, group)| prepared[self.position(row, group)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_steps_give_whole_16_byte_loads() {
        let expected = [
            (1, 16),
            (2, 8),
            (3, 16),
            (4, 4),
            (5, 16),
            (6, 8),
            (7, 16),
            (8, 2),
        ];
        for (bits, steps) in expected {
            assert_eq!(steps_per_chunk(bits), steps, "{bits} bits");
            assert_eq!((8 * steps * bits as usize) % 128, 0);
        }
    }

    #[test]
    fn fragment_table_follows_the_ptx_figure() {
        // PTX ISA, mma.m16n8k16 A fragment: lane l, g = l / 4, t = l % 4; a0,a1 at row g,
        // columns 2t, 2t+1; a2,a3 at row g+8; a4,a5 at columns +8; a6,a7 at row g+8, columns +8.
        let table = fragment_positions();
        for lane in 0..32u8 {
            let (g, t) = (lane as usize / 4, lane as usize % 4);
            for slot in 0..8u8 {
                let row = g + 8 * ((slot as usize / 2) % 2);
                let col = 2 * t + (slot as usize % 2) + 8 * (slot as usize / 4);
                assert_eq!(table[row][col], (lane, slot));
            }
        }
    }

    #[test]
    fn lane_order_puts_pair_members_16_bits_apart() {
        for bits in [1u32, 2, 4, 8] {
            for step in 0..16 {
                for slot in (0..8).step_by(2) {
                    let first = lane_position(bits, step, slot) * bits as usize;
                    let second = lane_position(bits, step, slot + 1) * bits as usize;
                    assert_eq!(second, first + 16, "{bits} bits, step {step}, slot {slot}");
                    assert_eq!(first / 32, second / 32, "one word");
                }
            }
        }
        // 4 bits: a word is one step, slots 0,2,4,6 in its low half, 1,3,5,7 in its high half.
        let order: Vec<usize> = (0..8).map(|slot| lane_position(4, 0, slot)).collect();
        assert_eq!(order, [0, 4, 1, 5, 2, 6, 3, 7]);
        // Odd widths keep the plain order.
        assert_eq!(lane_position(3, 2, 5), 21);
    }

    #[test]
    fn positions_of_the_first_chunk_of_a_4_bit_matrix() {
        let layout = FragmentLayout::new(4, 32, 128);
        // Lane 0 holds (0,0) (0,1) (8,0) (8,1) (0,8) (0,9) (8,8) (8,9) of each step, as
        // slots 0..8, stored in the order 0 2 4 6 1 3 5 7.
        assert_eq!(layout.position(0, 0), 0);
        assert_eq!(layout.position(0, 1), 4);
        assert_eq!(layout.position(8, 0), 1);
        assert_eq!(layout.position(0, 8), 2);
        assert_eq!(layout.position(8, 9), 7);
        assert_eq!(layout.position(0, 16), 8); // step 1 follows in the same lane
        assert_eq!(layout.position(0, 2), 32); // lane 1
        assert_eq!(layout.position(1, 0), 4 * 32); // lane 4
        assert_eq!(layout.position(0, 64), 32 * 32); // chunk 1 of tile 0
        assert_eq!(layout.position(16, 0), 2 * 32 * 32); // tile 1
    }
}
