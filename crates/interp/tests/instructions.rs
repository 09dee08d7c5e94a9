//! Small hand-checked programs, one or a few per instruction.

mod common;

use anybit_dtype::{DType, MiniFloat};
use anybit_interp::{pack_codes, pack_values, unpack_codes, unpack_values, Argument, Arguments};
use common::{parse, print_output, run_ok, Rng};

const F16: DType = DType::F16;
const F32: DType = DType::F32;

/// Runs `text` with the given arguments (by name) and returns them with the print output.
fn run_with(text: &str, values: Vec<(&str, Argument)>) -> (Arguments, String) {
    let program = parse(text);
    let mut args = Arguments::new(&program);
    for (name, value) in values {
        args.set(name, value).expect("argument");
    }
    let out = run_ok(&program, &mut args);
    (args, out)
}

fn buffer(bytes: Vec<u8>) -> Argument {
    Argument::Buffer(bytes)
}

#[test]
fn alloc_register_converts_literals_and_print_shows_logical_values() {
    let out = print_output(
        "program p() grid(1) threads(4) {
            %a = alloc_register(f16, spatial(2,2), 3);
            print(%a);
            %b = alloc_register(f32, local(1,2).spatial(2,2), -0.1);
            print(%b);
            %c = alloc_register(i4, spatial(4), -8);
            print(%c);
            %d = alloc_register(f4e2m1, replicate(4).local(3), 2.7);
            print(%d);
            %e = alloc_register(f16, spatial(4), inf);
            print(%e);
        }",
    );
    let f = F32.round(-0.1) as f32 as f64;
    let expected = format!(
        "%a in block (0,0,0): register<f16, spatial(2,2)>\n[[3, 3],\n [3, 3]]\n\
         %b in block (0,0,0): register<f32, local(1,2).spatial(2,2)>\n\
         [[{f}, {f}, {f}, {f}],\n [{f}, {f}, {f}, {f}]]\n\
         %c in block (0,0,0): register<i4, spatial(4)>\n[-8, -8, -8, -8]\n\
         %d in block (0,0,0): register<f4e2m1, local(3).replicate(4)>\n[3, 3, 3]\n\
         %e in block (0,0,0): register<f16, spatial(4)>\n[inf, inf, inf, inf]\n"
    );
    assert_eq!(out, expected);
}

#[test]
fn unspecified_contents_are_all_ones() {
    let out = print_output(
        "program p() grid(1) threads(2) {
            %a = alloc_register(f16, spatial(2));
            print(%a);
            %b = alloc_register(u3, spatial(2));
            print(%b);
            %s = alloc_shared(i8, row_major(2));
            print(%s);
        }",
    );
    assert_eq!(
        out,
        "%a in block (0,0,0): register<f16, spatial(2)>\n[NaN, NaN]\n\
         %b in block (0,0,0): register<u3, spatial(2)>\n[7, 7]\n\
         %s in block (0,0,0): shared<i8, row_major(2)>\n[-1, -1]\n"
    );
}

/// Every scalar operation, `let`, `for` with a step, `if`/`else`, and an overwrite inside a
/// loop seen after it.
#[test]
fn scalar_expressions_and_statements() {
    let exprs = [
        "-7 / 2",
        "-7 % 2",
        "7 % -2",
        "ceil_div(7, 2)",
        "ceil_div(-7, 2)",
        "ceil_div(8, 4)",
        "min(3, -4) * max(2, 5)",
        "n * 3 - 1",
        "block.x + 10 * block.y",
    ];
    let mut text = String::from(
        "program p(out: ptr<i32>, n: i32) grid(2, 3) threads(1) {
            %g = view_global(out, [100, 6], [6, 1]);
            let b = block.x + 2 * block.y;
            %zero = alloc_register(i32, local(1,1), 0);\n",
    );
    for (i, e) in exprs.iter().enumerate() {
        text += &format!("%v{i} = add(%zero, {e});\nstore_global(%g[{i}, b], %v{i});\n");
    }
    text += "
            %acc = alloc_register(i32, local(1,1), 0);
            for i in 1..11 step 3 {
                let sq = i * i;
                %acc = add(%acc, sq);
            }
            for i in 5..5 { %acc = add(%acc, 1000); }
            store_global(%g[20, b], %acc);
            if n > 3 && !(n == 4) || false {
                %acc = add(%acc, 1);
            } else {
                %acc = sub(%acc, 1);
            }
            store_global(%g[21, b], %acc);
        }";
    let (args, _) = run_with(
        &text,
        vec![("out", buffer(vec![0; 4 * 600])), ("n", Argument::Int(5))],
    );
    let out = unpack_codes(DType::Signed(32), args.buffer("out").expect("out"), 600);
    let value = |row: usize, b: usize| out[row * 6 + b] as i32;
    for b in 0..6 {
        let (x, y) = ((b % 2) as i32, (b / 2) as i32);
        let expected = [-3, -1, 1, 4, -3, 2, -20, 14, x + 10 * y];
        for (i, &e) in expected.iter().enumerate() {
            assert_eq!(value(i, b), e, "{} in block ({x},{y})", exprs[i]);
        }
        // 1² + 4² + 7² + 10² = 166.
        assert_eq!(value(20, b), 166);
        assert_eq!(value(21, b), 167);
    }
}

#[test]
fn load_and_store_global_mask_out_of_bounds_elements() {
    // A view of 5 elements of a 10-element buffer: a tile of 8 at offset 2 reads elements 2..5
    // and zeros; a store at offset -2 writes only elements 0..5.
    let input: Vec<f32> = (1..=10).map(|v| v as f32).collect();
    let (args, _) = run_with(
        "program p(x: ptr<f16>, y: ptr<f16>) grid(1) threads(4) {
            %gx = view_global(x, [5], [1]);
            %gy = view_global(y, [5], [1]);
            %t = load_global(%gx[2], spatial(4).local(2));
            store_global(%gy[-2], %t);
        }",
        vec![
            ("x", buffer(pack_values(F16, &input))),
            ("y", buffer(pack_values(F16, &[9.0; 10]))),
        ],
    );
    let y = unpack_values(F16, args.buffer("y").expect("y"), 10);
    // y[c - 2] = t[c] for c in 2..7 (in bounds of y's view: 0..5); t = [3, 4, 5, 0, 0, ...].
    assert_eq!(y, [5.0, 0.0, 0.0, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0, 9.0]);
}

