"""Write tests/data/tiny.bertlet, the small Python-written blob the C++ tests read (cross-language check).

Regenerate (from the repository root):

    PYTHONPATH=tools /root/.cache/bertlet/venv/bin/python -m bertlet_tools.make_test_blob tests/data/tiny.bertlet

tests/unit/test_blob.cpp (`tiny_writer()`) builds the same content with the C++ writer and requires the bytes to be
identical, so change both together.
"""
from __future__ import annotations

import sys

import numpy as np

from bertlet_tools.blob import DT_BF16, DT_F16, DT_I8, DT_I32, QUANT_PER_ROW_SYMMETRIC, U64, Tensor, encode


def tiny_meta():
    return {
        "general.architecture": "bert",
        "general.name": "tiny-test",
        "bert.hidden_size": 4,
        "test.negative": -42,
        "bert.layer_norm_eps": 1e-12,
        "tokenizer.lowercase": True,
        "tokenizer.strip_accents": False,
        "test.unicode": "h\u00e9llo w\u00f6rld \u2713 \U0001F600",
        "test.empty": "",
        "tokenizer.vocab": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "##lo", "w\u00f6rld", ""],
        "test.i64s": [-1, 0, 1, 1 << 40, -(1 << 62)],
        "verify.embeddings": np.array([0.5, -1.25, 3.0, 0.001], dtype=np.float32),
        "test.big_u64": U64(2**64 - 1),
    }


def tiny_tensors():
    return [
        Tensor("embeddings.word_embeddings.weight", (np.arange(32, dtype=np.float32) * 0.25 - 2.0).reshape(8, 4)),
        Tensor("embeddings.LayerNorm.bias", np.array([0.5, -0.5, 1.0, -1.0], dtype=np.float32)),
        Tensor("test.f16", np.array([[1.0, -2.0, 0.5], [65504.0, 0.0, 2.0**-24]], dtype=np.float16), dtype=DT_F16),
        Tensor("test.bf16", np.array([1.0, -2.5, 0.15625, 0.0, 3.0], dtype=np.float32), dtype=DT_BF16),
        Tensor("test.q", ((np.arange(12) * 11) % 255 - 127).astype(np.int8).reshape(3, 4), dtype=DT_I8,
               quant=QUANT_PER_ROW_SYMMETRIC),
        Tensor("test.q.scale", np.array([0.0078125, 0.015625, 0.25], dtype=np.float32)),
        Tensor("test.i32", np.array([[-1, 2147483647], [-2147483648, 7]], dtype=np.int32), dtype=DT_I32),
        Tensor("test.4d", np.array([1, 2, 3, 4], dtype=np.float32).reshape(1, 2, 1, 2)),
    ]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else "tests/data/tiny.bertlet"
    raw = encode(tiny_meta(), tiny_tensors(), alignment=64)
    with open(out, "wb") as f:
        f.write(raw)
    print(f"wrote {out} ({len(raw)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
