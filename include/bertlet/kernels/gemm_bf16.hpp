// bertlet — bf16 GEMM family (AVX512_BF16 `vdpbf16ps`): C = epilogue(bf16(A) * W^T) with fp32 accumulation.
//
// Uses: the attention matmuls (S = Q K_h^T, ctx = P V_h) and, later, bf16 weights in a blob. Same epilogue and the
// same blocking ideas as the fp32 family (kernels/packed.hpp); about twice the fp32 FMA throughput, because one
// vdpbf16ps does 32 multiply-adds (16 lanes x 2 k) where vfmadd231ps does 16.
//
// bf16 conversion (every path, identical bits): fp32 -> bf16 exactly as `vcvtne2ps2bf16` does it (checked
// exhaustively over all 2^32 inputs on Zen 5): round to nearest even; fp32 denormals become a signed zero (the
// instruction is DAZ); +-inf stay inf; NaN keeps its sign and upper payload bits and is made quiet (bit 6 of the
// bf16 set), so a NaN never turns into inf. Scalar: float_to_bf16().
//
// Packed weight layout ("BF16P16K2"), for W[N out, K in] (nn.Linear order; for attention, K_h [L tokens, D]):
// N is padded to a multiple of 16, K to an even Kp (bf16_pad_k), padding zero. Panel p (rows 16p .. 16p+15) is a
// contiguous 16 * Kp bf16 values; inside it, k-pair g (k = 2g, 2g+1) is 32 values = 64 bytes = one zmm, row r's two
// values at 2r (even k) and 2r + 1 (odd k):
//     offset(n, k) = (n / 16) * 16 * Kp + (k / 2) * 32 + (n % 16) * 2 + k % 2        (in uint16 units)
// pack_bf16 packs a row-major [N, K] (stride ldw); pack_bf16_kn packs a B given as [K, N] row-major (attention's
// V_h, [L, D]) into the same layout for C = A * B. bf16_packed_size(n, k) values. The fast packers (AVX512_BF16:
// vcvtne2ps2bf16 + 16x16 register transposes / vpermw) and the scalar references write identical bytes.
//
// GEMM (x86 with AVX512_BF16; bf16_supported()):
//   for each block of bf16_mc rows
//     for each K block (Kp split into equal even blocks of at most bf16_kc; depends only on K)
//       pack A[rows, kblock] into 12-row micro-panels of k-pairs, converting to bf16: panel dword [g * mr + i] =
//         (bf16(A[i, k0+2g]), bf16(A[i, k0+2g+1])) (tail k and tail rows zero). A can also be given as bf16.
//       for each pair of 16-column panels
//         for each micro-panel: 12 x 32 tile = 24 zmm accumulators; per k-pair 2 weight loads, 12 broadcasts of an
//         A pair, 24 vdpbf16ps. Partial sums of earlier K blocks are added from C; on the last K block the fp32
//         epilogue y = act(alpha * acc + bias[n] + res[m, n]) (avx512::act_ps) is applied; masked column tails,
//         row tails by 8- and 4-row variants.
//   Every element is computed by the same sequence of operations whatever [m0, m1) x [p0, p1) split is used, so
//   results do not depend on threads.
// vdpbf16ps semantics (Intel SDM, verified on Zen 5): acc = RNE(acc + a_odd * b_odd), then acc = RNE(acc + a_even *
// b_even), products exact, DAZ and FTZ (denormal intermediate sums become zero) regardless of MXCSR.
// gemm_bf16_ref is the portable scalar reference with the same semantics (same conversion, same K blocks, same
// operation order, FTZ emulated); on Zen 5 its accumulations match the kernel bit for bit, only the GELU differs
// (std::erf / std::tanh vs the polynomial act_ps). Non-x86 builds and CPUs without AVX512_BF16 run gemm_bf16 through
// the reference (correct but slow: check bf16_supported() before choosing bf16).
//
// API (namespace bertlet; all std::ptrdiff_t sizes in elements):
//   float_to_bf16(x) / bf16_to_float(h); convert_to_bf16(x, n, out)       (row conversion, e.g. softmax output)
//   bf16_pad_k(k), bf16_packed_size(n, k)
//   pack_bf16(W, n, k, ldw, out), pack_bf16_kn(B, k, n, ldb, out)         (+ _ref scalar versions)
//   gemm_bf16_args {a | a16, lda, b (or bseg), c, ldc, m, n, k, ep}
//   gemm_bf16(args, m0, m1, p0, p1, scratch)      rows [m0, m1) x 16-col panels [p0, p1); scratch:
//                                                 gemm_bf16_scratch_bytes() bytes, any alignment (fits in the fp32
//                                                 path's gemm_scratch_floats() floats, so the same buffer serves both)
//   gemm_bf16(A, lda, M, K, W, N, ep, C, ldc, m0, m1, p0, p1, scratch)     positional form
//   gemm_bf16_ref(...)                            same two forms, scalar; no scratch needed (may be null)
//   gemm_bf16_parallel(pool, args, scratch, stride_bytes)                  like detail::gemm_parallel
// Thread-safe (pure functions), no allocation.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "bertlet/kernels/avx512.hpp"
#include "bertlet/kernels/cpu.hpp"
#include "bertlet/kernels/packed.hpp"
#include "bertlet/kernels/scalar.hpp"
#include "bertlet/kernels/thread_pool.hpp"

#if defined(BERTLET_HAVE_AVX512_PATH)
#define BERTLET_BF16_X86 1
#define BERTLET_TARGET_BF16 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")))
#endif

// GCC 12's AVX-512 intrinsics self-initialize their undefined operands (`__m512 __Y = __Y;`, GCC PR 105593), which
// -Wmaybe-uninitialized reports once inlined here; it is not a real read.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace bertlet {

// ---------------------------------------------------------------------------------------------------------------
// Conversion and layout.

