// bertlet — AVX-512 kernel path (F + BW + DQ + VL + FMA), x86-64 only.
//
// Compiled with a function-level target attribute, never with global -m flags: the code is only *called* after
// run-time detection (kernels/cpu.hpp) says the CPU and OS support it. Loads and stores are unaligned (the
// workspace and row-major tensors are only 4-byte aligned); partial vectors use AVX-512 masks.
//
// GEMM micro-kernel: 12 rows x 32 columns (two 16-float panels) = 24 zmm accumulators, 2 zmm for B, 1 broadcast.
// Per k: 2 loads of B, 12 broadcasts of A, 24 FMAs.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BERTLET_HAVE_AVX512_PATH 1

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "bertlet/kernels/packed.hpp"

#define BERTLET_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

namespace bertlet::detail::avx512 {

BERTLET_TARGET_AVX512 inline __mmask16 tail_mask(std::ptrdiff_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// GCC 12's plain forms of a few intrinsics (min/max/roundscale/scalef/extract) start from _mm512_undefined_ps()
// and trigger false -Wmaybe-uninitialized warnings; the merge-masked forms with an all-ones mask compile to the
// same instructions without them.
BERTLET_TARGET_AVX512 inline __m512 min_ps(__m512 a, __m512 b) { return _mm512_mask_min_ps(a, 0xFFFF, a, b); }
BERTLET_TARGET_AVX512 inline __m512 max_ps(__m512 a, __m512 b) { return _mm512_mask_max_ps(a, 0xFFFF, a, b); }
template <int Half>
BERTLET_TARGET_AVX512 inline __m256 half(__m512 v) {
    return _mm256_castpd_ps(_mm512_mask_extractf64x4_pd(_mm256_setzero_pd(), 0xF, _mm512_castps_pd(v), Half));
}
BERTLET_TARGET_AVX512 inline float hsum(__m512 v) {
    const __m256 h = _mm256_add_ps(half<0>(v), half<1>(v));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
BERTLET_TARGET_AVX512 inline float hmax(__m512 v) {
    const __m256 h = _mm256_max_ps(half<0>(v), half<1>(v));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/// exp(x): n = round(x log2 e), r = x - n ln 2 (two-step Cody-Waite, ln 2 = 0.693359375 - 2.1219444e-4), e^r by a
/// degree-6 minimax polynomial on |r| <= ln2 / 2 with P(0) = 1 exactly (a softmax row's maximum gives exactly 1;
/// coefficients: tools/fit_gelu_exp.py), times 2^n by vscalefps (exact, no exponent-field arithmetic). 12
/// instructions; the Cephes form it replaces (1 + r + r^2 P5(r), clamps on both sides) took 15 and ~1.25x the time in
/// a throughput micro-benchmark (softmax of 128 x 128: -6%, fused attention head: -3%). Max relative error over every
/// float in [-87, 88]: 8.9e-8 (Cephes form: 1.2e-7).
/// Edges: exp(NaN) = NaN, x > 88.73 and +inf -> +inf, x < -87.34 (exp below FLT_MIN) and -inf -> 0 (the Cephes form
/// clamped instead: 2.4e38 for NaN / +inf, FLT_MIN for -inf).
BERTLET_TARGET_AVX512 inline __m512 exp_ps(__m512 x) {
    // Lanes below -87.34 (-inf included, whose r is -inf + inf = NaN) are zeroed by the masked scalef; NLT_UQ is true
    // for NaN, which then propagates.
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3365447505531f), _CMP_NLT_UQ);
    x = min_ps(_mm512_set1_ps(89.0f), x);  // +inf -> 89: n = 128, scalef overflows to +inf; a NaN x is kept
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 n = _mm512_mask_roundscale_ps(t, 0xFFFF, t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(0.0013843646f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.008374162f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.041668f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.16666432f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.49999994f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(live, p, n);
}

// GELU (erf form) = 0.5 v + |v| g(|v|), g(a) = 0.5 erf(a / sqrt 2) piecewise polynomial: the scheme of
// avx2::gelu_erf_ps (see there), with 16 pieces of degree 4, as one zmm vpermps covers 16 (fewer permutes and FMAs:
// in an epilogue-bound GEMM, 128 x 1536 x 32, it took ~30% less time than the 8-piece degree-6 table and ~40% less
// than the rational erf form, ~22% less than the latter at the FFN shape, K = 384; 32 pieces through vpermt2ps were
// slower). Fitted by tools/fit_gelu_exp.py (g(0) = 0, g = 0.5 exactly at the clamp). Over every float in [-12, 12]:
// |error| <= 3.7e-7 and <= 7.9e-8 (1 + |v|); 2 g(a) is erf(a / sqrt 2) to 2.0e-7 (the rational erf form: 1.5e-6,
// 2.2e-7 (1 + |v|), erf to 4.4e-7).
// The table is detail::gelu16_c (packed.hpp). (The int8 epilogue has its own cheaper GELU: gemm_s8.hpp s8_gelu_q.)
inline constexpr float gelu_s = gelu16_s;
inline constexpr float gelu_amax = gelu16_amax;
inline constexpr const auto& gelu_c = gelu16_c;

/// GELU (erf form); see gelu_c above. NaN -> NaN, +inf -> +inf, -inf -> NaN.
BERTLET_TARGET_AVX512 inline __m512 gelu_erf_ps(__m512 v) {
    const __m512 a = _mm512_abs_ps(v);
    const __m512 ac = min_ps(_mm512_set1_ps(gelu_amax), a);  // vminps returns a NaN second operand
    const __m512 magic = _mm512_set1_ps(12582912.0f);        // 1.5 * 2^23: k in the low mantissa bits
    const __m512 w = _mm512_fmadd_ps(ac, _mm512_set1_ps(gelu_s), magic);
    const __m512 t = _mm512_fmsub_ps(ac, _mm512_set1_ps(gelu_s), _mm512_sub_ps(w, magic));
    const __m512i k = _mm512_castps_si512(w);
    // merge-masked vpermps with an all-ones mask: the plain form trips GCC 12's -Wmaybe-uninitialized (see min_ps)
    const auto row = [k](int j) BERTLET_TARGET_AVX512 {
        const __m512 c = _mm512_load_ps(gelu_c[j]);
        return _mm512_mask_permutexvar_ps(c, 0xFFFF, k, c);
    };
    __m512 p = row(4);
#pragma GCC unroll 4
    for (int j = 3; j >= 0; --j) p = _mm512_fmadd_ps(p, t, row(j));
    return _mm512_fmadd_ps(a, p, _mm512_mul_ps(_mm512_set1_ps(0.5f), v));
}

BERTLET_TARGET_AVX512 inline __m512 act_ps(__m512 v, activation a) {
    if (a == activation::gelu_erf) return gelu_erf_ps(v);
    if (a == activation::gelu_tanh) {  // 0.5 v (1 + tanh(u)) = v / (1 + exp(-2u))
        const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286536f),
                                       _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
        const __m512 e = exp_ps(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
        return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    }
    return v;
}

template <int MR, int NP>
BERTLET_TARGET_AVX512 void tile_mr(const tile_args& t) {
    __m512 acc[MR][NP];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
    const float* a = t.ap;
    const float* b0 = t.b;
    const float* b1 = t.b + (NP > 1 ? t.pstride : 0);
    // The next panel group's lines assigned to this tile are prefetched evenly over the k loop (one pair every
    // `step` k): issued as a burst at the loop start they queue up behind each other in the miss buffers and
    // delay this tile's own B reads (measured: ~3% of GEMM time when the weights stream from L3 / DRAM).
    const std::ptrdiff_t npf = t.pf_n;
    const std::ptrdiff_t step = npf > 0 ? std::max<std::ptrdiff_t>(1, t.kc / npf) : 1;
    std::ptrdiff_t pk = 0, next = 0;
    for (std::ptrdiff_t k = 0; k < t.kc; ++k) {
        if (k == next && pk < npf) {
            _mm_prefetch(reinterpret_cast<const char*>(t.pf[0] + pk * panel_width), _MM_HINT_T1);
            _mm_prefetch(reinterpret_cast<const char*>(t.pf[1] + pk * panel_width), _MM_HINT_T1);
            ++pk;
            next += step;
        }
        const __m512 v0 = _mm512_loadu_ps(b0 + k * panel_width);
        const __m512 v1 = NP > 1 ? _mm512_loadu_ps(b1 + k * panel_width) : v0;
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const __m512 av = _mm512_set1_ps(a[k * MR + i]);
            acc[i][0] = _mm512_fmadd_ps(av, v0, acc[i][0]);
            if (NP > 1) acc[i][NP - 1] = _mm512_fmadd_ps(av, v1, acc[i][NP - 1]);
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        const int c0 = j * panel_width;
        if (t.cols <= c0) break;
        const __mmask16 m = tail_mask(t.cols - c0);
        const epilogue* ep = t.ep;
        const __m512 alpha = _mm512_set1_ps(ep ? ep->alpha : 1.0f);
        const __m512 bias = t.bias ? _mm512_maskz_loadu_ps(m, t.bias + c0) : _mm512_setzero_ps();
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= t.rows) break;
            float* c = t.c + i * t.ldc + c0;
            __m512 v = acc[i][j];
            if (t.add_c) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c));
            if (ep) {
                v = _mm512_fmadd_ps(v, alpha, bias);
                if (t.res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, t.res + i * ep->ldr + c0));
                v = act_ps(v, ep->act);
            }
            _mm512_mask_storeu_ps(c, m, v);
        }
    }
}

