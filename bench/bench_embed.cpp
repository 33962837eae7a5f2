// End-to-end embedding benchmarks (Google Benchmark). One thread; sequences of an exact token length.
//   build/bench/bertlet_bench [--benchmark_filter=...]   (model: $BERTLET_MODEL or models/all-MiniLM-L6-v2.bertlet)
// Kernel path: the best the CPU has, or BERTLET_FORCE_ARCH=scalar|avx2|avx512|neon. BM_gemm measures the packed
// GEMM alone (MiniLM's shapes at 128 tokens) and reports GFLOP/s; BM_layernorm the row-wise LayerNorm (floats/ns).
#include <benchmark/benchmark.h>
#include <bertlet/bertlet.hpp>
#include <bertlet/kernels/dispatch.hpp>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

const bertlet::embedder& model() {
    static const bertlet::embedder m = [] {
        const char* env = std::getenv("BERTLET_MODEL");
        return bertlet::embedder::load(env && *env ? env : BERTLET_DEFAULT_MODEL);
    }();
    return m;
}

// Real wordpieces from a real sentence, repeated to reach exactly `len` tokens with [CLS]/[SEP].
std::vector<std::int32_t> sequence_of(std::size_t len) {
    const auto& tok = model().tokenizer();
    const auto enc = tok.encode("A man is playing a large flute while the audience watches from the riverbank.");
    std::vector<std::int32_t> body(enc.ids.begin() + 1, enc.ids.end() - 1);
    std::vector<std::int32_t> ids{tok.config().cls_id};
    for (std::size_t i = 0; ids.size() + 1 < len; ++i) ids.push_back(body[i % body.size()]);
    ids.push_back(tok.config().sep_id);
    return ids;
}

void BM_embed(benchmark::State& st) {
    const std::size_t seq = static_cast<std::size_t>(st.range(0));
    const std::size_t batch = static_cast<std::size_t>(st.range(1));
    const std::vector<std::vector<std::int32_t>> seqs(batch, sequence_of(seq));
    bertlet::embed_workspace ws;
    std::vector<float> out(batch * model().dim());
    model().embed_ids(seqs, out.data(), ws);  // warm the workspace
    for (auto _ : st) {
        model().embed_ids(seqs, out.data(), ws);
        benchmark::DoNotOptimize(out.data());
    }
    st.counters["seq"] = static_cast<double>(seq);
    st.counters["batch"] = static_cast<double>(batch);
    st.counters["sentences/s"] = benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_embed)->Args({16, 1})->Args({128, 1})->Args({16, 32})->Args({128, 32})->Unit(benchmark::kMillisecond)->UseRealTime();

// Intra-op threads (load_options::threads): one call at a time, split over the model's pool.
void BM_embed_threads(benchmark::State& st) {
    const std::size_t seq = static_cast<std::size_t>(st.range(0));
    const std::size_t threads = static_cast<std::size_t>(st.range(1));
    const char* env = std::getenv("BERTLET_MODEL");
    bertlet::load_options lo;
    lo.threads = threads;
    const auto m = bertlet::embedder::load(env && *env ? env : BERTLET_DEFAULT_MODEL, lo);
    const std::vector<std::vector<std::int32_t>> seqs(1, sequence_of(seq));
    bertlet::embed_workspace ws;
    std::vector<float> out(m.dim());
    m.embed_ids(seqs, out.data(), ws);
    for (auto _ : st) {
        m.embed_ids(seqs, out.data(), ws);
        benchmark::DoNotOptimize(out.data());
    }
    st.counters["threads"] = static_cast<double>(threads);
}
BENCHMARK(BM_embed_threads)->Args({128, 1})->Args({128, 2})->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_gemm(benchmark::State& st) {
    namespace bd = bertlet::detail;
    const std::ptrdiff_t M = st.range(0), N = st.range(1), K = st.range(2);
    std::vector<float> A(static_cast<std::size_t>(M * K), 0.5f), C(static_cast<std::size_t>(M * N));
    std::vector<float> W(bd::packed_n16_size(static_cast<std::size_t>(N), static_cast<std::size_t>(K)), 0.25f);
    std::vector<float> bias(static_cast<std::size_t>(N), 0.1f), scratch(bd::gemm_scratch_floats());
    const auto& kt = bd::kernels_for(bertlet::active_isa());
    bd::gemm_args g;
    g.a = A.data();
    g.lda = K;
    g.b = W.data();
    g.c = C.data();
    g.ldc = N;
    g.m = M;
    g.n = N;
    g.k = K;
    g.ep.bias = bias.data();
    for (auto _ : st) {
        kt.gemm(g, 0, M, 0, bd::panels_of(N), scratch.data());
        benchmark::DoNotOptimize(C.data());
    }
    st.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(M) * double(N) * double(K),
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_gemm)
    ->Args({128, 384, 384})
    ->Args({128, 1536, 384})
    ->Args({128, 384, 1536})
    ->Unit(benchmark::kMicrosecond);

// Row-wise LayerNorm alone (MiniLM: 128 tokens x 384), in place; arg 2 = 1 adds a residual first. In place is
// fine: the output is normalised, so repeated calls see the same value range.
void BM_layernorm(benchmark::State& st) {
    namespace bd = bertlet::detail;
    const std::ptrdiff_t rows = st.range(0), n = st.range(1);
    std::vector<float> x(static_cast<std::size_t>(rows * n)), res(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
        x[i] = static_cast<float>(static_cast<int>(i * 7919 % 2003) - 1001) * 1e-3f;
        res[i] = static_cast<float>(static_cast<int>(i * 104729 % 1009) - 504) * 1e-3f;
    }
    std::vector<float> gamma(static_cast<std::size_t>(n), 1.1f), beta(static_cast<std::size_t>(n), 0.1f);
    const auto& kt = bd::kernels_for(bertlet::active_isa());
    const float* r = st.range(2) ? res.data() : nullptr;
    for (auto _ : st) {
        kt.layernorm(x.data(), r, rows, n, gamma.data(), beta.data(), 1e-12f);
        benchmark::DoNotOptimize(x.data());
    }
    // Printed as floats=<x>G/s, i.e. x floats per ns.
    st.counters["floats"] = benchmark::Counter(double(rows) * double(n), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_layernorm)->Args({128, 384, 0})->Args({128, 384, 1})->Unit(benchmark::kNanosecond);

void BM_embed_text(benchmark::State& st) {
    const std::string text = "A man is playing a large flute while the audience watches from the riverbank.";
    bertlet::embed_workspace ws;
    std::vector<float> out(model().dim());
    for (auto _ : st) {
        model().embed(text, out.data(), ws);
        benchmark::DoNotOptimize(out.data());
    }
}
BENCHMARK(BM_embed_text)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_load(benchmark::State& st) {
    const char* env = std::getenv("BERTLET_MODEL");
    const std::string path = env && *env ? env : BERTLET_DEFAULT_MODEL;
    for (auto _ : st) {
        auto m = bertlet::embedder::load(path);
        benchmark::DoNotOptimize(&m);
    }
}
BENCHMARK(BM_load)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
    benchmark::AddCustomContext("bertlet_flags", BERTLET_COMPILE_FLAGS);
    benchmark::AddCustomContext("bertlet_kernels", std::string("packed fp32, path ") +
                                                       bertlet::isa_name(bertlet::active_isa()) + " (CPU: " +
                                                       bertlet::cpu().describe() + ")");
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
