"""Full-data tokenizer parity: bertlet-tokenize vs Hugging Face BertTokenizerFast on every sentence of STS-B (all
splits, both columns), SST-2 (train+dev) and banking77 (train/dev/test). Must be 0 mismatches.

Texts are sent as JSON lines (`bertlet-tokenize ... --jsonl`, one {"text": ...} object per line) because banking77 has
texts with line breaks; nothing is skipped. A missing binary is a failure, not a skip.
Environment: BERTLET_BUILD_DIR (default build), BERTLET_MODELS (default models), BERTLET_DATA (default ../shared/data).
"""
import os
import pathlib

from bertlet_tools import tokenizer_parity

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_tokenizer_parity_all_data():
    build = pathlib.Path(os.environ.get("BERTLET_BUILD_DIR", ROOT / "build"))
    if not build.is_absolute():
        build = ROOT / build
    models = pathlib.Path(os.environ.get("BERTLET_MODELS", ROOT / "models"))
    data = pathlib.Path(os.environ.get("BERTLET_DATA", ROOT.parent / "shared" / "data"))
    exe = build / "examples" / "bertlet-tokenize"
    blob = models / "all-MiniLM-L6-v2.bertlet"
    assert exe.exists(), f"{exe} is missing: build the examples first"
    assert blob.exists(), f"{blob} is missing: run scripts/setup.sh"
    cmd = [str(exe), "--model", str(blob), "--jsonl"]
    r = tokenizer_parity.parity(cmd, data, models / "src" / "all-MiniLM-L6-v2", max_length=256, jsonl=True)
    assert r["sentences"] > 90_000
    assert r["skipped"] == 0
    assert r["checked"] == r["sentences"]
    assert r["mismatches"] == 0
