// bertlet — packed fp32 GEMM: weight layout, epilogues and the ISA-independent blocking driver.
//
// Packed weight layout (PACKED_N16, blob layout 1; docs/FORMAT.md)
// ----------------------------------------------------------------
// An nn.Linear weight W[N, K] (N outputs, K inputs, PyTorch order) is stored as ceil(N/16) *panels*. Panel p holds
// output features 16p .. 16p+15; inside a panel, for each k = 0..K-1 the 16 values W[16p + j, k] (j = 0..15) are
// consecutive:
//
//     packed[(p * K + k) * 16 + j] = W[16p + j, k]      (0 when 16p + j >= N: the tail panel is zero-padded)
//
// so a micro-kernel reads one row of 16 output features per k with unit stride: one zmm on AVX-512, two ymm on
// AVX2, four q-registers on NEON, one 16-float loop in the scalar path. Every path uses the same bytes, which is
// why the converter can pre-pack once and the loader can keep the mmap.
//
// Blocking (C[M, N] = A[M, K] * W^T, A row-major with stride lda)
// ---------------------------------------------------------------
//   for each block of MC rows                        (A block stays in L2)
//     for each K block of at most KC                 (K split into equal blocks; results never depend on threads)
//       pack A[rows, kblock] into micro-panels of MR rows: for each k, MR consecutive floats (tail rows zeroed)
//       for each group of NP panels (16*NP columns)  (the B micro-panel kc x 16*NP stays in L1)
//         for each micro-panel of MR rows            -> ISA micro-kernel: MR x 16*NP accumulators in registers
// The micro-kernel adds the previous K blocks' partial sums from C, and on the last K block applies the fused
// epilogue (alpha, bias, residual, GELU) before storing. Each output element is computed by exactly one call
// sequence whatever the thread split, so results are bit-identical for any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

namespace bertlet::detail {

/// Allocator of cache-line (64-byte) aligned storage. Large std::vector buffers from malloc start 16 bytes past a
/// page boundary, so every 64-byte row of an activation matrix would straddle two cache lines: AMX tile loads (16
/// rows of 64 bytes) then touch twice the lines and ran at about half speed (int8 and bf16x6 GEMMs), and full-width
/// AVX-512 loads split. The encoder's workspaces and owned weights use it.
template <class T>
struct aligned_allocator {
    using value_type = T;
    static constexpr std::size_t alignment = 64;
    aligned_allocator() noexcept = default;
    template <class U>
    aligned_allocator(const aligned_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
        return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(alignment)));
    }
    void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t(alignment)); }
    template <class U>
    bool operator==(const aligned_allocator<U>&) const noexcept {
        return true;
    }
    template <class U>
    bool operator!=(const aligned_allocator<U>&) const noexcept {
        return false;
    }
};
template <class T>
using aligned_vector = std::vector<T, aligned_allocator<T>>;

/// LayerNorm's per-row statistics from the centred sums of the AVX2 / AVX-512 kernels (rows shifted by a first mean
/// m0: cs = sum(x - m0), qs = sum((x - m0)^2)), in double: mean = m0 + cs / n, var = max(0, (qs - cs^2 / n) / n)
/// (0 for a NaN var too); hi = float(mean), inv = float(1 / sqrt(var + eps)) and lo = float((mean - hi) * inv), the
/// part of the mean the float drops, pre-scaled. (The AVX-512 kernel does the same operations for 4 rows in a ymm.)
struct layernorm_stats {
    float hi, inv, lo;
};
inline layernorm_stats layernorm_row_stats(float cs_sum, float qs_sum, float m0, std::ptrdiff_t n, float eps) noexcept {
    const double dn = static_cast<double>(n), cs = static_cast<double>(cs_sum);
    const double var = std::max(0.0, (static_cast<double>(qs_sum) - cs * cs / dn) / dn);
    const double m = static_cast<double>(m0) + cs / dn;
    const float hi = static_cast<float>(m);
    const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
    return {hi, inv, static_cast<float>((m - static_cast<double>(hi)) * static_cast<double>(inv))};
}

inline constexpr std::ptrdiff_t panel_width = 16;

