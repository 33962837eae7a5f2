// Blob format: the malformed-blob suite. Every violation of docs/FORMAT.md must throw the right bertlet::error
// subclass with the right stable id, never crash, never allocate more than the file holds.
#include <doctest/doctest.h>

#include "test_blob_helpers.hpp"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include <sys/stat.h>

using namespace blobtest;
namespace bb = bertlet::blob;
namespace errc = bertlet::errc;

// ---- allocation accounting (proves hostile counts are refused before anything is allocated) ----------------------
// Replaces the global operator new/delete of the test binary with malloc/free plus a per-thread byte counter that is
// only read by the tests below. Define BERTLET_TEST_NO_ALLOC_HOOK to build without it (the checks are then skipped).
#ifndef BERTLET_TEST_NO_ALLOC_HOOK
namespace {
thread_local std::size_t g_alloc_bytes = 0;
}
// noinline keeps GCC's -Wmismatched-new-delete from pairing the inlined malloc/free with new/delete.
#if defined(__GNUC__)
#define BLOB_NOINLINE __attribute__((noinline))
#else
#define BLOB_NOINLINE
#endif
BLOB_NOINLINE void* operator new(std::size_t n) {
    g_alloc_bytes += n;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
BLOB_NOINLINE void* operator new[](std::size_t n) { return ::operator new(n); }
BLOB_NOINLINE void operator delete(void* p) noexcept { std::free(p); }
BLOB_NOINLINE void operator delete[](void* p) noexcept { std::free(p); }
BLOB_NOINLINE void operator delete(void* p, std::size_t) noexcept { std::free(p); }
BLOB_NOINLINE void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): every form of new must pair with this delete.
BLOB_NOINLINE void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    g_alloc_bytes += n;
    return std::malloc(n ? n : 1);
}
BLOB_NOINLINE void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return ::operator new(n, t); }
BLOB_NOINLINE void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
BLOB_NOINLINE void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
#define BLOB_ALLOC_HOOK 1
#else
#define BLOB_ALLOC_HOOK 0
#endif

namespace {

std::string id_str(int id) {
    std::string n = std::to_string(id);
    while (n.size() < 3) n.insert(n.begin(), '0');
    return "[bertlet.blob." + n + "]";
}

// Outcome of parsing: 0 = parsed, >0 = blob_error id, -1 = another bertlet::error, -2 = a non-bertlet exception.
int outcome(const bytes_t& b, bool check_checksum = true, std::string* what = nullptr) {
    try {
        parse(b, check_checksum);
        return 0;
    } catch (const bertlet::blob_error& e) {
        if (what) *what = e.what();
        return e.id();
    } catch (const bertlet::error& e) {
        if (what) *what = e.what();
        return -1;
    } catch (...) {
        return -2;
    }
}

#define CHECK_BLOB_ERROR(bytes_expr, id)                                                                         \
    CHECK_THROWS_WITH_AS(parse(bytes_expr), doctest::Contains(id_str(id).c_str()), bertlet::blob_error)
#define CHECK_BLOB_ERROR_NOCHK(bytes_expr, id)                                                                   \
    CHECK_THROWS_WITH_AS(parse(bytes_expr, false), doctest::Contains(id_str(id).c_str()), bertlet::blob_error)

bool one_of(int v, std::initializer_list<int> ids) {
    for (int i : ids)
        if (v == i) return true;
    return false;
}

bytes_t cat(bytes_t a, const bytes_t& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

bytes_t str_bytes(const std::string& s) {
    bytes_t b = le_bytes<std::uint32_t>(static_cast<std::uint32_t>(s.size()));
    for (char c : s) b.push_back(static_cast<std::byte>(c));
    return b;
}

// small_writer() plus one raw metadata entry
bytes_t with_raw_meta(const std::string& key, std::uint32_t type, const bytes_t& value) {
    bb::writer w = small_writer();
    w.add_raw_metadata(key, type, value);
    return w.bytes();
}

}  // namespace

TEST_CASE("blob malformed: truncation at every byte offset, checksum on") {
    const bytes_t good = tiny_writer().bytes();
    REQUIRE(outcome(good) == 0);
    int bad = 0;
    std::size_t first_bad = 0;
    for (std::size_t len = 0; len < good.size(); ++len) {
        const bytes_t t(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len));
        if (outcome(t) <= 0 && bad++ == 0) first_bad = len;
    }
    CAPTURE(first_bad);
    CHECK(bad == 0);
}

