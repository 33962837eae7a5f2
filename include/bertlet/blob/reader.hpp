// bertlet — strict, zero-copy reader of .bertlet weight blobs (docs/FORMAT.md).
//
// reader::open() maps the file read-only (mmap PROT_READ, MAP_PRIVATE; a non-POSIX build reads it into an aligned
// buffer) and validates everything before it returns: header, checksum, metadata, tensor table, extents and
// padding. Any violation throws bertlet::blob_error whose message is
//   "[bertlet.blob.<id>] <source>: <field/key/tensor> at <offset>: expected ..., got ..."
// Lookups by the model loader throw bertlet::model_error (missing_key, wrong_key_type, missing_tensor,
// tensor_dtype). Every count read from the file is bounded by the bytes that remain before anything is allocated,
// so memory use is proportional to the file size whatever the file says.
//
// A reader is move-only and immutable after construction; its const methods are thread-safe. Views it hands out
// (names, strings, tensor data) stay valid for the reader's lifetime (moving the reader keeps them valid).
#pragma once

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "bertlet/blob/format.hpp"
#include "bertlet/blob/xxhash.hpp"
#include "bertlet/error.hpp"

#if defined(__unix__) || defined(__APPLE__)
#define BERTLET_BLOB_HAVE_MMAP 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#define BERTLET_BLOB_HAVE_MMAP 0
#endif

namespace bertlet::blob {

struct tensor_view {
    std::string_view name;
    dtype type = dtype::f32;
    std::uint32_t layout = 0;
    std::uint32_t quant = 0;
    std::uint32_t ndim = 0;
    std::array<std::uint64_t, 4> dims{{1, 1, 1, 1}};  // unused dims = 1
    const std::byte* data = nullptr;                  // aligned to the blob's alignment (>= 16) within the mapping
    std::uint64_t nbytes = 0;
    // extras
    std::uint64_t offset = 0;     // relative to the data section
    std::string_view source;      // file path or "<memory>" (for error messages)

    std::uint64_t numel() const noexcept {
        std::uint64_t n = 1;
        for (std::uint32_t i = 0; i < ndim && i < 4; ++i) n *= dims[i];  // validated not to overflow
        return n;
    }

    // Typed pointer to the data; T must match the dtype (float<->f32, int8_t<->i8, int32_t<->i32,
    // uint16_t<->f16/bf16), else model_error(errc::tensor_dtype).
    template <class T>
    const T* as() const {
        static_assert(std::is_same_v<T, float> || std::is_same_v<T, std::int8_t> ||
                          std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::uint16_t>,
                      "tensor_view::as<T>: T must be float, int8_t, int32_t or uint16_t");
        bool ok;
        const char* want;
        if constexpr (std::is_same_v<T, float>) {
            ok = type == dtype::f32;
            want = "float (f32)";
        } else if constexpr (std::is_same_v<T, std::int8_t>) {
            ok = type == dtype::i8;
            want = "int8_t (i8)";
        } else if constexpr (std::is_same_v<T, std::int32_t>) {
            ok = type == dtype::i32;
            want = "int32_t (i32)";
        } else {
            ok = type == dtype::f16 || type == dtype::bf16;
            want = "uint16_t (f16/bf16)";
        }
        if (!ok)
            throw model_error(errc::tensor_dtype, std::string(source) + ": tensor '" + std::string(name) +
                                                      "' has dtype " + dtype_name(type) + ", requested as " + want);
        return reinterpret_cast<const T*>(data);
    }

    std::string shape_str() const {
        std::string s = "(";
        for (std::uint32_t i = 0; i < ndim && i < 4; ++i) {
            if (i) s += ',';
            s += std::to_string(dims[i]);
        }
        return s + ")";
    }
};

struct load_options {
    bool check_checksum = true;
};

}  // namespace bertlet::blob

namespace bertlet::detail {

// Owns the bytes of a blob; data() is stable for the object's lifetime and page (4096) aligned.
class blob_storage {
public:
    blob_storage() = default;
    blob_storage(const blob_storage&) = delete;
    blob_storage& operator=(const blob_storage&) = delete;
    virtual ~blob_storage() = default;
    const std::byte* data() const noexcept { return data_; }
    std::uint64_t size() const noexcept { return size_; }
    std::string source;

protected:
    const std::byte* data_ = nullptr;
    std::uint64_t size_ = 0;
};

inline constexpr std::size_t storage_alignment = 4096;

class aligned_buffer_storage final : public blob_storage {
public:
    explicit aligned_buffer_storage(std::size_t n) {
        buf_ = static_cast<std::byte*>(::operator new(n ? n : 1, std::align_val_t(storage_alignment)));
        data_ = buf_;
        size_ = n;
    }
    ~aligned_buffer_storage() override { ::operator delete(buf_, std::align_val_t(storage_alignment)); }
    std::byte* mutable_data() noexcept { return buf_; }

private:
    std::byte* buf_ = nullptr;
};

class vector_storage final : public blob_storage {
public:
    explicit vector_storage(std::vector<std::byte> v) : v_(std::move(v)) {
        data_ = v_.data();
        size_ = v_.size();
    }

private:
    std::vector<std::byte> v_;
};

#if BERTLET_BLOB_HAVE_MMAP
class mmap_storage final : public blob_storage {
public:
    mmap_storage(void* p, std::size_t n) : map_(p), len_(n) {
        data_ = static_cast<const std::byte*>(p);
        size_ = n;
    }
    ~mmap_storage() override {
        if (map_) ::munmap(map_, len_);
    }

private:
    void* map_;
    std::size_t len_;
};
#endif

inline std::string errno_text(int e) { return std::system_category().message(e); }

}  // namespace bertlet::detail

