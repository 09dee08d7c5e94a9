//! Shared-memory layouts: tensor coordinates → element offset.
//!
//! A [`SharedLayout`] splits each dimension into sub-dimensions (most significant first), each
//! with a size and a stride in elements; the offset of a coordinate is the sum over sub-dimensions
//! of digit × stride, optionally passed through an XOR [`Swizzle`] that spreads accesses over the
//! banks. Promises: constructors validate (sizes at least 1, no overflow of the span), so
//! [`SharedLayout::offset`] of in-bounds coordinates is below [`SharedLayout::span`] and never
//! overflows; the text form round-trips.
//!
//! # Text form
//! ```text
//! shared   := base ('.' swizzle)?
//! base     := 'row_major' '(' sizes? ')'                 last dimension contiguous
//!           | 'column_major' '(' sizes? ')'              first dimension contiguous
//!           | 'strided' '(' dim (',' dim)* ')'           one bracket per dimension
//! dim      := '[' (size ':' stride),* ']'                sub-dimensions, most significant first
//! swizzle  := 'swizzle' '(' 'bits' '=' N ',' 'base' '=' N ',' 'shift' '=' N ')'
//! ```
//! For example `row_major(64,64).swizzle(bits=3,base=3,shift=6)` is a 64×64 tile whose 8-element
//! chunks are XOR-ed with the row index modulo 8 (CUTLASS's `Swizzle<3,3,3>` on elements), and
//! `strided([64:8],[8:512,8:1])` is a 64×64 tile stored as eight contiguous 64×8 column blocks.

use std::fmt;
use std::str::FromStr;

use crate::error::checked_product;
use crate::text::{Cursor, Tok};
use crate::{LayoutError, ParseLayoutError};

/// XOR swizzle on element offsets: `offset ^ (((offset >> shift) & ((1 << bits) - 1)) << base)`.
///
/// `shift` is the absolute position of the source bits (CUTLASS's `Swizzle<B, M, S>` is
/// `bits = B, base = M, shift = M + S`). Only bits `base..base + bits` change, so a swizzle
/// permutes offsets within aligned blocks of `2^(base + bits)` elements when the source and
/// destination bit ranges do not overlap ([`Swizzle::new`] checks that).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Swizzle {
    pub bits: u32,
    pub base: u32,
    pub shift: u32,
}

/// Swizzles touch bits below this position only; shared memory is far smaller than 2^32
/// elements, and the limit keeps all shifts in range.
const MAX_SWIZZLE_BIT: u32 = 32;

impl Swizzle {
    /// A swizzle whose source bits `shift..shift + bits` and destination bits
    /// `base..base + bits` do not overlap (so it is a bijection) and lie below bit 32.
    pub fn new(bits: u32, base: u32, shift: u32) -> Result<Self, LayoutError> {
        let swizzle = Swizzle { bits, base, shift };
        swizzle.validate()?;
        Ok(swizzle)
    }

    fn validate(self) -> Result<(), LayoutError> {
        let Swizzle { bits, base, shift } = self;
        let in_range = |start: u32| {
            start
                .checked_add(bits)
                .is_some_and(|end| end <= MAX_SWIZZLE_BIT)
        };
        if !in_range(base) || !in_range(shift) {
            return Err(LayoutError::new(format!(
                "swizzle(bits={bits},base={base},shift={shift}) touches bits at or above {MAX_SWIZZLE_BIT}"
            )));
        }
        if bits > 0 && shift < base + bits && base < shift + bits {
            return Err(LayoutError::new(format!(
                "swizzle(bits={bits},base={base},shift={shift}): source bits {shift}..{} overlap \
                 destination bits {base}..{}, so it is not a bijection",
                shift + bits,
                base + bits
            )));
        }
        Ok(())
    }

    /// The swizzled offset.
    #[inline]
    pub fn apply(self, offset: usize) -> usize {
        let mask = 1usize
            .checked_shl(self.bits)
            .map_or(usize::MAX, |bit| bit - 1);
        let source = offset.checked_shr(self.shift).unwrap_or(0) & mask;
        offset ^ source.checked_shl(self.base).unwrap_or(0)
    }

    /// Size of the aligned blocks of offsets within which this swizzle permutes.
    fn block(self) -> Option<usize> {
        1usize.checked_shl(self.base.checked_add(self.bits)?)
    }
}

impl fmt::Display for Swizzle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "swizzle(bits={},base={},shift={})",
            self.bits, self.base, self.shift
        )
    }
}

/// A shared-memory layout: coordinates → element offset. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharedLayout {
    shape: Vec<usize>,
    /// Per dimension, (size, stride) sub-dimensions, most significant first.
    dims: Vec<Vec<(usize, usize)>>,
    swizzle: Option<Swizzle>,
    /// Largest unswizzled offset + 1.
    linear_span: usize,
}

