// Tokenizer tests: HF-generated edge cases (tests/data/tokenizer_edge_cases.jsonl, made by
// tools/bertlet_tools/tokenizer_goldens.py), truncation at the limits, huge inputs, invalid UTF-8, API contracts.
#include <doctest/doctest.h>

#include <bertlet/text/tokenizer.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

const std::string vocab_path = std::string(BERTLET_MODELS_DIR) + "/src/all-MiniLM-L6-v2/vocab.txt";

// ---- a minimal JSON reader for the flat objects of the edge-case file ------------------------------------------
struct jvalue {
    enum kind { string, number, boolean, array } k = number;
    std::string s;
    long long n = 0;
    bool b = false;
    std::vector<long long> a;
};

struct jparser {
    const std::string& t;
    std::size_t i = 0;
    void ws() {
        while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\r' || t[i] == '\n')) ++i;
    }
    void expect(char c) {
        ws();
        REQUIRE(i < t.size());
        REQUIRE(t[i] == c);
        ++i;
    }
    unsigned hex4() {
        REQUIRE(i + 4 <= t.size());
        const unsigned v = static_cast<unsigned>(std::stoul(t.substr(i, 4), nullptr, 16));
        i += 4;
        return v;
    }
    std::string str() {
        expect('"');
        std::string s;
        while (true) {
            REQUIRE(i < t.size());
            const char c = t[i++];
            if (c == '"') break;
            if (c != '\\') {
                s += c;
                continue;
            }
            const char e = t[i++];
            switch (e) {
                case 'n': s += '\n'; break;
                case 't': s += '\t'; break;
                case 'r': s += '\r'; break;
                case 'b': s += '\b'; break;
                case 'f': s += '\f'; break;
                case 'u': {
                    char32_t cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00) {
                        REQUIRE(t.compare(i, 2, "\\u") == 0);
                        i += 2;
                        const char32_t lo = hex4();
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    }
                    char buf[4];
                    s.append(buf, bertlet::detail::utf8_encode(cp, buf));
                    break;
                }
                default: s += e; break;  // \" \\ \/
            }
        }
        return s;
    }
    long long num() {
        ws();
        std::size_t used = 0;
        const long long v = std::stoll(t.substr(i, 24), &used);
        i += used;
        return v;
    }
    jvalue value() {
        ws();
        jvalue v;
        if (t[i] == '"') {
            v.k = jvalue::string;
            v.s = str();
        } else if (t.compare(i, 4, "true") == 0) {
            v.k = jvalue::boolean;
            v.b = true;
            i += 4;
        } else if (t.compare(i, 5, "false") == 0) {
            v.k = jvalue::boolean;
            i += 5;
        } else if (t[i] == '[') {
            v.k = jvalue::array;
            ++i;
            ws();
            if (t[i] == ']') {
                ++i;
                return v;
            }
            while (true) {
                v.a.push_back(num());
                ws();
                if (t[i++] == ']') break;
            }
        } else {
            v.n = num();
        }
        return v;
    }
    std::map<std::string, jvalue> object() {
        std::map<std::string, jvalue> m;
        expect('{');
        while (true) {
            const std::string k = str();
            expect(':');
            m[k] = value();
            ws();
            if (t[i++] == '}') break;
        }
        return m;
    }
};

std::string unhex(const std::string& h) {
    std::string out;
    for (std::size_t i = 0; i + 1 < h.size(); i += 2)
        out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
    return out;
}

std::vector<std::int32_t> to_ids(const std::vector<long long>& v) { return {v.begin(), v.end()}; }

const bertlet::wordpiece_tokenizer& model_tokenizer(std::size_t max_length = 256) {
    static std::map<std::size_t, std::unique_ptr<bertlet::wordpiece_tokenizer>> cache;
    auto& p = cache[max_length];
    if (!p) {
        bertlet::tokenizer_config cfg;
        cfg.max_length = max_length;
        p = std::make_unique<bertlet::wordpiece_tokenizer>(bertlet::wordpiece_tokenizer::from_vocab_file(vocab_path, cfg));
    }
    return *p;
}

std::string repeat(const std::string& s, std::size_t n) {
    std::string r;
    r.reserve(s.size() * n);
    for (std::size_t i = 0; i < n; ++i) r += s;
    return r;
}

std::vector<std::int32_t> expected_repeat(std::int32_t id, std::size_t n) {
    std::vector<std::int32_t> v{101};
    v.insert(v.end(), n, id);
    v.push_back(102);
    return v;
}

}  // namespace

