// int8 attention (kernels/attention_s8.hpp): the VNNI kernel against its scalar reference (same bits) and both
// against exact softmax attention.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "bertlet/kernels/attention_s8.hpp"
#include "test_attention_ref.hpp"

namespace {

std::vector<float> gauss(std::size_t n, unsigned seed, float sd = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, 4) == 0; }

// runs the fast kernel (misaligned scratch with a guard tail) and the reference; returns {kernel, reference}
struct run_result {
    std::vector<float> got, ref;
    bool pad_kept = true, tail_kept = true;
};
run_result run(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
               std::ptrdiff_t ld, std::ptrdiff_t ldc, std::ptrdiff_t L, std::ptrdiff_t D, float scale) {
    run_result r;
    r.ref.assign(static_cast<std::size_t>(L * ldc), 555.f);
    bertlet::s8_attention_head_ref(q.data(), k.data(), v.data(), ld, r.ref.data(), ldc, L, D, scale);
    const std::size_t nb = bertlet::s8_attention_scratch_bytes(std::size_t(L), std::size_t(D));
    std::vector<unsigned char> scratch(nb + 5 + 64, 0xA5);
    r.got.assign(static_cast<std::size_t>(L * ldc), 777.f);
    bertlet::s8_attention_head(q.data(), k.data(), v.data(), ld, r.got.data(), ldc, L, D, scale, scratch.data() + 5);
    for (std::ptrdiff_t i = 0; i < L; ++i)
        for (std::ptrdiff_t t = D; t < ldc; ++t) r.pad_kept = r.pad_kept && r.got[i * ldc + t] == 777.f;
    for (std::size_t i = nb + 5; i < scratch.size(); ++i) r.tail_kept = r.tail_kept && scratch[i] == 0xA5;
    return r;
}

}  // namespace

TEST_CASE("s8 attention: the VNNI kernel gives the reference's bits; both are close to exact attention") {
    if (!bertlet::s8_attention_supported()) MESSAGE("no AVX-512 VNNI here: only the reference is checked");
    for (std::ptrdiff_t D : {8, 13, 16, 30, 32, 48, 64}) {
        for (std::ptrdiff_t L : {1, 2, 5, 12, 13, 16, 17, 31, 33, 64, 127, 128, 130, 256}) {
            CAPTURE(D);
            CAPTURE(L);
            const std::ptrdiff_t ld = 3 * D + 3, ldc = D + 5;
            const unsigned seed = 100u + unsigned(D * 1000 + L);
            // scores of a realistic spread (softmax neither uniform nor one-hot): q, k ~ N(0, 1.5^2)
            const auto q = gauss(static_cast<std::size_t>(L * ld), seed, 1.5f);
            const auto k = gauss(static_cast<std::size_t>(L * ld), seed + 1, 1.5f);
            const auto v = gauss(static_cast<std::size_t>(L * ld), seed + 2);
            const float scale = 1.0f / std::sqrt(float(D));
            const auto exact = bertlet_test::attention_ref(q, k, v, ld, L, D, scale);
            const run_result r = run(q, k, v, ld, ldc, L, D, scale);
            // int8 Q, K, V and u8 probabilities: errors at the percent level of the output scale (values ~N(0, 1)
            // averaged by the softmax); an indexing slip would be O(1)
            double worst = 0, sum_sq = 0;
            for (std::ptrdiff_t i = 0; i < L; ++i)
                for (std::ptrdiff_t t = 0; t < D; ++t) {
                    const double e = std::fabs(r.ref[i * ldc + t] - exact[i * D + t]);
                    worst = std::max(worst, e);
                    sum_sq += e * e;
                }
            // measured: rms <= 0.0106, worst <= 0.132 (D 48, L 256) over these cases (bf16 attention: ~3x less)
            CHECK(worst <= 0.2);
            CHECK(std::sqrt(sum_sq / double(L * D)) <= 0.015);
            CHECK(r.pad_kept);
            CHECK(r.tail_kept);
            if (!bertlet::s8_attention_supported()) continue;
            bool same = true;
            for (std::ptrdiff_t i = 0; i < L; ++i)
                for (std::ptrdiff_t t = 0; t < D; ++t) same = same && same_bits(r.got[i * ldc + t], r.ref[i * ldc + t]);
            CHECK(same);
        }
    }
}

