// bertlet — the BERT encoder: embeddings + N post-LN transformer blocks.
//
// Weights are views into the (immutable, mmapped) blob. The linear weights are read in the PACKED_N16 layout the
// GEMM kernels want (kernels/packed.hpp): used in place when the converter pre-packed them (layout 1, the default),
// packed once at load otherwise (row-major blobs). On CPUs with AMX-BF16 the f32 linears are also copied at load into
// the tile layout of the bf16x6 GEMM (kernels/gemm_f32x6.hpp; f32_amx()), and bf16 ones run on the tiles in place
// (bf16_amx()); load_options::amx = false declines both. Every kernel call goes through the table of one ISA path
// (kernels/dispatch.hpp), picked at load; an optional intra-op pool splits the GEMMs, attention and LayerNorm. A forward pass runs over a
// *packed* batch: the tokens of every sequence are stored back to back ([total_tokens, H]), so token-wise work
// (GEMMs, LayerNorm, GELU) runs once over all real tokens and attention runs per sequence at its exact length.
// No work is ever done on padding, and nothing is padded to the model maximum.
//
// Shapes: encoder_block<Shape> is templated over a shape policy. fixed_shape<H, Heads, I> makes the sizes
// compile-time constants (MiniLM 384/12/1536, bert-base 768/12/3072); dynamic_shape serves any other config.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "bertlet/blob/reader.hpp"
#include "bertlet/error.hpp"
#include "bertlet/kernels/attention_s8.hpp"
#include "bertlet/kernels/basic.hpp"
#include "bertlet/kernels/dispatch.hpp"
#include "bertlet/kernels/gemm_bf16.hpp"
#include "bertlet/kernels/gemm_f32x6.hpp"
#include "bertlet/kernels/gemm_s8.hpp"
#include "bertlet/model/config.hpp"

