//! Shared-memory bank conflicts: how many wavefronts a warp's shared-memory access takes.
//!
//! # Model
//! Shared memory has 32 banks of 4 bytes; 4-byte word `w` (byte address / 4) lives in bank
//! `w % 32`. A warp's access is split into phases by access width: accesses of up to 4 bytes are
//! one phase of 32 lanes, 8-byte accesses two phases of 16 lanes (half-warps), 16-byte accesses
//! four phases of 8 lanes (quarter-warps); in general `32 / words` lanes per phase, where `words`
//! is the access width in 4-byte words rounded up to a power of two. Within a phase, each bank
//! serves one distinct word per wavefront, and lanes touching the same word share it
//! (broadcast), so a phase takes as many wavefronts as the largest number of distinct words any
//! one bank is asked for. The total is the sum over phases. This is the documented behaviour of
//! NVIDIA GPUs from Volta on (it ignores the rarer cases where hardware merges phases).

use std::collections::HashMap;

use crate::{LayoutError, RegisterLayout, SharedLayout};

const BANKS: u64 = 32;
const BANK_BYTES: u64 = 4;
const WARP: usize = 32;

/// Number of shared-memory wavefronts one warp's access takes; entry `i` is lane `i`'s (byte
/// address, bytes accessed), with 0 bytes for an inactive lane. The width of the access is the
/// largest one of any lane. More than 32 entries are taken as several warps, lanes `32k..32k+31`
/// forming warp `k`, and their wavefronts are added up.
pub fn shared_wavefronts(accesses: &[(u64, u32)]) -> usize {
    accesses.chunks(WARP).map(warp_wavefronts).sum()
}

fn warp_wavefronts(lanes: &[(u64, u32)]) -> usize {
    let width = lanes.iter().map(|&(_, bytes)| bytes).max().unwrap_or(0);
    if width == 0 {
        return 0;
    }
    let words = u64::from(width).div_ceil(BANK_BYTES).next_power_of_two();
    let lanes_per_phase = usize::try_from((WARP as u64 / words).max(1)).unwrap_or(1);
    lanes
        .chunks(lanes_per_phase)
        .map(|phase| {
            let mut words_of_bank: HashMap<u64, Vec<u64>> = HashMap::new();
            for &(address, bytes) in phase {
                if bytes == 0 {
                    continue;
                }
                let first = address / BANK_BYTES;
                let last = address.saturating_add(u64::from(bytes) - 1) / BANK_BYTES;
                for word in first..=last {
                    let words = words_of_bank.entry(word % BANKS).or_default();
                    if !words.contains(&word) {
                        words.push(word);
                    }
                }
            }
            words_of_bank.values().map(Vec::len).max().unwrap_or(0)
        })
        .sum()
}

/// Wavefronts taken by the threads of `register` (in warps of 32 consecutive threads) reading
/// all their elements from a tensor stored with `shared`, `element_bits` bits per element.
///
/// Each thread reads its local elements in order, `access_bytes` at a time (so
/// `access_bytes * 8 / element_bits` consecutive local elements per access, e.g. 16 for a
/// 16-byte vector or one `ldmatrix` row address); the elements of one access must be contiguous
/// in shared memory and the access aligned to its width. The result is the sum over warps and
/// accesses of [`shared_wavefronts`]; comparing it across swizzles picks a conflict-free one.
pub fn register_read_wavefronts(
    register: &RegisterLayout,
    shared: &SharedLayout,
    element_bits: u32,
    access_bytes: u32,
) -> Result<usize, LayoutError> {
    if register.shape() != shared.shape() {
        return Err(LayoutError::new(format!(
            "register layout {register} has shape {:?} but shared layout {shared} has shape {:?}",
            register.shape(),
            shared.shape()
        )));
    }
    let access_bits = u64::from(access_bytes) * 8;
    let bits = u64::from(element_bits);
    if bits == 0 || access_bits == 0 || access_bits % bits != 0 {
        return Err(LayoutError::new(format!(
            "an access of {access_bytes} bytes does not hold a whole number of {element_bits}-bit elements"
        )));
    }
    let per_access =
        usize::try_from(access_bits / bits).map_err(|_| LayoutError::new("access too wide"))?;
    if register.local_size() % per_access != 0 {
        return Err(LayoutError::new(format!(
            "{register} holds {} elements per thread, not a multiple of the {per_access} read per access",
            register.local_size()
        )));
    }
    let mut coords = vec![0; register.rank()];
    let mut total = 0;
    let mut warp_accesses = Vec::with_capacity(WARP);
    for warp_start in (0..register.num_threads()).step_by(WARP) {
        let warp_end = (warp_start + WARP).min(register.num_threads());
        for first_local in (0..register.local_size()).step_by(per_access) {
            warp_accesses.clear();
            for thread in warp_start..warp_end {
                register.coordinates_into(thread, first_local, &mut coords);
                let start = shared.offset(&coords);
                for j in 1..per_access {
                    register.coordinates_into(thread, first_local + j, &mut coords);
                    if shared.offset(&coords) != start + j {
                        return Err(LayoutError::new(format!(
                            "local elements {first_local}..{} of thread {thread} are not contiguous in {shared}",
                            first_local + per_access
                        )));
                    }
                }
                let start_bits = start as u64 * bits;
                if start_bits % access_bits != 0 {
                    return Err(LayoutError::new(format!(
                        "the access of thread {thread} at element offset {start} is not aligned to {access_bytes} bytes"
                    )));
                }
                warp_accesses.push((start_bits / 8, access_bytes));
            }
            total += shared_wavefronts(&warp_accesses);
        }
    }
    Ok(total)
}