// GCC 12's AVX-512 shuffle/unpack intrinsics self-initialize an undefined operand (GCC PR 105593), which
// -Wmaybe-uninitialized reports once inlined; it is not a real read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
/// 16x16 transpose of r[0..15] in place (unpack 32/64-bit, then two 128-bit lane shuffles).
BERTLET_TARGET_AVX512 inline void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        const __m512d a0 = _mm512_castps_pd(t[4 * i]), a1 = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d a2 = _mm512_castps_pd(t[4 * i + 2]), a3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    // r[4i + j] now holds, for rows 4i..4i+3, columns {j, j+4, j+8, j+12} (one per 128-bit lane)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
        const __m512 a = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);      // lanes 0,2 of rows 0-3 | 4-7
        const __m512 b = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);  // same for rows 8-11 | 12-15
        const __m512 c = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);      // lanes 1,3
        const __m512 d = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(a, b, 0x88);       // column j
        t[8 + j] = _mm512_shuffle_f32x4(a, b, 0xDD);   // column j + 8
        t[4 + j] = _mm512_shuffle_f32x4(c, d, 0x88);   // column j + 4
        t[12 + j] = _mm512_shuffle_f32x4(c, d, 0xDD);  // column j + 12
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}

/// pack_a_panel<12> with 16x16 register transposes for full panels (scalar loop for the k tail and short panels).
BERTLET_TARGET_AVX512 inline void pack_a12(const float* src, std::ptrdiff_t lda, std::ptrdiff_t kc, int rows, int mr,
                                           float* ap) {
    if (rows != 12 || mr != 12) {
        pack_a_panel<12>(src, lda, kc, rows, mr, ap);
        return;
    }
    std::ptrdiff_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 r[16];
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) r[i] = _mm512_loadu_ps(src + i * lda + k);
#pragma GCC unroll 4
        for (int i = 12; i < 16; ++i) r[i] = _mm512_setzero_ps();
        transpose16(r);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) _mm512_mask_storeu_ps(ap + (k + j) * 12, 0x0FFF, r[j]);
    }
    for (; k < kc; ++k)
        for (int i = 0; i < 12; ++i) ap[k * 12 + i] = src[i * lda + k];
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

