// int8 GEMM (include/bertlet/kernels/gemm_s8.hpp): every path the CPU has must reproduce the scalar reference
// bit-exactly (integer sums and f32 outputs), the packing must match an independent computation, vpmaddubsw
// saturation must never occur, and the quantization error must stay within what per-row int8 allows.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bertlet/kernels/gemm_s8.hpp"

namespace {

using bertlet::s8_path;

std::vector<float> gaussian(std::size_t n, std::uint32_t seed, float sd = 1.f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// Independent reference: quantize X exactly as documented, multiply against the unpacked int8 weights.
void reference_s32(const std::vector<float>& X, std::size_t M, std::size_t K, std::size_t ldx,
                   const std::vector<std::int8_t>& qw, std::size_t N, std::vector<std::int32_t>& C,
                   std::vector<float>& sx) {
    C.assign(M * N, 0);
    sx.assign(M, 0.f);
    std::vector<int> qx(K);
    for (std::size_t m = 0; m < M; ++m) {
        float amax = 0.f;
        for (std::size_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(X[m * ldx + k]));
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        for (std::size_t k = 0; k < K; ++k)
            qx[k] = static_cast<int>(std::min(127.f, std::max(-127.f, std::nearbyint(X[m * ldx + k] * inv))));
        for (std::size_t n = 0; n < N; ++n) {
            std::int32_t acc = 0;
            for (std::size_t k = 0; k < K; ++k) acc += qx[k] * qw[n * K + k];
            C[m * N + n] = acc;
        }
    }
}

std::vector<s8_path> supported_paths() {
    std::vector<s8_path> v;
    for (s8_path p : bertlet::all_s8_paths) {
        if (bertlet::s8_path_supported(p))
            v.push_back(p);
        else
            MESSAGE("int8 path ", std::string(bertlet::s8_path_name(p)), " not supported by this CPU: skipped");
    }
    return v;
}

}  // namespace

TEST_CASE("gemm_s8: packing layout, scales and row sums") {
    const std::size_t N = 37, K = 7;
    auto W = gaussian(N * K, 1);
    std::vector<std::int8_t> q(N * K);
    std::vector<float> s(N);
    bertlet::quantize_weights_s8(W.data(), N, K, K, q.data(), s.data());
    auto pk = bertlet::pack_s8(W.data(), N, K);
    CHECK(pk.k_padded == 8);
    CHECK(pk.data.size() == 48 * 8);
    CHECK(pk.scales.size() == 48);
    for (std::size_t n = 0; n < 48; ++n) {
        std::int32_t sum = 0;
        for (std::size_t k = 0; k < 8; ++k) {
            const std::int8_t expect = (n < N && k < K) ? q[n * K + k] : 0;
            CHECK(pk.data[(n / 16) * 16 * 8 + (k / 4) * 64 + (n % 16) * 4 + k % 4] == expect);
            sum += expect;
        }
        CHECK(pk.row_sums[n] == sum);
        CHECK(pk.scales[n] == (n < N ? s[n] : 0.f));
    }
    for (std::size_t n = 0; n < N; ++n) {
        float amax = 0.f;
        for (std::size_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(W[n * K + k]));
        CHECK(s[n] == amax / 127.f);
        for (std::size_t k = 0; k < K; ++k) {
            CHECK(std::abs(q[n * K + k]) <= 127);
            CHECK(std::fabs(q[n * K + k] * s[n] - W[n * K + k]) <= 0.5f * s[n] * 1.0001f);
        }
    }
}

TEST_CASE("gemm_s8: every path equals the reference bit-exactly (odd shapes)") {
    const auto paths = supported_paths();
    const std::size_t Ms[] = {1, 3, 17, 48, 128};  // 48: a 32-row and a 16-row AMX block
    const std::size_t Ns[] = {1, 17, 48, 50};
    const std::size_t Ks[] = {1, 7, 384, 1536};
    std::uint32_t seed = 100;
    for (std::size_t K : Ks)
        for (std::size_t N : Ns) {
            auto W = gaussian(N * K, ++seed, 0.05f);
            std::vector<std::int8_t> qw(N * K);
            std::vector<float> sw(N);
            bertlet::quantize_weights_s8(W.data(), N, K, K, qw.data(), sw.data());
            const auto pk = bertlet::pack_s8(qw.data(), sw.data(), N, K);
            const auto bias = gaussian(N, ++seed);
            for (std::size_t M : Ms) {
                const std::size_t ldx = K + 3, ldy = N + 5;
                auto X = gaussian(M * ldx, ++seed, 2.f);
                if (M > 2) X[2 * ldx + K / 2] = 40.f;  // an outlier row
                if (M > 1)
                    for (std::size_t k = 0; k < K; ++k) X[ldx + k] = 0.f;  // an all-zero row
                std::vector<std::int32_t> Cref;
                std::vector<float> sxref;
                reference_s32(X, M, K, ldx, qw, N, Cref, sxref);
                std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K) + 1);
                std::vector<float> Yref, Yref_nb;
                for (s8_path p : paths) {
                    const std::string path_name = bertlet::s8_path_name(p);
                    CAPTURE(path_name);
                    CAPTURE(M);
                    CAPTURE(N);
                    CAPTURE(K);
                    std::vector<std::int32_t> C(M * (N + 2), -1);
                    std::vector<float> sx(M, -1.f);
                    // +1: deliberately misaligned scratch
                    bertlet::gemm_s8_s32(p, X.data(), M, K, ldx, pk.view(), C.data(), N + 2, sx.data(),
                                         scratch.data() + 1);
                    bool same = true;
                    for (std::size_t m = 0; m < M; ++m) {
                        same = same && sx[m] == sxref[m];
                        for (std::size_t n = 0; n < N; ++n) same = same && C[m * (N + 2) + n] == Cref[m * N + n];
                        same = same && C[m * (N + 2) + N] == -1 && C[m * (N + 2) + N + 1] == -1;
                    }
                    CHECK(same);
                    std::vector<float> Y(M * ldy, 7.f), Ynb(M * ldy, 7.f);
                    bertlet::gemm_s8(p, X.data(), M, K, ldx, pk.view(), bias.data(), Y.data(), ldy,
                                     scratch.data());
                    bertlet::gemm_s8(p, X.data(), M, K, ldx, pk.view(), nullptr, Ynb.data(), ldy, scratch.data());
                    if (p == s8_path::scalar) {
                        Yref = Y;
                        Yref_nb = Ynb;
                        // the f32 epilogue itself: fma(float(acc), sx * sw, bias)
                        bool ok = true;
                        for (std::size_t m = 0; m < M; ++m)
                            for (std::size_t n = 0; n < N; ++n)
                                ok = ok && Y[m * ldy + n] == std::fma(static_cast<float>(Cref[m * N + n]),
                                                                      sxref[m] * sw[n], bias[n]);
                        CHECK(ok);
                    } else {
                        CHECK(std::memcmp(Y.data(), Yref.data(), Y.size() * sizeof(float)) == 0);
                        CHECK(std::memcmp(Ynb.data(), Yref_nb.data(), Ynb.size() * sizeof(float)) == 0);
                    }
                    bool pad_untouched = true;
                    for (std::size_t m = 0; m < M; ++m)
                        for (std::size_t n = N; n < ldy; ++n) pad_untouched = pad_untouched && Y[m * ldy + n] == 7.f;
                    CHECK(pad_untouched);
                }
            }
        }
}

