// Micro-benchmark of the bf16 GEMM (kernels/gemm_bf16.hpp, vdpbf16ps) next to the fp32 AVX-512 kernel
// (detail::kernels_for(isa::avx512).gemm) on the same shapes, one thread, M = 128 tokens:
//   attention: S = Q_h K_h^T (N = 128 tokens, K = 32 head dim) and ctx = P V_h (N = 32, K = 128), operands packed
//              beforehand; the per-head packing (K_h as a weight, V_h as [K, N]) is timed separately (pack_*), and a
//              whole head (pack K_h and V_h, Q K^T, fp32 AVX-512 softmax, P V) is timed as head_*;
//   linear:    384 -> 384, 384 -> 1536, 1536 -> 384 with bias (weights pre-packed).
// GFLOP/s counts 2 * M * N * K per call (rate over CPU time), including the per-call A packing (and for bf16 its
// conversion). Pack benchmarks: the Time column is the cost per head.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "bertlet/kernels/dispatch.hpp"
#include "bertlet/kernels/attention_s8.hpp"
#include "bertlet/kernels/gemm_bf16.hpp"
#include "bertlet/kernels/gemm_f32x6.hpp"

namespace {

namespace bd = bertlet::detail;

struct shape {
    const char* name;
    std::ptrdiff_t M, N, K;
    bool bias;
};
constexpr shape shapes[] = {{"attn_qk", 128, 128, 32, false},   {"attn_pv", 128, 32, 128, false},
                            {"lin_384_384", 128, 384, 384, true}, {"lin_384_1152", 128, 1152, 384, true},
                            {"lin_384_1536", 128, 1536, 384, true},
                            {"lin_1536_384", 128, 384, 1536, true}};

std::vector<float> gaussian(std::size_t n, unsigned seed, float sd) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

void set_gflops(benchmark::State& st, double flop_per_iter) {
    st.counters["GFLOP/s"] = benchmark::Counter(flop_per_iter * double(st.iterations()) / 1e9, benchmark::Counter::kIsRate);
}

bool need_avx512(benchmark::State& st) {
    if (bd::isa_compiled(bertlet::isa::avx512) && bertlet::cpu().supports(bertlet::isa::avx512)) return true;
    st.SkipWithError("no AVX-512 path");
    return false;
}
bool need_bf16(benchmark::State& st) {
    if (bertlet::bf16_supported()) return true;
    st.SkipWithError("CPU lacks AVX512_BF16");
    return false;
}

// The operands of a linear shape (A, W, bias; W also as PACKED_N16 panels) and the fields every GEMM args share.
struct linear_data {
    std::vector<float> A, W, b, pk, C;
    explicit linear_data(shape s)
        : A(gaussian(std::size_t(s.M * s.K), 1, 1.f)), W(gaussian(std::size_t(s.N * s.K), 2, 0.05f)),
          b(gaussian(std::size_t(s.N), 3, 0.1f)), pk(bd::packed_n16_size(std::size_t(s.N), std::size_t(s.K))),
          C(std::size_t(s.M * s.N)) {
        bd::pack_n16(W.data(), s.N, s.K, s.K, pk.data());
    }
    template <class Args>
    void fill(Args& g, shape s) {
        g.a = A.data();
        g.lda = s.K;
        g.c = C.data();
        g.ldc = s.N;
        g.m = s.M;
        g.n = s.N;
        g.k = s.K;
        if (s.bias) g.ep.bias = b.data();
    }
};

void bm_bf16(benchmark::State& st, shape s, bool a_bf16) {
    if (!need_bf16(st)) return;
    linear_data d(s);
    std::vector<std::uint16_t> pk(bertlet::bf16_packed_size(std::size_t(s.N), std::size_t(s.K))), a16(d.A.size());
    bertlet::pack_bf16(d.W.data(), s.N, s.K, s.K, pk.data());
    bertlet::convert_to_bf16(d.A.data(), std::ptrdiff_t(d.A.size()), a16.data());
    std::vector<unsigned char> scratch(bertlet::gemm_bf16_scratch_bytes());
    bertlet::gemm_bf16_args g;
    d.fill(g, s);
    if (a_bf16) g.a = nullptr, g.a16 = a16.data();
    g.b = pk.data();
    const std::ptrdiff_t np = (s.N + 15) / 16;
    for (auto _ : st) {
        bertlet::gemm_bf16(g, 0, s.M, 0, np, scratch.data());
        benchmark::DoNotOptimize(d.C.data());
        benchmark::ClobberMemory();
    }
    set_gflops(st, 2.0 * double(s.M * s.N * s.K));
}

// Worst error of C against a float64 reference, relative to sum |a w| of each element (counter "relerr").
double rel_error(const std::vector<float>& A, const std::vector<float>& W, const std::vector<float>& b,
                 const std::vector<float>& C, shape s) {
    double worst = 0;
    for (std::ptrdiff_t i = 0; i < s.M; ++i)
        for (std::ptrdiff_t j = 0; j < s.N; ++j) {
            double acc = s.bias ? b[std::size_t(j)] : 0.0, mag = 0;
            for (std::ptrdiff_t k = 0; k < s.K; ++k) {
                const double p = double(A[std::size_t(i * s.K + k)]) * W[std::size_t(j * s.K + k)];
                acc += p;
                mag += std::fabs(p);
            }
            worst = std::max(worst, std::fabs(C[std::size_t(i * s.N + j)] - acc) / mag);
        }
    return worst;
}

void bm_f32(benchmark::State& st, shape s) {
    if (!need_avx512(st)) return;
    const auto& kt = bd::kernels_for(bertlet::isa::avx512);
    linear_data d(s);
    std::vector<float> scratch(bd::gemm_scratch_floats());
    bd::gemm_args g;
    d.fill(g, s);
    g.b = d.pk.data();
    for (auto _ : st) {
        kt.gemm(g, 0, s.M, 0, bd::panels_of(s.N), scratch.data());
        benchmark::DoNotOptimize(d.C.data());
        benchmark::ClobberMemory();
    }
    set_gflops(st, 2.0 * double(s.M * s.N * s.K));
    if (s.K >= 384) st.counters["relerr"] = rel_error(d.A, d.W, d.b, d.C, s);
}

// fp32 GEMM as six bf16 products on the AMX tiles (kernels/gemm_f32x6.hpp), one thread, the activation split
// included; "relerr" is its worst error against float64 (bm_f32's is reported the same way).
void bm_f32x6(benchmark::State& st, shape s) {
    if (!bertlet::f32x6_supported() || !bertlet::f32x6_shape_ok(std::size_t(s.N), std::size_t(s.K))) {
        st.SkipWithError("no AMX-BF16 (or shape)");
        return;
    }
    linear_data d(s);
    bd::aligned_vector<std::uint16_t> wx(bertlet::f32x6_packed_size(std::size_t(s.N), std::size_t(s.K))),
        ax(bertlet::f32x6_a_size(std::size_t(s.M), std::size_t(s.K)));  // tiles: 64-byte rows on cache lines
    bertlet::pack_f32x6(d.pk.data(), std::size_t(s.N), std::size_t(s.K), wx.data());
    bertlet::f32x6_args g;
    d.fill(g, s);
    g.w = wx.data();
    for (auto _ : st) {
        bertlet::f32x6_gemm_parallel(nullptr, g, ax.data());
        benchmark::DoNotOptimize(d.C.data());
        benchmark::ClobberMemory();
    }
    set_gflops(st, 2.0 * double(s.M * s.N * s.K));
    st.counters["relerr"] = rel_error(d.A, d.W, d.b, d.C, s);
}

// Per-head packing of K_h ([L, D] as a weight) and V_h ([L, D] as B) out of a [L, 3H] QKV buffer.
constexpr std::ptrdiff_t L = 128, D = 32, H = 384, LDQKV = 3 * H;

void bm_pack(benchmark::State& st, bool bf16, bool kn) {
    if (bf16 ? !need_bf16(st) : !need_avx512(st)) return;
    const auto qkv = gaussian(std::size_t(L * LDQKV), 4, 1.f);
    const float* src = qkv.data() + H + 2 * D;
    std::vector<std::uint16_t> p16(bertlet::bf16_packed_size(L, D));
    std::vector<float> p32(bd::packed_n16_size(L, D) + bd::packed_n16_size(D, L));
    for (auto _ : st) {
        if (bf16) {
            if (kn) bertlet::pack_bf16_kn(src, L, D, LDQKV, p16.data());
            else bertlet::pack_bf16(src, L, D, LDQKV, p16.data());
            benchmark::DoNotOptimize(p16.data());
        } else {
            if (kn) bd::pack_kn16(src, L, D, LDQKV, p32.data());
            else bd::pack_n16(src, L, D, LDQKV, p32.data());
            benchmark::DoNotOptimize(p32.data());
        }
        benchmark::ClobberMemory();
    }
}

// One whole attention head at L = 128 (what the encoder does per (sequence, head) task).
void bm_head(benchmark::State& st, bool bf16) {
    if (bf16 ? !need_bf16(st) : !need_avx512(st)) return;
    const auto& kt = bd::kernels_for(bertlet::isa::avx512);
    const auto qkv = gaussian(std::size_t(L * LDQKV), 4, 1.f);
    const float* q = qkv.data() + 2 * D;
    const float* k = qkv.data() + H + 2 * D;
    const float* v = qkv.data() + 2 * H + 2 * D;
    std::vector<float> ctx(std::size_t(L * H)), S(std::size_t(L * L)), scratch(bd::gemm_scratch_floats());
    std::vector<float> kp32(bd::packed_n16_size(L, D)), vp32(bd::packed_n16_size(D, L));
    std::vector<std::uint16_t> kp16(bertlet::bf16_packed_size(L, D)), vp16(bertlet::bf16_packed_size(D, L));
    const float scale = 1.0f / std::sqrt(float(D));
    for (auto _ : st) {
        if (bf16) {
            bertlet::pack_bf16(k, L, D, LDQKV, kp16.data());
            bertlet::pack_bf16_kn(v, L, D, LDQKV, vp16.data());
            bd::epilogue e1;
            e1.alpha = scale;
            bertlet::gemm_bf16(q, LDQKV, L, D, kp16.data(), L, e1, S.data(), L, 0, L, 0, L / 16, scratch.data());
            kt.softmax(S.data(), L, L, L);
            bertlet::gemm_bf16(S.data(), L, L, L, vp16.data(), D, bd::epilogue{}, ctx.data() + 2 * D, H, 0, L, 0,
                               D / 16, scratch.data());
        } else {
            bd::pack_n16(k, L, D, LDQKV, kp32.data());
            bd::pack_kn16(v, L, D, LDQKV, vp32.data());
            bd::gemm_args g1;
            g1.a = q;
            g1.lda = LDQKV;
            g1.b = kp32.data();
            g1.c = S.data();
            g1.ldc = L;
            g1.m = L;
            g1.n = L;
            g1.k = D;
            g1.ep.alpha = scale;
            kt.gemm(g1, 0, L, 0, bd::panels_of(L), scratch.data());
            kt.softmax(S.data(), L, L, L);
            bd::gemm_args g2;
            g2.a = S.data();
            g2.lda = L;
            g2.b = vp32.data();
            g2.c = ctx.data() + 2 * D;
            g2.ldc = H;
            g2.m = L;
            g2.n = D;
            g2.k = L;
            kt.gemm(g2, 0, L, 0, bd::panels_of(D), scratch.data());
        }
        benchmark::DoNotOptimize(ctx.data());
        benchmark::ClobberMemory();
    }
    set_gflops(st, 2.0 * 2.0 * double(L * L * D));  // the two matmuls (the time includes packing and softmax)
}

// The fused attention heads the encoder runs per (sequence, head), L = 128, D = 32: fp32 (the avx512 kernel table's),
// bf16 (int8 models on AVX512_BF16 CPUs before) and int8 (kernels/attention_s8.hpp, int8 models on VNNI CPUs).
void bm_fused(benchmark::State& st, int kind) {
    if (kind == 1 ? !need_bf16(st) : !need_avx512(st)) return;
    if (kind == 2 && !bertlet::s8_attention_supported()) {
        st.SkipWithError("no AVX-512 VNNI");
        return;
    }
    const auto& kt = bd::kernels_for(bertlet::isa::avx512);
    const auto qkv = gaussian(std::size_t(L * LDQKV), 4, 1.f);
    const float* q = qkv.data() + 2 * D;
    const float* k = qkv.data() + H + 2 * D;
    const float* v = qkv.data() + 2 * H + 2 * D;
    std::vector<float> ctx(std::size_t(L * H));
    const std::size_t nb = std::max({bertlet::s8_attention_scratch_bytes(L, D),
                                     bertlet::bf16_attention_scratch_bytes(L, D), bd::attention_scratch_floats(L, D) * 4});
    std::vector<unsigned char> scratch(nb);
    const float scale = 1.0f / std::sqrt(float(D));
    for (auto _ : st) {
        float* c = ctx.data() + 2 * D;
        if (kind == 0) kt.attention(q, k, v, LDQKV, c, H, L, D, scale, reinterpret_cast<float*>(scratch.data()));
        else if (kind == 1) bertlet::bf16_attention_head(q, k, v, LDQKV, c, H, L, D, scale, scratch.data());
        else bertlet::s8_attention_head(q, k, v, LDQKV, c, H, L, D, scale, scratch.data());
        benchmark::DoNotOptimize(ctx.data());
        benchmark::ClobberMemory();
    }
    set_gflops(st, 2.0 * 2.0 * double(L * L * D));
}

const int registered = [] {
    for (const shape& s : shapes) {
        const std::string dims = std::string("/") + s.name + "/M" + std::to_string(s.M) + "_N" + std::to_string(s.N) +
                                 "_K" + std::to_string(s.K);
        benchmark::RegisterBenchmark(("f32_avx512" + dims).c_str(), bm_f32, s)->Unit(benchmark::kMicrosecond);
        benchmark::RegisterBenchmark(("bf16" + dims).c_str(), bm_bf16, s, false)->Unit(benchmark::kMicrosecond);
        if (s.K >= 384)
            benchmark::RegisterBenchmark(("f32x6_amx" + dims).c_str(), bm_f32x6, s)->Unit(benchmark::kMicrosecond);
        if (s.K == 128)  // P V with P already in bf16 (softmax writing bf16)
            benchmark::RegisterBenchmark(("bf16_a16" + dims).c_str(), bm_bf16, s, true)->Unit(benchmark::kMicrosecond);
    }
    benchmark::RegisterBenchmark("pack_f32_n16/K_h/L128_D32", bm_pack, false, false)->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark("pack_bf16/K_h/L128_D32", bm_pack, true, false)->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark("pack_f32_kn16/V_h/L128_D32", bm_pack, false, true)->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark("pack_bf16_kn/V_h/L128_D32", bm_pack, true, true)->Unit(benchmark::kNanosecond);
    benchmark::RegisterBenchmark("head_f32/L128_D32", bm_head, false)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("head_bf16/L128_D32", bm_head, true)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("fused_f32/L128_D32", bm_fused, 0)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("fused_bf16/L128_D32", bm_fused, 1)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark("fused_s8/L128_D32", bm_fused, 2)->Unit(benchmark::kMicrosecond);
    return 0;
}();

}  // namespace

BENCHMARK_MAIN();
