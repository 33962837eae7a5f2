// bf16 GEMM (include/bertlet/kernels/gemm_bf16.hpp): the fp32 -> bf16 conversion (scalar vs vcvtne2ps2bf16), the
// BF16P16K2 packing (formula, scalar reference, AVX-512 packers byte for byte), and the GEMM against a double
// reference within the tolerance bf16 input rounding allows, exactly on small integers, with every epilogue, on
// sub-ranges and thread splits (bit-identical), with bf16 A, segmented weights and several K blocks. Tests of the
// fast path are skipped (MESSAGE) when the CPU lacks AVX512_BF16; the scalar reference is tested everywhere.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "bertlet/kernels/gemm_bf16.hpp"
#include "test_numeric.hpp"
#include "test_attention_ref.hpp"

namespace {

using bertlet::bf16_to_float;
using bertlet::float_to_bf16;
using bertlet::detail::activation;
using bertlet::detail::epilogue;

using bertlet_test::act_d;
using bertlet_test::gaussian;

std::vector<float> small_ints(std::size_t n, std::uint32_t seed, int lim) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> d(-lim, lim);
    std::vector<float> v(n);
    for (auto& x : v) x = static_cast<float>(d(rng));
    return v;
}

float from_bits(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

bool fast_path(const char* what) {
    if (bertlet::bf16_supported()) return true;
    MESSAGE("CPU lacks AVX512_BF16 (or not an x86 build): fast-path test '", std::string(what), "' skipped");
    return false;
}


// Double reference: C = act(alpha * A W^T + bias + res). round_inputs: A and W rounded to bf16 first. For the
// tolerance, S receives |alpha| sum_k |a w| and E |bias| + |res|.
void reference(const float* A, std::ptrdiff_t lda, std::ptrdiff_t M, std::ptrdiff_t K, const float* W,
               std::ptrdiff_t ldw, std::ptrdiff_t N, const epilogue& ep, bool round_inputs, std::vector<double>& C,
               std::vector<double>& S, std::vector<double>& pre, std::vector<double>& E) {
    C.assign(static_cast<std::size_t>(M * N), 0.0);
    E.assign(C.size(), 0.0);
    S.assign(C.size(), 0.0);
    pre.assign(C.size(), 0.0);
    auto r = [&](float x) { return round_inputs ? static_cast<double>(bf16_to_float(float_to_bf16(x))) : double(x); };
    for (std::ptrdiff_t m = 0; m < M; ++m)
        for (std::ptrdiff_t n = 0; n < N; ++n) {
            double acc = 0, s = 0;
            for (std::ptrdiff_t k = 0; k < K; ++k) {
                const double p = r(A[m * lda + k]) * r(W[n * ldw + k]);
                acc += p;
                s += std::fabs(p);
            }
            double v = double(ep.alpha) * acc, e = 0;
            if (ep.bias) v += ep.bias[n], e += std::fabs(ep.bias[n]);
            if (ep.residual) v += ep.residual[m * ep.ldr + n], e += std::fabs(ep.residual[m * ep.ldr + n]);
            const std::size_t i = static_cast<std::size_t>(m * N + n);
            pre[i] = v;
            C[i] = act_d(v, ep.act);
            S[i] = s * std::fabs(double(ep.alpha));
            E[i] = e;
        }
}

// |got - want| allowed: relative error of bf16 products (2^-7 each: two roundings with unit roundoff 2^-8, when the
// inputs are not already rounded) plus fp32 accumulation over K, scaled by S = |alpha| sum |a w|; the epilogue's fp32
// roundings are relative to the intermediate sums (<= S + E, E = |bias| + |res|); GELU's slope is at most ~1.13.
double tolerance(double S, double E, std::ptrdiff_t K, bool inputs_rounded, activation a, double pre) {
    const double acc = (inputs_rounded ? 0.0 : std::ldexp(1.0, -7) + std::ldexp(1.0, -16)) +
                       static_cast<double>(K + 4) * std::ldexp(1.0, -24);
    double t = acc * S + 4 * std::ldexp(1.0, -24) * (S + E) + 1e-30;
    if (a != activation::none) t = 1.15 * t + 2e-6 * (1.0 + std::fabs(pre));
    return t;
}

struct gemm_case {
    std::ptrdiff_t M, N, K;
    std::vector<float> A, W, bias, res;
    std::vector<std::uint16_t> pk;
    epilogue ep;
};

gemm_case make_case(std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, int variant, std::uint32_t seed) {
    gemm_case c;
    c.M = M;
    c.N = N;
    c.K = K;
    c.A = gaussian(static_cast<std::size_t>(M * K), seed, 1.f);
    c.W = gaussian(static_cast<std::size_t>(N * K), seed + 1, 0.2f);
    c.bias = gaussian(static_cast<std::size_t>(N), seed + 2, 0.5f);
    c.res = gaussian(static_cast<std::size_t>(M * N), seed + 3, 1.f);
    c.pk.assign(bertlet::bf16_packed_size(static_cast<std::size_t>(N), static_cast<std::size_t>(K)), 0xFFFF);
    bertlet::pack_bf16(c.W.data(), N, K, K, c.pk.data());
    switch (variant % 6) {
        case 0: break;
        case 1: c.ep.alpha = 0.125f; break;
        case 2: c.ep.bias = c.bias.data(); break;
        case 3:
            c.ep.bias = c.bias.data();
            c.ep.residual = c.res.data();
            c.ep.ldr = N;
            break;
        case 4:
            c.ep.bias = c.bias.data();
            c.ep.act = activation::gelu_erf;
            break;
        case 5:
            c.ep.alpha = -0.7f;
            c.ep.bias = c.bias.data();
            c.ep.residual = c.res.data();
            c.ep.ldr = N;
            c.ep.act = activation::gelu_tanh;
            break;
    }
    return c;
}

// Checks C against the double references (inputs rounded to bf16: tight; fp32 inputs: bf16 tolerance).
void check_against_double(const gemm_case& c, const std::vector<float>& C, std::ptrdiff_t ldc, const std::string& what) {
    std::vector<double> R, S, pre, E, R2, S2, pre2, E2;
    reference(c.A.data(), c.K, c.M, c.K, c.W.data(), c.K, c.N, c.ep, true, R, S, pre, E);
    reference(c.A.data(), c.K, c.M, c.K, c.W.data(), c.K, c.N, c.ep, false, R2, S2, pre2, E2);
    int bad = 0;
    for (std::ptrdiff_t m = 0; m < c.M; ++m)
        for (std::ptrdiff_t n = 0; n < c.N; ++n) {
            const std::size_t i = static_cast<std::size_t>(m * c.N + n);
            const double got = C[static_cast<std::size_t>(m * ldc + n)];
            const bool ok1 = std::fabs(got - R[i]) <= tolerance(S[i], E[i], c.K, true, c.ep.act, pre[i]);
            const bool ok2 = std::fabs(got - R2[i]) <= tolerance(S2[i], E2[i], c.K, false, c.ep.act, pre2[i]);
            if ((!ok1 || !ok2) && ++bad <= 3)
                FAIL_CHECK(what, " M=", c.M, " N=", c.N, " K=", c.K, " act=", int(c.ep.act), " at (", m, ",", n,
                           "): got ", got, " want ", R[i], " (fp32 inputs: ", R2[i], ")");
        }
    CHECK(bad == 0);
}

}  // namespace

