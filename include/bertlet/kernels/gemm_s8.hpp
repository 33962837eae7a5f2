// bertlet — int8 GEMM for nn.Linear layers (issue #3, int8 part). Design and measurements: docs/INT8.md.
//
//   Y[m, n] = act(sx[m] * sw[n] * sum_k qx[m, k] * qw[n, k] + bias[n] + residual[m, n])
//
// * Weights W [N out, K in] (PyTorch layout): symmetric per output row, sw[n] = max|W[n,:]| / 127,
//   qw = round_half_even(W / sw) clamped to -127..127 (never -128), packed once (here by pack_s8, or offline by
//   tools/bertlet_tools/quantize.py, byte-identical) into the layout below.
// * Activations X [M, K]: optionally smoothed per input channel, xs[m, k] = X[m, k] * act_scale[k] (one f32
//   multiply; act_scale may be null), then quantized at run time per row (token), symmetric: sx[m] = max|xs[m,:]|/127,
//   qx = round_half_even(xs * (127 / max|xs[m,:]|)) clamped to -127..127. Every path uses the same quantized values,
//   the same exact integer sums and the same float epilogue, so every path returns BIT-IDENTICAL outputs (the results
//   do not depend on the CPU, on the blocking or on the number of threads), GELU included.
// * VNNI paths (vpdpbusd is u8 x s8) feed qx + 128 as u8 and subtract 128 * row_sum[n] (row_sum = sum_k qw[n, k],
//   stored with the packed weights); non-VNNI paths use vpmaddubsw(|qw|, sign(qw) * qx): every product is at most
//   127 * 127, a pair at most 32258 < 32767, so the s16 saturation of vpmaddubsw can never trigger (exact).
// * aarch64 with DotProd (neon_dot): sdot multiplies s8 by s8 into exact 32-bit sums (no +128 form).
// * Epilogue (s8_epilogue, every path, same f32 operations in the same order):
//     y = bias ? fma(float(acc), sx[m] * sw[n], bias[n]) : float(acc) * (sx[m] * sw[n]);
//     if (residual) y = y + residual[m, n];
//     y = act(y)   (none | gelu_erf: 0.5 y (1 + erf(y / sqrt 2)) | gelu_tanh: y / (1 + exp(-2 u)), u = sqrt(2/pi) (y +
//                   0.044715 y^3)); gelu_erf is s8_gelu_scalar below (0.5 y + |y| g(|y|), g a 16-piece quartic
//                   table, |error| <= 3.7e-7: FMA-light, since on Zen 4 every FMA / multiply of the epilogue takes a
//                   vpdpbusd slot), exp is the Cephes approximation of avx2.hpp's exp_ps on every path.
//
// Packed layout ("S8P16K4"): N is padded to a multiple of 16 (n_padded), K to a multiple of 4 (k_padded), padding is
// zero. Panel p (output rows 16p .. 16p+15) occupies k_padded * 16 bytes at offset p * 16 * k_padded; inside a panel,
// group g (k = 4g .. 4g+3) occupies 64 bytes at offset 64 g: row r's 4 values at 4 r .. 4 r + 3 (one zmm, two ymm).
//   byte offset of qw[n, k] = (n / 16) * 16 * k_padded + (k / 4) * 64 + (n % 16) * 4 + k % 4
// scales and row_sums have n_padded entries (zeros in the padding).
//
// API (no allocation anywhere; pure functions, thread-safe):
//   packed_s8_buffer pk = pack_s8(W, N, K);                      // owning; pk.view() -> packed_s8 (a non-owning view)
//   std::vector<std::uint8_t> scratch(gemm_s8_scratch_bytes(M, K));
//   // quantize once, use for several GEMMs (Q, K and V share their input):
//   s8_activations A = quantize_activations_s8(path, X, M, K, ldx, act_scale, scratch.data());
//   gemm_s8_q(path, A, W, s8_epilogue{bias, residual, ldr, act}, Y, ldy, m0, m1, p0, p1);  // rows x 16-col panels
//   gemm_s8_parallel(pool, path, A, W, ep, Y, ldy);              // the same over a thread pool (same bits)
//   gemm_s8_parallel(pool, path, A, gemms, count);               // several GEMMs on one A in one pool job
//   quantize_gemm_s8_parallel(pool, path, X, M, K, ldx, act_scale, scratch, gemms, count);  // both in one job
//   linear_s8(X, M, K, ldx, pk.view(), bias, Y, ldy, scratch.data());   // one-shot, mirrors detail::linear
//   gemm_s8_s32(path, X, M, K, ldx, W, C, ldc, sx, scratch)              // debug hook: the exact integer sums
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bertlet/error.hpp"
#include "bertlet/kernels/cpu.hpp"
#include "bertlet/kernels/avx2.hpp"    // exp_ps (the gelu_tanh epilogue)
#include "bertlet/kernels/amx.hpp"
#include "bertlet/kernels/avx512.hpp"
#include "bertlet/kernels/packed.hpp"
#include "bertlet/kernels/thread_pool.hpp"

#if defined(BERTLET_X86) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define BERTLET_S8_X86 1
#define BERTLET_TARGET(s) __attribute__((target(s)))
#endif
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include <arm_neon.h>

#include "bertlet/kernels/neon.hpp"  // exp_ps for the neon_dot epilogue
#define BERTLET_S8_NEON 1
#if defined(__clang__)
#define BERTLET_S8_DOTPROD __attribute__((target("dotprod")))
#else
#define BERTLET_S8_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
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
    std::size_t panels() const noexcept { return s8_pad_n(n) / 16; }
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
/// neon_dot: aarch64 with the dot-product extension (ARMv8.2 DotProd: Graviton 2/3/4, Apple M, Neoverse N1+), sdot
/// (s8 x s8, exact 32-bit sums); aarch64 CPUs without it use the scalar reference.
/// avx512_amx: AVX-512 VNNI plus Intel AMX (Sapphire Rapids and later): the linears' 16-row x 16-column blocks run
/// on the tile unit (tdpbusd, the same u8 x s8 exact sums as vpdpbusd), tails and everything else as avx512_vnni.
enum class s8_path { scalar = 0, avx2 = 1, avx_vnni = 2, avx512 = 3, avx512_vnni = 4, neon_dot = 5, avx512_amx = 6 };
inline constexpr s8_path all_s8_paths[] = {s8_path::scalar, s8_path::avx2, s8_path::avx_vnni, s8_path::avx512,
                                           s8_path::avx512_vnni, s8_path::neon_dot, s8_path::avx512_amx};

inline const char* s8_path_name(s8_path p) noexcept {
    switch (p) {
        case s8_path::scalar: return "scalar";
        case s8_path::avx2: return "avx2";
        case s8_path::avx_vnni: return "avx_vnni";
        case s8_path::avx512: return "avx512";
        case s8_path::avx512_vnni: return "avx512_vnni";
        case s8_path::neon_dot: return "neon_dot";
        case s8_path::avx512_amx: return "avx512_amx";
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
        case s8_path::neon_dot: return false;
        case s8_path::avx512_amx: return f.has_avx512_path() && f.avx512_vnni && f.amx_int8 && detail::amx_usable();
    }
    return false;
#elif defined(BERTLET_S8_NEON)
    return p == s8_path::scalar || (p == s8_path::neon_dot && f.neon && f.dotprod);
#else
    (void)f;
    return p == s8_path::scalar;
#endif
}

/// The best int8 path within an ISA level (BERTLET_FORCE_ARCH=avx2 still uses AVX-VNNI when present).
inline s8_path s8_path_for(isa a, const cpu_features& f = cpu()) noexcept {
    if (a == isa::avx512 && f.has_avx512_path()) {
        if (s8_path_supported(s8_path::avx512_amx, f)) return s8_path::avx512_amx;
        if (s8_path_supported(s8_path::avx512_vnni, f)) return s8_path::avx512_vnni;
        return s8_path::avx512;
    }
    if ((a == isa::avx512 || a == isa::avx2) && f.has_avx2_path()) {
        if (s8_path_supported(s8_path::avx_vnni, f)) return s8_path::avx_vnni;
        if (s8_path_supported(s8_path::avx2, f)) return s8_path::avx2;
    }
    if (a == isa::neon && s8_path_supported(s8_path::neon_dot, f)) return s8_path::neon_dot;
    return s8_path::scalar;
}

inline s8_path active_s8_path() {
    static const s8_path p = s8_path_for(active_isa());
    return p;
}

/// Whether a path wants its quantized activations in the u8 (+128) form (the VNNI paths) or as s8.
inline bool s8_path_uses_u8(s8_path p) noexcept {
    return p == s8_path::avx_vnni || p == s8_path::avx512_vnni || p == s8_path::avx512_amx;
}

/// Bytes of scratch one quantized activation matrix of M rows and K columns needs (any alignment is fine).
inline std::size_t gemm_s8_scratch_bytes(std::size_t M, std::size_t K) noexcept {
    return 64 + (M * sizeof(float) + 63) / 64 * 64 + M * s8_pad_k(K);
}

/// Quantized activations: a view into the caller's scratch, filled by quantize_activations_s8*; one instance can
/// feed any number of GEMMs with the same K (on paths with the same s8_path_uses_u8()).
struct s8_activations {
    std::uint8_t* q = nullptr;  // row m at q + m * ldq: k_padded bytes (K values, then zero padding)
    std::size_t ldq = 0;        // = k_padded
    float* sx = nullptr;        // M per-row scales (max|xs[m,:]| / 127)
    std::size_t M = 0, K = 0, k_padded = 0;
    bool u8 = false;            // q holds qx + 128 (u8, VNNI paths) instead of qx (s8)
};

/// The fused epilogue: y = act(fma(float(acc), sx * sw, bias) + residual) (see the top of the file).
struct s8_epilogue {
    const float* bias = nullptr;      // [N] or null
    const float* residual = nullptr;  // [M, N] with row stride ldr, or null; may be Y itself (same ldr as ldy)
    std::size_t ldr = 0;
    detail::activation act = detail::activation::none;
};

/// One GEMM of a batch that shares its input (gemm_s8_parallel): Y = epilogue(A * W^T).
struct s8_gemm {
    const packed_s8* W = nullptr;
    s8_epilogue ep;
    float* Y = nullptr;
    std::size_t ldy = 0;
    /// Optional: the weights of the int8 GEMM that runs next (AVX-512 VNNI path): while this one computes its last
    /// panel block, its tiles prefetch that GEMM's first block, which would otherwise come from L3 / DRAM unhidden.
    const packed_s8* next = nullptr;
    /// Optional head-major output (attention's Q, K, V): hd > 0 (a multiple of 16 that divides N) stores column n
    /// of row m at Y[(n / hd) * hstride + m * hd + n % hd] instead of Y[m * ldy + n], so each block of hd columns is a
    /// contiguous [M, hd] matrix (hstride >= M * hd; ldy is unused). The attention of one head then reads its rows
    /// back to back instead of 128 bytes out of every ldy floats (int8 forward at seq 128 on Zen 4: 0.98-0.99x).
    std::size_t hd = 0, hstride = 0;
};

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

// Everything one kernel call needs (a GEMM with its quantized input and epilogue).
struct s8_job {
    const std::uint8_t* xq;  // quantized X, row stride ldq, s8 or u8 (+128) form
    std::size_t ldq;
    const float* sx;         // per-row X scales
    const packed_s8* w;
    std::size_t groups;      // k_padded / 4
    std::size_t N;
    const float* bias;       // may be null
    const float* res;        // may be null
    std::size_t ldr;
    activation act;
    float* Y;                // f32 output (RAW = false)
    std::size_t ldy;
    std::int32_t* C;         // s32 output (RAW = true)
    std::size_t ldc;
    std::size_t M = 0;       // rows of the whole GEMM (spreads the weight prefetch over the row tiles)
    const std::int8_t* next = nullptr;  // first weight block of the next GEMM (s8_gemm::next), prefetched ...
    std::size_t next_bytes = 0;         // ... by the tiles of the last block
    std::size_t hd = 0, hstride = 0;    // head-major output (s8_gemm::hd); hd = 0: row-major (ldy)
};

