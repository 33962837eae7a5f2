// Test helper: one attention head, softmax(scale * q k^T) v, in double on fp32 inputs. q, k, v are [L, D] with row
// stride ld; the result is [L, D] dense. Shared by the fp32 (test_kernels.cpp) and bf16 (test_gemm_bf16.cpp)
// fused-attention tests.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace bertlet_test {

inline std::vector<double> attention_ref(const std::vector<float>& q, const std::vector<float>& k,
                                         const std::vector<float>& v, std::ptrdiff_t ld, std::ptrdiff_t L,
                                         std::ptrdiff_t D, double scale) {
    std::vector<double> out(static_cast<std::size_t>(L * D)), s(static_cast<std::size_t>(L));
    for (std::ptrdiff_t i = 0; i < L; ++i) {
        double mx = -1e300, sum = 0;
        for (std::ptrdiff_t j = 0; j < L; ++j) {
            double d = 0;
            for (std::ptrdiff_t t = 0; t < D; ++t) d += double(q[i * ld + t]) * k[j * ld + t];
            s[j] = d * scale;
            mx = std::max(mx, s[j]);
        }
        for (std::ptrdiff_t j = 0; j < L; ++j) sum += (s[j] = std::exp(s[j] - mx));
        for (std::ptrdiff_t t = 0; t < D; ++t) {
            double acc = 0;
            for (std::ptrdiff_t j = 0; j < L; ++j) acc += s[j] * v[j * ld + t];
            out[i * D + t] = acc / sum;
        }
    }
    return out;
}

}  // namespace bertlet_test