#if defined(BERTLET_S8_X86)
namespace {
__attribute__((target("avx2"))) int naive_maddubs_pair(int u, int s) {
    const __m256i r = _mm256_maddubs_epi16(_mm256_set1_epi8(static_cast<char>(u)), _mm256_set1_epi8(static_cast<char>(s)));
    return static_cast<std::int16_t>(_mm256_extract_epi16(r, 0));
}
}  // namespace
#endif

TEST_CASE("gemm_s8: saturation-adversarial inputs are exact on every path") {
#if defined(BERTLET_S8_X86)
    if (bertlet::cpu().has_avx2_path()) {
        // The hazard being avoided: a plain u8 x s8 vpmaddubsw of 255 * 127 + 255 * 127 saturates to 32767.
        CHECK(naive_maddubs_pair(255, 127) == 32767);
        CHECK(naive_maddubs_pair(255, -127) == -32768);
    }
#endif
    const auto paths = supported_paths();
    for (std::size_t K : {4u, 7u, 384u, 1536u}) {
        const std::size_t N = 33, M = 9;
        // weights at +-max: qw = +-127 (row 0 all +, row 1 all -, others alternating / mixed)
        std::vector<float> W(N * K);
        for (std::size_t n = 0; n < N; ++n)
            for (std::size_t k = 0; k < K; ++k) {
                float v = 1.f;
                if (n == 1) v = -1.f;
                if (n >= 2) v = ((k + n) % 3 == 0) ? -1.f : 1.f;
                W[n * K + k] = v;
            }
        // activations at +-max: qx = +-127 (VNNI feeds u8 255 / 1), rows with both signs and equal magnitudes
        std::vector<float> X(M * K);
        for (std::size_t m = 0; m < M; ++m)
            for (std::size_t k = 0; k < K; ++k) {
                float v = 3.f;
                if (m == 1) v = -3.f;
                if (m >= 2) v = ((k * (m + 1)) % 5 < 2) ? -3.f : 3.f;
                X[m * K + k] = v;
            }
        const auto pk = bertlet::pack_s8(W.data(), N, K);
        std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
        for (s8_path p : paths) {
            const std::string path_name = bertlet::s8_path_name(p);
                    CAPTURE(path_name);
            CAPTURE(K);
            std::vector<std::int32_t> C(M * N);
            bertlet::gemm_s8_s32(p, X.data(), M, K, K, pk.view(), C.data(), N, nullptr, scratch.data());
            bool ok = true;
            for (std::size_t m = 0; m < M; ++m)
                for (std::size_t n = 0; n < N; ++n) {
                    std::int64_t e = 0;
                    for (std::size_t k = 0; k < K; ++k)
                        e += (X[m * K + k] > 0 ? 127 : -127) * (W[n * K + k] > 0 ? 127 : -127);
                    ok = ok && C[m * N + n] == e;
                }
            CHECK(ok);
            CHECK(C[0] == static_cast<std::int32_t>(K) * 127 * 127);   // all 255 (u8) x 127
            CHECK(C[1] == -static_cast<std::int32_t>(K) * 127 * 127);  // all 255 (u8) x -127
        }
    }
}