namespace bertlet {

/// Scratch memory for forward passes. One per thread; grows to the largest batch seen, then never allocates.
class workspace {
public:
    workspace() = default;
    /// threads: the encoder's intra-op thread count (each thread gets its own GEMM / attention scratch).
    /// f32x6: also the split-activation buffer of the AMX bf16x6 fp32 GEMMs (kernels/gemm_f32x6.hpp).
    void reserve(std::size_t tokens, std::size_t max_len, const bert_config& c, std::size_t threads = 1,
                 bool f32x6 = false) {
        if (f32x6) {
            const std::size_t n = f32x6_a_size(tokens, std::max(c.hidden_size, c.intermediate_size));
            if (x6_.size() < n) x6_.resize(n);
        }
        grow(x_, tokens * c.hidden_size);
        grow(q_, tokens * c.hidden_size * 3);  // Q|K|V side by side when the encoder fuses their GEMMs
        grow(k_, tokens * c.hidden_size);
        grow(v_, tokens * c.hidden_size);
        grow(ctx_, tokens * c.hidden_size);
        grow(tmp_, tokens * c.hidden_size);
        grow(inter_, tokens * c.intermediate_size);
        const std::size_t s8 = gemm_s8_scratch_bytes(tokens, std::max(c.hidden_size, c.intermediate_size));
        if (s8_.size() < s8) s8_.resize(s8);
        const std::size_t stride = thread_scratch_floats(max_len, c);
        if (stride > stride_ || threads > threads_) {
            stride_ = std::max(stride, stride_);
            threads_ = std::max(threads, threads_);
            scratch_.assign(stride_ * threads_, 0.0f);
        }
    }

private:
    template <class> friend struct encoder_block;
    friend class encoder;
    static constexpr std::size_t attn_rows = 48;  // query rows per attention tile
    /// Per-thread floats: GEMM A-block + attention's packed K_h, packed V_h and a score tile.
    static std::size_t thread_scratch_floats(std::size_t max_len, const bert_config& c) {
        const std::size_t D = c.head_dim(), L = std::max<std::size_t>(max_len, 1);
        return detail::gemm_scratch_floats() +
               std::max({detail::packed_n16_size(L, D) + detail::packed_n16_size(D, L) + attn_rows * L + 16,
                         detail::attention_scratch_floats(L, D), bf16_attention_scratch_bytes(L, D) / 4 + 1,
                         s8_attention_scratch_bytes(L, D) / 4 + 1});
    }
    static void grow(detail::aligned_vector<float>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    }
    // 64-byte aligned (detail::aligned_allocator: rows of 64 bytes must not straddle cache lines)
    detail::aligned_vector<float> x_, q_, k_, v_, ctx_, tmp_, inter_, scratch_;
    detail::aligned_vector<std::uint8_t> s8_;  // int8 GEMM scratch (quantized activations + their scales)
    detail::aligned_vector<std::uint16_t> x6_;  // bf16x6 fp32 GEMM: the activations split into three bf16 parts
    std::size_t stride_ = 0, threads_ = 0;
};

/// Where each sequence of a packed batch lives: rows [offset, offset + length) of the hidden-state matrix.
struct sequence_span {
    std::size_t offset = 0;
    std::size_t length = 0;
};

/// One layer's weights. The six linear weights are PACKED_N16 panels (kernels/packed.hpp), either straight from
/// the mmapped blob (layout 1) or packed at load (row-major blobs).
struct layer_weights {
    const float *wq, *bq, *wk, *bk, *wv, *bv;
    const float *wo, *bo, *ln1_g, *ln1_b;
    const float *wi, *bi, *wo2, *bo2, *ln2_g, *ln2_b;
    // int8 linears (layout 2 blobs): a view with data != nullptr replaces the f32 weight of the same linear
    packed_s8 q8, k8, v8, o8, i8, o28;
    // their per-input-channel activation smoothing (`<weight>.act_scale`, K floats; null = none; docs/INT8.md).
    // Q, K and V quantize their shared input once, so their act_scale must be identical (checked at load).
    const float *as_q = nullptr, *as_k = nullptr, *as_v = nullptr, *as_o = nullptr, *as_i = nullptr,
                *as_o2 = nullptr;
    // bf16 linears (layout 3, BF16P16K2; used when the CPU has AVX512_BF16, else widened to f32 at load)
    const std::uint16_t *q16 = nullptr, *k16 = nullptr, *v16 = nullptr, *o16 = nullptr, *i16 = nullptr,
                        *o216 = nullptr;
    // Q, K and V as one GEMM (f32 or bf16 weights, H % 32 == 0): bqkv = [bq | bk | bv], owned by the encoder
    const float* bqkv = nullptr;
    // f32 linears as the F32X6 layout of the AMX bf16x6 GEMM (kernels/gemm_f32x6.hpp; built at load on CPUs with
    // AMX-BF16, owned by the encoder; null: the FMA kernels); qkv_x = [Wq; Wk; Wv] as one weight of 3H outputs
    const std::uint16_t *qkv_x = nullptr, *o_x = nullptr, *i_x = nullptr, *o2_x = nullptr;
};

struct dynamic_shape {
    std::size_t h, heads, i;
    std::size_t hidden() const noexcept { return h; }
    std::size_t num_heads() const noexcept { return heads; }
    std::size_t intermediate() const noexcept { return i; }
};

template <std::size_t H, std::size_t Heads, std::size_t I>
struct fixed_shape {
    static_assert(H % Heads == 0, "hidden size must divide into heads");
    static constexpr std::size_t hidden() noexcept { return H; }
    static constexpr std::size_t num_heads() noexcept { return Heads; }
    static constexpr std::size_t intermediate() noexcept { return I; }
};

namespace detail {
/// What a forward pass runs on: the kernel table of one ISA path and an optional intra-op pool.
struct exec_context {
    const kernel_table* k = nullptr;
    thread_pool* pool = nullptr;  // null: run on the calling thread
    s8_path s8 = s8_path::scalar;  // the int8 GEMM path that goes with k's ISA
    bool bf16_attention = false;   // attention matmuls in bf16 (int8 models on AVX512_BF16 CPUs; docs/INT8.md)
    bool s8_attention = false;     // attention matmuls in int8 (int8 models on AVX-512 VNNI; kernels/attention_s8.hpp)
    bool f32_amx = false;          // this call's f32 linears on the AMX bf16x6 weights (layer_weights::*_x)
    bool bf16_amx = false;         // bf16 (layout 3) linears on the AMX tiles (gemm_f32x6.hpp, f32x6_args::bf16)
};
}  // namespace detail

/// One post-LN transformer block (BertLayer): self-attention, add & norm, FFN (GELU), add & norm.
/// Every linear runs through the packed GEMM with its bias / residual / GELU fused in the epilogue.
/// The LayerNorm that produces the block's input (the embeddings' or the previous block's output LayerNorm) is
/// applied here, first (in_ln_g / in_ln_b; null: x is already normalised), and the block's own output LayerNorm is
/// left to the caller (the next block's in_ln, or a last layernorm()): LayerNorm is row-local, so with int8 weights
/// it runs inside the pool job that quantizes those rows and computes their Q, K, V (one pool round trip less).
template <class Shape>
struct encoder_block {
    static void forward(const Shape& s, const layer_weights& w, float eps, detail::gelu_kind act,
                        const sequence_span* seqs, std::size_t nseq, std::size_t tokens, workspace& ws,
                        const detail::exec_context& ex, const float* in_ln_g, const float* in_ln_b,
                        const packed_s8* next_q8 = nullptr,  // the next block's first int8 weight (prefetch)
                        std::size_t row0 = 0) {  // the sequences' rows are [row0, row0 + tokens) of ws.x_
        using std::ptrdiff_t;
        const detail::kernel_table& K = *ex.k;
        const ptrdiff_t H = static_cast<ptrdiff_t>(s.hidden());
        const ptrdiff_t NH = static_cast<ptrdiff_t>(s.num_heads());
        const ptrdiff_t D = H / NH;
        const ptrdiff_t I = static_cast<ptrdiff_t>(s.intermediate());
        const ptrdiff_t T = static_cast<ptrdiff_t>(tokens);
        float* x = ws.x_.data() + row0 * static_cast<std::size_t>(H);
        float* q = ws.q_.data();
        float* k = ws.k_.data();
        float* v = ws.v_.data();
        float* ctx = ws.ctx_.data();
        float* tmp = ws.tmp_.data();
        float* inter = ws.inter_.data();
        float* scratch = ws.scratch_.data();
        const std::size_t stride = ws.stride_;

        auto run_x6 = [&](const float* a, ptrdiff_t in, const std::uint16_t* wx, const detail::epilogue& ep, float* y,
                          ptrdiff_t out, bool bf16 = false, const std::uint16_t* const* seg = nullptr) {
            f32x6_args g;
            g.bf16 = bf16;
            if (seg) {  // [Wq; Wk; Wv] as three weights of H outputs
                for (int j = 0; j < 3; ++j) g.wseg[j] = seg[j];
                g.seg_panels = out / 3 / 16;
            }
            g.a = a;
            g.lda = in;
            g.w = wx;
            g.c = y;
            g.ldc = out;
            g.m = T;
            g.n = out;
            g.k = in;
            g.ep = ep;
            f32x6_gemm_parallel(ex.pool, g, ws.x6_.data());
        };
        auto run = [&](const auto& g) {  // an f32 or bf16 GEMM split over the pool
            if constexpr (std::is_same_v<std::decay_t<decltype(g)>, gemm_bf16_args>)
                gemm_bf16_parallel(ex.pool, g, scratch, stride * sizeof(float));
            else
                detail::gemm_parallel(K, ex.pool, g, scratch, stride);
        };
        auto linear = [&](const float* a, ptrdiff_t in, const float* wp, const packed_s8& w8, const float* as,
                          const std::uint16_t* w16, const float* b, ptrdiff_t out, float* y, const float* residual,
                          detail::activation fn, float* ln_x = nullptr, const float* ln_g = nullptr,
                          const float* ln_b = nullptr, const packed_s8* next = nullptr,
                          const std::uint16_t* wx = nullptr) {
            // ln_x (== a, or null): LayerNorm those rows in place first (ln_g / ln_b); int8: inside the GEMM's job
            const detail::epilogue ep{1.0f, b, residual, out, fn};
            if (ln_x && !w8.data) layernorm(K, ex, ln_x, T, in, ln_g, ln_b, eps);
            if (w16 && ex.bf16_amx) {  // bf16 weights on the AMX tiles: the same semantics, one tile product per step
                run_x6(a, in, w16, ep, y, out, true);
                return;
            }
            if (w16) {  // bf16 weights: A rounded to bf16 while packing, fp32 accumulation, fused epilogue
                gemm_bf16_args g = gemm_for<gemm_bf16_args>(a, in, y, out, T, out, in, ep);
                g.b = w16;
                run(g);
                return;
            }
            if (w8.data) {  // int8 weights: per-token activation quantization, exact integer GEMM with bias /
                            // residual / GELU fused in its epilogue; one pool job of row blocks does the LayerNorm (if
                            // any), the quantization and the GEMM of its rows
                s8_gemm g;
                g.W = &w8;
                g.ep.bias = b;
                g.ep.residual = residual;
                g.ep.ldr = static_cast<std::size_t>(out);
                g.ep.act = fn;
                g.Y = y;
                g.ldy = static_cast<std::size_t>(out);
                g.next = next;
                quantize_gemm_s8_parallel(ex.pool, ex.s8, a, static_cast<std::size_t>(T), static_cast<std::size_t>(in),
                                          static_cast<std::size_t>(in), as, ws.s8_.data(), &g, 1,
                                          rows_layernorm(K, ln_x, in, ln_g, ln_b, eps));
                return;
            }
            if (wx && ex.f32_amx) {  // f32 weights on the AMX tiles as six bf16 products
                run_x6(a, in, wx, ep, y, out);
                return;
            }
            detail::gemm_args g = gemm_for<detail::gemm_args>(a, in, y, out, T, out, in, ep);
            g.b = wp;
            run(g);
        };
        const auto none = detail::activation::none;
        ptrdiff_t ldqkv = H;  // row stride of Q, K and V
        const bool int8_qkv = w.q8.data && w.k8.data && w.v8.data;
        const bool fused_qkv = int8_qkv || w.bqkv;
        if (in_ln_g && !int8_qkv) layernorm(K, ex, x, T, H, in_ln_g, in_ln_b, eps);
        // int8 Q, K, V feeding a fused attention kernel (int8, bf16 or the path's f32 one) are written head-major
        // (s8_gemm::hd): each head's [T, D] block contiguous, so a head's attention reads its rows back to back (int8
        // attention: forward 0.98-0.99x). The same for the f32 / bf16 QKV GEMM measured no gain (seq 128 1.004x).
        const bool hm = int8_qkv && D % 16 == 0 && (ex.s8_attention || ex.bf16_attention || K.attention);
        if (int8_qkv) {  // int8 Q, K, V: quantize x once, three GEMMs in one pool job
            s8_gemm g[3];
            const packed_s8* W3[3] = {&w.q8, &w.k8, &w.v8};
            const float* b3[3] = {w.bq, w.bk, w.bv};
            for (int j = 0; j < 3; ++j) {
                g[j].W = W3[j];
                g[j].ep.bias = b3[j];
                g[j].Y = q + j * H;
                g[j].ldy = static_cast<std::size_t>(3 * H);
            }
            if (hm)  // Q, K and V head-major, each head's [T, D] block contiguous (see attend)
                for (int j = 0; j < 3; ++j) {
                    g[j].Y = q + j * T * H;
                    g[j].hd = static_cast<std::size_t>(D);
                    g[j].hstride = static_cast<std::size_t>(T * D);
                }
            g[0].next = &w.k8;  // each prefetches the first weight block of the int8 GEMM after it
            g[1].next = &w.v8;
            g[2].next = &w.o8;
            quantize_gemm_s8_parallel(ex.pool, ex.s8, x, static_cast<std::size_t>(T), static_cast<std::size_t>(H),
                                      static_cast<std::size_t>(H), w.as_q, ws.s8_.data(), g, 3,
                                      rows_layernorm(K, in_ln_g ? x : nullptr, H, in_ln_g, in_ln_b, eps));
        } else if (w.qkv_x && ex.f32_amx) {
            run_x6(x, H, w.qkv_x, detail::epilogue{1.0f, w.bqkv}, q, 3 * H);
        } else if (w.bqkv && w.q16 && ex.bf16_amx) {
            const std::uint16_t* seg[3] = {w.q16, w.k16, w.v16};
            run_x6(x, H, nullptr, detail::epilogue{1.0f, w.bqkv}, q, 3 * H, true, seg);
        } else if (w.bqkv) {  // one GEMM over [Wq; Wk; Wv] (f32 or bf16 panels): A is packed once
            const detail::epilogue ep{1.0f, w.bqkv};
            auto fused = [&](auto g, const auto* wq, const auto* wk, const auto* wv) {
                g.bseg[0] = wq;
                g.bseg[1] = wk;
                g.bseg[2] = wv;
                g.seg_panels = detail::panels_of(H);
                run(g);
            };
            if (w.q16) fused(gemm_for<gemm_bf16_args>(x, H, q, 3 * H, T, 3 * H, H, ep), w.q16, w.k16, w.v16);
            else fused(gemm_for<detail::gemm_args>(x, H, q, 3 * H, T, 3 * H, H, ep), w.wq, w.wk, w.wv);
        } else {
            linear(x, H, w.wq, w.q8, w.as_q, w.q16, w.bq, H, q, nullptr, none);
            linear(x, H, w.wk, w.k8, w.as_k, w.k16, w.bk, H, k, nullptr, none);
            linear(x, H, w.wv, w.v8, w.as_v, w.v16, w.bv, H, v, nullptr, none);
        }
        if (fused_qkv) {  // outputs side by side in q: [T, 3H]
            k = q + H;
            v = q + 2 * H;
            ldqkv = 3 * H;
        }

        // Attention, one task per (sequence, head): pack K_h and V_h into panels, then per tile of query rows
        // S = scale * Q_h K_h^T, row softmax, ctx_h = S V_h. Only a (tile rows x L) score block exists at a time.
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        const ptrdiff_t QT = static_cast<ptrdiff_t>(workspace::attn_rows);
        auto attend = [&](std::size_t task, std::size_t slot) {
            const std::size_t si = task / static_cast<std::size_t>(NH);
            const ptrdiff_t h = static_cast<ptrdiff_t>(task % static_cast<std::size_t>(NH));
            const ptrdiff_t off = static_cast<ptrdiff_t>(seqs[si].offset - row0);
            const ptrdiff_t L = static_cast<ptrdiff_t>(seqs[si].length);
            if (L == 0) return;
            float* gs = scratch + slot * stride;
            float* kp = gs + detail::gemm_scratch_floats();
            float* vp = kp + detail::packed_n16_size(static_cast<std::size_t>(L), static_cast<std::size_t>(D));
            float* sc = vp + detail::packed_n16_size(static_cast<std::size_t>(D), static_cast<std::size_t>(L));
            const float* qh = q + off * ldqkv + h * D;
            const float* kh = k + off * ldqkv + h * D;
            const float* vh = v + off * ldqkv + h * D;
            float* ch = ctx + off * H + h * D;
            if (hm) {  // head-major Q, K, V (the QKV GEMMs above): this head's rows are back to back
                qh = q + h * T * D + off * D;
                kh = qh + T * H;
                vh = qh + 2 * T * H;
            }
            const ptrdiff_t ld = hm ? D : ldqkv;
            if (ex.s8_attention) {  // int8 Q K^T and P V through the VNNI GEMM kernel (kernels/attention_s8.hpp)
                s8_attention_head(qh, kh, vh, ld, ch, H, L, D, scale, kp);
                return;
            }
            if (ex.bf16_attention) {  // fused, bf16 operands, fp32 accumulation and softmax (kernels/gemm_bf16.hpp)
                bf16_attention_head(qh, kh, vh, ld, ch, H, L, D, scale, kp);
                return;
            }
            if (K.attention && D % 16 == 0) {  // the path's fused fp32 kernel
                K.attention(qh, kh, vh, ld, ch, H, L, D, scale, kp);
                return;
            }
            detail::pack_n16(kh, L, D, ld, kp);   // K_h as a weight [L outputs, D inputs]
            detail::pack_kn16(vh, L, D, ld, vp);  // V_h as B [L, D]
            for (ptrdiff_t q0 = 0; q0 < L; q0 += QT) {
                const ptrdiff_t qt = std::min(QT, L - q0);
                detail::gemm_args g1;
                g1.a = qh + q0 * ld;
                g1.lda = ld;
                g1.b = kp;
                g1.c = sc;
                g1.ldc = L;
                g1.m = qt;
                g1.n = L;
                g1.k = D;
                g1.ep.alpha = scale;
                K.gemm(g1, 0, qt, 0, detail::panels_of(L), gs);
                K.softmax(sc, qt, L, L);
                detail::gemm_args g2;
                g2.a = sc;
                g2.lda = L;
                g2.b = vp;
                g2.c = ch + q0 * H;
                g2.ldc = H;
                g2.m = qt;
                g2.n = D;
                g2.k = L;
                K.gemm(g2, 0, qt, 0, detail::panels_of(D), gs);
            }
        };
        const std::size_t ntasks = nseq * static_cast<std::size_t>(NH);
        if (ex.pool) ex.pool->run(ntasks, attend);
        else
            for (std::size_t t = 0; t < ntasks; ++t) attend(t, 0);

        const detail::activation fn =
            act == detail::gelu_kind::erf ? detail::activation::gelu_erf : detail::activation::gelu_tanh;
        linear(ctx, H, w.wo, w.o8, w.as_o, w.o16, w.bo, H, tmp, x, none, nullptr, nullptr, nullptr,
               &w.i8, w.o_x);  // tmp = attn_out + x
        // tmp = LN(tmp), inter = GELU(tmp Wi + bi)
        linear(tmp, H, w.wi, w.i8, w.as_i, w.i16, w.bi, I, inter, nullptr, fn, tmp, w.ln1_g, w.ln1_b, &w.o28,
               w.i_x);
        linear(inter, I, w.wo2, w.o28, w.as_o2, w.o216, w.bo2, H, x, tmp, none, nullptr, nullptr, nullptr,
               next_q8, w.o2_x);  // x = ffn_out + tmp
        // x = LN(x) (ln2) is the caller's: the next block's in_ln, or a last layernorm()
    }

