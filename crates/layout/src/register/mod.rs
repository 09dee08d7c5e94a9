//! Register layouts: which elements of a tensor each thread of a group holds.
//!
//! A [`RegisterLayout`] of rank r has a shape `[s0, .., s(r-1)]`, a number of threads `T` and a
//! local size `L`, and maps every (thread in `0..T`, local index in `0..L`) to tensor coordinates.
//! Promises kept by every value of this type:
//!
//! - every coordinate of the shape is held by exactly [`RegisterLayout::replication`] pairs
//!   (thread, local), all in different threads: replication is "several threads hold the same
//!   element", never "several slots of one thread";
//! - the value is stored in a canonical form (below), so `==` and `Hash` compare mappings: two
//!   layouts are equal exactly when they have the same shape, `T`, `L` and mapping.
//!
//! # Canonical form
//! Each dimension is split into *modes* (sub-dimension sizes, most significant first): the
//! coordinate in that dimension is the mixed-radix number of its modes' digits. The thread index is
//! a mixed-radix number over an ordered list of entries, each a mode or a replication factor; the
//! local index is a mixed-radix number over an ordered list of modes. Every mode appears exactly
//! once, in the thread list or in the local list. The form is canonical when it has no size-1
//! modes or factors, and no two modes that are adjacent (in this order) both in their dimension
//! and in the same list, and no two adjacent replication factors: such pairs are merged.

mod algebra;
mod format;

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::error::checked_product;
use crate::LayoutError;

/// The four primitive layouts; see [`RegisterLayout::primitive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// Every element held by one thread, local index row-major (last dimension fastest).
    Local,
    /// One element per thread, thread index row-major.
    Spatial,
    /// Like `Local`, local index column-major (first dimension fastest).
    ColumnLocal,
    /// Like `Spatial`, thread index column-major.
    ColumnSpatial,
}

impl Primitive {
    pub const ALL: [Primitive; 4] = [
        Primitive::Local,
        Primitive::Spatial,
        Primitive::ColumnLocal,
        Primitive::ColumnSpatial,
    ];

    /// The name used in the text form (`local`, `spatial`, `column_local`, `column_spatial`).
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Local => "local",
            Primitive::Spatial => "spatial",
            Primitive::ColumnLocal => "column_local",
            Primitive::ColumnSpatial => "column_spatial",
        }
    }

    fn is_spatial(self) -> bool {
        matches!(self, Primitive::Spatial | Primitive::ColumnSpatial)
    }

    fn is_column(self) -> bool {
        matches!(self, Primitive::ColumnLocal | Primitive::ColumnSpatial)
    }
}

/// A mode of the canonical form: mode `index` (0 = most significant) of dimension `dim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModeRef {
    pub dim: usize,
    pub index: usize,
}

/// One digit of the thread index in the canonical form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadEntry {
    /// The digit is a tensor mode.
    Mode(ModeRef),
    /// The digit selects one of this many threads holding the same elements.
    Replicate(usize),
}

/// Precomputed contribution of one mode to coordinates: the digit is
/// `(index / index_stride) % size` and adds `digit * coord_stride` to `coords[dim]`.
#[derive(Clone, Copy, Debug)]
struct Term {
    index_stride: usize,
    size: usize,
    dim: usize,
    coord_stride: usize,
}

/// A register layout: which elements of a tensor each thread holds. See the module docs.
#[derive(Clone)]
pub struct RegisterLayout {
    shape: Vec<usize>,
    /// Mode sizes of each dimension, most significant first.
    modes: Vec<Vec<usize>>,
    /// Thread index digits, most significant first.
    threads: Vec<ThreadEntry>,
    /// Local index digits, most significant first.
    locals: Vec<ModeRef>,
    // Derived from the fields above, for fast coordinate computation.
    num_threads: usize,
    local_size: usize,
    thread_terms: Vec<Term>,
    local_terms: Vec<Term>,
    /// (index stride, size) of each replication digit of the thread index.
    replicate_terms: Vec<(usize, usize)>,
}