TEST_CASE("tokenizer: edge cases generated from Hugging Face BertTokenizerFast") {
    std::ifstream in(std::string(BERTLET_TEST_DATA) + "/tokenizer_edge_cases.jsonl");
    REQUIRE_MESSAGE(in, "tests/data/tokenizer_edge_cases.jsonl is missing");
    std::map<std::string, std::unique_ptr<bertlet::wordpiece_tokenizer>> toks;
    std::string line;
    int n = 0, invalid = 0, pairs = 0;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        jparser jp{line};
        auto c = jp.object();
        bertlet::tokenizer_config cfg;
        cfg.lowercase = c.at("lowercase").b;
        cfg.strip_accents = c.at("strip_accents").b;
        cfg.handle_chinese_chars = c.at("handle_chinese_chars").b;
        cfg.clean_text = c.at("clean_text").b;
        cfg.max_length = static_cast<std::size_t>(c.at("max_length").n);
        const std::string key = std::to_string(cfg.lowercase) + std::to_string(cfg.strip_accents) +
                                std::to_string(cfg.handle_chinese_chars) + std::to_string(cfg.clean_text) + "/" +
                                std::to_string(cfg.max_length);
        auto& tok = toks[key];
        if (!tok)
            tok = std::make_unique<bertlet::wordpiece_tokenizer>(bertlet::wordpiece_tokenizer::from_vocab_file(vocab_path, cfg));
        const std::string text = c.count("text_hex") ? unhex(c.at("text_hex").s) : c.at("text").s;
        INFO("case: ", c.at("name").s);
        bertlet::encoding enc;
        if (c.count("text_pair")) {
            ++pairs;
            tok->encode_pair(text, c.at("text_pair").s, enc);
        } else {
            tok->encode(text, enc);
        }
        CHECK(enc.ids == to_ids(c.at("ids").a));
        CHECK(enc.type_ids == to_ids(c.at("type_ids").a));
        if (c.count("invalid_offset")) {
            ++invalid;
            // replace policy == HF on the decoded text (checked above); strict reports the first bad byte
            CHECK(tok->encode(c.at("text").s).ids == enc.ids);
            bertlet::tokenizer_config strict = cfg;
            strict.on_invalid_utf8 = bertlet::utf8_policy::strict;
            const auto st = bertlet::wordpiece_tokenizer::from_vocab_file(vocab_path, strict);
            const std::string msg = "[bertlet.text.300] invalid UTF-8 at byte offset " +
                                    std::to_string(c.at("invalid_offset").n);
            CHECK_THROWS_WITH_AS(st.encode(text), msg.c_str(), bertlet::text_error);
            CHECK_THROWS_WITH_AS(st.encode_pair("ok", text), (msg + " (second text)").c_str(), bertlet::text_error);
            try {
                st.encode(text);
            } catch (const bertlet::text_error& e) {
                CHECK(e.id() == bertlet::errc::invalid_utf8);
            }
        }
        ++n;
    }
    MESSAGE(n << " edge cases (" << pairs << " pairs, " << invalid << " invalid UTF-8)");
    CHECK(n >= 300);
    CHECK(invalid >= 15);
}

TEST_CASE("tokenizer: truncation at max_length 512 and 256") {
    const std::int32_t hello = 7592;
    for (std::size_t ml : {std::size_t(512), std::size_t(256)}) {
        const auto& tok = model_tokenizer(ml);
        REQUIRE(tok.token_to_id("hello") == hello);
        // texts giving ml-1, ml, ml+1 tokens with [CLS]/[SEP]; and 10^6 tokens
        for (std::size_t pieces : {ml - 3, ml - 2, ml - 1, std::size_t(1000000)}) {
            INFO("max_length ", ml, " pieces ", pieces);
            const auto e = tok.encode(repeat("hello ", pieces));
            CHECK(e.ids == expected_repeat(hello, std::min(pieces, ml - 2)));
            CHECK(e.type_ids == std::vector<std::int32_t>(e.ids.size(), 0));
            CHECK(e.truncated == (pieces > ml - 2));
        }
    }
}

