// bertlet — NEON kernel path (aarch64: AWS Graviton and every other ARMv8-A CPU; Advanced SIMD is mandatory there,
// so no run-time check or target attribute is needed).
//
// GEMM micro-kernel: 6 rows x 16 columns (one packed panel = 4 q-registers) = 24 accumulators, 4 for B, 2 for the
// packed A values (fmla by lane). Transcendentals use the same polynomials as the x86 paths.
#pragma once

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define BERTLET_HAVE_NEON_PATH 1

#include <arm_neon.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "bertlet/kernels/packed.hpp"

namespace bertlet::detail::neon {

alignas(16) inline constexpr std::uint32_t lane_idx[4] = {0, 1, 2, 3};
/// All-ones in lanes 0 .. w-1 (w < 4), zero above.
inline uint32x4_t lanes_below(std::ptrdiff_t w) {
    return vcltq_u32(vld1q_u32(lane_idx), vdupq_n_u32(static_cast<std::uint32_t>(w)));
}

/// Loads n (0..4) floats, zero-filling the rest (never reads past p + n).
inline float32x4_t load_n(const float* p, std::ptrdiff_t n) {
    if (n >= 4) return vld1q_f32(p);
    float tmp[4] = {0.f, 0.f, 0.f, 0.f};
    for (std::ptrdiff_t i = 0; i < n; ++i) tmp[i] = p[i];
    return vld1q_f32(tmp);
}
inline void store_n(float* p, float32x4_t v, std::ptrdiff_t n) {
    if (n >= 4) {
        vst1q_f32(p, v);
        return;
    }
    float tmp[4];
    vst1q_f32(tmp, v);
    for (std::ptrdiff_t i = 0; i < n; ++i) p[i] = tmp[i];
}

inline float32x4_t exp_ps(float32x4_t x) {
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.0f)), vdupq_n_f32(-87.3365447505531f));
    const float32x4_t fx = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    float32x4_t r = vfmsq_f32(x, fx, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, fx, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    const float32x4_t y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
    return vmulq_f32(y, vreinterpretq_f32_s32(e));
}

inline float32x4_t erf_ps(float32x4_t x) {
    x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(4.0f)), vdupq_n_f32(-4.0f));
    const float32x4_t x2 = vmulq_f32(x, x);
    float32x4_t p = vdupq_n_f32(-2.72614225801306e-10f);
    p = vfmaq_f32(vdupq_n_f32(2.77068142495902e-08f), x2, p);
    p = vfmaq_f32(vdupq_n_f32(-2.10102402082508e-06f), x2, p);
    p = vfmaq_f32(vdupq_n_f32(-5.69250639462346e-05f), x2, p);
    p = vfmaq_f32(vdupq_n_f32(-7.34990630326855e-04f), x2, p);
    p = vfmaq_f32(vdupq_n_f32(-2.95459980854025e-03f), x2, p);
    p = vfmaq_f32(vdupq_n_f32(-1.60960333262415e-02f), x2, p);
    p = vmulq_f32(x, p);
    float32x4_t q = vdupq_n_f32(-1.45660718464996e-05f);
    q = vfmaq_f32(vdupq_n_f32(-2.13374055278905e-04f), x2, q);
    q = vfmaq_f32(vdupq_n_f32(-1.68282697438203e-03f), x2, q);
    q = vfmaq_f32(vdupq_n_f32(-7.37332916720468e-03f), x2, q);
    q = vfmaq_f32(vdupq_n_f32(-1.42647390514189e-02f), x2, q);
    return vdivq_f32(p, q);
}

inline float32x4_t act_ps(float32x4_t v, activation a) {
    if (a == activation::gelu_erf) {
        const float32x4_t e = erf_ps(vmulq_n_f32(v, 0.70710678118654752f));
        return vmulq_f32(vmulq_n_f32(v, 0.5f), vaddq_f32(vdupq_n_f32(1.0f), e));
    }
    if (a == activation::gelu_tanh) {
        const float32x4_t v3 = vmulq_f32(vmulq_f32(v, v), v);
        const float32x4_t u = vmulq_n_f32(vfmaq_f32(v, vdupq_n_f32(0.044715f), v3), 0.79788456080286536f);
        const float32x4_t e = exp_ps(vmulq_n_f32(u, -2.0f));
        return vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), e));
    }
    return v;
}