    /// The `pre` step of quantize_gemm_s8_parallel: LayerNorm of rows [m0, m1) of x (row length n) in place; no-op
    /// if x is null.
    static auto rows_layernorm(const detail::kernel_table& K, float* x, std::ptrdiff_t n, const float* g,
                               const float* b, float eps) {
        return [&K, x, n, g, b, eps](std::size_t m0, std::size_t m1) {
            if (x && m1 > m0)
                K.layernorm(x + static_cast<std::ptrdiff_t>(m0) * n, nullptr, static_cast<std::ptrdiff_t>(m1 - m0), n,
                            g, b, eps);
        };
    }

    /// The fields detail::gemm_args and gemm_bf16_args share (the weights are set by the caller).
    template <class Args>
    static Args gemm_for(const float* a, std::ptrdiff_t lda, float* c, std::ptrdiff_t ldc, std::ptrdiff_t m,
                         std::ptrdiff_t n, std::ptrdiff_t k, const detail::epilogue& ep) {
        Args g;
        g.a = a;
        g.lda = lda;
        g.c = c;
        g.ldc = ldc;
        g.m = m;
        g.n = n;
        g.k = k;
        g.ep = ep;
        return g;
    }

    /// Row-wise LayerNorm, split into row chunks over the pool.
    static void layernorm(const detail::kernel_table& K, const detail::exec_context& ex, float* x, std::ptrdiff_t rows,
                          std::ptrdiff_t n, const float* g, const float* b, float eps) {
        constexpr std::ptrdiff_t chunk = 64;
        const std::ptrdiff_t nchunks = (rows + chunk - 1) / chunk;
        if (!ex.pool || nchunks <= 1) {
            K.layernorm(x, nullptr, rows, n, g, b, eps);
            return;
        }
        ex.pool->run(static_cast<std::size_t>(nchunks), [&](std::size_t t, std::size_t) {
            const std::ptrdiff_t r0 = static_cast<std::ptrdiff_t>(t) * chunk;
            K.layernorm(x + r0 * n, nullptr, std::min(chunk, rows - r0), n, g, b, eps);
        });
    }
};

/// The encoder: immutable after construction, safe to share across threads (each thread brings a workspace).
/// `arch` picks the kernel path (input_error if the CPU lacks it); `threads` is the intra-op thread count used by
/// every forward pass (1: the calling thread only; n > 1: a pool of n - 1 sleeping workers plus the caller;
/// concurrent forward passes on one encoder then share that pool one at a time).
class encoder {
public:
    encoder(const blob::reader& r, const bert_config& c, isa arch = detail::default_isa(), std::size_t threads = 1,
            bool bf16_attention = false, bool int8_attention = false, std::size_t group_tokens = 0,
            bool amx = true)
        : cfg_(c), kernels_(&detail::kernels_for(arch)),
          s8_(!amx && s8_path_for(arch) == s8_path::avx512_amx ? s8_path::avx512_vnni : s8_path_for(arch)),
          use_bf16_(kernels_->arch == isa::avx512 && bf16_supported()) {
        if (threads < 1 || threads > 1024)
            throw input_error(errc::bad_argument, "threads = " + std::to_string(threads) + " is outside 1..1024");
        if (threads > 1) pool_ = std::make_shared<detail::thread_pool>(threads);
        group_tokens_ = group_tokens ? group_tokens
                                     : std::max<std::size_t>(32, 128 * 384 / std::max<std::size_t>(c.hidden_size, 1)) *
                                           threads;
        const std::size_t H = c.hidden_size, I = c.intermediate_size;
        // fp32 linears on the AMX tiles as six bf16 products (kernels/gemm_f32x6.hpp): avx512 path, AMX-BF16, not
        // declined (amx = false or BERTLET_AMX=0), shapes in whole 32 x 32 blocks
        const bool x6_ok = amx && kernels_->arch == isa::avx512 && f32x6_supported() && f32x6_shape_ok(H, H) &&
                           f32x6_shape_ok(I, H) && f32x6_shape_ok(H, I);
        bind_word_embeddings(r, c.vocab_size, H);
        pos_ = bind(r, "embeddings.position_embeddings.weight", {c.max_position_embeddings, H});
        type_ = bind(r, "embeddings.token_type_embeddings.weight", {c.type_vocab_size, H});
        emb_ln_g_ = bind(r, "embeddings.LayerNorm.weight", {H});
        emb_ln_b_ = bind(r, "embeddings.LayerNorm.bias", {H});
        layers_.reserve(c.num_layers);
        for (std::size_t l = 0; l < c.num_layers; ++l) {
            const std::string p = "encoder.layer." + std::to_string(l) + ".";
            layer_weights w{};
            bind_any_linear(r, p + "attention.self.query.weight", H, H, w.wq, w.q8, w.as_q, w.q16);
            w.bq = bind(r, p + "attention.self.query.bias", {H});
            bind_any_linear(r, p + "attention.self.key.weight", H, H, w.wk, w.k8, w.as_k, w.k16);
            w.bk = bind(r, p + "attention.self.key.bias", {H});
            bind_any_linear(r, p + "attention.self.value.weight", H, H, w.wv, w.v8, w.as_v, w.v16);
            w.bv = bind(r, p + "attention.self.value.bias", {H});
            bind_any_linear(r, p + "attention.output.dense.weight", H, H, w.wo, w.o8, w.as_o, w.o16);
            w.bo = bind(r, p + "attention.output.dense.bias", {H});
            w.ln1_g = bind(r, p + "attention.output.LayerNorm.weight", {H});
            w.ln1_b = bind(r, p + "attention.output.LayerNorm.bias", {H});
            bind_any_linear(r, p + "intermediate.dense.weight", I, H, w.wi, w.i8, w.as_i, w.i16);
            w.bi = bind(r, p + "intermediate.dense.bias", {I});
            bind_any_linear(r, p + "output.dense.weight", H, I, w.wo2, w.o28, w.as_o2, w.o216);
            w.bo2 = bind(r, p + "output.dense.bias", {H});
            w.ln2_g = bind(r, p + "output.LayerNorm.weight", {H});
            w.ln2_b = bind(r, p + "output.LayerNorm.bias", {H});
            if (w.q8.data && w.k8.data && w.v8.data &&
                (!same_act_scale(w.as_q, w.as_k, H) || !same_act_scale(w.as_q, w.as_v, H)))
                throw model_error(errc::bad_tensor, std::string(r.source()) + ": layer " + std::to_string(l) +
                                                        ": query, key and value share their input, so their "
                                                        "act_scale tensors must be identical");
            // fused only when each weight is a whole number of 2-panel tiles (H % 32 == 0): output panels then
            // line up with the [Q | K | V] columns and a micro-kernel tile never straddles two weights
            if (((w.wq && w.wk && w.wv) || (w.q16 && w.k16 && w.v16)) && H % (2 * detail::panel_width) == 0) {
                auto b = std::make_shared<std::vector<float>>(3 * H);
                std::copy(w.bq, w.bq + H, b->data());
                std::copy(w.bk, w.bk + H, b->data() + H);
                std::copy(w.bv, w.bv + H, b->data() + 2 * H);
                w.bqkv = b->data();
                owned_bias_.push_back(b);
            }
            if (x6_ok) bind_f32x6(w, H, I);
            layers_.push_back(w);
        }
        bf16_amx_ = x6_ok && bf16_weights_ && use_bf16_;
        // opt-in for int8 models (they already trade exactness for speed; an fp32 model's attention always stays
        // fp32): attention's matmuls in int8 on the avx512 path with AVX-512 VNNI (first: its own register-tile
        // kernels make it the fastest, ~0.95x of a whole forward with bf16 attention on Zen 4; docs/INT8.md), else
        // in bf16 on the avx512 path with AVX512_BF16
        s8_attention_ = int8_attention && quantized_ &&
                        (s8_ == s8_path::avx512_vnni || s8_ == s8_path::avx512_amx) && s8_attention_supported() &&
                        c.head_dim() <= 64;
        bf16_attention_ = !s8_attention_ && bf16_attention && quantized_ && kernels_->arch == isa::avx512 &&
                          bf16_supported();
    }