namespace bertlet::blob {

class reader {
public:
    reader(reader&&) noexcept = default;
    reader& operator=(reader&&) noexcept = default;
    reader(const reader&) = delete;
    reader& operator=(const reader&) = delete;
    ~reader() = default;

    // Map and validate the file at `path`. io_error (with the path and the OS message) when it cannot be opened,
    // stat'ed or mapped; blob_error for any format violation (an empty file is blob_error truncated).
    static reader open(const std::string& path, load_options opt = {});

    // Validate a blob held in memory; takes ownership. Copies into a 4096-aligned buffer unless the vector's
    // buffer is already aligned to the blob's alignment, so tensor data is always aligned.
    static reader from_bytes(std::vector<std::byte> bytes, load_options opt = {});

    std::string_view source() const noexcept { return storage_->source; }
    std::uint32_t version_major() const noexcept { return version_major_; }
    std::uint32_t version_minor() const noexcept { return version_minor_; }
    std::uint64_t file_size() const noexcept { return storage_->size(); }
    std::uint64_t checksum() const noexcept { return checksum_; }
    std::uint32_t alignment() const noexcept { return alignment_; }
    std::uint64_t data_offset() const noexcept { return data_offset_; }
    std::uint64_t data_size() const noexcept { return data_size_; }
    const std::byte* raw_data() const noexcept { return storage_->data(); }

    // ---- metadata ----
    // Getters throw model_error(missing_key) when the key is absent and model_error(wrong_key_type) when it holds
    // another type. Integer getters accept the other integer type when the value fits (the Python writer stores
    // every non-negative int as U64).
    bool has(std::string_view key) const { return index_.find(key) != index_.end(); }
    value_type type_of(std::string_view key) const { return entry(key).type; }
    std::uint64_t get_u64(std::string_view key) const;
    std::int64_t get_i64(std::string_view key) const;
    double get_f64(std::string_view key) const;
    bool get_bool(std::string_view key) const;
    std::string_view get_str(std::string_view key) const;
    std::vector<std::string_view> get_str_array(std::string_view key) const;  // views into the mapping
    std::vector<std::int64_t> get_i64_array(std::string_view key) const;
    std::vector<float> get_f32_array(std::string_view key) const;             // copied (metadata is unaligned)
    std::size_t array_size(std::string_view key) const;                       // ARR_* only
    std::vector<std::string_view> keys() const;                               // in file order

    // ---- tensors ----
    const std::vector<tensor_view>& tensors() const noexcept { return tensors_; }
    const tensor_view* find(std::string_view name) const noexcept {
        auto it = tensor_index_.find(name);
        return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
    }
    const tensor_view& tensor(std::string_view name) const {
        if (const tensor_view* t = find(name)) return *t;
        throw model_error(errc::missing_tensor,
                          "tensor '" + std::string(name) + "' not found in " + std::string(source()));
    }

private:
    struct meta_entry {
        std::string_view key;
        value_type type;
        std::uint64_t pos;    // absolute offset of the value (STR: of its bytes; ARR_*: of the first element)
        std::uint64_t count;  // STR: byte length; ARR_*: element count; scalars: 0
    };

    reader() = default;
    static reader make(std::unique_ptr<detail::blob_storage> st, load_options opt);
    void parse(load_options opt);
    void parse_header();
    void verify_checksum();
    void parse_metadata();
    void parse_table();

    [[noreturn]] void fail(int id, const std::string& msg) const {
        throw blob_error(id, storage_->source + ": " + msg);
    }
    const meta_entry& entry(std::string_view key) const;
    const meta_entry& entry(std::string_view key, value_type want) const;
    [[noreturn]] void wrong_type(const meta_entry& e, value_type want) const;
    const std::byte* at(std::uint64_t pos) const noexcept { return storage_->data() + pos; }