TEST_CASE("blob malformed: truncation at every byte offset, header patched to match, checksum off") {
    const bb::encoded_blob e = tiny_writer().encode();
    const bytes_t& good = e.bytes;
    int bad = 0, reached_deep = 0;
    std::size_t first_bad = 0;
    for (std::size_t len = 0; len < good.size(); ++len) {
        bytes_t t(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len));
        if (len >= bb::hdr::file_size + 8) patch<std::uint64_t>(t, bb::hdr::file_size, len, false);
        // keep data_size consistent too when possible, so parsing reaches the metadata/table/extent checks
        if (len >= bb::header_size + 8 && len >= e.data_offset + 8)
            patch<std::uint64_t>(t, bb::hdr::data_size, len - 8 - e.data_offset, false);
        for (bool refresh : {false, true}) {
            bytes_t u = t;
            if (refresh) bb::refresh_checksum(u);
            const int r = outcome(u, false);
            if (r != errc::size_mismatch && r != errc::truncated) ++reached_deep;
            if (r <= 0 && bad++ == 0) first_bad = len;
            if (refresh && outcome(u, true) <= 0 && bad++ == 0) first_bad = len;
        }
    }
    CAPTURE(first_bad);
    CHECK(bad == 0);
    CHECK(reached_deep > 0);
}

TEST_CASE("blob malformed: every truncated metadata / table / data section (consistent header)") {
    const bb::encoded_blob e = tiny_writer().encode();
    const std::uint32_t n = static_cast<std::uint32_t>(e.tensors.size());
    REQUIRE(outcome(bb::assemble_blob(e.meta, e.table, e.data, n, 64)) == 0);
    int bad = 0;
    for (std::size_t k = 0; k < e.meta.size(); ++k) {
        const bytes_t m(e.meta.begin(), e.meta.begin() + static_cast<std::ptrdiff_t>(k));
        const int r = outcome(bb::assemble_blob(m, e.table, e.data, n, 64));
        if (!one_of(r, {errc::truncated, errc::limit_exceeded, errc::bad_string, errc::bad_metadata_type})) {
            ++bad;
            CAPTURE(k);
            CHECK(r > 0);
        }
    }
    for (std::size_t k = 0; k < e.table.size(); ++k) {
        const bytes_t t(e.table.begin(), e.table.begin() + static_cast<std::ptrdiff_t>(k));
        const int r = outcome(bb::assemble_blob(e.meta, t, e.data, n, 64));
        if (!one_of(r, {errc::truncated, errc::limit_exceeded})) {
            ++bad;
            CAPTURE(k);
            CHECK(r > 0);
        }
    }
    for (std::size_t k = 0; k < e.data.size(); ++k) {
        const bytes_t d(e.data.begin(), e.data.begin() + static_cast<std::ptrdiff_t>(k));
        const int r = outcome(bb::assemble_blob(e.meta, e.table, d, n, 64));
        if (r != errc::tensor_extent) {
            ++bad;
            CAPTURE(k);
            CHECK(r > 0);
        }
    }
    CHECK(bad == 0);
}

TEST_CASE("blob malformed: bit-flip sweep with the checksum recomputed never crashes") {
    const bytes_t good = slurp(data_path("tiny.bertlet"));
    REQUIRE(outcome(good) == 0);
    int crashes = 0, parsed = 0, rejected = 0;
    for (std::size_t i = 0; i + 8 < good.size(); ++i) {
        for (unsigned mask : {0x01u, 0x80u, 0xFFu}) {
            bytes_t b = good;
            b[i] ^= static_cast<std::byte>(mask);
            bb::refresh_checksum(b);
            const int r = outcome(b, true);
            if (r < 0) ++crashes;
            else if (r == 0) {
                ++parsed;
                // whatever parsed must be usable: walk every key and tensor
                (void)exercise(parse(b));
            } else {
                ++rejected;
            }
        }
    }
    CHECK(crashes == 0);
    CHECK(rejected > 0);
    MESSAGE("bit flips: " << parsed << " parsed, " << rejected << " rejected");
}

