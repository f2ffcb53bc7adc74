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
# An unknown option is named as unknown, not as one that needs a value.
expect_error "unknown option --bogus (see --help)" train --bogus
expect_error "unknown option --bogus (see --help)" eval --checkpoint x --bogus
# A configuration that cannot train is refused before any data is read.
out=$("$NPID" train --device cpu --data /nonexistent_npid --softmax-math bf16 --criterion softmax 2>&1); rc=$?
[ $rc -eq 2 ] && echo "$out" | grep -q "config.softmax_math" || fail "bf16 GEMMs with an fp32 bank: rc=$rc $out"
expect_error "option --epochs expects a value, got the option --data" train --epochs --data synthetic:400:100
expect_error "options --cosine and --lr-steps exclude each other" train --cosine --lr-steps 5
expect_error "option --run expects a folder, got ''" train --run=
# --help wins over anything else on the line.
"$NPID" train --bogus --help | grep -q "usage: npid train" || fail "--help after a bad option"
"$NPID" eval --help --checkpoint | grep -q "usage: npid eval" || fail "--help before a missing value"
# A failed start leaves no empty run folder behind.
(cd "$d" && "$NPID" train --device cpu --data /nonexistent_npid > /dev/null 2>&1)
[ ! -e "$d/runs" ] || fail "a failed start left $(ls -R "$d/runs")"
expect_error "option --batch 512: expected at most the 300 training images" train --device cpu --data synthetic:300:100 --batch 512
if "$NPID" version | grep -q "no CUDA device"; then
  expect_error "option --device cuda: " train --device cuda --data /nonexistent_npid
fi
expect_error "option --quiet takes no value, got '--quiet=0'" train --quiet=0
expect_error "expects an integer in \[0, 9223372036854775807\], got '99999999999999999999'" train --seed 99999999999999999999
expect_error "synthetic\[:TRAIN\[:TEST\]\] with counts in \[10, 10000000\], got 'synthetic:100abc'" train --data synthetic:100abc
expect_error "with counts in" train --data synthetic:18014398509481984
expect_error "with counts in" train --data synthetic:100:200:300
expect_error "expected at most 64 GiB of synthetic pixels" train --data synthetic:10000000:10000 --image-size 1024
# train/ and test/ image folders must name the same classes (each numbers its
# sorted class directories): refused before any image is decoded.
/usr/bin/env python3 - "$d/folders" <<'PY' || fail "writing PNG folders"
import os, struct, sys, zlib
def png(w, h, rgb):
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    chunk = lambda t, b: struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
root = sys.argv[1]
for split, classes in (("train", ("cat", "dog", "emu")), ("test", ("cat", "emu"))):
    for c in classes:
        os.makedirs(os.path.join(root, split, c))
        for i in range(3):
            open(os.path.join(root, split, c, f"{i}.png"), "wb").write(png(32, 32, (40 * i, 90, 200)))
PY
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
expect_error "expected train/ and test/ to hold the same class directories (their sorted names are the labels), got 'dog' only in train/" \
  eval --checkpoint "$d/model.safetensors" --data "$d/folders" --device cpu
mkdir -p "$d/folders/test/dog" && cp "$d/folders/train/dog/0.png" "$d/folders/test/dog/" || fail "test/dog"
"$NPID" eval --checkpoint "$d/model.safetensors" --data "$d/folders" --device cpu --k 3 --linear none --retrieval 0 \
  --knn recompute --out "$d/out_folders" >/dev/null || fail "eval on matching folders"
grep -q '"classes": 3' "$d/out_folders/eval.json" || fail "eval on matching folders: not 3 classes"
# A model file has no memory bank: asked for explicitly, that is an error.
# A folder or a file that is not safetensors is named as such.
out=$("$NPID" eval --checkpoint "$d" 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "is a directory, not a safetensors file" || fail "eval on a folder: rc=$rc $out"
out=$("$NPID" eval --checkpoint "$0" --data synthetic 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "not a safetensors file: header length" || fail "eval on a script: rc=$rc $out"
# A bare model file stores no run configuration: --data is required.
expect_error "option --data is required: .*stores no training configuration" eval --checkpoint "$d/model.safetensors"
expect_error "option --knn bank: .*holds no memory bank" eval --checkpoint "$d/model.safetensors" \
  --data synthetic:100:20 --device cpu --knn bank
# A corrupted checkpoint is refused with an error naming it.
head -c 100 "$d/model.safetensors" > "$d/broken.safetensors"
out=$("$NPID" eval --checkpoint "$d/broken.safetensors" --data synthetic:100:20 --device cpu 2>&1); rc=$?
[ $rc -eq 1 ] && echo "$out" | grep -q "broken.safetensors" || fail "broken checkpoint: rc=$rc $out"
echo "ok: broken checkpoint -> $out"
