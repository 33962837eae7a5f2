// Encoder, pooling head and embedder: a naive double-precision reference on tiny random models of several shapes,
// the semantic checks of the model loader, thread safety, batch == single, and the real model's goldens.
#include <doctest/doctest.h>

#include <bertlet/bertlet.hpp>
#include <bertlet/blob/writer.hpp>
#include <bertlet/kernels/gemm_bf16.hpp>
#include <bertlet/kernels/gemm_f32x6.hpp>

#include <array>

#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct tiny_spec {
    std::size_t V = 40, H = 16, heads = 4, I = 32, L = 2, P = 24, T = 2;
    std::string act = "gelu";
    std::string pooling = "mean";
    bool normalize = true;
};

std::vector<std::string> tiny_vocab(std::size_t V) {
    std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat",
                                  "dog", "ran", "##s", "##ing", "a", ".", ",", "!", "big", "small"};
    for (std::size_t i = v.size(); i < V; ++i) v.push_back("tok" + std::to_string(i));
    v.resize(V);
    return v;
}

struct tiny_model {
    tiny_spec s;
    std::map<std::string, std::vector<float>> w;
    std::map<std::string, std::vector<std::uint64_t>> shapes;
};

tiny_model make_tiny(const tiny_spec& s, unsigned seed = 7) {
    tiny_model m;
    m.s = s;
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 0.3f);
    auto add = [&](const std::string& name, std::vector<std::uint64_t> dims, float base = 0.f) {
        std::size_t n = 1;
        for (auto d : dims) n *= d;
        std::vector<float> v(n);
        for (auto& x : v) x = base + nd(rng);
        m.w[name] = v;
        m.shapes[name] = dims;
    };
    add("embeddings.word_embeddings.weight", {s.V, s.H});
    add("embeddings.position_embeddings.weight", {s.P, s.H});
    add("embeddings.token_type_embeddings.weight", {s.T, s.H});
    add("embeddings.LayerNorm.weight", {s.H}, 1.f);
    add("embeddings.LayerNorm.bias", {s.H});
    for (std::size_t l = 0; l < s.L; ++l) {
        const std::string p = "encoder.layer." + std::to_string(l) + ".";
        for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
            add(p + n + ".weight", {s.H, s.H});
            add(p + n + ".bias", {s.H});
        }
        add(p + "attention.output.LayerNorm.weight", {s.H}, 1.f);
        add(p + "attention.output.LayerNorm.bias", {s.H});
        add(p + "intermediate.dense.weight", {s.I, s.H});
        add(p + "intermediate.dense.bias", {s.I});
        add(p + "output.dense.weight", {s.H, s.I});
        add(p + "output.dense.bias", {s.H});
        add(p + "output.LayerNorm.weight", {s.H}, 1.f);
        add(p + "output.LayerNorm.bias", {s.H});
    }
    return m;
}

// Hooks let a test corrupt one thing while everything else stays valid.
struct blob_hooks {
    std::function<void(bertlet::blob::writer&)> meta_override;
    std::string drop_tensor;
    std::string reshape_tensor;
    std::size_t vocab_size_override = 0;
    bool pack_linear = false;  // write the encoder's 2-D linear weights as layout 1 (PACKED_N16), like the converter
    const std::vector<std::uint16_t>* word_f16 = nullptr;  // write the word embeddings as these f16 values
    bool bf16_linear = false;  // write the encoder's 2-D linear weights as bf16 layout 3 (BF16P16K2)
    bool int8_linear = false;  // write them as int8 S8P16K4 (+ .scale, .row_sum), smoothed by act_scale below
    // per linear weight name: the act_scale vector to smooth it with (written as <name>.act_scale; the int8
    // weights are then those of W / act_scale); `raw_act_scale` is written as given without touching the weights
    std::map<std::string, std::vector<float>> act_scale, raw_act_scale;
};