    const bert_config& config() const noexcept { return cfg_; }
    /// The kernel path in use.
    isa arch() const noexcept { return kernels_->arch; }
    /// Intra-op threads per forward pass.
    std::size_t threads() const noexcept { return pool_ ? pool_->size() : 1; }
    /// Rows per group of consecutive sequences in large batches (load_options::group_tokens).
    std::size_t group_tokens() const noexcept { return group_tokens_; }
    /// True if every linear weight came pre-packed from the blob (no packing work or copies at load).
    bool prepacked() const noexcept { return owned_.empty(); }
    /// True if any linear weight is int8 (layout 2; docs/INT8.md).
    bool quantized() const noexcept { return quantized_; }
    /// True if the blob's linear weights are bf16 (layout 3) and run on the AVX512_BF16 kernels (false when they
    /// were widened to f32 at load because this CPU or the chosen path lacks them).
    bool bf16_kernels() const noexcept { return bf16_weights_ && use_bf16_; }
    /// True if the blob's linear weights are bf16 (whichever kernels run them).
    bool bf16_weights() const noexcept { return bf16_weights_; }
    /// True if attention's two matmuls run in bf16 (opted in; int8 models on the avx512 path with AVX512_BF16).
    bool bf16_attention() const noexcept { return bf16_attention_; }
    /// True if attention's two matmuls run in int8 (opted in; int8 models on the avx512 path with AVX-512 VNNI).
    bool int8_attention() const noexcept { return s8_attention_; }
    /// The int8 GEMM path the linears of an int8 model run on (s8_path_for(arch), avx512_vnni if AMX was declined).
    s8_path int8_path() const noexcept { return s8_; }
    /// True if the f32 linears run on the AMX tiles as six bf16 products (kernels/gemm_f32x6.hpp; calls of at least
    /// f32_amx_min_tokens tokens; CPUs with AMX-BF16 unless declined by load_options::amx / BERTLET_AMX=0).
    bool f32_amx() const noexcept { return !owned_x6_.empty(); }
    /// True if the bf16 (layout 3) linears run on the AMX tiles (AMX-BF16; their BF16P16K2 panels are tiles as they
    /// are, no copy): the semantics of the AVX512_BF16 kernels (A rounded to bf16, exact products, fp32 sums).
    bool bf16_amx() const noexcept { return bf16_amx_; }
    /// Forward calls with fewer tokens than this run the FMA kernels even where f32_amx(): the tile blocks are 32
    /// rows (zero-padded), so 16 rows cost as much as 32 (seq 16, batch 1: 2.5 ms against 2.1 ms on the FMA kernels;
    /// seq 24: 2.6 against 2.85 ms). Such a call's results then differ from the same texts inside a larger call in
    /// the last bits (~3e-7; both are as close to float64 as fp32 GEMMs get).
    static constexpr std::size_t f32_amx_min_tokens = 24;

