//! One test per kind of verifier error, each showing the exact message.
//!
//! Most programs are written in the text form (so the messages show real line:column spans);
//! the few mistakes that the parser cannot express are built in Rust.

use anybit_dtype::DType;
use anybit_layout::RegisterLayout;
use anybit_vm::builder::ProgramBuilder;
use anybit_vm::{parse, verify, Program};
use insta::assert_snapshot;

/// The verifier's message for a program whose body is `body` (which starts on line 5), with
/// parameters `a: ptr<f16>, q: ptr<u4>, n: i32` and 32 threads.
fn body_error(body: &str) -> String {
    program_error(&format!(
        "program p(a: ptr<f16>, q: ptr<u4>, n: i32)\ngrid(1)\nthreads(32)\n{{\n{body}}}\n"
    ))
}

fn program_error(text: &str) -> String {
    let program = parse(text).unwrap_or_else(|error| panic!("parse: {error}\n{text}"));
    built_error(&program)
}

fn built_error(program: &Program) -> String {
    match verify(program) {
        Ok(_) => panic!("verified:\n{program}"),
        Err(error) => error.to_string(),
    }
}

const WARP: &str = "spatial(8,4)";

#[test]
fn invalid_name() {
    let mut b = ProgramBuilder::new("p");
    b.let_("my var", 1);
    assert_snapshot!(built_error(&b.finish()), @"0:0: `my var` is not a valid variable name: use an identifier [A-Za-z_][A-Za-z0-9_]* that is not a keyword");
}

#[test]
fn invalid_doc() {
    let mut b = ProgramBuilder::new("p");
    b.doc("two\nlines");
    assert_snapshot!(built_error(&b.finish()), @"0:0: documentation line 1 contains a line break");
}

#[test]
fn duplicate_param() {
    assert_snapshot!(program_error("program p(n: i32, n: i32)\ngrid(1)\nthreads(32)\n{\n}\n"), @"1:19: parameter `n` is declared twice");
}

#[test]
fn multiple_of_zero() {
    assert_snapshot!(program_error("program p(n: i32 multiple_of 0)\ngrid(1)\nthreads(32)\n{\n}\n"), @"1:11: parameter `n`: `multiple_of 0` promises nothing; use a positive number");
}

#[test]
fn grid_rank() {
    assert_snapshot!(program_error("program p(n: i32)\ngrid(n, 1, 1, 1)\nthreads(32)\n{\n}\n"), @"1:1: the grid has 4 dimensions; it must have 1 to 3");
}

#[test]
fn grid_expr() {
    assert_snapshot!(program_error("program p(n: i32)\ngrid(block.x + n)\nthreads(32)\n{\n}\n"), @"1:1: the grid may only use constants and integer parameters, not `block.x`");
}

#[test]
fn thread_count() {
    assert_snapshot!(program_error("program p(n: i32)\ngrid(1)\nthreads(2048)\n{\n}\n"), @"1:1: 2048 threads per block; a block has 1 to 1024 threads");
}

