// bertlet — UTF-8 decoding with an explicit invalid-input policy.
//
// Well-formed UTF-8 is exactly Table 3-7 of the Unicode Standard:
//
//   U+0000..U+007F     00..7F
//   U+0080..U+07FF     C2..DF 80..BF
//   U+0800..U+0FFF     E0     A0..BF 80..BF
//   U+1000..U+CFFF     E1..EC 80..BF 80..BF
//   U+D000..U+D7FF     ED     80..9F 80..BF          (no UTF-16 surrogates)
//   U+E000..U+FFFF     EE..EF 80..BF 80..BF
//   U+10000..U+3FFFF   F0     90..BF 80..BF 80..BF   (no overlongs)
//   U+40000..U+FFFFF   F1..F3 80..BF 80..BF 80..BF
//   U+100000..U+10FFFF F4     80..8F 80..BF 80..BF   (nothing above U+10FFFF)
//
// Invalid-UTF-8 policy (bertlet::utf8_policy, see tokenizer.hpp):
//   * replace: every *maximal subpart* of an ill-formed subsequence becomes one U+FFFD — the "substitution of maximal
//     subparts" practice recommended by Unicode (ch. 3, U+FFFD substitution), which is also what Python's
//     bytes.decode("utf-8", "replace") and the WHATWG decoder do. A maximal subpart is the longest prefix of a
//     well-formed sequence starting at the current byte (at least one byte). So "\xE2\x82" + "A" decodes to
//     U+FFFD 'A', and "\xC0\xAF" (overlong) to U+FFFD U+FFFD.
//   * strict: the first ill-formed byte is reported (its offset), nothing is substituted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace bertlet::detail {

inline constexpr char32_t replacement_char = 0xFFFD;

// Result of decoding one code point: `cp` and how many bytes were consumed (>= 1). When `valid` is false, `cp` is
// U+FFFD and `len` is the length of the maximal subpart that was replaced.
struct utf8_step {
    char32_t cp;
    std::uint32_t len;
    bool valid;
};

// Decode the code point starting at p (p < end).
inline utf8_step utf8_decode(const unsigned char* p, const unsigned char* end) noexcept {
    const unsigned b0 = p[0];
    if (b0 < 0x80) return {b0, 1, true};
    std::size_t avail = static_cast<std::size_t>(end - p);
    unsigned need;       // continuation bytes
    unsigned lo = 0x80;  // allowed range of the second byte
    unsigned hi = 0xBF;
    char32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
        cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        cp = b0 & 0x0F;
        if (b0 == 0xE0) lo = 0xA0;
        else if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        cp = b0 & 0x07;
        if (b0 == 0xF0) lo = 0x90;
        else if (b0 == 0xF4) hi = 0x8F;
    } else {
        return {replacement_char, 1, false};  // 80..C1, F5..FF can never start a sequence
    }
    std::uint32_t i = 1;
    for (; i <= need; ++i) {
        if (i >= avail) return {replacement_char, i, false};  // truncated at end of input
        const unsigned b = p[i];
        const unsigned l = (i == 1) ? lo : 0x80u;
        const unsigned h = (i == 1) ? hi : 0xBFu;
        if (b < l || b > h) return {replacement_char, i, false};
        cp = (cp << 6) | (b & 0x3F);
    }
    return {cp, need + 1, true};
}

// Offset of the first ill-formed byte in s, or npos if s is valid UTF-8.
inline std::size_t utf8_find_invalid(std::string_view s, std::size_t from = 0) noexcept {
    const auto* base = reinterpret_cast<const unsigned char*>(s.data());
    const auto* end = base + s.size();
    const auto* p = base + from;
    while (p < end) {
        // ASCII fast path, 8 bytes at a time.
        while (end - p >= 8) {
            std::uint64_t w;
            std::memcpy(&w, p, 8);
            if (w & 0x8080808080808080ull) break;
            p += 8;
        }
        if (p >= end) break;
        if (*p < 0x80) {
            ++p;
            continue;
        }
        const utf8_step st = utf8_decode(p, end);
        if (!st.valid) return static_cast<std::size_t>(p - base);
        p += st.len;
    }
    return std::string_view::npos;
}

// Append the UTF-8 encoding of a valid scalar value to `out` (a char buffer with room for 4 bytes); returns bytes.
inline unsigned utf8_encode(char32_t cp, char* out) noexcept {
    if (cp < 0x80) {
        out[0] = static_cast<char>(cp);
        return 1;
    }
    if (cp < 0x800) {
        out[0] = static_cast<char>(0xC0 | (cp >> 6));
        out[1] = static_cast<char>(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = static_cast<char>(0xE0 | (cp >> 12));
        out[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out[2] = static_cast<char>(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = static_cast<char>(0xF0 | (cp >> 18));
    out[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out[3] = static_cast<char>(0x80 | (cp & 0x3F));
    return 4;
}

}  // namespace bertlet::detail