struct traits {
    static void pack(const float* src, std::ptrdiff_t lda, std::ptrdiff_t kc, int rows, int mr, float* ap) {
        pack_a12(src, lda, kc, rows, mr, ap);
    }
    static constexpr int MR = 12;
    static constexpr int MR_STEP = 4;
    static constexpr int NP = 2;
    static void tile(const tile_args& t, int mr, int np) {
        if (np == 2) {
            if (mr == 12) tile_mr<12, 2>(t);
            else if (mr == 8) tile_mr<8, 2>(t);
            else tile_mr<4, 2>(t);
        } else {
            if (mr == 12) tile_mr<12, 1>(t);
            else if (mr == 8) tile_mr<8, 1>(t);
            else tile_mr<4, 1>(t);
        }
    }
};

inline void gemm(const gemm_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1,
                 float* scratch) {
    gemm_blocked<traits>(g, m0, m1, p0, p1, scratch);
}

/// LayerNorm of R consecutive rows (stride n) at a time. One row alone is latency-bound: each pass is a single
/// dependent add / FMA chain and the horizontal sums + 1/sqrt serialise; R rows give R independent chains that
/// overlap, and gamma / beta are loaded once per R rows.
///
/// Numerics stay two-pass, with the "corrected two-pass" refinement: pass 2 sums d = x - mean as well as d^2, so
/// mean += sum(d) / n removes the rounding error of the float mean (it dominates when the mean is far from 0), and
/// sum((x - mean')^2) = sum(d^2) - sum(d)^2 / n exactly. Never E[x^2] - E[x]^2 (catastrophic cancellation).
/// Pass 3 subtracts mean' as a float pair hi + lo, (x - hi) * inv - lo * inv, at the cost of the plain form
/// (sub, FMA, FMA): a float mean alone is off by up to half an ulp of the mean, which is 1e-4 sd at mean 1000.
template <int R>
BERTLET_TARGET_AVX512 inline void layernorm_rows(float* x, const float* residual, std::ptrdiff_t n,
                                                 const float* gamma, const float* beta, float eps) {
    const std::ptrdiff_t nf = n & ~std::ptrdiff_t{15};  // full vectors; the tail (0..15 floats) is masked
    const __mmask16 mt = tail_mask(n - nf);              // 0 when n % 16 == 0
    __m512 s[R], c[R], q[R], mv[R], iv[R], lv[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) s[j] = _mm512_setzero_ps();
    // Pass 1: x += residual (stored back: the caller's contract), sum.
    if (residual) {
        for (std::ptrdiff_t i = 0; i < nf; i += 16) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                const __m512 v = _mm512_add_ps(_mm512_loadu_ps(x + j * n + i), _mm512_loadu_ps(residual + j * n + i));
                _mm512_storeu_ps(x + j * n + i, v);
                s[j] = _mm512_add_ps(s[j], v);
            }
        }
        if (mt) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(mt, x + j * n + nf),
                                               _mm512_maskz_loadu_ps(mt, residual + j * n + nf));
                _mm512_mask_storeu_ps(x + j * n + nf, mt, v);
                s[j] = _mm512_add_ps(s[j], v);
            }
        }
    } else {
        for (std::ptrdiff_t i = 0; i < nf; i += 16) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) s[j] = _mm512_add_ps(s[j], _mm512_loadu_ps(x + j * n + i));
        }
        if (mt) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) s[j] = _mm512_add_ps(s[j], _mm512_maskz_loadu_ps(mt, x + j * n + nf));
        }
    }
    float mean[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
        mean[j] = hsum(s[j]) / static_cast<float>(n);
        mv[j] = _mm512_set1_ps(mean[j]);
        c[j] = _mm512_setzero_ps();
        q[j] = _mm512_setzero_ps();
    }
    // Pass 2: sum(d) and sum(d^2), d = x - mean (masked-off lanes are 0).
    for (std::ptrdiff_t i = 0; i < nf; i += 16) {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + j * n + i), mv[j]);
            c[j] = _mm512_add_ps(c[j], d);
            q[j] = _mm512_fmadd_ps(d, d, q[j]);
        }
    }
    if (mt) {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const __m512 d = _mm512_maskz_sub_ps(mt, _mm512_maskz_loadu_ps(mt, x + j * n + nf), mv[j]);
            c[j] = _mm512_add_ps(c[j], d);
            q[j] = _mm512_fmadd_ps(d, d, q[j]);
        }
    }
    if constexpr (R == 4) {
        // layernorm_row_stats for the four rows at once (the same IEEE double operations, so the same bits): their
        // sqrt / division latency chains run side by side instead of one after another
        alignas(32) float cf[4], qf[4], mf[4], hf[4], vf[4], lf[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            cf[j] = hsum(c[j]);
            qf[j] = hsum(q[j]);
            mf[j] = mean[j];
        }
        const __m256d dn = _mm256_set1_pd(static_cast<double>(n));
        const __m256d cs = _mm256_cvtps_pd(_mm_load_ps(cf));
        const __m256d var = _mm256_max_pd(
            _mm256_div_pd(_mm256_sub_pd(_mm256_cvtps_pd(_mm_load_ps(qf)), _mm256_div_pd(_mm256_mul_pd(cs, cs), dn)),
                          dn),
            _mm256_setzero_pd());  // std::max(0.0, v): 0 for a NaN v as well
        const __m256d m = _mm256_add_pd(_mm256_cvtps_pd(_mm_load_ps(mf)), _mm256_div_pd(cs, dn));
        const __m128 hi = _mm256_cvtpd_ps(m);
        const __m128 inv = _mm256_cvtpd_ps(_mm256_div_pd(
            _mm256_set1_pd(1.0), _mm256_sqrt_pd(_mm256_add_pd(var, _mm256_set1_pd(static_cast<double>(eps))))));
        _mm_store_ps(hf, hi);
        _mm_store_ps(vf, inv);
        _mm_store_ps(lf, _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(m, _mm256_cvtps_pd(hi)), _mm256_cvtps_pd(inv))));
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            mv[j] = _mm512_set1_ps(hf[j]);
            iv[j] = _mm512_set1_ps(vf[j]);
            lv[j] = _mm512_set1_ps(lf[j]);
        }
    } else {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const layernorm_stats st = layernorm_row_stats(hsum(c[j]), hsum(q[j]), mean[j], n, eps);
            mv[j] = _mm512_set1_ps(st.hi);
            iv[j] = _mm512_set1_ps(st.inv);
            lv[j] = _mm512_set1_ps(st.lo);
        }
    }
    // Pass 3: (x - mean) / sd * gamma + beta; gamma and beta shared by the R rows. The next R rows are prefetched
    // meanwhile (pass 1 of the next block would wait on them: 128 x 384 rows from L2 7 % faster).
    for (std::ptrdiff_t i = 0; i < nf; i += 16) {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) _mm_prefetch(reinterpret_cast<const char*>(x + (R + j) * n + i), _MM_HINT_T0);
        const __m512 g = _mm512_loadu_ps(gamma + i), b = _mm512_loadu_ps(beta + i);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            float* xr = x + j * n + i;
            const __m512 d = _mm512_fmsub_ps(_mm512_sub_ps(_mm512_loadu_ps(xr), mv[j]), iv[j], lv[j]);
            _mm512_storeu_ps(xr, _mm512_fmadd_ps(d, g, b));
        }
    }
    if (mt) {
        const __m512 g = _mm512_maskz_loadu_ps(mt, gamma + nf), b = _mm512_maskz_loadu_ps(mt, beta + nf);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            float* xr = x + j * n + nf;
            const __m512 d = _mm512_fmsub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(mt, xr), mv[j]), iv[j], lv[j]);
            _mm512_mask_storeu_ps(xr, mt, _mm512_fmadd_ps(d, g, b));
        }
    }
}

