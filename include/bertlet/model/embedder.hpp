// bertlet — sentence embedder: blob -> tokenizer -> encoder -> pooling head.
//
//   auto m = bertlet::embedder::load("models/all-MiniLM-L6-v2.bertlet");
//   std::vector<float> v = m.embed("A man is playing a guitar.");
//
// An embedder is immutable once loaded. Copies are cheap and share the same mapped weights; every const method
// may be called from many threads at once. Methods that take a `embed_workspace&` do not allocate once the
// workspace has grown to the largest input seen (one workspace per thread); the convenience overloads make a
// workspace per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bertlet/blob/reader.hpp"
#include "bertlet/error.hpp"
#include "bertlet/heads/pooling.hpp"
#include "bertlet/model/config.hpp"
#include "bertlet/model/encoder.hpp"
#include "bertlet/text/tokenizer.hpp"

namespace bertlet {

struct load_options {
    bool check_checksum = true;  ///< XXH64 over the whole file (about 10 ms per 100 MB)
    bool verify = false;         ///< re-run the reference vectors stored in the blob; throws model_error 207 on mismatch
    /// Kernel path (scalar, avx2, avx512, neon). Unset: active_isa() (the best the CPU has, or BERTLET_FORCE_ARCH).
    /// A path this CPU (or build) cannot run is an input_error.
    std::optional<isa> arch;
    /// Intra-op threads per forward pass (1..1024). 1 runs everything on the calling thread; n > 1 starts n - 1
    /// workers at load (they sleep between jobs) that split GEMMs, attention heads and LayerNorm rows. Results do
    /// not depend on this number. Concurrent calls on one embedder share its workers one call at a time, so for
    /// many concurrent requests prefer threads = 1 and one calling thread per core.
    std::size_t threads = 1;
    /// int8 models only: run attention's two matmuls in int8 (Q, K per token, V per channel, softmax numerators as
    /// u8; kernels/attention_s8.hpp, its own VNNI register-tile kernels) when the avx512 path runs on a CPU with
    /// AVX-512 VNNI (ignored elsewhere; fp32 and bf16 blobs never use it). On by default and taken before bf16
    /// attention: the fastest attention there (Zen 4: a whole int8 forward at seq 128 ~0.95x of the one with bf16
    /// attention), and on STS-B the embeddings stay within the int8 bars (docs/INT8.md).
    bool int8_attention = true;
    /// int8 models only: run attention's two matmuls (Q K^T, P V) in bf16 (fp32 accumulation and softmax) when the
    /// avx512 path runs on a CPU with AVX512_BF16 and int8 attention is not used (off, or no VNNI). On by default:
    /// ~0.3 ms of 4.7 at seq 128 on Zen 5, with no measurable accuracy cost on STS-B dev (docs/INT8.md).
    bool bf16_attention = true;
    /// Rows per group in large batches (0: automatic). A forward pass over more rows than this runs the layer
    /// stack one group of consecutive sequences at a time, so a layer's intermediates stay in the core's L2 (a
    /// sequence longer than the group is a group of its own). Automatic: 128 rows per thread for hidden size 384,
    /// scaled by 384 / hidden size (at least 32); int8 seq 128, batch 8 on Zen 4 ran 0.86x the time of one pass
    /// over all rows. Results do not depend on it (every row computes the same operations either way).
    std::size_t group_tokens = 0;
    /// Use Intel AMX tiles where the CPU and OS offer them (Sapphire Rapids and later; avx512 path).
    /// int8 models: the linears' 16 x 16 blocks (s8_path::avx512_amx), the same bits as avx512_vnni (exact integer
    /// sums, the same epilogue). fp32 models (AMX-BF16): the linears as six bf16 products per fp32 product
    /// (kernels/gemm_f32x6.hpp; encoder::f32_amx()), as accurate as the FMA kernels (error against float64 at or
    /// below theirs) but not the same bits; ~1.7-2x faster GEMMs, 6 bytes per linear weight copied at load.
    /// Off: the AVX-512 VNNI / FMA kernels (A/B timing). BERTLET_AMX=0 turns AMX off process-wide.
    bool amx = true;
};

/// verify() bounds for int8 models running bf16 attention (see embedder::verify).
inline constexpr double bf16_attention_tolerance = 0.03;
inline constexpr double bf16_attention_min_cosine = 0.993;

/// Per-thread scratch for embedding; reuse it across calls.
struct embed_workspace {
    workspace enc;
    encoding tok;
    std::vector<std::int32_t> ids, type_ids;
    std::vector<sequence_span> spans;
};

/// Result of a verify run.
struct verify_report {
    std::size_t texts = 0;
    double max_abs_diff = 0.0;
    double tolerance = 0.0;
    double min_cosine = 1.0;         ///< lowest cosine(got, reference) over the texts
    double cosine_threshold = 0.0;   ///< verify.min_cosine from the blob (0 when absent)
};

class embedder {
public:
    /// Loads (mmaps) and fully validates a blob. Throws io_error, blob_error or model_error.
    static embedder load(const std::string& path, load_options opt = {}) {
        blob::load_options bo;
        bo.check_checksum = opt.check_checksum;
        return from_reader(blob::reader::open(path, bo), opt);
    }

