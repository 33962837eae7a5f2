"""Full-set parity with Hugging Face: every sentence of STS-B test (both columns) through bertlet-embed."""
import json
import os
import subprocess
import sys


def test_stsb_test_parity_with_sentence_transformers(root, tool, blob_path):
    golden = root / "models" / "goldens" / "all-MiniLM-L6-v2.stsb-test.npz"
    assert golden.exists(), "goldens are made by scripts/setup.sh (bertlet-goldens)"
    cmd = f"{tool('bertlet-embed')} --model {blob_path} --jsonl"
    r = subprocess.run([sys.executable, "-m", "bertlet_tools.parity", "--golden", str(golden), "--cmd", cmd, "--json"],
                       capture_output=True, text=True, timeout=1800)
    print(r.stdout)
    print(r.stderr, file=sys.stderr)
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout.strip().splitlines()[-1])
    assert figures["n"] == 2758
    assert figures["min_cosine"] >= 0.99999
    assert figures["max_abs_diff"] <= 1e-4
    assert abs(figures["spearman_bertlet"] - figures["spearman_hf"]) <= 0.05
