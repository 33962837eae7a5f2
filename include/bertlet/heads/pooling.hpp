// bertlet — sentence-embedding heads: mean pooling (sentence-transformers' attention-mask mean) or [CLS],
// optionally L2-normalized (sentence-transformers' Normalize module).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "bertlet/model/config.hpp"

namespace bertlet::detail {

/// Pools rows [0, length) of a [length, H] hidden-state block into out[H].
inline void pool(const float* hidden, std::size_t length, std::size_t H, const pooling_config& p, float* out) {
    if (p.mode == pooling_mode::cls || length == 0) {
        for (std::size_t i = 0; i < H; ++i) out[i] = length ? hidden[i] : 0.f;
    } else {
        for (std::size_t i = 0; i < H; ++i) out[i] = 0.f;
        for (std::size_t t = 0; t < length; ++t) {
            const float* r = hidden + t * H;
            for (std::size_t i = 0; i < H; ++i) out[i] += r[i];
        }
        const float inv = 1.0f / static_cast<float>(length);
        for (std::size_t i = 0; i < H; ++i) out[i] *= inv;
    }
    if (p.normalize) {
        double ss = 0.0;
        for (std::size_t i = 0; i < H; ++i) ss += static_cast<double>(out[i]) * out[i];
        // torch.nn.functional.normalize: x / max(||x||, 1e-12)
        const float inv = static_cast<float>(1.0 / std::max(std::sqrt(ss), 1e-12));
        for (std::size_t i = 0; i < H; ++i) out[i] *= inv;
    }
}

}  // namespace bertlet::detail