TEST_CASE("gemm_s8: quantization error against an f32 GEMM on Gaussian data") {
    const auto paths = supported_paths();
    for (std::size_t K : {384u, 1536u}) {
        const std::size_t M = 64, N = 384;
        const auto X = gaussian(M * K, 7, 1.f);
        const auto W = gaussian(N * K, 8, 0.05f);
        const auto b = gaussian(N, 9, 0.1f);
        const auto pk = bertlet::pack_s8(W.data(), N, K);
        std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
        for (s8_path p : paths) {
            const std::string path_name = bertlet::s8_path_name(p);
                    CAPTURE(path_name);
            CAPTURE(K);
            std::vector<float> Y(M * N);
            bertlet::gemm_s8(p, X.data(), M, K, K, pk.view(), b.data(), Y.data(), N, scratch.data());
            double worst = 0.0, sum_rel = 0.0;
            for (std::size_t m = 0; m < M; ++m) {
                std::vector<double> ref(N);
                double rmax = 0.0, emax = 0.0;
                for (std::size_t n = 0; n < N; ++n) {
                    double acc = b[n];
                    for (std::size_t k = 0; k < K; ++k) acc += double(X[m * K + k]) * W[n * K + k];
                    ref[n] = acc;
                    rmax = std::max(rmax, std::fabs(acc));
                }
                for (std::size_t n = 0; n < N; ++n) emax = std::max(emax, std::fabs(Y[m * N + n] - ref[n]));
                worst = std::max(worst, emax / rmax);
                sum_rel += emax / rmax;
            }
            MESSAGE(std::string(bertlet::s8_path_name(p)), " K=", K, ": max |err| / max |Y| per row: worst ", worst, ", mean ",
                    sum_rel / M);
            CHECK(worst <= 0.02);
        }
    }
}

TEST_CASE("gemm_s8: errors and degenerate inputs") {
    const std::size_t N = 20, K = 10, M = 2;
    const auto W = gaussian(N * K, 3);
    const auto pk = bertlet::pack_s8(W.data(), N, K);
    std::vector<float> X(M * K, 0.f), Y(M * N), b = gaussian(N, 4);
    std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
    CHECK_THROWS_AS(bertlet::gemm_s8(s8_path::scalar, X.data(), M, K - 1, K, pk.view(), nullptr, Y.data(), N,
                                     scratch.data()),
                    bertlet::input_error);
    CHECK_THROWS_AS(bertlet::gemm_s8(s8_path::scalar, X.data(), M, K, K, pk.view(), nullptr, Y.data(), N - 1,
                                     scratch.data()),
                    bertlet::input_error);
    for (s8_path p : bertlet::all_s8_paths) {
        if (!bertlet::s8_path_supported(p)) {
            CHECK_THROWS_AS(bertlet::gemm_s8(p, X.data(), M, K, K, pk.view(), nullptr, Y.data(), N, scratch.data()),
                            bertlet::input_error);
            continue;
        }
        // all-zero X: the output is exactly the bias
        bertlet::gemm_s8(p, X.data(), M, K, K, pk.view(), b.data(), Y.data(), N, scratch.data());
        bool ok = true;
        for (std::size_t m = 0; m < M; ++m)
            for (std::size_t n = 0; n < N; ++n) ok = ok && Y[m * N + n] == b[n];
        CHECK(ok);
        bertlet::gemm_s8(p, X.data(), 0, K, K, pk.view(), b.data(), Y.data(), N, scratch.data());  // M = 0: no-op
    }
    // the dispatcher picks a supported path for every ISA level
    for (auto a : {bertlet::isa::scalar, bertlet::isa::avx2, bertlet::isa::avx512, bertlet::isa::neon})
        CHECK(bertlet::s8_path_supported(bertlet::s8_path_for(a)));
    MESSAGE("active int8 path: ", std::string(bertlet::s8_path_name(bertlet::active_s8_path())));
}

// ---------------------------------------------------------------------------------------------------------------
// Split quantization (act_scale smoothing, quantize once / reuse), fused epilogues, sub-ranges and threads.