constexpr std::ptrdiff_t panels_of(std::ptrdiff_t n) noexcept { return (n + panel_width - 1) / panel_width; }

/// Floats needed for the packed form of an [n, k] weight.
constexpr std::size_t packed_n16_size(std::size_t n, std::size_t k) noexcept {
    return (n + panel_width - 1) / panel_width * panel_width * k;
}

/// Packs a row-major W[n, k] (stride ldw) into PACKED_N16 panels (out holds packed_n16_size(n, k) floats).
inline void pack_n16(const float* w, std::ptrdiff_t n, std::ptrdiff_t k, std::ptrdiff_t ldw, float* out) {
    const std::ptrdiff_t np = panels_of(n);
    for (std::ptrdiff_t p = 0; p < np; ++p)
        for (std::ptrdiff_t kk = 0; kk < k; ++kk) {
            float* o = out + (p * k + kk) * panel_width;
            for (std::ptrdiff_t j = 0; j < panel_width; ++j) {
                const std::ptrdiff_t r = p * panel_width + j;
                o[j] = r < n ? w[r * ldw + kk] : 0.0f;
            }
        }
}

/// Packs B[k, n] given row-major (stride ldb) as the "transposed weight" of a GEMM: C = A * B. Panel p, row kk holds
/// B[kk, 16p .. 16p+15]. Used for attention's V (B = V_h, [L, D]).
inline void pack_kn16(const float* b, std::ptrdiff_t k, std::ptrdiff_t n, std::ptrdiff_t ldb, float* out) {
    const std::ptrdiff_t np = panels_of(n);
    for (std::ptrdiff_t p = 0; p < np; ++p)
        for (std::ptrdiff_t kk = 0; kk < k; ++kk) {
            float* o = out + (p * k + kk) * panel_width;
            const float* src = b + kk * ldb + p * panel_width;
            const std::ptrdiff_t w = std::min<std::ptrdiff_t>(panel_width, n - p * panel_width);
            std::ptrdiff_t j = 0;
            for (; j < w; ++j) o[j] = src[j];
            for (; j < panel_width; ++j) o[j] = 0.0f;
        }
}

/// Inverse of pack_n16 (tests, tools).
inline void unpack_n16(const float* packed, std::ptrdiff_t n, std::ptrdiff_t k, float* w) {
    for (std::ptrdiff_t r = 0; r < n; ++r)
        for (std::ptrdiff_t kk = 0; kk < k; ++kk)
            w[r * k + kk] = packed[((r / panel_width) * k + kk) * panel_width + r % panel_width];
}

/// IEEE 754 binary16 -> binary32, exact for every finite input and infinities; bit-identical to the hardware
/// conversions (F16C, AVX-512, NEON) for every input, NaNs included.
inline float f16_to_f32(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1Fu;
    std::uint32_t mant = h & 0x3FFu;
    std::uint32_t bits;
    if (exp == 0x1F) {  // inf, or NaN quieted like vcvtph2ps / fcvt do (payload kept)
        bits = sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        exp = 113;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            --exp;
        }
        bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
}

enum class activation { none, gelu_erf, gelu_tanh };

/// What happens to each accumulated element before it is stored: y = act(alpha * acc + bias[col] + res[row, col]).
struct epilogue {
    float alpha = 1.0f;
    const float* bias = nullptr;      // [N] or null
    const float* residual = nullptr;  // [M, N] with row stride ldr, or null
    std::ptrdiff_t ldr = 0;
    activation act = activation::none;
};

/// C[M, N] (stride ldc) = epilogue(A[M, K] (stride lda) * B), B packed in N16 panels of K rows each.
struct gemm_args {
    const float* a = nullptr;
    std::ptrdiff_t lda = 0;
    const float* b = nullptr;
    float* c = nullptr;
    std::ptrdiff_t ldc = 0;
    std::ptrdiff_t m = 0, n = 0, k = 0;
    epilogue ep;
    // Optional: B made of up to 4 separately stored packed weights of seg_panels panels each (panel p lives at
    // bseg[p / seg_panels] + (p % seg_panels) * 16 * k), so Q, K and V run as one GEMM over their concatenated
    // outputs without copying the weights. seg_panels must be a multiple of the micro-kernel's panel count (2).
    const float* bseg[4] = {nullptr, nullptr, nullptr, nullptr};
    std::ptrdiff_t seg_panels = 0;

