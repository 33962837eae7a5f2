// Blob format: XXH64, format helpers, writer <-> reader round trip, Python compatibility, lookups.
#include <doctest/doctest.h>

#include "test_blob_helpers.hpp"

#include <bertlet/blob/xxhash.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

using namespace blobtest;
namespace bb = bertlet::blob;

namespace {

// splitmix64 byte stream (the same generator produced the expected hashes with Python's xxhash).
std::vector<unsigned char> splitmix_bytes(std::size_t n) {
    std::vector<unsigned char> out;
    out.reserve(n + 8);
    std::uint64_t x = 0;
    while (out.size() < n) {
        x += 0x9E3779B97F4A7C15ull;
        std::uint64_t z = x;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        for (int i = 0; i < 8; ++i) out.push_back(static_cast<unsigned char>(z >> (8 * i)));
    }
    out.resize(n);
    return out;
}

}  // namespace

TEST_CASE("blob: xxh64 matches Python xxhash.xxh64(seed=0)") {
    CHECK(bb::xxh64("", 0) == 0xef46db3751d8e999ull);
    CHECK(bb::xxh64("abc", 3) == 0x44bc2cf5ad770999ull);
    const auto big = splitmix_bytes(1u << 20);
    CHECK(bb::xxh64(big.data(), big.size()) == 0xde087aec0ec4c7e4ull);
    const std::pair<std::size_t, std::uint64_t> prefixes[] = {
        {1, 0x6f882064395dd22bull},   {3, 0x6df13f87aeb29ae8ull},   {4, 0x5a01cec96fada4c6ull},
        {5, 0x1d551cd4a5d045c3ull},   {7, 0x47f1f1cb6ba28268ull},   {8, 0x6e832f13f851e2f6ull},
        {9, 0xa20815a474f45507ull},   {15, 0x63ddebb82091de00ull},  {16, 0x59f2b9ac63cf01eull},
        {17, 0x45b09c5031bcbddcull},  {31, 0x825166588de64d4cull},  {32, 0x5dd907dcc880e07dull},
        {33, 0x61e6f236d191b7ccull},  {63, 0x7cf9f3ed7d9d3212ull},  {64, 0xcbbcc64eeb87b4b2ull},
        {65, 0x91e6f33f24d74b94ull},  {100, 0x64c4433f5ea3121aull}, {1000, 0x36fcb3b76fb4dafbull}};
    for (const auto& p : prefixes) {
        CAPTURE(p.first);
        CHECK(bb::xxh64(big.data(), p.first) == p.second);
    }
    // an unaligned start gives the same hash
    std::vector<unsigned char> shifted(1001);
    std::memcpy(shifted.data() + 1, big.data(), 1000);
    CHECK(bb::xxh64(shifted.data() + 1, 1000) == 0x36fcb3b76fb4dafbull);
    CHECK(bb::xxh64(big.data(), 100, 12345) == 0x5c809defe2eda28eull);
}