/// fp32 -> bf16 bits exactly as vcvtne2ps2bf16: RNE, denormal -> signed zero, NaN -> quiet NaN (bit 6 set).
inline std::uint16_t float_to_bf16(float x) noexcept {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    const std::uint32_t e = (u >> 23) & 0xFFu;
    if (e == 0) return static_cast<std::uint16_t>((u >> 16) & 0x8000u);  // zero / denormal
    if (e == 0xFFu) {                                                     // inf / NaN
        const std::uint16_t h = static_cast<std::uint16_t>(u >> 16);
        return (u & 0x7FFFFFu) ? static_cast<std::uint16_t>(h | 0x40u) : h;
    }
    u += 0x7FFFu + ((u >> 16) & 1u);  // may carry into the exponent: rounds up to the next binade or to inf
    return static_cast<std::uint16_t>(u >> 16);
}

inline float bf16_to_float(std::uint16_t h) noexcept {
    const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

inline constexpr std::ptrdiff_t bf16_panel_rows = 16;

/// K padded to even (a k-pair is the unit of vdpbf16ps).
constexpr std::ptrdiff_t bf16_pad_k(std::ptrdiff_t k) noexcept { return (k + 1) / 2 * 2; }

/// uint16 values of the packed form of an [n, k] weight.
constexpr std::size_t bf16_packed_size(std::size_t n, std::size_t k) noexcept {
    return (n + 15) / 16 * 16 * ((k + 1) / 2 * 2);
}

/// Offset (uint16 units) of W[n, k] in the BF16P16K2 layout.
constexpr std::size_t bf16_packed_offset(std::size_t n, std::size_t k, std::size_t kp) noexcept {
    return (n / 16) * 16 * kp + (k / 2) * 32 + (n % 16) * 2 + k % 2;
}

/// Scalar reference: packs a row-major W[n, k] (stride ldw) into BF16P16K2 (bf16_packed_size(n, k) values).
inline void pack_bf16_ref(const float* w, std::ptrdiff_t n, std::ptrdiff_t k, std::ptrdiff_t ldw, std::uint16_t* out) {
    const std::ptrdiff_t kp = bf16_pad_k(k), np = (n + 15) / 16;
    for (std::ptrdiff_t r = 0; r < np * 16; ++r)
        for (std::ptrdiff_t kk = 0; kk < kp; ++kk)
            out[bf16_packed_offset(static_cast<std::size_t>(r), static_cast<std::size_t>(kk),
                                   static_cast<std::size_t>(kp))] =
                (r < n && kk < k) ? float_to_bf16(w[r * ldw + kk]) : std::uint16_t{0};
}

/// Scalar reference: packs B[k, n] given row-major (stride ldb) as the transposed weight of C = A * B (W[j, kk] =
/// B[kk, j]); attention's V_h ([L tokens, D]).
inline void pack_bf16_kn_ref(const float* b, std::ptrdiff_t k, std::ptrdiff_t n, std::ptrdiff_t ldb,
                             std::uint16_t* out) {
    const std::ptrdiff_t kp = bf16_pad_k(k), np = (n + 15) / 16;
    for (std::ptrdiff_t j = 0; j < np * 16; ++j)
        for (std::ptrdiff_t kk = 0; kk < kp; ++kk)
            out[bf16_packed_offset(static_cast<std::size_t>(j), static_cast<std::size_t>(kk),
                                   static_cast<std::size_t>(kp))] =
                (j < n && kk < k) ? float_to_bf16(b[kk * ldb + j]) : std::uint16_t{0};
}

inline void convert_to_bf16_ref(const float* x, std::ptrdiff_t n, std::uint16_t* out) {
    for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = float_to_bf16(x[i]);
}

// ---------------------------------------------------------------------------------------------------------------
// GEMM arguments and blocking.

/// C[M, N] (stride ldc) = epilogue(bf16(A[M, K]) * W^T), W packed BF16P16K2 ([N, K]).
struct gemm_bf16_args {
    const float* a = nullptr;          // fp32 A, row stride lda (converted to bf16 while packing), or
    const std::uint16_t* a16 = nullptr;  // bf16 A (used when a is null), row stride lda (uint16 values)
    std::ptrdiff_t lda = 0;
    const std::uint16_t* b = nullptr;  // packed W: bf16_packed_size(n, k) values
    float* c = nullptr;
    std::ptrdiff_t ldc = 0;
    std::ptrdiff_t m = 0, n = 0, k = 0;
    detail::epilogue ep;
    // Optional, as gemm_args: W made of up to 4 separately packed weights of seg_panels panels each (panel p lives
    // at bseg[p / seg_panels] + (p % seg_panels) * 16 * Kp); any seg_panels >= 1 works.
    const std::uint16_t* bseg[4] = {nullptr, nullptr, nullptr, nullptr};
    std::ptrdiff_t seg_panels = 0;

    /// Start of packed panel p.
    const std::uint16_t* panel(std::ptrdiff_t p) const noexcept {
        const std::ptrdiff_t ps = 16 * bf16_pad_k(k);
        return seg_panels ? bseg[p / seg_panels] + (p % seg_panels) * ps : b + p * ps;
    }
};

// Blocking (Zen 5: 48 KB L1d, 1 MB L2). A K block of 512 is 256 pairs: the B micro-panel of two panels is 32 KB,
// the A micro-panel 12 KB; K = 384 runs as one block, K = 1536 as three.
inline constexpr std::ptrdiff_t bf16_mc = 384;
inline constexpr std::ptrdiff_t bf16_kc = 512;  // even
inline constexpr int bf16_mr = 12;

/// Bytes of per-thread scratch gemm_bf16 needs (the packed bf16 A block, 64-byte aligned inside).
constexpr std::size_t gemm_bf16_scratch_bytes() noexcept {
    return 64 + static_cast<std::size_t>((bf16_mc + 16) * bf16_kc) * 2;
}
static_assert(gemm_bf16_scratch_bytes() <= detail::gemm_scratch_floats() * sizeof(float),
              "the fp32 GEMM scratch must be able to hold the bf16 one");

/// The K blocks of gemm_bf16: equal even blocks of at most bf16_kc covering Kp (a function of K only).
inline std::ptrdiff_t bf16_k_block(std::ptrdiff_t k) noexcept {
    const std::ptrdiff_t kp = bf16_pad_k(k);
    const std::ptrdiff_t nkb = (kp + bf16_kc - 1) / bf16_kc;
    return bf16_pad_k((kp + nkb - 1) / nkb);
}

/// Whether the fast path can run here (AVX512_BF16 on top of the AVX-512 path, in this build).
inline bool bf16_supported(const cpu_features& f = cpu()) noexcept {
#if defined(BERTLET_BF16_X86)
    return f.avx512_bf16 && f.has_avx512_path();
#else
    (void)f;
    return false;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Scalar reference GEMM.

namespace detail::bf16 {

/// One vdpbf16ps lane step: acc = FTZ(RNE(acc + p)), p an exact bf16 product. (double holds acc + p exactly unless
/// the exponents are far apart, in which case the single rounding to float is still correct.)
inline float dp_add(float acc, double p) noexcept {
    const float s = static_cast<float>(static_cast<double>(acc) + p);
    return std::fabs(s) < FLT_MIN ? std::copysign(0.0f, s) : s;
}

inline std::uint16_t a_at(const gemm_bf16_args& g, std::ptrdiff_t m, std::ptrdiff_t k) noexcept {
    if (k >= g.k) return 0;
    return g.a ? float_to_bf16(g.a[m * g.lda + k]) : g.a16[m * g.lda + k];
}

}  // namespace detail::bf16

/// Scalar reference of gemm_bf16 (same conversion, K blocks, operation order and epilogue; std::erf/std::tanh GELU).
inline void gemm_bf16_ref(const gemm_bf16_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0,
                          std::ptrdiff_t p1, void* scratch = nullptr) {
    (void)scratch;
    if (m1 <= m0 || p1 <= p0 || g.k <= 0) return;
    const std::ptrdiff_t kp = bf16_pad_k(g.k), kcs = bf16_k_block(g.k);
    const std::ptrdiff_t n1 = std::min(g.n, p1 * 16);
    for (std::ptrdiff_t m = m0; m < m1; ++m)
        for (std::ptrdiff_t n = p0 * 16; n < n1; ++n) {
            const std::uint16_t* w = g.panel(n / 16) + (n % 16) * 2;
            float c = 0.0f;
            for (std::ptrdiff_t k0 = 0; k0 < kp; k0 += kcs) {
                const std::ptrdiff_t kc = std::min(kcs, kp - k0);
                float s = 0.0f;
                for (std::ptrdiff_t kk = k0; kk < k0 + kc; kk += 2) {
                    const std::uint16_t* wg = w + (kk / 2) * 32;
                    const double po = static_cast<double>(bf16_to_float(detail::bf16::a_at(g, m, kk + 1))) *
                                      static_cast<double>(bf16_to_float(wg[1]));
                    const double pe = static_cast<double>(bf16_to_float(detail::bf16::a_at(g, m, kk))) *
                                      static_cast<double>(bf16_to_float(wg[0]));
                    s = detail::bf16::dp_add(s, po);
                    s = detail::bf16::dp_add(s, pe);
                }
                c = k0 == 0 ? s : c + s;
            }
            const detail::epilogue& ep = g.ep;
            float v = std::fma(c, ep.alpha, ep.bias ? ep.bias[n] : 0.0f);
            if (ep.residual) v += ep.residual[m * ep.ldr + n];
            g.c[m * g.ldc + n] = detail::scalar::act_one(v, ep.act);
        }
}

// ---------------------------------------------------------------------------------------------------------------
// AVX512_BF16 kernels.

#if defined(BERTLET_BF16_X86)
namespace detail::bf16 {

BERTLET_TARGET_BF16 inline __mmask16 mask16(std::ptrdiff_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : n <= 0 ? static_cast<__mmask16>(0) :
                                                               static_cast<__mmask16>((1u << n) - 1u);
}
BERTLET_TARGET_BF16 inline __mmask32 mask32(std::ptrdiff_t n) {
    return n >= 32 ? static_cast<__mmask32>(0xFFFFFFFFu) : n <= 0 ? static_cast<__mmask32>(0) :
                                                                    static_cast<__mmask32>((1u << n) - 1u);
}

/// 32 floats (two zmm, low k first) -> 32 bf16 in k order = 16 dwords, each a k-pair.
BERTLET_TARGET_BF16 inline __m512i cvt32(__m512 lo, __m512 hi) {
    return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo));
}

/// 16x16 transpose of dwords r[0..15] in place.
BERTLET_TARGET_BF16 inline void transpose16(__m512i r[16]) {
    __m512i t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    // r[4i + j] now holds, for rows 4i..4i+3, columns {j, j+4, j+8, j+12} (one per 128-bit lane)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) {
        const __m512i a = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);
        const __m512i b = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
        const __m512i c = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xDD);
        const __m512i d = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_i32x4(a, b, 0x88);
        t[8 + j] = _mm512_shuffle_i32x4(a, b, 0xDD);
        t[4 + j] = _mm512_shuffle_i32x4(c, d, 0x88);
        t[12 + j] = _mm512_shuffle_i32x4(c, d, 0xDD);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}