    /// Start of packed panel p of B.
    const float* panel(std::ptrdiff_t p) const noexcept {
        const std::ptrdiff_t ps = panel_width * k;
        return seg_panels ? bseg[p / seg_panels] + (p % seg_panels) * ps : b + p * ps;
    }
};

/// One micro-kernel call: an MR x (16*NP) tile of C over one K block.
struct tile_args {
    const float* ap;          // packed A micro-panel: for each k, MR floats
    const float* b;           // first B panel at the K block start; the next panel is `pstride` floats further
    std::ptrdiff_t pstride;   // 16 * K
    std::ptrdiff_t kc;        // K block length (>= 1)
    float* c;                 // C at the tile origin
    std::ptrdiff_t ldc;
    int rows;                 // valid rows (<= MR)
    int cols;                 // valid columns (<= 16 * NP)
    bool add_c;               // add what C holds (partial sums of earlier K blocks)
    const epilogue* ep;       // non-null on the last K block
    const float* bias;        // bias at the tile's first column (if ep && ep->bias)
    const float* res;         // residual at the tile origin (if ep && ep->residual)
    // Software prefetch (into L2) of the *next* panel group's B block while this one computes, so streaming the
    // weights from DRAM overlaps with the FMAs: lines pf[0][0..pf_n) and pf[1][0..pf_n) (64-byte lines, 16 floats).
    const float* pf[2];
    std::ptrdiff_t pf_n;
};

/// Packs rows [0, rows) x k [0, kc) of A (stride lda) into an MR-row micro-panel: ap[k * mr + i] (rows..mr zeroed).
template <int MR>
inline void pack_a_panel(const float* src, std::ptrdiff_t lda, std::ptrdiff_t kc, int rows, int mr, float* ap) {
    if (rows == MR && mr == MR) {  // full panel: the row loop unrolls, stores are contiguous
        const float* r[MR];
        for (int i = 0; i < MR; ++i) r[i] = src + i * lda;
        for (std::ptrdiff_t kk = 0; kk < kc; ++kk) {
            float* o = ap + kk * MR;
            for (int i = 0; i < MR; ++i) o[i] = r[i][kk];
        }
        return;
    }
    for (std::ptrdiff_t kk = 0; kk < kc; ++kk) {
        float* o = ap + kk * mr;
        int i = 0;
        for (; i < rows; ++i) o[i] = src[i * lda + kk];
        for (; i < mr; ++i) o[i] = 0.0f;
    }
}

// Blocking parameters shared by every path (see above). Tuned on the project machine (Zen 5, 48 KB L1d, 1 MB L2):
// K = 384 runs as one K block, K = 1536 as four; the A block (<= 384 x 384 floats) stays in L2.
inline constexpr std::ptrdiff_t gemm_mc = 384;
inline constexpr std::ptrdiff_t gemm_kc = 384;
inline constexpr std::ptrdiff_t gemm_max_mr = 16;

/// How a packed GEMM of m rows x np 16-column panels is split into pool tasks (gemm_parallel, gemm_bf16_parallel).
/// Every task packs the A rows it computes, so a split by panels packs all of A once per task, a split by rows once
/// in total (each task streams all of B instead, from the shared L3). Rows are split when every one of T threads
/// gets at least gemm_split_min_rows of them: tasks = T x ceil(m / (T mc)) row ranges of equal length (rounded up
/// to a multiple of 4); otherwise T chunks of panel pairs (one A packing per thread). Measured on Zen 4, 2 threads,
/// MiniLM fp32 (bertlet-latency --threads 2), against (row block) x (2T panel chunks): seq 128 batch 1 14.0 ->
/// 13.6 ms, seq 16 batch 8 13.2 -> 12.9, seq 64 batch 1 6.9 -> 6.8, seq 16 batch 32 53.5 -> 53.0.
/// The per-element arithmetic (K blocking, FMA order) does not depend on the split: results are the same bits.
inline constexpr std::ptrdiff_t gemm_split_min_rows = 48;
struct gemm_split {
    std::ptrdiff_t tasks = 1;
    std::ptrdiff_t rows = 0;    // > 0: rows per task (row split; every task has all panels)
    std::ptrdiff_t panels = 0;  // > 0: panels per task (panel split, even; every task has all rows)