#[test]
fn blocks_per_sm() {
    let header = "program p(n: i32)\ngrid(1)\n";
    let cases = [
        "threads(128)\nblocks_per_sm(0)",
        "threads(128)\nblocks_per_sm(33)",
        "threads(256)\nblocks_per_sm(9)",
        "threads(1024)\nblocks_per_sm(3)",
        "threads(96)\nblocks_per_sm(22)",
    ];
    let messages: Vec<String> = cases
        .iter()
        .map(|lines| program_error(&format!("{header}{lines}\n{{\n}}\n")))
        .collect();
    assert_snapshot!(messages.join("\n"), @"
    1:1: `blocks_per_sm(0)` with 128 threads per block: a multiprocessor holds at most 32 blocks and 2048 threads, so the hint must be 1 to 16
    1:1: `blocks_per_sm(33)` with 128 threads per block: a multiprocessor holds at most 32 blocks and 2048 threads, so the hint must be 1 to 16
    1:1: `blocks_per_sm(9)` with 256 threads per block: a multiprocessor holds at most 32 blocks and 2048 threads, so the hint must be 1 to 8
    1:1: `blocks_per_sm(3)` with 1024 threads per block: a multiprocessor holds at most 32 blocks and 2048 threads, so the hint must be 1 to 2
    1:1: `blocks_per_sm(22)` with 96 threads per block: a multiprocessor holds at most 32 blocks and 2048 threads, so the hint must be 1 to 21
    ");
    let mut b = ProgramBuilder::new("p");
    b.threads(64).blocks_per_sm(40);
    assert_snapshot!(built_error(&b.finish()), @"0:0: `blocks_per_sm(40)` with 64 threads per block: a multiprocessor holds at most 32 blocks and 2048 threads, so the hint must be 1 to 32");
}

#[test]
fn blocks_per_sm_within_the_limits_verifies() {
    for (threads, blocks) in [
        (32, 1),
        (32, 32),
        (64, 32),
        (128, 16),
        (256, 8),
        (1024, 2),
        (96, 21),
    ] {
        let text = format!(
            "program p(n: i32)\ngrid(1)\nthreads({threads})\nblocks_per_sm({blocks})\n{{\n}}\n"
        );
        let program = parse(&text).unwrap_or_else(|error| panic!("parse: {error}\n{text}"));
        assert_eq!(program.blocks_per_sm, Some(blocks));
        if let Err(error) = verify(&program) {
            panic!("{error}\n{text}");
        }
    }
}

#[test]
fn undefined_scalar() {
    assert_snapshot!(body_error("    let x = n + m;\n"), @"5:5: `m` is not a defined scalar");
}

#[test]
fn pointer_as_integer() {
    assert_snapshot!(body_error("    let x = a * 2;\n"), @"5:5: `a` is a pointer; only `view_global` can use it");
}

#[test]
fn not_a_pointer() {
    assert_snapshot!(body_error("    %g = view_global(n, [n], [1]);\n"), @"5:5: `view_global` needs a pointer parameter, and `n` is an i32");
}

#[test]
fn scalar_redefined() {
    assert_snapshot!(body_error("    for n in 0..4 {\n    }\n"), @"5:5: scalar `n` is already defined here (scalars cannot be shadowed)");
}

#[test]
fn undefined_tensor() {
    assert_snapshot!(body_error("    %y = exp(%x);\n"), @"5:5: `%x` is not a defined tensor");
}

#[test]
fn wrong_space() {
    assert_snapshot!(body_error("    %g = view_global(a, [n], [1]);\n    %y = exp(%g);\n"), @"6:5: `exp` needs a register tensor, and `%g` is a global tensor");
}

#[test]
fn cannot_overwrite() {
    assert_snapshot!(body_error(
        "    %s = alloc_shared(f16, row_major(32));\n    %s = alloc_shared(f16, row_major(32));\n"
    ), @"6:5: `%s` is a shared tensor and cannot be assigned again; only register tensors can be overwritten");
}

#[test]
fn overwrite_type() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(f16, {WARP}, 0.0);\n    %x = cast(%x, f32);\n"
    )), @"6:5: `%x` has type register<f16, spatial(8,4)>, and `cast` gives register<f32, spatial(8,4)>; an overwrite must keep the type");
}

#[test]
fn layout_threads() {
    assert_snapshot!(body_error("    %x = alloc_register(f16, spatial(8,8));\n"), @"5:5: `alloc_register`: layout spatial(8,8) spans 64 threads, and the block has 32");
}

#[test]
fn register_too_large() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(f32, {WARP}.local(64,64));\n"
    )), @"5:5: `alloc_register`: a register tensor of f32 with layout spatial(8,4).local(64,64) takes more than 2097152 bits");
}

#[test]
fn rank_mismatch() {
    assert_snapshot!(body_error(&format!(
        "    %g = view_global(a, [n, n], [n, 1]);\n    %x = load_global(%g[0], {WARP});\n"
    )), @"6:5: `load_global`: the list of offsets has rank 1, expected 2");
}

#[test]
fn empty_shape() {
    assert_snapshot!(body_error("    %g = view_global(a, [], []);\n"), @"5:5: `view_global`: a global tensor needs at least one dimension");
}

#[test]
fn dtype_mismatch() {
    assert_snapshot!(body_error(&format!(
        "    %g = view_global(a, [n, n], [n, 1]);\n    %x = alloc_register(f32, {WARP}, 0.0);\n    store_global(%g[0, 0], %x);\n"
    )), @"7:5: `store_global`: the dtype of `%x` is f32, expected f16");
}

