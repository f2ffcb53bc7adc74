#!/usr/bin/env bash
# train_e2e.sh NPID -- the README's main job end to end on the CPU backend:
# `npid train` with the built-in synthetic default must make the loss fall and
# reach a kNN accuracy far above chance (10 classes: 10 %), write the run
# folder, and resume for one more epoch; CLI mistakes exit 2.
set -u
NPID=$1
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
fail() { echo "FAILED: $*"; exit 1; }
"$NPID" train --device cpu --run "$d/run" --quiet || fail "npid train"
for f in config.json metrics.jsonl loss.svg knn.svg final.json retrieval.png checkpoint.safetensors model.safetensors; do
  [ -s "$d/run/$f" ] || fail "missing $f"
done
python3 - "$d/run" <<'PY' || exit 1
import json, sys
run = sys.argv[1]
m = [json.loads(l) for l in open(run + "/metrics.jsonl")]
f = json.load(open(run + "/final.json"))
first, last = m[0]["loss"], m[-1]["loss"]
knn = f["knn_recompute"]["top1"]
print(f"epochs {len(m)}: loss {first:.3f} -> {last:.3f}; final kNN top-1 {knn:.3f} "
      f"(bank {f['knn_bank']['top1']:.3f}), linear {f['linear']['test_accuracy']:.3f}")
ok = last < 0.8 * first and knn >= 0.35 and f["knn_bank"]["top1"] >= 0.3
print("ok" if ok else "FAILED: the loss must fall by 20 % and kNN top-1 reach 35 % (chance: 10 %)")
sys.exit(0 if ok else 1)
PY
"$NPID" train --resume "$d/run" --epochs 26 --quiet || fail "resume"
[ "$(wc -l < "$d/run/metrics.jsonl")" -eq 26 ] || fail "resume did not add epoch 26"
# A finished run has nothing to resume: said, not evaluated all over again.
before=$(cksum < "$d/run/final.json")
out=$("$NPID" train --resume "$d/run" 2>&1) && echo "$out" | grep -q "is complete (26 of 26 epochs)" ||
  fail "resume of a finished run: $out"