/// Where output (m, n) of a job goes (s8_gemm::hd): element n and the rest of its 16-column panel from there.
inline float* s8_y(const s8_job& a, std::size_t m, std::size_t n) noexcept {
    return a.hd ? a.Y + (n / a.hd) * a.hstride + m * a.hd + n % a.hd : a.Y + m * a.ldy + n;
}

inline std::uint8_t* s8_align64(std::uint8_t* p) noexcept {
    const auto u = reinterpret_cast<std::uintptr_t>(p);
    return p + ((64 - (u & 63)) & 63);
}

inline std::int32_t s8_load32(const void* p) noexcept {
    std::int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// ---- scalar reference (also the arithmetic definition every SIMD path reproduces bit for bit) ----

// Keeps the compiler from contracting a multiply and a later add into an FMA (GCC's default -ffp-contract=fast does
// that across statements on targets with FMA, e.g. aarch64); the SIMD paths never contract.
inline float s8_no_contract(float v) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    __asm__("" : "+m"(v));
#endif
    return v;
}

inline float s8_min(float a, float b) noexcept { return a < b ? a : b; }  // vminps(a, b)
inline float s8_max(float a, float b) noexcept { return a > b ? a : b; }  // vmaxps(a, b)

/// GELU (erf form) of the int8 epilogue, every path, bit for bit:
///   GELU(v) = 0.5 v (1 + erf(v / sqrt 2)) = max(0, v) - q(|v|),  q(a) = 0.5 a erfc(a / sqrt 2)
/// (for v < 0: 0.5 v erfc(-v / sqrt 2) = -q(-v)). q decays to ~0 by a = AMAX = 4.25 (q(4.25) = 4.5e-5), so a is
/// clamped there; q is piecewise quadratic in a itself (no local variable): k = round(a S) in 0..15 (an FMA with
/// 1.5 * 2^23 leaves k in the low mantissa bits, the permute index), q = c0[k] + a (c1[k] + a c2[k])
/// (tools/fit_gelu_exp.py, scheme "int8": minimax, q(0) = 0 exactly, q(AMAX) = -1.2e-10). |GELU error| <= 8.4e-5 on
/// [-12, 12]: ~0.5 % of the int8 quantization step of the FFN input that follows (amax / 127 per token; amax is
/// several units there), so it moves a rounding of that quantization now and then and nothing else. Why this form:
/// on Zen 4 vpdpbusd and FMAs share two pipes and every zmm operation takes half a cycle of the four vector pipes,
/// and the epilogue's GELU ran at ~11 cycles per vector next to the k loop; this is 10 operations (9 on AVX-512; 3 of them FMAs;
/// the cubic pieces before it: 12 and 4, int8 forward 0.989x; the fp32 16-piece quartic in local coordinates:
/// 16 and 7). NaN -> NaN, +inf -> +inf, -inf -> ~0 (1.2e-10).
inline constexpr int s8_gelu_degree = 2;
inline constexpr float s8_gelu_s = 3.6470587f;  // 15.5 / 4.25: AMAX S rounds to k = 15 at most
inline constexpr float s8_gelu_amax = 4.25f;
alignas(64) inline constexpr float s8_gelu_q[s8_gelu_degree + 1][16] = {  // [coefficient of a^j][piece k]
    {0.0f, 0.00091393077f, 0.014825019f, 0.06356296f, 0.1556917f, 0.27226487f, 0.37464336f, 0.4270559f, 0.4157345f,
     0.35251778f, 0.26386592f, 0.17602023f, 0.105383754f, 0.05692915f, 0.027864192f, 0.012351635f},
    {0.49988297f, 0.48965096f, 0.42423868f, 0.28297606f, 0.09067614f, -0.09935642f, -0.23640434f, -0.2962485f,
     -0.28584296f, -0.23180945f, -0.16371062f, -0.102552965f, -0.057611156f, -0.02923239f, -0.013464513f,
     -0.005650287f},
    {-0.39693618f, -0.36847684f, -0.2909697f, -0.18827951f, -0.08776475f, -0.010242344f, 0.035649985f, 0.052736197f,
     0.050352786f, 0.03880372f, 0.025723066f, 0.015076715f, 0.007927196f, 0.003771487f, 0.0016327327f,
     0.0006456518f},
};
inline constexpr float s8_gelu_magic = 12582912.0f;  // 1.5 * 2^23

inline float s8_gelu_scalar(float v) noexcept {
    const float ac = s8_min(std::fabs(v), s8_gelu_amax);  // vminps(a, amax): a NaN a gives amax, so k stays in 0..15
    const float w = std::fma(ac, s8_gelu_s, s8_gelu_magic);
    std::uint32_t bits;
    std::memcpy(&bits, &w, 4);
    const std::uint32_t k = bits & 15u;
    float p = s8_gelu_q[s8_gelu_degree][k];
    for (int j = s8_gelu_degree - 1; j >= 0; --j) p = std::fma(p, ac, s8_gelu_q[j][k]);
    return s8_max(0.0f, v) - p;  // vmaxps(0, v): NaN v gives v
}

/// exp: kernels/avx2.hpp's exp_ps (clamp to [-87.34, 88], Cephes polynomial, 2^n through the exponent field).
inline float s8_exp_scalar(float x) noexcept {
    x = s8_max(s8_min(x, 88.0f), -87.3365447505531f);
    const float fx = std::nearbyint(x * 1.44269504088896341f);
    float r = std::fma(-fx, 0.693359375f, x);
    r = std::fma(-fx, -2.12194440e-4f, r);
    float p = 1.9875691500e-4f;
    p = std::fma(p, r, 1.3981999507e-3f);
    p = std::fma(p, r, 8.3334519073e-3f);
    p = std::fma(p, r, 4.1665795894e-2f);
    p = std::fma(p, r, 1.6666665459e-1f);
    p = std::fma(p, r, 5.0000001201e-1f);
    const float y = std::fma(p, r * r, r + 1.0f);
    const std::int32_t e = (static_cast<std::int32_t>(fx) + 127) * (1 << 23);
    float ef;
    std::memcpy(&ef, &e, 4);
    return y * ef;
}

inline float s8_act_scalar(float v, activation a) noexcept {
    if (a == activation::gelu_erf) return s8_gelu_scalar(v);
    if (a == activation::gelu_tanh) {
        const float v3 = (v * v) * v;
        const float u = 0.79788456080286536f * std::fma(0.044715f, v3, v);
        const float e = s8_no_contract(s8_exp_scalar(-2.0f * u));  // y * ef, then 1 + e: never one FMA
        return v / (1.0f + e);
    }
    return v;
}

/// The epilogue of one element (the definition; the SIMD stores do the same operations).
inline float s8_finish_scalar(std::int32_t acc, float sx, float sw, const float* bias, const float* res,
                              activation a) noexcept {
    const float s = sx * sw;
    float y = bias ? std::fma(static_cast<float>(acc), s, *bias) : static_cast<float>(acc) * s;
    if (res) y = s8_no_contract(y) + *res;
    return s8_act_scalar(y, a);
}

/// Reference quantization of rows [m0, m1); u8 = true stores q + 128 (VNNI form).
inline void s8_quantize_rows_scalar(const float* X, std::size_t ldx, const float* cs, std::size_t K,
                                    std::uint8_t* q, std::size_t ldq, float* sx, std::size_t m0, std::size_t m1,
                                    bool u8) {
    const std::uint8_t flip = u8 ? 0x80 : 0x00;
    for (std::size_t m = m0; m < m1; ++m) {
        const float* x = X + m * ldx;
        std::uint8_t* qr = q + m * ldq;
        float amax = 0.f;
        for (std::size_t i = 0; i < K; ++i) amax = std::max(amax, std::fabs(cs ? x[i] * cs[i] : x[i]));
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        for (std::size_t i = 0; i < K; ++i) {
            float v = std::nearbyint((cs ? x[i] * cs[i] : x[i]) * inv);
            v = std::min(127.f, std::max(-127.f, v));
            qr[i] = static_cast<std::uint8_t>(static_cast<std::uint8_t>(static_cast<std::int8_t>(v)) ^ flip);
        }
        for (std::size_t i = K; i < ldq; ++i) qr[i] = flip;
    }
}

/// Reference kernel: exact integer sums from the packed layout, then the common epilogue. Rows [m0, m1), panels
/// [p0, p1).
template <bool RAW>
inline void s8_kernel_scalar(const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    const std::size_t kp = a.w->k_padded;
    const std::size_t n1 = std::min(a.N, p1 * 16);
    for (std::size_t m = m0; m < m1; ++m) {
        const std::int8_t* x = reinterpret_cast<const std::int8_t*>(a.xq + m * a.ldq);
        for (std::size_t n = p0 * 16; n < n1; ++n) {
            const std::int8_t* wp = a.w->data + (n / 16) * 16 * kp + (n % 16) * 4;
            std::int32_t acc = 0;
            for (std::size_t g = 0; g < a.groups; ++g)
                for (std::size_t j = 0; j < 4; ++j) acc += std::int32_t(x[4 * g + j]) * std::int32_t(wp[64 * g + j]);
            if (RAW)
                a.C[m * a.ldc + n] = acc;
            else
                *s8_y(a, m, n) = s8_finish_scalar(acc, a.sx[m], a.w->scales[n], a.bias ? a.bias + n : nullptr,
                                                      a.res ? a.res + m * a.ldr + n : nullptr, a.act);
        }
    }
}

// Drives a micro-kernel family over rows [m0, m1) x panels [p0, p1): blocks of NR panels outer (the weight block
// stays in L1 for K <= ~768), MR rows inner; tails: single panels, then 4, 2, 1 rows.
template <class Fam, int NR, bool RAW>
inline void s8_rows(const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p) {
    std::size_t m = m0;
    for (; m + Fam::MR <= m1; m += Fam::MR) Fam::template kern<Fam::MR, NR, RAW>(a, m, p);
    for (; m + 4 <= m1; m += 4) Fam::template kern<4, NR, RAW>(a, m, p);
    if (m + 2 <= m1) {
        Fam::template kern<2, NR, RAW>(a, m, p);
        m += 2;
    }
    if (m < m1) Fam::template kern<1, NR, RAW>(a, m, p);
}

template <class Fam, bool RAW>
inline void s8_drive(const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    std::size_t p = p0;
    for (; p + Fam::NR <= p1; p += Fam::NR) s8_rows<Fam, Fam::NR, RAW>(a, m0, m1, p);
    if constexpr (Fam::NR > 2) {  // a 2-panel tail as one tile (attention's P V has N = 32: two panels)
        if (p + 2 <= p1) {
            s8_rows<Fam, 2, RAW>(a, m0, m1, p);
            p += 2;
        }
    }
    for (; p < p1; ++p) s8_rows<Fam, 1, RAW>(a, m0, m1, p);
}

#if defined(BERTLET_S8_X86)

#define BERTLET_S8_AVX2 "avx2,fma,f16c"  // f16c: what avx2.hpp's inline helpers are compiled for
#define BERTLET_S8_AVX512 "avx2,fma,f16c,avx512f,avx512bw,avx512dq,avx512vl"

// ---- AVX2 helpers (also used by AVX-VNNI) ----

// s8_gelu_scalar: a 16-entry table row is two 8-lane vpermps (k mod 8) merged by bit 3 of k (vblendvps reads the
// sign bit, so k is shifted there).
BERTLET_TARGET(BERTLET_S8_AVX2) inline __m256 s8_gelu_avx2(__m256 v) {
    const __m256 ac = _mm256_min_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), v), _mm256_set1_ps(s8_gelu_amax));
    const __m256 w = _mm256_fmadd_ps(ac, _mm256_set1_ps(s8_gelu_s), _mm256_set1_ps(s8_gelu_magic));
    const __m256i k = _mm256_castps_si256(w);
    const __m256 hi = _mm256_castsi256_ps(_mm256_slli_epi32(k, 28));
    const auto row = [k, hi](int j) BERTLET_TARGET(BERTLET_S8_AVX2) {
        return _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_load_ps(s8_gelu_q[j]), k),
                                _mm256_permutevar8x32_ps(_mm256_load_ps(s8_gelu_q[j] + 8), k), hi);
    };
    __m256 p = row(s8_gelu_degree);
