#!/usr/bin/env python3
"""bertlet vs ONNX Runtime vs PyTorch on the same CPU, in one run (issue #3).

    ~/.cache/bertlet/venv/bin/python bench/compare.py [--quick] [--only bertlet,ort,torch] [--int8-blob FILE]
    bash bench/compare.sh [same args]          # set-up + build first, then this script

Model: all-MiniLM-L6-v2 (checkpoint models/src/all-MiniLM-L6-v2, blob models/all-MiniLM-L6-v2.bertlet).

What is timed, identically for every system: one call on `batch` copies of one sequence of exactly `seq` token ids
(real wordpieces of a real sentence repeated, with [CLS]/[SEP]; no padding anywhere), i.e. the encoder forward
**plus** mean pooling and L2 normalisation (bertlet's embed_ids always pools, so ONNX Runtime and PyTorch pool too,
inside the timed call). Tokenization is not timed (it has its own comparison, bench/tokenizer_compare.py). Each
system runs in its own fresh process (so thread pools never compete), warms up first (not timed), then runs until
it has >= --min-iters calls and >= --min-time seconds (capped at --max-time, at least 3 calls); medians are
reported.

ONNX Runtime: the checkpoint is exported with torch.onnx.export (opset 14, dynamic batch/sequence axes), optimized
with onnxruntime.transformers.optimizer (model_type=bert, num_heads=12, hidden_size=384, ORT's default opt_level
for bert) and quantized with quantize_dynamic (QInt8 weights; per_channel False and True are both built and timed
once, the faster is kept and recorded). Files are cached in ~/.cache/bertlet/onnx/<checkpoint sha256>-ort<version>/.
Every ONNX model is checked against Hugging Face (transformers BertModel + mean pooling) before it is timed: fp32
must reach cosine >= 0.999 on every check input or it is not timed at all.

Internally the script re-runs itself as workers (--worker prepare|ort|torch|cold-py); those are not for direct use.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bertlet_tools.util import sha256_file

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "models" / "src" / "all-MiniLM-L6-v2"
BLOB = ROOT / "models" / "all-MiniLM-L6-v2.bertlet"
INT8_BLOB_DEFAULT = ROOT / "models" / "all-MiniLM-L6-v2.int8.bertlet"
BF16_BLOB_DEFAULT = ROOT / "models" / "all-MiniLM-L6-v2.bf16.bertlet"
CACHE = Path(os.environ.get("BERTLET_CACHE", Path.home() / ".cache" / "bertlet"))
ONNX_CACHE = CACHE / "onnx"
DATA = Path(os.environ.get("BERTLET_DATA", ROOT.parent / "shared" / "data"))
HARNESS_VERSION = 1  # bump to invalidate cached ONNX files when the export/optimize/quantize recipe changes

SENTENCE = "A man is playing a large flute while the audience watches from the riverbank."  # = bench/latency.cpp
CHECK_TEXTS = [
    SENTENCE,
    "A woman is slicing an onion.",
    "Stocks fell sharply on Tuesday after the central bank unexpectedly raised interest rates by half a point, "
    "citing persistent inflation in housing and services; analysts said further increases were likely this year.",
    "hide new secretions from the parental units",
]
NUM_HEADS, HIDDEN = 12, 384
OPSET = 14
MAX_LEN = 256

FULL_GRID = dict(threads=[1, 2], seqs=[16, 64, 128, 256], batches=[1, 8, 32])
QUICK_GRID = dict(threads=[1], seqs=[16, 128], batches=[1, 32])
TARGET = dict(seq=128, batch=1, threads=1, fp32_ratio=0.7, int8_ratio=0.5, cold_ms=50.0, tok_ratio=3.0)


def model_ops(seq: int, batch: int, cfg: dict) -> dict:
    """Arithmetic of one forward pass (multiply-adds counted as 2 operations): the six linears of every layer, and
    attention's two matmuls (Q K^T and P V, exact length, no padding). Embeddings, LayerNorm, softmax, GELU and
    pooling are O(tokens x hidden) and left out, so the roofline below is a lower bound."""
    L, H, I = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["intermediate_size"]
    T = seq * batch
    return dict(linear=2.0 * T * L * (4 * H * H + 2 * H * I), attention=2.0 * 2 * batch * seq * seq * H * L)


def roofline(peak: dict, cell: tuple[int, int], ort_ms: dict, bertlet_ms: dict, attention: str) -> dict:
    """Per precision: the least time this core's arithmetic peak allows for the cell's operations (fp32: all of them
    at the FMA peak; int8: the linears at the vpdpbusd peak, attention at the peak of the precision bertlet's int8
    run used for it: `attention` is its "attention" field, int8 / bf16 / fp32), each system's
    share of that peak, and the lowest bertlet/ORT ratio any implementation of the same operations could reach."""
    cfg = json.loads((CKPT / "config.json").read_text())
    ops = model_ops(cell[0], cell[1], cfg)
    out = {}
    fp = peak.get("fp32_gflops", -1)
    # fp32 linears as six bf16 products on the AMX tiles where bertlet uses them (--peak measured tdpbf16ps then):
    # the linears' floor is then at a sixth of that peak (if it is above the FMA peak)
    fp_lin = max(fp, peak.get("bf16_amx_gflops", -1) / 6)
    if fp > 0:
        out["fp32"] = dict(floor_ms=ops["linear"] / fp_lin / 1e6 + ops["attention"] / fp / 1e6,
                           gflop=(ops["linear"] + ops["attention"]) / 1e9)
    i8, b16 = peak.get("int8_gops", -1), peak.get("bf16_gflops", -1)
    # the linears run on the AMX tiles where bertlet's avx512_amx path is in use (--peak measured tdpbusd then)
    i8_lin = peak.get("int8_amx_gops", -1) if peak.get("int8_amx_gops", -1) > 0 else i8
    if i8 > 0 and fp > 0:
        att_peak = i8 if attention == "int8" else b16 if attention == "bf16" and b16 > 0 else fp
        out["int8"] = dict(floor_ms=ops["linear"] / i8_lin / 1e6 + ops["attention"] / att_peak / 1e6,
                           gflop=(ops["linear"] + ops["attention"]) / 1e9)
    for p, r in out.items():
        o, b = ort_ms.get(p), bertlet_ms.get(p)
        r["ort_ms"], r["bertlet_ms"] = o, b
        r["bertlet_of_peak"] = r["floor_ms"] / b if b else None
        # ORT's share of the peak is also the lowest bertlet/ORT ratio the floor allows
        r["ort_of_peak"] = r["best_ratio"] = r["floor_ms"] / o if o else None
    return out


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(*a):
    print("[compare]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# shared helpers (workers and main)

def sequence_of(tok, length: int) -> list[int]:
    """Same construction as bench/latency.cpp: real wordpieces of SENTENCE repeated to `length` incl. [CLS]/[SEP]."""
    body = tok.encode(SENTENCE, add_special_tokens=False).ids
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    ids = [cls]
    i = 0
    while len(ids) + 1 < length:
        ids.append(body[i % len(body)])
        i += 1
    return ids + [sep]


def load_tokenizer():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(CKPT / "tokenizer.json"))
    tok.enable_truncation(MAX_LEN)
    tok.no_padding()
    return tok


def time_calls(fn, budget: dict) -> dict:
    """Warm-up (not timed), then >= min_iters calls and >= min_time s, capped at max_time (>= 3 calls)."""
    import numpy as np
    w0 = time.perf_counter()
    i = 0
    while i < budget["warmup_iters"] or time.perf_counter() - w0 < budget["warmup_time"]:
        fn()
        i += 1
        if time.perf_counter() - w0 > budget["max_time"]:
            break
    times = []
    t0 = time.perf_counter()
    while True:
        s = time.perf_counter()
        fn()
        times.append((time.perf_counter() - s) * 1e3)
        el = time.perf_counter() - t0
        n = len(times)
        if n >= budget["max_iters"]:
            break
        if n >= budget["min_iters"] and el >= budget["min_time"]:
            break
        if el >= budget["max_time"] and n >= 3:
            break
    t = np.asarray(times)
    med = float(np.percentile(t, 50))
    return dict(iters=n, median_ms=med, p90_ms=float(np.percentile(t, 90)), p99_ms=float(np.percentile(t, 99)),
                mean_ms=float(t.mean()), min_ms=float(t.min()), max_ms=float(t.max()),
                stdev_ms=float(t.std(ddof=1)) if n > 1 else 0.0, total_s=float(t.sum() / 1e3))


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def np_pool(h, mask):
    """Mean pooling over the attention mask + L2 normalisation (sentence-transformers' all-MiniLM-L6-v2 head)."""
    import numpy as np
    m = mask[..., None].astype(h.dtype)
    v = (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def ort_session(path: str, threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])



# ---------------------------------------------------------------------------------------------------------------
# worker: prepare ONNX models (export, optimize, quantize, check against Hugging Face); cached

def hf_model():
    import torch  # noqa: F401
    from transformers import BertModel
    try:
        m = BertModel.from_pretrained(str(CKPT), attn_implementation="eager")
    except TypeError:
        m = BertModel.from_pretrained(str(CKPT))
    return m.eval()


def hf_embed(model, tok, texts):
    """Reference: transformers BertModel fp32 + mean pooling + normalisation, on a padded batch."""
    import numpy as np
    import torch
    enc = tok.encode_batch(texts)
    L = max(len(e.ids) for e in enc)
    ids = np.zeros((len(texts), L), np.int64)
    mask = np.zeros((len(texts), L), np.int64)
    for i, e in enumerate(enc):
        ids[i, :len(e.ids)] = e.ids
        mask[i, :len(e.ids)] = 1
    with torch.inference_mode():
        h = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                  token_type_ids=torch.zeros_like(torch.from_numpy(ids))).last_hidden_state.numpy()
    return np_pool(h, mask), ids, mask


