//! What a quantized weight is: its type, its groups, its scales and zero points.
//!
//! What this module promises: [`QuantFormat::check`] accepts exactly the formats the kernels
//! implement and otherwise names the problem and the valid choices.

use std::fmt;

use anybit_dtype::DType;

/// The activation type of a product: `x` and `y` are both this type, products accumulate in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    F16,
    Bf16,
}

impl Activation {
    /// The activation types.
    pub const ALL: [Activation; 2] = [Activation::F16, Activation::Bf16];

    /// `f16` or `bf16`.
    pub fn dtype(self) -> DType {
        match self {
            Activation::F16 => DType::F16,
            Activation::Bf16 => DType::Bf16,
        }
    }

    /// The activation type of `dtype`, if it is one.
    pub fn from_dtype(dtype: DType) -> Option<Activation> {
        match dtype {
            DType::F16 => Some(Activation::F16),
            DType::Bf16 => Some(Activation::Bf16),
            _ => None,
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.dtype().fmt(f)
    }
}

/// How many consecutive elements along K share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// Groups of 16, 32, 64, 128 or 256 elements.
    Elements(usize),
    /// One scale per row.
    PerChannel,
}

impl Group {
    /// The group sizes [`Group::Elements`] takes.
    pub const SIZES: [usize; 5] = [16, 32, 64, 128, 256];

    /// K of a weight with groups of elements is a multiple of this. A group size that does not
    /// divide K leaves each row a short last group (`⌈K / group⌉` scales per row, as GPTQ's
    /// `g_idx = k // group` and the checkpoint format have them).
    pub const K_MULTIPLE: usize = 16;

    /// The number of elements of a group in a row of `k` elements.
    pub fn size(self, k: usize) -> usize {
        match self {
            Group::Elements(size) => size,
            Group::PerChannel => k,
        }
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Elements(size) => write!(f, "{size}"),
            Group::PerChannel => f.write_str("per-channel"),
        }
    }
}

/// Zero points of a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZeroPoints {
    /// None: the weight is `decode(q) · s`.
    None,
    /// A code of the weight type per group (unsigned integer weights only): `(q − z) · s`.
    Codes,
    /// A float per group, after scaling (the AWQ form; unsigned integer weights only):
    /// `q · s − z`.
    Scaled,
}

/// A quantized weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantFormat {
    /// The weight type: an integer or small float of 1 to 8 bits.
    pub weight: DType,
    pub group: Group,
    pub zeros: ZeroPoints,
}

/// A format or shape the kernels do not take.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("weight type {0} is not supported: use an integer (u1..u8, i1..i8) or a small float (f3e1m1 … f8e5m2) of at most 8 bits")]
    WeightType(DType),
    #[error("group size {0} is not supported: use 16, 32, 64, 128, 256 or per-channel")]
    GroupSize(usize),
    #[error(
        "zero points need an unsigned integer weight type (u1..u8), and the weight type is {0}"
    )]
    ZeroPointsType(DType),
    #[error("K = {k} is not a multiple of 16, which groups of {group} elements need (a group that does not divide K leaves a short last group, but K itself must be a multiple of 16); use per-channel scales")]
    GroupedKNotMultiple { k: usize, group: usize },
    #[error("the weight matrix is {n}×{k}; both sizes must be at least 1")]
    EmptyShape { n: usize, k: usize },
    #[error(
        "the weight matrix is {n}×{k}; each size must be below 2^24 and N·K below 2^31 elements"
    )]
    ShapeTooLarge { n: usize, k: usize },
    #[error("activation type {0} is not supported: use f16 or bf16")]
    ActivationType(DType),
}

/// The largest N or K the kernels take (their indices are 32-bit).
pub const MAX_DIMENSION: usize = 1 << 24;

impl QuantFormat {
    /// A format without zero points.
    pub fn new(weight: DType, group: Group) -> QuantFormat {
        QuantFormat {
            weight,
            group,
            zeros: ZeroPoints::None,
        }
    }

    /// Checks the format for an `[n, k]` weight.
    pub fn check(&self, n: usize, k: usize) -> Result<(), FormatError> {
        if self.weight.bits() > 8 {
            return Err(FormatError::WeightType(self.weight));
        }
        if let Group::Elements(size) = self.group {
            if !Group::SIZES.contains(&size) {
                return Err(FormatError::GroupSize(size));
            }
        }
        if self.zeros != ZeroPoints::None && !matches!(self.weight, DType::Unsigned(_)) {
            return Err(FormatError::ZeroPointsType(self.weight));
        }
        if n == 0 || k == 0 {
            return Err(FormatError::EmptyShape { n, k });
        }
        if n >= MAX_DIMENSION || k >= MAX_DIMENSION || n * k >= 1 << 31 {
            return Err(FormatError::ShapeTooLarge { n, k });
        }
        if let Group::Elements(group) = self.group {
            if !k.is_multiple_of(Group::K_MULTIPLE) {
                return Err(FormatError::GroupedKNotMultiple { k, group });
            }
        }
        Ok(())
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} group {}", self.weight, self.group)?;
        match self.zeros {
            ZeroPoints::None => Ok(()),
            ZeroPoints::Codes => f.write_str(" with zero points"),
            ZeroPoints::Scaled => f.write_str(" with scaled zero points"),
        }
    }
}