std::vector<std::byte> tiny_blob(const tiny_model& m, const blob_hooks& hk = {}) {
    const auto& s = m.s;
    bertlet::blob::writer w;
    w.set_str("general.architecture", "bert");
    w.set_str("general.name", "tiny");
    w.set_u64("bert.vocab_size", hk.vocab_size_override ? hk.vocab_size_override : s.V);
    w.set_u64("bert.hidden_size", s.H);
    w.set_u64("bert.num_layers", s.L);
    w.set_u64("bert.num_heads", s.heads);
    w.set_u64("bert.intermediate_size", s.I);
    w.set_u64("bert.max_position_embeddings", s.P);
    w.set_u64("bert.type_vocab_size", s.T);
    w.set_f64("bert.layer_norm_eps", 1e-12);
    w.set_str("bert.hidden_act", s.act);
    w.set_str("tokenizer.model", "wordpiece");
    w.set_str_array("tokenizer.vocab", tiny_vocab(s.V));
    w.set_bool("tokenizer.lowercase", true);
    w.set_bool("tokenizer.strip_accents", true);
    w.set_bool("tokenizer.handle_chinese_chars", true);
    w.set_bool("tokenizer.clean_text", true);
    w.set_str("tokenizer.continuing_subword_prefix", "##");
    w.set_u64("tokenizer.max_input_chars_per_word", 100);
    w.set_u64("tokenizer.unk_id", 1);
    w.set_u64("tokenizer.cls_id", 2);
    w.set_u64("tokenizer.sep_id", 3);
    w.set_u64("tokenizer.pad_id", 0);
    w.set_u64("tokenizer.max_length", s.P);
    w.set_str("pooling.mode", s.pooling);
    w.set_bool("pooling.normalize", s.normalize);
    if (hk.meta_override) hk.meta_override(w);
    for (const auto& [name, data] : m.w) {
        if (name == hk.drop_tensor) continue;
        auto dims = m.shapes.at(name);
        std::size_t nbytes = data.size() * sizeof(float);
        if (name == hk.reshape_tensor) {  // same bytes, transposed-looking shape
            std::swap(dims.front(), dims.back());
            if (dims.size() == 1) { dims = {1, dims[0]}; }
        }
        if (hk.word_f16 && name == "embeddings.word_embeddings.weight") {
            w.add_tensor(name, bertlet::blob::dtype::f16, 0, 0, dims, hk.word_f16->data(), hk.word_f16->size() * 2);
            continue;
        }
        if (hk.int8_linear && dims.size() == 2 && name.rfind("encoder.layer.", 0) == 0) {
            std::vector<float> wsm = data;
            const auto as = hk.act_scale.find(name);
            if (as != hk.act_scale.end())
                for (std::size_t r = 0; r < dims[0]; ++r)
                    for (std::size_t c = 0; c < dims[1]; ++c) wsm[r * dims[1] + c] /= as->second[c];
            const auto pk = bertlet::pack_s8(wsm.data(), dims[0], dims[1]);
            const std::uint64_t np = pk.scales.size();
            w.add_tensor(name, bertlet::blob::dtype::i8, 2, 1, dims, pk.data.data(), pk.data.size());
            w.add_tensor(name + ".scale", bertlet::blob::dtype::f32, 0, 0, {np}, pk.scales.data(), np * 4);
            w.add_tensor(name + ".row_sum", bertlet::blob::dtype::i32, 0, 0, {np}, pk.row_sums.data(), np * 4);
            const std::vector<float>* a = as != hk.act_scale.end() ? &as->second : nullptr;
            if (const auto raw = hk.raw_act_scale.find(name); raw != hk.raw_act_scale.end()) a = &raw->second;
            if (a) w.add_tensor(name + ".act_scale", bertlet::blob::dtype::f32, 0, 0, {dims[1]}, a->data(), a->size() * 4);
            continue;
        }
        if (hk.bf16_linear && dims.size() == 2 && name.rfind("encoder.layer.", 0) == 0) {
            std::vector<std::uint16_t> packed(bertlet::bf16_packed_size(std::ptrdiff_t(dims[0]), std::ptrdiff_t(dims[1])));
            bertlet::pack_bf16_ref(data.data(), std::ptrdiff_t(dims[0]), std::ptrdiff_t(dims[1]),
                                   std::ptrdiff_t(dims[1]), packed.data());
            w.add_tensor(name, bertlet::blob::dtype::bf16, 3, 0, dims, packed.data(), packed.size() * 2);
            continue;
        }
        if (hk.pack_linear && dims.size() == 2 && name.rfind("encoder.layer.", 0) == 0) {
            std::vector<float> packed(bertlet::detail::packed_n16_size(dims[0], dims[1]));
            bertlet::detail::pack_n16(data.data(), std::ptrdiff_t(dims[0]), std::ptrdiff_t(dims[1]),
                                      std::ptrdiff_t(dims[1]), packed.data());
            w.add_tensor(name, bertlet::blob::dtype::f32, 1, 0, dims, packed.data(), packed.size() * sizeof(float));
            continue;
        }
        w.add_tensor(name, bertlet::blob::dtype::f32, 0, 0, dims, data.data(), nbytes);
    }
    return w.bytes();
}

// Naive reference BERT in double precision (independent of the library's kernels).
std::vector<double> reference_embed(const tiny_model& m, const std::vector<std::int32_t>& ids) {
    const auto& s = m.s;
    const std::size_t n = ids.size(), H = s.H, D = H / s.heads;
    auto W = [&](const std::string& k) -> const std::vector<float>& { return m.w.at(k); };
    std::vector<double> x(n * H);
    for (std::size_t t = 0; t < n; ++t)
        for (std::size_t i = 0; i < H; ++i)
            x[t * H + i] = double(W("embeddings.word_embeddings.weight")[ids[t] * H + i]) +
                           W("embeddings.position_embeddings.weight")[t * H + i] +
                           W("embeddings.token_type_embeddings.weight")[i];
    auto ln = [&](std::vector<double>& v, const std::string& p) {
        for (std::size_t t = 0; t < n; ++t) {
            double mean = 0, var = 0;
            for (std::size_t i = 0; i < H; ++i) mean += v[t * H + i];
            mean /= double(H);
            for (std::size_t i = 0; i < H; ++i) var += (v[t * H + i] - mean) * (v[t * H + i] - mean);
            var /= double(H);
            for (std::size_t i = 0; i < H; ++i)
                v[t * H + i] = (v[t * H + i] - mean) / std::sqrt(var + 1e-12) * W(p + ".weight")[i] + W(p + ".bias")[i];
        }
    };
    auto lin = [&](const std::vector<double>& in, std::size_t din, const std::string& p, std::size_t dout) {
        std::vector<double> out(n * dout);
        for (std::size_t t = 0; t < n; ++t)
            for (std::size_t o = 0; o < dout; ++o) {
                double acc = W(p + ".bias")[o];
                for (std::size_t i = 0; i < din; ++i) acc += in[t * din + i] * W(p + ".weight")[o * din + i];
                out[t * dout + o] = acc;
            }
        return out;
    };
    ln(x, "embeddings.LayerNorm");
    for (std::size_t l = 0; l < s.L; ++l) {
        const std::string p = "encoder.layer." + std::to_string(l) + ".";
        auto q = lin(x, H, p + "attention.self.query", H);
        auto k = lin(x, H, p + "attention.self.key", H);
        auto v = lin(x, H, p + "attention.self.value", H);
        std::vector<double> ctx(n * H, 0.0);
        for (std::size_t h = 0; h < s.heads; ++h)
            for (std::size_t a = 0; a < n; ++a) {
                std::vector<double> sc(n);
                double mx = -1e300;
                for (std::size_t b = 0; b < n; ++b) {
                    double d = 0;
                    for (std::size_t j = 0; j < D; ++j) d += q[a * H + h * D + j] * k[b * H + h * D + j];
                    sc[b] = d / std::sqrt(double(D));
                    mx = std::max(mx, sc[b]);
                }
                double sum = 0;
                for (auto& e : sc) sum += (e = std::exp(e - mx));
                for (std::size_t b = 0; b < n; ++b)
                    for (std::size_t j = 0; j < D; ++j) ctx[a * H + h * D + j] += sc[b] / sum * v[b * H + h * D + j];
            }
        auto ao = lin(ctx, H, p + "attention.output.dense", H);
        for (std::size_t i = 0; i < n * H; ++i) ao[i] += x[i];
        ln(ao, p + "attention.output.LayerNorm");
        auto inter = lin(ao, H, p + "intermediate.dense", s.I);
        for (auto& e : inter) e = 0.5 * e * (1.0 + std::erf(e / std::sqrt(2.0)));
        auto out = lin(inter, s.I, p + "output.dense", H);
        for (std::size_t i = 0; i < n * H; ++i) out[i] += ao[i];
        ln(out, p + "output.LayerNorm");
        x = out;
    }
    std::vector<double> pooled(H, 0.0);
    if (s.pooling == "cls") {
        for (std::size_t i = 0; i < H; ++i) pooled[i] = x[i];
    } else {
        for (std::size_t t = 0; t < n; ++t)
            for (std::size_t i = 0; i < H; ++i) pooled[i] += x[t * H + i] / double(n);
    }
    if (s.normalize) {
        double nn = 0;
        for (double e : pooled) nn += e * e;
        for (double& e : pooled) e /= std::sqrt(nn);
    }
    return pooled;
}