impl SharedLayout {
    /// A layout from explicit sub-dimensions: `dims[d]` lists dimension `d`'s (size, stride)
    /// pairs, most significant first (an empty list is a dimension of size 1). Fails when a size
    /// is 0 or the shape or span overflows `usize`.
    pub fn strided(dims: &[Vec<(usize, usize)>]) -> Result<Self, LayoutError> {
        let mut shape = Vec::with_capacity(dims.len());
        let mut largest: usize = 0;
        for (dim, subs) in dims.iter().enumerate() {
            if subs.iter().any(|&(size, _)| size == 0) {
                return Err(LayoutError::new(format!(
                    "dimension {dim} has a sub-dimension of size 0; sizes must be at least 1"
                )));
            }
            let sizes: Vec<usize> = subs.iter().map(|&(size, _)| size).collect();
            shape.push(checked_product(
                &sizes,
                &format!("size of dimension {dim}"),
            )?);
            for &(size, stride) in subs {
                largest = (size - 1)
                    .checked_mul(stride)
                    .and_then(|reach| largest.checked_add(reach))
                    .ok_or_else(|| LayoutError::new("the span of the layout overflows usize"))?;
            }
        }
        checked_product(&shape, "number of elements")?;
        let linear_span = largest
            .checked_add(1)
            .ok_or_else(|| LayoutError::new("the span of the layout overflows usize"))?;
        Ok(SharedLayout {
            shape,
            dims: dims.to_vec(),
            swizzle: None,
            linear_span,
        })
    }

    fn compact(shape: &[usize], row_major: bool) -> Result<Self, LayoutError> {
        let mut dims = vec![Vec::new(); shape.len()];
        let mut stride: usize = 1;
        let order: Vec<usize> = if row_major {
            (0..shape.len()).rev().collect()
        } else {
            (0..shape.len()).collect()
        };
        for dim in order {
            dims[dim].push((shape[dim], stride));
            stride = stride
                .checked_mul(shape[dim])
                .ok_or_else(|| LayoutError::new(format!("the shape {shape:?} overflows usize")))?;
        }
        Self::strided(&dims)
    }

    /// Row-major (last dimension contiguous), failing on a size of 0 or overflow.
    pub fn try_row_major(shape: &[usize]) -> Result<Self, LayoutError> {
        Self::compact(shape, true)
    }

    /// Column-major (first dimension contiguous), failing on a size of 0 or overflow.
    pub fn try_column_major(shape: &[usize]) -> Result<Self, LayoutError> {
        Self::compact(shape, false)
    }

    /// Row-major (last dimension contiguous).
    ///
    /// # Panics
    /// When a size is 0 or the shape overflows; [`SharedLayout::try_row_major`] reports these.
    pub fn row_major(shape: &[usize]) -> Self {
        match Self::try_row_major(shape) {
            Ok(layout) => layout,
            Err(error) => panic!("{error}"),
        }
    }

    /// Column-major (first dimension contiguous).
    ///
    /// # Panics
    /// As [`SharedLayout::row_major`].
    pub fn column_major(shape: &[usize]) -> Self {
        match Self::try_column_major(shape) {
            Ok(layout) => layout,
            Err(error) => panic!("{error}"),
        }
    }

    /// The same layout with offsets passed through `swizzle` (replacing any previous one).
    /// Use [`Swizzle::new`] to make sure the swizzle is a bijection.
    pub fn with_swizzle(mut self, swizzle: Swizzle) -> Self {
        self.swizzle = Some(swizzle);
        self
    }

    /// The same layout without a swizzle.
    pub fn without_swizzle(mut self) -> Self {
        self.swizzle = None;
        self
    }

