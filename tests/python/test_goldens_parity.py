"""Tests of bertlet-goldens (STS-B reading, .npz / .jsonl goldens) and bertlet-parity.

The C++ CLI is not needed: parity is exercised with small Python commands written into pytest's tmp dirs, one of
which runs the real sentence-transformers model on the texts it receives on stdin.
"""
from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bertlet_tools import goldens, parity  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("BERTLET_MODELS", ROOT / "models"))
MODEL = MODELS / "src" / "all-MiniLM-L6-v2"
STSB_TEST = Path(os.environ.get("BERTLET_DATA", ROOT.parent / "shared" / "data")) / "stsb" / "sts-test.csv"
SMALL_GOLDEN = ROOT / "tests" / "data" / "golden_stsb_small.jsonl"
N_SMALL = 16


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (MODEL / "model.safetensors").is_file():
        pytest.fail(f"model checkpoint not found at {MODEL}: run scripts/setup.sh (or set BERTLET_MODELS)")
    return MODEL


@pytest.fixture(scope="session")
def stsb() -> goldens.StsbPairs:
    if not STSB_TEST.is_file():
        pytest.fail(f"STS-B test split not found at {STSB_TEST}")
    return goldens.read_stsb(STSB_TEST)


@pytest.fixture(scope="module")
def st_model(model_dir: Path):
    return goldens.load_model(model_dir)


@pytest.fixture(scope="module")
def small_npz(model_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gold") / "g.npz"
    goldens.make_goldens(model_dir, STSB_TEST, out, subset=12, progress=False)
    return out


def test_read_stsb(stsb: goldens.StsbPairs) -> None:
    assert len(stsb) == 1379 and len(stsb.sentences) == 2758
    assert stsb.scores.dtype == np.float64 and stsb.scores.min() >= 0 and stsb.scores.max() <= 5
    assert stsb.sentence1[0] == "A girl is styling her hair." and stsb.sentence2[0] == "A girl is brushing her hair."
    assert stsb.scores[0] == pytest.approx(2.5)
    # rows with extra trailing columns keep sentence2 from column 7
    with open(STSB_TEST, encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f]
    extra = [i for i, r in enumerate(rows) if len(r) > 7]
    assert extra, "expected some rows with extra columns"
    assert all(stsb.sentence2[i] == rows[i][6] for i in extra)
    # no sentence needs JSON lines because of a line break or tab
    assert not any(c in s for s in stsb.sentences for c in parity.LINE_BREAKS + ("\t",))


def test_small_committed_golden(st_model, stsb: goldens.StsbPairs) -> None:
    assert SMALL_GOLDEN.stat().st_size < 200_000
    texts, emb = goldens.read_jsonl(SMALL_GOLDEN)
    assert texts == stsb.sentence1[:N_SMALL] + stsb.sentence2[:N_SMALL]
    assert emb.shape == (2 * N_SMALL, 384) and emb.dtype == np.float32
    ref = goldens.encode(st_model, texts, progress=False)
    np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-5)


