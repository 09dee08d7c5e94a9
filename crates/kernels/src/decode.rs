//! The decode schedule: quantized matrix products for few tokens (M ≤ 64), as anybit programs.
//!
//! The weight is the A operand of `mma.m16n8k16` (rows of W are rows of the tile), the tokens
//! are its N. A block has `k_warps × warps` warps: `warps` of them own different row tiles,
//! and `k_warps` of them split K into contiguous slices (split-K inside the block, so small
//! layers still fill every SM). Every warp streams the prepared fragments of its
//! `tiles_per_warp` row tiles with 16-byte loads, `view`s the bits as A fragments in the
//! prepared lane order, converts them with a packed cast into fragment order, applies zero
//! points, multiplies with B fragments of `x` loaded straight from global memory (tokens beyond
//! M read as zeros) and accumulates in f32. Scales are applied where they cost least: on the
//! f32 partial sum of each step when a step lies inside one group, per code in the activation
//! type when groups are smaller than a step, once at the end for per-channel scales. The
//! `k_warps` partial sums are kept apart by a batched `dot` and added by `reduce_sum` at the
//! end; then bias, conversion and the store.
//!
//! What this module promises: [`DecodeKernel::program`] returns a program that the verifier
//! accepts for every format [`crate::QuantFormat::check`] accepts and every schedule, and that
//! computes `y = x · dequant(W)ᵀ (+ bias)` with `W` in the layout of [`crate::prepared`] for
//! every shape [`DecodeKernel::supports`] accepts; the tests run it on the interpreter against
//! an f64 reference.

use std::fmt;

use anybit_dtype::DType;
use anybit_layout::{RegisterLayout, SharedLayout, Swizzle};
use anybit_vm::builder::{block_x, ProgramBuilder, Tensor};
use anybit_vm::{Expr, FloatLit, Literal, Program, ReduceOp, Unroll};

use crate::format::{Activation, Group, QuantFormat, ZeroPoints};
use crate::prepared::{bit_planes, steps_per_chunk, LANES, STEP_COLS, TILE_ROWS};

/// The tiling of a decode kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeSchedule {
    /// Warps per block that own different row tiles.
    pub warps: usize,
    /// Warps per block that split K (contiguous slices, added at the end).
    pub k_warps: usize,
    /// Row tiles (16 rows each) per warp.
    pub tiles_per_warp: usize,
    /// Token tiles (8 tokens each): the kernel takes M ≤ 8 · `token_tiles`.
    pub token_tiles: usize,
    /// Chunks of the prepared layout loaded per loop iteration.
    pub chunks_per_step: usize,
    /// Load the next iteration's weights before computing this one's (two register buffers).
    pub prefetch: bool,
    /// Shared-memory stages of a `cp.async` pipeline for the weights (0: straight to
    /// registers). With `P` stages, `P − 1` steps of weights are in flight while one is
    /// computed, without holding registers.
    pub stages: usize,
    /// Stage each step's `x` tile in shared memory once per block (`cp.async`; two buffers,
    /// or with `stages` one in each stage, copied with its weights) and read the B fragments
    /// with `ldmatrix`, instead of every warp loading its own from global memory.
    pub shared_x: bool,
    /// Blocks that should fit on a multiprocessor at once (0: no hint): the kernel's register
    /// budget per thread is then 65536 / (threads · blocks) (`blocks_per_sm` of the program).
    pub blocks_per_sm: usize,
}

impl DecodeSchedule {
    /// The largest M the schedule takes.
    pub fn max_tokens(&self) -> usize {
        8 * self.token_tiles
    }

    /// Rows of the weight one block covers.
    pub fn block_rows(&self) -> usize {
        TILE_ROWS * self.warps * self.tiles_per_warp
    }

    /// Threads per block.
    pub fn threads(&self) -> usize {
        LANES * self.warps * self.k_warps
    }

    /// Bytes of shared memory the schedule's own tiles take for `chunk_cols`-column chunks of
    /// the weight (the `x` tiles and the `cp.async` stages; not the final K reduction).
    pub fn shared_bytes(&self, chunk_cols: usize, weight_bits: u32) -> usize {
        let step_cols = chunk_cols * self.chunks_per_step;
        let x = if self.shared_x {
            self.stages.max(2) * self.k_warps * self.max_tokens() * step_cols * 2
        } else {
            0
        };
        let stages = self.stages
            * self.warps
            * self.tiles_per_warp
            * TILE_ROWS
            * self.k_warps
            * step_cols
            * weight_bits as usize
            / 8;
        x + stages
    }

    /// Bytes of shared memory the final reduction of the K-splitting warps' f32 sums takes
    /// (as code generation lays it out: one value per warp, row and token).
    pub fn reduction_bytes(&self) -> usize {
        if self.k_warps > 1 {
            self.k_warps * self.block_rows() * self.max_tokens() * 4
        } else {
            0
        }
    }

    /// Bytes of shared memory a block asks for: the tiles, or the final reduction where it
    /// needs more (it reuses the tiles' bytes once they are freed).
    pub fn block_shared_bytes(&self, chunk_cols: usize, weight_bits: u32) -> usize {
        self.shared_bytes(chunk_cols, weight_bits)
            .max(self.reduction_bytes())
    }

    /// A short name for kernel names: `w4k2r1t1c1p`, `w2k4r2t1c2s4`, `w2k2r1t2c2x`,
    /// `w8k1r2t8c2s2x` (a weight ring and `x` staged), `w4k2r1t1c1pxb2` (two blocks per
    /// multiprocessor).
    pub fn tag(&self) -> String {
        format!(
            "w{}k{}r{}t{}c{}{}{}{}{}",
            self.warps,
            self.k_warps,
            self.tiles_per_warp,
            self.token_tiles,
            self.chunks_per_step,
            if self.prefetch { "p" } else { "" },
            if self.stages > 0 {
                format!("s{}", self.stages)
            } else {
                String::new()
            },
            if self.shared_x { "x" } else { "" },
            if self.blocks_per_sm > 0 {
                format!("b{}", self.blocks_per_sm)
            } else {
                String::new()
            }
        )
    }
}

/// Shared memory a schedule's tiles may take per block: above 48 KB the kernel's shared memory
/// is dynamic and the launch opts in to it (every GPU from sm_80 on has at least 99 KB per
/// block), and three such blocks still fit an H100's SM.
pub const MAX_SHARED_BYTES: usize = 64 * 1024;

/// Shared memory the heuristic gives a block whose weights also pass through a `cp.async`
/// ring (M ≥ 32, one or two blocks per multiprocessor; [`DecodeSchedule::block_shared_bytes`]):
/// every GPU from sm_80 on gives a block 99 KB.
pub const MAX_STAGED_SHARED_BYTES: usize = 99 * 1024;

/// Warps the heuristic wants in flight over the whole GPU at M > 8 (132 SMs with ~12 warps
/// each on an H100): below this, K is split inside the block.
pub const WARPS_WANTED: usize = 1536;

/// Warps the heuristic wants at M ≤ 8, where each warp has less work per byte and more of
/// them hide more latency.
pub const WARPS_WANTED_ONE_TILE: usize = 4096;

