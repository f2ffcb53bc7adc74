#!/usr/bin/env bash
# device_check.sh -- everything that awaits a GPU, in one command.
#
# Runs on the GPU machine from the repository root, with the prebuilt bundle
# from tools/prepare_device_bundle.sh in .carry/ (or binaries in $NPID_BIN_DIR):
#   1. device facts (nvidia-smi)
#   2. the GPU tests (every CUDA op against its CPU reference), one process per
#      group of tags (gpu_criteria, gpu_resnet, gpu_data, gpu_eval, gpu_train,
#      gpu_other); the cuDNN device profile they record
#   3. bench_nce_kernel, bench_softmax_criterion, bench_resnet18,
#      bench_train_step, bench_knn, bench_data (Google Benchmark JSON)
#   4. tools/side_by_side.sh (the PyTorch baselines, same GPU, same run)
#   5. a short `npid train` run on CUDA (CIFAR-10 when carried), the examples
#   6. compute-sanitizer racecheck (small cases) and memcheck (all but [heavy])
#   7. ncu on the NCE gather (tools/profile_nce.sh), the CPU tests
# Budget: NPID_DEVICE_BUDGET_S (default 540 s) for all steps together;
# NPID_DEVICE_STEPS=a,b,c runs only those steps.
# Writes to $OUT (or $1): summary.md, device_check.json, bench_nce.json,
# bench_softmax.json, bench_resnet.json, side_by_side.{md,json} and logs.txt
# (every step's output, in order): 8 files, the most that come back (so
# bench_data's, bench_knn's and bench_train_step's JSON go into device_check.json,
# not files of their own).
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
ORDER=()  # step names in the order they ran (the summary's order)
# Every step gets what is left of a global budget (the device tool stops a
# command at 600 s, and the summary is written last), so a slow step costs
# the steps after it, never the summary.
START=$(date +%s)
BUDGET=${NPID_DEVICE_BUDGET_S:-540}
# NPID_DEVICE_STEPS="gpu_tests,bench_knn" runs only the steps named (a rerun).
ONLY=${NPID_DEVICE_STEPS:-}
step() {  # step NAME TIMEOUT LOGFILE CMD...
  local name=$1 limit=$2 log=$3; shift 3
  ORDER+=("$name")
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    STATUS[$name]="not selected"; SECONDS_TAKEN[$name]=0
    return
  fi
  local left=$(( BUDGET - ($(date +%s) - START) ))
  if [ "$left" -lt 15 ]; then
    STATUS[$name]="skipped (budget spent)"; SECONDS_TAKEN[$name]=0
    echo "== $name: skipped, ${left}s of the budget left" | tee -a "$OUT/$log"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
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

# Real CIFAR-10 (JPEG image folder) for the data tests, bench_data and the
# training pair, when the bundle carries it.
if [ -f .carry/data/cifar10-jpeg.tar.gz ] && [ ! -d /tmp/npid_cifar/train ]; then
  mkdir -p /tmp/npid_cifar && tar -xzf .carry/data/cifar10-jpeg.tar.gz -C /tmp/npid_cifar
fi
[ -d /tmp/npid_cifar/train ] && export NPID_CIFAR_DIR=/tmp/npid_cifar

# Steps in order of what a lease must not miss: the GPU tests (one process
# per group, so a crash in one group cannot hide the others' results), the
# benchmarks behind the issues' targets, the PyTorch side by side, a short
# real training run, then the sanitizers, ncu and the CPU tests on whatever
# budget is left. Each step's own limit keeps one hang from eating the rest.
export NPID_CUDNN_PROFILE_OUT=/tmp/npid_cudnn_profile.json
rm -f "$NPID_CUDNN_PROFILE_OUT"
GPU_GROUPS=(
  "criteria:[nce],[softmax],[bank],[bf16],[sampler]"
  "resnet:[resnet]"
  "data:[augment],[loader]"
  "eval:[knn],[linear],[evaluate]"
  "train:[train]"
  "other:~[nce]~[softmax]~[bank]~[bf16]~[sampler]~[resnet]~[augment]~[loader]~[knn]~[linear]~[evaluate]~[train]"
)
for g in "${GPU_GROUPS[@]}"; do
  step "gpu_${g%%:*}" 150 logs.txt "$BIN/npid_gpu_tests" --durations yes "${g#*:}"
done
step bench_nce 150 logs.txt "$BIN/bench_nce_kernel" \
     --benchmark_out="$OUT/bench_nce.json" --benchmark_out_format=json
step bench_softmax 90 logs.txt "$BIN/bench_softmax_criterion" \
     --benchmark_out="$OUT/bench_softmax.json" --benchmark_out_format=json
step bench_resnet 120 logs.txt "$BIN/bench_resnet18" --benchmark_filter=Gpu \
     --benchmark_out="$OUT/bench_resnet.json" --benchmark_out_format=json
TRAIN_JSON=$(mktemp /tmp/npid_bench_train.XXXXXX.json)
step bench_train 120 logs.txt "$BIN/bench_train_step" --benchmark_filter=Gpu \
     --benchmark_out="$TRAIN_JSON" --benchmark_out_format=json
KNN_JSON=$(mktemp /tmp/npid_bench_knn.XXXXXX.json)
step bench_knn 90 logs.txt "$BIN/bench_knn" --benchmark_filter=Gpu\|Gemm \
     --benchmark_out="$KNN_JSON" --benchmark_out_format=json
DATA_JSON=$(mktemp /tmp/npid_bench_data.XXXXXX.json)
step bench_data 90 logs.txt "$BIN/bench_data" \
     --benchmark_out="$DATA_JSON" --benchmark_out_format=json
if [ -x tools/side_by_side.sh ]; then
  [ -d /tmp/npid_cifar/train ] && export SBS_ARGS="${SBS_ARGS:-} --data /tmp/npid_cifar/train"
  step side_by_side 240 logs.txt tools/side_by_side.sh "$OUT"
fi
# A short real training run: CIFAR-10 when carried, else the synthetic default.
RUN_DATA=()
[ -n "${NPID_CIFAR_DIR:-}" ] && RUN_DATA=(--data "$NPID_CIFAR_DIR")
rm -rf /tmp/npid_device_run
step train_run 150 logs.txt "$BIN/npid" train --device cuda "${RUN_DATA[@]}" --epochs 2 \
     --steps-per-epoch 200 --knn-every 1 --run /tmp/npid_device_run --quiet
step example_cuda 60 logs.txt "$BIN/nce_training" --device cuda --steps 300
step example_train_step 60 logs.txt "$BIN/train_step" --device cuda --steps 40
if command -v compute-sanitizer >/dev/null; then
  step racecheck 90 logs.txt compute-sanitizer --tool racecheck --error-exitcode 1 \
       "$BIN/npid_gpu_tests" "sync_after_launch contexts run the same ops,knn_topk: CUDA breaks massive exact ties by key index,fused NCE: the async ring on a small case"
  # The [heavy] cases (large CPU-reference comparisons, whole training runs)
  # are left to the plain runs above: under memcheck they would not fit. Our
  # kernels first; the cuDNN-heavy ResNet group (slow under memcheck) after.
  step memcheck 180 logs.txt compute-sanitizer --tool memcheck --error-exitcode 1 \
       "$BIN/npid_gpu_tests" "~[heavy]~[resnet]"
  step memcheck_resnet 120 logs.txt compute-sanitizer --tool memcheck --error-exitcode 1 \
       "$BIN/npid_gpu_tests" "[resnet]~[heavy]"
else
  for n in racecheck memcheck memcheck_resnet; do ORDER+=("$n"); STATUS[$n]="not available"; done
fi
step ncu_nce 120 logs.txt tools/profile_nce.sh "$BIN/bench_nce_kernel"
step cpu_tests 120 logs.txt "$BIN/npid_tests" --durations no

# Summary (markdown + JSON) from the statuses and the benchmark JSON.
STATUS_JSON=$(for k in "${ORDER[@]}"; do printf '["%s", "%s", %s], ' "$k" "${STATUS[$k]}" "${SECONDS_TAKEN[$k]:-0}"; done)
python3 - "$OUT" "$DEVICE" "$COMMIT" "[${STATUS_JSON%, }]" "$DATA_JSON" "$KNN_JSON" "$TRAIN_JSON" \
  "$NPID_CUDNN_PROFILE_OUT" <<'PY'
import json, os, re, sys
out, device, commit = sys.argv[1], sys.argv[2], sys.argv[3]
status = {name: (s, t) for name, s, t in json.loads(sys.argv[4])}  # in run order
profile_path = sys.argv[8]
cudnn_profile = None
if os.path.exists(profile_path):
    try:
        cudnn_profile = json.load(open(profile_path))
    except ValueError:
        cudnn_profile = open(profile_path).read()

def load(name):
    path = name if os.path.isabs(name) else os.path.join(out, name)
    if not os.path.exists(path):
        return []
    return [b for b in json.load(open(path)).get("benchmarks", []) if not b.get("error_occurred")]

def short(name):
    return re.sub(r"/(min_time:[0-9.]+|manual_time)", "", name)

nce, softmax, resnet = load("bench_nce.json"), load("bench_softmax.json"), load("bench_resnet.json")
data, knn, train = load(sys.argv[5]), load(sys.argv[6]), load(sys.argv[7])
lines = [f"# device_check: {device}", "", f"commit: {commit}", "", "| step | status | seconds |", "|---|---|---|"]
for k, (s, t) in status.items():
    lines.append(f"| {k} | {s} | {t} |")
if nce:
    lines += ["", "## bench_nce_kernel (D = 128; time per call)", "",
              "| benchmark | time | gathered GB/s | fraction of copy bandwidth |", "|---|---|---|---|"]
    for b in nce:
        g, f = b.get("gather_GBps"), b.get("frac_copy_bw")
        lines.append(f"| {short(b['name'])} | {b['real_time']:.1f} {b['time_unit']} | "
                     f"{'' if g is None else f'{g:.0f}'} | {'' if f is None else f'{f:.2f}'} |")
    times = {short(b["name"]): b["real_time"] for b in nce}
    pairs = [(k, k.replace("ForwardBackward/", "ForwardBackward_bf16/", 1)) for k in times
             if k.startswith("BM_NceForwardBackward/")]
    pairs = [(a, b) for a, b in pairs if b in times]
    if pairs:
        lines += ["", "### bf16 bank against fp32 (same run)", "", "| shape | fp32 | bf16 | speedup |", "|---|---|---|---|"]
        for a, b in pairs:
            lines.append(f"| {a.split('/', 1)[1]} | {times[a]:.1f} us | {times[b]:.1f} us | {times[a] / times[b]:.2f}x |")
if softmax:
    lines += ["", "## bench_softmax_criterion (D = 128, TF32 GEMMs unless bf16_math:1; time per forward+backward)", "",
              "| benchmark | time | TFLOP/s | cuBLAS TF32 GEMM TFLOP/s, same shapes | fraction | chunk rows |",
              "|---|---|---|---|---|---|"]
    for b in softmax:
        lines.append(f"| {short(b['name'])} | {b['real_time']:.1f} {b['time_unit']} | {b.get('TFLOPs', 0):.1f} | "
                     f"{b.get('gemm_TFLOPs', 0):.1f} | {b.get('frac_gemm', 0):.2f} | {b.get('chunk', 0):.0f} |")
if resnet:
    lines += ["", "## bench_resnet18 (forward + backward + SGD, TF32 convolutions)", "",
              "| benchmark | time per step | images/s | TFLOP/s (3x forward) |", "|---|---|---|---|"]
    for b in resnet:
        lines.append(f"| {short(b['name'])} | {b['real_time']:.2f} {b['time_unit']} | {b.get('images_per_s', 0):.0f} | "
                     f"{b.get('TFLOPs', 0):.1f} |")
if data:
    lines += ["", "## bench_data (input pipeline)", "", "| benchmark | time | images/s |", "|---|---|---|"]
    for b in data:
        rate = b.get("images_per_s") or b.get("items_per_second") or 0
        lines.append(f"| {short(b['name'])} | {b['real_time']:.2f} {b['time_unit']} | {rate:,.0f} |")
if knn:
    lines += ["", "## bench_knn (k = 200, D = 128; whole evaluation, top-k search, and the similarity GEMM alone)", "",
              "| benchmark | time | queries/s |", "|---|---|---|"]
    for b in knn:
        lines.append(f"| {short(b['name'])} | {b['real_time']:.2f} {b['time_unit']} | {b.get('queries_per_s', 0):,.0f} |")
if train:
    lines += ["", "## bench_train_step (CIFAR preset, width 64, B = 128, N = 50,000, TF32)", "",
              "| benchmark | time per step | images/s |", "|---|---|---|"]
    for b in train:
        lines.append(f"| {short(b['name'])} {b.get('label', '')} | {b['real_time']:.2f} {b['time_unit']} | "
                     f"{b.get('images_per_s', 0):,.0f} |")
run_metrics = "/tmp/npid_device_run/metrics.jsonl"
if os.path.exists(run_metrics):
    lines += ["", "## short training run (npid train, 2 x 200 steps)", "", "```"] + \
             open(run_metrics).read().strip().splitlines() + ["```"]
if cudnn_profile is not None:
    lines += ["", "cuDNN device profile recorded in device_check.json (cudnn_device_properties): store it as "
              "tests/cpu/cudnn_profiles/<device>.json."]
sbs = os.path.join(out, "side_by_side.md")
if os.path.exists(sbs):
    lines += ["", open(sbs).read()]
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
json.dump({"device": device, "commit": commit, "steps": status, "bench_nce": nce, "bench_softmax": softmax,
           "bench_resnet": resnet, "bench_data": data, "bench_knn": knn,
           "bench_train_step": train, "cudnn_device_properties": cudnn_profile},
          open(os.path.join(out, "device_check.json"), "w"), indent=1)
print("\n".join(lines))
PY
