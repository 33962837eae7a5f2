// bertlet — AVX2 + FMA kernel path, x86-64 only (the baseline of every AWS Lambda x86 host).
//
// Compiled with a function-level target attribute, never with global -m flags; only called after run-time
// detection. Unaligned loads/stores throughout; partial vectors use vmaskmov (masked lanes never fault).
//
// GEMM micro-kernel: 6 rows x 16 columns (one packed panel = 2 ymm) = 12 ymm accumulators, 2 for B, 1 broadcast.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define BERTLET_HAVE_AVX2_PATH 1

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "bertlet/kernels/packed.hpp"

#define BERTLET_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace bertlet::detail::avx2 {

/// Lane mask with the first n (clamped to 0..8) lanes on.
BERTLET_TARGET_AVX2 inline __m256i lane_mask(std::ptrdiff_t n) {
    alignas(32) static const std::int32_t tbl[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    n = std::max<std::ptrdiff_t>(0, std::min<std::ptrdiff_t>(8, n));
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tbl + 8 - n));
}

BERTLET_TARGET_AVX2 inline __m256 load_n(const float* p, std::ptrdiff_t n) {
    return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n));
}
BERTLET_TARGET_AVX2 inline void store_n(float* p, __m256 v, std::ptrdiff_t n) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, lane_mask(n), v);
}

BERTLET_TARGET_AVX2 inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}
BERTLET_TARGET_AVX2 inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

/// exp(x), Cephes scheme (relative error 1.2e-7 on [-87, 88]); 2^n built in the exponent field. Left as is although
/// avx512::exp_ps is now cheaper: the int8 epilogue (gemm_s8.hpp) calls it and mirrors it operation for operation in
/// scalar code, and every int8 path must give the same bits.
BERTLET_TARGET_AVX2 inline __m256 exp_ps(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.3365447505531f));
    const __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    const __m256 y = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// GELU, erf form, without erf: 0.5 v (1 + erf(v / sqrt 2)) = 0.5 v + a g(a), a = |v|, g(a) = 0.5 erf(a / sqrt 2)
// (v erf(v / sqrt 2) is even), so there is no division (a rational erf form's) and no sign to restore. g is
// piecewise polynomial: a is clamped to gelu_amax (~4 sqrt 2: beyond it g is exactly 0.5, so GELU(v) is v or exactly
// 0), k = round(a gelu_s) in 0..7 picks the piece and t = a gelu_s - k in [-0.5, 0.5] is its local variable (degree
// 6, Horner); coefficient j of the 8 pieces is one 8-float row, picked per lane with vpermps. Fitted by
// tools/fit_gelu_exp.py (float64 minimax, rounded to float32 from the highest degree down with refits; g(0) = 0, and
// g = 0.5 at the clamp). Measured over every float in [-12, 12]: |error| <= 3.3e-7 and <= 6.5e-8 (1 + |v|); 2 g(a)
// is erf(a / sqrt 2) to 7.5e-8 (the rational erf form: 1.5e-6, 2.2e-7 (1 + |v|), erf to 4.4e-7). avx512.hpp has its own
// table (16 pieces, one zmm vpermps each).
inline constexpr float gelu_s = 1.325791f;  // 7.5 / 5.657: gelu_amax * gelu_s < 7.5, so k <= 7
inline constexpr float gelu_amax = 5.657f;
alignas(32) inline constexpr float gelu_c[7][8] = {  // [coefficient of t^j][piece k]
    {0.0f, 0.27465546f, 0.43429098f, 0.488176f, 0.49872383f, 0.49991882f, 0.499997f, 0.49999994f},
    {0.3009089f, 0.22641027f, 0.09644494f, 0.023258548f, 0.0031754696f, 0.00024545487f, 1.074282e-05f, 2.662825e-07f},
    {-7.378381e-07f, -0.064404264f, -0.054869324f, -0.01984839f, -0.00361316f, -0.00034909957f, -1.83335e-05f,
     -5.300853e-07f},
    {-0.028522437f, -0.009257076f, 0.011661769f, 0.0090886885f, 0.0024403187f, 0.00030751768f, 1.9770137e-05f,
     6.7186596e-07f},
    {-5.8187972e-05f, 0.0074200723f, 0.001886043f, -0.0019948722f, -0.0010458417f, -0.00018574597f, -1.5161689e-05f,
     -6.2074525e-07f},
    {0.002612993f, -3.4130415e-05f, -0.0013914506f, -0.00011021851f, 0.00026275657f, 8.12179e-05f, 9.235773e-06f,
     4.892985e-07f},
    {-0.00027085448f, -0.00054105395f, 0.00011700574f, 0.00017647116f, -1.9712124e-05f, -2.357751e-05f,
     -3.957414e-06f, -2.6733687e-07f},
};

