// bertlet — int8 GEMM for nn.Linear layers (issue #3, int8 part). Design and measurements: docs/INT8.md.
//
//   Y[m, n] = sx[m] * sw[n] * sum_k qx[m, k] * qw[n, k] + bias[n]
//
// * Weights W [N out, K in] (PyTorch layout): symmetric per output row, sw[n] = max|W[n,:]| / 127,
//   qw = round_half_even(W / sw) clamped to -127..127 (never -128), packed once (here by pack_s8, or offline by
//   tools/bertlet_tools/quantize.py, byte-identical) into the layout below.
// * Activations X [M, K]: quantized at run time per row (token), symmetric: sx[m] = max|X[m,:]| / 127,
//   qx = round_half_even(X * (127 / max|X[m,:]|)) clamped to -127..127. Every path uses the same quantized values and
//   the same integer sums, and the same float epilogue (y = fma(float(acc), sx*sw, bias)), so every path returns
//   BIT-IDENTICAL outputs (the results do not depend on the CPU).
// * VNNI paths (vpdpbusd is u8 x s8) feed qx + 128 as u8 and subtract 128 * row_sum[n] (row_sum = sum_k qw[n, k],
//   stored with the packed weights); non-VNNI paths use vpmaddubsw(|qw|, sign(qw) * qx): every product is at most
//   127 * 127, a pair at most 32258 < 32767, so the s16 saturation of vpmaddubsw can never trigger (exact).
//
// Packed layout ("S8P16K4"): N is padded to a multiple of 16 (n_padded), K to a multiple of 4 (k_padded), padding is
// zero. Panel p (output rows 16p .. 16p+15) occupies k_padded * 16 bytes at offset p * 16 * k_padded; inside a panel,
// group g (k = 4g .. 4g+3) occupies 64 bytes at offset 64 g: row r's 4 values at 4 r .. 4 r + 3 (one zmm, two ymm).
//   byte offset of qw[n, k] = (n / 16) * 16 * k_padded + (k / 4) * 64 + (n % 16) * 4 + k % 4
// scales and row_sums have n_padded entries (zeros in the padding).
//
// API:
//   packed_s8_buffer pk = pack_s8(W, N, K);                      // owning; pk.view() -> packed_s8 (a non-owning view)
//   std::vector<std::uint8_t> scratch(gemm_s8_scratch_bytes(M, K));
//   linear_s8(X, M, K, ldx, pk.view(), bias, Y, ldy, scratch.data());   // mirrors detail::linear, uses active_isa()
//   gemm_s8(s8_path::avx512_vnni, X, M, K, ldx, W, bias, Y, ldy, scratch) // an explicit path (tests, benchmarks)
//   gemm_s8_s32(path, X, M, K, ldx, W, C, ldc, sx, scratch)              // debug hook: the exact integer sums
// No allocation in gemm_s8; the scratch buffer holds the quantized X and its scales. Thread-safe (pure functions).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bertlet/error.hpp"
#include "bertlet/kernels/cpu.hpp"

#if defined(BERTLET_X86) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BERTLET_S8_X86 1
#define BERTLET_TARGET(s) __attribute__((target(s)))
#endif

// GCC 12's AVX-512 intrinsics self-initialize their undefined operands (`__m512 __Y = __Y;`, GCC PR 105593), which
// -Wmaybe-uninitialized reports once inlined here; it is not a real read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace bertlet {

inline constexpr std::size_t s8_panel_rows = 16;  // output rows per panel
inline constexpr std::size_t s8_k_group = 4;      // consecutive k per 32-bit lane

inline constexpr std::size_t s8_pad_k(std::size_t k) noexcept { return (k + 3) / 4 * 4; }
inline constexpr std::size_t s8_pad_n(std::size_t n) noexcept { return (n + 15) / 16 * 16; }

/// Non-owning view of packed int8 weights (e.g. straight from an mmap'ed blob).
struct packed_s8 {
    const std::int8_t* data = nullptr;       // s8_pad_n(n) * k_padded bytes, layout above
    const float* scales = nullptr;           // s8_pad_n(n) weight scales (0 in the padding)
    const std::int32_t* row_sums = nullptr;  // s8_pad_n(n) sums of qw over k (0 in the padding)
    std::size_t n = 0, k = 0, k_padded = 0;
    std::size_t n_padded() const noexcept { return s8_pad_n(n); }
};

