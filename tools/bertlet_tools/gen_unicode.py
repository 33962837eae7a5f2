"""Generate include/bertlet/text/unicode_tables.hpp by probing the installed Hugging Face `tokenizers`.

Every table is derived from the real implementation, one code point at a time, so that for single characters the C++
tables equal HF by construction (whatever Unicode versions HF's Rust crates were built with):

  * clean_text      BertNormalizer(clean_text=True, others off): char dropped / mapped to ' ' / kept
  * chinese chars   BertNormalizer(handle_chinese_chars=True, others off): char surrounded by spaces
  * strip accents   BertNormalizer(strip_accents=True, others off): NFD then drop Mn  -> replacement string
  * lowercase       BertNormalizer(lowercase=True, strip_accents=False, others off): char::to_lowercase
  * pre-tokenizer   BertPreTokenizer().pre_tokenize_str('a' + c + 'b'): whitespace (removed) / punctuation (isolated)

Run from the repository root (takes a minute or two):

    /root/.cache/bertlet/venv/bin/python -m bertlet_tools.gen_unicode --out include/bertlet/text/unicode_tables.hpp
    (with PYTHONPATH=tools, or after `pip install -e tools`)

Add --verify to also check, for every code point and all 16 normalizer flag combinations, that composing the tables in
HF's order (clean -> chinese -> strip accents -> lowercase) reproduces BertNormalizer exactly.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import unicodedata

import tokenizers
from tokenizers import normalizers, pre_tokenizers

MAX_CP = 0x110000

F_CLEAN_DROP = 1
F_CLEAN_SPACE = 2
F_CJK = 4
F_WS = 8
F_PUNCT = 16
F_STRIP_DROP = 32
F_STRIP_MAP = 64
F_LOWER_MAP = 128


HANGUL_FIRST, HANGUL_LAST = 0xAC00, 0xD7A3


def hangul_nfd(c):
    s = c - HANGUL_FIRST
    out = chr(0x1100 + s // 588) + chr(0x1161 + (s % 588) // 28)
    if s % 28:
        out += chr(0x11A7 + s % 28)
    return out


def code_points():
    for c in range(MAX_CP):
        if 0xD800 <= c <= 0xDFFF:
            continue
        yield c


def norm(clean, chinese, strip, lower):
    return normalizers.BertNormalizer(clean_text=clean, handle_chinese_chars=chinese, strip_accents=strip,
                                      lowercase=lower)


def probe():
    n_clean = norm(True, False, False, False).normalize_str
    n_cjk = norm(False, True, False, False).normalize_str
    n_strip = norm(False, False, True, False).normalize_str
    n_lower = norm(False, False, False, True).normalize_str
    pt = pre_tokenizers.BertPreTokenizer().pre_tokenize_str
    flags = {}
    strip_map = {}
    lower_map = {}
    for c in code_points():
        ch = chr(c)
        f = 0
        r = n_clean(ch)
        if r == "":
            f |= F_CLEAN_DROP
        elif r == " " and ch != " ":
            f |= F_CLEAN_SPACE
        else:
            assert r == ch, (hex(c), r)
        r = n_cjk(ch)
        if r == " " + ch + " ":
            f |= F_CJK
        else:
            assert r == ch, (hex(c), r)
        r = n_strip(ch)
        if r == "":
            f |= F_STRIP_DROP
        elif r != ch:
            f |= F_STRIP_MAP
            strip_map[c] = r
        r = n_lower(ch)
        if r != ch:
            assert r != ""
            f |= F_LOWER_MAP
            lower_map[c] = r
        parts = [p for p, _ in pt("a" + ch + "b")]
        if parts == ["a", "b"]:
            f |= F_WS
        elif parts == ["a", ch, "b"]:
            f |= F_PUNCT
        else:
            assert parts == ["a" + ch + "b"], (hex(c), parts)
        if f:
            flags[c] = f
    return flags, strip_map, lower_map


def emulate(s, flags, strip_map, lower_map, clean, chinese, strip, lower):
    out = []
    for ch in s:
        c = ord(ch)
        f = flags.get(c, 0)
        seq = [ch]
        if clean:
            if f & F_CLEAN_DROP:
                continue
            if f & F_CLEAN_SPACE:
                seq = [" "]
        if chinese and (f & F_CJK):
            seq = [" ", ch, " "]
        if strip:
            s2 = []
            for x in seq:
                fx = flags.get(ord(x), 0)
                if fx & F_STRIP_DROP:
                    continue
                s2.extend(strip_map.get(ord(x), x))
            seq = s2
        if lower:
            s2 = []
            for x in seq:
                s2.extend(lower_map.get(ord(x), x))
            seq = s2
        out.extend(seq)
    return "".join(out)


def verify(flags, strip_map, lower_map):
    bad = 0
    for combo in itertools.product([False, True], repeat=4):
        n = norm(*combo).normalize_str
        for c in code_points():
            ch = chr(c)
            want = n(ch)
            got = emulate(ch, flags, strip_map, lower_map, *combo)
            if want != got:
                bad += 1
                if bad < 20:
                    print("verify mismatch", combo, hex(c), repr(want), repr(got), file=sys.stderr)
        print("verified combo", combo, file=sys.stderr)
    return bad


def ranges_of(flags):
    out = []
    for c in sorted(flags):
        f = flags[c]
        if out and out[-1][1] == c - 1 and out[-1][2] == f:
            out[-1][1] = c
        else:
            out.append([c, c, f])
    return out


def emit(flags, strip_map, lower_map, out_path):
    rng = ranges_of(flags)
    pool = []
    pool_index = {}

    def add(s):
        cps = tuple(ord(x) for x in s)
        if cps not in pool_index:
            pool_index[cps] = len(pool)
            pool.extend(cps)
        return pool_index[cps], len(cps)

    def entries(m):
        res = []
        for c in sorted(m):
            off, ln = add(m[c])
            assert ln < 256 and off < (1 << 24)
            res.append((c, (off << 8) | ln))
        return res

    # Hangul syllables decompose algorithmically (NFD): check that HF agrees, then leave them to the C++ code.
    for c in range(HANGUL_FIRST, HANGUL_LAST + 1):
        assert strip_map[c] == hangul_nfd(c), hex(c)
        assert flags[c] & F_STRIP_MAP
    strip_e = entries({c: v for c, v in strip_map.items() if not HANGUL_FIRST <= c <= HANGUL_LAST})
    lower_e = entries(lower_map)
    max_strip = max(len(v) for v in strip_map.values())
    max_lower = max(len(v) for v in lower_map.values())
    # longest output of one input char: ' ' c ' ' (chinese) or strip->lower expansion
    max_expand = 3
    for c in set(strip_map) | set(lower_map) | set(flags):
        ch = chr(c)
        s = strip_map.get(c, ch)
        n = sum(len(lower_map.get(ord(x), x)) for x in s)
        max_expand = max(max_expand, n, len(lower_map.get(c, ch)))

    def rows(items, fmt, per_line):
        lines = []
        for i in range(0, len(items), per_line):
            lines.append("    " + " ".join(fmt(x) for x in items[i:i + per_line]))
        return "\n".join(lines)

    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"""// GENERATED FILE - DO NOT EDIT.