#[test]
fn transposed_strided_views_and_sub_byte_stores_keep_neighbours() {
    // x is a 3×5 u4 matrix, row-major; load it transposed ([5, 3] with strides [1, 5]) and
    // store the tile into a 4×4 u4 window of y (row stride 6) at (1, 1): the window's elements
    // outside the 5×3 tile's bounds and all other nibbles keep their values.
    let mut rng = Rng::new(11);
    let u4 = DType::Unsigned(4);
    let x: Vec<u32> = (0..15).map(|_| rng.code(u4)).collect();
    let y0: Vec<u32> = (0..36).map(|_| rng.code(u4)).collect();
    let (args, _) = run_with(
        "program p(x: ptr<u4>, y: ptr<u4>) grid(1) threads(8) {
            %gx = view_global(x, [5, 3], [1, 5]);
            %gy = view_global(y, [6, 4], [6, 1]);
            %t = load_global(%gx[0, 0], spatial(4,2).local(2,2));
            store_global(%gy[1, 1], %t);
        }",
        vec![
            ("x", buffer(pack_codes(u4, &x))),
            ("y", buffer(pack_codes(u4, &y0))),
        ],
    );
    let y = unpack_codes(u4, args.buffer("y").expect("y"), 36);
    for r in 0..6 {
        for c in 0..6 {
            // Tile element (i, j) = x^T[i, j] = x[j, i] for i < 5, j < 3, else 0 (out of bounds).
            let expected = if (1..6).contains(&r) && (1..4).contains(&c) {
                let (i, j) = (r - 1, c - 1);
                if i < 5 && j < 3 {
                    x[j * 5 + i]
                } else {
                    0
                }
            } else {
                y0[r * 6 + c]
            };
            assert_eq!(y[r * 6 + c], expected, "y[{r}, {c}]");
        }
    }
}

#[test]
fn view_reinterprets_each_threads_bits() {
    let mut rng = Rng::new(5);
    let bytes: Vec<u8> = (0..16).map(|_| rng.next_u64() as u8).collect();
    // Two threads each hold 8 u4 (one 32-bit word); the view as u32 is that word.
    let (args, _) = run_with(
        "program p(x: ptr<u4>, y: ptr<u32>, z: ptr<u4>) grid(1) threads(2) {
            %gx = view_global(x, [16], [1]);
            %gy = view_global(y, [2], [1]);
            %q = load_global(%gx[0], spatial(2).local(8));
            %w = view(%q, u32, spatial(2));
            store_global(%gy[0], %w);
            %gz = view_global(z, [32], [1]);
            %b = view(%w, u8, spatial(2).local(4));
            %n = view(%b, u4, spatial(2).local(8));
            %gz2 = view_global(z, [8, 2], [1, 8]);
            %m = view(%n, u4, column_local(8,1).spatial(1,2));
            store_global(%gz2[0, 0], %m);
        }",
        vec![
            ("x", buffer(bytes[..8].to_vec())),
            ("y", buffer(vec![0; 8])),
            ("z", buffer(vec![0; 8])),
        ],
    );
    let y = args.buffer("y").expect("y");
    assert_eq!(y, &bytes[..8], "u32 words are the little-endian nibbles");
    // column_local(8,1).spatial(1,2) puts thread t's nibble l at (l, t) of an 8×2 tile; the
    // transposed view stores (l, t) at t·8 + l, which is where the nibble came from.
    let z = args.buffer("z").expect("z");
    assert_eq!(z, &bytes[..8]);

    // One thread holds 16 u8; viewed as 32 u4 the low nibble of byte i is element 2i.
    let (args, out) = run_with(
        "program p(x: ptr<u8>, y: ptr<u4>) grid(1) threads(1) {
            %gx = view_global(x, [16], [1]);
            %gy = view_global(y, [32], [1]);
            %b = load_global(%gx[0], local(16));
            %n = view(%b, u4, local(32));
            store_global(%gy[0], %n);
            %h = view(%b, f16, local(8));
            %f = cast(%h, f32);
            %back = view(%h, u8, local(16));
            %same = eq(%back, %b);
            print(%same);
        }",
        vec![("x", buffer(bytes.clone())), ("y", buffer(vec![0; 16]))],
    );
    assert_eq!(args.buffer("y").expect("y"), &bytes[..]);
    let ones = vec!["1"; 16].join(", ");
    assert_eq!(
        out,
        format!("%same in block (0,0,0): register<u1, local(16)>\n[{ones}]\n")
    );
}

#[test]
fn view_can_make_replicas_disagree_and_logical_values_are_the_first_owners() {
    // Each thread loads its own byte; viewed as one replicated element, thread 0 holds 5 and
    // thread 1 holds 9. The logical value (printed, stored) is thread 0's; elementwise
    // instructions work on each thread's own copy, which a view back to spatial(2) shows.
    let (args, out) = run_with(
        "program p(x: ptr<u8>, y: ptr<u8>, z: ptr<u8>) grid(1) threads(2) {
            %gx = view_global(x, [2], [1]);
            %gy = view_global(y, [2], [1]);
            %gz = view_global(z, [1], [1]);
            %a = load_global(%gx[0], spatial(2));
            %r = view(%a, u8, local(1).replicate(2));
            print(%r);
            %s = add(%r, 1);
            store_global(%gz[0], %s);
            %b = view(%s, u8, spatial(2));
            store_global(%gy[0], %b);
        }",
        vec![
            ("x", buffer(vec![5, 9])),
            ("y", buffer(vec![0, 0])),
            ("z", buffer(vec![0])),
        ],
    );
    assert!(out.ends_with("\n[5]\n"), "{out}");
    assert_eq!(args.buffer("y").expect("y"), &[6, 10]);
    assert_eq!(args.buffer("z").expect("z"), &[6]);
}

