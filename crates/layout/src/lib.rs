//! Layout algebra for anybit.
//!
//! - [`RegisterLayout`] maps (thread, local index) to tensor coordinates: which elements of a
//!   register tensor each thread holds. Layouts are built from primitives, combined with
//!   [`RegisterLayout::compose`] and split with [`RegisterLayout::divide`]; `==` compares the
//!   mappings (values are kept in a canonical form).
//! - [`SharedLayout`] maps tensor coordinates to an element offset in shared memory: strided
//!   sub-dimensions plus an optional XOR [`Swizzle`].
//! - [`fragments`] constructs the layouts of tensor-core (`mma`) and `ldmatrix` fragments, the
//!   atoms instruction selection divides by.
//! - [`shared_wavefronts`] and [`register_read_wavefronts`] count shared-memory wavefronts (bank
//!   conflicts), so that swizzles can be chosen.
//!
//! Both layouts print to and parse from a text form that round-trips; parsing never panics and
//! reports errors with a byte position. See `docs/layouts.md` for the algebra with worked
//! examples (tensor-core fragments, `ldmatrix`, division).
//!
//! ```
//! use anybit_layout::{RegisterLayout, SharedLayout, Swizzle, register_read_wavefronts};
//!
//! // The accumulator fragment of mma.m16n8k16: lane 5 holds row 1, columns 2 and 3, and row 9.
//! let c: RegisterLayout = "local(2,1).spatial(8,4).local(1,2)".parse()?;
//! assert_eq!((c.num_threads(), c.local_size()), (32, 4));
//! assert_eq!(c.coordinates(5, 1), vec![1, 3]);
//! assert_eq!(c.coordinates(5, 2), vec![9, 2]);
//!
//! // A 64x64 warp tile is 4x8 such fragments per thread.
//! let tile = RegisterLayout::local(&[4, 8]).compose(&c)?;
//! assert_eq!(tile.shape(), &[64, 64]);
//! assert_eq!(tile.divide(&c), Some(RegisterLayout::local(&[4, 8])));
//!
//! // ldmatrix row addresses over a row-major f16 tile conflict 8 ways; a swizzle fixes it.
//! let rows: RegisterLayout = "local(4,4).column_spatial(16,2).local(1,8)".parse()?;
//! let plain = SharedLayout::row_major(&[64, 64]);
//! let swizzled = plain.clone().with_swizzle(Swizzle::new(3, 3, 6)?);
//! assert_eq!(register_read_wavefronts(&rows, &plain, 16, 16)?, 512);
//! assert_eq!(register_read_wavefronts(&rows, &swizzled, 16, 16)?, 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bank;
mod error;
pub mod fragments;
mod register;
mod shared;
mod text;

pub use bank::{register_read_wavefronts, shared_wavefronts};
pub use error::{LayoutError, ParseLayoutError};
pub use register::{ModeRef, Primitive, RegisterLayout, ThreadEntry};
pub use shared::{SharedLayout, Swizzle};