impl DecodeSchedule {
    /// The library's schedule when nothing is tuned (what tuning on an H100 chose most often,
    /// within about 6 % of the best candidate on the benchmark shapes):
    /// - enough token tiles for `m`; about 64 codes per lane and step (two chunks of 4-bit
    ///   codes, four of 8-bit, one of the rest);
    /// - on wide layers (N ≥ 16384) two row tiles per warp (each B fragment then serves twice
    ///   the weights) at M ≤ 16 where their codes fit in 64 registers, at M = 32 for the odd
    ///   widths and at M = 64 for the even ones (not 8-bit floats, nor 6-bit codes with zero
    ///   points); eight row warps at M = 32 and 64 where that or an even width holds; narrow
    ///   layers need the warps more and take one row tile;
    /// - at M ≤ 8, the next step's weights loaded before this step is computed (prefetch), and
    ///   where a step holds two or more chunks, one row tile per warp with K split as for two;
    /// - `x` staged in shared memory wherever its tiles fit [`MAX_SHARED_BYTES`], splitting K
    ///   over fewer warps where that makes them fit, unless at M ≤ 8 a step's registers
    ///   (accumulators, dequantized codes, zero points, B fragments) already come to about 150
    ///   (above M = 8 staging wins even where some registers spill);
    /// - two row warps at M ≤ 8, four above (eight, see above); K split over as few warps (1, 2,
    ///   4 or 8) as give [`WARPS_WANTED_ONE_TILE`] warps for one token tile or [`WARPS_WANTED`]
    ///   for more (row tiles rather than warps for 3-, 5- and 7-bit planes), among the splits
    ///   the shape allows;
    /// - 3-, 5- and 7-bit planes: two row tiles on wide layers at M = 64 without zero points
    ///   (and at M ≤ 16 for 3- and 5-bit integers), four row warps with K over four on narrow
    ///   layers at M ≤ 16 (small floats in planes of every width too, and one row tile on
    ///   wide layers at M ≤ 16); 1-bit integers without zero points two row tiles at M = 9–16
    ///   on wide layers;
    /// - at M ≥ 32 the weights through a two-stage `cp.async` ring beside the staged `x` on
    ///   narrow layers, and at M = 64 on wide ones (not odd-width planes; with zero points only
    ///   odd-width planes), within [`MAX_STAGED_SHARED_BYTES`];
    /// - at most 16 warps per block, so that a thread keeps 128 registers and nothing spills
    ///   (8 when a step's dequantized codes take more than 48 registers, and at M = 64); 1- and
    ///   7-bit integers on narrow layers at M ≤ 16 ask for two blocks per multiprocessor where
    ///   their blocks have 256 threads.
    pub fn heuristic(
        m: usize,
        n: usize,
        k: usize,
        format: QuantFormat,
        activation: Activation,
    ) -> DecodeSchedule {
        let bits = format.weight.bits();
        let lane_codes = 8 * steps_per_chunk(bits);
        let token_tiles = m.div_ceil(8).next_power_of_two().clamp(1, 8);
        let chunks = (64 / lane_codes).max(1);
        // Registers of one step's dequantized codes per thread and row tile (f32 for the
        // formats the activation type cannot hold).
        let dequant_bits = if exact_in(format.weight, activation) {
            16
        } else {
            32
        };
        let words = chunks * lane_codes * dequant_bits / 32;
        let wide = n >= 16384;
        // 8-bit floats convert through more registers: two row tiles ran 28 % slower at M = 16
        // (57344×8192 f8e4m3 on an H100: 373 against 268 µs with one).
        let eight_bit_float = bits == 8 && matches!(format.weight, DType::MiniFloat(_));
        // 3- and 5-bit codes in bit planes (H100, 57344×8192, quick tuning of d144523): two row
        // tiles at M ≤ 16 (i3 M = 1 108 against 176 µs with one; i5 139 against 152) and at
        // M = 64 (i3 307 against 384; i5 357 against 410; small floats on an H200: f3e1m1 293
        // against 418, f5e2m2 328 against 428, f7e3m3 377 against 448).
        let planes = bit_planes(format.weight).len() > 1;
        let odd_planes = planes && bits % 2 == 1;
        // Small floats in planes (one more LOP3 a pair than an integer's for the sign) keep
        // one row tile at M ≤ 16 on wide layers (57344×8192 on an H200, M = 1: f3e1m1 106
        // against 91 µs with two is the exception; f5e2m2 112 against 122, f7e3m3 154 against
        // 160, f6e3m2 123 against 149; M = 16 f5e2m2 135 against 151, f6e3m2 161 against 190).
        let float_planes = planes && matches!(format.weight, DType::MiniFloat(_));
        // 7-bit planes (4 + 2 + 1) keep one row tile at M ≤ 16 (57344×8192 i7 M = 1 on an
        // H200: 145.6 against 159.2 µs with two) but take two at M = 64 (381 against 435).
        let paired_planes = odd_planes && bits != 7 && !float_planes;
        // 1-bit integers without zero points at M = 9–16 too, although their codes take 64
        // registers a row tile (57344×8192 i1 M = 16 on an H200: 107 against 122 µs with one;
        // with zero points they spill).
        let one_bit_integer = bits == 1
            && !matches!(format.weight, DType::MiniFloat(_))
            && format.zeros == ZeroPoints::None;
        let tiles_per_warp = match token_tiles {
            1 | 2 => {
                wide && (2 * words <= 64 || paired_planes || one_bit_integer && token_tiles == 2)
                    && !eight_bit_float
                    && !float_planes
            }
            // At M = 32 the widths whose step is one chunk gain from two row tiles (57344×8192:
            // i3 238 against 301 µs), the others from eight row warps of one (see below).
            4 => wide && chunks == 1 && bits % 2 == 1,
            // At M = 64 two row tiles of eight warps on the wide layer beat one (i4 290 against
            // 394 µs) where the registers allow it without spilling: not for odd widths, 8-bit
            // floats or 6-bit codes with zero points.
            _ => {
                wide && (bits.is_multiple_of(2) || odd_planes && format.zeros == ZeroPoints::None)
                    && !eight_bit_float
                    && !(bits == 6 && format.zeros != ZeroPoints::None)
            }
        };
        let tiles_per_warp = if tiles_per_warp { 2 } else { 1 };
        // Above 48 registers of codes, and at M = 64 (whose accumulators take 32 more), a
        // block keeps to 8 warps (255 registers a thread); 16 warps of 128 spilled.
        let max_warps = if tiles_per_warp * words > 48 || token_tiles == 8 {
            8
        } else {
            16
        };
        // At M ≤ 8 the next step's weights are loaded before this step is computed (two
        // register buffers): it kept more bytes in flight per warp and gained 3–30 % at 1 and
        // 3–8 bits on an H100 (57344×8192), nothing at 2 bits.
        let prefetch = token_tiles == 1;
        let integer = matches!(format.weight, DType::Unsigned(_) | DType::Signed(_));
        let (row_warps, wanted) = if token_tiles == 1 {
            (2, WARPS_WANTED_ONE_TILE)
        } else if wide && token_tiles >= 4 && (tiles_per_warp == 2 || bits.is_multiple_of(2)) {
            // Eight row warps on the wide layer at M = 32 and 64 (57344×8192 i4 M = 32: 179
            // against 202 µs with four; i8 M = 64: 305 against 333).
            (8, WARPS_WANTED)
        } else {
            (4, WARPS_WANTED)
        };
        let supported = |schedule: DecodeSchedule| {
            DecodeKernel {
                format,
                activation,
                scale_dtype: DType::F16,
                bias: false,
                schedule,
            }
            .supports(k)
        };
        let mut schedule = DecodeSchedule {
            warps: row_warps,
            k_warps: 1,
            tiles_per_warp,
            token_tiles,
            chunks_per_step: chunks,
            prefetch,
            stages: 0,
            shared_x: false,
            blocks_per_sm: 0,
        };
        // Bit-plane kernels count row tiles rather than warps: with two row tiles per warp, K
        // split over two warps beat four (i3 57344×8192 M = 1: 108 against 123 µs).
        let warp_rows = if odd_planes {
            n.div_ceil(TILE_ROWS)
        } else {
            n.div_ceil(TILE_ROWS * schedule.tiles_per_warp)
        };
        for k_warps in [2, 4, 8] {
            if warp_rows * schedule.k_warps >= wanted {
                break;
            }
            let candidate = DecodeSchedule {
                k_warps,
                warps: (max_warps / k_warps).clamp(1, row_warps),
                ..schedule
            };
            if supported(candidate) {
                schedule = candidate;
            }
        }
        // With prefetch, where a step holds two or more chunks, two warps of one row tile each
        // (K split as for one warp of two) beat one warp of two: i4 and i8 on an H100, 100
        // against 109 µs and 165 against 170 µs.
        if prefetch && chunks >= 2 {
            schedule.tiles_per_warp = 1;
        }
        // Narrow layers of 3- and 5-bit planes (and small floats in planes) at M ≤ 16: four
        // row warps with K split over four (8192×28672 M = 1: i5 80 against 118 µs for one
        // row warp with K over eight; i3 72 against 106; 8192×8192 i3 26 against 37; on an
        // H200 f3e1m1 57 against 77, f5e2m2 71 against 91, f6e3m2 69 against 79 with K over
        // eight).
        let narrow_planes = DecodeSchedule {
            warps: 4,
            k_warps: 4,
            ..schedule
        };
        // Not for 7 bits with zero points: at 128 registers a thread they spill (and ran no
        // faster: 8192×28672 u7 M = 1 112.4 against 112.9 µs with one row warp of 256 threads).
        let seven_with_zeros = bits == 7 && format.zeros != ZeroPoints::None;
        if (odd_planes || float_planes)
            && !wide
            && token_tiles <= 2
            && !seven_with_zeros
            && supported(narrow_planes)
        {
            schedule = narrow_planes;
        }
        // 1- and 7-bit integers on narrow layers at M ≤ 16 take blocks of 256 threads that
        // ptxas gives 212–254 registers (one block per multiprocessor); asking for two (128
        // registers, some spilled) ran faster on an H100 (8192×8192: i1 M = 1 33.9 → 27.5 µs,
        // i7 53.7 → 46.9, i7 M = 16 54.4 → 44.3).
        let integer_odd_gather = integer && (bits == 1 || bits == 7);
        if integer_odd_gather && !wide && token_tiles <= 2 && schedule.threads() == 256 {
            schedule.blocks_per_sm = 2;
        }
        // `x` in shared memory, with K split over fewer warps where its tiles would not fit
        // (few warps that share x beat many that each load their own).
        let chunk_cols = STEP_COLS * steps_per_chunk(bits);
        let mut staged = DecodeSchedule {
            shared_x: true,
            ..schedule
        };
        while staged.shared_bytes(chunk_cols, bits) > MAX_SHARED_BYTES && staged.k_warps > 1 {
            staged.k_warps /= 2;
            staged.warps = (max_warps / staged.k_warps).clamp(1, row_warps);
        }
        // The two-step loop of staged x keeps more registers live: where a step already needs
        // about 150 (accumulators, dequantized codes, zero points, B fragments), it would spill.
        let dot_steps = (16 / token_tiles).min(steps_per_chunk(bits) * chunks);
        let zero_words = if format.zeros == ZeroPoints::None {
            0
        } else {
            words / 2
        };
        // Prefetch holds a second step of packed codes.
        let prefetched = if prefetch {
            chunks * lane_codes * bits as usize / 32
        } else {
            0
        };
        let live = schedule.tiles_per_warp * (4 * token_tiles + words + zero_words + prefetched)
            + 2 * dot_steps * token_tiles;
        // Above M = 8 staging wins even where it spills: every warp reading its own x costs
        // more (57344×8192 M = 64, H100: f6e3m2 360 against 1118 µs, and with some spilled
        // registers: f5e2m2 448 against 1139 µs; M = 16 and 32 alike).
        // (Bit planes of 3 and 5 bits with two row tiles were tuned with `x` staged.)
        if (live <= 150 || token_tiles > 1 || odd_planes && !seven_with_zeros)
            && staged.shared_bytes(chunk_cols, bits) <= MAX_SHARED_BYTES
            && supported(staged)
        {
            schedule = staged;
        }
        // At M ≥ 32, the weights of the next step through a two-stage `cp.async` ring beside
        // the `x` tiles (so their loads overlap this step's work without holding registers)
        // on narrow layers, and at M = 64 on wide ones except for odd-width planes; with zero
        // points only for odd-width planes (H200 against the same schedules without the ring:
        // 8192×28672 M = 64 i4 183 → 170 µs, i2 181 → 150, f6e3m2 225 → 170; M = 32 i4 99 →
        // 81, i3 134 → 112, u3 167 → 137; 57344×8192 M = 64 i4 293 → 241, f8e4m3 441 → 365,
        // i3 309 → 380 slower; at M = 32 on wide layers only i2 gained; u4 with zero points
        // 0.82–1.00×, u8 0.79× on the wide layer at M = 64).
        let ring = DecodeSchedule {
            stages: 2,
            prefetch: false,
            ..schedule
        };
        if schedule.shared_x
            && token_tiles >= 4
            && (!wide || token_tiles == 8 && !odd_planes)
            && (format.zeros == ZeroPoints::None || odd_planes)
            && ring.block_shared_bytes(chunk_cols, bits) <= MAX_STAGED_SHARED_BYTES
            && supported(ring)
        {
            schedule = ring;
        }
        schedule
    }
}