/// Un-canonicalised form used while building layouts: modes live in an arena and are referred
/// to by id from the per-dimension orders and from the thread/local lists.
#[derive(Clone, Debug)]
pub(crate) struct Raw {
    pub sizes: Vec<usize>,
    pub dims: Vec<usize>,
    /// Per dimension, mode ids most significant first.
    pub dim_order: Vec<Vec<usize>>,
    pub threads: Vec<RawEntry>,
    pub locals: Vec<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RawEntry {
    Mode(usize),
    Replicate(usize),
}

impl Raw {
    pub fn empty(rank: usize) -> Self {
        Raw {
            sizes: Vec::new(),
            dims: Vec::new(),
            dim_order: vec![Vec::new(); rank],
            threads: Vec::new(),
            locals: Vec::new(),
        }
    }

    pub fn add_mode(&mut self, dim: usize, size: usize) -> usize {
        let id = self.sizes.len();
        self.sizes.push(size);
        self.dims.push(dim);
        self.dim_order[dim].push(id);
        id
    }

    pub fn from_layout(layout: &RegisterLayout) -> Self {
        let mut raw = Raw::empty(layout.rank());
        let mut ids = Vec::with_capacity(layout.rank());
        for (dim, sizes) in layout.modes.iter().enumerate() {
            ids.push(
                sizes
                    .iter()
                    .map(|&size| raw.add_mode(dim, size))
                    .collect::<Vec<_>>(),
            );
        }
        raw.threads = layout
            .threads
            .iter()
            .map(|entry| match *entry {
                ThreadEntry::Mode(m) => RawEntry::Mode(ids[m.dim][m.index]),
                ThreadEntry::Replicate(n) => RawEntry::Replicate(n),
            })
            .collect();
        raw.locals = layout.locals.iter().map(|m| ids[m.dim][m.index]).collect();
        raw
    }