def ort_embed(sess, ids, mask):
    import numpy as np
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    names = {i.name for i in sess.get_inputs()}
    h = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    return np_pool(h, mask)


def check_against_hf(sess, ref, ids, mask, single_refs, tok) -> dict:
    """Cosine of pooled embeddings vs HF: a padded batch (exercises the mask) and each text alone."""
    import numpy as np
    cos = [float(x) for x in (ort_embed(sess, ids, mask) * ref).sum(axis=1)]
    for text, r in zip(CHECK_TEXTS, single_refs):
        e = np.asarray([tok.encode(text).ids], np.int64)
        cos.append(float((ort_embed(sess, e, np.ones_like(e)) * r[None]).sum()))
    return dict(min_cosine=min(cos), cosines=cos)


def worker_prepare(spec: dict):
    import numpy as np
    import onnxruntime as ort
    ckpt_sha = sha256_file(CKPT / "model.safetensors")
    key = f"{ckpt_sha[:16]}-ort{ort.__version__}-h{HARNESS_VERSION}"
    d = ONNX_CACHE / key
    if spec.get("rebuild") and d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    meta_path = d / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta.update(checkpoint=str(CKPT), checkpoint_sha256=ckpt_sha, ort_version=ort.__version__, cache_dir=str(d),
                opset=OPSET)
    tok = load_tokenizer()
    want_int8 = spec.get("int8", False)
    raw, opt = d / "model.onnx", d / "model.opt.onnx"
    ref_path = d / "hf_reference.npz"
    need_torch = not ref_path.exists() or not raw.exists()
    model = None
    if need_torch:
        import torch
        t0 = time.perf_counter()
        model = hf_model()
        if not ref_path.exists():
            ref, ids, mask = hf_embed(model, tok, CHECK_TEXTS)
            singles = np.stack([hf_embed(model, tok, [t])[0][0] for t in CHECK_TEXTS])
            tmp = d / "hf_reference.tmp.npz"
            np.savez(tmp, ref=ref, ids=ids, mask=mask, singles=singles)
            os.replace(tmp, ref_path)
        if not raw.exists():
            log(f"exporting ONNX (opset {OPSET}) to {raw}")
            ex = np.asarray([sequence_of(tok, 16)] * 2, np.int64)
            args = (torch.from_numpy(ex), torch.ones_like(torch.from_numpy(ex)), torch.zeros_like(torch.from_numpy(ex)))
            tmp = d / "model.tmp.onnx"
            with torch.inference_mode():
                torch.onnx.export(model, args, str(tmp), input_names=["input_ids", "attention_mask", "token_type_ids"],
                                  output_names=["last_hidden_state"], opset_version=OPSET, do_constant_folding=True,
                                  dynamic_axes={n: {0: "batch", 1: "sequence"} for n in
                                                ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]})
            os.replace(tmp, raw)
        meta["export_s"] = round(time.perf_counter() - t0, 2)
        meta["torch_version"] = torch.__version__
    r = np.load(ref_path)
    ref, ids, mask, singles = r["ref"], r["ids"], r["mask"], r["singles"]

    if not opt.exists():
        from onnxruntime.transformers import optimizer
        log("optimizing with onnxruntime.transformers.optimizer (model_type=bert)")
        t0 = time.perf_counter()
        om = optimizer.optimize_model(str(raw), model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN,
                                      opt_level=None, use_gpu=False)  # None = ORT's documented default for bert (1)
        tmp = d / "model.opt.tmp.onnx"
        om.save_model_to_file(str(tmp))
        os.replace(tmp, opt)
        meta["optimize_s"] = round(time.perf_counter() - t0, 2)
        try:
            meta["fused_ops"] = {k: int(v) for k, v in om.get_fused_operator_statistics().items() if v}
        except Exception:  # noqa: BLE001 - statistics are informative only
            pass
    meta["optimizer"] = dict(model_type="bert", num_heads=NUM_HEADS, hidden_size=HIDDEN,
                             opt_level="None (ORT default for bert = 1)")
    checks = meta.setdefault("checks", {})
    if "fp32" not in checks:
        checks["fp32"] = check_against_hf(ort_session(str(opt), 1), ref, ids, mask, singles, tok)
        checks["fp32_raw_export"] = check_against_hf(ort_session(str(raw), 1), ref, ids, mask, singles, tok)
    checks["fp32"]["passed"] = checks["fp32"]["min_cosine"] >= 0.999 and \
        checks["fp32_raw_export"]["min_cosine"] >= 0.999
    meta["fp32_path"] = str(opt)

    if want_int8 and meta.get("int8_choice") != spec.get("int8_per_channel", "auto"):
        meta.pop("int8_path", None)
    if want_int8 and "int8_path" not in meta:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        variants = {}
        for pc in (False, True):
            out = d / f"model.int8{'.pc' if pc else ''}.onnx"
            if not out.exists():
                log(f"quantize_dynamic (QInt8 weights, per_channel={pc})")
                tmp = d / f"model.int8tmp{'.pc' if pc else ''}.onnx"
                # DefaultTensorType: the fused com.microsoft ops (Attention, SkipLayerNormalization) defeat ONNX shape
                # inference; every activation here is float32 (the option ORT's error message recommends)
                import onnx
                quantize_dynamic(str(opt), str(tmp), weight_type=QuantType.QInt8, per_channel=pc,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
                os.replace(tmp, out)
            sess = ort_session(str(out), 1)
            chk = check_against_hf(sess, ref, ids, mask, singles, tok)
            variants[str(pc)] = dict(path=str(out), per_channel=pc, min_cosine=chk["min_cosine"],
                                     cosines=chk["cosines"], sess=sess)
        # time both at the target cell, interleaved in rounds so machine noise hits both alike; keep the faster
        x = np.asarray([sequence_of(tok, TARGET["seq"])] * TARGET["batch"], np.int64)
        feeds = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}
        samples = {k: [] for k in variants}
        for _ in range(6):
            for k, v in variants.items():
                st = time_calls(lambda: v["sess"].run(None, feeds), dict(warmup_iters=2, warmup_time=0.05,
                                min_iters=10, min_time=0.25, max_time=2.0, max_iters=10**6))
                samples[k].append(st["median_ms"])
        for k, v in variants.items():
            del v["sess"]
            v["selection_median_ms"] = float(np.median(samples[k]))
        choice = spec.get("int8_per_channel", "auto")
        if choice == "auto":  # the faster; a tie (within 3 %, i.e. noise) goes to the more accurate variant
            best = min(variants.values(), key=lambda v: v["selection_median_ms"])
            other = variants[str(not best["per_channel"])]
            if other["selection_median_ms"] <= 1.03 * best["selection_median_ms"] and \
                    other["min_cosine"] > best["min_cosine"]:
                best = other
        else:
            best = variants[str(choice == "true")]
        meta["int8_variants"] = variants
        meta["int8_path"] = best["path"]
        meta["int8_per_channel"] = best["per_channel"]
        meta["int8_choice"] = choice
        checks["int8"] = dict(min_cosine=best["min_cosine"], cosines=best["cosines"], passed=True)
        meta["int8_selection"] = (f"per_channel={best['per_channel']} kept ({'fastest, ties within 3 % to the more accurate' if choice == 'auto' else 'forced'}"
                                  f"; medians at seq {TARGET['seq']} batch {TARGET['batch']} 1 thread, "
                                  "interleaved rounds: " + ", ".join(
                                      f"per_channel={v['per_channel']}: {v['selection_median_ms']:.3f} ms"
                                      f" (min cosine vs HF {v['min_cosine']:.4f})" for v in variants.values()) + ")")
    tmp = d / "meta.tmp.json"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)
    emit(dict(kind="prepare", **meta))