/// Casting every code of every small type to f32 and f16 gives the dtype crate's value
/// (rounded to f16 for f16).
#[test]
fn cast_from_every_small_code_matches_the_dtype_crate() {
    for dtype in DType::all_small() {
        let count = dtype.code_count() as usize;
        let codes: Vec<u32> = (0..count as u32).collect();
        let text = format!(
            "program p(x: ptr<{dtype}>, a: ptr<f32>, b: ptr<f16>) grid(1) threads({count}) {{
                %gx = view_global(x, [{count}], [1]);
                %ga = view_global(a, [{count}], [1]);
                %gb = view_global(b, [{count}], [1]);
                %q = load_global(%gx[0], spatial({count}));
                %f = cast(%q, f32);
                store_global(%ga[0], %f);
                %h = cast(%q, f16);
                store_global(%gb[0], %h);
            }}"
        );
        let (args, _) = run_with(
            &text,
            vec![
                ("x", buffer(pack_codes(dtype, &codes))),
                ("a", buffer(vec![0; 4 * count])),
                ("b", buffer(vec![0; 2 * count])),
            ],
        );
        let a = unpack_values(F32, args.buffer("a").expect("a"), count);
        let b = unpack_codes(F16, args.buffer("b").expect("b"), count);
        for code in 0..count {
            let exact = dtype.decode(code as u32);
            if exact.is_nan() {
                assert!(
                    a[code].is_nan() && F16.decode(b[code]).is_nan(),
                    "{dtype} {code}"
                );
                continue;
            }
            assert_eq!(
                a[code].to_bits(),
                exact.to_bits(),
                "{dtype} code {code} to f32"
            );
            assert_eq!(
                b[code],
                F16.encode(exact as f32),
                "{dtype} code {code} to f16"
            );
        }
    }
}

#[test]
fn casts_to_integers_truncate_saturate_and_wrap() {
    let values = [
        2.7f32,
        -2.7,
        100.0,
        -100.0,
        f32::NAN,
        f32::INFINITY,
        -0.5,
        7.99,
    ];
    let (args, _) = run_with(
        "program p(x: ptr<f32>, s: ptr<i4>, u: ptr<u4>, w: ptr<u4>, v: ptr<i4>) grid(1) threads(8) {
            %gx = view_global(x, [8], [1]);
            %x = load_global(%gx[0], spatial(8));
            %s = cast(%x, i4);
            %u = cast(%x, u4);
            %gs = view_global(s, [8], [1]);
            %gu = view_global(u, [8], [1]);
            store_global(%gs[0], %s);
            store_global(%gu[0], %u);
            %i8 = alloc_register(i8, spatial(8), -1);
            %w = cast(%i8, u4);
            %gw = view_global(w, [8], [1]);
            store_global(%gw[0], %w);
            %u8 = alloc_register(u8, spatial(8), 200);
            %v = cast(%u8, i4);
            %gv = view_global(v, [8], [1]);
            store_global(%gv[0], %v);
        }",
        vec![
            ("x", buffer(pack_values(F32, &values))),
            ("s", buffer(vec![0; 4])),
            ("u", buffer(vec![0; 4])),
            ("w", buffer(vec![0; 4])),
            ("v", buffer(vec![0; 4])),
        ],
    );
    let s = unpack_values(DType::Signed(4), args.buffer("s").expect("s"), 8);
    let u = unpack_values(DType::Unsigned(4), args.buffer("u").expect("u"), 8);
    assert_eq!(s, [2.0, -2.0, 7.0, -8.0, 0.0, 7.0, 0.0, 7.0]);
    assert_eq!(u, [2.0, 0.0, 15.0, 0.0, 0.0, 15.0, 0.0, 7.0]);
    assert_eq!(
        unpack_codes(DType::Unsigned(4), args.buffer("w").expect("w"), 8),
        [15; 8]
    );
    // 200 = 0b1100_1000: the low nibble 8 read as i4 is -8.
    assert_eq!(
        unpack_values(DType::Signed(4), args.buffer("v").expect("v"), 8),
        [-8.0; 8]
    );
}

#[test]
fn float_arithmetic_is_f32_then_encoded() {
    let mut rng = Rng::new(21);
    let n = 64;
    let a = rng.values(F16, n, 100.0);
    let b = rng.values(F16, n, 0.01);
    let (args, out) = run_with(
        "program p(a: ptr<f16>, b: ptr<f16>, y: ptr<f16>) grid(1) threads(16) {
            %ga = view_global(a, [64], [1]);
            %gb = view_global(b, [64], [1]);
            %gy = view_global(y, [512], [1]);
            %a = load_global(%ga[0], spatial(16).local(4));
            %b = load_global(%gb[0], spatial(16).local(4));
            %r0 = add(%a, %b);
            %r1 = sub(%a, %b);
            %r2 = mul(%a, %b);
            %r3 = div(%a, %b);
            %r4 = min(%a, %b);
            %r5 = max(%a, 0.5);
            %r6 = neg(%a);
            %r7 = abs(%a);
            store_global(%gy[0], %r0);
            store_global(%gy[64], %r1);
            store_global(%gy[128], %r2);
            store_global(%gy[192], %r3);
            store_global(%gy[256], %r4);
            store_global(%gy[320], %r5);
            store_global(%gy[384], %r6);
            store_global(%gy[448], %r7);
            %z = alloc_register(f32, spatial(16), -0.0);
            %zz = alloc_register(f32, spatial(16), 0.0);
            %m = min(%zz, %z);
            %nan = alloc_register(f32, spatial(16), nan);
            %k = max(%nan, 2);
            %e = exp(%k);
            %i = div(1.0, %z);
            print(%m);
            print(%e);
            print(%i);
        }",
        vec![
            ("a", buffer(pack_values(F16, &a))),
            ("b", buffer(pack_values(F16, &b))),
            ("y", buffer(vec![0; 8 * n * 2])),
        ],
    );
    let y = unpack_values(F16, args.buffer("y").expect("y"), 8 * n);
    let round = |v: f64| F16.round(v as f32);
    for i in 0..n {
        let (x, z) = (a[i] as f64, b[i] as f64);
        let expected = [
            round(x + z),
            round(x - z),
            round(x * z),
            round((x as f32 / z as f32) as f64),
            x.min(z),
            x.max(0.5),
            -x,
            x.abs(),
        ];
        for (row, &e) in expected.iter().enumerate() {
            assert_eq!(y[row * n + i], e, "row {row}, element {i}");
        }
    }
    let e2 = (2f64.exp() as f32) as f64;
    let expected = format!(
        "%m in block (0,0,0): register<f32, spatial(16)>\n[{}]\n\
         %e in block (0,0,0): register<f32, spatial(16)>\n[{}]\n\
         %i in block (0,0,0): register<f32, spatial(16)>\n[{}]\n",
        vec!["-0"; 16].join(", "),
        vec![e2.to_string(); 16].join(", "),
        vec!["-inf"; 16].join(", "),
    );
    assert_eq!(out, expected);
}