    /// Merges mergeable neighbours and drops size-1 modes and factors. Callers guarantee a
    /// well-formed raw form (every mode in exactly one list, sizes at least 1) whose total
    /// sizes fit in `usize`.
    pub fn canonicalize(mut self) -> RegisterLayout {
        let is_live = |sizes: &[usize], id: usize| sizes[id] > 1;
        for order in &mut self.dim_order {
            order.retain(|&id| is_live(&self.sizes, id));
        }
        self.threads.retain(|entry| match *entry {
            RawEntry::Mode(id) => is_live(&self.sizes, id),
            RawEntry::Replicate(n) => n > 1,
        });
        self.locals.retain(|&id| is_live(&self.sizes, id));

        loop {
            let mut merged = false;
            // Position of each mode within its dimension, to test adjacency there.
            let mut position = vec![usize::MAX; self.sizes.len()];
            for order in &self.dim_order {
                for (i, &id) in order.iter().enumerate() {
                    position[id] = i;
                }
            }
            let adjacent_in_dim =
                |a: usize, b: usize| self.dims[a] == self.dims[b] && position[a] + 1 == position[b];
            let mut merge_pair = None;
            for pair in self.threads.windows(2) {
                match (pair[0], pair[1]) {
                    (RawEntry::Mode(a), RawEntry::Mode(b)) if adjacent_in_dim(a, b) => {
                        merge_pair = Some((a, b));
                        break;
                    }
                    _ => {}
                }
            }
            if merge_pair.is_none() {
                merge_pair = self
                    .locals
                    .windows(2)
                    .find(|pair| adjacent_in_dim(pair[0], pair[1]))
                    .map(|pair| (pair[0], pair[1]));
            }
            if let Some((a, b)) = merge_pair {
                self.sizes[a] *= self.sizes[b];
                self.dim_order[self.dims[b]].retain(|&id| id != b);
                self.threads.retain(|&entry| entry != RawEntry::Mode(b));
                self.locals.retain(|&id| id != b);
                merged = true;
            }
            if let Some(i) = self.threads.windows(2).position(|pair| {
                matches!(
                    (pair[0], pair[1]),
                    (RawEntry::Replicate(_), RawEntry::Replicate(_))
                )
            }) {
                if let (RawEntry::Replicate(a), RawEntry::Replicate(b)) =
                    (self.threads[i], self.threads[i + 1])
                {
                    self.threads[i] = RawEntry::Replicate(a * b);
                    self.threads.remove(i + 1);
                    merged = true;
                }
            }
            if !merged {
                break;
            }
        }

        let mut refs = vec![ModeRef { dim: 0, index: 0 }; self.sizes.len()];
        let mut modes = Vec::with_capacity(self.dim_order.len());
        for (dim, order) in self.dim_order.iter().enumerate() {
            for (index, &id) in order.iter().enumerate() {
                refs[id] = ModeRef { dim, index };
            }
            modes.push(order.iter().map(|&id| self.sizes[id]).collect());
        }
        let threads = self
            .threads
            .iter()
            .map(|entry| match *entry {
                RawEntry::Mode(id) => ThreadEntry::Mode(refs[id]),
                RawEntry::Replicate(n) => ThreadEntry::Replicate(n),
            })
            .collect();
        let locals = self.locals.iter().map(|&id| refs[id]).collect();
        RegisterLayout::from_canonical(modes, threads, locals)
    }
}

impl RegisterLayout {
    /// Builds the value and its derived tables from a canonical form.
    fn from_canonical(
        modes: Vec<Vec<usize>>,
        threads: Vec<ThreadEntry>,
        locals: Vec<ModeRef>,
    ) -> Self {
        let shape: Vec<usize> = modes.iter().map(|m| m.iter().product()).collect();
        // coord_strides[dim][index]: weight of that mode's digit in the coordinate.
        let coord_strides: Vec<Vec<usize>> = modes
            .iter()
            .map(|sizes| {
                let mut strides = vec![1; sizes.len()];
                for i in (0..sizes.len().saturating_sub(1)).rev() {
                    strides[i] = strides[i + 1] * sizes[i + 1];
                }
                strides
            })
            .collect();
        let term = |m: ModeRef, index_stride: usize| Term {
            index_stride,
            size: modes[m.dim][m.index],
            dim: m.dim,
            coord_stride: coord_strides[m.dim][m.index],
        };
        let mut thread_terms = Vec::new();
        let mut replicate_terms = Vec::new();
        let mut stride = 1;
        for entry in threads.iter().rev() {
            match *entry {
                ThreadEntry::Mode(m) => {
                    thread_terms.push(term(m, stride));
                    stride *= modes[m.dim][m.index];
                }
                ThreadEntry::Replicate(n) => {
                    replicate_terms.push((stride, n));
                    stride *= n;
                }
            }
        }
        let num_threads = stride;
        let mut local_terms = Vec::new();
        let mut stride = 1;
        for &m in locals.iter().rev() {
            local_terms.push(term(m, stride));
            stride *= modes[m.dim][m.index];
        }
        RegisterLayout {
            shape,
            modes,
            threads,
            locals,
            num_threads,
            local_size: stride,
            thread_terms,
            local_terms,
            replicate_terms,
        }
    }

    /// A primitive layout of the given shape (see [`Primitive`]); fails when a size is 0 or the
    /// number of elements overflows `usize`.
    pub fn primitive(kind: Primitive, shape: &[usize]) -> Result<Self, LayoutError> {
        if let Some(dim) = shape.iter().position(|&s| s == 0) {
            return Err(LayoutError::new(format!(
                "{}{shape:?}: size of dimension {dim} is 0; sizes must be at least 1",
                kind.name()
            )));
        }
        checked_product(
            shape,
            &format!("number of elements of {}{shape:?}", kind.name()),
        )?;
        let mut raw = Raw::empty(shape.len());
        let ids: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(dim, &size)| raw.add_mode(dim, size))
            .collect();
        let ordered: Vec<usize> = if kind.is_column() {
            ids.into_iter().rev().collect()
        } else {
            ids
        };
        if kind.is_spatial() {
            raw.threads = ordered.into_iter().map(RawEntry::Mode).collect();
        } else {
            raw.locals = ordered;
        }
        Ok(raw.canonicalize())
    }

