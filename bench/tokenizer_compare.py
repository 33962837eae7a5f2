#!/usr/bin/env python3
"""Tokenizer throughput: bertlet's WordPiece tokenizer vs Hugging Face `tokenizers` (Rust), one thread each.

    ~/.cache/bertlet/venv/bin/python bench/tokenizer_compare.py [--file ../shared/data/sst2/train.tsv] [--limit N]

Both tokenize every text of the file (TSV with a `text<TAB>label` header) with [CLS]/[SEP] and truncation to 256
tokens. bertlet: `build/bench/bertlet-latency --tokenize-file` times only its encode loop (texts already in memory,
one reused output buffer). HF: `Tokenizer.from_file(tokenizer.json).encode_batch(texts)` with RAYON_NUM_THREADS=1
and TOKENIZERS_PARALLELISM=false; the script checks that no extra thread appeared and that CPU time ≈ wall time.
Every id of every sentence must be identical, or the script fails. Each side runs >= --passes passes over the whole
file and >= --min-time seconds after one warm-up pass; the median pass is reported.
"""
from __future__ import annotations

import os

# must be set before `tokenizers` is imported (Rayon sizes its pool from the environment once)
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["RAYON_RS_NUM_CPUS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "models" / "src" / "all-MiniLM-L6-v2"
BLOB = ROOT / "models" / "all-MiniLM-L6-v2.bertlet"
DATA = Path(os.environ.get("BERTLET_DATA", ROOT.parent / "shared" / "data"))
MAX_LEN = 256


def read_texts(path: Path, limit: int | None) -> list[str]:
    # same parsing as bertlet-latency: skip the header, text = everything before the last TAB; bytes split on \n only
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    texts = []
    for raw in lines[1:]:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        i = raw.rfind(b"\t")
        texts.append((raw if i < 0 else raw[:i]).decode("utf-8", errors="replace"))
    return texts[:limit] if limit else texts


def n_threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return -1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, default=DATA / "sst2" / "train.tsv")
    ap.add_argument("--limit", type=int, help="only the first N texts (tests)")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed passes per tokenizer (at least)")
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build")
    ap.add_argument("--model", type=Path, default=BLOB)
    ap.add_argument("--json-only", action="store_true", help="print only the JSON line (used by compare.py)")
    args = ap.parse_args(argv)

    texts = read_texts(args.file, args.limit)
    src = args.file
    if args.limit:  # bertlet reads a file: hand it exactly these texts
        tmpd = tempfile.mkdtemp(prefix="bertlet-tok-")
        src = Path(tmpd) / "texts.tsv"
        with open(src, "wb") as f:
            f.write(b"text\tlabel\n" + b"".join(t.encode("utf-8") + b"\t0\n" for t in texts))

    # --- bertlet (C++ driver; prints its own timing) ---
    exe = args.build_dir / "bench" / "bertlet-latency"
    if not exe.exists():
        sys.exit(f"{exe} is missing: build it (cmake --build {args.build_dir} --target bertlet-latency)")
    with tempfile.NamedTemporaryFile(prefix="bertlet-ids-", suffix=".txt", delete=False) as tf:
        dump = tf.name
    cmd = [str(exe), "--model", str(args.model), "--tokenize-file", str(src), "--passes", str(args.passes),
           "--min-time", str(args.min_time), "--dump-ids", dump]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        sys.exit(f"bertlet-latency failed: {r.stderr}")
    b = json.loads(r.stdout.strip().splitlines()[-1])
    with open(dump) as f:
        b_ids = [list(map(int, line.split())) for line in f]
    os.unlink(dump)

    # --- Hugging Face tokenizers (Rust), one thread ---
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(CKPT / "tokenizer.json"))
    tok.enable_truncation(MAX_LEN)
    tok.no_padding()
    threads_before = n_threads()
    hf_enc = tok.encode_batch(texts)  # warm-up pass, also the ids for the equality check
    hf_ids = [e.ids for e in hf_enc]
    del hf_enc
    passes, cpu, wall = [], 0.0, 0.0
    tokens = sum(len(x) for x in hf_ids)
    while len(passes) < args.passes or sum(passes) < args.min_time:
        c0, t0 = time.process_time(), time.perf_counter()
        out = tok.encode_batch(texts)
        dt = time.perf_counter() - t0
        cpu += time.process_time() - c0
        wall += dt
        passes.append(dt)
        del out
    threads_after = n_threads()
    cpu_ratio = cpu / wall
    one_thread = threads_after <= threads_before and cpu_ratio < 1.15
    passes.sort()
    med = passes[len(passes) // 2] if len(passes) % 2 else 0.5 * (passes[len(passes) // 2 - 1] + passes[len(passes) // 2])
    hf = dict(name=f"HF tokenizers {__import__('tokenizers').__version__} encode_batch (Rust)", sentences_per_s=len(texts) / med,
              tokens_per_s=tokens / med, median_pass_s=med, passes=len(passes))

    if len(b_ids) != len(hf_ids):
        sys.exit(f"bertlet tokenized {len(b_ids)} texts, HF {len(hf_ids)}")
    mismatches = [i for i, (x, y) in enumerate(zip(b_ids, hf_ids)) if x != y]
    if b["sentences"] != len(texts):
        sys.exit(f"bertlet read {b['sentences']} texts, Python {len(texts)}")

    res = dict(kind="tokenizer_compare", file=str(args.file), sentences=len(texts), max_length=MAX_LEN,
               command=shlex.join(["bench/tokenizer_compare.py"] + (sys.argv[1:] if argv is None else list(argv))),
               bertlet=dict(name="bertlet wordpiece_tokenizer::encode (C++)", sentences_per_s=b["sentences_per_s"],
                            tokens_per_s=b["tokens_per_s"], median_pass_s=b["median_pass_s"], passes=b["passes"]),
               hf=hf, ratio=b["sentences_per_s"] / hf["sentences_per_s"], ids_identical=not mismatches,
               mismatches=len(mismatches), first_mismatch=mismatches[0] if mismatches else None,
               hf_threads_before=threads_before, hf_threads_after=threads_after, hf_cpu_over_wall=cpu_ratio,
               hf_thread_check=(f"HF: {threads_after} OS thread(s), CPU/wall {cpu_ratio:.2f}" +
                                ("" if one_thread else " — MORE THAN ONE THREAD")))
    if not args.json_only:
        print(f"bertlet: {b['sentences_per_s']:,.0f} sentences/s   HF tokenizers: {hf['sentences_per_s']:,.0f} "
              f"sentences/s   ratio {res['ratio']:.1f}x   ids identical: {res['ids_identical']} "
              f"({len(texts):,} texts)   {res['hf_thread_check']}", file=sys.stderr)
    print(json.dumps(res), flush=True)
    if mismatches:
        i = mismatches[0]
        sys.exit(f"ids differ on {len(mismatches)} texts; first #{i}: {texts[i]!r}\n bertlet {b_ids[i]}\n HF {hf_ids[i]}")
    if not one_thread:
        sys.exit("HF tokenizers used more than one thread")
    return 0


if __name__ == "__main__":
    sys.exit(main())