namespace {

using bertlet::detail::activation;

struct s8_problem {
    std::size_t M, K, N, ldx, ldy;
    std::vector<float> X, W, b, R, cs;
    std::vector<std::int8_t> qw;
    std::vector<float> sw;
    bertlet::packed_s8_buffer pk;
    s8_problem(std::size_t M_, std::size_t K_, std::size_t N_, std::uint32_t seed)
        : M(M_), K(K_), N(N_), ldx(K_ + 5), ldy(N_ + 3) {
        X = gaussian(M * ldx, seed, 1.5f);
        if (M > 2) X[2 * ldx + K / 3] = 25.f;  // an outlier
        if (M > 1)
            for (std::size_t k = 0; k < K; ++k) X[ldx + k] = 0.f;  // an all-zero row
        W = gaussian(N * K, seed + 1, 0.08f);
        b = gaussian(N, seed + 2, 0.5f);
        R = gaussian(M * ldy, seed + 3, 1.f);
        cs.resize(K);
        std::mt19937 rng(seed + 4);
        std::uniform_real_distribution<float> u(0.05f, 4.f);
        for (auto& c : cs) c = u(rng);
        qw.resize(N * K);
        sw.resize(N);
        bertlet::quantize_weights_s8(W.data(), N, K, K, qw.data(), sw.data());
        pk = bertlet::pack_s8(qw.data(), sw.data(), N, K);
    }
};

// Quantization as documented (xs = x * act_scale, then per-row symmetric), integer sums against the unpacked weights.
void reference_quantize(const s8_problem& P, const float* cs, std::vector<int>& qx, std::vector<float>& sx) {
    qx.assign(P.M * P.K, 0);
    sx.assign(P.M, 0.f);
    for (std::size_t m = 0; m < P.M; ++m) {
        std::vector<float> xs(P.K);
        float amax = 0.f;
        for (std::size_t k = 0; k < P.K; ++k) {
            xs[k] = cs ? P.X[m * P.ldx + k] * cs[k] : P.X[m * P.ldx + k];
            amax = std::max(amax, std::fabs(xs[k]));
        }
        const float inv = amax > 0.f ? 127.f / amax : 0.f;
        sx[m] = amax / 127.f;
        for (std::size_t k = 0; k < P.K; ++k)
            qx[m * P.K + k] = static_cast<int>(std::min(127.f, std::max(-127.f, std::nearbyint(xs[k] * inv))));
    }
}

std::vector<std::int32_t> reference_sums(const s8_problem& P, const std::vector<int>& qx) {
    std::vector<std::int32_t> C(P.M * P.N, 0);
    for (std::size_t m = 0; m < P.M; ++m)
        for (std::size_t n = 0; n < P.N; ++n) {
            std::int32_t acc = 0;
            for (std::size_t k = 0; k < P.K; ++k) acc += qx[m * P.K + k] * P.qw[n * P.K + k];
            C[m * P.N + n] = acc;
        }
    return C;
}

// The documented epilogue before the activation, written out plainly (volatile: no FMA contraction by the compiler).
float reference_pre_act(std::int32_t acc, float sx, float sw, const float* bias, const float* res) {
    volatile float y = bias ? std::fma(static_cast<float>(acc), sx * sw, *bias) : static_cast<float>(acc) * (sx * sw);
    if (res) y = y + *res;
    return y;
}

double reference_gelu(double y, activation a) {
    if (a == activation::gelu_erf) return 0.5 * y * (1.0 + std::erf(y / std::sqrt(2.0)));
    if (a == activation::gelu_tanh)
        return 0.5 * y * (1.0 + std::tanh(0.7978845608028654 * (y + 0.044715 * y * y * y)));
    return y;
}

const char* act_name(activation a) {
    return a == activation::none ? "none" : a == activation::gelu_erf ? "gelu_erf" : "gelu_tanh";
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("gemm_s8: act_scale smoothing quantizes xs = x * act_scale, bit-identical on every path") {
    const auto paths = supported_paths();
    for (std::size_t K : {1u, 7u, 13u, 64u, 100u, 384u, 1541u})
        for (std::size_t M : {1u, 2u, 5u, 13u}) {
            const s8_problem P(M, K, 37, static_cast<std::uint32_t>(1000 + K * 7 + M));
            std::vector<int> qx;
            std::vector<float> sxref;
            reference_quantize(P, P.cs.data(), qx, sxref);
            const auto Cref = reference_sums(P, qx);
            std::vector<float> Yscalar;
            for (s8_path p : paths) {
                const std::string path_name = bertlet::s8_path_name(p);
                CAPTURE(path_name);
                CAPTURE(M);
                CAPTURE(K);
                std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K) + 3);
                const auto A = bertlet::quantize_activations_s8(p, P.X.data(), M, K, P.ldx, P.cs.data(),
                                                                scratch.data() + 3);
                REQUIRE(A.M == M);
                REQUIRE(A.K == K);
                REQUIRE(A.k_padded == bertlet::s8_pad_k(K));
                CHECK(A.u8 == bertlet::s8_path_uses_u8(p));
                bool q_ok = true;
                const int flip = A.u8 ? 128 : 0;
                for (std::size_t m = 0; m < M; ++m) {
                    q_ok = q_ok && A.sx[m] == sxref[m];
                    for (std::size_t k = 0; k < A.k_padded; ++k) {
                        const int want = k < K ? qx[m * K + k] : 0;
                        const int got = A.u8 ? int(A.q[m * A.ldq + k]) - flip
                                             : int(static_cast<std::int8_t>(A.q[m * A.ldq + k]));
                        q_ok = q_ok && got == want;
                    }
                }
                CHECK(q_ok);
                std::vector<std::int32_t> C(M * P.N);
                bertlet::gemm_s8_s32(p, P.X.data(), M, K, P.ldx, P.pk.view(), C.data(), P.N, nullptr, scratch.data(),
                                     P.cs.data());
                CHECK(C == Cref);
                std::vector<float> Y(M * P.ldy, 7.f);
                bertlet::gemm_s8(p, P.X.data(), M, K, P.ldx, P.cs.data(), P.pk.view(),
                                 bertlet::s8_epilogue{P.b.data(), nullptr, 0, activation::none}, Y.data(), P.ldy,
                                 scratch.data());
                bool y_ok = true;
                for (std::size_t m = 0; m < M; ++m)
                    for (std::size_t n = 0; n < P.N; ++n)
                        y_ok = y_ok && Y[m * P.ldy + n] == reference_pre_act(Cref[m * P.N + n], sxref[m], P.sw[n],
                                                                             &P.b[n], nullptr);
                CHECK(y_ok);
                if (p == s8_path::scalar)
                    Yscalar = Y;
                else
                    CHECK(same_bytes(Y, Yscalar));
            }
        }
}

TEST_CASE("gemm_s8: smoothing with W / act_scale approximates X W^T") {
    // X with a few outlier channels: smoothing them away (act_scale = 1 / s, W' = W * s) lowers the error
    const std::size_t M = 32, K = 384, N = 64;
    auto X = gaussian(M * K, 21, 0.5f);
    for (std::size_t m = 0; m < M; ++m) X[m * K + 5] *= 60.f, X[m * K + 77] *= 40.f;
    const auto W = gaussian(N * K, 22, 0.05f);
    // SmoothQuant, alpha = 0.5: s_k = sqrt(max|X[:, k]| / max|W[:, k]|), act_scale = 1 / s
    std::vector<float> cs(K);
    for (std::size_t k = 0; k < K; ++k) {
        float xm = 0.f, wm = 0.f;
        for (std::size_t m = 0; m < M; ++m) xm = std::max(xm, std::fabs(X[m * K + k]));
        for (std::size_t n = 0; n < N; ++n) wm = std::max(wm, std::fabs(W[n * K + k]));
        cs[k] = static_cast<float>(1.0 / std::sqrt(double(xm) / double(wm)));
    }
    std::vector<float> Ws(W);
    for (std::size_t n = 0; n < N; ++n)
        for (std::size_t k = 0; k < K; ++k) Ws[n * K + k] = W[n * K + k] / cs[k];
    const auto pk = bertlet::pack_s8(W.data(), N, K), pks = bertlet::pack_s8(Ws.data(), N, K);
    std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
    const s8_path p = bertlet::active_s8_path();
    std::vector<float> Y(M * N), Ys(M * N);
    bertlet::gemm_s8(p, X.data(), M, K, K, pk.view(), nullptr, Y.data(), N, scratch.data());
    bertlet::gemm_s8(p, X.data(), M, K, K, cs.data(), pks.view(), bertlet::s8_epilogue{}, Ys.data(), N,
                     scratch.data());
    double err = 0, err_s = 0, ref_max = 0;
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t n = 0; n < N; ++n) {
            double r = 0;
            for (std::size_t k = 0; k < K; ++k) r += double(X[m * K + k]) * W[n * K + k];
            ref_max = std::max(ref_max, std::fabs(r));
            err = std::max(err, std::fabs(Y[m * N + n] - r));
            err_s = std::max(err_s, std::fabs(Ys[m * N + n] - r));
        }
    MESSAGE("max |err| / max |Y|: plain ", err / ref_max, ", smoothed ", err_s / ref_max);
    CHECK(err_s / ref_max <= 0.02);
    CHECK(err_s < err);
}