impl DecodeSchedule {
    /// The schedules tuning times for `m` tokens and an `[n, k]` weight: the heuristic's, and
    /// its neighbours (one or two row tiles per warp; K split over half, as many or twice as
    /// many warps; 1, 2 or 4 row warps), each supported by the shape and at most 16 warps, and
    /// each of them with and without `x` staged in shared memory where its tiles fit in
    /// [`MAX_SHARED_BYTES`]; at M ≥ 32 those with `x` staged also with a weight ring of two or
    /// three stages and without one (within [`MAX_STAGED_SHARED_BYTES`]).
    pub fn candidates(
        m: usize,
        n: usize,
        k: usize,
        format: QuantFormat,
        activation: Activation,
    ) -> Vec<DecodeSchedule> {
        let base = DecodeSchedule::heuristic(m, n, k, format, activation);
        let bits = format.weight.bits();
        let chunk_cols = STEP_COLS * steps_per_chunk(bits);
        let mut candidates = vec![base];
        let splits = [base.k_warps / 2, base.k_warps, base.k_warps * 2];
        for tiles_per_warp in [1, 2] {
            for &k_warps in splits.iter().filter(|&&kw| (1..=16).contains(&kw)) {
                for warps in [1, 2, 4] {
                    let mut candidate = DecodeSchedule {
                        tiles_per_warp,
                        k_warps,
                        warps,
                        blocks_per_sm: 0,
                        ..base
                    };
                    if candidate.block_shared_bytes(chunk_cols, bits) > MAX_STAGED_SHARED_BYTES {
                        candidate.stages = 0;
                    }
                    if candidate.stages == 0
                        && candidate.shared_bytes(chunk_cols, bits) > MAX_SHARED_BYTES
                    {
                        candidate.shared_x = false;
                    }
                    let kernel = DecodeKernel {
                        format,
                        activation,
                        scale_dtype: DType::F16,
                        bias: false,
                        schedule: candidate,
                    };
                    if warps * k_warps <= 16
                        && kernel.supports(k)
                        && !candidates.contains(&candidate)
                    {
                        candidates.push(candidate);
                    }
                }
            }
        }
        // Each of them also with twice the chunks per step, and with `x` staged in shared
        // memory or without, where it fits.
        let twins: Vec<DecodeSchedule> = candidates
            .iter()
            .flat_map(|c| {
                let wider = DecodeSchedule {
                    chunks_per_step: 2 * c.chunks_per_step,
                    ..*c
                };
                let wider_kernel = DecodeKernel {
                    format,
                    activation,
                    scale_dtype: DType::F16,
                    bias: false,
                    schedule: wider,
                };
                // At most 128 codes per lane and row tile in a step (registers).
                let lane_codes = chunk_cols / STEP_COLS * 8;
                let wider = (wider.chunks_per_step * lane_codes <= 128 && wider_kernel.supports(k))
                    .then_some(wider);
                [Some(*c), wider].into_iter().flatten()
            })
            .flat_map(|c| {
                [
                    c,
                    DecodeSchedule {
                        shared_x: !c.shared_x,
                        ..c
                    },
                ]
            })
            .filter(|c| {
                c.stages == 0
                    && c.shared_bytes(chunk_cols, format.weight.bits()) <= MAX_SHARED_BYTES
            })
            .collect();
        for twin in twins {
            if !candidates.contains(&twin) {
                candidates.push(twin);
            }
        }
        // At M ≥ 32, each of them with `x` staged also with the weights through a ring of two
        // or three stages, and without one, within the shared memory every GPU gives a block
        // (three stages beat two on some narrow layers where the memory allows).
        if base.token_tiles >= 4 {
            let rings: Vec<DecodeSchedule> = candidates
                .iter()
                .filter(|c| c.shared_x)
                .flat_map(|c| {
                    [0, 2, 3].map(|stages| DecodeSchedule {
                        stages,
                        prefetch: false,
                        ..*c
                    })
                })
                .filter(|c| match c.stages {
                    0 => c.shared_bytes(chunk_cols, bits) <= MAX_SHARED_BYTES,
                    _ => c.block_shared_bytes(chunk_cols, bits) <= MAX_STAGED_SHARED_BYTES,
                })
                .collect();
            for ring in rings {
                if !candidates.contains(&ring) {
                    candidates.push(ring);
                }
            }
        }
        // Blocks of 256 threads also with two of them per multiprocessor asked for (at most
        // 128 registers a thread).
        let hinted: Vec<DecodeSchedule> = candidates
            .iter()
            .filter(|c| c.threads() == 256 && c.blocks_per_sm == 0)
            .map(|c| DecodeSchedule {
                blocks_per_sm: 2,
                ..*c
            })
            .collect();
        for candidate in hinted {
            if !candidates.contains(&candidate) {
                candidates.push(candidate);
            }
        }
        candidates
    }
}