TEST_CASE("tokenizer: huge inputs are bounded") {
    const auto& tok = model_tokenizer(256);
    using clock = std::chrono::steady_clock;
    {
        const std::string word(10'000'000, 'a');
        const auto t0 = clock::now();
        const auto e = tok.encode(word);
        const double s = std::chrono::duration<double>(clock::now() - t0).count();
        CHECK(e.ids == std::vector<std::int32_t>{101, 100, 102});  // what HF gives
        MESSAGE("10 MB word: " << s * 1e3 << " ms");
        CHECK(s < 2.0);
        // a 10 MB word then more words: the word is one [UNK]
        const auto e2 = tok.encode(word + " hello");
        CHECK(e2.ids == std::vector<std::int32_t>{101, 100, 7592, 102});
    }
    {
        const std::string text = repeat("hello ", 1'000'000);
        const auto t0 = clock::now();
        const auto e = tok.encode(text);
        const double s = std::chrono::duration<double>(clock::now() - t0).count();
        CHECK(e.size() == 256);
        MESSAGE("10^6-token text: " << s * 1e3 << " ms");
        CHECK(s < 2.0);
        // pairs: both sides over the budget, L = 253 odd: the longer side gets 127, the shorter 126
        const std::string longer = text + "hello";
        const auto t1 = clock::now();
        const auto p1 = tok.encode_pair(text, longer);
        const auto p2 = tok.encode_pair(longer, text);
        const auto p3 = tok.encode_pair(text, text);
        const double s2 = std::chrono::duration<double>(clock::now() - t1).count();
        MESSAGE("3 pairs of 10^6-token texts: " << s2 * 1e3 << " ms");
        auto count_b = [](const bertlet::encoding& e) {
            return static_cast<std::size_t>(std::count(e.type_ids.begin(), e.type_ids.end(), 1)) - 1;
        };
        CHECK(p1.size() == 256);
        CHECK(count_b(p1) == 127);
        CHECK(count_b(p2) == 126);
        CHECK(count_b(p3) == 127);  // tie: the second gets the extra token
        CHECK(p1.truncated);
        // the other side short: only the long one is cut
        const auto p4 = tok.encode_pair("hi there", text);
        CHECK(count_b(p4) == 253 - 2);
        const auto p5 = tok.encode_pair(std::string(10'000'000, 'a'), text);
        CHECK(p5.ids[1] == 100);
        CHECK(count_b(p5) == 253 - 1);
    }
}

TEST_CASE("tokenizer: empty and whitespace-only input") {
    const auto& tok = model_tokenizer();
    for (const char* s : {"", " ", "\t\n\r", "\xE3\x80\x80\xC2\xA0", "\xE2\x80\x8B", "\x01\x02"}) {
        INFO(s);
        const auto e = tok.encode(s);
        CHECK(e.ids == std::vector<std::int32_t>{101, 102});
        CHECK(e.type_ids == std::vector<std::int32_t>{0, 0});
        CHECK_FALSE(e.truncated);
    }
    const auto p = tok.encode_pair("", "");
    CHECK(p.ids == std::vector<std::int32_t>{101, 102, 102});
    CHECK(p.type_ids == std::vector<std::int32_t>{0, 0, 1});
}

TEST_CASE("tokenizer: api") {
    const auto& tok = model_tokenizer();
    CHECK(tok.vocab_size() == 30522);
    CHECK(tok.token_to_id("[CLS]") == 101);
    CHECK(tok.token_to_id("##ing") == 2075);
    CHECK_FALSE(tok.token_to_id("not-a-token-xyz").has_value());
    CHECK(tok.id_to_token(102) == "[SEP]");
    CHECK_THROWS_AS(tok.id_to_token(30522), bertlet::input_error);
    CHECK_THROWS_AS(tok.id_to_token(-1), bertlet::input_error);
    CHECK(tok.tokenize("Unaffable tokenization!") ==
          std::vector<std::string>{"una", "##ffa", "##ble", "token", "##ization", "!"});
    CHECK(tok.tokenize("a [SEP] b") == std::vector<std::string>{"a", "[SEP]", "b"});
    CHECK(tok.config().max_length == 256);

    // encoding reuse gives identical results and does not keep stale state
    bertlet::encoding e;
    tok.encode_pair("first text is here", "second", e);
    tok.encode("hello", e);
    CHECK(e.ids == std::vector<std::int32_t>{101, 7592, 102});
    CHECK(e.type_ids == std::vector<std::int32_t>{0, 0, 0});

    CHECK_THROWS_AS(bertlet::wordpiece_tokenizer::from_vocab_file("/nonexistent/vocab.txt", {}), bertlet::io_error);

    bertlet::tokenizer_config cfg;
    cfg.unk_id = 0;
    cfg.cls_id = 1;
    cfg.sep_id = 2;
    cfg.pad_id = 0;
    CHECK_THROWS_AS(bertlet::wordpiece_tokenizer({"[UNK]", "[CLS]", "[SEP]", "a", "a"}, cfg), bertlet::model_error);
    cfg.sep_id = 5;
    CHECK_THROWS_AS(bertlet::wordpiece_tokenizer({"[UNK]", "[CLS]", "[SEP]", "a"}, cfg), bertlet::model_error);
    cfg.sep_id = 2;
    cfg.max_length = 2;
    const bertlet::wordpiece_tokenizer t2({"[UNK]", "[CLS]", "[SEP]", "a"}, cfg);
    CHECK(t2.encode("a a").ids == std::vector<std::int32_t>{1, 2});
    CHECK_THROWS_AS(t2.encode_pair("a", "a"), bertlet::input_error);
}