#[test]
fn dtype_not_allowed() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(i8, {WARP}, 1);\n    %y = exp(%x);\n"
    )), @"6:5: `exp` is not defined on i8: it needs a float type");
}

#[test]
fn constant_out_of_range() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(u4, {WARP}, 0);\n    %y = add(%x, 16);\n"
    )), @"6:5: `add`: the constant 16 does not fit u4");
}

#[test]
fn float_for_integer() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(i8, {WARP}, 0);\n    %y = mul(%x, 0.5);\n"
    )), @"6:5: `mul`: the float literal 0.5 needs a float type, and the tensor is i8");
}

#[test]
fn no_tensor_operand() {
    assert_snapshot!(body_error("    %y = add(1, n);\n"), @"5:5: `add` needs a tensor operand");
}

#[test]
fn broadcast_shape() {
    assert_snapshot!(body_error(
        "    %x = alloc_register(f16, spatial(8,4), 0.0);\n    %y = alloc_register(f16, spatial(4,8), 0.0);\n    %z = add(%x, %y);\n"
    ), @"7:5: `add`: shapes [8, 4] and [4, 8] do not broadcast (sizes must be equal or 1)");
}

#[test]
fn no_full_shape_operand() {
    assert_snapshot!(body_error(
        "    %x = alloc_register(f16, local(8,1).replicate(32), 0.0);\n    %y = alloc_register(f16, local(1,4).replicate(32), 0.0);\n    %z = add(%x, %y);\n"
    ), @"7:5: `add`: no operand has the result shape [8, 4], so the result has no layout");
}

#[test]
fn layout_mismatch() {
    assert_snapshot!(body_error(
        "    %x = alloc_register(f16, spatial(8,4), 0.0);\n    %y = alloc_register(f16, column_spatial(8,4), 0.0);\n    %z = sub(%x, %y);\n"
    ), @"7:5: `sub`: `%y` has layout column_spatial(8,4), expected spatial(8,4) like the other operand of shape [8, 4]");
}

#[test]
fn broadcast_layout() {
    // %r holds row values in thread order, but %x spreads the rows over threads differently.
    assert_snapshot!(body_error(
        "    %x = alloc_register(f32, spatial(8,4), 0.0);\n    %r = alloc_register(f32, replicate(4).spatial(8,1), 1.0);\n    %y = add(%x, %r);\n"
    ), @"7:5: `add`: thread 1 needs element [0, 0] of `%r` for broadcasting, but layout replicate(4).spatial(8,1) does not give it to that thread");
}

#[test]
fn view_bits() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(u8, {WARP}.local(1,4), 0);\n    %y = view(%x, u4, {WARP}.local(1,4));\n"
    )), @"6:5: `view` must keep the bits per thread: 32 bits (4 x u8) become 16 bits (4 x u4)");
}

#[test]
fn dot_shape() {
    assert_snapshot!(body_error(
        "    %a = alloc_register(f16, spatial(8,4).local(2,2), 0.0);\n    %b = alloc_register(f16, spatial(8,4).local(2,2), 0.0);\n    %c = alloc_register(f32, spatial(8,4).local(2,2), 0.0);\n    %c = dot(%a, %b, %c);\n"
    ), @"8:5: `dot` needs a [.., M, K], b [.., K, N], c [.., M, N] with the same leading (batch) dimensions; found a [16, 8], b [16, 8], c [16, 8]");
}

#[test]
fn dot_batch_dimensions_differ() {
    assert_snapshot!(body_error(
        "    %a = alloc_register(f16, spatial(1,8,4).local(2,2,2), 0.0);\n    %b = alloc_register(f16, spatial(1,8,4).local(1,1,2), 0.0);\n    %c = alloc_register(f32, spatial(1,8,4).local(1,2,2), 0.0);\n    %c = dot(%a, %b, %c);\n"
    ), @"8:5: `dot` needs a [.., M, K], b [.., K, N], c [.., M, N] with the same leading (batch) dimensions; found a [2, 16, 8], b [1, 8, 8], c [1, 16, 8]");
}