/// Packs rows [0, rows) (rows <= 16) x k [0, kc) (kc even; values at k >= kvalid read as 0) of a row-major source
/// (fp32, converted, or bf16) into k-pair micro-panels of mr rows: dword out[g * mr + i] = (src[i, 2g], src[i, 2g+1])
/// (rows .. mr zero). With mr = 16 this is exactly one BF16P16K2 panel.
template <class Src>
BERTLET_TARGET_BF16 void pack_pairs(const Src* src, std::ptrdiff_t ld, std::ptrdiff_t kvalid, std::ptrdiff_t kc,
                                    int rows, int mr, std::uint32_t* out) {
    const __mmask16 rowmask = mask16(mr);
    for (std::ptrdiff_t k = 0; k < kc; k += 32) {
        const std::ptrdiff_t rem = kvalid - k;
        __m512i r[16];
        if constexpr (sizeof(Src) == 4) {
            const __mmask16 mlo = mask16(rem), mhi = mask16(rem - 16);
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i)
                r[i] = i < rows ? cvt32(_mm512_maskz_loadu_ps(mlo, src + i * ld + k),
                                        _mm512_maskz_loadu_ps(mhi, src + i * ld + k + 16))
                                : _mm512_setzero_si512();
        } else {
            const __mmask32 m = mask32(rem);
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i)
                r[i] = i < rows ? _mm512_maskz_loadu_epi16(m, src + i * ld + k) : _mm512_setzero_si512();
        }
        transpose16(r);
        const int npairs = static_cast<int>(std::min<std::ptrdiff_t>(16, (kc - k) / 2));
        std::uint32_t* o = out + (k / 2) * mr;
        if (mr == 16) {
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j)
                if (j < npairs) _mm512_storeu_si512(o + j * 16, r[j]);
        } else {
#pragma GCC unroll 16
            for (int j = 0; j < 16; ++j)
                if (j < npairs) _mm512_mask_storeu_epi32(o + j * mr, rowmask, r[j]);
        }
    }
}

