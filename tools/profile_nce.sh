#!/usr/bin/env bash
# profile_nce.sh BENCH_NCE_KERNEL -- Nsight Compute on the fused NCE gather at
# the target shape (B = 256, K = 4096, N = 1.28M): the default kernels for
# fp32 and bf16 banks, the async ring at 16 lanes (fp32) and 4 lanes (bf16),
# and the tensor-core gather (bf16), one launch each after a
# few warm-up launches (the program is stopped after it: --kill). Prints
# ncu's speed-of-light, memory, warp-stall, occupancy and launch sections
# (what explains the per-row floor of issue 4).
# Run by tools/device_check.sh where ncu can read the counters (Firecracker).
set -uo pipefail
BENCH=${1:?usage: profile_nce.sh path/to/bench_nce_kernel}
# ncu on PATH, else where Nsight Compute installs itself.
NCU=$(command -v ncu || ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | tail -n1)
[ -n "$NCU" ] && [ -x "$NCU" ] || { echo "SKIPPED: no ncu (PATH, /opt/nvidia/nsight-compute)"; exit 77; }
shape='B:256/K:4096/N:1281167'
# A filter counts as profiled when ncu printed its report (with --kill, ncu's
# own exit code after stopping the program is not a verdict).
profiled=0
for filter in "^BM_NceForwardBackward/$shape" "^BM_NceForwardBackward_bf16/$shape" \
              "^BM_NceLayout/$shape/lanes:16/stages:8/ring:1" "^BM_NceLayout_bf16/$shape/lanes:4/stages:4/ring:1" \
              "^BM_NceLayout_bf16/$shape/lanes:32/stages:4/ring:2"; do
  echo "==== ncu: $filter"
  log=$(mktemp /tmp/npid_ncu.XXXXXX)
  # --clock-control none: the GPU runs at the clocks the benchmarks saw (ncu
  # would lock them to base, and the profile would not explain those figures).
  "$NCU" --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats \
      --section Occupancy --section LaunchStats -k regex:nce_negatives --launch-skip 5 --launch-count 1 --kill yes \
      "$BENCH" --benchmark_filter="$filter" --benchmark_min_time=0.01 >"$log" 2>&1
  cat "$log"
  grep -q "GPU Speed Of Light" "$log" && profiled=$((profiled + 1))
  rm -f "$log"
done
echo "==== ncu: $profiled of 5 kernels profiled"
[ "$profiled" -eq 5 ]
