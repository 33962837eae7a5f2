// Micro-benchmark of the int8 GEMM (gemm_s8.hpp) on all-MiniLM-L6-v2's linear shapes at 128 tokens, every path the
// CPU supports, against the fp32 reference (detail::linear, Eigen). GOPS counts 2 * M * N * K per call (a
// multiply-add = 2 ops). Families (filter with --benchmark_filter):
//   s8_<path>/...          one-shot gemm_s8: activation quantization + GEMM + bias epilogue (the original benchmark)
//   s8q_<path>/...         gemm_s8_q only (activations quantized once, outside the loop)
//   s8ep_<path>/...        gemm_s8_q with the residual or GELU epilogue
//   s8mt_<path>/T<n>/...   gemm_s8_parallel on a pool of n threads (n = 1 runs inline)
//   vnni_<MR>x<NR>/...     AVX-512 VNNI micro-kernel shapes (MR rows x NR 16-column panels), GEMM only
//   quantize_<path>/...    quantize_activations_s8 (Gfloat/s), with and without act_scale
//   layer_<path>/...       the six int8 linears of one MiniLM layer (seq 128): "old" = quantize per GEMM, separate
//                          GELU pass, one thread; "new" = Q/K/V share one quantization, fused GELU / residual, pool
// Times are CPU time of the calling thread for one-thread runs; the multi-thread and layer runs use real time.
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bertlet/kernels/basic.hpp"
#include "bertlet/kernels/gemm_s8.hpp"
#include "bertlet/kernels/thread_pool.hpp"

