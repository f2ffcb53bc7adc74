#!/usr/bin/env bash
# device_check.sh -- everything that awaits a GPU, in one command.
#
# Runs on the GPU machine from the repository root, with the prebuilt bundle
# from tools/prepare_device_bundle.sh in .carry/ (or binaries in $NPID_BIN_DIR):
#   1. device facts (nvidia-smi)
#   2. CPU tests and GPU tests (every CUDA op against its CPU reference)
#   3. compute-sanitizer memcheck (and racecheck on a small case) on the GPU tests
#   4. bench_nce_kernel (Google Benchmark JSON)
#   5. the example training run on CUDA
#   6. tools/side_by_side.sh, when it exists (PyTorch baselines)
# Writes to $OUT (or $1): summary.md, device_check.json, bench_nce.json,
# side_by_side.{md,json} and logs.txt (every step's output, in order).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-device_check_out}}
mkdir -p "$OUT"
BIN=${NPID_BIN_DIR:-.carry/bin}
LIB=${NPID_LIB_DIR:-.carry/lib}
COMMIT=$(cat .carry/commit 2>/dev/null | tr '\n' ' ' || true)
[ -n "$COMMIT" ] || COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# CUDA libraries: the toolkit's, or those inside PyTorch's Python packages.
libdirs="$LIB"
for name in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libcudnn_graph.so.9; do
  d=$(find /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/lib/python3*/ /usr/local/lib/python3*/ /opt \
        -name "$name" 2>/dev/null | head -n1 | xargs -r dirname)
  [ -n "$d" ] && case ":$libdirs:" in *":$d:"*) ;; *) libdirs="$libdirs:$d" ;; esac
done
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PATH:/usr/local/cuda/bin"

declare -A STATUS SECONDS_TAKEN
step() {  # step NAME TIMEOUT LOGFILE CMD...
  local name=$1 limit=$2 log=$3; shift 3
  local t0=$(date +%s)
  echo "== $name: $*" | tee -a "$OUT/$log"
  timeout "$limit" "$@" >>"$OUT/$log" 2>&1
  local rc=$?
  SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
  case $rc in
    0) STATUS[$name]=pass ;;
    77) STATUS[$name]=skipped ;;
    124) STATUS[$name]="timeout(${limit}s)" ;;
    *) STATUS[$name]="fail(rc=$rc)" ;;
  esac
  echo "== $name: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s" | tee -a "$OUT/$log"
}

{
  echo "commit: $COMMIT"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$BIN/npid_gpu_tests" 2>&1 | grep -E 'not found|npid|cudart|cublas|cudnn|benchmark'
} > "$OUT/logs.txt"
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)

step cpu_tests 300 logs.txt "$BIN/npid_tests" --durations no
step gpu_tests 300 logs.txt "$BIN/npid_gpu_tests" --durations yes
if command -v compute-sanitizer >/dev/null; then
  step memcheck 420 logs.txt compute-sanitizer --tool memcheck --error-exitcode 1 \
       "$BIN/npid_gpu_tests"
  step racecheck 180 logs.txt compute-sanitizer --tool racecheck --error-exitcode 1 \
       "$BIN/npid_gpu_tests" "sync_after_launch contexts run the same ops"
else
  STATUS[memcheck]="not available"; STATUS[racecheck]="not available"
fi
step bench_nce 300 logs.txt "$BIN/bench_nce_kernel" \
     --benchmark_out="$OUT/bench_nce.json" --benchmark_out_format=json
step example_cuda 120 logs.txt "$BIN/nce_training" --device cuda --steps 300
if [ -x tools/side_by_side.sh ]; then
  # Real CIFAR-10 for the training pair when the bundle carries it.
  if [ -f .carry/data/cifar10-jpeg.tar.gz ] && [ ! -d /tmp/npid_cifar/train ]; then
    mkdir -p /tmp/npid_cifar && tar -xzf .carry/data/cifar10-jpeg.tar.gz -C /tmp/npid_cifar
  fi
  [ -d /tmp/npid_cifar/train ] && export SBS_ARGS="${SBS_ARGS:-} --data /tmp/npid_cifar/train"
  step side_by_side 420 logs.txt tools/side_by_side.sh "$OUT"
fi

# Summary (markdown + JSON) from the statuses and the benchmark JSON.
python3 - "$OUT" "$DEVICE" "$COMMIT" <<PY
import json, os, sys
out, device, commit = sys.argv[1:4]
status = {$(for k in "${!STATUS[@]}"; do printf '"%s": ["%s", %s], ' "$k" "${STATUS[$k]}" "${SECONDS_TAKEN[$k]:-0}"; done)}
bench = []
path = os.path.join(out, "bench_nce.json")
if os.path.exists(path):
    data = json.load(open(path))
    for b in data.get("benchmarks", []):
        if b.get("error_occurred"):
            continue
        bench.append({k: b.get(k) for k in ("name", "real_time", "time_unit", "gather_GBps", "frac_copy_bw", "copy_GBps")})
lines = [f"# device_check: {device}", "", f"commit: {commit}", "", "| step | status | seconds |", "|---|---|---|"]
for k, (s, t) in sorted(status.items()):
    lines.append(f"| {k} | {s} | {t} |")
if bench:
    lines += ["", "## bench_nce_kernel (D = 128; time per call)", "",
              "| benchmark | time | gathered GB/s | fraction of copy bandwidth |", "|---|---|---|---|"]
    for b in bench:
        g = b.get("gather_GBps"); f = b.get("frac_copy_bw")
        lines.append(f"| {b['name']} | {b['real_time']:.1f} {b['time_unit']} | "
                     f"{'' if g is None else f'{g:.0f}'} | {'' if f is None else f'{f:.2f}'} |")
sbs = os.path.join(out, "side_by_side.md")
if os.path.exists(sbs):
    lines += ["", open(sbs).read()]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
json.dump({"device": device, "commit": commit, "steps": status, "bench_nce": bench},
          open(os.path.join(out, "device_check.json"), "w"), indent=1)
print("\n".join(lines))
PY