TEST_CASE("blob: format helpers") {
    CHECK(bb::align_up(0, 64) == 0);
    CHECK(bb::align_up(1, 64) == 64);
    CHECK(bb::align_up(64, 64) == 64);
    CHECK(bb::align_up(65, 16) == 80);
    std::uint64_t out = 0;
    CHECK_FALSE(bertlet::detail::checked_align_up(UINT64_MAX - 2, 64, out));
    CHECK(bertlet::detail::checked_align_up(100, 64, out));
    CHECK(out == 128);
    CHECK_FALSE(bertlet::detail::checked_mul(std::uint64_t{1} << 32, std::uint64_t{1} << 32, out));
    CHECK(bertlet::detail::checked_mul(std::uint64_t{1} << 31, std::uint64_t{1} << 32, out));
    CHECK_FALSE(bertlet::detail::checked_add(UINT64_MAX, 1, out));
    CHECK(bb::dtype_size(bb::dtype::f32) == 4);
    CHECK(bb::dtype_size(bb::dtype::f16) == 2);
    CHECK(bb::dtype_size(bb::dtype::bf16) == 2);
    CHECK(bb::dtype_size(bb::dtype::i8) == 1);
    CHECK(bb::dtype_size(bb::dtype::i32) == 4);
    CHECK(bb::is_pow2(64));
    CHECK_FALSE(bb::is_pow2(0));
    CHECK_FALSE(bb::is_pow2(48));

    using bertlet::detail::valid_utf8;
    CHECK(valid_utf8("", 0));
    CHECK(valid_utf8("abc", 3));
    CHECK(valid_utf8("\xC3\xA9", 2));
    CHECK(valid_utf8("\xE2\x9C\x93", 3));
    CHECK(valid_utf8("\xF0\x9F\x98\x80", 4));
    CHECK(valid_utf8("\xF4\x8F\xBF\xBF", 4));          // U+10FFFF
    CHECK_FALSE(valid_utf8("\xC3", 1));                // truncated
    CHECK_FALSE(valid_utf8("\xC0\x80", 2));            // overlong NUL
    CHECK_FALSE(valid_utf8("\xE0\x80\xAF", 3));        // overlong
    CHECK_FALSE(valid_utf8("\xED\xA0\x80", 3));        // surrogate
    CHECK_FALSE(valid_utf8("\xF4\x90\x80\x80", 4));    // > U+10FFFF
    CHECK_FALSE(valid_utf8("\xFF", 1));
    CHECK_FALSE(valid_utf8("\x80", 1));
    CHECK_FALSE(valid_utf8("a\xE2\x9C", 3));
}