    pub fn swizzle(&self) -> Option<Swizzle> {
        self.swizzle
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// The (size, stride) sub-dimensions of dimension `dim`, most significant first.
    ///
    /// # Panics
    /// When `dim >= rank()`.
    pub fn sub_dims(&self, dim: usize) -> &[(usize, usize)] {
        &self.dims[dim]
    }

    /// Element offset of `coordinates`, which must be in bounds (one per dimension, each below
    /// its size): other input gives an unspecified offset, but never a panic.
    /// [`SharedLayout::checked_offset`] checks.
    #[inline]
    pub fn offset(&self, coordinates: &[usize]) -> usize {
        let mut offset: usize = 0;
        for (subs, &coordinate) in self.dims.iter().zip(coordinates) {
            let mut rest = coordinate;
            for (i, &(size, stride)) in subs.iter().enumerate().rev() {
                // The most significant sub-dimension takes what is left.
                let digit = if i == 0 { rest } else { rest % size };
                rest /= size;
                offset = offset.wrapping_add(digit.wrapping_mul(stride));
            }
        }
        match self.swizzle {
            Some(swizzle) => swizzle.apply(offset),
            None => offset,
        }
    }

    /// Element offset of `coordinates`, or `None` when they are out of bounds.
    pub fn checked_offset(&self, coordinates: &[usize]) -> Option<usize> {
        let in_bounds = coordinates.len() == self.rank()
            && coordinates.iter().zip(&self.shape).all(|(c, s)| c < s);
        in_bounds.then(|| self.offset(coordinates))
    }

    /// Number of elements the layout spans: largest offset + 1 without a swizzle. A swizzle
    /// permutes offsets within aligned blocks of `2^(base + bits)` elements, so with one the span
    /// is rounded up to whole blocks (exact for the usual tiles whose size is a multiple of the
    /// block; an upper bound on the largest offset + 1 otherwise).
    pub fn span(&self) -> usize {
        match self.swizzle.map(Swizzle::block) {
            None => self.linear_span,
            Some(Some(block)) => self.linear_span.div_ceil(block).saturating_mul(block),
            Some(None) => usize::MAX,
        }
    }
}

impl fmt::Display for SharedLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sizes = || {
            self.shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let same_as = |other: Result<SharedLayout, LayoutError>| {
            other.is_ok_and(|other| other.dims == self.dims)
        };
        if same_as(Self::try_row_major(&self.shape)) {
            write!(f, "row_major({})", sizes())?;
        } else if same_as(Self::try_column_major(&self.shape)) {
            write!(f, "column_major({})", sizes())?;
        } else {
            let dims: Vec<String> = self
                .dims
                .iter()
                .map(|subs| {
                    let subs: Vec<String> = subs
                        .iter()
                        .map(|(size, stride)| format!("{size}:{stride}"))
                        .collect();
                    format!("[{}]", subs.join(","))
                })
                .collect();
            write!(f, "strided({})", dims.join(","))?;
        }
        if let Some(swizzle) = self.swizzle {
            write!(f, ".{swizzle}")?;
        }
        Ok(())
    }
}

fn parse_swizzle(cursor: &mut Cursor<'_>) -> Result<Swizzle, ParseLayoutError> {
    let (name, pos) = cursor.expect_ident("'swizzle' after '.'")?;
    if name != "swizzle" {
        return Err(ParseLayoutError::new(
            pos,
            format!("expected 'swizzle' after '.', found '{name}'"),
        ));
    }
    cursor.expect(b'(', "'(' after 'swizzle'")?;
    let mut values = [0u32; 3];
    for (i, key) in ["bits", "base", "shift"].into_iter().enumerate() {
        if i > 0 {
            cursor.expect(b',', &format!("',' before '{key}='"))?;
        }
        cursor.expect_key(key)?;
        let (value, value_pos) = cursor.expect_number(&format!("a number after '{key}='"))?;
        values[i] = u32::try_from(value)
            .map_err(|_| ParseLayoutError::new(value_pos, "number too large"))?;
    }
    cursor.expect(b')', "')' to close 'swizzle('")?;
    Swizzle::new(values[0], values[1], values[2])
        .map_err(|error| ParseLayoutError::new(pos, error.0))
}

impl FromStr for SharedLayout {
    type Err = ParseLayoutError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut cursor = Cursor::new(text)?;
        let expected = "a shared layout (row_major, column_major or strided)";
        let (name, pos) = cursor.expect_ident(expected)?;
        let layout = match name {
            "row_major" | "column_major" => {
                cursor.expect(b'(', &format!("'(' after '{name}'"))?;
                let shape = cursor.size_list(b')')?;
                cursor.expect(b')', &format!("',' or ')' in '{name}('"))?;
                let layout = if name == "row_major" {
                    SharedLayout::try_row_major(&shape)
                } else {
                    SharedLayout::try_column_major(&shape)
                };
                layout.map_err(|error| ParseLayoutError::new(pos, error.0))?
            }
            "strided" => {
                cursor.expect(b'(', "'(' after 'strided'")?;
                let mut dims = Vec::new();
                if cursor.peek().tok != Tok::Punct(b')') {
                    loop {
                        cursor.expect(b'[', "'[' to open the sub-dimensions of a dimension")?;
                        let mut subs = Vec::new();
                        if cursor.peek().tok != Tok::Punct(b']') {
                            loop {
                                let size = cursor.expect_size("a sub-dimension size")?;
                                cursor.expect(b':', "':' between a size and its stride")?;
                                let (stride, _) = cursor.expect_number("a stride")?;
                                subs.push((size, stride));
                                if !cursor.eat(b',') {
                                    break;
                                }
                            }
                        }
                        cursor.expect(b']', "',' or ']' after a sub-dimension")?;
                        dims.push(subs);
                        if !cursor.eat(b',') {
                            break;
                        }
                    }
                }
                cursor.expect(b')', "',' or ')' in 'strided('")?;
                SharedLayout::strided(&dims).map_err(|error| ParseLayoutError::new(pos, error.0))?
            }
            _ => {
                return Err(ParseLayoutError::new(
                    pos,
                    format!("expected {expected}, found '{name}'"),
                ))
            }
        };
        let layout = if cursor.eat(b'.') {
            layout.with_swizzle(parse_swizzle(&mut cursor)?)
        } else {
            layout
        };
        cursor.expect_end()?;
        Ok(layout)
    }
}