BERTLET_TARGET_BF16 inline void pack_nk(const float* w, std::ptrdiff_t n, std::ptrdiff_t k, std::ptrdiff_t ldw,
                                        std::uint16_t* out) {
    const std::ptrdiff_t kp = bf16_pad_k(k), np = (n + 15) / 16;
    for (std::ptrdiff_t p = 0; p < np; ++p)
        pack_pairs<float>(w + p * 16 * ldw, ldw, k, kp, static_cast<int>(std::min<std::ptrdiff_t>(16, n - p * 16)),
                          16, reinterpret_cast<std::uint32_t*>(out + p * 16 * kp));
}

BERTLET_TARGET_BF16 inline void pack_kn(const float* b, std::ptrdiff_t k, std::ptrdiff_t n, std::ptrdiff_t ldb,
                                        std::uint16_t* out) {
    const std::ptrdiff_t kp = bf16_pad_k(k), np = (n + 15) / 16;
    // interleave the two 16-value halves: out[2j] = lo[j] (row 2g), out[2j + 1] = hi[j] (row 2g + 1)
    alignas(64) static constexpr std::uint16_t idx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                          8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i perm = _mm512_load_si512(idx);
    // k-pairs outer, panels inner: each source row segment is read once, in address order
    for (std::ptrdiff_t kk = 0; kk < kp; kk += 2) {
        const float* r0 = b + kk * ldb;
        const float* r1 = kk + 1 < k ? r0 + ldb : nullptr;  // odd K: the pad row is zero
        std::uint16_t* o = out + kk * 16;
        for (std::ptrdiff_t p = 0; p < np; ++p) {
            const __mmask16 m = mask16(n - p * 16);
            const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + p * 16);
            const __m512 hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + p * 16) : _mm512_setzero_ps();
            _mm512_storeu_si512(o + p * 16 * kp, _mm512_permutexvar_epi16(perm, cvt32(lo, hi)));
        }
    }
}

BERTLET_TARGET_BF16 inline void convert(const float* x, std::ptrdiff_t n, std::uint16_t* out) {
    std::ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32)
        _mm512_storeu_si512(out + i, cvt32(_mm512_loadu_ps(x + i), _mm512_loadu_ps(x + i + 16)));
    if (i < n) {
        const __m512i v = cvt32(_mm512_maskz_loadu_ps(mask16(n - i), x + i),
                                _mm512_maskz_loadu_ps(mask16(n - i - 16), x + i + 16));
        _mm512_mask_storeu_epi16(out + i, mask32(n - i), v);
    }
}

/// One micro-kernel call: an MR x (16 * NP) tile of C over one K block.
struct tile_args {
    const std::uint32_t* ap;  // A micro-panel: for each k-pair, MR dwords
    const std::uint16_t* b0;  // first panel at the K block start
    const std::uint16_t* b1;  // second panel at the K block start (NP = 2)
    std::ptrdiff_t npairs;    // k-pairs in the block (>= 1)
    float* c;
    std::ptrdiff_t ldc;
    int rows, cols;
    bool add_c;
    const detail::epilogue* ep;  // non-null on the last K block
    const float* bias;           // at the tile's first column
    const float* res;            // at the tile origin
    const std::uint16_t* pf[2];  // next panel group's B block lines to prefetch (64 bytes = one k-pair each)
    std::ptrdiff_t pf_n;
};

template <int MR, int NP>
BERTLET_TARGET_BF16 void tile(const tile_args& t) {
    __m512 acc[MR][NP];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
    const std::uint32_t* a = t.ap;
    const std::uint16_t* b0 = t.b0;
    const std::uint16_t* b1 = t.b1;
    // next panel group's lines spread evenly over the k loop (as the fp32 tile_mr: a burst delays this tile's loads)
    const std::ptrdiff_t npf = t.pf_n;
    const std::ptrdiff_t step = npf > 0 ? std::max<std::ptrdiff_t>(1, t.npairs / npf) : 1;
    std::ptrdiff_t pk = 0, next = 0;
    for (std::ptrdiff_t g = 0; g < t.npairs; ++g) {
        if (g == next && pk < npf) {
            _mm_prefetch(reinterpret_cast<const char*>(t.pf[0] + pk * 32), _MM_HINT_T1);
            _mm_prefetch(reinterpret_cast<const char*>(t.pf[1] + pk * 32), _MM_HINT_T1);
            ++pk;
            next += step;
        }
        const __m512bh w0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b0 + g * 32));
        const __m512bh w1 = NP > 1 ? reinterpret_cast<__m512bh>(_mm512_loadu_si512(b1 + g * 32)) : w0;
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[g * MR + i])));
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, w0);
            if (NP > 1) acc[i][NP - 1] = _mm512_dpbf16_ps(acc[i][NP - 1], av, w1);
        }
    }
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        const int c0 = j * 16;
        if (t.cols <= c0) break;
        const __mmask16 m = mask16(t.cols - c0);
        const detail::epilogue* ep = t.ep;
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
                v = detail::avx512::act_ps(v, ep->act);
            }
            _mm512_mask_storeu_ps(c, m, v);
        }
    }
}

