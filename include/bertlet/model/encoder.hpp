// bertlet — the BERT encoder: embeddings + N post-LN transformer blocks.
//
// Weights are views into the (immutable, mmapped) blob; nothing is copied at load. A forward pass runs over a
// *packed* batch: the tokens of every sequence are stored back to back ([total_tokens, H]), so token-wise work
// (GEMMs, LayerNorm, GELU) runs once over all real tokens and attention runs per sequence at its exact length.
// No work is ever done on padding, and nothing is padded to the model maximum.
//
// Shapes: encoder_block<Shape> is templated over a shape policy. fixed_shape<H, Heads, I> makes the sizes
// compile-time constants (MiniLM 384/12/1536, bert-base 768/12/3072); dynamic_shape serves any other config.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bertlet/blob/reader.hpp"
#include "bertlet/error.hpp"
#include "bertlet/kernels/basic.hpp"
#include "bertlet/model/config.hpp"

namespace bertlet {

/// Scratch memory for forward passes. One per thread; grows to the largest batch seen, then never allocates.
class workspace {
public:
    workspace() = default;
    void reserve(std::size_t tokens, std::size_t max_len, const bert_config& c) {
        grow(x_, tokens * c.hidden_size);
        grow(q_, tokens * c.hidden_size);
        grow(k_, tokens * c.hidden_size);
        grow(v_, tokens * c.hidden_size);
        grow(ctx_, tokens * c.hidden_size);
        grow(tmp_, tokens * c.hidden_size);
        grow(inter_, tokens * c.intermediate_size);
        grow(scores_, max_len * max_len);
    }

private:
    template <class> friend struct encoder_block;
    friend class encoder;
    static void grow(std::vector<float>& v, std::size_t n) {
        if (v.size() < n) v.resize(n);
    }
    std::vector<float> x_, q_, k_, v_, ctx_, tmp_, inter_, scores_;
};

/// Where each sequence of a packed batch lives: rows [offset, offset + length) of the hidden-state matrix.
struct sequence_span {
    std::size_t offset = 0;
    std::size_t length = 0;
};

struct layer_weights {
    const float *wq, *bq, *wk, *bk, *wv, *bv;
    const float *wo, *bo, *ln1_g, *ln1_b;
    const float *wi, *bi, *wo2, *bo2, *ln2_g, *ln2_b;
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

/// One post-LN transformer block (BertLayer): self-attention, add & norm, FFN (GELU), add & norm.
template <class Shape>
struct encoder_block {
    static void forward(const Shape& s, const layer_weights& w, float eps, detail::gelu_kind act,
                        const sequence_span* seqs, std::size_t nseq, std::size_t tokens, workspace& ws) {
        using std::ptrdiff_t;
        const ptrdiff_t H = static_cast<ptrdiff_t>(s.hidden());
        const ptrdiff_t NH = static_cast<ptrdiff_t>(s.num_heads());
        const ptrdiff_t D = H / NH;
        const ptrdiff_t I = static_cast<ptrdiff_t>(s.intermediate());
        const ptrdiff_t T = static_cast<ptrdiff_t>(tokens);
        float* x = ws.x_.data();
        float* q = ws.q_.data();
        float* k = ws.k_.data();
        float* v = ws.v_.data();
        float* ctx = ws.ctx_.data();
        float* tmp = ws.tmp_.data();
        float* inter = ws.inter_.data();
        float* sc = ws.scores_.data();

        detail::linear(x, T, H, H, w.wq, w.bq, H, q, H);
        detail::linear(x, T, H, H, w.wk, w.bk, H, k, H);
        detail::linear(x, T, H, H, w.wv, w.bv, H, v, H);

        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        for (std::size_t si = 0; si < nseq; ++si) {
            const ptrdiff_t off = static_cast<ptrdiff_t>(seqs[si].offset);
            const ptrdiff_t L = static_cast<ptrdiff_t>(seqs[si].length);
            for (ptrdiff_t h = 0; h < NH; ++h) {
                detail::cmap qh(q + off * H + h * D, L, D, Eigen::OuterStride<>(H));
                detail::cmap kh(k + off * H + h * D, L, D, Eigen::OuterStride<>(H));
                detail::cmap vh(v + off * H + h * D, L, D, Eigen::OuterStride<>(H));
                detail::map s_(sc, L, L, Eigen::OuterStride<>(L));
                s_.noalias() = (qh * kh.transpose()) * scale;
                for (ptrdiff_t r = 0; r < L; ++r) detail::softmax_row(sc + r * L, L);
                detail::map ch(ctx + off * H + h * D, L, D, Eigen::OuterStride<>(H));
                ch.noalias() = s_ * vh;
            }
        }
        detail::linear(ctx, T, H, H, w.wo, w.bo, H, tmp, H);
        detail::add_layernorm(tmp, x, T, H, w.ln1_g, w.ln1_b, eps);  // tmp = LN(attn + x)
        detail::linear(tmp, T, H, H, w.wi, w.bi, I, inter, I);
        detail::gelu(inter, T * I, act);
        detail::linear(inter, T, I, I, w.wo2, w.bo2, H, x, H);
        detail::add_layernorm(x, tmp, T, H, w.ln2_g, w.ln2_b, eps);   // x = LN(ffn + tmp)
    }
};

/// The encoder: immutable after construction, safe to share across threads (each thread brings a workspace).
class encoder {
public:
    encoder(const blob::reader& r, const bert_config& c) : cfg_(c) {
        const std::string src(r.source());
        const std::size_t H = c.hidden_size, I = c.intermediate_size;
        word_ = bind(r, "embeddings.word_embeddings.weight", {c.vocab_size, H});
        pos_ = bind(r, "embeddings.position_embeddings.weight", {c.max_position_embeddings, H});
        type_ = bind(r, "embeddings.token_type_embeddings.weight", {c.type_vocab_size, H});
        emb_ln_g_ = bind(r, "embeddings.LayerNorm.weight", {H});
        emb_ln_b_ = bind(r, "embeddings.LayerNorm.bias", {H});
        layers_.reserve(c.num_layers);
        for (std::size_t l = 0; l < c.num_layers; ++l) {
            const std::string p = "encoder.layer." + std::to_string(l) + ".";
            layer_weights w{};
            w.wq = bind(r, p + "attention.self.query.weight", {H, H});
            w.bq = bind(r, p + "attention.self.query.bias", {H});
            w.wk = bind(r, p + "attention.self.key.weight", {H, H});
            w.bk = bind(r, p + "attention.self.key.bias", {H});
            w.wv = bind(r, p + "attention.self.value.weight", {H, H});
            w.bv = bind(r, p + "attention.self.value.bias", {H});
            w.wo = bind(r, p + "attention.output.dense.weight", {H, H});
            w.bo = bind(r, p + "attention.output.dense.bias", {H});
            w.ln1_g = bind(r, p + "attention.output.LayerNorm.weight", {H});
            w.ln1_b = bind(r, p + "attention.output.LayerNorm.bias", {H});
            w.wi = bind(r, p + "intermediate.dense.weight", {I, H});
            w.bi = bind(r, p + "intermediate.dense.bias", {I});
            w.wo2 = bind(r, p + "output.dense.weight", {H, I});
            w.bo2 = bind(r, p + "output.dense.bias", {H});
            w.ln2_g = bind(r, p + "output.LayerNorm.weight", {H});
            w.ln2_b = bind(r, p + "output.LayerNorm.bias", {H});
            layers_.push_back(w);
        }
    }

