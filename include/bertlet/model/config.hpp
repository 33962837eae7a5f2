// bertlet — model configuration read from a blob, with semantic cross-checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "bertlet/blob/reader.hpp"
#include "bertlet/error.hpp"
#include "bertlet/kernels/basic.hpp"
#include "bertlet/text/tokenizer.hpp"

namespace bertlet {

enum class pooling_mode { mean, cls };

struct bert_config {
    std::size_t vocab_size = 0;
    std::size_t hidden_size = 0;
    std::size_t num_layers = 0;
    std::size_t num_heads = 0;
    std::size_t intermediate_size = 0;
    std::size_t max_position_embeddings = 0;
    std::size_t type_vocab_size = 0;
    float layer_norm_eps = 1e-12f;
    detail::gelu_kind activation = detail::gelu_kind::erf;
    std::size_t head_dim() const noexcept { return num_heads ? hidden_size / num_heads : 0; }
};

struct pooling_config {
    pooling_mode mode = pooling_mode::mean;
    bool normalize = false;
};

namespace detail {

inline std::size_t checked_size(const blob::reader& r, const char* key, std::uint64_t lo, std::uint64_t hi) {
    const std::uint64_t v = r.get_u64(key);
    if (v < lo || v > hi)
        throw model_error(errc::bad_config, std::string(r.source()) + ": '" + key + "' = " + std::to_string(v) +
                                                " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
    return static_cast<std::size_t>(v);
}

inline bert_config read_bert_config(const blob::reader& r) {
    const std::string src(r.source());
    const std::string_view arch = r.get_str("general.architecture");
    if (arch != "bert")
        throw model_error(errc::bad_config, src + ": general.architecture '" + std::string(arch) +
                                                "' is not supported (expected 'bert')");
    bert_config c;
    c.vocab_size = checked_size(r, "bert.vocab_size", 1, 1u << 24);
    c.hidden_size = checked_size(r, "bert.hidden_size", 1, 1u << 16);
    c.num_layers = checked_size(r, "bert.num_layers", 1, 128);
    c.num_heads = checked_size(r, "bert.num_heads", 1, 1024);
    c.intermediate_size = checked_size(r, "bert.intermediate_size", 1, 1u << 18);
    c.max_position_embeddings = checked_size(r, "bert.max_position_embeddings", 1, 1u << 20);
    c.type_vocab_size = checked_size(r, "bert.type_vocab_size", 1, 1u << 10);
    if (c.hidden_size % c.num_heads != 0)
        throw model_error(errc::bad_config, src + ": hidden_size " + std::to_string(c.hidden_size) +
                                                " is not divisible by num_heads " + std::to_string(c.num_heads));
    const double eps = r.get_f64("bert.layer_norm_eps");
    if (!(eps > 0.0 && eps < 1.0))
        throw model_error(errc::bad_config, src + ": bert.layer_norm_eps " + std::to_string(eps) + " is not in (0, 1)");
    c.layer_norm_eps = static_cast<float>(eps);
    const std::string_view act = r.get_str("bert.hidden_act");
    if (act == "gelu")
        c.activation = gelu_kind::erf;
    else if (act == "gelu_new" || act == "gelu_pytorch_tanh")
        c.activation = gelu_kind::tanh;
    else
        throw model_error(errc::bad_config, src + ": bert.hidden_act '" + std::string(act) + "' is not supported");
    return c;
}

inline pooling_config read_pooling_config(const blob::reader& r) {
    pooling_config p;
    const std::string_view mode = r.get_str("pooling.mode");
    if (mode == "mean")
        p.mode = pooling_mode::mean;
    else if (mode == "cls")
        p.mode = pooling_mode::cls;
    else
        throw model_error(errc::unsupported, std::string(r.source()) + ": pooling.mode '" + std::string(mode) +
                                                 "' is not supported (mean, cls)");
    p.normalize = r.get_bool("pooling.normalize");
    return p;
}

inline tokenizer_config read_tokenizer_config(const blob::reader& r, const bert_config& c) {
    const std::string src(r.source());
    const std::string_view model = r.get_str("tokenizer.model");
    if (model != "wordpiece")
        throw model_error(errc::unsupported, src + ": tokenizer.model '" + std::string(model) + "' is not supported");
    tokenizer_config t;
    t.lowercase = r.get_bool("tokenizer.lowercase");
    t.strip_accents = r.get_bool("tokenizer.strip_accents");
    t.handle_chinese_chars = r.get_bool("tokenizer.handle_chinese_chars");
    t.clean_text = r.get_bool("tokenizer.clean_text");
    t.continuing_subword_prefix = std::string(r.get_str("tokenizer.continuing_subword_prefix"));
    t.max_input_chars_per_word = checked_size(r, "tokenizer.max_input_chars_per_word", 1, 1u << 20);
    auto special = [&](const char* key) {
        const std::uint64_t id = r.get_u64(key);
        if (id >= c.vocab_size)
            throw model_error(errc::vocab_mismatch, src + ": " + key + " = " + std::to_string(id) +
                                                        " is not below the vocab size " + std::to_string(c.vocab_size));
        return static_cast<std::int32_t>(id);
    };
    t.unk_id = special("tokenizer.unk_id");
    t.cls_id = special("tokenizer.cls_id");
    t.sep_id = special("tokenizer.sep_id");
    t.pad_id = special("tokenizer.pad_id");
    t.max_length = checked_size(r, "tokenizer.max_length", 3, c.max_position_embeddings);
    return t;
}

}  // namespace detail
}  // namespace bertlet
