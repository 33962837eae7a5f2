// fp32 GEMM as six bf16 products on the AMX tiles (include/bertlet/kernels/gemm_f32x6.hpp): the three-part split is
// exact, the F32X6 packing follows its formula, the GEMM is as accurate as an fp32 GEMM against a double reference
// (every epilogue, row counts that are not multiples of 16 or 32) and its results do not depend on the thread split.
// GEMM tests are skipped (MESSAGE) on CPUs without AMX-BF16; the split and the packing are tested everywhere.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bertlet/kernels/gemm_f32x6.hpp"
#include "bertlet/kernels/gemm_bf16.hpp"
#include "test_numeric.hpp"

namespace {

using bertlet::detail::activation;
using bertlet::detail::epilogue;

using bertlet_test::act_d;
using bertlet_test::gaussian;

bool amx_here(const char* what) {
    if (bertlet::f32x6_supported()) return true;
    MESSAGE("no AMX-BF16 here (or BERTLET_AMX=0): test '", std::string(what), "' skipped");
    return false;
}


struct problem {
    std::ptrdiff_t M, N, K;
    std::vector<float> A, W, bias, res;
    bertlet::detail::aligned_vector<std::uint16_t> wx;
};

problem make(std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, std::uint32_t seed) {
    problem p{M, N, K, gaussian(std::size_t(M * K), seed), gaussian(std::size_t(N * K), seed + 1, 0.05f),
              gaussian(std::size_t(N), seed + 2, 0.1f), gaussian(std::size_t(M * N), seed + 3), {}};
    std::vector<float> packed(bertlet::detail::packed_n16_size(std::size_t(N), std::size_t(K)));
    bertlet::detail::pack_n16(p.W.data(), N, K, K, packed.data());
    p.wx.resize(bertlet::f32x6_packed_size(std::size_t(N), std::size_t(K)));
    bertlet::pack_f32x6(packed.data(), std::size_t(N), std::size_t(K), p.wx.data());
    return p;
}

std::vector<float> run(const problem& p, const epilogue& ep, bertlet::detail::thread_pool* pool) {
    std::vector<float> C(std::size_t(p.M * p.N), -7.f);
    bertlet::detail::aligned_vector<std::uint16_t> abuf(bertlet::f32x6_a_size(std::size_t(p.M), std::size_t(p.K)));
    bertlet::f32x6_args g;
    g.a = p.A.data();
    g.lda = p.K;
    g.w = p.wx.data();
    g.c = C.data();
    g.ldc = p.N;
    g.m = p.M;
    g.n = p.N;
    g.k = p.K;
    g.ep = ep;
    bertlet::f32x6_gemm_parallel(pool, g, abuf.data());
    return C;
}

}  // namespace

TEST_CASE("f32x6: every normal float splits exactly into three bf16 parts") {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> mant(1.f, 2.f);
    std::uniform_int_distribution<int> ex(-100, 100);
    int checked = 0;
    for (int i = 0; i < 200000; ++i) {
        const float x = std::ldexp(mant(rng), ex(rng)) * (i % 2 ? -1.f : 1.f);
        std::uint16_t p[3];
        bertlet::f32x6_split(x, p);
        const double sum = double(bertlet::bf16_to_float(p[0])) + bertlet::bf16_to_float(p[1]) +
                           bertlet::bf16_to_float(p[2]);
        if (sum != double(x)) {
            CHECK(sum == double(x));
            break;
        }
        ++checked;
    }
    CHECK(checked == 200000);
    std::uint16_t z[3];
    bertlet::f32x6_split(0.f, z);
    CHECK((z[0] == 0 && z[1] == 0 && z[2] == 0));
}