/// GELU (erf form); see gelu_c above. NaN -> NaN, +inf -> +inf, -inf -> NaN. ~1.45x the throughput
/// of the rational erf form in a micro-benchmark; the GELU epilogue of the FFN GEMM (128 x 1536) takes ~30% less time.
BERTLET_TARGET_AVX2 inline __m256 gelu_erf_ps(__m256 v) {
    const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
    const __m256 ac = _mm256_min_ps(_mm256_set1_ps(gelu_amax), a);  // vminps returns a NaN second operand
    // ac S + 1.5 * 2^23, rounded once by the FMA, is 1.5 * 2^23 + k: k sits in the low mantissa bits, which are the
    // permute index; w - 1.5 * 2^23 = k exactly, and t = ac S - k takes one more rounding (|t| <= 0.5).
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256 w = _mm256_fmadd_ps(ac, _mm256_set1_ps(gelu_s), magic);
    const __m256 t = _mm256_fmsub_ps(ac, _mm256_set1_ps(gelu_s), _mm256_sub_ps(w, magic));
    const __m256i k = _mm256_castps_si256(w);
    __m256 p = _mm256_permutevar8x32_ps(_mm256_load_ps(gelu_c[6]), k);
#pragma GCC unroll 6
    for (int j = 5; j >= 0; --j) p = _mm256_fmadd_ps(p, t, _mm256_permutevar8x32_ps(_mm256_load_ps(gelu_c[j]), k));
    return _mm256_fmadd_ps(a, p, _mm256_mul_ps(_mm256_set1_ps(0.5f), v));
}

BERTLET_TARGET_AVX2 inline __m256 act_ps(__m256 v, activation a) {
    if (a == activation::gelu_erf) return gelu_erf_ps(v);
    if (a == activation::gelu_tanh) {
        const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f),
                                       _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
        const __m256 e = exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
        return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    }
    return v;
}

/// 8x8 transpose of r[0..7] in place.
BERTLET_TARGET_AVX2 inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; ++i) {
        u[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x20);
        r[4 + i] = _mm256_permute2f128_ps(u[i], u[4 + i], 0x31);
    }
}

template <int MR>
BERTLET_TARGET_AVX2 void tile_mr(const tile_args& t) {
    __m256 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    const float* a = t.ap;
    const float* b = t.b;
    const std::ptrdiff_t npf = t.pf_n;
    for (std::ptrdiff_t k = 0; k < t.kc; ++k) {
        if (k < npf) _mm_prefetch(reinterpret_cast<const char*>(t.pf[0] + k * panel_width), _MM_HINT_T1);
        const __m256 v0 = _mm256_loadu_ps(b + k * panel_width);
        const __m256 v1 = _mm256_loadu_ps(b + k * panel_width + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m256 av = _mm256_broadcast_ss(a + k * MR + i);
            acc[i][0] = _mm256_fmadd_ps(av, v0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, v1, acc[i][1]);
        }
    }
    const epilogue* ep = t.ep;
    const __m256 alpha = _mm256_set1_ps(ep ? ep->alpha : 1.0f);
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
        const std::ptrdiff_t w = t.cols - h * 8;
        if (w <= 0) break;
        const __m256 bias = t.bias ? load_n(t.bias + h * 8, w) : _mm256_setzero_ps();
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            if (i >= t.rows) break;
            float* c = t.c + i * t.ldc + h * 8;
            __m256 v = acc[i][h];
            if (t.add_c) v = _mm256_add_ps(v, load_n(c, w));
            if (ep) {
                v = _mm256_fmadd_ps(v, alpha, bias);
                if (t.res) v = _mm256_add_ps(v, load_n(t.res + i * ep->ldr + h * 8, w));
                v = act_ps(v, ep->act);
            }
            store_n(c, v, w);
        }
    }
}

