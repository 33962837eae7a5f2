"""bench/compare.py end to end on one cell (seq 16, batch 1, 1 thread) for bertlet + ONNX Runtime fp32.

The first run exports and optimizes the ONNX model (cached in ~/.cache/bertlet/onnx afterwards); both stay well under
a minute. Timings are not checked, only that the harness runs, emits every field and that the ONNX export matched
Hugging Face.
"""
import json
import os
import subprocess
import sys

import pytest

STATS = ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "iters", "sentences_per_s")


@pytest.fixture(scope="module")
def bins(build_dir):
    for name in ("bertlet-latency", "bertlet-coldstart"):
        p = build_dir / "bench" / name
        assert p.exists(), f"{p} is missing: build first (scripts/build.sh)"
    return build_dir


def run(root, args, timeout=150):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_compare_one_cell(root, bins, blob_path, tmp_path):
    out, md = tmp_path / "res.json", tmp_path / "RESULTS.md"
    r = run(root, ["bench/compare.py", "--only", "bertlet,ort", "--precisions", "fp32", "--threads", "1", "--seqs", "16",
             "--batches", "1", "--min-iters", "3", "--min-time", "0", "--max-time", "2", "--cold-repeats", "1",
             "--no-tokenizer", "--gbench", "no", "--build-dir", str(bins), "--results", str(md), "--json", str(out)])
    res = json.loads(out.read_text())
    lat = {(x["system"], x["precision"]): x for x in res["latency"]}
    assert set(lat) == {("bertlet", "fp32"), ("ort", "fp32")}
    for x in lat.values():
        assert (x["seq"], x["batch"], x["threads_requested"]) == (16, 1, 1)
        for k in STATS:
            assert k in x and x[k] > 0, (x["system"], k)
        assert x["iters"] >= 3 and x["min_ms"] <= x["median_ms"] <= x["p90_ms"] <= x["p99_ms"]
    assert lat["bertlet", "fp32"]["isa"] and lat["bertlet", "fp32"]["threads_used"] >= 1
    chk = res["prepare"]["checks"]
    assert chk["fp32"]["passed"] and chk["fp32"]["min_cosine"] >= 0.999
    cold = {(c["system"], c["precision"]): c for c in res["cold"]}
    for key in (("bertlet", "fp32"), ("ort", "fp32")):
        c = cold[key]
        for k in ("spawn_to_ready_ms", "spawn_to_exit_ms", "main_to_ready_ms", "peak_rss_mb"):
            assert c[k] > 0, (key, k)
        assert c["cosine_vs_hf"] >= 0.999, key
    assert len(res["targets"]) == 4 and all(t[2] in ("PASS", "FAIL", "NOT MEASURED") for t in res["targets"])
    text = md.read_text()
    assert "compare.py:begin" in text and "| 1 | 16 | 1 |" in text and "ORT fp32" in text
    assert "Latency" in r.stdout


def test_tokenizer_compare_small(root, bins):
    r = run(root, ["bench/tokenizer_compare.py", "--limit", "3000", "--passes", "2", "--min-time", "0.1",
             "--build-dir", str(bins), "--json-only"], timeout=60)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["ids_identical"] and res["sentences"] == 3000
    assert res["bertlet"]["sentences_per_s"] > 0 and res["hf"]["sentences_per_s"] > 0
    assert res["hf_threads_after"] <= res["hf_threads_before"]