BERTLET_TARGET_AVX512 inline void layernorm(float* x, const float* residual, std::ptrdiff_t rows, std::ptrdiff_t n,
                                           const float* gamma, const float* beta, float eps) {
    std::ptrdiff_t r0 = 0;
    for (; r0 + 4 <= rows; r0 += 4)
        layernorm_rows<4>(x + r0 * n, residual ? residual + r0 * n : nullptr, n, gamma, beta, eps);
    const float* res = residual ? residual + r0 * n : nullptr;
    switch (rows - r0) {  // 0..3 rows left: one block of that height
        case 3: layernorm_rows<3>(x + r0 * n, res, n, gamma, beta, eps); break;
        case 2: layernorm_rows<2>(x + r0 * n, res, n, gamma, beta, eps); break;
        case 1: layernorm_rows<1>(x + r0 * n, res, n, gamma, beta, eps); break;
        default: break;
    }
}

/// Row softmax, R rows at a time: R independent max / sum chains and horizontal reductions overlap (a 128-wide row
/// is only 8 vectors, so one row alone is latency-bound). Each row's result is the same as with R = 1.
template <int R>
BERTLET_TARGET_AVX512 inline void softmax_rows(float* x, std::ptrdiff_t n, std::ptrdiff_t ld) {
    __m512 mx[R], s[R], mv[R], iv[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) mx[j] = _mm512_set1_ps(-INFINITY);
    for (std::ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) mx[j] = _mm512_mask_max_ps(mx[j], m, mx[j], _mm512_maskz_loadu_ps(m, x + j * ld + i));
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
        mv[j] = _mm512_set1_ps(hmax(mx[j]));
        s[j] = _mm512_setzero_ps();
    }
    for (std::ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            float* xr = x + j * ld + i;
            const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr), mv[j]));
            s[j] = _mm512_mask_add_ps(s[j], m, s[j], e);
            _mm512_mask_storeu_ps(xr, m, e);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) iv[j] = _mm512_set1_ps(1.0f / hsum(s[j]));
    for (std::ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            float* xr = x + j * ld + i;
            _mm512_mask_storeu_ps(xr, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr), iv[j]));
        }
    }
}