TEST_CASE("gemm_s8: quantize once, reuse for several GEMMs; row-chunked quantization gives the same bytes") {
    const auto paths = supported_paths();
    const std::size_t M = 13, K = 70;
    const s8_problem P1(M, K, 50, 300), P2(M, K, 16, 301), P3(M, K, 3, 302);  // X of P1, three weights
    for (s8_path p : paths) {
        const std::string path_name = bertlet::s8_path_name(p);
        CAPTURE(path_name);
        std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K)), scratch2(scratch.size());
        const auto A = bertlet::quantize_activations_s8(p, P1.X.data(), M, K, P1.ldx, nullptr, scratch.data());
        for (const s8_problem* W : {&P1, &P2, &P3}) {
            std::vector<float> Yq(M * W->ldy, 7.f), Y1(M * W->ldy, 7.f);
            const bertlet::s8_epilogue ep{W->b.data(), nullptr, 0, activation::none};
            bertlet::gemm_s8_q(p, A, W->pk.view(), ep, Yq.data(), W->ldy);
            bertlet::gemm_s8(p, P1.X.data(), M, K, P1.ldx, nullptr, W->pk.view(), ep, Y1.data(), W->ldy,
                             scratch2.data());
            CHECK(same_bytes(Yq, Y1));
        }
        // the same A feeds every path with the same form (u8 for the VNNI paths, s8 for the others)
        for (s8_path o : paths) {
            if (bertlet::s8_path_uses_u8(o) != bertlet::s8_path_uses_u8(p)) {
                std::vector<float> Y(M * P1.ldy);
                CHECK_THROWS_AS(bertlet::gemm_s8_q(o, A, P1.pk.view(), {}, Y.data(), P1.ldy), bertlet::input_error);
                continue;
            }
            std::vector<float> Ya(M * P1.ldy, 7.f), Yo(M * P1.ldy, 7.f);
            bertlet::gemm_s8_q(p, A, P1.pk.view(), {}, Ya.data(), P1.ldy);
            bertlet::gemm_s8_q(o, A, P1.pk.view(), {}, Yo.data(), P1.ldy);
            CHECK(same_bytes(Ya, Yo));
        }
        // row chunks (any split) -> the same bytes as one call
        for (std::size_t chunk : {1u, 2u, 5u, 13u}) {
            std::vector<std::uint8_t> s3(bertlet::gemm_s8_scratch_bytes(M, K), 0xAB);
            const auto B = bertlet::s8_activations_layout(p, M, K, s3.data());
            for (std::size_t m0 = 0; m0 < M; m0 += chunk)
                bertlet::quantize_activations_s8_rows(p, P1.X.data(), P1.ldx, P1.cs.data(), B, m0,
                                                      std::min(M, m0 + chunk));
            const auto C = bertlet::quantize_activations_s8(p, P1.X.data(), M, K, P1.ldx, P1.cs.data(),
                                                            scratch2.data());
            CHECK(std::memcmp(B.q, C.q, M * C.ldq) == 0);
            CHECK(std::memcmp(B.sx, C.sx, M * sizeof(float)) == 0);
        }
        CHECK_THROWS_AS(bertlet::quantize_activations_s8_rows(p, P1.X.data(), P1.ldx, nullptr, A, 3, M + 1),
                        bertlet::input_error);
    }
}

