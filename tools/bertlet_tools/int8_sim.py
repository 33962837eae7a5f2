"""int8 accuracy preview (docs/INT8.md): a numpy BERT encoder (mean pooling + L2 norm, as all-MiniLM-L6-v2) whose
nn.Linear layers run the int8 kernels' math (quantize.linear_int8: per-row int8 weights, per-token dynamic int8
activations, optionally SmoothQuant-style per-input-channel smoothing); embeddings, LayerNorm, softmax, GELU stay fp32.

    PYTHONPATH=tools HF_HUB_OFFLINE=1 ~/.cache/bertlet/venv/bin/python -m bertlet_tools.int8_sim \
        models/src/all-MiniLM-L6-v2 --stsb ../shared/data/stsb/sts-test.csv [--limit N] [--ablate] \
        [--kinds query,key,value,attn_out,inter,out] [--alpha none --alpha 0.5 --alpha qkv=0.5,out=0.7 ...] \
        [--calib ../shared/data/stsb/sts-train.csv] [--calib-size 512]

Reports cosine(int8, fp32) per sentence (min / mean, and how many sentences fall below 0.99 / 0.995) and STS-B
Spearman x100 for the fp32 and int8 encoders; one line per --alpha (default: none = no smoothing, the plain scheme).
Smoothing: ``act_scale`` per input channel from max|x| over --calib-size STS-B train sentences (calibrate.py), the
input multiplied by it at run time and the weight divided by it before quantization. With --ablate, also each kind
of linear layer kept in fp32 in turn (which layers cost accuracy).
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set

import numpy as np

from . import calibrate as cal
from . import quantize as qz
from .gelu_int8 import gelu as gelu_int8
from .goldens import read_stsb, stsb_spearman

KINDS = ("query", "key", "value", "attn_out", "inter", "out")
NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "inter": "intermediate.dense", "out": "output.dense",
}


class Sim:
    """The numpy encoder. ``act_scales`` ({weight name: float32 [K]}): smoothing of those linears' int8 path."""

    def __init__(self, ckpt: Path, act_scales: Optional[Dict[str, np.ndarray]] = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        self.w = {k: v.astype(np.float32) for k, v in load_file(str(ckpt / "model.safetensors")).items()}
        cfg = json.loads((ckpt / "config.json").read_text())
        self.layers, self.heads = cfg["num_hidden_layers"], cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.tok = Tokenizer.from_file(str(ckpt / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(256)
        self.linear_names = [f"encoder.layer.{i}.{NAMES[kind]}.weight" for i in range(self.layers) for kind in KINDS]
        self.act_scales: Dict[str, np.ndarray] = {}
        self.q = {}
        self.set_act_scales(act_scales or {})

    def set_act_scales(self, act_scales: Dict[str, np.ndarray]) -> None:
        """Install smoothing vectors (weight name -> act_scale); re-quantizes the affected weights as W / act_scale."""
        unknown = set(act_scales) - set(self.linear_names)
        if unknown:
            raise ValueError(f"act_scales for unknown weights: {sorted(unknown)[:3]}")
        self.act_scales = {n: np.asarray(a, np.float32) for n, a in act_scales.items()}
        for name in self.linear_names:
            a = self.act_scales.get(name)
            w = self.w[name] if a is None else qz.smooth_weight(self.w[name], a)
            self.q[name] = qz.quantize_per_row(w)

    def linear(self, x, name, int8: bool):
        b = self.w[name + ".bias"]
        if int8:
            q, s = self.q[name + ".weight"]
            return qz.linear_int8(x, q, s, b, self.act_scales.get(name + ".weight"))
        return x @ self.w[name + ".weight"].T + b

    def ln(self, x, name):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def embed(self, text: str, int8_kinds: Set[str], stats: Optional[Dict] = None,
              act_stats: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
        """The L2-normalized mean-pooled embedding. ``act_stats``: updated in place with, per linear weight name,
        the running per-input-channel max|x| of that linear's input (calibration)."""
        ids = np.array(self.tok.encode(text).ids)
        return self.encode_ids(ids[None, :], int8_kinds, stats, act_stats)[0]

    def embed_many(self, texts: Sequence[str], int8_kinds: Set[str],
                   act_stats: Optional[Dict[str, np.ndarray]] = None, batch: int = 64) -> np.ndarray:
        """embed() of every text, [len(texts), H]. Texts of equal token length run together (no padding): every
        operation is per token row or per sentence, and the integer sums are exact, so the int8 results are those
        of embed() (fp32 matmuls may differ in the last bits with the batch size)."""
        ids = [np.array(e.ids) for e in self.tok.encode_batch(list(texts))]
        out = np.zeros((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        by_len: Dict[int, List[int]] = {}
        for j, a in enumerate(ids):
            by_len.setdefault(len(a), []).append(j)
        for _, idx in sorted(by_len.items()):
            for c in range(0, len(idx), batch):
                chunk = idx[c:c + batch]
                out[chunk] = self.encode_ids(np.stack([ids[j] for j in chunk]), int8_kinds, None, act_stats)
        return out

    def encode_ids(self, ids: np.ndarray, int8_kinds: Set[str], stats: Optional[Dict] = None,
                   act_stats: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
        """ids [B, T] (B sentences of the same length T, no padding) -> [B, H] normalized embeddings."""
        from scipy.special import erf

        B, T = ids.shape
        x = (self.w["embeddings.word_embeddings.weight"][ids] + self.w["embeddings.position_embeddings.weight"][:T]
             + self.w["embeddings.token_type_embeddings.weight"][0])
        x = self.ln(x, "embeddings.LayerNorm")
        H = x.shape[-1]
        d = H // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(z, kind, p=p):
                if act_stats is not None:
                    key = p + NAMES[kind] + ".weight"
                    m = np.abs(z).reshape(-1, z.shape[-1]).max(axis=0)
                    act_stats[key] = m if key not in act_stats else np.maximum(act_stats[key], m)
                return self.linear(z, p + NAMES[kind], kind in int8_kinds)

            q, k, v = (lin(x, kk).reshape(B, T, self.heads, d).transpose(0, 2, 1, 3)
                       for kk in ("query", "key", "value"))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
            x = self.ln(lin(ctx, "attn_out") + x, p + "attention.output.LayerNorm")
            h = lin(x, "inter")
            if "inter" in int8_kinds:  # the int8 epilogue's piecewise GELU (gelu_int8.py)
                h = gelu_int8(h)
            else:
                h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            if stats is not None:
                for hb in h:
                    stats.setdefault(i, []).append(float(np.abs(hb).max() / (np.abs(hb).mean() + 1e-12)))
            x = self.ln(lin(h, "out") + x, p + "output.LayerNorm")
        e = x.mean(1)
        return (e / np.linalg.norm(e, axis=-1, keepdims=True)).astype(np.float32)


def parse_kinds(spec: str) -> Set[str]:
    kinds = {k.strip() for k in spec.split(",") if k.strip()}
    bad = kinds - set(KINDS)
    if bad:
        raise SystemExit(f"int8_sim: unknown kind(s) {sorted(bad)} (choose from {', '.join(KINDS)})")
    return kinds


def cosine_report(e: np.ndarray, f32: np.ndarray, sents: List[str]) -> Dict[str, float]:
    """cosine(int8, fp32) over the 2n sentence slots (min, mean) and counts below 0.99 / 0.995 (slots and unique)."""
    cos = (e.astype(np.float64) * f32).sum(1)
    by_text = {t: c for t, c in zip(sents, cos)}
    u = np.array(list(by_text.values()))
    return {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "below_0.99": int((cos < 0.99).sum()), "below_0.995": int((cos < 0.995).sum()),
            "unique_below_0.99": int((u < 0.99).sum()), "unique_below_0.995": int((u < 0.995).sum())}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--stsb", type=Path, required=True)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--ablate", action="store_true", help="also keep each kind of linear layer in fp32 in turn")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"int8 kinds (default all: {','.join(KINDS)})")
    ap.add_argument("--alpha", action="append",
                    help="smoothing strength, repeatable (one result line each): none (no smoothing, default), a "
                         "float in 0..1 for every kind, or per group qkv=A,attn_out=B,inter=C,out=D (groups not "
                         "named are not smoothed)")
    ap.add_argument("--calib", type=Path, default=None,
                    help=f"calibration sentences (STS-B train format; default {cal.default_calib_path()})")
    ap.add_argument("--calib-size", type=int, default=cal.DEFAULT_CALIB_SIZE)
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    pairs = read_stsb(args.stsb)
    n = len(pairs) if args.limit is None else min(args.limit, len(pairs))
    s1, s2, scores = pairs.sentence1[:n], pairs.sentence2[:n], pairs.scores[:n]
    sents = s1 + s2
    uniq = sorted(set(sents))
    sim = Sim(args.checkpoint)
    base_kinds = parse_kinds(args.kinds)
    alphas = [cal.parse_alpha(a) for a in (args.alpha or ["none"])]

    absmax = None
    if any(a is not None for a in alphas):
        calib = args.calib or cal.default_calib_path()
        texts = cal.calibration_sentences(calib, args.calib_size)
        absmax = cal.collect_absmax(sim, texts)
        print(f"calibration: {len(texts)} sentences from {calib}")

    def run(kinds: Set[str]) -> np.ndarray:
        e = sim.embed_many(uniq, kinds)
        emb = {t: e[j] for j, t in enumerate(uniq)}
        return np.stack([emb[t] for t in sents])

    f32 = run(set())
    sp32 = stsb_spearman(f32, scores)
    print(f"pairs {n}, unique sentences {len(uniq)}")
    print(f"fp32 (numpy) Spearman x100: {sp32:.4f}")
    results = []
    for alpha in alphas:
        configs = [("int8" if base_kinds == set(KINDS) else "int8 " + ",".join(k for k in KINDS if k in base_kinds),
                    set(base_kinds))]
        if args.ablate:
            configs += [(f"int8 but {k} fp32", base_kinds - {k}) for k in KINDS if k in base_kinds]
        for label, kinds in configs:
            sim.set_act_scales({} if alpha is None else cal.act_scales(sim.w, absmax, sim.layers, alpha, kinds))
            e = run(kinds)
            r = {"label": label, "alpha": cal.format_alpha(alpha), "spearman": stsb_spearman(e, scores),
                 **cosine_report(e, f32, sents)}
            results.append(r)
            print(f"alpha {r['alpha']:10s} {label:24s} Spearman x100 {r['spearman']:.4f} ({r['spearman'] - sp32:+.4f})"
                  f"  cosine(int8, fp32) min {r['min_cosine']:.5f} mean {r['mean_cosine']:.5f}  below 0.99: "
                  f"{r['below_0.99']}  below 0.995: {r['below_0.995']} (of {len(sents)})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"stsb": str(args.stsb), "pairs": n, "unique": len(uniq),
                                         "fp32_spearman": sp32, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