# ---------------------------------------------------------------------------------------------------------------
# workers: timed runs of ONNX Runtime and PyTorch (one process per system x precision x thread count)

def worker_ort(spec: dict):
    import numpy as np
    import onnxruntime as ort
    sess = ort_session(spec["path"], spec["threads"])
    tok = load_tokenizer()
    for seq, batch in spec["cells"]:
        x = np.asarray([sequence_of(tok, seq)] * batch, np.int64)
        feeds = {"input_ids": x, "attention_mask": np.ones_like(x), "token_type_ids": np.zeros_like(x)}

        def call():
            h = sess.run(None, feeds)[0]
            return np_pool(h, feeds["attention_mask"])  # pooling inside the timed call, as bertlet does

        st = time_calls(call, spec["budget"])
        emit(dict(kind="latency", system="ort", precision=spec["precision"], model=spec["path"], seq=seq, batch=batch,
                  threads_requested=spec["threads"], threads_used=spec["threads"], ort_version=ort.__version__,
                  sentences_per_s=batch * 1e3 / st["median_ms"], checksum=float(call().sum()), **st))


def worker_torch(spec: dict):
    import numpy as np
    import torch
    torch.set_num_threads(spec["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    model = hf_model()
    tok = load_tokenizer()
    for seq, batch in spec["cells"]:
        x = torch.from_numpy(np.asarray([sequence_of(tok, seq)] * batch, np.int64))
        mask, types = torch.ones_like(x), torch.zeros_like(x)

        def call():
            with torch.inference_mode():
                h = model(input_ids=x, attention_mask=mask, token_type_ids=types).last_hidden_state
                m = mask.unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(v, p=2, dim=1)

        st = time_calls(call, spec["budget"])
        emit(dict(kind="latency", system="torch", precision="fp32", model=str(CKPT), seq=seq, batch=batch,
                  threads_requested=spec["threads"], threads_used=torch.get_num_threads(),
                  torch_version=torch.__version__, sentences_per_s=batch * 1e3 / st["median_ms"],
                  checksum=float(call().sum()), **st))


# A fresh Python process for the cold start: everything after interpreter start-up is timed in-process; the parent
# also measures spawn -> ready and spawn -> exit. One thread, one sentence (tokenized, as bertlet-coldstart does).
COLD_PY = r"""
import time
t0 = time.perf_counter()
import json, sys
system, path, tokjson, text = sys.argv[1:5]
import numpy as np
from tokenizers import Tokenizer
if system == "ort":
    import onnxruntime as ort
else:
    import torch
    from transformers import BertModel
t_imp = time.perf_counter()
tok = Tokenizer.from_file(tokjson); tok.enable_truncation(256); tok.no_padding()
if system == "ort":
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
else:
    torch.set_num_threads(1)
    try:
        model = BertModel.from_pretrained(path, attn_implementation="eager").eval()
    except TypeError:
        model = BertModel.from_pretrained(path).eval()
t_load = time.perf_counter()
ids = np.asarray([tok.encode(text).ids], np.int64)
mask = np.ones_like(ids)
if system == "ort":
    h = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
else:
    with torch.inference_mode():
        h = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                  token_type_ids=torch.zeros_like(torch.from_numpy(ids))).last_hidden_state.numpy()
v = h.mean(axis=1)[0]
v = v / np.linalg.norm(v)
t_ready = time.perf_counter()
ms = lambda a, b: (b - a) * 1e3
sys.stdout.write(json.dumps(dict(kind="cold", system=system, main_to_ready_ms=ms(t0, t_ready), import_ms=ms(t0, t_imp),
                 load_ms=ms(t_imp, t_load), first_embed_ms=ms(t_load, t_ready), embedding=[float(x) for x in v])) + "\n")
sys.stdout.flush()
"""


# ---------------------------------------------------------------------------------------------------------------
# main process: orchestration, cold starts, tables, RESULTS.md

def run_worker(name: str, spec: dict, threads: int, on_line=None) -> list[dict]:
    env = thread_env(threads)
    if name == "torch":
        # Debian's torch runs GNU OpenMP threads *and* OpenBLAS's own pthreads; with the default (spinning) OpenMP
        # wait policy the idle OpenMP workers spin on the cores OpenBLAS needs, and 2-thread runs on a 2-core box
        # came out 10-30x slower. PASSIVE removes that artefact (1-thread runs are unaffected).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--spec", json.dumps(spec)]
    return run_jsonl(cmd, env, on_line)


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(threads)
    env["HF_HUB_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_jsonl(cmd: list[str], env=None, on_line=None) -> list[dict]:
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    out = []
    for line in p.stdout:
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        out.append(rec)
        if on_line:
            on_line(rec)
    if p.wait() != 0:
        raise RuntimeError(f"command failed ({p.returncode}): {shlex.join(cmd)}")
    return out


def spawn_cold(cmd: list[str], env=None) -> dict:
    """Fresh process: spawn -> first JSON line (ready) and spawn -> exit wall times, peak RSS via wait4."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = p.stdout.readline()
    t_ready = time.perf_counter()
    rest = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    t_exit = time.perf_counter()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0 or not line.startswith("{"):
        raise RuntimeError(f"cold start failed ({p.returncode}): {shlex.join(cmd)}\n{line}{rest}")
    rec = json.loads(line)
    rec.update(spawn_to_ready_ms=(t_ready - t0) * 1e3, spawn_to_exit_ms=(t_exit - t0) * 1e3,
               peak_rss_mb=ru.ru_maxrss / 1024.0)
    return rec


def cosine(a, b) -> float:
    import numpy as np
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def cold_starts(args, prep, int8_blob, systems, ref_vec) -> list[dict]:
    from tqdm import tqdm
    tokjson = str(CKPT / "tokenizer.json")
    jobs = []
    if "bertlet" in systems:
        cs = str(args.build_dir / "bench" / "bertlet-coldstart")
        jobs.append(("bertlet", "fp32", [cs, "--model", str(BLOB)]))
        if int8_blob:
            jobs.append(("bertlet", "int8", [cs, "--model", str(int8_blob)]))
        if getattr(args, "bf16_blob_path", None):
            jobs.append(("bertlet", "bf16", [cs, "--model", str(args.bf16_blob_path)]))
    cold_py = [sys.executable, "-c", COLD_PY]
    if "ort" in systems and prep:
        if prep.get("fp32_path"):
            jobs.append(("ort", "fp32", cold_py + ["ort", prep["fp32_path"], tokjson, SENTENCE]))
        if prep.get("int8_path") and "int8" in args.precisions:
            jobs.append(("ort", "int8", cold_py + ["ort", prep["int8_path"], tokjson, SENTENCE]))
    if "torch" in systems:
        jobs.append(("torch", "fp32", cold_py + ["torch", str(CKPT), tokjson, SENTENCE]))
    out = []
    import numpy as np
    bar = tqdm(total=len(jobs) * args.cold_repeats, desc="cold starts", file=sys.stderr, leave=False)
    for system, prec, cmd in jobs:
        runs = []
        for _ in range(args.cold_repeats):
            runs.append(spawn_cold(cmd, thread_env(1)))
            bar.update()
        med = lambda k: float(np.median([r[k] for r in runs if k in r]))  # noqa: E731
        rec = dict(kind="cold", system=system, precision=prec, repeats=len(runs), command=shlex.join(
            cmd if cmd[1] != "-c" else [cmd[0], "-c", "<COLD_PY>"] + cmd[3:]))
        for k in ("spawn_to_ready_ms", "spawn_to_exit_ms", "main_to_ready_ms", "import_ms", "load_ms",
                  "first_embed_ms", "peak_rss_mb"):
            if k in runs[0]:
                rec[k] = med(k)
        rec["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in runs)
        if ref_vec is not None and "embedding" in runs[0]:
            rec["cosine_vs_hf"] = cosine(runs[0]["embedding"], ref_vec)
        out.append(rec)
    bar.close()
    return out


def machine_info(build_dir: Path, isa: str, flags: str) -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cache = {}
    try:
        for line in open(build_dir / "CMakeCache.txt"):
            if "=" in line and ":" in line.split("=", 1)[0]:
                k, v = line.rstrip("\n").split("=", 1)
                cache[k.split(":")[0]] = v
    except OSError:
        pass
    try:
        cxx = subprocess.run([cache.get("CMAKE_CXX_COMPILER", "c++"), "--version"], capture_output=True,
                             text=True).stdout.splitlines()[0]
    except Exception:  # noqa: BLE001
        cxx = cache.get("CMAKE_CXX_COMPILER", "?")
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        rev += " (+ uncommitted changes)" if dirty else ""
    except Exception:  # noqa: BLE001
        rev = "?"
    return dict(cpu=cpu, cores=os.cpu_count(), affinity=len(os.sched_getaffinity(0)), isa=isa,
                kernel=platform.release(), python=platform.python_version(), compiler=cxx,
                build_type=cache.get("CMAKE_BUILD_TYPE", "?"), bertlet_flags=flags.strip() or "?",
                git=rev, date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


def lib_versions() -> dict:
    code = ("import json, numpy, onnxruntime, onnx, torch, transformers, tokenizers; print(json.dumps(dict("
            "onnxruntime=onnxruntime.__version__, onnx=onnx.__version__, torch=torch.__version__, "
            "transformers=transformers.__version__, tokenizers=tokenizers.__version__, numpy=numpy.__version__)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        v = json.loads(r.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        return {"error": r.stderr.strip()[-300:]}
    try:  # which BLAS torch uses (Debian's torch -> libblas.so.3 -> alternatives)
        v["blas"] = os.path.realpath("/usr/lib/x86_64-linux-gnu/libblas.so.3")
    except OSError:
        pass
    return v


def gbench(build_dir: Path):
    exe = build_dir / "bench" / "bertlet_bench"
    if not exe.exists():
        return None
    cmd = [str(exe), "--benchmark_format=json"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        return dict(command=shlex.join(cmd), error=r.stderr[-500:])
    j = json.loads(r.stdout)
    rows = [dict(name=b["name"], real_time=b["real_time"], unit=b.get("time_unit", "ns"),
                 iterations=b["iterations"], sentences_per_s=b.get("sentences/s")) for b in j["benchmarks"]]
    return dict(command=shlex.join([os.path.relpath(cmd[0], ROOT)] + cmd[1:]), context=j.get("context", {}), rows=rows)


def fmt(v, nd=2):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if v >= 100:
        return f"{v:.0f}" if v >= 1000 else f"{v:.1f}"
    return f"{v:.{nd}f}" if v >= 1 else f"{v:.3f}"


BEGIN_MARK = "<!-- compare.py:begin (generated by bench/compare.py; edits here are overwritten) -->"
END_MARK = "<!-- compare.py:end -->"

COLS = [("bertlet", "fp32"), ("bertlet", "int8"), ("bertlet", "bf16"), ("ort", "fp32"), ("ort", "int8"),
        ("torch", "fp32")]
COL_NAMES = {("bertlet", "fp32"): "bertlet fp32", ("bertlet", "int8"): "bertlet int8", ("bertlet", "bf16"): "bertlet bf16",
             ("ort", "fp32"): "ORT fp32", ("ort", "int8"): "ORT int8", ("torch", "fp32"): "PyTorch fp32"}


def latency_table(lat: list[dict], grid: dict) -> list[str]:
    idx = {(r["system"], r["precision"], r["threads_requested"], r["seq"], r["batch"]): r for r in lat}
    cols = [c for c in COLS if any((c[0], c[1]) == (r["system"], r["precision"]) for r in lat)]
    has_bf16 = ("bertlet", "bf16") in cols
    head = ["threads", "seq", "batch"] + [COL_NAMES[c] for c in cols] + ["bertlet/ORT fp32", "bertlet/ORT int8"] + (
        ["bertlet bf16/ORT fp32"] if has_bf16 else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for th in grid["threads"]:
        for s in grid["seqs"]:
            for b in grid["batches"]:
                row = [str(th), str(s), str(b)]
                for c in cols:
                    r = idx.get((c[0], c[1], th, s, b))
                    row.append(fmt(r["median_ms"]) if r else "—")
                for p, q in (("fp32", "fp32"), ("int8", "int8")) + ((("bf16", "fp32"),) if has_bf16 else ()):
                    a, o = idx.get(("bertlet", p, th, s, b)), idx.get(("ort", q, th, s, b))
                    row.append(f"{a['median_ms'] / o['median_ms']:.2f}x" if a and o else "—")
                lines.append("| " + " | ".join(row) + " |")
    return lines


def detail_table(lat: list[dict]) -> list[str]:
    lines = ["| system | precision | threads (req/used) | seq | batch | median | p90 | p99 | mean | iters | sent/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(lat, key=lambda r: (r["threads_requested"], r["seq"], r["batch"], r["system"], r["precision"])):
        lines.append(f"| {r['system']} | {r['precision']} | {r['threads_requested']}/{r['threads_used']} | {r['seq']} "
                     f"| {r['batch']} | {fmt(r['median_ms'])} | {fmt(r['p90_ms'])} | {fmt(r['p99_ms'])} "
                     f"| {fmt(r['mean_ms'])} | {r['iters']} | {fmt(r['sentences_per_s'])} |")
    return lines


def cold_table(cold: list[dict]) -> list[str]:
    lines = ["| system | precision | spawn → ready (ms) | spawn → exit (ms) | in-process → ready (ms) | "
             "of which import / load / first embed (ms) | peak RSS (MB) | cosine vs HF |",
             "|---|---|---|---|---|---|---|---|"]
    for r in cold:
        parts = " / ".join(fmt(r.get(k)) for k in ("import_ms", "load_ms", "first_embed_ms"))
        lines.append(f"| {r['system']} | {r['precision']} | {fmt(r['spawn_to_ready_ms'])} | "
                     f"{fmt(r['spawn_to_exit_ms'])} | {fmt(r['main_to_ready_ms'])} | {parts} | "
                     f"{fmt(r['peak_rss_mb'])} | {format(r['cosine_vs_hf'], '.5f') if 'cosine_vs_hf' in r else '—'} |")
    return lines


def target_rounds(args, prep, blobs: dict, budget: dict) -> dict:
    """The target cell again, bertlet and ORT alternating for args.target_rounds rounds (fresh processes), so slow
    drifts of the machine (frequency, neighbours) hit both systems alike. Returns {precision: {system: [medians]}}."""
    T = TARGET
    out = {}
    b = dict(budget, min_time=1.0, max_time=3.0)
    for p in ("fp32", "int8"):
        if not blobs.get(p) or not prep or not prep.get(f"{p}_path"):
            continue
        out[p] = {"bertlet": [], "ort": []}
        for _ in range(args.target_rounds):
            cmd = [str(args.build_dir / "bench" / "bertlet-latency"), "--model", str(blobs[p]), "--label", p,
                   "--threads", str(T["threads"]), "--seq", str(T["seq"]), "--batch", str(T["batch"]),
                   "--min-iters", str(b["min_iters"]), "--min-time", str(b["min_time"]),
                   "--max-time", str(b["max_time"]), "--warmup-iters", str(b["warmup_iters"]),
                   "--warmup-time", str(b["warmup_time"])]
            out[p]["bertlet"] += [r["median_ms"] for r in run_jsonl(cmd, thread_env(T["threads"]))]
            out[p]["ort"] += [r["median_ms"] for r in run_worker(
                "ort", dict(path=prep[f"{p}_path"], precision=p, threads=T["threads"], cells=[(T["seq"], T["batch"])],
                            budget=b), T["threads"])]
        log(f"target rounds {p}: bertlet {out[p]['bertlet']} ORT {out[p]['ort']}")
    return out


def targets(lat, cold, tok, int8_blob, systems, rounds=None, roof=None) -> list[tuple[str, str, str]]:
    T = TARGET
    idx = {(r["system"], r["precision"], r["threads_requested"], r["seq"], r["batch"]): r for r in lat}
    out = []
    cell = f"seq {T['seq']}, batch {T['batch']}, {T['threads']} thread"
    for p, ratio in (("fp32", T["fp32_ratio"]), ("int8", T["int8_ratio"])):
        a = idx.get(("bertlet", p, T["threads"], T["seq"], T["batch"]))
        o = idx.get(("ort", p, T["threads"], T["seq"], T["batch"]))
        name = f"bertlet {p} ≤ {ratio} × ORT {p} ({cell}, median)"
        rr = (rounds or {}).get(p)
        if rr and rr["bertlet"] and rr["ort"]:
            import statistics

            mb, mo = statistics.median(rr["bertlet"]), statistics.median(rr["ort"])
            per = [x / y for x, y in zip(rr["bertlet"], rr["ort"])]
            q = mb / mo
            out.append((name.replace(", median)", ", median of alternating rounds)"),
                        f"{mb:.3f} ms vs {mo:.3f} ms = {q:.3f}× ({len(per)} rounds; per-round ratio "
                        f"{min(per):.3f}–{max(per):.3f}×; grid cell below: "
                        + (f"{a['median_ms'] / o['median_ms']:.2f}×)" if a and o else "—)")
                        + roof_note((roof or {}).get(p)),
                        "PASS" if q <= ratio else "FAIL"))
            continue
        if a and o:
            q = a["median_ms"] / o["median_ms"]
            out.append((name, f"{a['median_ms']:.3f} ms vs {o['median_ms']:.3f} ms = {q:.2f}×",
                        "PASS" if q <= ratio else "FAIL"))
        else:
            why = ("not run (--only)" if not {"bertlet", "ort"} <= set(systems) else
                   "no int8 blob (--int8-blob)" if p == "int8" and not int8_blob else "cell not measured")
            out.append((name, why, "NOT MEASURED"))
    c = next((r for r in cold if r["system"] == "bertlet" and r["precision"] == "int8"), None)
    name = f"bertlet int8 cold start ≤ {T['cold_ms']:.0f} ms (fresh process spawn → first embedding, median)"
    if c:
        out.append((name, f"{c['spawn_to_ready_ms']:.1f} ms (in-process {c['main_to_ready_ms']:.1f} ms)",
                    "PASS" if c["spawn_to_ready_ms"] <= T["cold_ms"] else "FAIL"))
    else:
        out.append((name, "not run (--only)" if "bertlet" not in systems else
                    "no int8 blob (--int8-blob)" if not int8_blob else "cold start not measured",
                    "NOT MEASURED"))
    name = f"tokenizer ≥ {T['tok_ratio']:.0f}× HF tokenizers (1 thread, sentences/s)"
    if tok and "ratio" in tok:
        out.append((name, f"{tok['ratio']:.1f}×", "PASS" if tok["ratio"] >= T["tok_ratio"] else "FAIL"))
    else:
        out.append((name, "not measured", "NOT MEASURED"))
    return out


def roof_note(r) -> str:
    if not r or r["best_ratio"] is None:
        return ""
    return (f"; this core's arithmetic peak allows no less than {r['floor_ms']:.2f} ms = {r['best_ratio']:.3f}× "
            "ORT (see Roofline)")


def roofline_lines(res: dict) -> list[str]:
    pk, roof = res.get("peak"), res.get("roofline") or {}
    if not pk:
        return []
    L = ["### Roofline (this CPU, target cell)", "",
         f"CPU: {pk['vendor']} family {pk['family']:#x} model {pk['model']:#x} stepping {pk['stepping']} "
         f"(**{pk['uarch']}**). Single-core peaks measured by `build/bench/bertlet-latency --peak` (12 independent "
         f"register-only chains, best of 3): fp32 {pk['fp32_gflops']:.1f} GFLOP/s ({pk['fp32_form']}), int8 "
         f"{pk['int8_gops']:.1f} GOP/s (vpdpbusd zmm), bf16 {pk['bf16_gflops']:.1f} GFLOP/s (vdpbf16ps zmm)"
         + (f", int8 on the AMX tiles {pk['int8_amx_gops']:.1f} GOP/s (tdpbusd; bertlet's avx512_amx path is in use, "
            "so the int8 floor puts the linears at this peak)" if pk.get("int8_amx_gops", -1) > 0 else "")
         + (f", bf16 on the AMX tiles {pk['bf16_amx_gflops']:.1f} GFLOP/s (tdpbf16ps; bertlet's fp32 linears run "
            "as six bf16 products on the tiles, so the fp32 floor puts them at a sixth of this peak)"
            if pk.get("bf16_amx_gflops", -1) > 0 else "")
         + "; -1 = not available.", "",
         f"Operations at seq {TARGET['seq']}, batch {TARGET['batch']} (multiply-add = 2; embeddings, LayerNorm, "
         "softmax, GELU and pooling not counted, so every floor is a lower bound): fp32 floor = all at the fp32 "
         "peak (the linears at a sixth of the AMX bf16 peak where bertlet runs them as bf16x6); int8 floor = the linears at the int8 peak + attention at the peak of the precision bertlet's int8 "
         "run used for it (int8 on AVX-512 VNNI CPUs, else bf16 on AVX512_BF16 CPUs, else fp32).", "",
         "| precision | G-op (MAC = 2) | floor at peak (ms) | bertlet (ms) | bertlet % of peak | ORT (ms) | ORT % of peak | "
         "lowest possible bertlet/ORT |", "|---|---|---|---|---|---|---|---|"]
    for p, r in roof.items():
        f = lambda v, nd=2: "—" if v is None else f"{v:.{nd}f}"  # noqa: E731
        pc = lambda v: "—" if v is None else f"{100 * v:.1f} %"  # noqa: E731
        L.append(f"| {p} | {r['gflop']:.3f} | {r['floor_ms']:.2f} | {f(r['bertlet_ms'])} | {pc(r['bertlet_of_peak'])} | "
                 f"{f(r['ort_ms'])} | {pc(r['ort_of_peak'])} | {f(r['best_ratio'], 3)}× |")
    L += ["", "A ratio target below the last column cannot be met on this CPU by any implementation of the same "
          "arithmetic (only by doing less of it).", ""]
    return L


def write_results(path: Path, res: dict):
    m, v, a = res["machine"], res["versions"], res["args"]
    L = [BEGIN_MARK, "", "## bertlet vs ONNX Runtime vs PyTorch (`bench/compare.py`)", "",
         f"Written by `bench/compare.py` on {m['date']}; everything between the `compare.py` markers is rewritten by "
         "each run, the rest of this file is kept. Timings depend on the machine being otherwise idle.", "",
         f"Command: `{res['command']}`", ""] + ([f"**Note:** {res['note']}", ""] if res.get("note") else []) + [
         f"Load average (1/5/15 min) at start {' / '.join(f'{x:.2f}' for x in res['loadavg']['start'])}, at end "
         f"{' / '.join(f'{x:.2f}' for x in res['loadavg']['end'])} ({m['cores']} cores; well above 0 means other "
         "work shared the CPU and the timings are noisy).", "",
         "### Machine and versions", "",
         f"* CPU: {m['cpu']}" + (f" ({res['peak']['uarch']})" if res.get("peak") else "") +
         f" — {m['cores']} logical cores ({m['affinity']} usable); bertlet ISA path: "
         f"**{m['isa']}**; Linux {m['kernel']}",
         f"* bertlet: git {m['git']}; {m['build_type']} build, flags `{m['bertlet_flags']}`, {m['compiler']}",
         f"* bertlet threads: {res['bertlet_threads_note']}",
         "* " + ", ".join(f"{k} {val}" for k, val in v.items() if k not in ("blas", "error")) +
         f"; Python {m['python']}" + (f"; torch BLAS: `{v['blas']}`" if v.get("blas") else ""),
         f"* Model: all-MiniLM-L6-v2 (`{os.path.relpath(BLOB, ROOT)}`; int8 blob: "
         f"{'`' + res['int8_blob'] + '`' if res['int8_blob'] else 'none'})", ""]
    prep = res.get("prepare")
    if prep:
        chk = prep.get("checks", {})
        L += ["### ONNX Runtime models", "",
              f"* Export: torch.onnx.export of transformers `BertModel` (opset {prep['opset']}, dynamic batch and "
              "sequence axes; inputs input_ids, attention_mask, token_type_ids; output last_hidden_state)",
              f"* Optimized: `onnxruntime.transformers.optimizer.optimize_model(model_type='bert', num_heads=12, "
              f"hidden_size=384)`, opt_level {prep['optimizer']['opt_level']}" +
              (f"; fused: {', '.join(f'{k} {n}' for k, n in prep['fused_ops'].items())}" if prep.get("fused_ops")
               else ""),
              "* Sessions: CPUExecutionProvider, intra_op_num_threads = threads, inter_op_num_threads = 1, "
              "ORT_SEQUENTIAL, ORT_ENABLE_ALL",
              f"* Check vs Hugging Face (cosine of pooled embeddings, {len(CHECK_TEXTS)} texts alone + as a padded "
              f"batch): fp32 optimized min {chk.get('fp32', {}).get('min_cosine', float('nan')):.7f}, raw export "
              f"min {chk.get('fp32_raw_export', {}).get('min_cosine', float('nan')):.7f} (bar ≥ 0.999: "
              f"{'passed' if chk.get('fp32', {}).get('passed') else 'FAILED'})"]
        if "int8" in chk:
            L.append(f"* int8: `quantize_dynamic(weight_type=QInt8)` of the optimized model; {prep['int8_selection']} "
                     f"(timed once when the cache was built); min cosine vs HF {chk['int8']['min_cosine']:.5f}")
        L += [f"* Cache: `{prep['cache_dir']}`", ""]
    L += ["### What is timed", "",
          "One call on `batch` identical sequences of exactly `seq` tokens (real wordpieces of a real sentence, "
          "repeated, with [CLS]/[SEP]; no padding in any system): encoder forward **plus** mean pooling and L2 "
          "normalisation for all three systems (bertlet's `embed_ids` always pools, so ONNX Runtime and PyTorch pool "
          "inside the timed call too: numpy after `session.run`, torch ops under `inference_mode`). Tokenization "
          "is excluded. Each system × precision × thread count runs in its own fresh process; warm-up is excluded; "
          f"each cell runs ≥ {a['min_iters']} calls and ≥ {a['min_time']} s, capped at {a['max_time']} s "
          "(never fewer than 3 calls). Figures are medians in milliseconds; ratios are bertlet median / ORT median "
          "(fp32 vs ORT fp32 optimized; int8 vs ORT int8). PyTorch: Debian's torch with "
          "`torch.set_num_threads(threads)`, OMP/OpenBLAS threads set to the same number and `OMP_WAIT_POLICY=PASSIVE` "
          "(otherwise spinning OpenMP workers starve OpenBLAS's threads: 2-thread runs were 10-30x slower).", ""]
    L += ["### Targets (issue #3)", "", "| target | measured | result |", "|---|---|---|"]
    L += [f"| {n} | {val} | **{r}** |" for n, val, r in res["targets"]]
    L += [""] + roofline_lines(res)
    L += ["### Latency (ms, median per call)", "", f"Command: `{res['command']}`", ""]
    L += latency_table(res["latency"], res["grid"])
    L += ["", "<details><summary>All latency statistics</summary>", ""] + detail_table(res["latency"]) + \
         ["", "</details>", ""]
    if res["cold"]:
        L += ["### Cold start and peak memory", "",
              f"Fresh process per run, {a['cold_repeats']} runs, medians; one thread; one sentence "
              "(tokenized, embedded, pooled). *spawn → ready*: from `Popen` to the process printing its first "
              "embedding; *spawn → exit* adds teardown; *in-process*: from `main()` (C++) or the first line of the "
              "script (Python, so after interpreter start-up) to the embedding. Peak RSS: `ru_maxrss` of the child "
              "from `os.wait4`. The blob / model files are in the page cache (warm file cache: a real Lambda cold "
              "start also reads them from disk).", ""]
        L += cold_table(res["cold"]) + [""]
    tok = res.get("tokenizer")
    if tok:
        L += ["### Tokenizer throughput", "", f"Command: `{tok['command']}`", "",
              "| tokenizer | sentences/s | tokens/s | median pass (s) | passes |", "|---|---|---|---|---|"]
        for k in ("bertlet", "hf"):
            r = tok[k]
            L.append(f"| {r['name']} | {r['sentences_per_s']:,.0f} | {r['tokens_per_s']:,.0f} | "
                     f"{r['median_pass_s']:.4f} | {r['passes']} |")
        L += ["", f"{tok['sentences']:,} sentences of {tok['file']}, truncation to {tok['max_length']}, one thread "
              f"({tok['hf_thread_check']}); ids identical for every sentence: **{tok['ids_identical']}**; "
              f"ratio bertlet / HF: **{tok['ratio']:.1f}×**.", ""]
    g = res.get("gbench")
    if g:
        L += ["### Google Benchmark (`bench/bench_embed.cpp`, current kernels)", "", f"Command: `{g['command']}`", ""]
        if "error" in g:
            L += [f"Failed: `{g['error']}`", ""]
        else:
            ctx = g.get("context", {})
            L += [f"Context: {ctx.get('bertlet_kernels', '')}; flags `{ctx.get('bertlet_flags', '').strip()}`", "",
                  "| benchmark | real time | iterations | sentences/s |", "|---|---|---|---|"]
            for r in g["rows"]:
                L.append(f"| `{r['name']}` | {r['real_time']:.3f} {r['unit']} | {r['iterations']} | "
                         f"{fmt(r['sentences_per_s']) if r['sentences_per_s'] else '—'} |")
            L.append("")
    L.append(END_MARK)
    block = "\n".join(L) + "\n"
    old = path.read_text() if path.exists() else ""
    if BEGIN_MARK in old and END_MARK in old:  # replace the previous generated block, keep the rest
        head, rest = old.split(BEGIN_MARK, 1)
        text = head + block + rest.split(END_MARK, 1)[1].lstrip("\n")
    elif old.startswith("# "):  # keep the title and every existing section (e.g. the Google Benchmark baseline)
        title, _, body = old.partition("\n")
        text = title + "\n\n" + block + "\n" + body.lstrip("\n")
    else:
        text = "# Benchmark results\n\n" + block + ("\n" + old if old else "")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def print_summary(res: dict):
    out = ["", "Latency, ms (median per call):"] + latency_table(res["latency"], res["grid"])
    if res["cold"]:
        out += ["", "Cold start (fresh process) and peak RSS:"] + cold_table(res["cold"])
    tok = res.get("tokenizer")
    if tok:
        out += ["", f"Tokenizer: bertlet {tok['bertlet']['sentences_per_s']:,.0f} sent/s, HF "
                f"{tok['hf']['sentences_per_s']:,.0f} sent/s = {tok['ratio']:.1f}x, ids identical: "
                f"{tok['ids_identical']}"]
    out += ["", "Targets:"] + [f"  [{r}] {n}: {v}" for n, v, r in res["targets"]]
    for p, r in (res.get("roofline") or {}).items():
        out.append(f"  roofline {p}: {r['gflop']:.3f} GFLOP, floor {r['floor_ms']:.2f} ms at this core's peak; "
                   f"bertlet {100 * (r['bertlet_of_peak'] or 0):.1f} % of peak, ORT {100 * (r['ort_of_peak'] or 0):.1f} %"
                   f"; lowest possible bertlet/ORT {r['best_ratio'] or float('nan'):.3f}×")
    print("\n".join(out), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced grid (seq 16/128, batch 1/32, 1 thread), "
                    "short budgets, 3 cold runs")
    ap.add_argument("--only", default="bertlet,ort,torch", help="systems: bertlet,ort,torch")
    ap.add_argument("--precisions", default="fp32,int8,bf16",
                    help="fp32,int8,bf16 (int8: bertlet needs --int8-blob; bf16: bertlet only, --bf16-blob, compared "
                         "with ORT fp32)")
    ap.add_argument("--bf16-blob", type=Path, help=f"bertlet bf16 blob (default {os.path.relpath(BF16_BLOB_DEFAULT, ROOT)}"
                    " when it exists)")
    ap.add_argument("--threads", help="comma list (default 1,2; --quick 1)")
    ap.add_argument("--seqs", help="comma list (default 16,64,128,256)")
    ap.add_argument("--batches", help="comma list (default 1,8,32)")
    ap.add_argument("--min-iters", type=int)
    ap.add_argument("--min-time", type=float, help="seconds per cell (default 1.0; --quick 0.3)")
    ap.add_argument("--max-time", type=float, help="cap in seconds per cell (default 10; --quick 3)")
    ap.add_argument("--int8-blob", type=Path, help=f"bertlet int8 blob (default {os.path.relpath(INT8_BLOB_DEFAULT, ROOT)}"
                    " if it exists)")
    ap.add_argument("--build-dir", type=Path, default=ROOT / "build")
    ap.add_argument("--cold-repeats", type=int)
    ap.add_argument("--no-cold", action="store_true")
    ap.add_argument("--target-rounds", type=int, default=7,
                    help="re-time the target cell (seq 128, batch 1, 1 thread) this many rounds, bertlet and ORT "
                         "alternating, and judge the ratio targets on the medians of those (default 7; 0: use the "
                         "grid cell)")
    ap.add_argument("--no-tokenizer", action="store_true")
    ap.add_argument("--gbench", choices=["auto", "yes", "no"], default="auto",
                    help="run build/bench/bertlet_bench (auto: not with --quick)")
    ap.add_argument("--int8-per-channel", choices=["auto", "true", "false"], default="auto",
                    help="ORT int8 weights per channel or per tensor (auto: both are built and timed; the faster is kept, a "
                    "tie within 3%% goes to the more accurate)")
    ap.add_argument("--rebuild-onnx", action="store_true", help="re-export/optimize/quantize the cached ONNX files")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md", help="markdown output ('-': none)")
    ap.add_argument("--json", type=Path, help="also write every record as JSON here")
    ap.add_argument("--note", default="", help="a note printed under the command in RESULTS.md (e.g. machine state)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        spec = json.loads(args.spec or "{}")
        {"prepare": worker_prepare, "ort": worker_ort, "torch": worker_torch}[args.worker](spec)
        return 0

    import numpy as np
    from tqdm import tqdm

    base = QUICK_GRID if args.quick else FULL_GRID
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    grid = dict(threads=ints(args.threads) if args.threads else base["threads"],
                seqs=ints(args.seqs) if args.seqs else base["seqs"],
                batches=ints(args.batches) if args.batches else base["batches"])
    args.min_iters = args.min_iters or (10 if args.quick else 20)
    args.min_time = args.min_time if args.min_time is not None else (0.3 if args.quick else 1.0)
    args.max_time = args.max_time if args.max_time is not None else (3.0 if args.quick else 10.0)
    args.cold_repeats = args.cold_repeats or (3 if args.quick else 7)
    args.precisions = [p for p in args.precisions.split(",") if p]
    systems = [s for s in args.only.split(",") if s]
    bad = set(systems) - {"bertlet", "ort", "torch"}
    if bad:
        ap.error(f"unknown system(s) {sorted(bad)}")
    budget = dict(warmup_iters=3, warmup_time=0.2, min_iters=args.min_iters, min_time=args.min_time,
                  max_time=args.max_time, max_iters=100000)
    cells = [(s, b) for s in grid["seqs"] for b in grid["batches"]]
    int8_blob = args.int8_blob or (INT8_BLOB_DEFAULT if INT8_BLOB_DEFAULT.exists() else None)
    notes = []
    if int8_blob and not int8_blob.exists():
        notes.append(f"int8 blob {int8_blob} does not exist: bertlet int8 skipped")
        int8_blob = None
    if "int8" in args.precisions and "bertlet" in systems and not int8_blob:
        notes.append("no bertlet int8 blob (pass --int8-blob FILE): bertlet int8 latency and cold start skipped")
    bf16_blob = args.bf16_blob or (BF16_BLOB_DEFAULT if BF16_BLOB_DEFAULT.exists() else None)
    if "bf16" in args.precisions and "bertlet" in systems and (not bf16_blob or not bf16_blob.exists()):
        notes.append("no bertlet bf16 blob (pass --bf16-blob FILE): bertlet bf16 skipped")
        bf16_blob = None
    args.bf16_blob_path = bf16_blob if "bf16" in args.precisions else None
    for n in notes:
        log("note:", n)
    lat_exe = args.build_dir / "bench" / "bertlet-latency"
    if "bertlet" in systems and not lat_exe.exists():
        sys.exit(f"{lat_exe} is missing: build it (cmake --build {args.build_dir} --target bertlet-latency "
                 "bertlet-coldstart) or run bench/compare.sh")
    if not BLOB.exists() or not (CKPT / "tokenizer.json").exists():
        sys.exit("model files are missing: run scripts/setup.sh")
    command = shlex.join(["bench/compare.py"] + (sys.argv[1:] if argv is None else list(argv))).replace(
        str(ROOT) + "/", "")
    load_start = os.getloadavg()

    # bertlet facts (ISA, flags, thread wiring) and the shared input construction check
    isa, flags, th_note, peak = "?", "", "bertlet not run", None
    if "bertlet" in systems:
        info = run_jsonl([str(lat_exe), "--model", str(BLOB), "--info"])[0]
        isa, flags = info["isa"], info["compile_flags"]
        th_note = ("intra-op threads wired via " + info["threads_wired"] if info["threads_wired"] != "none" else
                   "the library has no intra-op thread option yet: --threads is recorded but every bertlet run "
                   "uses 1 thread (bertlet rows at threads=2 are single-threaded)")
        peak = run_jsonl([str(lat_exe), "--peak"])[0]
        log(f"CPU {peak['uarch']}: peaks fp32 {peak['fp32_gflops']:.1f} GFLOP/s, int8 {peak['int8_gops']:.1f} GOP/s, "
            f"bf16 {peak['bf16_gflops']:.1f} GFLOP/s, int8 AMX {peak.get('int8_amx_gops', -1):.1f} GOP/s, "
            f"bf16 AMX {peak.get('bf16_amx_gflops', -1):.1f} GFLOP/s")
        tok = load_tokenizer()
        assert info["sample_ids_16"] == sequence_of(tok, 16), "bertlet and Python build different input ids"

    prep = None
    if "ort" in systems or "bertlet" in systems:
        log("preparing ONNX models / Hugging Face reference (cached under", ONNX_CACHE, ")")
        prep = run_worker("prepare", dict(int8="int8" in args.precisions and "ort" in systems,
                                          rebuild=args.rebuild_onnx, int8_per_channel=args.int8_per_channel),
                          1)[-1]
        if "ort" in systems and not prep["checks"]["fp32"]["passed"]:
            sys.exit(f"ONNX fp32 export does not match Hugging Face (cosine {prep['checks']['fp32']['min_cosine']}); "
                     "refusing to time it")
    ref_vec = None
    if prep:
        ref_vec = np.load(Path(prep["cache_dir"]) / "hf_reference.npz")["singles"][0]

    # latency grid
    jobs = []
    for th in grid["threads"]:
        for p in args.precisions:
            if "bertlet" in systems and (p == "fp32" or (p == "int8" and int8_blob) or (p == "bf16" and bf16_blob)):
                jobs.append(("bertlet", p, th))
            if "ort" in systems and prep.get(f"{p}_path"):
                jobs.append(("ort", p, th))
            if "torch" in systems and p == "fp32":
                jobs.append(("torch", p, th))
    lat = []
    bar = tqdm(total=len(jobs) * len(cells), desc="latency cells", file=sys.stderr)

    def got(rec):
        lat.append(rec)
        bar.set_postfix_str(f"{rec['system']} {rec['precision']} t{rec['threads_requested']} s{rec['seq']} "
                            f"b{rec['batch']}: {rec['median_ms']:.2f} ms")
        bar.update()

    for system, p, th in jobs:
        if system == "bertlet":
            blob = {"fp32": BLOB, "int8": int8_blob, "bf16": bf16_blob}[p]
            cmd = [str(lat_exe), "--model", str(blob), "--label", p, "--threads", str(th),
                   "--seq", ",".join(map(str, grid["seqs"])), "--batch", ",".join(map(str, grid["batches"])),
                   "--min-iters", str(budget["min_iters"]), "--min-time", str(budget["min_time"]),
                   "--max-time", str(budget["max_time"]), "--warmup-iters", str(budget["warmup_iters"]),
                   "--warmup-time", str(budget["warmup_time"])]
            run_jsonl(cmd, thread_env(th), got)
        elif system == "ort":
            run_worker("ort", dict(path=prep[f"{p}_path"], precision=p, threads=th, cells=cells, budget=budget), th,
                       got)
        else:
            run_worker("torch", dict(threads=th, cells=cells, budget=budget), th, got)
    bar.close()

    cold = [] if args.no_cold else cold_starts(args, prep, int8_blob, systems, ref_vec)
    for c in cold:
        if c.get("cosine_vs_hf", 1.0) < (0.999 if c["precision"] == "fp32" else 0.98):
            log(f"WARNING: {c['system']} {c['precision']} cold-start embedding has cosine {c['cosine_vs_hf']:.5f} "
                "vs Hugging Face")

    tok_res = None
    if not args.no_tokenizer and "bertlet" in systems:
        log("tokenizer throughput (bench/tokenizer_compare.py)")
        tcmd = [sys.executable, str(ROOT / "bench" / "tokenizer_compare.py"), "--build-dir", str(args.build_dir),
                "--json-only"] + (["--min-time", "0.5"] if args.quick else [])
        tok_res = run_jsonl(tcmd, thread_env(1))[-1]

    g = None
    if args.gbench == "yes" or (args.gbench == "auto" and not args.quick and "bertlet" in systems):
        log("Google Benchmark: build/bench/bertlet_bench --benchmark_format=json")
        g = gbench(args.build_dir)

    res = dict(command=command, note=args.note, loadavg=dict(start=load_start, end=os.getloadavg()), args=dict(min_iters=args.min_iters, min_time=args.min_time, max_time=args.max_time,
                                          cold_repeats=args.cold_repeats),
               grid=grid, systems=systems, precisions=args.precisions, notes=notes,
               int8_blob=os.path.relpath(int8_blob, ROOT) if int8_blob else None,
               machine=machine_info(args.build_dir, isa, flags), versions=lib_versions(),
               bertlet_threads_note=th_note, prepare=prep, latency=lat, cold=cold, tokenizer=tok_res, gbench=g)
    rounds = {}
    if args.target_rounds > 0 and {"bertlet", "ort"} <= set(systems):
        rounds = target_rounds(args, prep, {"fp32": BLOB, "int8": int8_blob}, budget)
    res["target_rounds"] = rounds
    res["peak"] = peak
    if peak:
        import statistics

        T = TARGET
        cell_ms = {(r["system"], r["precision"]): r["median_ms"] for r in lat
                   if (r["threads_requested"], r["seq"], r["batch"]) == (T["threads"], T["seq"], T["batch"])}
        med = lambda sysname, p: (statistics.median(rounds[p][sysname]) if rounds.get(p) and rounds[p][sysname]  # noqa: E731
                                  else cell_ms.get((sysname, p)))
        res["roofline"] = roofline(peak, (T["seq"], T["batch"]), {p: med("ort", p) for p in ("fp32", "int8")},
                                   {p: med("bertlet", p) for p in ("fp32", "int8")},
                                   attention=next((r.get("attention", "fp32") for r in lat
                                                   if r["system"] == "bertlet" and r["precision"] == "int8"
                                                   and (r["threads_requested"], r["seq"], r["batch"]) ==
                                                   (T["threads"], T["seq"], T["batch"])), "fp32"))
    res["targets"] = targets(lat, cold, tok_res, int8_blob, systems, rounds, res.get("roofline"))
    print_summary(res)
    if str(args.results) != "-":
        write_results(args.results, res)
        log("wrote", args.results)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
        log("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
