#!/usr/bin/env python3
"""sass_steps.py LIB [REGEX] -- per-step machine-code cost of the NCE gather kernels, without a GPU.

Reads `cuobjdump -sass` of LIB (libnpid_cuda.so or a cubin) and, for every
kernel whose name matches REGEX (default: the async-ring and tensor-core
gathers), prints:

  - registers and stack bytes (from `cuobjdump -res-usage`);
  - the static instruction count of each unrolled step of the main loop,
    measured between consecutive `DEPBAR.LE SB0, N` (the cp.async wait that
    opens every step; N > 0). The longest step carries the once-per-tile
    work (the next tile's Philox draws) and is reported apart;
  - local-memory traffic (LDL/STL, i.e. spills) and where it sits: in a
    step, in the once-per-tile step, or outside the loop;
  - the whole unrolled loop iteration (first wait to the branch back), over
    its steps: the per-row figure where an iteration has only two steps
    (the tensor-core gather: 16 rows a step).

Static counts include both sides of data-dependent branches (the log1p
series and its logarithm branch), so they overstate the instructions a step
executes by a few; they compare layouts and code changes, they do not time
anything. cuobjdump: see docs/device_check.md, section 5 (NPID_CUOBJDUMP
overrides the search).
"""
import os
import re
import shutil
import subprocess
import sys


def cuobjdump():
    cand = [os.environ.get("NPID_CUOBJDUMP", ""), shutil.which("cuobjdump") or "", "/usr/local/cuda/bin/cuobjdump"]
    for c in cand:
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("sass_steps: no cuobjdump (set NPID_CUOBJDUMP; docs/device_check.md, section 5)")


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) >= 2 else 2
    lib = sys.argv[1]
    pattern = re.compile(sys.argv[2] if len(sys.argv) > 2 else r"nce_negatives_(async|mma)_kernel")
    tool = cuobjdump()
    sass = subprocess.run([tool, "-sass", lib], capture_output=True, text=True, check=True).stdout
    usage = subprocess.run([tool, "-res-usage", lib], capture_output=True, text=True, check=True).stdout
    regs = {m.group(1): (int(m.group(2)), int(m.group(3)))
            for m in re.finditer(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+)", usage)}
    found = 0
    for body in re.split(r"\n\s*Function : ", sass)[1:]:
        name = body.split("\n", 1)[0].strip()
        if not pattern.search(name):
            continue
        found += 1
        ins = [(int(m.group(1), 16), m.group(2).strip())
               for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", body)]
        waits = [a for a, t in ins if re.match(r"DEPBAR\.LE SB0, 0x[1-9a-f]", t)]
        steps = [(waits[k], waits[k + 1]) for k in range(len(waits) - 1)]
        per_tile = max(steps, key=lambda s: s[1] - s[0]) if steps else None
        where = {"step": 0, "once per tile": 0, "outside the loop": 0}
        for a, t in ins:
            if t.split()[0].startswith(("LDL", "STL")) or " LDL" in t or " STL" in t:
                seg = next((s for s in steps if s[0] <= a < s[1]), None)
                where["outside the loop" if seg is None else "once per tile" if seg == per_tile else "step"] += 1
        sizes = [(b - a) // 16 for a, b in steps if (a, b) != per_tile]
        # The unrolled loop: from the first wait to the branch back above it
        # (an iteration holds one step per wait; kStages steps).
        back = [a for a, t in ins if waits and a > waits[-1] and
                (m := re.match(r"(?:@!?U?P\w+ )?BRA (?:`\()?(0x[0-9a-f]+)", t)) and int(m.group(1), 16) <= waits[0]]
        loop = f"; loop iteration {(back[0] - waits[0]) // 16} instructions for {len(waits)} steps" if back else ""
        short = re.sub(r"^_ZN4npid\w*?nce_cu_\w+?\d+(nce_negatives\w*)", r"\1", name)
        reg, stack = regs.get(name, (0, 0))
        print(f"{short}\n  registers {reg}, stack {stack} bytes; steps: "
              f"{min(sizes) if sizes else 0}-{max(sizes) if sizes else 0} instructions"
              f" (once-per-tile step {(per_tile[1] - per_tile[0]) // 16 if per_tile else 0});"
              f" spill instructions: " + ", ".join(f"{v} {k}" for k, v in where.items()) + loop)
    if not found:
        sys.exit(f"sass_steps: no kernel in {lib} matches {pattern.pattern}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