impl DecodeSchedule {
    /// The few schedules quick tuning times (about a dozen, so that tuning a layer for every M
    /// bucket takes seconds): the heuristic's, with K split over half or twice as many warps,
    /// one or two row tiles per warp and two or four row warps, `x` staged in shared memory
    /// where it fits; each supported by the shape and at most 16 warps.
    pub fn quick_candidates(
        m: usize,
        n: usize,
        k: usize,
        format: QuantFormat,
        activation: Activation,
    ) -> Vec<DecodeSchedule> {
        let base = DecodeSchedule::heuristic(m, n, k, format, activation);
        let bits = format.weight.bits();
        let chunk_cols = STEP_COLS * steps_per_chunk(bits);
        let mut candidates = vec![base];
        for tiles_per_warp in [1, 2] {
            for k_warps in [base.k_warps / 2, base.k_warps, base.k_warps * 2] {
                for warps in [2, 4] {
                    let candidate = DecodeSchedule {
                        tiles_per_warp,
                        k_warps,
                        warps,
                        shared_x: true,
                        blocks_per_sm: 0,
                        ..base
                    };
                    let kernel = DecodeKernel {
                        format,
                        activation,
                        scale_dtype: DType::F16,
                        bias: false,
                        schedule: candidate,
                    };
                    if (1..=16).contains(&(warps * k_warps))
                        && k_warps >= 1
                        && kernel.supports(k)
                        && candidate.shared_bytes(chunk_cols, bits) <= MAX_SHARED_BYTES
                        && !candidates.contains(&candidate)
                    {
                        candidates.push(candidate);
                    }
                }
            }
        }
        // The heuristic's blocks of 256 threads with and without two per multiprocessor asked
        // for.
        if base.threads() == 256 {
            let toggled = DecodeSchedule {
                blocks_per_sm: if base.blocks_per_sm == 0 { 2 } else { 0 },
                ..base
            };
            candidates.push(toggled);
        }
        candidates
    }
}

/// A schedule tag that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a decode schedule: write w<warps>k<K-splitting warps>r<row tiles per warp>t<token tiles>c<chunks per step>, then p for prefetch or s<stages> (2 to 8) for a cp.async pipeline, then x to stage x in shared memory, then optionally b<blocks per multiprocessor> (1 to 32, at most 2048 threads in all), e.g. w4k2r1t1c2p, w2k4r2t1c2s4, w2k2r1t2c2px, w8k1r2t8c2s2x or w4k2r1t1c1pxb2 (at most 32 warps in all)")]
pub struct ParseScheduleError(pub String);

impl std::str::FromStr for DecodeSchedule {
    type Err = ParseScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseScheduleError(text.to_string());
        let (text, blocks_per_sm) = match text.rfind('b') {
            Some(at) => {
                let blocks: usize = text[at + 1..].parse().map_err(|_| error())?;
                if !(1..=32).contains(&blocks) {
                    return Err(error());
                }
                (&text[..at], blocks)
            }
            None => (text, 0),
        };
        let (text, shared_x) = match text.strip_suffix('x') {
            Some(rest) => (rest, true),
            None => (text, false),
        };
        let (text_without_stages, stages) = match text.rfind('s') {
            Some(at) => {
                let stages: usize = text[at + 1..].parse().map_err(|_| error())?;
                if !(2..=8).contains(&stages) {
                    return Err(error());
                }
                (&text[..at], stages)
            }
            None => (text, 0),
        };
        let (body, prefetch) = match text_without_stages.strip_suffix('p') {
            Some(body) => (body, true),
            None => (text_without_stages, false),
        };
        if stages > 0 && prefetch {
            return Err(error());
        }
        let mut values = [0usize; 5];
        let mut rest = body;
        for (index, letter) in ['w', 'k', 'r', 't', 'c'].into_iter().enumerate() {
            rest = rest.strip_prefix(letter).ok_or_else(error)?;
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            values[index] = rest[..digits].parse().map_err(|_| error())?;
            rest = &rest[digits..];
        }
        let [warps, k_warps, tiles_per_warp, token_tiles, chunks_per_step] = values;
        let valid = rest.is_empty()
            && (1..=32).contains(&warps)
            && (1..=32).contains(&k_warps)
            && warps * k_warps <= 32
            && (1..=8).contains(&tiles_per_warp)
            && (1..=8).contains(&token_tiles)
            && (1..=8).contains(&chunks_per_step)
            && 32 * warps * k_warps * blocks_per_sm <= 2048;
        if !valid {
            return Err(error());
        }
        Ok(DecodeSchedule {
            warps,
            k_warps,
            tiles_per_warp,
            token_tiles,
            chunks_per_step,
            prefetch,
            stages,
            shared_x,
            blocks_per_sm,
        })
    }
}

impl fmt::Display for DecodeSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} warps x {} row tiles, K split over {} warps, {} token tiles, {} chunks per step{}{}{}{}",
            self.warps,
            self.tiles_per_warp,
            self.k_warps,
            self.token_tiles,
            self.chunks_per_step,
            if self.prefetch { ", prefetch" } else { "" },
            if self.stages > 0 {
                format!(", {}-stage cp.async pipeline", self.stages)
            } else {
                String::new()
            },
            if self.shared_x {
                ", x staged in shared memory"
            } else {
                ""
            },
            if self.blocks_per_sm > 0 {
                format!(", {} blocks per multiprocessor", self.blocks_per_sm)
            } else {
                String::new()
            }
        )
    }
}

/// A generated kernel and the parameters it takes besides `x`, `w`, `scales` and `y`.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProgram {
    pub program: Program,
    /// Whether the program takes a `zeros` pointer.
    pub has_zeros: bool,
    /// Whether the program takes a `bias` pointer.
    pub has_bias: bool,
}

/// The options of one decode kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeKernel {
    pub format: QuantFormat,
    pub activation: Activation,
    /// The type scales (and zero points) are stored in: f16, bf16 or f32.
    pub scale_dtype: DType,
    pub bias: bool,
    pub schedule: DecodeSchedule,
}

/// The shared tile of one step's `x`, `[slices, tokens, columns]` row-major, its 16-byte chunks
/// swizzled by row so that the 8 rows an `ldmatrix` reads fall in different banks (rows are a
/// power of two of at least 32 columns).
fn x_tile_layout(slices: usize, tokens: usize, columns: usize) -> SharedLayout {
    let row_bit = columns.trailing_zeros();
    debug_assert!(columns.is_power_of_two() && row_bit >= 5);
    // 128 bytes of banks hold 8 chunks (3 bits above the 8-element chunk); with 64-byte rows
    // two rows share them, so the chunk bits take the row bits from the second row on.
    let (bits, source) = if row_bit >= 6 {
        (3, row_bit)
    } else {
        (2, row_bit + 1)
    };
    let swizzle = Swizzle::new(bits, 3, source).expect("chunk and row bits do not overlap");
    SharedLayout::row_major(&[slices, tokens, columns]).with_swizzle(swizzle)
}

fn layout(text: &str) -> RegisterLayout {
    text.parse()
        .unwrap_or_else(|error| panic!("generated layout `{text}` does not parse: {error}"))
}

/// True when every code of `weight` converts exactly to `activation`, so weights can be
/// dequantized in the activation type.
pub fn exact_in(weight: DType, activation: Activation) -> bool {
    let act = activation.dtype();
    (0..weight.code_count() as u32).all(|code| {
        let value = weight.decode(code);
        !value.is_finite() || act.decode(act.encode(value as f32)) == value
    })
}

/// One mode of a layout in the explicit text form: its dimension, size and role.
#[derive(Clone, Copy)]
enum Role {
    Thread,
    Local,
}

