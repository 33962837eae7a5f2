"""int8 accuracy on all of STS-B test (issue #3): cosine(int8, fp32) >= 0.99 on every sentence and Spearman x100
within 0.5 of fp32. The fp32 reference is Hugging Face (sentence-transformers, torch fp32), which bertlet fp32 matches
to 1e-6 (test_embedding_parity.py)."""
import json
import subprocess
import sys


import pytest


@pytest.mark.parametrize("attention", ["default", "fp32"])
def test_int8_blob_keeps_accuracy(root, tool, attention):
    """default: bf16 attention matmuls on AVX512_BF16 CPUs (fp32 elsewhere); fp32: --fp32-attention."""
    blob = root / "models" / "all-MiniLM-L6-v2.int8.bertlet"
    golden = root / "models" / "goldens" / "all-MiniLM-L6-v2.stsb-test.npz"
    assert blob.exists(), "the int8 blob is made by scripts/setup.sh (bertlet-quantize)"
    cmd = f"{tool('bertlet-embed')} --model {blob} --jsonl --verify" + (" --fp32-attention" if attention == "fp32" else "")
    r = subprocess.run([sys.executable, "-m", "bertlet_tools.parity", "--golden", str(golden), "--cmd", cmd, "--json",
                        "--min-cosine", "0.99", "--max-abs-diff", "1.0", "--max-spearman-delta", "0.5"],
                       capture_output=True, text=True, timeout=1800)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    f = json.loads(r.stdout.strip().splitlines()[-1])
    assert f["n"] == 2758
    assert f["min_cosine"] >= 0.99
    assert abs(f["spearman_bertlet"] - f["spearman_hf"]) <= 0.5
