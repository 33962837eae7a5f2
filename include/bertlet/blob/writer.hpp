// bertlet — writer of .bertlet weight blobs (docs/FORMAT.md).
//
// Mirrors tools/bertlet_tools/blob.py `encode()`: the same metadata (in the same insertion order) and the same
// tensors give byte-identical output. Note that blob.py stores every non-negative Python int as U64, so write such
// values with set_u64 to match it (set_i64 always writes I64).
//
// Besides valid blobs, tests use the writer to craft malformed ones: set_validation(false) turns off every check
// (dims, nbytes, duplicates, alignment range, empty tensor list), add_raw_metadata() appends an entry verbatim, and
// encode() reports the absolute offset of every field so tests can patch bytes and call refresh_checksum().
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "bertlet/blob/format.hpp"
#include "bertlet/blob/xxhash.hpp"
#include "bertlet/error.hpp"

namespace bertlet::blob {

// Recompute the trailing XXH64 of a complete blob in place (bytes.size() >= 8).
inline void refresh_checksum(std::vector<std::byte>& bytes) {
    if (bytes.size() < checksum_size) return;
    const std::size_t n = bytes.size() - checksum_size;
    detail::store_le<std::uint64_t>(bytes.data() + n, xxh64(bytes.data(), n, 0));
}

// Build a complete blob from already-encoded sections: a header whose extents are consistent with them, the
// metadata and table bytes, zero padding to `alignment`, `data` (which must already contain the inter-tensor
// padding) and the checksum. `alignment` must be > 0; no other checks (a tool for crafting test blobs).
inline std::vector<std::byte> assemble_blob(const std::vector<std::byte>& meta, const std::vector<std::byte>& table,
                                            const std::vector<std::byte>& data, std::uint32_t tensor_count,
                                            std::uint32_t alignment, std::uint32_t version_minor = format_version_minor) {
    if (alignment == 0) throw input_error(errc::bad_argument, "assemble_blob: alignment must be > 0");
    const std::uint64_t meta_offset = header_size;
    const std::uint64_t table_offset = meta_offset + meta.size();
    const std::uint64_t data_offset = align_up(table_offset + table.size(), alignment);
    const std::uint64_t file_size = data_offset + data.size() + checksum_size;
    std::vector<std::byte> out(static_cast<std::size_t>(file_size), std::byte{0});
    std::byte* b = out.data();
    std::memcpy(b, magic, sizeof magic);
    detail::store_le<std::uint32_t>(b + hdr::version_major, format_version_major);
    detail::store_le<std::uint32_t>(b + hdr::version_minor, version_minor);
    detail::store_le<std::uint64_t>(b + hdr::file_size, file_size);
    detail::store_le<std::uint64_t>(b + hdr::meta_offset, meta_offset);
    detail::store_le<std::uint64_t>(b + hdr::meta_size, meta.size());
    detail::store_le<std::uint64_t>(b + hdr::table_offset, table_offset);
    detail::store_le<std::uint64_t>(b + hdr::table_size, table.size());
    detail::store_le<std::uint64_t>(b + hdr::data_offset, data_offset);
    detail::store_le<std::uint64_t>(b + hdr::data_size, data.size());
    detail::store_le<std::uint32_t>(b + hdr::tensor_count, tensor_count);
    detail::store_le<std::uint32_t>(b + hdr::alignment, alignment);
    if (!meta.empty()) std::memcpy(b + meta_offset, meta.data(), meta.size());
    if (!table.empty()) std::memcpy(b + table_offset, table.data(), table.size());
    if (!data.empty()) std::memcpy(b + data_offset, data.data(), data.size());
    refresh_checksum(out);
    return out;
}

// Absolute file offsets of one tensor's table fields and data (for tests that patch bytes).
struct tensor_fields {
    std::uint64_t entry, dtype, layout, quant, ndim, dims, offset, nbytes, data;
};

struct encoded_blob {
    std::vector<std::byte> bytes;
    std::uint64_t meta_offset = 0, meta_size = 0, table_offset = 0, table_size = 0, data_offset = 0, data_size = 0;
    std::vector<std::uint64_t> meta_entries;  // absolute offset of each metadata entry (its key length)
    std::vector<tensor_fields> tensors;
    // the sections as encoded (inputs of assemble_blob)
    std::vector<std::byte> meta, table, data;
};

class writer {
public:
    // ---- metadata (insertion order is kept; setting an existing key replaces its value in place, like a dict) ----
    writer& set_u64(const std::string& key, std::uint64_t v) { return put(key, value_type::u64, le(v)); }
    writer& set_i64(const std::string& key, std::int64_t v) { return put(key, value_type::i64, le(v)); }
    writer& set_f64(const std::string& key, double v) {
        if (validate_ && !std::isfinite(v)) throw blob_error(errc::bad_value, "metadata '" + key + "': non-finite float");
        return put(key, value_type::f64, le(v));
    }
    writer& set_bool(const std::string& key, bool v) {
        return put(key, value_type::boolean, {v ? std::byte{1} : std::byte{0}});
    }
    writer& set_str(const std::string& key, const std::string& v) {
        check_string(key, v, "value");
        std::vector<std::byte> b;
        append_string(b, v);
        return put(key, value_type::str, std::move(b));
    }
    writer& set_str_array(const std::string& key, const std::vector<std::string>& v) {
        std::vector<std::byte> b = le<std::uint64_t>(v.size());
        for (const std::string& s : v) {
            check_string(key, s, "element");
            append_string(b, s);
        }
        return put(key, value_type::arr_str, std::move(b));
    }
    writer& set_i64_array(const std::string& key, const std::vector<std::int64_t>& v) {
        std::vector<std::byte> b = le<std::uint64_t>(v.size());
        for (std::int64_t x : v) append(b, le(x));
        return put(key, value_type::arr_i64, std::move(b));
    }
    writer& set_f32_array(const std::string& key, const std::vector<float>& v) {
        std::vector<std::byte> b = le<std::uint64_t>(v.size());
        for (float x : v) {
            if (validate_ && !std::isfinite(x))
                throw blob_error(errc::bad_value, "metadata '" + key + "': non-finite float");
            append(b, le(x));
        }
        return put(key, value_type::arr_f32, std::move(b));
    }
    // Append an entry verbatim: key bytes, the raw type id and value bytes (no checks, no de-duplication).
    writer& add_raw_metadata(const std::string& key, std::uint32_t type, std::vector<std::byte> value) {
        meta_.push_back({key, type, std::move(value)});
        return *this;
    }

