// bertlet — constants, enums and byte-level helpers of the .bertlet blob format (docs/FORMAT.md).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "bertlet/blob/xxhash.hpp"

namespace bertlet::blob {

// ---- layout constants ---------------------------------------------------------------------------------------
inline constexpr unsigned char magic[8] = {'B', 'E', 'R', 'T', 'L', 'E', 'T', '\0'};
inline constexpr std::uint32_t format_version_major = 1;
inline constexpr std::uint32_t format_version_minor = 0;
inline constexpr std::uint64_t header_size = 80;
inline constexpr std::uint64_t checksum_size = 8;
inline constexpr std::uint64_t required_meta_offset = header_size;

inline constexpr std::uint64_t max_meta_size = 64ull << 20;    // 64 MiB
inline constexpr std::uint64_t max_table_size = 16ull << 20;   // 16 MiB
inline constexpr std::uint32_t min_tensor_count = 1;
inline constexpr std::uint32_t max_tensor_count = 65536;
inline constexpr std::uint64_t max_meta_count = 65536;
inline constexpr std::uint32_t min_key_len = 1;
inline constexpr std::uint32_t max_key_len = 256;
inline constexpr std::uint32_t max_string_len = 1u << 20;      // 1 MiB (STR values and each ARR_STR element)
inline constexpr std::uint32_t min_name_len = 1;
inline constexpr std::uint32_t max_name_len = 255;
inline constexpr std::uint32_t min_alignment = 16;
inline constexpr std::uint32_t max_alignment = 4096;
inline constexpr std::uint32_t default_alignment = 64;
inline constexpr std::uint32_t max_ndim = 4;

// Byte offsets of the header fields.
namespace hdr {
inline constexpr std::size_t magic = 0;
inline constexpr std::size_t version_major = 8;
inline constexpr std::size_t version_minor = 12;
inline constexpr std::size_t file_size = 16;
inline constexpr std::size_t meta_offset = 24;
inline constexpr std::size_t meta_size = 32;
inline constexpr std::size_t table_offset = 40;
inline constexpr std::size_t table_size = 48;
inline constexpr std::size_t data_offset = 56;
inline constexpr std::size_t data_size = 64;
inline constexpr std::size_t tensor_count = 72;
inline constexpr std::size_t alignment = 76;
}  // namespace hdr

// Smallest possible encodings, used to bound counts by the bytes that remain.
inline constexpr std::uint64_t min_meta_entry_size = 4 + 1 + 4 + 1;            // key len, 1-byte key, type, BOOL
inline constexpr std::uint64_t min_table_entry_size = 4 + 1 + 16 + 8 + 16;     // name len, name, 4×u32, 1 dim, offset+nbytes

// ---- enums --------------------------------------------------------------------------------------------------
enum class dtype : std::uint32_t { f32 = 0, f16 = 1, bf16 = 2, i8 = 3, i32 = 4 };
// packed_n16: a 2-D f32 weight [N, K] stored as ceil(N/16) panels of K x 16 floats (kernels/packed.hpp, FORMAT.md).
// s8p16k4: a 2-D i8 weight [N, K] (quant 1) packed for the int8 GEMM: N padded to 16, K to 4 (kernels/gemm_s8.hpp,
// docs/INT8.md); companions '<name>.scale' (f32) and '<name>.row_sum' (i32), both [ceil(N/16)*16].
enum class layout : std::uint32_t { row_major = 0, packed_n16 = 1, s8p16k4 = 2, bf16p16k2 = 3 };
enum class quant : std::uint32_t { none = 0, per_row_symmetric = 1 };
enum class value_type : std::uint32_t { u64 = 1, i64, f64, boolean, str, arr_str, arr_i64, arr_f32 };

inline constexpr bool dtype_known(std::uint32_t v) noexcept { return v <= 4; }
inline constexpr bool layout_known(std::uint32_t v) noexcept { return v <= 3; }
inline constexpr bool quant_known(std::uint32_t v) noexcept { return v <= 1; }
inline constexpr bool value_type_known(std::uint32_t v) noexcept { return v >= 1 && v <= 8; }

// Size in bytes of one element (0 for an unknown dtype).
inline constexpr std::uint64_t dtype_size(dtype t) noexcept {
    switch (t) {
        case dtype::f32: return 4;
        case dtype::f16: return 2;
        case dtype::bf16: return 2;
        case dtype::i8: return 1;
        case dtype::i32: return 4;
    }
    return 0;
}

inline constexpr const char* dtype_name(dtype t) noexcept {
    switch (t) {
        case dtype::f32: return "f32";
        case dtype::f16: return "f16";
        case dtype::bf16: return "bf16";
        case dtype::i8: return "i8";
        case dtype::i32: return "i32";
    }
    return "unknown";
}

inline constexpr const char* value_type_name(value_type t) noexcept {
    switch (t) {
        case value_type::u64: return "U64";
        case value_type::i64: return "I64";
        case value_type::f64: return "F64";
        case value_type::boolean: return "BOOL";
        case value_type::str: return "STR";
        case value_type::arr_str: return "ARR_STR";
        case value_type::arr_i64: return "ARR_I64";
        case value_type::arr_f32: return "ARR_F32";
    }
    return "unknown";
}

inline constexpr bool is_pow2(std::uint64_t x) noexcept { return x != 0 && (x & (x - 1)) == 0; }

// Round x up to a multiple of a (a > 0; no overflow check — see detail::checked_align_up).
inline constexpr std::uint64_t align_up(std::uint64_t x, std::uint64_t a) noexcept { return (x + a - 1) / a * a; }

}  // namespace bertlet::blob