#[test]
fn small_float_arithmetic_rounds_and_saturates() {
    // f4e2m1 values: 0, 0.5, 1, 1.5, 2, 3, 4, 6. 1.5 + 1 = 2.5 ties to even (2); 6 · 3 = 18
    // saturates to 6; f8e4m3 saturates to 448 (it has no infinity), and so does f8e5m2 (to
    // 57344: the dtype crate saturates finite values); f16 overflows to infinity.
    let out = print_output(
        "program p() grid(1) threads(1) {
            %a = alloc_register(f4e2m1, local(2), 1.5);
            %b = add(%a, 1);
            print(%b);
            %c = alloc_register(f4e2m1, local(2), 6);
            %d = mul(%c, 3);
            print(%d);
            %e = alloc_register(f8e4m3, local(1), 400);
            %f = add(%e, %e);
            print(%f);
            %g = alloc_register(f8e5m2, local(1), 57344);
            %h = add(%g, %g);
            print(%h);
            %i = alloc_register(f16, local(1), 65504);
            %j = add(%i, %i);
            print(%j);
        }",
    );
    assert_eq!(
        out,
        "%b in block (0,0,0): register<f4e2m1, local(2)>\n[2, 2]\n\
         %d in block (0,0,0): register<f4e2m1, local(2)>\n[6, 6]\n\
         %f in block (0,0,0): register<f8e4m3, local(1)>\n[448]\n\
         %h in block (0,0,0): register<f8e5m2, local(1)>\n[57344]\n\
         %j in block (0,0,0): register<f16, local(1)>\n[inf]\n"
    );
}

#[test]
fn integer_arithmetic_wraps() {
    let out = print_output(
        "program p() grid(1) threads(2) {
            %a = alloc_register(i4, spatial(2), 7);
            %b = add(%a, 1);
            print(%b);
            %c = mul(%a, %a);
            print(%c);
            %d = alloc_register(i4, spatial(2), -8);
            %e = abs(%d);
            %f = neg(%d);
            %g = div(%d, -1);
            %h = div(%a, -2);
            print(%e);
            print(%f);
            print(%g);
            print(%h);
            %u = alloc_register(u3, spatial(2), 2);
            %v = neg(%u);
            %w = sub(%u, 3);
            %x = min(%v, %w);
            print(%v);
            print(%x);
            %big = alloc_register(u32, spatial(2), 4294967295);
            %sq = mul(%big, %big);
            print(%sq);
        }",
    );
    let line = |name: &str, dtype: &str, v: &str| {
        format!("%{name} in block (0,0,0): register<{dtype}, spatial(2)>\n[{v}, {v}]\n")
    };
    let expected = [
        line("b", "i4", "-8"),
        line("c", "i4", "1"),
        line("e", "i4", "-8"),
        line("f", "i4", "-8"),
        line("g", "i4", "-8"),
        line("h", "i4", "-3"),
        line("v", "u3", "6"),
        line("x", "u3", "6"),
        line("sq", "u32", "1"),
    ]
    .concat();
    assert_eq!(out, expected);
}

#[test]
fn comparisons_and_where() {
    let values = [1.0f32, -2.0, f32::NAN, 0.0, -0.0, 3.0, f32::INFINITY, 2.0];
    let (args, out) = run_with(
        "program p(x: ptr<f32>, y: ptr<f32>) grid(1) threads(8) {
            %gx = view_global(x, [8], [1]);
            %gy = view_global(y, [8], [1]);
            %x = load_global(%gx[0], spatial(8));
            %lt = lt(%x, 2);
            %le = le(%x, 2.0);
            %eq = eq(%x, 0);
            %ne = ne(%x, %x);
            %gt = gt(1, %x);
            print(%lt);
            print(%le);
            print(%eq);
            print(%ne);
            print(%gt);
            %y = where(%lt, %x, -1.5);
            store_global(%gy[0], %y);
            %n = alloc_register(i8, spatial(8), -3);
            %c = ge(%n, -3);
            %m = where(%c, 5, %n);
            print(%m);
        }",
        vec![
            ("x", buffer(pack_values(F32, &values))),
            ("y", buffer(vec![0; 32])),
        ],
    );
    let line = |name: &str, v: &str| {
        format!("%{name} in block (0,0,0): register<u1, spatial(8)>\n[{v}]\n")
    };
    let expected = [
        line("lt", "1, 1, 0, 1, 1, 0, 0, 0"),
        line("le", "1, 1, 0, 1, 1, 0, 0, 1"),
        line("eq", "0, 0, 0, 1, 1, 0, 0, 0"),
        line("ne", "0, 0, 1, 0, 0, 0, 0, 0"),
        line("gt", "0, 1, 0, 1, 1, 0, 0, 0"),
        "%m in block (0,0,0): register<i8, spatial(8)>\n[5, 5, 5, 5, 5, 5, 5, 5]\n".to_string(),
    ]
    .concat();
    assert_eq!(out, expected);
    let y = unpack_values(F32, args.buffer("y").expect("y"), 8);
    assert_eq!(y[..2], [1.0, -2.0]);
    assert_eq!(y[2], -1.5);
    assert_eq!(y[3].to_bits(), 0f64.to_bits());
    assert_eq!(y[4].to_bits(), (-0f64).to_bits());
    assert_eq!(y[5..], [-1.5, -1.5, -1.5]);
}