TEST_CASE("tokenizer: custom vocabulary, prefix and cased settings") {
    bertlet::tokenizer_config cfg;
    cfg.lowercase = false;
    cfg.strip_accents = false;
    cfg.unk_id = 0;
    cfg.cls_id = 1;
    cfg.sep_id = 2;
    cfg.pad_id = 3;
    cfg.continuing_subword_prefix = "@@";
    cfg.max_input_chars_per_word = 5;
    const bertlet::wordpiece_tokenizer tok({"[UNK]", "[CLS]", "[SEP]", "[PAD]", "Ab", "@@c", "@@cd", "ab", "Ä", ",", "@@@"},
                                           cfg);
    CHECK(tok.tokenize("Abcd Abc ab, Ä abc Abcde Abcdcd") ==
          std::vector<std::string>{"Ab", "@@cd", "Ab", "@@c", "ab", ",", "Ä", "ab", "@@c", "[UNK]", "[UNK]"});
    CHECK(tok.tokenize("Ab@") == std::vector<std::string>{"Ab", "[UNK]"});  // '@' is punctuation: its own word
    CHECK(tok.encode("[PAD]ab").ids == std::vector<std::int32_t>{1, 3, 7, 2});
    cfg.match_special_tokens = false;
    const bertlet::wordpiece_tokenizer tok2({"[UNK]", "[CLS]", "[SEP]", "[PAD]", "ab"}, cfg);
    CHECK(tok2.encode("[PAD]ab").ids == std::vector<std::int32_t>{1, 0, 0, 0, 4, 2});
}

TEST_CASE("tokenizer: utf8 decoder maximal subparts") {
    using bertlet::detail::utf8_decode;
    auto steps = [](const std::string& s) {
        std::vector<std::pair<char32_t, unsigned>> r;
        const auto* p = reinterpret_cast<const unsigned char*>(s.data());
        const auto* e = p + s.size();
        while (p < e) {
            const auto st = utf8_decode(p, e);
            r.emplace_back(st.cp, st.len);
            p += st.len;
        }
        return r;
    };
    using v = std::vector<std::pair<char32_t, unsigned>>;
    CHECK(steps("\xF0\x9F\x98\x80") == v{{0x1F600, 4}});
    CHECK(steps("\xF0\x9F\x98x") == v{{0xFFFD, 3}, {'x', 1}});
    CHECK(steps("\xE0\x80\xAF") == v{{0xFFFD, 1}, {0xFFFD, 1}, {0xFFFD, 1}});
    CHECK(steps("\xED\xA0\x80") == v{{0xFFFD, 1}, {0xFFFD, 1}, {0xFFFD, 1}});
    CHECK(steps("\xF4\x8F\xBF\xBF") == v{{0x10FFFF, 4}});
    CHECK(steps("\xF4\x90\x80\x80") == v{{0xFFFD, 1}, {0xFFFD, 1}, {0xFFFD, 1}, {0xFFFD, 1}});
    CHECK(steps("\xC3") == v{{0xFFFD, 1}});
    CHECK(bertlet::detail::utf8_find_invalid("abcdefghijklmnop\xC3\xA9xyz\x80") == 21);
    CHECK(bertlet::detail::utf8_find_invalid("abcdefghijklmnop\xC3\xA9xyz") == std::string_view::npos);
}

TEST_CASE("tokenizer: concurrent encode") {
    const auto& tok = model_tokenizer();
    const std::vector<std::string> texts = {"Hello, world!", "Café 你好 İstanbul 👍🏽", repeat("token ", 300),
                                            "a [SEP] b", std::string(300, 'x')};
    std::vector<bertlet::encoding> want;
    for (const auto& t : texts) want.push_back(tok.encode(t));
    std::vector<int> bad(4, 0);
    std::vector<std::thread> th;
    for (int k = 0; k < 4; ++k)
        th.emplace_back([&, k] {
            bertlet::encoding e;
            for (int r = 0; r < 200; ++r)
                for (std::size_t i = 0; i < texts.size(); ++i) {
                    tok.encode(texts[i], e);
                    if (e.ids != want[i].ids) ++bad[static_cast<std::size_t>(k)];
                }
        });
    for (auto& t : th) t.join();
    CHECK(bad == std::vector<int>(4, 0));
}