    // ---- tensors ----
    // `data` holds `nbytes` bytes of little-endian elements; with validation on, nbytes must equal
    // product(dims) × dtype size, dims must have 1..4 entries >= 1 and the name 1..255 bytes of UTF-8.
    writer& add_tensor(const std::string& name, dtype type, std::uint32_t layout, std::uint32_t quant,
                       const std::vector<std::uint64_t>& dims, const void* data, std::uint64_t nbytes) {
        if (validate_) {
            if (name.size() < min_name_len || name.size() > max_name_len || !detail::valid_utf8(name.data(), name.size()))
                throw blob_error(errc::bad_string, "tensor '" + name + "': name must be 1..255 bytes of UTF-8");
            if (!dtype_known(static_cast<std::uint32_t>(type)))
                throw blob_error(errc::bad_tensor, "tensor '" + name + "': unknown dtype " +
                                                       std::to_string(static_cast<std::uint32_t>(type)));
            bool ok = !dims.empty() && dims.size() <= max_ndim;
            std::uint64_t n = dtype_size(type);
            for (std::uint64_t d : dims) ok = ok && d >= 1 && detail::checked_mul(n, d, n);
            if (ok && layout == static_cast<std::uint32_t>(bertlet::blob::layout::packed_n16))
                ok = type == dtype::f32 && dims.size() == 2 && detail::packed_n16_nbytes(dims[0], dims[1], n);
            if (ok && layout == static_cast<std::uint32_t>(bertlet::blob::layout::s8p16k4))
                ok = type == dtype::i8 && dims.size() == 2 && detail::s8p16k4_nbytes(dims[0], dims[1], n);
            if (ok && layout == static_cast<std::uint32_t>(bertlet::blob::layout::bf16p16k2))
                ok = type == dtype::bf16 && dims.size() == 2 && detail::bf16p16k2_nbytes(dims[0], dims[1], n);
            if (!ok) throw blob_error(errc::bad_tensor, "tensor '" + name + "': bad shape");
            if (n != nbytes)
                throw blob_error(errc::bad_tensor, "tensor '" + name + "': nbytes " + std::to_string(nbytes) +
                                                       " does not match its shape (" + std::to_string(n) + ")");
        }
        tensor_entry t{name, static_cast<std::uint32_t>(type), layout, quant, dims, {}};
        t.data.resize(static_cast<std::size_t>(nbytes));
        if (nbytes) std::memcpy(t.data.data(), data, static_cast<std::size_t>(nbytes));
        tensors_.push_back(std::move(t));
        return *this;
    }
    // Row-major f32 convenience.
    writer& add_f32(const std::string& name, const std::vector<std::uint64_t>& dims, const std::vector<float>& v) {
        std::vector<std::byte> b;
        for (float x : v) append(b, le(x));
        return add_tensor(name, dtype::f32, 0, 0, dims, b.data(), b.size());
    }