[ "$(cksum < "$d/run/final.json")" = "$before" ] || fail "resume of a finished run rewrote final.json"
# What a checkpoint allows is checked before any data is read (status 2).
out=$("$NPID" train --resume "$d/run" --epochs 5 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "expected at least the 26 epochs" || fail "resume with fewer epochs: rc=$rc $out"
"$NPID" train --device cpu --data synthetic:300:100 --width 4 --image-size 8 --epochs 1 --steps-per-epoch 1 --cosine \
  --knn-every 0 --no-final-eval --quiet --run "$d/cos" > /dev/null || fail "cosine run"
out=$("$NPID" train --resume "$d/cos" --epochs 3 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "uses the cosine schedule" || fail "cosine resume with more epochs: rc=$rc $out"
out=$("$NPID" train --resume "$d/cos" 2>&1) && echo "$out" | grep -q "complete (1 of 1 epochs) (a cosine run cannot be extended)" ||
  fail "finished cosine run: $out"
# Two runs started together without --run get a folder each; a relative
# --data is stored absolute, so the run resumes from anywhere.
mkdir -p "$d/cwd/imgs"
(cd "$d/cwd" && for i in 1 2; do
  "$NPID" train --device cpu --data synthetic:300:100 --width 4 --image-size 8 --epochs 1 --steps-per-epoch 1 \
    --knn-every 0 --no-final-eval --quiet --seed $i > /dev/null 2>&1 &
done; wait)
[ "$(ls "$d/cwd/runs" | wc -l)" -eq 2 ] && [ "$(ls "$d"/cwd/runs/*/checkpoint.safetensors | wc -l)" -eq 2 ] ||
  fail "two runs without --run: $(ls -R "$d/cwd/runs")"
python3 - "$d/cwd/imgs" <<'PY' || fail "writing a PNG folder"
import os, struct, sys, zlib
def png(w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
for c, base in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
    os.makedirs(os.path.join(sys.argv[1], c))
    for i in range(20):
        open(os.path.join(sys.argv[1], c, f"{i:02d}.png"), "wb").write(png(12, 12, (base[0], 7 * i, base[2])))
PY
(cd "$d/cwd" && "$NPID" train --device cpu --data imgs --batch 8 --width 4 --image-size 8 --epochs 1 \
  --criterion softmax --knn-every 0 --no-final-eval --quiet --run rel > /dev/null) || fail "train on a relative --data"
grep -q "\"data\": \"$d/cwd/imgs\"" "$d/cwd/rel/config.json" || fail "relative --data not stored absolute: $(cat "$d/cwd/rel/config.json")"
# (a run-time option such as --cudnn-autotune may come with --resume)
(cd / && "$NPID" train --resume "$d/cwd/rel" --epochs 2 --cudnn-autotune --quiet > /dev/null) ||
  fail "resume from another folder"
out=$("$NPID" train --resume "$d/run" --lr 0.1 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "cannot be combined with --resume" || fail "resume + --lr: rc=$rc $out"
out=$("$NPID" train --device cpu --run "$d/run" 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "already holds a run.s checkpoint" || fail "new run into an old folder: rc=$rc $out"
out=$("$NPID" train --batch 1 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "option --batch expects an integer in \[2, 65535\], got '1'" || fail "--batch 1: rc=$rc $out"
out=$("$NPID" train --criterion ce 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "expects one of nce|softmax, got 'ce'" || fail "--criterion ce: rc=$rc $out"
out=$("$NPID" train --resume "$d/run" --z-policy ema 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "option --z-policy cannot be combined with --resume" || fail "resume + --z-policy: rc=$rc $out"
out=$("$NPID" train --z-policy fixed 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "\-\-z-policy fixed without --z-fixed" || fail "--z-policy fixed alone: rc=$rc $out"
out=$("$NPID" train --z-ema-decay 0.5 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "needs --z-policy ema, got --z-policy first_batch" || fail "--z-ema-decay alone: rc=$rc $out"
# NCE with a fixed Z trains (two steps) and the run stores the policy and its Z.
"$NPID" train --device cpu --run "$d/fixed" --criterion nce --z-policy fixed --z-fixed 3000 --epochs 1 \
  --steps-per-epoch 2 --knn-every 0 --no-final-eval --quiet --tau 0.25 --cudnn-autotune --cudnn-nondeterministic ||
  fail "train with a fixed Z"
python3 - "$d/fixed/config.json" <<'PY' || fail "fixed Z (or the cuDNN engine options) not stored"
import json, sys
s = json.load(open(sys.argv[1]))["step"]
assert s["z_policy"] == "fixed" and s["z_fixed"] == 3000, s
assert s["model"]["autotune_convolutions"] is True and s["model"]["deterministic_convolutions"] is False, s["model"]
PY
# --no-final-eval still leaves the trained model (with the run's configuration).
[ -s "$d/fixed/model.safetensors" ] && [ ! -e "$d/fixed/final.json" ] || fail "--no-final-eval: model.safetensors missing"
# npid eval on the run's model file alone: data, kNN k and tau come from the
# run; results go to eval/ beside it (the run's retrieval.png is kept).
before=$(cksum < "$d/run/retrieval.png")
out=$("$NPID" eval --checkpoint "$d/run/model.safetensors" --device cpu --linear none --limit-test 100 2>&1) ||
  fail "eval with the run's defaults: $out"
echo "$out" | grep -q "16x16 (2000 train, 500 test)" && echo "$out" | grep -q "kNN k 50 sigma 0.1" ||
  fail "eval defaults from the run: $out"
[ -s "$d/run/eval/eval.json" ] && [ -s "$d/run/eval/retrieval.png" ] || fail "eval did not write to RUN/eval/"
[ "$(cksum < "$d/run/retrieval.png")" = "$before" ] || fail "eval overwrote the run's retrieval.png"
python3 - "$d/run/eval/eval.json" "$d/run/final.json" <<'PY' || fail "k and sigma not recorded"
import json, sys
for p in sys.argv[1:]:
    k = json.load(open(p))["knn"]
    assert k["k"] == 50 and abs(k["sigma"] - 0.1) < 1e-7, (p, k)
PY
# The run's model file and its checkpoint load strictly into PyTorch (when a
# python3 has torch; the checkpoint's bank and optimizer state set aside).
TP=$(dirname "$0")/../../tools
for f in model.safetensors checkpoint.safetensors; do
  out=$("$TP/torch_python.sh" "$TP/load_npid_model.py" "$d/run/$f" 2>&1); rc=$?
  [ $rc -eq 77 ] && { echo "skipped: PyTorch loading ($out)"; break; }
  [ $rc -eq 0 ] && echo "$out" | grep -q "loads strictly into ResNet18Embedding(width=16)" || fail "PyTorch load of $f: $out"
done
# The paper comparison: the synthetic CPU run is refused as a reproduction
# (with the reasons) but gets its table, with final.json's figures; a run
# without a final evaluation is an error.
PT=$(dirname "$0")/../../tools/paper_table.py
out=$(python3 "$PT" "$d/run" --json "$d/pt.json") || fail "paper_table: $out"
echo "$out" | grep -q "Not comparable" && echo "$out" | grep -q "data: synthetic" &&
  echo "$out" | grep -q "width: 16 (paper: 64)" || fail "paper_table verdict: $out"
[ -s "$d/run/paper_comparison.md" ] || fail "paper_table wrote no paper_comparison.md"
python3 - "$d/run/final.json" "$d/pt.json" <<'PY' || fail "paper_table figures"
import json, sys
f, t = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert not t["comparable"] and t["criterion"] == "softmax", t
assert abs(t["rows"][0]["ours"] - 100 * f["knn_recompute"]["top1"]) < 0.01, t
assert abs(t["rows"][0]["paper"] - 80.8) < 1e-9 and abs(t["rows"][1]["paper"] - 75.4) < 1e-9, t
assert "(recomputed features, paper k = 200, this run k = 50)" in t["rows"][0]["metric"], t["rows"][0]
PY
python3 "$PT" --help | grep -q "paper_table.py RUN \[--json OUT\]" || fail "paper_table --help"
out=$(python3 "$PT" "$d/fixed" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "final.json: missing" || fail "paper_table without final.json: rc=$rc $out"
# ... but with an `npid eval` of it in eval/, that evaluation is used (its k checked).
"$NPID" eval --checkpoint "$d/fixed/model.safetensors" --device cpu --k 20 --linear hinge --linear-iters 20 \
  --retrieval 0 --limit-train 400 --limit-test 100 > /dev/null || fail "npid eval of the fixed-Z run"
out=$(python3 "$PT" "$d/fixed" 2>&1) && echo "$out" | grep -q "Evaluation: eval/eval.json" &&
  echo "$out" | grep -q "kNN k: 20 (paper: 200)" && echo "$out" | grep -q "train images: 400 (paper: 50000)" ||
  fail "paper_table on eval/eval.json: $out"
# npid eval on a training checkpoint: kNN sigma is the run's tau (0.25 here);
# its memory bank serves only the training set it was trained on.
out=$("$NPID" eval --checkpoint "$d/fixed/checkpoint.safetensors" --data synthetic:2000:500 --device cpu --knn bank \
  --linear none --retrieval 0 --limit-test 50 --out "$d/eval_fixed" 2>&1) || fail "eval on the checkpoint: $out"
echo "$out" | grep -q "sigma 0.25" && echo "$out" | grep -q "kNN (memory bank)" || fail "eval sigma/bank: $out"
out=$("$NPID" eval --checkpoint "$d/fixed/checkpoint.safetensors" --data synthetic:300:100 --device cpu --knn bank 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "has 2000 rows, the train split of --data synthetic:300:100 300 images" ||
  fail "eval with another data set's bank: rc=$rc $out"
echo "ok: npid train end to end"