TEST_CASE("gemm_s8: fused epilogues (bias, residual, GELU) against a plain reference, all paths bit-identical") {
    const auto paths = supported_paths();
    const activation acts[] = {activation::none, activation::gelu_erf, activation::gelu_tanh};
    for (std::size_t M : {1u, 2u, 3u, 5u, 13u, 40u})
        for (std::size_t N : {1u, 16u, 33u, 50u})
            for (std::size_t K : {3u, 64u, 387u}) {
                const s8_problem P(M, K, N, static_cast<std::uint32_t>(5000 + M * 131 + N * 17 + K));
                std::vector<int> qx;
                std::vector<float> sx;
                reference_quantize(P, nullptr, qx, sx);
                const auto Cref = reference_sums(P, qx);
                for (int bias = 0; bias < 2; ++bias)
                    for (int res = 0; res < 2; ++res)
                        for (activation act : acts) {
                            CAPTURE(M);
                            CAPTURE(N);
                            CAPTURE(K);
                            CAPTURE(bias);
                            CAPTURE(res);
                            const std::string an = act_name(act);
                            CAPTURE(an);
                            bertlet::s8_epilogue ep;
                            ep.bias = bias ? P.b.data() : nullptr;
                            ep.residual = res ? P.R.data() : nullptr;
                            ep.ldr = P.ldy;
                            ep.act = act;
                            std::vector<float> Yscalar;
                            for (s8_path p : paths) {
                                const std::string path_name = bertlet::s8_path_name(p);
                                CAPTURE(path_name);
                                std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
                                const auto A =
                                    bertlet::quantize_activations_s8(p, P.X.data(), M, K, P.ldx, nullptr, scratch.data());
                                std::vector<float> Y(M * P.ldy, 7.f);
                                bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Y.data(), P.ldy);
                                bool ok = true, pad = true;
                                double worst = 0;
                                for (std::size_t m = 0; m < M; ++m) {
                                    for (std::size_t n = 0; n < N; ++n) {
                                        const float pre = reference_pre_act(Cref[m * N + n], sx[m], P.sw[n],
                                                                            bias ? &P.b[n] : nullptr,
                                                                            res ? &P.R[m * P.ldy + n] : nullptr);
                                        const float got = Y[m * P.ldy + n];
                                        if (act == activation::none) {
                                            ok = ok && got == pre;
                                        } else {
                                            const double want = reference_gelu(pre, act);
                                            const double err = std::fabs(got - want) / (1.0 + std::fabs(want));
                                            worst = std::max(worst, err);
                                        }
                                    }
                                    for (std::size_t n = N; n < P.ldy; ++n) pad = pad && Y[m * P.ldy + n] == 7.f;
                                }
                                CHECK(ok);
                                CHECK(pad);
                                CHECK(worst <= 9e-5);  // the int8 GELU: |error| <= 8.4e-5 (gemm_s8.hpp)
                                if (p == s8_path::scalar)
                                    Yscalar = Y;
                                else
                                    CHECK(same_bytes(Y, Yscalar));
                                if (res) {  // in place: the residual is Y itself
                                    std::vector<float> Yi(P.R);
                                    bertlet::s8_epilogue ei = ep;
                                    ei.residual = Yi.data();
                                    bertlet::gemm_s8_q(p, A, P.pk.view(), ei, Yi.data(), P.ldy);
                                    bool same = true;
                                    for (std::size_t m = 0; m < M; ++m)
                                        for (std::size_t n = 0; n < N; ++n)
                                            same = same && std::memcmp(&Yi[m * P.ldy + n], &Y[m * P.ldy + n], 4) == 0;
                                    CHECK(same);
                                }
                            }
                        }
            }
}

TEST_CASE("gemm_s8: GELU epilogue over a wide input range is bit-identical on every path") {
    // pre-activations from about -60 to 60 (exp / erf clamps, tiny tails, NaN-free), every path the same bits
    const auto paths = supported_paths();
    const std::size_t M = 7, K = 8, N = 200;
    std::vector<float> X(M * K), W(N * K), b(N);
    for (std::size_t m = 0; m < M; ++m)
        for (std::size_t k = 0; k < K; ++k) X[m * K + k] = float(m + 1) * (k % 2 ? 1.f : -0.5f);
    for (std::size_t n = 0; n < N; ++n) {
        for (std::size_t k = 0; k < K; ++k) W[n * K + k] = (float(n) - 100.f) * 0.05f * float(k + 1) / 8.f;
        b[n] = float(int(n % 7) - 3) * 0.37f;
    }
    const auto pk = bertlet::pack_s8(W.data(), N, K);
    for (activation act : {activation::gelu_erf, activation::gelu_tanh}) {
        std::vector<float> Yscalar;
        for (s8_path p : paths) {
            std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
            std::vector<float> Y(M * N);
            bertlet::gemm_s8(p, X.data(), M, K, K, nullptr, pk.view(), bertlet::s8_epilogue{b.data(), nullptr, 0, act},
                             Y.data(), N, scratch.data());
            bool finite = true;
            for (float y : Y) finite = finite && std::isfinite(y);
            CHECK(finite);
            if (p == s8_path::scalar)
                Yscalar = Y;
            else
                CHECK(same_bytes(Y, Yscalar));
        }
    }
}

TEST_CASE("gemm_s8: row and panel sub-ranges compose to the whole output") {
    const auto paths = supported_paths();
    // K = 128: whole 64-k steps, so avx512_amx runs its tiles (16-row blocks from odd row origins, rows past them
    // and odd panels on the VNNI kernels); K = 130: every path's k tail
    for (std::size_t K : {130u, 128u}) {
    CAPTURE(K);
    const std::size_t M = 29, N = 150;  // 10 panels, the last one partial
    const s8_problem P(M, K, N, static_cast<std::uint32_t>(647 + K));
    const bertlet::s8_epilogue ep{P.b.data(), P.R.data(), P.ldy, activation::gelu_erf};
    const std::size_t panels = P.pk.view().panels();
    REQUIRE(panels == 10);
    for (s8_path p : paths) {
        const std::string path_name = bertlet::s8_path_name(p);
        CAPTURE(path_name);
        std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(M, K));
        const auto A = bertlet::quantize_activations_s8(p, P.X.data(), M, K, P.ldx, nullptr, scratch.data());
        std::vector<float> Yfull(M * P.ldy, 7.f);
        bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Yfull.data(), P.ldy);
        // a single block writes only its rectangle
        std::vector<float> Yb(M * P.ldy, 7.f);
        bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Yb.data(), P.ldy, 3, 11, 2, 5);
        bool rect = true;
        for (std::size_t m = 0; m < M; ++m)
            for (std::size_t n = 0; n < P.ldy; ++n) {
                const bool inside = m >= 3 && m < 11 && n >= 32 && n < 80;
                const float want = inside ? Yfull[m * P.ldy + n] : 7.f;
                rect = rect && std::memcmp(&Yb[m * P.ldy + n], &want, 4) == 0;
            }
        CHECK(rect);
        // uneven tilings of rows x panels
        for (std::size_t rs : {1u, 3u, 8u, 29u})
            for (std::size_t ps : {1u, 2u, 3u, 4u, 7u}) {
                std::vector<float> Y(M * P.ldy, 7.f);
                for (std::size_t m0 = 0; m0 < M; m0 += rs)
                    for (std::size_t p0 = 0; p0 < panels; p0 += ps)
                        bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Y.data(), P.ldy, m0, std::min(M, m0 + rs), p0,
                                           std::min(panels, p0 + ps));
                CAPTURE(rs);
                CAPTURE(ps);
                CHECK(same_bytes(Y, Yfull));
            }
        std::vector<float> Y(M * P.ldy);
        CHECK_THROWS_AS(bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Y.data(), P.ldy, 0, M + 1, 0, 1),
                        bertlet::input_error);
        CHECK_THROWS_AS(bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Y.data(), P.ldy, 0, M, 0, panels + 1),
                        bertlet::input_error);
        bertlet::gemm_s8_q(p, A, P.pk.view(), ep, Y.data(), P.ldy, 5, 5, 0, panels);  // empty: no-op
    }
    }
}

