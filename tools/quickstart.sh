#!/usr/bin/env bash
# Quick start: install dependencies, build, and run the main job -- `npid
# train` on the built-in synthetic data set: a ResNet-18 trained by
# non-parametric instance discrimination, evaluated by weighted kNN and a
# linear classifier. On a GPU a CIFAR-size run; on a CPU a small run that
# finishes in a few minutes on two cores. Results go to runs/<preset>-<time>/
# (metrics.jsonl, loss.svg, knn.svg, final.json, retrieval.png, checkpoint
# and model files). Extra arguments go to `npid train` (see npid train --help).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh
exec build/npid train "$@"
