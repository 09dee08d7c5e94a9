//! Bit packing of n-bit codes.
//!
//! Element i of an n-bit sequence occupies bits `[i·n, (i+1)·n)` of a little-endian bit stream:
//! bit j of the stream is bit `j % 8` of byte `j / 8` (or bit `j % 32` of word `j / 32`), and
//! the low bit of a code comes first. Unused high bits of the last byte or word are zero.
//! Widths 1–8, 16 and 32 are supported; the same rule holds inside a thread's registers.

/// A packing request that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("cannot pack {bits}-bit codes: widths are 1 to 8, 16 and 32 bits")]
    UnsupportedWidth { bits: u32 },
    #[error("code {code:#x} at index {index} does not fit in {bits} bits")]
    CodeTooWide { index: usize, code: u32, bits: u32 },
    #[error("{count} codes of {bits} bits need {needed} bytes, but only {available} were given")]
    TooShort {
        count: usize,
        bits: u32,
        needed: usize,
        available: usize,
    },
}

fn check_width(bits: u32) -> Result<(), PackError> {
    match bits {
        1..=8 | 16 | 32 => Ok(()),
        _ => Err(PackError::UnsupportedWidth { bits }),
    }
}

/// Bytes needed for `count` codes of `bits` bits.
pub const fn packed_bytes(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(8)
}

/// 32-bit words needed for `count` codes of `bits` bits.
pub const fn packed_words(count: usize, bits: u32) -> usize {
    (count * bits as usize).div_ceil(32)
}

/// Packs codes into bytes.
pub fn pack(codes: &[u32], bits: u32) -> Result<Vec<u8>, PackError> {
    check_width(bits)?;
    if let Some(index) = codes
        .iter()
        .position(|&code| bits < 32 && code >> bits != 0)
    {
        let code = codes[index];
        return Err(PackError::CodeTooWide { index, code, bits });
    }
    let mut bytes = vec![0u8; packed_bytes(codes.len(), bits)];
    write_codes(&mut bytes, bits, 0, codes);
    Ok(bytes)
}

/// Unpacks `count` codes from bytes.
pub fn unpack(bytes: &[u8], bits: u32, count: usize) -> Result<Vec<u32>, PackError> {
    check_width(bits)?;
    let needed = packed_bytes(count, bits);
    if bytes.len() < needed {
        return Err(PackError::TooShort {
            count,
            bits,
            needed,
            available: bytes.len(),
        });
    }
    let mut codes = vec![0; count];
    read_codes(bytes, bits, 0, &mut codes);
    Ok(codes)
}

/// Packs codes into 32-bit words (the same bit stream as [`pack`], grouped by 4 bytes).
pub fn pack_words(codes: &[u32], bits: u32) -> Result<Vec<u32>, PackError> {
    let mut bytes = pack(codes, bits)?;
    bytes.resize(packed_words(codes.len(), bits) * 4, 0);
    Ok(bytes
        .chunks_exact(4)
        .map(|chunk| u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
        .collect())
}

/// Unpacks `count` codes from 32-bit words.
pub fn unpack_words(words: &[u32], bits: u32, count: usize) -> Result<Vec<u32>, PackError> {
    let bytes: Vec<u8> = words.iter().flat_map(|word| word.to_le_bytes()).collect();
    unpack(&bytes, bits, count)
}

/// Reads code `index` of a packed byte stream. The stream must hold it.
pub fn read_code(bytes: &[u8], bits: u32, index: usize) -> u32 {
    let first_bit = index * bits as usize;
    let mut code = 0u64;
    let first_byte = first_bit / 8;
    let last_byte = (first_bit + bits as usize - 1) / 8;
    for (position, &byte) in bytes[first_byte..=last_byte].iter().enumerate() {
        code |= (byte as u64) << (8 * position);
    }
    ((code >> (first_bit % 8)) & mask(bits)) as u32
}

/// Writes code `index` of a packed byte stream, leaving the other bits as they are. The stream
/// must hold it; bits of `code` above `bits` are ignored.
pub fn write_code(bytes: &mut [u8], bits: u32, index: usize, code: u32) {
    let first_bit = index * bits as usize;
    let shift = first_bit % 8;
    let field_mask = mask(bits) << shift;
    let field = ((code as u64) & mask(bits)) << shift;
    let first_byte = first_bit / 8;
    let last_byte = (first_bit + bits as usize - 1) / 8;
    for (position, byte) in bytes[first_byte..=last_byte].iter_mut().enumerate() {
        let byte_mask = (field_mask >> (8 * position)) as u8;
        let byte_bits = (field >> (8 * position)) as u8;
        *byte = (*byte & !byte_mask) | byte_bits;
    }
}

/// Reads codes `first..first + codes.len()` of a packed byte stream into `codes`: what
/// [`read_code`] gives for each, a byte at a time instead of a code at a time. The stream must
/// hold them.
pub fn read_codes(bytes: &[u8], bits: u32, first: usize, codes: &mut [u32]) {
    let first_bit = first * bits as usize;
    let mut next_byte = first_bit / 8;
    let skipped = (first_bit % 8) as u32;
    let (mut buffer, mut held) = (0u64, 0u32);
    if skipped != 0 && !codes.is_empty() {
        buffer = (bytes[next_byte] >> skipped) as u64;
        held = 8 - skipped;
        next_byte += 1;
    }
    for code in codes {
        while held < bits {
            buffer |= (bytes[next_byte] as u64) << held;
            next_byte += 1;
            held += 8;
        }
        *code = (buffer & mask(bits)) as u32;
        buffer >>= bits;
        held -= bits;
    }
}

/// Writes `codes` as codes `first..first + codes.len()` of a packed byte stream, leaving the
/// other bits as they are: what [`write_code`] does for each, a byte at a time. The stream must
/// hold them; bits of a code above `bits` are ignored.
pub fn write_codes(bytes: &mut [u8], bits: u32, first: usize, codes: &[u32]) {
    if codes.is_empty() {
        return;
    }
    let first_bit = first * bits as usize;
    let mut next_byte = first_bit / 8;
    // The bits below the first code in its byte are kept: they start the buffer.
    let mut held = (first_bit % 8) as u32;
    let mut buffer = (bytes[next_byte] as u64) & mask(held);
    for &code in codes {
        buffer |= ((code as u64) & mask(bits)) << held;
        held += bits;
        while held >= 8 {
            bytes[next_byte] = buffer as u8;
            next_byte += 1;
            buffer >>= 8;
            held -= 8;
        }
    }
    if held != 0 {
        // The last byte is shared with whatever follows: keep its bits above the codes.
        let written = mask(held) as u8;
        bytes[next_byte] = (bytes[next_byte] & !written) | (buffer as u8 & written);
    }
}

const fn mask(bits: u32) -> u64 {
    (1u64 << bits) - 1
}