TEST_CASE("bf16: scalar conversion is round-to-nearest-even with DAZ and quiet NaN") {
    CHECK(float_to_bf16(1.0f) == 0x3F80);
    CHECK(float_to_bf16(-2.0f) == 0xC000);
    CHECK(float_to_bf16(from_bits(0x3F808000u)) == 0x3F80);  // tie -> even
    CHECK(float_to_bf16(from_bits(0x3F818000u)) == 0x3F82);  // tie -> even (up)
    CHECK(float_to_bf16(from_bits(0x3F808001u)) == 0x3F81);  // above the tie
    CHECK(float_to_bf16(from_bits(0x3F807FFFu)) == 0x3F80);  // below the tie
    CHECK(float_to_bf16(from_bits(0x3FFFFFFFu)) == 0x4000);  // carry into the exponent
    CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);  // rounds to +inf
    CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
    CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
    CHECK(float_to_bf16(from_bits(0x00000001u)) == 0x0000);  // denormal -> +0
    CHECK(float_to_bf16(from_bits(0x807FFFFFu)) == 0x8000);  // denormal -> -0
    CHECK(float_to_bf16(from_bits(0x00800000u)) == 0x0080);  // smallest normal survives
    CHECK(float_to_bf16(from_bits(0x7F800001u)) == 0x7FC0);  // signalling NaN -> quiet, never inf
    CHECK(float_to_bf16(from_bits(0xFFC12345u)) == 0xFFC1);
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {  // every bf16 round-trips (NaNs come back quiet)
        const std::uint16_t b = static_cast<std::uint16_t>(h);
        const bool nan = (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu);
        const bool denorm = (h & 0x7F80u) == 0 && (h & 0x7Fu);
        const std::uint16_t want = nan ? static_cast<std::uint16_t>(b | 0x40) : denorm ? static_cast<std::uint16_t>(b & 0x8000) : b;
        if (float_to_bf16(bf16_to_float(b)) != want) {
            FAIL_CHECK("round trip of ", h);
            break;
        }
    }
}

