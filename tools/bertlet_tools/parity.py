"""bertlet-parity: compare an embedding command (the C++ CLI) against Hugging Face goldens.

    bertlet-parity --golden models/goldens/all-MiniLM-L6-v2.stsb-test.npz \
        --cmd "build/examples/bertlet-embed --model models/all-MiniLM-L6-v2.bertlet --jsonl"

Every golden sentence is written to the command's stdin, one per line: a JSON object ``{"text": "..."}`` (UTF-8,
non-ASCII characters unescaped) when ``--jsonl`` is among the command's arguments, else the raw text (refused if a
sentence contains a line break, which raw lines cannot carry). The command must print one JSON object per input
line, in order, with the key ``embedding`` (a list of numbers). Reported: n, min cosine(cmd, HF) (with the worst
sentence), max and mean abs element difference, and, for an .npz golden with gold scores, the command's STS-B
Spearman x100 against the golden's HF figure. Exit status: 0 all thresholds met, 1 a threshold missed, 2 the command
or the golden could not be used.

A ``.jsonl`` golden (``{"text", "embedding"}`` per line, e.g. tests/data/golden_stsb_small.jsonl) has no scores: the
Spearman check is reported as not applicable (and not counted as passed) in that case.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from .goldens import GoldenError, cosine_rows, read_jsonl, stsb_spearman

LINE_BREAKS = ("\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


class ParityError(Exception):
    pass


@dataclass
class Golden:
    sentences: List[str]
    embeddings: np.ndarray
    scores: Optional[np.ndarray]
    spearman: Optional[float]


def load_golden(path: Path) -> Golden:
    if path.suffix == ".jsonl":
        try:
            texts, emb = read_jsonl(path)
        except GoldenError as e:
            raise ParityError(str(e)) from e
        return Golden(texts, emb, None, None)
    if path.suffix != ".npz":
        raise ParityError(f"{path}: golden must be .npz (bertlet-goldens) or .jsonl")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ParityError(f"{path}: cannot read ({e})") from e
    for k in ("sentences", "embeddings", "scores", "spearman"):
        if k not in z:
            raise ParityError(f"{path}: missing array '{k}' (not written by bertlet-goldens?)")
    sentences = [str(s) for s in z["sentences"]]
    emb = np.asarray(z["embeddings"], dtype=np.float32)
    scores = np.asarray(z["scores"], dtype=np.float64)
    if emb.shape[0] != len(sentences) or len(sentences) != 2 * len(scores):
        raise ParityError(f"{path}: {len(sentences)} sentences, {emb.shape[0]} embeddings, {len(scores)} scores "
                          "(expected 2n, 2n, n)")
    return Golden(sentences, emb, scores, float(z["spearman"]))


def run_command(cmd: str, sentences: Sequence[str], timeout: float) -> np.ndarray:
    argv = shlex.split(cmd)
    if not argv:
        raise ParityError("--cmd is empty")
    jsonl = "--jsonl" in argv
    if jsonl:
        payload = "".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in sentences)
    else:
        for i, s in enumerate(sentences):
            if any(c in s for c in LINE_BREAKS):
                raise ParityError(f"sentence {i} contains a line break ({s!r:.60}); add --jsonl to the command")
        payload = "".join(s + "\n" for s in sentences)
    try:
        proc = subprocess.run(argv, input=payload.encode("utf-8"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)
    except FileNotFoundError as e:
        raise ParityError(f"cannot run {argv[0]!r}: {e.strerror}") from e
    except subprocess.TimeoutExpired as e:
        raise ParityError(f"command timed out after {timeout:g} s") from e
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-10:]
        raise ParityError(f"command exited with status {proc.returncode}; stderr:\n  " + "\n  ".join(tail))
    lines = [ln for ln in proc.stdout.decode("utf-8", "replace").split("\n") if ln.strip()]
    if len(lines) != len(sentences):
        raise ParityError(f"command printed {len(lines)} non-empty lines for {len(sentences)} inputs")
    rows = []
    for i, ln in enumerate(lines):
        try:
            v = json.loads(ln)["embedding"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ParityError(f"output line {i + 1}: expected a JSON object with 'embedding' ({e}): {ln[:120]!r}") from e
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ParityError(f"output line {i + 1}: 'embedding' is not a list of numbers")
        rows.append(v)
    dims = {len(r) for r in rows}
    if len(dims) != 1:
        raise ParityError(f"output embeddings have differing lengths {sorted(dims)}")
    return np.asarray(rows, dtype=np.float64)


@dataclass
class Report:
    n: int
    dim: int
    min_cosine: float
    worst_index: int
    worst_text: str
    max_abs_diff: float
    mean_abs_diff: float
    spearman_bertlet: Optional[float]
    spearman_hf: Optional[float]
    spearman_delta: Optional[float]
    passed: bool
    failures: List[str]


def compare(g: Golden, got: np.ndarray, min_cos: float, max_abs: float, max_dsp: float) -> Report:
    ref = g.embeddings.astype(np.float64)
    if got.shape != ref.shape:
        raise ParityError(f"command output shape {got.shape} != golden {ref.shape}")
    if not np.all(np.isfinite(got)):
        bad = int(np.argwhere(~np.isfinite(got))[0][0])
        raise ParityError(f"command output for sentence {bad} has NaN/Inf")
    cos = cosine_rows(got, ref)
    diff = np.abs(got - ref)
    worst = int(np.argmin(cos))
    sp_cmd = sp_hf = dsp = None
    failures: List[str] = []
    if g.scores is not None:
        sp_cmd = stsb_spearman(got, g.scores)
        sp_hf = g.spearman
        dsp = sp_cmd - sp_hf
    r = Report(n=len(g.sentences), dim=ref.shape[1], min_cosine=float(cos.min()), worst_index=worst,
               worst_text=g.sentences[worst], max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()),
               spearman_bertlet=sp_cmd, spearman_hf=sp_hf, spearman_delta=dsp, passed=False, failures=failures)
    if not r.min_cosine >= min_cos:
        failures.append(f"min cosine {r.min_cosine:.8f} < {min_cos}")
    if not r.max_abs_diff <= max_abs:
        failures.append(f"max abs diff {r.max_abs_diff:.3g} > {max_abs:g}")
    if dsp is not None and not abs(dsp) <= max_dsp:
        failures.append(f"|delta spearman| {abs(dsp):.4f} > {max_dsp:g}")
    r.passed = not failures
    return r


def format_report(r: Report) -> List[str]:
    lines = [
        f"sentences: {r.n} (dim {r.dim})",
        f"min cosine(cmd, HF): {r.min_cosine:.8f} (sentence {r.worst_index}: {r.worst_text[:70]!r})",
        f"max abs diff: {r.max_abs_diff:.3e}   mean abs diff: {r.mean_abs_diff:.3e}",
    ]
    if r.spearman_bertlet is None:
        lines.append("STS-B Spearman x100: n/a (golden has no gold scores; check not applied)")
    else:
        lines.append(f"STS-B Spearman x100: bertlet (cmd) {r.spearman_bertlet:.4f}  HF {r.spearman_hf:.4f}  "
                     f"delta {r.spearman_delta:+.4f}")
    lines.append("PASS" if r.passed else "FAIL: " + "; ".join(r.failures))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="bertlet-parity",
                                description="Compare an embedding command's output with Hugging Face goldens.")
    p.add_argument("--golden", type=Path, required=True, help=".npz from bertlet-goldens, or a .jsonl small golden")
    p.add_argument("--cmd", required=True, help="command line; sentences go to its stdin ({\"text\":...} lines if it "
                   "has --jsonl, else raw lines); one JSON object with 'embedding' per output line")
    p.add_argument("--min-cosine", type=float, default=0.99999)
    p.add_argument("--max-abs-diff", type=float, default=1e-4)
    p.add_argument("--max-spearman-delta", type=float, default=0.05, help="max |Spearman x100 difference|")
    p.add_argument("--limit", type=int, help="only the first N sentences (no Spearman check then)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds (default 1800)")
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON object (last line)")
    args = p.parse_args(argv)
    try:
        g = load_golden(args.golden)
        if args.limit is not None:
            if args.limit < 1:
                raise ParityError("--limit must be >= 1")
            g = Golden(g.sentences[: args.limit], g.embeddings[: args.limit], None, None)
        got = run_command(args.cmd, g.sentences, args.timeout)
        r = compare(g, got, args.min_cosine, args.max_abs_diff, args.max_spearman_delta)
    except (ParityError, GoldenError) as e:
        print(f"bertlet-parity: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(format_report(r)))
    if args.json:
        d = asdict(r)
        d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
        print(json.dumps(d, ensure_ascii=False))
    return 0 if r.passed else 1


if __name__ == "__main__":
    sys.exit(main())
