//! Layout algebra for anybit (API skeleton: bodies are being written).
//!
//! A register layout maps (thread, local index) to tensor coordinates; a shared layout maps
//! tensor coordinates to an element offset in shared memory.

mod register;
mod shared;

pub use register::{LayoutError, ParseLayoutError, RegisterLayout};
pub use shared::{shared_wavefronts, SharedLayout, Swizzle};