TEST_CASE("bf16: vectorized conversion equals the scalar one bit for bit") {
    if (!fast_path("convert")) return;
    // every upper half with a set of low halves (ties, just above/below, extremes, random)
    std::mt19937 rng(7);
    const std::uint32_t lows[] = {0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x4000, 0xC000};
    std::vector<float> x;
    x.reserve(0x10000u * 10);
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {
        for (std::uint32_t lo : lows) x.push_back(from_bits(h << 16 | lo));
        x.push_back(from_bits(h << 16 | (rng() & 0xFFFFu)));
    }
    for (std::ptrdiff_t len : {std::ptrdiff_t(x.size()), std::ptrdiff_t(1), std::ptrdiff_t(17), std::ptrdiff_t(33)}) {
        std::vector<std::uint16_t> fast(static_cast<std::size_t>(len) + 1, 0xABCD), ref(static_cast<std::size_t>(len));
        bertlet::convert_to_bf16(x.data(), len, fast.data());
        bertlet::convert_to_bf16_ref(x.data(), len, ref.data());
        CHECK(std::memcmp(fast.data(), ref.data(), static_cast<std::size_t>(len) * 2) == 0);
        CHECK(fast[static_cast<std::size_t>(len)] == 0xABCD);  // no write past the end
    }
}

TEST_CASE("bf16: BF16P16K2 packing matches the formula, the scalar reference and the AVX-512 packers") {
    const std::ptrdiff_t shapes[][3] = {{1, 1, 1},   {16, 2, 2},   {17, 3, 5},    {33, 7, 9},   {70, 100, 103},
                                        {128, 32, 1152}, {32, 128, 130}, {5, 64, 64},  {48, 31, 33}, {15, 65, 65}};
    for (const auto& s : shapes) {
        const std::ptrdiff_t n = s[0], k = s[1], ld = s[2];
        const std::ptrdiff_t kp = bertlet::bf16_pad_k(k), npad = (n + 15) / 16 * 16;
        CAPTURE(n);
        CAPTURE(k);
        const std::size_t size = bertlet::bf16_packed_size(static_cast<std::size_t>(n), static_cast<std::size_t>(k));
        CHECK(size == static_cast<std::size_t>(npad * kp));
        // W [n, k] with row stride ld (garbage between k and ld)
        const auto W = gaussian(static_cast<std::size_t>(n * ld), 11, 3.f);
        std::vector<std::uint16_t> ref(size, 0xDEAD), want(size, 0);
        bertlet::pack_bf16_ref(W.data(), n, k, ld, ref.data());
        for (std::ptrdiff_t r = 0; r < n; ++r)
            for (std::ptrdiff_t kk = 0; kk < k; ++kk)
                want[static_cast<std::size_t>((r / 16) * 16 * kp + (kk / 2) * 32 + (r % 16) * 2 + kk % 2)] =
                    float_to_bf16(W[static_cast<std::size_t>(r * ld + kk)]);
        CHECK(ref == want);
        // B [k, n] with row stride ld >= n: pack_kn(B) == pack(B^T)
        const std::ptrdiff_t ldb = std::max(ld, n);
        const auto B = gaussian(static_cast<std::size_t>(k * ldb), 12, 3.f);
        std::vector<float> Bt(static_cast<std::size_t>(n * k));
        for (std::ptrdiff_t kk = 0; kk < k; ++kk)
            for (std::ptrdiff_t j = 0; j < n; ++j) Bt[static_cast<std::size_t>(j * k + kk)] = B[static_cast<std::size_t>(kk * ldb + j)];
        std::vector<std::uint16_t> kn_ref(size, 0xDEAD), bt(size, 0xBEEF);
        bertlet::pack_bf16_kn_ref(B.data(), k, n, ldb, kn_ref.data());
        bertlet::pack_bf16_ref(Bt.data(), n, k, k, bt.data());
        CHECK(kn_ref == bt);
        if (!bertlet::bf16_supported()) continue;
        // the dispatching packers (AVX512_BF16 here) write the same bytes, and nothing past the end
        std::vector<std::uint16_t> fast(size + 32, 0x5A5A), kn_fast(size + 32, 0x5A5A);
        bertlet::pack_bf16(W.data(), n, k, ld, fast.data());
        bertlet::pack_bf16_kn(B.data(), k, n, ldb, kn_fast.data());
        CHECK(std::memcmp(fast.data(), ref.data(), size * 2) == 0);
        CHECK(std::memcmp(kn_fast.data(), kn_ref.data(), size * 2) == 0);
        for (std::size_t i = size; i < size + 32; ++i) {
            CHECK(fast[i] == 0x5A5A);
            CHECK(kn_fast[i] == 0x5A5A);
        }
    }
    if (!bertlet::bf16_supported()) MESSAGE("CPU lacks AVX512_BF16: fast packers not compared");
}

