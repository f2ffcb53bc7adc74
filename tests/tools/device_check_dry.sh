#!/usr/bin/env bash
# device_check_dry.sh NPID_GPU_TESTS NPID_TESTS BENCH_DATA NPID_OP -- the
# device check's plumbing on a machine without a GPU, so that CI catches what
# would otherwise first fail in a rare GPU lease: tools/device_check.sh runs
# chosen steps from a bin folder of this build (the GPU tests report skipped,
# bench_data runs its CPU rows), writes its summary and JSON, and
# tools/device_summary.py reads a benchmark file cut short mid-entry. A second
# run, as on a Firecracker machine, drives stub ncu / compute-sanitizer (their
# command lines checked) and the side by side's kNN pair on the CPU, whose
# binary must get the bundle's LD_LIBRARY_PATH while PyTorch keeps its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/npid_device_dry.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/out" "$work/out2"
ln -s "$1" "$work/bin/npid_gpu_tests"
ln -s "$2" "$work/bin/npid_tests"
ln -s "$3" "$work/bin/bench_data"
npid_op=$4

# As on a gVisor machine (kernel 4.4.0): ncu and the sanitizers are reported
# as not available there, not run.
NPID_KERNEL_RELEASE=4.4.0 NPID_BIN_DIR="$work/bin" NPID_LIB_DIR="$work/bin" NPID_DEVICE_STEPS=gpu_other,bench_data \
  NPID_DEVICE_BUDGET_S=120 bash "$root/tools/device_check.sh" "$work/out" > "$work/log" 2>&1 || {
  cat "$work/log"; echo "FAIL: device_check.sh exited non-zero"; exit 1; }

fail() { echo "FAIL: $*"; cat "$work/out/summary.md" 2>/dev/null; exit 1; }
s="$work/out/summary.md"
[ -f "$s" ] || fail "no summary.md"
grep -q '^| gpu_other | skipped |' "$s" || fail "gpu_other should be skipped without a GPU"
grep -q '^| bench_data | pass |' "$s" || fail "bench_data should pass"
grep -q '^| gpu_criteria | not selected |' "$s" || fail "unselected steps should say so"
for n in ncu_nce racecheck memcheck memcheck_resnet; do
  grep -q "^| $n | not available (gVisor) |" "$s" || fail "$n should be not available on gVisor"
done
python3 - "$work/out/device_check.json" "$work/full.json" <<'PY' || fail "device_check.json"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["steps"]["bench_data"][0] == "pass", d["steps"]
assert len(d["bench_data"]) >= 2, "bench_data's CPU rows were not recorded"
# Their JSON as Google Benchmark writes it (entries indented by 4).
open(sys.argv[2], "w").write(json.dumps({"context": {}, "benchmarks": d["bench_data"]}, indent=2))
PY

# A benchmark file cut inside its last entry still yields the entries before it.
python3 - "$work/full.json" "$work/cut.json" <<'PY'
import sys
text = open(sys.argv[1]).read()
last = text.rfind('"name"')  # inside the last entry
open(sys.argv[2], "w").write(text[:last + 3])
PY
python3 "$root/tools/device_summary.py" "$work/out2" --data-json "$work/cut.json" --quiet || fail "device_summary.py on a cut file"
n_full=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['benchmarks']))" "$work/full.json")
n_cut=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['bench_data']))" "$work/out2/device_check.json")
[ "$n_cut" -eq $((n_full - 1)) ] || fail "cut file: expected $((n_full - 1)) entries back, got $n_cut"

# The bf16 variants table: each BM_NceLayout_bf16 / BM_NceSplits_bf16 row
# against the fp32 default at its shape, from the same file.
mkdir -p "$work/out4"
python3 - "$work/out4/bench_nce.json" <<'PY'
import json, sys
# The last field is the layout counter: the code of the kernel that ran.
rows = [("BM_NceForwardBackward/B:256/K:4096/N:1281167/min_time:0.200/manual_time", 150.0, 162),
        ("BM_NceLayout_bf16/B:256/K:4096/N:1281167/lanes:32/stages:2/ring:2/min_time:0.100/manual_time", 75.0, 2322),
        ("BM_NceLayout_bf16/B:256/K:4096/N:1281167/lanes:32/stages:4/ring:2/min_time:0.100/manual_time", 90.0, 1084),
        ("BM_NceSplits_bf16/B:128/K:4096/N:1281167/splits:8/lanes:0/stages:0/ring:0/min_time:0.100/manual_time", 50.0,
         1084)]
