// bertlet — int8 attention of one (sequence, head) for int8 models on AVX-512 VNNI CPUs (issue #3; docs/INT8.md).
//
//   ctx = softmax(scale * Q K^T) V,  Q, K, V [L, D] (row stride ld), ctx [L, D] (row stride ldc)
//   (the encoder passes head-major Q, K, V, ld = D: its int8 QKV GEMMs write each head's block contiguous)
//
// Both matmuls run as vpdpbusd (u8 x s8, 64 multiply-adds per instruction: twice the bf16 rate of vdpbf16ps) with
// every integer sum exact, so the result is defined by these quantizations and float operations (the scalar
// reference s8_attention_head_ref performs exactly the same ones: same bits):
// * Q and K per token (row), symmetric as the int8 linears' activations: amax = max|x|, s = amax / 127,
//   x8 = round_half_even(x * (127 / amax)) clamped to +-127 (amax = 0 gives s = 0 and zeros).
// * Scores in log2 units without the query scale: y[i, t] = float(sum_d q8[i, d] k8[t, d]) * ks[t], ks[t] =
//   sk[t] * scale * log2 e; m_i = max_t y[i, t]; x = fma(y, sq[i], -(m_i * sq[i])) (= (y - m_i) sq[i], one rounding);
//   the softmax numerator p = round(255 * 2^x) in 0..255 (p255: n = round(x), r = x - n, a degree-3 minimax cubic of
//   255 * 2^r, times 2^n by vscalefps / ldexp, rounded half to even; the row's maximum gives 255).
// * V per channel d over the L tokens: sv[d] = max_t |V[t, d]| / 127, v8 as above.
// * ctx[i, d] = float(sum_t p[i, t] v8[t, d]) * ((1 / float(sum_t p[i, t])) * sv[d]): the probabilities are the
//   quantized numerators normalized by their own (exact integer) sum.
// Kernels (this file): prepare quantizes Q (u8 = q8 + 128 rows), K (S8P16K4 panels of 16 keys with row sums for the
// -128 correction) and V (panels over channels, tokens as k); for L <= 128 and D in 29..32 or 61..64,
// qk_softmax_row turns one query row's scores into its u8 P row in registers while the next row's Q K^T accumulates
// (software-pipelined: the vpdpbusd fill the latency chains of the maximum and the numerators); other shapes use
// qk_softmax_tile (3 query rows at a time in 24 zmm accumulators; longer rows: qk_tile stores scores, a separate
// pass makes P); pv_tile multiplies 12 P rows by V. One head at L 128, D 32 on Zen 4: 9.5 us (3-row tiles: 10.6;
// bf16 attention 15.2, fp32 25; `bertlet_bench_gemm_bf16 --benchmark_filter=fused`; 9.3 us since prepare_block16).
// Sums stay far below 2^31 (|acc| <= 255 * 127 * max(L, D)).
// Accuracy (the int8 MiniLM against HF fp32, all of STS-B test, docs/INT8.md): min cosine 0.99297, Spearman 81.94
// (fp32 82.03; bf16 attention 0.99230 / 81.96; fp32 attention 0.99409 / 81.93).
//
// Scratch (s8_attention_scratch_bytes(L, D), any alignment): q8 [L, dq] (dq = D rounded up to 4) and sq; packed K,
// its u8 corrections (-128 x row sums), scales; packed V, scales, zero row sums; the scores (L > 128 only), u8 P rows
// and reciprocal sums of one block of 12 query rows.
//
// s8_attention_supported(): AVX-512 F/BW/VL/DQ + VNNI and an x86 build. Elsewhere s8_attention_head runs the
// reference (which allocates: tests and fallback only).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bertlet/kernels/avx512.hpp"
#include "bertlet/kernels/cpu.hpp"
#include "bertlet/kernels/gemm_s8.hpp"

#if defined(BERTLET_HAVE_AVX512_PATH)
#define BERTLET_S8A_X86 1
#define BERTLET_TARGET_S8A __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma,f16c")))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace bertlet {

namespace detail::s8a {

inline constexpr std::ptrdiff_t rb = 12;  // query rows per block (scores and P of one block live in the scratch)
// 255 * 2^r on |r| <= 1/2: degree-3 minimax (relative error) coefficients of 2^r times 255, rounded to float: relative
// error < 7.5e-5, i.e. < 0.02 of a quantization step of P; p(0) = 254.98 rounds to 255
inline constexpr float e0 = 254.981659f, e1 = 176.781555f, e2 = 61.8658371f, e3 = 14.0687761f;
inline constexpr float log2e = 1.44269504088896341f;

struct layout {
    std::ptrdiff_t L, D, dq, np, lp4, nd, lds, ldp;
    std::size_t o_q8, o_sq, o_kp, o_kc, o_ks, o_vp, o_sv, o_vz, o_s, o_p, o_inv, bytes;
};

inline std::size_t up64(std::size_t b) noexcept { return (b + 63) / 64 * 64; }

inline layout make_layout(std::ptrdiff_t L, std::ptrdiff_t D) noexcept {
    layout y{};
    y.L = L;
    y.D = D;
    y.dq = (D + 3) / 4 * 4;
    y.np = (L + 15) / 16;
    y.lp4 = (L + 3) / 4 * 4;
    y.nd = (D + 15) / 16;
    y.lds = y.np * 16;
    y.ldp = (y.np * 16 + 63) / 64 * 64;
    const auto n = [](std::ptrdiff_t v) { return static_cast<std::size_t>(v); };
    std::size_t o = 0;
    auto take = [&](std::size_t b) {
        const std::size_t at = o;
        o += up64(b);
        return at;
    };
    y.o_q8 = take(n(L * y.dq));
    y.o_sq = take(n(y.np * 16) * 4);
    y.o_kp = take(n(y.np * 16 * y.dq));
    y.o_kc = take(n(y.np * 16) * 4);
    y.o_ks = take(n(y.np * 16) * 4);
    y.o_vp = take(n(y.nd * 16 * y.lp4));
    y.o_sv = take(n(y.nd * 16) * 4);
    y.o_vz = take(n(y.nd * 16) * 4);
    const std::ptrdiff_t rows = std::min(L, rb);
    y.o_s = take(n(rows * y.lds) * 4);
    y.o_p = take(n(rows * y.ldp));
    y.o_inv = take(n(rows + 16) * 4);  // written 16 at a time
    y.bytes = o + 64;  // + alignment of the base
    return y;
}

inline float smax(float a, float b) noexcept { return a > b ? a : b; }  // vmaxps(a, b): a NaN operand gives b

/// A rounded float clamped to +-127 as the kernel's vcvtps2dq + vpminsd / vpmaxsd give it (NaN -> INT_MIN -> -127).
inline std::int32_t clamp127(float q) noexcept {
    if (!(q > -127.0f)) return -127;
    return q >= 127.0f ? 127 : static_cast<std::int32_t>(q);
}

/// 255 * 2^x rounded to an integer, clamped to 0..255 (x <= ~0): the kernel's operations. n = round(x) (half to
/// even, vrndscaleps), r = x - n exactly, 255 * 2^r by the cubic, times 2^n (vscalefps; ldexp rounds the same way,
/// down to the denormals), rounded half to even (vcvtps2dq), clamped as the kernel's saturating packs do. Below
/// -200 the result is 0 either way (the kernel's product underflows); NaN (a NaN input row) gives 0 here.
inline std::int32_t p255(float x) noexcept {
    if (!(x >= -200.0f)) return 0;
    if (x > 8.0f) return 255;  // never for finite rows (x <= 0 up to one rounding)
    const float n = std::nearbyint(x);
    const float r = x - n;
    float p = e3;
    p = std::fma(p, r, e2);
    p = std::fma(p, r, e1);
    p = std::fma(p, r, e0);
    const float e = std::nearbyint(std::ldexp(p, static_cast<int>(n)));
    return e >= 255.0f ? 255 : static_cast<std::int32_t>(e);
}

/// Row quantization (Q, K): returns the scale amax / 127, writes round(x * 127 / amax) clamped to +-127.
inline float quantize_row_ref(const float* x, std::ptrdiff_t n, std::int32_t* out) noexcept {
    float amax = 0.0f;
    for (std::ptrdiff_t i = 0; i < n; ++i) amax = smax(std::fabs(x[i]), amax);
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        out[i] = clamp127(std::nearbyint(x[i] * inv));
    }
    return amax / 127.0f;
}

}  // namespace detail::s8a

