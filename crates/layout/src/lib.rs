//! Layout algebra for anybit.
//!
//! - [`RegisterLayout`] maps (thread, local index) to tensor coordinates: which elements of a
//!   register tensor each thread holds. Layouts are built from primitives, combined with
//!   [`RegisterLayout::compose`] and split with [`RegisterLayout::divide`]; `==` compares the
//!   mappings (values are kept in a canonical form).
//! - [`SharedLayout`] maps tensor coordinates to an element offset in shared memory: strided
//!   sub-dimensions plus an optional XOR [`Swizzle`].
//! - [`shared_wavefronts`] and [`register_read_wavefronts`] count shared-memory wavefronts (bank
//!   conflicts), so that swizzles can be chosen.
//!
//! Both layouts print to and parse from a text form that round-trips; parsing never panics and
//! reports errors with a byte position. See `docs/layouts.md` for the algebra with worked
//! examples (tensor-core fragments, `ldmatrix`, division).

mod bank;
mod error;
mod register;
mod shared;
mod text;

pub use bank::{register_read_wavefronts, shared_wavefronts};
pub use error::{LayoutError, ParseLayoutError};
pub use register::{ModeRef, Primitive, RegisterLayout, ThreadEntry};
pub use shared::{SharedLayout, Swizzle};
