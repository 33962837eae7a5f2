// bertlet-embed: sentence embeddings as JSON lines.
#include <bertlet/bertlet.hpp>

#include <iostream>

#include "cli_common.hpp"

static const char* kUsage =
    "usage: bertlet-embed --model FILE [--jsonl] [--batch N] [--verify] [TEXT...]\n"
    "\n"
    "Embeds each TEXT, or each line of stdin when no TEXT is given, and prints one JSON object per line:\n"
    "  {\"embedding\": [float, ...], \"tokens\": N}\n"
    "\n"
    "  --model FILE  a .bertlet blob (default: $BERTLET_MODEL)\n"
    "  --jsonl       stdin lines are JSON objects {\"text\": \"...\"} (for texts with newlines or tabs)\n"
    "  --batch N     texts embedded together (packed, no padding); default 32\n"
    "  --verify      re-run the blob's reference vectors before embedding\n"
    "  --threads N   intra-op threads per forward pass (default 1)\n"
    "  --fp32-attention  int8 models: keep attention's matmuls fp32 (default: int8 on AVX-512 VNNI CPUs, else bf16\n"
    "                    on AVX512_BF16 CPUs)\n"
    "  --bf16-attention  int8 models: bf16 attention matmuls even where int8 ones exist (AVX512_BF16)\n"
    "  --int8-attention  int8 models: int8 attention matmuls (the default where AVX-512 VNNI exists)\n"
    "  --arch NAME   kernel path: scalar, avx2, avx512, neon (default: the best this CPU has)\n"
    "Errors go to stderr as one line; the exit code is 1 (error) or 2 (usage).\n";

int main(int argc, char** argv) {
    return cli::run("bertlet-embed", [&] {
        const cli::options o = cli::parse(argc, argv, kUsage);
        const auto lo = cli::load_options_from<bertlet::load_options>(o);
        const auto model = bertlet::embedder::load(o.model, lo);
        const std::size_t dim = model.dim();
        bertlet::embed_workspace ws;
        std::vector<std::string> batch;
        std::vector<float> out;
        std::string line_out;
        std::vector<std::size_t> counts;
        auto flush = [&] {
            if (batch.empty()) return;
            out.resize(batch.size() * dim);
            counts.resize(batch.size());
            model.embed_batch(batch.data(), batch.size(), out.data(), ws, bertlet::embedder::default_batch_tokens,
                              counts.data());
            for (std::size_t i = 0; i < batch.size(); ++i) {
                line_out.assign("{\"embedding\":[");
                for (std::size_t k = 0; k < dim; ++k) {
                    if (k) line_out += ',';
                    cli::write_float(line_out, out[i * dim + k]);
                }
                line_out += "],\"tokens\":" + std::to_string(counts[i]) + "}\n";
                std::fwrite(line_out.data(), 1, line_out.size(), stdout);
            }
            batch.clear();
        };
        if (!o.texts.empty()) {
            for (const auto& t : o.texts) {
                batch.push_back(t);
                if (batch.size() == o.batch) flush();
            }
        } else {
            cli::record r;
            std::size_t line_no = 0;
            while (cli::next_record(std::cin, o.jsonl, false, r, line_no)) {
                batch.push_back(std::move(r.text));
                if (batch.size() == o.batch) flush();
            }
        }
        flush();
        std::fflush(stdout);
        return 0;
    });
}