template <int MR>
void tile_mr(const tile_args& t) {
    float32x4_t acc[MR][4];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = vdupq_n_f32(0.0f);
    const float* a = t.ap;
    const float* b = t.b;
    for (std::ptrdiff_t k = 0; k < t.kc; ++k) {
        const float* bk = b + k * panel_width;
        const float32x4_t b0 = vld1q_f32(bk), b1 = vld1q_f32(bk + 4), b2 = vld1q_f32(bk + 8), b3 = vld1q_f32(bk + 12);
        const float* ak = a + k * MR;
        for (int i = 0; i < MR; ++i) {
            const float av = ak[i];
            acc[i][0] = vfmaq_n_f32(acc[i][0], b0, av);
            acc[i][1] = vfmaq_n_f32(acc[i][1], b1, av);
            acc[i][2] = vfmaq_n_f32(acc[i][2], b2, av);
            acc[i][3] = vfmaq_n_f32(acc[i][3], b3, av);
        }
    }
    const epilogue* ep = t.ep;
    const float alpha = ep ? ep->alpha : 1.0f;
    for (int q = 0; q < 4; ++q) {
        const std::ptrdiff_t w = t.cols - q * 4;
        if (w <= 0) break;
        const float32x4_t bias = t.bias ? load_n(t.bias + q * 4, w) : vdupq_n_f32(0.0f);
        for (int i = 0; i < MR; ++i) {
            if (i >= t.rows) break;
            float* c = t.c + i * t.ldc + q * 4;
            float32x4_t v = acc[i][q];
            if (t.add_c) v = vaddq_f32(v, load_n(c, w));
            if (ep) {
                v = vfmaq_n_f32(bias, v, alpha);
                if (t.res) v = vaddq_f32(v, load_n(t.res + i * ep->ldr + q * 4, w));
                v = act_ps(v, ep->act);
            }
            store_n(c, v, w);
        }
    }
}

struct traits {
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

inline void layernorm(float* x, const float* residual, std::ptrdiff_t rows, std::ptrdiff_t n, const float* gamma,
                      const float* beta, float eps) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
        float* xr = x + r * n;
        float32x4_t s = vdupq_n_f32(0.0f);
        for (std::ptrdiff_t i = 0; i < n; i += 4) {
            float32x4_t v = load_n(xr + i, n - i);
            if (residual) {
                v = vaddq_f32(v, load_n(residual + r * n + i, n - i));
                store_n(xr + i, v, n - i);
            }
            s = vaddq_f32(s, v);
        }
        const float mean = vaddvq_f32(s) / static_cast<float>(n);
        const float32x4_t mv = vdupq_n_f32(mean);
        float32x4_t q = vdupq_n_f32(0.0f);
        for (std::ptrdiff_t i = 0; i < n; i += 4) {
            float32x4_t d = vsubq_f32(load_n(xr + i, n - i), mv);
            if (n - i < 4) {  // zero the lanes past n (loaded as 0, minus the mean)
                float tmp[4];
                vst1q_f32(tmp, d);
                for (std::ptrdiff_t j = n - i; j < 4; ++j) tmp[j] = 0.0f;
                d = vld1q_f32(tmp);
            }
            q = vfmaq_f32(q, d, d);
        }
        const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(vaddvq_f32(q)) /
                                                             static_cast<double>(n) + static_cast<double>(eps)));
        for (std::ptrdiff_t i = 0; i < n; i += 4) {
            const float32x4_t d = vmulq_n_f32(vsubq_f32(load_n(xr + i, n - i), mv), inv);
            store_n(xr + i, vfmaq_f32(load_n(beta + i, n - i), d, load_n(gamma + i, n - i)), n - i);
        }
    }
}

