//! Reinterpretation and conversion of register tensors: `view` (whole or a slice of each
//! thread's bits) and `cast` (in place, or into another local order of the same elements).
//!
//! What this module promises: `view` copies the thread's bit stream (from its offset) into the
//! result's words, exactly; `cast` converts every element as `docs/vm.md` says. The result's
//! type is the verifier's (`StmtInfo`), which also proved that a view's bits fit and that a
//! cast into another layout only reorders each thread's elements. Fast paths,
//! used only when their preconditions hold: packed conversions to f16/bf16 (two codes per
//! 32-bit register, [`crate::codegen::cast`]) for an even local size; into another local
//! order, pairs whose codes sit 16 bits apart in one register need at most one shift.

use std::collections::BTreeSet;

use anybit_vm::StmtInfo;

use crate::codegen::cast::{FastCast, PlaneCast};
use crate::codegen::element::{convert_to_code, decode};
use crate::codegen::emitter::{Emitter, R};

/// Adds a conversion's device function to the kernel once, behind an include guard named after
/// it (kernels of one module share the helpers).
fn add_device_function(e: &mut Emitter, name: &str, code: String) {
    let guard = name.to_uppercase();
    e.add_helper(
        name.to_string(),
        format!("#ifndef {guard}\n#define {guard}\n{code}#endif\n"),
    );
}

/// Lowers `%dst = view(%src[, offset]) : register<dtype, layout>`: the same bits per thread
/// (or, with an offset, the bits from `offset` on), read as another type and layout: a copy of
/// the words, free after register allocation when the offset is a multiple of 32.
pub(in crate::codegen) fn view(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    src: &str,
    offset: Option<u32>,
) -> R<()> {
    let x = e.register(src)?;
    let (reg, new) = e.result(info)?;
    let bits_out = reg.layout.local_size() * reg.dtype.bits() as usize;
    let start = offset.unwrap_or(0) as usize;
    let w = reg.words();
    let xname = x.cname.clone();
    let source_words = x.words();
    let (first, shift) = (start / 32, start % 32);
    // Bits of the last result word beyond the slice are cleared, so that a slice reads as a
    // tensor of its own.
    let tail = bits_out % 32;
    e.with_result(dst, &reg, new, |e, t| {
        if shift == 0 {
            let index = if first == 0 {
                "i".to_string()
            } else {
                format!("{first} + i")
            };
            e.line(&format!(
                "#pragma unroll\nfor (int i = 0; i < {w}; ++i) {t}[i] = {xname}[{index}];"
            ));
        } else {
            for i in 0..w {
                let low = format!("({xname}[{}] >> {shift})", first + i);
                let next = first + i + 1;
                let word = if next < source_words {
                    format!("{low} | ({xname}[{next}] << {})", 32 - shift)
                } else {
                    low
                };
                e.line(&format!("{t}[{i}] = {word};"));
            }
        }
        if offset.is_some() && tail != 0 {
            e.line(&format!("{t}[{}] &= 0x{:x}u;", w - 1, (1u64 << tail) - 1));
        }
        Ok(())
    })
}