/// pack_a_panel<6> with 8x8 register transposes for full panels: for each k, the 6 rows' values are the first 6
/// lanes of one transposed vector, stored as 4 + 2 floats at ap + 6 k (vmaskmovps stores are slow on AMD cores).
BERTLET_TARGET_AVX2 inline void pack_a6(const float* src, std::ptrdiff_t lda, std::ptrdiff_t kc, int rows, int mr,
                                        float* ap) {
    if (rows != 6 || mr != 6) {
        pack_a_panel<6>(src, lda, kc, rows, mr, ap);
        return;
    }
    std::ptrdiff_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
#pragma GCC unroll 6
        for (int i = 0; i < 6; ++i) r[i] = _mm256_loadu_ps(src + i * lda + k);
        r[6] = r[7] = _mm256_setzero_ps();
        transpose8(r);
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            float* o = ap + (k + j) * 6;
            _mm_storeu_ps(o, _mm256_castps256_ps128(r[j]));
            _mm_storel_pi(reinterpret_cast<__m64*>(o + 4), _mm256_extractf128_ps(r[j], 1));
        }
    }
    for (; k < kc; ++k)
        for (int i = 0; i < 6; ++i) ap[k * 6 + i] = src[i * lda + k];
}

struct traits {
    static void pack(const float* src, std::ptrdiff_t lda, std::ptrdiff_t kc, int rows, int mr, float* ap) {
        pack_a6(src, lda, kc, rows, mr, ap);
    }
    static constexpr int MR = 6;
    static constexpr int MR_STEP = 2;
    static constexpr int NP = 1;
    static void tile(const tile_args& t, int mr, int) {
        if (mr == 6) tile_mr<6>(t);
        else if (mr == 4) tile_mr<4>(t);
        else tile_mr<2>(t);
    }
};

inline void gemm(const gemm_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1,
                 float* scratch) {
    gemm_blocked<traits>(g, m0, m1, p0, p1, scratch);
}

/// LayerNorm of R consecutive rows (stride n) at a time, as avx512::layernorm_rows: R independent add / FMA chains
/// overlap (one row alone is latency-bound), gamma / beta are loaded once per R rows, and the numerics are the
/// corrected two-pass scheme (pass 2 also sums d = x - mean to correct the float mean; pass 3 subtracts the mean as
/// a float pair hi + lo). Never E[x^2] - E[x]^2.
template <int R>
BERTLET_TARGET_AVX2 inline void layernorm_rows(float* x, const float* residual, std::ptrdiff_t n, const float* gamma,
                                               const float* beta, float eps) {
    const std::ptrdiff_t nf = n & ~std::ptrdiff_t{7};  // full vectors; the tail (1..7 floats, if any) is masked
    const std::ptrdiff_t nt = n - nf;
    const __m256i mi = lane_mask(nt);
    const __m256 mt = _mm256_castsi256_ps(mi);
    __m256 s[R], c[R], q[R], mv[R], iv[R], lv[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) s[j] = _mm256_setzero_ps();
    // Pass 1: x += residual (stored back: the caller's contract), sum. Masked loads give 0 in the off lanes.
    if (residual) {
        for (std::ptrdiff_t i = 0; i < nf; i += 8) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                const __m256 v = _mm256_add_ps(_mm256_loadu_ps(x + j * n + i), _mm256_loadu_ps(residual + j * n + i));
                _mm256_storeu_ps(x + j * n + i, v);
                s[j] = _mm256_add_ps(s[j], v);
            }
        }
        if (nt) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) {
                const __m256 v = _mm256_add_ps(_mm256_maskload_ps(x + j * n + nf, mi),
                                               _mm256_maskload_ps(residual + j * n + nf, mi));
                _mm256_maskstore_ps(x + j * n + nf, mi, v);
                s[j] = _mm256_add_ps(s[j], v);
            }
        }
    } else {
        for (std::ptrdiff_t i = 0; i < nf; i += 8) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(x + j * n + i));
        }
        if (nt) {
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) s[j] = _mm256_add_ps(s[j], _mm256_maskload_ps(x + j * n + nf, mi));
        }
    }
    float mean[R];
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
        mean[j] = hsum(s[j]) / static_cast<float>(n);
        mv[j] = _mm256_set1_ps(mean[j]);
        c[j] = _mm256_setzero_ps();
        q[j] = _mm256_setzero_ps();
    }
    // Pass 2: sum(d) and sum(d^2), d = x - mean (off lanes of the tail zeroed).
    for (std::ptrdiff_t i = 0; i < nf; i += 8) {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j * n + i), mv[j]);
            c[j] = _mm256_add_ps(c[j], d);
            q[j] = _mm256_fmadd_ps(d, d, q[j]);
        }
    }
    if (nt) {
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            const __m256 d = _mm256_and_ps(mt, _mm256_sub_ps(_mm256_maskload_ps(x + j * n + nf, mi), mv[j]));
            c[j] = _mm256_add_ps(c[j], d);
            q[j] = _mm256_fmadd_ps(d, d, q[j]);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; ++j) {
        const layernorm_stats st = layernorm_row_stats(hsum(c[j]), hsum(q[j]), mean[j], n, eps);
        mv[j] = _mm256_set1_ps(st.hi);
        iv[j] = _mm256_set1_ps(st.inv);
        lv[j] = _mm256_set1_ps(st.lo);
    }
    // Pass 3: (x - mean) / sd * gamma + beta; gamma and beta shared by the R rows.
    for (std::ptrdiff_t i = 0; i < nf; i += 8) {
        const __m256 g = _mm256_loadu_ps(gamma + i), b = _mm256_loadu_ps(beta + i);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            float* xr = x + j * n + i;
            const __m256 d = _mm256_fmsub_ps(_mm256_sub_ps(_mm256_loadu_ps(xr), mv[j]), iv[j], lv[j]);
            _mm256_storeu_ps(xr, _mm256_fmadd_ps(d, g, b));
        }
    }
    if (nt) {
        const __m256 g = _mm256_maskload_ps(gamma + nf, mi), b = _mm256_maskload_ps(beta + nf, mi);
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) {
            float* xr = x + j * n + nf;
            const __m256 d = _mm256_fmsub_ps(_mm256_sub_ps(_mm256_maskload_ps(xr, mi), mv[j]), iv[j], lv[j]);
            _mm256_maskstore_ps(xr, mi, _mm256_fmadd_ps(d, g, b));
        }
    }
}