TEST_CASE("f32x6: F32X6 packing follows its layout formula; the fast packer writes the reference's bytes") {
    const std::ptrdiff_t N = 64, K = 96;
    problem p = make(1, N, K, 5);
    {  // special values: the reference and the fast packer must agree on them too
        std::vector<float> w = p.W;
        const float sp[] = {0.f, -0.f, 1e-40f, -3e-39f, std::numeric_limits<float>::infinity(), 3.3e38f, 1e-30f, 65504.f};
        for (std::size_t i = 0; i < std::size(sp); ++i) w[i * 37] = sp[i];
        std::vector<float> packed(bertlet::detail::packed_n16_size(std::size_t(N), std::size_t(K)));
        bertlet::detail::pack_n16(w.data(), N, K, K, packed.data());
        std::vector<std::uint16_t> a(bertlet::f32x6_packed_size(std::size_t(N), std::size_t(K))), b(a.size());
        bertlet::pack_f32x6(packed.data(), std::size_t(N), std::size_t(K), a.data());
        bertlet::pack_f32x6_ref(packed.data(), std::size_t(N), std::size_t(K), b.data());
        CHECK(a == b);
    }
    for (std::ptrdiff_t n = 0; n < N; ++n)
        for (std::ptrdiff_t k = 0; k < K; ++k) {
            std::uint16_t parts[3];
            bertlet::f32x6_split(p.W[std::size_t(n * K + k)], parts);
            for (std::ptrdiff_t q = 0; q < 3; ++q) {
                const std::size_t off =
                    std::size_t(((n / 16 * (K / 32) + k / 32) * 3 + q) * 512 + (k % 32 / 2) * 32 + (n % 16) * 2 + k % 2);
                if (p.wx[off] != parts[q]) {
                    CAPTURE(n);
                    CAPTURE(k);
                    CAPTURE(q);
                    REQUIRE(p.wx[off] == parts[q]);
                }
            }
        }
}

TEST_CASE("f32x6: GEMM is as accurate as fp32 against double, every epilogue and row count") {
    if (!amx_here("f32x6 GEMM accuracy")) return;
    struct ep_case { const char* name; bool bias, res; activation act; float alpha; };
    const ep_case eps[] = {{"raw", false, false, activation::none, 1.f},
                           {"bias", true, false, activation::none, 1.f},
                           {"bias+residual", true, true, activation::none, 1.f},
                           {"bias+gelu_erf", true, false, activation::gelu_erf, 1.f},
                           {"bias+gelu_tanh", true, false, activation::gelu_tanh, 1.f},
                           {"alpha", false, false, activation::none, 0.125f}};
    struct shape { std::ptrdiff_t M, N, K; };
    for (const shape s : {shape{1, 32, 32}, shape{15, 64, 96}, shape{16, 32, 64}, shape{17, 96, 32},
                          shape{33, 64, 384}, shape{48, 32, 160}, shape{100, 128, 384}, shape{128, 384, 1536}}) {
        CAPTURE(s.M);
        CAPTURE(s.N);
        CAPTURE(s.K);
        const problem p = make(s.M, s.N, s.K, std::uint32_t(s.M * 7 + s.N + s.K));
        for (const ep_case& e : eps) {
            CAPTURE(e.name);
            epilogue ep;
            ep.alpha = e.alpha;
            ep.bias = e.bias ? p.bias.data() : nullptr;
            ep.residual = e.res ? p.res.data() : nullptr;
            ep.ldr = s.N;
            ep.act = e.act;
            const auto C = run(p, ep, nullptr);
            double worst = 0;  // error / (sum |a w| + |bias| + |res|): fp32 GEMMs give ~1e-7, plain bf16 ~1e-3
            for (std::ptrdiff_t i = 0; i < s.M; ++i)
                for (std::ptrdiff_t j = 0; j < s.N; ++j) {
                    double acc = 0, mag = 0;
                    for (std::ptrdiff_t k = 0; k < s.K; ++k) {
                        const double t = double(p.A[std::size_t(i * s.K + k)]) * p.W[std::size_t(j * s.K + k)];
                        acc += t;
                        mag += std::fabs(t);
                    }
                    acc *= e.alpha;
                    mag *= e.alpha;
                    if (e.bias) acc += p.bias[std::size_t(j)], mag += std::fabs(p.bias[std::size_t(j)]);
                    if (e.res) acc += p.res[std::size_t(i * s.N + j)], mag += std::fabs(p.res[std::size_t(i * s.N + j)]);
                    const double want = act_d(acc, e.act);
                    worst = std::max(worst, std::fabs(C[std::size_t(i * s.N + j)] - want) / (mag + 1e-30));
                }
            CHECK(worst < (e.act == activation::none ? 5e-7 : 2e-6));  // GELU: its polynomial's own error
        }
    }
}

