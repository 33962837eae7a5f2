// bertlet — one exception hierarchy with stable ids.
//
// Every error bertlet throws derives from bertlet::error. what() starts with a stable id,
// "[bertlet.<area>.<number>] ", followed by the context (file, tensor, shape, byte offset, character).
// Ids never change meaning once released; new ones are appended.
//
//   area       class             ids
//   io         io_error          001-099  file open / stat / mmap
//   blob       blob_error        100-199  weight-blob format violations (docs/FORMAT.md)
//   model      model_error       200-299  config / tensor semantics, verify failures
//   text       text_error        300-399  tokenizer input problems
//   input      input_error       400-499  bad arguments to the public API
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace bertlet {

class error : public std::runtime_error {
public:
    error(const char* area, int id, const std::string& msg)
        : std::runtime_error(format(area, id, msg)), id_(id) {}
    int id() const noexcept { return id_; }

private:
    static std::string format(const char* area, int id, const std::string& msg) {
        std::string num = std::to_string(id);
        while (num.size() < 3) num.insert(num.begin(), '0');
        return "[bertlet." + std::string(area) + "." + num + "] " + msg;
    }
    int id_;
};

class io_error : public error {
public:
    io_error(int id, const std::string& msg) : error("io", id, msg) {}
};

class blob_error : public error {
public:
    blob_error(int id, const std::string& msg) : error("blob", id, msg) {}
};

class model_error : public error {
public:
    model_error(int id, const std::string& msg) : error("model", id, msg) {}
};

class text_error : public error {
public:
    text_error(int id, const std::string& msg) : error("text", id, msg) {}
};

class input_error : public error {
public:
    input_error(int id, const std::string& msg) : error("input", id, msg) {}
};

// Stable ids. Keep in sync with docs/FORMAT.md and the tests that assert them.
namespace errc {
// io
inline constexpr int open_failed = 1;
inline constexpr int stat_failed = 2;
inline constexpr int mmap_failed = 3;
inline constexpr int read_failed = 4;
// blob
inline constexpr int truncated = 100;         // fewer bytes than a header/field needs
inline constexpr int bad_magic = 101;
inline constexpr int bad_version = 102;
inline constexpr int size_mismatch = 103;     // header sizes/offsets disagree with the file or each other
inline constexpr int checksum_mismatch = 104;
inline constexpr int bad_alignment = 105;
inline constexpr int limit_exceeded = 106;    // a count/length over its cap or over the bytes remaining
inline constexpr int bad_metadata_type = 107;
inline constexpr int duplicate_key = 108;
inline constexpr int bad_string = 109;        // bad UTF-8 / empty or over-long key or name
inline constexpr int bad_value = 110;         // non-finite float, bool not 0/1
inline constexpr int bad_tensor = 111;        // unknown dtype/layout/quant, bad ndim/dims, nbytes mismatch, overflow
inline constexpr int tensor_extent = 112;     // gap, overlap, misaligned or out of data section
inline constexpr int duplicate_tensor = 113;
inline constexpr int nonzero_padding = 114;
inline constexpr int trailing_bytes = 115;    // section not filled exactly
// model
inline constexpr int missing_key = 200;
inline constexpr int wrong_key_type = 201;
inline constexpr int bad_config = 202;        // hidden % heads, zero sizes, unsupported architecture/activation
inline constexpr int missing_tensor = 203;
inline constexpr int tensor_shape = 204;
inline constexpr int tensor_dtype = 205;
inline constexpr int vocab_mismatch = 206;    // vocab size vs embedding rows, special id >= vocab, duplicate token
inline constexpr int verify_failed = 207;
inline constexpr int unsupported = 208;       // a described feature this build cannot run (pooling mode, layout)
// text
inline constexpr int invalid_utf8 = 300;      // only with utf8_policy::strict
// input
inline constexpr int bad_argument = 400;
inline constexpr int too_long = 401;
}  // namespace errc

}  // namespace bertlet