TEST_CASE("blob malformed: a flipped byte without a checksum refresh is a checksum mismatch") {
    const bytes_t good = slurp(data_path("tiny.bertlet"));
    int bad = 0;
    for (std::size_t i = bb::header_size; i < good.size(); ++i) {
        bytes_t b = good;
        b[i] ^= std::byte{0x20};
        if (outcome(b, true) != errc::checksum_mismatch) ++bad;
    }
    CHECK(bad == 0);
    bytes_t b = good;
    const std::size_t data_byte = good.size() - 8 - 3;
    b[data_byte] ^= std::byte{1};
    CHECK_THROWS_WITH_AS(parse(b), doctest::Contains("[bertlet.blob.104] <memory>: checksum"), bertlet::blob_error);
    CHECK(outcome(b, false) == 0);  // check_checksum = false skips it
}

TEST_CASE("blob malformed: header") {
    const bb::encoded_blob e = small_writer().encode();
    const bytes_t& g = e.bytes;
    REQUIRE(outcome(g) == 0);

    SUBCASE("bad magic") {
        bytes_t b = g;
        b[0] = std::byte{'X'};
        CHECK_BLOB_ERROR(b, errc::bad_magic);
        b = g;
        b[7] = std::byte{'!'};
        CHECK_BLOB_ERROR(b, errc::bad_magic);
        CHECK_THROWS_WITH_AS(parse(bytes_t{std::byte{'G'}, std::byte{'G'}}), doctest::Contains("[bertlet.blob.101]"),
                             bertlet::blob_error);
    }
    SUBCASE("bad major version") {
        for (std::uint32_t v : {0u, 2u, 0xFFFFFFFFu}) {
            bytes_t b = g;
            patch<std::uint32_t>(b, bb::hdr::version_major, v);
            CHECK_BLOB_ERROR(b, errc::bad_version);
        }
        bytes_t b = g;
        patch<std::uint32_t>(b, bb::hdr::version_minor, 7);  // minors are accepted
        CHECK(parse(b).version_minor() == 7);
    }
    SUBCASE("file_size mismatch") {
        bytes_t b = g;
        patch<std::uint64_t>(b, bb::hdr::file_size, g.size() + 1);
        CHECK_BLOB_ERROR(b, errc::size_mismatch);
        patch<std::uint64_t>(b, bb::hdr::file_size, g.size() - 1);
        CHECK_BLOB_ERROR(b, errc::size_mismatch);
        CHECK_BLOB_ERROR(cat(g, bytes_t(8)), errc::size_mismatch);  // extra bytes at the end
    }
    SUBCASE("every header extent off by one") {
        for (std::size_t off : {bb::hdr::file_size, bb::hdr::meta_offset, bb::hdr::meta_size, bb::hdr::table_offset,
                                bb::hdr::data_offset, bb::hdr::data_size}) {
            for (int delta : {-1, +1}) {
                CAPTURE(off);
                CAPTURE(delta);
                bytes_t b = g;
                patch<std::uint64_t>(b, off, peek<std::uint64_t>(g, off) + static_cast<std::uint64_t>(delta));
                CHECK_BLOB_ERROR(b, errc::size_mismatch);
            }
        }
        // table_size: the header alone cannot see it, the table parse does
        bytes_t b = g;
        patch<std::uint64_t>(b, bb::hdr::table_size, e.table_size + 1);
        CHECK(one_of(outcome(b), {errc::size_mismatch, errc::trailing_bytes}));
        patch<std::uint64_t>(b, bb::hdr::table_size, e.table_size - 1);
        CHECK(one_of(outcome(b), {errc::size_mismatch, errc::truncated}));
        // meta_offset 0 and huge extents
        b = g;
        patch<std::uint64_t>(b, bb::hdr::meta_offset, 0);
        CHECK_BLOB_ERROR(b, errc::size_mismatch);
        b = g;
        patch<std::uint64_t>(b, bb::hdr::data_offset, UINT64_MAX);
        CHECK_BLOB_ERROR(b, errc::size_mismatch);
        b = g;
        patch<std::uint64_t>(b, bb::hdr::data_size, UINT64_MAX);
        CHECK_BLOB_ERROR(b, errc::size_mismatch);
    }
    SUBCASE("meta_size / table_size over their caps") {
        bytes_t b = g;
        patch<std::uint64_t>(b, bb::hdr::meta_size, (64ull << 20) + 1);
        CHECK_BLOB_ERROR(b, errc::limit_exceeded);
        b = g;
        patch<std::uint64_t>(b, bb::hdr::meta_size, UINT64_MAX - 10);
        CHECK_BLOB_ERROR(b, errc::limit_exceeded);
        b = g;
        patch<std::uint64_t>(b, bb::hdr::table_size, (16ull << 20) + 1);
        CHECK_BLOB_ERROR(b, errc::limit_exceeded);
    }
    SUBCASE("alignment") {
        for (std::uint32_t a : {0u, 3u, 8u, 48u, 8192u, 0x80000000u}) {
            CAPTURE(a);
            bytes_t b = g;
            patch<std::uint32_t>(b, bb::hdr::alignment, a);
            CHECK_BLOB_ERROR(b, errc::bad_alignment);
        }
        // a consistent blob laid out with alignment 8 is still refused
        bb::writer w = small_writer();
        w.set_validation(false);
        CHECK_BLOB_ERROR(w.bytes(8), errc::bad_alignment);
    }
    SUBCASE("tensor_count") {
        for (std::uint32_t n : {0u, 65537u, 70000u, 0xFFFFFFFFu}) {
            CAPTURE(n);
            bytes_t b = g;
            patch<std::uint32_t>(b, bb::hdr::tensor_count, n);
            CHECK_BLOB_ERROR(b, errc::limit_exceeded);
        }
        bytes_t b = g;
        patch<std::uint32_t>(b, bb::hdr::tensor_count, 3);  // one more than the table holds
        CHECK(one_of(outcome(b), {errc::truncated, errc::limit_exceeded}));
        patch<std::uint32_t>(b, bb::hdr::tensor_count, 1);  // one fewer
        CHECK_BLOB_ERROR(b, errc::trailing_bytes);
    }
    SUBCASE("short and empty inputs") {
        CHECK_BLOB_ERROR(bytes_t{}, errc::truncated);
        CHECK_BLOB_ERROR(bytes_t(g.begin(), g.begin() + 87), errc::truncated);
        CHECK_BLOB_ERROR(bytes_t(g.begin(), g.begin() + 5), errc::truncated);
    }
}