/// Owning packed weights (packing at load time, tests).
struct packed_s8_buffer {
    std::vector<std::int8_t> data;
    std::vector<float> scales;
    std::vector<std::int32_t> row_sums;
    std::size_t n = 0, k = 0, k_padded = 0;
    packed_s8 view() const noexcept { return {data.data(), scales.data(), row_sums.data(), n, k, k_padded}; }
};

/// Kernel paths of gemm_s8 (finer than bertlet::isa: VNNI is an extra on top of avx2 / avx512).
enum class s8_path { scalar = 0, avx2 = 1, avx_vnni = 2, avx512 = 3, avx512_vnni = 4 };
inline constexpr s8_path all_s8_paths[] = {s8_path::scalar, s8_path::avx2, s8_path::avx_vnni, s8_path::avx512,
                                           s8_path::avx512_vnni};

inline const char* s8_path_name(s8_path p) noexcept {
    switch (p) {
        case s8_path::scalar: return "scalar";
        case s8_path::avx2: return "avx2";
        case s8_path::avx_vnni: return "avx_vnni";
        case s8_path::avx512: return "avx512";
        case s8_path::avx512_vnni: return "avx512_vnni";
    }
    return "?";
}

inline bool s8_path_supported(s8_path p, const cpu_features& f = cpu()) noexcept {
#if defined(BERTLET_S8_X86)
    switch (p) {
        case s8_path::scalar: return true;
        case s8_path::avx2: return f.has_avx2_path();
        case s8_path::avx_vnni: return f.has_avx2_path() && f.avx_vnni;
        case s8_path::avx512: return f.has_avx512_path();
        case s8_path::avx512_vnni: return f.has_avx512_path() && f.avx512_vnni;
    }
    return false;
#else
    (void)f;
    return p == s8_path::scalar;
#endif
}

/// The best int8 path within an ISA level (BERTLET_FORCE_ARCH=avx2 still uses AVX-VNNI when present).
inline s8_path s8_path_for(isa a, const cpu_features& f = cpu()) noexcept {
    if (a == isa::avx512 && f.has_avx512_path()) {
        if (s8_path_supported(s8_path::avx512_vnni, f)) return s8_path::avx512_vnni;
        return s8_path::avx512;
    }
    if ((a == isa::avx512 || a == isa::avx2) && f.has_avx2_path()) {
        if (s8_path_supported(s8_path::avx_vnni, f)) return s8_path::avx_vnni;
        if (s8_path_supported(s8_path::avx2, f)) return s8_path::avx2;
    }
    return s8_path::scalar;  // TODO(neon): sdot path for Graviton
}

inline s8_path active_s8_path() {
    static const s8_path p = s8_path_for(active_isa());
    return p;
}

/// Bytes of scratch gemm_s8 needs for an X of M rows and K columns (any alignment is fine).
inline std::size_t gemm_s8_scratch_bytes(std::size_t M, std::size_t K) noexcept {
    return 64 + (M * sizeof(float) + 63) / 64 * 64 + M * s8_pad_k(K);
}

// ---------------------------------------------------------------------------------------------------------------
// Packing (not hot: load time).

/// Weight quantization of one row: scale = max|w| / 127, q = round_half_even(w / scale) clamped to +-127.
/// (Same float operations as quantize.py's quantize_per_row, so both produce identical bytes.)
inline void quantize_weights_s8(const float* W, std::size_t n, std::size_t k, std::size_t ldw, std::int8_t* q,
                                float* scales) {
    for (std::size_t r = 0; r < n; ++r) {
        const float* w = W + r * ldw;
        float amax = 0.f;
        for (std::size_t i = 0; i < k; ++i) amax = std::max(amax, std::fabs(w[i]));
        const float s = amax / 127.f;
        scales[r] = s;
        for (std::size_t i = 0; i < k; ++i) {
            float v = s > 0.f ? std::nearbyint(w[i] / s) : 0.f;
            v = std::min(127.f, std::max(-127.f, v));
            q[r * k + i] = static_cast<std::int8_t>(v);
        }
    }
}