#pragma GCC unroll 3
    for (int j = s8_gelu_degree - 1; j >= 0; --j) p = _mm256_fmadd_ps(p, ac, row(j));
    return _mm256_sub_ps(_mm256_max_ps(_mm256_setzero_ps(), v), p);
}

BERTLET_TARGET(BERTLET_S8_AVX2) inline __m256 s8_act_avx2(__m256 v, activation a) {
    if (a == activation::gelu_erf) return s8_gelu_avx2(v);
    if (a == activation::gelu_tanh) {
        const __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
        const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.79788456080286536f),
                                       _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), v3, v));
        const __m256 e = avx2::exp_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
        return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    }
    return v;
}

// Loads 8 floats of a row, times the per-column smoothing factors if any.
template <bool SMOOTH>
BERTLET_TARGET(BERTLET_S8_AVX2) __attribute__((always_inline))
inline __m256 s8_ld_avx2(const float* x, const float* cs, std::size_t i) {
    const __m256 v = _mm256_loadu_ps(x + i);
    return SMOOTH ? _mm256_mul_ps(v, _mm256_loadu_ps(cs + i)) : v;
}

// Quantizes rows [m0, m1): pass 1 max|xs|, pass 2 xs * (127 / max) -> nearest-even s32 -> packed to s8 with signed
// saturation (a NaN gives INT_MIN -> -128), then max(., -127): the same values as the scalar clamp.
template <bool SMOOTH>
BERTLET_TARGET(BERTLET_S8_AVX2)
void s8_quantize_rows_avx2(const float* X, std::size_t ldx, const float* cs, std::size_t K, std::uint8_t* q,
                           std::size_t ldq, float* sx, std::size_t m0, std::size_t m1, bool u8) {
    const std::uint8_t flip = u8 ? 0x80 : 0x00;
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256i lo8 = _mm256_set1_epi8(-127), flip8 = _mm256_set1_epi8(static_cast<char>(flip));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m128i flipv = _mm_set1_epi8(static_cast<char>(flip));
    for (std::size_t m = m0; m < m1; ++m) {
        const float* x = X + m * ldx;
        std::uint8_t* qr = q + m * ldq;
        __m256 mx0 = _mm256_setzero_ps(), mx1 = _mm256_setzero_ps();
        std::size_t i = 0;
        for (; i + 16 <= K; i += 16) {
            mx0 = _mm256_max_ps(mx0, _mm256_and_ps(s8_ld_avx2<SMOOTH>(x, cs, i), absmask));
            mx1 = _mm256_max_ps(mx1, _mm256_and_ps(s8_ld_avx2<SMOOTH>(x, cs, i + 8), absmask));
        }
        for (; i + 8 <= K; i += 8) mx0 = _mm256_max_ps(mx0, _mm256_and_ps(s8_ld_avx2<SMOOTH>(x, cs, i), absmask));
        const __m256 vmax = _mm256_max_ps(mx0, mx1);
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
        float amax = _mm_cvtss_f32(h);
        for (; i < K; ++i) amax = std::max(amax, std::fabs(cs ? x[i] * cs[i] : x[i]));
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        const __m256 vinv = _mm256_set1_ps(inv);
        i = 0;
        for (; i + 32 <= K; i += 32) {
            const __m256i c0 = _mm256_cvtps_epi32(_mm256_mul_ps(s8_ld_avx2<SMOOTH>(x, cs, i), vinv));
            const __m256i c1 = _mm256_cvtps_epi32(_mm256_mul_ps(s8_ld_avx2<SMOOTH>(x, cs, i + 8), vinv));
            const __m256i c2 = _mm256_cvtps_epi32(_mm256_mul_ps(s8_ld_avx2<SMOOTH>(x, cs, i + 16), vinv));
            const __m256i c3 = _mm256_cvtps_epi32(_mm256_mul_ps(s8_ld_avx2<SMOOTH>(x, cs, i + 24), vinv));
            __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(c0, c1), _mm256_packs_epi32(c2, c3));
            b = _mm256_permutevar8x32_epi32(b, perm);
            b = _mm256_xor_si256(_mm256_max_epi8(b, lo8), flip8);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + i), b);
        }
        for (; i + 8 <= K; i += 8) {
            __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(s8_ld_avx2<SMOOTH>(x, cs, i), vinv));
            v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
            const __m128i s16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            _mm_storel_epi64(reinterpret_cast<__m128i*>(qr + i), _mm_xor_si128(_mm_packs_epi16(s16, s16), flipv));
        }
        for (; i < K; ++i) {
            float v = std::nearbyint((cs ? x[i] * cs[i] : x[i]) * inv);
            v = std::min(127.f, std::max(-127.f, v));
            qr[i] = static_cast<std::uint8_t>(static_cast<std::uint8_t>(static_cast<std::int8_t>(v)) ^ flip);
        }
        for (; i < ldq; ++i) qr[i] = flip;
    }
}

// Epilogue of an MR x NR-panel tile (two ymm of 8 s32 per row and panel); per-panel operands loaded once. Partial
// panels (columns past N) are staged through a buffer so nothing past column N is read or written.
template <int MR, int NR, bool RAW>
BERTLET_TARGET(BERTLET_S8_AVX2) __attribute__((always_inline))
inline void s8_tile_store_avx2(const s8_job& a, std::size_t m0, std::size_t p0, __m256i (&acc)[MR][NR][2]) {
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
        const std::size_t n0 = (p0 + j) * 16;
        if (n0 >= a.N) break;
        const std::size_t valid = std::min<std::size_t>(16, a.N - n0);
        if (RAW) {
#pragma GCC unroll 8
            for (int i = 0; i < MR; ++i) {
                alignas(32) std::int32_t t[16];
                _mm256_store_si256(reinterpret_cast<__m256i*>(t), acc[i][j][0]);
                _mm256_store_si256(reinterpret_cast<__m256i*>(t + 8), acc[i][j][1]);
                std::memcpy(a.C + (m0 + i) * a.ldc + n0, t, valid * 4);
            }
            continue;
        }
        const __m256 ws0 = _mm256_loadu_ps(a.w->scales + n0), ws1 = _mm256_loadu_ps(a.w->scales + n0 + 8);
        __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
        if (a.bias) {
            if (valid == 16) {
                b0 = _mm256_loadu_ps(a.bias + n0);
                b1 = _mm256_loadu_ps(a.bias + n0 + 8);
            } else {
                alignas(32) float tb[16] = {};
                std::memcpy(tb, a.bias + n0, valid * 4);
                b0 = _mm256_load_ps(tb);
                b1 = _mm256_load_ps(tb + 8);
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const std::size_t m = m0 + i;
            const __m256 vs = _mm256_set1_ps(a.sx[m]);
            const __m256 s0 = _mm256_mul_ps(vs, ws0), s1 = _mm256_mul_ps(vs, ws1);
            const __m256 f0 = _mm256_cvtepi32_ps(acc[i][j][0]), f1 = _mm256_cvtepi32_ps(acc[i][j][1]);
            __m256 y0 = a.bias ? _mm256_fmadd_ps(f0, s0, b0) : _mm256_mul_ps(f0, s0);
            __m256 y1 = a.bias ? _mm256_fmadd_ps(f1, s1, b1) : _mm256_mul_ps(f1, s1);
            float* y = s8_y(a, m, n0);
            if (a.res) {
                const float* r = a.res + m * a.ldr + n0;
                if (valid == 16) {
                    y0 = _mm256_add_ps(y0, _mm256_loadu_ps(r));
                    y1 = _mm256_add_ps(y1, _mm256_loadu_ps(r + 8));
                } else {
                    alignas(32) float tr[16] = {};
                    std::memcpy(tr, r, valid * 4);
                    y0 = _mm256_add_ps(y0, _mm256_load_ps(tr));
                    y1 = _mm256_add_ps(y1, _mm256_load_ps(tr + 8));
                }
            }
            if (a.act != activation::none) {
                y0 = s8_act_avx2(y0, a.act);
                y1 = s8_act_avx2(y1, a.act);
            }
            if (valid == 16) {
                _mm256_storeu_ps(y, y0);
                _mm256_storeu_ps(y + 8, y1);
            } else {
                alignas(32) float t[16];
                _mm256_store_ps(t, y0);
                _mm256_store_ps(t + 8, y1);
                std::memcpy(y, t, valid * 4);
            }
        }
    }
}

// AVX2 without VNNI: products |w| * (sign(w) * x) via vpmaddubsw (never saturates: |x|, |w| <= 127), vpmaddwd with
// ones to s32.
template <int MR, int NR, bool RAW>
BERTLET_TARGET(BERTLET_S8_AVX2)
void s8_kernel_avx2(const s8_job& a, std::size_t m0, std::size_t p0) {
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
    s8_tile_store_avx2<MR, NR, RAW>(a, m0, p0, acc);
}

struct s8_fam_avx2 {
    static constexpr int MR = 4, NR = 1;
    template <int R, int P, bool RAW>
    static void kern(const s8_job& a, std::size_t m, std::size_t p) { s8_kernel_avx2<R, P, RAW>(a, m, p); }
};

// AVX-VNNI (256-bit vpdpbusd): u8 (x + 128) x s8 weights.
template <int MR, int NR, bool RAW>
BERTLET_TARGET(BERTLET_S8_AVX2 ",avxvnni")
void s8_kernel_avx_vnni(const s8_job& a, std::size_t m0, std::size_t p0) {
    const std::size_t kp = a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * 16 * kp;
    const std::size_t ps = 16 * kp;
    __m256i acc[MR][NR][2];  // start at -128 * row_sum (the u8 correction), as the AVX-512 VNNI kernel
#pragma GCC unroll 4
    for (int j = 0; j < NR; ++j) {
        const std::int32_t* rs = a.w->row_sums + (p0 + j) * 16;
        const __m256i c0 = _mm256_sub_epi32(_mm256_setzero_si256(),
                                            _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rs)), 7));
        const __m256i c1 = _mm256_sub_epi32(
            _mm256_setzero_si256(), _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(rs + 8)), 7));
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            acc[i][j][0] = c0;
            acc[i][j][1] = c1;
        }
    }
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
    s8_tile_store_avx2<MR, NR, RAW>(a, m0, p0, acc);
}

struct s8_fam_avx_vnni {
    static constexpr int MR = 6, NR = 1;
    template <int R, int P, bool RAW>
    static void kern(const s8_job& a, std::size_t m, std::size_t p) { s8_kernel_avx_vnni<R, P, RAW>(a, m, p); }
};

// ---- AVX-512 ----

// avx2.hpp's exp_ps in 512-bit form (not avx512.hpp's scalef variant, whose clamp differs), so every int8 path agrees.
BERTLET_TARGET(BERTLET_S8_AVX512) inline __m512 s8_exp_avx512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.3365447505531f));
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __m512 fx = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    const __m512 y = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

// s8_gelu_scalar: a 16-entry table row is one vpermps; the clamp is one vrangeps (9 operations in all).
BERTLET_TARGET(BERTLET_S8_AVX512) inline __m512 s8_gelu_avx512(__m512 v) {
    // min(|v|, AMAX) in one vrangeps (imm 0x0A: the smaller magnitude, sign cleared) instead of vandps + vminps
    // (the GELU GEMM 0.8 % faster). A NaN v gives a NaN ac here (the scalar form: AMAX); the index is then the NaN's
    // low bits, still a valid permute index, and the result v's NaN either way.
    const __m512 ac = _mm512_range_ps(v, _mm512_set1_ps(s8_gelu_amax), 0x0A);
    const __m512i k = _mm512_castps_si512(
        _mm512_fmadd_ps(ac, _mm512_set1_ps(s8_gelu_s), _mm512_set1_ps(s8_gelu_magic)));
    __m512 p = _mm512_permutexvar_ps(k, _mm512_load_ps(s8_gelu_q[s8_gelu_degree]));
#pragma GCC unroll 3
    for (int j = s8_gelu_degree - 1; j >= 0; --j)
        p = _mm512_fmadd_ps(p, ac, _mm512_permutexvar_ps(k, _mm512_load_ps(s8_gelu_q[j])));
    return _mm512_sub_ps(_mm512_max_ps(_mm512_setzero_ps(), v), p);
}

