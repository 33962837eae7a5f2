// bertlet bench — single-core arithmetic peaks of this CPU, for the roofline in bench/compare.py (issue #3).
//
// Each peak is a register-only loop of independent multiply-accumulates (12 chains: more than latency x
// throughput on every x86 core we run on), timed over ~0.2 s, best of 3: the most work one core can do per second in
// that form. The GEMMs of a forward pass can only approach it, so FLOPs / peak is a hard lower bound on their time.
//   fp32: vfmadd231ps zmm (avx512 path) or ymm (avx2 path): 2 FLOP per lane
//   int8: vpdpbusd zmm (AVX512_VNNI): 4 u8 x s8 products + 4 adds per 32-bit lane = 8 OP per lane
//   bf16: vdpbf16ps zmm (AVX512_BF16): 2 bf16 products + 2 adds per lane = 4 FLOP per lane
//   int8 on AMX (when the avx512_amx path is in use): tdpbusd on four independent 16 x 16 s32 tiles from two A and
//   two B tiles held in tile registers: 16 x 16 x 64 products + adds = 32768 OP per instruction
//   bf16 on AMX (when the bf16x6 fp32 linears are in use): tdpbf16ps likewise, 16 x 16 x 32 x 2 = 16384 FLOP each
// Also the CPU's vendor / family / model from CPUID and the microarchitecture they name, where known: the same
// "AMD EPYC" string covers Zen 4 (one 512-bit FMA per cycle, double-pumped) and Zen 5 (two).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define BERTLET_PEAK_X86 1
#endif

namespace bertlet_bench {

struct cpu_id {
    std::string vendor = "?", uarch = "unknown";
    unsigned family = 0, model = 0, stepping = 0;
};

inline cpu_id identify_cpu() {
    cpu_id c;
#ifdef BERTLET_PEAK_X86
    unsigned a = 0, b = 0, cc = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &cc, &d)) return c;
    char v[13] = {};
    std::memcpy(v, &b, 4);
    std::memcpy(v + 4, &d, 4);
    std::memcpy(v + 8, &cc, 4);
    c.vendor = v;
    __get_cpuid(1, &a, &b, &cc, &d);
    const unsigned base_fam = (a >> 8) & 0xF, base_model = (a >> 4) & 0xF;
    c.stepping = a & 0xF;
    c.family = base_fam == 0xF ? base_fam + ((a >> 20) & 0xFF) : base_fam;
    c.model = (base_fam == 0xF || base_fam == 0x6) ? (((a >> 16) & 0xF) << 4) | base_model : base_model;
    if (c.vendor == "AuthenticAMD") {
        if (c.family == 0x19) {  // Zen 3 / Zen 4 share family 19h; the model ranges tell them apart
            const unsigned m = c.model;
            const bool zen4 = (m >= 0x10 && m <= 0x1F) || (m >= 0x60 && m <= 0x7F) || (m >= 0xA0 && m <= 0xAF);
            c.uarch = zen4 ? "Zen 4" : "Zen 3";
        } else if (c.family == 0x1A) {
            c.uarch = "Zen 5";
        } else if (c.family == 0x17) {
            c.uarch = "Zen / Zen 2";
        }
    } else if (c.vendor == "GenuineIntel") {
        c.uarch = "Intel family " + std::to_string(c.family) + " model " + std::to_string(c.model);
    }
#endif
    return c;
}