/// Packs already-quantized weights q [n, k] (row-major) and their scales.
inline packed_s8_buffer pack_s8(const std::int8_t* q, const float* scales, std::size_t n, std::size_t k) {
    packed_s8_buffer b;
    b.n = n;
    b.k = k;
    b.k_padded = s8_pad_k(k);
    const std::size_t np = s8_pad_n(n), kp = b.k_padded;
    b.data.assign(np * kp, 0);
    b.scales.assign(np, 0.f);
    b.row_sums.assign(np, 0);
    for (std::size_t r = 0; r < n; ++r) {
        std::int32_t sum = 0;
        std::int8_t* panel = b.data.data() + (r / 16) * 16 * kp + (r % 16) * 4;
        for (std::size_t i = 0; i < k; ++i) {
            const std::int8_t v = q[r * k + i];
            sum += v;
            panel[(i / 4) * 64 + i % 4] = v;
        }
        b.row_sums[r] = sum;
        b.scales[r] = scales[r];
    }
    return b;
}

/// Quantizes (per output row) and packs fp32 weights W [n, k] (nn.Linear layout).
inline packed_s8_buffer pack_s8(const float* W, std::size_t n, std::size_t k) {
    std::vector<std::int8_t> q(n * k);
    std::vector<float> s(n);
    quantize_weights_s8(W, n, k, k, q.data(), s.data());
    return pack_s8(q.data(), s.data(), n, k);
}