def test_npz_golden_contents(small_npz: Path, st_model, stsb: goldens.StsbPairs) -> None:
    z = np.load(small_npz, allow_pickle=False)
    n = int(z["n_pairs"])
    assert n == 12
    sentences = [str(s) for s in z["sentences"]]
    assert sentences == stsb.sentence1[:n] + stsb.sentence2[:n]
    assert z["embeddings"].shape == (2 * n, 384) and z["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(z["scores"], stsb.scores[:n])
    assert int(z["max_length"]) == 256
    ids, lengths = z["input_ids"], z["lengths"]
    for i in (0, n, 2 * n - 1):
        want = st_model.tokenizer(sentences[i])["input_ids"]
        assert list(ids[i, : lengths[i]]) == want
        assert all(ids[i, lengths[i]:] == int(z["pad_id"]))
    rho = goldens.stsb_spearman(z["embeddings"], z["scores"])
    assert float(z["spearman"]) == pytest.approx(rho) and 0 < rho <= 100
    assert "sentence1" in str(z["order"])


# ----------------------------------------------------------------------------------------------------------------
# parity


HF_CMD = """
import json, sys
from sentence_transformers import SentenceTransformer
jsonl = "--jsonl" in sys.argv
lines = sys.stdin.buffer.read().decode("utf-8").split("\\n")
texts = [json.loads(l)["text"] if jsonl else l for l in lines if l != ""]
m = SentenceTransformer(sys.argv[1], device="cpu")
for t in texts:
    v = m.encode([t], convert_to_numpy=True)[0]
    print(json.dumps({"embedding": [float(x) for x in v]}))
"""

REPLAY_CMD = """
import json, sys
import numpy as np
z = np.load(sys.argv[1])
mode = sys.argv[2]
texts = [l for l in sys.stdin.read().split("\\n") if l]
emb = z["embeddings"].astype(np.float64)
if mode == "perturb":
    emb[3, 7] += 5e-4
if mode == "short":
    emb = emb[:-1]
if mode == "crash":
    sys.stderr.write("model file not found\\n")
    sys.exit(3)
for v in emb:
    print(json.dumps({"embedding": list(v)}))
"""


def _script(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def test_parity_with_real_hf_command(small_npz: Path, model_dir: Path, tmp_path: Path, capsys) -> None:
    cmd = f"{sys.executable} {_script(tmp_path, 'hf_embed.py', HF_CMD)} {model_dir} --jsonl"
    # Only 12 pairs here: one-at-a-time vs batched HF differ by ~1e-7, which can swap two near-tied cosines and
    # move a 12-pair Spearman by ~0.2; the 0.05 bound is meant for (and checked on) the full 1,379-pair test set.
    rc = parity.main(["--golden", str(small_npz), "--cmd", cmd, "--json", "--max-spearman-delta", "1.0"])
    out = capsys.readouterr().out
    assert rc == 0, out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["n"] == 24 and figures["passed"] is True
    assert figures["min_cosine"] >= 0.99999 and figures["max_abs_diff"] <= 1e-4
    assert abs(figures["spearman_delta"]) <= 1.0
    assert figures["spearman_delta"] == pytest.approx(figures["spearman_bertlet"] - figures["spearman_hf"])
    assert "PASS" in out


def test_parity_raw_lines_and_jsonl_golden(tmp_path: Path, small_npz: Path, capsys) -> None:
    # raw mode (no --jsonl): a replay of the golden itself is a perfect match
    cmd = f"{sys.executable} {_script(tmp_path, 'replay.py', REPLAY_CMD)} {small_npz} same"
    assert parity.main(["--golden", str(small_npz), "--cmd", cmd]) == 0
    out = capsys.readouterr().out
    assert "max abs diff: 0.000e+00" in out
    # the committed .jsonl golden has no scores: Spearman is n/a, vectors still checked
    z = tmp_path / "small.npz"
    texts, emb = goldens.read_jsonl(SMALL_GOLDEN)
    np.savez(z, embeddings=emb)
    cmd = f"{sys.executable} {tmp_path / 'replay.py'} {z} same"
    assert parity.main(["--golden", str(SMALL_GOLDEN), "--cmd", cmd]) == 0
    assert "n/a" in capsys.readouterr().out


def test_parity_failures(tmp_path: Path, small_npz: Path, capsys) -> None:
    script = _script(tmp_path, "replay.py", REPLAY_CMD)
    base = f"{sys.executable} {script} {small_npz}"
    assert parity.main(["--golden", str(small_npz), "--cmd", base + " perturb", "--json"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "max abs diff" in out
    assert json.loads(out.strip().splitlines()[-1])["max_abs_diff"] == pytest.approx(5e-4, rel=1e-3)
    # the same perturbation passes with a looser threshold
    assert parity.main(["--golden", str(small_npz), "--cmd", base + " perturb", "--max-abs-diff", "1e-3",
                        "--min-cosine", "0.999"]) == 0
    capsys.readouterr()
    assert parity.main(["--golden", str(small_npz), "--cmd", base + " short"]) == 2
    assert "printed 23 non-empty lines for 24 inputs" in capsys.readouterr().err
    assert parity.main(["--golden", str(small_npz), "--cmd", base + " crash"]) == 2
    err = capsys.readouterr().err
    assert "status 3" in err and "model file not found" in err


def test_parity_refuses_line_breaks_in_raw_mode(tmp_path: Path) -> None:
    with pytest.raises(parity.ParityError, match="line break"):
        parity.run_command(f"{sys.executable} -c pass", ["ok", "two\nlines"], timeout=30)
