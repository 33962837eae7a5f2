// int8 GEMM (include/bertlet/kernels/gemm_s8.hpp): every path the CPU has must reproduce the scalar reference
// bit-exactly (integer sums and f32 outputs), the packing must match an independent computation, vpmaddubsw
// saturation must never occur, and the quantization error must stay within what per-row int8 allows.
#include <doctest/doctest.h>

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
    const std::size_t Ms[] = {1, 3, 17, 128};
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