TEST_CASE("f32x6: thread splits give bit-identical results") {
    if (!amx_here("f32x6 thread splits")) return;
    const problem p = make(77, 384, 384, 9);
    epilogue ep;
    ep.bias = p.bias.data();
    ep.act = activation::gelu_erf;
    const auto one = run(p, ep, nullptr);
    for (std::size_t t : {2u, 3u, 5u}) {
        CAPTURE(t);
        bertlet::detail::thread_pool pool(t);
        const auto many = run(p, ep, &pool);
        CHECK(std::memcmp(one.data(), many.data(), one.size() * sizeof(float)) == 0);
    }
}

TEST_CASE("f32x6: a non-finite input gives non-finite outputs in its row, never a finite wrong value") {
    if (!amx_here("f32x6 non-finite")) return;
    problem p = make(32, 32, 64, 3);
    p.A[5 * 64 + 7] = std::numeric_limits<float>::infinity();
    p.A[20 * 64 + 1] = std::numeric_limits<float>::quiet_NaN();
    const auto C = run(p, epilogue{}, nullptr);
    for (std::ptrdiff_t j = 0; j < 32; ++j) {
        CHECK(!std::isfinite(C[std::size_t(5 * 32 + j)]));
        CHECK(std::isnan(C[std::size_t(20 * 32 + j)]));
        CHECK(std::isfinite(C[std::size_t(4 * 32 + j)]));
    }
}

TEST_CASE("f32x6: bf16 weights (BF16P16K2 panels as tiles): exact products of bf16-rounded A, fp32 sums; segments") {
    if (!amx_here("f32x6 bf16 weights")) return;
    for (const std::ptrdiff_t M : {1, 17, 64, 100}) {
        const std::ptrdiff_t N = 96, K = 384;
        CAPTURE(M);
        const auto A = gaussian(std::size_t(M * K), 21, 1.f), W = gaussian(std::size_t(N * K), 22, 0.05f),
                   b = gaussian(std::size_t(N), 23, 0.1f);
        bertlet::detail::aligned_vector<std::uint16_t> wp(bertlet::bf16_packed_size(std::size_t(N), std::size_t(K)));
        bertlet::pack_bf16(W.data(), N, K, K, wp.data());
        bertlet::detail::aligned_vector<std::uint16_t> abuf(bertlet::f32x6_a_size(std::size_t(M), std::size_t(K)));
        std::vector<float> C(std::size_t(M * N)), C3(std::size_t(M * N));
        bertlet::f32x6_args g;
        g.a = A.data();
        g.lda = K;
        g.w = wp.data();
        g.c = C.data();
        g.ldc = N;
        g.m = M;
        g.n = N;
        g.k = K;
        g.ep.bias = b.data();
        g.bf16 = true;
        bertlet::f32x6_gemm_parallel(nullptr, g, abuf.data());
        double worst = 0;
        for (std::ptrdiff_t i = 0; i < M; ++i)
            for (std::ptrdiff_t j = 0; j < N; ++j) {
                double acc = b[std::size_t(j)], mag = std::fabs(b[std::size_t(j)]);
                for (std::ptrdiff_t k = 0; k < K; ++k) {
                    const double t = double(bertlet::bf16_to_float(bertlet::float_to_bf16(A[std::size_t(i * K + k)]))) *
                                     bertlet::bf16_to_float(bertlet::float_to_bf16(W[std::size_t(j * K + k)]));
                    acc += t;
                    mag += std::fabs(t);
                }
                worst = std::max(worst, std::fabs(C[std::size_t(i * N + j)] - acc) / mag);
            }
        CHECK(worst < 5e-7);  // bf16 rounding of A is part of the reference: only the fp32 sums differ
        // the same weight as three segments of 32 outputs: the same bits
        std::vector<bertlet::detail::aligned_vector<std::uint16_t>> parts(3);
        for (int s = 0; s < 3; ++s) {
            parts[std::size_t(s)].resize(bertlet::bf16_packed_size(32, std::size_t(K)));
            bertlet::pack_bf16(W.data() + s * 32 * K, 32, K, K, parts[std::size_t(s)].data());
            g.wseg[s] = parts[std::size_t(s)].data();
        }
        g.w = nullptr;
        g.seg_panels = 2;
        g.c = C3.data();
        bertlet::detail::thread_pool pool(2);
        bertlet::f32x6_gemm_parallel(&pool, g, abuf.data());
        CHECK(std::memcmp(C.data(), C3.data(), C.size() * sizeof(float)) == 0);
    }
}