TEST_CASE("gemm_s8: thread counts 1..3 give identical outputs") {
    const auto paths = supported_paths();
    struct dims {
        std::size_t M, K, N;
    };
    // above and below the size where gemm_s8_parallel starts using the pool; M = 300 spans two row blocks
    for (const dims d : {dims{128, 384, 100}, dims{300, 64, 200}, dims{5, 40, 33}, dims{64, 1536, 48}}) {
        const s8_problem P(d.M, d.K, d.N, 900), P2(d.M, d.K, d.N + 20, 901), P3(d.M, d.K, 17, 902);
        for (s8_path p : paths) {
            if (p == s8_path::scalar && d.M * d.K * d.N > 2000000) continue;  // the reference is slow
            const std::string path_name = bertlet::s8_path_name(p);
            CAPTURE(path_name);
            CAPTURE(d.M);
            CAPTURE(d.K);
            CAPTURE(d.N);
            std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(d.M, d.K));
            const auto A = bertlet::quantize_activations_s8(p, P.X.data(), d.M, d.K, P.ldx, P.cs.data(), scratch.data());
            const bertlet::s8_epilogue e1{P.b.data(), P.R.data(), P.ldy, activation::gelu_erf};
            const bertlet::s8_epilogue e2{P2.b.data(), nullptr, 0, activation::none};
            const bertlet::s8_epilogue e3{nullptr, nullptr, 0, activation::gelu_tanh};
            std::vector<float> R1(d.M * P.ldy, 7.f), R2(d.M * P2.ldy, 7.f), R3(d.M * P3.ldy, 7.f);
            bertlet::gemm_s8_q(p, A, P.pk.view(), e1, R1.data(), P.ldy);
            bertlet::gemm_s8_q(p, A, P2.pk.view(), e2, R2.data(), P2.ldy);
            bertlet::gemm_s8_q(p, A, P3.pk.view(), e3, R3.data(), P3.ldy);
            for (std::size_t threads : {1u, 2u, 3u}) {
                CAPTURE(threads);
                bertlet::detail::thread_pool pool(threads);
                std::vector<std::uint8_t> s2(scratch.size());
                const auto B = bertlet::quantize_activations_s8_parallel(&pool, p, P.X.data(), d.M, d.K, P.ldx,
                                                                         P.cs.data(), s2.data());
                CHECK(std::memcmp(A.q, B.q, d.M * A.ldq) == 0);
                CHECK(std::memcmp(A.sx, B.sx, d.M * sizeof(float)) == 0);
                std::vector<float> Y1(d.M * P.ldy, 7.f), Y2(d.M * P2.ldy, 7.f), Y3(d.M * P3.ldy, 7.f);
                bertlet::gemm_s8_parallel(&pool, p, B, P.pk.view(), e1, Y1.data(), P.ldy);
                CHECK(same_bytes(Y1, R1));
                std::fill(Y1.begin(), Y1.end(), 7.f);
                const auto w1 = P.pk.view(), w2 = P2.pk.view(), w3 = P3.pk.view();
                const bertlet::s8_gemm g[3] = {{&w1, e1, Y1.data(), P.ldy}, {&w2, e2, Y2.data(), P2.ldy},
                                               {&w3, e3, Y3.data(), P3.ldy}};
                bertlet::gemm_s8_parallel(&pool, p, B, g, 3);
                CHECK(same_bytes(Y1, R1));
                CHECK(same_bytes(Y2, R2));
                CHECK(same_bytes(Y3, R3));
                // quantization inside the tasks (row-block split), one GEMM and three
                std::fill(Y1.begin(), Y1.end(), 7.f);
                std::fill(Y2.begin(), Y2.end(), 7.f);
                std::fill(Y3.begin(), Y3.end(), 7.f);
                std::vector<std::uint8_t> s3(scratch.size());
                const auto Q = bertlet::quantize_gemm_s8_parallel(&pool, p, P.X.data(), d.M, d.K, P.ldx, P.cs.data(),
                                                                  s3.data(), g, 3);
                CHECK(same_bytes(Y1, R1));
                CHECK(same_bytes(Y2, R2));
                CHECK(same_bytes(Y3, R3));
                CHECK(std::memcmp(A.q, Q.q, d.M * A.ldq) == 0);
                CHECK(std::memcmp(A.sx, Q.sx, d.M * sizeof(float)) == 0);
                std::fill(Y1.begin(), Y1.end(), 7.f);
                bertlet::quantize_gemm_s8_parallel(&pool, p, P.X.data(), d.M, d.K, P.ldx, P.cs.data(), s3.data(),
                                                   P.pk.view(), e1, Y1.data(), P.ldy);
                CHECK(same_bytes(Y1, R1));
                // a `pre` step produces each row block of X inside the job (as the encoder's LayerNorm does): X
                // starts as NaN, pre copies its rows in; every row exactly once, before that row is quantized
                std::vector<float> Xp(P.X.size(), std::nanf(""));
                std::vector<int> visits(d.M, 0);
                std::fill(Y1.begin(), Y1.end(), 7.f);
                std::fill(Y2.begin(), Y2.end(), 7.f);
                std::fill(Y3.begin(), Y3.end(), 7.f);
                bertlet::quantize_gemm_s8_parallel(&pool, p, Xp.data(), d.M, d.K, P.ldx, P.cs.data(), s3.data(), g, 3,
                                                   [&](std::size_t m0, std::size_t m1) {
                                                       for (std::size_t m = m0; m < m1; ++m) {
                                                           ++visits[m];
                                                           std::copy_n(P.X.data() + m * P.ldx, d.K,
                                                                       Xp.data() + m * P.ldx);
                                                       }
                                                   });
                CHECK(std::all_of(visits.begin(), visits.end(), [](int v) { return v == 1; }));
                CHECK(same_bytes(Y1, R1));
                CHECK(same_bytes(Y2, R2));
                CHECK(same_bytes(Y3, R3));
            }
            std::vector<float> Y0(d.M * P.ldy, 7.f);
            bertlet::gemm_s8_parallel(nullptr, p, A, P.pk.view(), e1, Y0.data(), P.ldy);  // no pool
            CHECK(same_bytes(Y0, R1));
        }
    }
}