    /// Same, from bytes in memory (copied into an aligned buffer if needed).
    static embedder from_bytes(std::vector<std::byte> bytes, load_options opt = {}) {
        blob::load_options bo;
        bo.check_checksum = opt.check_checksum;
        return from_reader(blob::reader::from_bytes(std::move(bytes), bo), opt);
    }

    std::size_t dim() const noexcept { return s_->cfg.hidden_size; }
    const bert_config& config() const noexcept { return s_->cfg; }
    const pooling_config& pooling() const noexcept { return s_->pool; }
    const wordpiece_tokenizer& tokenizer() const noexcept { return s_->tok; }
    const blob::reader& blob() const noexcept { return s_->reader; }
    /// The kernel path this model runs on.
    isa arch() const noexcept { return s_->enc.arch(); }
    /// Intra-op threads per call (load_options::threads).
    std::size_t threads() const noexcept { return s_->enc.threads(); }
    /// The underlying encoder.
    const encoder& model_encoder() const noexcept { return s_->enc; }

    /// Embeds one text into out[dim()].
    void embed(std::string_view text, float* out, embed_workspace& ws) const {
        s_->tok.encode(text, ws.tok);
        const sequence_span span{0, ws.tok.ids.size()};
        const float* h = s_->enc.forward(ws.tok.ids.data(), ws.tok.type_ids.data(), &span, 1, span.length, ws.enc);
        detail::pool(h, span.length, dim(), s_->pool, out);
    }

    std::vector<float> embed(std::string_view text) const {
        embed_workspace ws;
        std::vector<float> out(dim());
        embed(text, out.data(), ws);
        return out;
    }

    /// Embeds n texts into out[n * dim()]. Sequences keep their exact lengths and are packed back to back (no
    /// padding); work is split into chunks of at most `max_batch_tokens` tokens to bound memory. If token_counts is
    /// given, token_counts[i] receives the length of text i in tokens ([CLS]/[SEP] included).
    static constexpr std::size_t default_batch_tokens = 8192;