BERTLET_TARGET_AVX512 inline void softmax(float* x, std::ptrdiff_t rows, std::ptrdiff_t n, std::ptrdiff_t ld) {
    std::ptrdiff_t r0 = 0;
    for (; r0 + 4 <= rows; r0 += 4) softmax_rows<4>(x + r0 * ld, n, ld);
    for (std::ptrdiff_t r = r0; r < rows; ++r) {
        float* xr = x + r * ld;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (std::ptrdiff_t i = 0; i < n; i += 16) {
            const __mmask16 m = tail_mask(n - i);
            mx = _mm512_mask_max_ps(mx, m, mx, _mm512_maskz_loadu_ps(m, xr + i));
        }
        const __m512 mv = _mm512_set1_ps(hmax(mx));
        __m512 s = _mm512_setzero_ps();
        for (std::ptrdiff_t i = 0; i < n; i += 16) {
            const __mmask16 m = tail_mask(n - i);
            const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr + i), mv));
            s = _mm512_mask_add_ps(s, m, s, e);
            _mm512_mask_storeu_ps(xr + i, m, e);
        }
        const __m512 iv = _mm512_set1_ps(1.0f / hsum(s));
        for (std::ptrdiff_t i = 0; i < n; i += 16) {
            const __mmask16 m = tail_mask(n - i);
            _mm512_mask_storeu_ps(xr + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + i), iv));
        }
    }
}