BERTLET_TARGET(BERTLET_S8_AVX512) inline __m512 s8_act_avx512(__m512 v, activation a) {
    if (a == activation::gelu_erf) return s8_gelu_avx512(v);
    if (a == activation::gelu_tanh) {
        const __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
        const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.79788456080286536f),
                                       _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), v3, v));
        const __m512 e = s8_exp_avx512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
        return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    }
    return v;
}

template <bool SMOOTH>
BERTLET_TARGET(BERTLET_S8_AVX512) __attribute__((always_inline))
inline __m512 s8_ld_avx512(const float* x, const float* cs, std::size_t i) {
    const __m512 v = _mm512_loadu_ps(x + i);
    return SMOOTH ? _mm512_mul_ps(v, _mm512_loadu_ps(cs + i)) : v;
}
template <bool SMOOTH>
BERTLET_TARGET(BERTLET_S8_AVX512) __attribute__((always_inline))
inline __m512 s8_ldm_avx512(const float* x, const float* cs, std::size_t i, __mmask16 k) {
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    return SMOOTH ? _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, cs + i)) : v;
}

// As s8_quantize_rows_avx2, 64 floats per step (4 zmm -> packs -> one 64-byte store), R rows at a time: the rows'
// maximum chains, horizontal reductions and reciprocals are independent and overlap (one row at a time, each row's
// reduction and division sat between its two passes: 7.5 cycles per 16 floats at K = 384; four rows: ~5). Every
// row's operations are those of R = 1 (four max chains over i mod 64, the same reduction), so the same bits.
template <bool SMOOTH, int R>
BERTLET_TARGET(BERTLET_S8_AVX512) __attribute__((always_inline))
inline void s8_quantize_block_avx512(const float* X, std::size_t ldx, const float* cs, std::size_t K, std::uint8_t* q,
                                     std::size_t ldq, float* sx, std::size_t m, std::uint8_t flip,
                                     float* buf = nullptr) {
    const __m512i lo8 = _mm512_set1_epi8(-127), flip8 = _mm512_set1_epi8(static_cast<char>(flip));
    const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m128i lo16 = _mm_set1_epi8(-127), flip16 = _mm_set1_epi8(static_cast<char>(flip));
    const float* x[R];
    std::uint8_t* qr[R];
    __m512 mx[R][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
        x[r] = X + (m + r) * ldx;
        qr[r] = q + (m + r) * ldq;
        mx[r][0] = mx[r][1] = mx[r][2] = mx[r][3] = _mm512_setzero_ps();
    }
    // SMOOTH with a buffer: pass 1 keeps x * cs there (R rows of K floats) and pass 2 reads it back instead of
    // multiplying again (the same floats, so the same bits; one multiply less per vector on the FMA pipes)
    const auto ld1 = [&](int r, std::size_t at) BERTLET_TARGET(BERTLET_S8_AVX512) {
        const __m512 v = s8_ld_avx512<SMOOTH>(x[r], cs, at);
        if (SMOOTH && buf) _mm512_storeu_ps(buf + r * K + at, v);
        return v;
    };
    const auto ld2 = [&](int r, std::size_t at) BERTLET_TARGET(BERTLET_S8_AVX512) {
        return SMOOTH && buf ? _mm512_loadu_ps(buf + r * K + at) : s8_ld_avx512<SMOOTH>(x[r], cs, at);
    };
    std::size_t i = 0;
    for (; i + 64 <= K; i += 64) {
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            mx[r][0] = _mm512_max_ps(mx[r][0], _mm512_abs_ps(ld1(r, i)));
            mx[r][1] = _mm512_max_ps(mx[r][1], _mm512_abs_ps(ld1(r, i + 16)));
            mx[r][2] = _mm512_max_ps(mx[r][2], _mm512_abs_ps(ld1(r, i + 32)));
            mx[r][3] = _mm512_max_ps(mx[r][3], _mm512_abs_ps(ld1(r, i + 48)));
        }
    }
    for (; i + 16 <= K; i += 16) {
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r)
            mx[r][0] = _mm512_max_ps(mx[r][0], _mm512_abs_ps(ld1(r, i)));
    }
    const std::size_t kt = i;
    const __mmask16 tail = static_cast<__mmask16>((1u << (K - kt)) - 1u);
    __m512 vinv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
        if (tail) {
            const __m512 v = s8_ldm_avx512<SMOOTH>(x[r], cs, kt, tail);
            if (SMOOTH && buf) _mm512_mask_storeu_ps(buf + r * K + kt, tail, v);
            mx[r][1] = _mm512_max_ps(mx[r][1], _mm512_abs_ps(v));
        }
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(mx[r][0], mx[r][1]),
                                                              _mm512_max_ps(mx[r][2], mx[r][3])));
        sx[m + r] = amax / 127.f;
        vinv[r] = _mm512_set1_ps(amax > 0.f ? 127.f / amax : 0.f);
    }
    for (i = 0; i + 64 <= K; i += 64) {
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
            const __m512i c0 = _mm512_cvtps_epi32(_mm512_mul_ps(ld2(r, i), vinv[r]));
            const __m512i c1 = _mm512_cvtps_epi32(_mm512_mul_ps(ld2(r, i + 16), vinv[r]));
            const __m512i c2 = _mm512_cvtps_epi32(_mm512_mul_ps(ld2(r, i + 32), vinv[r]));
            const __m512i c3 = _mm512_cvtps_epi32(_mm512_mul_ps(ld2(r, i + 48), vinv[r]));
            __m512i b = _mm512_packs_epi16(_mm512_packs_epi32(c0, c1), _mm512_packs_epi32(c2, c3));
            b = _mm512_permutexvar_epi32(perm, b);
            b = _mm512_xor_si512(_mm512_max_epi8(b, lo8), flip8);
            _mm512_storeu_si512(qr[r] + i, b);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
        std::size_t j = i;
        for (; j + 16 <= K; j += 16) {
            const __m128i b =
                _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(ld2(r, j), vinv[r])));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(qr[r] + j), _mm_xor_si128(_mm_max_epi8(b, lo16), flip16));
        }
        if (tail) {
            const __m128i b = _mm512_cvtsepi32_epi8(
                _mm512_cvtps_epi32(_mm512_mul_ps(SMOOTH && buf ? _mm512_maskz_loadu_ps(tail, buf + r * K + j)
                                                                : s8_ldm_avx512<SMOOTH>(x[r], cs, j, tail),
                                                 vinv[r])));
            _mm_mask_storeu_epi8(qr[r] + j, tail, _mm_xor_si128(_mm_max_epi8(b, lo16), flip16));
        }
        for (j = K; j < ldq; ++j) qr[r][j] = flip;
    }
}

template <bool SMOOTH>
BERTLET_TARGET(BERTLET_S8_AVX512)
void s8_quantize_rows_avx512(const float* X, std::size_t ldx, const float* cs, std::size_t K, std::uint8_t* q,
                             std::size_t ldq, float* sx, std::size_t m0, std::size_t m1, bool u8) {
    const std::uint8_t flip = u8 ? 0x80 : 0x00;
    std::size_t m = m0;
    if (SMOOTH && K <= 2048) {  // rows of x * cs kept (<= 8 KB, in L1 between the passes)
        alignas(64) float buf[2048];
        if (K <= 512)
            for (; m + 4 <= m1; m += 4) s8_quantize_block_avx512<SMOOTH, 4>(X, ldx, cs, K, q, ldq, sx, m, flip, buf);
        for (; m < m1; ++m) s8_quantize_block_avx512<SMOOTH, 1>(X, ldx, cs, K, q, ldq, sx, m, flip, buf);
        return;
    }
    for (; m + 4 <= m1; m += 4) s8_quantize_block_avx512<SMOOTH, 4>(X, ldx, cs, K, q, ldq, sx, m, flip);
    for (; m < m1; ++m) s8_quantize_block_avx512<SMOOTH, 1>(X, ldx, cs, K, q, ldq, sx, m, flip);
}

// Epilogue kinds the AVX-512 VNNI kernel is compiled for, so the encoder's linears run their epilogue without a
// branch per output vector (bias / residual / activation tests and the panel-count checks, and the scalar work
// around them, were ~1/7 of the kernel's time at seq 128). s8_ep_generic tests the job at run time.
inline constexpr int s8_ep_generic = 0, s8_ep_bias = 1, s8_ep_bias_res = 2, s8_ep_bias_gelu = 3;

/// The epilogue kind of a job (s8_ep_generic when no specialised one matches).
inline int s8_epilogue_kind(const s8_job& a) noexcept {
    if (!a.bias) return s8_ep_generic;
    if (!a.res && a.act == activation::none) return s8_ep_bias;
    if (a.res && a.act == activation::none) return s8_ep_bias_res;
    if (!a.res && a.act == activation::gelu_erf) return s8_ep_bias_gelu;
    return s8_ep_generic;
}

// Epilogue of an MR x NR-panel tile (shared by both AVX-512 kernels; the VNNI kernel has already applied the u8
// correction); per-panel operands loaded once, per-row scale broadcast once. EP: s8_ep_* (the same operations in
// the same order for every kind, so the same bits).
template <int MR, int NR, bool RAW, int EP = s8_ep_generic>
BERTLET_TARGET(BERTLET_S8_AVX512) __attribute__((always_inline))
inline void s8_tile_store_avx512(const s8_job& a, std::size_t m0, std::size_t p0, __m512i (&acc)[MR][NR]) {
    if constexpr (!RAW && EP != s8_ep_generic) {
        if ((p0 + NR) * 16 <= a.N) {  // whole panels: no masks, no per-vector tests
            __m512 ws[NR], bias[NR];
#pragma GCC unroll 8
            for (int j = 0; j < NR; ++j) {
                ws[j] = _mm512_loadu_ps(a.w->scales + (p0 + j) * 16);
                bias[j] = _mm512_loadu_ps(a.bias + (p0 + j) * 16);
            }
            // each panel's output at row m0 and the row stride (row-major: ldy; head-major: hd)
            float* yb[NR];
#pragma GCC unroll 8
            for (int j = 0; j < NR; ++j) yb[j] = s8_y(a, m0, (p0 + j) * 16);
            const std::size_t rs = a.hd ? a.hd : a.ldy;
#pragma GCC unroll 16
            for (int i = 0; i < MR; ++i) {
                const std::size_t m = m0 + i;
                const __m512 sxv = _mm512_set1_ps(a.sx[m]);
#pragma GCC unroll 8
                for (int j = 0; j < NR; ++j) {
                    __m512 y = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][j]), _mm512_mul_ps(sxv, ws[j]), bias[j]);
                    if constexpr (EP == s8_ep_bias_res)
                        y = _mm512_add_ps(y, _mm512_loadu_ps(a.res + m * a.ldr + (p0 + j) * 16));
                    if constexpr (EP == s8_ep_bias_gelu) y = s8_gelu_avx512(y);
                    _mm512_storeu_ps(yb[j] + i * rs, y);
                }
            }
            return;
        }
    }
    __mmask16 mk[NR];
    __m512 ws[NR], bias[NR];
    int np = 0;  // panels with columns < N
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
        const std::size_t n0 = (p0 + j) * 16;
        if (n0 >= a.N) break;
        ++np;
        const std::size_t valid = std::min<std::size_t>(16, a.N - n0);
        mk[j] = static_cast<__mmask16>(valid == 16 ? 0xFFFFu : (1u << valid) - 1u);
        ws[j] = _mm512_loadu_ps(a.w->scales + n0);
        bias[j] = a.bias ? _mm512_maskz_loadu_ps(mk[j], a.bias + n0) : _mm512_setzero_ps();
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
        const std::size_t m = m0 + i;
        const __m512 sxv = _mm512_set1_ps(a.sx[m]);
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) {
            if (j >= np) break;
            const std::size_t n0 = (p0 + j) * 16;
            const __m512i c = acc[i][j];
            if (RAW) {
                _mm512_mask_storeu_epi32(a.C + m * a.ldc + n0, mk[j], c);
                continue;
            }
            const __m512 s = _mm512_mul_ps(sxv, ws[j]);
            __m512 y = a.bias ? _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), s, bias[j])
                              : _mm512_mul_ps(_mm512_cvtepi32_ps(c), s);
            if (a.res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mk[j], a.res + m * a.ldr + n0));
            if (a.act != activation::none) y = s8_act_avx512(y, a.act);
            _mm512_mask_storeu_ps(s8_y(a, m, n0), mk[j], y);
        }
    }
}