/// Every kernel path this CPU has (amx = false), plus avx512 with the AMX tile linears where the CPU has AMX-BF16.
std::vector<std::pair<bertlet::isa, bool>> paths_with_amx() {
    std::vector<std::pair<bertlet::isa, bool>> runs;
    for (const auto arch : bertlet::detail::available_isas()) {
        runs.emplace_back(arch, false);
        if (arch == bertlet::isa::avx512 && bertlet::f32x6_supported()) runs.emplace_back(arch, true);
    }
    return runs;
}

double max_abs_diff(const float* a, const std::vector<double>& b) {
    double m = 0;
    for (std::size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
    return m;
}

}  // namespace

TEST_CASE("encoder matches a naive double-precision reference for several shapes and heads") {
    struct shape_case { std::size_t H, heads, I, L; const char* pooling; bool normalize; };
    for (const auto& c : {shape_case{16, 4, 32, 2, "mean", true}, shape_case{24, 3, 40, 3, "cls", false},
                          shape_case{64, 2, 96, 2, "mean", true},  // H % 32 == 0: fused Q|K|V GEMM, dynamic shape
                          shape_case{384, 12, 1536, 1, "mean", true}}) {
        CAPTURE(c.H);
        tiny_spec s;
        s.H = c.H;
        s.heads = c.heads;
        s.I = c.I;
        s.L = c.L;
        s.pooling = c.pooling;
        s.normalize = c.normalize;
        const auto m = make_tiny(s);
        for (const auto& [arch, amx] : paths_with_amx()) {  // avx512 with AMX-BF16: also the bf16x6 fp32 linears
            CAPTURE(bertlet::isa_name(arch));
            CAPTURE(amx);
            bertlet::load_options lo;
            lo.arch = arch;
            lo.amx = amx;
            const auto e = bertlet::embedder::from_bytes(tiny_blob(m), lo);
            REQUIRE(e.arch() == arch);
            CHECK(e.model_encoder().f32_amx() == (amx && c.H % 32 == 0 && c.I % 32 == 0));
            bertlet::embed_workspace ws;
            for (const char* text : {"the cat sat on the mat.", "dogs running!", "", "big, small, big",
                                     "the cat sat on the mat. the dog ran on the big mat. small cats sat, big dogs ran."}) {
                CAPTURE(text);
                const auto enc = e.tokenizer().encode(text);
                if (std::strlen(text) > 40)  // a call long enough for the AMX tiles (shorter ones keep the FMA kernels)
                    CHECK(enc.ids.size() >= bertlet::encoder::f32_amx_min_tokens);
                std::vector<float> got(e.dim());
                e.embed(text, got.data(), ws);
                CHECK(max_abs_diff(got.data(), reference_embed(m, enc.ids)) < 2e-5);
            }
        }
    }
}

TEST_CASE("f16 word embeddings give exactly the f32 model's results (every path)") {
    tiny_spec s;
    s.H = 64;
    s.heads = 2;
    s.I = 96;
    auto m = make_tiny(s);
    // word embeddings drawn as f16 bit patterns (normal numbers of either sign, |x| in [2^-9, 2)); the f32 model
    // holds the same values widened, so both blobs describe the same network
    auto& wf = m.w.at("embeddings.word_embeddings.weight");
    std::vector<std::uint16_t> h(wf.size());
    std::mt19937 rng(11);
    for (std::size_t i = 0; i < h.size(); ++i) {
        const std::uint16_t exp = static_cast<std::uint16_t>(6 + rng() % 10);  // biased exponent 6..15
        h[i] = static_cast<std::uint16_t>((rng() & 1u) << 15 | exp << 10 | (rng() & 0x3FFu));
        wf[i] = bertlet::detail::f16_to_f32(h[i]);
    }
    blob_hooks f16;
    f16.word_f16 = &h;
    f16.pack_linear = true;
    blob_hooks f32;
    f32.pack_linear = true;
    const auto bytes16 = tiny_blob(m, f16), bytes32 = tiny_blob(m, f32);
    CHECK(bytes16.size() < bytes32.size());
    for (const auto arch : bertlet::detail::available_isas()) {
        CAPTURE(bertlet::isa_name(arch));
        bertlet::load_options lo;
        lo.arch = arch;
        const auto a = bertlet::embedder::from_bytes(bytes32, lo);
        const auto b = bertlet::embedder::from_bytes(bytes16, lo);
        for (const char* text : {"the cat sat on the mat.", "dogs running!", ""}) {
            CAPTURE(text);
            CHECK(a.embed(text) == b.embed(text));
            CHECK(max_abs_diff(b.embed(text).data(), reference_embed(m, b.tokenizer().encode(text).ids)) < 2e-5);
        }
    }
}

