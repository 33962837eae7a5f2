"""bertlet-goldens: Hugging Face (sentence-transformers) reference embeddings of STS-B sentences, for parity checks.

Regenerate the small committed golden (tests/data/golden_stsb_small.jsonl, first 16 STS-B test pairs) with:

    HF_HUB_OFFLINE=1 bertlet-goldens models/src/all-MiniLM-L6-v2 --stsb ../shared/data/stsb/sts-test.csv \
        --subset 16 -o tests/data/golden_stsb_small.jsonl

Full golden (what scripts/setup.sh runs):

    HF_HUB_OFFLINE=1 bertlet-goldens models/src/all-MiniLM-L6-v2 --stsb ../shared/data/stsb/sts-test.csv \
        -o models/goldens/all-MiniLM-L6-v2.stsb-test.npz

Sentence order, in both outputs: all sentence1 values (pair order), then all sentence2 values, i.e. for n pairs
``sentences[i]`` is sentence1 of pair i and ``sentences[n + i]`` is sentence2 of pair i.

The .npz holds (no pickled objects; ``np.load`` works without ``allow_pickle``):

=================  ==========================  =====================================================================
key                dtype / shape               meaning
=================  ==========================  =====================================================================
sentences          <U (unicode) [2n]           the texts, order above
scores             float64 [n]                 gold similarity 0..5
embeddings         float32 [2n, H]             sentence-transformers output (fp32, CPU, batch 64, + its Normalize)
input_ids          int32 [2n, L]               HF tokenization (with [CLS]/[SEP], truncated to max_length), padded
                                               with pad_id to the longest row L
lengths            int32 [2n]                  number of real tokens per row of input_ids
spearman           float64 []                  STS-B Spearman x100 of cosine(emb s1, emb s2) vs scores
n_pairs            int64 []                    n
max_length         int64 []                    tokenizer truncation length used
pad_id             int64 []                    pad id used in input_ids
model_name         <U []                       checkpoint directory name
source_sha256      <U []                       sha256 of the checkpoint's weight file
stsb_file          <U []                       file name of the STS-B split
stsb_sha256        <U []                       sha256 of that file
order              <U []                       the sentence-order sentence above
=================  ==========================  =====================================================================

The .jsonl (``--subset N -o X.jsonl``) has one line per sentence, ``{"text": ..., "embedding": [...]}``, floats
written as the shortest decimal that round-trips the float32 value.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from .util import sha256_file

ORDER_DOC = "sentences[i] = sentence1 of pair i, sentences[n_pairs + i] = sentence2 of pair i"
BATCH_SIZE = 64


class GoldenError(Exception):
    pass


@dataclass
class StsbPairs:
    sentence1: List[str]
    sentence2: List[str]
    scores: np.ndarray  # float64 [n]

    @property
    def sentences(self) -> List[str]:
        return self.sentence1 + self.sentence2

    def __len__(self) -> int:
        return len(self.sentence1)


def read_stsb(path: Path) -> StsbPairs:
    """STS-B as distributed: tab-separated genre, file, year, id, score, sentence1, sentence2[, extra columns...].

    Parsed by splitting on tabs (no CSV quoting: sentences contain bare double quotes). Extra trailing columns are
    ignored; a row with fewer than 7 columns or an unparsable score is an error (with its line number)."""
    s1: List[str] = []
    s2: List[str] = []
    scores: List[float] = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) < 7:
                raise GoldenError(f"{path}:{lineno}: expected >= 7 tab-separated columns, got {len(cols)}")
            try:
                score = float(cols[4])
            except ValueError as e:
                raise GoldenError(f"{path}:{lineno}: score {cols[4]!r} is not a number") from e
            if not 0.0 <= score <= 5.0:
                raise GoldenError(f"{path}:{lineno}: score {score} outside 0..5")
            s1.append(cols[5])
            s2.append(cols[6])
            scores.append(score)
    if not scores:
        raise GoldenError(f"{path}: no pairs")
    return StsbPairs(s1, s2, np.asarray(scores, dtype=np.float64))


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-30)


def stsb_spearman(embeddings: np.ndarray, scores: np.ndarray) -> float:
    """Spearman x100 of cosine(s1, s2) vs gold, for embeddings in the s1-then-s2 order."""
    from scipy.stats import spearmanr

    n = len(scores)
    if embeddings.shape[0] != 2 * n:
        raise GoldenError(f"{embeddings.shape[0]} embeddings for {n} pairs (expected {2 * n})")
    cos = cosine_rows(embeddings[:n], embeddings[n:])
    return float(spearmanr(cos, scores).correlation * 100.0)



def load_model(ckpt: Path):  # -> SentenceTransformer
    import torch
    from sentence_transformers import SentenceTransformer

    if not (ckpt / "modules.json").is_file():
        raise GoldenError(f"{ckpt}: not a sentence-transformers directory (no modules.json)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*clean_up_tokenization_spaces.*")
        model = SentenceTransformer(str(ckpt), device="cpu")
    model.to(torch.float32)
    model.eval()
    return model


def encode(model, sentences: Sequence[str], progress: bool = True) -> np.ndarray:
    emb = model.encode(list(sentences), batch_size=BATCH_SIZE, show_progress_bar=progress, convert_to_numpy=True)
    emb = np.asarray(emb, dtype=np.float32)
    if not np.all(np.isfinite(emb)):
        raise GoldenError("sentence-transformers produced non-finite embeddings")
    return emb


def tokenize(model, sentences: Sequence[str]) -> Tuple[np.ndarray, np.ndarray, int]:
    tok = model.tokenizer
    enc = tok(list(sentences), truncation=True, max_length=model.max_seq_length, add_special_tokens=True)
    ids = enc["input_ids"]
    lengths = np.asarray([len(x) for x in ids], dtype=np.int32)
    pad = int(tok.pad_token_id)
    out = np.full((len(ids), int(lengths.max())), pad, dtype=np.int32)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
    return out, lengths, pad


def _weight_file(ckpt: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (ckpt / name).is_file():
            return ckpt / name
    raise GoldenError(f"{ckpt}: no model.safetensors or pytorch_model.bin")


def _atomic_save(out: Path, write) -> None:
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=str(out.parent))
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def f32_str(x: np.float32) -> str:
    return np.format_float_positional(np.float32(x), unique=True, trim="-") if np.isfinite(x) else "null"


def write_jsonl(out: Path, sentences: Sequence[str], emb: np.ndarray) -> None:
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            for t, v in zip(sentences, emb):
                f.write('{"text":' + json.dumps(t, ensure_ascii=False) + ',"embedding":['
                        + ",".join(f32_str(x) for x in v) + "]}\n")

    _atomic_save(out, w)


def read_jsonl(path: Path) -> Tuple[List[str], np.ndarray]:
    texts: List[str] = []
    rows: List[List[float]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                texts.append(obj["text"])
                rows.append(obj["embedding"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise GoldenError(f"{path}:{lineno}: expected {{\"text\": ..., \"embedding\": [...]}} ({e})") from e
    return texts, np.asarray(rows, dtype=np.float32)


def make_goldens(ckpt: Path, stsb: Path, out: Path, subset: Optional[int] = None, progress: bool = True) -> dict:
    pairs = read_stsb(stsb)
    if subset is not None:
        if not 1 <= subset <= len(pairs):
            raise GoldenError(f"--subset {subset}: must be 1..{len(pairs)}")
        pairs = StsbPairs(pairs.sentence1[:subset], pairs.sentence2[:subset], pairs.scores[:subset])
    model = load_model(ckpt)
    sentences = pairs.sentences
    print(f"[bertlet-goldens] {len(pairs)} pairs -> {len(sentences)} sentences from {stsb}", file=sys.stderr)
    emb = encode(model, sentences, progress)
    rho = stsb_spearman(emb, pairs.scores)
    if out.suffix == ".jsonl":
        write_jsonl(out, sentences, emb)
    elif out.suffix == ".npz":
        ids, lengths, pad = tokenize(model, sentences)
        arrays = dict(
            sentences=np.asarray(sentences, dtype=str), scores=pairs.scores, embeddings=emb, input_ids=ids,
            lengths=lengths, spearman=np.float64(rho), n_pairs=np.int64(len(pairs)),
            max_length=np.int64(model.max_seq_length), pad_id=np.int64(pad), model_name=np.str_(ckpt.resolve().name),
            source_sha256=np.str_(sha256_file(_weight_file(ckpt))), stsb_file=np.str_(stsb.name),
            stsb_sha256=np.str_(sha256_file(stsb)), order=np.str_(ORDER_DOC))

        def w(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

        _atomic_save(out, w)
    else:
        raise GoldenError(f"{out}: output must end in .npz or .jsonl")
    return {"pairs": len(pairs), "sentences": len(sentences), "dim": int(emb.shape[1]), "spearman": rho,
            "out": str(out)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="bertlet-goldens",
        description="Compute sentence-transformers reference embeddings of STS-B sentences (fp32, CPU, batch 64) and "
                    "the STS-B Spearman x100. Output .npz (full golden) or .jsonl (small golden for tests).")
    p.add_argument("checkpoint", type=Path, help="sentence-transformers checkpoint directory")
    p.add_argument("--stsb", type=Path, required=True, help="STS-B split file (e.g. ../shared/data/stsb/sts-test.csv)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npz or .jsonl (written atomically)")
    p.add_argument("--subset", type=int, help="only the first N pairs (for small committed goldens)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        r = make_goldens(args.checkpoint, args.stsb, args.output, args.subset, progress=not args.no_progress)
    except GoldenError as e:
        print(f"bertlet-goldens: error: {e}", file=sys.stderr)
        return 1
    size = Path(r["out"]).stat().st_size
    print(f"wrote {r['out']} ({size / 1e3:.1f} KB): {r['pairs']} pairs, {r['sentences']} sentences, dim {r['dim']}")
    print(f"  HF STS-B Spearman x100: {r['spearman']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