inline void run_tile(const tile_args& t, int mr, int np) {
    if (np == 2) {
        if (mr == 12) tile<12, 2>(t);
        else if (mr == 8) tile<8, 2>(t);
        else tile<4, 2>(t);
    } else {
        if (mr == 12) tile<12, 1>(t);
        else if (mr == 8) tile<8, 1>(t);
        else tile<4, 1>(t);
    }
}

inline void gemm(const gemm_bf16_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1,
                 void* scratch) {
    constexpr int MR = bf16_mr, STEP = 4, NP = 2;
    const std::ptrdiff_t K = g.k;
    if (m1 <= m0 || p1 <= p0 || K <= 0) return;
    const std::ptrdiff_t kp = bf16_pad_k(K), kcs = bf16_k_block(K);
    auto* const base = reinterpret_cast<std::uint32_t*>(
        (reinterpret_cast<std::uintptr_t>(scratch) + 63) & ~static_cast<std::uintptr_t>(63));
    for (std::ptrdiff_t mb = m0; mb < m1; mb += bf16_mc) {
        const std::ptrdiff_t mlen = std::min(bf16_mc, m1 - mb);
        for (std::ptrdiff_t k0 = 0; k0 < kp; k0 += kcs) {
            const std::ptrdiff_t kc = std::min(kcs, kp - k0);
            const std::ptrdiff_t npairs = kc / 2;
            const bool last = k0 + kc == kp;
            std::uint32_t* ap = base;
            for (std::ptrdiff_t i0 = 0; i0 < mlen; i0 += MR) {
                const int rows = static_cast<int>(std::min<std::ptrdiff_t>(MR, mlen - i0));
                const int mr = (rows + STEP - 1) / STEP * STEP;
                if (g.a)
                    pack_pairs<float>(g.a + (mb + i0) * g.lda + k0, g.lda, K - k0, kc, rows, mr, ap);
                else
                    pack_pairs<std::uint16_t>(g.a16 + (mb + i0) * g.lda + k0, g.lda, K - k0, kc, rows, mr, ap);
                ap += mr * npairs;
            }
            const std::ptrdiff_t nrb = (mlen + MR - 1) / MR;
            const std::ptrdiff_t pf_per = (npairs + nrb - 1) / nrb;  // lines of each next panel per row block
            for (std::ptrdiff_t p = p0; p < p1; p += NP) {
                const int np = static_cast<int>(std::min<std::ptrdiff_t>(NP, p1 - p));
                const std::ptrdiff_t col0 = p * 16;
                const int cols = static_cast<int>(std::min<std::ptrdiff_t>(np * 16, g.n - col0));
                const std::ptrdiff_t pn = p + NP;
                const std::uint32_t* ap_i = base;
                for (std::ptrdiff_t i0 = 0; i0 < mlen; i0 += MR) {
                    const int rows = static_cast<int>(std::min<std::ptrdiff_t>(MR, mlen - i0));
                    const int mr = (rows + STEP - 1) / STEP * STEP;
                    tile_args t;
                    t.ap = ap_i;
                    t.b0 = g.panel(p) + k0 * 16;
                    t.b1 = np > 1 ? g.panel(p + 1) + k0 * 16 : t.b0;
                    t.npairs = npairs;
                    t.c = g.c + (mb + i0) * g.ldc + col0;
                    t.ldc = g.ldc;
                    t.rows = rows;
                    t.cols = cols;
                    t.add_c = k0 > 0;
                    t.ep = last ? &g.ep : nullptr;
                    t.bias = last && g.ep.bias ? g.ep.bias + col0 : nullptr;
                    t.res = last && g.ep.residual ? g.ep.residual + (mb + i0) * g.ep.ldr + col0 : nullptr;
                    const std::ptrdiff_t pf0 = std::min(npairs, (i0 / MR) * pf_per);
                    t.pf_n = pn < p1 ? std::max<std::ptrdiff_t>(0, std::min(pf_per, npairs - pf0)) : 0;
                    for (int j = 0; j < 2; ++j) {
                        const std::ptrdiff_t pj = std::min(pn + j, p1 - 1);
                        t.pf[j] = g.panel(pj) + (k0 / 2 + pf0) * 32;
                    }
                    run_tile(t, mr, np);
                    ap_i += mr * npairs;
                }
            }
        }
    }
}

// ---- fused attention (one sequence x one head), bf16 operands, fp32 accumulation and softmax ------------------
// K_h is packed once into BF16P16K2 key panels (pack_nk), V_h into BF16P16K2 as the B of P V (pack_kn) and Q_h is
// rounded to bf16 rows; then per tile of up to 12 query rows: S = scale * Q K^T (vdpbf16ps, k-pairs of D), the row
// max folded into that store (S in log2 units), softmax numerators 2^(S - max) in fp32 (exp2_softmax), written as
// bf16 P, ctx = P V (vdpbf16ps over key pairs) divided by the fp32 row sum at the store.

/// The inner loop of both attention matmuls: acc[i][j] = sum over k-pairs g < npairs of a_i[g] . B_j[g] (vdpbf16ps),
/// a_i = dword row i of A (stride lda32; rows past `rows` repeat the last one, not stored), B_j[g] the 32 bf16 at
/// b + j * bpanel + 32 g (BF16P16K2 panels).
template <int MR, int NP>
BERTLET_TARGET_BF16 inline void attn_acc(const std::uint32_t* a0, std::ptrdiff_t lda32, int rows, const std::uint16_t* b,
                                         std::ptrdiff_t bpanel, std::ptrdiff_t npairs, __m512 (&acc)[MR][NP]) {
    const std::uint32_t* a[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) a[i] = a0 + std::min(i, rows - 1) * lda32;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int j = 0; j < NP; ++j) acc[i][j] = _mm512_setzero_ps();
    const std::uint16_t* b1 = b + (NP > 1 ? bpanel : 0);
    for (std::ptrdiff_t g = 0; g < npairs; ++g) {
        const __m512bh w0 = reinterpret_cast<__m512bh>(_mm512_loadu_si512(b + g * 32));
        const __m512bh w1 = NP > 1 ? reinterpret_cast<__m512bh>(_mm512_loadu_si512(b1 + g * 32)) : w0;
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[i][g])));
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], av, w0);
            if (NP > 1) acc[i][NP - 1] = _mm512_dpbf16_ps(acc[i][NP - 1], av, w1);
        }
    }
}