    /// Runs the encoder over a packed batch. ids/type_ids hold `tokens` entries; seqs describe the sequences.
    /// Returns a pointer to the final hidden states [tokens, H] inside `ws` (valid until its next use).
    const float* forward(const std::int32_t* ids, const std::int32_t* type_ids, const sequence_span* seqs,
                         std::size_t nseq, std::size_t tokens, workspace& ws) const {
        const std::size_t H = cfg_.hidden_size;
        std::size_t max_len = 0;
        for (std::size_t s = 0; s < nseq; ++s) {
            if (seqs[s].length > cfg_.max_position_embeddings)
                throw input_error(errc::too_long, "sequence " + std::to_string(s) + " has " +
                                                      std::to_string(seqs[s].length) + " tokens; the model allows " +
                                                      std::to_string(cfg_.max_position_embeddings));
            if (seqs[s].offset + seqs[s].length > tokens)
                throw input_error(errc::bad_argument, "sequence " + std::to_string(s) + " extends past the token buffer");
            max_len = std::max(max_len, seqs[s].length);
        }
        for (std::size_t t = 0; t < tokens; ++t) {
            const std::int32_t id = ids[t];
            const std::int32_t tt = type_ids ? type_ids[t] : 0;
            if (id < 0 || static_cast<std::size_t>(id) >= cfg_.vocab_size)
                throw input_error(errc::bad_argument, "token id " + std::to_string(id) + " at position " +
                                                          std::to_string(t) + " is outside the vocab (size " +
                                                          std::to_string(cfg_.vocab_size) + ")");
            if (tt < 0 || static_cast<std::size_t>(tt) >= cfg_.type_vocab_size)
                throw input_error(errc::bad_argument, "token type id " + std::to_string(tt) + " at position " +
                                                          std::to_string(t) + " is outside 0.." +
                                                          std::to_string(cfg_.type_vocab_size - 1));
        }
        ws.reserve(tokens, max_len, cfg_, threads(), f32_amx() || bf16_amx_);
        float* x = ws.x_.data();
        for (std::size_t s = 0; s < nseq; ++s) {
            for (std::size_t p = 0; p < seqs[s].length; ++p) {
                const std::size_t t = seqs[s].offset + p;
                const std::size_t tt = type_ids ? static_cast<std::size_t>(type_ids[t]) : 0;
                const float* wrow = word_ + static_cast<std::size_t>(ids[t]) * H;
                if (word16_) {  // f16 table: widen the row in place, then add
                    kernels_->cvt_f16(x + t * H, word16_ + static_cast<std::size_t>(ids[t]) * H,
                                      static_cast<std::ptrdiff_t>(H));
                    wrow = x + t * H;
                }
                kernels_->add3(x + t * H, wrow, pos_ + p * H, type_ + tt * H, static_cast<std::ptrdiff_t>(H));
            }
        }
        // calls of fewer than f32_amx_min_tokens tokens run the FMA kernels (decided per call, not per group of
        // sequences, so the grouping never changes a bit)
        const detail::exec_context ex{kernels_, pool_.get(), s8_, bf16_attention_, s8_attention_,
                                      f32_amx() && tokens >= f32_amx_min_tokens, bf16_amx_};
        run_layers(seqs, nseq, tokens, ws, ex);  // the embeddings' LayerNorm runs as the first block's in_ln
        return ws.x_.data();
    }

private:
    void run_layers(const sequence_span* seqs, std::size_t nseq, std::size_t tokens, workspace& ws,
                    const detail::exec_context& ex) const {
        const auto& c = cfg_;
        if (c.hidden_size == 384 && c.num_heads == 12 && c.intermediate_size == 1536)
            run_with(fixed_shape<384, 12, 1536>{}, seqs, nseq, tokens, ws, ex);
        else if (c.hidden_size == 768 && c.num_heads == 12 && c.intermediate_size == 3072)
            run_with(fixed_shape<768, 12, 3072>{}, seqs, nseq, tokens, ws, ex);
        else
            run_with(dynamic_shape{c.hidden_size, c.num_heads, c.intermediate_size}, seqs, nseq, tokens, ws, ex);
    }

