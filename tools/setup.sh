#!/usr/bin/env bash
# Installs the build and test dependencies from Debian (when missing) and
# checks for the CUDA toolkit. Safe to re-run.
set -euo pipefail
# --with-torch also installs Debian's CPU-only PyTorch and torchvision for the
# side-by-side harness test (optional: that test is skipped without them).
need=()
if [ "${1:-}" = "--with-torch" ]; then
  /usr/bin/python3 -c "import torch, numpy, torchvision" 2>/dev/null ||
    need+=(python3-torch python3-numpy python3-torchvision python3-pil)
fi
command -v cmake >/dev/null || need+=(cmake)
command -v ninja >/dev/null || need+=(ninja-build)
command -v ccache >/dev/null || need+=(ccache)
command -v g++ >/dev/null || need+=(g++)
[ -f /usr/include/catch2/catch.hpp ] || need+=(catch2)
[ -f /usr/include/benchmark/benchmark.h ] || need+=(libbenchmark-dev)
[ -f /usr/include/turbojpeg.h ] || need+=(libturbojpeg0-dev)
[ -f /usr/include/png.h ] || need+=(libpng-dev)
[ -f /usr/include/nlohmann/json.hpp ] || need+=(nlohmann-json3-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: the CUDA toolkit (nvcc) is required; expected at /usr/local/cuda" >&2
  exit 1
fi
echo "setup: dependencies present"