/// Lowers `%dst = cast(%src, dtype, layout)`: each thread's elements converted and put in
/// `layout`'s local order (the verifier proved it is a reordering, the same in every thread).
/// With a packed conversion, a pair of result elements whose codes lie in one register 16 bits
/// apart takes one shift (often none) and the recipe; other pairs are gathered first; without
/// one, every element is decoded and encoded.
pub(in crate::codegen) fn cast_to_layout(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    src: &str,
) -> R<()> {
    let x = e.register(src)?;
    let (reg, new) = e.result(info)?;
    let (to, layout) = (reg.dtype, &reg.layout);
    // The verifier checked this rule; here it gives the permutation itself.
    let permutation = anybit_vm::local_permutation(&x.layout, layout)
        .map_err(|reason| e.internal(format!("cast to {layout}: {reason}")))?;
    let from = x.dtype;
    let n = from.bits() as usize;
    let l = layout.local_size();
    let xname = x.cname.clone();
    if let Some(fast) = FastCast::new(from, to).filter(|_| l % 2 == 0) {
        let mut lines = Vec::new();
        let mut gathered = 0;
        for j in 0..l / 2 {
            let (a, b) = (permutation[2 * j] * n, permutation[2 * j + 1] * n);
            let same_word = a / 32 == b / 32 && b == a + 16;
            let recipe = if same_word {
                // The widest offset the recipe takes inside the byte, so that pairs at bits
                // 0/16, 4/20 share the unshifted word and 8/24, 12/28 the word >> 8.
                let within = (a % 32 % 8) as u32;
                fast.at_offset(within)
                    .map(|f| (f, a % 32 - within as usize))
                    .or_else(|| fast.at_offset(0).map(|f| (f, a % 32)))
            } else {
                None
            };
            let (function, input) = match recipe {
                Some((f, shift)) => {
                    let word = format!("{xname}[{}]", a / 32);
                    let input = if shift == 0 {
                        word
                    } else {
                        format!("({word} >> {shift})")
                    };
                    (f, input)
                }
                None => {
                    gathered += 1;
                    let input = format!(
                        "(ab_get<{n}>({xname}, {}) | (ab_get<{n}>({xname}, {}) << 16))",
                        permutation[2 * j],
                        permutation[2 * j + 1]
                    );
                    (fast.clone(), input)
                }
            };
            let name = function.function_name();
            add_device_function(e, &name, function.device_function());
            lines.push((name, input));
        }
        e.note_selection(format!(
            "packed conversion {from} -> {to} into another local order: {} of {} pairs 16 bits apart in a register ({})",
            l / 2 - gathered,
            l / 2,
            fast.summary()
        ));
        return e.with_result(dst, &reg, new, |e, t| {
            for (j, (name, input)) in lines.iter().enumerate() {
                e.line(&format!("{t}[{j}] = {name}({input});"));
            }
            Ok(())
        });
    }
    let n2 = to.bits();
    e.with_result(dst, &reg, new, |e, t| {
        for (l, &source) in permutation.iter().enumerate() {
            let v = decode(from, &format!("ab_get<{n}>({xname}, {source})"));
            e.line(&format!(
                "ab_set<{n2}>({t}, {l}, {});",
                convert_to_code(from, to, &v)
            ));
        }
        Ok(())
    })
}

/// Lowers `%dst = cast(%src) : dtype`: a packed conversion where one exists and the local size
/// is even, decode and encode otherwise.
pub(in crate::codegen) fn cast(e: &mut Emitter, dst: &str, info: &StmtInfo, src: &str) -> R<()> {
    let x = e.register(src)?;
    let (reg, new) = e.result(info)?;
    let (from, to) = (x.dtype, reg.dtype);
    let l = x.layout.local_size();
    if let Some(fast) = FastCast::new(from, to) {
        if l % 2 == 0 {
            e.note_selection(format!(
                "packed conversion {from} -> {to}, two per 32-bit register ({})",
                fast.summary()
            ));
            let fname = fast.function_name();
            let xname = x.cname.clone();
            add_device_function(e, &fname, fast.device_function());
            return e.with_result(dst, &reg, new, |e, t| {
                e.line(&format!(
                    "#pragma unroll\nfor (int j = 0; j < {}; ++j) {t}[j] = {fname}(ab_pair<{}>({xname}, 2 * j));",
                    l / 2,
                    from.bits()
                ));
                Ok(())
            });
        }
    }
    let (n1, n2) = (from.bits(), to.bits());
    e.with_result(dst, &reg, new, |e, t| {
        e.open(&format!("#pragma unroll\nfor (int l = 0; l < {l}; ++l) {{"));
        let v = decode(from, &format!("ab_get<{n1}>({}, l)", x.cname));
        e.line(&format!(
            "ab_set<{n2}>({t}, l, {});",
            convert_to_code(from, to, &v)
        ));
        e.close("}");
        Ok(())
    })
}

/// One pair of result elements of `cast_planes`: per plane, the word and the bit of its field
/// for the first element, if the second element's field is 16 bits above it in the same word.
fn plane_pair_fields(
    permutations: &[Vec<usize>],
    widths: &[u32],
    first: usize,
    second: usize,
) -> Option<Vec<(usize, u32)>> {
    permutations
        .iter()
        .zip(widths)
        .map(|(permutation, &width)| {
            let a = permutation[first] * width as usize;
            let b = permutation[second] * width as usize;
            (a / 32 == b / 32 && b == a + 16).then_some((a / 32, (a % 32) as u32))
        })
        .collect()
}