    template <class Shape>
    void run_with(const Shape& s, const sequence_span* seqs, std::size_t nseq, std::size_t tokens, workspace& ws,
                  const detail::exec_context& ex) const {
        // Large batches run the whole layer stack one group of consecutive sequences at a time: a layer's
        // intermediates (Q|K|V, the FFN's inner activations, quantized copies) for the whole batch overflow L2 and
        // every pass then streams them from L3 (int8 seq 128 batch 32 ran 1.4x the time of 32 single sequences).
        // Groups are consecutive sequences whose rows are contiguous, up to group_tokens() rows (a longer sequence
        // is a group of its own); every row's result is the same whatever the grouping.
        const std::size_t bud = group_tokens_;
        bool ordered = tokens > bud;  // spans in row order without overlaps (else: one group, the rows as given)
        for (std::size_t i = 1; i < nseq && ordered; ++i)
            ordered = seqs[i].offset >= seqs[i - 1].offset + seqs[i - 1].length;
        if (!ordered) {
            run_group(s, seqs, nseq, 0, tokens, ws, ex);
            return;
        }
        std::size_t s0 = 0;
        while (s0 < nseq) {
            std::size_t s1 = s0 + 1;
            std::size_t end = seqs[s0].offset + seqs[s0].length;
            while (s1 < nseq && seqs[s1].offset == end && end + seqs[s1].length - seqs[s0].offset <= bud) {
                end += seqs[s1].length;
                ++s1;
            }
            run_group(s, seqs + s0, s1 - s0, seqs[s0].offset, end - seqs[s0].offset, ws, ex);
            s0 = s1;
        }
    }

