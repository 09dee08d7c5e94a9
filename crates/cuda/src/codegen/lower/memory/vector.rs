//! Vector groups: how a thread's consecutive elements become 4-, 8- or 16-byte accesses, for
//! every element width, and the tile addressing that global and shared accesses share.
//!
//! What this module promises: a *group* of `G` consecutive elements of a thread is `k`
//! accesses of `B` = 4, 8 or 16 bytes, where `G·n = k·8B` bits (`G = 8B / gcd(n, 8B)`, so a
//! group is a whole number of elements and of accesses: 32 `u3` = three 4-byte words, 128 `u5`
//! = five 16-byte vectors); a group starts at a register word boundary and covers whole words,
//! and [`read_group`] / [`write_group`] move exactly those words. Whether a tile may be
//! accessed by groups (contiguity and alignment) is decided by the global and shared planners,
//! from [`run_length`] and [`group_start_alignment`].

use anybit_dtype::DType;
use anybit_vm::Expr;

use crate::codegen::emitter::Emitter;
use crate::codegen::layout::{pow2_factor, Terms};
use crate::codegen::scalar::gcd;

/// One vectorised access pattern: groups of `elems` elements along `dim`, each `accesses`
/// accesses of `bytes` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Vector {
    pub dim: usize,
    pub elems: usize,
    pub bytes: usize,
    pub accesses: usize,
}

impl Vector {
    /// The group for `bits`-bit elements and `bytes`-byte accesses.
    pub fn group(dim: usize, bits: usize, bytes: usize) -> Vector {
        let access_bits = bytes * 8;
        let g = gcd(bits as u64, access_bits as u64) as usize;
        Vector {
            dim,
            elems: access_bits / g,
            bytes,
            accesses: bits / g,
        }
    }

    /// The 32-bit words of one access.
    pub fn words(&self) -> usize {
        self.bytes / 4
    }

    /// The selection line for `what` (e.g. `global loads`) of `dtype` elements.
    pub fn describe(&self, dtype: DType, what: &str) -> String {
        if self.accesses == 1 {
            format!(
                "{}-byte {what} ({} elements of {dtype} along dimension {})",
                self.bytes, self.elems, self.dim
            )
        } else {
            format!(
                "{}-byte {what}, {} per group of {} elements of {dtype} ({} bits) along dimension {}",
                self.bytes,
                self.accesses,
                self.elems,
                self.elems * dtype.bits() as usize,
                self.dim
            )
        }
    }
}

/// How a tile access is split into groups.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// `None` for per-element accesses.
    pub vector: Option<Vector>,
}

/// The byte sizes to try, widest first.
pub(super) const WIDTHS: [usize; 3] = [16, 8, 4];

/// The number of consecutive local indices, starting at every multiple of it, that walk
/// dimension `dim` with coordinate stride 1 (consecutive registers = consecutive coordinates).
pub(super) fn run_length(terms: &Terms, dim: usize) -> usize {
    let mut run = 1usize;
    for t in &terms.local_terms {
        if t.dim == dim && t.coord_stride == run && t.index_stride == run {
            run *= t.size;
        } else {
            break;
        }
    }
    run
}

/// The largest power of two that provably divides the coordinate along `dim` of the first
/// element of every group of `elems` (a power of two dividing the run) elements: the offset's
/// divisor, the thread part and the local digits outside the run.
pub(super) fn group_start_alignment(
    e: &Emitter,
    offset: &Expr,
    terms: &Terms,
    dim: usize,
    elems: usize,
) -> usize {
    let mut align = div_pow2(e.facts.divisor(offset));
    align = align.min(terms.thread_coord_alignment(dim));
    for t in &terms.local_terms {
        if t.dim == dim && t.coord_stride >= elems {
            align = align.min(pow2_factor(t.coord_stride));
        }
    }
    align
}

pub(super) fn div_pow2(d: u64) -> usize {
    pow2_factor(d.min(usize::MAX as u64) as usize)
}