/// A row reduction broadcast back over the row (`x - max`, `e / sum`) and the other way round
/// (`max - x`, where the result layout comes from the second operand).
#[test]
fn broadcasting_after_reduce() {
    let mut rng = Rng::new(8);
    let x = rng.values(F32, 32, 4.0);
    let (args, _) = run_with(
        "program p(x: ptr<f32>, y: ptr<f32>, z: ptr<f32>, s: ptr<f32>) grid(1) threads(8) {
            %gx = view_global(x, [4, 8], [8, 1]);
            %gy = view_global(y, [4, 8], [8, 1]);
            %gz = view_global(z, [4, 8], [8, 1]);
            %gs = view_global(s, [4, 1], [1, 1]);
            %x = load_global(%gx[0, 0], spatial(4,2).local(1,4));
            %top = reduce_max(%x, 1);
            %y = sub(%x, %top);
            store_global(%gy[0, 0], %y);
            %z = sub(%top, %x);
            store_global(%gz[0, 0], %z);
            %col = reduce_sum(%x, 0);
            %all = reduce_sum(%col, 1);
            %t = reduce_sum(%x, 1);
            %u = add(%t, %all);
            store_global(%gs[0, 0], %u);
        }",
        vec![
            ("x", buffer(pack_values(F32, &x))),
            ("y", buffer(vec![0; 128])),
            ("z", buffer(vec![0; 128])),
            ("s", buffer(vec![0; 16])),
        ],
    );
    let y = unpack_values(F32, args.buffer("y").expect("y"), 32);
    let z = unpack_values(F32, args.buffer("z").expect("z"), 32);
    let s = unpack_values(F32, args.buffer("s").expect("s"), 4);
    // Column sums rounded to f32, then their sum rounded to f32.
    let columns: Vec<f32> = (0..8)
        .map(|c| (0..4).map(|r| x[r * 8 + c] as f64).sum::<f64>() as f32)
        .collect();
    let all = columns.iter().map(|&v| v as f64).sum::<f64>() as f32;
    for r in 0..4 {
        let row = &x[r * 8..(r + 1) * 8];
        let top = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        for c in 0..8 {
            assert_eq!(y[r * 8 + c], (row[c] - top) as f64);
            assert_eq!(z[r * 8 + c], (top - row[c]) as f64);
        }
        let sum = row.iter().map(|&v| v as f64).sum::<f64>() as f32;
        assert_eq!(s[r], (sum + all) as f64);
    }
}

#[test]
fn reductions_follow_the_nan_and_wrapping_rules() {
    let out = print_output(
        "program p() grid(1) threads(2) {
            %a = alloc_register(f32, spatial(2).local(2), 1.5);
            %nan = alloc_register(f32, spatial(2).local(2), nan);
            %c = alloc_register(u1, spatial(2).local(2), 0);
            %d = alloc_register(u1, local(1,2).spatial(2,1), 1);
            %mixed = where(%c, %a, %nan);
            %all_nan = reduce_max(%mixed, 0);
            print(%all_nan);
            %e = alloc_register(i8, spatial(2).local(2), 100);
            %s = reduce_sum(%e, 0);
            print(%s);
            %m = reduce_min(%e, 0);
            print(%m);
        }",
    );
    assert_eq!(
        out,
        "%all_nan in block (0,0,0): register<f32, local(1).replicate(2)>\n[NaN]\n\
         %s in block (0,0,0): register<i8, local(1).replicate(2)>\n[-112]\n\
         %m in block (0,0,0): register<i8, local(1).replicate(2)>\n[100]\n"
    );
}

/// `dot` on logical values: f16 inputs, f32 accumulator, replicated and column layouts;
/// integers wrap into the accumulator type.
#[test]
fn dot_products() {
    let mut rng = Rng::new(9);
    let (m, k, n) = (8, 16, 4);
    let a = rng.values(F16, m * k, 1.0);
    let b = rng.values(F16, k * n, 1.0);
    let c = rng.values(F32, m * n, 1.0);
    let (args, _) = run_with(
        "program p(a: ptr<f16>, b: ptr<f16>, c: ptr<f32>, d: ptr<f32>) grid(1) threads(8) {
            %ga = view_global(a, [8, 16], [16, 1]);
            %gb = view_global(b, [16, 4], [4, 1]);
            %gc = view_global(c, [8, 4], [4, 1]);
            %gd = view_global(d, [8, 4], [4, 1]);
            %a = load_global(%ga[0, 0], spatial(8,1).local(1,16));
            %b = load_global(%gb[0, 0], replicate(8).column_local(16,4));
            %c = load_global(%gc[0, 0], column_spatial(4,2).local(2,2));
            %c = dot(%a, %b, %c);
            store_global(%gd[0, 0], %c);
        }",
        vec![
            ("a", buffer(pack_values(F16, &a))),
            ("b", buffer(pack_values(F16, &b))),
            ("c", buffer(pack_values(F32, &c))),
            ("d", buffer(vec![0; m * n * 4])),
        ],
    );
    let d = unpack_values(F32, args.buffer("d").expect("d"), m * n);
    for i in 0..m {
        for j in 0..n {
            let mut sum = c[i * n + j] as f64;
            for l in 0..k {
                sum += a[i * k + l] as f64 * b[l * n + j] as f64;
            }
            assert_eq!(d[i * n + j], sum as f32 as f64, "d[{i}, {j}]");
        }
    }

    let out = print_output(
        "program p() grid(1) threads(2) {
            %a = alloc_register(i8, spatial(2,1).local(1,4), 100);
            %b = alloc_register(i8, local(4,2).replicate(2), -100);
            %c = alloc_register(i16, spatial(1,2).local(2,1), 5);
            %d = dot(%a, %b, %c);
            print(%d);
            %e = alloc_register(u4, spatial(1,2).local(2,1), 0);
            %f = alloc_register(u4, spatial(2,1).local(1,4), 3);
            %g = alloc_register(u4, local(4,2).replicate(2), 3);
            %h = dot(%f, %g, %e);
            print(%h);
        }",
    );
    // 5 + 4 · (100 · -100) = -39995, which wraps in i16 to 25541; 4 · 9 = 36 = 4 mod 16.
    assert_eq!(
        out,
        "%d in block (0,0,0): register<i16, local(2,1).spatial(1,2)>\n\
         [[25541, 25541],\n [25541, 25541]]\n\
         %h in block (0,0,0): register<u4, local(2,1).spatial(1,2)>\n[[4, 4],\n [4, 4]]\n"
    );
}