BERTLET_TARGET_AVX2 inline void layernorm(float* x, const float* residual, std::ptrdiff_t rows, std::ptrdiff_t n,
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

/// Softmax numerators of one row in place: x[i] = exp(x[i] - mx) for i < n; returns their sum.
BERTLET_TARGET_AVX2 inline float exp_row(float* x, std::ptrdiff_t n, float mx) {
    const __m256 mv = _mm256_set1_ps(mx);
    __m256 s = _mm256_setzero_ps();
    for (std::ptrdiff_t i = 0; i < n; i += 8) {
        const __m256 m = _mm256_castsi256_ps(lane_mask(n - i));
        const __m256 e = _mm256_and_ps(m, exp_ps(_mm256_sub_ps(load_n(x + i, n - i), mv)));
        s = _mm256_add_ps(s, e);
        store_n(x + i, e, n - i);
    }
    return hsum(s);
}

BERTLET_TARGET_AVX2 inline void softmax(float* x, std::ptrdiff_t rows, std::ptrdiff_t n, std::ptrdiff_t ld) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
        float* xr = x + r * ld;
        __m256 mx = ninf;
        for (std::ptrdiff_t i = 0; i < n; i += 8) {
            const __m256 m = _mm256_castsi256_ps(lane_mask(n - i));
            mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, load_n(xr + i, n - i), m));
        }
        const __m256 iv = _mm256_set1_ps(1.0f / exp_row(xr, n, hmax(mx)));
        for (std::ptrdiff_t i = 0; i < n; i += 8) store_n(xr + i, _mm256_mul_ps(load_n(xr + i, n - i), iv), n - i);
    }
}

BERTLET_TARGET_AVX2 inline void activate(float* x, std::ptrdiff_t n, activation a) {
    for (std::ptrdiff_t i = 0; i < n; i += 8) store_n(x + i, act_ps(load_n(x + i, n - i), a), n - i);
}

BERTLET_TARGET_AVX2 inline void add3(float* out, const float* a, const float* b, const float* c, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; i += 8)
        store_n(out + i, _mm256_add_ps(_mm256_add_ps(load_n(a + i, n - i), load_n(b + i, n - i)), load_n(c + i, n - i)),
                n - i);
}

BERTLET_TARGET_AVX2 inline void cvt_f16(float* out, const std::uint16_t* in, std::ptrdiff_t n) {
    std::ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
    for (; i < n; ++i) out[i] = f16_to_f32(in[i]);  // exact either way
}

// ---- fused attention (one sequence x one head), as avx512::attention_head with ymm pairs -----------------------
// ctx[L, D] = softmax(scale * Q K^T) V for one head, D % 16 == 0. K_h is transposed once into 16-key panels; per
// tile of up to 6 query rows: S = scale * Q K^T with Q broadcast from its rows (no packing), the row max kept while
// storing, softmax numerators in place (in L1), ctx = S V with V's rows read in place, divided by the row sum at the
// store. 6 rows x 16 columns = 12 ymm accumulators (+ 2 B, 1 broadcast: 15 of 16 registers).