    /// Task t's rows [m0, m1) and panels [p0, p1) (empty ranges possible for the last tasks).
    void range(std::ptrdiff_t t, std::ptrdiff_t m, std::ptrdiff_t np, std::ptrdiff_t& m0, std::ptrdiff_t& m1,
               std::ptrdiff_t& p0, std::ptrdiff_t& p1) const noexcept {
        if (rows > 0) {
            m0 = std::min(m, t * rows), m1 = std::min(m, m0 + rows), p0 = 0, p1 = np;
        } else {
            m0 = 0, m1 = m, p0 = std::min(np, t * panels), p1 = std::min(np, p0 + panels);
        }
    }
};
inline gemm_split plan_gemm_split(std::ptrdiff_t m, std::ptrdiff_t np, std::ptrdiff_t threads,
                                  std::ptrdiff_t mc) noexcept {
    gemm_split s;
    const std::ptrdiff_t T = std::max<std::ptrdiff_t>(1, threads);
    if (m >= gemm_split_min_rows * T) {
        s.tasks = T * ((m + T * mc - 1) / (T * mc));
        s.rows = ((m + s.tasks - 1) / s.tasks + 3) / 4 * 4;
    } else {
        const std::ptrdiff_t groups = (np + 1) / 2;  // panel pairs stay together (the AVX-512 tiles are 2 wide)
        s.tasks = std::max<std::ptrdiff_t>(1, std::min(groups, T));
        s.panels = (groups + s.tasks - 1) / s.tasks * 2;
    }
    return s;
}

/// Floats of per-thread scratch one GEMM call needs (the packed A block).
constexpr std::size_t gemm_scratch_floats() noexcept {
    return static_cast<std::size_t>((gemm_mc + gemm_max_mr) * gemm_kc);
}

/// Floats of scratch a fused attention kernel (kernel_table::attention) needs for one head at length L, head size D:
/// K_h as 16-key panels plus one score tile of up to 16 query rows.
constexpr std::size_t attention_scratch_floats(std::size_t L, std::size_t D) noexcept {
    return (L + 15) / 16 * 16 * D + 16 * ((L + 15) / 16 * 16) + 16;
}

/// The query-row tiling of the fused attention kernels: L query rows in tiles of up to MR, each passed to
/// tile(std::integral_constant<int, R>{}, q0, rows) with R the smallest of MR / 3, 2 MR / 3, MR that holds its rows
/// (the kernel's row-count template argument).
template <int MR, class Tile>
inline void attn_row_tiles(std::ptrdiff_t L, Tile&& tile) {
    static_assert(MR % 3 == 0, "tiles of MR, 2 MR / 3 and MR / 3 rows");
    for (std::ptrdiff_t q0 = 0; q0 < L; q0 += MR) {
        const int rows = static_cast<int>(std::min<std::ptrdiff_t>(MR, L - q0));
        if (rows > 2 * MR / 3) tile(std::integral_constant<int, MR>{}, q0, rows);
        else if (rows > MR / 3) tile(std::integral_constant<int, 2 * MR / 3>{}, q0, rows);
        else tile(std::integral_constant<int, MR / 3>{}, q0, rows);
    }
}

