//! The fixed device-side helpers every generated kernel starts with.
//!
//! What this module promises: [`PRELUDE`] is C++ that NVRTC accepts for every target, defines
//! only `ab_`-prefixed helpers and the short integer typedefs (`u8`, `u16`, `u32`, `u64`,
//! `i32`, `i64`), and implements exactly the element semantics of `docs/vm.md`:
//! - `ab_get<N>`/`ab_set<N>`: element `l` of a thread's packed little-endian register stream;
//! - `ab_ld<N>`/`ab_st<N>`: element `e` of a packed memory stream; stores of sub-byte elements
//!   change only the element's bits (32-bit `atomicAnd`/`atomicOr` on the containing words);
//! - `ab_mf_dec`/`ab_mf_enc`: exact decoding and round-to-nearest-even, saturating encoding of
//!   small floats, bit for bit like `anybit_dtype::DType::{decode, encode}` (NaN decodes to
//!   the f32 `0x7fc00000`);
//! - `ab_f16_enc`/`ab_bf16_enc`: IEEE conversion with the NaN payloads of the `half` crate;
//! - `ab_fmin`/`ab_fmax`: NaN is ignored unless both are NaN, and `-0 < +0`.

/// The helpers (C++), placed before the kernel.
pub const PRELUDE: &str = r#"#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int i32;
typedef long long i64;

#define AB_INLINE __device__ __forceinline__

template <int N> struct ab_mask { static constexpr u32 value = N >= 32 ? 0xffffffffu : ((1u << (N & 31)) - 1u); };

AB_INLINE int ab_ceil_div(int a, int b) { return a / b + (a % b > 0 ? 1 : 0); }
AB_INLINE int ab_swizzle(int o, int bits, int base, int shift) { return o ^ (((o >> shift) & ((1 << bits) - 1)) << base); }
AB_INLINE bool ab_in(int c, int size) { return (unsigned)c < (unsigned)size; }

// Element l of a thread's packed register stream of N-bit elements.
template <int N> AB_INLINE u32 ab_get(const u32* r, int l) {
  const int bit = l * N, w = bit >> 5, s = bit & 31;
  u32 v = r[w] >> s;
  if (s + N > 32) v |= r[w + 1] << ((32 - s) & 31);
  return v & ab_mask<N>::value;
}
template <int N> AB_INLINE void ab_set(u32* r, int l, u32 v) {
  constexpr u32 m = ab_mask<N>::value;
  const int bit = l * N, w = bit >> 5, s = bit & 31;
  v &= m;
  r[w] = (r[w] & ~(m << s)) | (v << s);
  if (s + N > 32) r[w + 1] = (r[w + 1] & ~(m >> ((32 - s) & 31))) | (v >> ((32 - s) & 31));
}
// Elements l and l + 1 of an N-bit stream, in bits 0.. and 16.. of the result.
template <int N> AB_INLINE u32 ab_pair(const u32* r, int l) { return ab_get<N>(r, l) | (ab_get<N>(r, l + 1) << 16); }
// Element idx (a run-time value) of a stream of L elements, without indexing registers at run time.
template <int N, int L> AB_INLINE u32 ab_get_dyn(const u32* r, int idx) {
  u32 v = 0;
#pragma unroll
  for (int l = 0; l < L; ++l) if (l == idx) v = ab_get<N>(r, l);
  return v;
}