namespace detail {

// Arguments shared by every micro-kernel.
struct s8_args {
    const std::uint8_t* xq;  // quantized X, row stride ldq (= k_padded), s8 or u8 (+128) form
    std::size_t ldq;
    const float* sx;         // per-row X scales
    const packed_s8* w;
    std::size_t groups;      // k_padded / 4
    std::size_t M, N;
    const float* bias;       // may be null
    float* Y;                // f32 output (RAW = false)
    std::size_t ldy;
    std::int32_t* C;         // s32 output (RAW = true)
    std::size_t ldc;
};

inline std::uint8_t* s8_align64(std::uint8_t* p) noexcept {
    const auto u = reinterpret_cast<std::uintptr_t>(p);
    return p + ((64 - (u & 63)) & 63);
}

inline std::int32_t s8_load32(const void* p) noexcept {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

/// Reference quantization of X rows; u8 = true stores q + 128 (VNNI form).
inline void quantize_x_scalar(const float* X, std::size_t M, std::size_t K, std::size_t ldx, std::uint8_t* q,
                              std::size_t ldq, float* sx, bool u8) {
    const std::uint8_t flip = u8 ? 0x80 : 0x00;
    for (std::size_t m = 0; m < M; ++m) {
        const float* x = X + m * ldx;
        std::uint8_t* qr = q + m * ldq;
        float amax = 0.f;
        for (std::size_t i = 0; i < K; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        for (std::size_t i = 0; i < K; ++i) {
            float v = std::nearbyint(x[i] * inv);
            v = std::min(127.f, std::max(-127.f, v));
            qr[i] = static_cast<std::uint8_t>(static_cast<std::uint8_t>(static_cast<std::int8_t>(v)) ^ flip);
        }
        for (std::size_t i = K; i < ldq; ++i) qr[i] = flip;
    }
}

/// Reference kernel: exact integer sums from the packed layout, then the common epilogue.
template <bool RAW>
inline void gemm_s8_kernel_scalar(const s8_args& a) {
    const std::size_t kp = a.w->k_padded;
    for (std::size_t m = 0; m < a.M; ++m) {
        const std::int8_t* x = reinterpret_cast<const std::int8_t*>(a.xq + m * a.ldq);
        for (std::size_t n = 0; n < a.N; ++n) {
            const std::int8_t* wp = a.w->data + (n / 16) * 16 * kp + (n % 16) * 4;
            std::int32_t acc = 0;
            for (std::size_t g = 0; g < a.groups; ++g)
                for (std::size_t j = 0; j < 4; ++j) acc += std::int32_t(x[4 * g + j]) * std::int32_t(wp[64 * g + j]);
            if (RAW) {
                a.C[m * a.ldc + n] = acc;
            } else {
                const float s = a.sx[m] * a.w->scales[n];
                a.Y[m * a.ldy + n] = a.bias ? std::fma(static_cast<float>(acc), s, a.bias[n]) : static_cast<float>(acc) * s;
            }
        }
    }
}

// Drives a micro-kernel family K over the output: NR panels x MR rows at a time (tails: 1 panel; 4, 2, 1 rows).
template <class Kern, bool RAW>
inline void gemm_s8_drive(const s8_args& a) {
    const std::size_t panels = (a.N + 15) / 16;
    std::size_t p = 0;
    for (; p + Kern::NR <= panels; p += Kern::NR) Kern::template rows<Kern::NR, RAW>(a, p);
    for (; p < panels; ++p) Kern::template rows<1, RAW>(a, p);
}

// Rows loop of one panel block: MR at a time, then 4, 2, 1.
#define BERTLET_S8_ROWS(KERNEL, MRMAX)                                                          \
    template <int NR, bool RAW>                                                                 \
    static void rows(const s8_args& a, std::size_t p) {                                         \
        std::size_t m = 0;                                                                      \
        for (; m + (MRMAX) <= a.M; m += (MRMAX)) KERNEL<MRMAX, NR, RAW>(a, m, p);               \
        if (m + 4 <= a.M) { KERNEL<4, NR, RAW>(a, m, p); m += 4; }                              \
        if (m + 2 <= a.M) { KERNEL<2, NR, RAW>(a, m, p); m += 2; }                              \
        if (m < a.M) KERNEL<1, NR, RAW>(a, m, p);                                               \
    }

#if defined(BERTLET_S8_X86)

// ---- AVX2 helpers (also used by AVX-VNNI) ----

BERTLET_TARGET("avx2,fma")
inline void quantize_x_avx2(const float* X, std::size_t M, std::size_t K, std::size_t ldx, std::uint8_t* q,
                            std::size_t ldq, float* sx, bool u8) {
    const std::uint8_t flip = u8 ? 0x80 : 0x00;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m128i flipv = _mm_set1_epi8(static_cast<char>(flip));
    for (std::size_t m = 0; m < M; ++m) {
        const float* x = X + m * ldx;
        std::uint8_t* qr = q + m * ldq;
        __m256 vmax = _mm256_setzero_ps();
        std::size_t i = 0;
        for (; i + 8 <= K; i += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + i), absmask));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float amax = _mm_cvtss_f32(h);
        for (; i < K; ++i) amax = std::max(amax, std::fabs(x[i]));
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        const __m256 vinv = _mm256_set1_ps(inv);
        i = 0;
        for (; i + 8 <= K; i += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
            v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
            const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            const __m128i s8 = _mm_xor_si128(_mm_packs_epi16(s16, s16), flipv);
            _mm_storel_epi64(reinterpret_cast<__m128i*>(qr + i), s8);
        }
        for (; i < K; ++i) {
            float v = std::nearbyint(x[i] * inv);
            v = std::min(127.f, std::max(-127.f, v));
            qr[i] = static_cast<std::uint8_t>(static_cast<std::uint8_t>(static_cast<std::int8_t>(v)) ^ flip);
        }
        for (; i < ldq; ++i) qr[i] = flip;
    }
}

// Epilogue for one row x one panel (two ymm of 8 s32). U8: VNNI form, subtract 128 * row_sum.
template <bool RAW, bool U8>
BERTLET_TARGET("avx2,fma") __attribute__((always_inline))
inline void s8_store_avx2(const s8_args& a, std::size_t m, std::size_t n0, __m256i c0, __m256i c1) {
    if (n0 >= a.N) return;
    if (U8) {
        c0 = _mm256_sub_epi32(c0, _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.w->row_sums + n0)), 7));
        c1 = _mm256_sub_epi32(c1, _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.w->row_sums + n0 + 8)), 7));
    }
    const std::size_t valid = std::min<std::size_t>(16, a.N - n0);
    if (RAW) {
        alignas(32) std::int32_t t[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(t), c0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(t + 8), c1);
        std::memcpy(a.C + m * a.ldc + n0, t, valid * 4);
        return;
    }
    const __m256 vs = _mm256_set1_ps(a.sx[m]);
    const __m256 s0 = _mm256_mul_ps(vs, _mm256_loadu_ps(a.w->scales + n0));
    const __m256 s1 = _mm256_mul_ps(vs, _mm256_loadu_ps(a.w->scales + n0 + 8));
    __m256 y0, y1;
    float* y = a.Y + m * a.ldy + n0;
    if (valid == 16) {
        if (a.bias) {
            y0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c0), s0, _mm256_loadu_ps(a.bias + n0));
            y1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c1), s1, _mm256_loadu_ps(a.bias + n0 + 8));
        } else {
            y0 = _mm256_mul_ps(_mm256_cvtepi32_ps(c0), s0);
            y1 = _mm256_mul_ps(_mm256_cvtepi32_ps(c1), s1);
        }
        _mm256_storeu_ps(y, y0);
        _mm256_storeu_ps(y + 8, y1);
        return;
    }
    alignas(32) float b[16] = {};
    if (a.bias) std::memcpy(b, a.bias + n0, valid * 4);
    alignas(32) float t[16];
    if (a.bias) {
        y0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c0), s0, _mm256_load_ps(b));
        y1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c1), s1, _mm256_load_ps(b + 8));
    } else {
        y0 = _mm256_mul_ps(_mm256_cvtepi32_ps(c0), s0);
        y1 = _mm256_mul_ps(_mm256_cvtepi32_ps(c1), s1);
    }
    _mm256_store_ps(t, y0);
    _mm256_store_ps(t + 8, y1);
    std::memcpy(y, t, valid * 4);
}

