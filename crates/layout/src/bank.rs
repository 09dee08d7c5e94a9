//! Shared-memory bank conflicts (stub).
use crate::{LayoutError, RegisterLayout, SharedLayout};

pub fn shared_wavefronts(accesses: &[(u64, u32)]) -> usize {
    todo!("{accesses:?}")
}

pub fn register_read_wavefronts(
    register: &RegisterLayout,
    shared: &SharedLayout,
    element_bits: u32,
    access_bytes: u32,
) -> Result<usize, LayoutError> {
    todo!("{register} {shared:?} {element_bits} {access_bytes}")
}