/// Bytes of scratch s8_attention_head needs for one head at length L, head size D (any alignment).
inline std::size_t s8_attention_scratch_bytes(std::size_t L, std::size_t D) noexcept {
    return detail::s8a::make_layout(static_cast<std::ptrdiff_t>(L), static_cast<std::ptrdiff_t>(D)).bytes;
}

/// True if s8_attention_head has its fast kernel here (x86 build, AVX-512 F/BW/VL and VNNI).
inline bool s8_attention_supported(const cpu_features& f = cpu()) noexcept {
#if defined(BERTLET_S8A_X86)
    return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni;
#else
    (void)f;
    return false;
#endif
}

/// Scalar reference of s8_attention_head (the definition in the header comment; same bits as the kernel). Needs no
/// scratch; allocates (tests and non-VNNI fallback only).
inline void s8_attention_head_ref(const float* q, const float* k, const float* v, std::ptrdiff_t ld, float* ctx,
                                  std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale) {
    using namespace detail::s8a;
    if (L <= 0 || D <= 0) return;
    const std::size_t l = static_cast<std::size_t>(L), d = static_cast<std::size_t>(D);
    std::vector<std::int32_t> q8(l * d), k8(l * d), v8(l * d), p(l);
    std::vector<float> sq(l), ks(l), sv(d);
    for (std::ptrdiff_t i = 0; i < L; ++i) sq[i] = quantize_row_ref(q + i * ld, D, &q8[i * d]);
    const float scale2 = scale * log2e;
    for (std::ptrdiff_t t = 0; t < L; ++t) ks[t] = quantize_row_ref(k + t * ld, D, &k8[t * d]) * scale2;
    for (std::ptrdiff_t c = 0; c < D; ++c) {
        float amax = 0.0f;
        for (std::ptrdiff_t t = 0; t < L; ++t) amax = smax(std::fabs(v[t * ld + c]), amax);
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        sv[c] = amax / 127.0f;
        for (std::ptrdiff_t t = 0; t < L; ++t) {
            v8[t * d + c] = clamp127(std::nearbyint(v[t * ld + c] * inv));
        }
    }
    std::vector<float> y(l);
    for (std::ptrdiff_t i = 0; i < L; ++i) {
        float m = -INFINITY;
        for (std::ptrdiff_t t = 0; t < L; ++t) {
            std::int32_t acc = 0;
            for (std::ptrdiff_t c = 0; c < D; ++c) acc += q8[i * d + c] * k8[t * d + c];
            y[t] = static_cast<float>(acc) * ks[t];  // the key scale (times scale * log2 e) only
            m = smax(m, y[t]);                       // vmaxps(max, y)
        }
        const float ms = m * sq[i];
        std::int64_t sum = 0;
        for (std::ptrdiff_t t = 0; t < L; ++t) {
            p[t] = p255(std::fma(y[t], sq[i], -ms));  // (y - m) * sq in one rounding
            sum += p[t];
        }
        const float inv = 1.0f / static_cast<float>(sum);
        for (std::ptrdiff_t c = 0; c < D; ++c) {
            std::int32_t acc = 0;
            for (std::ptrdiff_t t = 0; t < L; ++t) acc += p[t] * v8[t * d + c];
            ctx[i * ldc + c] = static_cast<float>(acc) * (inv * sv[c]);  // gemm_s8: float(acc) * (sx * sw)
        }
    }
}

#if defined(BERTLET_S8A_X86)
namespace detail::s8a {

BERTLET_TARGET_S8A inline __mmask16 mask16(std::ptrdiff_t n) {
    if (n >= 16) return static_cast<__mmask16>(0xFFFF);
    return n <= 0 ? static_cast<__mmask16>(0) : static_cast<__mmask16>((1u << n) - 1u);
}

/// p255 on 16 lanes before its clamp (lanes outside m give 0): 6 vector operations (the store's saturating packs
/// clamp; for finite rows the value is in 0..255 already, as x <= 0 up to one rounding).
BERTLET_TARGET_S8A inline __m512i p255(__m512 x, __mmask16 m) {
    const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(e3), r, _mm512_set1_ps(e2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(e1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(e0));
    return _mm512_maskz_cvtps_epi32(m, _mm512_scalef_ps(p, n));
}

/// p255's clamp for one vector stored with vpmovusdb (unsigned saturation): the same value, for the row sum.
BERTLET_TARGET_S8A inline __m512i clamp255(__m512i q) { return _mm512_min_epu32(q, _mm512_set1_epi32(255)); }

/// acc += u8 x s8 dot products of 4 (vpdpbusd). GCC 12 copies every accumulator of an intrinsic's loop-carried
/// `acc = _mm512_dpbusd_epi32(acc, ...)` into a fresh register and back each iteration (and spills some: the
/// attention tiles below ran 2x slower); the asm form with a tied "+v" operand keeps each in one register.
BERTLET_TARGET_S8A inline void dpbusd(__m512i& acc, __m512i x, __m512i w) {
#if defined(__GNUC__) && !defined(__clang__)
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(x), "v"(w));
#else
    acc = _mm512_dpbusd_epi32(acc, x, w);
#endif
}

/// Lane i = the maximum of v[i]'s lanes, for 16 vectors at once (a shuffle tree: 45 operations instead of 16
/// horizontal reductions). The inputs hold no NaN (absolute values accumulated by vmaxps), so the order is free.
BERTLET_TARGET_S8A inline __m512 hmax16(const __m512* v) {
    __m512 u[8], w[4], x[2];
    for (int k = 0; k < 8; ++k)  // 128-bit chunks [a0|a2, a1|a3, b0|b2, b1|b3]
        u[k] = _mm512_max_ps(_mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0x44),
                             _mm512_shuffle_f32x4(v[2 * k], v[2 * k + 1], 0xEE));
    for (int k = 0; k < 4; ++k)  // chunk c: 4 partial maxima of row 4 k + c
        w[k] = _mm512_max_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0x88),
                             _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0xDD));
    for (int k = 0; k < 2; ++k)
        x[k] = _mm512_max_ps(_mm512_shuffle_ps(w[2 * k], w[2 * k + 1], 0x44),
                             _mm512_shuffle_ps(w[2 * k], w[2 * k + 1], 0xEE));
    // lane 4 c + j: row 4 j + c
    const __m512 r = _mm512_max_ps(_mm512_shuffle_ps(x[0], x[1], 0x88), _mm512_shuffle_ps(x[0], x[1], 0xDD));
    return _mm512_permutexvar_ps(_mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0), r);
}