TEST_CASE("blob: Python-written tiny.bertlet parses and equals the C++ writer's bytes") {
    const bytes_t py = slurp(data_path("tiny.bertlet"));
    REQUIRE(py.size() > 88);
    CHECK(py.size() < 8192);
    const bytes_t cpp = tiny_writer().bytes(64);
    REQUIRE(cpp.size() == py.size());
    bool same = true;
    std::size_t first_diff = 0;
    for (std::size_t i = 0; i < py.size(); ++i)
        if (py[i] != cpp[i]) {
            same = false;
            first_diff = i;
            break;
        }
    CAPTURE(first_diff);
    CHECK(same);

    const bb::reader r = bb::reader::open(data_path("tiny.bertlet"));
    CHECK(r.source() == data_path("tiny.bertlet"));
    CHECK(r.version_major() == 1);
    CHECK(r.version_minor() == 0);
    CHECK(r.file_size() == py.size());
    CHECK(r.checksum() == peek<std::uint64_t>(py, py.size() - 8));
    CHECK(r.alignment() == 64);

    CHECK(r.get_str("general.architecture") == "bert");
    CHECK(r.get_str("general.name") == "tiny-test");
    CHECK(r.get_u64("bert.hidden_size") == 4);
    CHECK(r.get_i64("bert.hidden_size") == 4);  // U64 readable as I64 when it fits
    CHECK(r.get_i64("test.negative") == -42);
    CHECK(r.get_f64("bert.layer_norm_eps") == 1e-12);
    CHECK(r.get_bool("tokenizer.lowercase"));
    CHECK_FALSE(r.get_bool("tokenizer.strip_accents"));
    CHECK(r.get_str("test.unicode") == "h\xC3\xA9llo w\xC3\xB6rld \xE2\x9C\x93 \xF0\x9F\x98\x80");
    CHECK(r.get_str("test.empty").empty());
    const auto vocab = r.get_str_array("tokenizer.vocab");
    REQUIRE(vocab.size() == 8);
    CHECK(vocab[0] == "[PAD]");
    CHECK(vocab[5] == "##lo");
    CHECK(vocab[6] == "w\xC3\xB6rld");
    CHECK(vocab[7].empty());
    CHECK(r.array_size("tokenizer.vocab") == 8);
    CHECK(r.get_i64_array("test.i64s") ==
          std::vector<std::int64_t>{-1, 0, 1, std::int64_t{1} << 40, -(std::int64_t{1} << 62)});
    CHECK(r.get_f32_array("verify.embeddings") == std::vector<float>{0.5f, -1.25f, 3.0f, 0.001f});
    CHECK(r.get_u64("test.big_u64") == UINT64_MAX);
    CHECK(r.keys().size() == 13);
    CHECK(r.keys().front() == "general.architecture");
    CHECK(r.keys().back() == "test.big_u64");
    CHECK(r.type_of("tokenizer.vocab") == bb::value_type::arr_str);
    CHECK(r.type_of("test.negative") == bb::value_type::i64);

    REQUIRE(r.tensors().size() == 8);
    const bb::tensor_view& w = r.tensor("embeddings.word_embeddings.weight");
    CHECK(w.type == bb::dtype::f32);
    CHECK(w.ndim == 2);
    CHECK(w.dims[0] == 8);
    CHECK(w.dims[1] == 4);
    CHECK(w.dims[2] == 1);
    CHECK(w.dims[3] == 1);
    CHECK(w.numel() == 32);
    CHECK(w.nbytes == 128);
    CHECK(w.shape_str() == "(8,4)");
    const float* wf = w.as<float>();
    for (int i = 0; i < 32; ++i) CHECK(wf[i] == static_cast<float>(i) * 0.25f - 2.0f);
    CHECK(r.tensor("embeddings.LayerNorm.bias").shape_str() == "(4)");
    CHECK(r.tensor("test.4d").shape_str() == "(1,2,1,2)");
    const std::uint16_t* h = r.tensor("test.f16").as<std::uint16_t>();
    CHECK(h[0] == 0x3C00);
    CHECK(h[3] == 0x7BFF);
    CHECK(h[5] == 0x0001);
    const std::uint16_t* bf = r.tensor("test.bf16").as<std::uint16_t>();
    CHECK(bf[1] == bf16_bits(-2.5f));
    const bb::tensor_view& q = r.tensor("test.q");
    CHECK(q.quant == 1);
    CHECK(q.as<std::int8_t>()[0] == -127);
    CHECK(q.as<std::int8_t>()[1] == -116);
    CHECK(r.tensor("test.i32").as<std::int32_t>()[2] == -2147483647 - 1);
    for (const bb::tensor_view& t : r.tensors()) {
        CAPTURE(std::string(t.name));
        CHECK(reinterpret_cast<std::uintptr_t>(t.data) % 64 == 0);
        CHECK(t.offset % 64 == 0);
        CHECK(t.layout == 0);
    }
    CHECK(r.find("nope") == nullptr);
    CHECK(r.find("test.q.scale") != nullptr);
}

TEST_CASE("blob: writer -> reader round trip at every alignment") {
    for (std::uint32_t a : {16u, 32u, 64u, 128u, 4096u}) {
        CAPTURE(a);
        const bb::writer w = tiny_writer();
        const bb::encoded_blob e = w.encode(a);
        const bb::reader r = bb::reader::from_bytes(e.bytes);
        CHECK(r.alignment() == a);
        CHECK(r.source() == "<memory>");
        REQUIRE(r.tensors().size() == e.tensors.size());
        for (std::size_t i = 0; i < e.tensors.size(); ++i) {
            const bb::tensor_view& t = r.tensors()[i];
            CHECK(reinterpret_cast<std::uintptr_t>(t.data) % a == 0);
            CHECK(t.data == r.raw_data() + e.tensors[i].data);
            CHECK(std::memcmp(t.data, e.bytes.data() + e.tensors[i].data, t.nbytes) == 0);
        }
        CHECK(r.get_str_array("tokenizer.vocab").size() == 8);
        CHECK(r.data_offset() == e.data_offset);
        CHECK(r.data_size() == e.data_size);
    }
}

