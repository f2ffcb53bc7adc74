#!/usr/bin/env bash
# torch_python.sh ARGS... -- runs ARGS with the first python3 that has torch,
# torchvision and numpy (PATH's, then Debian's /usr/bin/python3); exits 77
# ("skipped" for CTest) when there is none.
for cand in python3 /usr/bin/python3; do
  if command -v "$cand" >/dev/null && "$cand" -c "import torch, torchvision, numpy" 2>/dev/null; then
    exec "$cand" "$@"
  fi
done
echo "SKIPPED: no python3 with torch, torchvision and numpy (Debian: apt-get install python3-torch python3-torchvision)"
exit 77