    // Turn every check off (for crafting malformed blobs in tests).
    writer& set_validation(bool on) {
        validate_ = on;
        return *this;
    }

    std::size_t tensor_count() const noexcept { return tensors_.size(); }
    std::size_t metadata_count() const noexcept { return meta_.size(); }

    // ---- output ----
    encoded_blob encode(std::uint32_t alignment = default_alignment) const {
        if (validate_) {
            if (!is_pow2(alignment) || alignment < min_alignment || alignment > max_alignment)
                throw blob_error(errc::bad_alignment,
                                 "alignment " + std::to_string(alignment) + " is not a power of two in 16..4096");
            if (tensors_.empty()) throw blob_error(errc::limit_exceeded, "a blob needs at least one tensor");
            if (tensors_.size() > max_tensor_count)
                throw blob_error(errc::limit_exceeded, "more than " + std::to_string(max_tensor_count) + " tensors");
            std::unordered_set<std::string> names;
            for (const tensor_entry& t : tensors_)
                if (!names.insert(t.name).second)
                    throw blob_error(errc::duplicate_tensor, "duplicate tensor name '" + t.name + "'");
        } else if (alignment == 0) {
            throw input_error(errc::bad_argument, "writer::encode: alignment must be > 0");
        }
        encoded_blob out;
        // metadata
        append(out.meta, le<std::uint64_t>(meta_.size()));
        std::vector<std::uint64_t> meta_rel;
        for (const meta_entry& m : meta_) {
            meta_rel.push_back(out.meta.size());
            append_string(out.meta, m.key);
            append(out.meta, le(m.type));
            append(out.meta, m.value);
        }
        // table and data
        std::vector<tensor_fields> rel;
        std::uint64_t off = 0;
        for (const tensor_entry& t : tensors_) {
            off = align_up(off, alignment);
            tensor_fields f{};
            f.entry = out.table.size();
            append_string(out.table, t.name);
            f.dtype = out.table.size();
            append(out.table, le(t.dtype));
            f.layout = out.table.size();
            append(out.table, le(t.layout));
            f.quant = out.table.size();
            append(out.table, le(t.quant));
            f.ndim = out.table.size();
            append(out.table, le<std::uint32_t>(static_cast<std::uint32_t>(t.dims.size())));
            f.dims = out.table.size();
            for (std::uint64_t d : t.dims) append(out.table, le(d));
            f.offset = out.table.size();
            append(out.table, le(off));
            f.nbytes = out.table.size();
            append(out.table, le<std::uint64_t>(t.data.size()));
            f.data = off;
            out.data.resize(static_cast<std::size_t>(off), std::byte{0});
            append(out.data, t.data);
            off += t.data.size();
            rel.push_back(f);
        }
        out.bytes = assemble_blob(out.meta, out.table, out.data, static_cast<std::uint32_t>(tensors_.size()), alignment);
        out.meta_offset = header_size;
        out.meta_size = out.meta.size();
        out.table_offset = out.meta_offset + out.meta_size;
        out.table_size = out.table.size();
        out.data_offset = align_up(out.table_offset + out.table_size, alignment);
        out.data_size = out.data.size();
        for (std::uint64_t r : meta_rel) out.meta_entries.push_back(out.meta_offset + r);
        for (tensor_fields f : rel) {
            for (std::uint64_t* p : {&f.entry, &f.dtype, &f.layout, &f.quant, &f.ndim, &f.dims, &f.offset, &f.nbytes})
                *p += out.table_offset;
            f.data += out.data_offset;
            out.tensors.push_back(f);
        }
        return out;
    }