TEST_CASE("blob: round trip of every value kind and tensor byte") {
    bb::writer w;
    w.set_u64("u", 0).set_u64("u.max", UINT64_MAX).set_i64("i.min", INT64_MIN).set_i64("i.max", INT64_MAX);
    w.set_f64("f", -0.0).set_f64("f.big", 1.7976931348623157e308).set_f64("f.tiny", 4.9e-324);
    w.set_bool("t", true).set_bool("f.b", false);
    w.set_str("s", std::string("nul\0inside", 10));
    w.set_str_array("empty.arr", {});
    w.set_i64_array("empty.i64", {});
    w.set_f32_array("empty.f32", {});
    std::vector<std::string> many;
    for (int i = 0; i < 1000; ++i) many.push_back("tok" + std::to_string(i));
    w.set_str_array("many", many);
    w.set_u64("u", 7);  // replaces in place, keeps position
    std::vector<std::byte> payload(3 * 5 * 7 * 2 * 4);
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<std::byte>(i * 37 + 11);
    w.add_tensor("x", bb::dtype::f32, 0, 0, {3, 5, 7, 2}, payload.data(), payload.size());
    w.add_tensor("y", bb::dtype::i8, 0, 0, {1}, payload.data(), 1);
    const bb::reader r = bb::reader::from_bytes(w.bytes());
    CHECK(r.keys().front() == "u");
    CHECK(r.get_u64("u") == 7);
    CHECK(r.get_u64("u.max") == UINT64_MAX);
    CHECK(r.get_i64("i.min") == INT64_MIN);
    CHECK(r.get_i64("i.max") == INT64_MAX);
    CHECK(std::signbit(r.get_f64("f")));
    CHECK(r.get_f64("f.big") == 1.7976931348623157e308);
    CHECK(r.get_f64("f.tiny") == 4.9e-324);
    CHECK(r.get_bool("t"));
    CHECK_FALSE(r.get_bool("f.b"));
    CHECK(r.get_str("s") == std::string_view("nul\0inside", 10));
    CHECK(r.get_str_array("empty.arr").empty());
    CHECK(r.get_i64_array("empty.i64").empty());
    CHECK(r.get_f32_array("empty.f32").empty());
    CHECK(r.array_size("empty.f32") == 0);
    const auto m = r.get_str_array("many");
    REQUIRE(m.size() == 1000);
    CHECK(m[999] == "tok999");
    const bb::tensor_view& x = r.tensor("x");
    CHECK(x.ndim == 4);
    CHECK(x.numel() == 210);
    CHECK(x.shape_str() == "(3,5,7,2)");
    CHECK(std::memcmp(x.data, payload.data(), payload.size()) == 0);
    CHECK(std::to_integer<int>(r.tensor("y").data[0]) == std::to_integer<int>(payload[0]));
}