// ---- fused attention (one sequence x one head) ---------------------------------------------------------------
// ctx[L, D] = softmax(scale * Q K^T) V for one head, D % 16 == 0. K_h is transposed once into 16-key panels (16x16
// register transposes); then per tile of up to 12 query rows: S = scale * Q K^T with Q broadcast straight from its
// rows (no A packing), row softmax on the tile (in L1), ctx = S V with V's rows read in place as the B operand (no
// packing either). Same arithmetic as the generic path (fp32 FMAs in k order, alpha applied to the sum).

/// kp[(p * D + d) * 16 + j] = k[(16 p + j) * ldk + d] (keys past L read as 0). D % 16 == 0.
BERTLET_TARGET_AVX512 inline void attn_pack_k(const float* k, std::ptrdiff_t ldk, std::ptrdiff_t L, std::ptrdiff_t D,
                                              float* kp) {
    for (std::ptrdiff_t p = 0; p * 16 < L; ++p) {
        const std::ptrdiff_t nk = std::min<std::ptrdiff_t>(16, L - p * 16);
        for (std::ptrdiff_t d0 = 0; d0 < D; d0 += 16) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j)
                r[j] = j < nk ? _mm512_loadu_ps(k + (p * 16 + j) * ldk + d0) : _mm512_setzero_ps();
            transpose16(r);
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j) _mm512_storeu_ps(kp + (p * D + d0 + j) * 16, r[j]);
        }
    }
}

