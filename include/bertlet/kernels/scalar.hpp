// bertlet — portable scalar kernel path (any CPU; the compiler may auto-vectorize with its baseline ISA).
//
// Same packed layout and blocking as the SIMD paths (kernels/packed.hpp): a 4 x 16 register tile the compiler
// keeps in (baseline) vector registers. Transcendentals use the C library (std::erf, std::exp, std::tanh).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "bertlet/kernels/packed.hpp"

namespace bertlet::detail::scalar {

inline float act_one(float v, activation a) noexcept {
    switch (a) {
        case activation::none: return v;
        case activation::gelu_erf: return 0.5f * v * (1.0f + std::erf(v * 0.70710678118654752f));
        case activation::gelu_tanh:
            return 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
    }
    return v;
}

#if defined(__GNUC__) || defined(__clang__)
// A 16-float generic vector: GCC/Clang lower it to whatever the *baseline* target has (4 x SSE2 on x86-64, 4 x NEON
// on aarch64, plain scalars elsewhere), which keeps this path portable yet several times faster than scalar code
// (plain loops here get vectorized along k with shuffles instead). Used only inside one function (no ABI effects).
typedef float vec16 __attribute__((vector_size(64)));
#define BERTLET_SCALAR_VEC16 1
#endif

template <int MR>
void tile_mr(const tile_args& t) {
    float acc[MR][panel_width];
    const int np = (t.cols + panel_width - 1) / panel_width;
    for (int p = 0; p < np; ++p) {
        const float* b = t.b + p * t.pstride;
        const float* a = t.ap;
#if defined(BERTLET_SCALAR_VEC16)
        vec16 va[MR];
        for (int i = 0; i < MR; ++i) va[i] = vec16{};
        for (std::ptrdiff_t k = 0; k < t.kc; ++k) {
            vec16 bv;
            std::memcpy(&bv, b + k * panel_width, sizeof bv);
            const float* ak = a + k * MR;
            for (int i = 0; i < MR; ++i) va[i] += ak[i] * bv;
        }
        std::memcpy(acc, va, sizeof acc);
#else
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < panel_width; ++j) acc[i][j] = 0.0f;
        for (std::ptrdiff_t k = 0; k < t.kc; ++k) {
            const float* bk = b + k * panel_width;
            const float* ak = a + k * MR;
            for (int i = 0; i < MR; ++i) {
                const float av = ak[i];
                for (int j = 0; j < panel_width; ++j) acc[i][j] += av * bk[j];
            }
        }
#endif
        const int c0 = p * panel_width;
        const int w = std::min<int>(panel_width, t.cols - c0);
        for (int i = 0; i < t.rows; ++i) {
            float* c = t.c + i * t.ldc + c0;
            for (int j = 0; j < w; ++j) {
                float v = acc[i][j];
                if (t.add_c) v += c[j];
                if (t.ep) {
                    v *= t.ep->alpha;
                    if (t.bias) v += t.bias[c0 + j];
                    if (t.res) v += t.res[i * t.ep->ldr + c0 + j];
                    v = act_one(v, t.ep->act);
                }
                c[j] = v;
            }
        }
    }
}

struct traits {
    static constexpr int MR = 4;
    static constexpr int MR_STEP = 1;
    static constexpr int NP = 1;
    static void tile(const tile_args& t, int mr, int) {
        switch (mr) {
            case 1: tile_mr<1>(t); break;
            case 2: tile_mr<2>(t); break;
            case 3: tile_mr<3>(t); break;
            default: tile_mr<4>(t); break;
        }
    }
};

inline void gemm(const gemm_args& g, std::ptrdiff_t m0, std::ptrdiff_t m1, std::ptrdiff_t p0, std::ptrdiff_t p1,
                 float* scratch) {
    gemm_blocked<traits>(g, m0, m1, p0, p1, scratch);
}

/// x[r] = LayerNorm(x[r] + residual[r]) * gamma + beta for rows of n floats (row stride n; residual may be null).
inline void layernorm(float* x, const float* residual, std::ptrdiff_t rows, std::ptrdiff_t n, const float* gamma,
                      const float* beta, float eps) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
        float* xr = x + r * n;
        if (residual)
            for (std::ptrdiff_t i = 0; i < n; ++i) xr[i] += residual[r * n + i];
        float sum = 0.0f;
        for (std::ptrdiff_t i = 0; i < n; ++i) sum += xr[i];
        const float mean = sum / static_cast<float>(n);
        float var = 0.0f;
        for (std::ptrdiff_t i = 0; i < n; ++i) var += (xr[i] - mean) * (xr[i] - mean);
        const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) / static_cast<double>(n) +
                                                             static_cast<double>(eps)));
        for (std::ptrdiff_t i = 0; i < n; ++i) xr[i] = (xr[i] - mean) * inv * gamma[i] + beta[i];
    }
}

/// Softmax of each of `rows` rows of n floats (row stride ld), in place.
inline void softmax(float* x, std::ptrdiff_t rows, std::ptrdiff_t n, std::ptrdiff_t ld) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
        float* xr = x + r * ld;
        float mx = xr[0];
        for (std::ptrdiff_t i = 1; i < n; ++i) mx = std::max(mx, xr[i]);
        float sum = 0.0f;
        for (std::ptrdiff_t i = 0; i < n; ++i) sum += (xr[i] = std::exp(xr[i] - mx));
        const float inv = 1.0f / sum;
        for (std::ptrdiff_t i = 0; i < n; ++i) xr[i] *= inv;
    }
}

inline void activate(float* x, std::ptrdiff_t n, activation a) {
    for (std::ptrdiff_t i = 0; i < n; ++i) x[i] = act_one(x[i], a);
}

inline void add3(float* out, const float* a, const float* b, const float* c, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = a[i] + b[i] + c[i];
}

inline void cvt_f16(float* out, const std::uint16_t* in, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

}  // namespace bertlet::detail::scalar