    template <class StringLike>
    void embed_batch(const StringLike* texts, std::size_t n, float* out, embed_workspace& ws,
                     std::size_t max_batch_tokens = default_batch_tokens, std::size_t* token_counts = nullptr) const {
        const std::size_t H = dim();
        std::size_t i = 0;
        bool pending = false;  // ws.tok already holds texts[i] (it did not fit the previous chunk)
        while (i < n) {
            ws.ids.clear();
            ws.type_ids.clear();
            ws.spans.clear();
            const std::size_t first = i;
            while (i < n) {
                if (!pending) s_->tok.encode(std::string_view(texts[i]), ws.tok);
                pending = false;
                const std::size_t len = ws.tok.ids.size();
                if (!ws.spans.empty() && ws.ids.size() + len > max_batch_tokens) {
                    pending = true;
                    break;
                }
                if (token_counts) token_counts[i] = len;
                ws.spans.push_back(sequence_span{ws.ids.size(), len});
                ws.ids.insert(ws.ids.end(), ws.tok.ids.begin(), ws.tok.ids.end());
                ws.type_ids.insert(ws.type_ids.end(), ws.tok.type_ids.begin(), ws.tok.type_ids.end());
                ++i;
            }
            const float* h = s_->enc.forward(ws.ids.data(), ws.type_ids.data(), ws.spans.data(), ws.spans.size(),
                                             ws.ids.size(), ws.enc);
            for (std::size_t s = 0; s < ws.spans.size(); ++s)
                detail::pool(h + ws.spans[s].offset * H, ws.spans[s].length, H, s_->pool, out + (first + s) * H);
        }
    }

    std::vector<std::vector<float>> embed_batch(const std::vector<std::string>& texts) const {
        embed_workspace ws;
        std::vector<float> flat(texts.size() * dim());
        embed_batch(texts.data(), texts.size(), flat.data(), ws);
        std::vector<std::vector<float>> out(texts.size());
        for (std::size_t i = 0; i < texts.size(); ++i)
            out[i].assign(flat.begin() + static_cast<std::ptrdiff_t>(i * dim()),
                          flat.begin() + static_cast<std::ptrdiff_t>((i + 1) * dim()));
        return out;
    }

    /// Embeds already-tokenized sequences (ids including [CLS]/[SEP]); type ids default to 0.
    void embed_ids(const std::vector<std::vector<std::int32_t>>& seqs, float* out, embed_workspace& ws) const {
        ws.ids.clear();
        ws.type_ids.clear();
        ws.spans.clear();
        for (const auto& s : seqs) {
            ws.spans.push_back(sequence_span{ws.ids.size(), s.size()});
            ws.ids.insert(ws.ids.end(), s.begin(), s.end());
        }
        ws.type_ids.assign(ws.ids.size(), 0);
        const float* h = s_->enc.forward(ws.ids.data(), ws.type_ids.data(), ws.spans.data(), ws.spans.size(),
                                         ws.ids.size(), ws.enc);
        for (std::size_t s = 0; s < ws.spans.size(); ++s)
            detail::pool(h + ws.spans[s].offset * dim(), ws.spans[s].length, dim(), s_->pool, out + s * dim());
    }