TEST_CASE("bf16: scalar reference GEMM against double (any CPU)") {
    for (std::ptrdiff_t M : {1, 5, 13})
        for (std::ptrdiff_t N : {1, 17, 40})
            for (std::ptrdiff_t K : {1, 2, 9, 64}) {
                const int variant = static_cast<int>(M + N + K);
                auto c = make_case(M, N, K, variant, static_cast<std::uint32_t>(M * 1000 + N * 10 + K));
                std::vector<float> C(static_cast<std::size_t>(M * N), std::nanf(""));
                bertlet::gemm_bf16_ref(c.A.data(), K, M, K, c.pk.data(), N, c.ep, C.data(), N, 0, M, 0, (N + 15) / 16);
                check_against_double(c, C, N, "ref");
            }
}

TEST_CASE("bf16: GEMM on odd shapes and every epilogue against double, and against the scalar reference") {
    if (!fast_path("gemm odd shapes")) return;
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes());
    long total = 0, identical = 0;
    int variant = 0;
    for (std::ptrdiff_t M : {1, 2, 3, 4, 5, 7, 8, 11, 12, 13, 16, 23, 24, 25, 36, 37})
        for (std::ptrdiff_t N : {1, 15, 16, 17, 31, 32, 33, 48, 63, 64, 70})
            for (std::ptrdiff_t K : {1, 2, 3, 7, 16, 31, 32, 33, 63, 64, 65, 99, 100}) {
                ++variant;
                auto c = make_case(M, N, K, variant, static_cast<std::uint32_t>(variant));
                const std::ptrdiff_t ldc = N + 3;
                std::vector<float> C(static_cast<std::size_t>(M * ldc), -7.f), R(C.size(), -7.f);
                bertlet::gemm_bf16(c.A.data(), K, M, K, c.pk.data(), N, c.ep, C.data(), ldc, 0, M, 0, (N + 15) / 16,
                                   scratch.data());
                bertlet::gemm_bf16_ref(c.A.data(), K, M, K, c.pk.data(), N, c.ep, R.data(), ldc, 0, M, 0,
                                       (N + 15) / 16);
                check_against_double(c, C, ldc, "gemm_bf16");
                bool pad_ok = true;
                for (std::ptrdiff_t m = 0; m < M; ++m) {
                    for (std::ptrdiff_t n = N; n < ldc; ++n) pad_ok = pad_ok && C[static_cast<std::size_t>(m * ldc + n)] == -7.f;
                    for (std::ptrdiff_t n = 0; n < N; ++n) {
                        const float a = C[static_cast<std::size_t>(m * ldc + n)], b = R[static_cast<std::size_t>(m * ldc + n)];
                        ++total;
                        identical += std::memcmp(&a, &b, 4) == 0;
                    }
                }
                CHECK(pad_ok);  // columns past N untouched
            }
    MESSAGE("gemm_bf16 vs gemm_bf16_ref (all epilogues incl. GELU): ", identical, " of ", total,
            " outputs bit-identical");
}