/// The explicit layout text for `dims` (each a list of modes, most significant first, with
/// their role) with thread entries in the order of `threads` and locals in the order of
/// `locals` (pairs of dimension and mode index into `dims`). Modes of size 1 are dropped.
fn explicit_layout(
    dims: &[Vec<(usize, Role)>],
    threads: &[(usize, usize)],
    locals: &[(usize, usize)],
) -> RegisterLayout {
    let shape: Vec<usize> = dims
        .iter()
        .map(|modes| modes.iter().map(|&(size, _)| size).product())
        .collect();
    // New index of each kept mode.
    let kept: Vec<Vec<Option<usize>>> = dims
        .iter()
        .map(|modes| {
            let mut next = 0;
            modes
                .iter()
                .map(|&(size, _)| {
                    (size > 1).then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect()
        })
        .collect();
    let list = |entries: &[(usize, usize)], role: fn(Role) -> bool| -> Vec<String> {
        entries
            .iter()
            .filter(|&&(dim, mode)| role(dims[dim][mode].1))
            .filter_map(|&(dim, mode)| kept[dim][mode].map(|index| format!("d{dim}.{index}")))
            .collect()
    };
    let modes: Vec<String> = dims
        .iter()
        .map(|modes| {
            let sizes: Vec<String> = modes
                .iter()
                .filter(|&&(size, _)| size > 1)
                .map(|(size, _)| size.to_string())
                .collect();
            format!("[{}]", sizes.join(","))
        })
        .collect();
    let shape_text: Vec<String> = shape.iter().map(ToString::to_string).collect();
    layout(&format!(
        "layout(shape=[{}], modes=[{}], threads=[{}], locals=[{}])",
        shape_text.join(","),
        modes.join(","),
        list(threads, |r| matches!(r, Role::Thread)).join(","),
        list(locals, |r| matches!(r, Role::Local)).join(",")
    ))
}

/// The order of a thread's elements of the A operand.
#[derive(Clone, Copy, PartialEq, Eq)]
enum AOrder {
    /// As loaded: row tile, then the prepared lane order ([`crate::prepared::lane_position`]:
    /// interleaved words for 1, 2, 4 and 8 bits, fragment order otherwise).
    Loaded,
    /// As the dots take it: k step, then row tile, then fragment slot, so that the steps of
    /// one dot are a contiguous slice of every thread's registers.
    Fragments,
}

/// The A operand `[k_warps, rows, cols]` of one step of `steps` k steps, in `order`.
fn a_operand(
    kw: usize,
    wn: usize,
    r: usize,
    steps: usize,
    bits: u32,
    order: AOrder,
) -> RegisterLayout {
    let interleaved = order == AOrder::Loaded && 32 % bits == 0;
    use Role::{Local as L, Thread as T};
    // Steps per 32-bit word (1, 2 and 4 bits) or a word per half step (8 bits).
    let per_word = if interleaved && bits <= 4 {
        16 / (4 * bits as usize)
    } else {
        1
    };
    let dims = vec![
        vec![(kw, T)],
        // rows: warp, row tile, row half, g
        vec![(wn, T), (r, L), (2, L), (8, T)],
        // columns: step (split into word and step-in-word), column half, t, pair member
        vec![(steps / per_word, L), (per_word, L), (2, L), (4, T), (2, L)],
    ];
    let threads = [(0, 0), (1, 0), (1, 3), (2, 3)];
    let locals: Vec<(usize, usize)> = if order == AOrder::Fragments {
        // step, row tile, column half, row half, pair member
        vec![(2, 0), (2, 1), (1, 1), (2, 2), (1, 2), (2, 4)]
    } else if !interleaved {
        vec![(1, 1), (2, 0), (2, 1), (2, 2), (1, 2), (2, 4)]
    } else if bits == 8 {
        // a word: column half, then pair member, then row half
        vec![(1, 1), (2, 0), (2, 1), (2, 2), (2, 4), (1, 2)]
    } else {
        // a word: pair member, then steps in the word, column half, row half
        vec![(1, 1), (2, 0), (2, 4), (2, 1), (2, 2), (1, 2)]
    };
    explicit_layout(&dims, &threads, &locals)
}

/// The load of one step of a bit-plane weight, as bytes `[tiles, k_warps, step bytes]`: each
/// lane's chunk is `blocks` blocks of 16 bytes, and a thread's registers hold block 0 of every
/// row tile and chunk, then block 1, and so on, so that each plane (whole blocks of every
/// chunk) is one contiguous slice of the thread's bits whatever the row tiles and chunks.
fn planar_load(kw: usize, wn: usize, r: usize, c: usize, blocks: usize) -> RegisterLayout {
    use Role::{Local as L, Thread as T};
    let dims = vec![
        vec![(wn, T), (r, L)],
        vec![(kw, T)],
        vec![(c, L), (LANES, T), (blocks, L), (16, L)],
    ];
    let threads = [(1, 0), (0, 0), (2, 1)];
    let locals = [(2, 2), (0, 1), (2, 0), (2, 3)];
    explicit_layout(&dims, &threads, &locals)
}

/// The A operand `[k_warps, rows, cols]` of one step (`chunks` chunks) of a bit-plane weight
/// as [`planar_load`] leaves one plane of `width` bits in a thread's registers (`blocks` 16-byte
/// blocks per lane and chunk): block, row tile, chunk, then the plane's order within the
/// block ([`crate::prepared::plane_position`]: a word of the plane holds the pairs of
/// `base / width` words of the lowest plane, `base` bits wide, interleaved pair by pair).
fn a_operand_planar(
    kw: usize,
    wn: usize,
    r: usize,
    chunks: usize,
    base: u32,
    width: u32,
    blocks: usize,
) -> RegisterLayout {
    use Role::{Local as L, Thread as T};
    let base_steps = 16 / (4 * base as usize); // k steps per word of the lowest plane
    let ratio = (base / width) as usize;
    let dims = vec![
        vec![(kw, T)],
        // rows: warp, row tile, row half, g
        vec![(wn, T), (r, L), (2, L), (8, T)],
        // columns: chunk, block, word in the block, word of the lowest plane within it, step in
        // that word, column half, t, pair member
        vec![
            (chunks, L),
            (blocks, L),
            (4, L),
            (ratio, L),
            (base_steps, L),
            (2, L),
            (4, T),
            (2, L),
        ],
    ];
    let threads = [(0, 0), (1, 0), (1, 3), (2, 6)];
    // block, row tile, chunk, word, pair member, step in the lowest plane's word, column
    // half, row half, then (fastest) which word of the lowest plane
    let locals = [
        (2, 1),
        (1, 1),
        (2, 0),
        (2, 2),
        (2, 7),
        (2, 4),
        (2, 5),
        (1, 2),
        (2, 3),
    ];
    explicit_layout(&dims, &threads, &locals)
}

/// How a kernel applies scales.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scaling {
    /// One group covers each step: the step's f32 partial sums are scaled.
    Partial,
    /// Groups are smaller than a step but hold many codes per accumulator: each group's k steps
    /// go into their own f32 partial sums, scaled once per group (zero points, if any, are
    /// still subtracted per code).
    PartialPerGroup { groups_per_step: usize },
    /// Groups are smaller than a step: every code is scaled in the activation type.
    PerCode { groups_per_step: usize },
    /// Per channel: the f32 sums are scaled once at the end.
    AtEnd,
}

impl DecodeKernel {
    /// The kernel's name: `qmm_decode_u4_f16_g128_sf16_z_b_w4k1r1t1c1p`.
    pub fn name(&self) -> String {
        let group = match self.format.group {
            Group::Elements(size) => format!("g{size}"),
            Group::PerChannel => "pc".to_string(),
        };
        let zeros = match self.format.zeros {
            ZeroPoints::None => "",
            ZeroPoints::Codes => "_z",
            ZeroPoints::Scaled => "_zs",
        };
        format!(
            "qmm_decode_{}_{}_{}_s{}{}{}_{}",
            self.format.weight,
            self.activation,
            group,
            self.scale_dtype,
            zeros,
            if self.bias { "_b" } else { "" },
            self.schedule.tag()
        )
    }

    /// Columns of one chunk of the prepared layout.
    pub fn chunk_cols(&self) -> usize {
        STEP_COLS * steps_per_chunk(self.format.weight.bits())
    }

    /// Whether this kernel computes the product for an `[n, k]` weight: with K split over
    /// several warps, every slice must be whole chunks and whole groups of the unpadded K.
    pub fn supports(&self, k: usize) -> bool {
        let kw = self.schedule.k_warps;
        if kw == 1 {
            return true;
        }
        let slice = k / kw;
        let group = self.format.group.size(k);
        k.is_multiple_of(kw * self.chunk_cols())
            && (self.format.group == Group::PerChannel || slice.is_multiple_of(group))
    }

    fn scaling(&self) -> Scaling {
        let step_cols = self.chunk_cols() * self.schedule.chunks_per_step;
        // Codes that do not fit the activation type are scaled in f32 before they are
        // converted to it.
        let via_f32 = !exact_in(self.format.weight, self.activation);
        match self.format.group {
            Group::PerChannel if via_f32 => Scaling::PerCode { groups_per_step: 1 },
            Group::PerChannel => Scaling::AtEnd,
            Group::Elements(size) if size >= step_cols && !via_f32 => Scaling::Partial,
            // A group's scale costs 4·t multiplies and adds of f32 partial sums a row tile
            // (zeroing the partial sums too), against size / 4 packed multiplies when every
            // code is scaled: the partial sums win while 32·t < size (group 128 at M ≤ 16).
            Group::Elements(size) if !via_f32 && 32 * self.schedule.token_tiles < size => {
                Scaling::PartialPerGroup {
                    groups_per_step: step_cols / size,
                }
            }
            Group::Elements(size) => Scaling::PerCode {
                groups_per_step: (step_cols / size).max(1),
            },
        }
    }

    /// The anybit program of this kernel. Parameters: `x` (`[m, k]`), `w` (prepared codes),
    /// `scales`, `zeros` (when the format has them), `bias` (when asked for), `y` (`[m, n]`),
    /// then `m`, `n`, `k`.
    pub fn program(&self) -> KernelProgram {
        let s = self.schedule;
        let act = self.activation.dtype();
        let wtype = self.format.weight;
        let bits = wtype.bits();
        let steps = steps_per_chunk(bits);
        let chunk = self.chunk_cols();
        let lane_elems = 8 * steps;
        let (wn, kw, r, t, c) = (
            s.warps,
            s.k_warps,
            s.tiles_per_warp,
            s.token_tiles,
            s.chunks_per_step,
        );
        let step_steps = steps * c; // k steps per iteration
        let planes = bit_planes(wtype);
        let has_zeros = self.format.zeros != ZeroPoints::None;
        let scaling = self.scaling();
        // Columns per group; per channel every step reads group 0 (see `group_view`).
        let group = match self.format.group {
            Group::Elements(size) => size,
            Group::PerChannel => usize::MAX,
        };
        let via_f32 = !exact_in(wtype, self.activation);
        let dequant_type = if via_f32 { DType::F32 } else { act };

        let mut b = ProgramBuilder::new(&self.name());
        b.doc(&format!(
            "y[m, n] = x[m, k] · dequant(W)[n, k]^T for m <= {}: {} weights in the prepared fragment layout, {} activations, {} scales.",
            s.max_tokens(),
            self.format,
            act,
            self.scale_dtype
        ));
        b.doc(&format!("Decode schedule: {s}."));
        let x = b.pointer("x", act);
        // Bit-plane weights are read as bytes: each lane's chunk is whole 16-byte blocks, the
        // lowest plane's first, and a step's blocks are loaded block-major (see `planar_load`).
        let planar = planes.len() > 1;
        let stored = if planar { DType::Unsigned(8) } else { wtype };
        let wp = b.pointer("w", stored);
        let scales = b.pointer("scales", self.scale_dtype);
        let zeros = has_zeros.then(|| b.pointer("zeros", self.scale_dtype));
        let bias = self.bias.then(|| b.pointer("bias", act));
        let y = b.pointer("y", act);
        let m = b.int("m");
        let n = b.int("n");
        let k = match self.format.group {
            // With K split over warps every slice is whole groups (`supports`); unsplit, a
            // group need not divide K (the last one of a row may be short), and K is only
            // promised to be a multiple of 16 (what `QuantFormat::check` asks of it).
            Group::Elements(size) if kw > 1 => b.int_multiple_of("k", size as u32),
            Group::Elements(_) => b.int_multiple_of("k", Group::K_MULTIPLE as u32),
            Group::PerChannel => b.int("k"),
        };
        let tiles_per_block = (wn * r) as i32;
        b.grid([n
            .clone()
            .ceil_div(TILE_ROWS as i32)
            .ceil_div(tiles_per_block)]);
        b.threads(s.threads() as u32);
        if s.blocks_per_sm > 0 {
            b.blocks_per_sm(s.blocks_per_sm as u32);
        }

        let tiles = b.let_("tiles", n.clone().ceil_div(TILE_ROWS as i32));
        let chunks = b.let_("chunks", k.clone().ceil_div(chunk as i32));
        // Each K slice: its chunks, columns and groups.
        let slice_chunks = b.let_("slice_chunks", chunks.clone() / kw as i32);
        let slice_cols = if kw == 1 {
            k.clone()
        } else {
            b.let_("slice_cols", k.clone() / kw as i32)
        };
        let per_channel = self.format.group == Group::PerChannel;
        let padded_groups = if per_channel {
            Expr::from(1)
        } else {
            b.let_(
                "groups",
                (chunks.clone() * (chunk as i32)).ceil_div(group as i32),
            )
        };
        let slice_groups = padded_groups.clone() / kw as i32;
        let t0 = b.let_("t0", block_x() * tiles_per_block);
        // Elements of the stored type in one chunk of a row tile.
        let chunk_len = (LANES * lane_elems * bits as usize / stored.bits() as usize) as i32;
        let row_len = chunks.clone() * chunk_len;
        let slice_len = slice_chunks.clone() * chunk_len;
        let gw = b.view_global(
            "gw",
            &wp,
            [tiles.clone(), Expr::from(kw as i32), slice_len.clone()],
            [row_len, slice_len, 1.into()],
        );
        let gx = b.view_global(
            "gx",
            &x,
            [Expr::from(kw as i32), slice_cols.clone(), m.clone()],
            [slice_cols.clone(), 1.into(), k.clone()],
        );
        // Per-group values as [tiles, slices, groups of a slice, 8, 2]; per channel, every slice
        // and step sees the one group of its rows.
        let group_view = |b: &mut ProgramBuilder, name: &str, ptr| {
            let (slice_stride, groups) = if per_channel {
                (Expr::from(0), Expr::from(1))
            } else {
                (slice_groups.clone() * 16, slice_groups.clone())
            };
            b.view_global(
                name,
                ptr,
                [
                    tiles.clone(),
                    Expr::from(kw as i32),
                    groups,
                    8.into(),
                    2.into(),
                ],
                [
                    padded_groups.clone() * 16,
                    slice_stride,
                    16.into(),
                    2.into(),
                    1.into(),
                ],
            )
        };
        let gs = group_view(&mut b, "gs", &scales);
        let gz = zeros.as_ref().map(|ptr| group_view(&mut b, "gz", ptr));

        let atom_b = "local(1,2,1).column_spatial(1,4,8).local(1,2,1)";
        let atom_c = "local(1,2,1).spatial(1,8,4).local(1,1,2)";
        let c_layout = layout(&format!("spatial({kw},{wn},1).local(1,{r},{t}).{atom_c}"));
        let load_layout = if planar {
            planar_load(kw, wn, r, c, lane_elems * bits as usize / 128)
        } else {
            layout(&format!(
                "spatial(1,{kw},1).spatial({wn},1,1).local({r},1,{c}).spatial(1,1,32).local(1,1,{lane_elems})"
            ))
        };
        let a_lanes = a_operand(kw, wn, r, step_steps, bits, AOrder::Loaded);
        let a_fragments = a_operand(kw, wn, r, step_steps, bits, AOrder::Fragments);
        // Each dot takes `dot_steps` k steps, so that its B fragments (2 registers per k step
        // and token tile) stay within 32 registers.
        let dot_steps = match scaling {
            // ... and lies within one group when each group has its own partial sums.
            Scaling::PartialPerGroup { groups_per_step } => {
                (16 / t).clamp(1, step_steps / groups_per_step)
            }
            _ => (16 / t).clamp(1, step_steps),
        };
        let a_dot = a_operand(kw, wn, r, dot_steps, bits, AOrder::Fragments);
        let dot_bits = (dot_steps * r * 8 * act.bits() as usize) as u32;
        let b_layout = layout(&format!(
            "spatial({kw},1,1).replicate({wn}).local(1,{dot_steps},{t}).{atom_b}"
        ));
        // With `x` staged in shared memory as [slices, tokens, columns]: the same registers
        // as `b_layout`, read from the row-major tile (each register one row-pair of an 8×8
        // matrix, so an `ldmatrix`) and then viewed as B fragments.
        let x_rows_layout = layout(&format!(
            "spatial({kw},1,1).replicate({wn}).local(1,1,{dot_steps}).local(1,{t},1).local(1,1,2).spatial(1,8,4).local(1,1,2)"
        ));
        // Per-group values of a step, loaded as [tiles, slices, groups, 8, 2].
        let groups_per_step = match scaling {
            Scaling::PerCode { groups_per_step } | Scaling::PartialPerGroup { groups_per_step } => {
                groups_per_step
            }
            _ => 1,
        };
        let group_load = |groups: usize| {
            layout(&format!(
                "spatial(1,{kw},1,1,1).spatial({wn},1,1,1,1).local({r},1,{groups},1,1).spatial(1,1,1,8,1).local(1,1,1,1,2).replicate(4)"
            ))
        };
        // ... used per row as [slices, rows, 1] or, per code, as [slices, rows, groups, 1].
        let rows_use = layout(&format!(
            "spatial({kw},{wn},1).local(1,{r},1).local(1,2,1).spatial(1,8,1).replicate(4)"
        ));
        let codes_use = layout(&format!(
            "spatial({kw},{wn},1,1).local(1,{r},{groups_per_step},1).local(1,2,1,1).spatial(1,8,1,1).replicate(4)"
        ));
        let a_groups = layout(&format!(
            "spatial({kw},{wn},1,1).local(1,1,{groups_per_step},{}).local(1,{r},1,1).column_local(1,2,1,2).spatial(1,8,1,4).local(1,1,1,2)",
            step_steps / groups_per_step
        ));

        let zero = Some(Literal::Float(FloatLit(0.0)));
        let acc = b.alloc_register("acc", DType::F32, c_layout.clone(), zero);
        let load_weights = |b: &mut ProgramBuilder, name: &str, first_chunk: Expr| {
            b.load_global(
                name,
                &gw,
                [t0.clone(), 0.into(), first_chunk * chunk_len],
                load_layout.clone(),
            )
        };
        // Loads per-group values of the step starting at `first_chunk` in `dtype`, shaped as
        // `usage`: the step's `groups` groups from its group `skip` on.
        let group_values = |b: &mut ProgramBuilder,
                            name: &str,
                            view: &Tensor,
                            first_chunk: Expr,
                            (skip, groups): (usize, usize),
                            usage: &RegisterLayout,
                            dtype: DType| {
            let first_group = if per_channel {
                Expr::from(0)
            } else {
                first_chunk * (chunk as i32) / (group as i32) + skip as i32
            };
            let raw = b.load_global(
                &format!("{name}_raw"),
                view,
                [t0.clone(), 0.into(), first_group, 0.into(), 0.into()],
                group_load(groups),
            );
            let shaped = b.view(
                &format!("{name}_rows"),
                &raw,
                self.scale_dtype,
                usage.clone(),
            );
            if self.scale_dtype == dtype {
                shaped
            } else {
                b.cast(name, &shaped, dtype)
            }
        };
        let step = |b: &mut ProgramBuilder,
                    weights: &Tensor,
                    x_tile: Option<&Tensor>,
                    first_chunk: Expr| {
            let mut deq = if planar {
                // Each plane is a contiguous slice of the thread's bits (its blocks of every row
                // tile and chunk), put together and converted by one `cast_planes`.
                let mut offset = 0;
                let views: Vec<Tensor> = planes
                    .iter()
                    .enumerate()
                    .map(|(index, &width)| {
                        let blocks = lane_elems * width as usize / 128;
                        let lanes = a_operand_planar(kw, wn, r, c, planes[0], width, blocks);
                        let view = b.view_slice(
                            &format!("plane{index}"),
                            weights,
                            DType::Unsigned(width as u8),
                            lanes,
                            offset,
                        );
                        offset += (blocks * r * c * 128) as u32;
                        view
                    })
                    .collect();
                let views: Vec<&Tensor> = views.iter().collect();
                b.cast_planes(
                    "deq",
                    &views,
                    wtype,
                    dequant_type,
                    Some(a_fragments.clone()),
                )
            } else {
                let codes = b.view("codes", weights, wtype, a_lanes.clone());
                if a_lanes == a_fragments {
                    b.cast("deq", &codes, dequant_type)
                } else {
                    b.cast_to("deq", &codes, dequant_type, a_fragments.clone())
                }
            };
            // Several groups in a step: zero points (and per-code scales) per group of codes.
            let grouped = groups_per_step > 1 || matches!(scaling, Scaling::PerCode { .. });
            let usage = if grouped { &codes_use } else { &rows_use };
            let step_groups = (0, groups_per_step);
            if grouped {
                deq = b.view("deq_groups", &deq, dequant_type, a_groups.clone());
            }
            if let Some(gz) = &gz {
                let zero = group_values(
                    b,
                    "zero",
                    gz,
                    first_chunk.clone(),
                    step_groups,
                    usage,
                    dequant_type,
                );
                deq = b.sub(deq.name(), &deq, &zero);
            }
            if let Scaling::PerCode { .. } = scaling {
                let scale = group_values(
                    b,
                    "scale",
                    &gs,
                    first_chunk.clone(),
                    step_groups,
                    usage,
                    dequant_type,
                );
                deq = b.mul(deq.name(), &deq, &scale);
            }
            if grouped {
                deq = b.view("deq_fragments", &deq, dequant_type, a_fragments.clone());
            }
            let a = if via_f32 { b.cast("a", &deq, act) } else { deq };
            // Dot `part` (k steps `part · dot_steps ..`) into `target`.
            let dot = |b: &mut ProgramBuilder, part: usize, target: &Tensor| {
                let a_part = if dot_steps == step_steps {
                    a.clone()
                } else {
                    b.view_slice("a_part", &a, act, a_dot.clone(), part as u32 * dot_bits)
                };
                let part_col = (part * dot_steps * 16) as i32;
                let xb = match x_tile {
                    Some(tile) => {
                        let rows =
                            b.load_shared("x_rows", tile, [0, 0, part_col], x_rows_layout.clone());
                        b.view("xb", &rows, act, b_layout.clone())
                    }
                    None => {
                        let first_col = first_chunk.clone() * (chunk as i32) + part_col;
                        b.load_global("xb", &gx, [0.into(), first_col, 0.into()], b_layout.clone())
                    }
                };
                b.dot(target.name(), &a_part, &xb, target);
            };
            let dots = step_steps / dot_steps;
            match scaling {
                Scaling::Partial | Scaling::PartialPerGroup { .. } => {
                    // Each group's dots into zeroed f32 partial sums, scaled and added.
                    let dots_per_group = dots / groups_per_step;
                    for g in 0..groups_per_step {
                        let part = b.alloc_register("part", DType::F32, c_layout.clone(), zero);
                        for d in 0..dots_per_group {
                            dot(b, g * dots_per_group + d, &part);
                        }
                        let scale = group_values(
                            b,
                            "scale",
                            &gs,
                            first_chunk.clone(),
                            (g, 1),
                            &rows_use,
                            DType::F32,
                        );
                        let scaled = b.mul("part", &part, &scale);
                        b.add("acc", &acc, &scaled);
                    }
                }
                _ => {
                    for d in 0..dots {
                        dot(b, d, &acc);
                    }
                }
            }
        };
        let cs = c as i32;
        // `count` shared tiles of a step's `x`, and the view of `x` they are copied from.
        let x_tiles_of = |b: &mut ProgramBuilder, count: usize| {
            let shared = x_tile_layout(kw, s.max_tokens(), chunk * c);
            let tiles: Vec<Tensor> = (0..count)
                .map(|j| b.alloc_shared(&format!("x{j}"), act, shared.clone()))
                .collect();
            let gxr = b.view_global(
                "gx_rows",
                &x,
                [Expr::from(kw as i32), m.clone(), slice_cols.clone()],
                [slice_cols.clone(), k.clone(), 1.into()],
            );
            (tiles, gxr)
        };
        if s.stages >= 2 {
            // A ring of `stages` shared tiles: step i reads stage i % P, which the copy issued
            // P − 1 steps earlier filled; after the barrier that follows its wait, every warp
            // has finished step i − 1, so stage (i − 1) % P takes the copy for step i + P − 1.
            // With `x` staged, each stage also holds its step's `x` tile, in the same group.
            let p = s.stages;
            let tile = SharedLayout::row_major(&[wn * r, kw, c * chunk_len as usize]);
            let ring: Vec<Tensor> = (0..p)
                .map(|j| b.alloc_shared(&format!("stage{j}"), stored, tile.clone()))
                .collect();
            let x_ring = s.shared_x.then(|| x_tiles_of(&mut b, p));
            let copy = |b: &mut ProgramBuilder, j: usize, first_chunk: Expr| {
                b.copy_async(
                    &ring[j],
                    &gw,
                    [t0.clone(), 0.into(), first_chunk.clone() * chunk_len],
                );
                if let Some((tiles, gxr)) = &x_ring {
                    b.copy_async(
                        &tiles[j],
                        gxr,
                        [0.into(), 0.into(), first_chunk * (chunk as i32)],
                    );
                }
                b.commit_group();
            };
            for j in 0..p - 1 {
                copy(&mut b, j, Expr::from((j * c) as i32));
            }
            b.for_(
                "c",
                0,
                slice_chunks.clone(),
                (p * c) as i32,
                Unroll::None,
                |b, ci| {
                    for j in 0..p {
                        let first_chunk = ci.clone() + (j * c) as i32;
                        b.wait_group((p - 2) as u32);
                        b.barrier();
                        copy(
                            b,
                            (j + p - 1) % p,
                            first_chunk.clone() + ((p - 1) * c) as i32,
                        );
                        let weights = b.load_shared("wq", &ring[j], [0, 0, 0], load_layout.clone());
                        let x_tile = x_ring.as_ref().map(|(tiles, _)| &tiles[j]);
                        step(b, &weights, x_tile, first_chunk);
                    }
                },
            );
            b.wait_group(0);
            let x_tiles = x_ring.iter().flat_map(|(tiles, _)| tiles);
            for stage in ring.iter().chain(x_tiles) {
                b.free_shared(stage);
            }
        } else if s.prefetch || s.shared_x {
            // Two steps per iteration, so that the register buffers of prefetched weights and
            // the shared buffers of `x` alternate statically. With `x` in shared memory, the
            // barrier before step i's copy is where every warp has finished step i − 1, whose
            // buffer that copy refills.
            let x_tiles = s.shared_x.then(|| x_tiles_of(&mut b, 2));
            let copy_x = |b: &mut ProgramBuilder, j: usize, first_chunk: Expr| {
                if let Some((tiles, gxr)) = &x_tiles {
                    b.wait_group(0);
                    b.barrier();
                    b.copy_async(
                        &tiles[j],
                        gxr,
                        [0.into(), 0.into(), first_chunk * (chunk as i32)],
                    );
                    b.commit_group();
                }
            };
            let x_tile = |j: usize| x_tiles.as_ref().map(|(tiles, _)| tiles[j].clone());
            copy_x(&mut b, 0, 0.into());
            let first = s.prefetch.then(|| load_weights(&mut b, "wa", 0.into()));
            b.for_(
                "c",
                0,
                slice_chunks.clone(),
                2 * cs,
                Unroll::None,
                |b, ci| {
                    // The weights this step computes (prefetched: loaded one step earlier).
                    let mut current = first.clone();
                    for j in 0..2 {
                        let first_chunk = ci.clone() + j as i32 * cs;
                        copy_x(b, 1 - j, first_chunk.clone() + cs);
                        let weights = match current.as_mut() {
                            // The other register buffer takes the next step's weights.
                            Some(current) => {
                                let next =
                                    load_weights(b, ["wb", "wa"][j], first_chunk.clone() + cs);
                                std::mem::replace(current, next)
                            }
                            None => load_weights(b, "wq", first_chunk.clone()),
                        };
                        step(b, &weights, x_tile(j).as_ref(), first_chunk);
                    }
                },
            );
            if let Some((tiles, _)) = &x_tiles {
                b.wait_group(0);
                for tile in tiles {
                    b.free_shared(tile);
                }
            }
        } else {
            b.for_("c", 0, slice_chunks.clone(), cs, Unroll::None, |b, ci| {
                let weights = load_weights(b, "wq", ci.clone());
                step(b, &weights, None, ci);
            });
        }
        let sum = b.reduce("sum", ReduceOp::Sum, &acc, 0);
        // Per-row values after the sum: [1, rows, 1], held by every K warp.
        let row_use = layout(&format!(
            "replicate({kw}).spatial(1,{wn},1).local(1,{r},1).local(1,2,1).spatial(1,8,1).replicate(4)"
        ));
        if scaling == Scaling::AtEnd {
            let gpc = b.view_global(
                "gpc",
                &scales,
                [tiles.clone(), 8.into(), 2.into()],
                [16, 2, 1],
            );
            let raw = b.load_global(
                "channel_raw",
                &gpc,
                [t0.clone(), 0.into(), 0.into()],
                layout(&format!(
                    "replicate({kw}).spatial({wn},1,1).local({r},1,1).spatial(1,8,1).local(1,1,2).replicate(4)"
                )),
            );
            let rows = b.view("channel_rows", &raw, self.scale_dtype, row_use.clone());
            let scale = if self.scale_dtype == DType::F32 {
                rows
            } else {
                b.cast("channel", &rows, DType::F32)
            };
            b.mul("sum", &sum, &scale);
        }
        if let Some(bias) = &bias {
            let gb = b.view_global("gb", bias, [1.into(), n.clone(), 1.into()], [0, 1, 0]);
            let bias_act = b.load_global(
                "bias_act",
                &gb,
                [0.into(), t0.clone() * (TILE_ROWS as i32), 0.into()],
                row_use.clone(),
            );
            let bias_f32 = b.cast("bias_f32", &bias_act, DType::F32);
            b.add("sum", &sum, &bias_f32);
        }
        let out = b.cast("out", &sum, act);
        let gy = b.view_global("gy", &y, [1.into(), n.clone(), m], [0.into(), 1.into(), n]);
        b.store_global(&gy, [0.into(), t0 * (TILE_ROWS as i32), 0.into()], &out);
        KernelProgram {
            program: b.finish(),
            has_zeros,
            has_bias: self.bias,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_tags_round_trip() {
        for tag in [
            "w4k2r1t1c1p",
            "w2k4r2t1c2s4",
            "w2k2r1t2c2px",
            "w4k2r1t1c1pxb2",
            "w2k2r2t1c1pb4",
            "w8k4r1t8c1xb2",
            "w1k1r1t1c1b1",
            "w8k1r2t8c2s3x",
        ] {
            let schedule: DecodeSchedule = tag.parse().unwrap();
            assert_eq!(schedule.tag(), tag);
        }
        let hinted: DecodeSchedule = "w4k2r1t1c1pxb2".parse().unwrap();
        assert_eq!(hinted.blocks_per_sm, 2);
        assert!(hinted.shared_x && hinted.prefetch);
        assert!(hinted
            .to_string()
            .ends_with(", 2 blocks per multiprocessor"));
        // No hint of 0 blocks, nor more threads than a multiprocessor holds (8·4 warps · 3).
        for bad in [
            "w4k2r1t1c1pb0",
            "w8k4r1t1c1b3",
            "w4k2r1t1c1bx",
            "w4k2r1t1c1b",
        ] {
            let error = bad.parse::<DecodeSchedule>().unwrap_err();
            assert!(error.to_string().contains("b<blocks per multiprocessor>"));
        }
    }

    #[test]
    fn the_hint_reaches_the_program() {
        let format = QuantFormat::new(DType::Signed(3), Group::Elements(128));
        let kernel = |tag: &str| DecodeKernel {
            format,
            activation: Activation::F16,
            scale_dtype: DType::F16,
            bias: false,
            schedule: tag.parse().unwrap(),
        };
        assert_eq!(
            kernel("w4k2r1t1c1pxb2").program().program.blocks_per_sm,
            Some(2)
        );
        assert_eq!(kernel("w4k2r1t1c1px").program().program.blocks_per_sm, None);
    }
}