/// Through shared memory: store a tile, barrier, load it back transposed in another layout,
/// with a swizzled layout; stores of sub-byte elements keep their neighbours.
#[test]
fn shared_memory_round_trips_through_layouts() {
    let mut rng = Rng::new(12);
    let u2 = DType::Unsigned(2);
    let x: Vec<u32> = (0..64).map(|_| rng.code(u2)).collect();
    for shared in [
        "row_major(8,8)",
        "column_major(8,8)",
        "row_major(8,8).swizzle(bits=2,base=1,shift=3)",
        "strided([8:1],[2:64,4:8])",
    ] {
        let text = format!(
            "program p(x: ptr<u2>, y: ptr<u2>) grid(1) threads(16) {{
                %gx = view_global(x, [8, 8], [8, 1]);
                %gy = view_global(y, [8, 8], [1, 8]);
                %s = alloc_shared(u2, {shared});
                %t = load_global(%gx[0, 0], spatial(4,4).local(2,2));
                store_shared(%s[0, 0], %t);
                barrier();
                %u = load_shared(%s[0, 0], column_local(2,1).column_spatial(4,4).local(1,2));
                %half = load_shared(%s[4, 0], spatial(4,4).local(1,2));
                store_global(%gy[0, 0], %u);
                free_shared(%s);
            }}"
        );
        let (args, _) = run_with(
            &text,
            vec![
                ("x", buffer(pack_codes(u2, &x))),
                ("y", buffer(vec![0; 16])),
            ],
        );
        let y = unpack_codes(u2, args.buffer("y").expect("y"), 64);
        for r in 0..8 {
            for c in 0..8 {
                // gy is the transpose of a row-major 8×8 matrix.
                assert_eq!(y[c * 8 + r], x[r * 8 + c], "{shared}: ({r}, {c})");
            }
        }
    }
}

#[test]
fn copy_async_happens_at_the_wait_that_retires_its_group() {
    let input: Vec<f32> = (0..8).map(|v| v as f32 + 1.0).collect();
    let out = print_output_with(
        "program p(x: ptr<f32>) grid(1) threads(4) {
            %gx = view_global(x, [6], [1]);
            %a = alloc_shared(f32, row_major(4));
            %b = alloc_shared(f32, row_major(4));
            %c = alloc_shared(f32, row_major(4));
            copy_async(%a, %gx[0]);
            commit_group();
            copy_async(%b, %gx[4]);
            commit_group();
            // The copies read global memory when they complete: this store is seen by both.
            %v = alloc_register(f32, spatial(4), 10.0);
            store_global(%gx[1], %v);
            copy_async(%c, %gx[0]);
            wait_group(1);
            barrier();
            print(%a);
            print(%b);
            wait_group(0);
            barrier();
            print(%b);
            print(%c);
            commit_group();
            wait_group(0);
            print(%c);
        }",
        vec![("x", buffer(pack_values(F32, &input)))],
    );
    assert_eq!(
        out,
        "%a in block (0,0,0): shared<f32, row_major(4)>\n[1, 10, 10, 10]\n\
         %b in block (0,0,0): shared<f32, row_major(4)>\n[NaN, NaN, NaN, NaN]\n\
         %b in block (0,0,0): shared<f32, row_major(4)>\n[10, 6, 0, 0]\n\
         %c in block (0,0,0): shared<f32, row_major(4)>\n[NaN, NaN, NaN, NaN]\n\
         %c in block (0,0,0): shared<f32, row_major(4)>\n[1, 10, 10, 10]\n"
    );
}

fn print_output_with(text: &str, values: Vec<(&str, Argument)>) -> String {
    let text: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    run_with(&text, values).1
}

#[test]
fn blocks_run_over_a_three_dimensional_grid() {
    let (args, _) = run_with(
        "program p(y: ptr<i32>, n: i32 multiple_of 2) grid(n, 3, 2) threads(1) {
            %gy = view_global(y, [2, 3, n], [3 * n, n, 1]);
            %z = alloc_register(i32, local(1,1,1), 0);
            %v = add(%z, block.x + 10 * block.y + 100 * block.z);
            store_global(%gy[block.z, block.y, block.x], %v);
        }",
        vec![("y", buffer(vec![0; 4 * 24])), ("n", Argument::Int(4))],
    );
    let y = unpack_codes(DType::Signed(32), args.buffer("y").expect("y"), 24);
    for (i, &v) in y.iter().enumerate() {
        let (x, yy, z) = (i % 4, i / 4 % 3, i / 12);
        assert_eq!(v as usize, x + 10 * yy + 100 * z);
    }
}

#[test]
fn minifloat_names_in_programs() {
    // Sanity check that the small-float types used above parse as the dtype crate's.
    let dtype: DType = "f4e2m1".parse().expect("dtype");
    assert_eq!(
        dtype,
        DType::MiniFloat(MiniFloat::new(2, 1).expect("format"))
    );
}

