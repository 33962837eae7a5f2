"""bertlet-quantize: an fp32 `.bertlet` blob -> an int8 blob (docs/INT8.md, docs/FORMAT.md layout 2).

    bertlet-quantize models/all-MiniLM-L6-v2.bertlet --checkpoint models/src/all-MiniLM-L6-v2 \
        -o models/all-MiniLM-L6-v2.int8.bertlet [--keep-fp32 KINDS] [--alpha 0.6] [--calib PATH] [--calib-size 512]

The encoder's linear weights (by default all six kinds: query, key, value, attention output, intermediate, FFN
output) are quantized per output row (symmetric int8, scale = max|row| / 127) and written pre-packed for the int8
GEMM kernels (layout 2, S8P16K4, quant 1) with their companions `<name>.scale` (F32) and `<name>.row_sum` (I32),
both padded to a multiple of 16 entries, so loading stays an mmap. Activations are quantized per token at run time.

Smoothing (SmoothQuant-style, default alpha 0.6; `--alpha none` turns it off): every int8 linear gets a per-input-
channel vector `act_scale` (K floats), written as `<weight name>.act_scale` (F32, [K], layout 0, quant 0). At run
time the linear's input is multiplied by it (fp32) before the per-token quantization; the stored int8 weights,
scales and row sums are those of W' = W / act_scale (per column), so x W^T = (x * act_scale) W'^T. query, key and
value share their input and one (identical, stored three times) vector. act_scale = 1 / s with
s_k = max|X_k|^alpha / max|W_k|^(1 - alpha): max|X_k| over the inputs of that linear on `--calib-size` STS-B train
sentences (default `$BERTLET_DATA/stsb/sts-train.csv`, else `../shared/data/stsb/sts-train.csv` next to the repo;
calibrate.py), max|W_k| over the column of the weight (of [Wq; Wk; Wv] for the shared vector). Calibration runs the
checkpoint (`--checkpoint`) in numpy. With smoothing every STS-B test sentence keeps cosine(int8, fp32) >= 0.99
with all six kinds int8 (docs/INT8.md). `--keep-fp32` names kinds left fp32 (PACKED_N16, no act_scale).

Reference vectors: the fp32 blob's `verify.texts` are re-run through a numpy model of the int8 kernels' exact math
(`int8_sim.Sim`, same smoothing, integer sums exact, same quantization), stored as `verify.embeddings` with tolerance
1e-2 per element and `verify.min_cosine` 0.999 per text (float-order differences can flip the rounding of a quantized
activation, which moves single elements by up to ~3e-3 and the cosine to ~0.9998; a layout slip drops the cosine far
below).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import blob as B
from . import calibrate as cal
from . import quantize as qz

LAYOUT_PACKED_N16 = 1
LAYOUT_S8P16K4 = 2
KINDS = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "inter": "intermediate.dense", "out": "output.dense",
}
ALIASES = {"output": "out", "intermediate": "inter", "attention_output": "attn_out"}
DEFAULT_KEEP: tuple = ()
DEFAULT_ALPHA = 0.6  # chosen on STS-B dev (docs/INT8.md)
VERIFY_TOLERANCE = 1e-2
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
VERIFY_MIN_COSINE = 0.999


class QuantizeError(Exception):
    pass


class RawTensor(B.Tensor):
    """A tensor whose bytes are given as-is (already packed or copied from another blob)."""

    def __init__(self, name: str, dims: Sequence[int], dtype: int, layout: int, quant: int, raw: bytes):
        super().__init__(name, np.empty((0,), np.float32), dtype, layout, quant)
        self.dims = tuple(int(d) for d in dims)
        self._raw = raw

    def raw(self) -> bytes:
        return self._raw


def _unpack_n16(flat: np.ndarray, n: int, k: int) -> np.ndarray:
    npad = (n + 15) // 16 * 16
    return np.ascontiguousarray(flat.reshape(npad // 16, k, 16).transpose(0, 2, 1).reshape(npad, k)[:n])


def _weight(b: B.Blob, t: B.TensorInfo) -> np.ndarray:
    buf = np.frombuffer(b.raw, dtype="<f4", count=t.nbytes // 4, offset=b.data_offset + t.offset)
    if t.layout == LAYOUT_PACKED_N16:
        return _unpack_n16(buf, t.shape[0], t.shape[1])
    if t.layout == 0:
        return buf.reshape(t.shape)
    raise QuantizeError(f"tensor '{t.name}': layout {t.layout} cannot be quantized")


def parse_keep(spec: str) -> List[str]:
    out = []
    for k in (s.strip() for s in spec.split(",") if s.strip()):
        k = ALIASES.get(k, k)
        if k not in KINDS:
            raise QuantizeError(f"--keep-fp32: unknown kind '{k}' (choose from {', '.join(KINDS)}, output)")
        out.append(k)
    return out


def _calibration(sim, calib: Path, calib_size: int, alpha: cal.Alpha,
                 kinds: Sequence[str]) -> Tuple[Dict[str, np.ndarray], int]:
    try:
        texts = cal.calibration_sentences(calib, calib_size)
        absmax = cal.collect_absmax(sim, texts)
        return cal.act_scales(sim.w, absmax, sim.layers, alpha, kinds), len(texts)
    except cal.CalibrationError as e:
        raise QuantizeError(str(e)) from e


def quantize_blob(src: Path, checkpoint: Optional[Path], out: Path, keep_fp32: Sequence[str] = DEFAULT_KEEP,
                  verify_vectors: bool = True, alpha: cal.Alpha = DEFAULT_ALPHA, calib: Optional[Path] = None,
                  calib_size: int = cal.DEFAULT_CALIB_SIZE, word_embeddings: str = "f32") -> Dict[str, float]:
    if word_embeddings not in ("f32", "f16"):
        raise QuantizeError(f"--word-embeddings {word_embeddings!r}: expected f32 or f16")
    b = B.decode(Path(src).read_bytes())
    meta = dict(b.meta)
    if meta.get("general.architecture") != "bert":
        raise QuantizeError(f"{src}: not a bert blob")
    if "general.quantization" in meta:
        raise QuantizeError(f"{src}: already quantized ({meta['general.quantization']})")
    layers = int(meta["bert.num_layers"])
    kinds = [k for k in KINDS if k not in keep_fp32]
    quant_names = {f"encoder.layer.{i}.{KINDS[k]}.weight" for i in range(layers) for k in kinds}
    smoothing = alpha is not None and bool(kinds)
    if smoothing:
        calib = Path(calib) if calib is not None else cal.default_calib_path()
        if not calib.is_file():
            raise QuantizeError(f"calibration file {calib} not found (STS-B train split for the smoothing "
                                f"statistics: pass --calib PATH, set BERTLET_DATA, or --alpha none for no smoothing)")
        if calib_size < 1:
            raise QuantizeError(f"--calib-size {calib_size} must be >= 1")
        if checkpoint is None:
            raise QuantizeError("--checkpoint is needed to calibrate the smoothing (or --alpha none)")
    need_sim = smoothing or (verify_vectors and "verify.texts" in meta)
    sim = None
    if need_sim:
        if checkpoint is None:
            raise QuantizeError("--checkpoint is needed to compute the int8 reference vectors (or --no-verify-vectors)")
        from .int8_sim import Sim

        try:
            sim = Sim(Path(checkpoint))
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise QuantizeError(f"cannot load the checkpoint {checkpoint}: {e}") from e
        if sim.layers != layers:
            raise QuantizeError(f"checkpoint {checkpoint} has {sim.layers} layers, the blob {layers}")
    act: Dict[str, np.ndarray] = {}
    n_calib = 0
    if sim is not None and word_embeddings == "f16":  # the network the output blob describes
        we = sim.w[WORD_EMBEDDINGS]
        sim.w[WORD_EMBEDDINGS] = we.astype(np.float16).astype(np.float32)
    if smoothing:
        act, n_calib = _calibration(sim, calib, calib_size, alpha, kinds)
        act = {n: a for n, a in act.items() if not np.all(a == 1.0)}
    tensors: List[B.Tensor] = []
    n_q = n_act = 0
    bytes_in = bytes_out = 0
    for t in b.tensors:
        raw = b.raw[b.data_offset + t.offset: b.data_offset + t.offset + t.nbytes]
        bytes_in += t.nbytes
        if t.name in quant_names:
            if t.dtype != B.DT_F32 or len(t.shape) != 2:
                raise QuantizeError(f"tensor '{t.name}': expected a 2-D f32 weight, got {t.shape}")
            w = _weight(b, t)
            if sim is not None and not np.array_equal(w, sim.w[t.name]):
                raise QuantizeError(f"tensor '{t.name}' differs between the blob and the checkpoint {checkpoint}")
            a = act.get(t.name)
            q, s = qz.quantize_per_row(w if a is None else qz.smooth_weight(w, a))
            packed = qz.pack_s8(q)
            tensors.append(RawTensor(t.name, t.shape, B.DT_I8, LAYOUT_S8P16K4, B.QUANT_PER_ROW_SYMMETRIC, packed))
            sc = qz.padded_scales(s)
            rs = qz.padded_row_sums(q)
            tensors.append(RawTensor(t.name + ".scale", sc.shape, B.DT_F32, 0, 0, sc.astype("<f4").tobytes()))
            tensors.append(RawTensor(t.name + ".row_sum", rs.shape, B.DT_I32, 0, 0, rs.astype("<i4").tobytes()))
            bytes_out += len(packed) + sc.nbytes + rs.nbytes
            if a is not None:
                if a.shape != (t.shape[1],):
                    raise QuantizeError(f"tensor '{t.name}': act_scale shape {a.shape} != [{t.shape[1]}]")
                tensors.append(RawTensor(t.name + ".act_scale", a.shape, B.DT_F32, 0, 0, a.astype("<f4").tobytes()))
                bytes_out += a.nbytes
                n_act += 1
            n_q += 1
        elif t.name == WORD_EMBEDDINGS and word_embeddings == "f16" and t.dtype == B.DT_F32 and t.layout == 0:
            from .convert import ConversionError, word_embeddings_f16

            try:
                t16 = word_embeddings_f16(B.Tensor(t.name, b.array(t.name)))
            except ConversionError as e:
                raise QuantizeError(str(e)) from e
            tensors.append(t16)
            bytes_out += len(t16.raw())
        else:
            tensors.append(RawTensor(t.name, t.shape, t.dtype, t.layout, t.quant, raw))
            bytes_out += len(raw)
    if n_q != len(quant_names):
        raise QuantizeError(f"{src}: found {n_q} of the {len(quant_names)} linear weights to quantize")
    scheme = ("int8 per-row symmetric weights (S8P16K4), per-token symmetric activations: " + ",".join(kinds)
              + ("; fp32: " + ",".join(keep_fp32) if keep_fp32 else "") + f"; {n_q} int8 weights")
    if smoothing:
        from .util import sha256_file

        scheme += (f"; smoothing: alpha {cal.format_alpha(alpha)}, {n_act} <weight>.act_scale vectors (input * "
                   f"act_scale before quantization, weights stored as W / act_scale; query/key/value share one), "
                   f"calibration max|x| over {n_calib} sentences of {calib.name} (sha256 {sha256_file(calib)[:16]})")
    else:
        scheme += "; no smoothing"
    meta["general.quantization"] = scheme
    if word_embeddings == "f16":
        meta["general.word_embeddings"] = "f16"
    figures: Dict[str, float] = {"quantized_tensors": n_q, "act_scale_tensors": n_act, "calib_sentences": n_calib,
                                 "bytes_in": bytes_in, "bytes_out": bytes_out}
    if verify_vectors and "verify.texts" in meta:
        sim.set_act_scales(act)
        texts = list(meta["verify.texts"])
        emb = np.stack([sim.embed(t, set(kinds)) for t in texts]).astype(np.float32)
        ref = np.asarray(meta["verify.embeddings"], np.float32).reshape(len(texts), -1)
        cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1).clip(1e-12) / np.linalg.norm(ref, axis=1).clip(1e-12)
        figures["verify_min_cosine_vs_fp32"] = float(cos.min())
        meta["verify.embeddings"] = emb.reshape(-1)
        meta["verify.tolerance"] = VERIFY_TOLERANCE
        meta["verify.min_cosine"] = VERIFY_MIN_COSINE
    elif "verify.texts" in meta:
        for k in ("verify.texts", "verify.embeddings", "verify.tolerance"):
            meta.pop(k, None)
    data = B.encode(meta, tensors)
    out = Path(out)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    figures["blob_bytes"] = len(data)
    return figures


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="bertlet-quantize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("blob", type=Path, help="an fp32 .bertlet blob")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="the checkpoint directory (tokenizer + weights) for the int8 "
                                                   "reference vectors")
    p.add_argument("--keep-fp32", default=",".join(DEFAULT_KEEP),
                   help=f"linear kinds kept in fp32 (default: none, all six int8; choose from {', '.join(KINDS)}, "
                        "output)")
    p.add_argument("--alpha", default=format(DEFAULT_ALPHA, "g"),
                   help=f"smoothing strength in 0..1 (default {DEFAULT_ALPHA:g}), 'none' for no smoothing, or per "
                        "group qkv=A,attn_out=B,inter=C,out=D (groups not named are not smoothed)")
    p.add_argument("--calib", type=Path, default=None,
                   help=f"calibration sentences, STS-B format (default {cal.default_calib_path()})")
    p.add_argument("--calib-size", type=int, default=cal.DEFAULT_CALIB_SIZE,
                   help=f"number of calibration sentences (default {cal.DEFAULT_CALIB_SIZE})")
    p.add_argument("--no-verify-vectors", action="store_true")
    p.add_argument("--word-embeddings", choices=["f32", "f16"], default="f32",
                   help="store the word-embedding table as f16 (halves the largest tensor; widened exactly at lookup; "
                        "the reference vectors use the same rounded table)")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        try:
            alpha = cal.parse_alpha(a.alpha)
        except cal.CalibrationError as e:
            raise QuantizeError(f"--alpha: {e}") from e
        f = quantize_blob(a.blob, a.checkpoint, a.output, parse_keep(a.keep_fp32), not a.no_verify_vectors,
                          alpha=alpha, calib=a.calib, calib_size=a.calib_size, word_embeddings=a.word_embeddings)
    except (QuantizeError, B.BlobFormatError) as e:
        print(f"bertlet-quantize: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.output}: {f['quantized_tensors']} int8 weights ({f['act_scale_tensors']} smoothed, calibration "
          f"{f['calib_sentences']} sentences), {f['blob_bytes'] / 1e6:.1f} MB "
          f"(weights {f['bytes_in'] / 1e6:.1f} -> {f['bytes_out'] / 1e6:.1f} MB)")
    if "verify_min_cosine_vs_fp32" in f:
        print(f"  reference vectors: min cosine(int8 sim, fp32) {f['verify_min_cosine_vs_fp32']:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