TEST_CASE("bf16: GEMM accumulation matches the scalar reference bit for bit (no GELU)") {
    // vdpbf16ps is specified (Intel SDM) as two RNE adds per lane with DAZ/FTZ; the reference emulates exactly that,
    // so without the GELU polynomial every output should agree. A CPU deviating in the last bit only shows here.
    if (!fast_path("gemm bit-exact vs ref")) return;
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes());
    long total = 0, identical = 0;
    for (std::ptrdiff_t K : {1, 8, 33, 100, 384, 1025, 1536}) {
        auto c = make_case(29, 50, K, 3, static_cast<std::uint32_t>(K));
        std::vector<float> C(static_cast<std::size_t>(29 * 50)), R(C.size());
        bertlet::gemm_bf16(c.A.data(), K, 29, K, c.pk.data(), 50, c.ep, C.data(), 50, 0, 29, 0, 4, scratch.data());
        bertlet::gemm_bf16_ref(c.A.data(), K, 29, K, c.pk.data(), 50, c.ep, R.data(), 50, 0, 29, 0, 4);
        for (std::size_t i = 0; i < C.size(); ++i) {
            ++total;
            identical += std::memcmp(&C[i], &R[i], 4) == 0;
        }
        check_against_double(c, C, 50, "gemm_bf16 (multi K block)");
    }
    MESSAGE("bit-identical to the reference: ", identical, " of ", total);
    WARN(identical == total);  // holds on Zen 5; not a hard requirement on other CPUs
}

TEST_CASE("bf16: GEMM is exact on small integers") {
    if (!fast_path("gemm exact")) return;
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes());
    for (std::ptrdiff_t K : {1, 2, 3, 31, 100, 513, 1536}) {
        const std::ptrdiff_t M = 19, N = 37;
        const auto A = small_ints(static_cast<std::size_t>(M * K), 21, 8), W = small_ints(static_cast<std::size_t>(N * K), 22, 8);
        const auto bias = small_ints(static_cast<std::size_t>(N), 23, 100), res = small_ints(static_cast<std::size_t>(M * N), 24, 100);
        std::vector<std::uint16_t> pk(bertlet::bf16_packed_size(static_cast<std::size_t>(N), static_cast<std::size_t>(K)));
        bertlet::pack_bf16(W.data(), N, K, K, pk.data());
        epilogue ep;
        ep.alpha = 2.0f;
        ep.bias = bias.data();
        ep.residual = res.data();
        ep.ldr = N;
        std::vector<float> C(static_cast<std::size_t>(M * N));
        bertlet::gemm_bf16(A.data(), K, M, K, pk.data(), N, ep, C.data(), N, 0, M, 0, (N + 15) / 16, scratch.data());
        int bad = 0;
        for (std::ptrdiff_t m = 0; m < M; ++m)
            for (std::ptrdiff_t n = 0; n < N; ++n) {
                long acc = 0;
                for (std::ptrdiff_t k = 0; k < K; ++k)
                    acc += long(A[static_cast<std::size_t>(m * K + k)]) * long(W[static_cast<std::size_t>(n * K + k)]);
                const long want = 2 * acc + long(bias[static_cast<std::size_t>(n)]) + long(res[static_cast<std::size_t>(m * N + n)]);
                if (C[static_cast<std::size_t>(m * N + n)] != static_cast<float>(want) && ++bad <= 3)
                    FAIL_CHECK("K=", K, " (", m, ",", n, "): ", C[static_cast<std::size_t>(m * N + n)], " != ", want);
            }
        CHECK(bad == 0);
    }
}

