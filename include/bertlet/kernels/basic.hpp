// bertlet — reference fp32 kernels used by the encoder.
//
// These are the portable, correct-first kernels: GEMM through Eigen (no ISA flags are exported, so a consumer's
// build decides the baseline), LayerNorm / GELU / softmax as plain loops the compiler vectorizes. The encoder now
// runs the packed, run-time-dispatched kernels (kernels/dispatch.hpp); these stay as an independent cross-check
// for the tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include <Eigen/Core>

namespace bertlet::detail {

using row_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using cmap = Eigen::Map<const row_matrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using map = Eigen::Map<row_matrix, Eigen::Unaligned, Eigen::OuterStride<>>;

/// Y[rows, out] = X[rows, in] * W[out, in]^T + b[out]   (nn.Linear with PyTorch's weight layout).
/// ldx / ldy are the row strides of X and Y in floats.
inline void linear(const float* X, std::ptrdiff_t rows, std::ptrdiff_t in, std::ptrdiff_t ldx, const float* W,
                   const float* b, std::ptrdiff_t out, float* Y, std::ptrdiff_t ldy) {
    cmap x(X, rows, in, Eigen::OuterStride<>(ldx));
    cmap w(W, out, in, Eigen::OuterStride<>(in));
    map y(Y, rows, out, Eigen::OuterStride<>(ldy));
    y.noalias() = x * w.transpose();
    if (b) {
        for (std::ptrdiff_t r = 0; r < rows; ++r) {
            float* yr = Y + r * ldy;
            for (std::ptrdiff_t c = 0; c < out; ++c) yr[c] += b[c];
        }
    }
}

/// In place: x = LayerNorm(x + residual) * gamma + beta, per row of n floats (residual may be null).
inline void add_layernorm(float* x, const float* residual, std::ptrdiff_t rows, std::ptrdiff_t n,
                          const float* gamma, const float* beta, float eps) {
    for (std::ptrdiff_t r = 0; r < rows; ++r) {
        float* xr = x + r * n;
        if (residual) {
            const float* rr = residual + r * n;
            for (std::ptrdiff_t i = 0; i < n; ++i) xr[i] += rr[i];
        }
        double sum = 0.0;
        for (std::ptrdiff_t i = 0; i < n; ++i) sum += xr[i];
        const double mean = sum / static_cast<double>(n);
        double var = 0.0;
        for (std::ptrdiff_t i = 0; i < n; ++i) {
            const double d = xr[i] - mean;
            var += d * d;
        }
        var /= static_cast<double>(n);
        const float inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
        const float m = static_cast<float>(mean);
        for (std::ptrdiff_t i = 0; i < n; ++i) xr[i] = (xr[i] - m) * inv * gamma[i] + beta[i];
    }
}

enum class gelu_kind { erf, tanh };

/// In place GELU. erf: 0.5 x (1 + erf(x / sqrt 2)) (BERT's "gelu"); tanh: the approximation ("gelu_new").
inline void gelu(float* x, std::ptrdiff_t n, gelu_kind kind) {
    if (kind == gelu_kind::erf) {
        for (std::ptrdiff_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
    } else {
        for (std::ptrdiff_t i = 0; i < n; ++i) {
            const float v = x[i];
            x[i] = 0.5f * v * (1.0f + std::tanh(0.79788456080286536f * (v + 0.044715f * v * v * v)));
        }
    }
}

/// In place row softmax over n columns.
inline void softmax_row(float* x, std::ptrdiff_t n) {
    float mx = x[0];
    for (std::ptrdiff_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
    float sum = 0.f;
    for (std::ptrdiff_t i = 0; i < n; ++i) {
        x[i] = std::exp(x[i] - mx);
        sum += x[i];
    }
    const float inv = 1.f / sum;
    for (std::ptrdiff_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace bertlet::detail