    /// `count` threads all holding the same (single) element of a rank-`rank` tensor of ones;
    /// fails when `count` is 0.
    pub fn try_replicate(rank: usize, count: usize) -> Result<Self, LayoutError> {
        if count == 0 {
            return Err(LayoutError::new(
                "replicate(0): the count must be at least 1",
            ));
        }
        let mut raw = Raw::empty(rank);
        raw.threads.push(RawEntry::Replicate(count));
        Ok(raw.canonicalize())
    }

    fn primitive_or_panic(kind: Primitive, shape: &[usize]) -> Self {
        match Self::primitive(kind, shape) {
            Ok(layout) => layout,
            Err(error) => panic!("{error}"),
        }
    }

    /// Every element held by one thread, local index in row-major order.
    ///
    /// # Panics
    /// When a size is 0 or the element count overflows; [`RegisterLayout::primitive`] reports
    /// these as errors instead.
    pub fn local(shape: &[usize]) -> Self {
        Self::primitive_or_panic(Primitive::Local, shape)
    }
    /// One element per thread, thread index in row-major order.
    ///
    /// # Panics
    /// As [`RegisterLayout::local`].
    pub fn spatial(shape: &[usize]) -> Self {
        Self::primitive_or_panic(Primitive::Spatial, shape)
    }
    /// Like `local`, local index in column-major order.
    ///
    /// # Panics
    /// As [`RegisterLayout::local`].
    pub fn column_local(shape: &[usize]) -> Self {
        Self::primitive_or_panic(Primitive::ColumnLocal, shape)
    }
    /// Like `spatial`, thread index in column-major order.
    ///
    /// # Panics
    /// As [`RegisterLayout::local`].
    pub fn column_spatial(shape: &[usize]) -> Self {
        Self::primitive_or_panic(Primitive::ColumnSpatial, shape)
    }
    /// `count` threads all holding the same (single) element of a rank-`rank` tensor of ones.
    ///
    /// # Panics
    /// When `count` is 0; [`RegisterLayout::try_replicate`] reports it as an error instead.
    pub fn replicate(rank: usize, count: usize) -> Self {
        match Self::try_replicate(rank, count) {
            Ok(layout) => layout,
            Err(error) => panic!("{error}"),
        }
    }

    /// The same layout with `count` dimensions of size 1 in front (a batch of one): element
    /// `[c..]` becomes `[0, .., 0, c..]`. Division by a lifted fragment atom is how a batched
    /// `dot` finds its tensor-core tiles.
    pub fn with_leading_dims(&self, count: usize) -> RegisterLayout {
        let modes: Vec<Vec<usize>> = std::iter::repeat_with(Vec::new)
            .take(count)
            .chain((0..self.rank()).map(|dim| self.dim_modes(dim).to_vec()))
            .collect();
        let shift = |m: ModeRef| ModeRef {
            dim: m.dim + count,
            index: m.index,
        };
        let threads: Vec<ThreadEntry> = self
            .thread_entries()
            .iter()
            .map(|entry| match *entry {
                ThreadEntry::Mode(m) => ThreadEntry::Mode(shift(m)),
                replicate => replicate,
            })
            .collect();
        let locals: Vec<ModeRef> = self.local_entries().iter().map(|&m| shift(m)).collect();
        match Self::from_parts(&modes, &threads, &locals) {
            Ok(layout) => layout,
            // The parts are this layout's own, which passed the same checks.
            Err(error) => panic!("lifting a valid layout: {error}"),
        }
    }