/// round(x * inv) clamped to +-127 as int32 lanes, without the upper clamp: x * inv <= 127 up to rounding, so the
/// conversion gives at most 127 (NaN -> INT_MIN -> -127, as the reference's clamp127).
BERTLET_TARGET_S8A inline __m512i q127lo(__m512 x, __m512 inv) {
    return _mm512_max_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(x, inv)), _mm512_set1_epi32(-127));
}

/// prepare's Q and K for one whole block of 16 rows when D = 16 ND (ND 1, 2 or 4, so dq = D): the same values as
/// the general loop below, with fewer operations. Per matrix (Q, then K: 16 maxima chains live at a time) the row
/// maxima as there (max(|chunk|, 0) first, so a NaN lane is dropped the same way), then every four 16-float chunks
/// become one 64-byte vector: vcvtps2dq of x * inv, two saturating packs (INT_MIN from a NaN -> -128), one dword
/// permute into order and max(., -127) per byte (the general loop's clamp and narrowing give the same byte for every
/// value vcvtps2dq can produce here: |x * inv| <= 127 or INT_MIN). Q's vectors are its rows in order (+128 as xor
/// 0x80), stored whole; K's stay in registers, rows paired so that 4 x 4 dword transposes within 128-bit lanes and
/// one two-source qword permute per k-group give the panel (24 shuffles for D 32 instead of a 16 x 16 transpose
/// through memory).
template <int ND>
BERTLET_TARGET_S8A inline __m512 amax16(const float* x, std::ptrdiff_t ld) {
    __m512 m[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
        m[i] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i * ld)), _mm512_setzero_ps());
#pragma GCC unroll 4
        for (int c = 1; c < ND; ++c) m[i] = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + i * ld + 16 * c)), m[i]);
    }
    return hmax16(m);
}

/// Four 16-float chunks (row r[u], chunk c[u]) of x times their row's reciprocal scale -> 64 bytes in chunk order.
BERTLET_TARGET_S8A __attribute__((always_inline)) inline __m512i bytes4(const float* x, std::ptrdiff_t ld,
                                                                        const float* inv, const int (&r)[4],
                                                                        const int (&c)[4]) {
    __m512i v[4];
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u)
        v[u] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + r[u] * ld + 16 * c[u]), _mm512_set1_ps(inv[r[u]])));
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(v[0], v[1]), _mm512_packs_epi32(v[2], v[3]));
    return _mm512_max_epi8(_mm512_permutexvar_epi32(perm, b), _mm512_set1_epi8(-127));
}

/// 4 x 4 dword transpose within each 128-bit lane: t[d].lane = (a.lane[d], b.lane[d], c.lane[d], e.lane[d]).
BERTLET_TARGET_S8A __attribute__((always_inline)) inline void transpose4_lanes(__m512i a, __m512i b, __m512i c,
                                                                                __m512i e, __m512i (&t)[4]) {
    const __m512i a0 = _mm512_unpacklo_epi32(a, b), a1 = _mm512_unpackhi_epi32(a, b);
    const __m512i a2 = _mm512_unpacklo_epi32(c, e), a3 = _mm512_unpackhi_epi32(c, e);
    t[0] = _mm512_unpacklo_epi64(a0, a2);
    t[1] = _mm512_unpackhi_epi64(a0, a2);
    t[2] = _mm512_unpacklo_epi64(a1, a3);
    t[3] = _mm512_unpackhi_epi64(a1, a3);
}

template <int ND>
BERTLET_TARGET_S8A inline void prepare_block16(const float* q, const float* k, std::ptrdiff_t ld, float scale2,
                                               unsigned char* q8, float* sq, float* ks, unsigned char* kp,
                                               std::int32_t* kc) {
    static_assert(ND == 1 || ND == 2 || ND == 4, "D = 16, 32 or 64");
    constexpr int DQ = 16 * ND;
    const __m512 c127 = _mm512_set1_ps(127.0f), zero = _mm512_setzero_ps();
    alignas(64) float inv[16];
    {
        const __m512 qa = amax16<ND>(q, ld);
        _mm512_storeu_ps(sq, _mm512_div_ps(qa, c127));
        _mm512_store_ps(inv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(qa, zero, _CMP_GT_OQ), c127, qa));
        const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
#pragma GCC unroll 16
        for (int z = 0; z < 4 * ND; ++z) {  // chunks 4z .. 4z + 3 in row order
            const int r[4] = {(4 * z) / ND, (4 * z + 1) / ND, (4 * z + 2) / ND, (4 * z + 3) / ND};
            const int c[4] = {(4 * z) % ND, (4 * z + 1) % ND, (4 * z + 2) % ND, (4 * z + 3) % ND};
            _mm512_storeu_si512(q8 + 64 * z, _mm512_xor_si512(bytes4(q, ld, inv, r, c), flip));
        }
    }
    const __m512 ka = amax16<ND>(k, ld);
    _mm512_storeu_ps(ks, _mm512_mul_ps(_mm512_div_ps(ka, c127), _mm512_set1_ps(scale2)));  // (amax / 127) * scale2
    _mm512_store_ps(inv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(ka, zero, _CMP_GT_OQ), c127, ka));
    __m512i g[DQ / 4];  // k-group j: dword j of the 16 rows
    if constexpr (ND == 4) {
        __m512 rw[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
            const int r[4] = {i, i, i, i}, c[4] = {0, 1, 2, 3};
            rw[i] = _mm512_castsi512_ps(bytes4(k, ld, inv, r, c));
        }
        avx512::transpose16(rw);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) g[j] = _mm512_castps_si512(rw[j]);
    } else if constexpr (ND == 2) {
        // z[j] = rows j (lanes 0, 1) and j + 8 (lanes 2, 3); a lane transpose over z0..3 gives t[d]: lane 0 rows
        // 0..3 dword d, lane 1 rows 0..3 dword 4 + d, lanes 2 / 3 the same of rows 8..11 (u: rows 4..7, 12..15)
        __m512i z[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; ++j) {
            const int r[4] = {j, j, j + 8, j + 8}, c[4] = {0, 1, 0, 1};
            z[j] = bytes4(k, ld, inv, r, c);
        }
        __m512i t[4], u[4];
        transpose4_lanes(z[0], z[1], z[2], z[3], t);
        transpose4_lanes(z[4], z[5], z[6], z[7], u);
        const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13), hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
