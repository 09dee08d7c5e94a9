//! The algebra on register layouts: composition (a Kronecker-like product), its exact inverse
//! division, and reduction of a dimension.

use super::{Raw, RawEntry, RegisterLayout};
use crate::LayoutError;

/// Where a mode or thread factor of a dividend ends up: in the quotient or in the atom.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Quotient,
    Atom,
}

impl RegisterLayout {
    /// Kronecker-like product: `self` (outer) tiles of `inner`.
    ///
    /// `shape[d] = outer.shape[d] * inner.shape[d]`, `thread = outer_thread * inner.T +
    /// inner_thread`, `local = outer_local * inner.L + inner_local` and `coord[d] =
    /// outer_coord[d] * inner.shape[d] + inner_coord[d]`. Fails when the ranks differ or a size
    /// overflows `usize`.
    pub fn compose(&self, inner: &RegisterLayout) -> Result<RegisterLayout, LayoutError> {
        if self.rank() != inner.rank() {
            return Err(LayoutError::new(format!(
                "cannot compose layouts of different rank: {self} has rank {} and {inner} has rank {}",
                self.rank(),
                inner.rank()
            )));
        }
        let outer_raw = Raw::from_layout(self);
        let inner_raw = Raw::from_layout(inner);
        let offset = outer_raw.sizes.len();
        let mut raw = outer_raw;
        raw.sizes.extend(&inner_raw.sizes);
        raw.dims.extend(&inner_raw.dims);
        for (order, inner_order) in raw.dim_order.iter_mut().zip(&inner_raw.dim_order) {
            order.extend(inner_order.iter().map(|id| id + offset));
        }
        raw.threads
            .extend(inner_raw.threads.iter().map(|entry| match *entry {
                RawEntry::Mode(id) => RawEntry::Mode(id + offset),
                replicate => replicate,
            }));
        raw.locals
            .extend(inner_raw.locals.iter().map(|id| id + offset));
        raw.check_totals().map_err(|error| {
            LayoutError::new(format!("cannot compose {self} with {inner}: {error}"))
        })?;
        Ok(raw.canonicalize())
    }

    /// The quotient `R` with `R.compose(atom) == self`, or `None` when there is none.
    ///
    /// The search is exact: a returned quotient always composes back to `self`, and a quotient
    /// is found whenever one exists (modes of `self` are split as far as the atom's boundaries
    /// require, which reproduces any composition that canonicalised to `self`).
    pub fn divide(&self, atom: &RegisterLayout) -> Option<RegisterLayout> {
        if self.rank() != atom.rank()
            || self.num_threads % atom.num_threads != 0
            || self.local_size % atom.local_size != 0
            || self.shape.iter().zip(&atom.shape).any(|(s, a)| s % a != 0)
        {
            return None;
        }
        let mut raw = Raw::from_layout(self);
        // Split modes (and replication factors) until each dimension, the thread list and the
        // local list have a boundary exactly where the atom's part begins. A split in a list
        // also splits the mode in its dimension and the other way round, so repeat until stable.
        loop {
            let mut split = false;
            for dim in 0..raw.dim_order.len() {
                let order = raw.dim_order[dim].clone();
                let sizes: Vec<usize> = order.iter().map(|&id| raw.sizes[id]).collect();
                match boundary_split(&sizes, atom.shape[dim])? {
                    None => {}
                    Some((position, low)) => {
                        raw.split_mode(order[position], low);
                        split = true;
                    }
                }
            }
            let thread_sizes: Vec<usize> = raw.threads.iter().map(|e| raw.entry_size(*e)).collect();
            if let Some((position, low)) = boundary_split(&thread_sizes, atom.num_threads)? {
                match raw.threads[position] {
                    RawEntry::Mode(id) => raw.split_mode(id, low),
                    RawEntry::Replicate(n) => {
                        raw.threads[position] = RawEntry::Replicate(n / low);
                        raw.threads.insert(position + 1, RawEntry::Replicate(low));
                    }
                }
                split = true;
            }
            let local_sizes: Vec<usize> = raw.locals.iter().map(|&id| raw.sizes[id]).collect();
            if let Some((position, low)) = boundary_split(&local_sizes, atom.local_size)? {
                raw.split_mode(raw.locals[position], low);
                split = true;
            }
            if !split {
                break;
            }
        }

        // Classify every mode by its dimension and by its list; the two must agree.
        let mut dim_side = vec![Side::Quotient; raw.sizes.len()];
        for (dim, order) in raw.dim_order.iter().enumerate() {
            let count = low_count(order.iter().map(|&id| raw.sizes[id]), atom.shape[dim]);
            for &id in &order[order.len() - count..] {
                dim_side[id] = Side::Atom;
            }
        }
        let thread_count = low_count(
            raw.threads.iter().map(|e| raw.entry_size(*e)),
            atom.num_threads,
        );
        let local_count = low_count(raw.locals.iter().map(|&id| raw.sizes[id]), atom.local_size);
        let thread_split = raw.threads.len() - thread_count;
        let local_split = raw.locals.len() - local_count;
        for (i, entry) in raw.threads.iter().enumerate() {
            if let RawEntry::Mode(id) = *entry {
                let list_side = if i >= thread_split {
                    Side::Atom
                } else {
                    Side::Quotient
                };
                if dim_side[id] != list_side {
                    return None;
                }
            }
        }
        for (i, &id) in raw.locals.iter().enumerate() {
            let list_side = if i >= local_split {
                Side::Atom
            } else {
                Side::Quotient
            };
            if dim_side[id] != list_side {
                return None;
            }
        }

        let part = |side: Side| {
            let mut out = raw.clone();
            for order in &mut out.dim_order {
                order.retain(|&id| dim_side[id] == side);
            }
            let (threads, locals) = match side {
                Side::Quotient => (
                    raw.threads[..thread_split].to_vec(),
                    raw.locals[..local_split].to_vec(),
                ),
                Side::Atom => (
                    raw.threads[thread_split..].to_vec(),
                    raw.locals[local_split..].to_vec(),
                ),
            };
            out.threads = threads;
            out.locals = locals;
            out.canonicalize()
        };
        if part(Side::Atom) != *atom {
            return None;
        }
        let quotient = part(Side::Quotient);
        // Cheap insurance that the construction above is right.
        match quotient.compose(atom) {
            Ok(product) if product == *self => Some(quotient),
            _ => None,
        }
    }

