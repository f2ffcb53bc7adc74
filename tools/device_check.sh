#!/usr/bin/env bash
# device_check.sh -- everything that awaits a GPU, in one command.
#
# Runs on the GPU machine from the repository root, with the prebuilt bundle
# from tools/prepare_device_bundle.sh in .carry/ (or binaries in $NPID_BIN_DIR).
# Steps, in order of what a lease must not miss:
#   1. the GPU tests (every CUDA op against its CPU reference), one process per
#      group of tags (gpu_criteria, gpu_resnet, gpu_data, gpu_eval, gpu_train,
#      gpu_other), so a crash in one group cannot hide the others; they record
#      the device's cuDNN profile
#   2. bench_nce_kernel, bench_softmax_criterion (Google Benchmark JSON)
#   3. tools/side_by_side.sh (the PyTorch baselines, same GPU, same run)
#   4. bench_resnet18, bench_train_step, a short `npid train` run on CUDA
#      (CIFAR-10 when carried), ncu on the NCE gather (tools/profile_nce.sh),
#      bench_knn, bench_data, the examples
#   5. compute-sanitizer racecheck on small cases, then memcheck (all but
#      [heavy]; the cuDNN-heavy ResNet group last), the CPU tests
# Budget: NPID_DEVICE_BUDGET_S (default 540 s) for everything from the first
# line on; each step also has its own limit, so one hang cannot eat the rest.
# Call it with the device tool's timeout_s at least the budget + 30 s.
# NPID_DEVICE_STEPS=gpu_resnet,bench_resnet runs only the steps named (a rerun).
# On the gVisor runtime (uname -r 4.4.0), where ncu and compute-sanitizer cannot
# reach the GPU, their steps are reported "not available (gVisor)".
# Writes to $OUT (or $1): summary.md, device_check.json, bench_nce.json,
# bench_softmax.json, bench_resnet.json, side_by_side.{md,json} and logs.txt
# (every step's output, in order): 8 files, the most that come back (so
# bench_data's, bench_knn's and bench_train_step's JSON go into
# device_check.json). The summary is rewritten after every step, so a run
# stopped from outside still leaves one.
set -uo pipefail
START=$(date +%s)
BUDGET=${NPID_DEVICE_BUDGET_S:-540}
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
# Our binaries get these; PyTorch (side_by_side) keeps the machine's own path,
# so a toolkit library found here never shadows the one its wheel ships.
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}
export LD_LIBRARY_PATH="$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$PATH:/usr/local/cuda/bin"

{
  echo "commit: $COMMIT"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldd "$BIN/npid_gpu_tests" 2>&1 | grep -E 'not found|npid|cudart|cublas|cudnn|benchmark'
} > "$OUT/logs.txt"
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)

# Benchmark JSON that has no file of its own in $OUT (the 8-file limit), and
# the cuDNN profile the GPU tests record: fresh paths, absent until written.
SCRATCH=$(mktemp -d /tmp/npid_device_check.XXXXXX)
DATA_JSON=$SCRATCH/bench_data.json
KNN_JSON=$SCRATCH/bench_knn.json
TRAIN_JSON=$SCRATCH/bench_train.json
export NPID_CUDNN_PROFILE_OUT=$SCRATCH/cudnn_profile.json
RUN_DIR=$SCRATCH/train_run

