// bertlet — XXH64 (the checksum of the .bertlet format, docs/FORMAT.md).
//
// Portable C++17: input bytes are loaded with memcpy and interpreted as little-endian on every host, so the
// result equals the reference implementation (Python's `xxhash.xxh64(data, seed).intdigest()`). The main loop
// compiles to plain unaligned 64-bit loads and runs at several GB/s.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace bertlet::detail {

inline constexpr bool host_is_little_endian() noexcept {
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return false;
#else
    return true;
#endif
}

inline std::uint64_t bswap64(std::uint64_t x) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap64(x);
#else
    x = ((x & 0x00000000FFFFFFFFull) << 32) | (x >> 32);
    x = ((x & 0x0000FFFF0000FFFFull) << 16) | ((x & 0xFFFF0000FFFF0000ull) >> 16);
    return ((x & 0x00FF00FF00FF00FFull) << 8) | ((x & 0xFF00FF00FF00FF00ull) >> 8);
#endif
}

inline std::uint32_t bswap32(std::uint32_t x) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_bswap32(x);
#else
    return (x >> 24) | ((x >> 8) & 0xFF00u) | ((x << 8) & 0xFF0000u) | (x << 24);
#endif
}

inline std::uint64_t read_le64(const unsigned char* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, sizeof v);
    return host_is_little_endian() ? v : bswap64(v);
}

inline std::uint32_t read_le32(const unsigned char* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, sizeof v);
    return host_is_little_endian() ? v : bswap32(v);
}

namespace xxh64_impl {
inline constexpr std::uint64_t p1 = 0x9E3779B185EBCA87ull;
inline constexpr std::uint64_t p2 = 0xC2B2AE3D27D4EB4Full;
inline constexpr std::uint64_t p3 = 0x165667B19E3779F9ull;
inline constexpr std::uint64_t p4 = 0x85EBCA77C2B2AE63ull;
inline constexpr std::uint64_t p5 = 0x27D4EB2F165667C5ull;

inline constexpr std::uint64_t rotl(std::uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }
inline constexpr std::uint64_t round(std::uint64_t acc, std::uint64_t input) noexcept {
    acc += input * p2;
    acc = rotl(acc, 31);
    return acc * p1;
}
inline constexpr std::uint64_t merge(std::uint64_t acc, std::uint64_t val) noexcept {
    acc ^= round(0, val);
    return acc * p1 + p4;
}
}  // namespace xxh64_impl

}  // namespace bertlet::detail

namespace bertlet::blob {

// XXH64 of `len` bytes at `data` with `seed` (the format uses seed 0).
inline std::uint64_t xxh64(const void* data, std::size_t len, std::uint64_t seed = 0) noexcept {
    using namespace bertlet::detail::xxh64_impl;
    using bertlet::detail::read_le32;
    using bertlet::detail::read_le64;
    const auto* p = static_cast<const unsigned char*>(data);
    const unsigned char* const end = p + len;
    std::uint64_t h;
    if (len >= 32) {
        std::uint64_t v1 = seed + p1 + p2, v2 = seed + p2, v3 = seed, v4 = seed - p1;
        const unsigned char* const limit = end - 32;
        do {
            v1 = round(v1, read_le64(p));
            v2 = round(v2, read_le64(p + 8));
            v3 = round(v3, read_le64(p + 16));
            v4 = round(v4, read_le64(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        h = merge(h, v4);
    } else {
        h = seed + p5;
    }
    h += static_cast<std::uint64_t>(len);
    while (end - p >= 8) {
        h ^= round(0, read_le64(p));
        h = rotl(h, 27) * p1 + p4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= static_cast<std::uint64_t>(read_le32(p)) * p1;
        h = rotl(h, 23) * p2 + p3;
        p += 4;
    }
    while (p < end) {
        h ^= static_cast<std::uint64_t>(*p) * p5;
        h = rotl(h, 11) * p1;
        ++p;
    }
    h ^= h >> 33;
    h *= p2;
    h ^= h >> 29;
    h *= p3;
    h ^= h >> 32;
    return h;
}

}  // namespace bertlet::blob