    // bounded cursor over [pos, end) of the file. `what` labels are a string or a callable returning one (built only
    // when an error is reported, so hot loops such as a 30k-token vocabulary do not format strings).
    template <class L>
    static std::string label(const L& l) {
        if constexpr (std::is_invocable_v<const L&>) return l();
        else return std::string(l);
    }
    struct cursor {
        const reader* r;
        std::uint64_t pos, end;
        const char* section;
        std::uint64_t remaining() const noexcept { return end - pos; }
        template <class L>
        void need(std::uint64_t n, const L& what) const {
            if (n > end - pos)
                r->fail(errc::truncated, label(what) + " at offset " + std::to_string(pos) + ": needs " + std::to_string(n) +
                                             " bytes, only " + std::to_string(end - pos) + " remain in the " +
                                             section);
        }
        template <class T, class L>
        T read(const L& what) {
            need(sizeof(T), what);
            T v = detail::load_le<T>(r->at(pos));
            pos += sizeof(T);
            return v;
        }
        // A count of `elem`-byte items (elem >= 1): checked against the bytes remaining before it is used.
        std::uint64_t count(const std::string& what, std::uint64_t elem, std::uint64_t cap = UINT64_MAX) {
            const std::uint64_t at_pos = pos;
            const auto n = read<std::uint64_t>(what);
            if (n > cap)
                r->fail(errc::limit_exceeded, what + " at offset " + std::to_string(at_pos) + ": " +
                                                  std::to_string(n) + " exceeds the limit " + std::to_string(cap));
            if (n > remaining() / elem)
                r->fail(errc::limit_exceeded,
                        what + " at offset " + std::to_string(at_pos) + ": " + std::to_string(n) + " items need at least " +
                            (n > UINT64_MAX / elem ? std::string("2^64") : std::to_string(n * elem)) +
                            " bytes, only " + std::to_string(remaining()) + " remain in the " + section);
            return n;
        }
        // A string: u32 length (checked against [min_len, max_len] with id `len_id`, then against the bytes
        // remaining), bytes validated as UTF-8.
        template <class L>
        std::string_view string(const L& what, std::uint32_t min_len, std::uint32_t max_len, int len_id) {
            const std::uint64_t at_pos = pos;
            const auto n = read<std::uint32_t>([&] { return label(what) + " length"; });
            if (n < min_len || n > max_len)
                r->fail(len_id, label(what) + " at offset " + std::to_string(at_pos) + ": length " + std::to_string(n) +
                                    " outside " + std::to_string(min_len) + ".." + std::to_string(max_len));
            if (n > remaining())
                r->fail(errc::limit_exceeded, label(what) + " at offset " + std::to_string(at_pos) + ": length " +
                                                  std::to_string(n) + " exceeds the " + std::to_string(remaining()) +
                                                  " bytes remaining in the " + section);
            const auto* p = reinterpret_cast<const unsigned char*>(r->at(pos));
            const std::size_t bad = detail::utf8_invalid_at(p, n);
            if (bad != n)
                r->fail(errc::bad_string, label(what) + " at offset " + std::to_string(at_pos) +
                                              ": invalid UTF-8 at byte " + std::to_string(bad) + " ('" +
                                              detail::printable(p, n) + "')");
            pos += n;
            return std::string_view(reinterpret_cast<const char*>(p), n);
        }
    };

    std::unique_ptr<detail::blob_storage> storage_;
    std::uint32_t version_major_ = 0, version_minor_ = 0, alignment_ = 0, tensor_count_ = 0;
    std::uint64_t meta_size_ = 0, table_offset_ = 0, table_size_ = 0, data_offset_ = 0, data_size_ = 0;
    std::uint64_t checksum_ = 0;
    std::vector<meta_entry> meta_;
    std::unordered_map<std::string_view, std::size_t> index_;
    std::vector<tensor_view> tensors_;
    std::unordered_map<std::string_view, std::size_t> tensor_index_;
};

// ---- construction --------------------------------------------------------------------------------------------

inline reader reader::make(std::unique_ptr<detail::blob_storage> st, load_options opt) {
    reader r;
    r.storage_ = std::move(st);
    r.parse(opt);
    return r;
}

inline reader reader::open(const std::string& path, load_options opt) {
#if BERTLET_BLOB_HAVE_MMAP
    int flags = O_RDONLY;
#ifdef O_CLOEXEC
    flags |= O_CLOEXEC;
#endif
    const int fd = ::open(path.c_str(), flags);
    if (fd < 0) {
        const int e = errno;
        throw io_error(errc::open_failed, path + ": cannot open: " + detail::errno_text(e));
    }
    struct fd_closer {
        int fd;
        ~fd_closer() { ::close(fd); }
    } closer{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int e = errno;
        throw io_error(errc::stat_failed, path + ": cannot stat: " + detail::errno_text(e));
    }
    if (S_ISDIR(st.st_mode)) throw io_error(errc::open_failed, path + ": cannot open: " + detail::errno_text(EISDIR));
    if (!S_ISREG(st.st_mode)) throw io_error(errc::open_failed, path + ": cannot open: not a regular file");
    if (st.st_size <= 0)
        throw blob_error(errc::truncated, path + ": empty file (0 bytes), a blob needs at least " +
                                              std::to_string(header_size + checksum_size));
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (size > static_cast<std::uint64_t>(SIZE_MAX))
        throw io_error(errc::mmap_failed, path + ": file of " + std::to_string(size) + " bytes cannot be mapped");
    void* p = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        const int e = errno;
        throw io_error(errc::mmap_failed, path + ": cannot mmap " + std::to_string(size) + " bytes: " +
                                              detail::errno_text(e));
    }
    auto storage = std::make_unique<detail::mmap_storage>(p, static_cast<std::size_t>(size));
    storage->source = path;
    return make(std::move(storage), opt);
#else
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f) throw io_error(errc::open_failed, path + ": cannot open");
    const std::streamoff end = f.tellg();
    if (end < 0) throw io_error(errc::stat_failed, path + ": cannot determine the file size");
    if (end == 0)
        throw blob_error(errc::truncated, path + ": empty file (0 bytes), a blob needs at least " +
                                              std::to_string(header_size + checksum_size));
    auto storage = std::make_unique<detail::aligned_buffer_storage>(static_cast<std::size_t>(end));
    f.seekg(0);
    if (!f.read(reinterpret_cast<char*>(storage->mutable_data()), end))
        throw io_error(errc::read_failed, path + ": cannot read " + std::to_string(end) + " bytes");
    storage->source = path;
    return make(std::move(storage), opt);
