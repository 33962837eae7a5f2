"""bertlet-quantize: fp32 blob -> int8 blob (layout 2 + .scale/.row_sum companions, SmoothQuant-style .act_scale
smoothing vectors calibrated on STS-B train, int8 reference vectors)."""
import numpy as np
import pytest

from bertlet_tools import blob as B
from bertlet_tools import calibrate as cal
from bertlet_tools import quantize as qz
from bertlet_tools.quantize_blob import DEFAULT_ALPHA, QuantizeError, _weight, main, quantize_blob

KIND_NAMES = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
              "attn_out": "attention.output.dense", "inter": "intermediate.dense", "out": "output.dense"}


@pytest.fixture(scope="session")
def ckpt(root):
    return root / "models" / "src" / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def calib_file():
    p = cal.default_calib_path()
    assert p.is_file(), f"{p} is missing (STS-B train; ../shared/data or $BERTLET_DATA)"
    return p


@pytest.fixture(scope="module")
def int8_blob(tmp_path_factory, blob_path, ckpt, calib_file):
    out = tmp_path_factory.mktemp("q") / "m.int8.bertlet"
    figures = quantize_blob(blob_path, ckpt, out)  # the defaults: all six kinds int8, smoothing
    return out, figures


@pytest.fixture(scope="module")
def decoded(int8_blob, blob_path):
    return B.decode(int8_blob[0].read_bytes()), B.decode(blob_path.read_bytes())


def _int8(q: B.Blob, name: str):
    t = {x.name: x for x in q.tensors}[name]
    raw = q.raw[q.data_offset + t.offset: q.data_offset + t.offset + t.nbytes]
    return qz.unpack_s8(raw, *t.shape), q.array(name + ".scale")[: t.shape[0]]


def test_quantized_tensors_and_companions(int8_blob, decoded):
    out, figures = int8_blob
    q, f = decoded
    assert figures["quantized_tensors"] == 36  # 6 layers x 6 kinds
    assert figures["act_scale_tensors"] == 36
    assert figures["calib_sentences"] == cal.DEFAULT_CALIB_SIZE
    gq = q.meta["general.quantization"]
    assert "query,key,value,attn_out,inter,out" in gq and "fp32" not in gq
    assert f"alpha {DEFAULT_ALPHA:g}" in gq and "sts-train.csv" in gq and "512 sentences" in gq
    by = {t.name: t for t in q.tensors}
    fby = {t.name: t for t in f.tensors}
    for i in range(6):
        for kind, base in KIND_NAMES.items():
            name = f"encoder.layer.{i}.{base}.weight"
            t = by[name]
            n, k = fby[name].shape
            assert (t.dtype, t.layout, t.quant, t.shape, t.nbytes) == (B.DT_I8, 2, B.QUANT_PER_ROW_SYMMETRIC, (n, k),
                                                                       qz.pad_n(n) * qz.pad_k(k))
            sc, rs, asc = by[name + ".scale"], by[name + ".row_sum"], by[name + ".act_scale"]
            assert (sc.dtype, sc.shape, rs.dtype, rs.shape) == (B.DT_F32, (qz.pad_n(n),), B.DT_I32, (qz.pad_n(n),))
            # the smoothing vector: F32, [K] (the input dimension), row-major, not quantized, finite and > 0
            assert (asc.dtype, asc.layout, asc.quant, asc.shape, asc.nbytes) == (B.DT_F32, 0, 0, (k,), 4 * k)
            a = q.array(name + ".act_scale")
            assert np.all(np.isfinite(a)) and np.all(a > 0) and not np.all(a == 1)
    assert by["embeddings.word_embeddings.weight"].dtype == B.DT_F32
    assert "embeddings.word_embeddings.weight.act_scale" not in by


def test_qkv_share_one_act_scale(decoded):
    q, _ = decoded
    for i in range(6):
        p = f"encoder.layer.{i}.attention.self."
        aq = q.array(p + "query.weight.act_scale")
        assert np.array_equal(aq, q.array(p + "key.weight.act_scale"))
        assert np.array_equal(aq, q.array(p + "value.weight.act_scale"))
        assert not np.array_equal(aq, q.array(f"encoder.layer.{i}.attention.output.dense.weight.act_scale"))


def test_stored_weights_are_smoothed_and_consistent(decoded):
    """The int8 weights are those of W' = W / act_scale: W' quantized per row, dequantized W' * act_scale ~ W."""
    q, f = decoded
    fby = {t.name: t for t in f.tensors}
    for name in ("encoder.layer.2.intermediate.dense.weight", "encoder.layer.0.attention.self.value.weight",
                 "encoder.layer.5.output.dense.weight"):
        w = _weight(f, fby[name])
        a = q.array(name + ".act_scale")
        w8, scales = _int8(q, name)
        q_ref, s_ref = qz.quantize_per_row(qz.smooth_weight(w, a))
        assert np.array_equal(w8, q_ref) and np.array_equal(scales, s_ref)
        err = np.abs(w8.astype(np.float32) * scales[:, None] * a[None, :] - w)
        assert np.all(err <= (scales[:, None] * 0.5 + 1e-7) * a[None, :] * 1.0001)
        assert np.array_equal(q.array(name + ".row_sum")[: w.shape[0]], w8.astype(np.int32).sum(1))