inline void softmax(float* x, std::ptrdiff_t rows, std::ptrdiff_t n, std::ptrdiff_t ld) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
        float* xr = x + r * ld;
        float mx = xr[0];
        std::ptrdiff_t i = 0;
        float32x4_t m4 = vdupq_n_f32(xr[0]);
        for (; i + 4 <= n; i += 4) m4 = vmaxq_f32(m4, vld1q_f32(xr + i));
        mx = vmaxvq_f32(m4);
        for (; i < n; ++i) mx = std::max(mx, xr[i]);
        const float32x4_t mv = vdupq_n_f32(mx);
        float32x4_t s = vdupq_n_f32(0.0f);
        float tail = 0.0f;
        for (i = 0; i + 4 <= n; i += 4) {
            const float32x4_t e = exp_ps(vsubq_f32(vld1q_f32(xr + i), mv));
            s = vaddq_f32(s, e);
            vst1q_f32(xr + i, e);
        }
        if (i < n) {
            const float32x4_t e = exp_ps(vsubq_f32(load_n(xr + i, n - i), mv));
            float tmp[4];
            vst1q_f32(tmp, e);
            for (std::ptrdiff_t j = 0; j < n - i; ++j) {
                tail += tmp[j];
                xr[i + j] = tmp[j];
            }
        }
        const float inv = 1.0f / (vaddvq_f32(s) + tail);
        for (i = 0; i < n; i += 4) store_n(xr + i, vmulq_n_f32(load_n(xr + i, n - i), inv), n - i);
    }
}

inline void activate(float* x, std::ptrdiff_t n, activation a) {
    for (std::ptrdiff_t i = 0; i < n; i += 4) store_n(x + i, act_ps(load_n(x + i, n - i), a), n - i);
}

inline void add3(float* out, const float* a, const float* b, const float* c, std::ptrdiff_t n) {
    for (std::ptrdiff_t i = 0; i < n; i += 4)
        store_n(out + i, vaddq_f32(vaddq_f32(load_n(a + i, n - i), load_n(b + i, n - i)), load_n(c + i, n - i)),
                n - i);
}

inline void cvt_f16(float* out, const std::uint16_t* in, std::ptrdiff_t n) {
    std::ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(in + i))));
    for (; i < n; ++i) out[i] = f16_to_f32(in[i]);
}

// ---- fused attention (one sequence x one head), as avx2::attention_head with 128-bit vectors -------------------
// ctx[L, D] = softmax(scale * Q K^T) V for one head, D % 16 == 0. K_h is transposed once into 16-key panels; per tile
// of up to 6 query rows: S = scale * Q K^T with Q broadcast from its rows (ld1r, no packing), the row max kept while
// storing, softmax numerators in place (in L1), ctx = S V with V's rows read in place, divided by the row sum at the
// store. 6 rows x 16 columns = 24 q-register accumulators (+ 4 B, 1 broadcast: 29 of 32 registers).

/// acc[i][h] = sum_{k < n} a_i[k] * B[k][4h .. 4h+4), a_i = row i of A (stride lda; rows past `rows` repeat the last
/// one, not stored), B[k] the 16 floats at b + k * bstep. Local accumulators, copied out once (as avx2::attn_acc).
template <int MR>
inline void attn_acc(const float* a0, std::ptrdiff_t lda, int rows, const float* b, std::ptrdiff_t bstep,
                     std::ptrdiff_t n, float32x4_t (&out)[MR][4]) {
    const float* a[MR];
    float32x4_t acc[MR][4];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
        a[i] = a0 + std::min(i, rows - 1) * lda;
#pragma GCC unroll 4
        for (int h = 0; h < 4; ++h) acc[i][h] = vdupq_n_f32(0.0f);
    }
    for (std::ptrdiff_t k = 0; k < n; ++k) {
        const float* bk = b + k * bstep;
        const float32x4_t v0 = vld1q_f32(bk), v1 = vld1q_f32(bk + 4), v2 = vld1q_f32(bk + 8), v3 = vld1q_f32(bk + 12);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            const float32x4_t av = vld1q_dup_f32(a[i] + k);
            acc[i][0] = vfmaq_f32(acc[i][0], av, v0);
            acc[i][1] = vfmaq_f32(acc[i][1], av, v1);
            acc[i][2] = vfmaq_f32(acc[i][2], av, v2);
            acc[i][3] = vfmaq_f32(acc[i][3], av, v3);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int h = 0; h < 4; ++h) out[i][h] = acc[i][h];
}