// Generated by tools/bertlet_tools/gen_unicode.py by probing Hugging Face tokenizers {tokenizers.__version__}
// (BertNormalizer / BertPreTokenizer), one code point at a time. Regenerate from the repository root with:
//
//     PYTHONPATH=tools /root/.cache/bertlet/venv/bin/python -m bertlet_tools.gen_unicode --out include/bertlet/text/unicode_tables.hpp
//
// Layout: `props` are sorted, disjoint, inclusive code point ranges with a flag byte (code points not covered have
// flags 0: kept by clean_text, not CJK, unchanged by strip-accents and lowercase, neither whitespace nor punctuation).
// `strip_map` / `lower_map` are sorted (code point, pool offset << 8 | length) pairs into `pool` (UTF-32).
// Hangul syllables U+AC00..U+D7A3 have f_strip_map but no strip_map entry: their NFD is computed algorithmically
// (the generator asserts that HF's output equals it).
#pragma once

#include <cstdint>

namespace bertlet::detail::unicode {{

inline constexpr std::uint8_t f_clean_drop = {F_CLEAN_DROP};   // clean_text removes it (NUL, U+FFFD, is_control)
inline constexpr std::uint8_t f_clean_space = {F_CLEAN_SPACE};  // clean_text maps it to ' ' (is_whitespace)
inline constexpr std::uint8_t f_cjk = {F_CJK};          // handle_chinese_chars surrounds it with spaces
inline constexpr std::uint8_t f_ws = {F_WS};           // BertPreTokenizer splits on it and removes it
inline constexpr std::uint8_t f_punct = {F_PUNCT};       // BertPreTokenizer isolates it
inline constexpr std::uint8_t f_strip_drop = {F_STRIP_DROP};  // strip_accents removes it (NFD then Mn filter)
inline constexpr std::uint8_t f_strip_map = {F_STRIP_MAP};   // strip_accents replaces it by strip_map entry
inline constexpr std::uint8_t f_lower_map = {F_LOWER_MAP};  // lowercase replaces it by lower_map entry

inline constexpr unsigned max_strip_len = {max_strip};
inline constexpr unsigned max_lower_len = {max_lower};
inline constexpr char32_t hangul_first = 0x%X, hangul_last = 0x%X;
inline constexpr unsigned max_expansion = {max_expand};  // max chars one input char normalizes to
""" % (HANGUL_FIRST, HANGUL_LAST) + f"""
struct prop_range {{
    std::uint32_t first, last;
    std::uint8_t flags;
}};

struct map_entry {{
    std::uint32_t cp;
    std::uint32_t off_len;
}};

inline constexpr prop_range props[] = {{
{rows(rng, lambda r: "{0x%X,0x%X,%d}," % tuple(r), 6)}
}};

inline constexpr map_entry strip_map[] = {{
{rows(strip_e, lambda e: "{0x%X,0x%X}," % e, 8)}
}};

inline constexpr map_entry lower_map[] = {{
{rows(lower_e, lambda e: "{0x%X,0x%X}," % e, 8)}
}};

inline constexpr char32_t pool[] = {{
{rows(pool, lambda x: "0x%X," % x, 16)}
}};

}}  // namespace bertlet::detail::unicode
""")
    print(f"wrote {out_path}: {len(rng)} ranges, {len(strip_e)} strip, {len(lower_e)} lower, pool {len(pool)}, "
          f"max_expand {max_expand}", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="include/bertlet/text/unicode_tables.hpp")
    ap.add_argument("--verify", action="store_true", help="check table composition against BertNormalizer")
    ap.add_argument("--report", action="store_true", help="print surviving non-zero combining classes")
    args = ap.parse_args(argv)
    flags, strip_map, lower_map = probe()
    if args.report:
        survivors = set()
        for c in code_points():
            s = strip_map.get(c, chr(c)) if not flags.get(c, 0) & F_STRIP_DROP else ""
            for x in s:
                if unicodedata.combining(x):
                    survivors.add(ord(x))
        print("strip survivors with ccc != 0 (python unicodedata %s):" % unicodedata.unidata_version,
              [hex(x) for x in sorted(survivors)], file=sys.stderr)
    if args.verify:
        bad = verify(flags, strip_map, lower_map)
        print("verify mismatches:", bad, file=sys.stderr)
        if bad:
            return 1
    emit(flags, strip_map, lower_map, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