// Element e of the packed stream at p (global or shared memory).
template <int N> AB_INLINE u32 ab_ld(const u8* p, i64 e) {
  if constexpr (N == 8) return p[e];
  else if constexpr (N == 16) return ((const u16*)p)[e];
  else if constexpr (N == 32) return ((const u32*)p)[e];
  else {
    const i64 bit = e * N;
    const u8* q = p + (bit >> 3);
    const int s = (int)(bit & 7);
    u32 v = q[0];
    if (s + N > 8) v |= (u32)q[1] << 8;
    return (v >> s) & ab_mask<N>::value;
  }
}
// Stores element e; a sub-byte element changes only its own bits, even when other threads
// store its neighbours at the same time.
template <int N> AB_INLINE void ab_st(u8* p, i64 e, u32 v) {
  if constexpr (N == 8) p[e] = (u8)v;
  else if constexpr (N == 16) ((u16*)p)[e] = (u16)v;
  else if constexpr (N == 32) ((u32*)p)[e] = v;
  else {
    constexpr u32 m = ab_mask<N>::value;
    const u64 bit = (u64)p * 8 + (u64)(e * N);
    u32* w = (u32*)((bit >> 5) << 2);
    const int s = (int)(bit & 31);
    v &= m;
    atomicAnd(w, ~(m << s));
    atomicOr(w, v << s);
    if (s + N > 32) {
      atomicAnd(w + 1, ~(m >> (32 - s)));
      atomicOr(w + 1, v >> (32 - s));
    }
  }
}

// Integer values: signed codes sign-extended, unsigned codes as they are.
template <int N> AB_INLINE i32 ab_sext(u32 c) { return N >= 32 ? (i32)c : ((i32)(c << ((32 - N) & 31))) >> ((32 - N) & 31); }

// Float to integer: truncation toward zero, saturating, NaN to 0.
template <int N, bool SIGNED> AB_INLINE u32 ab_f2i(float f) {
  constexpr i64 lo = SIGNED ? -(1ll << (N - 1)) : 0;
  constexpr i64 hi = SIGNED ? (1ll << (N - 1)) - 1 : (1ll << N) - 1;
  if (f != f) return 0;
  const float t = truncf(f);
  if (t <= (float)lo) return (u32)lo & ab_mask<N>::value;
  if (t >= (float)hi) return (u32)hi & ab_mask<N>::value;
  return (u32)(i64)t & ab_mask<N>::value;
}

AB_INLINE float ab_pow2(int k) { return __uint_as_float((u32)(127 + k) << 23); }

