#!/usr/bin/env bash
# Builds Release binaries for the GPU machine and stages them, with the shared
# libraries that machine lacks, in .carry/ (git-ignored):
#   .carry/bin/  npid_tests npid_gpu_tests bench_nce_kernel bench_softmax_criterion bench_resnet18
#                bench_data bench_knn bench_train_step npid npid_op nce_training train_step
#   .carry/lib/  libnpid_cuda.so.*, and Debian's libbenchmark, libturbojpeg, libpng16
#   .carry/data/ cifar10-jpeg.tar.gz when ../shared/data has it
# Then run on the GPU machine:  bash tools/device_check.sh   (with .carry carried)
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${NPID_CUDA_ARCHITECTURES:-90}
BUILD=${BUILD_DIR:-build-gpu}
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNPID_CUDA_ARCHITECTURES="$ARCH" >/dev/null
cmake --build "$BUILD"
rm -rf .carry && mkdir -p .carry/bin .carry/lib
cp "$BUILD"/tests/npid_tests "$BUILD"/tests/npid_gpu_tests "$BUILD"/bench/bench_nce_kernel \
   "$BUILD"/bench/bench_softmax_criterion "$BUILD"/bench/bench_resnet18 "$BUILD"/bench/bench_data \
   "$BUILD"/bench/bench_knn "$BUILD"/bench/bench_train_step "$BUILD"/npid "$BUILD"/examples/train_step \
   "$BUILD"/bench/npid_op \
   "$BUILD"/examples/nce_training .carry/bin/
for t in .carry/bin/*; do [ -x "$t" ] && [ -f "$t" ] && strip --strip-debug "$t" || true; done
cp -L "$BUILD"/libnpid_cuda.so.0 .carry/lib/   # the soname, as a real file (links may not travel)
for lib in $( (ldd "$BUILD"/bench/bench_nce_kernel; ldd "$BUILD"/libnpid_cuda.so.0) |
             awk '/libbenchmark|libturbojpeg|libpng16/ {print $3}' | sort -u); do
  cp -L "$lib" .carry/lib/
done
# CIFAR-10 as JPEGs (20 MB), for the real-data runs there, when at hand.
DATA=${NPID_CIFAR_TARBALL:-../shared/data/cifar10-jpeg.tar.gz}
if [ -f "$DATA" ]; then mkdir -p .carry/data && cp "$DATA" .carry/data/; fi
git rev-parse HEAD > .carry/commit 2>/dev/null || echo unknown > .carry/commit
git status --porcelain | grep -q . && echo "+dirty" >> .carry/commit || true
du -sh .carry