namespace {

using bertlet::s8_path;

struct shape {
    std::size_t M, K, N;
};
constexpr shape shapes[] = {{128, 384, 384}, {128, 384, 1152}, {128, 384, 1536}, {128, 1536, 384}};

std::string dims(const shape& s) {
    return "/M" + std::to_string(s.M) + "_K" + std::to_string(s.K) + "_N" + std::to_string(s.N);
}

std::vector<float> gaussian(std::size_t n, unsigned seed, float sd) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

void set_gops(benchmark::State& st, const shape& s, double gemms = 1.0) {
    st.counters["GOPS"] = benchmark::Counter(gemms * 2.0 * double(s.M * s.N * s.K) * double(st.iterations()) / 1e9,
                                             benchmark::Counter::kIsRate);
}

bool skip(benchmark::State& st, s8_path p) {
    if (bertlet::s8_path_supported(p)) return false;
    st.SkipWithError("path not supported by this CPU");
    return true;
}

struct problem {
    shape s;
    std::vector<float> X, W, b, R, Y;
    bertlet::packed_s8_buffer pk;
    std::vector<std::uint8_t> scratch;
    explicit problem(shape s_)
        : s(s_), X(gaussian(s.M * s.K, 1, 1.f)), W(gaussian(s.N * s.K, 2, 0.05f)), b(gaussian(s.N, 3, 0.1f)),
          R(gaussian(s.M * s.N, 4, 1.f)), Y(s.M * s.N), pk(bertlet::pack_s8(W.data(), s.N, s.K)),
          scratch(bertlet::gemm_s8_scratch_bytes(s.M, s.K)) {}
};

void bm_s8(benchmark::State& st, s8_path p, shape s) {
    if (skip(st, p)) return;
    problem pr(s);
    for (auto _ : st) {
        bertlet::gemm_s8(p, pr.X.data(), s.M, s.K, s.K, pr.pk.view(), pr.b.data(), pr.Y.data(), s.N,
                         pr.scratch.data());
        benchmark::DoNotOptimize(pr.Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}

void bm_s8q(benchmark::State& st, s8_path p, shape s, int ep_kind) {
    if (skip(st, p)) return;
    problem pr(s);
    const auto A = bertlet::quantize_activations_s8(p, pr.X.data(), s.M, s.K, s.K, nullptr, pr.scratch.data());
    bertlet::s8_epilogue ep;
    ep.bias = pr.b.data();
    if (ep_kind == 1) {
        ep.residual = pr.R.data();
        ep.ldr = s.N;
    }
    if (ep_kind == 2) ep.act = bertlet::detail::activation::gelu_erf;
    if (ep_kind == 3) ep.act = bertlet::detail::activation::gelu_tanh;
    const auto W = pr.pk.view();
    for (auto _ : st) {
        bertlet::gemm_s8_q(p, A, W, ep, pr.Y.data(), s.N);
        benchmark::DoNotOptimize(pr.Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}

void bm_s8fused(benchmark::State& st, s8_path p, shape s, int threads) {
    if (skip(st, p)) return;
    problem pr(s);
    std::unique_ptr<bertlet::detail::thread_pool> pool;
    if (threads > 1) pool = std::make_unique<bertlet::detail::thread_pool>(static_cast<std::size_t>(threads));
    bertlet::s8_epilogue ep;
    ep.bias = pr.b.data();
    const auto W = pr.pk.view();
    for (auto _ : st) {
        bertlet::quantize_gemm_s8_parallel(pool.get(), p, pr.X.data(), s.M, s.K, s.K, nullptr, pr.scratch.data(), W,
                                           ep, pr.Y.data(), s.N);
        benchmark::DoNotOptimize(pr.Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}

void bm_s8mt(benchmark::State& st, s8_path p, shape s, int threads, bool with_quant) {
    if (skip(st, p)) return;
    problem pr(s);
    std::unique_ptr<bertlet::detail::thread_pool> pool;
    if (threads > 1) pool = std::make_unique<bertlet::detail::thread_pool>(static_cast<std::size_t>(threads));
    auto A = bertlet::quantize_activations_s8(p, pr.X.data(), s.M, s.K, s.K, nullptr, pr.scratch.data());
    bertlet::s8_epilogue ep;
    ep.bias = pr.b.data();
    const auto W = pr.pk.view();
    for (auto _ : st) {
        if (with_quant)
            A = bertlet::quantize_activations_s8_parallel(pool.get(), p, pr.X.data(), s.M, s.K, s.K, nullptr,
                                                          pr.scratch.data());
        bertlet::gemm_s8_parallel(pool.get(), p, A, W, ep, pr.Y.data(), s.N);
        benchmark::DoNotOptimize(pr.Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}

#if defined(BERTLET_S8_X86)
template <int MR, int NR>
void bm_vnni_shape(benchmark::State& st, shape s) {
    if (skip(st, s8_path::avx512_vnni)) return;
    problem pr(s);
    const auto A =
        bertlet::quantize_activations_s8(s8_path::avx512_vnni, pr.X.data(), s.M, s.K, s.K, nullptr, pr.scratch.data());
    const auto W = pr.pk.view();
    bertlet::s8_epilogue ep;
    ep.bias = pr.b.data();
    const auto job = bertlet::detail::s8_make_job(s8_path::avx512_vnni, A, W, ep, pr.Y.data(), s.N, nullptr, 0);
    for (auto _ : st) {
        bertlet::detail::s8_drive<bertlet::detail::s8_fam_avx512_vnni_t<MR, NR>, false>(job, 0, s.M, 0, W.panels());
        benchmark::DoNotOptimize(pr.Y.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, s);
}
#endif

void bm_quantize(benchmark::State& st, s8_path p, shape s, bool smooth) {
    if (skip(st, p)) return;
    const auto X = gaussian(s.M * s.K, 1, 1.f);
    const auto cs = gaussian(s.K, 5, 1.f);
    std::vector<std::uint8_t> scratch(bertlet::gemm_s8_scratch_bytes(s.M, s.K));
    for (auto _ : st) {
        const auto A = bertlet::quantize_activations_s8(p, X.data(), s.M, s.K, s.K, smooth ? cs.data() : nullptr,
                                                        scratch.data());
        benchmark::DoNotOptimize(A.q);
        benchmark::ClobberMemory();
    }
    st.counters["Gfloat/s"] =
        benchmark::Counter(double(s.M * s.K) * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
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

// The int8 linears of one MiniLM layer (H = 384, I = 1536, T = 128 tokens); attention, LayerNorm and softmax are not
// included (their inputs are whatever the buffers hold).
struct layer {
    static constexpr std::size_t T = 128, H = 384, I = 1536;
    std::vector<float> x, q, k, v, ctx, tmp, inter, out, bq, bk, bv, bo, bi, bo2;
    bertlet::packed_s8_buffer wq, wk, wv, wqkv, wo, wi, wo2;
    std::vector<std::uint8_t> s0, s1;
    layer()
        : x(gaussian(T * H, 1, 1.f)), q(T * H), k(T * H), v(T * H), ctx(gaussian(T * H, 2, 1.f)), tmp(T * H),
          inter(T * I), out(T * H), bq(gaussian(H, 3, .1f)), bk(gaussian(H, 4, .1f)), bv(gaussian(H, 5, .1f)),
          bo(gaussian(H, 6, .1f)), bi(gaussian(I, 7, .1f)), bo2(gaussian(H, 8, .1f)),
          s0(bertlet::gemm_s8_scratch_bytes(T, I)), s1(bertlet::gemm_s8_scratch_bytes(T, I)) {
        const auto w = [](std::size_t n, std::size_t kk, unsigned seed) {
            const auto W = gaussian(n * kk, seed, 0.05f);
            return bertlet::pack_s8(W.data(), n, kk);
        };
        wq = w(H, H, 11);
        wk = w(H, H, 12);
        wv = w(H, H, 13);
        wqkv = w(3 * H, H, 14);
        wo = w(H, H, 15);
        wi = w(I, H, 16);
        wo2 = w(H, I, 17);
    }
};

// The pre-integration encoder: gemm_s8 per linear (quantizing every time), residual and GELU as separate passes (the
// GELU pass stands in for the fp32 kernel table's activate(): same erf approximation, one more pass over memory).
void separate_gelu(float* x, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) x[i] = bertlet::detail::s8_act_scalar(x[i], bertlet::detail::activation::gelu_erf);
}

#if defined(BERTLET_S8_X86)
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl"))) void separate_gelu_avx512(float* x,
                                                                                              std::size_t n) {
    for (std::size_t i = 0; i + 16 <= n; i += 16)
        _mm512_storeu_ps(x + i, bertlet::detail::s8_act_avx512(_mm512_loadu_ps(x + i),
                                                               bertlet::detail::activation::gelu_erf));
}
__attribute__((target("avx2,fma"))) void separate_gelu_avx2(float* x, std::size_t n) {
    for (std::size_t i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, bertlet::detail::s8_act_avx2(_mm256_loadu_ps(x + i),
                                                             bertlet::detail::activation::gelu_erf));
}
#endif

void gelu_pass(s8_path p, float* x, std::size_t n) {  // n: a multiple of 16 here
#if defined(BERTLET_S8_X86)
    if (p == s8_path::avx512 || p == s8_path::avx512_vnni) return separate_gelu_avx512(x, n);
    if (p == s8_path::avx2 || p == s8_path::avx_vnni) return separate_gelu_avx2(x, n);
#endif
    separate_gelu(x, n);
}

void add_in_place(float* y, const float* r, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) y[i] += r[i];
}

void bm_layer_old(benchmark::State& st, s8_path p) {
    if (skip(st, p)) return;
    layer L;
    constexpr std::size_t T = layer::T, H = layer::H, I = layer::I;
    for (auto _ : st) {
        bertlet::gemm_s8(p, L.x.data(), T, H, H, L.wq.view(), L.bq.data(), L.q.data(), H, L.s0.data());
        bertlet::gemm_s8(p, L.x.data(), T, H, H, L.wk.view(), L.bk.data(), L.k.data(), H, L.s0.data());
        bertlet::gemm_s8(p, L.x.data(), T, H, H, L.wv.view(), L.bv.data(), L.v.data(), H, L.s0.data());
        bertlet::gemm_s8(p, L.ctx.data(), T, H, H, L.wo.view(), L.bo.data(), L.tmp.data(), H, L.s0.data());
        add_in_place(L.tmp.data(), L.x.data(), T * H);
        bertlet::gemm_s8(p, L.tmp.data(), T, H, H, L.wi.view(), L.bi.data(), L.inter.data(), I, L.s0.data());
        gelu_pass(p, L.inter.data(), T * I);
        bertlet::gemm_s8(p, L.inter.data(), T, I, I, L.wo2.view(), L.bo2.data(), L.out.data(), H, L.s0.data());
        add_in_place(L.out.data(), L.tmp.data(), T * H);
        benchmark::DoNotOptimize(L.out.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, {T, H, H}, 12.0);
}

// As bm_layer_new, every linear through quantize_gemm_s8_parallel (row-block split, quantization inside the tasks).
void bm_layer_rows(benchmark::State& st, s8_path p, int threads) {
    if (skip(st, p)) return;
    layer L;
    constexpr std::size_t T = layer::T, H = layer::H, I = layer::I;
    std::unique_ptr<bertlet::detail::thread_pool> pool;
    if (threads > 1) pool = std::make_unique<bertlet::detail::thread_pool>(static_cast<std::size_t>(threads));
    auto* pl = pool.get();
    const auto wq = L.wq.view(), wk = L.wk.view(), wv = L.wv.view();
    const bertlet::s8_gemm g[3] = {{&wq, {L.bq.data(), nullptr, 0, {}}, L.q.data(), H},
                                   {&wk, {L.bk.data(), nullptr, 0, {}}, L.k.data(), H},
                                   {&wv, {L.bv.data(), nullptr, 0, {}}, L.v.data(), H}};
    for (auto _ : st) {
        bertlet::quantize_gemm_s8_parallel(pl, p, L.x.data(), T, H, H, nullptr, L.s0.data(), g, 3);
        bertlet::quantize_gemm_s8_parallel(pl, p, L.ctx.data(), T, H, H, nullptr, L.s1.data(), L.wo.view(),
                                           bertlet::s8_epilogue{L.bo.data(), L.x.data(), H, {}}, L.tmp.data(), H);
        bertlet::quantize_gemm_s8_parallel(
            pl, p, L.tmp.data(), T, H, H, nullptr, L.s0.data(), L.wi.view(),
            bertlet::s8_epilogue{L.bi.data(), nullptr, 0, bertlet::detail::activation::gelu_erf}, L.inter.data(), I);
        bertlet::quantize_gemm_s8_parallel(pl, p, L.inter.data(), T, I, I, nullptr, L.s1.data(), L.wo2.view(),
                                           bertlet::s8_epilogue{L.bo2.data(), L.tmp.data(), H, {}}, L.out.data(), H);
        benchmark::DoNotOptimize(L.out.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, {T, H, H}, 12.0);
}

void bm_layer_new(benchmark::State& st, s8_path p, int threads, bool fused_qkv) {
    if (skip(st, p)) return;
    layer L;
    constexpr std::size_t T = layer::T, H = layer::H, I = layer::I;
    std::unique_ptr<bertlet::detail::thread_pool> pool;
    if (threads > 1) pool = std::make_unique<bertlet::detail::thread_pool>(static_cast<std::size_t>(threads));
    auto* pl = pool.get();
    std::vector<float> qkv(T * 3 * H), bqkv(3 * H);
    for (auto _ : st) {
        const auto A = bertlet::quantize_activations_s8_parallel(pl, p, L.x.data(), T, H, H, nullptr, L.s0.data());
        if (fused_qkv) {
            bertlet::gemm_s8_parallel(pl, p, A, L.wqkv.view(), bertlet::s8_epilogue{bqkv.data(), nullptr, 0, {}},
                                      qkv.data(), 3 * H);
        } else {
            const auto wq = L.wq.view(), wk = L.wk.view(), wv = L.wv.view();
            const bertlet::s8_gemm g[3] = {{&wq, {L.bq.data(), nullptr, 0, {}}, L.q.data(), H},
                                           {&wk, {L.bk.data(), nullptr, 0, {}}, L.k.data(), H},
                                           {&wv, {L.bv.data(), nullptr, 0, {}}, L.v.data(), H}};
            bertlet::gemm_s8_parallel(pl, p, A, g, 3);
        }
        const auto C = bertlet::quantize_activations_s8_parallel(pl, p, L.ctx.data(), T, H, H, nullptr, L.s1.data());
        bertlet::gemm_s8_parallel(pl, p, C, L.wo.view(), bertlet::s8_epilogue{L.bo.data(), L.x.data(), H, {}},
                                  L.tmp.data(), H);
        const auto Tq = bertlet::quantize_activations_s8_parallel(pl, p, L.tmp.data(), T, H, H, nullptr, L.s0.data());
        bertlet::gemm_s8_parallel(pl, p, Tq, L.wi.view(),
                                  bertlet::s8_epilogue{L.bi.data(), nullptr, 0, bertlet::detail::activation::gelu_erf},
                                  L.inter.data(), I);
        const auto Iq = bertlet::quantize_activations_s8_parallel(pl, p, L.inter.data(), T, I, I, nullptr, L.s1.data());
        bertlet::gemm_s8_parallel(pl, p, Iq, L.wo2.view(), bertlet::s8_epilogue{L.bo2.data(), L.tmp.data(), H, {}},
                                  L.out.data(), H);
        benchmark::DoNotOptimize(L.out.data());
        benchmark::ClobberMemory();
    }
    set_gops(st, {T, H, H}, 12.0);
}

const int registered = [] {
    using benchmark::RegisterBenchmark;
    for (const shape& s : shapes) {
        const std::string d = dims(s);
        RegisterBenchmark(("f32_eigen" + d).c_str(), bm_f32, s)->Unit(benchmark::kMicrosecond);
        for (s8_path p : bertlet::all_s8_paths) {
            const std::string n = bertlet::s8_path_name(p);
            RegisterBenchmark(("s8_" + n + d).c_str(), bm_s8, p, s)->Unit(benchmark::kMicrosecond);
            RegisterBenchmark(("s8q_" + n + d).c_str(), bm_s8q, p, s, 0)->Unit(benchmark::kMicrosecond);
            for (int t : {1, 2}) {
                RegisterBenchmark(("s8mt_" + n + "/T" + std::to_string(t) + d).c_str(), bm_s8mt, p, s, t, false)
                    ->Unit(benchmark::kMicrosecond)
                    ->UseRealTime();
                RegisterBenchmark(("s8mtq_" + n + "/T" + std::to_string(t) + d).c_str(), bm_s8mt, p, s, t, true)
                    ->Unit(benchmark::kMicrosecond)
                    ->UseRealTime();
                RegisterBenchmark(("s8fused_" + n + "/T" + std::to_string(t) + d).c_str(), bm_s8fused, p, s, t)
                    ->Unit(benchmark::kMicrosecond)
                    ->UseRealTime();
            }
        }
#if defined(BERTLET_S8_X86)
        RegisterBenchmark(("vnni_4x4" + d).c_str(), bm_vnni_shape<4, 4>, s)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("vnni_5x4" + d).c_str(), bm_vnni_shape<5, 4>, s)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("vnni_6x4" + d).c_str(), bm_vnni_shape<6, 4>, s)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("vnni_7x4" + d).c_str(), bm_vnni_shape<7, 4>, s)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("vnni_8x3" + d).c_str(), bm_vnni_shape<8, 3>, s)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("vnni_8x2" + d).c_str(), bm_vnni_shape<8, 2>, s)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("vnni_4x6" + d).c_str(), bm_vnni_shape<4, 6>, s)->Unit(benchmark::kMicrosecond);
#endif
    }
    for (s8_path p : bertlet::all_s8_paths) {
        const std::string n = bertlet::s8_path_name(p);
        const shape big = shapes[3], ffn = shapes[2], sq = shapes[0];
        RegisterBenchmark(("s8ep_" + n + "/residual" + dims(sq)).c_str(), bm_s8q, p, sq, 1)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("s8ep_" + n + "/residual" + dims(big)).c_str(), bm_s8q, p, big, 1)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("s8ep_" + n + "/gelu_erf" + dims(ffn)).c_str(), bm_s8q, p, ffn, 2)->Unit(benchmark::kMicrosecond);
        RegisterBenchmark(("s8ep_" + n + "/gelu_tanh" + dims(ffn)).c_str(), bm_s8q, p, ffn, 3)->Unit(benchmark::kMicrosecond);
        for (const shape& s : {sq, big}) {
            RegisterBenchmark(("quantize_" + n + dims(s)).c_str(), bm_quantize, p, s, false)->Unit(benchmark::kMicrosecond);
            RegisterBenchmark(("quantize_" + n + "/smooth" + dims(s)).c_str(), bm_quantize, p, s, true)
                ->Unit(benchmark::kMicrosecond);
        }
        RegisterBenchmark(("layer_" + n + "/old").c_str(), bm_layer_old, p)->Unit(benchmark::kMicrosecond)->UseRealTime();
        for (int t : {1, 2}) {
            RegisterBenchmark(("layer_" + n + "/new_T" + std::to_string(t)).c_str(), bm_layer_new, p, t, false)
                ->Unit(benchmark::kMicrosecond)
                ->UseRealTime();
            RegisterBenchmark(("layer_" + n + "/new_fusedqkv_T" + std::to_string(t)).c_str(), bm_layer_new, p, t, true)
                ->Unit(benchmark::kMicrosecond)
                ->UseRealTime();
            RegisterBenchmark(("layer_" + n + "/rows_T" + std::to_string(t)).c_str(), bm_layer_rows, p, t)
                ->Unit(benchmark::kMicrosecond)
                ->UseRealTime();
        }
    }
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();