declare -A STATUS SECONDS_TAKEN
ORDER=()  # step names in the order they ran (the summary's order)
summarize() {  # summary.md + device_check.json from what has finished so far
  local st
  st=$(for k in "${ORDER[@]}"; do printf '["%s", "%s", %s], ' "$k" "${STATUS[$k]:-running}" "${SECONDS_TAKEN[$k]:-0}"; done)
  python3 tools/device_summary.py "$OUT" --device "$DEVICE" --commit "$COMMIT" --status "[${st%, }]" \
    --data-json "$DATA_JSON" --knn-json "$KNN_JSON" --train-json "$TRAIN_JSON" \
    --cudnn-profile "$NPID_CUDNN_PROFILE_OUT" --run-metrics "$RUN_DIR/metrics.jsonl" \
    --run-final "$RUN_DIR/final.json" "$@" \
    >>"$OUT/logs.txt" 2>&1 || echo "== summary failed" >>"$OUT/logs.txt"
}
ONLY=${NPID_DEVICE_STEPS:-}
step() {  # step NAME LIMIT_S CMD...
  local name=$1 limit=$2; shift 2
  ORDER+=("$name")
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
    STATUS[$name]="not selected"; SECONDS_TAKEN[$name]=0
    return
  fi
  local left=$(( BUDGET - ($(date +%s) - START) - 10 ))  # 10 s for the summary
  if [ "$left" -lt 15 ]; then
    STATUS[$name]="skipped (budget spent)"; SECONDS_TAKEN[$name]=0
    echo "== $name: skipped, ${left}s of the budget left" >> "$OUT/logs.txt"
    return
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" >> "$OUT/logs.txt"
  # -k: a step that ignores SIGTERM (sanitizers, ncu) is killed 5 s later.
  timeout -k 5 "$limit" "$@" >>"$OUT/logs.txt" 2>&1
  local rc=$?
  SECONDS_TAKEN[$name]=$(( $(date +%s) - t0 ))
  case $rc in
    0) STATUS[$name]=pass ;;
    77) STATUS[$name]=skipped ;;
    124|137) STATUS[$name]="timeout(${limit}s)" ;;
    *) STATUS[$name]="fail(rc=$rc)" ;;
  esac
  echo "== $name: ${STATUS[$name]} in ${SECONDS_TAKEN[$name]}s" | tee -a "$OUT/logs.txt"
  summarize --quiet
}

# Real CIFAR-10 (JPEG image folder) for the data tests, bench_data and the
# training pair, when the bundle carries it.
if [ -f .carry/data/cifar10-jpeg.tar.gz ] && [ ! -d /tmp/npid_cifar/train ]; then
  mkdir -p /tmp/npid_cifar && tar -xzf .carry/data/cifar10-jpeg.tar.gz -C /tmp/npid_cifar
fi
[ -d /tmp/npid_cifar/train ] && export NPID_CIFAR_DIR=/tmp/npid_cifar

# 1. GPU tests. --warn NoTests: a spec that matches nothing fails instead of
# passing silently (the runner maps every failure to exit 1). The limits are
# caps for a hang; together these took well under a minute on the H200.
GPU_GROUPS=(
  "criteria:60:[nce],[softmax],[bank],[bf16],[sampler]"
  "resnet:150:[resnet]"
  "data:45:[augment],[loader]"
  "eval:45:[knn],[linear],[evaluate]"
  "train:90:[train]"
  "other:30:~[nce]~[softmax]~[bank]~[bf16]~[sampler]~[resnet]~[augment]~[loader]~[knn]~[linear]~[evaluate]~[train]"
)
for g in "${GPU_GROUPS[@]}"; do
  IFS=: read -r gname glimit gspec <<< "$g"
  step "gpu_$gname" "$glimit" "$BIN/npid_gpu_tests" --durations yes --warn NoTests "$gspec"
done

# ncu and compute-sanitizer read the GPU through the driver's profiling
# interface, which the gVisor runtime (kernel 4.4.0) does not pass through:
# there they fail ("Device not supported", "LibraryNotLoaded"), so they are
# reported as not available instead of spending the budget. Firecracker: run.
KERNEL_RELEASE=${NPID_KERNEL_RELEASE:-$(uname -r 2>/dev/null)}  # the override: for the CI dry run
GVISOR=0
case $KERNEL_RELEASE in 4.4.0*) GVISOR=1 ;; esac
echo "kernel: $KERNEL_RELEASE (gVisor: $GVISOR)" >> "$OUT/logs.txt"
unavailable() {  # unavailable WHY STEP...: steps that cannot run on this machine
  local why=$1; shift
  for n in "$@"; do ORDER+=("$n"); STATUS[$n]="not available ($why)"; SECONDS_TAKEN[$n]=0; done
}