TEST_CASE("blob malformed: files") {
    const std::string empty = "/tmp/bertlet_test_blob_empty.bertlet";
    { std::FILE* f = std::fopen(empty.c_str(), "wb"); REQUIRE(f); std::fclose(f); }
    CHECK_THROWS_WITH_AS(bb::reader::open(empty), doctest::Contains(("[bertlet.blob.100] " + empty).c_str()),
                         bertlet::blob_error);
    std::remove(empty.c_str());
    CHECK_THROWS_WITH_AS(bb::reader::open("/nonexistent/dir/x.bertlet"),
                         doctest::Contains("[bertlet.io.001] /nonexistent/dir/x.bertlet: cannot open: "),
                         bertlet::io_error);
    CHECK_THROWS_WITH_AS(bb::reader::open(BERTLET_TEST_DATA), doctest::Contains("[bertlet.io.001]"), bertlet::io_error);
    CHECK_THROWS_WITH_AS(bb::reader::open("/tmp"), doctest::Contains("/tmp: cannot open"), bertlet::io_error);
    CHECK_THROWS_AS(bb::reader::open("/dev/null"), bertlet::io_error);  // not a regular file
    // the source is in every message
    const std::string path = "/tmp/bertlet_test_blob_bad.bertlet";
    bytes_t b = small_writer().bytes();
    b[0] = std::byte{'Z'};
    {
        std::FILE* f = std::fopen(path.c_str(), "wb");
        REQUIRE(f);
        std::fwrite(b.data(), 1, b.size(), f);
        std::fclose(f);
    }
    CHECK_THROWS_WITH_AS(bb::reader::open(path), doctest::Contains(("[bertlet.blob.101] " + path + ": magic").c_str()),
                         bertlet::blob_error);
    std::remove(path.c_str());
}

