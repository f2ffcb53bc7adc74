#!/usr/bin/env bash
# The test command: builds, then runs every CTest test -- CPU tests, the
# installed-package consumer, and the GPU tests (reported as skipped when the
# machine has no CUDA device).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
ctest --test-dir build --output-on-failure