// AVX2 without VNNI: products |w| * (sign(w) * x) via vpmaddubsw (never saturates: |x|, |w| <= 127), vpmaddwd with
// ones to s32.
template <int MR, int NR, bool RAW>
BERTLET_TARGET("avx2,fma")
void s8_kernel_avx2(const s8_args& a, std::size_t m0, std::size_t p0) {
    const std::size_t kp = a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * 16 * kp;
    const std::size_t ps = 16 * kp;
    __m256i acc[MR][NR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    const std::uint8_t* xr = a.xq + m0 * a.ldq;
    for (std::size_t g = 0; g < a.groups; ++g) {
        __m256i w[NR][2], aw[NR][2];
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) {
            w[j][0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + j * ps + 64 * g));
            w[j][1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + j * ps + 64 * g + 32));
            aw[j][0] = _mm256_abs_epi8(w[j][0]);
            aw[j][1] = _mm256_abs_epi8(w[j][1]);
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m256i xb = _mm256_set1_epi32(s8_load32(xr + i * a.ldq + 4 * g));
#pragma GCC unroll 4
            for (int j = 0; j < NR; ++j)
#pragma GCC unroll 2
                for (int h = 0; h < 2; ++h) {
                    const __m256i p = _mm256_maddubs_epi16(aw[j][h], _mm256_sign_epi8(xb, w[j][h]));
                    acc[i][j][h] = _mm256_add_epi32(acc[i][j][h], _mm256_madd_epi16(p, ones));
                }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j)
            s8_store_avx2<RAW, false>(a, m0 + i, (p0 + j) * 16, acc[i][j][0], acc[i][j][1]);
}

struct s8_fam_avx2 {
    static constexpr int NR = 1;
    BERTLET_S8_ROWS(s8_kernel_avx2, 4)
};

