// bertlet — fp32 GEMM on the AMX tiles as six bf16 products ("bf16x6"; avx512 path on CPUs with AMX-BF16).
//
// Why: on an Intel core with AMX the tile unit does 512 bf16 multiply-adds per cycle (tdpbf16ps, fp32
// accumulation), sixteen times the 32 fp32 multiply-adds of the two 512-bit FMA pipes. An fp32 value x splits
// exactly into three bf16 parts, x = x0 + x1 + x2 (x0 = bf16(x), x1 = bf16(x - x0), x2 = x - x0 - x1; each part
// holds the next 8 significant bits, so the sum is exact for every normal float). Then
//     a * w = a0 w0 + (a0 w1 + a1 w0) + (a0 w2 + a1 w1 + a2 w0) + [a1 w2 + a2 w1 + a2 w2]
// and the six products before the bracket, each exact in fp32 (8 x 8 significant bits), accumulated in fp32,
// leave out terms of relative size 2^-24 and below: the same order as fp32's own rounding (Henry, Tang and
// Heinecke, "Leveraging the bfloat16 AI datatype for higher-precision computations", ARITH 2019: "bf16x6").
// Measured on the MiniLM shapes (M 128): max |error| / sum |a w| against float64 1.1-1.2e-7 here against 1.1-2.7e-7
// for the FMA kernel (`bertlet_bench_gemm_bf16 --benchmark_filter=lin_`, counter relerr). Six tile products still
// cost 3x fewer cycles than the FMAs (16 tdpbf16ps cycles do 8192 multiply-adds); the GEMMs run 1.7-2.0x the FMA
// kernel (299-377 vs 162-180 GFLOP/s on the 2026-12-06 Xeon, same benchmark).
//
// Weight layout ("F32X6", built at load from the PACKED_N16 panels; 6 bytes per weight): W[N out, K in],
// N % 32 == 0, K % 32 == 0. Panel p (outputs 16p .. 16p+15), k-step s (k = 32s .. 32s+31), part q: one AMX B tile
// of 16 rows (k pairs) x 64 bytes, element (k, n) at (k % 32 / 2) * 32 + n % 16 * 2 + k % 2:
//     offset(n, k, q) = ((n / 16 * (K / 32) + k / 32) * 3 + q) * 512 + (k % 32 / 2) * 32 + (n % 16) * 2 + k % 2
// Activations are split per call into the same tile order ([row block of 16][k-step][part][16 rows][32 k], rows
// past M zero) in a caller buffer of f32x6_a_size(M, K) uint16.
//
// Blocks: 32 rows (two row tiles; the last block padded with zero rows) x 32 columns (two panels): C in tmm0-3, A parts in
// tmm4-5, B parts in tmm6-7. Per k-step 18 tile loads feed 24 tdpbf16ps in 6 groups of 4 independent products
// (a tdpbf16ps waits ~50 cycles for its accumulator, 4 apart it never does). The next k-step's tiles (next block's
// first at the end) are prefetched into L1 between the products: the tile registers are not renamed, so a load that
// misses L1 stalls the products behind it. Every tile must start on a 64-byte boundary (each 64-byte row on one cache
// line): tiles read from 16-byte aligned std::vector storage ran at about half speed. Each output element is
// the same sequence of operations whatever the thread split, so results do not depend on threads. The epilogue
// (alpha, bias, residual, activation: avx512::act_ps) runs on AVX-512 from a stack copy of the four C tiles.
//
// bf16 weights (f32x6_args::bf16; bf16 blobs, layout 3): their BF16P16K2 panels (gemm_bf16.hpp) are AMX B tiles as
// they are (16 k-pair rows of 64 bytes per k-step), so they are used in place from the mmap; A is rounded to bf16 (one
// part) and each block and k-step is one tile product per C tile: the semantics of gemm_bf16 (exact products, fp32
// sums), one tdpbf16ps where bf16x6 does six.
//
// API: f32x6_supported(), f32x6_shape_ok(n, k), f32x6_packed_size(n, k), pack_f32x6(packed_n16, n, k, out),
// f32x6_a_size(m, k), f32x6_gemm_parallel(pool, args, abuf). Thread-safe, no allocation.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bertlet/kernels/amx.hpp"
#include "bertlet/kernels/avx512.hpp"
#include "bertlet/kernels/cpu.hpp"
#include "bertlet/kernels/gemm_bf16.hpp"
#include "bertlet/kernels/gemm_s8.hpp"
#include "bertlet/kernels/packed.hpp"
#include "bertlet/kernels/thread_pool.hpp"