#pragma GCC unroll 4
        for (int d = 0; d < 4; ++d) {
            g[d] = _mm512_permutex2var_epi64(t[d], lo, u[d]);
            g[4 + d] = _mm512_permutex2var_epi64(t[d], hi, u[d]);
        }
    } else {
        // z[j] = rows j, j + 4, j + 8, j + 12 (one per lane): the lane transpose is the panel
        __m512i z[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            const int r[4] = {j, j + 4, j + 8, j + 12}, c[4] = {0, 0, 0, 0};
            z[j] = bytes4(k, ld, inv, r, c);
        }
        transpose4_lanes(z[0], z[1], z[2], z[3], g);
    }
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i sum = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int j = 0; j < DQ / 4; ++j) {
        dpbusd(sum, ones, g[j]);
        _mm512_store_si512(kp + 64 * j, g[j]);
    }
    _mm512_storeu_si512(kc, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
}

/// Quantizes Q (u8 = q8 + 128, rows of dq bytes), K (S8P16K4 panels, corrections, scaled key scales) and V
/// (S8P16K4 panels over channels, channel scales) into the scratch. ND = ceil(D / 16) chunks per row (only the last
/// one masked). Q and K go 16 rows (one key panel) at a time, each block's rows read once and then hot: row maxima
/// (hmax16), scales and reciprocals 16 rows per vector, Q's bytes, K's rows into a 16 x 64-byte block and from there
/// per k-group the 16 keys' dwords (the panel's 64 bytes) by a 16 x 16 dword transpose and one vpdpbusd with ones
/// for the row sums, stored as the Q K^T accumulators' start -128 x sum (the VNNI kernel's u8 correction). Rows past
/// L are zero rows (zero bytes, corrections and scales).
template <int ND>
BERTLET_TARGET_S8A inline void prepare(const layout& y, const float* q, const float* k, const float* v,
                                       std::ptrdiff_t ld, float scale2, unsigned char* base) {
    const std::ptrdiff_t L = y.L, D = y.D, dq = y.dq;
    auto* q8 = base + y.o_q8;
    auto* sq = reinterpret_cast<float*>(base + y.o_sq);
    auto* kp = base + y.o_kp;
    auto* kc = reinterpret_cast<std::int32_t*>(base + y.o_kc);
    auto* ks = reinterpret_cast<float*>(base + y.o_ks);
    auto* vp = base + y.o_vp;
    auto* sv = reinterpret_cast<float*>(base + y.o_sv);
    std::memset(base + y.o_vz, 0, static_cast<std::size_t>(y.nd * 16) * 4);  // V's row sums: P needs no correction
    const __mmask16 mlast = mask16(D - 16 * (ND - 1));
    const auto chunk = [mlast](const float* x, int c) BERTLET_TARGET_S8A {
        return c + 1 < ND ? _mm512_loadu_ps(x + 16 * c) : _mm512_maskz_loadu_ps(mlast, x + 16 * c);
    };
    const __m512 c127 = _mm512_set1_ps(127.0f), s2 = _mm512_set1_ps(scale2), zero = _mm512_setzero_ps();
    const __m512i ones = _mm512_set1_epi8(1), b128 = _mm512_set1_epi32(128);
    alignas(64) unsigned char blk[16 * 64];
    alignas(64) float qinv[16], kinv[16];
    for (std::ptrdiff_t p = 0; p < y.np; ++p) {
        const std::ptrdiff_t i0 = p * 16, rows = std::min<std::ptrdiff_t>(16, L - i0);
        if constexpr (ND != 3) {
            if (rows == 16 && D == 16 * ND) {
                prepare_block16<ND>(q + i0 * ld, k + i0 * ld, ld, scale2, q8 + i0 * dq, sq + i0, ks + i0,
                                    kp + p * 16 * dq, kc + 16 * p);
                continue;
            }
        }
        __m512 mq[16], mk[16];
        for (std::ptrdiff_t i = 0; i < 16; ++i) {
            mq[i] = mk[i] = zero;
            if (i >= rows) continue;
            const float* qr = q + (i0 + i) * ld;
            const float* kr = k + (i0 + i) * ld;
#pragma GCC unroll 4
            for (int c = 0; c < ND; ++c) {
                mq[i] = _mm512_max_ps(_mm512_abs_ps(chunk(qr, c)), mq[i]);
                mk[i] = _mm512_max_ps(_mm512_abs_ps(chunk(kr, c)), mk[i]);
            }
        }
        const __m512 qa = hmax16(mq), ka = hmax16(mk);
        _mm512_storeu_ps(sq + i0, _mm512_div_ps(qa, c127));
        _mm512_storeu_ps(ks + i0, _mm512_mul_ps(_mm512_div_ps(ka, c127), s2));  // (amax / 127) * scale2
        _mm512_store_ps(qinv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(qa, zero, _CMP_GT_OQ), c127, qa));
        _mm512_store_ps(kinv, _mm512_maskz_div_ps(_mm512_cmp_ps_mask(ka, zero, _CMP_GT_OQ), c127, ka));
        for (std::ptrdiff_t i = 0; i < 16; ++i) {
            unsigned char* row = blk + 64 * i;
            if (i >= rows) {
                _mm512_store_si512(row, _mm512_setzero_si512());
                continue;
            }
            const float* qr = q + (i0 + i) * ld;
            const float* kr = k + (i0 + i) * ld;
            const __m512 qi = _mm512_set1_ps(qinv[i]), ki = _mm512_set1_ps(kinv[i]);
            unsigned char* qo = q8 + (i0 + i) * dq;
#pragma GCC unroll 4
            for (int c = 0; c < ND; ++c) {
                const __m128i qb = _mm512_cvtepi32_epi8(_mm512_add_epi32(q127lo(chunk(qr, c), qi), b128));
                if (c + 1 < ND) _mm_storeu_si128(reinterpret_cast<__m128i*>(qo + 16 * c), qb);
                else _mm_mask_storeu_epi8(qo + 16 * c, mask16(dq - 16 * c), qb);
                _mm_store_si128(reinterpret_cast<__m128i*>(row + 16 * c),
                                _mm512_cvtepi32_epi8(q127lo(chunk(kr, c), ki)));
            }
        }
        // the panel: k-group g = dword g of the 16 rows, a 16 x 16 dword transpose of the block (vpgatherdd, one per
        // group, took ~5x as long on Zen 4)
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) r[i] = _mm512_load_ps(reinterpret_cast<const float*>(blk + 64 * i));
        avx512::transpose16(r);
        __m512i sum = _mm512_setzero_si512();
        unsigned char* dst = kp + p * 16 * dq;
