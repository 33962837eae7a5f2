// bertlet-coldstart — what a fresh process (a Lambda cold start) pays: load + validate a blob, embed one sentence,
// exit. bench/compare.py spawns it and measures spawn -> exit wall time and the child's peak RSS itself; this binary
// prints the in-process part (main() entry -> first embedding ready) as one JSON line, plus the embedding so the
// harness can check it against Hugging Face.
//
//   bertlet-coldstart --model FILE [--text "..."] [--no-embedding]
#include <bertlet/bertlet.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
    const auto t0 = std::chrono::steady_clock::now();  // first statement: main() entry
    auto ms = [&](std::chrono::steady_clock::time_point a, std::chrono::steady_clock::time_point b) {
        return std::chrono::duration<double, std::milli>(b - a).count();
    };
    std::string model, text = "A man is playing a large flute while the audience watches from the riverbank.";
    bool print_embedding = true;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--model" && i + 1 < argc) model = argv[++i];
        else if (a == "--text" && i + 1 < argc) text = argv[++i];
        else if (a == "--no-embedding") print_embedding = false;
        else {
            std::cerr << "usage: bertlet-coldstart --model FILE [--text TEXT] [--no-embedding]\n";
            return 2;
        }
    }
    if (model.empty()) {
        std::cerr << "bertlet-coldstart: --model is required\n";
        return 2;
    }
    try {
        const auto m = bertlet::embedder::load(model);  // default options: mmap + full validation + checksum
        const auto t1 = std::chrono::steady_clock::now();
        const std::vector<float> v = m.embed(text);
        const auto t2 = std::chrono::steady_clock::now();
        std::string out = "{\"kind\":\"cold\",\"system\":\"bertlet\",\"main_to_ready_ms\":" +
                          std::to_string(ms(t0, t2)) + ",\"load_ms\":" + std::to_string(ms(t0, t1)) +
                          ",\"first_embed_ms\":" + std::to_string(ms(t1, t2));
        if (print_embedding) {
            out += ",\"embedding\":[";
            char b[32];
            for (std::size_t i = 0; i < v.size(); ++i) {
                std::snprintf(b, sizeof b, "%s%.8g", i ? "," : "", static_cast<double>(v[i]));
                out += b;
            }
            out += "]";
        }
        out += "}\n";
        std::fwrite(out.data(), 1, out.size(), stdout);
    } catch (const std::exception& e) {
        std::cerr << "bertlet-coldstart: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