template <int MR>
inline void attn_rows(const float* q, std::ptrdiff_t ldq, const float* v, std::ptrdiff_t ldv, int rows,
                      const float* kp, std::ptrdiff_t L, std::ptrdiff_t D, float scale, float* s, std::ptrdiff_t lds,
                      float* c, std::ptrdiff_t ldc) {
    float mx[MR];
    for (int i = 0; i < MR; ++i) mx[i] = -INFINITY;
    for (std::ptrdiff_t p = 0; p * 16 < L; ++p) {  // S = scale * Q K^T, 16 keys at a time
        float32x4_t acc[MR][4];
        attn_acc<MR>(q, ldq, rows, kp + p * 16 * D, 16, D, acc);
#pragma GCC unroll 4
        for (int h = 0; h < 4; ++h) {
            const std::ptrdiff_t w = L - p * 16 - h * 4;  // valid keys in this quarter
            if (w <= 0) break;
#pragma GCC unroll 8
            for (int i = 0; i < MR; ++i) {
                if (i >= rows) break;
                const float32x4_t y = vmulq_n_f32(acc[i][h], scale);
                store_n(s + i * lds + p * 16 + h * 4, y, w);
                // the key padding of a partial quarter must not raise the max
                mx[i] = std::max(mx[i], vmaxvq_f32(w >= 4 ? y : vbslq_f32(lanes_below(w), y, vdupq_n_f32(-INFINITY))));
            }
        }
    }
    float inv[MR];
    for (int i = 0; i < rows; ++i) {  // softmax numerators in place; 1 / row sum applied in the P V store
        float* xr = s + i * lds;
        const float32x4_t mv = vdupq_n_f32(mx[i]);
        float32x4_t sum = vdupq_n_f32(0.0f);
        for (std::ptrdiff_t c0 = 0; c0 < L; c0 += 4) {
            const std::ptrdiff_t w = L - c0;
            float32x4_t e = exp_ps(vsubq_f32(load_n(xr + c0, w), mv));
            if (w < 4) e = vbslq_f32(lanes_below(w), e, vdupq_n_f32(0.0f));
            sum = vaddq_f32(sum, e);
            store_n(xr + c0, e, w);
        }
        inv[i] = 1.0f / vaddvq_f32(sum);
    }
    for (std::ptrdiff_t d0 = 0; d0 < D; d0 += 16) {  // ctx = S V, 16 output dims at a time
        float32x4_t acc[MR][4];
        attn_acc<MR>(s, lds, rows, v + d0, ldv, L, acc);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            if (i >= rows) break;
#pragma GCC unroll 4
            for (int h = 0; h < 4; ++h) vst1q_f32(c + i * ldc + d0 + 4 * h, vmulq_n_f32(acc[i][h], inv[i]));
        }
    }
}

/// One head of one sequence: ctx = softmax(scale * q k^T) v; q, k, v are [L, D] with row stride ld, ctx has row
/// stride ldc. D % 16 == 0; scratch holds attention_scratch_floats(L, D) floats (packed.hpp).
inline void attention_head(const float* q, const float* k, const float* v, std::ptrdiff_t ld, float* ctx,
                           std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale, float* scratch) {
    if (L <= 0) return;
    float* kp = scratch;
    const std::ptrdiff_t lds = (L + 15) / 16 * 16;
    float* s = kp + lds * D;
    attn_pack_k16(k, ld, L, D, kp);  // packed.hpp
    attn_row_tiles<6>(L, [&](auto r, std::ptrdiff_t q0, int rows) {
        attn_rows<decltype(r)::value>(q + q0 * ld, ld, v, ld, rows, kp, L, D, scale, s, lds, ctx + q0 * ldc, ldc);
    });
}

}  // namespace bertlet::detail::neon

#endif