#pragma GCC unroll 16
        for (int g = 0; g < 4 * ND; ++g) {
            if (g >= dq / 4) break;
            const __m512i w = _mm512_castps_si512(r[g]);
            dpbusd(sum, ones, w);
            _mm512_store_si512(dst + 64 * g, w);
        }
        _mm512_storeu_si512(kc + 16 * p, _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sum, 7)));
    }
    // V: channel maxima (four independent chains), then groups of 4 tokens interleaved into dwords (token t % 4 in
    // byte t % 4): the four int32 vectors narrowed by saturating packs (values in -127..127 already), then one byte
    // shuffle per 128-bit lane turns [t0 c0..3 | t1 c0..3 | t2 .. | t3 ..] into [c0 t0..3 | c1 t0..3 | ..]
    const __m512i tr = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15));
#pragma GCC unroll 4
    for (int dp = 0; dp < ND; ++dp) {
        const float* vc = v + 16 * dp;
        const __mmask16 m = dp + 1 < ND ? __mmask16(0xFFFF) : mlast;
        __m512 a0 = zero, a1 = zero, a2 = zero, a3 = zero;
        std::ptrdiff_t t = 0;
        for (; t + 4 <= L; t += 4) {
            a0 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, vc + t * ld)), a0);
            a1 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, vc + (t + 1) * ld)), a1);
            a2 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, vc + (t + 2) * ld)), a2);
            a3 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, vc + (t + 3) * ld)), a3);
        }
        for (; t < L; ++t) a0 = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, vc + t * ld)), a0);
        const __m512 amax = _mm512_max_ps(_mm512_max_ps(a0, a1), _mm512_max_ps(a2, a3));  // no NaN lanes: any order
        _mm512_storeu_ps(sv + 16 * dp, _mm512_div_ps(amax, c127));
        const __mmask16 live = _mm512_cmp_ps_mask(amax, zero, _CMP_GT_OQ);
        const __m512 inv = _mm512_maskz_div_ps(live, c127, amax);
        unsigned char* dst = vp + dp * 16 * y.lp4;
        for (t = 0; t + 4 <= L; t += 4) {
            // the clamp after the saturating packs, once per 64 bytes (INT_MIN -> -128 -> -127: q127lo's bytes)
            const float* r = vc + t * ld;
            const __m512i b0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, r), inv));
            const __m512i b1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, r + ld), inv));
            const __m512i b2 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, r + 2 * ld), inv));
            const __m512i b3 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, r + 3 * ld), inv));
            const __m512i bytes = _mm512_max_epi8(
                _mm512_packs_epi16(_mm512_packs_epi32(b0, b1), _mm512_packs_epi32(b2, b3)), _mm512_set1_epi8(-127));
            _mm512_storeu_si512(dst + (t / 4) * 64, _mm512_shuffle_epi8(bytes, tr));
        }
        if (t < y.lp4) {  // the last 1..3 tokens, zero tokens after them
            __m512i b[4];
            for (int j = 0; j < 4; ++j)
                b[j] = t + j < L ? q127lo(_mm512_maskz_loadu_ps(m, vc + (t + j) * ld), inv) : _mm512_setzero_si512();
            const __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(b[0], b[1]), _mm512_packs_epi32(b[2], b[3]));
            _mm512_storeu_si512(dst + (t / 4) * 64, _mm512_shuffle_epi8(bytes, tr));
        }
    }
}

/// The integer part of Q K^T for MR query rows (u8, stride dq) x NP key panels: acc = sum q8 k8 over the dq / 4
/// k-groups, starting at kc = -128 x the key row sums (prepare's u8 correction of the Q bytes, as the GEMM kernel).
template <int MR, int NP>
BERTLET_TARGET_S8A __attribute__((always_inline)) inline void qk_acc(const unsigned char* q8, std::ptrdiff_t dq,
                                                                     const unsigned char* kp, const std::int32_t* kc,
                                                                     __m512i (&acc)[MR][NP]) {
    const std::ptrdiff_t ps = 16 * dq, groups = dq / 4;
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
        const __m512i c = _mm512_loadu_si512(kc + 16 * j);
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) acc[i][j] = c;
    }
    const unsigned char* x = q8;
    const unsigned char* w = kp;
    for (std::ptrdiff_t g = 0; g < groups; ++g, x += 4, w += 64) {
        __m512i xb[MR];
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) xb[i] = _mm512_set1_epi32(s8_load32(x + i * dq));
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) {
            const __m512i wv = _mm512_loadu_si512(w + j * ps);
#pragma GCC unroll 4
            for (int i = 0; i < MR; ++i) dpbusd(acc[i][j], xb[i], wv);
        }
    }
}

/// Q K^T of MR query rows x NP key panels (16 keys each) into the score rows s (stride lds, column 16 j of the
/// chunk): y = float(acc) * ks[t] (the query scale comes in at the softmax), and the running row maxima mx over the
/// valid keys (`valid` keys from the chunk's start; the last panel's padding keys score 0 and are kept out of the max).
template <int MR, int NP>
BERTLET_TARGET_S8A inline void qk_tile(const unsigned char* q8, std::ptrdiff_t dq, const unsigned char* kp,
                                       const std::int32_t* kc, const float* ks, std::ptrdiff_t valid, float* s,
                                       std::ptrdiff_t lds, __m512* mx) {
    __m512i acc[MR][NP];
    qk_acc<MR, NP>(q8, dq, kp, kc, acc);
    __m512 mxl[MR];  // local maxima: through the pointer GCC reloaded and stored them around every score store
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) mxl[i] = mx[i];
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
        const __m512 ksj = _mm512_loadu_ps(ks + 16 * j);
        const __mmask16 m = mask16(valid - 16 * j);
#pragma GCC unroll 4
        for (int i = 0; i < MR; ++i) {
            const __m512 y = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][j]), ksj);
            _mm512_storeu_ps(s + i * lds + 16 * j, y);
            mxl[i] = _mm512_mask_max_ps(mxl[i], m, mxl[i], y);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) mx[i] = mxl[i];
}

/// Q K^T and the softmax of MR query rows against all L <= 16 NP keys in registers: scores (as qk_tile), row maxima,
/// u8 numerators into the P rows (stride ldp; bytes up to 16 NP written, keys >= L as 0) and their integer sums. The
/// scores never leave the registers. Same operations as qk_tile + the separate softmax pass, so the same bits.
template <int MR, int NP>
BERTLET_TARGET_S8A inline void qk_softmax_tile(const unsigned char* q8, std::ptrdiff_t dq, const float* sq,
                                               const unsigned char* kp, const std::int32_t* kc, const float* ks,
                                               std::ptrdiff_t L, unsigned char* p8, std::ptrdiff_t ldp,
                                               std::int32_t* sums) {
    __m512i acc[MR][NP];
    qk_acc<MR, NP>(q8, dq, kp, kc, acc);
    const __mmask16 mlast = mask16(L - 16 * (NP - 1));  // earlier panels are full
#pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
        __m512 y[NP];
        __m512 mx = _mm512_set1_ps(-INFINITY);
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) {
            y[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][j]), _mm512_loadu_ps(ks + 16 * j));
            mx = j + 1 < NP ? _mm512_max_ps(mx, y[j]) : _mm512_mask_max_ps(mx, mlast, mx, y[j]);
        }
        // x = (y - max) * sq[i] = fma(y, sq, -(max * sq))
        const float sqi = sq[i];
        const __m512 sqv = _mm512_set1_ps(sqi), nms = _mm512_set1_ps(-(avx512::hmax(mx) * sqi));
        __m512i sum = _mm512_setzero_si512(), sum64 = _mm512_setzero_si512();
        unsigned char* pr = p8 + i * ldp;
        int j = 0;