template <int MR, int NP>
BERTLET_TARGET_BF16 inline void attn_qk_tile(const std::uint32_t* q16, std::ptrdiff_t ldq32, int rows,
                                             const std::uint16_t* kp0, std::ptrdiff_t kpanel, std::ptrdiff_t npairs,
                                             float scale, float* s, std::ptrdiff_t lds, int cols, __m512* mx) {
    __m512 acc[MR][NP];
    attn_acc<MR, NP>(q16, ldq32, rows, kp0, kpanel, npairs, acc);
    const __m512 al = _mm512_set1_ps(scale);
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        if (cols <= j * 16) break;
        const __mmask16 m = mask16(cols - j * 16);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= rows) break;
            const __m512 y = _mm512_mul_ps(acc[i][j], al);
            _mm512_mask_storeu_ps(s + i * lds + j * 16, m, y);
            mx[i] = _mm512_mask_max_ps(mx[i], m, mx[i], y);
        }
    }
}

template <int MR, int NP>
BERTLET_TARGET_BF16 inline void attn_pv_tile(const std::uint32_t* p16, std::ptrdiff_t ldp32, int rows,
                                             const std::uint16_t* vp0, std::ptrdiff_t vpanel, std::ptrdiff_t npairs,
                                             const float* inv, float* c, std::ptrdiff_t ldc, int cols) {
    __m512 acc[MR][NP];
    attn_acc<MR, NP>(p16, ldp32, rows, vp0, vpanel, npairs, acc);
#pragma GCC unroll 2
    for (int j = 0; j < NP; ++j) {
        if (cols <= j * 16) break;
        const __mmask16 m = mask16(cols - j * 16);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= rows) break;
            _mm512_mask_storeu_ps(c + i * ldc + j * 16, m, _mm512_mul_ps(acc[i][j], _mm512_set1_ps(inv[i])));
        }
    }
}

/// 2^x for the softmax numerators of bf16 attention (x = log2-scaled score minus the row max, so x <= 0): n =
/// round(x), r = x - n exactly, 2^r by its degree-4 Taylor polynomial (relative error < 6e-5 on |r| <= 1/2, against
/// the 2^-9 rounding of the bf16 P that follows), times 2^n by vscalefps. 7 instructions instead of exp_ps's 12 (the
/// log2 e factor is folded into the score scale). x below -126 gives 0 (clamped first: -inf would make r NaN).
BERTLET_TARGET_BF16 inline __m512 exp2_softmax(__m512 x) {
    x = _mm512_mask_max_ps(x, 0xFFFF, x, _mm512_set1_ps(-127.0f));
    const __m512 n = _mm512_mask_roundscale_ps(x, 0xFFFF, x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 r = _mm512_sub_ps(x, n);
    __m512 p = _mm512_set1_ps(0.0096181291f);  // ln2^4 / 24
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.0555041087f));  // ln2^3 / 6
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.2402265070f));  // ln2^2 / 2
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.6931471806f));  // ln2
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_mask_scalef_ps(p, 0xFFFF, p, n);
}

template <int MR>
BERTLET_TARGET_BF16 inline void attn_rows(const std::uint32_t* q16, std::ptrdiff_t ldq32, int rows,
                                          const std::uint16_t* kp, const std::uint16_t* vp, std::ptrdiff_t L,
                                          std::ptrdiff_t D, float scale, float* s, std::ptrdiff_t lds,
                                          std::uint16_t* p16, std::ptrdiff_t ldp, float* c, std::ptrdiff_t ldc) {
    const std::ptrdiff_t np = (L + 15) / 16, dpairs = bf16_pad_k(D) / 2, lp = bf16_pad_k(L);
    const std::ptrdiff_t kpanel = 16 * bf16_pad_k(D), vpanel = 16 * lp;
    __m512 mx[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) mx[i] = _mm512_set1_ps(-INFINITY);
    for (std::ptrdiff_t p = 0; p < np; p += 2) {
        const int cols = static_cast<int>(std::min<std::ptrdiff_t>(32, L - p * 16));
        if (p + 1 < np)
            attn_qk_tile<MR, 2>(q16, ldq32, rows, kp + p * kpanel, kpanel, dpairs, scale, s + p * 16, lds, cols, mx);
        else
            attn_qk_tile<MR, 1>(q16, ldq32, rows, kp + p * kpanel, kpanel, dpairs, scale, s + p * 16, lds, cols, mx);
    }
    alignas(64) float inv[MR];
    for (int i0 = 0; i0 < rows; i0 += 4) {
        __m512 mv[4], sum[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j) {
            mv[j] = _mm512_set1_ps(avx512::hmax(mx[std::min(i0 + j, MR - 1)]));
            sum[j] = _mm512_setzero_ps();
        }
        for (std::ptrdiff_t c0 = 0; c0 < lp; c0 += 32) {  // 32 keys -> one zmm of bf16; keys past L give 0
            const __mmask16 m0 = mask16(L - c0), m1 = mask16(L - c0 - 16);
#pragma GCC unroll 4
            for (int j = 0; j < 4; ++j) {
                if (i0 + j >= rows) break;
                const float* xr = s + (i0 + j) * lds + c0;
                const __m512 e0 =
                    _mm512_maskz_mov_ps(m0, exp2_softmax(_mm512_sub_ps(_mm512_maskz_loadu_ps(m0, xr), mv[j])));
                const __m512 e1 =
                    _mm512_maskz_mov_ps(m1, exp2_softmax(_mm512_sub_ps(_mm512_maskz_loadu_ps(m1, xr + 16), mv[j])));
                sum[j] = _mm512_add_ps(sum[j], _mm512_add_ps(e0, e1));
                _mm512_mask_storeu_epi16(p16 + (i0 + j) * ldp + c0, mask32(lp - c0), cvt32(e0, e1));
            }
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j)
            if (i0 + j < rows) inv[i0 + j] = 1.0f / avx512::hsum(sum[j]);
    }
    const auto* p32 = reinterpret_cast<const std::uint32_t*>(p16);
    const std::ptrdiff_t nd = (D + 15) / 16;
    for (std::ptrdiff_t d = 0; d < nd; d += 2) {
        const int cols = static_cast<int>(std::min<std::ptrdiff_t>(32, D - d * 16));
        if (d + 1 < nd)
            attn_pv_tile<MR, 2>(p32, ldp / 2, rows, vp + d * vpanel, vpanel, lp / 2, inv, c + d * 16, ldc, cols);
        else
            attn_pv_tile<MR, 1>(p32, ldp / 2, rows, vp + d * vpanel, vpanel, lp / 2, inv, c + d * 16, ldc, cols);
    }
}