TEST_CASE("blob malformed: tensor table") {
    const bb::encoded_blob e = small_writer().encode();
    const bytes_t& g = e.bytes;
    const bb::tensor_fields& t0 = e.tensors[0];  // a.weight (2,3) f32: 24 bytes at 0
    const bb::tensor_fields& t1 = e.tensors[1];  // a.bias (3) f32: 12 bytes at 64
    REQUIRE(peek<std::uint64_t>(g, t1.offset) == 64);

    SUBCASE("overflowing shapes") {
        const float f[1] = {1};
        for (const std::vector<std::uint64_t>& dims :
             {std::vector<std::uint64_t>{1ull << 32, 1ull << 32, 2}, std::vector<std::uint64_t>{1ull << 62, 1},
              std::vector<std::uint64_t>{UINT64_MAX}, std::vector<std::uint64_t>{1ull << 16, 1ull << 16, 1ull << 16, 1ull << 16}}) {
            bb::writer w;
            w.set_validation(false);
            w.add_tensor("big", bb::dtype::f32, 0, 0, dims, f, 4);
            CHECK_THROWS_WITH_AS(parse(w.bytes()), doctest::Contains("overflows 64 bits"), bertlet::blob_error);
            CHECK_BLOB_ERROR(w.bytes(), errc::bad_tensor);
        }
    }
    SUBCASE("nbytes mismatch") {
        for (std::uint64_t nb : std::initializer_list<std::uint64_t>{0, 23, 25, 28, UINT64_MAX}) {
            bytes_t b = g;
            patch<std::uint64_t>(b, t0.nbytes, nb);
            CHECK_BLOB_ERROR(b, errc::bad_tensor);
        }
    }
    SUBCASE("unknown dtype / layout / quant") {
        for (std::uint32_t d : {5u, 99u, 0xFFFFFFFFu}) {
            bytes_t b = g;
            patch<std::uint32_t>(b, t0.dtype, d);
            CHECK_BLOB_ERROR(b, errc::bad_tensor);
        }
        // known layouts on a tensor they do not fit (1: needs nbytes of whole 16-row panels; 2: needs i8 + quant 1;
        // 3: needs bf16)
        for (std::uint32_t l : {1u, 2u, 3u}) {
            bytes_t b = g;
            patch<std::uint32_t>(b, t0.layout, l);
            CHECK_THROWS_WITH_AS(parse(b), doctest::Contains("[bertlet.blob.111] <memory>: tensor 'a.weight' layout"),
                                 bertlet::blob_error);
        }
        for (std::uint32_t l : {4u, 0xFFFFFFFFu}) {  // layouts this reader does not know
            bytes_t b = g;
            patch<std::uint32_t>(b, t0.layout, l);
            CHECK_THROWS_WITH_AS(parse(b), doctest::Contains("(unknown layout)"), bertlet::blob_error);
        }
        bytes_t b = g;
        patch<std::uint32_t>(b, t0.quant, 2);
        CHECK_BLOB_ERROR(b, errc::bad_tensor);
        patch<std::uint32_t>(b, t0.quant, 1);  // per-row quant on an f32 tensor
        CHECK_BLOB_ERROR(b, errc::bad_tensor);
    }
    SUBCASE("quantized tensors need i8 and a matching scale tensor") {
        const std::int8_t q[6] = {1, 2, 3, 4, 5, 6};
        bb::writer w;
        w.add_tensor("q", bb::dtype::i8, 0, 1, {2, 3}, q, 6);
        CHECK_THROWS_WITH_AS(parse(w.bytes()), doctest::Contains("'q.scale' is missing"), bertlet::blob_error);
        bb::writer w2 = w;
        w2.add_f32("q.scale", {3}, {1, 2, 3});  // wrong length
        CHECK_BLOB_ERROR(w2.bytes(), errc::bad_tensor);
        bb::writer w3 = w;
        w3.add_f32("q.scale", {2, 1}, {1, 2});  // wrong rank
        CHECK_BLOB_ERROR(w3.bytes(), errc::bad_tensor);
        bb::writer w4 = w;
        const std::int32_t s[2] = {1, 2};
        w4.add_tensor("q.scale", bb::dtype::i32, 0, 0, {2}, s, 8);  // wrong dtype
        CHECK_BLOB_ERROR(w4.bytes(), errc::bad_tensor);
        bb::writer w5 = w;
        w5.add_f32("q.scale", {2}, {0.5f, 0.25f});
        CHECK(outcome(w5.bytes()) == 0);
    }
    SUBCASE("ndim 0 and 5, a dim of 0") {
        for (std::uint32_t nd : {0u, 5u, 1000u}) {
            bytes_t b = g;
            patch<std::uint32_t>(b, t0.ndim, nd);
            CHECK_BLOB_ERROR(b, errc::bad_tensor);
        }
        bytes_t b = g;
        patch<std::uint64_t>(b, t0.dims, 0);
        CHECK_THROWS_WITH_AS(parse(b), doctest::Contains("tensor 'a.weight' dims[0]"), bertlet::blob_error);
        b = g;
        patch<std::uint64_t>(b, t0.dims + 8, 0);
        CHECK_BLOB_ERROR(b, errc::bad_tensor);
    }
    SUBCASE("overlapping, gapped, misaligned tensors") {
        for (std::uint64_t off : std::initializer_list<std::uint64_t>{0, 16, 24, 32, 68, 128, UINT64_MAX - 7}) {
            CAPTURE(off);
            bytes_t b = g;
            patch<std::uint64_t>(b, t1.offset, off);
            CHECK_BLOB_ERROR(b, errc::tensor_extent);
        }
        bytes_t b = g;
        patch<std::uint64_t>(b, t1.offset, 128);
        CHECK_THROWS_WITH_AS(
            parse(b),
            doctest::Contains("[bertlet.blob.112] <memory>: tensor 'a.bias' at data offset 128: expected offset 64 "
                              "(aligned end of previous tensor)"),
            bertlet::blob_error);
        b = g;
        patch<std::uint64_t>(b, t0.offset, 64);  // the first tensor must start at 0
        CHECK_BLOB_ERROR(b, errc::tensor_extent);
    }
    SUBCASE("a tensor extending past data_size") {
        bytes_t b = g;
        patch<std::uint64_t>(b, t1.dims, 4, false);
        patch<std::uint64_t>(b, t1.nbytes, 16);
        CHECK_THROWS_WITH_AS(parse(b), doctest::Contains("ends past data_size"), bertlet::blob_error);
        CHECK_BLOB_ERROR(b, errc::tensor_extent);
        b = g;
        patch<std::uint64_t>(b, t1.dims, 1ull << 40, false);
        patch<std::uint64_t>(b, t1.nbytes, 4ull << 40);
        CHECK_BLOB_ERROR(b, errc::tensor_extent);
    }
    SUBCASE("trailing bytes after the last tensor") {
        CHECK_BLOB_ERROR(bb::assemble_blob(e.meta, e.table, cat(e.data, bytes_t(64)), 2, 64), errc::trailing_bytes);
        CHECK_BLOB_ERROR(bb::assemble_blob(e.meta, e.table, cat(e.data, bytes_t(1)), 2, 64), errc::trailing_bytes);
    }
    SUBCASE("trailing bytes after the table and after the metadata") {
        CHECK_BLOB_ERROR(bb::assemble_blob(e.meta, cat(e.table, bytes_t(60)), e.data, 2, 64), errc::trailing_bytes);
        CHECK_BLOB_ERROR(bb::assemble_blob(cat(e.meta, bytes_t(3)), e.table, e.data, 2, 64), errc::trailing_bytes);
    }
    SUBCASE("non-zero padding") {
        REQUIRE(e.table_offset + e.table_size < e.data_offset);
        bytes_t b = g;
        b[e.data_offset - 1] = std::byte{1};
        bb::refresh_checksum(b);
        CHECK_BLOB_ERROR(b, errc::nonzero_padding);
        b = g;
        b[e.data_offset + 24] = std::byte{0x80};  // between a.weight (24 bytes) and a.bias (at 64)
        bb::refresh_checksum(b);
        CHECK_THROWS_WITH_AS(parse(b), doctest::Contains("[bertlet.blob.114]"), bertlet::blob_error);
        b = g;
        b[e.data_offset + 63] = std::byte{0x01};
        bb::refresh_checksum(b);
        CHECK_BLOB_ERROR(b, errc::nonzero_padding);
    }
    SUBCASE("duplicate tensor names") {
        bb::writer w = small_writer();
        w.set_validation(false);
        w.add_f32("a.bias", {1}, {1});
        CHECK_THROWS_WITH_AS(parse(w.bytes()), doctest::Contains("[bertlet.blob.113] <memory>: tensor 'a.bias'"),
                             bertlet::blob_error);
    }
    SUBCASE("bad tensor names") {
        for (const std::string& name : {std::string(), std::string(256, 'n'), std::string("bad\xC3"),
                                        std::string("\xED\xA0\x80")}) {
            bb::writer w = small_writer();
            w.set_validation(false);
            w.add_f32(name, {1}, {1});
            CHECK_BLOB_ERROR(w.bytes(), errc::bad_string);
        }
        bb::writer w = small_writer();
        w.add_f32(std::string(255, 'n'), {1}, {1});  // 255 bytes is fine
        CHECK(outcome(w.bytes()) == 0);
    }
}