// AVX-512BW without VNNI: as AVX2 (|w| * sign-adjusted x), sign applied with a masked subtract (no vpsignb in 512).
template <int MR, int NR, bool RAW>
BERTLET_TARGET(BERTLET_S8_AVX512)
void s8_kernel_avx512(const s8_job& a, std::size_t m0, std::size_t p0) {
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
    s8_tile_store_avx512<MR, NR, RAW>(a, m0, p0, acc);
}

struct s8_fam_avx512 {
    static constexpr int MR = 8, NR = 2;
    template <int R, int P, bool RAW>
    static void kern(const s8_job& a, std::size_t m, std::size_t p) { s8_kernel_avx512<R, P, RAW>(a, m, p); }
};

// AVX-512 VNNI: vpdpbusd u8 (x + 128) x s8 weights, 4 k per lane, 16 output columns per zmm. MR x NR zmm
// accumulators; per k group NR weight loads and MR broadcasts feed MR * NR vpdpbusd.
template <int MR, int NR, bool RAW, int EP = s8_ep_generic>
BERTLET_TARGET(BERTLET_S8_AVX512 ",avx512vnni")
void s8_kernel_avx512_vnni(const s8_job& a, std::size_t m0, std::size_t p0) {
    static_assert(MR <= 8, "rows are addressed from two bases of 4 rows each");
    const std::size_t ps = 16 * a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * ps;
    // the accumulators start at -128 * row_sum (the u8 correction; no overflow: |acc| < 383 * 127 * K < 2^31 for
    // K < 44000), so the epilogue has nothing to subtract
    __m512i acc[MR][NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
        const __m512i c = _mm512_sub_epi32(_mm512_setzero_si512(),
                                           _mm512_slli_epi32(_mm512_loadu_si512(a.w->row_sums + (p0 + j) * 16), 7));
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) acc[i][j] = c;
    }
    const std::uint8_t* xr = a.xq + m0 * a.ldq;
    const std::size_t ldq = a.ldq;
    // This tile's share of the next NR-panel weight block (row tile m0 / MR of ceil(M / MR)) is prefetched, one line
    // every `step` k-groups: the weights stream from L3 / DRAM once per forward pass, and spreading the prefetches
    // keeps them from crowding this tile's own loads (measured ~3-5% of an int8 forward at seq 128). prefetcht0, not
    // t1: on Zen 4 the GEMMs with weights cold in L2 ran 2-3.5% faster, the int8 forward 1.5%.
    // The last block(s) prefetch the next GEMM's first block instead (s8_gemm::next; none: nothing).
    const std::size_t npanels = (a.N + 15) / 16;
    const bool inside = p0 + 2 * NR <= npanels;
    const std::size_t lines = inside ? NR * ps / 64 : (a.next ? a.next_bytes / 64 : 0);
    const std::size_t ntiles = (a.M + MR - 1) / MR;
    const std::size_t per = ntiles ? (lines + ntiles - 1) / ntiles : 0;
    const std::size_t first = std::min(lines, (m0 / MR) * per);
    const std::size_t npf = std::min(per, lines - first);
    const std::int8_t* pf = (inside ? wp + NR * ps : a.next) + first * 64;  // advanced as the lines are prefetched
    const std::size_t step = npf ? std::max<std::size_t>(1, a.groups / npf) : a.groups;
    // One loop over the k-groups with a countdown to the next prefetch (two well-predicted branches per group): the
    // earlier form, chunks of `step` groups in an outer loop with the prefetch between them, made GCC spill and
    // reload ~30 scalars around every chunk (this form: GEMMs 0.5-1.5 % faster, forward 0.993x). Rows are addressed
    // from two bases (rows 0-3 and 4-7) with ldq and 3 ldq as index registers: with one pointer per row GCC ran out
    // of registers and reloaded row pointers from the stack every k-group.
    const std::size_t ldq3 = 3 * ldq;
    const std::int8_t* pf_end = pf + npf * 64;
    std::size_t until_pf = 1;
    const std::uint8_t* x0 = xr;
    const std::int8_t* w0 = wp;
    for (std::size_t g = 0; g < a.groups; ++g, x0 += 4, w0 += 64) {
        if (--until_pf == 0) {
            until_pf = step;
            if (pf < pf_end) {
                _mm_prefetch(reinterpret_cast<const char*>(pf), _MM_HINT_T0);
                pf += 64;
            }
        }
        const std::uint8_t* x4 = x0 + 4 * ldq;
        __m512i w[NR];
#pragma GCC unroll 8
        for (int j = 0; j < NR; ++j) w[j] = _mm512_loadu_si512(w0 + j * ps);
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const std::uint8_t* base = i < 4 ? x0 : x4;
            const int r = i & 3;
            const std::uint8_t* xp = r == 0 ? base : r == 1 ? base + ldq : r == 2 ? base + 2 * ldq : base + ldq3;
            const __m512i xb = _mm512_set1_epi32(s8_load32(xp));
#pragma GCC unroll 8
            for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], xb, w[j]);
        }
    }
    s8_tile_store_avx512<MR, NR, RAW, EP>(a, m0, p0, acc);
}

template <int MR_, int NR_, int EP = s8_ep_generic>
struct s8_fam_avx512_vnni_t {
    static constexpr int MR = MR_, NR = NR_;
    template <int R, int P, bool RAW>
    static void kern(const s8_job& a, std::size_t m, std::size_t p) { s8_kernel_avx512_vnni<R, P, RAW, EP>(a, m, p); }
};
using s8_fam_avx512_vnni = s8_fam_avx512_vnni_t<8, 3>;

template <bool RAW>
inline void s8_run_avx512_vnni(const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    if constexpr (!RAW) {
        switch (s8_epilogue_kind(a)) {
            case s8_ep_bias: s8_drive<s8_fam_avx512_vnni_t<8, 3, s8_ep_bias>, false>(a, m0, m1, p0, p1); return;
            case s8_ep_bias_res: s8_drive<s8_fam_avx512_vnni_t<8, 3, s8_ep_bias_res>, false>(a, m0, m1, p0, p1); return;
            case s8_ep_bias_gelu: s8_drive<s8_fam_avx512_vnni_t<8, 3, s8_ep_bias_gelu>, false>(a, m0, m1, p0, p1); return;
            default: break;
        }
    }
    s8_drive<s8_fam_avx512_vnni, RAW>(a, m0, m1, p0, p1);
}

// ---- AVX-512 + AMX (avx512_amx) ----
// The tile unit computes whole 16-row x 16-column blocks: tdpbusd multiplies a 16 x 64 u8 tile of quantized
// activations (16 rows, 64 k: rows of the activation matrix as they are, stride ldq) by a 16 x 64-byte s8 tile of
// weights in the VNNI layout, which is exactly 16 consecutive k-groups of one S8P16K4 panel (stride 64 bytes): the
// packed weights need no other layout. The exact s32 sums are those of vpdpbusd; tiles are stored to a stack buffer
// and go through the AVX-512 epilogue (the u8 correction -128 * row_sum added there), so the outputs are the bits of
// every other path. Tiles: tmm0-3 C (two row blocks x two panels), tmm4-5 A, tmm6-7 B; all 16 rows x 64 bytes.
#define BERTLET_S8_AMX BERTLET_S8_AVX512 ",avx512vnni,amx-tile,amx-int8"

// The tile configuration, the permission and the tile instruction macros: kernels/amx.hpp.

// The epilogue of rows [8h, 8h + 8) of a block from its buffer (RB * 16 rows of NB * 16 exact sums): the u8
// correction (-128 * row_sum), then s8_tile_store_avx512 (the operations of the avx512_vnni kernel: the same bits).
template <int NB, bool RAW, int EP>
BERTLET_TARGET(BERTLET_S8_AMX) __attribute__((always_inline))
inline void s8_amx_finish8(const s8_job& a, std::size_t m0, std::size_t p0, const std::int32_t* buf, int h) {
    __m512i acc[8][NB];
#pragma GCC unroll 2
    for (int j = 0; j < NB; ++j) {
        const __m512i corr = _mm512_sub_epi32(_mm512_setzero_si512(),
                                              _mm512_slli_epi32(_mm512_loadu_si512(a.w->row_sums + (p0 + j) * 16), 7));
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i)
            acc[i][j] = _mm512_add_epi32(_mm512_load_si512(buf + ((8 * h + i) * NB + j) * 16), corr);
    }
    s8_tile_store_avx512<8, NB, RAW, EP>(a, m0 + 8 * h, p0, acc);
}

// Blocks of RB x 16 rows and NB panels over rows [m0, m1) (a multiple of 16 RB rows) x panels [p0, p1) (a multiple
// of NB), panels outer, rows inner. Per block the tile unit computes the exact sums over the full K (tmm0-3 C,
// tmm4-5 A, tmm6-7 B) and stores them to one of two stack buffers; the previous block's epilogue, in RB * 2 chunks of
// 8 rows, is interleaved with this block's k-steps (chunk h after k-step h * steps / chunks), so the AVX-512 pipes
// run it while the tile unit multiplies (the tile instructions are few and long: the out-of-order window then holds
// both). The last block's epilogue runs after the loop.
template <int RB, int NB, bool RAW, int EP>
BERTLET_TARGET(BERTLET_S8_AMX)
void s8_amx_blocks(const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    constexpr int chunks = RB * 2;
    alignas(64) std::int32_t buf[2][RB * 16 * NB * 16];
    const std::size_t ps = 16 * a.w->k_padded, ldq = a.ldq, K = a.groups * 4;
    const std::size_t steps = K / 64;
    std::size_t pm = 0, pp = 0;
    int cur = 0;
    bool pending = false;
    constexpr long bs = NB * 64;  // buffer row stride in bytes
    for (std::size_t p = p0; p < p1; p += NB)
        for (std::size_t m = m0; m < m1; m += 16 * RB) {
            const std::int8_t* wp = a.w->data + p * ps;
            const std::uint8_t* xr = a.xq + m * ldq;
            const std::int32_t* prev = buf[cur ^ 1];
            BERTLET_AMX_ZERO(0);
            if constexpr (NB > 1) BERTLET_AMX_ZERO(1);
            if constexpr (RB > 1) {
                BERTLET_AMX_ZERO(2);
                if constexpr (NB > 1) BERTLET_AMX_ZERO(3);
            }
            int h = 0;  // next chunk of the previous block's epilogue
            for (std::size_t s = 0; s < steps; ++s) {
                const std::size_t k = 64 * s;
                BERTLET_AMX_LOAD(4, xr + k, ldq);
                BERTLET_AMX_LOAD(6, wp + 16 * k, 64);
                BERTLET_AMX_DPBUSD(0, 4, 6);
                if constexpr (NB > 1) {
                    BERTLET_AMX_LOAD(7, wp + ps + 16 * k, 64);
                    BERTLET_AMX_DPBUSD(1, 4, 7);
                }
                if constexpr (RB > 1) {
                    BERTLET_AMX_LOAD(5, xr + 16 * ldq + k, ldq);
                    BERTLET_AMX_DPBUSD(2, 5, 6);
                    if constexpr (NB > 1) BERTLET_AMX_DPBUSD(3, 5, 7);
                }
                if (pending && h < chunks && std::size_t(h) * steps <= s * chunks) {
                    s8_amx_finish8<NB, RAW, EP>(a, pm, pp, prev, h);
                    ++h;
                }
            }
            if (pending)
                for (; h < chunks; ++h) s8_amx_finish8<NB, RAW, EP>(a, pm, pp, prev, h);
            std::int32_t* out = buf[cur];
            BERTLET_AMX_STORE(0, out, bs);
            if constexpr (NB > 1) BERTLET_AMX_STORE(1, out + 16, bs);
            if constexpr (RB > 1) {
                BERTLET_AMX_STORE(2, out + 16 * NB * 16, bs);
                if constexpr (NB > 1) BERTLET_AMX_STORE(3, out + 16 * NB * 16 + 16, bs);
            }
            pm = m, pp = p, pending = true, cur ^= 1;
        }
    if (pending)
        for (int h = 0; h < chunks; ++h) s8_amx_finish8<NB, RAW, EP>(a, pm, pp, buf[cur ^ 1], h);
}

