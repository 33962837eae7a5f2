#!/usr/bin/env bash
# A/B timing of two bertlet-latency binaries (e.g. before / after a kernel change) on one cell, in alternating fresh
# processes, so slow drifts of a shared host hit both alike. Prints each round and the medians and ratio A/B.
#   bash bench/ab.sh BIN_A BIN_B [--model FILE] [--seq N] [--batch N] [--rounds N] [-- extra bertlet-latency args]
# Typical use:
#   git stash; cmake --build build --target bertlet-latency; cp build/bench/bertlet-latency /tmp/lat_base
#   git stash pop; cmake --build build --target bertlet-latency
#   bash bench/ab.sh build/bench/bertlet-latency /tmp/lat_base --seq 128 --rounds 7
# BERTLET_FORCE_ARCH=avx2 (etc.) in the environment times another kernel path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
A="$1"; B="$2"; shift 2
MODEL="$ROOT/models/all-MiniLM-L6-v2.bertlet"; SEQ=128; BATCH=1; ROUNDS=7; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --seq) SEQ="$2"; shift 2 ;;
    --batch) BATCH="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "bench/ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
median_ms() { "$1" --model "$MODEL" --seq "$SEQ" --batch "$BATCH" --min-time 1 "${EXTRA[@]}" |
  sed -n 's/.*"median_ms":\([0-9.e+-]*\).*/\1/p'; }
for _ in $(seq "$ROUNDS"); do
  echo "$(median_ms "$A") $(median_ms "$B")"
done | python3 -c '
import statistics as st, sys
r = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
for a, b in r: print(f"A {a:.3f} ms  B {b:.3f} ms  A/B {a / b:.4f}")
print(f"median A {st.median(a for a, _ in r):.3f} ms, B {st.median(b for _, b in r):.3f} ms, "
      f"median ratio A/B {st.median(a / b for a, b in r):.4f} over {len(r)} rounds")'
