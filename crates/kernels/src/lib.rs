//! `anybit-kernels`: quantized matrix products for every weight type, generated as anybit
//! programs.
//!
//! `y[m, n] = x[m, k] · dequant(W)[n, k]ᵀ (+ bias[n])` with `x`, `y` in f16 or bf16, f32
//! accumulation, and `W` of any integer or small-float type of 1 to 8 bits with group-wise
//! scales (and zero points for unsigned types).
//!
//! - [`format`]: what a quantized weight is ([`QuantFormat`]) and what the kernels take.
//! - [`prepared`]: the prepared layout (codes in tensor-core fragment order) and its inverse.
//! - [`weight`]: [`PreparedWeight`], made once per weight on the host.
//! - [`decode`]: the decode schedule (M ≤ 64) as anybit programs.
//! - [`reference`]: the f64 reference the kernels are checked against.
//! - [`tuning`]: the persistent cache of tuned schedules per device and product.

pub mod bench;
pub mod decode;
pub mod format;
pub mod gpu;
pub mod prepared;
pub mod reference;
pub mod tuning;
pub mod weight;

pub use decode::{DecodeKernel, DecodeSchedule, KernelProgram};
pub use format::{Activation, FormatError, Group, QuantFormat, ZeroPoints};
pub use weight::{PreparedWeight, WeightError};