    template <class Shape>
    void run_group(const Shape& s, const sequence_span* seqs, std::size_t nseq, std::size_t row0, std::size_t rows,
                   workspace& ws, const detail::exec_context& ex) const {
        // each block starts with the LayerNorm that produces its input (see encoder_block) and leaves its own
        // output LayerNorm to the next one; the last runs here
        const float* ln_g = emb_ln_g_;
        const float* ln_b = emb_ln_b_;
        for (std::size_t l = 0; l < layers_.size(); ++l) {
            const auto& w = layers_[l];
            encoder_block<Shape>::forward(s, w, cfg_.layer_norm_eps, cfg_.activation, seqs, nseq, rows, ws, ex,
                                          ln_g, ln_b, l + 1 < layers_.size() ? &layers_[l + 1].q8 : nullptr, row0);
            ln_g = w.ln2_g;
            ln_b = w.ln2_b;
        }
        encoder_block<Shape>::layernorm(*kernels_, ex, ws.x_.data() + row0 * cfg_.hidden_size,
                                        static_cast<std::ptrdiff_t>(rows),
                                        static_cast<std::ptrdiff_t>(cfg_.hidden_size), ln_g, ln_b,
                                        cfg_.layer_norm_eps);
    }

    static const blob::tensor_view& find_shaped(const blob::reader& r, const std::string& name,
                                                std::initializer_list<std::size_t> dims) {
        const blob::tensor_view* t = r.find(name);
        if (!t) throw model_error(errc::missing_tensor, std::string(r.source()) + ": missing tensor '" + name + "'");
        std::string want = "(";
        bool ok = t->ndim == dims.size();
        std::size_t i = 0;
        for (std::size_t d : dims) {
            want += (i ? "," : "") + std::to_string(d);
            if (ok && t->dims[i] != d) ok = false;
            ++i;
        }
        want += ")";
        if (!ok)
            throw model_error(errc::tensor_shape, std::string(r.source()) + ": tensor '" + name + "': expected " + want +
                                                      ", got " + t->shape_str());
        return *t;
    }

    static const float* bind(const blob::reader& r, const std::string& name, std::initializer_list<std::size_t> dims) {
        const blob::tensor_view& t = find_shaped(r, name, dims);
        if (t.type != blob::dtype::f32 || t.layout != 0 || t.quant != 0)
            throw model_error(errc::unsupported, std::string(r.source()) + ": tensor '" + name +
                                                     "': only row-major f32 tensors are supported by this build");
        return t.as<float>();
    }

    /// The word-embedding table: f32, or f16 (row-major). Values are not scanned here (that would touch every page
    /// at load); like f32 tensors, they are covered by the blob checksum and the converter refuses non-finite ones.
    void bind_word_embeddings(const blob::reader& r, std::size_t vocab, std::size_t H) {
        const std::string name = "embeddings.word_embeddings.weight";
        const blob::tensor_view& t = find_shaped(r, name, {vocab, H});
        if (t.type == blob::dtype::f16 && t.layout == 0 && t.quant == 0) {
            word16_ = t.as<std::uint16_t>();
            word_ = nullptr;
            return;
        }
        word_ = bind(r, name, {vocab, H});
    }

    static bool same_act_scale(const float* a, const float* b, std::size_t n) {
        if (!a || !b) return a == b;
        return std::equal(a, a + n, b);
    }

