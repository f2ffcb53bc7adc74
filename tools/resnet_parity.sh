#!/usr/bin/env bash
# resnet_parity.sh [OUT] -- our ResNet-18 against PyTorch on the same weights
# and input: our parameters are loaded into a PyTorch module with torchvision's
# names (and, at width 64, into torchvision's resnet18 itself), and embeddings,
# every parameter gradient and the running statistics after one training step
# must agree; then both are timed. The ResNet pair of tools/side_by_side.sh
# (which tools/device_check.sh runs); SBS_ARGS="--small --device cpu" for a CPU.
exec env SBS_ARGS="${SBS_ARGS:-} --pairs resnet" "$(dirname "$0")/side_by_side.sh" "$@"
