"""int8 accuracy preview (docs/INT8.md): a numpy BERT encoder (mean pooling + L2 norm, as all-MiniLM-L6-v2) whose
nn.Linear layers run the int8 kernels' math (quantize.linear_int8: per-row int8 weights, per-token dynamic int8
activations); embeddings, LayerNorm, softmax, GELU stay fp32.

    PYTHONPATH=tools HF_HUB_OFFLINE=1 ~/.cache/bertlet/venv/bin/python -m bertlet_tools.int8_sim \
        models/src/all-MiniLM-L6-v2 --stsb ../shared/data/stsb/sts-test.csv [--limit N]

Reports cosine(int8, fp32) per sentence (min / mean) and STS-B Spearman x100 for the fp32 and int8 encoders, then
the same with one kind of linear layer kept in fp32 (which layers cost accuracy).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Set

import numpy as np

from . import quantize as qz
from .goldens import read_stsb, stsb_spearman

KINDS = ("query", "key", "value", "attn_out", "inter", "out")
NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "inter": "intermediate.dense", "out": "output.dense",
}


class Sim:
    def __init__(self, ckpt: Path):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.w = {k: v.astype(np.float32) for k, v in load_file(str(ckpt / "model.safetensors")).items()}
        cfg = json.loads((ckpt / "config.json").read_text())
        self.layers, self.heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(256)
        self.q = {}
        for i in range(self.layers):
            for kind in KINDS:
                name = f"encoder.layer.{i}.{NAMES[kind]}.weight"
                self.q[name] = qz.quantize_per_row(self.w[name])

    def linear(self, x, name, int8: bool):
        b = self.w[name + ".bias"]
        if int8:
            q, s = self.q[name + ".weight"]
            return qz.linear_int8(x, q, s, b)
        return x @ self.w[name + ".weight"].T + b

    def ln(self, x, name):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def embed(self, text: str, int8_kinds: Set[str], stats: Optional[Dict] = None) -> np.ndarray:
        ids = np.array(self.tok.encode(text).ids)
        T = len(ids)
        x = (self.w["embeddings.word_embeddings.weight"][ids] + self.w["embeddings.position_embeddings.weight"][:T]
             + self.w["embeddings.token_type_embeddings.weight"][0])
        x = self.ln(x, "embeddings.LayerNorm")
        H = x.shape[1]
        d = H // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            lin = lambda z, kind: self.linear(z, p + NAMES[kind], kind in int8_kinds)  # noqa: E731
            q, k, v = (lin(x, kk).reshape(T, self.heads, d).transpose(1, 0, 2) for kk in ("query", "key", "value"))
            s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(1, 0, 2).reshape(T, H)
            x = self.ln(lin(ctx, "attn_out") + x, p + "attention.output.LayerNorm")
            from scipy.special import erf

            h = lin(x, "inter")
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            if stats is not None:
                stats.setdefault(i, []).append(float(np.abs(h).max() / (np.abs(h).mean() + 1e-12)))
            x = self.ln(lin(h, "out") + x, p + "output.LayerNorm")
        e = x.mean(0)
        return (e / np.linalg.norm(e)).astype(np.float32)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--stsb", type=Path, required=True)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--ablate", action="store_true", help="also keep each kind of linear layer in fp32 in turn")
    args = ap.parse_args(argv)
    pairs = read_stsb(args.stsb)
    n = len(pairs) if args.limit is None else min(args.limit, len(pairs))
    s1, s2, scores = pairs.sentence1[:n], pairs.sentence2[:n], pairs.scores[:n]
    sents = s1 + s2
    uniq = sorted(set(sents))
    sim = Sim(args.checkpoint)

    def run(kinds: Set[str]) -> np.ndarray:
        emb = {t: sim.embed(t, kinds) for t in uniq}
        return np.stack([emb[t] for t in sents])

    f32 = run(set())
    print(f"pairs {n}, unique sentences {len(uniq)}")
    print(f"fp32 (numpy) Spearman x100: {stsb_spearman(f32, scores):.4f}")
    configs = [("all int8", set(KINDS))]
    if args.ablate:
        configs += [(f"all int8 but {k} fp32", set(KINDS) - {k}) for k in KINDS]
    for label, kinds in configs:
        e = run(kinds)
        cos = (e * f32).sum(1)
        print(f"{label:28s} Spearman x100 {stsb_spearman(e, scores):.4f}  cosine(int8, fp32) min {cos.min():.5f} "
              f"mean {cos.mean():.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
