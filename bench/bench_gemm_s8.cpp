// Micro-benchmark of the int8 GEMM (gemm_s8.hpp) on all-MiniLM-L6-v2's linear shapes at 128 tokens, every path the
// CPU supports, against the fp32 reference (detail::linear, Eigen). GOPS counts 2 * M * N * K per call (a
// multiply-add = 2 ops), including the per-call activation quantization and the f32 epilogue.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "bertlet/kernels/basic.hpp"
#include "bertlet/kernels/gemm_s8.hpp"

namespace {

struct shape {
    std::size_t M, K, N;
};
constexpr shape shapes[] = {{128, 384, 384}, {128, 384, 1536}, {128, 1536, 384}};

std::vector<float> gaussian(std::size_t n, unsigned seed, float sd) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

void set_gops(benchmark::State& st, const shape& s) {
    st.counters["GOPS"] =
        benchmark::Counter(2.0 * double(s.M * s.N * s.K) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

void bm_s8(benchmark::State& st, bertlet::s8_path p, shape s) {
    if (!bertlet::s8_path_supported(p)) {
        st.SkipWithError("path not supported by this CPU");
        return;
    }
    const auto X = gaussian(s.M * s.K, 1, 1.f), W = gaussian(s.N * s.K, 2, 0.05f), b = gaussian(s.N, 3, 0.1f);
    const auto pk = bertlet::pack_s8(W.data(), s.N, s.K);
    std::vector<float> Y(s.M * s.N);
    std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(s.M, s.K));
    for (auto _ : st) {
        bertlet::gemm_s8(p, X.data(), s.M, s.K, s.K, pk.view(), b.data(), Y.data(), s.N, scratch.data());
        benchmark::DoNotOptimize(Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}

void bm_f32(benchmark::State& st, shape s) {
    const auto X = gaussian(s.M * s.K, 1, 1.f), W = gaussian(s.N * s.K, 2, 0.05f), b = gaussian(s.N, 3, 0.1f);
    std::vector<float> Y(s.M * s.N);
    const auto M = static_cast<std::ptrdiff_t>(s.M), K = static_cast<std::ptrdiff_t>(s.K),
               N = static_cast<std::ptrdiff_t>(s.N);
    for (auto _ : st) {
        bertlet::detail::linear(X.data(), M, K, K, W.data(), b.data(), N, Y.data(), N);
        benchmark::DoNotOptimize(Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}

void bm_quantize_x(benchmark::State& st, bertlet::s8_path p, shape s) {
    if (!bertlet::s8_path_supported(p)) {
        st.SkipWithError("path not supported by this CPU");
        return;
    }
    const auto X = gaussian(s.M * s.K, 1, 1.f);
    std::vector<std::uint8_t> q(s.M * bertlet::s8_pad_k(s.K));
    std::vector<float> sx(s.M);
    for (auto _ : st) {
        bertlet::detail::s8_quantize_x(p, X.data(), s.M, s.K, s.K, q.data(), bertlet::s8_pad_k(s.K), sx.data());
        benchmark::DoNotOptimize(q.data());
        benchmark::ClobberMemory();
    }
    st.counters["Gfloat/s"] =
        benchmark::Counter(double(s.M * s.K) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

const int registered = [] {
    for (const shape& s : shapes) {
        const std::string dims = "/M" + std::to_string(s.M) + "_K" + std::to_string(s.K) + "_N" + std::to_string(s.N);
        benchmark::RegisterBenchmark(("f32_eigen" + dims).c_str(), bm_f32, s)->Unit(benchmark::kMicrosecond);
        for (bertlet::s8_path p : bertlet::all_s8_paths)
            benchmark::RegisterBenchmark((std::string("s8_") + bertlet::s8_path_name(p) + dims).c_str(), bm_s8, p, s)
                ->Unit(benchmark::kMicrosecond);
    }
    for (bertlet::s8_path p : bertlet::all_s8_paths)
        benchmark::RegisterBenchmark((std::string("quantize_x_") + bertlet::s8_path_name(p) + "/M128_K1536").c_str(),
                                     bm_quantize_x, p, shapes[2])
            ->Unit(benchmark::kMicrosecond);
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();