def test_act_scale_values_match_the_calibration(decoded, ckpt, calib_file):
    """act_scale = 1 / (max|X_k|^alpha / max|W_k|^(1 - alpha)), max|X_k| over the first linear's input on the
    calibration sentences (recomputed here independently of the writer), max|W_k| over [Wq; Wk; Wv] for Q/K/V."""
    from bertlet_tools.int8_sim import Sim

    q, _ = decoded
    sim = Sim(ckpt)
    absmax = cal.collect_absmax(sim, cal.calibration_sentences(calib_file, cal.DEFAULT_CALIB_SIZE))
    for i in (0, 3, 5):
        p = f"encoder.layer.{i}."
        x = absmax[p + "attention.self.query.weight"]
        wm = np.abs(np.concatenate([sim.w[p + f"attention.self.{k}.weight"] for k in ("query", "key", "value")])).max(0)
        want = (1.0 / (x.astype(np.float64) ** DEFAULT_ALPHA / wm.astype(np.float64) ** (1 - DEFAULT_ALPHA)))
        np.testing.assert_allclose(q.array(p + "attention.self.query.weight.act_scale"), want, rtol=1e-6)
        x = absmax[p + "output.dense.weight"]
        assert x.shape == (1536,)
        wm = np.abs(sim.w[p + "output.dense.weight"]).max(0)
        want = (1.0 / (x.astype(np.float64) ** DEFAULT_ALPHA / wm.astype(np.float64) ** (1 - DEFAULT_ALPHA)))
        np.testing.assert_allclose(q.array(p + "output.dense.weight.act_scale"), want, rtol=1e-6)


def test_calibration_sentences_are_deterministic_train_sentences(calib_file):
    a = cal.calibration_sentences(calib_file, 64)
    assert a == cal.calibration_sentences(calib_file, 64)
    assert len(a) == 64 == len(set(a))
    assert a[0] == "A plane is taking off."  # the first train sentence; the rest evenly spaced over the file


def test_smoothed_simulation_matches_the_blob_and_stays_close_to_fp32(decoded, ckpt, root):
    """A Sim built from the blob's act_scale vectors quantizes exactly the blob's int8 weights, and on a handful of
    STS-B dev sentences its embeddings stay close to fp32 (closer than the plain scheme on average)."""
    from bertlet_tools.goldens import read_stsb
    from bertlet_tools.int8_sim import KINDS, Sim

    q, _ = decoded
    names = [t.name[: -len(".act_scale")] for t in q.tensors if t.name.endswith(".act_scale")]
    sim = Sim(ckpt)
    texts = sorted(set(read_stsb(cal.default_calib_path().with_name("sts-dev.csv")).sentence1[:24]))
    f32 = sim.embed_many(texts, set())
    plain = sim.embed_many(texts, set(KINDS))
    sim.set_act_scales({n: q.array(n + ".act_scale") for n in names})
    for n in names[:6]:
        w8, scales = _int8(q, n)
        assert np.array_equal(sim.q[n][0], w8) and np.array_equal(sim.q[n][1], scales)
    smooth = sim.embed_many(texts, set(KINDS))
    assert np.array_equal(smooth[0], sim.embed(texts[0], set(KINDS)))
    cos = (smooth * f32).sum(1)
    cos0 = (plain * f32).sum(1)
    assert cos.min() >= 0.993, cos.min()
    assert cos.mean() > cos0.mean()


def test_reference_vectors_are_int8_and_close_to_fp32(decoded):
    q, f = decoded
    assert q.meta["verify.texts"] == f.meta["verify.texts"]
    a = np.asarray(q.meta["verify.embeddings"]).reshape(len(q.meta["verify.texts"]), -1)
    b = np.asarray(f.meta["verify.embeddings"]).reshape(a.shape)
    cos = (a * b).sum(1)
    assert cos.min() >= 0.99 and not np.array_equal(a, b)
    assert q.meta["verify.tolerance"] == pytest.approx(1e-2)
    assert q.meta["verify.min_cosine"] == pytest.approx(0.999)