json.dump({"context": {}, "benchmarks": [{"name": n, "real_time": t, "time_unit": "us", "layout": c}
                                         for n, t, c in rows]}, open(sys.argv[1], "w"))
PY
python3 "$root/tools/device_summary.py" "$work/out4" --quiet || fail "device_summary.py on NCE rows"
grep -q '^| B:256/K:4096/N:1281167 | lanes:32/stages:2/ring:2 | 75.0 us | 150.0 us | 2.00x |' "$work/out4/summary.md" ||
  { cat "$work/out4/summary.md"; fail "no bf16 variant row against the fp32 default"; }
# A variant whose override fell back to the default is marked as such.
grep -q '^| B:256/K:4096/N:1281167 | lanes:32/stages:4/ring:2 (fell back to 1084) | 90.0 us |' "$work/out4/summary.md" ||
  { cat "$work/out4/summary.md"; fail "a fallback was reported as the variant it named"; }
grep -q 'splits:8' "$work/out4/summary.md" && ! grep -q '| splits:8/lanes:0/stages:0/ring:0 |' "$work/out4/summary.md" ||
  { cat "$work/out4/summary.md"; fail "a variant without its fp32 default at the shape (B 128) was compared"; }

# Firecracker-like: stubs for the profilers, which check their arguments.
mkdir -p "$work/stub" "$work/out3"
cat > "$work/stub/ncu" <<'SH'
#!/usr/bin/env bash
# ncu stub: the locked clocks would skew the profile against the benchmarks.
[[ " $* " == *" --clock-control none "* ]] || { echo "ncu called without --clock-control none: $*"; exit 1; }
echo "  GPU Speed Of Light Throughput (stub)"
SH
cat > "$work/stub/compute-sanitizer" <<'SH'
#!/usr/bin/env bash
# compute-sanitizer stub: drops --tool T --error-exitcode N and runs the program.
[ "$1" = --tool ] && [ "$3" = --error-exitcode ] || { echo "unexpected sanitizer call: $*"; exit 1; }
shift 4
exec "$@"
SH
cat > "$work/stub/npid_op" <<SH
#!/usr/bin/env bash
echo "\$LD_LIBRARY_PATH" >> "$work/op_env"
exec "$npid_op" "\$@"
SH
chmod +x "$work/stub/ncu" "$work/stub/compute-sanitizer" "$work/stub/npid_op"
PATH="$work/stub:$PATH" LD_LIBRARY_PATH=/npid_dry_orig NPID_KERNEL_RELEASE=6.1.0 NPID_BIN_DIR="$work/bin" \
  NPID_LIB_DIR="$work/bin" NPID_DEVICE_STEPS=ncu_nce,racecheck,side_by_side NPID_DEVICE_BUDGET_S=240 \
  NPID_OP="$work/stub/npid_op" SBS_ARGS="--small --device cpu --pairs knn --iters 2 --warmup 1" \
  bash "$root/tools/device_check.sh" "$work/out3" > "$work/log3" 2>&1 || {
  cat "$work/log3"; echo "FAIL: device_check.sh (Firecracker-like) exited non-zero"; exit 1; }
s3="$work/out3/summary.md"
grep -q '^| ncu_nce | pass |' "$s3" || { cat "$work/out3/logs.txt"; fail "ncu_nce should pass with the stub"; }
grep -q '^| racecheck | skipped |' "$s3" || { cat "$work/out3/logs.txt"; fail "racecheck should run (GPU tests skipped)"; }
if grep -q '^| side_by_side | pass |' "$s3"; then
  grep -q "$work/bin" "$work/op_env" || fail "npid_op did not get the bundle's libraries: $(cat "$work/op_env")"
  sbs=pass
elif grep -q '^| side_by_side | skipped |' "$s3"; then
  sbs="skipped (no torch)"
else
  cat "$work/out3/logs.txt"; fail "side_by_side failed"
fi
echo "device_check dry run: OK ($n_full bench_data rows, $n_cut recovered from the cut file; Firecracker-like run: ncu, racecheck, side by side $sbs)"