#endif
}

inline reader reader::from_bytes(std::vector<std::byte> bytes, load_options opt) {
    // Keep the vector when its buffer already satisfies the alignment the header asks for (checked later).
    std::uint64_t want = detail::storage_alignment;
    if (bytes.size() >= header_size) {
        const auto a = detail::load_le<std::uint32_t>(bytes.data() + hdr::alignment);
        if (is_pow2(a) && a >= min_alignment && a <= max_alignment) want = a;
    }
    std::unique_ptr<detail::blob_storage> storage;
    if (reinterpret_cast<std::uintptr_t>(bytes.data()) % want == 0 && !bytes.empty()) {
        storage = std::make_unique<detail::vector_storage>(std::move(bytes));
    } else {
        auto buf = std::make_unique<detail::aligned_buffer_storage>(bytes.size());
        if (!bytes.empty()) std::memcpy(buf->mutable_data(), bytes.data(), bytes.size());
        storage = std::move(buf);
    }
    storage->source = "<memory>";
    return make(std::move(storage), opt);
}

// ---- validation ------------------------------------------------------------------------------------------------

inline void reader::parse(load_options opt) {
    parse_header();
    if (opt.check_checksum) verify_checksum();
    parse_metadata();
    parse_table();
}

inline void reader::parse_header() {
    const std::uint64_t size = storage_->size();
    const std::byte* b = storage_->data();
    const auto u32 = [&](std::size_t off) { return detail::load_le<std::uint32_t>(b + off); };
    const auto u64 = [&](std::size_t off) { return detail::load_le<std::uint64_t>(b + off); };
    const auto n2s = [](std::uint64_t v) { return std::to_string(v); };

    if (size == 0) fail(errc::truncated, "empty blob (0 bytes), a blob needs at least " + n2s(header_size + checksum_size));
    if (std::memcmp(b, magic, size < sizeof magic ? size : sizeof magic) != 0)
        fail(errc::bad_magic, "magic at offset 0: expected \"BERTLET\\0\", got \"" +
                                  detail::printable(b, size < sizeof magic ? size : sizeof magic) +
                                  "\" (not a bertlet blob)");
    if (size < header_size + checksum_size)
        fail(errc::truncated, "file of " + n2s(size) + " bytes is shorter than header + checksum (" +
                                  n2s(header_size + checksum_size) + " bytes)");

    version_major_ = u32(hdr::version_major);
    version_minor_ = u32(hdr::version_minor);
    if (version_major_ != format_version_major)
        fail(errc::bad_version, "version_major at offset 8: expected " + n2s(format_version_major) + ", got " +
                                    n2s(version_major_) + " (version " + n2s(version_major_) + "." +
                                    n2s(version_minor_) + " is not supported)");
    const std::uint64_t file_size = u64(hdr::file_size);
    if (file_size != size)
        fail(errc::size_mismatch, "file_size at offset 16: header says " + n2s(file_size) + ", the file has " +
                                      n2s(size) + " bytes");
    const std::uint64_t meta_offset = u64(hdr::meta_offset);
    if (meta_offset != required_meta_offset)
        fail(errc::size_mismatch, "meta_offset at offset 24: expected " + n2s(required_meta_offset) + ", got " +
                                      n2s(meta_offset));
    alignment_ = u32(hdr::alignment);
    if (!is_pow2(alignment_) || alignment_ < min_alignment || alignment_ > max_alignment)
        fail(errc::bad_alignment, "alignment at offset 76: expected a power of two in " + n2s(min_alignment) + ".." +
                                      n2s(max_alignment) + ", got " + n2s(alignment_));
    meta_size_ = u64(hdr::meta_size);
    if (meta_size_ > max_meta_size)
        fail(errc::limit_exceeded, "meta_size at offset 32: " + n2s(meta_size_) + " exceeds the limit " +
                                       n2s(max_meta_size));
    table_size_ = u64(hdr::table_size);
    if (table_size_ > max_table_size)
        fail(errc::limit_exceeded, "table_size at offset 48: " + n2s(table_size_) + " exceeds the limit " +
                                       n2s(max_table_size));
    tensor_count_ = u32(hdr::tensor_count);
    if (tensor_count_ < min_tensor_count || tensor_count_ > max_tensor_count)
        fail(errc::limit_exceeded, "tensor_count at offset 72: expected " + n2s(min_tensor_count) + ".." +
                                       n2s(max_tensor_count) + ", got " + n2s(tensor_count_));
    // meta_size and table_size are capped above, so these sums cannot overflow.
    table_offset_ = u64(hdr::table_offset);
    if (table_offset_ != required_meta_offset + meta_size_)
        fail(errc::size_mismatch, "table_offset at offset 40: expected " + n2s(required_meta_offset + meta_size_) +
                                      " (meta_offset + meta_size), got " + n2s(table_offset_));
    const std::uint64_t table_end = table_offset_ + table_size_;
    const std::uint64_t want_data_offset = align_up(table_end, alignment_);
    data_offset_ = u64(hdr::data_offset);
    if (data_offset_ != want_data_offset)
        fail(errc::size_mismatch, "data_offset at offset 56: expected " + n2s(want_data_offset) +
                                      " (table end " + n2s(table_end) + " aligned to " + n2s(alignment_) + "), got " +
                                      n2s(data_offset_));
    if (data_offset_ > size - checksum_size)
        fail(errc::size_mismatch, "data_offset " + n2s(data_offset_) + " lies beyond the end of the data (file_size - 8 = " +
                                      n2s(size - checksum_size) + ")");
    data_size_ = u64(hdr::data_size);
    if (data_size_ != size - checksum_size - data_offset_)
        fail(errc::size_mismatch, "data_size at offset 64: expected " + n2s(size - checksum_size - data_offset_) +
                                      " (file_size - 8 - data_offset), got " + n2s(data_size_));
    checksum_ = u64(static_cast<std::size_t>(size - checksum_size));
}

