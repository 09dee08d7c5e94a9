//! Runs generated kernels on a GPU and compares them with host references. Skipped (passes
//! with a note) where no CUDA driver is present, as in CI.

use std::sync::Arc;

use anybit_cuda::codegen::{cast_test_program, reference_cast};
use anybit_cuda::{compile, generate, KernelParamKind, Target};
use anybit_dtype::{pack, unpack, DType};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use half::f16;

enum Arg {
    Buf(Vec<u8>),
    Int(i32),
}

struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    target: Target,
}

fn gpu() -> Option<Gpu> {
    // SAFETY: only checks whether the library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        eprintln!("no CUDA driver: GPU tests skipped");
        return None;
    }
    let ctx = CudaContext::new(0).ok()?;
    let (major, minor) = ctx.compute_capability().ok()?;
    let target = Target::for_compute_capability(major, minor)?;
    let stream = ctx.default_stream();
    Some(Gpu {
        ctx,
        stream,
        target,
    })
}

/// Runs `program` with `args` (one per parameter) and returns every buffer afterwards.
fn run(gpu: &Gpu, program: &anybit_vm::Program, args: Vec<Arg>) -> Vec<Vec<u8>> {
    let verified = anybit_vm::verify(program).unwrap_or_else(|e| panic!("{e}"));
    let kernel = generate(&verified, gpu.target).unwrap_or_else(|e| panic!("{e}"));
    let module =
        compile(&kernel.source, &kernel.name, gpu.target).unwrap_or_else(|e| panic!("{e}"));
    let module = gpu
        .ctx
        .load_module(cudarc::nvrtc::Ptx::from_binary(module.cubin))
        .unwrap();
    let function = module.load_function(&kernel.name).unwrap();
    assert_eq!(args.len(), kernel.params.len());
    let mut buffers: Vec<CudaSlice<u8>> = Vec::new();
    let mut lens = Vec::new();
    let mut ints = Vec::new();
    for (arg, param) in args.iter().zip(&kernel.params) {
        match (arg, &param.kind) {
            (Arg::Buf(bytes), KernelParamKind::Pointer(_)) => {
                let mut padded = bytes.clone();
                padded.resize(bytes.len() + 64, 0);
                buffers.push(gpu.stream.clone_htod(&padded).unwrap());
                lens.push(bytes.len());
            }
            (Arg::Int(v), KernelParamKind::Int { .. }) => ints.push(*v),
            _ => panic!("argument kind mismatch for {}", param.name),
        }
    }
    let grid = kernel.grid(&ints).unwrap();
    let mut launch = gpu.stream.launch_builder(&function);
    let (mut b, mut i) = (0, 0);
    for param in &kernel.params {
        match param.kind {
            KernelParamKind::Pointer(_) => {
                launch.arg(&buffers[b]);
                b += 1;
            }
            KernelParamKind::Int { .. } => {
                launch.arg(&ints[i]);
                i += 1;
            }
        }
    }
    let cfg = LaunchConfig {
        grid_dim: (grid[0], grid[1], grid[2]),
        block_dim: (kernel.threads, 1, 1),
        shared_mem_bytes: kernel.dynamic_shared_bytes as u32,
    };
    // SAFETY: the arguments match the kernel's parameters in kind and order; buffers are
    // padded past every element the program touches.
    unsafe { launch.launch(cfg) }.unwrap();
    gpu.stream.synchronize().unwrap();
    buffers
        .iter()
        .zip(lens)
        .map(|(buf, len)| {
            let mut v = gpu.stream.clone_dtoh(buf).unwrap();
            v.truncate(len);
            v
        })
        .collect()
}

fn parse(text: &str) -> anybit_vm::Program {
    anybit_vm::parse(text).unwrap_or_else(|e| panic!("{e}"))
}