/// The inner loop of both attention matmuls: acc[i][j] = sum_{k < n} a_i[k] * B_j[k] (16 lanes), with a_i row i of
/// A (row stride lda; rows past `rows` repeat the last one, their results are not stored) broadcast, and B_j[k] the
/// 16 floats at b + j * bpanel + k * bstep.
template <int MR, int NP>
BERTLET_TARGET_AVX512 inline void attn_acc(const float* a0, std::ptrdiff_t lda, int rows, const float* b,
                                           std::ptrdiff_t bpanel, std::ptrdiff_t bstep, std::ptrdiff_t n,
                                           __m512 (&acc)[MR][NP]) {
    const float* a[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) a[i] = a0 + std::min(i, rows - 1) * lda;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
    const float* b1 = b + (NP > 1 ? bpanel : 0);
    for (std::ptrdiff_t k = 0; k < n; ++k) {
        const __m512 v0 = _mm512_loadu_ps(b + k * bstep);
        const __m512 v1 = NP > 1 ? _mm512_loadu_ps(b1 + k * bstep) : v0;
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const __m512 av = _mm512_set1_ps(a[i][k]);
            acc[i][0] = _mm512_fmadd_ps(av, v0, acc[i][0]);
            if (NP > 1) acc[i][NP - 1] = _mm512_fmadd_ps(av, v1, acc[i][NP - 1]);
        }
    }
}

/// s[i, 0 .. cols) = scale * sum_d q[i, d] kp-panels (NP panels from kp0), rows < `rows` stored; MR >= rows.
/// Also folds the stored values into the running row maxima mx[i] (lanes past `cols` excluded).
template <int MR, int NP>
BERTLET_TARGET_AVX512 inline void attn_qk_tile(const float* q, std::ptrdiff_t ldq, int rows, const float* kp0,
                                               std::ptrdiff_t D, float scale, float* s, std::ptrdiff_t lds, int cols,
                                               __m512* mx) {
    __m512 acc[MR][NP];
    attn_acc<MR, NP>(q, ldq, rows, kp0, 16 * D, 16, D, acc);
    const __m512 al = _mm512_set1_ps(scale);
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        if (cols <= j * 16) break;
        const __mmask16 m = tail_mask(cols - j * 16);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= rows) break;
            const __m512 y = _mm512_mul_ps(acc[i][j], al);
            _mm512_mask_storeu_ps(s + i * lds + j * 16, m, y);
            mx[i] = _mm512_mask_max_ps(mx[i], m, mx[i], y);
        }
    }
}

/// c[i, 0 .. 16 NP) = sum_{k < L} s[i, k] v[k, 0 .. 16 NP) for rows < `rows`; MR >= rows.
/// The softmax normalisation is applied here: row i is multiplied by inv[i] (1 / its sum of exponentials).
template <int MR, int NP>
BERTLET_TARGET_AVX512 inline void attn_pv_tile(const float* s, std::ptrdiff_t lds, int rows, const float* v,
                                               std::ptrdiff_t ldv, std::ptrdiff_t L, const float* inv, float* c,
                                               std::ptrdiff_t ldc) {
    __m512 acc[MR][NP];
    attn_acc<MR, NP>(s, lds, rows, v, 16, ldv, L, acc);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
        if (i >= rows) break;
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j)
            _mm512_storeu_ps(c + i * ldc + j * 16, _mm512_mul_ps(acc[i][j], _mm512_set1_ps(inv[i])));
    }
}