// Rows [m0, m1) x panels [p0, p1): two-panel blocks of 32 rows, then of 16; a last single panel's rows as
// one-panel blocks; rows past the last whole 16 on the avx512_vnni micro-kernels (the same bits). The tile
// configuration is loaded per call (per thread) and released at the end (the OS then saves no tile state).
template <bool RAW, int EP>
inline void s8_drive_amx(const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    using vnni = s8_fam_avx512_vnni_t<8, 3, EP>;
    if (m1 - m0 < 16) {
        s8_drive<vnni, RAW>(a, m0, m1, p0, p1);
        return;
    }
    amx_configure();
    const std::size_t m32 = m0 + (m1 - m0) / 32 * 32, m16 = m0 + (m1 - m0) / 16 * 16;
    const std::size_t p2 = p0 + (p1 - p0) / 2 * 2;
    if (p2 > p0) {
        if (m32 > m0) s8_amx_blocks<2, 2, RAW, EP>(a, m0, m32, p0, p2);
        if (m16 > m32) s8_amx_blocks<1, 2, RAW, EP>(a, m32, m16, p0, p2);
    }
    if (p2 < p1) {
        if (m32 > m0) s8_amx_blocks<2, 1, RAW, EP>(a, m0, m32, p2, p1);
        if (m16 > m32) s8_amx_blocks<1, 1, RAW, EP>(a, m32, m16, p2, p1);
    }
    amx_release();
    if (m16 < m1) s8_drive<vnni, RAW>(a, m16, m1, p0, p1);
}

#endif  // BERTLET_S8_X86

#if defined(BERTLET_S8_NEON)
// ---- aarch64 DotProd (neon_dot) ----
// Micro-kernel: 4 rows x one 16-column panel = 16 int32x4 accumulators. Per 4 k-groups (16 k): each row's 16
// activation bytes are one load, and `sdot acc, w, x.4b[u]` (by element) multiplies group u of the row with the 4
// columns x 4 k of one weight vector, so the S8P16K4 panel (64 bytes per k-group = 4 vectors) is read as it is.
// s8 x s8 products are exact, so the sums equal the scalar reference; the epilogue repeats its float operations
// (fma, mul, add, the same erf / exp; IEEE division) lane by lane, with a register barrier wherever a multiply feeds
// an add (GCC's arm_neon.h writes vmulq / vaddq as plain vector arithmetic, which -ffp-contract=fast may fuse):
// outputs are bit-identical to every other path.

BERTLET_S8_DOTPROD inline float32x4_t s8n_keep(float32x4_t v) {
    __asm__("" : "+w"(v));
    return v;
}
BERTLET_S8_DOTPROD inline float32x4_t s8n_min(float32x4_t a, float32x4_t b) {  // s8_min: a < b ? a : b
    return vbslq_f32(vcltq_f32(a, b), a, b);
}
BERTLET_S8_DOTPROD inline float32x4_t s8n_max(float32x4_t a, float32x4_t b) {  // s8_max: a > b ? a : b
    return vbslq_f32(vcgtq_f32(a, b), a, b);
}

// s8_gelu_scalar; the table rows are read lane by lane (k is in 0..15 for every input, NaN included).
BERTLET_S8_DOTPROD inline float32x4_t s8n_gelu(float32x4_t v) {
    const float32x4_t ac = s8n_min(vabsq_f32(v), vdupq_n_f32(s8_gelu_amax));
    const float32x4_t w = vfmaq_f32(vdupq_n_f32(s8_gelu_magic), ac, vdupq_n_f32(s8_gelu_s));
    const uint32x4_t k = vandq_u32(vreinterpretq_u32_f32(w), vdupq_n_u32(15));
    const std::uint32_t k0 = vgetq_lane_u32(k, 0), k1 = vgetq_lane_u32(k, 1), k2 = vgetq_lane_u32(k, 2),
                        k3 = vgetq_lane_u32(k, 3);
    const auto row = [&](int j) BERTLET_S8_DOTPROD {
        const float* c = s8_gelu_q[j];
        const float lanes[4] = {c[k0], c[k1], c[k2], c[k3]};
        return vld1q_f32(lanes);
    };
    float32x4_t p = row(s8_gelu_degree);
    for (int j = s8_gelu_degree - 1; j >= 0; --j) p = vfmaq_f32(row(j), p, ac);
    return vsubq_f32(s8n_max(vdupq_n_f32(0.0f), v), p);
}

// exp: neon.hpp's exp_ps is s8_exp_scalar operation for operation (vfms(x, n, c) is fma(-n, c, x) exactly); its
// vmin / vmax clamps differ from s8_min / s8_max only for a NaN input, which gives NaN through gelu_tanh anyway.
BERTLET_S8_DOTPROD inline float32x4_t s8n_act(float32x4_t v, activation a) {  // s8_act_scalar
    if (a == activation::gelu_erf) return s8n_gelu(v);
    if (a == activation::gelu_tanh) {
        const float32x4_t v3 = vmulq_f32(vmulq_f32(v, v), v);
        const float32x4_t u =
            vmulq_f32(vdupq_n_f32(0.79788456080286536f), vfmaq_f32(v, vdupq_n_f32(0.044715f), v3));
        const float32x4_t e = s8n_keep(neon::exp_ps(vmulq_f32(vdupq_n_f32(-2.0f), u)));
        return vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), e));
    }
    return v;
}

/// s8_quantize_rows_scalar (s8 form) with NEON: the same max, scale, products, rounding (vrndnq = nearbyint in the
/// default mode) and clamp. NaN inputs are skipped by the max as std::max skips them (vmaxnm).
template <bool SMOOTH>
BERTLET_S8_DOTPROD void s8_quantize_rows_neon(const float* X, std::size_t ldx, const float* cs, std::size_t K,
                                               std::uint8_t* q, std::size_t ldq, float* sx, std::size_t m0,
                                               std::size_t m1) {
    const std::size_t K4 = K & ~std::size_t{3};
    for (std::size_t m = m0; m < m1; ++m) {
        const float* x = X + m * ldx;
        std::uint8_t* qr = q + m * ldq;
        float32x4_t mx = vdupq_n_f32(0.0f);
        std::size_t i = 0;
        for (; i < K4; i += 4) {
            const float32x4_t v = SMOOTH ? vmulq_f32(vld1q_f32(x + i), vld1q_f32(cs + i)) : vld1q_f32(x + i);
            mx = vmaxnmq_f32(mx, vabsq_f32(v));
        }
        float amax = vmaxnmvq_f32(mx);
        for (; i < K; ++i) amax = std::max(amax, std::fabs(SMOOTH ? x[i] * cs[i] : x[i]));
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        const float32x4_t iv = vdupq_n_f32(inv), lo = vdupq_n_f32(-127.f), hi = vdupq_n_f32(127.f);
        for (i = 0; i < K4; i += 4) {
            const float32x4_t v = SMOOTH ? vmulq_f32(vld1q_f32(x + i), vld1q_f32(cs + i)) : vld1q_f32(x + i);
            float32x4_t r = vrndnq_f32(vmulq_f32(v, iv));
            r = s8n_min(hi, s8n_max(r, lo));  // std::min(127, std::max(-127, r))
            const int16x4_t h = vmovn_s32(vcvtq_s32_f32(r));
            const int8x8_t b = vmovn_s16(vcombine_s16(h, h));
            std::int32_t w = vget_lane_s32(vreinterpret_s32_s8(b), 0);
            std::memcpy(qr + i, &w, 4);
        }
        for (; i < K; ++i) {
            float v = std::nearbyint((SMOOTH ? x[i] * cs[i] : x[i]) * inv);
            v = std::min(127.f, std::max(-127.f, v));
            qr[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(v));
        }
        for (i = K; i < ldq; ++i) qr[i] = 0;
    }
}

template <int U, int R>
BERTLET_S8_DOTPROD __attribute__((always_inline)) inline void s8n_group(int32x4_t (&acc)[R][4], const std::int8_t* w,
                                                                      const int8x16_t (&xv)[R]) {
    const int8x16_t w0 = vld1q_s8(w), w1 = vld1q_s8(w + 16), w2 = vld1q_s8(w + 32), w3 = vld1q_s8(w + 48);
    for (int i = 0; i < R; ++i) {
        acc[i][0] = vdotq_laneq_s32(acc[i][0], w0, xv[i], U);
        acc[i][1] = vdotq_laneq_s32(acc[i][1], w1, xv[i], U);
        acc[i][2] = vdotq_laneq_s32(acc[i][2], w2, xv[i], U);
        acc[i][3] = vdotq_laneq_s32(acc[i][3], w3, xv[i], U);
    }
}

template <int R, int NR, bool RAW>
BERTLET_S8_DOTPROD void s8_kernel_neon_dot(const s8_job& a, std::size_t m0, std::size_t p0) {
    static_assert(NR == 1, "neon_dot works one 16-column panel at a time");
    const std::size_t kp = a.w->k_padded;
    const std::int8_t* wp = a.w->data + p0 * 16 * kp;
    const std::int8_t* x[R];
    int32x4_t acc[R][4];
    for (int i = 0; i < R; ++i) {
        x[i] = reinterpret_cast<const std::int8_t*>(a.xq + (m0 + i) * a.ldq);
        for (int c = 0; c < 4; ++c) acc[i][c] = vdupq_n_s32(0);
    }
    std::size_t g = 0;
    for (; g + 4 <= a.groups; g += 4) {  // 16 k: one 16-byte load per row, four weight groups
        int8x16_t xv[R];
        for (int i = 0; i < R; ++i) xv[i] = vld1q_s8(x[i] + 4 * g);
        const std::int8_t* w = wp + 64 * g;
        s8n_group<0, R>(acc, w, xv);
        s8n_group<1, R>(acc, w + 64, xv);
        s8n_group<2, R>(acc, w + 128, xv);
        s8n_group<3, R>(acc, w + 192, xv);
    }
    for (; g < a.groups; ++g) {  // 1..3 tail groups: 4 bytes per row in lane 0
        int8x16_t xv[R];
        for (int i = 0; i < R; ++i) xv[i] = vreinterpretq_s8_s32(vdupq_n_s32(s8_load32(x[i] + 4 * g)));
        s8n_group<0, R>(acc, wp + 64 * g, xv);
    }
    const std::size_t nbase = p0 * 16;
    for (int c = 0; c < 4; ++c) {
        const std::size_t n0 = nbase + 4 * static_cast<std::size_t>(c);
        if (n0 >= a.N) break;
        const bool full = n0 + 4 <= a.N;
        const float32x4_t ws = vld1q_f32(a.w->scales + n0);  // scales are padded to a multiple of 16
        const float32x4_t bv = a.bias && full ? vld1q_f32(a.bias + n0) : vdupq_n_f32(0.0f);
        for (int i = 0; i < R; ++i) {
            const std::size_t m = m0 + static_cast<std::size_t>(i);
            if (RAW || !full) {  // the integer sums, or a partial column block through the scalar epilogue
                alignas(16) std::int32_t v[4];
                vst1q_s32(v, acc[i][c]);
                for (std::size_t j = 0; j < 4 && n0 + j < a.N; ++j) {
                    const std::size_t n = n0 + j;
                    if (RAW)
                        a.C[m * a.ldc + n] = v[j];
                    else
                        *s8_y(a, m, n) =
                            s8_finish_scalar(v[j], a.sx[m], a.w->scales[n], a.bias ? a.bias + n : nullptr,
                                             a.res ? a.res + m * a.ldr + n : nullptr, a.act);
                }
                continue;
            }
            const float32x4_t s = vmulq_f32(vdupq_n_f32(a.sx[m]), ws);
            const float32x4_t yf = vcvtq_f32_s32(acc[i][c]);
            float32x4_t y = a.bias ? vfmaq_f32(bv, yf, s) : s8n_keep(vmulq_f32(yf, s));
            if (a.res) y = vaddq_f32(y, vld1q_f32(a.res + m * a.ldr + n0));
            if (a.act != activation::none) y = s8n_act(y, a.act);
            vst1q_f32(s8_y(a, m, n0), y);
        }
    }
}