#[test]
fn bf16_and_16_bit_float_conversions() {
    let values = [
        1.0f32 / 3.0,
        1e30,
        -7.0e-39,
        65520.0,
        f32::NAN,
        -0.0,
        3.0e38,
        1.0e-8,
    ];
    let (args, _) = run_with(
        "program p(x: ptr<f32>, b: ptr<bf16>, h: ptr<f16>, e: ptr<f8e4m3>) grid(1) threads(8) {
            %gx = view_global(x, [8], [1]);
            %x = load_global(%gx[0], spatial(8));
            %b = cast(%x, bf16);
            %h = cast(%x, f16);
            %e = cast(%x, f8e4m3);
            %gb = view_global(b, [8], [1]);
            %gh = view_global(h, [8], [1]);
            %ge = view_global(e, [8], [1]);
            store_global(%gb[0], %b);
            store_global(%gh[0], %h);
            store_global(%ge[0], %e);
        }",
        vec![
            ("x", buffer(pack_values(F32, &values))),
            ("b", buffer(vec![0; 16])),
            ("h", buffer(vec![0; 16])),
            ("e", buffer(vec![0; 8])),
        ],
    );
    for (dtype, name) in [
        (DType::Bf16, "b"),
        (F16, "h"),
        ("f8e4m3".parse().expect("dtype"), "e"),
    ] {
        let codes = unpack_codes(dtype, args.buffer(name).expect(name), 8);
        let expected: Vec<u32> = values.iter().map(|&v| dtype.encode(v)).collect();
        assert_eq!(codes, expected, "{dtype}");
    }
}

#[test]
fn loops_near_the_top_of_i32_stop_without_overflow() {
    let out = print_output(
        "program p() grid(1) threads(1) {
            %n = alloc_register(i32, local(1), 0);
            for i in 2147483640..2147483647 step 5 {
                %n = add(%n, 1);
            }
            print(%n);
        }",
    );
    assert_eq!(out, "%n in block (0,0,0): register<i32, local(1)>\n[2]\n");
}

#[test]
fn view_slices_take_bits_from_an_offset() {
    // One thread holds 4 bytes; the slice from bit 12 as three u4 is nibbles 3, 4, 5.
    let bytes = vec![0x21u8, 0x43, 0x65, 0x87];
    let (_, out) = run_with(
        "program p(x: ptr<u8>) grid(1) threads(1) {
            %gx = view_global(x, [4], [1]);
            %b = load_global(%gx[0], local(4));
            %n = view(%b, u4, local(3), 12);
            print(%n);
            %h = view(%b, u8, local(2), 16);
            print(%h);
        }",
        vec![("x", buffer(bytes))],
    );
    assert_eq!(
        out,
        "%n in block (0,0,0): register<u4, local(3)>\n[4, 5, 6]\n\
         %h in block (0,0,0): register<u8, local(2)>\n[101, 135]\n"
    );
}

#[test]
fn cast_to_another_local_order_keeps_logical_values() {
    // Each of 32 threads holds a 16x16 A fragment's 8 codes with pair members 4 slots apart;
    // the cast puts them in fragment order. Stored through both layouts, the tiles agree.
    let mut rng = Rng::new(9);
    let codes: Vec<u32> = (0..256).map(|_| (rng.next_u64() % 16) as u32).collect();
    let (args, _) = run_with(
        "program p(x: ptr<u4>, y: ptr<f16>, z: ptr<f16>) grid(1) threads(32) {
            %gx = view_global(x, [16, 16], [16, 1]);
            %q = load_global(%gx[0, 0], layout(shape=[16,16], modes=[[2,8],[2,4,2]], threads=[d0.1,d1.1], locals=[d1.2,d1.0,d0.0]));
            %a = cast(%q, f16, column_local(2,2).spatial(8,4).local(1,2));
            %gy = view_global(y, [16, 16], [16, 1]);
            store_global(%gy[0, 0], %a);
            %b = cast(%q, f16);
            %gz = view_global(z, [16, 16], [16, 1]);
            store_global(%gz[0, 0], %b);
        }",
        vec![
            ("x", buffer(pack_codes(DType::Unsigned(4), &codes))),
            ("y", buffer(vec![0; 512])),
            ("z", buffer(vec![0; 512])),
        ],
    );
    let expected: Vec<f64> = codes.iter().map(|&c| c as f64).collect();
    assert_eq!(unpack_values(F16, args.buffer("y").unwrap(), 256), expected);
    assert_eq!(unpack_values(F16, args.buffer("z").unwrap(), 256), expected);
}