    /// The layout of this tensor with dimension `dim` reduced to size 1 (keep-dim): the local
    /// modes of `dim` disappear and its spatial modes become replication, so every thread that
    /// held some element of a reduced row holds that row's result.
    ///
    /// # Panics
    /// When `dim >= rank()`.
    pub fn reduce(&self, dim: usize) -> RegisterLayout {
        assert!(
            dim < self.rank(),
            "reduce({dim}) on {self}, which has rank {}",
            self.rank()
        );
        let mut raw = Raw::from_layout(self);
        let removed: Vec<usize> = std::mem::take(&mut raw.dim_order[dim]);
        for entry in &mut raw.threads {
            if let RawEntry::Mode(id) = *entry {
                if removed.contains(&id) {
                    *entry = RawEntry::Replicate(raw.sizes[id]);
                }
            }
        }
        raw.locals.retain(|id| !removed.contains(id));
        raw.canonicalize()
    }
}

impl Raw {
    fn entry_size(&self, entry: RawEntry) -> usize {
        match entry {
            RawEntry::Mode(id) => self.sizes[id],
            RawEntry::Replicate(n) => n,
        }
    }

    /// Splits mode `id` into a high part and a low part of size `low`, adjacent in both its
    /// dimension and its list.
    fn split_mode(&mut self, id: usize, low: usize) {
        let dim = self.dims[id];
        self.sizes[id] /= low;
        let new_id = self.sizes.len();
        self.sizes.push(low);
        self.dims.push(dim);
        let order = &mut self.dim_order[dim];
        if let Some(position) = order.iter().position(|&x| x == id) {
            order.insert(position + 1, new_id);
        }
        if let Some(position) = self.threads.iter().position(|&e| e == RawEntry::Mode(id)) {
            self.threads.insert(position + 1, RawEntry::Mode(new_id));
        } else if let Some(position) = self.locals.iter().position(|&x| x == id) {
            self.locals.insert(position + 1, new_id);
        }
    }
}

/// For digit sizes (most significant first), finds the digit that straddles the point where
/// the low `need` values begin. `Some(Some((position, low)))`: split digit `position`, keeping a
/// low part of size `low`; `Some(None)`: a boundary already exists; `None`: no boundary can exist
/// (the low digits' product skips over `need`).
fn boundary_split(sizes: &[usize], need: usize) -> Option<Option<(usize, usize)>> {
    let mut product = 1;
    for (position, &size) in sizes.iter().enumerate().rev() {
        if product == need {
            return Some(None);
        }
        let remaining = need / product;
        if remaining % size == 0 {
            product *= size;
        } else if size % remaining == 0 {
            return Some(Some((position, remaining)));
        } else {
            return None;
        }
    }
    (product == need).then_some(None)
}

/// How many trailing digits make up exactly `need` (a boundary is known to exist).
fn low_count(sizes: impl DoubleEndedIterator<Item = usize>, need: usize) -> usize {
    let mut product = 1;
    let mut count = 0;
    for size in sizes.rev() {
        if product == need {
            break;
        }
        product *= size;
        count += 1;
    }
    count
}
