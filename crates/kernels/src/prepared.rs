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
//! a packed f16x2 conversion needs sit exactly 16 bits apart (one mask gives both).
//!
//! Integer codes of 3, 5, 6 and 7 bits are split into **bit planes** of 1, 2 and 4 bits, low
//! bits first (3 = 2 + 1, 5 = 4 + 1, 6 = 4 + 2, 7 = 4 + 2 + 1; [`bit_planes`]): a lane's chunk
//! holds its codes'
//! lowest plane interleaved as above, then the next plane. A higher plane of width `w` packs
//! the fields of `R = w₀ / w` words of the lowest plane (width `w₀`) into one word, pair `j` of
//! the lowest plane's word `v` at pair `j·R + v % R` ([`plane_position`]): pair `j`'s field of
//! the lowest plane sits at bit `w₀·j` of its word and its field of the higher plane at bit
//! `w₀·j + w·(v % R)`, so one shift of the higher plane's word (by the same amount for every
//! `j` whose low field needs the same shift) brings it next to the low field, and the kernel's
//! `cast_planes` converts a pair with one mask per plane and one fused multiply-add (i3:
//! about 3.4 instructions a pair; 7 bits, whose code fits f16's magic number only at offsets
//! up to 3, need more shifts). Small floats of the widths that do not divide 32 keep the plain
//! order (`step · 8 + slot`), one plane.
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
//! What this module promises: [`FragmentLayout::fields`] is a bijection from the bits of the
//! padded matrix onto the bits of the prepared stream, and [`prepare_codes`] / [`unprepare_codes`] are inverses on
//! the unpadded matrix (a property test checks every width).

use anybit_dtype::{packed_bytes, read_code, write_code, DType};
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

/// Where slot `slot` of k step `step` sits in a lane's stream of one plane of `width` bits
/// of codes whose lowest plane is `base` bits wide (see the module docs); for the lowest plane
/// (`width == base`) this is [`lane_position`].
pub const fn plane_position(base: u32, width: u32, step: usize, slot: usize) -> usize {
    if width == base {
        return lane_position(width, step, slot);
    }
    let base_pairs = 16 / base as usize;
    let ratio = (base / width) as usize;
    let pairs_per_word = 16 / width as usize;
    let pair = step * (FRAGMENT_SLOTS / 2) + slot / 2;
    let (base_word, j) = (pair / base_pairs, pair % base_pairs);
    let (word, v) = (base_word / ratio, base_word % ratio);
    word * 2 * pairs_per_word + (slot % 2) * pairs_per_word + j * ratio + v
}

/// The bit planes of `dtype`'s codes in the prepared stream, low bits first: `[2, 1]` for 3-bit
/// integers, `[4, 1]` for 5, `[4, 2]` for 6, `[4, 2, 1]` for 7, else the width itself (one
/// plane).
pub fn bit_planes(dtype: DType) -> Vec<u32> {
    let bits = dtype.bits();
    match dtype {
        DType::Unsigned(_) | DType::Signed(_) => match bits {
            3 => vec![2, 1],
            5 => vec![4, 1],
            6 => vec![4, 2],
            7 => vec![4, 2, 1],
            _ => vec![bits],
        },
        // Small floats: the magnitude split as an integer of one bit less and the sign alone,
        // except 6 bits: 4 + 2 as an integer's (4 + 1 + 1 would give each 1-bit plane half a
        // 16-byte block of a chunk's 8 k steps), the 2-bit plane holding the top magnitude bit
        // and the sign (the packed conversion places each as a field of its own). Not with 5
        // or more exponent bits: their conversion to f16 needs a fixup for the top exponent
        // (or has no packed form), so planes would be gathered code by code (f7e5m1 ran 0.96×
        // as fast; f6e5m0's kernel spilled).
        DType::MiniFloat(format) if format.exponent_bits() < 5 => match bits {
            3 => vec![2, 1],
            5 => vec![4, 1],
            6 => vec![4, 2],
            7 => vec![4, 2, 1],
            _ => vec![bits],
        },
        _ => vec![bits],
    }
}

