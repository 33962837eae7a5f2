"""Calibration for SmoothQuant-style smoothing of the int8 linear layers (docs/INT8.md).

* ``calibration_sentences(path, n)``: a deterministic sample of STS-B **train** sentences: the unique sentences in
  file order (sentence1, sentence2 of each pair), then ``n`` of them evenly spaced over the file (every genre).
* ``collect_absmax(sim, sentences)``: runs the fp32 numpy encoder (``int8_sim.Sim``) over them and returns, for every
  linear weight of the encoder, the per-input-channel ``max |x[:, k]|`` of that linear's input over all tokens.
* ``act_scales(weights, absmax, layers, alpha, int8_kinds)``: the per-layer ``act_scale`` vectors (``1 / s``,
  ``s_k = max|X_k|^alpha / max|W_k|^(1 - alpha)``, ``quantize.smoothing_act_scale``). query/key/value share their
  input and therefore one vector, computed from the column maxima of the stacked ``[Wq; Wk; Wv]`` (the int8 members
  of the group); every other kind gets its own. Keys are the weight names (``encoder.layer.0.attention.self.query
  .weight``); only int8 kinds get one.

``alpha`` is one float for every group or a dict ``{group: alpha}`` over GROUPS (``qkv``, ``attn_out``, ``inter``,
``out``); a group missing from the dict, or with alpha ``None``, is not smoothed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import quantize as qz

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CALIB_SIZE = 512
NAMES = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "inter": "intermediate.dense", "out": "output.dense",
}
GROUPS = {"qkv": ("query", "key", "value"), "attn_out": ("attn_out",), "inter": ("inter",), "out": ("out",)}
Alpha = Union[None, float, Mapping[str, Optional[float]]]


class CalibrationError(Exception):
    pass


def default_calib_path() -> Path:
    """$BERTLET_DATA/stsb/sts-train.csv, else ../shared/data/stsb/sts-train.csv next to the repository."""
    data = os.environ.get("BERTLET_DATA")
    base = Path(data) if data else REPO.parent / "shared" / "data"
    return base / "stsb" / "sts-train.csv"


def calibration_sentences(path: Path, n: int = DEFAULT_CALIB_SIZE) -> List[str]:
    from .goldens import GoldenError, read_stsb

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} not found (STS-B train split, tab-separated; pass --calib "
                               f"PATH or set BERTLET_DATA)")
    if n < 1:
        raise CalibrationError(f"calibration size {n} must be >= 1")
    try:
        pairs = read_stsb(path)
    except GoldenError as e:
        raise CalibrationError(f"calibration file: {e}") from e
    seen, uniq = set(), []
    for a, b in zip(pairs.sentence1, pairs.sentence2):
        for t in (a, b):
            if t not in seen:
                seen.add(t)
                uniq.append(t)
    if n >= len(uniq):
        return uniq
    idx = np.unique(np.round(np.linspace(0, len(uniq) - 1, n)).astype(np.int64))
    return [uniq[i] for i in idx]


def collect_absmax(sim, sentences: Iterable[str]) -> Dict[str, np.ndarray]:
    """{linear weight name: float32 [K] max|x[:, k]| of that linear's input}, fp32 forward passes."""
    stats: Dict[str, np.ndarray] = {}
    sentences = list(sentences)
    if not sentences:
        raise CalibrationError("no calibration sentences")
    sim.embed_many(sentences, set(), act_stats=stats)
    return {k: v.astype(np.float32) for k, v in stats.items()}


def _alpha_for(alpha: Alpha, group: str) -> Optional[float]:
    if alpha is None or isinstance(alpha, (int, float)):
        return None if alpha is None else float(alpha)
    unknown = set(alpha) - set(GROUPS)
    if unknown:
        raise CalibrationError(f"alpha: unknown group(s) {sorted(unknown)} (choose from {', '.join(GROUPS)})")
    a = alpha.get(group)
    return None if a is None else float(a)


def act_scales(weights: Mapping[str, np.ndarray], absmax: Mapping[str, np.ndarray], layers: int, alpha: Alpha,
               int8_kinds: Sequence[str]) -> Dict[str, np.ndarray]:
    """{weight name: act_scale float32 [K]} for the int8 kinds of every layer (see the module docstring)."""
    out: Dict[str, np.ndarray] = {}
    for group, members in GROUPS.items():
        a = _alpha_for(alpha, group)
        members = [k for k in members if k in int8_kinds]
        if a is None or not members:
            continue
        for i in range(layers):
            names = [f"encoder.layer.{i}.{NAMES[k]}.weight" for k in members]
            missing = [n for n in names if n not in absmax]
            if missing:
                raise CalibrationError(f"no activation statistics for {missing[0]}")
            x = absmax[names[0]]
            w = np.abs(np.concatenate([np.asarray(weights[n], np.float32) for n in names], axis=0)).max(axis=0)
            try:
                s = qz.smoothing_act_scale(x, w, a)
            except ValueError as e:
                raise CalibrationError(f"{names[0]}: {e}") from e
            for n in names:
                out[n] = s.copy()
    return out


def parse_alpha(spec: str) -> Alpha:
    """'none' -> None; '0.5' -> 0.5; 'qkv=0.5,out=0.7,inter=none' -> dict (groups not named: not smoothed)."""
    spec = spec.strip()
    if spec.lower() in ("none", "off", ""):
        return None

    def num(v: str) -> Optional[float]:
        v = v.strip()
        if v.lower() in ("none", "off"):
            return None
        try:
            f = float(v)
        except ValueError:
            raise CalibrationError(f"alpha: '{v}' is not a number") from None
        if not 0.0 <= f <= 1.0:
            raise CalibrationError(f"alpha {f} outside 0..1")
        return f

    if "=" not in spec:
        return num(spec)
    d: Dict[str, Optional[float]] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise CalibrationError(f"alpha: '{part}' is not group=value")
        g, v = part.split("=", 1)
        g = g.strip()
        if g not in GROUPS:
            raise CalibrationError(f"alpha: unknown group '{g}' (choose from {', '.join(GROUPS)})")
        d[g] = num(v)
    return d


def format_alpha(alpha: Alpha) -> str:
    if alpha is None:
        return "none"
    if isinstance(alpha, (int, float)):
        return f"{float(alpha):g}"
    return ",".join(f"{g}={'none' if alpha.get(g) is None else format(alpha[g], 'g')}" for g in GROUPS if g in alpha)