#[test]
fn view_slice() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(u8, {WARP}.local(1,4), 0);\n    %y = view(%x, u4, {WARP}.local(1,4), 24);\n"
    )), @"6:5: `view` takes 16 bits from bit 24 of each thread, beyond the 32 bits (4 x u8) it holds");
}

#[test]
fn cast_layout() {
    assert_snapshot!(body_error(
        "    %x = alloc_register(u4, spatial(8,4).local(1,2), 0);\n    %y = cast(%x, f16, local(1,2).spatial(8,4));\n"
    ), @"6:5: `cast` to layout local(1,2).spatial(8,4) from spatial(8,4).local(1,2): thread 0 holds element [0, 4] in the new layout but not in the old; a cast only reorders each thread's own elements");
}

#[test]
fn plane_type() {
    assert_snapshot!(body_error(
        "    %p = alloc_register(u2, spatial(8,4).local(1,2), 0);\n    %s = alloc_register(i1, spatial(8,4).local(1,2), 0);\n    %y = cast_planes(%p, %s, i3, f16);\n"
    ), @"7:5: `cast_planes`: plane `%s` is i1; planes are unsigned integers (u1 .. u8)");
    // u16 and u32 are unsigned too, but not plane types.
    assert_snapshot!(body_error(
        "    %p = alloc_register(u16, spatial(8,4).local(1,2), 0);\n    %y = cast_planes(%p, u16, f32);\n"
    ), @"6:5: `cast_planes`: plane `%p` is u16; planes are unsigned integers (u1 .. u8)");
}

#[test]
fn plane_widths() {
    // 2 + 1 bits make a 3-bit code, not a 4-bit one; the code is a type of at most 8 bits.
    assert_snapshot!(body_error(
        "    %p = alloc_register(u2, spatial(8,4).local(1,2), 0);\n    %s = alloc_register(u1, spatial(8,4).local(1,2), 0);\n    %y = cast_planes(%p, %s, i4, f16);\n"
    ), @"7:5: `cast_planes`: the code type i4 must be an integer or small float type (at most 8 bits) of as many bits as the planes have together (2 + 1 = 3 bits)");
    assert_snapshot!(body_error(
        "    %p = alloc_register(u8, spatial(8,4).local(1,2), 0);\n    %s = alloc_register(u8, spatial(8,4).local(1,2), 0);\n    %y = cast_planes(%p, %s, f16, f32);\n"
    ), @"7:5: `cast_planes`: the code type f16 must be an integer or small float type (at most 8 bits) of as many bits as the planes have together (8 + 8 = 16 bits)");
    // Small floats are codes too: 4 + 1 + 1 bits of f6e3m2.
    let planes = "    %p = alloc_register(u4, spatial(8,4).local(1,2), 0);\n    %e = alloc_register(u1, spatial(8,4).local(1,2), 0);\n    %s = alloc_register(u1, spatial(8,4).local(1,2), 0);\n";
    assert_snapshot!(body_error(&format!("{planes}    %y = cast_planes(%p, %e, %s, f5e2m2, f16);\n")), @"8:5: `cast_planes`: the code type f5e2m2 must be an integer or small float type (at most 8 bits) of as many bits as the planes have together (4 + 1 + 1 = 6 bits)");
    let text = format!(
        "program p(a: ptr<f16>)\ngrid(1)\nthreads(32)\n{{\n{planes}    %y = cast_planes(%p, %e, %s, f6e3m2, f16);\n}}\n"
    );
    assert!(verify(&parse(&text).unwrap()).is_ok(), "{text}");
    // The builder can give no plane at all (the parser cannot): the same error, no panic.
    let mut b = ProgramBuilder::new("p");
    b.threads(32);
    b.cast_planes("y", &[], DType::Unsigned(3), DType::F16, None);
    assert_snapshot!(built_error(&b.finish()), @"0:0: `cast_planes`: the code type u3 must be an integer or small float type (at most 8 bits) of as many bits as the planes have together (no planes = 0 bits)");
}

