// Shared plumbing for the example CLIs: argument parsing, input lines (plain or JSON lines), JSON output.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cli {

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct options {
    std::string model;
    bool jsonl = false;
    bool verify = false;
    std::size_t batch = 32;
    std::size_t threads = 1;
    std::string arch;                 // empty: the best path the CPU has (or $BERTLET_FORCE_ARCH)
    bool fp32_attention = false;      // --fp32-attention (int8 models: neither int8 nor bf16 attention)
    bool int8_attention = false;      // --int8-attention (int8 models: int8 attention; the default where it exists)
    bool bf16_attention = false;      // --bf16-attention (int8 models: bf16 attention even where int8 exists)
    std::vector<std::string> texts;  // positional
};

/// One input record: a text and, for pair tasks, a second text.
struct record {
    std::string text;
    std::optional<std::string> text_pair;
};

inline void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

/// Parses a flat JSON object whose values are strings (other value types are skipped if they are numbers,
/// booleans or null). Throws std::runtime_error naming the column on malformed input.
class json_line {
public:
    explicit json_line(const std::string& s) : s_(s) {}

    std::vector<std::pair<std::string, std::optional<std::string>>> parse_object() {
        std::vector<std::pair<std::string, std::optional<std::string>>> out;
        ws();
        expect('{');
        ws();
        if (peek() == '}') {
            ++i_;
            finish();
            return out;
        }
        for (;;) {
            ws();
            std::string key = parse_string();
            ws();
            expect(':');
            ws();
            std::optional<std::string> value;
            if (peek() == '"') {
                value = parse_string();
            } else {
                skip_scalar();
            }
            out.emplace_back(std::move(key), std::move(value));
            ws();
            if (peek() == ',') {
                ++i_;
                continue;
            }
            expect('}');
            finish();
            return out;
        }
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw std::runtime_error("invalid JSON at column " + std::to_string(i_ + 1) + ": " + what);
    }
    char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
    void ws() {
        while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) ++i_;
    }
    void expect(char c) {
        if (peek() != c || i_ >= s_.size()) fail(std::string("expected '") + c + "'");
        ++i_;
    }
    void finish() {
        ws();
        if (i_ != s_.size()) fail("trailing characters after the object");
    }
    void skip_scalar() {
        const std::size_t start = i_;
        while (i_ < s_.size() && s_[i_] != ',' && s_[i_] != '}' && s_[i_] != ' ') ++i_;
        const std::string tok = s_.substr(start, i_ - start);
        if (tok.empty() || tok == "[" || tok == "{") fail("expected a string, number, boolean or null");
        if (!(tok == "true" || tok == "false" || tok == "null")) {
            char* end = nullptr;
            std::strtod(tok.c_str(), &end);
            if (!end || *end != '\0') fail("unsupported value '" + tok + "'");
        }
    }
    unsigned hex4() {
        if (i_ + 4 > s_.size()) fail("truncated \\u escape");
        unsigned v = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = s_[i_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
            else fail("bad hex digit in \\u escape");
        }
        return v;
    }
    std::string parse_string() {
        expect('"');
        std::string out;
        for (;;) {
            if (i_ >= s_.size()) fail("unterminated string");
            const char c = s_[i_++];
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= s_.size()) fail("unterminated escape");
            const char e = s_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    unsigned cp = hex4();
                    if (cp >= 0xD800 && cp <= 0xDBFF) {
                        if (i_ + 6 <= s_.size() && s_[i_] == '\\' && s_[i_ + 1] == 'u') {
                            i_ += 2;
                            const unsigned lo = hex4();
                            if (lo >= 0xDC00 && lo <= 0xDFFF) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                            else fail("unpaired surrogate in \\u escape");
                        } else {
                            fail("unpaired surrogate in \\u escape");
                        }
                    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                        fail("unpaired surrogate in \\u escape");
                    }
                    append_utf8(out, cp);
                    break;
                }
                default: fail(std::string("bad escape \\") + e);
            }
        }
    }
    const std::string& s_;
    std::size_t i_ = 0;
};

/// JSON string literal (UTF-8 passed through; control characters and invalid bytes escaped).
inline void write_json_string(std::string& out, std::string_view s) {
    out += '"';
    for (std::size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20 || c == 0x7F) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    out += '"';
}

inline void write_float(std::string& out, float v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(v));
    out += buf;
}