TEST_CASE("blob malformed: metadata") {
    SUBCASE("duplicate keys") {
        bb::writer w = small_writer();
        w.add_raw_metadata("bert.hidden_size", 1, le_bytes<std::uint64_t>(3));
        CHECK_THROWS_WITH_AS(parse(w.bytes()), doctest::Contains("[bertlet.blob.108] <memory>: metadata 'bert.hidden_size'"),
                             bertlet::blob_error);
    }
    SUBCASE("unknown types") {
        for (std::uint32_t t : {0u, 9u, 0xFFFFFFFFu})
            CHECK_BLOB_ERROR(with_raw_meta("x", t, le_bytes<std::uint64_t>(0)), errc::bad_metadata_type);
    }
    SUBCASE("bool not 0/1") {
        CHECK_BLOB_ERROR(with_raw_meta("b", 4, {std::byte{2}}), errc::bad_value);
        CHECK_BLOB_ERROR(with_raw_meta("b", 4, {std::byte{0xFF}}), errc::bad_value);
        CHECK(outcome(with_raw_meta("b", 4, {std::byte{1}})) == 0);
    }
    SUBCASE("non-finite floats") {
        for (double v : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                         -std::numeric_limits<double>::infinity()})
            CHECK_BLOB_ERROR(with_raw_meta("f", 3, le_bytes(v)), errc::bad_value);
        for (float v : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity()}) {
            const bytes_t arr = cat(cat(le_bytes<std::uint64_t>(3), le_bytes(1.0f)), cat(le_bytes(v), le_bytes(2.0f)));
            CHECK_THROWS_WITH_AS(parse(with_raw_meta("v", 8, arr)), doctest::Contains("ARR_F32 element #1"),
                                 bertlet::blob_error);
            CHECK_BLOB_ERROR(with_raw_meta("v", 8, arr), errc::bad_value);
        }
    }
    SUBCASE("huge counts and lengths fail fast with limit_exceeded") {
        const std::uint64_t huge = 1ull << 60;
        bytes_t b = small_writer().bytes();
        patch<std::uint64_t>(b, bb::header_size, huge);  // metadata count
        CHECK_BLOB_ERROR(b, errc::limit_exceeded);
        patch<std::uint64_t>(b, bb::header_size, 65537);  // over the cap
        CHECK_BLOB_ERROR(b, errc::limit_exceeded);
        patch<std::uint64_t>(b, bb::header_size, 65536);  // at the cap, but over the bytes remaining
        CHECK_BLOB_ERROR(b, errc::limit_exceeded);
        for (std::uint32_t type : {6u, 7u, 8u}) {
            for (std::uint64_t n : std::initializer_list<std::uint64_t>{huge, UINT64_MAX, 1000}) {
                CAPTURE(type);
                CAPTURE(n);
                CHECK_BLOB_ERROR(with_raw_meta("arr", type, le_bytes<std::uint64_t>(n)), errc::limit_exceeded);
            }
        }
        for (std::uint32_t len : {0xFFFFFFFFu, (1u << 20) + 1, 1000u})
            CHECK_BLOB_ERROR(with_raw_meta("s", 5, le_bytes<std::uint32_t>(len)), errc::limit_exceeded);
        // an element of an ARR_STR
        CHECK_BLOB_ERROR(with_raw_meta("sa", 6, cat(le_bytes<std::uint64_t>(1), le_bytes<std::uint32_t>(0xFFFFFFF0u))),
                         errc::limit_exceeded);
    }