TEST_CASE("bf16: sub-ranges and thread splits give bit-identical results") {
    if (!fast_path("gemm sub-ranges")) return;
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes() + 3);
    for (std::ptrdiff_t K : {37, 700}) {  // one and two K blocks
        const std::ptrdiff_t M = 401, N = 133, np = (N + 15) / 16;  // two row blocks of bf16_mc
        auto c = make_case(M, N, K, 4, 99);
        std::vector<float> full(static_cast<std::size_t>(M * N));
        bertlet::gemm_bf16(c.A.data(), K, M, K, c.pk.data(), N, c.ep, full.data(), N, 0, M, 0, np, scratch.data());
        // odd row and panel boundaries (including odd p0), misaligned scratch
        const std::ptrdiff_t rcuts[] = {0, 1, 13, 200, 389, 401};
        const std::ptrdiff_t pcuts[] = {0, 1, 4, 5, np};
        std::vector<float> part(full.size(), std::nanf(""));
        for (std::size_t i = 0; i + 1 < std::size(rcuts); ++i)
            for (std::size_t j = 0; j + 1 < std::size(pcuts); ++j)
                bertlet::gemm_bf16(c.A.data(), K, M, K, c.pk.data(), N, c.ep, part.data(), N, rcuts[i], rcuts[i + 1],
                                   pcuts[j], pcuts[j + 1], scratch.data() + 3);
        CHECK(std::memcmp(part.data(), full.data(), full.size() * 4) == 0);
        // the pool driver, 2 and 3 threads
        for (std::size_t threads : {2u, 3u, 9u}) {  // 2, 3: row splits; 9 (< 48 rows each): a panel split
            bertlet::detail::thread_pool pool(threads);
            const std::size_t stride = bertlet::gemm_bf16_scratch_bytes();
            std::vector<unsigned char> ps(stride * threads);
            bertlet::gemm_bf16_args g;
            g.a = c.A.data();
            g.lda = K;
            g.b = c.pk.data();
            g.c = part.data();
            g.ldc = N;
            g.m = M;
            g.n = N;
            g.k = K;
            g.ep = c.ep;
            std::fill(part.begin(), part.end(), std::nanf(""));
            bertlet::gemm_bf16_parallel(&pool, g, ps.data(), stride);
            CHECK(std::memcmp(part.data(), full.data(), full.size() * 4) == 0);
        }
        check_against_double(c, full, N, "gemm_bf16 (full)");
    }
}

