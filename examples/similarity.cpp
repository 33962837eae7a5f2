// bertlet-similarity: cosine similarity of sentence pairs as JSON lines.
#include <bertlet/bertlet.hpp>

#include <cmath>
#include <iostream>

#include "cli_common.hpp"

static const char* kUsage =
    "usage: bertlet-similarity --model FILE [--jsonl] [--batch N]\n"
    "\n"
    "Reads sentence pairs from stdin, one pair per line as TEXT_A<TAB>TEXT_B (or, with --jsonl,\n"
    "{\"text\": \"...\", \"text_pair\": \"...\"}), and prints one JSON object per line: {\"cosine\": float}\n"
    "\n"
    "  --model FILE  a .bertlet blob (default: $BERTLET_MODEL)\n"
    "  --batch N     pairs embedded together (packed, no padding); default 32\n"
    "  --threads N   intra-op threads per forward pass (default 1)\n"
    "  --fp32-attention  int8 models: keep attention's matmuls fp32 (default: int8 on AVX-512 VNNI CPUs, else bf16\n"
    "                    on AVX512_BF16 CPUs)\n"
    "  --bf16-attention  int8 models: bf16 attention matmuls even where int8 ones exist (AVX512_BF16)\n"
    "  --int8-attention  int8 models: int8 attention matmuls (the default where AVX-512 VNNI exists)\n"
    "  --arch NAME   kernel path: scalar, avx2, avx512, neon (default: the best this CPU has)\n"
    "Errors go to stderr as one line; the exit code is 1 (error) or 2 (usage).\n";

int main(int argc, char** argv) {
    return cli::run("bertlet-similarity", [&] {
        const cli::options o = cli::parse(argc, argv, kUsage);
        if (!o.texts.empty()) throw cli::usage_error("pairs are read from stdin; got positional arguments");
        const auto lo = cli::load_options_from<bertlet::load_options>(o);
        const auto model = bertlet::embedder::load(o.model, lo);
        const std::size_t dim = model.dim();
        bertlet::embed_workspace ws;
        std::vector<std::string> batch;  // a0, b0, a1, b1, ...
        std::vector<float> out;
        std::string line_out;
        auto flush = [&] {
            if (batch.empty()) return;
            out.resize(batch.size() * dim);
            model.embed_batch(batch.data(), batch.size(), out.data(), ws);
            for (std::size_t p = 0; p < batch.size() / 2; ++p) {
                const float* a = out.data() + (2 * p) * dim;
                const float* b = out.data() + (2 * p + 1) * dim;
                double ab = 0, aa = 0, bb = 0;
                for (std::size_t k = 0; k < dim; ++k) {
                    ab += static_cast<double>(a[k]) * b[k];
                    aa += static_cast<double>(a[k]) * a[k];
                    bb += static_cast<double>(b[k]) * b[k];
                }
                const double den = std::sqrt(aa) * std::sqrt(bb);
                const double cos = den > 0 ? ab / den : 0.0;
                line_out.assign("{\"cosine\":");
                cli::write_float(line_out, static_cast<float>(cos));
                line_out += "}\n";
                std::fwrite(line_out.data(), 1, line_out.size(), stdout);
            }
            batch.clear();
        };
        cli::record r;
        std::size_t line_no = 0;
        while (cli::next_record(std::cin, o.jsonl, true, r, line_no)) {
            if (!r.text_pair)
                throw std::runtime_error("stdin line " + std::to_string(line_no) + ": no \"text_pair\"");
            batch.push_back(std::move(r.text));
            batch.push_back(std::move(*r.text_pair));
            if (batch.size() >= 2 * o.batch) flush();
        }
        flush();
        std::fflush(stdout);
        return 0;
    });
}