TEST_CASE("gemm_s8: head-major output (s8_gemm::hd) is the row-major output rearranged, every path and thread count") {
    const auto paths = supported_paths();
    struct dims {
        std::size_t M, K, N;
    };
    for (const dims d : {dims{37, 96, 96}, dims{130, 64, 112}, dims{9, 40, 32}}) {
        const s8_problem P(d.M, d.K, d.N, 950);
        for (s8_path p : paths) {
            const std::string path_name = bertlet::s8_path_name(p);
            CAPTURE(path_name);
            CAPTURE(d.M);
            CAPTURE(d.N);
            std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(d.M, d.K));
            const auto A = bertlet::quantize_activations_s8(p, P.X.data(), d.M, d.K, P.ldx, nullptr, scratch.data());
            const auto w = P.pk.view();
            for (const auto act : {activation::none, activation::gelu_erf}) {
                for (const bool bias : {true, false}) {
                    const bertlet::s8_epilogue ep{bias ? P.b.data() : nullptr, nullptr, 0, act};
                    std::vector<float> R(d.M * P.ldy, 7.f);
                    bertlet::gemm_s8_q(p, A, w, ep, R.data(), P.ldy);
                    for (std::size_t hd = 16; hd <= d.N; hd += 16) {
                        if (d.N % hd != 0) continue;
                        CAPTURE(hd);
                        const std::size_t hstride = d.M * hd + 5;  // a gap after each block stays untouched
                        for (std::size_t threads : {1u, 2u}) {
                            CAPTURE(threads);
                            bertlet::detail::thread_pool pool(threads);
                            std::vector<float> Y((d.N / hd) * hstride, 7.f);
                            bertlet::s8_gemm g{&w, ep, Y.data(), 0};
                            g.hd = hd;
                            g.hstride = hstride;
                            std::vector<std::uint8_t> s2(scratch.size());
                            bertlet::quantize_gemm_s8_parallel(&pool, p, P.X.data(), d.M, d.K, P.ldx, nullptr,
                                                               s2.data(), &g, 1);
                            std::size_t bad = 0;
                            for (std::size_t m = 0; m < d.M; ++m)
                                for (std::size_t n = 0; n < d.N; ++n)
                                    bad += std::memcmp(&Y[(n / hd) * hstride + m * hd + n % hd], &R[m * P.ldy + n],
                                                       4) != 0;
                            for (std::size_t h = 0; h < d.N / hd; ++h)
                                for (std::size_t i = d.M * hd; i < hstride; ++i) bad += Y[h * hstride + i] != 7.f;
                            CHECK(bad == 0);
                            std::fill(Y.begin(), Y.end(), 7.f);
                            bertlet::gemm_s8_parallel(&pool, p, A, &g, 1);
                            bad = 0;
                            for (std::size_t m = 0; m < d.M; ++m)
                                for (std::size_t n = 0; n < d.N; ++n)
                                    bad += std::memcmp(&Y[(n / hd) * hstride + m * hd + n % hd], &R[m * P.ldy + n],
                                                       4) != 0;
                            CHECK(bad == 0);
                        }
                    }
                }
            }
            // refused: hd not a multiple of 16 or not dividing N, a head stride below M * hd, a residual
            std::vector<float> Y(4 * d.M * d.N + 64);
            const auto refused = [&](std::size_t hd, std::size_t hstride, const float* res) {
                bertlet::s8_gemm g{&w, bertlet::s8_epilogue{P.b.data(), res, res ? P.ldy : 0, activation::none},
                                   Y.data(), P.ldy};
                g.hd = hd;
                g.hstride = hstride;
                CHECK_THROWS_WITH_AS(bertlet::gemm_s8_parallel(nullptr, p, A, &g, 1), doctest::Contains("head-major"),
                                     bertlet::input_error);
            };
            refused(24, d.M * 24, nullptr);
            if (d.N % 64 != 0) refused(64, d.M * 64, nullptr);
            refused(16, d.M * 16 - 1, nullptr);
            refused(16, d.M * 16, P.R.data());
        }
    }
}
