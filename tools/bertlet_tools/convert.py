"""bertlet-convert: a Hugging Face / sentence-transformers BERT checkpoint -> one `.bertlet` blob (docs/FORMAT.md).

    bertlet-convert CHECKPOINT_DIR -o OUT.bertlet [--name NAME] [--no-verify-vectors] [--dtype f32]
                    [--layout packed|rowmajor]

What is read, and from where:

* ``config.json``: ``model_type`` must be ``bert`` and every ``architectures`` entry a ``Bert*`` class;
  ``hidden_act`` in gelu / gelu_new / gelu_pytorch_tanh; ``position_embedding_type`` absolute.
* weights: ``model.safetensors`` (preferred) or ``pytorch_model.bin`` (``torch.load`` with ``weights_only=True``,
  ``map_location="cpu"``). Sharded checkpoints are refused. Names are mapped onto FORMAT.md's names (prefixes
  ``0.auto_model.``, ``auto_model.``, ``bert.``, ``model.``, ``module.`` stripped; old ``LayerNorm.gamma/beta`` ->
  ``weight/bias``); every required tensor must be present with the shape implied by config.json. Known-ignorable
  tensors (``embeddings.position_ids``, ``pooler.*``, ``cls.*`` MLM heads) are dropped and listed in a log line;
  anything else is refused. The pooler is dropped even for ``cls`` pooling: sentence-transformers' CLS pooling takes
  the raw last hidden state of [CLS], not the pooler output.
* tokenizer: ``tokenizer.json`` (BertNormalizer + BertPreTokenizer + WordPiece), else ``vocab.txt`` +
  ``tokenizer_config.json``. Like transformers' ``BertTokenizerFast`` (what AutoTokenizer and sentence-transformers
  use), ``do_lower_case`` / ``strip_accents`` / ``tokenize_chinese_chars`` from tokenizer_config.json (or that
  class's defaults True / None / True) override the normalizer in tokenizer.json. ``strip_accents: null`` is
  resolved to the lowercase flag. The result is cross-checked against the tokenizer transformers really loads.
* pooling: a sentence-transformers directory (``modules.json``) must be Transformer -> Pooling -> [Normalize];
  Pooling ``mean`` or ``cls`` (max / mean_sqrt_len / weightedmean / lasttoken and combinations are refused);
  a Normalize module sets ``pooling.normalize``. max length = min(sentence_bert_config ``max_seq_length``,
  tokenizer ``model_max_length`` if < 1e6, ``max_position_embeddings``).
  A plain Hugging Face BERT directory (no modules.json) gets pooling ``cls``, no normalization, and max length
  min(model_max_length if sane, max_position_embeddings); its reference vectors come from transformers' BertModel
  with the same pooling.

Layout: by default the six linear weights of every encoder layer (query, key, value, attention output,
intermediate, output) are written pre-packed for the GEMM kernels (layout 1, PACKED_N16: dims stay ``[N, K]``, bytes
are ceil(N/16) panels of K x 16 floats, zero-padded), so loading stays an mmap; ``--layout rowmajor`` writes every
tensor row-major (layout 0; the C++ loader then packs those weights at load).

Reference vectors (``verify.*``) are the real sentence-transformers (or transformers) outputs for a few fixed texts,
each encoded on its own (batch of one, so no padding is involved). The blob is written atomically.
Hugging Face is run with ``HF_HUB_OFFLINE=1`` (set here if unset): conversion never touches the network.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from . import blob  # noqa: E402
from .util import sha256_file

CONVERTER = "bertlet-convert 0.1.0"
SUPPORTED_ACTS = ("gelu", "gelu_new", "gelu_pytorch_tanh")
VERIFY_TOLERANCE = 1e-4
VERIFY_TOLERANCE_BF16 = 1e-2
VERIFY_MIN_COSINE_BF16 = 0.999
SANE_MODEL_MAX_LENGTH = 1_000_000
# Lambda limits, compared in the stricter reading (1 MB = 10^6 bytes).
LAMBDA_ZIPPED_DIRECT = 50_000_000
LAMBDA_UNZIPPED = 250_000_000

_STRIP_PREFIXES = ("0.auto_model.", "auto_model.", "bert.", "model.", "module.")
LAYOUT_PACKED_N16 = 1
PANEL = 16
# the encoder's nn.Linear weights: the tensors written as PACKED_N16 by --layout packed
_PACKED_LINEAR = re.compile(r"^encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
                            r"intermediate\.dense|output\.dense)\.weight$")


def pack_n16(w: np.ndarray) -> np.ndarray:
    """W[N, K] -> flat PACKED_N16 floats: element (panel p, k, lane j) = W[16p + j, k], zero rows past N."""
    n, k = w.shape
    npad = (n + PANEL - 1) // PANEL * PANEL
    wp = np.zeros((npad, k), dtype=np.float32)
    wp[:n] = w
    return np.ascontiguousarray(wp.reshape(npad // PANEL, PANEL, k).transpose(0, 2, 1)).reshape(-1)


LAYOUT_BF16P16K2 = 3


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns, round to nearest even (finite inputs; the converter refuses others)."""
    f = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    return ((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype("<u2")


def pack_bf16(w: np.ndarray) -> np.ndarray:
    """W[N, K] -> flat BF16P16K2 bf16 bits: N padded to 16, K to even Kp; value (n, k) at
    (n/16)*16*Kp + (k/2)*32 + (n%16)*2 + k%2 (docs/FORMAT.md layout 3)."""
    n, k = w.shape
    npad = (n + PANEL - 1) // PANEL * PANEL
    kp = (k + 1) // 2 * 2
    wp = np.zeros((npad, kp), dtype=np.float32)
    wp[:n, :k] = w
    q = to_bf16_bits(wp).reshape(npad // PANEL, PANEL, kp // 2, 2).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(q).reshape(-1)


def unpack_n16(flat: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of pack_n16: flat packed floats (ceil(N/16)*16*K of them) -> W[N, K]."""
    npad = (n + PANEL - 1) // PANEL * PANEL
    return np.ascontiguousarray(flat.reshape(npad // PANEL, k, PANEL).transpose(0, 2, 1).reshape(npad, k)[:n])


@dataclass
class PackedTensor(blob.Tensor):
    """A 2-D f32 tensor written as PACKED_N16: `data` keeps the logical [N, K] array (so dims stay [N, K])."""
    layout: int = LAYOUT_PACKED_N16

    def raw(self) -> bytes:
        return pack_n16(np.asarray(self.data, dtype=np.float32)).astype("<f4").tobytes()


@dataclass
class PackedBF16Tensor(blob.Tensor):
    """A 2-D f32 tensor written as bf16 BF16P16K2 (layout 3): `data` keeps the logical [N, K] f32 array."""
    dtype: int = blob.DT_BF16
    layout: int = LAYOUT_BF16P16K2

    def raw(self) -> bytes:
        return pack_bf16(np.asarray(self.data, dtype=np.float32)).tobytes()


_IGNORABLE = (re.compile(r"^embeddings\.position_ids$"), re.compile(r"^pooler\..*"), re.compile(r"^cls\..*"))
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"
_REFUSED_POOLING = {
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class ConversionError(Exception):
    """A checkpoint this converter cannot (or must not) turn into a blob; the message names file / tensor / value."""


def log(msg: str) -> None:
    print(f"[bertlet-convert] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# config.json


@dataclass
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from e
    except OSError as e:
        raise ConversionError(f"{path}: cannot read ({e.strerror})") from e


def read_config(model_dir: Path) -> BertConfig:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: missing (not a Hugging Face checkpoint directory?)")
    cfg = _read_json(path)
    model_type = cfg.get("model_type")
    if model_type != "bert":
        raise ConversionError(f"{path}: model_type is {model_type!r}; only 'bert' is supported")
    archs = cfg.get("architectures") or []
    bad = [a for a in archs if not (isinstance(a, str) and a.startswith("Bert"))]
    if bad:
        raise ConversionError(f"{path}: architectures {bad!r} are not BERT (expected e.g. 'BertModel')")
    if cfg.get("is_decoder") or cfg.get("add_cross_attention"):
        raise ConversionError(f"{path}: decoder / cross-attention BERT variants are not supported")

    def need_int(key: str, lo: int = 1, hi: Optional[int] = None) -> int:
        if key not in cfg:
            raise ConversionError(f"{path}: missing key '{key}'")
        v = cfg[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise ConversionError(f"{path}: '{key}' is {v!r}; expected an integer {rng}")
        return v

    c = BertConfig(
        vocab_size=need_int("vocab_size"),
        hidden_size=need_int("hidden_size"),
        num_layers=need_int("num_hidden_layers", 1, 128),
        num_heads=need_int("num_attention_heads"),
        intermediate_size=need_int("intermediate_size"),
        max_position_embeddings=need_int("max_position_embeddings"),
        type_vocab_size=need_int("type_vocab_size"),
        layer_norm_eps=float(cfg.get("layer_norm_eps", 1e-12)),
        hidden_act=cfg.get("hidden_act", "gelu"),
    )
    if c.hidden_size % c.num_heads:
        raise ConversionError(f"{path}: hidden_size {c.hidden_size} is not a multiple of "
                              f"num_attention_heads {c.num_heads}")
    if not (math.isfinite(c.layer_norm_eps) and c.layer_norm_eps > 0):
        raise ConversionError(f"{path}: layer_norm_eps is {c.layer_norm_eps!r}; expected a finite value > 0")
    if c.hidden_act not in SUPPORTED_ACTS:
        raise ConversionError(f"{path}: hidden_act is {c.hidden_act!r}; supported: {', '.join(SUPPORTED_ACTS)}")
    pet = cfg.get("position_embedding_type", "absolute")
    if pet != "absolute":
        raise ConversionError(f"{path}: position_embedding_type is {pet!r}; only 'absolute' is supported")
    return c


# ---------------------------------------------------------------------------------------------------------------
# weights


def find_weight_file(model_dir: Path) -> Path:
    st = model_dir / "model.safetensors"
    pt = model_dir / "pytorch_model.bin"
    if st.is_file():
        return st
    if pt.is_file():
        return pt
    for idx in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (model_dir / idx).is_file():
            raise ConversionError(f"{model_dir / idx}: sharded checkpoints are not supported")
    raise ConversionError(f"{model_dir}: no model.safetensors or pytorch_model.bin")



def load_weights(path: Path) -> Dict[str, np.ndarray]:
    """Raw tensors by their checkpoint names, as float32 numpy arrays (f16/bf16 are widened exactly)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise ConversionError(f"{path}: cannot read safetensors ({e})") from e
    else:
        import inspect

        kw: Dict[str, Any] = {"map_location": "cpu"}
        if "weights_only" in inspect.signature(torch.load).parameters:
            kw["weights_only"] = True
        try:
            state = torch.load(str(path), **kw)
        except Exception as e:
            raise ConversionError(f"{path}: cannot load ({e})") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise ConversionError(f"{path}: expected a state dict, got {type(state).__name__}")
    out: Dict[str, np.ndarray] = {}
    widened = sorted({str(t.dtype).replace("torch.", "") for t in state.values()
                      if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float32})
    if widened:
        log(f"note: {path.name} holds {', '.join(widened)} tensors; they are widened exactly to f32")
    for k, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise ConversionError(f"{path}: entry '{k}' is a {type(t).__name__}, not a tensor")
        if t.is_floating_point():
            out[k] = t.detach().to(torch.float32).contiguous().numpy()
        else:
            out[k] = t.detach().contiguous().numpy()
    return out


def canonical_name(name: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _STRIP_PREFIXES:
            if name.startswith(p):
                name = name[len(p):]
                changed = True
    if name.endswith("LayerNorm.gamma"):
        name = name[: -len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[: -len("beta")] + "bias"
    return name


def expected_tensors(c: BertConfig) -> List[Tuple[str, Tuple[int, ...]]]:
    """FORMAT.md's tensor names and shapes, in blob order (the pooler is never written by this version)."""
    V, H, P, T, I = c.vocab_size, c.hidden_size, c.max_position_embeddings, c.type_vocab_size, c.intermediate_size
    out: List[Tuple[str, Tuple[int, ...]]] = [
        ("embeddings.word_embeddings.weight", (V, H)),
        ("embeddings.position_embeddings.weight", (P, H)),
        ("embeddings.token_type_embeddings.weight", (T, H)),
        ("embeddings.LayerNorm.weight", (H,)),
        ("embeddings.LayerNorm.bias", (H,)),
    ]
    for i in range(c.num_layers):
        p = f"encoder.layer.{i}."
        for proj in ("query", "key", "value"):
            out += [(f"{p}attention.self.{proj}.weight", (H, H)), (f"{p}attention.self.{proj}.bias", (H,))]
        out += [
            (f"{p}attention.output.dense.weight", (H, H)), (f"{p}attention.output.dense.bias", (H,)),
            (f"{p}attention.output.LayerNorm.weight", (H,)), (f"{p}attention.output.LayerNorm.bias", (H,)),
            (f"{p}intermediate.dense.weight", (I, H)), (f"{p}intermediate.dense.bias", (I,)),
            (f"{p}output.dense.weight", (H, I)), (f"{p}output.dense.bias", (H,)),
            (f"{p}output.LayerNorm.weight", (H,)), (f"{p}output.LayerNorm.bias", (H,)),
        ]
    return out


def _fmt_shape(s: Sequence[int]) -> str:
    return "(" + ",".join(str(int(d)) for d in s) + ")"


def map_tensors(raw: Dict[str, np.ndarray], c: BertConfig, weight_file: Path,
                config_file: Path) -> Tuple[List[blob.Tensor], List[str]]:
    """Rename, check and order the tensors. Returns (tensors in blob order, ignored checkpoint names)."""
    by_name: Dict[str, Tuple[str, np.ndarray]] = {}
    for orig, arr in raw.items():
        name = canonical_name(orig)
        if name in by_name:
            raise ConversionError(f"{weight_file}: tensors '{by_name[name][0]}' and '{orig}' both map to '{name}'")
        by_name[name] = (orig, arr)
    expected = expected_tensors(c)
    want = {n for n, _ in expected}
    ignored = sorted(orig for n, (orig, _) in by_name.items() if n not in want and any(r.match(n) for r in _IGNORABLE))
    unknown = sorted(orig for n, (orig, _) in by_name.items()
                     if n not in want and not any(r.match(n) for r in _IGNORABLE))
    problems: List[str] = []
    for name, shape in expected:
        if name not in by_name:
            problems.append(f"missing tensor '{name}'")
            continue
        arr = by_name[name][1]
        if tuple(arr.shape) != shape:
            problems.append(f"tensor '{name}': expected {_fmt_shape(shape)}, got {_fmt_shape(arr.shape)}")
        elif arr.dtype != np.float32:
            problems.append(f"tensor '{name}': dtype {arr.dtype} is not floating point")
        elif not np.all(np.isfinite(arr)):
            problems.append(f"tensor '{name}': contains NaN or Inf")
    if unknown:
        shown = ", ".join(f"'{u}'" for u in unknown[:10]) + (f" (+{len(unknown) - 10} more)" if len(unknown) > 10 else "")
        problems.append(f"unknown tensor(s) {shown}: not part of a BERT encoder this converter understands "
                        f"(refusing rather than dropping them)")
    if problems:
        head = f"{weight_file} does not match {config_file}"
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise ConversionError(head + ":\n  " + "\n  ".join(shown))
    tensors = [blob.Tensor(name, by_name[name][1]) for name, _ in expected]
    return tensors, ignored


# ---------------------------------------------------------------------------------------------------------------
# tokenizer


@dataclass
class TokenizerSettings:
    vocab: List[str]
    lowercase: bool
    strip_accents: bool
    handle_chinese_chars: bool
    clean_text: bool
    continuing_subword_prefix: str
    max_input_chars_per_word: int
    unk_id: int
    cls_id: int
    sep_id: int
    pad_id: int
    model_max_length: Optional[int]
    source: str


def _tok_name(v: Any, default: str) -> str:
    if v is None:
        return default
    if isinstance(v, dict):
        return str(v.get("content", default))
    return str(v)


def _vocab_from_dict(vocab: Dict[str, int], path: Path) -> List[str]:
    n = len(vocab)
    out: List[Optional[str]] = [None] * n
    for tok, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < n or out[i] is not None:
            raise ConversionError(f"{path}: WordPiece vocab ids are not a permutation of 0..{n - 1} "
                                  f"(token {tok!r} has id {i!r})")
        out[i] = tok
    return out  # type: ignore[return-value]


def read_tokenizer(model_dir: Path) -> TokenizerSettings:
    tj = model_dir / "tokenizer.json"
    tc_path = model_dir / "tokenizer_config.json"
    tc: Dict[str, Any] = _read_json(tc_path) if tc_path.is_file() else {}
    stm_path = model_dir / "special_tokens_map.json"
    stm: Dict[str, Any] = _read_json(stm_path) if stm_path.is_file() else {}
    tclass = tc.get("tokenizer_class")
    if tclass is not None and tclass not in ("BertTokenizer", "BertTokenizerFast"):
        raise ConversionError(f"{tc_path}: tokenizer_class is {tclass!r}; only BertTokenizer(Fast) is supported")
    if tc.get("do_basic_tokenize", True) is not True:
        raise ConversionError(f"{tc_path}: do_basic_tokenize is {tc.get('do_basic_tokenize')!r}; must be true")
    if tc.get("never_split"):
        raise ConversionError(f"{tc_path}: never_split {tc.get('never_split')!r} is not supported")
    names = {k: _tok_name(tc.get(f"{k}_token", stm.get(f"{k}_token")), f"[{k.upper()}]")
             for k in ("unk", "cls", "sep", "pad")}

    # BertTokenizerFast's constructor arguments (its defaults when tokenizer_config.json does not give them)
    do_lower = tc.get("do_lower_case", True)
    strip_acc = tc.get("strip_accents", None)
    chinese = tc.get("tokenize_chinese_chars", True)

    if tj.is_file():
        d = _read_json(tj)
        norm = d.get("normalizer") or {}
        if norm.get("type") != "BertNormalizer":
            raise ConversionError(f"{tj}: normalizer is {norm.get('type')!r}; only BertNormalizer is supported")
        pre = d.get("pre_tokenizer") or {}
        if pre.get("type") != "BertPreTokenizer":
            raise ConversionError(f"{tj}: pre_tokenizer is {pre.get('type')!r}; only BertPreTokenizer is supported")
        model = d.get("model") or {}
        if model.get("type") != "WordPiece":
            raise ConversionError(f"{tj}: model type is {model.get('type')!r}; only WordPiece is supported")
        vocab = _vocab_from_dict(model.get("vocab") or {}, tj)
        for at in d.get("added_tokens") or []:
            tid, content = at.get("id"), at.get("content")
            if not (isinstance(tid, int) and tid < len(vocab) and vocab[tid] == content):
                raise ConversionError(f"{tj}: added token {content!r} (id {tid!r}) is not in the WordPiece vocab; "
                                      "added tokens are not supported")
            if not at.get("special", False):
                raise ConversionError(f"{tj}: non-special added token {content!r} is not supported")
        unk_model = model.get("unk_token", "[UNK]")
        if "unk_token" in tc or "unk_token" in stm:
            if unk_model != names["unk"]:
                raise ConversionError(f"{tj}: WordPiece unk_token {unk_model!r} differs from {names['unk']!r} "
                                      f"in {tc_path.name}/{stm_path.name}")
        names["unk"] = unk_model
        prefix = model.get("continuing_subword_prefix", "##")
        max_chars = model.get("max_input_chars_per_word", 100)
        file_lower = bool(norm.get("lowercase", True))
        file_strip = norm.get("strip_accents", None)
        file_chinese = bool(norm.get("handle_chinese_chars", True))
        clean = bool(norm.get("clean_text", True))
        # BertTokenizerFast replaces the normalizer when its arguments differ from the file (transformers 4.x)
        if (file_lower, file_strip, file_chinese) != (do_lower, strip_acc, chinese):
            log(f"note: {tc_path.name} (or BertTokenizerFast defaults) override {tj.name}'s normalizer: "
                f"lowercase {file_lower}->{do_lower}, strip_accents {file_strip}->{strip_acc}, "
                f"handle_chinese_chars {file_chinese}->{chinese} (this is what transformers does)")
        source = tj.name
        vt = model_dir / "vocab.txt"
        if vt.is_file():
            with open(vt, encoding="utf-8") as f:
                if [line.rstrip("\n") for line in f] != vocab:
                    log(f"note: {vt.name} differs from {tj.name}'s vocab; using {tj.name} (what the fast tokenizer uses)")
    else:
        vt = model_dir / "vocab.txt"
        if not vt.is_file():
            raise ConversionError(f"{model_dir}: neither tokenizer.json nor vocab.txt found")
        with open(vt, encoding="utf-8") as f:
            vocab = [line.rstrip("\n") for line in f]
        seen: Dict[str, int] = {}
        for i, t in enumerate(vocab):
            if t in seen:
                raise ConversionError(f"{vt}: duplicate token {t!r} at lines {seen[t] + 1} and {i + 1}")
            seen[t] = i
        prefix, max_chars, clean = "##", 100, True
        source = f"{vt.name} + {tc_path.name}" if tc else vt.name
    if not isinstance(do_lower, bool) or not isinstance(chinese, bool) or strip_acc not in (None, True, False):
        raise ConversionError(f"{tc_path}: do_lower_case / strip_accents / tokenize_chinese_chars must be booleans "
                              f"(strip_accents may be null); got {do_lower!r} / {strip_acc!r} / {chinese!r}")
    if len(set(vocab)) != len(vocab):
        raise ConversionError(f"{model_dir}: duplicate tokens in the vocabulary")
    index = {t: i for i, t in enumerate(vocab)}
    ids = {}
    for k, tok in names.items():
        if tok not in index:
            raise ConversionError(f"{model_dir}: special token {tok!r} ({k}) is not in the vocabulary ({source})")
        ids[k] = index[tok]
    mml = tc.get("model_max_length")
    mml_ok = int(mml) if isinstance(mml, (int, float)) and not isinstance(mml, bool) and 0 < mml < SANE_MODEL_MAX_LENGTH else None
    return TokenizerSettings(
        vocab=vocab, lowercase=do_lower, strip_accents=do_lower if strip_acc is None else strip_acc,
        handle_chinese_chars=chinese, clean_text=clean, continuing_subword_prefix=str(prefix),
        max_input_chars_per_word=int(max_chars), unk_id=ids["unk"], cls_id=ids["cls"], sep_id=ids["sep"],
        pad_id=ids["pad"], model_max_length=mml_ok, source=source)


def cross_check_tokenizer(model_dir: Path, tok: TokenizerSettings) -> None:
    """Compare the settings read from files with the tokenizer transformers really builds."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(model_dir), clean_up_tokenization_spaces=True)
    if not getattr(hf, "is_fast", False):
        raise ConversionError(f"{model_dir}: transformers built a slow tokenizer ({type(hf).__name__}); "
                              "cannot cross-check the normalizer")
    st = json.loads(hf.backend_tokenizer.normalizer.__getstate__())
    eff_strip = st.get("lowercase") if st.get("strip_accents") is None else st.get("strip_accents")
    got = (st.get("lowercase"), eff_strip, st.get("handle_chinese_chars"), st.get("clean_text"))
    mine = (tok.lowercase, tok.strip_accents, tok.handle_chinese_chars, tok.clean_text)
    if got != mine:
        raise ConversionError(f"{model_dir}: tokenizer settings read from files (lowercase, strip_accents, "
                              f"handle_chinese_chars, clean_text) = {mine} differ from transformers' tokenizer {got}")
    for k, i in (("unk", tok.unk_id), ("cls", tok.cls_id), ("sep", tok.sep_id), ("pad", tok.pad_id)):
        if getattr(hf, f"{k}_token_id") != i:
            raise ConversionError(f"{model_dir}: {k} id {i} differs from transformers' {getattr(hf, f'{k}_token_id')}")
    if hf.vocab_size != len(tok.vocab):
        raise ConversionError(f"{model_dir}: vocab size {len(tok.vocab)} differs from transformers' {hf.vocab_size}")


# ---------------------------------------------------------------------------------------------------------------
# sentence-transformers modules / pooling


@dataclass
class Pipeline:
    root: Path
    transformer_dir: Path
    sentence_transformers: bool
    pooling_mode: str
    normalize: bool
    st_max_seq_length: Optional[int]
    modules: List[str] = field(default_factory=list)
    pooling_dim: Optional[int] = None
    pooling_config: Optional[Path] = None


def read_pipeline(ckpt_dir: Path) -> Pipeline:
    mj = ckpt_dir / "modules.json"
    if not mj.is_file():
        return Pipeline(ckpt_dir, ckpt_dir, False, "cls", False, None, ["(plain Hugging Face BertModel)"])
    mods = _read_json(mj)
    if not isinstance(mods, list) or not mods:
        raise ConversionError(f"{mj}: expected a non-empty list of modules")
    mods = sorted(mods, key=lambda m: m.get("idx", 0))
    types = [m.get("type") for m in mods]
    ok = (types[0] == _ST_TRANSFORMER and len(types) in (2, 3) and types[1] == _ST_POOLING
          and (len(types) == 2 or types[2] == _ST_NORMALIZE))
    if not ok:
        raise ConversionError(f"{mj}: modules {types} are not supported; expected Transformer, Pooling and optionally "
                              "Normalize (Dense, LayerNorm, ... heads are not supported)")
    tdir = ckpt_dir / (mods[0].get("path") or "")
    sbc_path = tdir / "sentence_bert_config.json"
    st_max: Optional[int] = None
    if sbc_path.is_file():
        sbc = _read_json(sbc_path)
        v = sbc.get("max_seq_length")
        if v is not None:
            if not isinstance(v, int) or isinstance(v, bool) or v < 3:
                raise ConversionError(f"{sbc_path}: max_seq_length is {v!r}; expected an integer >= 3")
            st_max = v
        for k in ("tokenizer_args", "model_args", "config_args"):
            if sbc.get(k):
                raise ConversionError(f"{sbc_path}: '{k}' {sbc[k]!r} is not supported")
    pdir = ckpt_dir / (mods[1].get("path") or "")
    pcfg_path = pdir / "config.json"
    if not pcfg_path.is_file():
        raise ConversionError(f"{pcfg_path}: missing (the Pooling module's config)")
    pcfg = _read_json(pcfg_path)
    refused = [name for key, name in _REFUSED_POOLING.items() if pcfg.get(key)]
    modes = (["cls"] if pcfg.get("pooling_mode_cls_token") else []) + \
            (["mean"] if pcfg.get("pooling_mode_mean_tokens") else [])
    if refused:
        raise ConversionError(f"{pcfg_path}: pooling mode {'+'.join(refused + modes)} is not supported "
                              "(only mean or cls)")
    if len(modes) != 1:
        raise ConversionError(f"{pcfg_path}: exactly one pooling mode must be set, got {modes or 'none'} "
                              "(only mean or cls, not combinations)")
    dim = pcfg.get("word_embedding_dimension")
    return Pipeline(ckpt_dir, tdir, True, modes[0], len(mods) == 3, st_max, [str(t).rsplit(".", 1)[-1] for t in types],
                    dim if isinstance(dim, int) else None, pcfg_path)


def st_do_lower_case(pipe: Pipeline) -> bool:
    p = pipe.transformer_dir / "sentence_bert_config.json"
    return bool(pipe.sentence_transformers and p.is_file() and _read_json(p).get("do_lower_case"))


# ---------------------------------------------------------------------------------------------------------------
# reference vectors


def verify_texts(max_length: int) -> List[str]:
    sentence = "The committee reviewed every proposal carefully before the final vote on Thursday afternoon."
    words = sentence.split()
    reps = (max_length + 32) // len(words) + 1  # every word is >= 1 token, so this is > max_length tokens
    long_text = " ".join([sentence] * reps)
    return [
        "The quick brown fox jumps over the lazy dog. HeLLo WoRLD!",
        "Café naïve résumé: Ångström, façade, jalapeño, Straße, Crème brûlée.",
        "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
        "I love pizza 🍕🔥!! Ça va? 👍🏽 tabs\tand\nnewlines\u00a0and\u200bzero-width",
        long_text,
        "",
    ]


def _round_word_embeddings_f16(module) -> None:
    """Rounds a BertModel's word-embedding table to f16 values in place (what an f16 blob stores)."""
    import torch

    w = module.embeddings.word_embeddings.weight
    with torch.no_grad():
        w.copy_(w.to(torch.float16).to(torch.float32))


def reference_vectors(pipe: Pipeline, texts: Sequence[str], max_length: int,
                      word_embeddings_f16: bool = False) -> np.ndarray:
    """The real sentence-transformers (or transformers + the same pooling) outputs, one text at a time.
    word_embeddings_f16: run the network the blob describes when its word embeddings are stored as f16 (the table
    rounded to f16 values, everything else unchanged)."""
    import torch

    if pipe.sentence_transformers:
        import warnings

        from sentence_transformers import SentenceTransformer

        with warnings.catch_warnings():  # transformers 4.44's clean_up_tokenization_spaces FutureWarning
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*clean_up_tokenization_spaces.*")
            model = SentenceTransformer(str(pipe.root), device="cpu")
        if model.max_seq_length != max_length:
            raise ConversionError(f"sentence-transformers uses max_seq_length {model.max_seq_length}, "
                                  f"the converter computed {max_length}")
        got_mode = model[1].get_pooling_mode_str()
        if got_mode != pipe.pooling_mode:
            raise ConversionError(f"sentence-transformers pools with {got_mode!r}, converter read {pipe.pooling_mode!r}")
        if word_embeddings_f16:
            _round_word_embeddings_f16(model[0].auto_model)
        long_ids = model.tokenize([texts[4]])["input_ids"]
        if long_ids.shape[1] != max_length:
            raise ConversionError(f"the long verify text has {long_ids.shape[1]} tokens, expected truncation to "
                                  f"{max_length}")
        rows = []
        for t in tqdm(texts, desc="reference vectors (sentence-transformers)", unit="text"):
            rows.append(model.encode([t], batch_size=1, convert_to_numpy=True, show_progress_bar=False)[0])
        return np.stack(rows).astype(np.float32)

    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(pipe.transformer_dir), clean_up_tokenization_spaces=True)
    model = AutoModel.from_pretrained(str(pipe.transformer_dir), add_pooling_layer=False).eval()
    if word_embeddings_f16:
        _round_word_embeddings_f16(model)
    rows = []
    with torch.no_grad():
        for t in tqdm(texts, desc="reference vectors (transformers)", unit="text"):
            enc = tok([t], truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**enc).last_hidden_state[0]
            if pipe.pooling_mode == "cls":
                v = h[0]
            else:
                m = enc["attention_mask"][0].unsqueeze(-1).to(h.dtype)
                v = (h * m).sum(0) / m.sum().clamp(min=1e-9)
            if pipe.normalize:
                v = torch.nn.functional.normalize(v, p=2, dim=0)
            rows.append(v.numpy())
    return np.stack(rows).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# writing


def atomic_write(out: Path, data: bytes, progress: bool = True) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent))
    try:
        with os.fdopen(fd, "wb") as f, tqdm(total=len(data), unit="B", unit_scale=True, desc=f"writing {out.name}",
                                             disable=not progress) as bar:
            view = memoryview(data)
            step = 4 << 20
            for i in range(0, len(data), step):
                f.write(view[i:i + step])
                bar.update(min(step, len(data) - i))
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the blob normal permissions
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@dataclass
class Result:
    out: Path
    meta: Dict[str, Any]
    n_tensors: int
    n_params: int
    blob_bytes: int
    zipped_bytes: int
    ignored: List[str]


def lambda_summary(blob_bytes: int, zipped_bytes: int) -> List[str]:
    mb = lambda n: f"{n / 1e6:.1f} MB"  # noqa: E731
    fits_zip = zipped_bytes <= LAMBDA_ZIPPED_DIRECT
    fits_unz = blob_bytes <= LAMBDA_UNZIPPED
    return [
        f"AWS Lambda (1 MB = 10^6 bytes): zipped direct upload limit 50 MB: blob alone zips to ~{mb(zipped_bytes)} "
        f"(zlib level 6) -> {'fits' if fits_zip else 'does NOT fit'}"
        + ("" if fits_zip else " (upload the .zip via S3, or use a layer / container image)"),
        f"AWS Lambda: unzipped limit 250 MB (function + layers): blob {mb(blob_bytes)} -> "
        + (f"fits, {mb(LAMBDA_UNZIPPED - blob_bytes)} left for the binary and other files" if fits_unz
           else "does NOT fit (use a container image, up to 10 GB)"),
    ]


def convert(ckpt_dir: Path, out: Path, name: Optional[str] = None, verify_vectors: bool = True,
            dtype: str = "f32", progress: bool = True, layout: str = "packed",
            word_embeddings: str = "f32") -> Result:
    ckpt_dir = Path(ckpt_dir)
    out = Path(out)
    if dtype not in ("f32", "bf16"):
        raise ConversionError(f"--dtype {dtype!r}: expected f32 or bf16 (int8: bertlet-quantize)")
    if dtype == "bf16" and layout != "packed":
        raise ConversionError("--dtype bf16 writes packed (layout 3) linear weights; --layout rowmajor does not apply")
    if layout not in ("packed", "rowmajor"):
        raise ConversionError(f"--layout {layout!r}: expected packed or rowmajor")
    if word_embeddings not in ("f32", "f16"):
        raise ConversionError(f"--word-embeddings {word_embeddings!r}: expected f32 or f16")
    if not ckpt_dir.is_dir():
        raise ConversionError(f"{ckpt_dir}: not a directory")
    pipe = read_pipeline(ckpt_dir)
    tdir = pipe.transformer_dir
    cfg = read_config(tdir)
    tok = read_tokenizer(tdir)
    if st_do_lower_case(pipe) and not tok.lowercase:
        raise ConversionError(f"{tdir / 'sentence_bert_config.json'}: do_lower_case true with a cased tokenizer "
                              "(sentence-transformers' str.lower() pre-pass) is not supported")
    if len(tok.vocab) != cfg.vocab_size:
        raise ConversionError(f"{tdir}: vocabulary has {len(tok.vocab)} tokens ({tok.source}) but config.json "
                              f"vocab_size is {cfg.vocab_size}")
    cross_check_tokenizer(tdir, tok)
    limits = [cfg.max_position_embeddings]
    if pipe.st_max_seq_length is not None:
        limits.append(pipe.st_max_seq_length)
    if tok.model_max_length is not None:
        limits.append(tok.model_max_length)
    max_length = min(limits)
    if max_length < 3:
        raise ConversionError(f"{tdir}: max length {max_length} leaves no room for text between [CLS] and [SEP]")

    wfile = find_weight_file(tdir)
    log(f"reading {wfile}")
    raw = load_weights(wfile)
    tensors, ignored = map_tensors(raw, cfg, wfile, tdir / "config.json")
    del raw
    if dtype == "bf16":
        for t in tensors:
            if _PACKED_LINEAR.match(t.name) and not np.all(np.isfinite(t.data)):
                raise ConversionError(f"tensor '{t.name}': holds non-finite values")
        tensors = [PackedBF16Tensor(t.name, t.data) if _PACKED_LINEAR.match(t.name) else t for t in tensors]
    elif layout == "packed":
        tensors = [PackedTensor(t.name, t.data) if _PACKED_LINEAR.match(t.name) else t for t in tensors]
    if word_embeddings == "f16":
        tensors = [word_embeddings_f16(t) if t.name == WORD_EMBEDDINGS else t for t in tensors]
    if pipe.pooling_dim is not None and pipe.pooling_dim != cfg.hidden_size:
        raise ConversionError(f"{pipe.pooling_config}: word_embedding_dimension {pipe.pooling_dim} "
                              f"!= hidden_size {cfg.hidden_size} in {tdir / 'config.json'}")
    if ignored:
        log(f"ignoring {len(ignored)} tensor(s) not used by the encoder: {', '.join(ignored)}")

    meta: Dict[str, Any] = {
        "general.architecture": "bert",
        "general.name": name or ckpt_dir.resolve().name,
        "general.source_sha256": sha256_file(wfile),
        "general.converter": CONVERTER,
        "bert.vocab_size": cfg.vocab_size,
        "bert.hidden_size": cfg.hidden_size,
        "bert.num_layers": cfg.num_layers,
        "bert.num_heads": cfg.num_heads,
        "bert.intermediate_size": cfg.intermediate_size,
        "bert.max_position_embeddings": cfg.max_position_embeddings,
        "bert.type_vocab_size": cfg.type_vocab_size,
        "bert.layer_norm_eps": float(cfg.layer_norm_eps),
        "bert.hidden_act": cfg.hidden_act,
        "tokenizer.model": "wordpiece",
        "tokenizer.vocab": tok.vocab,
        "tokenizer.lowercase": tok.lowercase,
        "tokenizer.strip_accents": tok.strip_accents,
        "tokenizer.handle_chinese_chars": tok.handle_chinese_chars,
        "tokenizer.clean_text": tok.clean_text,
        "tokenizer.continuing_subword_prefix": tok.continuing_subword_prefix,
        "tokenizer.max_input_chars_per_word": tok.max_input_chars_per_word,
        "tokenizer.unk_id": tok.unk_id,
        "tokenizer.cls_id": tok.cls_id,
        "tokenizer.sep_id": tok.sep_id,
        "tokenizer.pad_id": tok.pad_id,
        "tokenizer.max_length": max_length,
        "pooling.mode": pipe.pooling_mode,
        "pooling.normalize": pipe.normalize,
    }
    if verify_vectors:
        texts = verify_texts(max_length)
        emb = reference_vectors(pipe, texts, max_length, word_embeddings_f16=word_embeddings == "f16")
        if emb.shape != (len(texts), cfg.hidden_size) or not np.all(np.isfinite(emb)):
            raise ConversionError(f"reference vectors have shape {emb.shape} (expected ({len(texts)}, "
                                  f"{cfg.hidden_size})) or are not finite")
        meta["verify.texts"] = texts
        meta["verify.embeddings"] = emb.reshape(-1).astype(np.float32)
        meta["verify.tolerance"] = VERIFY_TOLERANCE
        if dtype == "bf16":  # bf16 weights and activations: the fp32 reference is met within bf16 rounding
            meta["verify.tolerance"] = VERIFY_TOLERANCE_BF16
            meta["verify.min_cosine"] = VERIFY_MIN_COSINE_BF16
    if dtype == "bf16":
        meta["general.quantization"] = ("bf16 linear weights (BF16P16K2, round to nearest even); activations rounded "
                                        "to bf16 at each linear, fp32 accumulation; everything else f32")
    if word_embeddings == "f16":
        meta["general.word_embeddings"] = "f16"

    data = blob.encode(meta, tensors)
    zipped = len(zlib.compress(data, 6))
    atomic_write(out, data, progress)
    n_params = int(sum(t.data.size for t in tensors))
    return Result(out, meta, len(tensors), n_params, len(data), zipped, ignored)


WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
F16_MAX = 65504.0


def word_embeddings_f16(t: "blob.Tensor") -> "blob.Tensor":
    """The word-embedding table as an f16 tensor (round to nearest even). Refuses values f16 cannot hold."""
    d = np.asarray(t.data, dtype=np.float32)
    if not np.all(np.isfinite(d)):
        raise ConversionError(f"tensor '{t.name}': holds non-finite values")
    big = np.abs(d) > F16_MAX
    if big.any():
        i = int(np.argmax(big))
        raise ConversionError(f"tensor '{t.name}': element {i} (row {i // d.shape[1]}) = {float(d.flat[i])!r} "
                              f"exceeds the f16 range (|x| <= {F16_MAX})")
    return blob.Tensor(t.name, d.astype(np.float16), dtype=blob.DT_F16)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bertlet-convert",
        description="Convert a Hugging Face / sentence-transformers BERT checkpoint directory into a .bertlet blob "
                    "(docs/FORMAT.md). Runs offline (HF_HUB_OFFLINE=1).")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, weights, tokenizer files; "
                   "a sentence-transformers directory also has modules.json)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .bertlet file (written atomically)")
    p.add_argument("--name", help="general.name (default: the checkpoint directory's name)")
    p.add_argument("--no-verify-vectors", action="store_true",
                   help="do not run Hugging Face to store verify.* reference vectors")
    p.add_argument("--dtype", choices=["f32", "bf16"], default="f32",
                   help="encoder linear weights: f32 (default), or bf16 (layout 3: half the size, run with "
                        "AVX512_BF16 dot products where the CPU has them, widened to f32 at load elsewhere); int8 is "
                        "bertlet-quantize")
    p.add_argument("--layout", choices=["packed", "rowmajor"], default="packed",
                   help="packed (default): encoder linear weights pre-packed for the GEMM kernels (layout 1, "
                        "PACKED_N16); rowmajor: every tensor row-major (layout 0; packed at load instead)")
    p.add_argument("--word-embeddings", choices=["f32", "f16"], default="f32",
                   help="storage of the word-embedding table (the largest tensor: 47 MB of MiniLM's 91 MB): f16 "
                        "halves it; rows are widened exactly at lookup, and the reference vectors come from the "
                        "Hugging Face model with the same f16-rounded table")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        r = convert(args.checkpoint, args.output, name=args.name, verify_vectors=not args.no_verify_vectors,
                    dtype=args.dtype, layout=args.layout, word_embeddings=args.word_embeddings)
    except ConversionError as e:
        print(f"bertlet-convert: error: {e}", file=sys.stderr)
        return 1
    m = r.meta
    print(f"wrote {r.out}")
    print(f"  model: {m['general.name']} (bert, {m['bert.num_layers']} layers, H {m['bert.hidden_size']}, "
          f"heads {m['bert.num_heads']}, I {m['bert.intermediate_size']}, vocab {m['bert.vocab_size']}, "
          f"{m['bert.hidden_act']})")
    print(f"  tokenizer: max_length {m['tokenizer.max_length']}, lowercase {m['tokenizer.lowercase']}, "
          f"strip_accents {m['tokenizer.strip_accents']}; pooling {m['pooling.mode']}"
          f"{' + L2 normalize' if m['pooling.normalize'] else ''}")
    print(f"  tensors: {r.n_tensors}, parameters: {r.n_params:,}"
          f" (word embeddings {m.get('general.word_embeddings', 'f32')}, the rest f32)")
    print(f"  verify vectors: {len(m['verify.texts']) if 'verify.texts' in m else 'none'}")
    print(f"  blob size: {r.blob_bytes / 1e6:.1f} MB ({r.blob_bytes / 2**20:.1f} MiB, {r.blob_bytes:,} bytes)")
    for line in lambda_summary(r.blob_bytes, r.zipped_bytes):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
