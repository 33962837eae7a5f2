// bertlet-latency — the C++ side of bench/compare.py (issue #3): per-call latency of the embedder on exact-length
// inputs, and single-thread tokenizer throughput. Prints one JSON object per line on stdout; no Google Benchmark.
//
//   bertlet-latency --model FILE [--seq 16,128] [--batch 1,32] [--threads 1] [--min-iters 20] [--min-time 1]
//                   [--max-time 8] [--max-iters 100000] [--warmup-iters 3] [--warmup-time 0.2] [--label NAME]
//       (--label: the "precision" field; default the model's weights: int8, bf16 or fp32)
//       one line per (seq, batch) cell: {"kind":"latency", "median_ms":..., "p90_ms":..., "p99_ms":..., ...}
//   bertlet-latency --model FILE --tokenize-file sst2/train.tsv [--passes 3] [--dump-ids OUT]
//       one line: {"kind":"tokenize", "sentences_per_s":..., ...}; the file is TSV with a header, text in column 1.
//
// What is timed (latency): embedder::embed_ids on `batch` copies of one sequence of exactly `seq` token ids (real
// wordpieces of a real sentence, repeated, with [CLS]/[SEP] — the same inputs as bench_embed.cpp and compare.py
// feeds ONNX Runtime and PyTorch), i.e. the encoder forward + mean pooling + L2 normalisation. Tokenization is not
// timed. The workspace is warmed up first (not timed).
#include <bertlet/bertlet.hpp>
#if __has_include(<bertlet/kernels/cpu.hpp>)
#include <bertlet/kernels/cpu.hpp>
#define BERTLET_BENCH_HAS_CPU 1
#endif

#include "peak.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#ifndef BERTLET_COMPILE_FLAGS
#define BERTLET_COMPILE_FLAGS ""
#endif
#ifndef BERTLET_DEFAULT_MODEL
#define BERTLET_DEFAULT_MODEL "models/all-MiniLM-L6-v2.bertlet"
#endif

namespace {

using clk = std::chrono::steady_clock;

double ms_since(clk::time_point t0) { return std::chrono::duration<double, std::milli>(clk::now() - t0).count(); }

std::string json_str(const std::string& s) {
    std::string o = "\"";
    for (const char c : s) {
        switch (c) {
            case '"': o += "\\\""; break;
            case '\\': o += "\\\\"; break;
            case '\n': o += "\\n"; break;
            case '\t': o += "\\t"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char b[8];
                    std::snprintf(b, sizeof b, "\\u%04x", c);
                    o += b;
                } else {
                    o += c;
                }
        }
    }
    return o + "\"";
}

std::string num(double v) {
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", v);
    return b;
}

std::string isa_string() {
#ifdef BERTLET_BENCH_HAS_CPU
    // and the int8 GEMM path that goes with it (avx512_vnni / avx512_amx, ...), which the int8 blob runs on
    // and the fp32 linears' form on the avx512 path: AMX bf16x6 tiles (gemm_f32x6.hpp) or the FMA kernels
    const bool x6 = bertlet::active_isa() == bertlet::isa::avx512 && bertlet::f32x6_supported();
    return std::string(bertlet::isa_name(bertlet::active_isa())) + " (int8 linears: " +
           bertlet::s8_path_name(bertlet::active_s8_path()) + (x6 ? "; fp32 linears: amx_bf16x6; bf16 linears: amx" : "") + ")";
#else
    return "unknown (bertlet/kernels/cpu.hpp not present)";
#endif
}

// ===================================================================================================================
// THREADS — the one place where the intra-op thread count is handed to the library.
// The library has no thread option yet (issue #3: another change adds it, probably `load_options::threads`). Until
// then nothing is passed and every run is single-threaded; the JSON says so ("threads_used": 1,
// "threads_wired": "none"). If load_options grows an integer member named `threads`, it is picked up automatically
// below; if the option lands elsewhere (e.g. an embed-time argument), wire it here and in run_cell().
template <class T, class = void>
struct has_threads_member : std::false_type {};
template <class T>
struct has_threads_member<T, std::void_t<decltype(std::declval<T&>().threads = 1)>> : std::true_type {};

struct thread_setting {
    int used = 1;
    const char* wired = "none";
};

template <class Opt>
thread_setting apply_threads(Opt& opt, int requested) {
    thread_setting t;
    if constexpr (has_threads_member<Opt>::value) {
        opt.threads = requested;
        t.used = requested;
        t.wired = "load_options::threads";
    } else {
        (void)opt;
        (void)requested;
    }
    return t;
}
// ===================================================================================================================

// Real wordpieces from a real sentence, repeated to exactly `len` tokens including [CLS]/[SEP] (as bench_embed.cpp).
const char* const kSentence = "A man is playing a large flute while the audience watches from the riverbank.";