struct s8_fam_neon_dot {
    static constexpr int MR = 4, NR = 1;
    template <int R, int P, bool RAW>
    static void kern(const s8_job& a, std::size_t m, std::size_t p) { s8_kernel_neon_dot<R, P, RAW>(a, m, p); }
};
#endif  // BERTLET_S8_NEON

/// Panels per micro-kernel of a path (parallel splits keep these blocks whole).
inline std::size_t s8_path_panel_block(s8_path p) noexcept {
    switch (p) {
#if defined(BERTLET_S8_X86)
        case s8_path::avx2: return s8_fam_avx2::NR;
        case s8_path::avx_vnni: return s8_fam_avx_vnni::NR;
        case s8_path::avx512: return s8_fam_avx512::NR;
        case s8_path::avx512_vnni: return s8_fam_avx512_vnni::NR;
        case s8_path::avx512_amx: return 2;  // s8_drive_amx's blocks of two panels
#endif
#if defined(BERTLET_S8_NEON)
        case s8_path::neon_dot: return s8_fam_neon_dot::NR;
#endif
        default: return 1;
    }
}

/// Quantizes rows [m0, m1) of X into q / sx (the layout of s8_activations).
inline void s8_quantize_rows(s8_path p, const float* X, std::size_t ldx, const float* cs, std::size_t K,
                             std::uint8_t* q, std::size_t ldq, float* sx, std::size_t m0, std::size_t m1) {
    const bool u8 = s8_path_uses_u8(p);
    switch (p) {
#if defined(BERTLET_S8_X86)
        case s8_path::avx2:
        case s8_path::avx_vnni:
            if (cs) s8_quantize_rows_avx2<true>(X, ldx, cs, K, q, ldq, sx, m0, m1, u8);
            else s8_quantize_rows_avx2<false>(X, ldx, cs, K, q, ldq, sx, m0, m1, u8);
            return;
        case s8_path::avx512:
        case s8_path::avx512_vnni:
        case s8_path::avx512_amx:
            if (cs) s8_quantize_rows_avx512<true>(X, ldx, cs, K, q, ldq, sx, m0, m1, u8);
            else s8_quantize_rows_avx512<false>(X, ldx, cs, K, q, ldq, sx, m0, m1, u8);
            return;
#endif
#if defined(BERTLET_S8_NEON)
        case s8_path::neon_dot:
            if (cs) s8_quantize_rows_neon<true>(X, ldx, cs, K, q, ldq, sx, m0, m1);
            else s8_quantize_rows_neon<false>(X, ldx, cs, K, q, ldq, sx, m0, m1);
            return;
#endif
        default: s8_quantize_rows_scalar(X, ldx, cs, K, q, ldq, sx, m0, m1, u8); return;
    }
}

/// Quantizes X (M rows) into q (row stride ldq) and sx (benchmarks; no act_scale).
inline void s8_quantize_x(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx,
                          std::uint8_t* q, std::size_t ldq, float* sx) {
    s8_quantize_rows(p, X, ldx, nullptr, K, q, ldq, sx, 0, M);
}

template <bool RAW>
inline void s8_run(s8_path p, const s8_job& a, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    if (m1 <= m0 || p1 <= p0) return;
    switch (p) {
#if defined(BERTLET_S8_X86)
        case s8_path::avx2: s8_drive<s8_fam_avx2, RAW>(a, m0, m1, p0, p1); return;
        case s8_path::avx_vnni: s8_drive<s8_fam_avx_vnni, RAW>(a, m0, m1, p0, p1); return;
        case s8_path::avx512: s8_drive<s8_fam_avx512, RAW>(a, m0, m1, p0, p1); return;
        case s8_path::avx512_vnni: s8_run_avx512_vnni<RAW>(a, m0, m1, p0, p1); return;
        case s8_path::avx512_amx:
            if (a.groups % 16 != 0) {  // K not a multiple of 64 (no BERT size): the tile loop needs whole k-steps
                s8_run_avx512_vnni<RAW>(a, m0, m1, p0, p1);
                return;
            }
            if constexpr (!RAW) {
                switch (s8_epilogue_kind(a)) {
                    case s8_ep_bias: s8_drive_amx<false, s8_ep_bias>(a, m0, m1, p0, p1); return;
                    case s8_ep_bias_res: s8_drive_amx<false, s8_ep_bias_res>(a, m0, m1, p0, p1); return;
                    case s8_ep_bias_gelu: s8_drive_amx<false, s8_ep_bias_gelu>(a, m0, m1, p0, p1); return;
                    default: break;
                }
            }
            s8_drive_amx<RAW, s8_ep_generic>(a, m0, m1, p0, p1);
            return;
#endif
#if defined(BERTLET_S8_NEON)
        case s8_path::neon_dot: s8_drive<s8_fam_neon_dot, RAW>(a, m0, m1, p0, p1); return;
#endif
        default: s8_kernel_scalar<RAW>(a, m0, m1, p0, p1); return;
    }
}

/// s8_gemm::next -> the job's prefetch target: the first panel block of those weights (the whole of them if smaller).
inline void s8_set_next(s8_path p, s8_job& j, const packed_s8* next) noexcept {
    if (!next || !next->data) return;
    j.next = next->data;
    j.next_bytes = std::min(s8_path_panel_block(p), next->panels()) * 16 * next->k_padded;
}

inline void s8_require_path(s8_path p) {
    if (!s8_path_supported(p))
        throw input_error(errc::bad_argument, std::string("gemm_s8: path ") + s8_path_name(p) +
                                                  " is not supported by this CPU");
}