#if BLOB_ALLOC_HOOK
    SUBCASE("hostile counts allocate nothing in proportion to the count") {
        bytes_t b = small_writer().bytes();
        patch<std::uint64_t>(b, bb::header_size, 65536);
        const bytes_t arr = with_raw_meta("arr", 7, le_bytes<std::uint64_t>(1ull << 60));
        bytes_t tc = small_writer().bytes();
        patch<std::uint32_t>(tc, bb::hdr::tensor_count, 65536);
        {
            const std::size_t before = g_alloc_bytes;
            CHECK(outcome(small_writer().bytes()) == 0);
            CHECK(g_alloc_bytes > before);  // the hook is live
        }
        for (const bytes_t* input : std::initializer_list<const bytes_t*>{&b, &arr, &tc}) {
            const std::size_t before = g_alloc_bytes;
            CHECK(outcome(*input) == errc::limit_exceeded);
            const std::size_t used = g_alloc_bytes - before;
            CAPTURE(used);
            CHECK(used < 64 * 1024);  // the blob is < 1 KB; 65536 entries would need megabytes
        }
    }
#endif
    SUBCASE("keys: empty, too long, invalid UTF-8") {
        CHECK_BLOB_ERROR(with_raw_meta("", 1, le_bytes<std::uint64_t>(1)), errc::bad_string);
        CHECK_BLOB_ERROR(with_raw_meta(std::string(257, 'k'), 1, le_bytes<std::uint64_t>(1)), errc::bad_string);
        CHECK(outcome(with_raw_meta(std::string(256, 'k'), 1, le_bytes<std::uint64_t>(1))) == 0);
        CHECK_THROWS_WITH_AS(parse(with_raw_meta("bad\xFFkey", 1, le_bytes<std::uint64_t>(1))),
                             doctest::Contains("invalid UTF-8 at byte 3"), bertlet::blob_error);
        CHECK_BLOB_ERROR(with_raw_meta("\xC0\xAF", 1, le_bytes<std::uint64_t>(1)), errc::bad_string);
    }
    SUBCASE("string values: invalid UTF-8") {
        CHECK_BLOB_ERROR(with_raw_meta("s", 5, str_bytes("ok\xE2\x9C")), errc::bad_string);
        CHECK_BLOB_ERROR(with_raw_meta("sa", 6, cat(le_bytes<std::uint64_t>(2), cat(str_bytes("a"), str_bytes("\x80")))),
                         errc::bad_string);
        CHECK(outcome(with_raw_meta("sa", 6, cat(le_bytes<std::uint64_t>(2), cat(str_bytes("a"), str_bytes(""))))) ==
              0);
    }
    SUBCASE("a value cut short by the next section") {
        CHECK_BLOB_ERROR(with_raw_meta("u", 1, le_bytes<std::uint32_t>(1)), errc::truncated);
        CHECK_BLOB_ERROR(with_raw_meta("i", 7, cat(le_bytes<std::uint64_t>(2), le_bytes<std::int64_t>(1))),
                         errc::limit_exceeded);
    }
}

TEST_CASE("blob malformed: error messages name the source, the field, the offset and expected vs got") {
    const bb::encoded_blob e = small_writer().encode();
    bytes_t b = e.bytes;
    patch<std::uint64_t>(b, bb::hdr::data_size, e.data_size + 1);
    std::string what;
    CHECK(outcome(b, true, &what) == errc::size_mismatch);
    CHECK(what.find("<memory>: data_size at offset 64: expected " + std::to_string(e.data_size) + " ") !=
          std::string::npos);
    CHECK(what.find("got " + std::to_string(e.data_size + 1)) != std::string::npos);
    b = e.bytes;
    patch<std::uint64_t>(b, e.tensors[0].nbytes, 20);
    CHECK(outcome(b, true, &what) == errc::bad_tensor);
    CHECK(what.find("tensor 'a.weight' nbytes at offset " + std::to_string(e.tensors[0].nbytes) +
                    ": expected 24 (shape (2,3) of f32), got 20") != std::string::npos);
}