#if defined(BERTLET_HAVE_AVX512_PATH) && defined(BERTLET_X86) && (defined(__GNUC__) || defined(__clang__))
#define BERTLET_F32X6_X86 1
#define BERTLET_TARGET_F32X6 \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c,amx-tile,amx-bf16")))
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace bertlet {

constexpr bool f32x6_shape_ok(std::size_t n, std::size_t k) noexcept {
    return n > 0 && k > 0 && n % 32 == 0 && k % 32 == 0;
}
constexpr std::size_t f32x6_packed_size(std::size_t n, std::size_t k) noexcept { return 3 * n * k; }
/// uint16 values of the split activations of an M x K GEMM (rows rounded up to 32).
constexpr std::size_t f32x6_a_size(std::size_t m, std::size_t k) noexcept { return 3 * ((m + 31) / 32 * 32) * k; }

/// Whether this build, CPU and process can run the bf16x6 fp32 GEMM (AVX-512 + AVX512_BF16 + AMX-BF16, the tile
/// data granted by the OS; BERTLET_AMX=0 declines it as it declines the int8 AMX path).
inline bool f32x6_supported(const cpu_features& f = cpu()) noexcept {
#if defined(BERTLET_F32X6_X86)
    return f.has_avx512_path() && f.avx512_bf16 && f.amx_bf16 && detail::amx_usable();
#else
    (void)f;
    return false;
#endif
}

/// x = p[0] + p[1] + p[2] exactly (bf16 bits; float_to_bf16 rounding, as vcvtneps2bf16).
inline void f32x6_split(float x, std::uint16_t p[3]) noexcept {
    for (int q = 0; q < 3; ++q) {
        p[q] = float_to_bf16(x);
        x -= bf16_to_float(p[q]);
    }
}

inline void pack_f32x6_ref(const float* wp, std::size_t n, std::size_t k, std::uint16_t* out);

#if defined(BERTLET_F32X6_X86)
namespace detail {
/// pack_f32x6_ref with AVX512_BF16 (vcvtneps2bf16 rounds as float_to_bf16: the same bytes): per k pair, the two
/// rows' 16 values -> three parts, each part's (even k, odd k) bf16 pairs interleaved into one 64-byte row.
BERTLET_TARGET_F32X6 inline void pack_f32x6_avx512(const float* wp, std::size_t n, std::size_t k, std::uint16_t* out) {
    const std::size_t S = k / 32;
    for (std::size_t p = 0; p < n / 16; ++p)
        for (std::size_t s = 0; s < S; ++s)
            for (std::size_t g = 0; g < 16; ++g) {
                const float* r = wp + p * 16 * k + (s * 32 + 2 * g) * 16;
                __m512 e = _mm512_loadu_ps(r), o = _mm512_loadu_ps(r + 16);
                for (std::size_t q = 0; q < 3; ++q) {
                    const __m256bh he = _mm512_cvtneps_pbh(e), ho = _mm512_cvtneps_pbh(o);
                    const __m512i we = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(he));
                    const __m512i wo = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(ho));
                    _mm512_storeu_si512(out + ((p * S + s) * 3 + q) * 512 + g * 32,
                                        _mm512_or_si512(we, _mm512_slli_epi32(wo, 16)));
                    e = _mm512_sub_ps(e, _mm512_castsi512_ps(_mm512_slli_epi32(we, 16)));
                    o = _mm512_sub_ps(o, _mm512_castsi512_ps(_mm512_slli_epi32(wo, 16)));
                }
            }
}
}  // namespace detail
#endif

/// Packs W (PACKED_N16 panels: panel p holds k rows of 16 floats) into the F32X6 layout (f32x6_shape_ok(n, k)):
/// the AVX512_BF16 packer where the CPU has it (MiniLM-L6: ~10 ms at load instead of ~90), else pack_f32x6_ref.
inline void pack_f32x6(const float* wp, std::size_t n, std::size_t k, std::uint16_t* out) {
#if defined(BERTLET_F32X6_X86)
    if (cpu().has_avx512_path() && cpu().avx512_bf16) {
        detail::pack_f32x6_avx512(wp, n, k, out);
        return;
    }
#endif
    pack_f32x6_ref(wp, n, k, out);
}