TEST_CASE("s8 attention: degenerate inputs (zero rows, zero channels, huge and tiny scores) stay finite and exact") {
    const std::ptrdiff_t L = 37, D = 32, ld = D, ldc = D;
    auto q = gauss(L * D, 1), k = gauss(L * D, 2), v = gauss(L * D, 3);
    for (std::ptrdiff_t t = 0; t < D; ++t) {
        q[5 * D + t] = 0.f;   // a zero query row: uniform attention
        k[7 * D + t] = 0.f;   // a zero key
    }
    for (std::ptrdiff_t t = 0; t < L; ++t) v[t * D + 3] = 0.f;  // a zero value channel
    for (std::ptrdiff_t t = 0; t < D; ++t) q[11 * D + t] *= 1e4f;  // scores ~1e4: one-hot rows
    for (std::ptrdiff_t t = 0; t < D; ++t) q[13 * D + t] *= 1e-30f;  // tiny row: its own scale, as any other
    const float scale = 1.0f / std::sqrt(float(D));
    const auto exact = bertlet_test::attention_ref(q, k, v, ld, L, D, scale);
    const run_result r = run(q, k, v, ld, ldc, L, D, scale);
    bool finite = true;
    for (std::ptrdiff_t i = 0; i < L * D; ++i) finite = finite && std::isfinite(r.ref[i]);
    CHECK(finite);
    // the zero query row averages V exactly up to V's quantization: compare with the plain column mean
    double worst_uniform = 0;
    for (std::ptrdiff_t t = 0; t < D; ++t) {
        double mean = 0;
        for (std::ptrdiff_t j = 0; j < L; ++j) mean += v[j * D + t];
        worst_uniform = std::max(worst_uniform, std::fabs(r.ref[5 * D + t] - mean / double(L)));
    }
    CHECK(worst_uniform <= 0.02);
    for (std::ptrdiff_t i = 0; i < L; ++i) CHECK(r.ref[i * D + 3] == 0.f);  // the zero channel
    double worst = 0;
    for (std::ptrdiff_t i = 0; i < L * D; ++i) worst = std::max(worst, std::fabs(r.ref[i] - exact[i]));
    CHECK(worst <= 0.08);
    if (bertlet::s8_attention_supported()) {
        bool same = true;
        for (std::ptrdiff_t i = 0; i < L * D; ++i) same = same && same_bits(r.got[i], r.ref[i]);
        CHECK(same);
    }
}

TEST_CASE("s8 attention: NaN / inf inputs do not crash and stay in their rows") {
    const std::ptrdiff_t L = 20, D = 16;
    auto q = gauss(L * D, 4), k = gauss(L * D, 5), v = gauss(L * D, 6);
    q[3 * D + 2] = std::numeric_limits<float>::quiet_NaN();
    q[4 * D + 1] = std::numeric_limits<float>::infinity();
    const run_result r = run(q, k, v, D, D, L, D, 0.25f);
    // rows 3 and 4 may be anything (garbage in); every other row is finite and equal to the reference
    bool ok = true;
    for (std::ptrdiff_t i = 0; i < L; ++i) {
        if (i == 3 || i == 4) continue;
        for (std::ptrdiff_t t = 0; t < D; ++t) ok = ok && std::isfinite(r.ref[i * D + t]);
    }
    CHECK(ok);
    if (bertlet::s8_attention_supported()) {
        bool same = true;
        for (std::ptrdiff_t i = 0; i < L; ++i) {
            if (i == 3 || i == 4) continue;
            for (std::ptrdiff_t t = 0; t < D; ++t) same = same && same_bits(r.got[i * D + t], r.ref[i * D + t]);
        }
        CHECK(same);
    }
}
