//! The decode schedule: quantized matrix products for few tokens (M ≤ 64), as anybit programs.
//!
//! The weight is the A operand of `mma.m16n8k16` (rows of W are rows of the tile), the tokens
//! are its N: every warp streams the prepared fragments of `tiles_per_warp` row tiles with
//! 16-byte loads, `view`s the bits as A fragments, converts them with the packed casts, applies
//! zero points and scales in the activation type, and multiplies with B fragments of `x` loaded
//! straight from global memory (tokens beyond M read as zeros). Accumulation is in f32; the
//! result is scaled per channel (if so), biased, converted and stored.
//!
//! What this module promises: [`decode_program`] returns a program that the verifier accepts
//! for every format [`crate::QuantFormat::check`] accepts and every valid schedule, and that
//! computes `y = x · dequant(W)ᵀ (+ bias)` with `W` in the layout of [`crate::prepared`]; the
//! tests run it on the interpreter against an f64 reference.

use std::fmt;

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;
use anybit_vm::builder::{block_x, ProgramBuilder, Tensor};
use anybit_vm::{Expr, Literal, Program, Unroll};

use crate::format::{Activation, Group, QuantFormat, ZeroPoints};
use crate::prepared::{steps_per_chunk, LANES, STEP_COLS, TILE_ROWS};

/// The tiling of a decode kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeSchedule {
    /// Warps per block; each owns its own row tiles.
    pub warps: usize,
    /// Row tiles (16 rows each) per warp.
    pub tiles_per_warp: usize,
    /// Token tiles (8 tokens each): the kernel takes M ≤ 8 · `token_tiles`.
    pub token_tiles: usize,
    /// Chunks of the prepared layout loaded per loop iteration.
    pub chunks_per_step: usize,
    /// Load the next iteration's weights before computing this one's (two register buffers).
    pub prefetch: bool,
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
        LANES * self.warps
    }

    /// A short name for kernel names: `w4r1t1c1p`.
    pub fn tag(&self) -> String {
        format!(
            "w{}r{}t{}c{}{}",
            self.warps,
            self.tiles_per_warp,
            self.token_tiles,
            self.chunks_per_step,
            if self.prefetch { "p" } else { "" }
        )
    }
}

/// A schedule tag that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a decode schedule: write w<warps>r<row tiles per warp>t<token tiles>c<chunks per step>, then p for prefetch, e.g. w4r1t1c2p")]
pub struct ParseScheduleError(pub String);

impl std::str::FromStr for DecodeSchedule {
    type Err = ParseScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseScheduleError(text.to_string());
        let (body, prefetch) = match text.strip_suffix('p') {
            Some(body) => (body, true),
            None => (text, false),
        };
        let mut values = [0usize; 4];
        let mut rest = body;
        for (index, letter) in ['w', 'r', 't', 'c'].into_iter().enumerate() {
            rest = rest.strip_prefix(letter).ok_or_else(error)?;
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            values[index] = rest[..digits].parse().map_err(|_| error())?;
            rest = &rest[digits..];
        }
        let [warps, tiles_per_warp, token_tiles, chunks_per_step] = values;
        let valid = rest.is_empty()
            && (1..=16).contains(&warps)
            && (1..=8).contains(&tiles_per_warp)
            && (1..=8).contains(&token_tiles)
            && (1..=8).contains(&chunks_per_step);
        if !valid {
            return Err(error());
        }
        Ok(DecodeSchedule {
            warps,
            tiles_per_warp,
            token_tiles,
            chunks_per_step,
            prefetch,
        })
    }
}

impl fmt::Display for DecodeSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} warps x {} row tiles, {} token tiles, {} chunks per step{}",
            self.warps,
            self.tiles_per_warp,
            self.token_tiles,
            self.chunks_per_step,
            if self.prefetch { ", prefetch" } else { "" }
        )
    }
}

/// What a generated kernel expects at launch besides its pointers: the parameter order.
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

impl DecodeKernel {
    /// The kernel's name: `qmm_decode_u4_f16_g128_z_b_w4r1t1c1p`.
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

