#!/usr/bin/env bash
# Set-up, build, and the main job on the default model: embed sentences and score their similarity.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/build.sh build >/dev/null 2>&1 || bash scripts/build.sh build
MODEL="$ROOT/models/all-MiniLM-L6-v2.bertlet"
echo "== bertlet-embed (384 floats per line; cut to 110 characters here)"
build/examples/bertlet-embed --model "$MODEL" --verify "A man is playing a guitar." "A woman is slicing an onion." \
  | cut -c1-110
echo "== bertlet-similarity (STS-B style pairs)"
printf '%s\t%s\n' \
  "A man is playing a guitar." "A person plays a guitar." \
  "A man is playing a guitar." "A woman is slicing an onion." \
  "The cat sits on the mat." "A cat is sitting on a rug." \
  | tee /dev/stderr | build/examples/bertlet-similarity --model "$MODEL"
echo "== bertlet-tokenize"
build/examples/bertlet-tokenize --model "$MODEL" --tokens "Héllo, wörld! 東京 unbelievably"