TEST_CASE("bf16 (layout 3) linear weights: AVX512_BF16 kernels where available, widened to f32 elsewhere") {
    for (const auto& c : {std::array<std::size_t, 3>{64, 2, 96}, std::array<std::size_t, 3>{24, 3, 40}}) {
        tiny_spec s;
        s.H = c[0];
        s.heads = c[1];
        s.I = c[2];
        auto m = make_tiny(s);
        CAPTURE(s.H);
        // the network a bf16 blob describes: every linear weight rounded to bf16
        tiny_model r = m;
        for (auto& [name, data] : r.w)
            if (r.shapes.at(name).size() == 2 && name.rfind("encoder.layer.", 0) == 0)
                for (auto& x : data) x = bertlet::bf16_to_float(bertlet::float_to_bf16(x));
        blob_hooks hk;
        hk.bf16_linear = true;
        const auto bytes = tiny_blob(m, hk);
        std::vector<float> widened;
        for (const auto& [arch, amx] : paths_with_amx()) {  // on AMX-BF16 CPUs: with and without the tiles
            CAPTURE(bertlet::isa_name(arch));
            CAPTURE(amx);
            bertlet::load_options lo;
            lo.arch = arch;
            lo.amx = amx;
            const auto e = bertlet::embedder::from_bytes(bytes, lo);
            const bool kernels = arch == bertlet::isa::avx512 && bertlet::bf16_supported();
            CHECK(e.model_encoder().bf16_kernels() == kernels);
            CHECK(e.model_encoder().bf16_amx() == (amx && s.H % 32 == 0 && s.I % 32 == 0));
            CHECK(e.model_encoder().prepacked() == kernels);  // widening packs f32 panels at load
            for (const char* text : {"the cat sat on the mat.", "dogs running!",
                                     "the the the the the the the the the the the the the the the the the"}) {
                CAPTURE(text);
                const auto got = e.embed(text);
                const auto ref = reference_embed(r, e.tokenizer().encode(text).ids);
                // widened weights are exact (only fp32 rounding remains); the bf16 kernels also round activations
                CHECK(max_abs_diff(got.data(), ref) < (kernels ? 2e-2 : 2e-5));
                double dot = 0, na = 0, nb = 0;
                for (std::size_t i = 0; i < ref.size(); ++i) {
                    dot += got[i] * ref[i];
                    na += double(got[i]) * got[i];
                    nb += ref[i] * ref[i];
                }
                CHECK(dot / std::sqrt(na * nb) > (kernels ? 0.999 : 0.9999999));
            }
        }
    }
}

TEST_CASE("int8 linears with act_scale smoothing: close to the f32 network on every path; bad vectors refused") {
    tiny_spec s;
    s.H = 64;
    s.heads = 2;
    s.I = 96;
    const auto m = make_tiny(s);
    blob_hooks hk;
    hk.int8_linear = true;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> ud(0.25f, 4.0f);
    auto vec = [&](std::size_t n) {
        std::vector<float> v(n);
        for (auto& x : v) x = ud(rng);
        return v;
    };
    const std::string p = "encoder.layer.0.";
    const auto qkv = vec(s.H);  // Q, K and V share one vector
    for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value"})
        hk.act_scale[p + n + ".weight"] = qkv;
    hk.act_scale[p + "attention.output.dense.weight"] = vec(s.H);
    hk.act_scale[p + "output.dense.weight"] = vec(s.I);
    std::vector<std::vector<float>> first;
    for (const auto arch : bertlet::detail::available_isas()) {
        CAPTURE(bertlet::isa_name(arch));
        bertlet::load_options lo;
        lo.arch = arch;
        lo.bf16_attention = false;
        lo.int8_attention = false;
        const auto e = bertlet::embedder::from_bytes(tiny_blob(m, hk), lo);
        CHECK(e.model_encoder().quantized());
        std::vector<std::vector<float>> got;
        for (const char* text : {"the cat sat on the mat.", "dogs running!", "big, small, big"}) {
            CAPTURE(text);
            got.push_back(e.embed(text));
            const auto ref = reference_embed(m, e.tokenizer().encode(text).ids);
            double dot = 0, na = 0, nb = 0;
            for (std::size_t i = 0; i < ref.size(); ++i) {
                dot += got.back()[i] * ref[i];
                na += double(got.back()[i]) * got.back()[i];
                nb += ref[i] * ref[i];
            }
            CHECK(dot / std::sqrt(na * nb) > 0.99);
        }
        if (first.empty()) first = got;
        else  // exact integer GEMMs on every path; LN / softmax fp32 rounding may differ slightly
            for (std::size_t t = 0; t < got.size(); ++t) CHECK(max_abs_diff(got[t].data(), std::vector<double>(first[t].begin(), first[t].end())) < 1e-4);
    }
    auto refused = [&](const blob_hooks& bad, const char* what) {
        CAPTURE(what);
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, bad)), doctest::Contains(what),
                             bertlet::model_error);
    };
    {
        blob_hooks bad = hk;  // a zero, a NaN, a negative value
        for (float v : {0.0f, std::nanf(""), -1.0f}) {
            auto a = hk.act_scale[p + "output.dense.weight"];
            a[7] = v;
            bad.raw_act_scale[p + "output.dense.weight"] = a;
            refused(bad, "element 7");
        }
    }
    {
        blob_hooks bad = hk;  // key's vector differs from query's
        auto a = qkv;
        a[3] *= 2.0f;
        bad.raw_act_scale[p + "attention.self.key.weight"] = a;
        refused(bad, "must be identical");
    }
    {
        blob_hooks bad;  // an act_scale next to an f32 weight
        bad.int8_linear = false;
        // f32 tensors are written by the plain branch: add the act_scale by hand through meta_override's writer
        bad.meta_override = [&](bertlet::blob::writer& w) {
            const auto v = vec(s.H);
            w.add_tensor(p + "intermediate.dense.weight.act_scale", bertlet::blob::dtype::f32, 0, 0, {s.H}, v.data(),
                         v.size() * 4);
        };
        refused(bad, "only int8 (layout 2) weights take an act_scale");
    }
}