inline s8_job s8_make_job(s8_path p, const s8_activations& A, const packed_s8& W, const s8_epilogue& ep, float* Y,
                          std::size_t ldy, std::int32_t* C, std::size_t ldc, std::size_t hd = 0,
                          std::size_t hstride = 0) {
    const bool raw = C != nullptr;
    if (hd && (raw || hd % 16 != 0 || W.n % hd != 0 || hstride < A.M * hd || ep.residual))
        throw input_error(errc::bad_argument, "gemm_s8: head-major output needs hd a multiple of 16 dividing N (" +
                                                  std::to_string(W.n) + "), hd = " + std::to_string(hd) +
                                                  ", head stride >= M * hd and no residual");
    if (A.K != W.k || A.k_padded != W.k_padded || W.k_padded != s8_pad_k(W.k) || A.ldq < A.k_padded ||
        (!raw && ((!hd && ldy < W.n) || (ep.residual && ep.ldr < W.n))) || (raw && ldc < W.n) ||
        (A.M > 0 && (!A.q || !A.sx)))
        throw input_error(errc::bad_argument, "gemm_s8: shape mismatch (K=" + std::to_string(A.K) + ", W is " +
                                                  std::to_string(W.n) + "x" + std::to_string(W.k) + ")");
    if (A.u8 != s8_path_uses_u8(p))
        throw input_error(errc::bad_argument, std::string("gemm_s8: activations quantized for the other form than "
                                                          "path ") + s8_path_name(p) + " needs");
    s8_require_path(p);
    s8_job j{A.q, A.ldq, A.sx, &W, W.k_padded / 4, W.n, ep.bias, ep.residual, ep.ldr, ep.act,
             Y, ldy, C, ldc, A.M};
    j.hd = hd;
    j.hstride = hstride;
    return j;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------------------------
// Quantization of the activations.

/// Where the quantized form of an M x K input lives inside `scratch` (gemm_s8_scratch_bytes(M, K) bytes, any
/// alignment), for the form path p wants; fill it with quantize_activations_s8_rows (e.g. row chunks in parallel).
inline s8_activations s8_activations_layout(s8_path p, std::size_t M, std::size_t K, std::uint8_t* scratch) {
    if (!scratch && M > 0) throw input_error(errc::bad_argument, "gemm_s8: null scratch");
    s8_activations A;
    A.M = M;
    A.K = K;
    A.k_padded = A.ldq = s8_pad_k(K);
    A.u8 = s8_path_uses_u8(p);
    if (!scratch) return A;
    std::uint8_t* base = detail::s8_align64(scratch);
    A.sx = reinterpret_cast<float*>(base);
    A.q = base + (M * sizeof(float) + 63) / 64 * 64;
    return A;
}

/// Quantizes rows [m0, m1) of X (row stride ldx) into A (from s8_activations_layout): xs = X * act_scale (per column;
/// act_scale may be null), per-row symmetric int8. Rows are independent: any split gives the same bytes.
inline void quantize_activations_s8_rows(s8_path p, const float* X, std::size_t ldx, const float* act_scale,
                                         const s8_activations& A, std::size_t m0, std::size_t m1) {
    if (m1 > A.M || m0 > m1 || ldx < A.K || A.u8 != s8_path_uses_u8(p))
        throw input_error(errc::bad_argument, "quantize_activations_s8: bad row range, stride or form");
    detail::s8_require_path(p);
    detail::s8_quantize_rows(p, X, ldx, act_scale, A.K, A.q, A.ldq, A.sx, m0, m1);
}

/// Quantizes X [M, K] (row stride ldx) once, for any number of gemm_s8_q calls on path p (or any path with the same
/// s8_path_uses_u8()). scratch: gemm_s8_scratch_bytes(M, K) bytes, any alignment; the result points into it.
inline s8_activations quantize_activations_s8(s8_path p, const float* X, std::size_t M, std::size_t K,
                                              std::size_t ldx, const float* act_scale, std::uint8_t* scratch) {
    const s8_activations A = s8_activations_layout(p, M, K, scratch);
    quantize_activations_s8_rows(p, X, ldx, act_scale, A, 0, M);
    return A;
}

/// quantize_activations_s8 split into row chunks over a pool (null pool or one thread: inline). Same bytes.
inline s8_activations quantize_activations_s8_parallel(detail::thread_pool* pool, s8_path p, const float* X,
                                                       std::size_t M, std::size_t K, std::size_t ldx,
                                                       const float* act_scale, std::uint8_t* scratch) {
    const s8_activations A = s8_activations_layout(p, M, K, scratch);
    const std::size_t threads = pool ? pool->size() : 1;
    // ~32 K floats per chunk at least (a few microseconds): below that a pool round trip costs more than it saves
    const std::size_t min_rows = std::max<std::size_t>(1, (32768 + K - 1) / std::max<std::size_t>(K, 1));
    const std::size_t chunks = std::min(threads, M / std::max<std::size_t>(min_rows, 1));
    if (chunks <= 1) {
        quantize_activations_s8_rows(p, X, ldx, act_scale, A, 0, M);
        return A;
    }
    if (ldx < K) throw input_error(errc::bad_argument, "quantize_activations_s8: bad stride");
    detail::s8_require_path(p);
    const std::size_t per = (M + chunks - 1) / chunks;
    pool->run(chunks, [&](std::size_t t, std::size_t) {
        const std::size_t m0 = std::min(M, t * per), m1 = std::min(M, m0 + per);
        detail::s8_quantize_rows(p, X, ldx, act_scale, K, A.q, A.ldq, A.sx, m0, m1);
    });
    return A;
}

// ---------------------------------------------------------------------------------------------------------------
// GEMMs on quantized activations.

/// Y[m, n] = epilogue(sum_k qx[m, k] qw[n, k]) for rows [m0, m1) and columns of the 16-wide panels [p0, p1)
/// (p1 <= W.panels(); columns >= W.n are never written). A from quantize_activations_s8* for a path with the same
/// s8_path_uses_u8() as p. Throws input_error on a shape or form mismatch or an unsupported path.
inline void gemm_s8_q(s8_path p, const s8_activations& A, const packed_s8& W, const s8_epilogue& ep, float* Y,
                      std::size_t ldy, std::size_t m0, std::size_t m1, std::size_t p0, std::size_t p1) {
    const detail::s8_job job = detail::s8_make_job(p, A, W, ep, Y, ldy, nullptr, 0);
    if (m1 > A.M || m0 > m1 || p1 > W.panels() || p0 > p1)
        throw input_error(errc::bad_argument, "gemm_s8_q: row or panel range out of bounds");
    detail::s8_run<false>(p, job, m0, m1, p0, p1);
}

/// The whole output: rows [0, A.M), every panel of W.
inline void gemm_s8_q(s8_path p, const s8_activations& A, const packed_s8& W, const s8_epilogue& ep, float* Y,
                      std::size_t ldy) {
    gemm_s8_q(p, A, W, ep, Y, ldy, 0, A.M, 0, W.panels());
}

/// Several GEMMs sharing one quantized input (e.g. Q, K, V), split over a pool in one job: tasks are (GEMM, block
/// of up to 256 rows, block of the path's micro-kernel panels). Every output element is computed by one micro-kernel
/// call over the full K with the same epilogue whatever the split, so the results are bit-identical for any thread
/// count (and equal to gemm_s8_q). Null pool, one thread or a small problem: runs inline.
inline void gemm_s8_parallel(detail::thread_pool* pool, s8_path p, const s8_activations& A, const s8_gemm* gemms,
                             std::size_t count) {
    constexpr std::size_t max_gemms = 8;
    if (count > max_gemms) {  // keeps the task table on the stack
        for (std::size_t i = 0; i < count; i += max_gemms)
            gemm_s8_parallel(pool, p, A, gemms + i, std::min(max_gemms, count - i));
        return;
    }
    detail::s8_job jobs[max_gemms];
    double macs = 0;
    for (std::size_t i = 0; i < count; ++i) {
        if (!gemms[i].W) throw input_error(errc::bad_argument, "gemm_s8_parallel: null weights");
        jobs[i] = detail::s8_make_job(p, A, *gemms[i].W, gemms[i].ep, gemms[i].Y, gemms[i].ldy, nullptr, 0,
                                      gemms[i].hd, gemms[i].hstride);
        detail::s8_set_next(p, jobs[i], gemms[i].next);
        macs += double(A.M) * double(gemms[i].W->n_padded()) * double(A.k_padded);
    }
    const std::size_t threads = pool ? pool->size() : 1;
    if (threads <= 1 || A.M == 0 || macs < 3e6) {  // < ~5 us of work: a pool round trip costs more than it saves
        for (std::size_t i = 0; i < count; ++i) detail::s8_run<false>(p, jobs[i], 0, A.M, 0, gemms[i].W->panels());
        return;
    }
    const std::size_t row_block = 256;
    const std::size_t nrb = (A.M + row_block - 1) / row_block;
    const std::size_t pb = detail::s8_path_panel_block(p);
    std::size_t first[max_gemms + 1];  // task index ranges per GEMM
    std::size_t npb[max_gemms];
    first[0] = 0;
    for (std::size_t i = 0; i < count; ++i) {
        npb[i] = (gemms[i].W->panels() + pb - 1) / pb;
        first[i + 1] = first[i] + nrb * npb[i];
    }
    pool->run(first[count], [&](std::size_t t, std::size_t) {
        std::size_t i = 0;
        while (t >= first[i + 1]) ++i;
        const std::size_t u = t - first[i];
        const std::size_t rb = u / npb[i], b = u % npb[i];
        const std::size_t m0 = rb * row_block, m1 = std::min(A.M, m0 + row_block);
        const std::size_t p0 = b * pb, p1 = std::min(gemms[i].W->panels(), p0 + pb);
        detail::s8_run<false>(p, jobs[i], m0, m1, p0, p1);
    });
}

inline void gemm_s8_parallel(detail::thread_pool* pool, s8_path p, const s8_activations& A, const packed_s8& W,
                             const s8_epilogue& ep, float* Y, std::size_t ldy) {
    const s8_gemm g{&W, ep, Y, ldy};
    gemm_s8_parallel(pool, p, A, &g, 1);
}

/// Quantizes X and runs several GEMMs on it in ONE pool job, split by blocks of rows: each task quantizes its rows
/// (into the returned activations, which stay usable afterwards) and then computes those rows of every GEMM. No
/// serial quantization pass and one pool round trip instead of two; each thread streams all of W (from L2) instead
/// of half of it. Same bits as quantize_activations_s8 + gemm_s8_q for any thread count. scratch:
/// gemm_s8_scratch_bytes(M, K) bytes. `pre(m0, m1)` runs on each block of rows before it is quantized (in the same
/// task), e.g. the LayerNorm that produces those rows of X: a row-local producer joins the pool job instead of
/// needing one of its own (the overload without it passes a no-op).
template <class Pre>
inline s8_activations quantize_gemm_s8_parallel(detail::thread_pool* pool, s8_path p, const float* X, std::size_t M,
                                                std::size_t K, std::size_t ldx, const float* act_scale,
                                                std::uint8_t* scratch, const s8_gemm* gemms, std::size_t count,
                                                Pre&& pre) {
    const s8_activations A = s8_activations_layout(p, M, K, scratch);
    if (ldx < K) throw input_error(errc::bad_argument, "quantize_gemm_s8_parallel: bad stride");
    detail::s8_require_path(p);
    constexpr std::size_t max_gemms = 8;
    if (count > max_gemms) throw input_error(errc::bad_argument, "quantize_gemm_s8_parallel: at most 8 GEMMs");
    detail::s8_job jobs[max_gemms];
    std::size_t panels[max_gemms];
    double macs = 0;
    for (std::size_t i = 0; i < count; ++i) {
        if (!gemms[i].W) throw input_error(errc::bad_argument, "quantize_gemm_s8_parallel: null weights");
        jobs[i] = detail::s8_make_job(p, A, *gemms[i].W, gemms[i].ep, gemms[i].Y, gemms[i].ldy, nullptr, 0,
                                      gemms[i].hd, gemms[i].hstride);
        detail::s8_set_next(p, jobs[i], gemms[i].next);
        panels[i] = gemms[i].W->panels();
        macs += double(M) * double(gemms[i].W->n_padded()) * double(A.k_padded);
    }
    const std::size_t threads = pool ? pool->size() : 1;
    // row blocks: multiples of 8 rows (the AVX-512 VNNI micro-kernel), about 4 per thread, 8 .. 64 rows
    std::size_t rb = (M + 4 * threads - 1) / (4 * threads);
    rb = std::min<std::size_t>(64, std::max<std::size_t>(8, (rb + 7) / 8 * 8));
    // the AMX path's best blocks are 32 rows (two row tiles share every weight tile): multiples of 32 when there are
    // at least two such blocks per thread
    if (p == s8_path::avx512_amx && M >= 64 * threads) rb = std::max<std::size_t>(32, (rb + 31) / 32 * 32);
    const std::size_t nblocks = (M + rb - 1) / rb;
    auto task = [&](std::size_t t, std::size_t) {
        const std::size_t m0 = t * rb, m1 = std::min(M, m0 + rb);
        pre(m0, m1);
        detail::s8_quantize_rows(p, X, ldx, act_scale, K, A.q, A.ldq, A.sx, m0, m1);
        for (std::size_t i = 0; i < count; ++i) detail::s8_run<false>(p, jobs[i], m0, m1, 0, panels[i]);
    };
    if (threads <= 1 || nblocks <= 1 || macs < 3e6) {
        pre(std::size_t{0}, M);
        detail::s8_quantize_rows(p, X, ldx, act_scale, K, A.q, A.ldq, A.sx, 0, M);
        for (std::size_t i = 0; i < count; ++i) detail::s8_run<false>(p, jobs[i], 0, M, 0, panels[i]);
        return A;
    }
    pool->run(nblocks, task);
    return A;
}

inline s8_activations quantize_gemm_s8_parallel(detail::thread_pool* pool, s8_path p, const float* X, std::size_t M,
                                                std::size_t K, std::size_t ldx, const float* act_scale,
                                                std::uint8_t* scratch, const s8_gemm* gemms, std::size_t count) {
    return quantize_gemm_s8_parallel(pool, p, X, M, K, ldx, act_scale, scratch, gemms, count,
                                     [](std::size_t, std::size_t) {});
}

inline s8_activations quantize_gemm_s8_parallel(detail::thread_pool* pool, s8_path p, const float* X, std::size_t M,
                                                std::size_t K, std::size_t ldx, const float* act_scale,
                                                std::uint8_t* scratch, const packed_s8& W, const s8_epilogue& ep,
                                                float* Y, std::size_t ldy) {
    const s8_gemm g{&W, ep, Y, ldy};
    return quantize_gemm_s8_parallel(pool, p, X, M, K, ldx, act_scale, scratch, &g, 1);
}

// ---------------------------------------------------------------------------------------------------------------
// One-shot forms (quantize + GEMM), kept from the first version of the API.

/// Y = act(dequant(quant(X * act_scale) * W^T) + bias + residual); scratch: gemm_s8_scratch_bytes(M, K) bytes.
inline void gemm_s8(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx, const float* act_scale,
                    const packed_s8& W, const s8_epilogue& ep, float* Y, std::size_t ldy, std::uint8_t* scratch) {
    if (K != W.k || ldx < K || ldy < W.n || !scratch)
        throw input_error(errc::bad_argument, "gemm_s8: shape mismatch (K=" + std::to_string(K) + ", W is " +
                                                  std::to_string(W.n) + "x" + std::to_string(W.k) + ")");
    detail::s8_require_path(p);
    if (M == 0 || W.n == 0) return;
    const s8_activations A = quantize_activations_s8(p, X, M, K, ldx, act_scale, scratch);
    gemm_s8_q(p, A, W, ep, Y, ldy);
}

/// Y[M, N] = dequant(quant(X[M, K]) * W^T) + bias  (bias may be null). ldx / ldy: row strides in floats.
/// scratch: gemm_s8_scratch_bytes(M, K) bytes, any alignment. Throws input_error on a shape mismatch or an
/// unsupported path.
inline void gemm_s8(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx, const packed_s8& W,
                    const float* bias, float* Y, std::size_t ldy, std::uint8_t* scratch) {
    s8_epilogue ep;
    ep.bias = bias;
    gemm_s8(p, X, M, K, ldx, nullptr, W, ep, Y, ldy, scratch);
}

inline void gemm_s8(isa a, const float* X, std::size_t M, std::size_t K, std::size_t ldx, const packed_s8& W,
                    const float* bias, float* Y, std::size_t ldy, std::uint8_t* scratch) {
    gemm_s8(s8_path_for(a), X, M, K, ldx, W, bias, Y, ldy, scratch);
}

/// Debug / test hook: C[m, n] = sum_k qx[m, k] * qw[n, k] exactly (after the VNNI +128 correction), and the
/// per-row activation scales in sx (M floats; may be null).
inline void gemm_s8_s32(s8_path p, const float* X, std::size_t M, std::size_t K, std::size_t ldx,
                        const packed_s8& W, std::int32_t* C, std::size_t ldc, float* sx, std::uint8_t* scratch,
                        const float* act_scale = nullptr) {
    if (K != W.k || ldx < K || ldc < W.n || !scratch)
        throw input_error(errc::bad_argument, "gemm_s8_s32: shape mismatch");
    detail::s8_require_path(p);
    if (M == 0) return;
    const s8_activations A = quantize_activations_s8(p, X, M, K, ldx, act_scale, scratch);
    if (sx) std::memcpy(sx, A.sx, M * sizeof(float));
    if (W.n == 0) return;
    const detail::s8_job job = detail::s8_make_job(p, A, W, s8_epilogue{}, nullptr, 0, C, ldc);
    detail::s8_run<true>(p, job, 0, M, 0, W.panels());
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

#if defined(BERTLET_S8_X86)
#undef BERTLET_S8_AVX2
#undef BERTLET_S8_AVX512
#undef BERTLET_S8_AMX
#undef BERTLET_TARGET
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
