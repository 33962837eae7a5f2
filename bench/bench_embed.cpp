// End-to-end embedding benchmarks (Google Benchmark). One thread; sequences of an exact token length.
//   build/bench/bertlet_bench [--benchmark_filter=...]   (model: $BERTLET_MODEL or models/all-MiniLM-L6-v2.bertlet)
#include <benchmark/benchmark.h>
#include <bertlet/bertlet.hpp>

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
    benchmark::AddCustomContext("bertlet_kernels", "reference fp32 (Eigen GEMM, scalar LayerNorm/GELU/softmax)");
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
