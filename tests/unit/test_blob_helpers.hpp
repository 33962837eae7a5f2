// Shared helpers of the blob tests (test_blob*.cpp). Not a test file itself (tests/CMakeLists.txt globs *.cpp).
#pragma once

#include <bertlet/blob/format.hpp>
#include <bertlet/blob/reader.hpp>
#include <bertlet/blob/writer.hpp>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace blobtest {

using bytes_t = std::vector<std::byte>;
namespace bb = bertlet::blob;

inline std::string data_path(const std::string& name) { return std::string(BERTLET_TEST_DATA) + "/" + name; }

inline bytes_t slurp(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    bytes_t b(c.size());
    if (!c.empty()) std::memcpy(b.data(), c.data(), c.size());
    return b;
}

template <class T>
inline bytes_t le_bytes(T v) {
    bytes_t b(sizeof(T));
    bertlet::detail::store_le<T>(b.data(), v);
    return b;
}

template <class T>
inline void patch(bytes_t& b, std::uint64_t off, T v, bool refresh = true) {
    bertlet::detail::store_le<T>(b.data() + off, v);
    if (refresh) bb::refresh_checksum(b);
}

template <class T>
inline T peek(const bytes_t& b, std::uint64_t off) {
    return bertlet::detail::load_le<T>(b.data() + off);
}

inline bb::reader parse(const bytes_t& b, bool check_checksum = true) {
    bb::load_options o;
    o.check_checksum = check_checksum;
    return bb::reader::from_bytes(b, o);
}

inline std::uint16_t bf16_bits(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return static_cast<std::uint16_t>(u >> 16);  // exact for the values used here
}

// Touch everything a parsed reader exposes (each key with its own getter, every tensor's bytes), so the sweeps
// and the fuzzer run the lookup paths too. Returns a value that depends on all of it.
inline std::uint64_t exercise(const bb::reader& r) {
    std::uint64_t acc = r.checksum() ^ r.file_size();
    for (std::string_view k : r.keys()) {
        switch (r.type_of(k)) {
            case bb::value_type::u64: acc += r.get_u64(k); break;
            case bb::value_type::i64: acc += static_cast<std::uint64_t>(r.get_i64(k)); break;
            case bb::value_type::f64: acc += r.get_f64(k) > 0; break;
            case bb::value_type::boolean: acc += r.get_bool(k); break;
            case bb::value_type::str: acc += r.get_str(k).size(); break;
            case bb::value_type::arr_str:
                for (std::string_view s : r.get_str_array(k)) acc += s.size();
                break;
            case bb::value_type::arr_i64:
                for (std::int64_t v : r.get_i64_array(k)) acc += static_cast<std::uint64_t>(v);
                break;
            case bb::value_type::arr_f32:
                for (float v : r.get_f32_array(k)) acc += v > 0;
                break;
        }
    }
    for (const bb::tensor_view& t : r.tensors()) {
        acc += t.numel() + t.shape_str().size();
        if (r.find(t.name) != &t) acc += 1000;
        for (std::uint64_t i = 0; i < t.nbytes; ++i) acc += std::to_integer<unsigned>(t.data[i]);
    }
    return acc;
}

// The same content as tools/bertlet_tools/make_test_blob.py (tests/data/tiny.bertlet).
inline bb::writer tiny_writer() {
    bb::writer w;
    w.set_str("general.architecture", "bert");
    w.set_str("general.name", "tiny-test");
    w.set_u64("bert.hidden_size", 4);
    w.set_i64("test.negative", -42);
    w.set_f64("bert.layer_norm_eps", 1e-12);
    w.set_bool("tokenizer.lowercase", true);
    w.set_bool("tokenizer.strip_accents", false);
    w.set_str("test.unicode", "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9F\x98\x80");
    w.set_str("test.empty", "");
    w.set_str_array("tokenizer.vocab", {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "##lo", "w\xC3\xB6rld", ""});
    w.set_i64_array("test.i64s", {-1, 0, 1, std::int64_t{1} << 40, -(std::int64_t{1} << 62)});
    w.set_f32_array("verify.embeddings", {0.5f, -1.25f, 3.0f, 0.001f});
    w.set_u64("test.big_u64", UINT64_MAX);

    std::vector<float> emb(32);
    for (int i = 0; i < 32; ++i) emb[i] = static_cast<float>(i) * 0.25f - 2.0f;
    w.add_f32("embeddings.word_embeddings.weight", {8, 4}, emb);
    w.add_f32("embeddings.LayerNorm.bias", {4}, {0.5f, -0.5f, 1.0f, -1.0f});
    const std::uint16_t f16[6] = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0000, 0x0001};
    bytes_t f16b;
    for (std::uint16_t v : f16) {
        auto b = le_bytes(v);
        f16b.insert(f16b.end(), b.begin(), b.end());
    }
    w.add_tensor("test.f16", bb::dtype::f16, 0, 0, {2, 3}, f16b.data(), f16b.size());
    bytes_t bf16b;
    for (float f : {1.0f, -2.5f, 0.15625f, 0.0f, 3.0f}) {
        auto b = le_bytes(bf16_bits(f));
        bf16b.insert(bf16b.end(), b.begin(), b.end());
    }
    w.add_tensor("test.bf16", bb::dtype::bf16, 0, 0, {5}, bf16b.data(), bf16b.size());
    std::int8_t q[12];
    for (int i = 0; i < 12; ++i) q[i] = static_cast<std::int8_t>((i * 11) % 255 - 127);
    w.add_tensor("test.q", bb::dtype::i8, 0, 1, {3, 4}, q, sizeof q);
    w.add_f32("test.q.scale", {3}, {0.0078125f, 0.015625f, 0.25f});
    bytes_t i32b;
    for (std::int32_t v : {-1, 2147483647, -2147483647 - 1, 7}) {
        auto b = le_bytes(v);
        i32b.insert(i32b.end(), b.begin(), b.end());
    }
    w.add_tensor("test.i32", bb::dtype::i32, 0, 0, {2, 2}, i32b.data(), i32b.size());
    w.add_f32("test.4d", {1, 2, 1, 2}, {1, 2, 3, 4});
    return w;
}

// A minimal valid writer: a couple of keys, two f32 tensors with padding between them.
inline bb::writer small_writer() {
    bb::writer w;
    w.set_str("general.architecture", "bert");
    w.set_u64("bert.hidden_size", 3);
    w.add_f32("a.weight", {2, 3}, {1, 2, 3, 4, 5, 6});
    w.add_f32("a.bias", {3}, {0.5f, 0.25f, 0.125f});
    return w;
}

}  // namespace blobtest
