// Shared helpers of the GEMM unit tests: Gaussian test data and the double-precision activations.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "bertlet/kernels/packed.hpp"

namespace bertlet_test {

inline std::vector<float> gaussian(std::size_t n, std::uint32_t seed, float sd = 1.f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

/// The epilogue activations in double (GELU erf / tanh forms as Hugging Face defines them).
inline double act_d(double v, bertlet::detail::activation a) {
    switch (a) {
        case bertlet::detail::activation::none: return v;
        case bertlet::detail::activation::gelu_erf: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
        case bertlet::detail::activation::gelu_tanh:
            return 0.5 * v * (1.0 + std::tanh(0.79788456080286536 * (v + 0.044715 * v * v * v)));
    }
    return v;
}

}  // namespace bertlet_test