template <int MR>
BERTLET_TARGET_AVX512 inline void attn_rows(const float* q, std::ptrdiff_t ldq, const float* v, std::ptrdiff_t ldv,
                                            int rows, const float* kp, std::ptrdiff_t L, std::ptrdiff_t D,
                                            float scale, float* s, std::ptrdiff_t lds, float* c, std::ptrdiff_t ldc) {
    const std::ptrdiff_t np = (L + 15) / 16;
    __m512 mx[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) mx[i] = _mm512_set1_ps(-INFINITY);
    for (std::ptrdiff_t p = 0; p < np; p += 2) {
        const int cols = static_cast<int>(std::min<std::ptrdiff_t>(32, L - p * 16));
        if (p + 1 < np) attn_qk_tile<MR, 2>(q, ldq, rows, kp + p * 16 * D, D, scale, s + p * 16, lds, cols, mx);
        else attn_qk_tile<MR, 1>(q, ldq, rows, kp + p * 16 * D, D, scale, s + p * 16, lds, cols, mx);
    }
    // softmax numerators in place, 4 rows at a time (independent chains overlap); the division by the row sum
    // happens in the P V store
    alignas(64) float inv[MR];
    for (int i0 = 0; i0 < rows; i0 += 4) {
        __m512 mv[4], sum[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            mv[j] = _mm512_set1_ps(hmax(mx[std::min(i0 + j, MR - 1)]));
            sum[j] = _mm512_setzero_ps();
        }
        for (std::ptrdiff_t c0 = 0; c0 < L; c0 += 16) {
            const __mmask16 m = tail_mask(L - c0);
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) {
                if (i0 + j >= rows) break;
                float* xr = s + (i0 + j) * lds + c0;
                const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr), mv[j]));
                sum[j] = _mm512_mask_add_ps(sum[j], m, sum[j], e);
                _mm512_mask_storeu_ps(xr, m, e);
            }
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j)
            if (i0 + j < rows) inv[i0 + j] = 1.0f / hsum(sum[j]);
    }
    std::ptrdiff_t d0 = 0;
    for (; d0 + 32 <= D; d0 += 32) attn_pv_tile<MR, 2>(s, lds, rows, v + d0, ldv, L, inv, c + d0, ldc);
    if (d0 < D) attn_pv_tile<MR, 1>(s, lds, rows, v + d0, ldv, L, inv, c + d0, ldc);
}

/// One head of one sequence: ctx = softmax(scale * q k^T) v; q, k, v are [L, D] with row stride ld, ctx has row
/// stride ldc. D % 16 == 0; scratch holds attention_scratch_floats(L, D) floats (packed.hpp).
BERTLET_TARGET_AVX512 inline void attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld,
                                                 float* ctx, std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D,
                                                 float scale, float* scratch) {
    if (L <= 0) return;
    float* kp = scratch;
    const std::ptrdiff_t lds = (L + 15) / 16 * 16;
    float* s = kp + lds * D;
    attn_pack_k(k, ld, L, D, kp);
    attn_row_tiles<12>(L, [&](auto r, std::ptrdiff_t q0, int rows) BERTLET_TARGET_AVX512 {
        attn_rows<decltype(r)::value>(q + q0 * ld, ld, v, ld, rows, kp, L, D, scale, s, lds, ctx + q0 * ldc, ldc);
    });
}

BERTLET_TARGET_AVX512 inline void activate(float* x, std::ptrdiff_t n, activation a) {
    for (std::ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, m, act_ps(_mm512_maskz_loadu_ps(m, x + i), a));
    }
}

BERTLET_TARGET_AVX512 inline void add3(float* out, const float* a, const float* b, const float* c, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        const __m512 v = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)),
                                       _mm512_maskz_loadu_ps(m, c + i));
        _mm512_mask_storeu_ps(out + i, m, v);
    }
}

BERTLET_TARGET_AVX512 inline void cvt_f16(float* out, const std::uint16_t* in, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; i += 16) {
        const __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_maskz_cvtph_ps(m, _mm256_maskz_loadu_epi16(m, in + i)));
    }
}

}  // namespace bertlet::detail::avx512

#endif