    /// A linear weight: int8 (layout 2, S8P16K4 with its .scale/.row_sum companions, used in place, and an optional
    /// `.act_scale` [in] smoothing vector) or f32.
    void bind_any_linear(const blob::reader& r, const std::string& name, std::size_t out, std::size_t in,
                         const float*& f32, packed_s8& s8, const float*& act_scale, const std::uint16_t*& b16) {
        const blob::tensor_view& t = find_shaped(r, name, {out, in});
        act_scale = nullptr;
        b16 = nullptr;
        if (t.layout == static_cast<std::uint32_t>(blob::layout::bf16p16k2)) {
            // the reader has checked dtype bf16, no quant and nbytes
            bf16_weights_ = true;
            if (use_bf16_) {
                b16 = t.as<std::uint16_t>();
                f32 = nullptr;
                return;
            }
            // no AVX512_BF16 here (or another path was chosen): widen once to f32 panels (exact)
            const std::uint16_t* src = t.as<std::uint16_t>();
            const std::ptrdiff_t kp = bf16_pad_k(static_cast<std::ptrdiff_t>(in));
            auto packed = std::make_shared<std::vector<float>>(detail::packed_n16_size(out, in));
            float* dst = packed->data();
            const std::ptrdiff_t np = detail::panels_of(static_cast<std::ptrdiff_t>(out)), K = static_cast<std::ptrdiff_t>(in);
            for (std::ptrdiff_t p = 0; p < np; ++p)
                for (std::ptrdiff_t kk = 0; kk < K; ++kk)
                    for (std::ptrdiff_t j = 0; j < 16; ++j)
                        dst[(p * K + kk) * 16 + j] = bf16_to_float(src[p * 16 * kp + (kk / 2) * 32 + j * 2 + kk % 2]);
            owned_.push_back(packed);
            f32 = packed->data();
            return;
        }
        if (t.layout != static_cast<std::uint32_t>(blob::layout::s8p16k4)) {
            if (r.find(name + ".act_scale"))
                throw model_error(errc::bad_tensor, std::string(r.source()) + ": tensor '" + name +
                                                        ".act_scale': only int8 (layout 2) weights take an act_scale");
            f32 = bind_linear(r, name, out, in);
            return;
        }
        if (r.find(name + ".act_scale")) {
            const float* as = bind(r, name + ".act_scale", {in});
            for (std::size_t i = 0; i < in; ++i)
                if (!(as[i] > 0.0f) || !std::isfinite(as[i]))
                    throw model_error(errc::bad_tensor, std::string(r.source()) + ": tensor '" + name +
                                                            ".act_scale': element " + std::to_string(i) + " = " +
                                                            std::to_string(as[i]) + " is not a finite positive number");
            act_scale = as;
        }
        // the reader has checked dtype i8, quant 1, nbytes and the companions' dtypes and padded shapes
        const std::size_t np = s8_pad_n(out);
        const blob::tensor_view& sc = find_shaped(r, name + ".scale", {np});
        const blob::tensor_view& rs = find_shaped(r, name + ".row_sum", {np});
        s8.data = t.as<std::int8_t>();
        s8.scales = sc.as<float>();
        s8.row_sums = rs.as<std::int32_t>();
        s8.n = out;
        s8.k = in;
        s8.k_padded = s8_pad_k(in);
        f32 = nullptr;
        quantized_ = true;
    }

    /// The F32X6 copies of a layer's f32 linears (Q, K and V as one weight of 3H outputs); int8 / bf16 ones keep theirs.
    void bind_f32x6(layer_weights& w, std::size_t H, std::size_t I) {
        auto make = [&](std::initializer_list<const float*> parts, std::size_t out, std::size_t in) {
            // 64-byte aligned (tile rows on cache lines), not zero-filled first (every byte is written by the packer)
            const std::size_t n = f32x6_packed_size(out * parts.size(), in);
            std::shared_ptr<std::uint16_t> v(
                static_cast<std::uint16_t*>(::operator new(n * sizeof(std::uint16_t), std::align_val_t(64))),
                [](std::uint16_t* q) { ::operator delete(q, std::align_val_t(64)); });
            std::size_t off = 0;
            for (const float* p : parts) {
                pack_f32x6(p, out, in, v.get() + off);
                off += f32x6_packed_size(out, in);
            }
            owned_x6_.push_back(v);
            return static_cast<const std::uint16_t*>(v.get());
        };
        if (w.wq && w.wk && w.wv && w.bqkv) w.qkv_x = make({w.wq, w.wk, w.wv}, H, H);
        if (w.wo) w.o_x = make({w.wo}, H, H);
        if (w.wi) w.i_x = make({w.wi}, I, H);
        if (w.wo2) w.o2_x = make({w.wo2}, H, I);
    }

    /// A linear weight [out, in] as PACKED_N16 panels: used in place when the blob holds it packed (layout 1),
    /// packed once into memory owned by the encoder when it is row-major (layout 0).
    const float* bind_linear(const blob::reader& r, const std::string& name, std::size_t out, std::size_t in) {
        const blob::tensor_view& t = find_shaped(r, name, {out, in});
        if (t.type != blob::dtype::f32 || t.quant != 0 || (t.layout != 0 && t.layout != 1))
            throw model_error(errc::unsupported,
                              std::string(r.source()) + ": tensor '" + name +
                                  "': only f32 row-major or packed_n16 linear weights are supported");
        const std::size_t n = detail::packed_n16_size(out, in);
        if (t.layout == 1) {
            if (t.nbytes != n * sizeof(float))
                throw model_error(errc::tensor_shape, std::string(r.source()) + ": tensor '" + name +
                                                          "': packed_n16 data holds " + std::to_string(t.nbytes) +
                                                          " bytes; expected " + std::to_string(n * sizeof(float)));
            return t.as<float>();
        }
        auto packed = std::make_shared<std::vector<float>>(n);
        detail::pack_n16(t.as<float>(), static_cast<std::ptrdiff_t>(out), static_cast<std::ptrdiff_t>(in),
                         static_cast<std::ptrdiff_t>(in), packed->data());
        owned_.push_back(packed);  // shared: copies of the encoder keep pointing at live memory
        return packed->data();
    }

    bert_config cfg_;
    const detail::kernel_table* kernels_ = nullptr;
    s8_path s8_ = s8_path::scalar;
    bool quantized_ = false;
    bool bf16_attention_ = false;
    bool s8_attention_ = false;
    std::size_t group_tokens_ = 128;  // rows per group of sequences in large batches (run_with)
    bool use_bf16_ = false;     // bf16 (layout 3) weights run on the AVX512_BF16 kernels (else widened at load)
    bool bf16_amx_ = false;     // ... and on the AMX tiles (f32x6_args::bf16)
    bool bf16_weights_ = false;  // the blob has bf16 linear weights
    std::shared_ptr<detail::thread_pool> pool_;
    std::vector<std::shared_ptr<std::vector<float>>> owned_;  // weights packed at load (row-major blobs only)
    std::vector<std::shared_ptr<std::vector<float>>> owned_bias_;  // concatenated Q|K|V biases (3 H per layer)
    std::vector<std::shared_ptr<std::uint16_t>> owned_x6_;  // F32X6 copies of the f32 linears
    const float* word_ = nullptr;            // f32 word embeddings, or
    const std::uint16_t* word16_ = nullptr;  // f16 ones (docs/FORMAT.md; halves the largest tensor)
    const float* pos_ = nullptr;
    const float* type_ = nullptr;
    const float* emb_ln_g_ = nullptr;
    const float* emb_ln_b_ = nullptr;
    std::vector<layer_weights> layers_;
};

}  // namespace bertlet