/// The scalar packer (the layout's definition; any CPU).
inline void pack_f32x6_ref(const float* wp, std::size_t n, std::size_t k, std::uint16_t* out) {
    const std::size_t S = k / 32;
    for (std::size_t p = 0; p < n / 16; ++p)
        for (std::size_t s = 0; s < S; ++s)
            for (std::size_t kk = 0; kk < 32; ++kk)
                for (std::size_t j = 0; j < 16; ++j) {
                    std::uint16_t v[3];
                    f32x6_split(wp[p * 16 * k + (s * 32 + kk) * 16 + j], v);
                    for (std::size_t q = 0; q < 3; ++q)
                        out[((p * S + s) * 3 + q) * 512 + kk / 2 * 32 + j * 2 + kk % 2] = v[q];
                }
}

/// C[M, N] (stride ldc) = epilogue(A[M, K] (stride lda) * W^T), W in the F32X6 layout.
/// bf16 = true: W is bf16 weights in the BF16P16K2 layout (gemm_bf16.hpp; its 64-byte k-pair rows are AMX B tiles
/// as they are) and A is rounded to bf16 (one part): one tile product per block and k-step, the semantics of
/// gemm_bf16 (exact products, fp32 accumulation). wseg / seg_panels: W made of up to 3 separately stored weights of
/// seg_panels panels each (an even count), as gemm_bf16_args::bseg (Q, K and V as one GEMM).
struct f32x6_args {
    const float* a = nullptr;
    std::ptrdiff_t lda = 0;
    const std::uint16_t* w = nullptr;
    float* c = nullptr;
    std::ptrdiff_t ldc = 0;
    std::ptrdiff_t m = 0, n = 0, k = 0;
    detail::epilogue ep;
    bool bf16 = false;
    const std::uint16_t* wseg[3] = {nullptr, nullptr, nullptr};
    std::ptrdiff_t seg_panels = 0;

    /// Start of weight panel p (16 outputs).
    const std::uint16_t* panel(std::ptrdiff_t p) const noexcept {
        const std::ptrdiff_t ps = bf16 ? 16 * k : 3 * 16 * k;  // K % 32 == 0: Kp = K
        return seg_panels ? wseg[p / seg_panels] + (p % seg_panels) * ps : w + p * ps;
    }
};

#if defined(BERTLET_F32X6_X86)
namespace detail {

// Tile shapes, permission and instruction macros: kernels/amx.hpp (A and W tiles have 64-byte rows; C goes to a
// 32 x 32 float buffer, rows of 128 bytes).

BERTLET_TARGET_F32X6 inline __m512 x6_widen(__m256bh h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(h)), 16));
}

/// Splits rows of row blocks [rb0, rb1) (16 rows each; rows >= M zero) into the tile order.
template <int P>
BERTLET_TARGET_F32X6 inline void x6_split_rows(const float* a, std::ptrdiff_t lda, std::ptrdiff_t M, std::ptrdiff_t K,
                                               std::ptrdiff_t rb0, std::ptrdiff_t rb1, std::uint16_t* at) {
    const std::ptrdiff_t S = K / 32;
    for (std::ptrdiff_t rb = rb0; rb < rb1; ++rb)
        for (std::ptrdiff_t s = 0; s < S; ++s) {
            std::uint16_t* d = at + (rb * S + s) * (P * 512);
            for (std::ptrdiff_t i = 0; i < 16; ++i) {
                const std::ptrdiff_t row = rb * 16 + i;
                if (row >= M) {
                    for (int q = 0; q < P; ++q) _mm512_storeu_si512(d + q * 512 + i * 32, _mm512_setzero_si512());
                    continue;
                }
                __m512 x0 = _mm512_loadu_ps(a + row * lda + s * 32), x1 = _mm512_loadu_ps(a + row * lda + s * 32 + 16);
                for (int q = 0; q < P; ++q) {
                    const __m256bh h0 = _mm512_cvtneps_pbh(x0), h1 = _mm512_cvtneps_pbh(x1);
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + q * 512 + i * 32), reinterpret_cast<__m256i>(h0));
                    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + q * 512 + i * 32 + 16),
                                        reinterpret_cast<__m256i>(h1));
                    x0 = _mm512_sub_ps(x0, x6_widen(h0));
                    x1 = _mm512_sub_ps(x1, x6_widen(h1));
                }
            }
        }
}

