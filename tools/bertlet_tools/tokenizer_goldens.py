"""Generate tests/data/tokenizer_edge_cases.jsonl from the REAL Hugging Face tokenizer (never edit that file by hand).

    PYTHONPATH=tools /root/.cache/bertlet/venv/bin/python -m bertlet_tools.tokenizer_goldens \
        --model-dir models/src/all-MiniLM-L6-v2 --out tests/data/tokenizer_edge_cases.jsonl

One JSON object per line (ASCII-only JSON, non-ASCII as \\u escapes):
  name           short description
  text           the input (for invalid-UTF-8 cases: the text as Python's bytes.decode("utf-8", "replace") gives it)
  text_pair      optional second text
  text_hex       optional: the raw input bytes (hex) when they are not valid UTF-8; the C++ test feeds these bytes
  invalid_offset optional: byte offset of the first ill-formed byte (what utf8_policy::strict must report)
  lowercase, strip_accents, handle_chinese_chars, clean_text, max_length: the tokenizer settings of the case
  ids, type_ids  what HF returns with truncation=True, max_length=max_length (longest_first for pairs)

Cases with the model's own settings (uncased) are computed with transformers.BertTokenizerFast and cross-checked with
a tokenizers.Tokenizer built from tokenizer.json; other settings use that Tokenizer with the BertNormalizer replaced.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

UNCASED = dict(lowercase=True, strip_accents=True, handle_chinese_chars=True, clean_text=True)
CASED = dict(lowercase=False, strip_accents=False, handle_chinese_chars=True, clean_text=True)


def cases():
    """Yields dicts with text / optional text_pair / optional raw bytes / settings."""
    def c(name, text, pair=None, max_length=256, raw=None, **flags):
        d = dict(name=name, text=text, max_length=max_length, **{**UNCASED, **flags})
        if pair is not None:
            d["text_pair"] = pair
        if raw is not None:
            d["raw"] = raw
        return d

    # empty / whitespace
    yield c("empty", "")
    yield c("space", " ")
    yield c("ascii whitespace only", " \t\n\r  \x0b\x0c ")
    yield c("unicode whitespace only", "\u3000\u00a0\u2028\u2029\u1680\u2003\u202f\u205f")
    # accents and combining marks
    yield c("nfc accents", "Café crème brûlée naïve résumé Ångström façade")
    yield c("nfd accents", "Cafe\u0301 cre\u0300me bru\u0302le\u0301e nai\u0308ve")
    yield c("stacked marks", "a\u0301\u0302\u0323 e\u0323\u0302 \u1ec7 o\u031b\u0300 x\u0338\u0305\u0332")
    yield c("mark order 1", "a\u0323\u0301 a\u0301\u0323 q\u0307\u0323 q\u0323\u0307")
    yield c("lone combining marks", "\u0301 \u0301a \u20dd \u0488")
    yield c("angstrom kelvin ohm", "\u212b \u212a \u2126 \u00c5")
    yield c("ligatures compat", "\ufb01ne \ufb00 \u01c4 \u01c5 \u01c6 \u2460 \u00bd \u00b2 \uff21\uff22\uff43")
    yield c("vietnamese", "Tiếng Việt có dấu: Nguyễn Thị Minh Khai")
    # CJK
    yield c("chinese", "你好，世界！中文English混合123")
    yield c("japanese", "日本語のテキスト、カタカナ。ｶﾀｶﾅ")
    yield c("cjk range boundaries", "".join(chr(x) for x in (
        0x33FF, 0x3400, 0x4DBF, 0x4DC0, 0x4DFF, 0x4E00, 0x9FFF, 0xA000, 0xF8FF, 0xF900, 0xFAFF, 0xFB00,
        0x1FFFF, 0x20000, 0x2A6DF, 0x2A6E0, 0x2A6FF, 0x2A700, 0x2B73F, 0x2B740, 0x2B81F, 0x2B820, 0x2CEAF,
        0x2CEB0, 0x2EBE0, 0x2F7FF, 0x2F800, 0x2FA1F, 0x2FA20, 0x30000)))
    yield c("cjk compatibility ideographs", "\uf900\ufa0e\ufa10\ufa6d\ufa70\ufad9 \U0002f800\U0002f8a6\U0002fa1d")
    yield c("cjk around letters", "abc中def\U0002b820ghi\U0002ceafjkl")
    yield c("kangxi radicals", "\u2f00\u2f08\u2e80 \u3007 \u3005")
    yield c("hangul", "한국어 텍스트 안녕하세요 \u1100\u1161\u11a8 \u3131\u314f")
    yield c("hangul tone marks", "\u1100\u1161\u302e \ud55c\u302f")
    yield c("thai", "ภาษาไทย สวัสดีครับ")
    yield c("arabic", "مرحبا بالعالم، كيف حالك؟ \u0627\u064e\u0644\u0652 ١٢٣")
    yield c("hebrew", "שָׁלוֹם עולם")
    yield c("devanagari", "नमस्ते दुनिया। हिन्दी क़")
    yield c("greek", "Ελληνικά Άά Έέ Ήή Ίί Όό Ύύ Ώώ ΐ ΰ Ϊ")
    yield c("cyrillic", "Привет Мир Ёё Йй")
    # emoji
    yield c("emoji", "I ❤️ NY 👍 😀😃 🎉")
    yield c("emoji skin tones", "👍🏽 👋🏿 🏻")
    yield c("emoji zwj", "👨\u200d👩\u200d👧\u200d👦 🏳️\u200d🌈 👩🏽\u200d💻")
    yield c("emoji flags keycaps", "🇺🇸🇫🇷 1️⃣ #️⃣")
    # zero width / format / control
    yield c("zero width", "a\u200bb a\u200cb a\u200db \ufeffhello a\u2060b a\u200eb\u200f")
    yield c("soft hyphen", "co\u00adoperate hyphen\u00ad")
    yield c("controls", "a\tb\nc\rd a\x00b a\x85b a\ufffdb a\x7fb a\x1bb a\x01b\x1f")
    yield c("file separators", "a\x1cb\x1dc\x1ed\x1fe")
    yield c("private use unassigned", "a\ue000b \U000f0000 \uffff \U0010ffff \U000e0001x\U000e007f \u0378")
    yield c("unicode whitespace", "a\u00a0b\u3000c\u2028d\u2029e\u1680f\u2000g\u200ah\u202fi\u205fj\u0085k")
    # punctuation
    yield c("ascii punctuation", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    yield c("ascii punctuation in words", "a$b x+y=z <html> a^b`c|d~e 50% a&b a_b a-b a/b a\\b a@b")
    yield c("unicode punctuation", "«quoted» „German“ ‘single’ “double” —dash– … ¡Hola! ¿Qué? ‹›")
    yield c("cjk punctuation", "《书名》、。「」『』【】〜・：？！")
    yield c("more punctuation", "§ ¶ † ‡ ‰ ※ ‽ ⁂ · ‧ ‐ ‑ ‒ ⸘ ⹂ \u2e4e \u2e52 \U00016fe2 \U0001e95e")
    yield c("symbols not punctuation", "¥€£¢ ©®™°±×÷ ♠♥ ← → ∑ √ ∞ ≠ ≤ ¬ ¦ ¨ ´ ¸ ˆ ˜ \u02c2")
    yield c("greek punctuation", "τι\u037e \u0387 \u1fef \u1fed \u0385 \u00a8")
    # case
    yield c("special lowercase", "İstanbul İ ı ΣΊΣΥΦΟΣ ΟΔΟΣ ς Straße STRASSE ẞ ß ǅ ǈ ǋ ǲ")
    yield c("greek tonos", "ΆΛΦΑ ΈΨΙΛΟΝ ΉΤΑ ΊΩΤΑ Ϊ́ ΰ ᾼ ᾈ ῼ")
    yield c("mixed case", "HeLLo WoRLD, I'm FINE. iPhone McDonald's")
    yield c("title case digraphs", "ǄǅǆǇǈǉǊǋǌ")
    # words and lengths
    yield c("word 99 chars", "a" * 99)
    yield c("word 100 chars", "a" * 100)
    yield c("word 101 chars", "a" * 101)
    yield c("word 100 chars then punct", "b" * 100 + "!" + "c" * 101 + "?")
    yield c("word 100 accented nfc", "é" * 100)
    yield c("word 101 accented nfc", "é" * 101)
    yield c("word 100 accented nfd", "e\u0301" * 100)
    yield c("word 101 accented nfd", "e\u0301" * 101)
    yield c("word 100 with cjk inside", "a" * 60 + "中" + "a" * 60)
    yield c("word 100 incl dropped controls", "a" * 100 + "\x00\u200b" + "")
    yield c("word 100 lowercase expands", "İ" * 50)
    yield c("word 101 lowercase expands", "İ" * 51)
    yield c("word 100 lowercase expands cased", "İ" * 50, **CASED)
    yield c("word 101 lowercase expands cased", "İ" * 51, **CASED)
    yield c("long words", "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis")
    yield c("subwords", "unaffable tokenization transformers bertlet wordpiece ## #hash ##x")
    yield c("numbers", "3.14159 1,000,000 2024-01-01 12:30pm +1 (555) 123-4567 1e-9 0x1F ½ ¼ ² ³ ١٢٣ ① ⅷ")
    yield c("urls", "https://example.com/path?q=1&x=y#frag www.test.org/a_b-c.html")
    yield c("emails paths", "user.name+tag@example.co.uk C:\\Users\\file.txt /usr/local/bin #hashtag @mention $100 & 50%")
    yield c("contractions", "don't won't it's I'd y'all rock'n'roll")
    yield c("abbreviations", "U.S.A. e.g., i.e. Mr. Dr. etc...")
    # special token literals (HF matches them in the raw text)
    yield c("special tokens", "[CLS] hello [SEP] world [MASK] [UNK] [PAD]")
    yield c("special tokens glued", "a[SEP]b[CLS][SEP] [[CLS]] [SEP")
    yield c("special tokens lowercase", "[sep] [Cls] [ SEP ]")
    # pairs
    yield c("pair", "How are you?", pair="I am fine, thanks.")
    yield c("pair empty a", "", pair="only b")
    yield c("pair empty b", "only a", pair="")
    yield c("pair both empty", "", pair="")
    yield c("pair unicode", "Café 你好", pair="naïve İstanbul 👍")
    # cased
    yield c("cased", "Hello World! Café crème İstanbul ΣΊΣΥΦΟΣ Straße 你好", **CASED)
    yield c("cased nfd", "Cafe\u0301 na\u0131ve \u212b", **CASED)
    yield c("cased pair", "Hello THERE", pair="General Kenobi", **CASED)
    yield c("strip accents only", "Café CRÈME İstanbul Ünïcödé 한국어", lowercase=False, strip_accents=True)
    yield c("lowercase only", "Café CRÈME İstanbul Ünïcödé 한국어", lowercase=True, strip_accents=False)
    yield c("no chinese handling", "你好世界 abc中def", handle_chinese_chars=False)
    yield c("no clean text", "a\tb\x00c\u200bd\ufffde\x1cf\x85g\u00adh \u3000i", clean_text=False)
    yield c("no clean text cased", "a\tb\x00c\u200bd\ufffde\x1cf\x85g\u00adh \u3000i", clean_text=False, **{
        k: v for k, v in CASED.items() if k != "clean_text"})
    # truncation, single
    for ml in (256, 512):
        for n in (ml - 3, ml - 2, ml - 1):  # 511 / 512 / 513 tokens with [CLS] and [SEP] for ml 512
            yield c(f"single {n} words max_length {ml}", " ".join(["hello"] * n), max_length=ml)
        yield c(f"single multi-piece word at cut max_length {ml}", "hello " * (ml - 4) + "unaffable unaffable",
                max_length=ml)
    for ml in (2, 3, 4, 5):
        yield c(f"single tiny max_length {ml}", "one two three", max_length=ml)
    # truncation, pairs (longest_first), odd and even budgets
    for ml in (16, 17, 256):
        L = ml - 3
        ns = sorted({0, 1, L // 2 - 1, L // 2, L // 2 + 1, L - 1, L, L + 1, L + 5, 2 * L})
        for n1 in ns:
            for n2 in ns:
                if ml == 256 and (n1, n2) not in ((0, L + 1), (L // 2, L // 2 + 1), (L + 1, L + 5), (L + 5, L + 1),
                                                   (L + 1, L + 1), (1, 2 * L)):
                    continue
                yield c(f"pair {n1}+{n2} max_length {ml}", " ".join(f"a{i}" if i % 3 == 0 else "x" for i in range(n1)),
                        pair=" ".join("b" if i % 2 else "y" for i in range(n2)), max_length=ml)
    yield c("pair tiny max_length 3", "a b", pair="c d", max_length=3)
    yield c("pair tiny max_length 4", "a b", pair="c d", max_length=4)
    # invalid UTF-8 (raw bytes; HF is given bytes.decode("utf-8", "replace"))
    for name, raw in (
        ("lone continuation", b"\x80"),
        ("continuation in word", b"abc\x80def"),
        ("continuations", b"a\x80\xbf\x80b"),
        ("truncated 2-byte at end", b"caf\xc3"),
        ("truncated 3-byte", b"\xe2\x82A"),
        ("truncated 3-byte at end", b"x \xe2\x82"),
        ("truncated 4-byte", b"hello \xf0\x9f\x98 world"),
        ("overlong 2-byte", b"\xc0\xaf \xc1\xbf"),
        ("overlong 3-byte", b"\xe0\x80\xaf"),
        ("overlong 4-byte", b"\xf0\x80\x80\xaf"),
        ("surrogate", b"a\xed\xa0\x80b \xed\xbf\xbf"),
        ("above 10FFFF", b"\xf4\x90\x80\x80 \xf5\x80\x80\x80 \xf7\xbf\xbf\xbf"),
        ("ff fe", b"\xff\xfeh\x00i\x00"),
        ("invalid then valid multibyte", b"\xe9t\xc3\xa9 caf\xe9 \xc3\xa9"),
        ("valid 4-byte after invalid", b"\x80\xf0\x9f\x98\x80!"),
        ("invalid between punct", b"a.\x80.b [SE\x80P]"),
    ):
        yield c("invalid utf8: " + name, raw.decode("utf-8", "replace"), raw=raw)


def hf_encode(model_dir: Path, case: dict, cache: dict):
    from tokenizers import Tokenizer, normalizers
    from transformers import BertTokenizerFast

    flags = (case["lowercase"], case["strip_accents"], case["handle_chinese_chars"], case["clean_text"])
    key = flags
    if key not in cache:
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tok.normalizer = normalizers.BertNormalizer(clean_text=case["clean_text"],
                                                    handle_chinese_chars=case["handle_chinese_chars"],
                                                    strip_accents=case["strip_accents"], lowercase=case["lowercase"])
        tok.no_padding()
        cache[key] = tok
    tok = cache[key]
    tok.enable_truncation(max_length=case["max_length"], strategy="longest_first")
    pair = case.get("text_pair")
    enc = tok.encode(case["text"], pair) if pair is not None else tok.encode(case["text"])
    ids, type_ids = enc.ids, enc.type_ids
    # transformers treats text_pair="" as "no pair" (a falsy check); bertlet's encode_pair, like tokenizers, encodes
    # an explicit empty second text ([CLS] a [SEP] [SEP]), so those cases are not cross-checked.
    if flags == (True, True, True, True) and pair != "":
        if "fast" not in cache:
            cache["fast"] = BertTokenizerFast.from_pretrained(str(model_dir))
        fast = cache["fast"]
        r = fast(case["text"], pair, truncation=True, max_length=case["max_length"]) if pair is not None else \
            fast(case["text"], truncation=True, max_length=case["max_length"])
        if r["input_ids"] != ids or r["token_type_ids"] != type_ids:
            raise AssertionError(f"BertTokenizerFast and tokenizers.Tokenizer disagree on {case['name']}")
    return ids, type_ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "src" / "all-MiniLM-L6-v2")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "tokenizer_edge_cases.jsonl")
    args = ap.parse_args(argv)
    cache: dict = {}
    n = 0
    with open(args.out, "w", encoding="ascii", newline="\n") as f:
        for case in cases():
            ids, type_ids = hf_encode(args.model_dir, case, cache)
            raw = case.pop("raw", None)
            rec = {"name": case.pop("name"), "text": case.pop("text")}
            if "text_pair" in case:
                rec["text_pair"] = case.pop("text_pair")
            if raw is not None:
                rec["text_hex"] = raw.hex()
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    rec["invalid_offset"] = e.start
            rec.update(case)
            rec["ids"] = ids
            rec["type_ids"] = type_ids
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")
            n += 1
    print(f"wrote {n} cases to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
