"""Tokenizer parity: a bertlet tokenizer CLI vs Hugging Face BertTokenizerFast over every sentence of the data sets.

Sentences (../shared/data, or --data-dir / $BERTLET_DATA):
  * stsb/sts-{train,dev,test}.csv  tab-separated genre,file,year,id,score,sentence1,sentence2[,extra...]; no quoting
                                    (QUOTE_NONE, the STS-B convention); sentence1 and sentence2 are both used
  * sst2/{train,dev}.tsv            tsv with header text<TAB>label (csv quoting)
  * banking77/{train,dev,test}.tsv  tsv with header text<TAB>label (csv quoting: a few texts are quoted and contain
                                    line breaks)

The command (default: $BERTLET_BUILD_DIR/examples/bertlet-tokenize --model models/all-MiniLM-L6-v2.bertlet, with
BERTLET_BUILD_DIR defaulting to `build`) gets the texts on stdin and must print one JSON object per input line with at
least "ids" (the full [CLS] ... [SEP] id list, truncated to the model max length).

Line breaks: a line protocol cannot carry texts that contain "\\n" (banking77 train has 10 such texts), or "\\r"
(which a line reader may strip). Two modes:
  * --jsonl (used by tests/python/test_tokenizer_parity.py): every text is sent as one JSON object line
    {"text": "..."} and `--jsonl` is appended to the command; the CLI must then parse JSON lines. All texts are checked.
  * default (plain lines): texts containing "\\n" or "\\r" are skipped and their count is printed.

The reference is BertTokenizerFast.from_pretrained(--model-dir)(text, truncation=True, max_length=--max-length)
(all-MiniLM-L6-v2: max_seq_length 256 from sentence_bert_config.json).

Exit status: 0 when every checked text matches (and, with --no-skip, nothing was skipped), 1 otherwise.

    PYTHONPATH=tools /root/.cache/bertlet/venv/bin/python -m bertlet_tools.tokenizer_parity --jsonl
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def default_data_dir() -> Path:
    return Path(os.environ.get("BERTLET_DATA", REPO.parent / "shared" / "data"))


def load_sentences(data_dir: Path) -> list[tuple[str, str]]:
    """Returns (source, text) for every sentence, in a fixed order."""
    out: list[tuple[str, str]] = []
    for split in ("train", "dev", "test"):
        path = data_dir / "stsb" / f"sts-{split}.csv"
        with open(path, encoding="utf-8", newline="") as f:
            for ln, line in enumerate(f.read().split("\n"), 1):
                if not line:
                    continue
                cols = line.split("\t")
                if len(cols) < 7:
                    raise ValueError(f"{path}:{ln}: expected >= 7 columns, got {len(cols)}")
                out.append((f"stsb/{split}:{ln}:s1", cols[5]))
                out.append((f"stsb/{split}:{ln}:s2", cols[6]))
    for ds, splits in (("sst2", ("train", "dev")), ("banking77", ("train", "dev", "test"))):
        for split in splits:
            path = data_dir / ds / f"{split}.tsv"
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.reader(f, delimiter="\t"))
            if rows[0] != ["text", "label"]:
                raise ValueError(f"{path}: unexpected header {rows[0]}")
            for i, row in enumerate(rows[1:], 1):
                if len(row) != 2:
                    raise ValueError(f"{path}: row {i}: expected 2 columns, got {len(row)}")
                out.append((f"{ds}/{split}:{i}", row[0]))
    return out


def hf_ids(model_dir: Path, texts: list[str], max_length: int) -> list[list[int]]:
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(model_dir))
    res: list[list[int]] = []
    for i in range(0, len(texts), 4096):
        res.extend(tok(texts[i:i + 4096], truncation=True, max_length=max_length)["input_ids"])
    return res


def cli_ids(cmd: list[str], texts: list[str], jsonl: bool) -> list[list[int]]:
    if jsonl:
        payload = "".join(json.dumps({"text": t}) + "\n" for t in texts)
    else:
        payload = "".join(t + "\n" for t in texts)
    proc = subprocess.run(cmd, input=payload.encode("utf-8"), stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with status {proc.returncode}")
    lines = [ln for ln in proc.stdout.decode("utf-8").split("\n") if ln.strip()]
    if len(lines) != len(texts):
        raise RuntimeError(f"{shlex.join(cmd)} printed {len(lines)} lines for {len(texts)} texts")
    return [json.loads(ln)["ids"] for ln in lines]


def parity(cmd: list[str], data_dir: Path, model_dir: Path, max_length: int, jsonl: bool, show: int = 10,
           log=sys.stdout) -> dict:
    sents = load_sentences(data_dir)
    if jsonl:
        checked, skipped = sents, []
    else:
        checked = [s for s in sents if "\n" not in s[1] and "\r" not in s[1]]
        skipped = [s for s in sents if "\n" in s[1] or "\r" in s[1]]
    texts = [t for _, t in checked]
    t0 = time.perf_counter()
    want = hf_ids(model_dir, texts, max_length)
    t1 = time.perf_counter()
    got = cli_ids(cmd, texts, jsonl)
    t2 = time.perf_counter()
    mismatches = [(src, t, w, g) for (src, t), w, g in zip(checked, want, got) if w != g]
    for src, t, w, g in mismatches[:show]:
        print(f"MISMATCH {src}: {t!r}\n  hf:      {w}\n  bertlet: {g}", file=log)
    print(f"sentences: {len(sents)}  checked: {len(texts)}  skipped (line breaks, use --jsonl): {len(skipped)}  "
          f"mismatches: {len(mismatches)}  (hf {t1 - t0:.1f}s, cli {t2 - t1:.1f}s)", file=log)
    return {"sentences": len(sents), "checked": len(texts), "skipped": len(skipped), "mismatches": len(mismatches)}


def main(argv=None) -> int:
    build = os.environ.get("BERTLET_BUILD_DIR", "build")
    default_cmd = f"{build}/examples/bertlet-tokenize --model models/all-MiniLM-L6-v2.bertlet"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cmd", default=default_cmd, help=f"tokenizer command (default: {default_cmd})")
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "src" / "all-MiniLM-L6-v2")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--jsonl", action="store_true", help="send JSON lines and pass --jsonl to the command")
    ap.add_argument("--no-skip", action="store_true", help="fail if any text had to be skipped")
    ap.add_argument("--show", type=int, default=10, help="mismatches to print")
    args = ap.parse_args(argv)
    cmd = shlex.split(args.cmd) + (["--jsonl"] if args.jsonl else [])
    r = parity(cmd, args.data_dir, args.model_dir, args.max_length, args.jsonl, args.show)
    return 1 if r["mismatches"] or (args.no_skip and r["skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main())