namespace bertlet::detail {

// ---- checked arithmetic: return false on overflow -----------------------------------------------------------
inline bool checked_add(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return !__builtin_add_overflow(a, b, &out);
#else
    if (a > UINT64_MAX - b) return false;
    out = a + b;
    return true;
#endif
}

inline bool checked_mul(std::uint64_t a, std::uint64_t b, std::uint64_t& out) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return !__builtin_mul_overflow(a, b, &out);
#else
    if (a != 0 && b > UINT64_MAX / a) return false;
    out = a * b;
    return true;
#endif
}

/// nbytes a PACKED_N16 tensor must have: ceil(dims[0] / 16) * 16 * dims[1] * 4 (false on overflow).
inline bool packed_n16_nbytes(std::uint64_t n, std::uint64_t k, std::uint64_t& out) noexcept {
    std::uint64_t rows = 0;
    return checked_add(n, 15, rows) && checked_mul(rows / 16 * 16, k, out) && checked_mul(out, 4, out);
}

/// nbytes an S8P16K4 tensor must have: ceil(dims[0] / 16) * 16 * ceil(dims[1] / 4) * 4 (false on overflow).
inline bool s8p16k4_nbytes(std::uint64_t n, std::uint64_t k, std::uint64_t& out) noexcept {
    std::uint64_t rows = 0, cols = 0;
    return checked_add(n, 15, rows) && checked_add(k, 3, cols) && checked_mul(rows / 16 * 16, cols / 4 * 4, out);
}

/// nbytes a BF16P16K2 tensor must have: ceil(dims[0] / 16) * 16 * ceil(dims[1] / 2) * 2 * 2 (false on overflow).
inline bool bf16p16k2_nbytes(std::uint64_t n, std::uint64_t k, std::uint64_t& out) noexcept {
    std::uint64_t rows = 0, cols = 0;
    return checked_add(n, 15, rows) && checked_add(k, 1, cols) && checked_mul(rows / 16 * 16, cols / 2 * 2, out) &&
           checked_mul(out, 2, out);
}