/// acc[i][h] = sum_{k < n} a_i[k] * B[k][8h .. 8h+8), a_i = row i of A (stride lda; rows past `rows` repeat the last
/// one, not stored), B[k] the 16 floats at b + k * bstep.
template <int MR>
BERTLET_TARGET_AVX2 inline void attn_acc(const float* a0, std::ptrdiff_t lda, int rows, const float* b,
                                         std::ptrdiff_t bstep, std::ptrdiff_t n, __m256 (&out)[MR][2]) {
    // local accumulators, copied out once: accumulating into the caller's array made GCC 12 store all 12 of them
    // to the stack on every k (measured: the whole attention ~3x slower)
    const float* a[MR];
    __m256 acc[MR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
        a[i] = a0 + std::min(i, rows - 1) * lda;
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    }
    for (std::ptrdiff_t k = 0; k < n; ++k) {
        const __m256 v0 = _mm256_loadu_ps(b + k * bstep);
        const __m256 v1 = _mm256_loadu_ps(b + k * bstep + 8);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m256 av = _mm256_broadcast_ss(a[i] + k);
            acc[i][0] = _mm256_fmadd_ps(av, v0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, v1, acc[i][1]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
        out[i][0] = acc[i][0];
        out[i][1] = acc[i][1];
    }
}

template <int MR>
BERTLET_TARGET_AVX2 inline void attn_rows(const float* q, std::ptrdiff_t ldq, const float* v, std::ptrdiff_t ldv,
                                          int rows, const float* kp, std::ptrdiff_t L, std::ptrdiff_t D, float scale,
                                          float* s, std::ptrdiff_t lds, float* c, std::ptrdiff_t ldc) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY), al = _mm256_set1_ps(scale);
    __m256 mx[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) mx[i] = ninf;
    for (std::ptrdiff_t p = 0; p * 16 < L; ++p) {  // S = scale * Q K^T, 16 keys at a time
        __m256 acc[MR][2];
        attn_acc<MR>(q, ldq, rows, kp + p * 16 * D, 16, D, acc);
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            const std::ptrdiff_t w = L - p * 16 - h * 8;  // valid keys in this half
            if (w <= 0) break;
            const __m256 m = _mm256_castsi256_ps(lane_mask(w));
#pragma GCC unroll 8
            for (int i = 0; i < MR; ++i) {
                if (i >= rows) break;
                const __m256 y = _mm256_mul_ps(acc[i][h], al);
                store_n(s + i * lds + p * 16 + h * 8, y, w);
                mx[i] = _mm256_max_ps(mx[i], _mm256_blendv_ps(ninf, y, m));
            }
        }
    }
    float inv[MR];
    for (int i = 0; i < rows; ++i)  // softmax numerators in place; 1 / row sum applied in the P V store
        inv[i] = 1.0f / exp_row(s + i * lds, L, hmax(mx[i]));
    for (std::ptrdiff_t d0 = 0; d0 < D; d0 += 16) {  // ctx = S V, 16 output dims at a time
        __m256 acc[MR][2];
        attn_acc<MR>(s, lds, rows, v + d0, ldv, L, acc);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            if (i >= rows) break;
            const __m256 iv = _mm256_set1_ps(inv[i]);
            _mm256_storeu_ps(c + i * ldc + d0, _mm256_mul_ps(acc[i][0], iv));
            _mm256_storeu_ps(c + i * ldc + d0 + 8, _mm256_mul_ps(acc[i][1], iv));
        }
    }
}

/// One head of one sequence: ctx = softmax(scale * q k^T) v; q, k, v are [L, D] with row stride ld, ctx has row
/// stride ldc. D % 16 == 0; scratch holds attention_scratch_floats(L, D) floats (packed.hpp).
BERTLET_TARGET_AVX2 inline void attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld,
                                               float* ctx, std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D,
                                               float scale, float* scratch) {
    if (L <= 0) return;
    float* kp = scratch;
    const std::ptrdiff_t lds = (L + 15) / 16 * 16;
    float* s = kp + lds * D;
    attn_pack_k16(k, ld, L, D, kp);  // packed.hpp
    attn_row_tiles<6>(L, [&](auto r, std::ptrdiff_t q0, int rows) BERTLET_TARGET_AVX2 {
        attn_rows<decltype(r)::value>(q + q0 * ld, ld, v, ld, rows, kp, L, D, scale, s, lds, ctx + q0 * ldc, ldc);
    });
}

}  // namespace bertlet::detail::avx2

#endif