    /// Builds a layout from an explicit (not necessarily canonical) form: the mode sizes of each
    /// dimension (most significant first), the thread digits and the local digits (most
    /// significant first). Every mode must be used exactly once, by `threads` or `locals`.
    pub fn from_parts(
        modes: &[Vec<usize>],
        threads: &[ThreadEntry],
        locals: &[ModeRef],
    ) -> Result<Self, LayoutError> {
        let mut raw = Raw::empty(modes.len());
        let mut ids = Vec::with_capacity(modes.len());
        for (dim, sizes) in modes.iter().enumerate() {
            if let Some(index) = sizes.iter().position(|&s| s == 0) {
                return Err(LayoutError::new(format!(
                    "mode d{dim}.{index} has size 0; sizes must be at least 1"
                )));
            }
            checked_product(sizes, &format!("size of dimension {dim}"))?;
            ids.push(
                sizes
                    .iter()
                    .map(|&s| raw.add_mode(dim, s))
                    .collect::<Vec<_>>(),
            );
        }
        let mut used = vec![false; raw.sizes.len()];
        let mut take = |m: ModeRef| -> Result<usize, LayoutError> {
            let id = *ids
                .get(m.dim)
                .and_then(|dim_ids| dim_ids.get(m.index))
                .ok_or_else(|| LayoutError::new(format!("no mode d{}.{}", m.dim, m.index)))?;
            if std::mem::replace(&mut used[id], true) {
                return Err(LayoutError::new(format!(
                    "mode d{}.{} is used more than once",
                    m.dim, m.index
                )));
            }
            Ok(id)
        };
        for entry in threads {
            raw.threads.push(match *entry {
                ThreadEntry::Mode(m) => RawEntry::Mode(take(m)?),
                ThreadEntry::Replicate(0) => {
                    return Err(LayoutError::new("rep(0): the count must be at least 1"))
                }
                ThreadEntry::Replicate(n) => RawEntry::Replicate(n),
            });
        }
        for &m in locals {
            raw.locals.push(take(m)?);
        }
        if let Some(id) = used.iter().position(|&u| !u) {
            let dim = raw.dims[id];
            let index = raw.dim_order[dim]
                .iter()
                .position(|&x| x == id)
                .unwrap_or(0);
            return Err(LayoutError::new(format!(
                "mode d{dim}.{index} is in neither the thread nor the local list"
            )));
        }
        raw.check_totals()?;
        Ok(raw.canonicalize())
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    /// Number of threads `T`.
    pub fn num_threads(&self) -> usize {
        self.num_threads
    }
    /// Number of elements each thread holds, `L`.
    pub fn local_size(&self) -> usize {
        self.local_size
    }
    /// Number of elements of the tensor (product of the shape).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
    /// How many threads hold each element (the same for every element).
    pub fn replication(&self) -> usize {
        self.replicate_terms.iter().map(|&(_, n)| n).product()
    }
    /// True when no element is held by two threads.
    pub fn is_injective(&self) -> bool {
        self.replication() == 1
    }
    /// True when every thread holds a single element.
    pub fn is_spatial_only(&self) -> bool {
        self.local_size == 1
    }

    /// Canonical mode sizes of dimension `dim`, most significant first.
    ///
    /// # Panics
    /// When `dim >= rank`.
    pub fn dim_modes(&self, dim: usize) -> &[usize] {
        &self.modes[dim]
    }
    /// Canonical thread digits, most significant first.
    pub fn thread_entries(&self) -> &[ThreadEntry] {
        &self.threads
    }
    /// Canonical local digits, most significant first.
    pub fn local_entries(&self) -> &[ModeRef] {
        &self.locals
    }

    /// Tensor coordinates of local element `local` of thread `thread`.
    ///
    /// # Panics
    /// When `thread >= num_threads()` or `local >= local_size()`.
    pub fn coordinates(&self, thread: usize, local: usize) -> Vec<usize> {
        let mut coords = vec![0; self.rank()];
        self.coordinates_into(thread, local, &mut coords);
        coords
    }

    /// Like [`RegisterLayout::coordinates`], writing into `out` (whose length must be the rank)
    /// instead of allocating.
    ///
    /// # Panics
    /// When `thread` or `local` is out of range or `out.len() != rank()`.
    #[inline]
    pub fn coordinates_into(&self, thread: usize, local: usize, out: &mut [usize]) {
        assert!(
            thread < self.num_threads && local < self.local_size && out.len() == self.rank(),
            "coordinates_into({thread}, {local}, [_; {}]) out of range for {self}",
            out.len()
        );
        out.fill(0);
        for term in &self.thread_terms {
            out[term.dim] += (thread / term.index_stride) % term.size * term.coord_stride;
        }
        for term in &self.local_terms {
            out[term.dim] += (local / term.index_stride) % term.size * term.coord_stride;
        }
    }

    fn in_bounds(&self, coordinates: &[usize]) -> bool {
        coordinates.len() == self.rank() && coordinates.iter().zip(&self.shape).all(|(c, s)| c < s)
    }

    /// Which local slot of `thread` holds `coordinates`, if that thread holds it at all.
    /// Out-of-range threads or coordinates give `None`.
    #[inline]
    pub fn local_index_of(&self, thread: usize, coordinates: &[usize]) -> Option<usize> {
        if thread >= self.num_threads || !self.in_bounds(coordinates) {
            return None;
        }
        for term in &self.thread_terms {
            let held = (thread / term.index_stride) % term.size;
            let wanted = (coordinates[term.dim] / term.coord_stride) % term.size;
            if held != wanted {
                return None;
            }
        }
        Some(
            self.local_terms
                .iter()
                .map(|t| (coordinates[t.dim] / t.coord_stride) % t.size * t.index_stride)
                .sum(),
        )
    }

    /// Every (thread, local index) that holds the element at `coordinates`, by increasing thread;
    /// empty when the coordinates are out of bounds.
    pub fn owners(&self, coordinates: &[usize]) -> Vec<(usize, usize)> {
        if !self.in_bounds(coordinates) {
            return Vec::new();
        }
        let digit = |t: &Term| (coordinates[t.dim] / t.coord_stride) % t.size;
        let base_thread: usize = self
            .thread_terms
            .iter()
            .map(|t| digit(t) * t.index_stride)
            .sum();
        let local: usize = self
            .local_terms
            .iter()
            .map(|t| digit(t) * t.index_stride)
            .sum();
        let mut threads = vec![base_thread];
        for &(stride, count) in &self.replicate_terms {
            threads = threads
                .iter()
                .flat_map(|&t| (0..count).map(move |r| t + r * stride))
                .collect();
        }
        threads.sort_unstable();
        threads.into_iter().map(|t| (t, local)).collect()
    }
}

impl Raw {
    /// Checks that the shape, thread count and local size fit in `usize`.
    pub fn check_totals(&self) -> Result<(), LayoutError> {
        for (dim, order) in self.dim_order.iter().enumerate() {
            let sizes: Vec<usize> = order.iter().map(|&id| self.sizes[id]).collect();
            checked_product(&sizes, &format!("size of dimension {dim}"))?;
        }
        let thread_sizes: Vec<usize> = self
            .threads
            .iter()
            .map(|entry| match *entry {
                RawEntry::Mode(id) => self.sizes[id],
                RawEntry::Replicate(n) => n,
            })
            .collect();
        checked_product(&thread_sizes, "number of threads")?;
        let local_sizes: Vec<usize> = self.locals.iter().map(|&id| self.sizes[id]).collect();
        checked_product(&local_sizes, "local size")?;
        let all: Vec<usize> = self
            .dim_order
            .iter()
            .map(|order| order.iter().map(|&id| self.sizes[id]).product())
            .collect();
        checked_product(&all, "number of elements")?;
        Ok(())
    }
}

impl PartialEq for RegisterLayout {
    fn eq(&self, other: &Self) -> bool {
        self.modes == other.modes && self.threads == other.threads && self.locals == other.locals
    }
}
impl Eq for RegisterLayout {}

impl Hash for RegisterLayout {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The same fields as `eq`: the canonical form.
        self.modes.hash(state);
        self.threads.hash(state);
        self.locals.hash(state);
    }
}

impl fmt::Debug for RegisterLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegisterLayout({self})")
    }
}