inline bool checked_align_up(std::uint64_t x, std::uint64_t a, std::uint64_t& out) noexcept {
    if (a == 0) return false;
    std::uint64_t t;
    if (!checked_add(x, a - 1, t)) return false;
    out = t / a * a;
    return true;
}

// ---- little-endian loads/stores ----------------------------------------------------------------------------
template <class T>
inline T load_le(const void* p) noexcept {
    static_assert(std::is_trivially_copyable_v<T> && (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 ||
                                                      sizeof(T) == 8));
    unsigned char b[sizeof(T)];
    std::memcpy(b, p, sizeof(T));
    if (!host_is_little_endian()) {
        for (std::size_t i = 0; i < sizeof(T) / 2; ++i) {
            unsigned char t = b[i];
            b[i] = b[sizeof(T) - 1 - i];
            b[sizeof(T) - 1 - i] = t;
        }
    }
    T v;
    std::memcpy(&v, b, sizeof(T));
    return v;
}

template <class T>
inline void store_le(void* p, T v) noexcept {
    static_assert(std::is_trivially_copyable_v<T>);
    unsigned char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    if (!host_is_little_endian()) {
        for (std::size_t i = 0; i < sizeof(T) / 2; ++i) {
            unsigned char t = b[i];
            b[i] = b[sizeof(T) - 1 - i];
            b[sizeof(T) - 1 - i] = t;
        }
    }
    std::memcpy(p, b, sizeof(T));
}

// ---- UTF-8 -------------------------------------------------------------------------------------------------
// Strict UTF-8 (no overlong forms, no surrogates, <= U+10FFFF). Returns n when valid, else the index of the
// first byte of the first invalid sequence.
inline std::size_t utf8_invalid_at(const unsigned char* s, std::size_t n) noexcept {
    std::size_t i = 0;
    while (i < n) {
        const unsigned c = s[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        if (c >= 0xC2 && c <= 0xDF) len = 2;
        else if (c >= 0xE0 && c <= 0xEF) len = 3;
        else if (c >= 0xF0 && c <= 0xF4) len = 4;
        else return i;
        if (n - i < len) return i;
        const unsigned c1 = s[i + 1];
        unsigned lo = 0x80, hi = 0xBF;
        if (c == 0xE0) lo = 0xA0;
        else if (c == 0xED) hi = 0x9F;
        else if (c == 0xF0) lo = 0x90;
        else if (c == 0xF4) hi = 0x8F;
        if (c1 < lo || c1 > hi) return i;
        for (std::size_t k = 2; k < len; ++k)
            if ((s[i + k] & 0xC0u) != 0x80u) return i;
        i += len;
    }
    return n;
}

inline bool valid_utf8(const void* s, std::size_t n) noexcept {
    return utf8_invalid_at(static_cast<const unsigned char*>(s), n) == n;
}

inline std::string hex64(std::uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int sh = 60; sh >= 0; sh -= 4) s += digits[(v >> sh) & 0xF];
    return s;
}

// A printable excerpt of an untrusted byte string for error messages (control bytes, and every byte >= 0x80
// unless the whole string is valid UTF-8, are escaped as \xNN; length capped).
inline std::string printable(const void* p, std::size_t n, std::size_t cap = 80) {
    static const char digits[] = "0123456789abcdef";
    const auto* s = static_cast<const unsigned char*>(p);
    const bool utf8 = valid_utf8(p, n);
    std::string out;
    for (std::size_t i = 0; i < n && i < cap; ++i) {
        const unsigned char c = s[i];
        if (c >= 0x20 && c != 0x7F && c != '\\' && c < 0x80) {
            out += static_cast<char>(c);
        } else if (c >= 0x80 && utf8) {
            out += static_cast<char>(c);
        } else {
            out += "\\x";
            out += digits[c >> 4];
            out += digits[c & 0xF];
        }
    }
    if (n > cap) out += "...";
    return out;
}

}  // namespace bertlet::detail