#[test]
fn plane_layout() {
    // The second plane gives thread 0 other elements than the first.
    assert_snapshot!(body_error(
        "    %p = alloc_register(u2, spatial(8,4).local(1,2), 0);\n    %s = alloc_register(u1, local(1,2).spatial(8,4), 0);\n    %y = cast_planes(%p, %s, u3, f16);\n"
    ), @"7:5: `cast_planes`: plane `%s` (layout local(1,2).spatial(8,4)) must hold the elements of the first plane (spatial(8,4).local(1,2)) in every thread: thread 0 holds element [0, 1] in the new layout but not in the old; a cast only reorders each thread's own elements");
}

#[test]
fn cast_layout_of_cast_planes() {
    // The result layout of `cast_planes` follows `cast`'s rule, from the first plane's layout.
    assert_snapshot!(body_error(
        "    %p = alloc_register(u2, spatial(8,4).local(1,2), 0);\n    %s = alloc_register(u1, spatial(8,4).column_local(1,2), 0);\n    %y = cast_planes(%p, %s, u3, f16, local(1,2).spatial(8,4));\n"
    ), @"7:5: `cast_planes` to layout local(1,2).spatial(8,4) from spatial(8,4).local(1,2): thread 0 holds element [0, 4] in the new layout but not in the old; a cast only reorders each thread's own elements");
}

#[test]
fn local_permutation_of_a_reordered_fragment() {
    // The mma A fragment with each thread's pair members 4 slots apart (codes 16 bits apart
    // in a register of 4-bit codes) instead of adjacent.
    let fragment: RegisterLayout = "column_local(2,2).spatial(8,4).local(1,2)".parse().unwrap();
    let interleaved: RegisterLayout =
        "layout(shape=[16,16], modes=[[2,8],[2,4,2]], threads=[d0.1,d1.1], locals=[d1.2,d1.0,d0.0])"
            .parse()
            .unwrap();
    // Element l of the fragment (pair q = l / 2, member e = l % 2) sits at 4e + q.
    assert_eq!(
        anybit_vm::local_permutation(&interleaved, &fragment),
        Ok(vec![0, 4, 1, 5, 2, 6, 3, 7])
    );
}

#[test]
fn dot_dtypes() {
    assert_snapshot!(body_error(
        "    %a = alloc_register(i8, spatial(8,4).local(2,4), 0);\n    %b = alloc_register(i8, spatial(8,4).local(2,2), 0);\n    %c = alloc_register(f32, spatial(8,4).local(2,2), 0.0);\n    %c = dot(%a, %b, %c);\n"
    ), @"8:5: `dot`: the inputs and the accumulator must be both floats or both integers (a is i8, b is i8, c is f32)");
}

#[test]
fn reduce_dim() {
    assert_snapshot!(body_error(&format!(
        "    %x = alloc_register(f32, {WARP}, 0.0);\n    %s = reduce_sum(%x, 2);\n"
    )), @"6:5: `reduce_sum`: dimension 2 is out of range for rank 2");
}

#[test]
fn double_free() {
    assert_snapshot!(body_error(
        "    %s = alloc_shared(f16, row_major(32));\n    free_shared(%s);\n    free_shared(%s);\n"
    ), @"7:5: `%s` is freed twice");
}

#[test]
fn use_after_free() {
    assert_snapshot!(body_error(&format!(
        "    %s = alloc_shared(f16, row_major(8,4));\n    free_shared(%s);\n    %x = load_shared(%s[0, 0], {WARP});\n"
    )), @"7:5: `%s` is used after `free_shared`");
}

#[test]
fn free_in_other_block() {
    assert_snapshot!(body_error(
        "    %s = alloc_shared(f16, row_major(32));\n    if n > 0 {\n        free_shared(%s);\n    }\n"
    ), @"7:9: `%s` must be freed in the block that allocates it");
}

#[test]
fn shared_tile_out_of_bounds() {
    assert_snapshot!(body_error(&format!(
        "    %s = alloc_shared(f16, row_major(16,4));\n    %x = load_shared(%s[12, 0], {WARP});\n"
    )), @"6:5: `load_shared`: the tile [8, 4] at offsets [12, 0] does not fit in `%s` of shape [16, 4]");
}

#[test]
fn non_positive_step() {
    assert_snapshot!(body_error("    for i in 0..n step 0 {\n    }\n"), @"5:5: the loop step is 0; it must be positive");
}