BERTLET_TARGET_BF16 inline void attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld,
                                               float* ctx, std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D,
                                               float scale, void* scratch) {
    if (L <= 0 || D <= 0) return;
    const std::ptrdiff_t dp = bf16_pad_k(D), lds = (L + 15) / 16 * 16, ldp = (L + 31) / 32 * 32;
    auto* base = reinterpret_cast<unsigned char*>(
        (reinterpret_cast<std::uintptr_t>(scratch) + 63) & ~static_cast<std::uintptr_t>(63));
    auto carve = [&](std::size_t bytes) {
        unsigned char* p = base;
        base += (bytes + 63) / 64 * 64;
        return p;
    };
    auto* kp = reinterpret_cast<std::uint16_t*>(carve(bf16_packed_size(L, D) * 2));
    auto* vp = reinterpret_cast<std::uint16_t*>(carve(bf16_packed_size(D, L) * 2));
    auto* q16 = reinterpret_cast<std::uint16_t*>(carve(static_cast<std::size_t>(L * dp) * 2));
    auto* s = reinterpret_cast<float*>(carve(static_cast<std::size_t>(12 * lds) * 4));
    auto* p16 = reinterpret_cast<std::uint16_t*>(carve(static_cast<std::size_t>(12 * ldp) * 2));
    pack_nk(k, L, D, ld, kp);
    pack_kn(v, L, D, ld, vp);
    for (std::ptrdiff_t i = 0; i < L; ++i) {
        convert(q + i * ld, D, q16 + i * dp);
        if (dp > D) q16[i * dp + D] = 0;
    }
    const auto* q32 = reinterpret_cast<const std::uint32_t*>(q16);
    const float scale2 = scale * 1.44269504088896341f;  // scores in log2 units: softmax numerators are 2^(s - max)
    detail::attn_row_tiles<12>(L, [&](auto r, std::ptrdiff_t q0, int rows) BERTLET_TARGET_BF16 {
        attn_rows<decltype(r)::value>(q32 + q0 * (dp / 2), dp / 2, rows, kp, vp, L, D, scale2, s, lds, p16, ldp,
                                      ctx + q0 * ldc, ldc);
    });
}

}  // namespace detail::bf16
#endif  // BERTLET_BF16_X86

// ---------------------------------------------------------------------------------------------------------------
// Public entry points (fast path when bf16_supported(), scalar reference otherwise).

/// Packs a row-major W[n, k] (stride ldw) into BF16P16K2; out holds bf16_packed_size(n, k) values.
inline void pack_bf16(const float* w, std::ptrdiff_t n, std::ptrdiff_t k, std::ptrdiff_t ldw, std::uint16_t* out) {
#if defined(BERTLET_BF16_X86)
    if (bf16_supported()) return detail::bf16::pack_nk(w, n, k, ldw, out);
#endif
    pack_bf16_ref(w, n, k, ldw, out);
}

/// Packs B[k, n] row-major (stride ldb) so that gemm_bf16 computes C = A * B; out: bf16_packed_size(n, k) values.
inline void pack_bf16_kn(const float* b, std::ptrdiff_t k, std::ptrdiff_t n, std::ptrdiff_t ldb, std::uint16_t* out) {
#if defined(BERTLET_BF16_X86)
    if (bf16_supported()) return detail::bf16::pack_kn(b, k, n, ldb, out);
#endif
    pack_bf16_kn_ref(b, k, n, ldb, out);
}

/// out[i] = float_to_bf16(x[i]) for i < n.
inline void convert_to_bf16(const float* x, std::ptrdiff_t n, std::uint16_t* out) {
#if defined(BERTLET_BF16_X86)
    if (bf16_supported()) return detail::bf16::convert(x, n, out);
#endif
    convert_to_bf16_ref(x, n, out);
}

/// Rows [m0, m1) x 16-column panels [p0, p1) of C = epilogue(bf16(A) * W^T). scratch: gemm_bf16_scratch_bytes()
/// bytes, any alignment. K <= 0 leaves C untouched (as the fp32 GEMM).
inline void gemm_bf16(const gemm_bf16_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0,
                      std::ptrdiff_t p1, void* scratch) {
#if defined(BERTLET_BF16_X86)
    if (bf16_supported()) return detail::bf16::gemm(g, m0, m1, p0, p1, scratch);
#endif
    gemm_bf16_ref(g, m0, m1, p0, p1, scratch);
}