/// K_h of one attention head as 16-key panels for the fused attention kernels: kp[(p * D + d) * 16 + j] =
/// k[(16 p + j) * ldk + d] (keys past L read as 0). Scalar (the AVX2 and NEON kernels use it; AVX-512 has a
/// transposing one); ~1 % of a forward either way.
inline void attn_pack_k16(const float* k, std::ptrdiff_t ldk, std::ptrdiff_t L, std::ptrdiff_t D, float* kp) {
    for (std::ptrdiff_t p = 0; p * 16 < L; ++p) {
        const std::ptrdiff_t nk = std::min<std::ptrdiff_t>(16, L - p * 16);
        float* out = kp + p * D * 16;
        for (std::ptrdiff_t j = 0; j < 16; ++j) {
            if (j < nk) {
                const float* src = k + (p * 16 + j) * ldk;
                for (std::ptrdiff_t d = 0; d < D; ++d) out[d * 16 + j] = src[d];
            } else {
                for (std::ptrdiff_t d = 0; d < D; ++d) out[d * 16 + j] = 0.0f;
            }
        }
    }
}

/// GELU (erf form) as 0.5 v + |v| g(|v|), g(a) ~ 0.5 erf(a / sqrt 2) piecewise quartic over 16 pieces: a clamped to
/// gelu16_amax, k = round(a S) in 0..15, t = a S - k, g = Horner over gelu16_c[j][k] (tools/fit_gelu_exp.py, scheme
/// "avx512"; g(0) = 0, g = 0.5 exactly at the clamp). Used by the AVX-512 fp32 GELU (avx512::gelu_erf_ps); the int8
/// epilogue has its own 4-operation-cheaper form (gemm_s8.hpp s8_gelu_q).
inline constexpr float gelu16_s = 2.7399683f;  // 15.5 / 5.657: gelu16_amax * gelu16_s < 15.5, so k <= 15
inline constexpr float gelu16_amax = 5.6569996f;
alignas(64) inline constexpr float gelu16_c[5][16] = {  // [coefficient of t^j][piece k]
    {0.0f, 0.14243224f, 0.26728517f, 0.36322048f, 0.42783722f, 0.46598732f, 0.48573086f, 0.49468717f, 0.4982484f,
     0.49948958f, 0.49986872f, 0.49997023f, 0.49999407f, 0.49999896f, 0.49999985f, 0.5f},
    {0.14560078f, 0.13621892f, 0.11154938f, 0.07995562f, 0.05016281f, 0.027546331f, 0.0132401325f, 0.005570121f,
     0.002051054f, 0.0006610368f, 0.00018646853f, 4.6037476e-05f, 9.948039e-06f, 1.8813814e-06f, 3.1140257e-07f,
     4.5109225e-08f},
    {5.38123e-06f, -0.009072028f, -0.014858227f, -0.015975004f, -0.013363374f, -0.009173037f, -0.005290902f,
     -0.002596916f, -0.0010928841f, -0.0003962691f, -0.00012420716f, -3.3734083e-05f, -7.952664e-06f, -1.6294829e-06f,
     -2.9048454e-07f, -4.509011e-08f},
    {-0.0032649853f, -0.0026073866f, -0.0011565475f, 0.00034277936f, 0.0012476294f, 0.0014173847f, 0.0011138328f,
     0.0006850924f, 0.00034497763f, 0.00014535208f, 5.1884024e-05f, 1.5813217e-05f, 4.1368303e-06f, 9.323918e-07f,
     1.8155535e-07f, 3.0606223e-08f},
    {7.799305e-05f, 0.00028603573f, 0.0004039292f, 0.00031786837f, 0.00012937216f, -3.218569e-05f, -0.00010429961f,
     -0.000101233425f, -6.707869e-05f, -3.446423e-05f, -1.4389127e-05f, -4.9960645e-06f, -1.4620272e-06f,
     -3.6368405e-07f, -7.735179e-08f, -1.4125928e-08f},
};

/// Traits may bring their own A packer (same contract as pack_a_panel<MR>), e.g. with SIMD transposes.
template <class T, class = void>
struct has_fast_pack : std::false_type {};
template <class T>
struct has_fast_pack<T, std::void_t<decltype(&T::pack)>> : std::true_type {};