    /// Re-runs the reference inputs stored in the blob by the converter and compares with the stored outputs.
    /// Throws model_error(errc::verify_failed) naming the text and element on mismatch, or if the blob has none.
    verify_report verify() const {
        const auto& r = s_->reader;
        const std::string src(r.source());
        if (!r.has("verify.texts") || !r.has("verify.embeddings"))
            throw model_error(errc::verify_failed, src + ": the blob holds no reference vectors (verify.texts)");
        const std::vector<std::string_view> texts = r.get_str_array("verify.texts");
        const std::vector<float> want = r.get_f32_array("verify.embeddings");
        double tol = r.has("verify.tolerance") ? r.get_f64("verify.tolerance") : 1e-4;
        if (want.size() != texts.size() * dim())
            throw model_error(errc::verify_failed, src + ": verify.embeddings holds " + std::to_string(want.size()) +
                                                       " floats; expected " + std::to_string(texts.size()) + " x " +
                                                       std::to_string(dim()));
        verify_report rep;
        rep.texts = texts.size();
        // int8 blobs also bound the cosine: element-wise noise from activation rounding is larger there, while a
        // layout slip still drops the cosine far below the threshold
        rep.cosine_threshold = r.has("verify.min_cosine") ? r.get_f64("verify.min_cosine") : 0.0;
        // the reference vectors of an int8 blob model fp32 attention; with bf16 attention the outputs move by up
        // to ~0.015 per element / cosine ~0.996 against them (as close to the fp32 model as before; docs/INT8.md)
        if (s_->enc.bf16_attention() || s_->enc.int8_attention()) {
            tol = std::max(tol, bf16_attention_tolerance);
            rep.cosine_threshold = std::min(rep.cosine_threshold, bf16_attention_min_cosine);
        }
        rep.tolerance = tol;
        embed_workspace ws;
        std::vector<float> got(dim());
        for (std::size_t t = 0; t < texts.size(); ++t) {
            embed(texts[t], got.data(), ws);
            for (std::size_t i = 0; i < dim(); ++i) {
                const double d = std::fabs(static_cast<double>(got[i]) - want[t * dim() + i]);
                if (!(d <= tol))
                    throw model_error(errc::verify_failed,
                                      src + ": reference text " + std::to_string(t) + ", element " + std::to_string(i) +
                                          ": expected " + std::to_string(want[t * dim() + i]) + ", got " +
                                          std::to_string(got[i]) + " (tolerance " + std::to_string(tol) + ")");
                rep.max_abs_diff = std::max(rep.max_abs_diff, d);
            }
            double ab = 0, aa = 0, bb = 0;
            for (std::size_t i = 0; i < dim(); ++i) {
                const double a = got[i], b = want[t * dim() + i];
                ab += a * b;
                aa += a * a;
                bb += b * b;
            }
            const double cos = aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
            rep.min_cosine = std::min(rep.min_cosine, cos);
            if (!(cos >= rep.cosine_threshold))
                throw model_error(errc::verify_failed, src + ": reference text " + std::to_string(t) + ": cosine " +
                                                           std::to_string(cos) + " is below verify.min_cosine " +
                                                           std::to_string(rep.cosine_threshold));
        }
        return rep;
    }

private:
    struct state {
        blob::reader reader;
        bert_config cfg;
        pooling_config pool;
        wordpiece_tokenizer tok;
        encoder enc;
        state(blob::reader&& r, const bert_config& c, pooling_config p, wordpiece_tokenizer&& t, isa arch,
              std::size_t threads, bool bf16_attention, bool int8_attention, std::size_t group_tokens, bool amx)
            : reader(std::move(r)), cfg(c), pool(p), tok(std::move(t)),
              enc(reader, cfg, arch, threads, bf16_attention, int8_attention, group_tokens, amx) {}
    };

    static wordpiece_tokenizer make_tokenizer(const blob::reader& r, const bert_config& c) {
        tokenizer_config tc = detail::read_tokenizer_config(r, c);
        const std::vector<std::string_view> vocab = r.get_str_array("tokenizer.vocab");
        if (vocab.size() != c.vocab_size)
            throw model_error(errc::vocab_mismatch, std::string(r.source()) + ": tokenizer.vocab has " +
                                                        std::to_string(vocab.size()) + " tokens but bert.vocab_size is " +
                                                        std::to_string(c.vocab_size));
        return wordpiece_tokenizer(std::vector<std::string>(vocab.begin(), vocab.end()), std::move(tc));
    }

    static embedder from_reader(blob::reader&& r, const load_options& opt) {
        const bert_config c = detail::read_bert_config(r);
        const pooling_config p = detail::read_pooling_config(r);
        wordpiece_tokenizer tok = make_tokenizer(r, c);
        embedder e;
        const isa arch = opt.arch ? *opt.arch : detail::default_isa();
        e.s_ = std::make_shared<const state>(std::move(r), c, p, std::move(tok), arch, opt.threads, opt.bf16_attention,
                                                     opt.int8_attention, opt.group_tokens, opt.amx);
        if (opt.verify) e.verify();
        return e;
    }

    embedder() = default;
    std::shared_ptr<const state> s_;
};

}  // namespace bertlet