/// The epilogue of one block from its stack copy (rows x 32 floats, row stride 32).
BERTLET_TARGET_F32X6 inline void x6_finish(const f32x6_args& g, std::ptrdiff_t m, std::ptrdiff_t col, int rows,
                                           const float* buf) {
    const epilogue& ep = g.ep;
    const __m512 alpha = _mm512_set1_ps(ep.alpha);
    const bool scale = ep.alpha != 1.0f;
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
    if (ep.bias) {
        b0 = _mm512_loadu_ps(ep.bias + col);
        b1 = _mm512_loadu_ps(ep.bias + col + 16);
    }
    for (int i = 0; i < rows; ++i) {
        __m512 v0 = _mm512_load_ps(buf + i * 32), v1 = _mm512_load_ps(buf + i * 32 + 16);
        if (scale) {
            v0 = _mm512_mul_ps(v0, alpha);
            v1 = _mm512_mul_ps(v1, alpha);
        }
        v0 = _mm512_add_ps(v0, b0);
        v1 = _mm512_add_ps(v1, b1);
        if (ep.residual) {
            const float* r = ep.residual + (m + i) * ep.ldr + col;
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(r));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(r + 16));
        }
        if (ep.act != activation::none) {
            v0 = avx512::act_ps(v0, ep.act);
            v1 = avx512::act_ps(v1, ep.act);
        }
        float* c = g.c + (m + i) * g.ldc + col;
        _mm512_storeu_ps(c, v0);
        _mm512_storeu_ps(c + 16, v1);
    }
}

// Software prefetch of the next k-step's tiles: four row / panel tiles of P parts (4 x 16P lines), spread over the
// step's 4P^2 products (P = 3: 8 lines after each of 24; P = 1: 16 after each of 4).
template <int P>
struct x6_prefetch {
    static constexpr int lines = 16 * P, per = 16 / P;
    const char* q[4];
    int line = 0;
    __attribute__((always_inline)) inline void step() {
#pragma GCC unroll 16
        for (int z = 0; z < per; ++z, ++line) _mm_prefetch(q[line / lines] + (line % lines) * 64, _MM_HINT_T0);
    }
};

/// Blocks of 32 rows x 2 panels: 16-row blocks [rb0, rb1) (an even count) x panel pairs [pp0, pp1), pairs outer.
/// P = 3: bf16x6 (F32X6 weights, A in three parts); P = 1: bf16 weights (BF16P16K2), A rounded to bf16.
template <int P>
BERTLET_TARGET_F32X6 void x6_blocks(const f32x6_args& g, const std::uint16_t* at, std::ptrdiff_t rb0,
                                    std::ptrdiff_t rb1, std::ptrdiff_t pp0, std::ptrdiff_t pp1) {
    const std::ptrdiff_t S = g.k / 32;
    const std::ptrdiff_t ts = S * P * 512;  // uint16 per 16-row block of A (and per panel of F32X6 W)
    constexpr std::ptrdiff_t st = P * 512;  // per k-step of both
    alignas(64) float buf[32 * 32];
    for (std::ptrdiff_t pp = pp0; pp < pp1; ++pp)
        for (std::ptrdiff_t rb = rb0; rb < rb1; rb += 2) {
            const std::uint16_t* a0 = at + rb * ts;
            const std::uint16_t* w0 = g.panel(2 * pp);
            const std::uint16_t* w1 = g.panel(2 * pp + 1);
            // the block after this one (the prefetch of its first k-step)
            std::ptrdiff_t nrb = rb + 2, npp = pp;
            if (nrb >= rb1) nrb = rb0, npp = pp + 1 < pp1 ? pp + 1 : pp;
            BERTLET_AMX_ZERO(0);
            BERTLET_AMX_ZERO(1);
            BERTLET_AMX_ZERO(2);
            BERTLET_AMX_ZERO(3);
            const std::uint16_t* nw0 = g.panel(2 * npp);
            const std::uint16_t* nw1 = g.panel(2 * npp + 1);
            for (std::ptrdiff_t s = 0; s < S; ++s) {
                const std::uint16_t* a = a0 + s * st;
                const std::uint16_t* b0 = w0 + s * st;
                const std::uint16_t* b1 = w1 + s * st;
                const std::uint16_t *pa, *pw0, *pw1;
                if (s + 1 < S) pa = a + st, pw0 = b0 + st, pw1 = b1 + st;
                else pa = at + nrb * ts, pw0 = nw0, pw1 = nw1;
                x6_prefetch<P> pf{{reinterpret_cast<const char*>(pa), reinterpret_cast<const char*>(pa + ts),
                                   reinterpret_cast<const char*>(pw0), reinterpret_cast<const char*>(pw1)}};
#define BERTLET_X6_A(q)                \
    BERTLET_AMX_LOAD(4, a + (q) * 512, 64); \
    BERTLET_AMX_LOAD(5, a + ts + (q) * 512, 64);
#define BERTLET_X6_B(q)                 \
    BERTLET_AMX_LOAD(6, b0 + (q) * 512, 64); \
    BERTLET_AMX_LOAD(7, b1 + (q) * 512, 64);
#define BERTLET_X6_P4       \
    BERTLET_AMX_DPBF16PS(0, 4, 6); \
    pf.step();              \
    BERTLET_AMX_DPBF16PS(1, 4, 7); \
    pf.step();              \
    BERTLET_AMX_DPBF16PS(2, 5, 6); \
    pf.step();              \
    BERTLET_AMX_DPBF16PS(3, 5, 7); \
    pf.step();
                BERTLET_X6_A(0) BERTLET_X6_B(0) BERTLET_X6_P4  // a0 w0
                if constexpr (P == 3) {
                    BERTLET_X6_B(1) BERTLET_X6_P4                  // a0 w1
                    BERTLET_X6_B(2) BERTLET_X6_P4                  // a0 w2
                    BERTLET_X6_A(1) BERTLET_X6_B(0) BERTLET_X6_P4  // a1 w0
                    BERTLET_X6_B(1) BERTLET_X6_P4                  // a1 w1
                    BERTLET_X6_A(2) BERTLET_X6_B(0) BERTLET_X6_P4  // a2 w0
                }
#undef BERTLET_X6_A
#undef BERTLET_X6_B
#undef BERTLET_X6_P4
            }
            BERTLET_AMX_STORE(0, buf, 128);
            BERTLET_AMX_STORE(1, buf + 16, 128);
            BERTLET_AMX_STORE(2, buf + 512, 128);
            BERTLET_AMX_STORE(3, buf + 512 + 16, 128);
            const std::ptrdiff_t m = rb * 16;
            x6_finish(g, m, pp * 32, static_cast<int>(std::min<std::ptrdiff_t>(32, g.m - m)), buf);
        }
}


}  // namespace detail
#endif  // BERTLET_F32X6_X86