/// Where one plane of an element's code sits in the prepared stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Bits of the plane.
    pub width: u32,
    /// The code's bits `shift .. shift + width` are this plane's.
    pub shift: u32,
    /// The index of the field in the stream, counted in fields of `width` bits.
    pub index: usize,
}

/// The prepared layout of the codes of an `[n, k]` weight of `bits`-bit elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FragmentLayout {
    pub bits: u32,
    /// The widths of the code's bit planes, low bits first ([`bit_planes`]).
    pub planes: Vec<u32>,
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
    /// The layout of an `[n, k]` matrix of `dtype` codes (1 to 8 bits).
    pub fn new(dtype: DType, n: usize, k: usize) -> FragmentLayout {
        let bits = dtype.bits();
        FragmentLayout {
            bits,
            planes: bit_planes(dtype),
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

    /// Where the bits of element (row, col) of the padded matrix sit: one field per plane,
    /// low bits first.
    pub fn fields(&self, row: usize, col: usize) -> impl Iterator<Item = Field> + '_ {
        let (tile, r) = (row / TILE_ROWS, row % TILE_ROWS);
        let (step, c) = (col / STEP_COLS, col % STEP_COLS);
        let (chunk, step) = (step / self.steps_per_chunk, step % self.steps_per_chunk);
        let (lane, slot) = self.positions[r][c];
        let lane_elements = self.lane_elements();
        let lane_chunk = (tile * self.chunks() + chunk) * LANES + lane as usize;
        // Bit where the current plane starts in the lane's chunk, and the code bit it holds.
        let mut start = lane_chunk * lane_elements * self.bits as usize;
        let mut shift = 0;
        let base = self.planes[0];
        self.planes.iter().map(move |&width| {
            let bit = start + plane_position(base, width, step, slot as usize) * width as usize;
            let field = Field {
                width,
                shift,
                index: bit / width as usize,
            };
            start += lane_elements * width as usize;
            shift += width;
            field
        })
    }

    /// The code of element (row, col) in a prepared stream, its planes put together.
    pub fn read(&self, prepared: &[u8], row: usize, col: usize) -> u32 {
        self.fields(row, col).fold(0, |code, field| {
            code | read_code(prepared, field.width, field.index) << field.shift
        })
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
            for field in layout.fields(row, col) {
                let part = (code >> field.shift) & ((1 << field.width) - 1);
                write_code(&mut prepared, field.width, field.index, part);
            }
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
            let code = layout.read(prepared, row, col);
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
    use std::collections::BTreeSet;

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

    /// The stream index of element (row, col) of a one-plane layout.
    fn position(layout: &FragmentLayout, row: usize, col: usize) -> usize {
        let fields: Vec<Field> = layout.fields(row, col).collect();
        assert_eq!(fields.len(), 1);
        fields[0].index
    }

    #[test]
    fn positions_of_the_first_chunk_of_a_4_bit_matrix() {
        let layout = FragmentLayout::new(DType::Unsigned(4), 32, 128);
        let position = |row, col| position(&layout, row, col);
        // Lane 0 holds (0,0) (0,1) (8,0) (8,1) (0,8) (0,9) (8,8) (8,9) of each step, as
        // slots 0..8, stored in the order 0 2 4 6 1 3 5 7.
        assert_eq!(position(0, 0), 0);
        assert_eq!(position(0, 1), 4);
        assert_eq!(position(8, 0), 1);
        assert_eq!(position(0, 8), 2);
        assert_eq!(position(8, 9), 7);
        assert_eq!(position(0, 16), 8); // step 1 follows in the same lane
        assert_eq!(position(0, 2), 32); // lane 1
        assert_eq!(position(1, 0), 4 * 32); // lane 4
        assert_eq!(position(0, 64), 32 * 32); // chunk 1 of tile 0
        assert_eq!(position(16, 0), 2 * 32 * 32); // tile 1
    }

    #[test]
    fn integer_widths_that_do_not_divide_32_are_split_into_planes() {
        assert_eq!(bit_planes(DType::Signed(3)), [2, 1]);
        assert_eq!(bit_planes(DType::Unsigned(5)), [4, 1]);
        assert_eq!(bit_planes(DType::Signed(6)), [4, 2]);
        assert_eq!(bit_planes(DType::Unsigned(7)), [4, 2, 1]);
        assert_eq!(bit_planes(DType::Signed(4)), [4]);
        assert_eq!(bit_planes(DType::Unsigned(8)), [8]);
        let f6e3m2 = "f6e3m2".parse::<DType>().unwrap();
        assert_eq!(bit_planes(f6e3m2), [4, 2]);
        let f5e2m2 = "f5e2m2".parse::<DType>().unwrap();
        assert_eq!(bit_planes(f5e2m2), [4, 1]);
        // u3, 16 steps per chunk: a lane's chunk is 256 bits of the 2-bit plane (interleaved
        // like a u2 weight's), then 128 bits of the 1-bit plane, two 2-bit words to a word.
        let layout = FragmentLayout::new(DType::Unsigned(3), 16, 256);
        let fields = |row, col| layout.fields(row, col).collect::<Vec<_>>();
        let field = |width, shift, bit: usize| Field {
            width,
            shift,
            index: bit / width as usize,
        };
        // (0, 0): lane 0, step 0, slot 0; (0, 1): slot 1, the pair's second member.
        assert_eq!(fields(0, 0), [field(2, 0, 0), field(1, 2, 256)]);
        assert_eq!(fields(0, 1), [field(2, 0, 16), field(1, 2, 256 + 16)]);
        // (8, 0): slot 2, pair 1 of the 2-bit word: bit 2 of the 1-bit word.
        assert_eq!(fields(8, 0), [field(2, 0, 2), field(1, 2, 256 + 2)]);
        // (0, 32): step 2, pair 0 of the second 2-bit word: bit 1 of the 1-bit word.
        assert_eq!(fields(0, 32), [field(2, 0, 32), field(1, 2, 256 + 1)]);
        // (0, 2): lane 1, whose chunk starts 384 bits later.
        assert_eq!(fields(0, 2), [field(2, 0, 384), field(1, 2, 384 + 256)]);
        // (0, 64): step 4, in the 2-bit plane's third word and the 1-bit plane's second.
        assert_eq!(fields(0, 64), [field(2, 0, 64), field(1, 2, 256 + 32)]);
    }

    /// What the placement of the higher planes is for: with the code at the low field's
    /// position within its byte (the offset `cast_planes` takes), every word of a higher
    /// plane needs at most `2·R` distinct shifts for all the pairs it serves (i3: 4 for 16
    /// pairs), and the two members of a pair are 16 bits apart in every plane.
    #[test]
    fn a_higher_plane_word_needs_few_shifts() {
        for (dtype, most) in [
            (DType::Signed(3), 4),
            (DType::Unsigned(5), 8),
            (DType::Signed(6), 4),
        ] {
            let layout = FragmentLayout::new(dtype, 16, 256);
            let planes = layout.planes.clone();
            // (plane, word of the plane) -> the shifts it takes.
            let mut shifts = std::collections::BTreeMap::<(usize, usize), BTreeSet<i64>>::new();
            for step in 0..layout.steps_per_chunk {
                for (r, c) in [(0, 0), (8, 0), (0, 8), (8, 8)] {
                    let low: Vec<Field> = layout.fields(r, step * STEP_COLS + c).collect();
                    let high: Vec<Field> = layout.fields(r, step * STEP_COLS + c + 1).collect();
                    let base_bit = (low[0].index * planes[0] as usize % 32) as i64;
                    let offset = base_bit % 8;
                    for (plane, (a, b)) in low.iter().zip(&high).enumerate().skip(1) {
                        let (bit_a, bit_b) =
                            (a.index * a.width as usize, b.index * b.width as usize);
                        assert_eq!(bit_b, bit_a + 16, "{dtype}: pair members 16 bits apart");
                        let shift = (bit_a % 32) as i64 - (offset + a.shift as i64);
                        shifts.entry((plane, bit_a / 32)).or_default().insert(shift);
                    }
                }
            }
            for ((plane, word), set) in shifts {
                assert!(
                    set.len() <= most,
                    "{dtype}: plane {plane} word {word} needs shifts {set:?}"
                );
            }
        }
    }
}