std::vector<std::int32_t> sequence_of(const bertlet::embedder& m, std::size_t len) {
    const auto& tok = m.tokenizer();
    const auto enc = tok.encode(kSentence);
    std::vector<std::int32_t> body(enc.ids.begin() + 1, enc.ids.end() - 1);
    std::vector<std::int32_t> ids{tok.config().cls_id};
    for (std::size_t i = 0; ids.size() + 1 < len; ++i) ids.push_back(body[i % body.size()]);
    ids.push_back(tok.config().sep_id);
    return ids;
}

double percentile(const std::vector<double>& sorted, double p) {  // linear interpolation, numpy's default
    if (sorted.empty()) return NAN;
    const double pos = p / 100.0 * static_cast<double>(sorted.size() - 1);
    const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
    const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

struct budget {
    long min_iters = 20, max_iters = 100000, warmup_iters = 3;
    double min_time = 1.0, max_time = 8.0, warmup_time = 0.2;  // seconds
};

std::vector<long> parse_list(const std::string& s) {
    std::vector<long> v;
    std::stringstream ss(s);
    std::string item;
    while (std::getline(ss, item, ','))
        if (!item.empty()) v.push_back(std::stol(item));
    return v;
}

std::string run_cell(const bertlet::embedder& m, std::size_t seq, std::size_t batch, const budget& b) {
    const std::vector<std::vector<std::int32_t>> seqs(batch, sequence_of(m, seq));
    bertlet::embed_workspace ws;
    std::vector<float> out(batch * m.dim());
    // warm-up (not timed): grows the workspace, faults in the weights, settles clocks
    const auto w0 = clk::now();
    for (long i = 0; i < b.warmup_iters || ms_since(w0) < b.warmup_time * 1e3; ++i) {
        m.embed_ids(seqs, out.data(), ws);
        if (ms_since(w0) > b.max_time * 1e3) break;
    }
    std::vector<double> t;
    t.reserve(1024);
    const auto t0 = clk::now();
    for (;;) {
        const auto s = clk::now();
        m.embed_ids(seqs, out.data(), ws);
        t.push_back(ms_since(s));
        const double el = ms_since(t0) / 1e3;
        const long n = static_cast<long>(t.size());
        if (n >= b.max_iters) break;
        if (n >= b.min_iters && el >= b.min_time) break;
        if (el >= b.max_time && n >= 3) break;  // cap: slow cells stop after max_time (but at least 3 calls)
    }
    double checksum = 0;
    for (const float x : out) checksum += x;
    std::vector<double> sorted = t;
    std::sort(sorted.begin(), sorted.end());
    const double mean = std::accumulate(t.begin(), t.end(), 0.0) / static_cast<double>(t.size());
    double var = 0;
    for (const double x : t) var += (x - mean) * (x - mean);
    const double sd = t.size() > 1 ? std::sqrt(var / static_cast<double>(t.size() - 1)) : 0.0;
    std::ostringstream o;
    o << "\"seq\":" << seq << ",\"batch\":" << batch << ",\"iters\":" << t.size()
      << ",\"median_ms\":" << num(percentile(sorted, 50)) << ",\"p90_ms\":" << num(percentile(sorted, 90))
      << ",\"p99_ms\":" << num(percentile(sorted, 99)) << ",\"mean_ms\":" << num(mean)
      << ",\"min_ms\":" << num(sorted.front()) << ",\"max_ms\":" << num(sorted.back()) << ",\"stdev_ms\":" << num(sd)
      << ",\"total_s\":" << num(std::accumulate(t.begin(), t.end(), 0.0) / 1e3)
      << ",\"sentences_per_s\":" << num(static_cast<double>(batch) * 1e3 / percentile(sorted, 50))
      << ",\"checksum\":" << num(checksum);
    return o.str();
}

std::vector<std::string> read_tsv_texts(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + path);
    std::vector<std::string> texts;
    std::string line;
    bool header = true;
    while (std::getline(f, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (header) {  // "text<TAB>label"
            header = false;
            continue;
        }
        const auto tab = line.rfind('\t');
        texts.push_back(tab == std::string::npos ? line : line.substr(0, tab));
    }
    return texts;
}

int tokenize_mode(const bertlet::embedder& m, const std::string& file, long passes, double min_time,
                  const std::string& dump) {
    const std::vector<std::string> texts = read_tsv_texts(file);
    const auto& tok = m.tokenizer();
    bertlet::encoding enc;
    if (!dump.empty()) {  // the ids, for compare.py's exact-equality check (not timed)
        std::ofstream o(dump, std::ios::binary);
        for (const auto& s : texts) {
            tok.encode(s, enc);
            for (std::size_t i = 0; i < enc.ids.size(); ++i) o << (i ? " " : "") << enc.ids[i];
            o << '\n';
        }
        if (!o) throw std::runtime_error("cannot write " + dump);
    }
    for (const auto& s : texts) tok.encode(s, enc);  // warm-up pass
    std::vector<double> pass_s;
    std::size_t tokens = 0;
    double total = 0;
    for (long p = 0; (p < passes || total < min_time) && p < 10000; ++p) {  // >= passes passes and >= min_time s
        std::size_t n_tok = 0;
        const auto t0 = clk::now();
        for (const auto& s : texts) {  // the timed encode loop: one thread, reused output buffer
            tok.encode(s, enc);
            n_tok += enc.ids.size();
        }
        pass_s.push_back(ms_since(t0) / 1e3);
        total += pass_s.back();
        tokens = n_tok;
    }
    std::vector<double> sorted = pass_s;
    std::sort(sorted.begin(), sorted.end());
    const double med = percentile(sorted, 50);
    std::cout << "{\"kind\":\"tokenize\",\"system\":\"bertlet\",\"file\":" << json_str(file)
              << ",\"sentences\":" << texts.size() << ",\"tokens\":" << tokens << ",\"passes\":" << pass_s.size()
              << ",\"max_length\":" << tok.config().max_length << ",\"median_pass_s\":" << num(med)
              << ",\"min_pass_s\":" << num(sorted.front())
              << ",\"sentences_per_s\":" << num(static_cast<double>(texts.size()) / med)
              << ",\"tokens_per_s\":" << num(static_cast<double>(tokens) / med) << ",\"threads\":1}" << std::endl;
    return 0;
}

double nan_to_neg(double v) { return std::isnan(v) ? -1.0 : v; }

/// --peak: one JSON line with the CPU's identity and its single-core arithmetic peaks (bench/peak.hpp); -1 where an
/// instruction is missing. compare.py turns them into the roofline of each target cell.
int peak_mode() {
    const bertlet_bench::cpu_id id = bertlet_bench::identify_cpu();
    bool a512 = false, a2 = false, vnni = false, bf16 = false, amx = false;
#ifdef BERTLET_BENCH_HAS_CPU
    const auto& f = bertlet::cpu();
    a512 = bertlet::active_isa() == bertlet::isa::avx512;
    a2 = f.has_avx2_path();
    vnni = f.has_avx512_path() && f.avx512_vnni;
    bf16 = f.has_avx512_path() && f.avx512_bf16;
    amx = bertlet::active_s8_path() == bertlet::s8_path::avx512_amx;
#endif
    const bool x6 = a512 && bertlet::f32x6_supported();  // fp32 linears as bf16x6 on the tiles (gemm_f32x6.hpp)
    const bertlet_bench::peaks p = bertlet_bench::measure_peaks(a512, a2, vnni, bf16, amx, x6);
    std::cout << "{\"kind\":\"peak\",\"vendor\":" << json_str(id.vendor) << ",\"family\":" << id.family
              << ",\"model\":" << id.model << ",\"stepping\":" << id.stepping << ",\"uarch\":" << json_str(id.uarch)
              << ",\"isa\":" << json_str(isa_string()) << ",\"fp32_form\":" << json_str(p.fp32_form)
              << ",\"fp32_gflops\":" << num(nan_to_neg(p.fp32 / 1e9)) << ",\"int8_gops\":" << num(nan_to_neg(p.int8 / 1e9))
              << ",\"bf16_gflops\":" << num(nan_to_neg(p.bf16 / 1e9))
              << ",\"int8_amx_gops\":" << num(nan_to_neg(p.amx_int8 / 1e9))
              << ",\"bf16_amx_gflops\":" << num(nan_to_neg(p.amx_bf16 / 1e9)) << "}" << std::endl;
    return 0;
}

/// The precision of the model's linear weights (the default --label): int8, bf16 or fp32.
const char* weights_kind(const bertlet::embedder& m) {
    if (m.model_encoder().quantized()) return "int8";
    return m.model_encoder().bf16_weights() ? "bf16" : "fp32";
}

const char* attention_kind(const bertlet::embedder& m) {
    if (m.model_encoder().int8_attention()) return "int8";
    return m.model_encoder().bf16_attention() ? "bf16" : "fp32";
}

void usage() {
    std::cerr << "usage: bertlet-latency --model FILE [--seq 16,128] [--batch 1,32] [--threads N] [--min-iters N]\n"
                 "         [--max-iters N] [--min-time S] [--max-time S] [--warmup-iters N] [--warmup-time S]\n"
                 "         [--label NAME] [--info] [--fp32-attention | --int8-attention | --bf16-attention]\n"
                 "       bertlet-latency --peak   (CPU id + single-core fp32 / int8 / bf16 peaks, for the roofline)\n"
                 "       bertlet-latency --model FILE --tokenize-file TSV [--passes N] [--dump-ids OUT]\n";
}

}  // namespace