#[test]
fn cast_planes_of_every_code_matches_the_dtype_crate() {
    // Every code of every integer and small float type of 2 to 8 bits, split into two planes
    // at every place (low bits in the first plane) and, from 3 bits, into three planes (1 + 1
    // + the rest).
    for bits in 2..=8u8 {
        let count = 1usize << bits;
        let mut splits: Vec<Vec<u8>> = (1..bits).map(|low| vec![low, bits - low]).collect();
        if bits >= 3 {
            splits.push(vec![1, 1, bits - 2]);
        }
        let code_types = DType::all_small()
            .into_iter()
            .filter(|t| t.bits() == u32::from(bits) && !matches!(t, DType::F16 | DType::Bf16));
        for code_type in code_types {
            for widths in &splits {
                let codes: Vec<u32> = (0..count as u32).collect();
                let params: Vec<String> = (0..widths.len())
                    .map(|i| format!("p{i}: ptr<u{}>", widths[i]))
                    .collect();
                let mut body = String::new();
                let mut names = Vec::new();
                for i in 0..widths.len() {
                    body.push_str(&format!(
                        "%g{i} = view_global(p{i}, [{count}], [1]);\n%q{i} = load_global(%g{i}[0], spatial({count}));\n"
                    ));
                    names.push(format!("%q{i}"));
                }
                let text = format!(
                    "program p({}, a: ptr<f32>, b: ptr<f16>) grid(1) threads({count}) {{
                        {body}
                        %ga = view_global(a, [{count}], [1]);
                        %gb = view_global(b, [{count}], [1]);
                        %f = cast_planes({planes}, {code_type}, f32);
                        store_global(%ga[0], %f);
                        %h = cast_planes({planes}, {code_type}, f16);
                        store_global(%gb[0], %h);
                    }}",
                    params.join(", "),
                    planes = names.join(", "),
                );
                let mut values = vec![
                    ("a", buffer(vec![0; 4 * count])),
                    ("b", buffer(vec![0; 2 * count])),
                ];
                let mut shift = 0;
                let plane_names = ["p0", "p1", "p2"];
                for (i, &width) in widths.iter().enumerate() {
                    let plane: Vec<u32> = codes
                        .iter()
                        .map(|code| (code >> shift) & ((1 << width) - 1))
                        .collect();
                    values.push((
                        plane_names[i],
                        buffer(pack_codes(DType::Unsigned(width), &plane)),
                    ));
                    shift += width;
                }
                let (args, _) = run_with(&text, values);
                let a = unpack_values(F32, args.buffer("a").expect("a"), count);
                let b = unpack_values(F16, args.buffer("b").expect("b"), count);
                for &code in &codes {
                    let exact = code_type.decode(code);
                    // f16 holds every integer code exactly and rounds the widest floats.
                    let half = F16.decode(F16.encode(exact as f32));
                    let at = code as usize;
                    let same = |got: f64, want: f64| got == want || got.is_nan() && want.is_nan();
                    assert!(
                        same(a[at], exact),
                        "{code_type} from {widths:?} code {code} to f32: {} against {exact}",
                        a[at]
                    );
                    assert!(
                        same(b[at], half),
                        "{code_type} from {widths:?} code {code} to f16: {} against {half}",
                        b[at]
                    );
                }
            }
        }
    }
}

#[test]
fn cast_planes_reads_each_plane_in_its_own_local_order() {
    // One thread holds a 2x2 tile. Plane 0 (u1) is in row-major order, plane 1 (u2) in
    // column-major order; by coordinate (row-major) they hold 1,0,1,1 and 3,2,0,1, so the i3
    // codes are 1|6, 0|4, 1|0, 1|2 = 7, 4, 1, 3, that is -1, -4, 1, 3. Viewed as the thread's
    // registers, the result is in plane 0's order without a layout and column-major with one.
    let (args, out) = run_with(
        "program p(x: ptr<u1>, y: ptr<u2>, z: ptr<f32>) grid(1) threads(1) {
            %gx = view_global(x, [2, 2], [2, 1]);
            %gy = view_global(y, [2, 2], [2, 1]);
            %p0 = load_global(%gx[0, 0], local(2,2));
            %p1 = load_global(%gy[0, 0], column_local(2,2));
            %r = cast_planes(%p0, %p1, i3, i8);
            %rv = view(%r, i8, local(4));
            print(%rv);
            %c = cast_planes(%p0, %p1, i3, i8, column_local(2,2));
            %cv = view(%c, i8, local(4));
            print(%cv);
            %f = cast_planes(%p1, %p0, u3, f32, column_local(2,2));
            %gz = view_global(z, [2, 2], [2, 1]);
            store_global(%gz[0, 0], %f);
        }",
        vec![
            ("x", buffer(pack_codes(DType::Unsigned(1), &[1, 0, 1, 1]))),
            ("y", buffer(pack_codes(DType::Unsigned(2), &[3, 2, 0, 1]))),
            ("z", buffer(vec![0; 16])),
        ],
    );
    assert_eq!(
        out,
        "%rv in block (0,0,0): register<i8, local(4)>\n[-1, -4, 1, 3]\n\
         %cv in block (0,0,0): register<i8, local(4)>\n[-1, 1, -4, 3]\n"
    );
    // The other way round, the u2 plane low: 3|4, 2|0, 0|4, 1|4 = 7, 2, 4, 5.
    assert_eq!(
        unpack_values(F32, args.buffer("z").expect("z"), 4),
        [7.0, 2.0, 4.0, 5.0]
    );
}

#[test]
fn batched_dot_multiplies_each_batch_on_its_own() {
    // Two batches of [2, 3] x [3, 2] + c, one thread per batch.
    let a: Vec<f32> = vec![1., 2., 3., 4., 5., 6., -1., 0., 2., 0.5, 1., 1.];
    let b: Vec<f32> = vec![1., 0., 0., 1., 1., 1., 2., 1., 0., 3., 1., 1.];
    let (args, _) = run_with(
        "program p(a: ptr<f32>, b: ptr<f32>, y: ptr<f32>) grid(1) threads(2) {
            %ga = view_global(a, [2, 2, 3], [6, 3, 1]);
            %gb = view_global(b, [2, 3, 2], [6, 2, 1]);
            %gy = view_global(y, [2, 2, 2], [4, 2, 1]);
            %x = load_global(%ga[0, 0, 0], spatial(2,1,1).local(1,2,3));
            %w = load_global(%gb[0, 0, 0], spatial(2,1,1).local(1,3,2));
            %c = alloc_register(f32, spatial(2,1,1).local(1,2,2), 0.5);
            %c = dot(%x, %w, %c);
            store_global(%gy[0, 0, 0], %c);
        }",
        vec![
            ("a", buffer(pack_values(F32, &a))),
            ("b", buffer(pack_values(F32, &b))),
            ("y", buffer(vec![0; 32])),
        ],
    );
    let mut expected = Vec::new();
    for p in 0..2 {
        for i in 0..2 {
            for j in 0..2 {
                let sum: f32 = (0..3)
                    .map(|k| a[p * 6 + i * 3 + k] * b[p * 6 + k * 2 + j])
                    .sum();
                expected.push((sum + 0.5) as f64);
            }
        }
    }
    assert_eq!(unpack_values(F32, args.buffer("y").unwrap(), 8), expected);
}