#pragma GCC unroll 2
        for (; j + 4 <= NP; j += 4) {  // 64 numerators -> one 64-byte store (saturating packs, then the lane order)
            const __m512i a = p255(_mm512_fmadd_ps(y[j], sqv, nms), j + 1 < NP ? __mmask16(0xFFFF) : mlast);
            const __m512i b = p255(_mm512_fmadd_ps(y[j + 1], sqv, nms), j + 2 < NP ? __mmask16(0xFFFF) : mlast);
            const __m512i c = p255(_mm512_fmadd_ps(y[j + 2], sqv, nms), j + 3 < NP ? __mmask16(0xFFFF) : mlast);
            const __m512i d = p255(_mm512_fmadd_ps(y[j + 3], sqv, nms), j + 4 < NP ? __mmask16(0xFFFF) : mlast);
            const __m512i bytes = _mm512_packus_epi16(_mm512_packus_epi32(a, b), _mm512_packus_epi32(c, d));
            sum64 = _mm512_add_epi64(sum64, _mm512_sad_epu8(bytes, _mm512_setzero_si512()));  // of the stored bytes
            // per 128-bit lane l the packs give a[4l..4l+3] b[..] c[..] d[..]: dword 4l + v holds vector v's group l
            const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
            _mm512_storeu_si512(pr + 16 * j, _mm512_permutexvar_epi32(order, bytes));
        }
#pragma GCC unroll 3
        for (; j < NP; ++j) {
            const __m512i a = p255(_mm512_fmadd_ps(y[j], sqv, nms), j + 1 < NP ? __mmask16(0xFFFF) : mlast);
            sum = _mm512_add_epi32(sum, clamp255(a));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(pr + 16 * j), _mm512_cvtusepi32_epi8(a));
        }
        sums[i] = static_cast<std::int32_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(sum64, _mm512_cvtepu32_epi64(
            _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1))))));
    }
}

/// The qk_softmax_tile work for one query row at a time, software-pipelined: while row r's numerators are computed,
/// the Q K^T accumulators of the next row (`qn`; null: none) build up, one k-group of its vpdpbusd between every two
/// of row r's numerator vectors. A 3-row tile computes its scores and then waits on the maximum's latency chain and
/// the numerators' with little else to run (the vpdpbusd of the next tile start only after them; ~40 % of
/// qk_softmax_tile's time); here the vpdpbusd fill those waits. G = dq / 4 k-groups, NP <= 8 key panels (L <= 128).
/// acc: row r's accumulators on entry (qk_acc<1, NP>), the next row's on return. Same operations as
/// qk_softmax_tile, so the same bits.
template <int G, int NP>
BERTLET_TARGET_S8A inline void qk_softmax_row(__m512i (&acc)[NP], const unsigned char* qn, const float* sq,
                                              const unsigned char* kp, const std::int32_t* kc, const float* ks,
                                              std::ptrdiff_t L, unsigned char* pr, std::int32_t* sum) {
    constexpr std::ptrdiff_t ps = 16 * 4 * G;  // bytes per key panel
    const __mmask16 mlast = mask16(L - 16 * (NP - 1));
    __m512 y[NP], t[NP];
#pragma GCC unroll 8
    for (int j = 0; j < NP; ++j) {
        y[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[j]), _mm512_loadu_ps(ks + 16 * j));
        t[j] = y[j];
    }
    // the maximum over the valid keys: padding lanes of the last panel take a valid score (panel 0's; -inf alone)
    t[NP - 1] = _mm512_mask_blend_ps(mlast, NP > 1 ? t[0] : _mm512_set1_ps(-INFINITY), t[NP - 1]);
#pragma GCC unroll 4
    for (int w = 1; w < NP; w *= 2)
#pragma GCC unroll 4
        for (int j = 0; j + w < NP; j += 2 * w) t[j] = _mm512_max_ps(t[j], t[j + w]);
    __m512 m = t[0];  // the row maximum in every lane
    m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0x4E));
    m = _mm512_max_ps(m, _mm512_shuffle_f32x4(m, m, 0xB1));
    m = _mm512_max_ps(m, _mm512_permute_ps(m, 0x4E));
    m = _mm512_max_ps(m, _mm512_permute_ps(m, 0xB1));
    const __m512 sqv = _mm512_set1_ps(sq[0]), nms = _mm512_mul_ps(m, _mm512_set1_ps(-sq[0]));  // -(max * sq)
    if (qn) {
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) acc[j] = _mm512_loadu_si512(kc + 16 * j);
    }
    constexpr int NP4 = NP / 4 * 4;
    const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    __m512i pv[4];
    __m512i sum64 = _mm512_setzero_si512(), sum32 = _mm512_setzero_si512();
#pragma GCC unroll 16
    for (int g = 0; g < (G > NP ? G : NP); ++g) {
        if (g < G && qn) {
            const __m512i xb = _mm512_set1_epi32(s8_load32(qn + 4 * g));
#pragma GCC unroll 8
            for (int j = 0; j < NP; ++j) dpbusd(acc[j], xb, _mm512_loadu_si512(kp + j * ps + 64 * g));
        }
        if (g < NP) {
            const __m512i a = p255(_mm512_fmadd_ps(y[g], sqv, nms), g + 1 < NP ? __mmask16(0xFFFF) : mlast);
            if (g < NP4) {
                if ((g & 1) == 0) pv[g & 3] = a;
                else pv[g & 3] = _mm512_packus_epi32(pv[(g & 3) - 1], a);  // pairs packed at once (registers)
                if ((g & 3) == 3) {  // 64 numerators -> one 64-byte store, as qk_softmax_tile
                    const __m512i bytes = _mm512_packus_epi16(pv[1], pv[3]);
                    sum64 = _mm512_add_epi64(sum64, _mm512_sad_epu8(bytes, _mm512_setzero_si512()));
                    _mm512_storeu_si512(pr + 16 * (g - 3), _mm512_permutexvar_epi32(order, bytes));
                }
            } else {
                sum32 = _mm512_add_epi32(sum32, clamp255(a));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(pr + 16 * g), _mm512_cvtusepi32_epi8(a));
            }
        }
    }
    *sum = static_cast<std::int32_t>(_mm512_reduce_add_epi64(_mm512_add_epi64(sum64, _mm512_cvtepu32_epi64(
        _mm256_add_epi32(_mm512_castsi512_si256(sum32), _mm512_extracti64x4_epi64(sum32, 1))))));
}

