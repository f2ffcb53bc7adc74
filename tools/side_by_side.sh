#!/usr/bin/env bash
# side_by_side.sh [OUT] -- libnpid_cuda against the PyTorch baselines, same
# device, same run: equivalence first, then timings. Writes side_by_side.md and
# side_by_side.json to OUT (default $OUT or ./side_by_side_out).
#   SBS_ARGS="--small --device cpu"   CPU-sized run (what CI does)
#   NPID_OP=path                       our side's binary (default: build/bench, else .carry/bin)
#   NPID_OP_LD_LIBRARY_PATH=dirs       LD_LIBRARY_PATH for our binary only (PyTorch keeps its own)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-side_by_side_out}}
mkdir -p "$OUT"
NPID_OP=${NPID_OP:-}
# A local build first; on the GPU machine only the carried bundle exists.
for cand in build/bench/npid_op "${NPID_BIN_DIR:-.carry/bin}/npid_op"; do
  [ -z "$NPID_OP" ] && [ -x "$cand" ] && NPID_OP=$cand
done
[ -n "$NPID_OP" ] || { echo "side_by_side: npid_op not built" >&2; exit 1; }
# A python3 that imports torch and numpy. Only a missing module is a skip; a
# torch that is there but fails to import (a library clash, a broken wheel) is
# a failure, with its error shown.
PY=""
BROKEN=""
for cand in python3 /usr/bin/python3; do
  command -v "$cand" >/dev/null || continue
  if err=$("$cand" -c "import torch, numpy" 2>&1); then PY=$cand; break; fi
  case $err in
    *"No module named 'torch'"*|*"No module named 'numpy'"*) ;;
    *) BROKEN="$BROKEN
$cand: $err" ;;
  esac
done
if [ -z "$PY" ] && [ -n "$BROKEN" ]; then
  echo "side_by_side: torch is installed but does not import:$BROKEN" >&2
  exit 1
fi
if [ -z "$PY" ]; then
  echo "SKIPPED: no python3 with torch and numpy (Debian: apt-get install python3-torch)"
  exit 77
fi
if [ -z "${NPID_COMMIT:-}" ]; then
  if [ -f .carry/commit ] && [ "$NPID_OP" != build/bench/npid_op ]; then
    NPID_COMMIT=$(tr '\n' ' ' < .carry/commit)
  else
    NPID_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  fi
fi
export NPID_COMMIT
exec "$PY" bench/torch/side_by_side.py --npid-op "$NPID_OP" --out "$OUT" ${SBS_ARGS:-}