TEST_CASE("pre-packed (layout 1) linear weights are used in place and give the same results") {
    tiny_spec s;
    s.H = 24;
    s.heads = 3;
    s.I = 40;  // not multiples of 16: zero-padded tail panels
    const auto m = make_tiny(s);
    blob_hooks packed;
    packed.pack_linear = true;
    for (const auto arch : bertlet::detail::available_isas()) {
        CAPTURE(bertlet::isa_name(arch));
        bertlet::load_options lo;
        lo.arch = arch;
        const auto rm = bertlet::embedder::from_bytes(tiny_blob(m), lo);
        const auto pk = bertlet::embedder::from_bytes(tiny_blob(m, packed), lo);
        CHECK(!rm.model_encoder().prepacked());
        CHECK(pk.model_encoder().prepacked());
        for (const char* text : {"the cat sat on the mat.", "dogs running!"}) {
            const auto a = rm.embed(text), b = pk.embed(text);
            CHECK(a == b);
            CHECK(max_abs_diff(b.data(), reference_embed(m, pk.tokenizer().encode(text).ids)) < 2e-5);
        }
    }
}

TEST_CASE("intra-op threads and kernel paths do not change results") {
    tiny_spec s;
    s.H = 48;
    s.heads = 3;
    s.I = 80;
    s.L = 2;
    s.P = 64;
    const auto m = make_tiny(s);
    const std::vector<std::string> texts = {"the cat sat on the mat.", "dogs running!", "", "big, small, big",
                                            "the the the the the the the the the the the the the the the the the"};
    for (const auto arch : bertlet::detail::available_isas()) {
        CAPTURE(bertlet::isa_name(arch));
        bertlet::load_options one;
        one.arch = arch;
        const auto e1 = bertlet::embedder::from_bytes(tiny_blob(m), one);
        const auto want = e1.embed_batch(texts);
        for (std::size_t threads : {2u, 3u}) {
            bertlet::load_options lo = one;
            lo.threads = threads;
            const auto e = bertlet::embedder::from_bytes(tiny_blob(m), lo);
            CHECK(e.threads() == threads);
            const auto got = e.embed_batch(texts);
            for (std::size_t i = 0; i < texts.size(); ++i)
                for (std::size_t k = 0; k < e.dim(); ++k) CHECK(std::fabs(got[i][k] - want[i][k]) <= 1e-6f);
        }
    }
    {  // several caller threads sharing one embedder and its pool: calls are serialized on the pool, never mixed
        bertlet::load_options lo;
        lo.threads = 2;
        const auto e = bertlet::embedder::from_bytes(tiny_blob(m), lo);
        const auto want = e.embed_batch(texts);
        std::vector<int> bad(3, 0);
        std::vector<std::thread> callers;
        for (int t = 0; t < 3; ++t)
            callers.emplace_back([&, t] {
                bertlet::embed_workspace ws;
                std::vector<float> out(e.dim());
                for (int rep = 0; rep < 30; ++rep) {
                    const std::size_t i = std::size_t(t + rep) % texts.size();
                    e.embed(texts[i], out.data(), ws);
                    for (std::size_t k = 0; k < e.dim(); ++k)
                        if (std::fabs(out[k] - want[i][k]) > 1e-6f) { ++bad[t]; break; }
                }
            });
        for (auto& c : callers) c.join();
        for (int b : bad) CHECK(b == 0);
    }
    bertlet::load_options bad;
    bad.threads = 0;
    CHECK_THROWS_AS(bertlet::embedder::from_bytes(tiny_blob(m), bad), bertlet::input_error);
    bertlet::load_options wrong_isa;
#if defined(__x86_64__)
    wrong_isa.arch = bertlet::isa::neon;
#else
    wrong_isa.arch = bertlet::isa::avx512;
#endif
    CHECK_THROWS_AS(bertlet::embedder::from_bytes(tiny_blob(m), wrong_isa), bertlet::input_error);
}

TEST_CASE("bf16x6 fp32 linears (AMX-BF16): thread counts give the same bits, close to the FMA kernels") {
    if (!bertlet::f32x6_supported() || !bertlet::detail::isa_compiled(bertlet::isa::avx512)) {
        MESSAGE("no AMX-BF16 here (or BERTLET_AMX=0): skipped");
        return;
    }
    tiny_spec s;
    s.H = 64;
    s.heads = 2;
    s.I = 96;
    s.L = 2;
    s.P = 64;
    const auto m = make_tiny(s);
    const std::vector<std::string> texts = {"the cat sat on the mat.", "dogs running!", "", "big, small, big",
                                            "the the the the the the the the the the the the the the the the the"};
    bertlet::load_options one;
    one.arch = bertlet::isa::avx512;
    const auto e1 = bertlet::embedder::from_bytes(tiny_blob(m), one);
    REQUIRE(e1.model_encoder().f32_amx());
    const auto want = e1.embed_batch(texts);
    for (std::size_t threads : {2u, 3u}) {
        CAPTURE(threads);
        bertlet::load_options lo = one;
        lo.threads = threads;
        const auto got = bertlet::embedder::from_bytes(tiny_blob(m), lo).embed_batch(texts);
        for (std::size_t i = 0; i < texts.size(); ++i)
            CHECK(std::memcmp(got[i].data(), want[i].data(), want[i].size() * sizeof(float)) == 0);
    }
    for (const std::size_t g : {1u, 7u, 12u, 40u}) {  // groups of sequences: the call decides the path, same bits
        CAPTURE(g);
        bertlet::load_options lo = one;
        lo.group_tokens = g;
        CHECK(bertlet::embedder::from_bytes(tiny_blob(m), lo).embed_batch(texts) == want);
    }
    bertlet::load_options fma = one;
    fma.amx = false;
    const auto e2 = bertlet::embedder::from_bytes(tiny_blob(m), fma);
    CHECK(!e2.model_encoder().f32_amx());
    const auto ref = e2.embed_batch(texts);
    double worst = 0;
    for (std::size_t i = 0; i < texts.size(); ++i)
        for (std::size_t k = 0; k < want[i].size(); ++k) worst = std::max(worst, double(std::fabs(ref[i][k] - want[i][k])));
    CHECK(worst < 2e-6);
    CHECK(worst > 0);  // different arithmetic: the AMX path really ran
}

