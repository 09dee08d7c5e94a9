//! Register layouts as integer arithmetic: the thread part and the local part of coordinates.
//!
//! What this module promises: for every layout `L`, thread `t` and local index `l`,
//! `L.coordinates(t, l)[d] == thread_coord(d)(t) + local_coord(l)[d]` (coordinates are sums of
//! digit contributions, and each mode is either a thread digit or a local digit), and
//! [`Terms::thread_coord_expr`] prints the thread part as C arithmetic on a thread index
//! variable. Local parts are computed here, at generation time, as constants.

use anybit_layout::{RegisterLayout, SharedLayout, ThreadEntry};

/// One digit: `(index / index_stride) % size` adds `digit * coord_stride` to `coords[dim]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Term {
    pub index_stride: usize,
    pub size: usize,
    pub dim: usize,
    pub coord_stride: usize,
}

/// The digit structure of a register layout.
#[derive(Clone, Debug)]
pub(crate) struct Terms {
    pub rank: usize,
    pub threads: usize,
    pub locals: usize,
    /// Thread digits that are tensor modes, least significant first.
    pub thread_terms: Vec<Term>,
    /// Local digits, least significant first.
    pub local_terms: Vec<Term>,
    /// (index stride, count) of each replication digit of the thread index.
    pub replicate_terms: Vec<(usize, usize)>,
}

impl Terms {
    pub fn new(layout: &RegisterLayout) -> Terms {
        let rank = layout.rank();
        let coord_strides: Vec<Vec<usize>> = (0..rank)
            .map(|d| {
                let sizes = layout.dim_modes(d);
                let mut strides = vec![1; sizes.len()];
                for i in (0..sizes.len().saturating_sub(1)).rev() {
                    strides[i] = strides[i + 1] * sizes[i + 1];
                }
                strides
            })
            .collect();
        let mut thread_terms = Vec::new();
        let mut replicate_terms = Vec::new();
        let mut stride = 1;
        for entry in layout.thread_entries().iter().rev() {
            match *entry {
                ThreadEntry::Mode(m) => {
                    let size = layout.dim_modes(m.dim)[m.index];
                    thread_terms.push(Term {
                        index_stride: stride,
                        size,
                        dim: m.dim,
                        coord_stride: coord_strides[m.dim][m.index],
                    });
                    stride *= size;
                }
                ThreadEntry::Replicate(n) => {
                    replicate_terms.push((stride, n));
                    stride *= n;
                }
            }
        }
        let threads = stride;
        let mut local_terms = Vec::new();
        let mut stride = 1;
        for m in layout.local_entries().iter().rev() {
            let size = layout.dim_modes(m.dim)[m.index];
            local_terms.push(Term {
                index_stride: stride,
                size,
                dim: m.dim,
                coord_stride: coord_strides[m.dim][m.index],
            });
            stride *= size;
        }
        Terms {
            rank,
            threads,
            locals: stride,
            thread_terms,
            local_terms,
            replicate_terms,
        }
    }

    /// The local part of the coordinates of local element `l`.
    pub fn local_coords(&self, l: usize) -> Vec<usize> {
        let mut c = vec![0; self.rank];
        for t in &self.local_terms {
            c[t.dim] += (l / t.index_stride) % t.size * t.coord_stride;
        }
        c
    }

    /// The thread part of the coordinates of thread `t`.
    pub fn thread_coords(&self, thread: usize) -> Vec<usize> {
        let mut c = vec![0; self.rank];
        for t in &self.thread_terms {
            c[t.dim] += (thread / t.index_stride) % t.size * t.coord_stride;
        }
        c
    }

    /// C expression (an `int`) of the thread part of coordinate `dim`, for the thread index in
    /// the variable `tid`; `0` when no thread digit belongs to `dim`.
    pub fn thread_coord_expr(&self, dim: usize, tid: &str) -> String {
        let parts: Vec<String> = self
            .thread_terms
            .iter()
            .rev()
            .filter(|t| t.dim == dim)
            .map(|t| digit_expr(tid, t.index_stride, t.size, self.threads, t.coord_stride))
            .collect();
        if parts.is_empty() {
            "0".to_string()
        } else {
            parts.join(" + ")
        }
    }

    /// C expression of the local part of coordinate `dim` for the local index in the variable
    /// (or constant expression) `l`.
    pub fn local_coord_expr(&self, dim: usize, l: &str) -> String {
        let parts: Vec<String> = self
            .local_terms
            .iter()
            .rev()
            .filter(|t| t.dim == dim)
            .map(|t| digit_expr(l, t.index_stride, t.size, self.locals, t.coord_stride))
            .collect();
        if parts.is_empty() {
            "0".to_string()
        } else {
            parts.join(" + ")
        }
    }

