#!/usr/bin/env bash
# cli_smoke.sh NPID FIXTURE -- the command line end to end on the CPU: bad
# arguments exit 2 with a message naming the option; `npid eval` on a small
# model and the synthetic set writes eval.json (kNN + linear) and a PNG.
set -u
NPID=$1 FIXTURE=$2
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
expect_error() {  # expect_error NEEDLE ARGS...
  local needle=$1; shift
  out=$("$NPID" "$@" 2>&1); rc=$?
  [ $rc -eq 2 ] || fail "npid $* exited $rc, expected 2 ($out)"
  echo "$out" | grep -q -- "$needle" || fail "npid $*: message lacks '$needle': $out"
  echo "ok: npid $* -> $out"
}
expect_error "unknown command" frobnicate
expect_error "unknown option --bogus" eval --bogus 1
expect_error "option --checkpoint is required" eval --data synthetic
expect_error "expects one of auto|cpu|cuda, got 'gpu'" eval --checkpoint x --data synthetic --device gpu
expect_error "expects an integer in \[1, 1024\], got '0'" eval --checkpoint x --data synthetic --k 0
expect_error "expects a value" eval --checkpoint
"$FIXTURE" "$d" 8 || fail "fixture"
out=$("$NPID" eval --checkpoint "$d/model.safetensors" --data /nonexistent_npid 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "not a directory" || fail "bad --data: rc=$rc $out"
echo "ok: bad --data -> $out"
"$NPID" eval --checkpoint "$d/model.safetensors" --data synthetic:400:100 --device cpu --k 20 \
  --linear-iters 50 --retrieval 4 --out "$d/out" || fail "npid eval"
[ -s "$d/out/eval.json" ] || fail "no eval.json"
[ -s "$d/out/retrieval.png" ] || fail "no retrieval.png"
grep -q '"knn_recompute"' "$d/out/eval.json" && grep -q '"test_accuracy"' "$d/out/eval.json" || fail "eval.json lacks results"
echo "ok: npid eval wrote eval.json and retrieval.png"
# A corrupted checkpoint is refused with an error naming it.
head -c 100 "$d/model.safetensors" > "$d/broken.safetensors"
out=$("$NPID" eval --checkpoint "$d/broken.safetensors" --data synthetic:100:20 --device cpu 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "broken.safetensors" || fail "broken checkpoint: rc=$rc $out"
echo "ok: broken checkpoint -> $out"
