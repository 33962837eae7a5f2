"""Any BERT config a blob describes: random-weight BERTs of several shapes (bert-base 768x12, a small odd shape,
the tanh-GELU variant), saved as plain Hugging Face checkpoints, converted, and run through bertlet-embed.
The reference is transformers' BertModel on torch ([CLS] pooling, as the converter assigns to plain HF dirs)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

TEXTS = ["A man is playing a guitar.", "Über café naïve — 東京 🚀", "", "short",
         "The quick brown fox jumps over the lazy dog " * 8]

SHAPES = [
    dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=2, hidden_act="gelu"),
    dict(hidden_size=96, num_attention_heads=3, intermediate_size=200, num_hidden_layers=3, hidden_act="gelu"),
    dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_hidden_layers=2, hidden_act="gelu_new",
         type_vocab_size=1, max_position_embeddings=64),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"H{s['hidden_size']}-{s['hidden_act']}")
def test_random_bert_matches_transformers(shape, tmp_path, root, tool):
    src = root / "models" / "src" / "all-MiniLM-L6-v2"
    torch.manual_seed(shape["hidden_size"])
    cfg = BertConfig(vocab_size=30522, **shape)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / f, ckpt / f)
    blob = tmp_path / "m.bertlet"
    subprocess.run([str(Path(sys.executable).parent / "bertlet-convert"), str(ckpt), "-o", str(blob), "--name", "random"], check=True,
                   capture_output=True)
    r = subprocess.run([tool("bertlet-embed"), "--model", str(blob), "--jsonl", "--verify"],
                       input="".join(json.dumps({"text": t}) + "\n" for t in TEXTS).encode(),
                       capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    got = np.array([json.loads(x)["embedding"] for x in r.stdout.decode().splitlines()], dtype=np.float64)

    tok = BertTokenizerFast.from_pretrained(ckpt)
    max_len = min(512, cfg.max_position_embeddings)
    with torch.no_grad():
        want = []
        for t in TEXTS:
            enc = tok(t, return_tensors="pt", truncation=True, max_length=max_len)
            want.append(model(**enc).last_hidden_state[0, 0].double().numpy())
    want = np.stack(want)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-4
    cos = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999