    /// C condition that is true in the threads whose replication digits are all 0 (the first
    /// owners of every element they hold); `None` when the layout does not replicate.
    pub fn first_owner_cond(&self, tid: &str) -> Option<String> {
        if self.replicate_terms.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .replicate_terms
            .iter()
            .rev()
            .map(|&(stride, count)| {
                format!("{} == 0", digit_expr(tid, stride, count, self.threads, 1))
            })
            .collect();
        Some(parts.join(" && "))
    }

    /// The largest power of two (up to 2^20) that divides the thread part of coordinate `dim`
    /// for every thread.
    pub fn thread_coord_alignment(&self, dim: usize) -> usize {
        let mut align = 1 << 20;
        for t in &self.thread_terms {
            if t.dim == dim {
                align = align.min(pow2_factor(t.coord_stride));
            }
        }
        align
    }
}

/// Largest power of two dividing `x` (`1 << 20` for 0).
pub(crate) fn pow2_factor(x: usize) -> usize {
    if x == 0 {
        1 << 20
    } else {
        1 << x.trailing_zeros().min(20)
    }
}

/// `((tid / stride) % size) * scale` written without redundant operations.
fn digit_expr(tid: &str, stride: usize, size: usize, total: usize, scale: usize) -> String {
    let mut e = tid.to_string();
    if stride != 1 {
        e = format!("{e} / {stride}");
    }
    if stride * size < total {
        e = if stride != 1 {
            format!("({e}) % {size}")
        } else {
            format!("{e} % {size}")
        };
    }
    if scale != 1 {
        e = if e.contains(' ') {
            format!("({e}) * {scale}")
        } else {
            format!("{e} * {scale}")
        };
    }
    e
}

/// C expression of the element offset of a shared layout (before swizzling) for coordinates
/// given as C expressions, which must lie inside the shape.
pub(crate) fn shared_offset_expr(layout: &SharedLayout, coords: &[String]) -> String {
    let mut parts = Vec::new();
    for (d, c) in coords.iter().enumerate() {
        let subs = layout.sub_dims(d);
        let mut inner = 1usize;
        for (i, &(size, stride)) in subs.iter().enumerate().rev() {
            if size == 1 || stride == 0 {
                inner *= size;
                continue;
            }
            let mut digit = if inner == 1 {
                format!("({c})")
            } else {
                format!("(({c}) / {inner})")
            };
            if i != 0 {
                digit = format!("({digit} % {size})");
            }
            parts.push(if stride == 1 {
                digit
            } else {
                format!("{digit} * {stride}")
            });
            inner *= size;
        }
    }
    let linear = if parts.is_empty() {
        "0".to_string()
    } else {
        parts.join(" + ")
    };
    match layout.swizzle() {
        Some(s) if s.bits > 0 => {
            format!("ab_swizzle({linear}, {}, {}, {})", s.bits, s.base, s.shift)
        }
        _ => linear,
    }
}

/// Does the shared layout hold `len` elements from `c` along `dim` at consecutive offsets, the
/// first one aligned to `align` elements?
pub(crate) fn contiguous(
    layout: &SharedLayout,
    c: &[usize],
    dim: usize,
    len: usize,
    align: usize,
) -> bool {
    let Some(first) = layout.checked_offset(c) else {
        return false;
    };
    if first % align != 0 {
        return false;
    }
    let mut x = c.to_vec();
    (1..len).all(|j| {
        x[dim] = c[dim] + j;
        layout.checked_offset(&x) == Some(first + j)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_and_local_parts_sum_to_the_coordinates() {
        let layouts = [
            "spatial(2,2).local(2,4).local(2,1).spatial(8,4).local(1,2)",
            "spatial(2,1).replicate(2).local(2,1).column_local(2,4).spatial(8,4).local(1,2)",
            "replicate(2).spatial(1,2).local(2,1).column_local(2,4).column_spatial(4,8).local(2,1)",
            "spatial(1,4).local(1,2).spatial(1,8).replicate(4)",
        ];
        for text in layouts {
            let layout: RegisterLayout = text.parse().unwrap();
            let terms = Terms::new(&layout);
            assert_eq!(terms.threads, layout.num_threads());
            assert_eq!(terms.locals, layout.local_size());
            for t in 0..layout.num_threads() {
                let tc = terms.thread_coords(t);
                for l in 0..layout.local_size() {
                    let lc = terms.local_coords(l);
                    let sum: Vec<usize> = tc.iter().zip(&lc).map(|(a, b)| a + b).collect();
                    assert_eq!(sum, layout.coordinates(t, l), "{text} t={t} l={l}");
                }
            }
        }
    }
}
