//! Register layouts (skeleton).

use std::fmt;
use std::str::FromStr;

/// A register layout: which elements of a tensor each thread holds.
#[derive(Clone, Debug)]
pub struct RegisterLayout {
    shape: Vec<usize>,
}

/// An operation on layouts that cannot be done (e.g. composing layouts of different rank).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(pub String);

/// Layout text that does not parse; `position` is a byte offset into the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at byte {position}: {message}")]
pub struct ParseLayoutError {
    pub position: usize,
    pub message: String,
}

impl RegisterLayout {
    /// Every element held by one thread, local index in row-major order.
    pub fn local(shape: &[usize]) -> Self {
        todo!("{shape:?}")
    }
    /// One element per thread, thread index in row-major order.
    pub fn spatial(shape: &[usize]) -> Self {
        todo!("{shape:?}")
    }
    /// Like `local`, local index in column-major order.
    pub fn column_local(shape: &[usize]) -> Self {
        todo!("{shape:?}")
    }
    /// Like `spatial`, thread index in column-major order.
    pub fn column_spatial(shape: &[usize]) -> Self {
        todo!("{shape:?}")
    }
    /// `count` threads all holding the same (single) element of a rank-`rank` tensor of ones.
    pub fn replicate(rank: usize, count: usize) -> Self {
        todo!("{rank} {count}")
    }
    /// Kronecker-like product: `outer` tiles of `inner`.
    pub fn compose(&self, inner: &RegisterLayout) -> Result<RegisterLayout, LayoutError> {
        todo!("{inner:?}")
    }
    /// `R` with `compose(R, atom) == self`, or `None`.
    pub fn divide(&self, atom: &RegisterLayout) -> Option<RegisterLayout> {
        todo!("{atom:?}")
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn num_threads(&self) -> usize {
        todo!()
    }
    pub fn local_size(&self) -> usize {
        todo!()
    }
    /// Tensor coordinates of local element `local` of thread `thread`.
    pub fn coordinates(&self, thread: usize, local: usize) -> Vec<usize> {
        todo!("{thread} {local}")
    }
    /// Every (thread, local index) that holds the element at `coordinates`.
    pub fn owners(&self, coordinates: &[usize]) -> Vec<(usize, usize)> {
        todo!("{coordinates:?}")
    }
}

impl PartialEq for RegisterLayout {
    fn eq(&self, _other: &Self) -> bool {
        todo!()
    }
}
impl Eq for RegisterLayout {}

impl fmt::Display for RegisterLayout {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl FromStr for RegisterLayout {
    type Err = ParseLayoutError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        todo!("{text}")
    }
}
