"""bertlet-quantize: an fp32 `.bertlet` blob -> an int8 blob (docs/INT8.md, docs/FORMAT.md layout 2).

    bertlet-quantize models/all-MiniLM-L6-v2.bertlet --checkpoint models/src/all-MiniLM-L6-v2 \
        -o models/all-MiniLM-L6-v2.int8.bertlet [--keep-fp32 value,output]

The encoder's linear weights are quantized per output row (symmetric int8, scale = max|row| / 127) and written
pre-packed for the int8 GEMM kernels (layout 2, S8P16K4, quant 1) with their companions `<name>.scale` (F32) and
`<name>.row_sum` (I32), both padded to a multiple of 16 entries, so loading stays an mmap. Activations are quantized
per token at run time. Kinds listed in --keep-fp32 stay fp32 (PACKED_N16); the default keeps `value`
(attention.self.value) and `output` (the FFN's output.dense): the accuracy study in docs/INT8.md shows they are the
layers that cost accuracy, and with them in fp32 the model meets cosine(int8, fp32) >= 0.99 on every STS-B test
sentence.

Reference vectors: the fp32 blob's `verify.texts` are re-run through a numpy model of the int8 kernels' exact math
(`int8_sim.Sim`, integer sums exact, same quantization), stored as `verify.embeddings` with tolerance 1e-2 per element and
`verify.min_cosine` 0.999 per text (float-order differences can flip the rounding of a quantized activation, which
moves single elements by up to ~3e-3 and the cosine to ~0.9998; a layout slip drops the cosine far below).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import blob as B
from . import quantize as qz

LAYOUT_PACKED_N16 = 1
LAYOUT_S8P16K4 = 2
KINDS = {
    "query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
    "attn_out": "attention.output.dense", "inter": "intermediate.dense", "out": "output.dense",
}
ALIASES = {"output": "out", "intermediate": "inter", "attention_output": "attn_out"}
DEFAULT_KEEP = ("value", "out")
VERIFY_TOLERANCE = 1e-2
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


def quantize_blob(src: Path, checkpoint: Optional[Path], out: Path, keep_fp32: Sequence[str] = DEFAULT_KEEP,
                  verify_vectors: bool = True) -> Dict[str, float]:
    b = B.decode(Path(src).read_bytes())
    meta = dict(b.meta)
    if meta.get("general.architecture") != "bert":
        raise QuantizeError(f"{src}: not a bert blob")
    if "general.quantization" in meta:
        raise QuantizeError(f"{src}: already quantized ({meta['general.quantization']})")
    layers = int(meta["bert.num_layers"])
    quant_names = {f"encoder.layer.{i}.{KINDS[k]}.weight" for i in range(layers) for k in KINDS if k not in keep_fp32}
    tensors: List[B.Tensor] = []
    n_q = 0
    bytes_in = bytes_out = 0
    for t in b.tensors:
        raw = b.raw[b.data_offset + t.offset: b.data_offset + t.offset + t.nbytes]
        bytes_in += t.nbytes
        if t.name in quant_names:
            if t.dtype != B.DT_F32 or len(t.shape) != 2:
                raise QuantizeError(f"tensor '{t.name}': expected a 2-D f32 weight, got {t.shape}")
            w = _weight(b, t)
            q, s = qz.quantize_per_row(w)
            packed = qz.pack_s8(q)
            tensors.append(RawTensor(t.name, t.shape, B.DT_I8, LAYOUT_S8P16K4, B.QUANT_PER_ROW_SYMMETRIC, packed))
            sc = qz.padded_scales(s)
            rs = qz.padded_row_sums(q)
            tensors.append(RawTensor(t.name + ".scale", sc.shape, B.DT_F32, 0, 0, sc.astype("<f4").tobytes()))
            tensors.append(RawTensor(t.name + ".row_sum", rs.shape, B.DT_I32, 0, 0, rs.astype("<i4").tobytes()))
            bytes_out += len(packed) + sc.nbytes + rs.nbytes
            n_q += 1
        else:
            tensors.append(RawTensor(t.name, t.shape, t.dtype, t.layout, t.quant, raw))
            bytes_out += len(raw)
    if n_q != len(quant_names):
        raise QuantizeError(f"{src}: found {n_q} of the {len(quant_names)} linear weights to quantize")
    kinds = [k for k in KINDS if k not in keep_fp32]
    meta["general.quantization"] = ("int8 per-row symmetric weights (S8P16K4), per-token symmetric activations: "
                                    + ",".join(kinds) + ("; fp32: " + ",".join(keep_fp32) if keep_fp32 else ""))
    figures: Dict[str, float] = {"quantized_tensors": n_q, "bytes_in": bytes_in, "bytes_out": bytes_out}
    if verify_vectors and "verify.texts" in meta:
        if checkpoint is None:
            raise QuantizeError("--checkpoint is needed to compute the int8 reference vectors (or --no-verify-vectors)")
        from .int8_sim import Sim

        sim = Sim(Path(checkpoint))
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
                   help=f"linear kinds kept in fp32 (default {','.join(DEFAULT_KEEP)}; choose from "
                        f"{', '.join(KINDS)}; '' quantizes all)")
    p.add_argument("--no-verify-vectors", action="store_true")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        f = quantize_blob(a.blob, a.checkpoint, a.output, parse_keep(a.keep_fp32), not a.no_verify_vectors)
    except (QuantizeError, B.BlobFormatError) as e:
        print(f"bertlet-quantize: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.output}: {f['quantized_tensors']} int8 weights, {f['blob_bytes'] / 1e6:.1f} MB "
          f"(weights {f['bytes_in'] / 1e6:.1f} -> {f['bytes_out'] / 1e6:.1f} MB)")
    if "verify_min_cosine_vs_fp32" in f:
        print(f"  reference vectors: min cosine(int8 sim, fp32) {f['verify_min_cosine_vs_fp32']:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