inline void reader::verify_checksum() {
    const std::uint64_t n = storage_->size() - checksum_size;
    const std::uint64_t got = xxh64(storage_->data(), static_cast<std::size_t>(n), 0);
    if (got != checksum_)
        fail(errc::checksum_mismatch, "checksum at offset " + std::to_string(n) + ": stored " + detail::hex64(checksum_) +
                                          ", computed XXH64 " + detail::hex64(got) +
                                          " (the file is corrupt or was modified)");
}

inline void reader::parse_metadata() {
    cursor c{this, required_meta_offset, required_meta_offset + meta_size_, "metadata section"};
    const std::uint64_t n = c.count("metadata count", min_meta_entry_size, max_meta_count);
    meta_.reserve(static_cast<std::size_t>(n));
    index_.reserve(static_cast<std::size_t>(n));
    for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t entry_pos = c.pos;
        const std::string label = "metadata entry #" + std::to_string(i);
        const std::string_view key = c.string(label + " key", min_key_len, max_key_len, errc::bad_string);
        const std::string kq = "metadata '" + detail::printable(key.data(), key.size()) + "'";
        const std::uint64_t type_pos = c.pos;
        const auto type = c.read<std::uint32_t>(kq + " type");
        if (!value_type_known(type))
            fail(errc::bad_metadata_type, kq + " type at offset " + std::to_string(type_pos) + ": expected 1..8, got " +
                                              std::to_string(type));
        meta_entry e{key, static_cast<value_type>(type), c.pos, 0};
        switch (e.type) {
            case value_type::u64:
            case value_type::i64: c.read<std::uint64_t>(kq + " value"); break;
            case value_type::f64: {
                const auto v = c.read<double>(kq + " value");
                if (!std::isfinite(v))
                    fail(errc::bad_value, kq + " F64 value at offset " + std::to_string(e.pos) +
                                              ": expected a finite number, got " + std::to_string(v));
                break;
            }
            case value_type::boolean: {
                const auto v = c.read<std::uint8_t>(kq + " value");
                if (v > 1)
                    fail(errc::bad_value, kq + " BOOL value at offset " + std::to_string(e.pos) +
                                              ": expected 0 or 1, got " + std::to_string(v));
                break;
            }
            case value_type::str: {
                const std::string_view s = c.string(kq + " value", 0, max_string_len, errc::limit_exceeded);
                e.pos = c.pos - s.size();
                e.count = s.size();
                break;
            }
            case value_type::arr_str: {
                e.count = c.count(kq + " ARR_STR count", 4);
                e.pos = c.pos;
                for (std::uint64_t k = 0; k < e.count; ++k)
                    c.string([&] { return kq + " element #" + std::to_string(k); }, 0, max_string_len,
                             errc::limit_exceeded);
                break;
            }
            case value_type::arr_i64: {
                e.count = c.count(kq + " ARR_I64 count", 8);
                e.pos = c.pos;
                c.pos += e.count * 8;  // bounded by count()
                break;
            }
            case value_type::arr_f32: {
                e.count = c.count(kq + " ARR_F32 count", 4);
                e.pos = c.pos;
                for (std::uint64_t k = 0; k < e.count; ++k) {
                    const auto v = detail::load_le<float>(at(e.pos + 4 * k));
                    if (!std::isfinite(v))
                        fail(errc::bad_value, kq + " ARR_F32 element #" + std::to_string(k) + " at offset " +
                                                  std::to_string(e.pos + 4 * k) + ": expected a finite number, got " +
                                                  std::to_string(v));
                }
                c.pos += e.count * 4;
                break;
            }
        }
        if (!index_.emplace(key, meta_.size()).second)
            fail(errc::duplicate_key, kq + " at offset " + std::to_string(entry_pos) + ": duplicate key");
        meta_.push_back(e);
    }
    if (c.pos != c.end)
        fail(errc::trailing_bytes, "metadata section: " + std::to_string(n) + " entries end at offset " +
                                       std::to_string(c.pos) + ", expected meta_size to end at " + std::to_string(c.end) +
                                       " (" + std::to_string(c.end - c.pos) + " trailing bytes)");
}