namespace detail {
using clk = std::chrono::steady_clock;

template <class F>
double best_rate(F&& run, double ops_per_iter) {  // ops per second, best of 3 runs of ~0.2 s each
    long n = 1 << 16;
    for (;;) {  // calibrate
        const auto t0 = clk::now();
        run(n);
        const double s = std::chrono::duration<double>(clk::now() - t0).count();
        if (s > 0.05) {
            n = static_cast<long>(static_cast<double>(n) * 0.2 / s) + 1;
            break;
        }
        n *= 4;
    }
    double best = 0;
    for (int r = 0; r < 3; ++r) {
        const auto t0 = clk::now();
        run(n);
        const double s = std::chrono::duration<double>(clk::now() - t0).count();
        best = std::max(best, static_cast<double>(n) * ops_per_iter / s);
    }
    return best;
}

#ifdef BERTLET_PEAK_X86
// The 12 chains' results are summed into a volatile sink at the end, so the loops cannot be removed; GCC and clang
// neither reassociate FMAs (no -ffast-math) nor fold these intrinsics, so the chains stay independent in registers.
inline volatile float peak_sink = 0;

__attribute__((target("avx512f"), noinline)) inline void fma_zmm(long n) {
    __m512 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
    const __m512 b = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(1e-7f);
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    for (int i = 1; i < 12; ++i) a[0] = _mm512_add_ps(a[0], a[i]);
    alignas(64) float o[16];
    _mm512_store_ps(o, a[0]);
    peak_sink = o[0] + o[15];
}
__attribute__((target("avx2,fma"), noinline)) inline void fma_ymm(long n) {
    __m256 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
    const __m256 b = _mm256_set1_ps(0.9999f), c = _mm256_set1_ps(1e-7f);
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) a[i] = _mm256_fmadd_ps(a[i], b, c);
    }
    alignas(32) float o[8];
    for (int i = 1; i < 12; ++i) a[0] = _mm256_add_ps(a[0], a[i]);
    _mm256_store_ps(o, a[0]);
    peak_sink = o[0] + o[7];
}
__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) inline void vnni_zmm(long n) {
    __m512i a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_epi32(i);
    const __m512i b = _mm512_set1_epi32(0x01020304), c = _mm512_set1_epi32(0x01FF01FF);
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) a[i] = _mm512_dpbusd_epi32(a[i], b, c);
    }
    for (int i = 1; i < 12; ++i) a[0] = _mm512_add_epi32(a[0], a[i]);
    alignas(64) std::int32_t o[16];
    _mm512_store_si512(o, a[0]);
    peak_sink = static_cast<float>(o[0] + o[15]);
}
// Caller: a process the OS granted the tile data (bertlet's detail::amx_usable() did that); the tile registers hold
// whatever tileloadd read (zeros), the products are not looked at. BF16: tdpbf16ps (the tile peak of the bf16x6 fp32
// linears, kernels/gemm_f32x6.hpp, which do six of these per fp32 product), else tdpbusd.
template <bool BF16>
__attribute__((noinline)) inline void amx_tdp(long n) {
    struct alignas(64) {
        std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
        std::uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
        std::uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
    } cfg;
    alignas(64) static std::uint8_t zeros[16 * 64];
    __asm__ volatile("ldtilecfg %0" ::"m"(cfg) : "memory");
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm4\n\ttileloadd (%0,%1,1), %%tmm5\n\t"
                     "tileloadd (%0,%1,1), %%tmm6\n\ttileloadd (%0,%1,1), %%tmm7" ::"r"(zeros), "r"(64L)
                     : "memory");
    for (long k = 0; k < n; ++k) {
        if constexpr (BF16)
            __asm__ volatile("tdpbf16ps %%tmm6, %%tmm4, %%tmm0\n\ttdpbf16ps %%tmm7, %%tmm4, %%tmm1\n\t"
                             "tdpbf16ps %%tmm6, %%tmm5, %%tmm2\n\ttdpbf16ps %%tmm7, %%tmm5, %%tmm3" ::);
        else
            __asm__ volatile("tdpbusd %%tmm6, %%tmm4, %%tmm0\n\ttdpbusd %%tmm7, %%tmm4, %%tmm1\n\t"
                             "tdpbusd %%tmm6, %%tmm5, %%tmm2\n\ttdpbusd %%tmm7, %%tmm5, %%tmm3" ::);
    }
    __asm__ volatile("tilerelease" ::: "memory");
}
__attribute__((target("avx512f,avx512bw,avx512bf16"), noinline)) inline void bf16_zmm(long n) {
    __m512 a[12];
    for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
    const __m512bh b = reinterpret_cast<__m512bh>(_mm512_set1_epi32(0x3F7F3F7F));
    for (long k = 0; k < n; ++k) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; ++i) a[i] = _mm512_dpbf16_ps(a[i], b, b);
    }
    for (int i = 1; i < 12; ++i) a[0] = _mm512_add_ps(a[0], a[i]);
    alignas(64) float o[16];
    _mm512_store_ps(o, a[0]);
    peak_sink = o[0] + o[15];
}
#endif
}  // namespace detail

/// Peaks in operations per second (NaN where the instruction is missing or the path is not x86).
struct peaks {
    double fp32 = NAN;  // FLOP/s of the fp32 FMA form the chosen path uses (zmm on avx512, ymm on avx2)
    double int8 = NAN;  // OP/s of vpdpbusd zmm
    double bf16 = NAN;  // FLOP/s of vdpbf16ps zmm
    double amx_int8 = NAN;  // OP/s of tdpbusd (AMX), measured only when asked (the avx512_amx path is in use)
    double amx_bf16 = NAN;  // FLOP/s of tdpbf16ps (AMX), measured only when asked (bf16x6 fp32 linears in use)
    const char* fp32_form = "none";
};

inline peaks measure_peaks(bool avx512_path, bool avx2_path, bool vnni512, bool bf16, bool amx = false,
                           bool amx_bf16 = false) {
    peaks p;
#ifdef BERTLET_PEAK_X86
    if (avx512_path) {
        p.fp32 = detail::best_rate(detail::fma_zmm, 12.0 * 16 * 2);
        p.fp32_form = "vfmadd231ps zmm";
    } else if (avx2_path) {
        p.fp32 = detail::best_rate(detail::fma_ymm, 12.0 * 8 * 2);
        p.fp32_form = "vfmadd231ps ymm";
    }
    if (vnni512) p.int8 = detail::best_rate(detail::vnni_zmm, 12.0 * 16 * 8);
    if (bf16) p.bf16 = detail::best_rate(detail::bf16_zmm, 12.0 * 16 * 4);
    if (amx) p.amx_int8 = detail::best_rate(detail::amx_tdp<false>, 4.0 * 16 * 16 * 64 * 2);
    if (amx_bf16) p.amx_bf16 = detail::best_rate(detail::amx_tdp<true>, 4.0 * 16 * 16 * 32 * 2);
#else
    (void)amx;
    (void)amx_bf16;
    (void)avx512_path;
    (void)avx2_path;
    (void)vnni512;
    (void)bf16;
#endif
    return p;
}

}  // namespace bertlet_bench
