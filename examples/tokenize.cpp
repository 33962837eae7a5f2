// bertlet-tokenize: WordPiece token ids as JSON lines.
#include <bertlet/bertlet.hpp>

#include <iostream>

#include "cli_common.hpp"

static const char* kUsage =
    "usage: bertlet-tokenize --model FILE [--jsonl] [--tokens] [TEXT...]\n"
    "\n"
    "Tokenizes each TEXT, or each line of stdin when no TEXT is given, exactly as Hugging Face's\n"
    "BertTokenizerFast would for the model (truncated to its max length), and prints one JSON object per line:\n"
    "  {\"ids\": [...], \"type_ids\": [...], \"truncated\": false}\n"
    "\n"
    "  --model FILE  a .bertlet blob (default: $BERTLET_MODEL)\n"
    "  --jsonl       stdin lines are JSON objects {\"text\": \"...\", \"text_pair\": \"...\"} (text_pair optional)\n"
    "  --tokens      also print the wordpiece strings as \"tokens\"\n"
    "Errors go to stderr as one line; the exit code is 1 (error) or 2 (usage).\n";

int main(int argc, char** argv) {
    return cli::run("bertlet-tokenize", [&] {
        bool with_tokens = false;
        const cli::options o = cli::parse(argc, argv, kUsage, [&](const std::string& a, int&, int, char**) {
            if (a == "--tokens") return with_tokens = true;
            return false;
        });
        const auto lo = cli::load_options_from<bertlet::load_options>(o);
        const auto model = bertlet::embedder::load(o.model, lo);
        const auto& tok = model.tokenizer();
        bertlet::encoding enc;
        std::string line_out;
        auto emit = [&](const cli::record& r) {
            if (r.text_pair) tok.encode_pair(r.text, *r.text_pair, enc);
            else tok.encode(r.text, enc);
            line_out.assign("{\"ids\":[");
            for (std::size_t k = 0; k < enc.ids.size(); ++k) {
                if (k) line_out += ',';
                line_out += std::to_string(enc.ids[k]);
            }
            line_out += "],\"type_ids\":[";
            for (std::size_t k = 0; k < enc.type_ids.size(); ++k) {
                if (k) line_out += ',';
                line_out += std::to_string(enc.type_ids[k]);
            }
            line_out += "]";
            if (with_tokens) {
                line_out += ",\"tokens\":[";
                for (std::size_t k = 0; k < enc.ids.size(); ++k) {
                    if (k) line_out += ',';
                    cli::write_json_string(line_out, tok.id_to_token(enc.ids[k]));
                }
                line_out += "]";
            }
            line_out += enc.truncated ? ",\"truncated\":true}\n" : ",\"truncated\":false}\n";
            std::fwrite(line_out.data(), 1, line_out.size(), stdout);
        };
        cli::record r;
        if (!o.texts.empty()) {
            for (const auto& t : o.texts) {
                r.text = t;
                emit(r);
            }
        } else {
            std::size_t line_no = 0;
            while (cli::next_record(std::cin, o.jsonl, false, r, line_no)) emit(r);
        }
        std::fflush(stdout);
        return 0;
    });
}