# 2. The criterion benchmarks (issues 2 and 4).
step bench_nce 90 "$BIN/bench_nce_kernel" --benchmark_out="$OUT/bench_nce.json" --benchmark_out_format=json
step bench_softmax 45 "$BIN/bench_softmax_criterion" \
     --benchmark_out="$OUT/bench_softmax.json" --benchmark_out_format=json

# 3. The PyTorch side by side (its report is rewritten after every pair), with
# the machine's own LD_LIBRARY_PATH; our binary gets ours through
# NPID_OP_LD_LIBRARY_PATH.
[ -d /tmp/npid_cifar/train ] && export SBS_ARGS="${SBS_ARGS:-} --data /tmp/npid_cifar/train"
step side_by_side 200 env LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" NPID_OP_LD_LIBRARY_PATH="$LD_LIBRARY_PATH" \
     bash tools/side_by_side.sh "$OUT"

# 4. The network and training benchmarks, a short real training run
# (CIFAR-10 when carried, else the synthetic default; ~20 s), ncu on the NCE
# gather, the rest of the benchmarks, the examples.
step bench_resnet 120 "$BIN/bench_resnet18" --benchmark_filter='Gpu|Convs|DeviceCopy' \
     --benchmark_out="$OUT/bench_resnet.json" --benchmark_out_format=json
step bench_train 60 "$BIN/bench_train_step" --benchmark_filter=Gpu \
     --benchmark_out="$TRAIN_JSON" --benchmark_out_format=json
RUN_DATA=()
[ -n "${NPID_CIFAR_DIR:-}" ] && RUN_DATA=(--data "$NPID_CIFAR_DIR")
step train_run 90 "$BIN/npid" train --device cuda "${RUN_DATA[@]}" --epochs 2 \
     --steps-per-epoch 200 --knn-every 1 --run "$RUN_DIR" --quiet
if [ $GVISOR = 1 ]; then
  unavailable gVisor ncu_nce
else
  step ncu_nce 60 bash tools/profile_nce.sh "$BIN/bench_nce_kernel"
fi
step bench_knn 45 "$BIN/bench_knn" --benchmark_filter=Gpu\|Gemm \
     --benchmark_out="$KNN_JSON" --benchmark_out_format=json
step bench_data 40 "$BIN/bench_data" --benchmark_out="$DATA_JSON" --benchmark_out_format=json
step example_cuda 30 "$BIN/nce_training" --device cuda --steps 300
step example_train_step 30 "$BIN/train_step" --device cuda --steps 40

# 5. Races on small cases, then memory errors over all but the [heavy] cases
# (which would not fit under memcheck): our kernels first, the cuDNN-heavy
# ResNet group after; then the CPU tests (CI runs them too; here they check
# the bundle).
HAVE_SANITIZER=0
command -v compute-sanitizer >/dev/null && [ $GVISOR = 0 ] && HAVE_SANITIZER=1
if [ $HAVE_SANITIZER = 1 ]; then
  step racecheck 45 compute-sanitizer --tool racecheck --error-exitcode 1 "$BIN/npid_gpu_tests" --warn NoTests \
       "sync_after_launch contexts run the same ops,knn_topk: CUDA breaks massive exact ties by key index,fused NCE: the async ring on a small case,fused NCE: the tensor-core gather on a small case,BatchNorm: aligned and unaligned tensors agree; repeated runs are bit-identical"
  step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 "$BIN/npid_gpu_tests" --warn NoTests "~[heavy]~[resnet]"
  step memcheck_resnet 90 compute-sanitizer --tool memcheck --error-exitcode 1 "$BIN/npid_gpu_tests" --warn NoTests "[resnet]~[heavy]"
else
  why="no compute-sanitizer"
  [ $GVISOR = 1 ] && why=gVisor
  unavailable "$why" racecheck memcheck memcheck_resnet
fi
step cpu_tests 60 "$BIN/npid_tests" --durations no

summarize
rm -rf "$SCRATCH"
cat "$OUT/summary.md"  # into the device tool's output tail too