namespace detail::bf16 {
inline gemm_bf16_args make_args(const float* A, std::ptrdiff_t lda, std::ptrdiff_t M, std::ptrdiff_t K,
                                const std::uint16_t* W, std::ptrdiff_t N, const epilogue& ep, float* C,
                                std::ptrdiff_t ldc) {
    gemm_bf16_args g;
    g.a = A;
    g.lda = lda;
    g.m = M;
    g.k = K;
    g.b = W;
    g.n = N;
    g.ep = ep;
    g.c = C;
    g.ldc = ldc;
    return g;
}
}  // namespace detail::bf16

/// Positional form: A fp32 [M, K] (stride lda), W packed [N, K], C [M, N] (stride ldc).
inline void gemm_bf16(const float* A, std::ptrdiff_t lda, std::ptrdiff_t M, std::ptrdiff_t K, const std::uint16_t* W,
                      std::ptrdiff_t N, const detail::epilogue& ep, float* C, std::ptrdiff_t ldc, std::ptrdiff_t m0,
                      std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1, void* scratch) {
    gemm_bf16(detail::bf16::make_args(A, lda, M, K, W, N, ep, C, ldc), m0, m1, p0, p1, scratch);
}

inline void gemm_bf16_ref(const float* A, std::ptrdiff_t lda, std::ptrdiff_t M, std::ptrdiff_t K,
                          const std::uint16_t* W, std::ptrdiff_t N, const detail::epilogue& ep, float* C,
                          std::ptrdiff_t ldc, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0,
                          std::ptrdiff_t p1, void* scratch = nullptr) {
    gemm_bf16_ref(detail::bf16::make_args(A, lda, M, K, W, N, ep, C, ldc), m0, m1, p0, p1, scratch);
}

/// Bytes of scratch bf16_attention_head needs for one head at length L, head size D (any alignment).
constexpr std::size_t bf16_attention_scratch_bytes(std::size_t L, std::size_t D) noexcept {
    const std::size_t dp = (D + 1) / 2 * 2, lds = (L + 15) / 16 * 16, ldp = (L + 31) / 32 * 32;
    auto up = [](std::size_t b) { return (b + 63) / 64 * 64; };
    return 64 + up(bf16_packed_size(L, D) * 2) + up(bf16_packed_size(D, L) * 2) + up(L * dp * 2) + up(12 * lds * 4) +
           up(12 * ldp * 2);
}

/// Scalar reference of bf16_attention_head: Q and K rounded to bf16, S = scale * Q K^T, e = exp(S - rowmax) in
/// fp32, P = bf16(e), ctx = (P bf16(V)) / sum(e). Accumulations in double (the fast kernel's fp32 sums differ in the
/// last bits). No scratch.
inline void bf16_attention_head_ref(const float* q, const float* k, const float* v, std::ptrdiff_t ld, float* ctx,
                                    std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale) {
    auto r = [](float x) { return bf16_to_float(float_to_bf16(x)); };
    for (std::ptrdiff_t i = 0; i < L; ++i) {
        float mx = -INFINITY;
        for (std::ptrdiff_t j = 0; j < L; ++j) {
            double d = 0;
            for (std::ptrdiff_t t = 0; t < D; ++t) d += double(r(q[i * ld + t])) * r(k[j * ld + t]);
            mx = std::max(mx, static_cast<float>(d) * scale);
        }
        double sum = 0;
        std::vector<double> acc(static_cast<std::size_t>(D), 0.0);
        for (std::ptrdiff_t j = 0; j < L; ++j) {
            double d = 0;
            for (std::ptrdiff_t t = 0; t < D; ++t) d += double(r(q[i * ld + t])) * r(k[j * ld + t]);
            const float e = std::exp(static_cast<float>(d) * scale - mx);
            sum += e;
            for (std::ptrdiff_t t = 0; t < D; ++t) acc[static_cast<std::size_t>(t)] += double(r(e)) * r(v[j * ld + t]);
        }
        for (std::ptrdiff_t t = 0; t < D; ++t) ctx[i * ldc + t] = static_cast<float>(acc[static_cast<std::size_t>(t)] / sum);
    }
}

/// One attention head of one sequence in bf16 (fp32 accumulation and softmax): ctx[L, D] (row stride ldc) =
/// softmax(scale * Q K^T) V, Q, K, V [L, D] with row stride ld. scratch: bf16_attention_scratch_bytes(L, D) bytes.
/// Without AVX512_BF16 it runs the scalar reference (slow; callers check bf16_supported()).
inline void bf16_attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld, float* ctx,
                                std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale, void* scratch) {
#if defined(BERTLET_BF16_X86)
    if (bf16_supported()) return detail::bf16::attention_head(q, k, v, ld, ctx, ldc, L, D, scale, scratch);
#endif
    (void)scratch;
    bf16_attention_head_ref(q, k, v, ld, ctx, ldc, L, D, scale);
}

/// Whole GEMM over a pool, split as detail::gemm_parallel (detail::plan_gemm_split). scratch: pool size x
/// stride_bytes bytes (stride_bytes >= gemm_bf16_scratch_bytes()). Results do not depend on the thread count.
inline void gemm_bf16_parallel(detail::thread_pool* pool, const gemm_bf16_args& g, void* scratch,
                               std::size_t stride_bytes) {
    const std::size_t threads = pool ? pool->size() : 1;
    const std::ptrdiff_t np = (g.n + 15) / 16;
    if (threads <= 1 || g.m <= 0) {
        gemm_bf16(g, 0, g.m, 0, np, scratch);
        return;
    }
    const detail::gemm_split plan = detail::plan_gemm_split(g.m, np, static_cast<std::ptrdiff_t>(threads), bf16_mc);
    pool->run(static_cast<std::size_t>(plan.tasks), [&](std::size_t task, std::size_t slot) {
        std::ptrdiff_t m0, m1, q0, q1;
        plan.range(static_cast<std::ptrdiff_t>(task), g.m, np, m0, m1, q0, q1);
        if (m1 > m0 && q1 > q0) gemm_bf16(g, m0, m1, q0, q1, static_cast<unsigned char*>(scratch) + slot * stride_bytes);
    });
}

}  // namespace bertlet

#if defined(BERTLET_BF16_X86)
#undef BERTLET_TARGET_BF16
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