def test_keep_fp32_value_smooths_query_and_key_only(blob_path, ckpt, tmp_path):
    out = tmp_path / "kv.bertlet"
    figures = quantize_blob(blob_path, ckpt, out, keep_fp32=("value",), verify_vectors=False)
    assert figures["quantized_tensors"] == 30 and figures["act_scale_tensors"] == 30
    q = B.decode(out.read_bytes())
    f = B.decode(blob_path.read_bytes())
    by = {t.name: t for t in q.tensors}
    p = "encoder.layer.1.attention.self."
    assert by[p + "value.weight"].dtype == B.DT_F32 and p + "value.weight.act_scale" not in by
    assert by[p + "value.weight"].layout == {t.name: t for t in f.tensors}[p + "value.weight"].layout
    assert np.array_equal(q.array(p + "query.weight.act_scale"), q.array(p + "key.weight.act_scale"))
    assert "fp32: value" in q.meta["general.quantization"]


def test_alpha_none_is_the_plain_scheme(blob_path, ckpt, tmp_path):
    out = tmp_path / "plain.bertlet"
    figures = quantize_blob(blob_path, ckpt, out, keep_fp32=("value", "out"), alpha=None)
    assert figures["quantized_tensors"] == 24 and figures["act_scale_tensors"] == 0
    q = B.decode(out.read_bytes())
    f = B.decode(blob_path.read_bytes())
    assert not any(t.name.endswith(".act_scale") for t in q.tensors)
    assert "no smoothing" in q.meta["general.quantization"]
    name = "encoder.layer.2.intermediate.dense.weight"
    w8, scales = _int8(q, name)
    q_ref, s_ref = qz.quantize_per_row(_weight(f, {t.name: t for t in f.tensors}[name]))
    assert np.array_equal(w8, q_ref) and np.array_equal(scales, s_ref)
    by = {t.name: t for t in q.tensors}
    assert by["encoder.layer.0.attention.self.value.weight"].dtype == B.DT_F32
    assert by["encoder.layer.0.output.dense.weight"].dtype == B.DT_F32


def test_word_embeddings_f16(blob_path, ckpt, tmp_path, int8_blob, decoded, tool):
    """--word-embeddings f16: the table becomes f16 (exactly the rounded fp32 values), the rest matches a default
    run up to the calibration, and the C++ loader verifies the blob."""
    import subprocess

    out = tmp_path / "f16.bertlet"
    figures = quantize_blob(blob_path, ckpt, out, word_embeddings="f16")
    q = B.decode(out.read_bytes())
    name = "embeddings.word_embeddings.weight"
    t = {x.name: x for x in q.tensors}[name]
    assert t.dtype == B.DT_F16 and t.layout == 0
    f = decoded[1]
    np.testing.assert_array_equal(q.array(name), f.array(name).astype(np.float16).astype(np.float32))
    assert q.meta["general.word_embeddings"] == "f16"
    assert figures["blob_bytes"] < int8_blob[1]["blob_bytes"] - f.array(name).size * 2 + 4096
    run = subprocess.run([tool("bertlet-embed"), "--model", str(out), "--verify"], input="a quick test\n",
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with pytest.raises(QuantizeError, match="expected f32 or f16"):
        quantize_blob(blob_path, ckpt, tmp_path / "x.bertlet", word_embeddings="bf16")


def test_missing_calibration_file_is_a_clear_error(blob_path, ckpt, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nope" / "sts-train.csv"
    out = tmp_path / "x.bertlet"
    with pytest.raises(QuantizeError, match=r"calibration file .*nope/sts-train.csv not found"):
        quantize_blob(blob_path, ckpt, out, calib=missing)
    assert not out.exists()
    # the default location follows $BERTLET_DATA
    monkeypatch.setenv("BERTLET_DATA", str(tmp_path / "data"))
    with pytest.raises(QuantizeError, match=r"calibration file .*data/stsb/sts-train.csv not found"):
        quantize_blob(blob_path, ckpt, out)
    assert main([str(blob_path), "--checkpoint", str(ckpt), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bertlet-quantize: error: calibration file") and "--calib" in err
    assert not out.exists() and not list(tmp_path.glob("x.bertlet.tmp*"))


def test_smoothing_needs_the_checkpoint_and_a_valid_alpha(blob_path, tmp_path, capsys):
    with pytest.raises(QuantizeError, match="--checkpoint is needed to calibrate"):
        quantize_blob(blob_path, None, tmp_path / "x.bertlet")
    assert main([str(blob_path), "-o", str(tmp_path / "x.bertlet"), "--alpha", "1.5"]) == 1
    assert "alpha" in capsys.readouterr().err
    assert main([str(blob_path), "-o", str(tmp_path / "x.bertlet"), "--alpha", "qkv=0.5,bogus=0.1"]) == 1
    assert "unknown group" in capsys.readouterr().err
    assert not (tmp_path / "x.bertlet").exists()


def test_refuses_a_quantized_blob(int8_blob, tmp_path):
    out, _ = int8_blob
    with pytest.raises(QuantizeError, match="already quantized"):
        quantize_blob(out, None, tmp_path / "x.bertlet")
    assert not (tmp_path / "x.bertlet").exists()