/// qk_softmax_row over `rows` query rows (u8, stride dq) into the P rows (stride ldp) and their sums. carry: the
/// first row's accumulators if `carried` (else computed here); on return the accumulators of the row after the
/// last (q8 + rows * dq) if `more` (the next block's first row: the pipeline runs across blocks).
template <int G, int NP>
BERTLET_TARGET_S8A __attribute__((noinline)) void qk_softmax_rows(const unsigned char* q8, std::ptrdiff_t dq,
                                                                   std::ptrdiff_t rows, bool carried, bool more,
                                                                   __m512i* carry, const float* sq,
                                                                   const unsigned char* kp, const std::int32_t* kc,
                                                                   const float* ks,
                                                                   std::ptrdiff_t L, unsigned char* p8,
                                                                   std::ptrdiff_t ldp, std::int32_t* sums) {
    __m512i acc[NP];
    if (carried) {
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) acc[j] = _mm512_load_si512(carry + j);
    } else {
        __m512i acc1[1][NP];
        qk_acc<1, NP>(q8, dq, kp, kc, acc1);
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) acc[j] = acc1[0][j];
    }
    for (std::ptrdiff_t r = 0; r < rows; ++r)
        qk_softmax_row<G, NP>(acc, r + 1 < rows || more ? q8 + (r + 1) * dq : nullptr, sq + r, kp, kc, ks, L,
                              p8 + r * ldp, sums + r);
    if (more) {
#pragma GCC unroll 8
        for (int j = 0; j < NP; ++j) _mm512_store_si512(carry + j, acc[j]);
    }
}

/// P V of MR probability rows (u8, stride ldp) x ND channel panels: ctx = float(acc) * (inv[i] * sv[c]) as gemm_s8's
/// epilogue; the accumulators start from V's zero row sums (P is genuinely unsigned). Rows are addressed from bases
/// every 4 rows with ldp / 3 ldp index registers (as the GEMM kernel), so GCC keeps no row pointers on the stack.
template <int MR, int ND>
BERTLET_TARGET_S8A inline void pv_tile(const unsigned char* p8, std::ptrdiff_t ldp, const float* inv,
                                       const unsigned char* vp, std::ptrdiff_t vps, const std::int32_t* vz,
                                       const float* sv, std::ptrdiff_t groups, std::ptrdiff_t D, float* ctx,
                                       std::ptrdiff_t ldc) {
    __m512i acc[MR][ND];
#pragma GCC unroll 4
    for (int j = 0; j < ND; ++j) {
        const __m512i z = _mm512_loadu_si512(vz + 16 * j);
#pragma GCC unroll 12
        for (int i = 0; i < MR; ++i) acc[i][j] = z;
    }
    const std::ptrdiff_t ldp3 = 3 * ldp;
    const unsigned char* x0 = p8;
    const unsigned char* w = vp;
    for (std::ptrdiff_t g = 0; g < groups; ++g, x0 += 4, w += 64) {
        __m512i wv[ND];
#pragma GCC unroll 4
        for (int j = 0; j < ND; ++j) wv[j] = _mm512_loadu_si512(w + j * vps);
#pragma GCC unroll 12
        for (int i = 0; i < MR; ++i) {
            const unsigned char* base = x0 + (i / 4) * 4 * ldp;
            const int r = i & 3;
            const unsigned char* xp = r == 0 ? base : r == 1 ? base + ldp : r == 2 ? base + 2 * ldp : base + ldp3;
            const __m512i xb = _mm512_set1_epi32(s8_load32(xp));
#pragma GCC unroll 4
            for (int j = 0; j < ND; ++j) dpbusd(acc[i][j], xb, wv[j]);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < ND; ++j) {
        const __m512 svj = _mm512_loadu_ps(sv + 16 * j);
        const __mmask16 m = mask16(D - 16 * j);
#pragma GCC unroll 12
        for (int i = 0; i < MR; ++i)
            _mm512_mask_storeu_ps(
                ctx + i * ldc + 16 * j, m,
                _mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][j]), _mm512_mul_ps(_mm512_set1_ps(inv[i]), svj)));
    }
}

/// Calls f(integral_constant<int, N>) for a run-time n in 1..8.
template <class F>
BERTLET_TARGET_S8A inline void with_n8(std::ptrdiff_t n, F&& f) {
    switch (n) {
        case 1: f(std::integral_constant<int, 1>{}); return;
        case 2: f(std::integral_constant<int, 2>{}); return;
        case 3: f(std::integral_constant<int, 3>{}); return;
        case 4: f(std::integral_constant<int, 4>{}); return;
        case 5: f(std::integral_constant<int, 5>{}); return;
        case 6: f(std::integral_constant<int, 6>{}); return;
        case 7: f(std::integral_constant<int, 7>{}); return;
        default: f(std::integral_constant<int, 8>{}); return;
    }
}

/// P V for `rows` rows (<= rb) in tiles of 24 / ND accumulators' rows (at most 12), then 4, 2, 1.
template <int ND>
BERTLET_TARGET_S8A inline void pv_rows(const layout& y, const unsigned char* p8, const float* inv, std::ptrdiff_t rows,
                                       const unsigned char* base, float* ctx, std::ptrdiff_t ldc) {
    constexpr int MR = ND <= 2 ? 12 : ND == 3 ? 8 : 6;
    const auto* vp = base + y.o_vp;
    const auto* vz = reinterpret_cast<const std::int32_t*>(base + y.o_vz);
    const auto* sv = reinterpret_cast<const float*>(base + y.o_sv);
    const std::ptrdiff_t vps = 16 * y.lp4, groups = y.lp4 / 4;
    std::ptrdiff_t i = 0;
    for (; i + MR <= rows; i += MR)
        pv_tile<MR, ND>(p8 + i * y.ldp, y.ldp, inv + i, vp, vps, vz, sv, groups, y.D, ctx + i * ldc, ldc);
    for (; i + 4 <= rows; i += 4)
        pv_tile<4, ND>(p8 + i * y.ldp, y.ldp, inv + i, vp, vps, vz, sv, groups, y.D, ctx + i * ldc, ldc);
    if (i + 2 <= rows) {
        pv_tile<2, ND>(p8 + i * y.ldp, y.ldp, inv + i, vp, vps, vz, sv, groups, y.D, ctx + i * ldc, ldc);
        i += 2;
    }
    if (i < rows) pv_tile<1, ND>(p8 + i * y.ldp, y.ldp, inv + i, vp, vps, vz, sv, groups, y.D, ctx + i * ldc, ldc);
}

