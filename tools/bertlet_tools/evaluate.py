"""STS-B Spearman x100 of a sentence-transformers checkpoint, straight from Hugging Face (no bertlet involved).

    HF_HUB_OFFLINE=1 python -m bertlet_tools.evaluate models/src/all-MiniLM-L6-v2 \
        --stsb ../shared/data/stsb/sts-test.csv [--limit N]

or, from an existing golden (no model run): ``python -m bertlet_tools.evaluate --golden X.npz``.
Spearman is between cosine(sentence1, sentence2) and the gold score (the metric the model card reports, ~82 test).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .goldens import GoldenError, StsbPairs, encode, load_model, read_stsb, stsb_spearman


def evaluate(ckpt: Path, stsb: Path, limit: Optional[int] = None, progress: bool = True) -> float:
    pairs = read_stsb(stsb)
    if limit is not None:
        pairs = StsbPairs(pairs.sentence1[:limit], pairs.sentence2[:limit], pairs.scores[:limit])
    emb = encode(load_model(ckpt), pairs.sentences, progress)
    return stsb_spearman(emb, pairs.scores)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bertlet_tools.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, nargs="?", help="sentence-transformers checkpoint directory")
    p.add_argument("--stsb", type=Path, help="STS-B split file")
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.add_argument("--golden", type=Path, help="recompute from a bertlet-goldens .npz instead of running the model")
    args = p.parse_args(argv)
    try:
        if args.golden is not None:
            z = np.load(args.golden, allow_pickle=False)
            rho = stsb_spearman(z["embeddings"], z["scores"])
            print(f"{args.golden}: {int(z['n_pairs'])} pairs, STS-B Spearman x100 {rho:.2f}")
            return 0
        if args.checkpoint is None or args.stsb is None:
            p.error("give CHECKPOINT and --stsb, or --golden")
        rho = evaluate(args.checkpoint, args.stsb, args.limit)
    except GoldenError as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint.name} on {args.stsb.name}: STS-B Spearman x100 {rho:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
