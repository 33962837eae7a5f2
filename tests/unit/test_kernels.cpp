// Packed fp32 kernels: every path this CPU supports (scalar, avx2, avx512, neon) against simple double-precision
// references on odd shapes, fused epilogues, softmax, LayerNorm, GELU accuracy, thread-count independence, and the
// run-time path selection.
#include <doctest/doctest.h>

#include <bertlet/bertlet.hpp>
#include <bertlet/kernels/basic.hpp>
#include <bertlet/kernels/dispatch.hpp>

#include "test_attention_ref.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

namespace bd = bertlet::detail;

std::vector<float> rand_vec(std::size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

double act_ref(double v, bd::activation a) {
    switch (a) {
        case bd::activation::none: return v;
        case bd::activation::gelu_erf: return 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
        case bd::activation::gelu_tanh:
            return 0.5 * v * (1.0 + std::tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
    }
    return v;
}

struct gemm_case {
    std::ptrdiff_t m, n, k;
};

/// GEMM arguments for C[m, n] (stride ldc) = A[m, k] (stride lda) x packed weights wp; epilogue left default.
bd::gemm_args gemm_args_for(const float* a, std::ptrdiff_t lda, const float* wp, float* c, std::ptrdiff_t ldc,
                            std::ptrdiff_t m, std::ptrdiff_t n, std::ptrdiff_t k) {
    bd::gemm_args g;
    g.a = a;
    g.lda = lda;
    g.b = wp;
    g.c = c;
    g.ldc = ldc;
    g.m = m;
    g.n = n;
    g.k = k;
    return g;
}

// Runs one packed GEMM on path `a` and compares with a double reference; returns the worst error / tolerance.
double check_gemm(const bd::kernel_table& kt, const gemm_case& c, const bd::epilogue& ep_proto, unsigned seed,
                  std::size_t threads = 1) {
    const std::ptrdiff_t lda = c.k + 3, ldc = c.n + 5;  // strided on purpose
    auto A = rand_vec(static_cast<std::size_t>(c.m * lda), seed);
    auto W = rand_vec(static_cast<std::size_t>(c.n * c.k), seed + 1);
    auto bias = rand_vec(static_cast<std::size_t>(c.n), seed + 2);
    auto res = rand_vec(static_cast<std::size_t>(c.m * c.n), seed + 3);
    std::vector<float> Wp(bd::packed_n16_size(static_cast<std::size_t>(c.n), static_cast<std::size_t>(c.k)), -7.f);
    bd::pack_n16(W.data(), c.n, c.k, c.k, Wp.data());
    std::vector<float> C(static_cast<std::size_t>(c.m * ldc), 12345.f);
    bd::gemm_args g = gemm_args_for(A.data(), lda, Wp.data(), C.data(), ldc, c.m, c.n, c.k);
    g.ep = ep_proto;
    if (ep_proto.bias) g.ep.bias = bias.data();
    if (ep_proto.residual) {
        g.ep.residual = res.data();
        g.ep.ldr = c.n;
    }
    bd::thread_pool pool(threads);
    std::vector<float> scratch(bd::gemm_scratch_floats() * threads);
    bd::gemm_parallel(kt, threads > 1 ? &pool : nullptr, g, scratch.data(), bd::gemm_scratch_floats());
    double worst = 0.0;
    for (std::ptrdiff_t i = 0; i < c.m; ++i) {
        for (std::ptrdiff_t j = 0; j < c.n; ++j) {
            double acc = 0.0, mag = 0.0;
            for (std::ptrdiff_t kk = 0; kk < c.k; ++kk) {
                acc += double(A[i * lda + kk]) * W[j * c.k + kk];
                mag += std::fabs(double(A[i * lda + kk]) * W[j * c.k + kk]);
            }
            double v = acc * ep_proto.alpha;
            mag *= std::fabs(ep_proto.alpha);
            if (ep_proto.bias) v += bias[j], mag += std::fabs(bias[j]);
            if (ep_proto.residual) v += res[i * c.n + j], mag += std::fabs(res[i * c.n + j]);
            v = act_ref(v, ep_proto.act);
            const double tol = 1e-6 * (mag + 1.0) + 2e-7 * c.k;
            worst = std::max(worst, std::fabs(v - C[i * ldc + j]) / tol);
        }
        for (std::ptrdiff_t j = c.n; j < ldc; ++j) REQUIRE(C[i * ldc + j] == 12345.f);  // nothing past N written
    }
    return worst;
}

}  // namespace

TEST_CASE("kernels: the machine's paths are detected and selectable") {
    const auto paths = bd::available_isas();
    REQUIRE(!paths.empty());
    CHECK(paths.front() == bertlet::isa::scalar);
    for (auto a : paths) CHECK(bd::kernels_for(a).arch == a);
#if defined(__x86_64__)
    CHECK_THROWS_AS(bd::kernels_for(bertlet::isa::neon), bertlet::input_error);
#else
    CHECK_THROWS_AS(bd::kernels_for(bertlet::isa::avx2), bertlet::input_error);
#endif
    MESSAGE("CPU: " << bertlet::cpu().describe()
                    << "; active path: " << std::string(bertlet::isa_name(bertlet::active_isa())));
}

TEST_CASE("kernels: aligned_vector storage starts on a cache line, small and large, after growth") {
    // malloc puts large blocks 16 bytes past a page boundary: the workspaces would then straddle cache lines
    for (std::size_t n : {std::size_t(1), std::size_t(17), std::size_t(4096), std::size_t(1) << 20}) {
        bertlet::detail::aligned_vector<float> v(n);
        CHECK(reinterpret_cast<std::uintptr_t>(v.data()) % 64 == 0);
        v.resize(3 * n + 5);
        CHECK(reinterpret_cast<std::uintptr_t>(v.data()) % 64 == 0);
        bertlet::detail::aligned_vector<std::uint8_t> b(n + 3);
        CHECK(reinterpret_cast<std::uintptr_t>(b.data()) % 64 == 0);
    }
}

TEST_CASE("kernels: pack_n16 layout and round trip") {
    const std::ptrdiff_t N = 37, K = 5;
    auto W = rand_vec(N * K, 1);
    std::vector<float> P(bd::packed_n16_size(N, K), -1.f);
    CHECK(P.size() == 48 * 5);
    bd::pack_n16(W.data(), N, K, K, P.data());
    for (std::ptrdiff_t n = 0; n < 48; ++n)
        for (std::ptrdiff_t k = 0; k < K; ++k)
            CHECK(P[((n / 16) * K + k) * 16 + n % 16] == (n < N ? W[n * K + k] : 0.f));
    std::vector<float> back(N * K);
    bd::unpack_n16(P.data(), N, K, back.data());
    CHECK(back == W);
}

TEST_CASE("kernels: packed GEMM matches a double reference on odd shapes, every path") {
    const std::vector<gemm_case> cases = {
        {1, 1, 1}, {1, 16, 7}, {3, 5, 7}, {17, 33, 1}, {17, 100, 384}, {128, 31, 7}, {3, 48, 1536},
        {128, 100, 384}, {17, 40, 1536}, {1, 384, 384}, {13, 17, 257}, {200, 64, 300}, {25, 32, 513}};
    for (auto a : bd::available_isas()) {
        CAPTURE(bertlet::isa_name(a));
        const auto& kt = bd::kernels_for(a);
        unsigned seed = 10;
        for (const auto& c : cases) {
            CAPTURE(c.m);
            CAPTURE(c.n);
            CAPTURE(c.k);
            bd::epilogue plain;
            CHECK(check_gemm(kt, c, plain, seed++) <= 1.0);
        }
    }
}

TEST_CASE("kernels: fused epilogues (alpha, bias, residual, GELU erf / tanh), every path") {
    float dummy = 0.f;
    for (auto a : bd::available_isas()) {
        CAPTURE(bertlet::isa_name(a));
        const auto& kt = bd::kernels_for(a);
        unsigned seed = 100;
        for (const gemm_case c : {gemm_case{17, 100, 384}, gemm_case{3, 7, 7}, gemm_case{128, 40, 1536}}) {
            CAPTURE(c.m);
            CAPTURE(c.n);
            CAPTURE(c.k);
            for (int variant = 0; variant < 5; ++variant) {
                CAPTURE(variant);
                bd::epilogue ep;
                ep.alpha = variant == 1 ? 0.125f : 1.0f;
                ep.bias = variant >= 1 ? &dummy : nullptr;  // replaced by real data in check_gemm
                ep.residual = variant == 2 || variant == 4 ? &dummy : nullptr;
                ep.act = variant == 3 ? bd::activation::gelu_erf
                         : variant == 4 ? bd::activation::gelu_tanh : bd::activation::none;
                CHECK(check_gemm(kt, c, ep, seed++) <= 1.0);
            }
        }
    }
}

TEST_CASE("kernels: GEMM results do not depend on the thread count (bit-identical)") {
    for (auto a : bd::available_isas()) {
        CAPTURE(bertlet::isa_name(a));
        const auto& kt = bd::kernels_for(a);
        // M = 400: several row blocks and a row split; M = 70: a panel split for 2+ threads (plan_gemm_split)
        for (const std::ptrdiff_t M : {std::ptrdiff_t{400}, std::ptrdiff_t{70}}) {
            CAPTURE(M);
            const std::ptrdiff_t N = 200, K = 600;  // several K blocks
            auto A = rand_vec(M * K, 5);
            auto W = rand_vec(N * K, 6);
            auto bias = rand_vec(N, 7);
            std::vector<float> Wp(bd::packed_n16_size(N, K));
            bd::pack_n16(W.data(), N, K, K, Wp.data());
            std::vector<std::vector<float>> outs;
            for (std::size_t threads : {1u, 2u, 3u, 5u}) {
                std::vector<float> C(M * N);
                bd::gemm_args g = gemm_args_for(A.data(), K, Wp.data(), C.data(), N, M, N, K);
                g.ep.bias = bias.data();
                g.ep.act = bd::activation::gelu_erf;
                bd::thread_pool pool(threads);
                std::vector<float> scratch(bd::gemm_scratch_floats() * threads);
                bd::gemm_parallel(kt, &pool, g, scratch.data(), bd::gemm_scratch_floats());
                outs.push_back(C);
            }
            for (std::size_t i = 1; i < outs.size(); ++i) CHECK(outs[i] == outs[0]);
        }
    }
}

TEST_CASE("kernels: plan_gemm_split covers every row x panel exactly once") {
    for (std::ptrdiff_t T : {1, 2, 3, 4, 8})
        for (std::ptrdiff_t m : {1, 5, 47, 95, 96, 128, 130, 383, 512, 769, 4096})
            for (std::ptrdiff_t np : {1, 2, 3, 24, 25, 96}) {
                CAPTURE(T);
                CAPTURE(m);
                CAPTURE(np);
                const auto plan = bd::plan_gemm_split(m, np, T, bd::gemm_mc);
                REQUIRE(plan.tasks >= 1);
                CHECK((plan.rows > 0) != (plan.panels > 0));
                // rows are split only when every thread gets gemm_split_min_rows of them, then into a multiple of T
                CHECK((plan.rows > 0) == (m >= bd::gemm_split_min_rows * T));
                if (plan.rows > 0) {
                    CHECK(plan.tasks % T == 0);
                    CHECK(plan.rows % 4 == 0);
                    CHECK(plan.rows <= bd::gemm_mc + 3);
                } else {
                    CHECK(plan.tasks <= T);
                    CHECK(plan.panels % 2 == 0);
                }
                std::vector<int> seen(static_cast<std::size_t>(m * np), 0);
                for (std::ptrdiff_t t = 0; t < plan.tasks; ++t) {
                    std::ptrdiff_t m0, m1, p0, p1;
                    plan.range(t, m, np, m0, m1, p0, p1);
                    REQUIRE(0 <= m0);
                    REQUIRE(m0 <= m1);
                    REQUIRE(m1 <= m);
                    REQUIRE(0 <= p0);
                    REQUIRE(p0 <= p1);
                    REQUIRE(p1 <= np);
                    for (std::ptrdiff_t i = m0; i < m1; ++i)
                        for (std::ptrdiff_t p = p0; p < p1; ++p) ++seen[static_cast<std::size_t>(i * np + p)];
                }
                CHECK(std::all_of(seen.begin(), seen.end(), [](int c) { return c == 1; }));
            }
}

TEST_CASE("kernels: the packed GEMM agrees with the reference Eigen kernel (basic.hpp)") {
    const std::ptrdiff_t M = 19, N = 70, K = 384;
    auto A = rand_vec(M * K, 21);
    auto W = rand_vec(N * K, 22);
    auto b = rand_vec(N, 23);
    std::vector<float> ref(M * N);
    bd::linear(A.data(), M, K, K, W.data(), b.data(), N, ref.data(), N);
    std::vector<float> Wp(bd::packed_n16_size(N, K));
    bd::pack_n16(W.data(), N, K, K, Wp.data());
    for (auto a : bd::available_isas()) {
        CAPTURE(bertlet::isa_name(a));
        std::vector<float> C(M * N), scratch(bd::gemm_scratch_floats());
        bd::gemm_args g = gemm_args_for(A.data(), K, Wp.data(), C.data(), N, M, N, K);
        g.ep.bias = b.data();
        bd::kernels_for(a).gemm(g, 0, M, 0, bd::panels_of(N), scratch.data());
        for (std::size_t i = 0; i < C.size(); ++i) CHECK(C[i] == doctest::Approx(ref[i]).epsilon(1e-4).scale(1.0));
    }
}

TEST_CASE("kernels: softmax, LayerNorm, GELU, embedding sum against double references, every path") {
    for (auto a : bd::available_isas()) {
        CAPTURE(bertlet::isa_name(a));
        const auto& kt = bd::kernels_for(a);
        for (std::ptrdiff_t n : {1, 3, 7, 16, 17, 100, 128, 384, 385}) {
            CAPTURE(n);
            // softmax: 3 rows with a stride, large spreads included
            const std::ptrdiff_t rows = 3, ld = n + 2;
            auto x = rand_vec(rows * ld, 31 + unsigned(n), -30.f, 30.f);
            auto y = x;
            kt.softmax(y.data(), rows, n, ld);
            for (std::ptrdiff_t r = 0; r < rows; ++r) {
                double mx = -1e300, sum = 0;
                for (std::ptrdiff_t i = 0; i < n; ++i) mx = std::max(mx, double(x[r * ld + i]));
                for (std::ptrdiff_t i = 0; i < n; ++i) sum += std::exp(double(x[r * ld + i]) - mx);
                for (std::ptrdiff_t i = 0; i < n; ++i)
                    CHECK(std::fabs(y[r * ld + i] - std::exp(double(x[r * ld + i]) - mx) / sum) <= 1e-6);
                for (std::ptrdiff_t i = n; i < ld; ++i) CHECK(y[r * ld + i] == x[r * ld + i]);
            }
            // LayerNorm, x = LN(x + residual) * g + b: 1..9 rows (the SIMD paths work on blocks of 4 rows, then 1-3),
            // with and without a residual, inputs in [-1, 1], [3, 5] and [1000, 1001] (mean far from 0: a one-pass
            // E[x^2] - E[x]^2 variance cancels catastrophically there). Row r is shifted by 3r as well, so a row
            // normalised with another row's statistics cannot pass; nothing past the last row may be written.
            const auto g = rand_vec(n, 43, 0.5f, 1.5f), b = rand_vec(n, 44);
            for (std::ptrdiff_t lrows : {1, 3, 4, 5, 7, 9}) {
                for (const float lo : {-1.f, 3.f, 1000.f}) {
                    for (const bool with_res : {false, true}) {
                        CAPTURE(lrows);
                        CAPTURE(lo);
                        CAPTURE(with_res);
                        const unsigned seed = 41 + unsigned(n) + 1000 * unsigned(lrows) + unsigned(lo);
                        auto v = rand_vec(lrows * n, seed, lo, lo + (lo < 100.f ? 2.f : 1.f));
                        for (std::ptrdiff_t r = 0; r < lrows; ++r)
                            for (std::ptrdiff_t i = 0; i < n; ++i) v[r * n + i] += 3.f * float(r);
                        const auto res = rand_vec(lrows * n, seed + 1);
                        auto out = v;
                        out.push_back(-777.f);  // sentinel
                        kt.layernorm(out.data(), with_res ? res.data() : nullptr, lrows, n, g.data(), b.data(), 1e-12f);
                        CHECK(out.back() == -777.f);
                        for (std::ptrdiff_t r = 0; r < lrows; ++r) {
                            // x + residual is a float add by contract (x is float storage); the rest in double.
                            std::vector<double> xs(static_cast<std::size_t>(n));
                            double mean = 0, var = 0;
                            for (std::ptrdiff_t i = 0; i < n; ++i) {
                                xs[i] = with_res ? double(v[r * n + i] + res[r * n + i]) : double(v[r * n + i]);
                                mean += xs[i];
                            }
                            mean /= double(n);
                            for (std::ptrdiff_t i = 0; i < n; ++i) var += (xs[i] - mean) * (xs[i] - mean);
                            var /= double(n);
                            const double inv = 1.0 / std::sqrt(var + 1e-12);
                            for (std::ptrdiff_t i = 0; i < n; ++i) {
                                if (n == 1) {  // x - mean is exactly 0
                                    CHECK(out[r * n + i] == b[i]);
                                    continue;
                                }
                                const double want = (xs[i] - mean) * inv * g[i] + b[i];
                                // 2e-5, plus what a plain float two-pass mean may be off by when the mean is far from 0
                                // (the scalar path sums sequentially): ~sqrt(n) roundings of |mean| * 2^-24, scaled
                                // by inv * g (the scalar path reaches ~1/5 of it). At mean 1000 it stays < 0.03, far
                                // below the O(1) errors of a cancelled variance.
                                const double tol =
                                    2e-5 + 4.0 * std::ldexp(std::fabs(mean), -24) * std::sqrt(double(n)) * inv * g[i];
                                CHECK(std::fabs(out[r * n + i] - want) <= tol);
                            }
                        }
                    }
                }
            }
            // embedding sum
            auto e1 = rand_vec(n, 51), e2 = rand_vec(n, 52), e3 = rand_vec(n, 53);
            std::vector<float> s(n + 1, 99.f);
            kt.add3(s.data(), e1.data(), e2.data(), e3.data(), n);
            for (std::ptrdiff_t i = 0; i < n; ++i) CHECK(s[i] == doctest::Approx(e1[i] + e2[i] + e3[i]).epsilon(1e-6));
            CHECK(s[n] == 99.f);
        }
        // GELU accuracy over [-12, 12]
        for (auto act : {bd::activation::gelu_erf, bd::activation::gelu_tanh}) {
            std::vector<float> xs;
            for (int i = -120000; i <= 120000; ++i) xs.push_back(float(i) * 1e-4f);
            auto ys = xs;
            kt.activate(ys.data(), static_cast<std::ptrdiff_t>(ys.size()), act);
            double worst = 0;
            for (std::size_t i = 0; i < xs.size(); ++i)
                worst = std::max(worst, std::fabs(ys[i] - act_ref(xs[i], act)) / (1.0 + std::fabs(xs[i])));
            CAPTURE(int(act));
            CHECK(worst <= 1e-6);
        }
    }
}

TEST_CASE("kernels: GELU (erf, tanh) and softmax's exp at every 2^-12 over [-10, 10] and at edge values, every path") {
    // Dense enough that one wrong polynomial coefficient or table entry shows. The SIMD GELUs are piecewise in |v|:
    // pieces (npieces, gelu_s, gelu_amax) = (8, 1.325791, 5.657) on AVX2, (16, 2.7399683, 5.6569996) on AVX-512, with
    // boundaries at (k + 0.5) / gelu_s and the clamp at gelu_amax: all are probed, with their neighbours.
    struct pieces {
        int n;
        float s, amax;
    };
    const pieces schemes[] = {
#if defined(BERTLET_HAVE_AVX2_PATH)
        {8, bd::avx2::gelu_s, bd::avx2::gelu_amax},
#endif
#if defined(BERTLET_HAVE_AVX512_PATH)
        {16, bd::avx512::gelu_s, bd::avx512::gelu_amax},
#endif
        {1, 1.f, 5.657f}};  // (keeps the array non-empty on other CPUs)
    std::vector<float> xs;
    for (int i = -40960; i <= 40960; ++i) xs.push_back(std::ldexp(float(i), -12));
    std::vector<float> special = {4.0f * std::sqrt(2.0f), 12.f, 20.f, 1e3f, 1e30f, 3.4e38f, 1e-20f, 1e-38f, 1e-45f};
    for (const pieces& p : schemes) {
        special.push_back(p.amax);
        for (int k = 0; k < p.n; ++k) special.push_back((float(k) + 0.5f) / p.s);
    }
    for (float b : special) {
        float lo = b, hi = b;
        for (int u = 0; u < 3; ++u) {
            xs.insert(xs.end(), {lo, -lo, hi, -hi});
            lo = std::nextafter(lo, 0.f);
            hi = std::nextafter(hi, 1e38f);
        }
    }
    const float inf = std::numeric_limits<float>::infinity(), qnan = std::numeric_limits<float>::quiet_NaN();
    const std::size_t n_finite = xs.size();
    xs.insert(xs.end(), {0.f, -0.f, inf, -inf, qnan});
    // GELU references in double (erfc: no cancellation for v << 0); tolerances ~2x the worst path today (erf:
    // 7.8e-8 (1 + |v|), tanh: 9.5e-8 (1 + |v|)); the former erf_ps-based GELU (2.2e-7) would fail.
    const auto gelu_erf_ref = [](double v) { return 0.5 * v * std::erfc(-v / std::sqrt(2.0)); };
    const auto gelu_tanh_ref = [](double v) {
        return 0.5 * v * (1.0 + std::tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
    };
    for (auto a : bd::available_isas()) {
        const std::string path = bertlet::isa_name(a);
        CAPTURE(path);
        const auto& kt = bd::kernels_for(a);
        // NEON still computes GELU through its erf_ps rational form (max 2.2e-7 (1 + |v|), and 0.5 v (1 + erf) can
        // exceed v by an ulp); the table-driven GELU is x86 only so far
        const bool rational_gelu = a == bertlet::isa::neon;
        for (auto act : {bd::activation::gelu_erf, bd::activation::gelu_tanh}) {
            const bool is_erf = act == bd::activation::gelu_erf;
            CAPTURE(is_erf);
            auto ys = xs;
            kt.activate(ys.data(), static_cast<std::ptrdiff_t>(ys.size()), act);
            double worst = 0;
            float worst_x = 0;
            bool sign_ok = true;
            for (std::size_t i = 0; i < n_finite; ++i) {
                const double x = xs[i], want = is_erf ? gelu_erf_ref(x) : gelu_tanh_ref(x);
                const double e = std::fabs(double(ys[i]) - want) / (1.0 + std::fabs(x));
                if (!(e <= worst)) worst = e, worst_x = xs[i];  // NaN counts as worst
                // (the tanh form is v / (1 + exp(-2u)): with the AVX2 path's clamped exp (<= 1.65e38) it is not ~0
                // for v < -1e37)
                if (is_erf || std::fabs(x) < 1e36)
                    sign_ok = sign_ok && (x < 0 ? ys[i] <= 0.f && ys[i] >= -0.171f : ys[i] >= 0.f && ys[i] <= xs[i]);
            }
            MESSAGE(path, std::string(is_erf ? " GELU erf" : " GELU tanh"), ": max |error| / (1 + |v|) = ", worst,
                    " at v = ", worst_x);
            CHECK(worst <= (is_erf ? (rational_gelu ? 3e-7 : 1.5e-7) : 2e-7));
            // GELU(v) in [-0.171, 0] for v < 0 (minimum -0.16997, tanh form -0.17009), in [0, v] for v >= 0
            if (!(rational_gelu && is_erf)) CHECK(sign_ok);
            const std::size_t e0 = n_finite;
            CHECK(ys[e0] == 0.f);
            CHECK(ys[e0 + 1] == 0.f);
            CHECK(ys[e0 + 2] == inf);
            if (is_erf) CHECK((std::isnan(ys[e0 + 3]) || ys[e0 + 3] == 0.f));  // -inf Phi(-inf): NaN on every path
            CHECK(std::isnan(ys[e0 + 4]));
        }
        // softmax's exp: rows of 128 whose maximum is 0 (x[0]); the rest sweep x < 0 at 2^-12 over [-10, 0) and at
        // 2^-6 over [-87, -10). y[i] / y[0] = exp(x[i]) up to the one rounding of y[i] = e[i] * (1 / sum), so the
        // ratio checks exp itself: <= 2.5e-7 relative (exp: 8.9e-8 on AVX-512, 1.2e-7 on AVX2, + 6e-8).
        std::vector<float> sweep;
        for (int i = -1; i >= -40960; --i) sweep.push_back(std::ldexp(float(i), -12));
        for (int i = -641; i >= -87 * 64; --i) sweep.push_back(std::ldexp(float(i), -6));
        const std::ptrdiff_t n = 128, per = n - 1, rows = (static_cast<std::ptrdiff_t>(sweep.size()) + per - 1) / per;
        std::vector<float> x(static_cast<std::size_t>(rows * n), -1e30f);  // tail lanes past the sweep: exp -> 0
        for (std::ptrdiff_t r = 0; r < rows; ++r) {
            x[r * n] = 0.f;
            for (std::ptrdiff_t j = 1; j < n && r * per + j - 1 < static_cast<std::ptrdiff_t>(sweep.size()); ++j)
                x[r * n + j] = sweep[r * per + j - 1];
        }
        auto y = x;
        kt.softmax(y.data(), rows, n, n);
        double worst_ratio = 0;
        float worst_at = 0;
        for (std::ptrdiff_t r = 0; r < rows; ++r) {
            for (std::ptrdiff_t j = 0; j < n; ++j) {
                const double xv = x[r * n + j], yv = y[r * n + j];
                if (xv >= -87.0) {
                    const double e = std::fabs(yv / double(y[r * n]) / std::exp(xv) - 1.0);
                    if (!(e <= worst_ratio)) worst_ratio = e, worst_at = float(xv);
                } else {
                    CHECK((yv >= 0.0 && yv <= 1.2e-38));  // exp(-1e30): 0 (FLT_MIN on the AVX2 path, 0 < sum < 2)
                }
            }
        }
        MESSAGE(path, " softmax exp: max relative error = ", worst_ratio, " at x = ", worst_at);
        CHECK(worst_ratio <= 2.5e-7);
        // edge rows: -inf, huge and tiny arguments give 0 (never NaN); -0 is the maximum too
        std::vector<float> e = {0.f, -inf, -1e30f, -1000.f, -104.f, -88.f, -87.34f, -87.3f, -0.f, -1e-30f, -80.f};
        const std::ptrdiff_t ne = static_cast<std::ptrdiff_t>(e.size());
        auto ey = e;
        kt.softmax(ey.data(), 1, ne, ne);
        double esum = 0;
        for (float v : ey) esum += v;
        CHECK(esum == doctest::Approx(1.0).epsilon(1e-6));
        for (std::ptrdiff_t j = 0; j < ne; ++j) {
            CAPTURE(e[j]);
            CHECK(ey[j] >= 0.f);
            if (e[j] < -87.3f) CHECK(ey[j] <= 1.2e-38f);
        }
        CHECK(ey[0] == ey[8]);
        CHECK(ey[0] == doctest::Approx(1.0 / 3.0).epsilon(1e-6));
        CHECK(ey[10] == doctest::Approx(std::exp(-80.0) / 3.0).epsilon(1e-6));
    }
}

TEST_CASE("kernels: fused attention (kernel_table::attention) matches a double reference, every path that has one") {
    int tested = 0;
    for (auto a : bd::available_isas()) {
        const auto& kt = bd::kernels_for(a);
        if (!kt.attention) continue;
        CAPTURE(bertlet::isa_name(a));
        for (std::ptrdiff_t D : {16, 32, 48, 64}) {
            for (std::ptrdiff_t L : {1, 2, 5, 12, 13, 16, 17, 31, 33, 64, 100, 128, 130, 257}) {
                CAPTURE(D);
                CAPTURE(L);
                const std::ptrdiff_t ld = 3 * D + 5, ldc = D + 7;  // Q|K|V-like strides, padded output rows
                const unsigned seed = 1000u + unsigned(D * 1000 + L);
                auto q = rand_vec(static_cast<std::size_t>(L * ld), seed, -2.f, 2.f);
                auto k = rand_vec(static_cast<std::size_t>(L * ld), seed + 1, -2.f, 2.f);
                auto v = rand_vec(static_cast<std::size_t>(L * ld), seed + 2);
                const std::size_t ns = bd::attention_scratch_floats(static_cast<std::size_t>(L), static_cast<std::size_t>(D));
                std::vector<float> scratch(ns + 64, -3.f);
                std::vector<float> ctx(static_cast<std::size_t>(L * ldc), 777.f);
                const float scale = 1.0f / std::sqrt(float(D));
                kt.attention(q.data(), k.data(), v.data(), ld, ctx.data(), ldc, L, D, scale, scratch.data());
                const auto want = bertlet_test::attention_ref(q, k, v, ld, L, D, scale);
                double worst = 0;
                for (std::ptrdiff_t i = 0; i < L; ++i)
                    for (std::ptrdiff_t t = 0; t < D; ++t)
                        worst = std::max(worst, std::fabs(ctx[i * ldc + t] - want[i * D + t]));
                CHECK(worst <= 2e-6);
                bool pad_kept = true;  // columns past D of each output row are never written
                for (std::ptrdiff_t i = 0; i < L; ++i)
                    for (std::ptrdiff_t t = D; t < ldc; ++t) pad_kept = pad_kept && ctx[i * ldc + t] == 777.f;
                CHECK(pad_kept);
                bool scratch_kept = true;  // nothing past attention_scratch_floats(L, D)
                for (std::size_t i = ns; i < scratch.size(); ++i) scratch_kept = scratch_kept && scratch[i] == -3.f;
                CHECK(scratch_kept);
                ++tested;
            }
        }
    }
    // avx2, avx512 and neon carry one (x86 hosts without AVX2 and non-aarch64 builds have none)
    if (bertlet::cpu().supports(bertlet::isa::avx2) || bertlet::cpu().supports(bertlet::isa::neon)) CHECK(tested > 0);
}

TEST_CASE("kernels: thread pool runs every task exactly once, repeatedly") {
    for (std::size_t threads : {1u, 2u, 4u}) {
        bd::thread_pool pool(threads);
        CHECK(pool.size() == threads);
        for (int rep = 0; rep < 50; ++rep) {
            std::vector<int> hits(37, 0);
            std::atomic<bool> bad_slot{false};
            pool.run(hits.size(), [&](std::size_t t, std::size_t slot) {
                if (slot >= threads) bad_slot = true;
                ++hits[t];
            });
            CHECK(!bad_slot);
            for (int h : hits) CHECK(h == 1);
        }
    }
}

TEST_CASE("kernels: f16 -> f32 conversion is exact for all 65536 inputs, every path") {
    using bd::f16_to_f32;
    auto bits = [](float f) {
        std::uint32_t u;
        std::memcpy(&u, &f, 4);
        return u;
    };
    CHECK(f16_to_f32(0x3C00) == 1.0f);
    CHECK(f16_to_f32(0xC000) == -2.0f);
    CHECK(f16_to_f32(0x7BFF) == 65504.0f);
    CHECK(f16_to_f32(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
    CHECK(f16_to_f32(0x03FF) == std::ldexp(1023.0f, -24));  // largest subnormal
    CHECK(f16_to_f32(0x0400) == std::ldexp(1.0f, -14));  // smallest normal
    CHECK(bits(f16_to_f32(0x8000)) == 0x80000000u);       // -0
    CHECK(std::isinf(f16_to_f32(0x7C00)));
    CHECK(std::isnan(f16_to_f32(0x7E00)));
    std::vector<std::uint16_t> in(65536 + 5);
    for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint16_t>(i);
    std::vector<float> ref(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) ref[i] = f16_to_f32(in[i]);
    // every finite f16 round-trips through double arithmetic: sign * mantissa * 2^exp
    for (std::uint32_t h = 0; h < 65536; ++h) {
        const std::uint32_t e = (h >> 10) & 31u, mant = h & 1023u;
        if (e == 31) continue;
        const double v = e == 0 ? std::ldexp(double(mant), -24) : std::ldexp(double(1024 + mant), int(e) - 25);
        if (double(ref[h]) != ((h & 0x8000u) ? -v : v)) {
            FAIL_CHECK("f16 " << h << " -> " << ref[h] << ", expected " << v);
            break;
        }
    }
    for (const auto arch : bd::available_isas()) {
        CAPTURE(bertlet::isa_name(arch));
        const auto& K = bd::kernels_for(arch);
        for (std::ptrdiff_t n : {std::ptrdiff_t(65536 + 5), std::ptrdiff_t(1), std::ptrdiff_t(7), std::ptrdiff_t(17)}) {
            std::vector<float> out(in.size() + 1, -123.0f);
            K.cvt_f16(out.data(), in.data(), n);
            std::size_t bad = 0;
            for (std::ptrdiff_t i = 0; i < n; ++i) bad += bits(out[i]) != bits(ref[i]);
            CHECK(bad == 0);
            CHECK(out[n] == -123.0f);  // nothing written past n
        }
    }
}