TEST_CASE("batch embedding equals one-by-one embedding (packed sequences, no padding)") {
    const auto m = make_tiny(tiny_spec{});
    const auto e = bertlet::embedder::from_bytes(tiny_blob(m));
    const std::vector<std::string> texts = {"the cat", "the dog ran on the big mat.", "", "a", "small cats sat",
                                            "the the the the the the the the the the the the the the the the the"};
    const auto batch = e.embed_batch(texts);
    REQUIRE(batch.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
        const auto one = e.embed(texts[i]);
        for (std::size_t k = 0; k < e.dim(); ++k) CHECK(batch[i][k] == doctest::Approx(one[k]).epsilon(1e-5));
    }
    // a tiny chunk budget forces several forward passes; results must not change
    bertlet::embed_workspace ws;
    std::vector<float> chunked(texts.size() * e.dim());
    std::vector<std::size_t> counts(texts.size(), 0);
    e.embed_batch(texts.data(), texts.size(), chunked.data(), ws, 5, counts.data());
    for (std::size_t i = 0; i < texts.size(); ++i) CHECK(counts[i] == e.tokenizer().encode(texts[i]).size());
    for (std::size_t i = 0; i < texts.size(); ++i)
        for (std::size_t k = 0; k < e.dim(); ++k) CHECK(chunked[i * e.dim() + k] == doctest::Approx(batch[i][k]).epsilon(1e-5));
}

TEST_CASE("large batches run in groups of sequences: the same bits whatever the group size") {
    const auto m = make_tiny(tiny_spec{});
    blob_hooks q;
    q.int8_linear = true;
    const std::vector<std::string> texts = {"the cat", "the dog ran on the big mat.", "", "a", "small cats sat",
                                            "the the the the the the the the the the the the the the the the the",
                                            "dogs ran", "the big cat sat on the small mat", "!", "a dog . a cat"};
    for (const bool int8 : {false, true})
        for (const auto arch : bertlet::detail::available_isas())
            for (const std::size_t threads : {1, 2}) {
                CAPTURE(int8);
                CAPTURE(bertlet::isa_name(arch));
                CAPTURE(threads);
                bertlet::load_options lo;
                lo.arch = arch;
                lo.threads = threads;
                lo.group_tokens = 1000000;  // one pass over all rows
                const auto blob = tiny_blob(m, int8 ? q : blob_hooks{});
                const auto all = bertlet::embedder::from_bytes(blob, lo).embed_batch(texts);
                for (const std::size_t g : {1, 7, 12, 40}) {  // 1: every sequence alone; 7, 12: some together
                    CAPTURE(g);
                    lo.group_tokens = g;
                    const auto e = bertlet::embedder::from_bytes(blob, lo);
                    CHECK(e.model_encoder().group_tokens() == g);
                    CHECK(e.embed_batch(texts) == all);
                }
            }
    // automatic: 128 rows per thread at hidden size 384, scaled by 384 / H (tiny H = 16: 3072), at least 32
    CHECK(bertlet::embedder::from_bytes(tiny_blob(m)).model_encoder().group_tokens() == 3072);
    bertlet::load_options two;
    two.threads = 2;
    CHECK(bertlet::embedder::from_bytes(tiny_blob(m), two).model_encoder().group_tokens() == 6144);
}

TEST_CASE("the loader cross-checks config, vocab and tensors") {
    const auto m = make_tiny(tiny_spec{});
    using bertlet::model_error;
    SUBCASE("vocab size disagrees with embedding rows") {
        blob_hooks hk;
        hk.vocab_size_override = 41;
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, hk)), doctest::Contains("[bertlet.model."), model_error);
    }
    SUBCASE("special id beyond the vocab") {
        blob_hooks hk;
        hk.meta_override = [](bertlet::blob::writer& w) { w.set_u64("tokenizer.sep_id", 4000); };
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, hk)), doctest::Contains("[bertlet.model.206]"), model_error);
    }
    SUBCASE("hidden size not divisible by heads") {
        blob_hooks hk;
        hk.meta_override = [](bertlet::blob::writer& w) { w.set_u64("bert.num_heads", 3); };
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, hk)), doctest::Contains("[bertlet.model.202]"), model_error);
    }
    SUBCASE("unknown architecture / activation / pooling") {
        blob_hooks a;
        a.meta_override = [](bertlet::blob::writer& w) { w.set_str("general.architecture", "gpt2"); };
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, a)), doctest::Contains("'gpt2'"), model_error);
        blob_hooks g;
        g.meta_override = [](bertlet::blob::writer& w) { w.set_str("bert.hidden_act", "relu"); };
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, g)), doctest::Contains("[bertlet.model.202]"), model_error);
        blob_hooks p;
        p.meta_override = [](bertlet::blob::writer& w) { w.set_str("pooling.mode", "max"); };
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, p)), doctest::Contains("[bertlet.model.208]"), model_error);
    }
    SUBCASE("missing tensor") {
        blob_hooks hk;
        hk.drop_tensor = "encoder.layer.1.output.dense.weight";
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, hk)),
                             doctest::Contains("[bertlet.model.203]"), model_error);
    }
    SUBCASE("transposed tensor shape") {
        blob_hooks hk;
        hk.reshape_tensor = "encoder.layer.0.intermediate.dense.weight";
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, hk)),
                             doctest::Contains("expected (32,16), got (16,32)"), model_error);
    }
    SUBCASE("max length beyond the position table") {
        blob_hooks hk;
        hk.meta_override = [](bertlet::blob::writer& w) { w.set_u64("tokenizer.max_length", 25); };
        CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(m, hk)), doctest::Contains("[bertlet.model.202]"), model_error);
    }
    SUBCASE("verify without reference vectors is an error, not a silent pass") {
        const auto e = bertlet::embedder::from_bytes(tiny_blob(m));
        CHECK_THROWS_WITH_AS(e.verify(), doctest::Contains("[bertlet.model.207]"), model_error);
    }
}