// AVX-VNNI (256-bit vpdpbusd): u8 (x + 128) x s8 weights.
template <int MR, int NR, bool RAW>
BERTLET_TARGET("avx2,fma,avxvnni")
void s8_kernel_avx_vnni(const s8_args& a, std::size_t m0, std::size_t p0) {
    const std::size_t kp = a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * 16 * kp;
    const std::size_t ps = 16 * kp;
    __m256i acc[MR][NR][2];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) acc[i][j][0] = acc[i][j][1] = _mm256_setzero_si256();
    const std::uint8_t* xr = a.xq + m0 * a.ldq;
    for (std::size_t g = 0; g < a.groups; ++g) {
        __m256i w[NR][2];
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) {
            w[j][0] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + j * ps + 64 * g));
            w[j][1] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wp + j * ps + 64 * g + 32));
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m256i xb = _mm256_set1_epi32(s8_load32(xr + i * a.ldq + 4 * g));
#pragma GCC unroll 4
            for (int j = 0; j < NR; ++j) {
                acc[i][j][0] = _mm256_dpbusd_avx_epi32(acc[i][j][0], xb, w[j][0]);
                acc[i][j][1] = _mm256_dpbusd_avx_epi32(acc[i][j][1], xb, w[j][1]);
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j)
            s8_store_avx2<RAW, true>(a, m0 + i, (p0 + j) * 16, acc[i][j][0], acc[i][j][1]);
}

struct s8_fam_avx_vnni {
    static constexpr int NR = 1;
    BERTLET_S8_ROWS(s8_kernel_avx_vnni, 6)
};

// ---- AVX-512 ----

#define BERTLET_S8_AVX512 "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl"

BERTLET_TARGET(BERTLET_S8_AVX512)
inline void quantize_x_avx512(const float* X, std::size_t M, std::size_t K, std::size_t ldx, std::uint8_t* q,
                              std::size_t ldq, float* sx, bool u8) {
    const std::uint8_t flip = u8 ? 0x80 : 0x00;
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    const __m128i flipv = _mm_set1_epi8(static_cast<char>(flip));
    for (std::size_t m = 0; m < M; ++m) {
        const float* x = X + m * ldx;
        std::uint8_t* qr = q + m * ldq;
        __m512 vmax = _mm512_setzero_ps();
        std::size_t i = 0;
        for (; i + 16 <= K; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
        const __mmask16 tail = static_cast<__mmask16>((1u << (K - i)) - 1u);
        if (tail) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, x + i)));
        const float amax = _mm512_reduce_max_ps(vmax);
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        const __m512 vinv = _mm512_set1_ps(inv);
        for (i = 0; i + 16 <= K; i += 16) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vinv));
            v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + i), _mm_xor_si128(_mm512_cvtepi32_epi8(v), flipv));
        }
        if (tail) {
            __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, x + i), vinv));
            v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            _mm_mask_storeu_epi8(qr + i, tail, _mm_xor_si128(_mm512_cvtepi32_epi8(v), flipv));
        }
        for (i = K; i < ldq; ++i) qr[i] = flip;
    }
}

template <bool RAW, bool U8>
BERTLET_TARGET(BERTLET_S8_AVX512) __attribute__((always_inline))
inline void s8_store_avx512(const s8_args& a, std::size_t m, std::size_t n0, __m512i c) {
    if (n0 >= a.N) return;
    if (U8) c = _mm512_sub_epi32(c, _mm512_slli_epi32(_mm512_loadu_si512(a.w->row_sums + n0), 7));
    const std::size_t valid = std::min<std::size_t>(16, a.N - n0);
    const __mmask16 mk = static_cast<__mmask16>(valid == 16 ? 0xFFFFu : (1u << valid) - 1u);
    if (RAW) {
        _mm512_mask_storeu_epi32(a.C + m * a.ldc + n0, mk, c);
        return;
    }
    const __m512 s = _mm512_mul_ps(_mm512_set1_ps(a.sx[m]), _mm512_loadu_ps(a.w->scales + n0));
    const __m512 y = a.bias ? _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), s, _mm512_maskz_loadu_ps(mk, a.bias + n0))
                            : _mm512_mul_ps(_mm512_cvtepi32_ps(c), s);
    _mm512_mask_storeu_ps(a.Y + m * a.ldy + n0, mk, y);
}