/// One head: prepare, then per block of rb query rows: Q K^T in register tiles of 3 rows x up to 8 key panels
/// (scores and row maxima), the softmax into u8 P rows, P V in register tiles (kernels above; the integer sums and
/// float operations of gemm_s8's VNNI kernel, so the bits are the reference's).
BERTLET_TARGET_S8A inline void attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld,
                                              float* ctx, std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D,
                                              float scale, void* scratch) {
    const layout y = make_layout(L, D);
    auto* base = reinterpret_cast<unsigned char*>((reinterpret_cast<std::uintptr_t>(scratch) + 63) &
                                                  ~static_cast<std::uintptr_t>(63));
    switch (y.nd) {
        case 1: prepare<1>(y, q, k, v, ld, scale * log2e, base); break;
        case 2: prepare<2>(y, q, k, v, ld, scale * log2e, base); break;
        case 3: prepare<3>(y, q, k, v, ld, scale * log2e, base); break;
        default: prepare<4>(y, q, k, v, ld, scale * log2e, base); break;
    }
    const auto* q8 = base + y.o_q8;
    const auto* kp = base + y.o_kp;
    const auto* kc = reinterpret_cast<const std::int32_t*>(base + y.o_kc);
    const auto* ks = reinterpret_cast<const float*>(base + y.o_ks);
    const auto* sq = reinterpret_cast<const float*>(base + y.o_sq);
    auto* s = reinterpret_cast<float*>(base + y.o_s);
    auto* p8 = base + y.o_p;
    auto* inv = reinterpret_cast<float*>(base + y.o_inv);
    const std::ptrdiff_t dq = y.dq, lds = y.lds;
    __m512i carry[8];  // qk_softmax_rows' accumulators from one block of rows to the next
    for (std::ptrdiff_t i0 = 0; i0 < L; i0 += rb) {
        const std::ptrdiff_t rows = std::min<std::ptrdiff_t>(rb, L - i0);
        alignas(64) std::int32_t sums[rb + 16];
        if (y.np <= 8 && (dq == 32 || dq == 64)) {  // one row at a time, the next row's Q K^T interleaved
            with_n8(y.np, [&](auto npc) BERTLET_TARGET_S8A {
                constexpr int NP = decltype(npc)::value;
                const auto run = [&](auto gc) BERTLET_TARGET_S8A {
                    constexpr int G = decltype(gc)::value;
                    qk_softmax_rows<G, NP>(q8 + i0 * dq, dq, rows, i0 > 0, i0 + rows < L, carry, sq + i0, kp, kc, ks,
                                           L, p8, y.ldp, sums);
                };
                if (dq == 32) run(std::integral_constant<int, 8>{});
                else run(std::integral_constant<int, 16>{});
            });
        } else if (y.np <= 8) {  // all keys of a row in registers: scores, maxima and numerators in one tile
            for (std::ptrdiff_t r0 = 0; r0 < rows; r0 += 3) {
                const std::ptrdiff_t mr = std::min<std::ptrdiff_t>(3, rows - r0);
                const unsigned char* qr = q8 + (i0 + r0) * dq;
                with_n8(y.np, [&](auto npc) BERTLET_TARGET_S8A {
                    constexpr int NP = decltype(npc)::value;
                    unsigned char* pr = p8 + r0 * y.ldp;
                    if (mr == 3) qk_softmax_tile<3, NP>(qr, dq, sq + i0 + r0, kp, kc, ks, L, pr, y.ldp, sums + r0);
                    else if (mr == 2) qk_softmax_tile<2, NP>(qr, dq, sq + i0 + r0, kp, kc, ks, L, pr, y.ldp, sums + r0);
                    else qk_softmax_tile<1, NP>(qr, dq, sq + i0 + r0, kp, kc, ks, L, pr, y.ldp, sums + r0);
                });
            }
        } else {
        alignas(64) float mxr[rb];
        for (std::ptrdiff_t r0 = 0; r0 < rows; r0 += 3) {
            const std::ptrdiff_t mr = std::min<std::ptrdiff_t>(3, rows - r0);
            __m512 mx[3] = {_mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY), _mm512_set1_ps(-INFINITY)};
            const unsigned char* qr = q8 + (i0 + r0) * dq;
            for (std::ptrdiff_t p0 = 0; p0 < y.np; p0 += 8) {
                with_n8(std::min<std::ptrdiff_t>(8, y.np - p0), [&](auto npc) BERTLET_TARGET_S8A {
                    constexpr int NP = decltype(npc)::value;
                    const auto* kpp = kp + p0 * 16 * dq;
                    float* sr = s + r0 * lds + 16 * p0;
                    if (mr == 3) qk_tile<3, NP>(qr, dq, kpp, kc + 16 * p0, ks + 16 * p0, L - 16 * p0, sr, lds, mx);
                    else if (mr == 2) qk_tile<2, NP>(qr, dq, kpp, kc + 16 * p0, ks + 16 * p0, L - 16 * p0, sr, lds, mx);
                    else qk_tile<1, NP>(qr, dq, kpp, kc + 16 * p0, ks + 16 * p0, L - 16 * p0, sr, lds, mx);
                });
            }
            for (std::ptrdiff_t r = 0; r < mr; ++r) mxr[r0 + r] = avx512::hmax(mx[r]);
        }
        for (std::ptrdiff_t i = 0; i < rows; ++i) {
            const float* sr = s + i * lds;
            const float sqi = sq[i0 + i];
            const __m512 sqv = _mm512_set1_ps(sqi), nms = _mm512_set1_ps(-(mxr[i] * sqi));
            __m512i sum = _mm512_setzero_si512();
            unsigned char* pr = p8 + i * y.ldp;
            for (std::ptrdiff_t t = 0; t < y.lp4; t += 16) {
                const __mmask16 m = mask16(L - t);
                const __m512i pi = clamp255(p255(_mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, sr + t), sqv, nms), m));
                sum = _mm512_add_epi32(sum, pi);
                _mm_storeu_si128(reinterpret_cast<__m128i*>(pr + t), _mm512_cvtusepi32_epi8(pi));
            }
            sums[i] = _mm512_reduce_add_epi32(sum);
        }
        }
        for (std::ptrdiff_t i = 0; i < rows; i += 16) {  // 1 / float(sum), 16 rows per vdivps (IEEE: same bits)
            const __m512 sm = _mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(mask16(rows - i), sums + i));
            _mm512_storeu_ps(inv + i, _mm512_div_ps(_mm512_set1_ps(1.0f), sm));
        }
        float* c = ctx + i0 * ldc;
        switch (y.nd) {
            case 1: pv_rows<1>(y, p8, inv, rows, base, c, ldc); break;
            case 2: pv_rows<2>(y, p8, inv, rows, base, c, ldc); break;
            case 3: pv_rows<3>(y, p8, inv, rows, base, c, ldc); break;
            default: pv_rows<4>(y, p8, inv, rows, base, c, ldc); break;
        }
    }
}

}  // namespace detail::s8a
#endif  // BERTLET_S8A_X86

/// One attention head of one sequence through int8 (see the header comment): ctx[L, D] (row stride ldc) =
/// softmax(scale * Q K^T) V with Q, K, V [L, D] (row stride ld). scratch: s8_attention_scratch_bytes(L, D) bytes,
/// any alignment. Without the fast kernel (s8_attention_supported() false, or D > 64) it runs the reference, which
/// allocates.
inline void s8_attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld, float* ctx,
                              std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale, void* scratch) {
    if (L <= 0 || D <= 0) return;
#if defined(BERTLET_S8A_X86)
    if (D <= 64 && s8_attention_supported())
        return detail::s8a::attention_head(q, k, v, ld, ctx, ldc, L, D, scale, scratch);
#endif
    (void)scratch;
    s8_attention_head_ref(q, k, v, ld, ctx, ldc, L, D, scale);
}

}  // namespace bertlet

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