    /// The anybit program of this kernel. Parameters: `x` (`[m, k]`), `w` (prepared codes),
    /// `scales`, `zeros` (when the format has them), `bias` (when asked for), `y` (`[m, n]`),
    /// then `m`, `n`, `k`.
    pub fn program(&self) -> KernelProgram {
        let s = self.schedule;
        let act = self.activation.dtype();
        let wtype = self.format.weight;
        let bits = wtype.bits();
        let steps = steps_per_chunk(bits);
        let chunk = STEP_COLS * steps; // columns of one chunk
        let lane_elems = 8 * steps; // elements of one lane in one chunk
        let (w, r, t, c) = (s.warps, s.tiles_per_warp, s.token_tiles, s.chunks_per_step);
        let step_cols = chunk * c; // columns per iteration
        let step_ksteps = steps * c;
        let has_zeros = self.format.zeros != ZeroPoints::None;
        let per_channel = self.format.group == Group::PerChannel;
        let group = match self.format.group {
            Group::Elements(size) => size,
            Group::PerChannel => step_cols,
        };
        // Groups met in one iteration and the columns of each.
        let (groups_per_step, group_cols) = if group >= step_cols {
            (1, step_cols)
        } else {
            (step_cols / group, group)
        };

        let mut b = ProgramBuilder::new(&self.name());
        b.doc(&format!(
            "y[m, n] = x[m, k] · dequant(W)[n, k]^T for m <= {}: {} weights in the prepared fragment layout, {} activations, {} scales.",
            s.max_tokens(),
            self.format,
            act,
            self.scale_dtype
        ));
        b.doc(&format!("Decode schedule: {}.", s));
        let x = b.pointer("x", act);
        let wp = b.pointer("w", wtype);
        let scales = b.pointer("scales", self.scale_dtype);
        let zeros = has_zeros.then(|| b.pointer("zeros", self.scale_dtype));
        let bias = self.bias.then(|| b.pointer("bias", act));
        let y = b.pointer("y", act);
        let m = b.int("m");
        let n = b.int("n");
        let k = match self.format.group {
            Group::Elements(size) => b.int_multiple_of("k", size as u32),
            Group::PerChannel => b.int("k"),
        };
        let tiles_per_block = (w * r) as i32;
        b.grid([n
            .clone()
            .ceil_div(TILE_ROWS as i32)
            .ceil_div(tiles_per_block)]);
        b.threads(s.threads() as u32);

        let tiles = b.let_("tiles", n.clone().ceil_div(TILE_ROWS as i32));
        let chunks = b.let_("chunks", k.clone().ceil_div(chunk as i32));
        let padded_groups = if per_channel {
            Expr::from(1)
        } else {
            b.let_("groups", chunks.clone() * (chunk as i32) / (group as i32))
        };
        let t0 = b.let_("t0", block_x() * tiles_per_block);
        let row_len = chunks.clone() * ((LANES * lane_elems) as i32);
        let gw = b.view_global(
            "gw",
            &wp,
            [tiles.clone(), row_len.clone()],
            [row_len, 1.into()],
        );
        let gx = b.view_global("gx", &x, [k.clone(), m.clone()], [1.into(), k.clone()]);
        let group_view = |b: &mut ProgramBuilder, name: &str, ptr| {
            b.view_global(
                name,
                ptr,
                [tiles.clone(), padded_groups.clone(), 8.into(), 2.into()],
                [padded_groups.clone() * 16, 16.into(), 2.into(), 1.into()],
            )
        };
        let gs = group_view(&mut b, "gs", &scales);
        let gz = zeros.as_ref().map(|ptr| group_view(&mut b, "gz", ptr));

        let atom_a3 = "column_local(2,1,2).spatial(8,1,4).local(1,1,2)";
        let atom_a = "column_local(2,2).spatial(8,4).local(1,2)";
        let atom_b = "local(2,1).column_spatial(4,8).local(2,1)";
        let atom_c = "local(2,1).spatial(8,4).local(1,2)";
        let c_layout = layout(&format!("spatial({w},1).local({r},{t}).{atom_c}"));
        let load_layout = layout(&format!(
            "spatial({w},1).local({r},{c}).spatial(1,32).local(1,{lane_elems})"
        ));
        let a3_layout = layout(&format!(
            "spatial({w},1,1).local({r},{groups_per_step},{}).{atom_a3}",
            group_cols / STEP_COLS
        ));
        let a2_layout = layout(&format!("spatial({w},1).local({r},{step_ksteps}).{atom_a}"));
        let b_layout = layout(&format!("replicate({w}).local({step_ksteps},{t}).{atom_b}"));
        // Per-group values of a step: loaded as [tiles, groups, 8, 2], used as [rows, groups, 1].
        let group_load = layout(&format!(
            "spatial({w},1,1,1).local({r},{groups_per_step},1,1).spatial(1,1,8,1).local(1,1,1,2).replicate(4)"
        ));
        let group_use = layout(&format!(
            "spatial({w},1,1).local({r},{groups_per_step},1).local(2,1,1).spatial(8,1,1).replicate(4)"
        ));
        let row_load = layout(&format!(
            "spatial({w},1,1,1).local({r},1,1,1).spatial(1,1,8,1).local(1,1,1,2).replicate(4)"
        ));
        let row_use = layout(&format!(
            "spatial({w},1).local({r},1).local(2,1).spatial(8,1).replicate(4)"
        ));
        let via_f32 = !exact_in(wtype, self.activation);
        let dequant_type = if via_f32 { DType::F32 } else { act };

        let acc = b.alloc_register(
            "acc",
            DType::F32,
            c_layout.clone(),
            Some(Literal::Float(anybit_vm::FloatLit(0.0))),
        );
        let load_weights = |b: &mut ProgramBuilder, name: &str, first_chunk: Expr| {
            b.load_global(
                name,
                &gw,
                [t0.clone(), first_chunk * ((LANES * lane_elems) as i32)],
                load_layout.clone(),
            )
        };
        // Loads per-group values as [tiles, groups, 8, 2] and returns them as `usage` in `dtype`.
        let group_values = |b: &mut ProgramBuilder,
                            name: &str,
                            view: &Tensor,
                            first_group: Expr,
                            (load, usage): (&RegisterLayout, &RegisterLayout),
                            dtype: DType| {
            let raw = b.load_global(
                &format!("{name}_raw"),
                view,
                [t0.clone(), first_group, 0.into(), 0.into()],
                load.clone(),
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
        let step = |b: &mut ProgramBuilder, weights: &Tensor, first_chunk: Expr| {
            let codes = b.view("codes", weights, wtype, a3_layout.clone());
            let mut deq = b.cast("deq", &codes, dequant_type);
            let first_group = if per_channel {
                Expr::from(0)
            } else {
                first_chunk.clone() * (chunk as i32) / (group as i32)
            };
            let per_group = (&group_load, &group_use);
            if let Some(gz) = &gz {
                let zero =
                    group_values(b, "zero", gz, first_group.clone(), per_group, dequant_type);
                deq = b.sub("deq", &deq, &zero);
            }
            if !per_channel {
                let scale = group_values(b, "scale", &gs, first_group, per_group, dequant_type);
                deq = b.mul("deq", &deq, &scale);
            }
            let deq = if via_f32 {
                b.cast("deq_act", &deq, act)
            } else {
                deq
            };
            let a = b.view("a", &deq, act, a2_layout.clone());
            let xb = b.load_global(
                "xb",
                &gx,
                [first_chunk * (chunk as i32), 0.into()],
                b_layout.clone(),
            );
            b.dot("acc", &a, &xb, &acc);
        };
        let cs = c as i32;
        if s.prefetch {
            let first = load_weights(&mut b, "wa", 0.into());
            b.for_("c", 0, chunks.clone(), 2 * cs, Unroll::None, |b, ci| {
                let second = load_weights(b, "wb", ci.clone() + cs);
                step(b, &first, ci.clone());
                load_weights(b, "wa", ci.clone() + 2 * cs);
                step(b, &second, ci + cs);
            });
        } else {
            b.for_("c", 0, chunks.clone(), cs, Unroll::None, |b, ci| {
                let weights = load_weights(b, "wq", ci.clone());
                step(b, &weights, ci);
            });
        }
        if per_channel {
            let scale = group_values(
                &mut b,
                "scale",
                &gs,
                0.into(),
                (&row_load, &row_use),
                DType::F32,
            );
            b.mul("acc", &acc, &scale);
        }
        if let Some(bias) = &bias {
            let gb = b.view_global("gb", bias, [n.clone(), 1.into()], [1, 0]);
            let bias_act = b.load_global(
                "bias_act",
                &gb,
                [t0.clone() * (TILE_ROWS as i32), 0.into()],
                row_use.clone(),
            );
            let bias_f32 = b.cast("bias_f32", &bias_act, DType::F32);
            b.add("acc", &acc, &bias_f32);
        }
        let out = b.cast("out", &acc, act);
        let gy = b.view_global("gy", &y, [n.clone(), m], [1.into(), n]);
        b.store_global(&gy, [t0 * (TILE_ROWS as i32), 0.into()], &out);
        KernelProgram {
            program: b.finish(),
            has_zeros,
            has_bias: self.bias,
        }
    }
}
