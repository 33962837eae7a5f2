"""The example CLIs behave like command-line tools: --help, stdin or arguments, JSON lines, clear errors."""
import json
import math
import platform
import subprocess


def run(args, stdin=""):
    return subprocess.run(args, input=stdin.encode(), capture_output=True, timeout=120)


def test_help_exits_zero(tool):
    for name in ("bertlet-embed", "bertlet-tokenize", "bertlet-similarity"):
        r = run([tool(name), "--help"])
        assert r.returncode == 0
        assert b"usage:" in r.stdout


def test_embed_args_and_stdin_agree(tool, blob_path):
    texts = ["A man is playing a guitar.", "Über café — 東京 🚀"]
    a = run([tool("bertlet-embed"), "--model", str(blob_path), *texts])
    b = run([tool("bertlet-embed"), "--model", str(blob_path)], "\n".join(texts) + "\n")
    c = run([tool("bertlet-embed"), "--model", str(blob_path), "--jsonl"],
            "".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert a.returncode == b.returncode == c.returncode == 0, (a.stderr, b.stderr, c.stderr)
    la, lb, lc = ([json.loads(x) for x in r.stdout.decode().splitlines()] for r in (a, b, c))
    assert len(la) == 2
    for x, y, z in zip(la, lb, lc):
        assert len(x["embedding"]) == 384
        assert x["embedding"] == y["embedding"] == z["embedding"]
        assert abs(math.sqrt(sum(v * v for v in x["embedding"])) - 1.0) < 1e-5  # normalized model


def test_similarity_ranks_paraphrase_above_unrelated(tool, blob_path):
    pairs = "A man is playing a guitar.\tA person plays a guitar.\nA man is playing a guitar.\tA woman is slicing an onion.\n"
    r = run([tool("bertlet-similarity"), "--model", str(blob_path)], pairs)
    assert r.returncode == 0, r.stderr
    cos = [json.loads(x)["cosine"] for x in r.stdout.decode().splitlines()]
    assert len(cos) == 2 and cos[0] > 0.7 and cos[1] < 0.3


def test_tokenize_pair_and_tokens(tool, blob_path):
    r = run([tool("bertlet-tokenize"), "--model", str(blob_path), "--jsonl", "--tokens"],
            json.dumps({"text": "Hello world", "text_pair": "Goodbye"}) + "\n")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tokens"][0] == "[CLS]" and out["tokens"].count("[SEP]") == 2
    assert out["type_ids"] == [0, 0, 0, 0, 1, 1]


def test_errors_are_one_line_with_nonzero_exit(tool, blob_path, tmp_path):
    missing = run([tool("bertlet-embed"), "--model", str(tmp_path / "nope.bertlet"), "x"])
    assert missing.returncode == 1
    assert missing.stderr.decode().count("\n") == 1 and "[bertlet.io." in missing.stderr.decode()
    bad = tmp_path / "bad.bertlet"
    bad.write_bytes(blob_path.read_bytes()[:1000])
    trunc = run([tool("bertlet-embed"), "--model", str(bad), "x"])
    assert trunc.returncode == 1 and "[bertlet.blob." in trunc.stderr.decode()
    usage = run([tool("bertlet-embed"), "--bogus"])
    assert usage.returncode == 2
    badjson = run([tool("bertlet-embed"), "--model", str(blob_path), "--jsonl"], '{"text": "unterminated}\n')
    assert badjson.returncode == 1 and "line 1" in badjson.stderr.decode()
    nopair = run([tool("bertlet-similarity"), "--model", str(blob_path)], "no tab here\n")
    assert nopair.returncode == 1 and "line 1" in nopair.stderr.decode()


def test_threads_and_arch_flags(tool, blob_path):
    base = run([tool("bertlet-embed"), "--model", str(blob_path), "A man is playing a guitar."])
    two = run([tool("bertlet-embed"), "--model", str(blob_path), "--threads", "2", "--arch", "scalar",
               "A man is playing a guitar."])
    assert base.returncode == 0 and two.returncode == 0, two.stderr
    a, b = json.loads(base.stdout)["embedding"], json.loads(two.stdout)["embedding"]
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    assert run([tool("bertlet-embed"), "--model", str(blob_path), "--arch", "bogus", "x"]).returncode == 2
    assert run([tool("bertlet-embed"), "--model", str(blob_path), "--threads", "0", "x"]).returncode == 2
    if platform.machine() in ("x86_64", "AMD64"):  # a path this CPU lacks is a typed error, not a crash
        neon = run([tool("bertlet-embed"), "--model", str(blob_path), "--arch", "neon", "x"])
        assert neon.returncode == 1 and "[bertlet.input.400]" in neon.stderr.decode()
