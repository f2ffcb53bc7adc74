#!/usr/bin/env bash
# reproduce_cifar10.sh [nce|softmax] [npid train options...]
#
# The paper's CIFAR-10 experiment (Wu et al. 2018, Table 1; docs/math.md
# s.7-10): ResNet-18, the cifar10 preset (200 epochs, lr 0.03 x0.1 at 120 and
# 160, batch 128, tau 0.1, bank momentum 0.5), NCE with K = 4096 (default) or
# the full non-parametric softmax, on the real CIFAR-10 images; then the final
# kNN (k = 200, recomputed features) and linear SVM beside the published
# figures (tools/paper_table.py -> RUN/paper_comparison.md).
#
# Data: $NPID_CIFAR10 when set (a CIFAR-10 binary directory, or a directory
# with train/ and test/ image folders); otherwise the image-folder tarball
# $NPID_CIFAR_TARBALL (default ../shared/data/cifar10-jpeg.tar.gz), unpacked
# once into ${NPID_DATA_DIR:-~/.cache/npid}/cifar10-jpeg.
# The run goes to runs/reproduce-cifar10-<criterion>-<time>/ unless --run is
# given. Extra options go to `npid train` (e.g. --bank-dtype bf16, --seed 1);
# any that change the protocol are listed in the comparison's verdict.
# Needs a GPU (--device cuda unless given): 200 CIFAR epochs are days of CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
criterion=nce
case "${1:-}" in
  nce|softmax) criterion=$1; shift ;;
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

data=${NPID_CIFAR10:-}
if [ -z "$data" ]; then
  tarball=${NPID_CIFAR_TARBALL:-../shared/data/cifar10-jpeg.tar.gz}
  data=${NPID_DATA_DIR:-$HOME/.cache/npid}/cifar10-jpeg
  if [ ! -d "$data/train" ] || [ ! -d "$data/test" ]; then
    if [ ! -f "$tarball" ]; then
      echo "reproduce_cifar10: no CIFAR-10: set NPID_CIFAR10 to a CIFAR-10 binary or image-folder directory, or" \
           "NPID_CIFAR_TARBALL to cifar10-jpeg.tar.gz (looked for $tarball)" >&2
      exit 2
    fi
    echo "reproduce_cifar10: unpacking $tarball into $data"
    mkdir -p "$data.partial"
    tar -xzf "$tarball" -C "$data.partial"
    # The tarball holds train/ and test/ (possibly under one top folder).
    top=$(dirname "$(find "$data.partial" -maxdepth 3 -type d -name train | head -n1)")
    [ -d "$top/test" ] || { echo "reproduce_cifar10: $tarball holds no train/ and test/ folders" >&2; exit 2; }
    rm -rf "$data" && mv "$top" "$data" && rm -rf "$data.partial"
  fi
fi

[ -x build/npid ] || { tools/setup.sh && tools/build.sh; }
args=("$@")
has() { local o; for o in "${args[@]}"; do [ "$o" = "$1" ] && return 0; done; return 1; }
extra=()
has --device || extra+=(--device cuda)
has --run || extra+=(--run "runs/reproduce-cifar10-$criterion-$(date +%Y%m%d-%H%M%S)")
run=""
for ((i = 0; i < ${#args[@]}; ++i)); do [ "${args[$i]}" = "--run" ] && run=${args[$((i + 1))]:-}; done
for ((i = 0; i < ${#extra[@]}; ++i)); do [ "${extra[$i]}" = "--run" ] && run=${extra[$((i + 1))]}; done

build/npid train --preset cifar10 --data "$data" --criterion "$criterion" "${extra[@]}" "${args[@]}"
python3 tools/paper_table.py "$run" --json "$run/paper_comparison.json"