// AVX-512BW without VNNI: as AVX2 (|w| * sign-adjusted x), sign applied with a masked subtract (no vpsignb in 512).
template <int MR, int NR, bool RAW>
BERTLET_TARGET(BERTLET_S8_AVX512)
void s8_kernel_avx512(const s8_args& a, std::size_t m0, std::size_t p0) {
    const std::size_t kp = a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * 16 * kp;
    const std::size_t ps = 16 * kp;
    __m512i acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
    const __m512i ones = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
    const std::uint8_t* xr = a.xq + m0 * a.ldq;
    for (std::size_t g = 0; g < a.groups; ++g) {
        __m512i aw[NR];
        __mmask64 neg[NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) {
            const __m512i w = _mm512_loadu_si512(wp + j * ps + 64 * g);
            aw[j] = _mm512_abs_epi8(w);
            neg[j] = _mm512_movepi8_mask(w);
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m512i xb = _mm512_set1_epi32(s8_load32(xr + i * a.ldq + 4 * g));
#pragma GCC unroll 4
            for (int j = 0; j < NR; ++j) {
                const __m512i xs = _mm512_mask_sub_epi8(xb, neg[j], zero, xb);
                acc[i][j] = _mm512_add_epi32(acc[i][j], _mm512_madd_epi16(_mm512_maddubs_epi16(aw[j], xs), ones));
            }
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) s8_store_avx512<RAW, false>(a, m0 + i, (p0 + j) * 16, acc[i][j]);
}

struct s8_fam_avx512 {
    static constexpr int NR = 2;
    BERTLET_S8_ROWS(s8_kernel_avx512, 8)
};

// AVX-512 VNNI: vpdpbusd u8 (x + 128) x s8 weights, 4 k per lane, 16 output columns per zmm.
template <int MR, int NR, bool RAW>
BERTLET_TARGET(BERTLET_S8_AVX512 ",avx512vnni")
void s8_kernel_avx512_vnni(const s8_args& a, std::size_t m0, std::size_t p0) {
    const std::size_t kp = a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * 16 * kp;
    const std::size_t ps = 16 * kp;
    __m512i acc[MR][NR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
    const std::uint8_t* xr = a.xq + m0 * a.ldq;
    for (std::size_t g = 0; g < a.groups; ++g) {
        __m512i w[NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) w[j] = _mm512_loadu_si512(wp + j * ps + 64 * g);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const __m512i xb = _mm512_set1_epi32(s8_load32(xr + i * a.ldq + 4 * g));
#pragma GCC unroll 4
            for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xb, w[j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NR; ++j) s8_store_avx512<RAW, true>(a, m0 + i, (p0 + j) * 16, acc[i][j]);
}

struct s8_fam_avx512_vnni {
    static constexpr int NR = 4;
    BERTLET_S8_ROWS(s8_kernel_avx512_vnni, 4)
};

#endif  // BERTLET_S8_X86

inline bool s8_path_uses_u8(s8_path p) noexcept { return p == s8_path::avx_vnni || p == s8_path::avx512_vnni; }

/// Quantizes X into the scratch layout the path wants.
inline void s8_quantize_x(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx,
                          std::uint8_t* q, std::size_t ldq, float* sx) {
    const bool u8 = s8_path_uses_u8(p);
    switch (p) {
#if defined(BERTLET_S8_X86)
        case s8_path::avx2:
        case s8_path::avx_vnni: quantize_x_avx2(X, M, K, ldx, q, ldq, sx, u8); return;
        case s8_path::avx512:
        case s8_path::avx512_vnni: quantize_x_avx512(X, M, K, ldx, q, ldq, sx, u8); return;
#endif
        default: quantize_x_scalar(X, M, K, ldx, q, ldq, sx, u8); return;
    }
}

template <bool RAW>
inline void s8_run(s8_path p, const s8_args& a) {
    switch (p) {
#if defined(BERTLET_S8_X86)
        case s8_path::avx2: gemm_s8_drive<s8_fam_avx2, RAW>(a); return;
        case s8_path::avx_vnni: gemm_s8_drive<s8_fam_avx_vnni, RAW>(a); return;
        case s8_path::avx512: gemm_s8_drive<s8_fam_avx512, RAW>(a); return;
        case s8_path::avx512_vnni: gemm_s8_drive<s8_fam_avx512_vnni, RAW>(a); return;
#endif
        default: gemm_s8_kernel_scalar<RAW>(a); return;
    }
}

template <bool RAW>
inline void gemm_s8_impl(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx,
                         const packed_s8& W, const float* bias, float* Y, std::size_t ldy, std::int32_t* C,
                         std::size_t ldc, float* sx_out, std::uint8_t* scratch) {
    if (K != W.k || W.k_padded != s8_pad_k(W.k) || ldx < K || (!RAW && ldy < W.n) || (RAW && ldc < W.n) ||
        !scratch)
        throw input_error(errc::bad_argument, "gemm_s8: shape mismatch (K=" + std::to_string(K) + ", W is " +
                                                  std::to_string(W.n) + "x" + std::to_string(W.k) + ")");
    if (!s8_path_supported(p))
        throw input_error(errc::bad_argument, std::string("gemm_s8: path ") + s8_path_name(p) +
                                                  " is not supported by this CPU");
    if (M == 0 || W.n == 0) return;
    std::uint8_t* base = s8_align64(scratch);
    float* sx = reinterpret_cast<float*>(base);
    std::uint8_t* q = base + (M * sizeof(float) + 63) / 64 * 64;
    const std::size_t ldq = W.k_padded;
    s8_quantize_x(p, X, M, K, ldx, q, ldq, sx);
    if (sx_out) std::memcpy(sx_out, sx, M * sizeof(float));
    s8_args a{q, ldq, sx, &W, W.k_padded / 4, M, W.n, bias, Y, ldy, C, ldc};
    s8_run<RAW>(p, a);
}

}  // namespace detail

/// Y[M, N] = dequant(quant(X[M, K]) * W^T) + bias  (bias may be null). ldx / ldy: row strides in floats.
/// scratch: gemm_s8_scratch_bytes(M, K) bytes, any alignment. Throws input_error on a shape mismatch or an
/// unsupported path.
inline void gemm_s8(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx, const packed_s8& W,
                    const float* bias, float* Y, std::size_t ldy, std::uint8_t* scratch) {
    detail::gemm_s8_impl<false>(p, X, M, K, ldx, W, bias, Y, ldy, nullptr, 0, nullptr, scratch);
}

inline void gemm_s8(isa a, const float* X, std::size_t M, std::size_t K, std::size_t ldx, const packed_s8& W,
                    const float* bias, float* Y, std::size_t ldy, std::uint8_t* scratch) {
    gemm_s8(s8_path_for(a), X, M, K, ldx, W, bias, Y, ldy, scratch);
}

/// Debug / test hook: C[m, n] = sum_k qx[m, k] * qw[n, k] exactly (after the VNNI +128 correction), and the
/// per-row activation scales in sx (M floats; may be null).
inline void gemm_s8_s32(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx,
                        const packed_s8& W, std::int32_t* C, std::size_t ldc, float* sx, std::uint8_t* scratch) {
    detail::gemm_s8_impl<true>(p, X, M, K, ldx, W, nullptr, nullptr, 0, C, ldc, sx, scratch);
}

namespace detail {
/// Drop-in for detail::linear with int8 weights (active path; scratch: gemm_s8_scratch_bytes(rows, in)).
inline void linear_s8(const float* X, std::ptrdiff_t rows, std::ptrdiff_t in, std::ptrdiff_t ldx, const packed_s8& W,
                      const float* b, float* Y, std::ptrdiff_t ldy, std::uint8_t* scratch) {
    gemm_s8(active_s8_path(), X, static_cast<std::size_t>(rows), static_cast<std::size_t>(in),
            static_cast<std::size_t>(ldx), W, b, Y, static_cast<std::size_t>(ldy), scratch);
}
}  // namespace detail

}  // namespace bertlet

#undef BERTLET_S8_ROWS
#if defined(BERTLET_S8_X86)
#undef BERTLET_S8_AVX512
#undef BERTLET_TARGET
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