int main(int argc, char** argv) {
    std::string model = BERTLET_DEFAULT_MODEL, label, tok_file, dump;  // label: default from the model's weights
    std::vector<long> seqs{128}, batches{1};
    int threads = 1;
    bool bf16_attention = true;  // --fp32-attention: load_options::bf16_attention = false (int8 models)
    bool int8_attention = true;  // --fp32-attention: load_options::int8_attention = false; --int8-attention: bf16 off
    long passes = 3;
    bool info_only = false;
    budget b;
    try {
        for (int i = 1; i < argc; ++i) {
            const std::string a = argv[i];
            auto next = [&]() -> std::string {
                if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
                return argv[++i];
            };
            if (a == "--model") model = next();
            else if (a == "--seq") seqs = parse_list(next());
            else if (a == "--batch") batches = parse_list(next());
            else if (a == "--threads") threads = std::stoi(next());
            else if (a == "--fp32-attention") bf16_attention = int8_attention = false;
            else if (a == "--int8-attention") bf16_attention = false;
            else if (a == "--bf16-attention") int8_attention = false;
            else if (a == "--iters" || a == "--min-iters") b.min_iters = std::stol(next());
            else if (a == "--max-iters") b.max_iters = std::stol(next());
            else if (a == "--min-time") b.min_time = std::stod(next());
            else if (a == "--max-time") b.max_time = std::stod(next());
            else if (a == "--warmup-iters") b.warmup_iters = std::stol(next());
            else if (a == "--warmup-time") b.warmup_time = std::stod(next());
            else if (a == "--label") label = next();
            else if (a == "--tokenize-file") tok_file = next();
            else if (a == "--passes") passes = std::stol(next());
            else if (a == "--dump-ids") dump = next();
            else if (a == "--info") info_only = true;
            else if (a == "--peak") return peak_mode();
            else if (a == "--help" || a == "-h") {
                usage();
                return 0;
            } else {
                throw std::invalid_argument("unknown argument " + a);
            }
        }
        if (threads < 1 || b.min_iters < 1 || passes < 1) throw std::invalid_argument("counts must be >= 1");
    } catch (const std::exception& e) {
        std::cerr << "bertlet-latency: " << e.what() << "\n";
        usage();
        return 2;
    }
    try {
        bertlet::load_options opt;
        opt.bf16_attention = bf16_attention;
        opt.int8_attention = int8_attention;
        const thread_setting th = apply_threads(opt, threads);
        const auto l0 = clk::now();
        const bertlet::embedder m = bertlet::embedder::load(model, opt);
        const double load_ms = ms_since(l0);
        if (!tok_file.empty()) return tokenize_mode(m, tok_file, passes, b.min_time, dump);

        if (label.empty()) label = weights_kind(m);
        const std::string common =
            "\"system\":\"bertlet\",\"precision\":" + json_str(label) + ",\"model\":" + json_str(model) +
            ",\"isa\":" + json_str(isa_string()) + ",\"threads_requested\":" + std::to_string(threads) +
            ",\"threads_used\":" + std::to_string(th.used) + ",\"threads_wired\":" + json_str(th.wired) +
            ",\"load_ms\":" + num(load_ms) + ",\"compile_flags\":" + json_str(BERTLET_COMPILE_FLAGS) +
            ",\"attention\":" + json_str(attention_kind(m));
        if (info_only) {  // also the seq-16 input ids, so compare.py can assert every system gets the same ones
            std::string ids;
            for (const auto id : sequence_of(m, 16)) ids += (ids.empty() ? "" : ",") + std::to_string(id);
            std::cout << "{\"kind\":\"info\"," << common << ",\"dim\":" << m.dim()
                      << ",\"max_length\":" << m.tokenizer().config().max_length << ",\"sample_ids_16\":[" << ids
                      << "]}" << std::endl;
            return 0;
        }
        for (const long s : seqs)
            for (const long bt : batches) {
                if (s < 2 || static_cast<std::size_t>(s) > m.tokenizer().config().max_length || bt < 1)
                    throw bertlet::input_error(bertlet::errc::bad_argument,
                                               "seq must be in [2, max_length] and batch >= 1");
                const std::string cell = run_cell(m, static_cast<std::size_t>(s), static_cast<std::size_t>(bt), b);
                std::cout << "{\"kind\":\"latency\"," << common << "," << cell << "}" << std::endl;
            }
    } catch (const std::exception& e) {
        std::cerr << "bertlet-latency: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