/// Reads the next input record: one line of plain text, or (jsonl) one JSON object with "text" and optionally
/// "text_pair". For plain pair input, `tab_pair` splits the line at its first tab. Returns false at end of input.
inline bool next_record(std::istream& in, bool jsonl, bool tab_pair, record& r, std::size_t& line_no) {
    std::string line;
    if (!std::getline(in, line)) return false;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    r.text_pair.reset();
    if (jsonl) {
        json_line p(line);
        std::optional<std::string> text;
        try {
            for (auto& kv : p.parse_object()) {
                if (kv.first == "text") text = std::move(kv.second);
                else if (kv.first == "text_pair") r.text_pair = std::move(kv.second);
            }
        } catch (const std::exception& e) {
            throw std::runtime_error("stdin line " + std::to_string(line_no) + ": " + e.what());
        }
        if (!text) throw std::runtime_error("stdin line " + std::to_string(line_no) + ": no string field \"text\"");
        r.text = std::move(*text);
    } else if (tab_pair) {
        const auto tab = line.find('\t');
        if (tab == std::string::npos)
            throw std::runtime_error("stdin line " + std::to_string(line_no) + ": expected two tab-separated texts");
        r.text = line.substr(0, tab);
        r.text_pair = line.substr(tab + 1);
    } else {
        r.text = std::move(line);
    }
    return true;
}

/// Parses the common flags. `extra` handles tool-specific flags (returns true if it consumed argv[i]).
template <class Extra>
options parse(int argc, char** argv, const char* usage, Extra&& extra) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&](const char* name) -> std::string {
            if (i + 1 >= argc) throw usage_error(std::string(name) + " needs a value");
            return argv[++i];
        };
        if (a == "-h" || a == "--help") {
            std::fputs(usage, stdout);
            std::exit(0);
        } else if (a == "--model" || a == "-m") {
            o.model = value("--model");
        } else if (a.rfind("--model=", 0) == 0) {
            o.model = a.substr(8);
        } else if (a == "--jsonl") {
            o.jsonl = true;
        } else if (a == "--verify") {
            o.verify = true;
        } else if (a == "--batch") {
            const std::string v = value("--batch");
            char* end = nullptr;
            const unsigned long n = std::strtoul(v.c_str(), &end, 10);
            if (!end || *end || n == 0 || n > 100000) throw usage_error("--batch must be a number in 1..100000");
            o.batch = n;
        } else if (a == "--threads") {
            const std::string v = value("--threads");
            char* end = nullptr;
            const unsigned long n = std::strtoul(v.c_str(), &end, 10);
            if (!end || *end || n == 0 || n > 1024) throw usage_error("--threads must be a number in 1..1024");
            o.threads = n;
        } else if (a == "--fp32-attention") {
            o.fp32_attention = true;
        } else if (a == "--int8-attention") {
            o.int8_attention = true;
        } else if (a == "--bf16-attention") {
            o.bf16_attention = true;
        } else if (a == "--arch") {
            o.arch = value("--arch");
            if (o.arch != "scalar" && o.arch != "avx2" && o.arch != "avx512" && o.arch != "neon")
                throw usage_error("--arch must be one of scalar, avx2, avx512, neon");
        } else if (extra(a, i, argc, argv)) {
            continue;
        } else if (a == "--") {
            for (++i; i < argc; ++i) o.texts.push_back(argv[i]);
        } else if (a.size() > 1 && a[0] == '-') {
            throw usage_error("unknown option " + a);
        } else {
            o.texts.push_back(a);
        }
    }
    if (o.model.empty()) {
        const char* env = std::getenv("BERTLET_MODEL");
        if (env && *env) o.model = env;
        else throw usage_error("--model FILE is required (or set BERTLET_MODEL)");
    }
    return o;
}

inline options parse(int argc, char** argv, const char* usage) {
    return parse(argc, argv, usage, [](const std::string&, int&, int, char**) { return false; });
}

/// Load options from the common flags (--verify, --threads, --arch).
template <class LoadOptions>
LoadOptions load_options_from(const options& o) {
    LoadOptions lo;
    lo.verify = o.verify;
    lo.threads = o.threads;
    lo.bf16_attention = !o.fp32_attention && !o.int8_attention;
    lo.int8_attention = !o.fp32_attention && !o.bf16_attention;
    if (o.arch == "scalar") lo.arch = bertlet::isa::scalar;
    else if (o.arch == "avx2") lo.arch = bertlet::isa::avx2;
    else if (o.arch == "avx512") lo.arch = bertlet::isa::avx512;
    else if (o.arch == "neon") lo.arch = bertlet::isa::neon;
    return lo;
}

/// Runs `body`, turning exceptions into a one-line reason on stderr and a non-zero exit code.
template <class Body>
int run(const char* tool, Body&& body) {
    try {
        return body();
    } catch (const usage_error& e) {
        std::fprintf(stderr, "%s: %s (see --help)\n", tool, e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s: error: %s\n", tool, e.what());
        return 1;
    }
}

}  // namespace cli