TEST_CASE("verify catches weights that do not reproduce the reference vectors") {
    const auto m = make_tiny(tiny_spec{});
    const auto good = bertlet::embedder::from_bytes(tiny_blob(m));
    const std::vector<std::string> texts = {"the cat sat", "dogs!"};
    const auto ref = good.embed_batch(texts);
    std::vector<float> flat;
    for (const auto& r : ref) flat.insert(flat.end(), r.begin(), r.end());
    blob_hooks hk;
    hk.meta_override = [&](bertlet::blob::writer& w) {
        w.set_str_array("verify.texts", texts);
        w.set_f32_array("verify.embeddings", flat);
        w.set_f64("verify.tolerance", 1e-5);
    };
    bertlet::load_options lo;
    lo.verify = true;
    CHECK_NOTHROW(bertlet::embedder::from_bytes(tiny_blob(m, hk), lo));
    auto other = make_tiny(tiny_spec{}, 8);  // same shapes, different weights: a layout slip would look like this
    CHECK_THROWS_WITH_AS(bertlet::embedder::from_bytes(tiny_blob(other, hk), lo),
                         doctest::Contains("reference text 0"), bertlet::model_error);
}

TEST_CASE("token ids are checked before they index the embedding table") {
    const auto m = make_tiny(tiny_spec{});
    const auto e = bertlet::embedder::from_bytes(tiny_blob(m));
    bertlet::embed_workspace ws;
    std::vector<float> out(e.dim());
    CHECK_THROWS_AS(e.embed_ids({{2, 40, 3}}, out.data(), ws), bertlet::input_error);
    CHECK_THROWS_AS(e.embed_ids({{2, -1, 3}}, out.data(), ws), bertlet::input_error);
    CHECK_THROWS_AS(e.embed_ids({std::vector<std::int32_t>(25, 5)}, out.data(), ws), bertlet::input_error);
    CHECK_NOTHROW(e.embed_ids({std::vector<std::int32_t>(24, 5)}, out.data(), ws));
}

// ---- the real model (built by scripts/setup.sh) ----------------------------------------------------------------

namespace {
const std::string kModel = std::string(BERTLET_MODELS_DIR) + "/all-MiniLM-L6-v2.bertlet";

struct golden {
    std::string text;
    std::vector<float> embedding;
};

// Reads tests/data/golden_stsb_small.jsonl: {"text": "...", "embedding": [...]} per line.
std::vector<golden> read_goldens() {
    std::ifstream in(std::string(BERTLET_TEST_DATA) + "/golden_stsb_small.jsonl");
    REQUIRE(in.good());
    std::vector<golden> out;
    std::string line;
    while (std::getline(in, line)) {
        golden g;
        const auto tk = line.find("\"text\"");
        REQUIRE(tk != std::string::npos);
        std::size_t i = line.find('"', line.find(':', tk) + 1) + 1;
        while (line[i] != '"') {
            if (line[i] == '\\') {
                const char c = line[++i];
                if (c == 'u') {
                    const unsigned cp = std::stoul(line.substr(i + 1, 4), nullptr, 16);
                    i += 4;
                    REQUIRE(cp < 0xD800);  // goldens are written with ensure_ascii; no astral chars in this subset
                    if (cp < 0x80) g.text += char(cp);
                    else if (cp < 0x800) { g.text += char(0xC0 | (cp >> 6)); g.text += char(0x80 | (cp & 0x3F)); }
                    else { g.text += char(0xE0 | (cp >> 12)); g.text += char(0x80 | ((cp >> 6) & 0x3F)); g.text += char(0x80 | (cp & 0x3F)); }
                } else {
                    g.text += c == 'n' ? '\n' : c == 't' ? '\t' : c;
                }
            } else {
                g.text += line[i];
            }
            ++i;
        }
        const auto ek = line.find('[', line.find("\"embedding\""));
        std::istringstream nums(line.substr(ek + 1, line.find(']', ek) - ek - 1));
        std::string num;
        while (std::getline(nums, num, ',')) g.embedding.push_back(std::stof(num));
        out.push_back(std::move(g));
    }
    return out;
}
}  // namespace