inline void reader::parse_table() {
    const auto n2s = [](std::uint64_t v) { return std::to_string(v); };
    const std::uint64_t table_end = table_offset_ + table_size_;
    cursor c{this, table_offset_, table_end, "tensor table"};
    if (tensor_count_ > table_size_ / min_table_entry_size)
        fail(errc::limit_exceeded, "tensor_count " + n2s(tensor_count_) + " needs at least " +
                                       n2s(std::uint64_t{tensor_count_} * min_table_entry_size) +
                                       " bytes of tensor table, table_size is " + n2s(table_size_));
    // padding between the table and the data section
    for (std::uint64_t p = table_end; p < data_offset_; ++p)
        if (*at(p) != std::byte{0})
            fail(errc::nonzero_padding, "padding byte at offset " + n2s(p) + " (between the tensor table and data): expected 0, got " +
                                            n2s(std::to_integer<unsigned>(*at(p))));
    tensors_.reserve(tensor_count_);
    tensor_index_.reserve(tensor_count_);
    std::uint64_t prev_end = 0;
    for (std::uint32_t i = 0; i < tensor_count_; ++i) {
        const std::uint64_t entry_pos = c.pos;
        const std::string_view name =
            c.string("tensor #" + n2s(i) + " name", min_name_len, max_name_len, errc::bad_string);
        const std::string tq = "tensor '" + std::string(name) + "'";
        tensor_view t;
        t.name = name;
        t.source = storage_->source;
        const std::uint64_t dtype_pos = c.pos;
        const auto dt = c.read<std::uint32_t>(tq + " dtype");
        t.layout = c.read<std::uint32_t>(tq + " layout");
        t.quant = c.read<std::uint32_t>(tq + " quant");
        t.ndim = c.read<std::uint32_t>(tq + " ndim");
        if (!dtype_known(dt))
            fail(errc::bad_tensor, tq + " dtype at offset " + n2s(dtype_pos) + ": expected 0..4 (f32, f16, bf16, i8, i32), got " + n2s(dt));
        t.type = static_cast<dtype>(dt);
        if (!layout_known(t.layout))
            fail(errc::bad_tensor, tq + " layout at offset " + n2s(dtype_pos + 4) +
                                       ": expected 0 (row-major), 1 (packed_n16), 2 (s8p16k4) or 3 (bf16p16k2), got " + n2s(t.layout) +
                                       " (unknown layout)");
        if (!quant_known(t.quant))
            fail(errc::bad_tensor, tq + " quant at offset " + n2s(dtype_pos + 8) + ": expected 0 or 1, got " + n2s(t.quant));
        if (t.quant == static_cast<std::uint32_t>(quant::per_row_symmetric) && t.type != dtype::i8)
            fail(errc::bad_tensor, tq + " quant at offset " + n2s(dtype_pos + 8) +
                                       ": per-row symmetric quantization needs dtype i8, got " + dtype_name(t.type));
        if (t.ndim < 1 || t.ndim > max_ndim)
            fail(errc::bad_tensor, tq + " ndim at offset " + n2s(dtype_pos + 12) + ": expected 1..4, got " + n2s(t.ndim));
        std::uint64_t numel = 1;
        bool overflow = false;
        for (std::uint32_t d = 0; d < t.ndim; ++d) {
            const std::uint64_t dim_pos = c.pos;
            t.dims[d] = c.read<std::uint64_t>(tq + " dims[" + n2s(d) + "]");
            if (t.dims[d] < 1)
                fail(errc::bad_tensor, tq + " dims[" + n2s(d) + "] at offset " + n2s(dim_pos) + ": expected >= 1, got 0");
            if (!detail::checked_mul(numel, t.dims[d], numel)) overflow = true;
        }
        std::uint64_t want_nbytes = 0;
        if (overflow || !detail::checked_mul(numel, dtype_size(t.type), want_nbytes))
            fail(errc::bad_tensor, tq + " at offset " + n2s(entry_pos) + ": shape " + t.shape_str() + " of " +
                                       dtype_name(t.type) + " overflows 64 bits");
        if (t.layout == static_cast<std::uint32_t>(bertlet::blob::layout::packed_n16)) {
            if (t.type != dtype::f32 || t.ndim != 2)
                fail(errc::bad_tensor, tq + " layout at offset " + n2s(dtype_pos + 4) +
                                           ": layout 1 (packed_n16) needs a 2-D f32 tensor, got " + t.shape_str() +
                                           " of " + dtype_name(t.type));
            if (!detail::packed_n16_nbytes(t.dims[0], t.dims[1], want_nbytes))
                fail(errc::bad_tensor, tq + " at offset " + n2s(entry_pos) + ": packed shape " + t.shape_str() +
                                           " overflows 64 bits");
        }
        if (t.layout == static_cast<std::uint32_t>(bertlet::blob::layout::s8p16k4)) {
            if (t.type != dtype::i8 || t.ndim != 2 ||
                t.quant != static_cast<std::uint32_t>(quant::per_row_symmetric))
                fail(errc::bad_tensor, tq + " layout at offset " + n2s(dtype_pos + 4) +
                                           ": layout 2 (s8p16k4) needs a 2-D i8 tensor with quant 1, got " +
                                           t.shape_str() + " of " + dtype_name(t.type) + " quant " + n2s(t.quant));
            if (!detail::s8p16k4_nbytes(t.dims[0], t.dims[1], want_nbytes))
                fail(errc::bad_tensor, tq + " at offset " + n2s(entry_pos) + ": packed shape " + t.shape_str() +
                                           " overflows 64 bits");
        }
        if (t.layout == static_cast<std::uint32_t>(bertlet::blob::layout::bf16p16k2)) {
            if (t.type != dtype::bf16 || t.ndim != 2 || t.quant != 0)
                fail(errc::bad_tensor, tq + " layout at offset " + n2s(dtype_pos + 4) +
                                           ": layout 3 (bf16p16k2) needs a 2-D bf16 tensor without quant, got " +
                                           t.shape_str() + " of " + dtype_name(t.type) + " quant " + n2s(t.quant));
            if (!detail::bf16p16k2_nbytes(t.dims[0], t.dims[1], want_nbytes))
                fail(errc::bad_tensor, tq + " at offset " + n2s(entry_pos) + ": packed shape " + t.shape_str() +
                                           " overflows 64 bits");
        }
        const std::uint64_t offset_pos = c.pos;
        t.offset = c.read<std::uint64_t>(tq + " offset");
        t.nbytes = c.read<std::uint64_t>(tq + " nbytes");
        if (t.nbytes != want_nbytes && t.layout == static_cast<std::uint32_t>(bertlet::blob::layout::packed_n16))
            fail(errc::bad_tensor, tq + " layout 1 (packed_n16): nbytes at offset " + n2s(offset_pos + 8) +
                                       ": expected " + n2s(want_nbytes) + " (ceil(" + n2s(t.dims[0]) + "/16)*16 x " +
                                       n2s(t.dims[1]) + " f32), got " + n2s(t.nbytes));
        if (t.nbytes != want_nbytes)
            fail(errc::bad_tensor, tq + " nbytes at offset " + n2s(offset_pos + 8) + ": expected " + n2s(want_nbytes) +
                                       " (shape " + t.shape_str() + " of " + dtype_name(t.type) + "), got " +
                                       n2s(t.nbytes));
        std::uint64_t want_offset = 0;
        if (!detail::checked_align_up(prev_end, alignment_, want_offset) || t.offset != want_offset)
            fail(errc::tensor_extent, tq + " at data offset " + n2s(t.offset) + ": expected offset " + n2s(want_offset) +
                                          (i == 0 ? std::string(" (the first tensor starts the data section)")
                                                  : std::string(" (aligned end of previous tensor)")));
        std::uint64_t end = 0;
        if (!detail::checked_add(t.offset, t.nbytes, end) || end > data_size_)
            fail(errc::tensor_extent, tq + " at data offset " + n2s(t.offset) + " with " + n2s(t.nbytes) +
                                          " bytes ends past data_size " + n2s(data_size_));
        for (std::uint64_t p = prev_end; p < t.offset; ++p)
            if (*at(data_offset_ + p) != std::byte{0})
                fail(errc::nonzero_padding, "padding byte at offset " + n2s(data_offset_ + p) + " (data offset " +
                                                n2s(p) + ", before " + tq + "): expected 0, got " +
                                                n2s(std::to_integer<unsigned>(*at(data_offset_ + p))));
        t.data = at(data_offset_ + t.offset);
        if (!tensor_index_.emplace(name, tensors_.size()).second)
            fail(errc::duplicate_tensor, tq + " at offset " + n2s(entry_pos) + ": duplicate tensor name");
        tensors_.push_back(t);
        prev_end = end;
    }
    if (c.pos != c.end)
        fail(errc::trailing_bytes, "tensor table: " + n2s(tensor_count_) + " entries end at offset " + n2s(c.pos) +
                                       ", expected table_size to end at " + n2s(c.end) + " (" + n2s(c.end - c.pos) +
                                       " trailing bytes)");
    if (prev_end != data_size_)
        fail(errc::trailing_bytes, "data section: the last tensor ends at data offset " + n2s(prev_end) +
                                       ", expected data_size " + n2s(data_size_) + " (" + n2s(data_size_ - prev_end) +
                                       " trailing bytes)");
    // quantized tensors need their companion scales
    for (const tensor_view& t : tensors_) {
        if (t.quant != static_cast<std::uint32_t>(quant::per_row_symmetric)) continue;
        const std::string sname = std::string(t.name) + ".scale";
        const tensor_view* s = find(sname);
        if (!s)
            fail(errc::bad_tensor, "tensor '" + std::string(t.name) + "' is per-row quantized but its scale tensor '" +
                                       sname + "' is missing");
        // packed int8 weights carry scales padded to whole panels (the kernels read 16 at a time)
        const bool packed = t.layout == static_cast<std::uint32_t>(bertlet::blob::layout::s8p16k4);
        const std::uint64_t rows = packed ? (t.dims[0] + 15) / 16 * 16 : t.dims[0];
        if (s->type != dtype::f32 || s->quant != 0 || s->layout != 0 || s->ndim != 1 || s->dims[0] != rows)
            fail(errc::bad_tensor, "tensor '" + sname + "': expected f32 (" + n2s(rows) + ") unquantized scales for '" +
                                       std::string(t.name) + "', got " + dtype_name(s->type) + " " + s->shape_str() +
                                       (s->quant ? " quantized" : ""));
        if (packed) {
            const std::string rname = std::string(t.name) + ".row_sum";
            const tensor_view* rs = find(rname);
            if (!rs || rs->type != dtype::i32 || rs->quant != 0 || rs->layout != 0 || rs->ndim != 1 ||
                rs->dims[0] != rows)
                fail(errc::bad_tensor, "tensor '" + std::string(t.name) + "' (layout 2) needs '" + rname +
                                           "' as i32 (" + n2s(rows) + ")" +
                                           (rs ? ", got " + std::string(dtype_name(rs->type)) + " " + rs->shape_str()
                                               : std::string(", which is missing")));
        }
    }
}