/// The coordinates (C) of local element `l` (a C expression): thread base + local part.
pub(super) fn tile_coords(terms: &Terms, bases: &[String], l: &str) -> Vec<String> {
    (0..terms.rank)
        .map(|d| {
            let lc = terms.local_coord_expr(d, l);
            if lc == "0" {
                bases[d].clone()
            } else {
                format!("{} + {lc}", bases[d])
            }
        })
        .collect()
}

/// Declares `base{d}` = offset + thread part of coordinate d, for every dimension.
pub(super) fn thread_bases(e: &mut Emitter, terms: &Terms, offsets: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    let mut decl = Vec::new();
    for (d, o) in offsets.iter().enumerate() {
        let name = format!("base{d}");
        let tc = terms.thread_coord_expr(d, "tid");
        let value = match (o.as_str(), tc.as_str()) {
            (o, "0") => o.to_string(),
            ("0", tc) => tc.to_string(),
            (o, tc) => format!("{o} + {tc}"),
        };
        decl.push(format!("{name} = {value}"));
        names.push(name);
    }
    e.line(&format!("const int {};", decl.join(", ")));
    names
}

pub(super) fn vector_type(words: usize) -> &'static str {
    match words {
        4 => "uint4",
        2 => "uint2",
        _ => "u32",
    }
}

pub(super) fn vector_parts(words: usize) -> Vec<&'static str> {
    match words {
        4 => vec!["x.x", "x.y", "x.z", "x.w"],
        2 => vec!["x.x", "x.y"],
        _ => vec!["x"],
    }
}

/// Reads group `v` (a C variable) of `vec` from the byte address `at` (a C `u8*` expression)
/// into the register words of `t`.
pub(super) fn read_group(e: &mut Emitter, vec: &Vector, at: &str, t: &str) {
    let words = vec.words();
    let vt = vector_type(words);
    if vec.accesses == 1 {
        e.line(&format!("const {vt} x = *(const {vt}*)({at});"));
        for (i, p) in vector_parts(words).iter().enumerate() {
            e.line(&format!("{t}[v * {words} + {i}] = {p};"));
        }
        return;
    }
    let k = vec.accesses;
    e.line(&format!("const u8* const q = {at};"));
    e.open(&format!("#pragma unroll\nfor (int j = 0; j < {k}; ++j) {{"));
    e.line(&format!(
        "const {vt} x = *(const {vt}*)(q + j * {});",
        vec.bytes
    ));
    for (i, p) in vector_parts(words).iter().enumerate() {
        e.line(&format!("{t}[(v * {k} + j) * {words} + {i}] = {p};"));
    }
    e.close("}");
}

/// Writes group `v` of `vec` from the register words of `r` to the byte address `at`.
pub(super) fn write_group(e: &mut Emitter, vec: &Vector, at: &str, r: &str) {
    let words = vec.words();
    let vt = vector_type(words);
    let (index, pre) = if vec.accesses == 1 {
        ("v".to_string(), None)
    } else {
        (format!("(v * {} + j)", vec.accesses), Some(vec.accesses))
    };
    let value = match words {
        4 => format!(
            "make_uint4({r}[{index} * 4], {r}[{index} * 4 + 1], {r}[{index} * 4 + 2], {r}[{index} * 4 + 3])"
        ),
        2 => format!("make_uint2({r}[{index} * 2], {r}[{index} * 2 + 1])"),
        _ => format!("{r}[{index}]"),
    };
    match pre {
        None => e.line(&format!("*({vt}*)({at}) = {value};")),
        Some(k) => {
            e.line(&format!("u8* const q = {at};"));
            e.open(&format!("#pragma unroll\nfor (int j = 0; j < {k}; ++j) {{"));
            e.line(&format!("*({vt}*)(q + j * {}) = {value};", vec.bytes));
            e.close("}");
        }
    }
}
