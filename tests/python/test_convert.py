"""Tests of bertlet-convert / bertlet-inspect against the real all-MiniLM-L6-v2 checkpoint (no mocks).

The model is read from models/src/all-MiniLM-L6-v2 under the repo root, or $BERTLET_MODELS/src/all-MiniLM-L6-v2
(run scripts/setup.sh first). Edited checkpoints are built in tmp dirs (small files copied, weights symlinked or
rewritten); the source directory is never modified.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bertlet_tools import blob  # noqa: E402
from bertlet_tools import convert as conv  # noqa: E402
from bertlet_tools import inspect_blob  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("BERTLET_MODELS", ROOT / "models"))
MODEL = MODELS / "src" / "all-MiniLM-L6-v2"
H, V, P, T, I, L = 384, 30522, 512, 2, 1536, 6

FORMAT_KEYS = [
    "general.architecture", "general.name", "general.source_sha256", "general.converter",
    "bert.vocab_size", "bert.hidden_size", "bert.num_layers", "bert.num_heads", "bert.intermediate_size",
    "bert.max_position_embeddings", "bert.type_vocab_size", "bert.layer_norm_eps", "bert.hidden_act",
    "tokenizer.model", "tokenizer.vocab", "tokenizer.lowercase", "tokenizer.strip_accents",
    "tokenizer.handle_chinese_chars", "tokenizer.clean_text", "tokenizer.continuing_subword_prefix",
    "tokenizer.max_input_chars_per_word", "tokenizer.unk_id", "tokenizer.cls_id", "tokenizer.sep_id",
    "tokenizer.pad_id", "tokenizer.max_length", "pooling.mode", "pooling.normalize",
    "verify.texts", "verify.embeddings", "verify.tolerance",
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    if not (MODEL / "model.safetensors").is_file():
        pytest.fail(f"model checkpoint not found at {MODEL}: run scripts/setup.sh (or set BERTLET_MODELS)")
    return MODEL


@pytest.fixture(scope="session")
def st_weights(model_dir: Path) -> Dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


def copy_model(src: Path, dst: Path, link_weights: bool = True) -> Path:
    """Copy the small files of a checkpoint dir; symlink (or skip) the weights."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "model.safetensors":
            if link_weights:
                (dst / p.name).symlink_to(p.resolve())
        elif p.is_dir():
            shutil.copytree(p, dst / p.name)
        else:
            shutil.copy2(p, dst / p.name)
    return dst


def edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    d = json.loads(path.read_text())
    d = fn(d) or d
    path.write_text(json.dumps(d, indent=2))


def read_blob(path: Path) -> blob.Blob:
    return blob.decode(path.read_bytes())


@pytest.fixture(scope="module")
def converted(model_dir: Path, tmp_path_factory) -> blob.Blob:
    out = tmp_path_factory.mktemp("conv") / "m.bertlet"
    assert conv.main([str(model_dir), "-o", str(out), "--name", "all-MiniLM-L6-v2"]) == 0
    return read_blob(out)