TEST_CASE("all-MiniLM-L6-v2: loads, verifies and matches the committed Hugging Face goldens") {
    // fp32 parity on every kernel path this CPU has; on avx512 with AMX-BF16 both with the bf16x6 tile linears
    // (the default there) and with the FMA kernels (amx = false)
    for (const auto& [arch, amx] : paths_with_amx()) {
        CAPTURE(bertlet::isa_name(arch));
        CAPTURE(amx);
        bertlet::load_options lo;
        lo.verify = true;
        lo.arch = arch;
        lo.amx = amx;
        const auto e = bertlet::embedder::load(kModel, lo);
        CHECK(e.arch() == arch);
        CHECK(e.model_encoder().f32_amx() == amx);
        CHECK(e.model_encoder().prepacked());  // the converter's default layout: linear weights used from the mmap
        CHECK(e.dim() == 384);
        CHECK(e.config().num_layers == 6);
        CHECK(e.pooling().mode == bertlet::pooling_mode::mean);
        CHECK(e.pooling().normalize);
        const auto rep = e.verify();
        CHECK(rep.texts >= 3);
        CHECK(rep.max_abs_diff <= 1e-4);

        const auto gold = read_goldens();
        REQUIRE(gold.size() >= 16);
        std::vector<std::string> texts;
        for (const auto& g : gold) texts.push_back(g.text);
        const auto got = e.embed_batch(texts);
        for (std::size_t i = 0; i < gold.size(); ++i) {
            CAPTURE(gold[i].text);
            REQUIRE(gold[i].embedding.size() == 384);
            double dot = 0, na = 0, nb = 0, mad = 0;
            for (std::size_t k = 0; k < 384; ++k) {
                dot += double(got[i][k]) * gold[i].embedding[k];
                na += double(got[i][k]) * got[i][k];
                nb += double(gold[i].embedding[k]) * gold[i].embedding[k];
                mad = std::max(mad, std::fabs(double(got[i][k]) - gold[i].embedding[k]));
            }
            CHECK(dot / std::sqrt(na * nb) >= 0.99999);
            CHECK(mad <= 1e-4);
        }
    }
}

TEST_CASE("all-MiniLM-L6-v2: one model shared by many threads gives the same answers") {
    const auto e = bertlet::embedder::load(kModel);
    const std::vector<std::string> texts = {"A man is playing a guitar.", "A woman is slicing an onion.",
                                            "Three dogs run across the snowy field.", "Über café naïve — 東京 🚀"};
    const auto expect = e.embed_batch(texts);
    std::vector<int> mismatches(4, 0);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            bertlet::embed_workspace ws;
            std::vector<float> out(e.dim());
            for (int rep = 0; rep < 20; ++rep) {
                const auto& text = texts[(t + rep) % texts.size()];
                e.embed(text, out.data(), ws);
                for (std::size_t k = 0; k < e.dim(); ++k)
                    if (std::fabs(out[k] - expect[(t + rep) % texts.size()][k]) > 1e-5f) { ++mismatches[t]; break; }
            }
        });
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t) CHECK(mismatches[t] == 0);
}

TEST_CASE("all-MiniLM-L6-v2 int8: loads in place, verifies and stays close to the fp32 goldens on every path") {
    const std::string path = std::string(BERTLET_MODELS_DIR) + "/all-MiniLM-L6-v2.int8.bertlet";
    const auto gold = read_goldens();
    std::vector<std::string> texts;
    for (const auto& g : gold) texts.push_back(g.text);
    std::vector<std::vector<float>> first;
    for (bertlet::isa a : bertlet::detail::available_isas())
    for (int mode : {0, 1, 2}) {  // attention: fp32, bf16, int8 (verify() passes in each)
        CAPTURE(bertlet::isa_name(a));
        CAPTURE(mode);
        const bool bf16 = mode != 0;  // reduced-precision attention
        bertlet::load_options lo;
        lo.verify = true;
        lo.arch = a;
        lo.bf16_attention = mode == 1;
        lo.int8_attention = mode == 2;
        const auto e = bertlet::embedder::load(path, lo);
        CHECK(e.model_encoder().quantized());
        CHECK(e.model_encoder().prepacked());
        CHECK(e.model_encoder().bf16_attention() ==
              (mode == 1 && a == bertlet::isa::avx512 && bertlet::bf16_supported()));
        CHECK(e.model_encoder().int8_attention() ==
              (mode == 2 && a == bertlet::isa::avx512 && bertlet::s8_attention_supported()));
        if (mode != 0 && !e.model_encoder().bf16_attention() && !e.model_encoder().int8_attention())
            continue;  // same as the fp32-attention run
        const auto got = e.embed_batch(texts);
        CHECK(e.model_encoder().group_tokens() == 128);
        {  // 32 texts, ~400 rows: the automatic groups (128 rows) against one pass over all rows; the same bits
            bertlet::load_options l1 = lo;
            l1.verify = false;
            l1.group_tokens = 100000;
            CHECK(bertlet::embedder::load(path, l1).embed_batch(texts) == got);
        }
        if (e.model_encoder().int8_path() == bertlet::s8_path::avx512_amx) {  // AMX tiles vs vpdpbusd: same bits
            bertlet::load_options l3 = lo;
            l3.verify = false;
            l3.amx = false;
            const auto vnni = bertlet::embedder::load(path, l3);
            CHECK(vnni.model_encoder().int8_path() == bertlet::s8_path::avx512_vnni);
            CHECK(vnni.embed_batch(texts) == got);
        }
        if (mode == 2) {  // int8 attention on a pool: per-(sequence, head) tasks, the same bits as one thread
            bertlet::load_options l2 = lo;
            l2.threads = 2;
            l2.verify = false;
            CHECK(bertlet::embedder::load(path, l2).model_encoder().group_tokens() == 256);
            CHECK(bertlet::embedder::load(path, l2).embed_batch(texts) == got);
        }
        for (std::size_t i = 0; i < gold.size(); ++i) {
            double dot = 0, na = 0, nb = 0;
            for (std::size_t k = 0; k < 384; ++k) {
                dot += double(got[i][k]) * gold[i].embedding[k];
                na += double(got[i][k]) * got[i][k];
                nb += double(gold[i].embedding[k]) * gold[i].embedding[k];
            }
            CHECK(dot / std::sqrt(na * nb) >= 0.99);
        }
        if (first.empty()) {
            first = got;
        } else {  // the integer GEMMs are exact on every path; only fp32 rounding in LN/softmax/GELU differs (and
                  // bf16 rounding in attention)
            for (std::size_t i = 0; i < got.size(); ++i) {
                double dot = 0;
                for (std::size_t k = 0; k < 384; ++k) dot += double(got[i][k]) * first[i][k];
                CHECK(dot >= (bf16 ? 0.995 : 0.999));
            }
        }
    }
}
