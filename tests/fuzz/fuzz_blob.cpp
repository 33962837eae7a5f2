// libFuzzer target for the .bertlet reader: parses arbitrary bytes from memory (checksum checking off, so the
// fuzzer reaches the metadata/table/extent checks) and, when they parse, touches every key and tensor.
// Any exception other than bertlet::error, any crash and any sanitizer report is a bug.
//
// Build and run with clang (from the repository root):
//   clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude tests/fuzz/fuzz_blob.cpp -o /tmp/fuzz_blob
//   mkdir -p /tmp/fuzz_blob_corpus && /tmp/fuzz_blob -max_total_time=60 -max_len=8192 /tmp/fuzz_blob_corpus tests/data
// (the seed is tests/data/tiny.bertlet; set BERTLET_FUZZ_CHECKSUM=1 in the environment to also verify checksums).
//
// Without libFuzzer (e.g. g++), build a driver that replays files given on the command line:
//   g++ -std=c++17 -g -O1 -fsanitize=address,undefined -DBERTLET_FUZZ_STANDALONE -Iinclude tests/fuzz/fuzz_blob.cpp -o /tmp/fuzz_blob_replay
//   /tmp/fuzz_blob_replay tests/data/tiny.bertlet
#include <bertlet/blob/reader.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

namespace {

std::uint64_t touch(const bertlet::blob::reader& r) {
    namespace bb = bertlet::blob;
    std::uint64_t acc = 0;
    for (std::string_view k : r.keys()) {
        switch (r.type_of(k)) {
            case bb::value_type::u64: acc += r.get_u64(k); break;
            case bb::value_type::i64: acc += static_cast<std::uint64_t>(r.get_i64(k)); break;
            case bb::value_type::f64: acc += r.get_f64(k) > 0; break;
            case bb::value_type::boolean: acc += r.get_bool(k); break;
            case bb::value_type::str: acc += r.get_str(k).size(); break;
            case bb::value_type::arr_str:
                for (std::string_view s : r.get_str_array(k)) acc += s.size();
                break;
            case bb::value_type::arr_i64:
                for (std::int64_t v : r.get_i64_array(k)) acc += static_cast<std::uint64_t>(v);
                break;
            case bb::value_type::arr_f32:
                for (float v : r.get_f32_array(k)) acc += v > 0;
                break;
        }
    }
    for (const bb::tensor_view& t : r.tensors()) {
        acc += t.numel() + t.shape_str().size();
        for (std::uint64_t i = 0; i < t.nbytes; ++i) acc += std::to_integer<unsigned>(t.data[i]);
    }
    return acc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static const bool check = std::getenv("BERTLET_FUZZ_CHECKSUM") != nullptr;
    std::vector<std::byte> bytes(size);
    if (size) std::memcpy(bytes.data(), data, size);
    bertlet::blob::load_options opt;
    opt.check_checksum = check;
    try {
        const auto r = bertlet::blob::reader::from_bytes(std::move(bytes), opt);
        volatile std::uint64_t sink = touch(r);
        (void)sink;
    } catch (const bertlet::error&) {
        // expected for malformed input
    }
    return 0;
}

#ifdef BERTLET_FUZZ_STANDALONE
#include <fstream>
#include <iostream>
#include <iterator>
int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::ifstream f(argv[i], std::ios::binary);
        const std::vector<char> c((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(c.data()), c.size());
        std::cout << argv[i] << ": ok\n";
    }
    return 0;
}
#endif