TEST_CASE("bf16: bf16 A, segmented weights and strided operands (attention shapes)") {
    if (!fast_path("gemm variants")) return;
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes());
    // bf16 A gives the same bits as fp32 A converted on the fly
    for (std::ptrdiff_t K : {1, 7, 32, 128, 129}) {
        const std::ptrdiff_t M = 27, N = 45;
        auto c = make_case(M, N, K, 5, static_cast<std::uint32_t>(K + 500));
        const std::ptrdiff_t lda16 = K + 5;
        std::vector<std::uint16_t> a16(static_cast<std::size_t>(M * lda16), 0x7FC0);  // NaN in the gaps
        for (std::ptrdiff_t m = 0; m < M; ++m)
            bertlet::convert_to_bf16(c.A.data() + m * K, K, a16.data() + m * lda16);
        std::vector<float> C1(static_cast<std::size_t>(M * N)), C2(C1.size());
        bertlet::gemm_bf16(c.A.data(), K, M, K, c.pk.data(), N, c.ep, C1.data(), N, 0, M, 0, 3, scratch.data());
        bertlet::gemm_bf16_args g;
        g.a16 = a16.data();
        g.lda = lda16;
        g.b = c.pk.data();
        g.c = C2.data();
        g.ldc = N;
        g.m = M;
        g.n = N;
        g.k = K;
        g.ep = c.ep;
        bertlet::gemm_bf16(g, 0, M, 0, 3, scratch.data());
        CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * 4) == 0);
    }
    // segmented W (Q, K, V style: three weights of 3 panels each) == one contiguous weight
    {
        const std::ptrdiff_t M = 20, K = 50, Ns = 48, N = 3 * Ns;
        auto c = make_case(M, N, K, 2, 77);
        std::vector<std::vector<std::uint16_t>> seg(3);
        for (int s = 0; s < 3; ++s) {
            seg[static_cast<std::size_t>(s)].resize(bertlet::bf16_packed_size(Ns, K));
            bertlet::pack_bf16(c.W.data() + s * Ns * K, Ns, K, K, seg[static_cast<std::size_t>(s)].data());
        }
        std::vector<float> C1(static_cast<std::size_t>(M * N)), C2(C1.size());
        bertlet::gemm_bf16(c.A.data(), K, M, K, c.pk.data(), N, c.ep, C1.data(), N, 0, M, 0, N / 16, scratch.data());
        bertlet::gemm_bf16_args g = bertlet::detail::bf16::make_args(c.A.data(), K, M, K, nullptr, N, c.ep, C2.data(), N);
        for (int s = 0; s < 3; ++s) g.bseg[s] = seg[static_cast<std::size_t>(s)].data();
        g.seg_panels = Ns / 16;  // 3: odd, so panel pairs straddle segments
        bertlet::gemm_bf16(g, 0, M, 0, N / 16, scratch.data());
        CHECK(std::memcmp(C1.data(), C2.data(), C1.size() * 4) == 0);
    }
    // attention: S = scale * Q_h K_h^T and ctx = P V_h from a [L, 3H] QKV buffer (row stride 3H), H = 4 heads x 32
    {
        const std::ptrdiff_t L = 77, D = 32, H = 128, ld = 3 * H, h = 2;
        const auto qkv = gaussian(static_cast<std::size_t>(L * ld), 5, 1.f);
        const float* q = qkv.data() + h * D;
        const float* k = qkv.data() + H + h * D;
        const float* v = qkv.data() + 2 * H + h * D;
        std::vector<std::uint16_t> kp(bertlet::bf16_packed_size(L, D)), vp(bertlet::bf16_packed_size(D, L));
        bertlet::pack_bf16(k, L, D, ld, kp.data());
        bertlet::pack_bf16_kn(v, L, D, ld, vp.data());
        epilogue e1;
        e1.alpha = 1.0f / std::sqrt(float(D));
        std::vector<float> S(static_cast<std::size_t>(L * L)), ctx(static_cast<std::size_t>(L * H), 0.f);
        bertlet::gemm_bf16(q, ld, L, D, kp.data(), L, e1, S.data(), L, 0, L, 0, (L + 15) / 16, scratch.data());
        int bad = 0;
        for (std::ptrdiff_t i = 0; i < L; ++i)
            for (std::ptrdiff_t j = 0; j < L; ++j) {
                double acc = 0, s = 0;
                for (std::ptrdiff_t d = 0; d < D; ++d) {
                    const double p = double(q[i * ld + d]) * double(k[j * ld + d]);
                    acc += p;
                    s += std::fabs(p);
                }
                acc *= e1.alpha;
                s *= e1.alpha;
                if (std::fabs(S[static_cast<std::size_t>(i * L + j)] - acc) > tolerance(s, 0.0, D, false, activation::none, acc))
                    ++bad;
            }
        CHECK(bad == 0);
        bertlet::detail::scalar::softmax(S.data(), L, L, L);
        bertlet::gemm_bf16(S.data(), L, L, L, vp.data(), D, epilogue{}, ctx.data() + h * D, H, 0, L, 0, 2,
                           scratch.data());
        bad = 0;
        for (std::ptrdiff_t i = 0; i < L; ++i)
            for (std::ptrdiff_t d = 0; d < D; ++d) {
                double acc = 0, s = 0;
                for (std::ptrdiff_t j = 0; j < L; ++j) {
                    const double p = double(S[static_cast<std::size_t>(i * L + j)]) * double(v[j * ld + d]);
                    acc += p;
                    s += std::fabs(p);
                }
                if (std::fabs(ctx[static_cast<std::size_t>(i * H + h * D + d)] - acc) > tolerance(s, 0.0, L, false, activation::none, acc))
                    ++bad;
            }
        CHECK(bad == 0);
        for (std::ptrdiff_t i = 0; i < L; ++i)  // other heads' columns untouched
            for (std::ptrdiff_t d = 0; d < H; ++d)
                if (d < h * D || d >= (h + 1) * D) CHECK(ctx[static_cast<std::size_t>(i * H + d)] == 0.f);
    }
}

