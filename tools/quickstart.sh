#!/usr/bin/env bash
# Quick start: install dependencies, build, and run the main job -- an NPID
# training run on the built-in default (free embeddings for 4,096 instances,
# NCE with K = 1,024, first-batch Z, momentum bank), on the GPU when there is
# one, else on the CPU reference backend.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
exec build/examples/nce_training --device auto "$@"
