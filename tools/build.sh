#!/usr/bin/env bash
# Configures and builds Release into build/ (library, tests, benchmarks, examples).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
[ -f build/CMakeCache.txt ] || cmake -S . -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DNPID_WERROR=ON "$@"
cmake --build build --parallel