TEST_CASE("bf16: NaN and inf propagate") {
    if (!fast_path("gemm nan")) return;
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes());
    const std::ptrdiff_t M = 13, N = 20, K = 9;
    auto A = gaussian(static_cast<std::size_t>(M * K), 1), W = gaussian(static_cast<std::size_t>(N * K), 2);
    A[3 * K + 4] = std::nanf("");
    A[5 * K + 8] = std::numeric_limits<float>::infinity();
    std::vector<std::uint16_t> pk(bertlet::bf16_packed_size(N, K));
    bertlet::pack_bf16(W.data(), N, K, K, pk.data());
    std::vector<float> C(static_cast<std::size_t>(M * N));
    bertlet::gemm_bf16(A.data(), K, M, K, pk.data(), N, epilogue{}, C.data(), N, 0, M, 0, 2, scratch.data());
    for (std::ptrdiff_t m = 0; m < M; ++m)
        for (std::ptrdiff_t n = 0; n < N; ++n) {
            const float c = C[static_cast<std::size_t>(m * N + n)];
            if (m == 3) CHECK(std::isnan(c));
            else if (m == 5) CHECK(std::isinf(c));  // W[n, 8] != 0 (gaussian)
            else CHECK(std::isfinite(c));
        }
}

TEST_CASE("bf16: fused attention head against its scalar reference and the exact result") {
    for (std::ptrdiff_t D : {8, 16, 31, 32, 48, 64}) {
        for (std::ptrdiff_t L : {1, 2, 5, 12, 13, 17, 31, 33, 64, 127, 128, 130}) {
            CAPTURE(D);
            CAPTURE(L);
            const std::ptrdiff_t ld = 3 * D + 3, ldc = D + 5;
            const auto q = gaussian(static_cast<std::size_t>(L * ld), 7000u + unsigned(D * 300 + L));
            const auto k = gaussian(static_cast<std::size_t>(L * ld), 8000u + unsigned(D * 300 + L));
            const auto v = gaussian(static_cast<std::size_t>(L * ld), 9000u + unsigned(D * 300 + L));
            const float scale = 1.0f / std::sqrt(float(D));
            const auto exact = bertlet_test::attention_ref(q, k, v, ld, L, D, scale);
            std::vector<float> ref(static_cast<std::size_t>(L * ldc), 555.f);
            bertlet::bf16_attention_head_ref(q.data(), k.data(), v.data(), ld, ref.data(), ldc, L, D, scale);
            // bf16 inputs: |error| stays at the percent level of the output scale (values ~N(0,1))
            double worst_ref = 0;
            for (std::ptrdiff_t i = 0; i < L; ++i)
                for (std::ptrdiff_t t = 0; t < D; ++t)
                    worst_ref = std::max(worst_ref, std::fabs(ref[i * ldc + t] - exact[i * D + t]));
            CHECK(worst_ref <= 0.05);
            if (!fast_path("fused bf16 attention")) continue;
            const std::size_t nb = bertlet::bf16_attention_scratch_bytes(std::size_t(L), std::size_t(D));
            std::vector<unsigned char> scratch(nb + 3 + 64, 0xA5);
            std::vector<float> got(static_cast<std::size_t>(L * ldc), 777.f);
            // misaligned scratch on purpose: the kernel aligns inside the nb bytes it was promised
            bertlet::bf16_attention_head(q.data(), k.data(), v.data(), ld, got.data(), ldc, L, D, scale,
                                         scratch.data() + 3);
            double worst = 0;
            bool pad_kept = true;
            for (std::ptrdiff_t i = 0; i < L; ++i) {
                for (std::ptrdiff_t t = 0; t < D; ++t)
                    worst = std::max(worst, std::fabs(double(got[i * ldc + t]) - ref[i * ldc + t]));
                for (std::ptrdiff_t t = D; t < ldc; ++t) pad_kept = pad_kept && got[i * ldc + t] == 777.f;
            }
            // same operations as the reference except fp32 vs double sums and the polynomial exp: a bf16 rounding
            // of one softmax numerator may flip (one bf16 ulp, <= 2^-8 of a weight <= 1)
            CHECK(worst <= 4e-3);
            CHECK(pad_kept);
            bool tail_kept = true;
            for (std::size_t i = nb + 3; i < scratch.size(); ++i) tail_kept = tail_kept && scratch[i] == 0xA5;
            CHECK(tail_kept);
        }
    }
}