// ---- metadata lookups --------------------------------------------------------------------------------------------

inline const reader::meta_entry& reader::entry(std::string_view key) const {
    auto it = index_.find(key);
    if (it == index_.end())
        throw model_error(errc::missing_key,
                          std::string(source()) + ": metadata key '" + std::string(key) + "' not found");
    return meta_[it->second];
}

inline void reader::wrong_type(const meta_entry& e, value_type want) const {
    throw model_error(errc::wrong_key_type, std::string(source()) + ": metadata key '" + std::string(e.key) +
                                                "' has type " + value_type_name(e.type) + ", expected " +
                                                value_type_name(want));
}

inline const reader::meta_entry& reader::entry(std::string_view key, value_type want) const {
    const meta_entry& e = entry(key);
    if (e.type != want) wrong_type(e, want);
    return e;
}

inline std::uint64_t reader::get_u64(std::string_view key) const {
    const meta_entry& e = entry(key);
    if (e.type == value_type::u64) return detail::load_le<std::uint64_t>(at(e.pos));
    if (e.type == value_type::i64) {
        const auto v = detail::load_le<std::int64_t>(at(e.pos));
        if (v >= 0) return static_cast<std::uint64_t>(v);
        throw model_error(errc::wrong_key_type, std::string(source()) + ": metadata key '" + std::string(key) +
                                                    "' has type I64 with the negative value " + std::to_string(v) +
                                                    ", expected U64");
    }
    wrong_type(e, value_type::u64);
}