TEST_CASE("blob: lookups throw clear model_errors") {
    const bb::reader r = bb::reader::from_bytes(tiny_writer().bytes());
    CHECK_THROWS_WITH_AS(r.get_u64("bert.nope"), doctest::Contains("[bertlet.model.200]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_u64("bert.nope"), doctest::Contains("'bert.nope'"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.type_of("bert.nope"), doctest::Contains("[bertlet.model.200]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_u64("general.name"), doctest::Contains("[bertlet.model.201]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_u64("general.name"), doctest::Contains("'general.name' has type STR, expected U64"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_u64("test.negative"), doctest::Contains("[bertlet.model.201]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_i64("test.big_u64"), doctest::Contains("[bertlet.model.201]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_f64("bert.hidden_size"), doctest::Contains("[bertlet.model.201]"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_bool("general.name"), doctest::Contains("[bertlet.model.201]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_str("tokenizer.vocab"), doctest::Contains("ARR_STR, expected STR"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_str_array("general.name"), doctest::Contains("[bertlet.model.201]"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_i64_array("verify.embeddings"), doctest::Contains("[bertlet.model.201]"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.get_f32_array("test.i64s"), doctest::Contains("[bertlet.model.201]"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.array_size("general.name"), doctest::Contains("[bertlet.model.201]"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.tensor("pooler.dense.weight"),
                         doctest::Contains("[bertlet.model.203] tensor 'pooler.dense.weight' not found in <memory>"),
                         bertlet::model_error);
    const bb::tensor_view& w = r.tensor("embeddings.word_embeddings.weight");
    CHECK_THROWS_WITH_AS(w.as<std::int8_t>(), doctest::Contains("[bertlet.model.205]"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(w.as<std::uint16_t>(), doctest::Contains("has dtype f32"), bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.tensor("test.q").as<float>(), doctest::Contains("[bertlet.model.205]"),
                         bertlet::model_error);
    CHECK_THROWS_WITH_AS(r.tensor("test.i32").as<float>(), doctest::Contains("'test.i32'"), bertlet::model_error);
}

TEST_CASE("blob: reader is movable and views survive the move") {
    bb::reader r = bb::reader::from_bytes(tiny_writer().bytes());
    const bb::tensor_view* t = r.find("test.4d");
    const std::string_view name = r.get_str("general.name");
    bb::reader r2 = std::move(r);
    CHECK(r2.find("test.4d") == t);
    CHECK(name == "tiny-test");
    CHECK(r2.tensor("test.4d").as<float>()[3] == 4.0f);
    CHECK(r2.tensor("test.4d").source == "<memory>");
}

TEST_CASE("blob: writer write_file + reader::open, checksum off") {
    const std::string path = "/tmp/bertlet_test_blob_roundtrip.bertlet";
    tiny_writer().write_file(path);
    bb::load_options o;
    o.check_checksum = false;
    const bb::reader r = bb::reader::open(path, o);
    CHECK(r.source() == path);
    CHECK(r.get_u64("bert.hidden_size") == 4);
    CHECK(reinterpret_cast<std::uintptr_t>(r.raw_data()) % 4096 == 0);
    std::remove(path.c_str());
}

TEST_CASE("blob: from_bytes copies misaligned input into an aligned buffer") {
    const bytes_t b = tiny_writer().bytes();
    const bb::reader r = bb::reader::from_bytes(b);
    for (const bb::tensor_view& t : r.tensors()) CHECK(reinterpret_cast<std::uintptr_t>(t.data) % 64 == 0);
}

TEST_CASE("blob: the writer validates like blob.py") {
    bb::writer w;
    CHECK_THROWS_AS(w.bytes(), bertlet::blob_error);  // no tensors
    w.add_f32("a", {2}, {1, 2});
    CHECK_THROWS_WITH_AS(w.bytes(48), doctest::Contains("[bertlet.blob.105]"), bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.bytes(8), doctest::Contains("[bertlet.blob.105]"), bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.set_f64("x", NAN), doctest::Contains("[bertlet.blob.110]"), bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.set_f32_array("x", {1.0f, INFINITY}), doctest::Contains("[bertlet.blob.110]"),
                         bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.set_str("", "v"), doctest::Contains("[bertlet.blob.109]"), bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.set_str("k", "\xFF"), doctest::Contains("[bertlet.blob.109]"), bertlet::blob_error);
    const float f[2] = {1, 2};
    CHECK_THROWS_WITH_AS(w.add_tensor("b", bb::dtype::f32, 0, 0, {3}, f, 8), doctest::Contains("[bertlet.blob.111]"),
                         bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.add_tensor("b", bb::dtype::f32, 0, 0, {}, f, 4), doctest::Contains("[bertlet.blob.111]"),
                         bertlet::blob_error);
    CHECK_THROWS_WITH_AS(w.add_tensor("", bb::dtype::f32, 0, 0, {1}, f, 4), doctest::Contains("[bertlet.blob.109]"),
                         bertlet::blob_error);
    w.add_f32("a", {1}, {1});
    CHECK_THROWS_WITH_AS(w.bytes(), doctest::Contains("[bertlet.blob.113]"), bertlet::blob_error);
}