#[test]
fn unroll_zero() {
    assert_snapshot!(body_error("    for i in 0..n unroll 0 {\n    }\n"), @"5:5: `unroll 0` is not a factor; write `unroll` or a factor of at least 1");
}

/// Every kind above has a test: keep this list in step with `VerifyErrorKind`.
#[test]
fn every_kind_has_a_test() {
    let source = include_str!("verify_errors.rs");
    let kinds = include_str!("../src/verify.rs");
    let start = kinds.find("pub enum VerifyErrorKind").expect("enum");
    let end = kinds[start..].find("\n}\n").expect("end of enum") + start;
    let mut missing = Vec::new();
    for line in kinds[start..end].lines() {
        let line = line.trim();
        let Some(first) = line.chars().next() else {
            continue;
        };
        if !first.is_ascii_uppercase() {
            continue;
        }
        let variant: String = line.chars().take_while(|c| c.is_alphanumeric()).collect();
        let mut test_name = String::new();
        for (index, c) in variant.replace("DType", "Dtype").chars().enumerate() {
            if c.is_ascii_uppercase() && index > 0 {
                test_name.push('_');
            }
            test_name.push(c.to_ascii_lowercase());
        }
        if !source.contains(&format!("fn {test_name}()")) {
            missing.push(variant);
        }
    }
    assert!(missing.is_empty(), "no test for {missing:?}");
}

#[test]
fn builder_errors_point_nowhere_but_say_what() {
    let mut b = ProgramBuilder::new("p");
    b.threads(32);
    let x = b.alloc_register(
        "x",
        DType::F16,
        RegisterLayout::spatial(&[8, 4]),
        Some(0.0.into()),
    );
    b.exp("x", &x);
    b.cast("x", &x, DType::F32);
    let error = verify(&b.finish()).expect_err("overwrite with another type");
    assert!(error.span.is_unknown());
    assert_snapshot!(error.to_string(), @"0:0: `%x` has type register<f16, spatial(8,4)>, and `cast` gives register<f32, spatial(8,4)>; an overwrite must keep the type");
}

// Cases that once were checked again by the interpreter (they now rely on these errors).

#[test]
fn rank_mismatch_of_operands_layouts_and_strides() {
    assert_snapshot!(body_error(
        "    %x = alloc_register(f16, spatial(32), 0.0);\n    %y = alloc_register(f16, spatial(32,1), 0.0);\n    %z = add(%x, %y);\n"
    ), @"7:5: `add`: `%y` has rank 2, expected 1");
    assert_snapshot!(body_error(&format!(
        "    %s = alloc_shared(f16, row_major(32));\n    %x = load_shared(%s[0], {WARP});\n"
    )), @"6:5: `load_shared`: the layout has rank 2, expected 1");
    assert_snapshot!(body_error("    %g = view_global(a, [n], [1, 1]);\n"), @"5:5: `view_global`: the list of strides has rank 2, expected 1");
}

#[test]
fn dtype_mismatch_of_a_condition() {
    assert_snapshot!(body_error(
        "    %c = alloc_register(u4, spatial(32), 1);\n    %x = where(%c, 1, 2);\n"
    ), @"6:5: `where`: the condition `%c` is u4, expected u1");
}

#[test]
fn no_tensor_operand_besides_the_condition() {
    assert_snapshot!(body_error(
        "    %c = alloc_register(u1, spatial(32), 1);\n    %x = where(%c, 1, n);\n"
    ), @"6:5: `where` needs a tensor operand besides the condition");
}

#[test]
fn scalar_redefined_by_let() {
    assert_snapshot!(body_error("    let x = 1;\n    let x = 2;\n"), @"6:5: scalar `x` is already defined here (scalars cannot be shadowed)");
    assert_snapshot!(body_error("    let n = 1;\n"), @"5:5: scalar `n` is already defined here (scalars cannot be shadowed)");
}

#[test]
fn undefined_pointer() {
    assert_snapshot!(body_error("    %g = view_global(p, [n], [1]);\n"), @"5:5: `p` is not a defined scalar");
}

#[test]
fn wrong_space_for_print() {
    assert_snapshot!(body_error("    %g = view_global(a, [n], [1]);\n    print(%g);\n"), @"6:5: `print` needs a register or shared tensor, and `%g` is a global tensor");
}