@pytest.fixture(scope="module")
def st_model(model_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


# ----------------------------------------------------------------------------------------------------------------
# the real conversion


def test_metadata(converted: blob.Blob, model_dir: Path) -> None:
    m = converted.meta
    missing = [k for k in FORMAT_KEYS if k not in m]
    assert not missing
    assert m["general.architecture"] == "bert"
    assert m["general.name"] == "all-MiniLM-L6-v2"
    assert m["general.converter"] == "bertlet-convert 0.1.0"
    assert m["general.source_sha256"] == hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert (m["bert.vocab_size"], m["bert.hidden_size"], m["bert.num_layers"], m["bert.num_heads"],
            m["bert.intermediate_size"], m["bert.max_position_embeddings"], m["bert.type_vocab_size"]) == \
        (V, H, L, 12, I, P, T)
    assert m["bert.layer_norm_eps"] == pytest.approx(1e-12) and isinstance(m["bert.layer_norm_eps"], float)
    assert m["bert.hidden_act"] == "gelu"
    assert m["tokenizer.model"] == "wordpiece"
    vocab = m["tokenizer.vocab"]
    assert len(vocab) == V and len(set(vocab)) == V
    assert vocab == (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:V]
    for key in ("lowercase", "strip_accents", "handle_chinese_chars", "clean_text"):
        assert m[f"tokenizer.{key}"] is True, key
    assert m["tokenizer.continuing_subword_prefix"] == "##"
    assert m["tokenizer.max_input_chars_per_word"] == 100
    ids = {k: m[f"tokenizer.{k}_id"] for k in ("unk", "cls", "sep", "pad")}
    assert ids == {"unk": 100, "cls": 101, "sep": 102, "pad": 0}
    assert [vocab[ids[k]] for k in ("unk", "cls", "sep", "pad")] == ["[UNK]", "[CLS]", "[SEP]", "[PAD]"]
    assert m["tokenizer.max_length"] == 256
    assert m["pooling.mode"] == "mean" and m["pooling.normalize"] is True
    assert m["verify.tolerance"] == pytest.approx(1e-4)


def test_tensor_table(converted: blob.Blob) -> None:
    names = [t.name for t in converted.tensors]
    assert len(names) == 5 + 16 * L
    assert names[0] == "embeddings.word_embeddings.weight"
    assert not any(n.startswith(("pooler.", "cls.")) or "position_ids" in n for n in names)
    shapes = {t.name: t.shape for t in converted.tensors}
    assert shapes["embeddings.word_embeddings.weight"] == (V, H)
    assert shapes["embeddings.position_embeddings.weight"] == (P, H)
    assert shapes["embeddings.token_type_embeddings.weight"] == (T, H)
    for i in range(L):
        assert shapes[f"encoder.layer.{i}.attention.self.query.weight"] == (H, H)
        assert shapes[f"encoder.layer.{i}.intermediate.dense.weight"] == (I, H)
        assert shapes[f"encoder.layer.{i}.output.dense.weight"] == (H, I)
        assert shapes[f"encoder.layer.{i}.output.LayerNorm.bias"] == (H,)
    packed = {t.name for t in converted.tensors if t.layout == conv.LAYOUT_PACKED_N16}
    # the default layout pre-packs exactly the six linear weights of every layer (FORMAT.md, PACKED_N16)
    assert packed == {f"encoder.layer.{i}.{n}.weight" for i in range(L) for n in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")}
    for t in converted.tensors:
        assert t.dtype == blob.DT_F32 and t.quant == 0 and t.offset % 64 == 0
        assert t.layout == (conv.LAYOUT_PACKED_N16 if t.name in packed else 0)
        if t.name in packed:
            n, k = t.shape
            assert t.nbytes == (n + 15) // 16 * 16 * k * 4


def _logical(b: blob.Blob, t: blob.TensorInfo) -> np.ndarray:
    """A tensor's logical values: row-major as stored, or PACKED_N16 unpacked back to [N, K]."""
    if t.layout == conv.LAYOUT_PACKED_N16:
        raw = np.frombuffer(b.raw, "<f4", t.nbytes // 4, b.data_offset + t.offset)
        return conv.unpack_n16(raw, *t.shape)
    assert t.layout == 0
    return b.array(t.name)


def test_tensor_bytes_equal_safetensors(converted: blob.Blob, st_weights: Dict[str, np.ndarray]) -> None:
    src = {conv.canonical_name(k): v for k, v in st_weights.items()}
    for t in converted.tensors:
        a = _logical(converted, t)
        assert a.tobytes() == np.ascontiguousarray(src[t.name], dtype="<f4").tobytes(), t.name


def test_packed_layout_spot_checks(st_weights: Dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    for n, k in [(1, 1), (5, 3), (16, 7), (17, 2), (40, 9)]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        p = conv.pack_n16(w)
        assert p.size == (n + 15) // 16 * 16 * k
        for r in range(n):
            for c in range(k):
                assert p[((r // 16) * k + c) * 16 + r % 16] == w[r, c]
        assert np.all(p.reshape(-1, k, 16)[-1][:, n % 16:] == 0) if n % 16 else True  # zero-padded tail panel
        assert np.array_equal(conv.unpack_n16(p, n, k), w)


def test_rowmajor_layout_option(model_dir: Path, tmp_path: Path, converted: blob.Blob) -> None:
    out = tmp_path / "rm.bertlet"
    conv.convert(model_dir, out, verify_vectors=False, progress=False, layout="rowmajor")
    b = blob.decode(out.read_bytes())
    assert all(t.layout == 0 for t in b.tensors)
    for t in b.tensors:
        ref = next(x for x in converted.tensors if x.name == t.name)
        assert b.array(t.name).tobytes() == _logical(converted, ref).tobytes(), t.name


def test_f16_word_embeddings_option(model_dir: Path, tmp_path: Path, converted: blob.Blob, st_model, tool) -> None:
    """--word-embeddings f16: the table is stored as f16 (round to nearest even), everything else is unchanged, the
    reference vectors come from the same network (HF with the f16-rounded table), and the C++ loader passes
    --verify with them while staying within 1e-4 of the full-precision model."""
    import subprocess

    out = tmp_path / "f16.bertlet"
    conv.convert(model_dir, out, progress=False, word_embeddings="f16")
    b = blob.decode(out.read_bytes())
    name = "embeddings.word_embeddings.weight"
    t = next(x for x in b.tensors if x.name == name)
    assert t.dtype == blob.DT_F16 and t.layout == 0
    full = _logical(converted, next(x for x in converted.tensors if x.name == name))
    np.testing.assert_array_equal(b.array(name), full.astype(np.float16).astype(np.float32))
    for t2 in b.tensors:
        if t2.name != name:
            ref = next(x for x in converted.tensors if x.name == t2.name)
            assert t2.dtype == ref.dtype and t2.layout == ref.layout, t2.name
    assert b.meta["general.word_embeddings"] == "f16"
    saved = sum(x.nbytes for x in converted.tensors) - sum(x.nbytes for x in b.tensors)
    assert saved == full.size * 2
    texts = converted.meta["verify.texts"]
    emb16 = b.meta["verify.embeddings"].reshape(len(texts), H)
    emb32 = converted.meta["verify.embeddings"].reshape(len(texts), H)
    assert 0 < np.abs(emb16 - emb32).max() < 1e-4  # a different network, but barely
    run = subprocess.run([tool("bertlet-embed"), "--model", str(out), "--verify", "--jsonl"], input="\n".join(
        json.dumps({"text": x}) for x in texts[:3]) + "\n", capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    got = np.array([json.loads(line)["embedding"] for line in run.stdout.splitlines()], dtype=np.float32)
    np.testing.assert_allclose(got, emb16[:3], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, emb32[:3], rtol=0, atol=1e-4)


def test_bf16_dtype_option(model_dir: Path, tmp_path: Path, converted: blob.Blob, tool, root) -> None:
    """--dtype bf16: the six linear weights of every layer as BF16P16K2 (layout 3) bf16 bits of the f32 weights
    rounded to nearest even; the C++ loader verifies the blob against the fp32 reference vectors (min cosine 0.999)
    on every kernel path, and stays within 0.9999 cosine of fp32 on real sentences."""
    import subprocess

    out = tmp_path / "bf16.bertlet"
    conv.convert(model_dir, out, progress=False, dtype="bf16")
    b = blob.decode(out.read_bytes())
    lin = [t for t in b.tensors if conv._PACKED_LINEAR.match(t.name)]
    assert len(lin) == 6 * 6
    for t in lin:
        assert (t.dtype, t.layout, t.quant) == (blob.DT_BF16, conv.LAYOUT_BF16P16K2, 0), t.name
        n, k = t.shape
        assert t.nbytes == (n + 15) // 16 * 16 * ((k + 1) // 2 * 2) * 2
    # layout spot checks against the formula and round-to-nearest-even
    t = next(x for x in lin if x.name == "encoder.layer.2.intermediate.dense.weight")
    w = _logical(converted, next(x for x in converted.tensors if x.name == t.name))
    bits = np.frombuffer(b.raw, dtype="<u2", count=t.nbytes // 2, offset=b.data_offset + t.offset)
    n, k = w.shape
    rng = np.random.default_rng(0)
    for _ in range(200):
        i, j = int(rng.integers(n)), int(rng.integers(k))
        off = (i // 16) * 16 * k + (j // 2) * 32 + (i % 16) * 2 + j % 2
        f = int(np.float32(w[i, j]).view(np.uint32))
        assert int(bits[off]) == (f + 0x7FFF + ((f >> 16) & 1)) >> 16
    rt = (bits.astype(np.uint32) << 16).view(np.float32)
    assert np.all(np.isfinite(rt))
    assert b.meta["verify.min_cosine"] == conv.VERIFY_MIN_COSINE_BF16
    assert "bf16" in b.meta["general.quantization"]
    f32_lin = sum(x.nbytes for x in converted.tensors if conv._PACKED_LINEAR.match(x.name))
    assert sum(x.nbytes for x in lin) * 2 == f32_lin  # half the bytes (384 and 1536 need no padding)
    texts = ["A man is playing a guitar.", "The weather is lovely today!", "Zwei Hunde spielen im Schnee."]
    ref = {}
    for arch in ["avx512", "avx2", "scalar"]:
        run = subprocess.run([tool("bertlet-embed"), "--model", str(out), "--verify", "--arch", arch], input="\n".join(
            texts) + "\n", capture_output=True, text=True, timeout=120)
        if run.returncode != 0 and "not supported here" in run.stderr:
            continue
        assert run.returncode == 0, (arch, run.stderr)
        ref[arch] = np.array([json.loads(line)["embedding"] for line in run.stdout.splitlines()], dtype=np.float32)
    f32 = subprocess.run([tool("bertlet-embed"), "--model", str(root / "models" / "all-MiniLM-L6-v2.bertlet")],
                         input="\n".join(texts) + "\n", capture_output=True, text=True, timeout=120, check=True)
    e32 = np.array([json.loads(line)["embedding"] for line in f32.stdout.splitlines()], dtype=np.float32)
    assert "scalar" in ref
    for arch, e in ref.items():
        cos = (e * e32).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(e32, axis=1)
        assert cos.min() > 0.9999, (arch, cos)


def test_bf16_dtype_refusals(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(conv.ConversionError, match="rowmajor"):
        conv.convert(model_dir, tmp_path / "x.bertlet", verify_vectors=False, progress=False, dtype="bf16",
                     layout="rowmajor")
    with pytest.raises(conv.ConversionError, match="expected f32 or bf16"):
        conv.convert(model_dir, tmp_path / "x.bertlet", verify_vectors=False, progress=False, dtype="f16")


def test_f16_word_embeddings_refuses_out_of_range(converted: blob.Blob) -> None:
    bad = np.zeros((4, 3), np.float32)
    bad[2, 1] = 1e6
    with pytest.raises(conv.ConversionError, match=r"element 7 \(row 2\).*f16 range"):
        conv.word_embeddings_f16(blob.Tensor("embeddings.word_embeddings.weight", bad))
    bad[2, 1] = np.nan
    with pytest.raises(conv.ConversionError, match="non-finite"):
        conv.word_embeddings_f16(blob.Tensor("embeddings.word_embeddings.weight", bad))


def test_reference_vectors_equal_sentence_transformers(converted: blob.Blob, st_model) -> None:
    texts = converted.meta["verify.texts"]
    emb = converted.meta["verify.embeddings"].reshape(len(texts), H)
    assert 5 <= len(texts) <= 8 and "" in texts
    assert any(any("\u4e00" <= c <= "\u9fff" for c in t) for t in texts)  # CJK
    assert any(any(ord(c) >= 0x1F300 for c in t) for t in texts)  # emoji
    assert any(c in "éñüå" for t in texts for c in t)  # accents
    long = max(texts, key=len)
    assert len(st_model.tokenizer(long)["input_ids"]) > 256  # really hits truncation at max_length
    ref = np.stack([st_model.encode([t], convert_to_numpy=True)[0] for t in texts])
    np.testing.assert_allclose(emb, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # batch encoding (with padding) agrees within the stored tolerance too
    np.testing.assert_allclose(emb, st_model.encode(texts, batch_size=8), rtol=0, atol=converted.meta["verify.tolerance"])


def test_inspect(converted: blob.Blob, tmp_path: Path, capsys) -> None:
    p = tmp_path / "x.bertlet"
    p.write_bytes(converted.raw)
    assert inspect_blob.main([str(p)]) == 0
    out = capsys.readouterr().out
    assert "tokenizer.vocab" in out and "str[30522]" in out and "encoder.layer.5.output.LayerNorm.bias" in out
    assert "total parameters: 22,565,376" in out
    bad = bytearray(converted.raw)
    bad[100_000] ^= 1
    p.write_bytes(bytes(bad))
    assert inspect_blob.main([str(p)]) == 1
    assert "checksum" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# other accepted layouts (each compared tensor-for-tensor with the real conversion)


def _same_tensors(a: blob.Blob, b: blob.Blob) -> None:
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.layout == tb.layout, ta.name
        assert _logical(a, ta).tobytes() == _logical(b, tb).tobytes(), ta.name


def test_prefixed_gamma_beta_names_and_mlm_head(model_dir: Path, tmp_path: Path, converted: blob.Blob,
                                                st_weights: Dict[str, np.ndarray], capsys) -> None:
    from safetensors.numpy import save_file

    d = copy_model(model_dir, tmp_path / "m", link_weights=False)
    renamed = {}
    for k, v in st_weights.items():
        k = "bert." + k
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v
    renamed["cls.predictions.bias"] = np.zeros(V, np.float32)
    save_file(renamed, str(d / "model.safetensors"))
    out = tmp_path / "o.bertlet"
    conv.convert(d, out, verify_vectors=False, progress=False)
    err = capsys.readouterr().err
    assert "ignoring" in err and "cls.predictions.bias" in err and "bert.pooler.dense.weight" in err
    _same_tensors(read_blob(out), converted)


def test_pytorch_bin_and_vocab_txt_fallback(model_dir: Path, tmp_path: Path, converted: blob.Blob,
                                            st_weights: Dict[str, np.ndarray]) -> None:
    import torch

    d = copy_model(model_dir, tmp_path / "m", link_weights=False)
    (d / "tokenizer.json").unlink()
    torch.save({k: torch.from_numpy(v.copy()) for k, v in st_weights.items()}, str(d / "pytorch_model.bin"))
    out = tmp_path / "o.bertlet"
    conv.convert(d, out, verify_vectors=False, progress=False)
    b = read_blob(out)
    _same_tensors(b, converted)
    assert b.meta["general.source_sha256"] == hashlib.sha256((d / "pytorch_model.bin").read_bytes()).hexdigest()
    for k in FORMAT_KEYS:
        if k.startswith(("tokenizer.", "pooling.", "bert.")):
            assert b.meta[k] == converted.meta[k], k


def test_plain_hf_dir_uses_cls_pooling(model_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertModel

    d = copy_model(model_dir, tmp_path / "m")
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        (d / name).unlink()
    shutil.rmtree(d / "1_Pooling")
    out = tmp_path / "o.bertlet"
    conv.convert(d, out, verify_vectors=True, progress=False)
    m = read_blob(out).meta
    assert m["pooling.mode"] == "cls" and m["pooling.normalize"] is False
    assert m["tokenizer.max_length"] == 512  # min(model_max_length 512, P 512)
    texts = m["verify.texts"]
    emb = m["verify.embeddings"].reshape(len(texts), H)
    tok = AutoTokenizer.from_pretrained(str(d))
    model = BertModel.from_pretrained(str(d)).eval()
    with torch.no_grad():
        for i, t in enumerate(texts[:2]):
            h = model(**tok(t, return_tensors="pt", truncation=True, max_length=512))[0][0, 0].numpy()
            np.testing.assert_allclose(emb[i], h, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# refusals: a clear ConversionError, exit status 1 from the CLI, and no output file left behind


def refuse(d: Path, out: Path, match: str) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"previous contents")
    with pytest.raises(conv.ConversionError, match=match) as ei:
        conv.convert(d, out, verify_vectors=False, progress=False)
    assert out.read_bytes() == b"previous contents"  # untouched
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temp files
    out.unlink()
    return str(ei.value)


def test_refuses_unknown_architecture(model_dir: Path, tmp_path: Path, capsys) -> None:
    d = copy_model(model_dir, tmp_path / "m")
    edit_json(d / "config.json", lambda c: c.update(model_type="gpt2"))
    msg = refuse(d, tmp_path / "out" / "o.bertlet", r"model_type is 'gpt2'")
    assert str(d / "config.json") in msg
    edit_json(d / "config.json", lambda c: c.update(model_type="bert", architectures=["RobertaModel"]))
    refuse(d, tmp_path / "out" / "o.bertlet", r"architectures \['RobertaModel'\] are not BERT")
    # through the CLI: exit status 1, message on stderr, no file
    out = tmp_path / "cli.bertlet"
    assert conv.main([str(d), "-o", str(out), "--no-verify-vectors"]) == 1
    assert "RobertaModel" in capsys.readouterr().err and not out.exists()


def test_refuses_missing_tensor(model_dir: Path, tmp_path: Path, st_weights: Dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    d = copy_model(model_dir, tmp_path / "m", link_weights=False)
    w = dict(st_weights)
    del w["encoder.layer.3.attention.self.key.bias"]
    save_file(w, str(d / "model.safetensors"))
    msg = refuse(d, tmp_path / "out" / "o.bertlet", r"missing tensor 'encoder\.layer\.3\.attention\.self\.key\.bias'")
    assert "model.safetensors" in msg


def test_refuses_unknown_extra_tensor(model_dir: Path, tmp_path: Path, st_weights: Dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    d = copy_model(model_dir, tmp_path / "m", link_weights=False)
    w = dict(st_weights)
    w["classifier.weight"] = np.zeros((2, H), np.float32)
    save_file(w, str(d / "model.safetensors"))
    refuse(d, tmp_path / "out" / "o.bertlet", r"unknown tensor\(s\) 'classifier\.weight'")


def test_refuses_shape_mismatch(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path / "m")
    edit_json(d / "config.json", lambda c: c.update(hidden_size=768))
    refuse(d, tmp_path / "out" / "o.bertlet",
           r"tensor 'embeddings\.word_embeddings\.weight': expected \(30522,768\), got \(30522,384\)")
    edit_json(d / "config.json", lambda c: c.update(hidden_size=384, intermediate_size=3072))
    refuse(d, tmp_path / "out" / "o.bertlet",
           r"tensor 'encoder\.layer\.0\.intermediate\.dense\.weight': expected \(3072,384\), got \(1536,384\)")


@pytest.mark.parametrize("edit,match", [
    ({"pooling_mode_max_tokens": True, "pooling_mode_mean_tokens": False}, r"pooling mode max is not supported"),
    ({"pooling_mode_mean_sqrt_len_tokens": True, "pooling_mode_mean_tokens": False},
     r"pooling mode mean_sqrt_len is not supported"),
    ({"pooling_mode_cls_token": True}, r"exactly one pooling mode"),
])
def test_refuses_unsupported_pooling(model_dir: Path, tmp_path: Path, edit: Dict[str, Any], match: str) -> None:
    d = copy_model(model_dir, tmp_path / "m")
    edit_json(d / "1_Pooling" / "config.json", lambda c: c.update(edit))
    msg = refuse(d, tmp_path / "out" / "o.bertlet", match)
    assert "1_Pooling" in msg


@pytest.mark.parametrize("key,value,match", [
    ("hidden_act", "relu", r"hidden_act is 'relu'"),
    ("hidden_act", "silu", r"hidden_act is 'silu'"),
    ("position_embedding_type", "relative_key", r"position_embedding_type is 'relative_key'"),
])
def test_refuses_unsupported_config(model_dir: Path, tmp_path: Path, key: str, value: str, match: str) -> None:
    d = copy_model(model_dir, tmp_path / "m")
    edit_json(d / "config.json", lambda c: c.update({key: value}))
    refuse(d, tmp_path / "out" / "o.bertlet", match)


def test_refuses_extra_st_module(model_dir: Path, tmp_path: Path) -> None:
    d = copy_model(model_dir, tmp_path / "m")
    edit_json(d / "modules.json", lambda m: m + [{"idx": 3, "name": "3", "path": "3_Dense",
                                                   "type": "sentence_transformers.models.Dense"}])
    refuse(d, tmp_path / "out" / "o.bertlet", r"modules .*Dense.* are not supported")


def test_cli_dtype_choices(capsys) -> None:
    with pytest.raises(SystemExit) as ei:
        conv.main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out.replace("\n", " ").replace("  ", " ")
    assert "{f32,bf16}" in out and "--word-embeddings {f32,f16}" in out
    with pytest.raises(SystemExit) as ei:
        conv.main(["x", "-o", "y", "--dtype", "f16"])
    assert ei.value.code == 2