/// The blocking driver. Traits: MR (rows per micro-kernel), MR_STEP (tail rows are rounded up to a multiple of it),
/// NP (panels per micro-kernel) and tile(const tile_args&, int mr, int np), compiled for its ISA.
/// Computes rows [m0, m1) and panels [p0, p1) of C. scratch: gemm_scratch_floats() floats.
template <class Traits>
void gemm_blocked(const gemm_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1,
                  float* scratch) {
    constexpr int MR = Traits::MR;
    constexpr int STEP = Traits::MR_STEP;
    constexpr int NP = Traits::NP;
    static_assert(MR <= gemm_max_mr && MR % STEP == 0, "bad micro-kernel shape");
    const std::ptrdiff_t K = g.k;
    if (m1 <= m0 || p1 <= p0 || K <= 0) return;
    const std::ptrdiff_t nkb = (K + gemm_kc - 1) / gemm_kc;
    const std::ptrdiff_t kcs = (K + nkb - 1) / nkb;  // equal K blocks: every element sees the same split
    const std::ptrdiff_t pstride = panel_width * K;
    for (std::ptrdiff_t mb = m0; mb < m1; mb += gemm_mc) {
        const std::ptrdiff_t mlen = std::min(gemm_mc, m1 - mb);
        for (std::ptrdiff_t k0 = 0; k0 < K; k0 += kcs) {
            const std::ptrdiff_t kc = std::min(kcs, K - k0);
            const bool last = k0 + kc == K;
            // pack A[mb .. mb+mlen, k0 .. k0+kc] into micro-panels
            float* ap = scratch;
            for (std::ptrdiff_t i0 = 0; i0 < mlen; i0 += MR) {
                const int rows = static_cast<int>(std::min<std::ptrdiff_t>(MR, mlen - i0));
                const int mr = (rows + STEP - 1) / STEP * STEP;
                if constexpr (has_fast_pack<Traits>::value)
                    Traits::pack(g.a + (mb + i0) * g.lda + k0, g.lda, kc, rows, mr, ap);
                else
                    pack_a_panel<MR>(g.a + (mb + i0) * g.lda + k0, g.lda, kc, rows, mr, ap);
                ap += mr * kc;
            }
            const std::ptrdiff_t nrb = (mlen + MR - 1) / MR;
            const std::ptrdiff_t pf_per = (kc + nrb - 1) / nrb;  // lines of each next panel per row block
            for (std::ptrdiff_t p = p0; p < p1; p += NP) {
                const int np = static_cast<int>(std::min<std::ptrdiff_t>(NP, p1 - p));
                const std::ptrdiff_t col0 = p * panel_width;
                const int cols = static_cast<int>(std::min<std::ptrdiff_t>(np * panel_width, g.n - col0));
                const std::ptrdiff_t pn = p + NP;  // next panel group (none past p1)
                const float* ap_i = scratch;
                for (std::ptrdiff_t i0 = 0; i0 < mlen; i0 += MR) {
                    const int rows = static_cast<int>(std::min<std::ptrdiff_t>(MR, mlen - i0));
                    const int mr = (rows + STEP - 1) / STEP * STEP;
                    tile_args t;
                    t.ap = ap_i;
                    t.b = g.panel(p) + k0 * panel_width;
                    t.pstride = pstride;
                    t.kc = kc;
                    t.c = g.c + (mb + i0) * g.ldc + col0;
                    t.ldc = g.ldc;
                    t.rows = rows;
                    t.cols = cols;
                    t.add_c = k0 > 0;
                    t.ep = last ? &g.ep : nullptr;
                    t.bias = last && g.ep.bias ? g.ep.bias + col0 : nullptr;
                    t.res = last && g.ep.residual ? g.ep.residual + (mb + i0) * g.ep.ldr + col0 : nullptr;
                    const std::ptrdiff_t pf0 = std::min(kc, (i0 / MR) * pf_per);  // stays inside the panel
                    t.pf_n = pn < p1 ? std::max<std::ptrdiff_t>(0, std::min(pf_per, kc - pf0)) : 0;
                    for (int j = 0; j < 2; ++j) {
                        const std::ptrdiff_t pj = std::min(pn + (j < NP ? j : 0), p1 - 1);
                        t.pf[j] = g.panel(pj) + (k0 + pf0) * panel_width;
                    }
                    Traits::tile(t, mr, np);
                    ap_i += mr * kc;
                }
            }
        }
    }
}

}  // namespace bertlet::detail