AB_INLINE float ab_f16_dec(u32 c) { return __half2float(__ushort_as_half((u16)c)); }
AB_INLINE float ab_bf16_dec(u32 c) { return __uint_as_float(c << 16); }
AB_INLINE u32 ab_f16_enc(float f) {
  const u32 x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return ((x >> 16) & 0x8000u) | 0x7e00u | ((x & 0x7fffffu) >> 13);
  return __half_as_ushort(__float2half_rn(f));
}
AB_INLINE u32 ab_bf16_enc(float f) {
  const u32 x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

// Small floats f{1+E+M}e{E}m{M}; SPEC 0: finite only, 1: OCP E4M3FN (one NaN), 2: IEEE-like.
template <int E, int M, int SPEC> AB_INLINE float ab_mf_dec(u32 c) {
  constexpr int bias = (1 << (E - 1)) - 1;
  constexpr u32 sign = 1u << (E + M), emax = (1u << E) - 1;
  const u32 mag = c & (sign - 1), ef = mag >> M, m = mag & ((1u << M) - 1);
  if (SPEC == 1 && mag == sign - 1) return __uint_as_float(0x7fc00000u);
  if (SPEC == 2 && ef == emax) {
    if (m != 0) return __uint_as_float(0x7fc00000u);
    return __uint_as_float((c & sign) ? 0xff800000u : 0x7f800000u);
  }
  const float v = ef == 0 ? (float)m * ab_pow2(1 - bias - M)
                          : __uint_as_float(((ef + 127 - bias) << 23) | (m << (23 - M)));
  return (c & sign) ? -v : v;
}
template <int E, int M, int SPEC> AB_INLINE u32 ab_mf_enc(float f) {
  constexpr int bias = (1 << (E - 1)) - 1, emin = 1 - bias;
  constexpr u32 sign = 1u << (E + M), all = sign - 1;
  constexpr u32 maxc = SPEC == 0 ? all : SPEC == 1 ? all - 1 : all - ((1u << M) - 1) - 1;
  constexpr u32 nanc = SPEC == 0 ? 0 : SPEC == 1 ? all : ((((1u << E) - 1) << M) | 1);
  constexpr u32 infc = SPEC == 2 ? (((1u << E) - 1) << M) : maxc;
  const u32 x = __float_as_uint(f), ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return nanc;
  const u32 s = (x >> 31) ? sign : 0u;
  if (ax == 0x7f800000u) return s | infc;
  const float a = __uint_as_float(ax);
  if (a >= ab_mf_dec<E, M, SPEC>(maxc)) return s | maxc;
  int e = (int)(ax >> 23) - 127;
  if (e < emin) e = emin;
  const u32 sig = (u32)rintf(a * ab_pow2(M - e));
  if (e == emin && sig < (1u << M)) return s | sig;
  return s | ((((u32)(e + bias)) << M) + (sig - (1u << M)));
}

AB_INLINE float ab_fmin(float a, float b) {
  if (a != a) return b;
  if (b != b) return a;
  if (a == b) return __uint_as_float(__float_as_uint(a) | __float_as_uint(b));
  return a < b ? a : b;
}
AB_INLINE float ab_fmax(float a, float b) {
  if (a != a) return b;
  if (b != b) return a;
  if (a == b) return __uint_as_float(__float_as_uint(a) & __float_as_uint(b));
  return a > b ? a : b;
}

AB_INLINE u32 ab_smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
AB_INLINE void ab_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N> AB_INLINE void ab_wait_group() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N) : "memory"); }
template <int BYTES> AB_INLINE void ab_cp_async(void* dst, const void* src, int src_bytes) {
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(ab_smem_addr(dst)), "l"(src), "r"(src_bytes) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" :: "r"(ab_smem_addr(dst)), "l"(src), "n"(BYTES), "r"(src_bytes) : "memory");
}
AB_INLINE void ab_ldmatrix_x4(u32* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ab_smem_addr(p)));
}
AB_INLINE void ab_ldmatrix_x4_trans(u32* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(ab_smem_addr(p)));
}
// ldmatrix of N (1, 2 or 4) 8x8 matrices of 16-bit elements into r[0..N), transposed if TRANS.
template <int N, bool TRANS> AB_INLINE void ab_ldmatrix(u32* r, const void* p) {
  if constexpr (N == 4 && !TRANS) ab_ldmatrix_x4(r, p);
  else if constexpr (N == 4) ab_ldmatrix_x4_trans(r, p);
  else if constexpr (N == 2 && !TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(ab_smem_addr(p)));
  else if constexpr (N == 2)
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(ab_smem_addr(p)));
  else if constexpr (!TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(ab_smem_addr(p)));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(ab_smem_addr(p)));
}
// d = a b + d with f32 accumulators (held as u32 bits), a and b f16 or bf16.
AB_INLINE void ab_mma_f16(u32* d, const u32* a, const u32* b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
AB_INLINE void ab_mma_bf16(u32* d, const u32* a, const u32* b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
// Packed pairs of 16-bit floats: d = a * b + c, rounded once.
AB_INLINE u32 ab_fma_f16x2(u32 a, u32 b, u32 c) {
  u32 d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
AB_INLINE u32 ab_fma_bf16x2(u32 a, u32 b, u32 c) {
  u32 d;
  asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}
"#;

#[cfg(test)]
mod tests {
    //! Line-by-line host ports of `ab_mf_dec` and `ab_mf_enc`, checked against `anybit_dtype`.
    use anybit_dtype::{DType, SpecialValues};

    fn pow2(k: i32) -> f32 {
        f32::from_bits(((127 + k) as u32) << 23)
    }

    fn spec(dtype: DType) -> u32 {
        match dtype.as_mini_float().map(|f| f.special_values()) {
            Some(SpecialValues::NanOnly) => 1,
            Some(SpecialValues::Ieee) => 2,
            _ => 0,
        }
    }

    fn mf_dec(e: u32, m: u32, spec: u32, c: u32) -> f32 {
        let bias = (1i32 << (e - 1)) - 1;
        let sign = 1u32 << (e + m);
        let emax = (1u32 << e) - 1;
        let mag = c & (sign - 1);
        let ef = mag >> m;
        let mm = mag & ((1 << m) - 1);
        if spec == 1 && mag == sign - 1 {
            return f32::from_bits(0x7fc0_0000);
        }
        if spec == 2 && ef == emax {
            if mm != 0 {
                return f32::from_bits(0x7fc0_0000);
            }
            return f32::from_bits(if c & sign != 0 {
                0xff80_0000
            } else {
                0x7f80_0000
            });
        }
        let v = if ef == 0 {
            mm as f32 * pow2(1 - bias - m as i32)
        } else {
            f32::from_bits((((ef as i32 + 127 - bias) as u32) << 23) | (mm << (23 - m)))
        };
        if c & sign != 0 {
            -v
        } else {
            v
        }
    }

    fn mf_enc(e: u32, m: u32, spec: u32, f: f32) -> u32 {
        let bias = (1i32 << (e - 1)) - 1;
        let emin = 1 - bias;
        let sign = 1u32 << (e + m);
        let all = sign - 1;
        let maxc = match spec {
            0 => all,
            1 => all - 1,
            _ => all - ((1 << m) - 1) - 1,
        };
        let nanc = match spec {
            0 => 0,
            1 => all,
            _ => (((1 << e) - 1) << m) | 1,
        };
        let infc = if spec == 2 { ((1 << e) - 1) << m } else { maxc };
        let x = f.to_bits();
        let ax = x & 0x7fff_ffff;
        if ax > 0x7f80_0000 {
            return nanc;
        }
        let s = if x >> 31 != 0 { sign } else { 0 };
        if ax == 0x7f80_0000 {
            return s | infc;
        }
        let a = f32::from_bits(ax);
        if a >= mf_dec(e, m, spec, maxc) {
            return s | maxc;
        }
        let mut ex = (ax >> 23) as i32 - 127;
        if ex < emin {
            ex = emin;
        }
        let sig = (a * pow2(m as i32 - ex)).round_ties_even() as u32;
        if ex == emin && sig < (1 << m) {
            return s | sig;
        }
        s | ((((ex + bias) as u32) << m) + (sig - (1 << m)))
    }

    #[test]
    fn small_float_helpers_match_anybit_dtype() {
        // Every f16 value, every small-float value and its neighbours, and a spread of f32s.
        let mut inputs: Vec<f32> = (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect();
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            inputs.push(f32::from_bits(state as u32));
        }
        for dtype in DType::all_small().into_iter().filter(|d| d.is_float()) {
            let f = dtype.as_mini_float().unwrap();
            let (e, m, sp) = (f.exponent_bits(), f.mantissa_bits(), spec(dtype));
            let mut extra = Vec::new();
            for code in 0..dtype.code_count() as u32 {
                let v = mf_dec(e, m, sp, code);
                let want = dtype.decode(code);
                assert!(
                    v.to_bits() == (want as f32).to_bits() || (v.is_nan() && want.is_nan()),
                    "{dtype} decode {code:#x}: {v} vs {want}"
                );
                if v.is_finite() {
                    extra.extend([
                        v,
                        f32::from_bits(v.to_bits() + 1),
                        f32::from_bits(v.to_bits().wrapping_sub(1)),
                    ]);
                    let next = dtype.decode(code + 1) as f32;
                    if next.is_finite() {
                        extra.push((v + next) / 2.0);
                    }
                }
            }
            for &x in inputs.iter().chain(&extra) {
                assert_eq!(
                    mf_enc(e, m, sp, x),
                    dtype.encode(x),
                    "{dtype} encode {x:e} ({:#x})",
                    x.to_bits()
                );
            }
        }
    }
}