/// Lowers `%dst = cast_planes(%p0, %p1, .., code, dtype[, layout])`: the element's code is the
/// planes' fields put together (low bits first), read as `code` and converted. With a packed
/// conversion ([`PlaneCast`]), a pair of result elements whose fields sit 16 bits apart in
/// every plane takes, for each of the conversion's fields, its plane's word shifted so that
/// the field lands where the recipe wants it (integers: the code's offset plus the plane's
/// place in the code, the offset being the first plane's field position within its byte where
/// the recipe takes it, so the first plane needs a shift only for the pairs in a word's upper
/// byte, as `cast` to a layout does; small floats: where the float recipe puts those bits).
/// The prepared layouts of the kernels place the planes' fields so that the shifts repeat.
/// Other pairs gather each code; without a packed conversion every element is decoded and
/// encoded.
pub(in crate::codegen) fn cast_planes(
    e: &mut Emitter,
    dst: &str,
    info: &StmtInfo,
    planes: &[String],
    code: anybit_dtype::DType,
) -> R<()> {
    let sources: Vec<_> = planes.iter().map(|p| e.register(p)).collect::<R<_>>()?;
    let (reg, new) = e.result(info)?;
    let to = reg.dtype;
    let first_layout = &sources[0].layout;
    // Result element `l` is element `out[l]` in the first plane's order, which is element
    // `within[i][out[l]]` of plane `i`.
    let out = anybit_vm::local_permutation(first_layout, &reg.layout)
        .map_err(|reason| e.internal(format!("cast_planes to {}: {reason}", reg.layout)))?;
    let permutations: Vec<Vec<usize>> = sources
        .iter()
        .map(|plane| {
            anybit_vm::local_permutation(&plane.layout, first_layout)
                .map(|within| out.iter().map(|&l| within[l]).collect())
                .map_err(|reason| e.internal(format!("cast_planes plane order: {reason}")))
        })
        .collect::<R<_>>()?;
    let widths: Vec<u32> = sources.iter().map(|plane| plane.dtype.bits()).collect();
    let names: Vec<String> = sources.iter().map(|plane| plane.cname.clone()).collect();
    let l = reg.layout.local_size();
    // The whole code of element `l` (result order) as a C expression.
    let gather = |l: usize| -> String {
        let mut shift = 0;
        let parts: Vec<String> = names
            .iter()
            .zip(&widths)
            .zip(&permutations)
            .map(|((name, &width), permutation)| {
                let part = format!("(ab_get<{width}>({name}, {}) << {shift})", permutation[l]);
                shift += width;
                part
            })
            .collect();
        format!("({})", parts.join(" | "))
    };
    let Some(gathered) = FastCast::new(code, to).filter(|_| l % 2 == 0) else {
        let n2 = to.bits();
        return e.with_result(dst, &reg, new, |e, t| {
            for element in 0..l {
                let v = decode(code, &gather(element));
                e.line(&format!(
                    "ab_set<{n2}>({t}, {element}, {});",
                    convert_to_code(code, to, &v)
                ));
            }
            Ok(())
        });
    };
    let mut lines = Vec::with_capacity(l / 2);
    // The distinct (plane, word, shift) a pair needs: each is one shift instruction.
    let mut shifts = BTreeSet::new();
    let mut packed = 0;
    for j in 0..l / 2 {
        let fused =
            plane_pair_fields(&permutations, &widths, 2 * j, 2 * j + 1).and_then(|fields| {
                let first_bit = fields[0].1;
                let room: u32 = if to == anybit_dtype::DType::F16 {
                    10
                } else {
                    7
                };
                let offset = (first_bit % 8).min(room.saturating_sub(code.bits()));
                PlaneCast::new(code, to, &widths, offset).map(|cast| (cast, fields))
            });
        match fused {
            Some((cast, fields)) => {
                packed += 1;
                let inputs: Vec<String> = cast
                    .fields
                    .iter()
                    .map(|field| {
                        let (word, bit) = fields[field.plane];
                        let source = format!("{}[{word}]", names[field.plane]);
                        let shift = (bit + field.start) as i32 - field.to as i32;
                        if shift != 0 {
                            shifts.insert((field.plane, word, shift));
                        }
                        match shift {
                            0 => source,
                            s if s > 0 => format!("({source} >> {s})"),
                            s => format!("({source} << {})", -s),
                        }
                    })
                    .collect();
                let name = cast.function_name();
                add_device_function(e, &name, cast.device_function());
                lines.push(format!("{name}({})", inputs.join(", ")));
            }
            None => {
                let name = gathered.function_name();
                add_device_function(e, &name, gathered.device_function());
                lines.push(format!(
                    "{name}({} | ({} << 16))",
                    gather(2 * j),
                    gather(2 * j + 1)
                ));
            }
        }
    }
    e.note_selection(format!(
        "packed conversion {code} -> {to} from planes of {widths:?} bits: {packed} of {} pairs with every plane's fields 16 bits apart, {} distinct shifts ({})",
        l / 2,
        shifts.len(),
        gathered.summary()
    ));
    e.with_result(dst, &reg, new, |e, t| {
        for (j, call) in lines.iter().enumerate() {
            e.line(&format!("{t}[{j}] = {call};"));
        }
        Ok(())
    })
}