fn example(file: &str) -> anybit_vm::Program {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file);
    // Run from the repository root when the build folder is elsewhere.
    let text = std::fs::read_to_string(&path)
        .or_else(|_| std::fs::read_to_string(std::path::Path::new("examples").join(file)))
        .unwrap();
    parse(&text)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| f16::from_f32(*x).to_bits().to_le_bytes())
        .collect()
}

fn f16_values(b: &[u8]) -> Vec<f32> {
    b.chunks(2)
        .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
        .collect()
}

fn same_code(dtype: DType, got: u32, want: u32) -> bool {
    got == want || (dtype.decode(got).is_nan() && dtype.decode(want).is_nan())
}

#[test]
fn gpu_runs_match_host_references() {
    let Some(gpu) = gpu() else {
        return;
    };
    let mut failures = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        if ok {
            eprintln!("ok: {name}");
        } else {
            eprintln!("FAILED: {name}: {detail}");
            failures.push(name.to_string());
        }
    };

    // Casts of every code of every small type to f16 and bf16 (fast and generic paths).
    for dtype in DType::all_small() {
        let count = 1usize << dtype.bits();
        let codes: Vec<u32> = (0..count as u32).collect();
        let out = run(
            &gpu,
            &cast_test_program(dtype),
            vec![
                Arg::Buf(pack(&codes, dtype.bits()).unwrap()),
                Arg::Buf(vec![0; 2 * count]),
                Arg::Buf(vec![0; 2 * count]),
                Arg::Int(count as i32),
            ],
        );
        for (to, bytes) in [(DType::F16, &out[1]), (DType::Bf16, &out[2])] {
            let bad: Vec<String> = codes
                .iter()
                .filter_map(|&c| {
                    let got = u16::from_le_bytes([bytes[2 * c as usize], bytes[2 * c as usize + 1]])
                        as u32;
                    let want = reference_cast(dtype, to, c);
                    (!same_code(to, got, want))
                        .then(|| format!("{c:#x}: {got:#06x} != {want:#06x}"))
                })
                .take(4)
                .collect();
            check(
                &format!("cast {dtype} -> {to}"),
                bad.is_empty(),
                bad.join(", "),
            );
        }
    }

    // vector_add with a partial last block.
    let mut rng = Rng(7);
    let n = 3000usize;
    let a: Vec<f32> = (0..n).map(|_| rng.unit() * 100.0).collect();
    let b: Vec<f32> = (0..n).map(|_| rng.unit() * 100.0).collect();
    let out = run(
        &gpu,
        &example("vector_add.anybit"),
        vec![
            Arg::Buf(f16_bytes(&a)),
            Arg::Buf(f16_bytes(&b)),
            Arg::Buf(vec![0; 2 * n]),
            Arg::Int(n as i32),
        ],
    );
    let c = f16_values(&out[2]);
    let ok = (0..n).all(|i| {
        let want = f16::from_f32(f16::from_f32(a[i]).to_f32() + f16::from_f32(b[i]).to_f32());
        f16::from_f32(c[i]) == want
    });
    check("vector_add", ok, String::new());

    // matmul_f16 with partial tiles.
    let (m, n, k) = (100usize, 72usize, 80usize);
    let a: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| rng.unit()).collect();
    let out = run(
        &gpu,
        &example("matmul_f16.anybit"),
        vec![
            Arg::Buf(f16_bytes(&a)),
            Arg::Buf(f16_bytes(&b)),
            Arg::Buf(vec![0; 2 * m * n]),
            Arg::Int(m as i32),
            Arg::Int(n as i32),
            Arg::Int(k as i32),
        ],
    );
    let c = f16_values(&out[2]);
    let (a16, b16) = (f16_values(&f16_bytes(&a)), f16_values(&f16_bytes(&b)));
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k)
                .map(|x| a16[i * k + x] as f64 * b16[x * n + j] as f64)
                .sum();
            worst = worst.max((c[i * n + j] as f64 - want).abs());
        }
    }
    check("matmul_f16", worst < 0.02, format!("max error {worst}"));

    // softmax over rows of 1024.
    let rows = 6usize;
    let x: Vec<f32> = (0..rows * 1024).map(|_| rng.unit() * 8.0).collect();
    let out = run(
        &gpu,
        &example("softmax.anybit"),
        vec![
            Arg::Buf(f16_bytes(&x)),
            Arg::Buf(vec![0; 2 * rows * 1024]),
            Arg::Int(rows as i32),
        ],
    );
    let y = f16_values(&out[1]);
    let x16 = f16_values(&f16_bytes(&x));
    let mut worst = 0f64;
    for r in 0..rows {
        let row = &x16[r * 1024..(r + 1) * 1024];
        let top = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let total: f64 = row.iter().map(|v| (*v as f64 - top).exp()).sum();
        for (i, v) in row.iter().enumerate() {
            let want = (*v as f64 - top).exp() / total;
            worst = worst.max((y[r * 1024 + i] as f64 - want).abs() / want.max(1e-3));
        }
    }
    check(
        "softmax_1024",
        worst < 0.01,
        format!("max relative error {worst}"),
    );

    // Quantized matmul for several weight types and both group sizes.
    for (name, group) in [
        ("u4", 128),
        ("u4", 32),
        ("i3", 32),
        ("u8", 128),
        ("f4e2m1", 32),
        ("f6e3m2", 128),
        ("f8e4m3", 32),
        ("u5", 32),
        ("f8e6m1", 32),
    ] {
        let dtype: DType = name.parse().unwrap();
        let program = anybit_vm::examples::quantized_matmul(dtype, group).unwrap();
        let (m, n, k) = (5usize, 80usize, 256usize);
        let groups = k / group;
        let x: Vec<f32> = (0..m * k).map(|_| rng.unit()).collect();
        let count = dtype.code_count();
        let finite = |c: u32| dtype.decode(c).is_finite();
        let code = |rng: &mut Rng| loop {
            let c = (rng.next() % count) as u32;
            if finite(c) {
                return c;
            }
        };
        let w: Vec<u32> = (0..n * k).map(|_| code(&mut rng)).collect();
        let z: Vec<u32> = (0..n * groups).map(|_| code(&mut rng)).collect();
        let s: Vec<f32> = (0..n * groups).map(|_| rng.unit() * 0.1).collect();
        let with_zeros = matches!(dtype, DType::Unsigned(_));
        let mut args = vec![
            Arg::Buf(f16_bytes(&x)),
            Arg::Buf(pack(&w, dtype.bits()).unwrap()),
            Arg::Buf(f16_bytes(&s)),
        ];
        if with_zeros {
            args.push(Arg::Buf(pack(&z, dtype.bits()).unwrap()));
        }
        args.extend([
            Arg::Buf(vec![0; 2 * m * n]),
            Arg::Int(m as i32),
            Arg::Int(n as i32),
            Arg::Int(k as i32),
        ]);
        let out = run(&gpu, &program, args);
        let y = f16_values(out.last().unwrap());
        let x16 = f16_values(&f16_bytes(&x));
        let s16 = f16_values(&f16_bytes(&s));
        let h = |v: f64| f16::from_f64(v).to_f64();
        let mut worst = 0f64;
        for i in 0..m {
            for j in 0..n {
                let mut want = 0f64;
                for kk in 0..k {
                    let g = kk / group;
                    let mut wv = h(dtype.decode(w[j * k + kk]));
                    if with_zeros {
                        wv = h(wv - h(dtype.decode(z[j * groups + g])));
                    }
                    wv = h(wv * s16[j * groups + g] as f64);
                    want += x16[i * k + kk] as f64 * wv;
                }
                let scale = 1.0 + want.abs();
                worst = worst.max((y[i * n + j] as f64 - want).abs() / scale);
            }
        }
        check(
            &format!("quantized_matmul {name} g{group}"),
            worst < 0.01,
            format!("max error {worst}"),
        );
    }

    // Sub-byte integer arithmetic, comparison, where, and concurrent 3-bit stores.
    let misc = parse(
        "program misc_u3(a: ptr<u3>, b: ptr<u3>, out: ptr<u3>, n: i32)
grid(ceil_div(n, 256))
threads(64)
{
    let base = block.x * 256;
    %ga = view_global(a, [n], [1]);
    %gb = view_global(b, [n], [1]);
    %go = view_global(out, [n], [1]);
    %x = load_global(%ga[base], spatial(64).local(4));
    %y = load_global(%gb[base], spatial(64).local(4));
    %s = add(%x, %y);
    %c = lt(%x, %y);
    %m = where(%c, %s, 7);
    store_global(%go[base], %m);
}",
    );
    let n = 1000usize;
    let a: Vec<u32> = (0..n).map(|_| (rng.next() % 8) as u32).collect();
    let b: Vec<u32> = (0..n).map(|_| (rng.next() % 8) as u32).collect();
    let out = run(
        &gpu,
        &misc,
        vec![
            Arg::Buf(pack(&a, 3).unwrap()),
            Arg::Buf(pack(&b, 3).unwrap()),
            Arg::Buf(vec![0xff; (3 * n).div_ceil(8)]),
            Arg::Int(n as i32),
        ],
    );
    let got = unpack(&out[2], 3, n).unwrap();
    let ok = (0..n).all(|i| got[i] == if a[i] < b[i] { (a[i] + b[i]) & 7 } else { 7 });
    check("u3 add/lt/where/store", ok, String::new());

    // f32 to small floats (the generic encoder) with 6-bit and 8-bit stores.
    let enc = parse(
        "program misc_encode(a: ptr<f32>, o6: ptr<f6e3m2>, o8: ptr<f8e4m3>, o5: ptr<i5>, n: i32)
grid(ceil_div(n, 128))
threads(32)
{
    let base = block.x * 128;
    %g = view_global(a, [n], [1]);
    %g6 = view_global(o6, [n], [1]);
    %g8 = view_global(o8, [n], [1]);
    %g5 = view_global(o5, [n], [1]);
    %x = load_global(%g[base], spatial(32).local(4));
    %y = cast(%x, f6e3m2);
    store_global(%g6[base], %y);
    %z = cast(%x, f8e4m3);
    store_global(%g8[base], %z);
    %w = cast(%x, i5);
    store_global(%g5[base], %w);
}",
    );
    let n = 4000usize;
    let mut xs: Vec<f32> = (0..n - 8)
        .map(|_| {
            let e = (rng.next() % 40) as i32 - 20;
            rng.unit() * 2f32.powi(e)
        })
        .collect();
    xs.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        1e-40,
        448.0,
        464.0,
    ]);
    let bytes: Vec<u8> = xs.iter().flat_map(|v| v.to_le_bytes()).collect();
    let out = run(
        &gpu,
        &enc,
        vec![
            Arg::Buf(bytes),
            Arg::Buf(vec![0; (6 * n).div_ceil(8)]),
            Arg::Buf(vec![0; n]),
            Arg::Buf(vec![0; (5 * n).div_ceil(8)]),
            Arg::Int(n as i32),
        ],
    );
    for (dtype, bytes) in [
        ("f6e3m2".parse::<DType>().unwrap(), &out[1]),
        ("f8e4m3".parse().unwrap(), &out[2]),
    ] {
        let got = unpack(bytes, dtype.bits(), n).unwrap();
        let bad: Vec<String> = (0..n)
            .filter(|&i| !same_code(dtype, got[i], dtype.encode(xs[i])))
            .take(4)
            .map(|i| format!("{:e}: {:#x} != {:#x}", xs[i], got[i], dtype.encode(xs[i])))
            .collect();
        check(
            &format!("encode f32 -> {dtype}"),
            bad.is_empty(),
            bad.join(", "),
        );
    }
    let got = unpack(&out[3], 5, n).unwrap();
    let bad: Vec<String> = (0..n)
        .filter(|&i| {
            let v = xs[i];
            let want = if v.is_nan() {
                0
            } else {
                (v.trunc().clamp(-16.0, 15.0) as i32 as u32) & 31
            };
            got[i] != want
        })
        .take(4)
        .map(|i| format!("{:e}: {:#x}", xs[i], got[i]))
        .collect();
    check("cast f32 -> i5", bad.is_empty(), bad.join(", "));

    // Generic reduction across warps and generic integer dot.
    let red = parse(
        "program misc_reduce(a: ptr<f32>, out: ptr<f32>, m: ptr<i32>)
grid(1)
threads(64)
{
    %g = view_global(a, [64, 8], [8, 1]);
    %x = load_global(%g[0, 0], spatial(64,1).local(1,8));
    %r = reduce_sum(%x, 0);
    %go = view_global(out, [1, 8], [8, 1]);
    store_global(%go[0, 0], %r);
    %i = cast(%x, i32);
    %q = reduce_max(%i, 0);
    %gm = view_global(m, [1, 8], [8, 1]);
    store_global(%gm[0, 0], %q);
}",
    );
    let a: Vec<f32> = (0..512).map(|_| rng.unit() * 50.0).collect();
    let out = run(
        &gpu,
        &red,
        vec![
            Arg::Buf(a.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Arg::Buf(vec![0; 32]),
            Arg::Buf(vec![0; 32]),
        ],
    );
    let sums: Vec<f32> = out[1]
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let maxes: Vec<i32> = out[2]
        .chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let ok = (0..8).all(|j| {
        let want: f64 = (0..64).map(|i| a[i * 8 + j] as f64).sum();
        let max = (0..64)
            .map(|i| a[i * 8 + j].trunc() as i32)
            .max()
            .unwrap_or(0);
        (sums[j] as f64 - want).abs() < 1e-3 && maxes[j] == max
    });
    check("reduce across warps", ok, format!("{sums:?} {maxes:?}"));

    let dot = parse(
        "program misc_dot(a: ptr<i4>, b: ptr<i4>, c: ptr<i32>)
grid(1)
threads(32)
{
    %ga = view_global(a, [8, 16], [16, 1]);
    %gb = view_global(b, [16, 8], [8, 1]);
    %gc = view_global(c, [8, 8], [8, 1]);
    %x = load_global(%ga[0, 0], spatial(8,4).local(1,4));
    %y = load_global(%gb[0, 0], spatial(4,8).local(4,1));
    %z = alloc_register(i32, spatial(8,4).local(1,2), 5);
    %z = dot(%x, %y, %z);
    store_global(%gc[0, 0], %z);
}",
    );
    let a: Vec<u32> = (0..128).map(|_| (rng.next() % 16) as u32).collect();
    let b: Vec<u32> = (0..128).map(|_| (rng.next() % 16) as u32).collect();
    let out = run(
        &gpu,
        &dot,
        vec![
            Arg::Buf(pack(&a, 4).unwrap()),
            Arg::Buf(pack(&b, 4).unwrap()),
            Arg::Buf(vec![0; 256]),
        ],
    );
    let c: Vec<i32> = out[2]
        .chunks(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let s4 = |v: u32| ((v << 28) as i32) >> 28;
    let ok = (0..8).all(|i| {
        (0..8).all(|j| {
            let want: i32 = 5
                + (0..16)
                    .map(|x| s4(a[i * 16 + x]) * s4(b[x * 8 + j]))
                    .sum::<i32>();
            c[i * 8 + j] == want
        })
    });
    check("generic i4 dot", ok, format!("{c:?}"));

    assert!(failures.is_empty(), "failed: {failures:?}");
}
