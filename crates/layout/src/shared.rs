//! Shared-memory layouts (skeleton).

use std::fmt;
use std::str::FromStr;

use crate::ParseLayoutError;

/// XOR swizzle on element offsets: `offset ^ (((offset >> shift) & ((1 << bits) - 1)) << base)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Swizzle {
    pub bits: u32,
    pub base: u32,
    pub shift: u32,
}

/// A shared-memory layout: coordinates → element offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedLayout {
    shape: Vec<usize>,
}

impl SharedLayout {
    pub fn row_major(shape: &[usize]) -> Self {
        todo!("{shape:?}")
    }
    pub fn column_major(shape: &[usize]) -> Self {
        todo!("{shape:?}")
    }
    pub fn with_swizzle(self, swizzle: Swizzle) -> Self {
        todo!("{swizzle:?}")
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Element offset of `coordinates`.
    pub fn offset(&self, coordinates: &[usize]) -> usize {
        todo!("{coordinates:?}")
    }
    /// Number of elements the layout spans (largest offset + 1).
    pub fn span(&self) -> usize {
        todo!()
    }
}

impl fmt::Display for SharedLayout {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!()
    }
}

impl FromStr for SharedLayout {
    type Err = ParseLayoutError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        todo!("{text}")
    }
}