/// Runs C = epilogue(A W^T) over the pool: A split once (row blocks over the tasks), then the panel pairs split
/// over the tasks. abuf: f32x6_a_size(m, k) uint16. Needs f32x6_supported() and f32x6_shape_ok(n, k); m >= 1.
inline void f32x6_gemm_parallel(detail::thread_pool* pool, const f32x6_args& g, std::uint16_t* abuf) {
#if defined(BERTLET_F32X6_X86)
    // rows in blocks of 32, the last one padded with zero rows: measured faster than a 16-row block for the rest
    // (one row tile alternates two accumulators, which then wait on each other): seq 48 4.3 vs 5.4 ms, seq 80 6.8 vs
    // 7.7 ms (whole MiniLM forward)
    const std::ptrdiff_t nrb = (g.m + 31) / 32 * 2, npp = g.n / 32;
    const std::ptrdiff_t threads = pool ? static_cast<std::ptrdiff_t>(pool->size()) : 1;
    auto blocks = [&](std::ptrdiff_t pp0, std::ptrdiff_t pp1) {
        detail::amx_configure();
        if (g.bf16) detail::x6_blocks<1>(g, abuf, 0, nrb, pp0, pp1);
        else detail::x6_blocks<3>(g, abuf, 0, nrb, pp0, pp1);
        detail::amx_release();
    };
    auto split = [&](std::ptrdiff_t rb0, std::ptrdiff_t rb1) {
        if (g.bf16) detail::x6_split_rows<1>(g.a, g.lda, g.m, g.k, rb0, rb1, abuf);
        else detail::x6_split_rows<3>(g.a, g.lda, g.m, g.k, rb0, rb1, abuf);
    };
    if (threads <= 1) {
        split(0, nrb);
        blocks(0, npp);
        return;
    }
    const std::ptrdiff_t ts = std::min(threads, nrb / 2);
    pool->run(static_cast<std::size_t>(ts), [&](std::size_t t, std::size_t) {
        const std::ptrdiff_t i = static_cast<std::ptrdiff_t>(t);
        split(nrb / 2 * i / ts * 2, nrb / 2 * (i + 1) / ts * 2);
    });
    const std::ptrdiff_t tp = std::min(threads, npp);
    pool->run(static_cast<std::size_t>(tp), [&](std::size_t t, std::size_t) {
        const std::ptrdiff_t i = static_cast<std::ptrdiff_t>(t);
        blocks(npp * i / tp, npp * (i + 1) / tp);
    });
#else
    (void)pool, (void)g, (void)abuf;
    throw input_error(errc::bad_argument, "f32x6_gemm_parallel: not supported by this build");
#endif
}

}  // namespace bertlet

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
