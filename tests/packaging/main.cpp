// Packaging smoke test: a downstream program embeds a sentence with an installed / vendored bertlet.
#include <bertlet/bertlet.hpp>

#include <cmath>
#include <cstdio>

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: consumer MODEL\n");
        return 2;
    }
    const auto model = bertlet::embedder::load(argv[1]);
    const auto v = model.embed("packaging works");
    double n = 0;
    for (float x : v) n += double(x) * x;
    std::printf("dim %zu norm %.6f\n", v.size(), std::sqrt(n));
    return v.size() == model.dim() && std::fabs(std::sqrt(n) - 1.0) < 1e-4 ? 0 : 1;
}