inline std::int64_t reader::get_i64(std::string_view key) const {
    const meta_entry& e = entry(key);
    if (e.type == value_type::i64) return detail::load_le<std::int64_t>(at(e.pos));
    if (e.type == value_type::u64) {
        const auto v = detail::load_le<std::uint64_t>(at(e.pos));
        if (v <= static_cast<std::uint64_t>(INT64_MAX)) return static_cast<std::int64_t>(v);
        throw model_error(errc::wrong_key_type, std::string(source()) + ": metadata key '" + std::string(key) +
                                                    "' has type U64 with the value " + std::to_string(v) +
                                                    " that does not fit I64");
    }
    wrong_type(e, value_type::i64);
}

inline double reader::get_f64(std::string_view key) const {
    return detail::load_le<double>(at(entry(key, value_type::f64).pos));
}

inline bool reader::get_bool(std::string_view key) const {
    return std::to_integer<unsigned>(*at(entry(key, value_type::boolean).pos)) != 0;
}

inline std::string_view reader::get_str(std::string_view key) const {
    const meta_entry& e = entry(key, value_type::str);
    return std::string_view(reinterpret_cast<const char*>(at(e.pos)), static_cast<std::size_t>(e.count));
}

inline std::vector<std::string_view> reader::get_str_array(std::string_view key) const {
    const meta_entry& e = entry(key, value_type::arr_str);
    std::vector<std::string_view> out;
    out.reserve(static_cast<std::size_t>(e.count));
    std::uint64_t p = e.pos;
    for (std::uint64_t i = 0; i < e.count; ++i) {
        const auto n = detail::load_le<std::uint32_t>(at(p));
        out.emplace_back(reinterpret_cast<const char*>(at(p + 4)), n);
        p += 4 + std::uint64_t{n};
    }
    return out;
}

inline std::vector<std::int64_t> reader::get_i64_array(std::string_view key) const {
    const meta_entry& e = entry(key, value_type::arr_i64);
    std::vector<std::int64_t> out(static_cast<std::size_t>(e.count));
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = detail::load_le<std::int64_t>(at(e.pos + 8 * i));
    return out;
}

inline std::vector<float> reader::get_f32_array(std::string_view key) const {
    const meta_entry& e = entry(key, value_type::arr_f32);
    std::vector<float> out(static_cast<std::size_t>(e.count));
    if (detail::host_is_little_endian()) {
        if (!out.empty()) std::memcpy(out.data(), at(e.pos), out.size() * sizeof(float));
    } else {
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = detail::load_le<float>(at(e.pos + 4 * i));
    }
    return out;
}

inline std::size_t reader::array_size(std::string_view key) const {
    const meta_entry& e = entry(key);
    if (e.type != value_type::arr_str && e.type != value_type::arr_i64 && e.type != value_type::arr_f32)
        throw model_error(errc::wrong_key_type, std::string(source()) + ": metadata key '" + std::string(key) +
                                                    "' has type " + value_type_name(e.type) +
                                                    ", expected an array (ARR_STR, ARR_I64 or ARR_F32)");
    return static_cast<std::size_t>(e.count);
}

inline std::vector<std::string_view> reader::keys() const {
    std::vector<std::string_view> out;
    out.reserve(meta_.size());
    for (const meta_entry& e : meta_) out.push_back(e.key);
    return out;
}

}  // namespace bertlet::blob