    const bert_config& config() const noexcept { return cfg_; }

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
        ws.reserve(tokens, max_len, cfg_);
        float* x = ws.x_.data();
        for (std::size_t s = 0; s < nseq; ++s) {
            for (std::size_t p = 0; p < seqs[s].length; ++p) {
                const std::size_t t = seqs[s].offset + p;
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
                const float* we = word_ + static_cast<std::size_t>(id) * H;
                const float* pe = pos_ + p * H;
                const float* te = type_ + static_cast<std::size_t>(tt) * H;
                float* xr = x + t * H;
                for (std::size_t i = 0; i < H; ++i) xr[i] = we[i] + pe[i] + te[i];
            }
        }
        detail::add_layernorm(x, nullptr, static_cast<std::ptrdiff_t>(tokens), static_cast<std::ptrdiff_t>(H),
                              emb_ln_g_, emb_ln_b_, cfg_.layer_norm_eps);
        run_layers(seqs, nseq, tokens, ws);
        return ws.x_.data();
    }

private:
    void run_layers(const sequence_span* seqs, std::size_t nseq, std::size_t tokens, workspace& ws) const {
        const auto& c = cfg_;
        if (c.hidden_size == 384 && c.num_heads == 12 && c.intermediate_size == 1536)
            run_with(fixed_shape<384, 12, 1536>{}, seqs, nseq, tokens, ws);
        else if (c.hidden_size == 768 && c.num_heads == 12 && c.intermediate_size == 3072)
            run_with(fixed_shape<768, 12, 3072>{}, seqs, nseq, tokens, ws);
        else
            run_with(dynamic_shape{c.hidden_size, c.num_heads, c.intermediate_size}, seqs, nseq, tokens, ws);
    }

    template <class Shape>
    void run_with(const Shape& s, const sequence_span* seqs, std::size_t nseq, std::size_t tokens,
                  workspace& ws) const {
        for (const auto& w : layers_)
            encoder_block<Shape>::forward(s, w, cfg_.layer_norm_eps, cfg_.activation, seqs, nseq, tokens, ws);
    }

    static const float* bind(const blob::reader& r, const std::string& name, std::initializer_list<std::size_t> dims) {
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
        if (t->type != blob::dtype::f32 || t->layout != 0 || t->quant != 0)
            throw model_error(errc::unsupported, std::string(r.source()) + ": tensor '" + name +
                                                     "': only row-major f32 tensors are supported by this build");
        return t->as<float>();
    }

    bert_config cfg_;
    const float* word_ = nullptr;
    const float* pos_ = nullptr;
    const float* type_ = nullptr;
    const float* emb_ln_g_ = nullptr;
    const float* emb_ln_b_ = nullptr;
    std::vector<layer_weights> layers_;
};

}  // namespace bertlet