    std::vector<std::byte> bytes(std::uint32_t alignment = default_alignment) const {
        return encode(alignment).bytes;
    }

    void write_file(const std::string& path, std::uint32_t alignment = default_alignment) const {
        const std::vector<std::byte> b = bytes(alignment);
        std::ofstream f(path, std::ios::binary | std::ios::trunc);
        if (!f) throw io_error(errc::open_failed, path + ": cannot open for writing");
        f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
        f.close();
        if (!f) throw io_error(errc::read_failed, path + ": cannot write " + std::to_string(b.size()) + " bytes");
    }

private:
    struct meta_entry {
        std::string key;
        std::uint32_t type;
        std::vector<std::byte> value;
    };
    struct tensor_entry {
        std::string name;
        std::uint32_t dtype, layout, quant;
        std::vector<std::uint64_t> dims;
        std::vector<std::byte> data;
    };

    template <class T>
    static std::vector<std::byte> le(T v) {
        std::vector<std::byte> b(sizeof(T));
        detail::store_le<T>(b.data(), v);
        return b;
    }
    static void append(std::vector<std::byte>& out, const std::vector<std::byte>& b) {
        out.insert(out.end(), b.begin(), b.end());
    }
    static void append_string(std::vector<std::byte>& out, const std::string& s) {
        append(out, le<std::uint32_t>(static_cast<std::uint32_t>(s.size())));
        const auto* p = reinterpret_cast<const std::byte*>(s.data());
        out.insert(out.end(), p, p + s.size());
    }
    void check_string(const std::string& key, const std::string& s, const char* what) const {
        if (!validate_) return;
        if (s.size() > max_string_len)
            throw blob_error(errc::limit_exceeded, "metadata '" + key + "': string " + what + " over 1 MiB");
        if (!detail::valid_utf8(s.data(), s.size()))
            throw blob_error(errc::bad_string, "metadata '" + key + "': string " + what + " is not valid UTF-8");
    }
    writer& put(const std::string& key, value_type type, std::vector<std::byte> value) {
        if (validate_ && (key.size() < min_key_len || key.size() > max_key_len || !detail::valid_utf8(key.data(), key.size())))
            throw blob_error(errc::bad_string, "metadata key '" + key + "' must be 1..256 bytes of UTF-8");
        for (meta_entry& m : meta_) {
            if (m.key == key) {
                m.type = static_cast<std::uint32_t>(type);
                m.value = std::move(value);
                return *this;
            }
        }
        meta_.push_back({key, static_cast<std::uint32_t>(type), std::move(value)});
        return *this;
    }

    std::vector<meta_entry> meta_;
    std::vector<tensor_entry> tensors_;
    bool validate_ = true;
};

}  // namespace bertlet::blob
