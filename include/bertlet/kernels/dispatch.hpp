// bertlet — run-time kernel dispatch: one table of function pointers per compiled-in path.
//
// kernels_for(isa) returns the table for a path (throws input_error if this CPU or build cannot run it). The
// encoder picks a table once at load (load_options::arch, default active_isa()) and calls through it; nothing on
// the hot path re-checks the CPU.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "bertlet/error.hpp"
#include "bertlet/kernels/avx2.hpp"
#include "bertlet/kernels/avx512.hpp"
#include "bertlet/kernels/cpu.hpp"
#include "bertlet/kernels/neon.hpp"
#include "bertlet/kernels/packed.hpp"
#include "bertlet/kernels/scalar.hpp"
#include "bertlet/kernels/thread_pool.hpp"

namespace bertlet::detail {

struct kernel_table {
    isa arch = isa::scalar;
    /// Rows [m0, m1) x panels [p0, p1) of a packed GEMM (see packed.hpp); scratch: gemm_scratch_floats().
    void (*gemm)(const gemm_args&, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1,
                 float* scratch) = nullptr;
    /// x = LayerNorm(x + residual) * gamma + beta, rows of n floats (residual may be null).
    void (*layernorm)(float* x, const float* residual, std::ptrdiff_t rows, std::ptrdiff_t n, const float* gamma,
                      const float* beta, float eps) = nullptr;
    /// Row softmax in place: rows of n floats, row stride ld.
    void (*softmax)(float* x, std::ptrdiff_t rows, std::ptrdiff_t n, std::ptrdiff_t ld) = nullptr;
    /// x = act(x) in place.
    void (*activate)(float* x, std::ptrdiff_t n, activation a) = nullptr;
    /// out = a + b + c (the embedding sum).
    void (*add3)(float* out, const float* a, const float* b, const float* c, std::ptrdiff_t n) = nullptr;
    /// out = float(in), IEEE binary16 -> binary32 (exact; f16 word-embedding rows).
    void (*cvt_f16)(float* out, const std::uint16_t* in, std::ptrdiff_t n) = nullptr;
    /// Optional fused attention for one (sequence, head): ctx[L, D] (row stride ldc) = softmax(scale * Q K^T) V with
    /// Q, K, V [L, D] of row stride ld; D % 16 == 0; scratch: attention_scratch_floats(L, D). Null: the encoder's
    /// generic path (packed GEMM + softmax per tile).
    void (*attention)(const float* q, const float* k, const float* v, std::ptrdiff_t ld, float* ctx,
                      std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale, float* scratch) = nullptr;
};

/// Whether this build carries a path (independently of the CPU).
inline bool isa_compiled(isa a) noexcept {
    switch (a) {
        case isa::scalar: return true;
#if defined(BERTLET_HAVE_AVX2_PATH)
        case isa::avx2: return true;
#endif
#if defined(BERTLET_HAVE_AVX512_PATH)
        case isa::avx512: return true;
#endif
#if defined(BERTLET_HAVE_NEON_PATH)
        case isa::neon: return true;
#endif
        default: return false;
    }
}

inline const kernel_table& kernels_for(isa a) {
    if (!isa_compiled(a) || !cpu().supports(a))
        throw input_error(errc::bad_argument, std::string("kernel path '") + isa_name(a) +
                                                  "' is not supported here (CPU features: " + cpu().describe() + ")");
    switch (a) {
#if defined(BERTLET_HAVE_AVX2_PATH)
        case isa::avx2: {
            static const kernel_table t{isa::avx2, avx2::gemm, avx2::layernorm, avx2::softmax, avx2::activate,
                                        avx2::add3, avx2::cvt_f16, avx2::attention_head};
            return t;
        }
#endif
#if defined(BERTLET_HAVE_AVX512_PATH)
        case isa::avx512: {
            static const kernel_table t{isa::avx512, avx512::gemm, avx512::layernorm, avx512::softmax,
                                        avx512::activate, avx512::add3, avx512::cvt_f16,
                                        avx512::attention_head};
            return t;
        }
#endif
#if defined(BERTLET_HAVE_NEON_PATH)
        case isa::neon: {
            static const kernel_table t{isa::neon, neon::gemm, neon::layernorm, neon::softmax, neon::activate,
                                        neon::add3, neon::cvt_f16, neon::attention_head};
            return t;
        }
#endif
        default: {
            static const kernel_table t{isa::scalar, scalar::gemm, scalar::layernorm, scalar::softmax,
                                        scalar::activate, scalar::add3, scalar::cvt_f16};
            return t;
        }
    }
}

/// The default path for a model: active_isa() (best the CPU has, or BERTLET_FORCE_ARCH), except that an unforced
/// choice this build does not carry falls back to the best one it does (so loading never fails by default).
inline isa default_isa() {
    const isa a = active_isa();
    if (isa_compiled(a)) return a;
    const char* forced = std::getenv("BERTLET_FORCE_ARCH");
    if (forced && *forced) return a;  // kernels_for() then reports the forced path as unavailable
    for (isa b : {isa::avx512, isa::avx2, isa::neon})
        if (isa_compiled(b) && cpu().supports(b)) return b;
    return isa::scalar;
}

/// Every path this build and CPU can run (tests loop over it).
inline std::vector<isa> available_isas() {
    std::vector<isa> out;
    for (isa a : {isa::scalar, isa::avx2, isa::avx512, isa::neon})
        if (isa_compiled(a) && cpu().supports(a)) out.push_back(a);
    return out;
}

/// Runs a GEMM over a pool, split as plan_gemm_split() says (packed.hpp). Each output element is computed by one
/// task with the same K blocking whatever the split, so results do not depend on the thread count.
/// scratch: pool size x scratch_stride floats (scratch_stride >= gemm_scratch_floats()).
inline void gemm_parallel(const kernel_table& k, thread_pool* pool, const gemm_args& g, float* scratch,
                          std::size_t scratch_stride) {
    const std::size_t threads = pool ? pool->size() : 1;
    const std::ptrdiff_t np = panels_of(g.n);
    if (threads <= 1 || g.m <= 0) {
        k.gemm(g, 0, g.m, 0, np, scratch);
        return;
    }
    const gemm_split plan = plan_gemm_split(g.m, np, static_cast<std::ptrdiff_t>(threads), gemm_mc);
    pool->run(static_cast<std::size_t>(plan.tasks), [&](std::size_t task, std::size_t slot) {
        std::ptrdiff_t m0, m1, p0, p1;
        plan.range(static_cast<std::ptrdiff_t>(task), g.m, np, m0, m1, p0, p1);
        if (m1 > m0 && p1 > p0) k.gemm(g, m0, m1, p0, p1, scratch + slot * scratch_stride);
    });
}

}  // namespace bertlet::detail
